//! Fuzz targets for the host-side packet parser and the SYN option walk,
//! each run for `TCPGUARD_FUZZ_SECS` seconds (default 5; `cargo xtask fuzz
//! --secs N` for longer). The properties:
//! - the parser agrees with a plain slice-based reading of the header
//!   formats on arbitrary bytes and on mutated real frames;
//! - what it returns is what the bytes say (offsets inside the frame, fields
//!   read at those offsets), and bytes after the headers never change it;
//! - a frame cut anywhere inside its headers is a truncation error, never a
//!   packet;
//! - a crafted frame parses to exactly what was crafted;
//! - the SYN option walk never looks past the data offset, and agrees with
//!   the in-place Linux-layout reader wherever that one answers.

use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};
use tcpguard_common::{
    craft::Craft,
    fuzzing::fuzz_for,
    parse::{parse, ParseError, TcpPacket, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6},
    synack::{linux_layout, parse_syn_options},
};

/// The header formats read plainly off a slice: the model the parser is
/// checked against (Ethernet, ≤ 2 VLAN tags, IPv4 with IHL and fragment
/// offset, IPv6 with ≤ 4 extension headers, TCP with its data offset).
fn model(f: &[u8]) -> Result<TcpPacket, ParseError> {
    use ParseError::*;
    let at = |o: usize, n: usize| f.get(o..o + n);
    let u16at = |o: usize| at(o, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut et = u16at(12).ok_or(TruncatedEth)?;
    let mut l3 = 14;
    for _ in 0..2 {
        if et != ETH_P_8021Q && et != ETH_P_8021AD {
            break;
        }
        et = u16at(l3 + 2).ok_or(TruncatedEth)?;
        l3 += 4;
    }
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    let (l4, v6) = match et {
        ETH_P_IP => {
            let h = at(l3, 20).ok_or(TruncatedIp)?;
            if h[0] >> 4 != 4 {
                return Err(TruncatedIp);
            }
            if h[0] & 15 < 5 {
                return Err(BadIhl);
            }
            if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return Err(Fragment);
            }
            if h[9] != 6 {
                return Err(NonTcp);
            }
            saddr[10..12].copy_from_slice(&[0xff, 0xff]);
            daddr[10..12].copy_from_slice(&[0xff, 0xff]);
            saddr[12..].copy_from_slice(&h[12..16]);
            daddr[12..].copy_from_slice(&h[16..20]);
            (l3 + usize::from(h[0] & 15) * 4, false)
        }
        ETH_P_IPV6 => {
            let h = at(l3, 40).ok_or(TruncatedIp)?;
            if h[0] >> 4 != 6 {
                return Err(TruncatedIp);
            }
            saddr.copy_from_slice(&h[8..24]);
            daddr.copy_from_slice(&h[24..40]);
            let (mut next, mut l4, mut hops) = (h[6], l3 + 40, 0);
            while next != 6 {
                if hops == 4 {
                    return Err(Ipv6ExtLimit);
                }
                hops += 1;
                let e = at(l4, if next == 44 { 4 } else { 2 });
                match next {
                    0 | 43 | 60 => {
                        let e = e.ok_or(TruncatedIp)?;
                        next = e[0];
                        l4 += (usize::from(e[1]) + 1) * 8;
                    }
                    44 => {
                        let e = e.ok_or(TruncatedIp)?;
                        if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                            return Err(Fragment);
                        }
                        next = e[0];
                        l4 += 8;
                    }
                    51 => {
                        let e = e.ok_or(TruncatedIp)?;
                        next = e[0];
                        l4 += (usize::from(e[1]) + 2) * 4;
                    }
                    _ => return Err(NonTcp),
                }
            }
            (l4, true)
        }
        _ => return Err(NonIp),
    };
    let t = at(l4, 20).ok_or(TruncatedTcp)?;
    let doff = t[12] >> 4;
    if doff < 5 {
        return Err(BadDoff);
    }
    if f.len() < l4 + usize::from(doff) * 4 {
        return Err(TruncatedTcp);
    }
    Ok(TcpPacket {
        saddr,
        daddr,
        is_v6: v6,
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13],
        doff,
        l3_off: l3 as u16,
        l4_off: l4 as u16,
    })
}

fn is_truncation(e: ParseError) -> bool {
    matches!(e, ParseError::TruncatedEth | ParseError::TruncatedIp | ParseError::TruncatedTcp)
}

/// Everything the parser promises about one frame, checked against the
/// model and against the frame's own bytes.
fn check_frame(f: &[u8], tail: &[u8]) -> Result<(), TestCaseError> {
    let got = parse(f);
    prop_assert_eq!(got, model(f), "parser and model disagree");
    match got {
        Ok(p) => {
            let (l3, l4, end) =
                (usize::from(p.l3_off), usize::from(p.l4_off), usize::from(p.l4_off) + 4 * p.doff as usize);
            prop_assert!(
                [14, 18, 22].contains(&l3) && l3 < l4 && end <= f.len(),
                "offsets {l3} {l4} {end} of {}",
                f.len()
            );
            prop_assert!((5..=15).contains(&p.doff));
            prop_assert_eq!(p.sport, u16::from_be_bytes([f[l4], f[l4 + 1]]));
            prop_assert_eq!(p.seq, u32::from_be_bytes([f[l4 + 4], f[l4 + 5], f[l4 + 6], f[l4 + 7]]));
            prop_assert_eq!(p.flags, f[l4 + 13]);
            prop_assert_eq!(p.is_v6, f[l3] >> 4 == 6);
            // Bytes after the headers (payload, padding) change nothing.
            let mut longer = f.to_vec();
            longer.extend_from_slice(tail);
            prop_assert_eq!(parse(&longer[..]), Ok(p));
            // Cut anywhere inside the headers: a truncation, never a packet.
            for n in 0..end {
                let cut = parse(&f[..n]);
                prop_assert!(cut.is_err_and(is_truncation), "cut at {n} of {end}: {cut:?}");
            }
        }
        Err(e) if !is_truncation(e) => {
            // A verdict on the headers stands whatever follows them.
            let mut longer = f.to_vec();
            longer.extend_from_slice(tail);
            prop_assert_eq!(parse(&longer[..]), Err(e));
        }
        Err(_) => {}
    }
    Ok(())
}

/// A frame built by the packet crafter from random parameters, with what
/// the parser must find in it.
#[derive(Debug, Clone)]
struct Crafted {
    frame: Vec<u8>,
    want: TcpPacket,
}

fn crafted() -> impl Strategy<Value = Crafted> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<(u16, u16, u32, u32, u8)>(),
        0usize..=2,
        0usize..=10,
        0usize..=10,
        vec(prop_oneof![Just(0u8), Just(43), Just(60), Just(44)], 0..=4),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(v6, s, d, (sport, dport, seq, ack, flags), vlans, ip_words, tcp_words, ext, payload)| {
            let tags = [ETH_P_8021AD, ETH_P_8021Q];
            let mut c = if v6 {
                Craft::v6(s, d, sport, dport).v6_ext(&ext)
            } else {
                Craft::v4([s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]], sport, dport).ip_options(ip_words * 4)
            };
            c = c.flags(flags).seq(seq).ack(ack).vlans(&tags[2 - vlans..]).tcp_options(tcp_words * 4).payload(&payload);
            let l3 = 14 + 4 * vlans;
            let (saddr, daddr, l4) = if v6 {
                (s, d, l3 + 40 + 8 * ext.len())
            } else {
                let m = |a: &[u8; 16]| {
                    let mut x = [0u8; 16];
                    x[10..12].copy_from_slice(&[0xff, 0xff]);
                    x[12..].copy_from_slice(&a[..4]);
                    x
                };
                (m(&s), m(&d), l3 + 20 + 4 * ip_words)
            };
            let want = TcpPacket {
                saddr,
                daddr,
                is_v6: v6,
                sport,
                dport,
                seq,
                ack,
                flags,
                doff: 5 + tcp_words as u8,
                l3_off: l3 as u16,
                l4_off: l4 as u16,
            };
            Crafted { frame: c.build(), want }
        })
}

/// A mutation of a frame: bytes overwritten (biased to the header bytes
/// that steer parsing), then cut or extended.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    // Ethertypes (plain and VLAN-tagged), version/IHL, fragment, protocol,
    // IPv6 next header, TCP data offset in common layouts.
    let steer = proptest::sample::select(vec![12usize, 13, 14, 16, 17, 18, 20, 21, 22, 23, 46, 54, 55, 58, 62]);
    let edit = prop_oneof![
        4 => (steer, any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
        4 => (0usize..140, any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
        1 => (0usize..140).prop_map(Edit::Truncate),
        1 => vec(any::<u8>(), 1..32).prop_map(Edit::Extend),
    ];
    vec(edit, 1..6)
}

fn apply(mut f: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Set(i, v) => {
                if let Some(b) = f.get_mut(*i) {
                    *b = *v;
                }
            }
            Edit::Truncate(n) => f.truncate(*n),
            Edit::Extend(t) => f.extend_from_slice(t),
        }
    }
    f
}

#[test]
fn fuzz_parse_arbitrary_bytes() {
    // Random bytes behind a random one of the Ethertypes the parser follows,
    // so the walk gets past the first switch most of the time.
    let types = prop_oneof![Just(ETH_P_IP), Just(ETH_P_IPV6), Just(ETH_P_8021Q), Just(ETH_P_8021AD), any::<u16>()];
    let frames = (types, vec(any::<u8>(), 0..160), vec(any::<u8>(), 0..16)).prop_map(|(t, mut b, tail)| {
        if b.len() >= 14 {
            b[12..14].copy_from_slice(&t.to_be_bytes());
        }
        (b, tail)
    });
    let n = fuzz_for("parse_arbitrary_bytes", frames, |(f, tail)| check_frame(&f, &tail));
    assert!(n > 0);
}

#[test]
fn fuzz_parse_crafted_frames() {
    let n = fuzz_for("parse_crafted_frames", (crafted(), vec(any::<u8>(), 0..16)), |(c, tail)| {
        prop_assert_eq!(parse(&c.frame[..]), Ok(c.want));
        check_frame(&c.frame, &tail)
    });
    assert!(n > 0);
}

#[test]
fn fuzz_parse_mutated_frames() {
    let n = fuzz_for("parse_mutated_frames", (crafted(), edits(), vec(any::<u8>(), 0..16)), |(c, e, tail)| {
        check_frame(&apply(c.frame, &e), &tail)
    });
    assert!(n > 0);
}

#[test]
fn fuzz_syn_option_walk() {
    // A TCP header with random options (biased to the kinds the walk reads),
    // a random data offset, and random bytes past it.
    let opt = prop_oneof![
        Just(vec![1u8]),
        Just(vec![0u8]),
        any::<u16>().prop_map(|m| vec![2, 4, (m >> 8) as u8, m as u8]),
        any::<u8>().prop_map(|w| vec![3, 3, w]),
        Just(vec![4u8, 2]),
        any::<[u8; 8]>().prop_map(|t| [&[8u8, 10][..], &t[..]].concat()),
        vec(any::<u8>(), 1..6),
    ];
    let hdr = (vec(opt, 0..12), 5usize..=15, any::<[u8; 64]>()).prop_map(|(opts, doff, mut th)| {
        let opts = opts.concat();
        let n = opts.len().min(40);
        th[20..20 + n].copy_from_slice(&opts[..n]);
        (th, doff * 4)
    });
    let n = fuzz_for("syn_option_walk", hdr, |(th, len)| {
        let o = parse_syn_options(&th, len);
        // Bytes past the data offset are not options.
        let mut other = th;
        for b in &mut other[len..] {
            *b = b.wrapping_add(0x5a);
        }
        prop_assert_eq!(parse_syn_options(&other, len), o);
        prop_assert!(o.wscale <= 14);
        if let Some(fast) = linux_layout(&th, len) {
            prop_assert_eq!(fast, o, "in-place reader and walk disagree");
        }
        Ok(())
    });
    assert!(n > 0);
}
