//! Small summaries that spare a flood SYN a map walk, each kept by the
//! daemon beside the map it stands for, and each read as "don't know"
//! until the daemon has written it whole (a fresh or upgraded map is all
//! zero): the datapath then looks in the map itself, as before.
//!
//! - [`LocalV4`]: the host's IPv4 addresses, up to [`LOCAL_V4_SLOTS`], in
//!   one cache line. The responder's "is this SYN for this host" is then a
//!   few word compares instead of a hash of a 16-byte key (measured at
//!   about 70 ns a SYN under a full-rate flood on this VM).
//! - [`FirstBytes`]: which first bytes of an address (IPv4's first octet,
//!   IPv6's first byte) any entry of a list covers, one for the allow-lists
//!   (`ALLOW_FIRST`) and one for the block-lists (`BLOCK_FIRST`). A source
//!   whose first byte none covers is not on the list, without the LPM
//!   trie's walk (about 22 ns a SYN for the allow-list, which the default
//!   config never leaves empty: 127.0.0.0/8 and ::1; about 18 ns on every
//!   TCP packet for a block-list that holds anything, as during a flood
//!   the daemon blocks heavy sources of). A superset is always safe: a bit
//!   set for nothing costs a trie lookup, never a wrong verdict.

/// Addresses [`LocalV4`] holds (one 64-byte cache line with its count).
pub const LOCAL_V4_SLOTS: usize = 15;

/// The host's IPv4 addresses (`LOCAL_V4`, one entry), each a packet-order
/// word. `known` 0: not written whole yet, or more addresses than fit, or
/// being rewritten: look in `LOCAL_ADDRS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalV4 {
    pub known: u16,
    pub count: u16,
    pub addrs: [u32; LOCAL_V4_SLOTS],
}

impl LocalV4 {
    /// The summary of exactly these IPv4 addresses (not known when more
    /// than [`LOCAL_V4_SLOTS`]).
    pub fn of(addrs: &[[u8; 4]]) -> LocalV4 {
        let mut l = LocalV4::default();
        if addrs.len() > LOCAL_V4_SLOTS {
            return l;
        }
        for (slot, a) in l.addrs.iter_mut().zip(addrs) {
            *slot = u32::from_ne_bytes(*a);
        }
        l.count = addrs.len() as u16;
        l.known = 1;
        l
    }

    /// `Some(local)` when the summary knows; `None`: ask the map. `a` is
    /// the address as four packet bytes read as one native word.
    #[inline(always)]
    pub fn holds(&self, a: u32) -> Option<bool> {
        if self.known == 0 {
            return None;
        }
        let n = self.count as usize;
        let mut i = 0;
        while i < LOCAL_V4_SLOTS {
            if i < n && self.addrs[i] == a {
                return Some(true);
            }
            i += 1;
        }
        Some(false)
    }
}

/// Which first bytes of a source address a pair of lists (IPv4 and IPv6
/// tries) covers (`ALLOW_FIRST`, `BLOCK_FIRST`, one entry each): bit `b` of
/// `v4` for IPv4 first octet `b`, of `v6` for IPv6 first byte `b`. `known`
/// 0: look in the trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstBytes {
    pub known: u32,
    pub _pad: u32,
    pub v4: [u32; 8],
    pub v6: [u32; 8],
}

impl FirstBytes {
    /// The summary of these list entries: (the address's first byte, the
    /// prefix length, is IPv6).
    pub fn of(entries: impl IntoIterator<Item = (u8, u8, bool)>) -> FirstBytes {
        let mut f = FirstBytes { known: 1, ..FirstBytes::default() };
        for (first, len, v6) in entries {
            f.cover(first, len, v6);
        }
        f
    }

    /// Set the bits of every first byte a prefix of `len` bits starting
    /// with `first` covers.
    pub fn cover(&mut self, first: u8, len: u8, v6: bool) {
        let free = if len >= 8 { 0 } else { 0xffu8 >> len };
        let lo = first & !free;
        let bits = if v6 { &mut self.v6 } else { &mut self.v4 };
        for b in lo..=(lo | free) {
            bits[usize::from(b >> 5)] |= 1 << (b & 31);
        }
    }

    /// False only when no entry of the list can hold a source whose first
    /// byte is `first`.
    #[inline(always)]
    pub fn may_hold(&self, first: u8, v6: bool) -> bool {
        if self.known == 0 {
            return true;
        }
        let words = if v6 { &self.v6 } else { &self.v4 };
        words[usize::from(first >> 5) & 7] >> (first & 31) & 1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_v4_holds_exactly_its_addresses_and_defers_when_unknown() {
        let addrs = [[10, 0, 0, 1], [192, 0, 2, 7], [172, 16, 5, 9]];
        let l = LocalV4::of(&addrs);
        for a in addrs {
            assert_eq!(l.holds(u32::from_ne_bytes(a)), Some(true));
        }
        for a in [[10, 0, 0, 2], [0, 0, 0, 0], [1, 0, 0, 10], [192, 0, 2, 8]] {
            assert_eq!(l.holds(u32::from_ne_bytes(a)), Some(false), "{a:?}");
        }
        // Unused slots hold 0.0.0.0, which must not read as local.
        assert_eq!(LocalV4::of(&[]).holds(0), Some(false));
        // Too many to hold, or never written: the map decides.
        let many: Vec<[u8; 4]> = (0..=LOCAL_V4_SLOTS as u8).map(|i| [10, 0, 0, i]).collect();
        assert_eq!(LocalV4::of(&many).holds(u32::from_ne_bytes([10, 0, 0, 0])), None);
        assert_eq!(LocalV4::of(&many[..LOCAL_V4_SLOTS]).holds(u32::from_ne_bytes([10, 0, 0, 14])), Some(true));
        assert_eq!(LocalV4::default().holds(1), None);
        assert_eq!(core::mem::size_of::<LocalV4>(), 64);
    }

    #[test]
    fn first_bytes_cover_every_first_byte_the_prefixes_reach_and_no_other() {
        // The default config's entries.
        let f = FirstBytes::of([(127, 8, false), (0, 128, true)]);
        for b in 0..=255u8 {
            assert_eq!(f.may_hold(b, false), b == 127, "v4 {b}");
            assert_eq!(f.may_hold(b, true), b == 0, "v6 {b}");
        }
        // Prefixes shorter than a byte cover a run of first bytes.
        let f = FirstBytes::of([(10, 7, false), (0xfc, 7, true)]);
        let v4: Vec<u8> = (0..=255u8).filter(|b| f.may_hold(*b, false)).collect();
        assert_eq!(v4, vec![10, 11]);
        let v6: Vec<u8> = (0..=255u8).filter(|b| f.may_hold(*b, true)).collect();
        assert_eq!(v6, vec![0xfc, 0xfd]);
        let all = FirstBytes::of([(0, 0, false)]);
        assert!((0..=255u8).all(|b| all.may_hold(b, false)));
        assert!((0..=255u8).all(|b| !all.may_hold(b, true)));
        // Against every prefix: a covered address's first byte is marked.
        for len in 0..=32u8 {
            for first in [0u8, 1, 63, 64, 127, 128, 200, 255] {
                let f = FirstBytes::of([(first, len, false)]);
                assert!(f.may_hold(first, false));
                let span = if len >= 8 { 1 } else { 1u32 << (8 - len) };
                assert_eq!((0..=255u8).filter(|b| f.may_hold(*b, false)).count() as u32, span, "/{len}");
            }
        }
        // Empty but known: nothing is allow-listed; unknown: ask the trie.
        assert!(!FirstBytes::of([]).may_hold(127, false));
        assert!(FirstBytes::default().may_hold(9, true));
        assert_eq!(core::mem::size_of::<FirstBytes>(), 72);
    }
}
