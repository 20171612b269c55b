//! Every map of the datapath, in one place: what each module touches is
//! in its `use crate::maps::{...}` line. Names are the pinned names the
//! daemon reads and writes (tcpguard-common's `map_names`).

use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use tcpguard_common::{
    halfopen::BUCKETS,
    handshake,
    quick::{FirstBytes, LocalV4},
    sketch::{Hll, Sketch},
    AggStats, AllowEntry, AttackState, BlockEntry, Counters, FlowKey, HalfOpen, HoBucket, RateWindow, Settings, SrcKey,
    SrcStats, DEFAULT_AGG_ENTRIES, DEFAULT_HALF_OPEN_ENTRIES, DEFAULT_SRC_ENTRIES, LIST_ENTRIES, LOCAL_ADDR_ENTRIES,
    PORT_ENTRIES,
};

#[map]
pub(crate) static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
pub(crate) static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);
// One LRU list shared by all CPUs: BPF_F_NO_COMMON_LRU would split the
// capacity per CPU, and a flood landing on one CPU would then evict live
// entries at max_entries / ncpus (measured: 100k sources counted as 210k).
#[map]
pub(crate) static HALF_OPEN: LruHashMap<FlowKey, HalfOpen> = LruHashMap::with_max_entries(DEFAULT_HALF_OPEN_ENTRIES, 0);
/// Coarse time of the last SYN per 4-tuple hash: the ACK path's pre-filter.
#[map]
pub(crate) static SYN_SEEN: Array<u64> = Array::with_max_entries(handshake::FILTER_SLOTS, 0);
/// Per (family, port): when a kernel cookie last proved the listener.
#[map]
pub(crate) static LISTENER_SEEN: Array<u64> = Array::with_max_entries(handshake::LISTENER_SLOTS, 0);
/// The server's last FIN per 4-tuple hash (TC egress), a one-byte mark of
/// its time (`handshake::closed_mark`), 64 marks to an entry
/// (`handshake::closed_place`).
#[map]
pub(crate) static CLOSED_SEEN: Array<handshake::ClosedLine> = Array::with_max_entries(handshake::CLOSED_LINES, 0);
/// The latest of each `handshake::CLOSED_SUMMARY_SPAN` closed marks.
#[map]
pub(crate) static CLOSED_SUMMARY: Array<handshake::ClosedLine> =
    Array::with_max_entries(handshake::CLOSED_SUMMARY_LINES, 0);
#[map]
pub(crate) static HO_BUCKETS: PerCpuArray<HoBucket> = PerCpuArray::with_max_entries(BUCKETS, 0);
#[map]
pub(crate) static SRC_STATS: LruHashMap<SrcKey, SrcStats> = LruHashMap::with_max_entries(DEFAULT_SRC_ENTRIES, 0);
/// Per-aggregate (/24, /64) SYN counts: a flood spread over one subnet,
/// each address under the heavy rate, is heavy as a whole.
#[map]
pub(crate) static AGG_STATS: LruHashMap<SrcKey, AggStats> = LruHashMap::with_max_entries(DEFAULT_AGG_ENTRIES, 0);
#[map]
pub(crate) static ALLOW_V4: LpmTrie<[u8; 4], AllowEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
pub(crate) static ALLOW_V6: LpmTrie<[u8; 16], AllowEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
pub(crate) static BLOCK_V4: LpmTrie<[u8; 4], BlockEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
pub(crate) static BLOCK_V6: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::with_max_entries(LIST_ENTRIES, BPF_F_NO_PREALLOC);
/// Scratch space for building a `SrcStats` off the BPF stack.
#[map]
pub(crate) static SCRATCH: PerCpuArray<SrcStats> = PerCpuArray::with_max_entries(1, 0);
/// Heavy-source reports for the daemon.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);
#[map]
pub(crate) static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(PORT_ENTRIES, 0);
/// Attack-mode state, shared by all CPUs and the daemon.
#[map]
pub(crate) static ATTACK: Array<AttackState> = Array::with_max_entries(1, 0);
#[map]
pub(crate) static RATE_WIN: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);
/// ACK-checking mode, shared by all CPUs and the daemon: an ACK reaching a
/// listener must carry a valid cookie (as in attack mode, without it).
#[map]
pub(crate) static ACK_ATTACK: Array<AttackState> = Array::with_max_entries(1, 0);
/// Per-CPU windows of unmatched ACKs (the server's RSTs to them).
#[map]
pub(crate) static ACK_WIN: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static SKETCH: PerCpuArray<Sketch> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static HLL: PerCpuArray<Hll> = PerCpuArray::with_max_entries(1, 0);
/// The host's own addresses (the daemon keeps it in step with the kernel's):
/// the responder answers, and the ACK check drops, only for these.
#[map]
pub(crate) static LOCAL_ADDRS: HashMap<SrcKey, u8> = HashMap::with_max_entries(LOCAL_ADDR_ENTRIES, 0);
/// The host's IPv4 addresses in one cache line, when they fit: a SYN's
/// check without `LOCAL_ADDRS`' hash.
#[map]
pub(crate) static LOCAL_V4: Array<LocalV4> = Array::with_max_entries(1, 0);
/// The first bytes the allow-lists cover: most sources are not
/// allow-listed without the tries' walk.
#[map]
pub(crate) static ALLOW_FIRST: Array<FirstBytes> = Array::with_max_entries(1, 0);
/// The first bytes the block-lists cover: most sources are not blocked
/// without the tries' walk.
#[map]
pub(crate) static BLOCK_FIRST: Array<FirstBytes> = Array::with_max_entries(1, 0);
/// Buffers of the SYN-cookie responder, off the small BPF stack.
#[repr(C)]
pub(crate) struct Reply {
    /// The SYN's TCP header, copied off the packet for the cookie helper
    /// and the option walk when it is neither a bare SYN's nor Linux's.
    pub(crate) th: [u8; 64],
    /// The socket lookup's key.
    pub(crate) tuple: bpf_sock_tuple,
}
#[map]
pub(crate) static REPLY: PerCpuArray<Reply> = PerCpuArray::with_max_entries(1, 0);
