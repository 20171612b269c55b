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
    pub const AGG_STATS: &str = "AGG_STATS";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const BLOCK_V4: &str = "BLOCK_V4";
    pub const BLOCK_V6: &str = "BLOCK_V6";
    pub const PORTS: &str = "PORTS";
    pub const SYN_SEEN: &str = "SYN_SEEN";
    /// Attack-mode state (one entry), written by the datapath and the daemon.
    pub const ATTACK: &str = "ATTACK";
    /// Per-CPU SYN-rate windows that trip attack mode.
    pub const RATE_WIN: &str = "RATE_WIN";
    /// Per-CPU count-min sketch of SYNs per source (attack mode).
    pub const SKETCH: &str = "SKETCH";
    /// Per-CPU HyperLogLog registers of distinct SYN sources (attack mode).
    pub const HLL: &str = "HLL";
    /// The host's own addresses (the network namespace's), which alone the
    /// responder answers for and invalid ACKs are dropped for.
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    /// ACK-checking mode (one entry, an `AttackState`), written by the
    /// datapath (egress) and the daemon.
    pub const ACK_ATTACK: &str = "ACK_ATTACK";
    /// Per-CPU windows of unmatched ACKs that trip ACK-checking mode.
    pub const ACK_WIN: &str = "ACK_WIN";
    /// Per (family, port): when a cookie the kernel made for that port's
    /// listener last proved it (the responder's socket-lookup-free path).
    pub const LISTENER_SEEN: &str = "LISTENER_SEEN";
    /// Coarse time of the server's last FIN per 4-tuple hash (TC egress):
    /// a SYN that may hit a TIME_WAIT socket takes the socket lookup.
    pub const CLOSED_SEEN: &str = "CLOSED_SEEN";
    /// The latest of each 16 closed marks (TC egress): a SYN reads its own
    /// mark only when its summary is recent.
    pub const CLOSED_SUMMARY: &str = "CLOSED_SUMMARY";
    /// The host's IPv4 addresses in one cache line (`quick::LocalV4`),
    /// kept with `LOCAL_ADDRS`.
    pub const LOCAL_V4: &str = "LOCAL_V4";
    /// The first bytes the allow-lists cover (`quick::FirstBytes`), kept
    /// with `ALLOW_V4` and `ALLOW_V6`.
    pub const ALLOW_FIRST: &str = "ALLOW_FIRST";
    /// The first bytes the block-lists cover (`quick::FirstBytes`), kept
    /// with `BLOCK_V4` and `BLOCK_V6`.
    pub const BLOCK_FIRST: &str = "BLOCK_FIRST";
    /// Ring buffer of heavy-source events (not pinned: per daemon run).
    pub const EVENTS: &str = "EVENTS";
    /// Every map the program owns, in pinning order.
    pub const ALL: [&str; 25] = [
        SETTINGS,
        COUNTERS,
        HALF_OPEN,
        HO_BUCKETS,
        SRC_STATS,
        AGG_STATS,
        ALLOW_V4,
        ALLOW_V6,
        BLOCK_V4,
        BLOCK_V6,
        PORTS,
        SYN_SEEN,
        ATTACK,
        RATE_WIN,
        SKETCH,
        HLL,
        LOCAL_ADDRS,
        ACK_ATTACK,
        ACK_WIN,
        LISTENER_SEEN,
        CLOSED_SEEN,
        CLOSED_SUMMARY,
        LOCAL_V4,
        ALLOW_FIRST,
        BLOCK_FIRST,
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
/// Settings flag: the XDP responder is enabled (`datapath.syn-cookies =
/// "xdp"` with a policy that answers floods with cookies): in attack mode a
/// SYN's socket is looked up (a SYN to no listener is told apart), and it is
/// answered from XDP when [`FLAG_ANSWER`] is set too. Without it attack mode
/// still keeps no per-SYN state, and the kernel answers.
pub const FLAG_XDP_COOKIES: u32 = 8;
/// Settings flag: the allow-lists hold entries.
pub const FLAG_HAS_ALLOWS: u32 = 16;
/// Settings flag: the TC egress program sees the server's SYN-ACKs. A
/// tracked SYN is then half-open only once answered, and the final ACK must
/// acknowledge the server's ISN. Without it (no egress program) a SYN is
/// counted half-open when seen and the ACK's seq alone completes it.
pub const FLAG_EGRESS: u32 = 32;
// (64 was `FLAG_TX_BULK`, the veth flush watch: veth's own count of
// failed XDP_TX is read by the daemon now.)
/// Settings flag: the daemon lets this interface answer from XDP now: its
/// replies can leave, and the sysctls the cookies need (`tcp_syncookies=2`,
/// `tcp_timestamps=2`) are in effect. Cleared before they are restored.
pub const FLAG_ANSWER: u32 = 128;

/// Entries of the local-address map (`LOCAL_ADDRS`).
pub const LOCAL_ADDR_ENTRIES: u32 = 4096;

/// `AttackState::reason`: the datapath's own SYN rate crossed the threshold.
pub const ATTACK_REASON_SYN_RATE: u32 = 1;
/// `AttackState::reason`: the daemon put the datapath in attack mode.
pub const ATTACK_REASON_DAEMON: u32 = 2;
/// `AttackState::reason` (of `ACK_ATTACK`): the datapath's own rate of
/// unmatched ACKs crossed `Settings::attack_ack_rate`.
pub const ATTACK_REASON_ACK_RATE: u32 = 3;

/// Length of the per-CPU window in which the SYN rate is compared with
/// `Settings::attack_syn_rate` (attack mode is entered within one window).
pub const ATTACK_WINDOW_NS: u64 = 5_000_000;
/// Attack-mode SYNs tracked in full (source table and half-open table) are
/// one in this many when the settings leave it at zero.
pub const DEFAULT_ATTACK_SAMPLE: u32 = 64;

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
    /// SYNs within one second from one aggregate (an IPv4 /24, an IPv6 /64)
    /// that make it "heavy": reported once per second. 0 = no aggregates.
    pub heavy_prefix_syns_per_sec: u32,
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
    /// SYNs per second on one CPU that put the datapath in attack mode by
    /// itself (checked over [`ATTACK_WINDOW_NS`] windows). 0 = only the
    /// daemon enters attack mode.
    pub attack_syn_rate: u64,
    /// Seed of the per-source sketch hash (random per load), so that an
    /// attacker cannot aim collisions at a victim's counters.
    pub hash_seed: u64,
    /// In attack mode, one SYN in this many is tracked in full; 0 = default.
    pub attack_sample: u32,
    /// Window scale the kernel computes for this host's listeners (SYN-ACK
    /// option; must equal the kernel's, see `synack`).
    pub synack_wscale: u32,
    /// MSS advertised in XDP SYN-ACKs, IPv4 and IPv6 (from the MTU).
    pub synack_mss4: u32,
    pub synack_mss6: u32,
    /// The interface's own MAC address (6 bytes, then 2 of padding): the
    /// responder answers only frames sent to it.
    pub mac: [u8; 8],
    /// The interface's index, for the transmit watch's `xdp:xdp_exception`.
    pub ifindex: u32,
    /// Offset of `ifindex` in the kernel's `struct net_device` (from its
    /// BTF), for the transmit watch; 0 = unknown (exceptions not counted).
    pub dev_ifindex_off: u32,
    /// Unmatched ACKs per second on one CPU (ACKs to a protected port that
    /// match no socket: the kernel answers each with a RST, which the egress
    /// program sees) that put the datapath in ACK-checking mode by itself
    /// (over [`ATTACK_WINDOW_NS`] windows). 0 = only the daemon enters it.
    pub attack_ack_rate: u64,
}

impl Settings {
    /// Whether a frame's destination MAC is this interface's own.
    #[inline(always)]
    pub fn own_mac(&self, dst: &[u8; 6]) -> bool {
        self.mac[0] == dst[0]
            && self.mac[1] == dst[1]
            && self.mac[2] == dst[2]
            && self.mac[3] == dst[3]
            && self.mac[4] == dst[4]
            && self.mac[5] == dst[5]
    }

    /// SYNs within one [`ATTACK_WINDOW_NS`] window that enter attack mode;
    /// 0 = never by the datapath itself.
    #[inline(always)]
    pub fn attack_window_syns(&self) -> u64 {
        per_window(self.attack_syn_rate)
    }

    /// Unmatched ACKs within one [`ATTACK_WINDOW_NS`] window that enter
    /// ACK-checking mode; 0 = never by the datapath itself.
    #[inline(always)]
    pub fn attack_window_acks(&self) -> u64 {
        per_window(self.attack_ack_rate)
    }

    #[inline(always)]
    pub fn sample_every(&self) -> u64 {
        if self.attack_sample == 0 {
            DEFAULT_ATTACK_SAMPLE as u64
        } else {
            self.attack_sample as u64
        }
    }

    /// Whether attack mode's `n`th SYN (this CPU's count) is one of the
    /// one in [`Self::sample_every`] tracked in full: `n % every == 0`,
    /// with a mask instead of the division for a power of two (the
    /// default), which the BPF target can only do with a 64-bit `div`.
    #[inline(always)]
    pub fn sampled(&self, n: u64) -> bool {
        let every = self.sample_every();
        if every.is_power_of_two() {
            n & (every - 1) == 0
        } else {
            n.is_multiple_of(every)
        }
    }

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

/// A per-second rate as a count per [`ATTACK_WINDOW_NS`] window, at least 1;
/// 0 stays 0 (off).
#[inline(always)]
const fn per_window(rate: u64) -> u64 {
    if rate == 0 {
        0
    } else {
        let n = rate / (1_000_000_000 / ATTACK_WINDOW_NS);
        if n == 0 {
            1
        } else {
            n
        }
    }
}

/// A source address: IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`). Eight-byte
/// aligned, as `FlowKey`: a key built on the BPF stack is written in words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcKey {
    pub addr: [u8; 16],
}

/// Connection 4-tuple from the client's side (client = source of the SYN).
#[repr(C, align(8))]
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
    /// The server's initial sequence number, from its SYN-ACK (egress);
    /// valid once `synack_ns` is set.
    pub server_isn: u32,
    /// `bpf_ktime_get_ns()` when the client's SYN was seen.
    pub syn_ns: u64,
    /// When the server's SYN-ACK went out; 0 until it did. Only an answered
    /// handshake is half-open (the kernel's SYN_RCVD): the half-open
    /// timeout runs from here.
    pub synack_ns: u64,
}

impl HalfOpen {
    #[inline(always)]
    pub fn answered(&self) -> bool {
        self.synack_ns != 0
    }
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

/// Prefix length of the aggregates heavy sources are also counted by.
pub const AGG_V4_LEN: u8 = 24;
pub const AGG_V6_LEN: u8 = 64;
pub const DEFAULT_AGG_ENTRIES: u32 = 65_536;

/// The aggregate key of a source: its /24 (IPv4, as IPv4-mapped IPv6) or
/// its /64 (IPv6), host bits cleared.
#[inline(always)]
pub fn aggregate_key(addr: &[u8; 16]) -> [u8; 16] {
    let mut k = *addr;
    let v4 = addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff;
    if v4 {
        k[15] = 0;
    } else {
        let mut i = 8;
        while i < 16 {
            k[i] = 0;
            i += 1;
        }
    }
    k
}

/// Per-aggregate counts in `AGG_STATS` (SYNs of all its sources).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggStats {
    pub syns: u64,
    /// SYNs in the current one-second window, and its start.
    pub second_syns: u64,
    pub second_start_ns: u64,
}

/// Sent on the `EVENTS` ring buffer when an aggregate reaches
/// `Settings::heavy_prefix_syns_per_sec` within one second (told from the
/// other records by its size).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggEvent {
    /// The aggregate's network address (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
    pub syns: u64,
    pub len: u32,
    pub _pad: u32,
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

/// Attack-mode state: one entry in the `ATTACK` array. The datapath sets
/// `active` by itself (reason [`ATTACK_REASON_SYN_RATE`]); the daemon
/// confirms, or sets it for floods under the datapath's threshold, and
/// clears it when the attack is over.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttackState {
    /// 1 while in attack mode.
    pub active: u32,
    pub reason: u32,
    /// `bpf_ktime_get_ns()` when attack mode was entered.
    pub entered_ns: u64,
    /// Start of the per-CPU window whose SYNs tripped it (datapath entries).
    pub trigger_window_ns: u64,
    /// The first SYN-ACK sent from XDP in this attack (0 = none yet).
    pub first_cookie_ns: u64,
    /// Times the datapath entered attack mode by itself.
    pub entries: u64,
    /// When the daemon last ended attack mode.
    pub left_ns: u64,
}

/// Per-CPU SYN counting for attack-mode entry and the sketch's epochs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    pub win_start_ns: u64,
    pub win_syns: u64,
    /// Sketch epoch (see [`crate::sketch::epoch`]) and this CPU's SYNs in it.
    pub epoch: u64,
    pub epoch_syns: u64,
    /// The sketch's one-in-`ACCOUNT_EVERY` draw: this CPU's xorshift64
    /// state ([`crate::sketch::next_random`]), seeded from the kernel's
    /// random again whenever it is 0, which every new window sets.
    pub rng: u64,
    /// Attack mode's clock: the coarse clock read once per jiffy on this
    /// CPU (`clock_ns`, at `clock_jiffies`), for the SYNs of that jiffy.
    pub clock_jiffies: u64,
    pub clock_ns: u64,
    /// `clock_ns` in milliseconds (the SYN-ACK's TSval clock), divided once
    /// per jiffy rather than per answer.
    pub clock_ms: u64,
}

/// Sent on the `EVENTS` ring buffer when the datapath enters attack mode by
/// itself, so the daemon reacts at once rather than at its next tick. Told
/// apart from a [`HeavyEvent`] by its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModeEvent {
    pub entered_ns: u64,
    pub trigger_window_ns: u64,
}

/// Sent on the `EVENTS` ring buffer when the egress program puts the
/// datapath in ACK-checking mode, so the daemon spreads it to every
/// interface at once: the kernel's RSTs leave by the route back to the
/// flood's sources, which need not be the interface the flood comes in by.
/// Told apart by its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckModeEvent {
    pub entered_ns: u64,
    pub trigger_window_ns: u64,
    /// Unmatched ACKs this CPU counted in the tripping window.
    pub window_acks: u64,
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
    use super::{
        AggEvent, AggStats, AllowEntry, AttackState, BlockEntry, FlowKey, HalfOpen, HeavyEvent, HoBucket, ModeEvent,
        RateWindow, Settings, SrcKey, SrcStats,
    };
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for SrcKey {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for HalfOpen {}
    unsafe impl aya::Pod for SrcStats {}
    unsafe impl aya::Pod for BlockEntry {}
    unsafe impl aya::Pod for AllowEntry {}
    unsafe impl aya::Pod for HoBucket {}
    unsafe impl aya::Pod for HeavyEvent {}
    unsafe impl aya::Pod for AggStats {}
    unsafe impl aya::Pod for AggEvent {}
    unsafe impl aya::Pod for crate::Counters {}
    unsafe impl aya::Pod for AttackState {}
    unsafe impl aya::Pod for ModeEvent {}
    unsafe impl aya::Pod for RateWindow {}
    unsafe impl aya::Pod for crate::sketch::Sketch {}
    unsafe impl aya::Pod for crate::sketch::Hll {}
    unsafe impl aya::Pod for crate::quick::LocalV4 {}
    unsafe impl aya::Pod for crate::quick::FirstBytes {}
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
    fn aggregates_are_the_slash_24_and_slash_64() {
        let v4 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 77];
        assert_eq!(aggregate_key(&v4), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 0]);
        let v6 = [0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(aggregate_key(&v6), [0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        // An IPv6 address that only looks mapped in part is IPv6.
        let odd = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 1, 2, 3, 4];
        assert_eq!(aggregate_key(&odd), [0; 16]);
    }

    #[test]
    fn the_sampled_syn_is_one_in_sample_every() {
        for every in [0u32, 1, 2, 3, 7, 8, 50, 64, 100, 1024, u32::MAX] {
            let s = Settings { attack_sample: every, ..Settings::default() };
            let e = s.sample_every();
            for n in (0..5000u64).chain([u64::MAX - 2, u64::MAX - 1, u64::MAX, 1 << 40, (1 << 40) + 1]) {
                assert_eq!(s.sampled(n), n % e == 0, "every {every}, n {n}");
            }
        }
    }

    #[test]
    fn sizes_have_no_hidden_padding() {
        assert_eq!(size_of::<Settings>(), 96);
        assert_eq!(size_of::<AttackState>(), 48);
        assert_eq!(size_of::<RateWindow>(), 64);
        assert_ne!(size_of::<ModeEvent>(), size_of::<HeavyEvent>(), "told apart by size");
        assert_eq!(size_of::<HeavyEvent>(), 40);
        assert_eq!(size_of::<AggEvent>(), 32);
        assert_eq!(size_of::<AggStats>(), 24);
        assert_ne!(size_of::<AggEvent>(), size_of::<ModeEvent>(), "told apart by size");
        assert_eq!(size_of::<AckModeEvent>(), 24, "told apart by size from 16, 32 and 40");
        assert_eq!(size_of::<SrcKey>(), 16);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<HalfOpen>(), 24);
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
