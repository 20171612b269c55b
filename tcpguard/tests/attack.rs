//! Attack mode under BPF_PROG_TEST_RUN, in the real kernel (root): the
//! XDP SYN-cookie responder (the SYN-ACK it writes, and the kernel's own
//! check of the cookie in it), the cases that go to the kernel, the ACK
//! check, entry by the datapath itself, and the fixed-memory accounting.
//!
//! BPF_PROG_TEST_RUN looks sockets up in the calling thread's network
//! namespace: each test makes its own namespace with real listening
//! sockets and runs the program from a thread inside it.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, TcpListener, TcpStream},
};

use aya::programs::{TestRun as _, TestRunOptions};
use common::*;
use tcpguard::{
    lab::Netns,
    loader::Datapath,
    maps::{monotonic_ns, Maps},
    net::Prefix,
};
use tcpguard_common::{
    craft::{fold, sum16, Craft},
    map_names,
    parse::{ETH_P_8021AD, ETH_P_8021Q, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    quick::{FirstBytes, LOCAL_V4_SLOTS},
    sketch,
    synack::decode_tsecr,
    AttackState, Counter,
    Counter::*,
    Settings, ATTACK_REASON_ACK_RATE, ATTACK_REASON_DAEMON, ATTACK_REASON_SYN_RATE, FLAG_ANSWER, FLAG_EGRESS,
    FLAG_MONITOR, FLAG_XDP_COOKIES,
};

/// The responder enabled, and allowed to answer now (the daemon's view:
/// replies leave, the sysctls are set).
const RESPOND: u32 = FLAG_XDP_COOKIES | FLAG_ANSWER;

const XDP_TX: u32 = 3;
const CLIENT: [u8; 4] = [192, 0, 2, 10];
const SERVER: [u8; 4] = [192, 0, 2, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// Client TSval in the crafted SYNs (Craft::syn_options has TSval 1).
const CLIENT_TSVAL: u32 = 1;

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a[15] = last;
    a
}

/// A namespace for one test: SYN cookies and timestamps as the daemon sets
/// them for the responder, and listeners on port 80 (IPv4) and 443 (IPv6).
struct Ns {
    ns: Netns,
}

impl Ns {
    fn new(syncookies: &str) -> Self {
        require_root();
        let ns = Netns::new("atk").expect("create a namespace");
        ns.sysctl("net.ipv4.tcp_syncookies", syncookies).unwrap();
        ns.sysctl("net.ipv4.tcp_timestamps", "2").unwrap();
        Ns { ns }
    }

    /// Run `f` inside the namespace with listeners open.
    fn with_listeners<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns
            .run(|| {
                let _l4 = TcpListener::bind("0.0.0.0:80").expect("listen on :80");
                let _l6 = TcpListener::bind("[::]:443").expect("listen on [::]:443");
                f()
            })
            .expect("enter the namespace")
    }
}

fn attack_settings(flags: u32) -> Settings {
    Settings {
        flags,
        synack_wscale: 7,
        synack_mss4: 1460,
        synack_mss6: 1440,
        // No sampling noise unless a test asks for it.
        attack_sample: 65_536,
        heavy_syns_per_sec: 200,
        hash_seed: 0x5eed,
        mac: [SERVER_MAC[0], SERVER_MAC[1], SERVER_MAC[2], SERVER_MAC[3], SERVER_MAC[4], SERVER_MAC[5], 0, 0],
        ..Settings::default()
    }
}

fn enter_attack(dp: &mut Datapath) {
    Maps::new(&mut dp.ebpf)
        .set_attack(&AttackState {
            active: 1,
            reason: ATTACK_REASON_DAEMON,
            entered_ns: monotonic_ns(),
            ..AttackState::default()
        })
        .unwrap();
}

/// The host's own addresses in these tests, as the daemon would list them.
fn local_addrs() -> [IpAddr; 3] {
    [IpAddr::from(SERVER), IpAddr::from(v6(1)), IpAddr::from([127, 0, 0, 1])]
}

fn setup(dp: &mut Datapath, flags: u32) {
    let mut m = Maps::new(&mut dp.ebpf);
    m.set_settings(&attack_settings(flags)).unwrap();
    for a in local_addrs() {
        m.add_local(a).unwrap();
    }
    enter_attack(dp);
}

/// Run once; the verdict and the frame the program left.
fn run_out(dp: &Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; 512];
    let opts =
        TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat: 1, ..TestRunOptions::default() };
    let r = dp.program().test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

fn moved(dp: &mut Datapath, f: impl FnOnce(&Datapath)) -> Vec<(&'static str, u64)> {
    let before = counters(dp);
    f(dp);
    let after = counters(dp);
    let mut d = delta(&before, &after);
    d.retain(|(n, _)| *n != "packets");
    d.sort_unstable();
    d
}

fn want(list: &[(Counter, u64)]) -> Vec<(&'static str, u64)> {
    let mut v: Vec<_> = list.iter().map(|(c, n)| (c.name(), *n)).collect();
    v.sort_unstable();
    v
}

fn syn4(sport: u16, isn: u32) -> Craft {
    Craft::v4(CLIENT, SERVER, sport, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(isn).syn_options()
}

/// A parsed SYN-ACK: (ip header offset, is_v6, tcp header slice offset).
struct SynAck {
    frame: Vec<u8>,
    l3: usize,
    l4: usize,
    v6: bool,
}

impl SynAck {
    fn parse(frame: Vec<u8>) -> Self {
        let mut l3 = 14;
        while [0x81, 0x88].contains(&frame[l3 - 2]) {
            l3 += 4;
        }
        let v6 = frame[l3] >> 4 == 6;
        let l4 = l3 + if v6 { 40 } else { 20 };
        SynAck { frame, l3, l4, v6 }
    }
    fn tcp(&self) -> &[u8] {
        &self.frame[self.l4..]
    }
    fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes(self.tcp()[off..off + 4].try_into().unwrap())
    }
    fn seq(&self) -> u32 {
        self.u32_at(4)
    }
    fn ack(&self) -> u32 {
        self.u32_at(8)
    }
    /// The TCP options as (kind, data) pairs.
    fn options(&self) -> Vec<(u8, Vec<u8>)> {
        let t = self.tcp();
        let end = usize::from(t[12] >> 4) * 4;
        let mut i = 20;
        let mut out = Vec::new();
        while i < end {
            match t[i] {
                0 => break,
                1 => i += 1,
                k => {
                    let l = usize::from(t[i + 1]);
                    out.push((k, t[i + 2..i + l].to_vec()));
                    i += l;
                }
            }
        }
        out
    }
    fn option(&self, kind: u8) -> Option<Vec<u8>> {
        self.options().into_iter().find(|(k, _)| *k == kind).map(|(_, d)| d)
    }
    fn checksums_verify(&self) {
        let t = self.tcp();
        let pseudo = if self.v6 {
            let ip = &self.frame[self.l3..self.l3 + 40];
            assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), t.len(), "IPv6 payload length");
            sum16(&ip[8..40], 0)
        } else {
            let ip = &self.frame[self.l3..self.l3 + 20];
            assert_eq!(fold(sum16(ip, 0)), 0, "IPv4 header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), 20 + t.len(), "IPv4 total length");
            sum16(&ip[12..20], 0)
        };
        assert_eq!(fold(sum16(t, pseudo + t.len() as u32 + 6)), 0, "TCP checksum");
    }
}

/// The client's final ACK for a SYN-ACK (echoing its TSval, as a client does).
fn final_ack4(sport: u16, isn: u32, sa: &SynAck) -> Vec<u8> {
    let ts = sa.option(8).expect("timestamps");
    let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 2];
    opts.extend_from_slice(&ts[..4]);
    Craft::v4(CLIENT, SERVER, sport, 80)
        .macs(CLIENT_MAC, SERVER_MAC)
        .flags(TCP_ACK)
        .seq(isn.wrapping_add(1))
        .ack(sa.seq().wrapping_add(1))
        .raw_tcp_options(&opts)
        .build()
}

#[test]
fn syn_v4_is_answered_with_a_cookie_the_kernel_accepts() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        let syn = syn4(40_000, 1000).build();
        let mut out = Vec::new();
        let d = moved(&mut dp, |dp| out.push(run_out(dp, &syn)));
        let (verdict, frame) = out.pop().unwrap();
        assert_eq!(verdict, XDP_TX, "counters: {d:?}");
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieSent, 1)]));
        let sa = SynAck::parse(frame);
        // Ethernet and IP addresses swapped, ports swapped.
        assert_eq!(&sa.frame[0..6], &CLIENT_MAC);
        assert_eq!(&sa.frame[6..12], &SERVER_MAC);
        assert_eq!(&sa.frame[26..30], &SERVER);
        assert_eq!(&sa.frame[30..34], &CLIENT);
        assert_eq!(&sa.tcp()[0..4], &[0, 80, 0x9c, 0x40]);
        assert_eq!(sa.tcp()[13], TCP_SYN | TCP_ACK);
        assert_eq!(sa.ack(), 1001);
        assert_eq!(sa.tcp().len(), 40, "no payload, 20 bytes of options");
        sa.checksums_verify();
        // Options as documented: MSS, SACK-permitted, timestamps, window scale.
        assert_eq!(sa.option(2).unwrap(), 1460u16.to_be_bytes());
        assert!(sa.option(4).is_some(), "SACK-permitted");
        assert_eq!(sa.option(3).unwrap(), vec![7], "the listener's window scale");
        let ts = sa.option(8).unwrap();
        let tsval = u32::from_be_bytes(ts[..4].try_into().unwrap());
        assert_eq!(u32::from_be_bytes(ts[4..].try_into().unwrap()), CLIENT_TSVAL, "TSecr echoes the client");
        // The client offered wscale 7 and SACK: the kernel will decode them.
        assert_eq!(decode_tsecr(tsval), (Some(7), true));

        // The kernel itself checks the cookie on the final ACK: it passes
        // as a valid cookie ACK...
        let ack = final_ack4(40_000, 1000, &sa);
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &ack), XDP_PASS));
        assert_eq!(d, want(&[(CookieAckValid, 1), (PassTcp, 1)]));
        // ...and one with a wrong cookie is dropped.
        let mut bad = SynAck::parse(sa.frame.clone());
        let l4 = bad.l4;
        bad.frame[l4 + 4] ^= 0x55;
        let forged = final_ack4(40_000, 1000, &bad);
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &forged), XDP_DROP));
        assert_eq!(d, want(&[(DropAckInvalid, 1)]));
    });
    let a = Maps::new(&mut dp.ebpf).attack().unwrap();
    assert!(a.first_cookie_ns >= a.entered_ns, "first cookie time recorded: {a:?}");
}

#[test]
fn syn_v6_behind_two_vlan_tags_is_answered_and_keeps_the_tags() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        let syn = Craft::v6(v6(10), v6(1), 5555, 443)
            .macs(CLIENT_MAC, SERVER_MAC)
            .vlans(&[ETH_P_8021AD, ETH_P_8021Q])
            .flags(TCP_SYN)
            .seq(77)
            .syn_options()
            .build();
        let (verdict, frame) = run_out(&dp, &syn);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(&frame[12..22], &syn[12..22], "both VLAN tags kept");
        let sa = SynAck::parse(frame);
        assert!(sa.v6);
        assert_eq!(sa.l3, 22);
        assert_eq!(&sa.frame[sa.l3 + 8..sa.l3 + 24], &v6(1), "source = the server");
        assert_eq!(&sa.frame[sa.l3 + 24..sa.l3 + 40], &v6(10));
        assert_eq!(sa.ack(), 78);
        assert_eq!(sa.option(2).unwrap(), 1440u16.to_be_bytes());
        sa.checksums_verify();
    });
}

#[test]
fn syn_without_options_gets_an_mss_only_reply() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        // hping3-style: no options at all; the frame must grow by 4 bytes.
        let syn = Craft::v4(CLIENT, SERVER, 1234, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(9).build();
        let (verdict, frame) = run_out(&dp, &syn);
        assert_eq!(verdict, XDP_TX);
        let sa = SynAck::parse(frame);
        assert_eq!(sa.tcp().len(), 24);
        assert_eq!(
            sa.options(),
            vec![(2, 1460u16.to_be_bytes().to_vec())],
            "MSS only: no timestamps to carry the rest"
        );
        sa.checksums_verify();
    });
}

/// The layouts other than a bare SYN's and Linux's (walked on a copy of
/// the header, any length), with a payload the reply drops: answered with
/// what each client offered and a cookie the kernel accepts.
#[test]
fn other_option_layouts_are_walked_and_answered() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        // (options, has timestamps, window scale, SACK)
        let layouts: [(&[u8], bool, Option<u8>, bool); 3] = [
            // macOS: MSS, NOP, WS, NOP, NOP, TS, SACK-permitted, EOL (44 bytes).
            (&[2, 4, 0x05, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 0, 4, 2, 0, 0], true, Some(6), true),
            // Windows: MSS, NOP, WS, NOP, NOP, SACK-permitted (32 bytes).
            (&[2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2], false, None, false),
            // 40 bytes but not Linux's order: MSS, NOPs, TS, NOP, WS; no SACK.
            (&[2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 0, 1, 3, 3, 5], true, Some(5), false),
        ];
        for (i, (opts, ts, ws, sack)) in layouts.into_iter().enumerate() {
            let sport = 41_000 + i as u16;
            let syn = Craft::v4(CLIENT, SERVER, sport, 80)
                .macs(CLIENT_MAC, SERVER_MAC)
                .flags(TCP_SYN)
                .seq(500)
                .raw_tcp_options(opts)
                .payload(b"data a SYN may carry")
                .build();
            let (verdict, frame) = run_out(&dp, &syn);
            assert_eq!(verdict, XDP_TX, "layout {i}");
            let sa = SynAck::parse(frame);
            sa.checksums_verify();
            assert_eq!(sa.ack(), 501, "layout {i}: the payload is not acknowledged");
            assert_eq!(sa.option(2).unwrap(), 1460u16.to_be_bytes(), "layout {i}");
            if !ts {
                assert_eq!(sa.tcp().len(), 24, "layout {i}: MSS only, no payload");
                continue;
            }
            assert_eq!(sa.tcp().len(), 40, "layout {i}: no payload");
            let t = sa.option(8).unwrap();
            assert_eq!(u32::from_be_bytes(t[4..].try_into().unwrap()), 2, "layout {i}: TSecr echoes the client");
            assert_eq!(decode_tsecr(u32::from_be_bytes(t[..4].try_into().unwrap())), (ws, sack), "layout {i}");
            assert_eq!(sa.option(4).is_some(), sack, "layout {i}: SACK-permitted as offered");
            assert_eq!(sa.option(3).is_some(), ws.is_some(), "layout {i}: window scale as offered");
            let d = moved(&mut dp, |dp| assert_eq!(run(dp, &final_ack4(sport, 500, &sa)), XDP_PASS));
            assert_eq!(d, want(&[(CookieAckValid, 1), (PassTcp, 1)]), "layout {i}: the kernel takes the cookie");
        }
    });
}

/// One connection to `l` that the server closes first, so its side ends
/// in TIME_WAIT; the client's port.
fn time_wait(l: &TcpListener) -> u16 {
    let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let cport = c.local_addr().unwrap().port();
    let (mut s, _) = l.accept().unwrap();
    drop(s.write_all(b"x"));
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    let mut b = [0u8; 8];
    while c.read(&mut b).unwrap_or(0) > 0 {}
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(100));
    cport
}

#[test]
fn the_kernel_answers_what_the_responder_must_not() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        // A closed port: no listener, the kernel answers (with a RST).
        let closed = Craft::v4(CLIENT, SERVER, 1000, 81).flags(TCP_SYN).seq(1).syn_options().build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &closed), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieNoListener, 1), (PassTcp, 1)]));
        // IPv4 options: not rewritten in place, the kernel answers.
        let opts = syn4(1001, 1).ip_options(8).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &opts), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieOddHeaders, 1), (PassTcp, 1)]));

        // A 4-tuple that still has a TIME_WAIT socket goes to the kernel.
        let l = TcpListener::bind("127.0.0.1:8080").unwrap();
        let cport = time_wait(&l);
        let tw = Craft::v4([127, 0, 0, 1], [127, 0, 0, 1], cport, 8080).flags(TCP_SYN).seq(5).syn_options().build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &tw), XDP_PASS));
        assert!(d.contains(&(CookieOtherSocket.name(), 1)), "TIME_WAIT goes to the kernel: {d:?}");
    });
}

#[test]
fn the_socket_lookup_is_skipped_only_for_a_proven_listener_and_a_4_tuple_not_closed_lately() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND | FLAG_EGRESS);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        // The first SYN to a port takes the lookup; its cookie proves the
        // listener, and the next SYNs to that port are answered without one.
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(3000, 1).build()), XDP_TX));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieSent, 1)]));
        let mut out = Vec::new();
        let d = moved(&mut dp, |dp| out.push(run_out(dp, &syn4(3001, 1000).build())));
        let (verdict, frame) = out.pop().unwrap();
        assert_eq!(verdict, XDP_TX);
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieSent, 1), (CookieNoLookup, 1)]));
        // The same reply, and a cookie the kernel's own check accepts.
        let sa = SynAck::parse(frame);
        sa.checksums_verify();
        assert_eq!(sa.ack(), 1001);
        assert_eq!(decode_tsecr(u32::from_be_bytes(sa.option(8).unwrap()[..4].try_into().unwrap())), (Some(7), true));
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &final_ack4(3001, 1000, &sa)), XDP_PASS));
        assert_eq!(d, want(&[(CookieAckValid, 1), (PassTcp, 1)]));
        // Another port, another family: proven on their own.
        let closed = Craft::v4(CLIENT, SERVER, 3002, 81).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(1).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &closed), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieNoListener, 1), (PassTcp, 1)]));
        let six = Craft::v6(v6(10), v6(1), 3003, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(1).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &six), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieNoListener, 1), (PassTcp, 1)]), "no [::]:80");

        // A TIME_WAIT 4-tuple on a proven port: the server's FIN, seen by
        // the egress program, sends its next SYN to the lookup (and so to
        // the kernel); another 4-tuple to that port still skips it.
        let l = TcpListener::bind("127.0.0.1:8080").unwrap();
        let lo = |sport: u16, seq: u32| {
            Craft::v4([127, 0, 0, 1], [127, 0, 0, 1], sport, 8080).flags(TCP_SYN).seq(seq).syn_options().build()
        };
        assert_eq!(run(&dp, &lo(1, 1)), XDP_TX);
        let cport = time_wait(&l);
        let fin = Craft::v4([127, 0, 0, 1], [127, 0, 0, 1], 8080, cport).flags(TCP_FIN | TCP_ACK).seq(9).ack(9).build();
        assert_eq!(run_egress(&dp, &fin), 0, "egress never drops");
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &lo(cport, 5)), XDP_PASS));
        assert!(d.contains(&(CookieOtherSocket.name(), 1)), "TIME_WAIT goes to the kernel: {d:?}");
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &lo(cport.wrapping_add(1), 5)), XDP_TX));
        assert!(d.contains(&(CookieNoLookup.name(), 1)), "{d:?}");
        // A 4-tuple whose summary mark the FIN made recent, but not its own
        // mark: the exact mark is read, and the lookup is still skipped.
        let lo_addr = tcpguard_common::SrcKey::from_v4([127, 0, 0, 1]).addr;
        let slot = |port: u16| tcpguard_common::handshake::closed_slot(&lo_addr, port, 8080);
        let (summary, place) =
            (tcpguard_common::handshake::closed_summary_place, tcpguard_common::handshake::closed_place);
        let twin = (1..=u16::MAX)
            .find(|&port| {
                port != cport && summary(slot(port)) == summary(slot(cport)) && place(slot(port)) != place(slot(cport))
            })
            .expect("a port sharing the summary");
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &lo(twin, 5)), XDP_TX));
        assert!(d.contains(&(CookieNoLookup.name(), 1)), "a shared summary, its own mark clear: {d:?}");

        // Held back (the replies would not leave): the kernel answers.
        let mut m = Maps::new(&mut dp.ebpf);
        m.set_settings(&attack_settings(FLAG_XDP_COOKIES | FLAG_EGRESS)).unwrap();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(3004, 1).build()), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieHeld, 1), (PassTcp, 1)]));
        // Without the egress program nothing marks closed 4-tuples: every
        // SYN takes the lookup.
        let mut m = Maps::new(&mut dp.ebpf);
        m.set_settings(&attack_settings(RESPOND)).unwrap();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(3005, 1).build()), XDP_TX));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieSent, 1)]));
        let mut m = Maps::new(&mut dp.ebpf);
        m.set_settings(&attack_settings(RESPOND | FLAG_EGRESS)).unwrap();

        // The listener closes: within a second of its last proof a SYN may
        // still be answered (its client's ACK then meets a RST); after it,
        // the lookup finds no listener and the kernel answers.
        drop(l);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &lo(7, 1)), XDP_PASS));
        assert!(d.contains(&(CookieNoListener.name(), 1)), "{d:?}");
    });
}

#[test]
fn only_frames_for_the_host_itself_are_answered_or_dropped() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    let other: [u8; 4] = [192, 0, 2, 99];
    ns.with_listeners(|| {
        let not_ours = want(&[(Syn, 1), (AttackSyn, 1), (NotForHost, 1), (PassTcp, 1)]);
        // Another destination MAC (a stale MAC, another host's frame seen
        // in promiscuous mode), broadcast and multicast: the kernel's.
        for mac in [[0x02, 0, 0, 0, 0, 9], [0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 1]] {
            let syn = syn4(2000, 1).macs(CLIENT_MAC, mac).build();
            let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn), XDP_PASS));
            assert_eq!(d, not_ours, "dst mac {mac:02x?}");
        }
        // A forwarded SYN: our MAC, an address the host does not own, though
        // the wildcard listener on :80 would match it.
        let fwd = Craft::v4(CLIENT, other, 2001, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(1).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &fwd), XDP_PASS));
        assert_eq!(d, not_ours);
        let fwd6 = Craft::v6(v6(10), v6(2), 2002, 443).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(1).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &fwd6), XDP_PASS));
        assert_eq!(d, not_ours);
        // A forwarded connection's ACK is never judged as a forged one.
        run(&dp, &syn4(999, 5).build());
        let ack = Craft::v4(CLIENT, other, 1000, 80).flags(TCP_ACK).seq(2).ack(0xdead_beef).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &ack), XDP_PASS));
        assert_eq!(d, want(&[(NotForHost, 1), (PassTcp, 1)]));
    });
    // The address becomes the host's: answered from then on.
    Maps::new(&mut dp.ebpf).add_local(IpAddr::from(other)).unwrap();
    ns.with_listeners(|| {
        let fwd = Craft::v4(CLIENT, other, 2003, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(1).build();
        assert_eq!(run(&dp, &fwd), XDP_TX);
    });
    Maps::new(&mut dp.ebpf).remove_local(IpAddr::from(other)).unwrap();
    ns.with_listeners(|| {
        let fwd = Craft::v4(CLIENT, other, 2004, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(1).build();
        assert_eq!(run(&dp, &fwd), XDP_PASS);
    });
    // More IPv4 addresses than the cache line holds: it says "unknown" and
    // the hash decides, for the last added as for the first.
    let many: Vec<IpAddr> = (1..=LOCAL_V4_SLOTS as u8 + 1).map(|i| IpAddr::from([198, 51, 100, i])).collect();
    let mut m = Maps::new(&mut dp.ebpf);
    m.change_locals(&many, &[]).unwrap();
    assert_eq!(m.local_v4().unwrap().known, 0, "more addresses than fit");
    ns.with_listeners(|| {
        for (i, a) in [many[0], many[LOCAL_V4_SLOTS]].into_iter().enumerate() {
            let IpAddr::V4(a) = a else { unreachable!() };
            let syn = Craft::v4(CLIENT, a.octets(), 2010 + i as u16, 80).macs(CLIENT_MAC, SERVER_MAC);
            assert_eq!(run(&dp, &syn.flags(TCP_SYN).seq(1).build()), XDP_TX, "{a} through the hash");
        }
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &fwd_syn(other, 2012)), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (NotForHost, 1), (PassTcp, 1)]));
    });
    // Back under the limit: the cache line knows again, without the one
    // removed.
    let mut m = Maps::new(&mut dp.ebpf);
    m.change_locals(&[], &many[1..]).unwrap();
    let l = m.local_v4().unwrap();
    assert_eq!(l.known, 1);
    ns.with_listeners(|| {
        let IpAddr::V4(first) = many[0] else { unreachable!() };
        assert_eq!(run(&dp, &fwd_syn(first.octets(), 2013)), XDP_TX);
        let IpAddr::V4(gone) = many[1] else { unreachable!() };
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &fwd_syn(gone.octets(), 2014)), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (NotForHost, 1), (PassTcp, 1)]));
    });
}

/// A SYN from the client to `dst` on port 80, to the server's MAC.
fn fwd_syn(dst: [u8; 4], sport: u16) -> Vec<u8> {
    Craft::v4(CLIENT, dst, sport, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_SYN).seq(1).build()
}

#[test]
fn a_responder_held_back_still_tells_listeners_from_closed_ports() {
    let _g = serial();
    let mut dp = load();
    // Enabled by the policy, not allowed to answer (the interface's replies
    // would not leave, or the sysctls are not set yet): the kernel answers,
    // and a SYN to no listener is still told apart (a scan is not a flood).
    setup(&mut dp, FLAG_XDP_COOKIES);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(3000, 1).build()), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieHeld, 1), (PassTcp, 1)]));
        let closed = Craft::v4(CLIENT, SERVER, 3001, 81).flags(TCP_SYN).seq(1).syn_options().build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &closed), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieNoListener, 1), (PassTcp, 1)]));
    });
    let mut m = Maps::new(&mut dp.ebpf);
    let s = m.settings().unwrap();
    m.set_settings(&Settings { flags: s.flags | FLAG_ANSWER, ..s }).unwrap();
    ns.with_listeners(|| assert_eq!(run(&dp, &syn4(3002, 1).build()), XDP_TX));
}

#[test]
fn allow_listed_sources_and_monitor_mode_are_never_answered() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    Maps::new(&mut dp.ebpf).allow(&Prefix::host(IpAddr::from(CLIENT)), 0).unwrap();
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(1000, 1).build()), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieSkipAllowed, 1), (PassTcp, 1)]));
    });
    // The first-byte summary: a source no entry's first byte covers is
    // answered without the trie; an entry the daemon adds is in effect at
    // once (the summary is widened before the trie gets it), and one it
    // removes leaves a wider summary, which only costs a trie lookup.
    let other = [11, 0, 0, 1];
    let from_other = |port| Craft::v4(other, SERVER, port, 80).flags(TCP_SYN).seq(1).syn_options().build();
    let f = Maps::new(&mut dp.ebpf).allow_first().unwrap();
    assert!(f.known == 1 && f.may_hold(CLIENT[0], false) && !f.may_hold(other[0], false));
    ns.with_listeners(|| assert_eq!(run(&dp, &from_other(1010)), XDP_TX));
    let eleven = "11.0.0.0/8".parse::<Prefix>().unwrap();
    Maps::new(&mut dp.ebpf).insert_allow(&eleven, 0).unwrap();
    ns.with_listeners(|| {
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &from_other(1011)), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieSkipAllowed, 1), (PassTcp, 1)]));
    });
    let mut m = Maps::new(&mut dp.ebpf);
    assert!(m.remove_allow(&eleven).unwrap());
    assert!(m.allow_first().unwrap().may_hold(other[0], false), "a superset until synced");
    ns.with_listeners(|| assert_eq!(run(&dp, &from_other(1012)), XDP_TX));
    // A summary never written (a map from before it existed): the trie.
    let mut m = Maps::new(&mut dp.ebpf);
    m.insert_allow(&eleven, 0).unwrap();
    clear_allow_first(&mut dp);
    ns.with_listeners(|| {
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &from_other(1013)), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieSkipAllowed, 1), (PassTcp, 1)]));
    });
    let mut m = Maps::new(&mut dp.ebpf);
    m.disallow(&eleven).unwrap();
    assert!(!m.allow_first().unwrap().may_hold(other[0], false), "synced to the lists");
    let mut m = Maps::new(&mut dp.ebpf);
    m.disallow(&Prefix::host(IpAddr::from(CLIENT))).unwrap();
    let s = m.settings().unwrap();
    m.set_settings(&Settings { flags: s.flags | FLAG_MONITOR, ..s }).unwrap();
    ns.with_listeners(|| {
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(1001, 1).build()), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (MonitorCookie, 1), (PassTcp, 1)]));
        // A forged ACK is only counted in monitor mode.
        let ack = Craft::v4(CLIENT, SERVER, 1002, 80).flags(TCP_ACK).seq(2).ack(12345).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &ack), XDP_PASS));
        assert_eq!(d, want(&[(MonitorAckInvalid, 1), (PassTcp, 1)]));
    });
}

#[test]
fn a_forged_ack_is_dropped_and_established_traffic_passes() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    ns.with_listeners(|| {
        // Make the listener send a cookie first (as under a flood).
        run(&dp, &syn4(999, 5).build());
        let ack = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(2).ack(0xdead_beef).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &ack), XDP_DROP));
        assert_eq!(d, want(&[(DropAckInvalid, 1)]));
        // An ACK to a port with no socket at all is not ours to judge.
        let other = Craft::v4(CLIENT, SERVER, 1000, 9).flags(TCP_ACK).seq(2).ack(3).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &other), XDP_PASS));
        assert_eq!(d, want(&[(PassTcp, 1)]));
        // A real established connection's packets pass untouched.
        let (_conn, data) = established_data();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &data), XDP_PASS));
        assert_eq!(d, want(&[(PassTcp, 1)]));
    });
}

/// A real connection on loopback (both ends, kept open while the returned
/// sockets live) and a data segment of it from the client.
fn established_data() -> ((TcpStream, TcpStream), Vec<u8>) {
    let l = TcpListener::bind("127.0.0.1:8081").unwrap();
    let c = TcpStream::connect("127.0.0.1:8081").unwrap();
    let (s, peer) = l.accept().unwrap();
    let data = Craft::v4([127, 0, 0, 1], [127, 0, 0, 1], peer.port(), 8081)
        .flags(TCP_ACK)
        .seq(1)
        .ack(1)
        .payload(b"hi")
        .build();
    ((c, s), data)
}

fn set_ack_mode(dp: &mut Datapath, on: bool) {
    Maps::new(&mut dp.ebpf)
        .set_ack_mode(&AttackState {
            active: u32::from(on),
            reason: ATTACK_REASON_DAEMON,
            entered_ns: monotonic_ns(),
            ..AttackState::default()
        })
        .unwrap();
}

#[test]
fn ack_checking_mode_drops_unmatched_acks_to_listeners_and_nothing_else() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    let ns = Ns::new("2");
    let other: [u8; 4] = [192, 0, 2, 99];
    ns.with_listeners(|| {
        // A SYN-ACK with a cookie, as the kernel would send when its queue
        // overflows (here from attack mode); then attack mode ends and only
        // the ACK check is on: an ACK flood without a SYN flood.
        let (v, frame) = run_out(&dp, &syn4(41_000, 7000).build());
        assert_eq!(v, XDP_TX);
        let sa = SynAck::parse(frame);
        Maps::new(&mut dp.ebpf).set_attack(&AttackState::default()).unwrap();
        set_ack_mode(&mut dp, true);

        // An ACK of no connection to a listener: dropped, counted.
        let forged = Craft::v4(CLIENT, SERVER, 1000, 80).flags(TCP_ACK).seq(2).ack(0xdead_beef).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &forged), XDP_DROP));
        assert_eq!(d, want(&[(DropAckInvalid, 1)]));
        let forged6 = Craft::v6(v6(10), v6(1), 1001, 443).flags(TCP_ACK).seq(2).ack(77).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &forged6), XDP_DROP));
        assert_eq!(d, want(&[(DropAckInvalid, 1)]));
        // The ACK that completes a cookie handshake passes (the kernel's
        // own check of its cookie).
        let ack = final_ack4(41_000, 7000, &sa);
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &ack), XDP_PASS));
        assert_eq!(d, want(&[(CookieAckValid, 1), (PassTcp, 1)]));
        // An established connection's data passes untouched.
        let (_conn, data) = established_data();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &data), XDP_PASS));
        assert_eq!(d, want(&[(PassTcp, 1)]));
        // An ACK to an address the host does not own (forwarded traffic),
        // though the wildcard listener would match it: the kernel's.
        let fwd = Craft::v4(CLIENT, other, 1002, 80).macs(CLIENT_MAC, SERVER_MAC).flags(TCP_ACK).seq(2).ack(3).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &fwd), XDP_PASS));
        assert_eq!(d, want(&[(NotForHost, 1), (PassTcp, 1)]));
        // A closed port: no listener to protect, the kernel answers.
        let closed = Craft::v4(CLIENT, SERVER, 1003, 9).flags(TCP_ACK).seq(2).ack(3).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &closed), XDP_PASS));
        assert_eq!(d, want(&[(PassTcp, 1)]));
        // SYNs are tracked as in calm times: no attack-mode accounting.
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(1004, 1).build()), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (SynTracked, 1), (HalfOpenOpened, 1), (NewSource, 1), (PassTcp, 1)]));
    });
    // The mode off: the same forged ACK goes to the kernel.
    set_ack_mode(&mut dp, false);
    ns.with_listeners(|| {
        let forged = Craft::v4(CLIENT, SERVER, 1005, 80).flags(TCP_ACK).seq(2).ack(0xdead_beef).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &forged), XDP_PASS));
        assert_eq!(d, want(&[(PassTcp, 1)]));
    });
}

#[test]
fn the_kernels_rsts_to_unmatched_acks_put_the_datapath_in_ack_checking_mode() {
    let _g = serial();
    let mut dp = load();
    let s = Settings { attack_ack_rate: 20_000, ..attack_settings(0) };
    Maps::new(&mut dp.ebpf).set_settings(&s).unwrap();
    for a in local_addrs() {
        Maps::new(&mut dp.ebpf).add_local(a).unwrap();
    }
    let n = s.attack_window_acks();
    assert_eq!(n, 100);
    let egress = |dp: &Datapath, frame: &[u8], repeat: u64| {
        let opts = TestRunOptions { data_in: Some(frame), repeat: repeat as u32, ..TestRunOptions::default() };
        assert_eq!(dp.egress().test_run(opts).unwrap().return_value, 0, "egress never drops");
    };
    // The kernel's answer to a SYN on a closed port (RST|ACK) is a scan's,
    // not an ACK flood's.
    let refused = Craft::v4(SERVER, CLIENT, 81, 2000).flags(TCP_RST | TCP_ACK).seq(0).ack(301).build();
    let d = moved(&mut dp, |dp| egress(dp, &refused, 3 * n));
    assert_eq!(d, want(&[]));
    // Its answer to an ACK of no connection: a RST without ACK, over IPv6
    // as over IPv4 (the same window).
    let rst6 = Craft::v6(v6(1), v6(10), 443, 2000).flags(TCP_RST).seq(7).build();
    let d = moved(&mut dp, |dp| egress(dp, &rst6, 1));
    assert_eq!(d, want(&[(AckUnmatched, 1)]));
    let rst = Craft::v4(SERVER, CLIENT, 80, 2001).flags(TCP_RST).seq(0xdead_beef).build();
    let d = moved(&mut dp, |dp| egress(dp, &rst, n - 2));
    assert_eq!(d, want(&[(AckUnmatched, n - 2)]));
    assert_eq!(Maps::new(&mut dp.ebpf).ack_mode().unwrap().active, 0, "one short of the window");
    // A full window in one run (one CPU, microseconds): the mode is on.
    let d = moved(&mut dp, |dp| egress(dp, &rst, n));
    assert_eq!(d, want(&[(AckUnmatched, n), (AckModeEntered, 1)]));
    let a = Maps::new(&mut dp.ebpf).ack_mode().unwrap();
    assert_eq!((a.active, a.reason, a.entries), (1, ATTACK_REASON_ACK_RATE, 1), "{a:?}");
    assert!(a.entered_ns - a.trigger_window_ns <= tcpguard_common::ATTACK_WINDOW_NS, "{a:?}");
    // SYN attack mode is a separate state, untouched.
    assert_eq!(Maps::new(&mut dp.ebpf).attack().unwrap().active, 0);
    // And the XDP program now drops the flood's ACKs itself.
    let ns = Ns::new("1");
    ns.with_listeners(|| {
        let forged = Craft::v4(CLIENT, SERVER, 2002, 80).flags(TCP_ACK).seq(2).ack(5).build();
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &forged), XDP_DROP));
        assert_eq!(d, want(&[(DropAckInvalid, 1)]));
    });
    // Off (the daemon ends it): the ACKs go to the kernel again.
    set_ack_mode(&mut dp, false);
    ns.with_listeners(|| {
        let forged = Craft::v4(CLIENT, SERVER, 2003, 80).flags(TCP_ACK).seq(2).ack(5).build();
        assert_eq!(run(&dp, &forged), XDP_PASS);
    });
}

#[test]
fn with_kernel_cookies_off_the_syn_goes_to_the_kernel() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, RESPOND);
    // tcp_syncookies=1: the kernel makes no cookie for a listener whose queue is not full.
    let ns = Ns::new("1");
    ns.with_listeners(|| {
        let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(1000, 1).build()), XDP_PASS));
        assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (CookieRefused, 1), (PassTcp, 1)]));
    });
}

#[test]
fn the_datapath_enters_attack_mode_by_itself_within_one_window() {
    let _g = serial();
    let mut dp = load();
    let s = Settings { attack_syn_rate: 20_000, ..attack_settings(0) };
    Maps::new(&mut dp.ebpf).set_settings(&s).unwrap();
    let n = s.attack_window_syns();
    let before = counters(&mut dp);
    // One below the window's threshold: still tracking.
    let syn = syn4(1000, 1).build();
    let opts = TestRunOptions { data_in: Some(&syn), repeat: (n - 1) as u32, ..TestRunOptions::default() };
    dp.program().test_run(opts).unwrap();
    assert_eq!(Maps::new(&mut dp.ebpf).attack().unwrap().active, 0);
    // A full window's worth in one run (the window is per CPU, and one
    // BPF_PROG_TEST_RUN stays on one CPU; its repeats take microseconds).
    let opts = TestRunOptions { data_in: Some(&syn), repeat: n as u32, ..TestRunOptions::default() };
    dp.program().test_run(opts).unwrap();
    let a = Maps::new(&mut dp.ebpf).attack().unwrap();
    let after = counters(&mut dp);
    assert_eq!((a.active, a.reason, a.entries), (1, ATTACK_REASON_SYN_RATE, 1), "{a:?}");
    assert!(a.entered_ns - a.trigger_window_ns <= tcpguard_common::ATTACK_WINDOW_NS, "{a:?}");
    assert_eq!(after.get(AttackEntered) - before.get(AttackEntered), 1);
    assert!(after.get(AttackSyn) - before.get(AttackSyn) >= 1);
    // The entry is announced on the ring buffer for the daemon.
    let mut rb = aya::maps::RingBuf::try_from(dp.ebpf.map_mut("EVENTS").unwrap()).unwrap();
    let item = rb.next().expect("a mode event");
    assert_eq!(item.len(), std::mem::size_of::<tcpguard_common::ModeEvent>());
}

#[test]
fn attack_mode_makes_no_insert_per_syn_and_finds_the_heavy_source() {
    let _g = serial();
    let mut dp = load();
    let s = Settings { attack_sample: 64, ..attack_settings(0) };
    Maps::new(&mut dp.ebpf).set_settings(&s).unwrap();
    enter_attack(&mut dp);
    let before = counters(&mut dp);
    // 6,400 spoofed SYNs from distinct sources, and a heavy source sending
    // one SYN in ten (640 SYNs) among them.
    let heavy = [198, 51, 100, 66];
    let mut heavy_sent = 0u64;
    for i in 0..6400u32 {
        let src = if i % 10 == 0 {
            heavy_sent += 1;
            heavy
        } else {
            let x = i.wrapping_mul(2_654_435_761);
            [10, (x >> 16) as u8, (x >> 8) as u8, x as u8]
        };
        let f = Craft::v4(src, SERVER, 1024 + (i % 50_000) as u16, 80).flags(TCP_SYN).seq(i).build();
        assert_eq!(run(&dp, &f), XDP_PASS);
    }
    let after = counters(&mut dp);
    let d = |c| after.get(c) - before.get(c);
    assert_eq!(d(AttackSyn), 6400);
    // Only the sampled SYNs (1 in 64, counted per CPU: the runs may land on
    // either CPU) reach the half-open table, about 100, not 6,400; and the
    // source table gets the promoted heavy source alone (a sampled SYN
    // updates its source's entry, and enters none).
    assert!((98..=100).contains(&d(AttackSampled)), "sampled {}", d(AttackSampled));
    assert_eq!(d(NewSource), 1, "source-table inserts");
    assert!(d(HalfOpenOpened) <= 100, "half-open inserts: {}", d(HalfOpenOpened));
    assert_eq!(d(SketchPromoted), 1);
    // The sketch counts one SYN in ACCOUNT_EVERY at random: what it and the
    // source table say of the heavy source is within the sketch's bound and
    // 4.5 standard deviations of that sampling (√(n·(k − 1)): ±318 here).
    let k = f64::from(sketch::ACCOUNT_EVERY);
    let bound = std::f64::consts::E * 6400.0 / sketch::CMS_COLS as f64;
    let spread = 4.5 * (heavy_sent as f64 * (k - 1.0)).sqrt();
    let near = |x: u64| (x as f64) >= heavy_sent as f64 - spread && (x as f64) <= heavy_sent as f64 + spread + bound;
    // The heavy source is followed with its count, each sampled SYN
    // standing for k.
    let m = Maps::new(&mut dp.ebpf);
    let st = m.source(IpAddr::from(heavy)).unwrap().expect("heavy source promoted");
    assert!(near(st.syns), "{} SYNs counted of {heavy_sent}", st.syns);
    // The sketch itself: the heavy source's scaled estimate.
    let h = sketch::src_hash(&tcpguard_common::SrcKey::from_v4(heavy).addr, s.hash_seed);
    // (Summed over CPUs, and over this epoch and the last in case the run
    // crossed an epoch boundary.)
    let ep = sketch::epoch(monotonic_ns());
    let est: u64 = m
        .sketches()
        .unwrap()
        .iter()
        .map(|sk| sketch::scaled(sketch::cms_estimate(sk, h, ep)) + sketch::scaled(sketch::cms_estimate(sk, h, ep - 1)))
        .sum();
    assert!(near(est), "scaled estimate {est} for {heavy_sent}");
    // Distinct sources: the estimate from the source subset, scaled, within
    // 20 % of 5,761 (the subset and the registers are the hash's, not
    // random: the same on every run).
    let regs = m.hll().unwrap();
    let distinct = sketch::distinct_estimate(regs.iter());
    assert!((distinct - 5761.0).abs() < 0.2 * 5761.0, "distinct estimate {distinct:.0}");
    // A heavy-source report went to the daemon.
    assert!(d(HeavyEvent) >= 1);
}

#[test]
fn attack_mode_finds_a_heavy_subnet_through_the_sketch() {
    let _g = serial();
    let mut dp = load();
    let s = Settings { heavy_prefix_syns_per_sec: 300, ..attack_settings(0) };
    Maps::new(&mut dp.ebpf).set_settings(&s).unwrap();
    enter_attack(&mut dp);
    let before = counters(&mut dp);
    // One SYN in five from 250 addresses of 198.51.100.0/24 (about five
    // each: no source is heavy), the rest from spoofed addresses all over
    // 10.0.0.0/8 (one /24 rarely twice).
    for i in 0..6400u32 {
        let src = if i % 5 == 0 {
            [198, 51, 100, (i / 5 % 250) as u8 + 1]
        } else {
            let x = i.wrapping_mul(2_654_435_761);
            [10, (x >> 16) as u8, (x >> 8) as u8, x as u8]
        };
        let f = Craft::v4(src, SERVER, 1024 + (i % 50_000) as u16, 80).flags(TCP_SYN).seq(i).build();
        assert_eq!(run(&dp, &f), XDP_PASS);
    }
    let after = counters(&mut dp);
    let d = |c| after.get(c) - before.get(c);
    assert_eq!(d(SketchPromoted), 0, "no single source is heavy");
    assert!(d(HeavyPrefixEvent) >= 1, "the /24 was reported");
    let m = Maps::new(&mut dp.ebpf);
    let agg = m.aggregate("198.51.100.0".parse().unwrap()).unwrap().expect("the /24 counted");
    // Counted from its promotion on (at about 300 of its 1,280 SYNs), each
    // sampled SYN standing for ACCOUNT_EVERY: within 4.5 standard
    // deviations of that sampling.
    let spread = 4.5 * (1280.0 * f64::from(sketch::ACCOUNT_EVERY - 1)).sqrt();
    assert!(agg.syns >= 300 && (agg.syns as f64) <= 1280.0 + spread, "{} SYNs counted", agg.syns);
    // The spread-out flood's own /24s never reach the table.
    let strays = (1..200u32)
        .filter(|i| {
            let x = (i * 5 + 1).wrapping_mul(2_654_435_761);
            m.aggregate(IpAddr::from([10, (x >> 16) as u8, (x >> 8) as u8, 0])).unwrap().is_some()
        })
        .count();
    assert_eq!(strays, 0);
}

#[test]
fn leaving_attack_mode_restores_tracking() {
    let _g = serial();
    let mut dp = load();
    setup(&mut dp, 0);
    let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(1000, 1).build()), XDP_PASS));
    assert_eq!(d, want(&[(Syn, 1), (AttackSyn, 1), (PassTcp, 1)]));
    Maps::new(&mut dp.ebpf)
        .set_attack(&AttackState { active: 0, left_ns: monotonic_ns(), ..AttackState::default() })
        .unwrap();
    let d = moved(&mut dp, |dp| assert_eq!(run(dp, &syn4(1001, 1).build()), XDP_PASS));
    assert!(d.contains(&(HalfOpenOpened.name(), 1)) && !d.iter().any(|(n, _)| *n == AttackSyn.name()), "{d:?}");
}

/// `ALLOW_FIRST` back to all zero, as a map made before it was written.
fn clear_allow_first(dp: &mut Datapath) {
    let map = dp.ebpf.map_mut(map_names::ALLOW_FIRST).unwrap();
    let mut arr: aya::maps::Array<&mut aya::maps::MapData, FirstBytes> = aya::maps::Array::try_from(map).unwrap();
    arr.set(0, FirstBytes::default(), 0).unwrap();
}
