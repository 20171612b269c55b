//! Builds Ethernet/IP/TCP frames with correct checksums: for the kernel
//! tests (BPF_PROG_TEST_RUN), the benchmarks and the flood generator.
//! Knobs exist to break each header in the ways the parser must survive.

use crate::parse::{ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP};

#[derive(Clone, Debug)]
pub enum L3 {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

/// A frame under construction. Every setter consumes and returns `self`.
#[derive(Clone, Debug)]
pub struct Craft {
    pub l3: L3,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub ttl: u8,
    vlans: Vec<u16>,
    ethertype: Option<u16>,
    ihl: Option<u8>,
    ip_opts: usize,
    tcp_opts: Vec<u8>,
    doff: Option<u8>,
    frag_offset: u16,
    more_fragments: bool,
    l4_proto: u8,
    v6_ext: Vec<u8>,
    payload: Vec<u8>,
}

impl Craft {
    fn new(l3: L3, sport: u16, dport: u16) -> Self {
        Craft {
            l3,
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 64_240,
            ttl: 64,
            vlans: Vec::new(),
            ethertype: None,
            ihl: None,
            ip_opts: 0,
            tcp_opts: Vec::new(),
            doff: None,
            frag_offset: 0,
            more_fragments: false,
            l4_proto: IPPROTO_TCP,
            v6_ext: Vec::new(),
            payload: Vec::new(),
        }
    }
    pub fn v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Self {
        Self::new(L3::V4 { src, dst }, sport, dport)
    }
    pub fn v6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Self {
        Self::new(L3::V6 { src, dst }, sport, dport)
    }
    pub fn flags(mut self, f: u8) -> Self {
        self.flags = f;
        self
    }
    pub fn seq(mut self, s: u32) -> Self {
        self.seq = s;
        self
    }
    pub fn ack(mut self, a: u32) -> Self {
        self.ack = a;
        self
    }
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }
    /// VLAN tags, outermost first, given by their TPID (0x8100 or 0x88a8).
    pub fn vlans(mut self, tpids: &[u16]) -> Self {
        self.vlans = tpids.to_vec();
        self
    }
    pub fn ethertype(mut self, t: u16) -> Self {
        self.ethertype = Some(t);
        self
    }
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.ihl = Some(ihl);
        self
    }
    /// IPv4 options: `n` bytes of NOPs (rounded up to 4).
    pub fn ip_options(mut self, n: usize) -> Self {
        self.ip_opts = n.div_ceil(4) * 4;
        self
    }
    /// TCP options: `n` bytes (rounded up to 4), an MSS option then NOPs.
    pub fn tcp_options(mut self, n: usize) -> Self {
        let n = n.div_ceil(4) * 4;
        let mut o = vec![1u8; n];
        if n >= 4 {
            o[..4].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        }
        self.tcp_opts = o;
        self
    }
    /// TCP options given byte for byte (padded with NOPs to a multiple of 4).
    pub fn raw_tcp_options(mut self, opts: &[u8]) -> Self {
        let mut o = opts.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(1);
        }
        self.tcp_opts = o;
        self
    }
    /// Typical Linux SYN options: MSS, SACK-permitted, timestamps, wscale.
    pub fn syn_options(mut self) -> Self {
        self.tcp_opts = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        self
    }
    pub fn doff(mut self, d: u8) -> Self {
        self.doff = Some(d);
        self
    }
    /// Fragment offset in 8-byte units (IPv4 and the IPv6 fragment header).
    pub fn frag_offset(mut self, off: u16) -> Self {
        self.frag_offset = off;
        self
    }
    pub fn more_fragments(mut self) -> Self {
        self.more_fragments = true;
        self
    }
    pub fn l4_proto(mut self, p: u8) -> Self {
        self.l4_proto = p;
        self
    }
    /// IPv6 extension headers to insert, by next-header number (0, 43, 44, 51, 60).
    pub fn v6_ext(mut self, hdrs: &[u8]) -> Self {
        self.v6_ext = hdrs.to_vec();
        self
    }
    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    fn tcp_segment(&self, pseudo_sum: u32) -> Vec<u8> {
        let doff = self.doff.unwrap_or(((20 + self.tcp_opts.len()) / 4) as u8);
        let mut t = Vec::with_capacity(20 + self.tcp_opts.len() + self.payload.len());
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push(doff << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        t.extend_from_slice(&self.tcp_opts);
        t.extend_from_slice(&self.payload);
        let len = t.len() as u32;
        let proto = u32::from(self.l4_proto);
        let c = fold(sum16(&t, pseudo_sum + len + proto));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    /// The IP packet (no Ethernet header), as a raw socket would send it.
    pub fn build_ip(&self) -> Vec<u8> {
        match &self.l3 {
            L3::V4 { src, dst } => {
                let pseudo = sum16(src, 0) + sum16(dst, 0);
                let l4 = self.tcp_segment(pseudo);
                let hlen = 20 + self.ip_opts;
                let ihl = self.ihl.unwrap_or((hlen / 4) as u8);
                let total = (hlen + l4.len()) as u16;
                let mut frag = self.frag_offset & 0x1fff;
                if self.more_fragments {
                    frag |= 0x2000;
                }
                let mut h = vec![0x40 | (ihl & 0x0f), 0];
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&[0x12, 0x34]);
                h.extend_from_slice(&frag.to_be_bytes());
                h.extend_from_slice(&[self.ttl, self.l4_proto, 0, 0]);
                h.extend_from_slice(src);
                h.extend_from_slice(dst);
                h.extend(std::iter::repeat_n(1u8, self.ip_opts));
                let c = fold(sum16(&h, 0));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h.extend_from_slice(&l4);
                h
            }
            L3::V6 { src, dst } => {
                let pseudo = sum16(src, 0) + sum16(dst, 0);
                let l4 = self.tcp_segment(pseudo);
                let mut ext = Vec::new();
                let mut first_next = self.l4_proto;
                for (i, &h) in self.v6_ext.iter().enumerate().rev() {
                    let next = if i + 1 == self.v6_ext.len() { self.l4_proto } else { self.v6_ext[i + 1] };
                    let mut e = match h {
                        44 => {
                            let mut e = vec![next, 0];
                            e.extend_from_slice(
                                &((self.frag_offset << 3) | u16::from(self.more_fragments)).to_be_bytes(),
                            );
                            e.extend_from_slice(&[0, 0, 0, 1]);
                            e
                        }
                        51 => vec![next, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // (1 + 2) * 4 = 12
                        _ => vec![next, 0, 1, 4, 0, 0, 0, 0],              // PadN, 8 bytes
                    };
                    e.extend_from_slice(&ext);
                    ext = e;
                    first_next = h;
                }
                let plen = (ext.len() + l4.len()) as u16;
                let mut h = vec![0x60, 0, 0, 0];
                h.extend_from_slice(&plen.to_be_bytes());
                h.push(first_next);
                h.push(self.ttl);
                h.extend_from_slice(src);
                h.extend_from_slice(dst);
                h.extend_from_slice(&ext);
                h.extend_from_slice(&l4);
                h
            }
        }
    }

    /// The whole Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        let l3type = match self.l3 {
            L3::V4 { .. } => ETH_P_IP,
            L3::V6 { .. } => ETH_P_IPV6,
        };
        // dst, src, then per tag TPID + TCI (VID 100 + i), then the type.
        for (i, tpid) in self.vlans.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.unwrap_or(l3type).to_be_bytes());
        f.extend_from_slice(&self.build_ip());
        f
    }
}

/// Ones'-complement sum of 16-bit words (odd tail padded with zero).
pub fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Fold a 32-bit sum to the final 16-bit checksum.
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksums_verify() {
        let ip = Craft::v4([192, 0, 2, 1], [192, 0, 2, 2], 1, 2).flags(2).syn_options().build_ip();
        // Header checksum over the header itself folds to zero.
        assert_eq!(fold(sum16(&ip[..20], 0)), 0);
        // TCP checksum with the pseudo header folds to zero.
        let tcp = &ip[20..];
        let pseudo = sum16(&ip[12..20], 0) + tcp.len() as u32 + 6;
        assert_eq!(fold(sum16(tcp, pseudo)), 0);
    }

    #[test]
    fn ipv6_checksum_verifies() {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        let ip = Craft::v6(a, a, 1, 2).flags(2).build_ip();
        let tcp = &ip[40..];
        let pseudo = sum16(&ip[8..40], 0) + tcp.len() as u32 + 6;
        assert_eq!(fold(sum16(tcp, pseudo)), 0);
    }
}
