//! `#[repr(C)]` map keys and values. No implicit padding anywhere: every
//! struct is made of u64/u32/u16/byte arrays laid out so that offsets are
//! naturally aligned; sizes are asserted in tests.

/// Map names, shared so the loader and the program cannot disagree.
pub mod map_names {
    pub const SETTINGS: &str = "SETTINGS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const HALF_OPEN: &str = "HALF_OPEN";
    pub const HO_BUCKETS: &str = "HO_BUCKETS";
    pub const SRC_STATS: &str = "SRC_STATS";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const BLOCK_V4: &str = "BLOCK_V4";
    pub const BLOCK_V6: &str = "BLOCK_V6";
    pub const PORTS: &str = "PORTS";
    pub const SYN_SEEN: &str = "SYN_SEEN";
    /// Ring buffer of heavy-source events (not pinned: per daemon run).
    pub const EVENTS: &str = "EVENTS";
    /// Every map the program owns, in pinning order.
    pub const ALL: [&str; 11] = [
        SETTINGS, COUNTERS, HALF_OPEN, HO_BUCKETS, SRC_STATS, ALLOW_V4, ALLOW_V6, BLOCK_V4,
        BLOCK_V6, PORTS, SYN_SEEN,
    ];
}

/// Default sizes; the loader overrides them from the config.
pub const DEFAULT_HALF_OPEN_ENTRIES: u32 = 65_536;
pub const DEFAULT_SRC_ENTRIES: u32 = 131_072;
pub const LIST_ENTRIES: u32 = 16_384;
pub const PORT_ENTRIES: u32 = 1_024;

/// Settings flag: monitor mode, count would-be drops and pass the packet.
pub const FLAG_MONITOR: u32 = 1;
/// Settings flag: only ports present in the `PORTS` map are protected.
/// Without it every destination port is protected.
pub const FLAG_PORT_FILTER: u32 = 2;
/// Settings flag: the block-lists hold entries (skip the lookups otherwise).
pub const FLAG_HAS_BLOCKS: u32 = 4;

/// Half-open timeout used when the settings leave it at zero.
pub const DEFAULT_HALF_OPEN_TIMEOUT_NS: u64 = 10_000_000_000;
/// Largest half-open timeout: the accounting ring has [`halfopen::BUCKETS`]
/// one-second slots and must keep a margin for the reader.
pub const MAX_HALF_OPEN_TIMEOUT_NS: u64 = 60_000_000_000;

/// Live settings, one entry in the `SETTINGS` array, written by userspace at
/// any time. The all-zero value is a safe default: enforce, every port,
/// no rate limit, default timeout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub flags: u32,
    pub _pad: u32,
    /// SYNs per second allowed per source address; 0 = unlimited.
    pub syn_rate: u64,
    /// Token-bucket depth per source; 0 means "equal to `syn_rate`".
    pub syn_burst: u64,
    /// A half-open entry older than this counts as a failed handshake.
    pub half_open_timeout_ns: u64,
    /// SYNs from one source within one second that make it "heavy": the
    /// datapath reports it once per second on the `EVENTS` ring buffer.
    /// 0 = no reports.
    pub heavy_syns_per_sec: u64,
}

impl Settings {
    #[inline(always)]
    pub fn timeout_ns(&self) -> u64 {
        if self.half_open_timeout_ns == 0 {
            DEFAULT_HALF_OPEN_TIMEOUT_NS
        } else if self.half_open_timeout_ns > MAX_HALF_OPEN_TIMEOUT_NS {
            MAX_HALF_OPEN_TIMEOUT_NS
        } else {
            self.half_open_timeout_ns
        }
    }
}

/// A source address: IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcKey {
    pub addr: [u8; 16],
}

/// Connection 4-tuple from the client's side (client = source of the SYN).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Ports in host byte order.
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
}

/// A handshake between the client's SYN and its final ACK.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalfOpen {
    /// Client initial sequence number (seq of the SYN).
    pub isn: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` when the SYN was seen.
    pub opened_ns: u64,
}

/// Per-source statistics, one entry per address in the `SRC_STATS` LRU.
/// Updates are not atomic across CPUs: two CPUs hitting the same source in
/// the same instant can lose an increment. They are statistics, not
/// accounting; the global counters are exact (per-CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcStats {
    pub syns: u64,
    pub completed: u64,
    /// Half-open handshakes opened in the current window and not yet closed.
    pub half_open: u64,
    /// Half-open handshakes that outlived their window (never completed).
    pub failed: u64,
    pub rsts: u64,
    pub fins: u64,
    /// Packets dropped (or, in monitor mode, that would have been).
    pub dropped: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Start of the current half-open window.
    pub window_start_ns: u64,
    /// Token bucket, in thousandths of a token.
    pub tokens_milli: u64,
    pub refill_ns: u64,
    /// SYNs in the current one-second rate window, and its start.
    pub second_syns: u64,
    pub second_start_ns: u64,
}

/// Sent on the `EVENTS` ring buffer when a source reaches
/// `Settings::heavy_syns_per_sec` within one second. The daemon follows
/// such sources with point lookups instead of scanning `SRC_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeavyEvent {
    pub addr: [u8; 16],
    pub syns: u64,
    pub half_open: u64,
    pub completed: u64,
}

/// Value of a block-list entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// `CLOCK_MONOTONIC` ns after which the entry no longer applies; 0 = never.
    pub expires_ns: u64,
}

/// Value of an allow-list entry (presence is what matters).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowEntry {
    pub added_ns: u64,
}

/// One slot of the half-open accounting ring (see [`crate::halfopen`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoBucket {
    /// The second (`ns / 1e9`) this slot currently counts.
    pub sec: u64,
    pub opened: u64,
    pub closed: u64,
}

#[cfg(all(feature = "user", not(target_arch = "bpf")))]
mod pod {
    use super::*;
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for SrcKey {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for HalfOpen {}
    unsafe impl aya::Pod for SrcStats {}
    unsafe impl aya::Pod for BlockEntry {}
    unsafe impl aya::Pod for AllowEntry {}
    unsafe impl aya::Pod for HoBucket {}
    unsafe impl aya::Pod for HeavyEvent {}
    unsafe impl aya::Pod for crate::Counters {}
}

impl SrcKey {
    /// IPv4 address (network order bytes) as an IPv4-mapped key.
    #[inline(always)]
    pub fn from_v4(a: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = a[0];
        addr[13] = a[1];
        addr[14] = a[2];
        addr[15] = a[3];
        SrcKey { addr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_have_no_hidden_padding() {
        assert_eq!(size_of::<Settings>(), 40);
        assert_eq!(size_of::<HeavyEvent>(), 40);
        assert_eq!(size_of::<SrcKey>(), 16);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<HalfOpen>(), 16);
        assert_eq!(size_of::<SrcStats>(), 14 * 8);
        assert_eq!(size_of::<BlockEntry>(), 8);
        assert_eq!(size_of::<HoBucket>(), 24);
    }

    #[test]
    fn zero_settings_are_safe_defaults() {
        let s = Settings::default();
        assert_eq!(s.flags & FLAG_MONITOR, 0);
        assert_eq!(s.flags & FLAG_PORT_FILTER, 0);
        assert_eq!(s.timeout_ns(), DEFAULT_HALF_OPEN_TIMEOUT_NS);
        let big = Settings { half_open_timeout_ns: u64::MAX, ..s };
        assert_eq!(big.timeout_ns(), MAX_HALF_OPEN_TIMEOUT_NS);
    }

    #[test]
    fn v4_mapped_key() {
        let k = SrcKey::from_v4([10, 1, 2, 3]);
        assert_eq!(&k.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k.addr[12..], &[10, 1, 2, 3]);
    }
}
