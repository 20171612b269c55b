//! Typed reads and writes of the datapath's maps. Reads return plain Rust
//! snapshots; nothing here keeps state between calls.

use std::net::IpAddr;

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray},
    Ebpf,
};
use tcpguard_common::{
    halfopen::BUCKETS,
    map_names,
    quick::{FirstBytes, LocalV4},
    sketch::{Hll, Sketch},
    AllowEntry, AttackState, BlockEntry, Counters, HoBucket, Settings, SrcKey, SrcStats, FLAG_HAS_ALLOWS,
    FLAG_HAS_BLOCKS,
};

use crate::net::Prefix;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {name} is missing from the loaded object")]
    Missing { name: &'static str },
    #[error("map {name}: {op} failed")]
    Op {
        name: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name}: {op} failed")]
    Io {
        name: &'static str,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn op(name: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op { name, op, source }
}

/// Borrowed access to the maps of a loaded object.
pub struct Maps<'a> {
    ebpf: &'a mut Ebpf,
}

impl<'a> Maps<'a> {
    pub fn new(ebpf: &'a mut Ebpf) -> Self {
        Maps { ebpf }
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, MapsError> {
        self.ebpf.map(name).ok_or(MapsError::Missing { name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, MapsError> {
        self.ebpf.map_mut(name).ok_or(MapsError::Missing { name })
    }

    /// Global counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, MapsError> {
        let n = map_names::COUNTERS;
        let arr: PerCpuArray<&MapData, Counters> = PerCpuArray::try_from(self.map(n)?).map_err(op(n, "open"))?;
        let per_cpu = arr.get(&0, 0).map_err(op(n, "read"))?;
        let mut total = Counters::default();
        for c in per_cpu.iter() {
            total.add(c);
        }
        Ok(total)
    }

    /// Every CPU's half-open accounting slots.
    pub fn half_open_slots(&self) -> Result<Vec<HoBucket>, MapsError> {
        let n = map_names::HO_BUCKETS;
        let arr: PerCpuArray<&MapData, HoBucket> = PerCpuArray::try_from(self.map(n)?).map_err(op(n, "open"))?;
        let mut out = Vec::with_capacity(BUCKETS as usize * 4);
        for i in 0..BUCKETS {
            out.extend(arr.get(&i, 0).map_err(op(n, "read"))?.iter().copied());
        }
        Ok(out)
    }

    /// Answer for `a` (a local address of the host) from now on.
    pub fn add_local(&mut self, a: IpAddr) -> Result<(), MapsError> {
        self.change_locals(&[a], &[])
    }

    /// `a` is no longer a local address.
    pub fn remove_local(&mut self, a: IpAddr) -> Result<(), MapsError> {
        self.change_locals(&[], &[a])
    }

    /// The host's addresses changed: `added` and `gone` in `LOCAL_ADDRS`,
    /// and its IPv4 cache line (`LOCAL_V4`) rewritten from it. The cache
    /// line is marked unknown first, so the datapath asks the map while
    /// the two differ: an address removed here is never answered for from
    /// a stale line.
    pub fn change_locals(&mut self, added: &[IpAddr], gone: &[IpAddr]) -> Result<(), MapsError> {
        self.set_local_v4(&LocalV4::default())?;
        let n = map_names::LOCAL_ADDRS;
        let mut m: HashMap<&mut MapData, SrcKey, u8> = HashMap::try_from(self.map_mut(n)?).map_err(op(n, "open"))?;
        for a in added {
            m.insert(src_key(*a), 1, 0).map_err(op(n, "write"))?;
        }
        for a in gone {
            // Already absent is as good as removed.
            let _ = m.remove(&src_key(*a));
        }
        let mut v4 = Vec::new();
        for k in m.keys() {
            if let IpAddr::V4(a) = key_addr(&k.map_err(op(n, "iterate"))?) {
                v4.push(a.octets());
            }
        }
        self.set_local_v4(&LocalV4::of(&v4))
    }

    /// The IPv4 cache line of the local addresses.
    pub fn local_v4(&self) -> Result<LocalV4, MapsError> {
        self.one(map_names::LOCAL_V4)
    }

    fn set_local_v4(&mut self, l: &LocalV4) -> Result<(), MapsError> {
        self.set_one(map_names::LOCAL_V4, l)
    }

    /// The value of a one-entry array map.
    fn one<T: aya::Pod>(&self, n: &'static str) -> Result<T, MapsError> {
        let arr: Array<&MapData, T> = Array::try_from(self.map(n)?).map_err(op(n, "open"))?;
        arr.get(&0, 0).map_err(op(n, "read"))
    }

    /// Write the value of a one-entry array map.
    fn set_one<T: aya::Pod>(&mut self, n: &'static str, v: &T) -> Result<(), MapsError> {
        let mut arr: Array<&mut MapData, T> = Array::try_from(self.map_mut(n)?).map_err(op(n, "open"))?;
        arr.set(0, v, 0).map_err(op(n, "write"))
    }

    pub fn settings(&self) -> Result<Settings, MapsError> {
        self.one(map_names::SETTINGS)
    }

    pub fn set_settings(&mut self, s: &Settings) -> Result<(), MapsError> {
        self.set_one(map_names::SETTINGS, s)
    }

    /// Replace the protected-port set (an empty set with the port filter
    /// flag off means every port is protected).
    pub fn set_ports(&mut self, ports: &[u16]) -> Result<(), MapsError> {
        let n = map_names::PORTS;
        let mut m: HashMap<&mut MapData, u16, u8> = HashMap::try_from(self.map_mut(n)?).map_err(op(n, "open"))?;
        let old: Vec<u16> = m.keys().filter_map(Result::ok).collect();
        for p in old.iter().filter(|p| !ports.contains(p)) {
            m.remove(p).map_err(op(n, "remove"))?;
        }
        for p in ports {
            m.insert(p, 1, 0).map_err(op(n, "insert"))?;
        }
        Ok(())
    }

    /// Block a prefix until `expires_ns` (CLOCK_MONOTONIC; 0 = forever),
    /// and raise the settings flag that makes the datapath look at the
    /// block-lists at all: for tools that run a datapath without a daemon
    /// (tests, benchmarks). The daemon writes the list alone
    /// ([`Maps::insert_block`]) and its settings through `settings::build`.
    pub fn block(&mut self, p: &Prefix, expires_ns: u64) -> Result<(), MapsError> {
        self.insert_block(p, expires_ns)?;
        self.sync_block_flag()
    }

    /// Whether the block-lists and the allow-lists hold anything.
    pub fn lists_nonempty(&self) -> Result<(bool, bool), MapsError> {
        Ok((!self.blocks()?.is_empty(), self.any_allow()?))
    }

    /// Keep `FLAG_HAS_BLOCKS` and `FLAG_HAS_ALLOWS` equal to "the lists are
    /// not empty" (tools without a daemon; see [`Maps::block`]).
    pub fn sync_block_flag(&mut self) -> Result<(), MapsError> {
        self.sync_first_bytes()?;
        let (blocks, allows) = self.lists_nonempty()?;
        let mut s = self.settings()?;
        let mut flags = if blocks { s.flags | FLAG_HAS_BLOCKS } else { s.flags & !FLAG_HAS_BLOCKS };
        flags = if allows { flags | FLAG_HAS_ALLOWS } else { flags & !FLAG_HAS_ALLOWS };
        if flags != s.flags {
            s.flags = flags;
            self.set_settings(&s)?;
        }
        Ok(())
    }

    /// Add a block-list entry (the list, and the first bytes it covers to
    /// the summary before it, so that the summary never leaves it out).
    pub fn insert_block(&mut self, p: &Prefix, expires_ns: u64) -> Result<(), MapsError> {
        self.widen_first(map_names::BLOCK_FIRST, p)?;
        self.trie_insert((map_names::BLOCK_V4, map_names::BLOCK_V6), p, BlockEntry { expires_ns })
    }

    /// Remove a block-list entry (the list only; the summary keeps its
    /// bits, a superset, until [`Maps::sync_first_bytes`]); `Ok(false)` if
    /// there was none.
    pub fn remove_block(&mut self, p: &Prefix) -> Result<bool, MapsError> {
        self.trie_remove::<BlockEntry>((map_names::BLOCK_V4, map_names::BLOCK_V6), p)
    }

    /// Remove a block entry and sync the list flags; `Ok(false)` if there
    /// was none (tools; see [`Maps::block`]).
    pub fn unblock(&mut self, p: &Prefix) -> Result<bool, MapsError> {
        let removed = self.remove_block(p)?;
        self.sync_block_flag()?;
        Ok(removed)
    }

    fn trie<K: aya::Pod, V: aya::Pod>(&mut self, name: &'static str) -> Result<LpmTrie<&mut MapData, K, V>, MapsError> {
        LpmTrie::try_from(self.map_mut(name)?).map_err(op(name, "open"))
    }

    /// Insert into the v4 or v6 trie of a pair, as the prefix says.
    fn trie_insert<V: aya::Pod>(
        &mut self,
        (v4, v6): (&'static str, &'static str),
        p: &Prefix,
        v: V,
    ) -> Result<(), MapsError> {
        let len = u32::from(p.len);
        match p.addr {
            IpAddr::V4(a) => {
                self.trie::<[u8; 4], V>(v4)?.insert(&Key::new(len, a.octets()), v, 0).map_err(op(v4, "insert"))
            }
            IpAddr::V6(a) => {
                self.trie::<[u8; 16], V>(v6)?.insert(&Key::new(len, a.octets()), v, 0).map_err(op(v6, "insert"))
            }
        }
    }

    /// Remove from the v4 or v6 trie of a pair; `Ok(false)` if absent.
    fn trie_remove<V: aya::Pod>(
        &mut self,
        (v4, v6): (&'static str, &'static str),
        p: &Prefix,
    ) -> Result<bool, MapsError> {
        let len = u32::from(p.len);
        let (name, r) = match p.addr {
            IpAddr::V4(a) => (v4, self.trie::<[u8; 4], V>(v4)?.remove(&Key::new(len, a.octets()))),
            IpAddr::V6(a) => (v6, self.trie::<[u8; 16], V>(v6)?.remove(&Key::new(len, a.octets()))),
        };
        match r {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(source) => Err(MapsError::Op { name, op: "remove", source }),
        }
    }

    /// All block entries.
    pub fn blocks(&self) -> Result<Vec<(Prefix, BlockEntry)>, MapsError> {
        let mut out = Vec::new();
        let n = map_names::BLOCK_V4;
        let t: LpmTrie<&MapData, [u8; 4], BlockEntry> = LpmTrie::try_from(self.map(n)?).map_err(op(n, "open"))?;
        for kv in &t {
            let (k, v) = kv.map_err(op(n, "iterate"))?;
            out.push((Prefix::new(IpAddr::from(k.data()), k.prefix_len() as u8), v));
        }
        let n = map_names::BLOCK_V6;
        let t: LpmTrie<&MapData, [u8; 16], BlockEntry> = LpmTrie::try_from(self.map(n)?).map_err(op(n, "open"))?;
        for kv in &t {
            let (k, v) = kv.map_err(op(n, "iterate"))?;
            out.push((Prefix::new(IpAddr::from(k.data()), k.prefix_len() as u8), v));
        }
        Ok(out)
    }

    /// How many entries each block-list holds, as the kernel made the map
    /// (an adopted pin keeps the size it was created with).
    pub fn block_list_capacity(&self) -> Result<u32, MapsError> {
        let n = map_names::BLOCK_V4;
        match self.map(n)? {
            aya::maps::Map::LpmTrie(d) => Ok(d.info().map_err(op(n, "read info"))?.max_entries()),
            _ => Err(MapsError::Missing { name: n }),
        }
    }

    /// Add an allow-list entry (the list, and the first bytes it covers to
    /// the summary before it, so that the summary never leaves it out).
    pub fn insert_allow(&mut self, p: &Prefix, now_ns: u64) -> Result<(), MapsError> {
        self.widen_first(map_names::ALLOW_FIRST, p)?;
        self.trie_insert((map_names::ALLOW_V4, map_names::ALLOW_V6), p, AllowEntry { added_ns: now_ns })
    }

    /// Remove an allow-list entry (the list only; the summary keeps its
    /// bits, a superset, until [`Maps::sync_first_bytes`]); `Ok(false)` if
    /// there was none.
    pub fn remove_allow(&mut self, p: &Prefix) -> Result<bool, MapsError> {
        self.trie_remove::<AllowEntry>((map_names::ALLOW_V4, map_names::ALLOW_V6), p)
    }

    /// Allow a prefix and sync the list flags (tools; see [`Maps::block`]).
    pub fn allow(&mut self, p: &Prefix, now_ns: u64) -> Result<(), MapsError> {
        self.insert_allow(p, now_ns)?;
        self.sync_block_flag()
    }

    /// Remove an allow entry and sync the list flags (tools; see [`Maps::block`]).
    pub fn disallow(&mut self, p: &Prefix) -> Result<bool, MapsError> {
        let removed = self.remove_allow(p)?;
        self.sync_block_flag()?;
        Ok(removed)
    }

    /// Every allow-list entry.
    pub fn allows(&self) -> Result<Vec<Prefix>, MapsError> {
        let mut out = Vec::new();
        let n = map_names::ALLOW_V4;
        let t: LpmTrie<&MapData, [u8; 4], AllowEntry> = LpmTrie::try_from(self.map(n)?).map_err(op(n, "open"))?;
        for k in t.keys() {
            let k = k.map_err(op(n, "iterate"))?;
            out.push(Prefix::new(IpAddr::from(k.data()), k.prefix_len() as u8));
        }
        let n = map_names::ALLOW_V6;
        let t: LpmTrie<&MapData, [u8; 16], AllowEntry> = LpmTrie::try_from(self.map(n)?).map_err(op(n, "open"))?;
        for k in t.keys() {
            let k = k.map_err(op(n, "iterate"))?;
            out.push(Prefix::new(IpAddr::from(k.data()), k.prefix_len() as u8));
        }
        Ok(out)
    }

    /// The summary of the first bytes the allow-lists cover.
    pub fn allow_first(&self) -> Result<FirstBytes, MapsError> {
        self.one(map_names::ALLOW_FIRST)
    }

    /// The summary of the first bytes the block-lists cover.
    pub fn block_first(&self) -> Result<FirstBytes, MapsError> {
        self.one(map_names::BLOCK_FIRST)
    }

    /// Add the first bytes `p` covers to a list's summary (`ALLOW_FIRST`,
    /// `BLOCK_FIRST`), before the entry goes into the list. A summary not
    /// written yet (all zero: the datapath walks the trie) stays so.
    fn widen_first(&mut self, summary: &'static str, p: &Prefix) -> Result<(), MapsError> {
        let mut f: FirstBytes = self.one(summary)?;
        if f.known != 0 {
            f.cover(first_byte(p.addr), p.len, p.addr.is_ipv6());
            self.set_one(summary, &f)?;
        }
        Ok(())
    }

    /// Rewrite both summaries of the first bytes the lists cover from the
    /// lists themselves (after any change to them: removals leave a summary
    /// a superset until then).
    pub fn sync_first_bytes(&mut self) -> Result<(), MapsError> {
        let of = |ps: &mut dyn Iterator<Item = &Prefix>| {
            FirstBytes::of(ps.map(|p| (first_byte(p.addr), p.len, p.addr.is_ipv6())))
        };
        let allow = of(&mut self.allows()?.iter());
        let block = of(&mut self.blocks()?.iter().map(|(p, _)| p));
        self.set_one(map_names::ALLOW_FIRST, &allow)?;
        self.set_one(map_names::BLOCK_FIRST, &block)
    }

    fn any_allow(&self) -> Result<bool, MapsError> {
        let n = map_names::ALLOW_V4;
        let t: LpmTrie<&MapData, [u8; 4], AllowEntry> = LpmTrie::try_from(self.map(n)?).map_err(op(n, "open"))?;
        if t.keys().next().is_some() {
            return Ok(true);
        }
        let n = map_names::ALLOW_V6;
        let t: LpmTrie<&MapData, [u8; 16], AllowEntry> = LpmTrie::try_from(self.map(n)?).map_err(op(n, "open"))?;
        Ok(t.keys().next().is_some())
    }

    /// The attack-mode state the datapath and the daemon share.
    pub fn attack(&self) -> Result<AttackState, MapsError> {
        self.mode_state(map_names::ATTACK)
    }

    pub fn set_attack(&mut self, a: &AttackState) -> Result<(), MapsError> {
        self.set_mode_state(map_names::ATTACK, a)
    }

    /// The ACK-checking mode's state (an ACK flood), shared likewise.
    pub fn ack_mode(&self) -> Result<AttackState, MapsError> {
        self.mode_state(map_names::ACK_ATTACK)
    }

    pub fn set_ack_mode(&mut self, a: &AttackState) -> Result<(), MapsError> {
        self.set_mode_state(map_names::ACK_ATTACK, a)
    }

    fn mode_state(&self, n: &'static str) -> Result<AttackState, MapsError> {
        self.one(n)
    }

    fn set_mode_state(&mut self, n: &'static str, a: &AttackState) -> Result<(), MapsError> {
        self.set_one(n, a)
    }

    /// Every CPU's distinct-source registers.
    pub fn hll(&self) -> Result<Vec<Hll>, MapsError> {
        let n = map_names::HLL;
        let arr: PerCpuArray<&MapData, Hll> = PerCpuArray::try_from(self.map(n)?).map_err(op(n, "open"))?;
        Ok(arr.get(&0, 0).map_err(op(n, "read"))?.iter().copied().collect())
    }

    /// Clear the distinct-source registers (the daemon does, every tick).
    pub fn clear_hll(&mut self) -> Result<(), MapsError> {
        let n = map_names::HLL;
        let io = |source| MapsError::Io { name: n, op: "clear", source };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| io(e))?;
        let mut arr: PerCpuArray<&mut MapData, Hll> = PerCpuArray::try_from(self.map_mut(n)?).map_err(op(n, "open"))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![Hll::default(); cpus]).map_err(io)?;
        arr.set(0, zeros, 0).map_err(op(n, "clear"))
    }

    /// Every CPU's count-min sketch (tests and diagnostics).
    pub fn sketches(&self) -> Result<Vec<Box<Sketch>>, MapsError> {
        let n = map_names::SKETCH;
        let arr: PerCpuArray<&MapData, Sketch> = PerCpuArray::try_from(self.map(n)?).map_err(op(n, "open"))?;
        Ok(arr.get(&0, 0).map_err(op(n, "read"))?.iter().map(|s| Box::new(*s)).collect())
    }

    /// Look one source up (cheap; for tests and `status` details).
    pub fn source(&self, addr: IpAddr) -> Result<Option<SrcStats>, MapsError> {
        let n = map_names::SRC_STATS;
        let m: HashMap<&MapData, SrcKey, SrcStats> = HashMap::try_from(self.map(n)?).map_err(op(n, "open"))?;
        match m.get(&src_key(addr), 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(op(n, "read")(e)),
        }
    }

    /// An aggregate's (/24, /64) SYN count, by its network address.
    pub fn aggregate(&self, net: IpAddr) -> Result<Option<tcpguard_common::AggStats>, MapsError> {
        let n = map_names::AGG_STATS;
        let m: HashMap<&MapData, SrcKey, tcpguard_common::AggStats> =
            HashMap::try_from(self.map(n)?).map_err(op(n, "open"))?;
        match m.get(&src_key(net), 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(op(n, "read")(e)),
        }
    }

    /// Every tracked source. O(table size): for tests and occasional use,
    /// not for the daemon's tick.
    pub fn sources(&self) -> Result<Vec<(IpAddr, SrcStats)>, MapsError> {
        let n = map_names::SRC_STATS;
        let m: HashMap<&MapData, SrcKey, SrcStats> = HashMap::try_from(self.map(n)?).map_err(op(n, "open"))?;
        let mut out = Vec::new();
        for kv in &m {
            match kv {
                Ok((k, v)) => out.push((key_addr(&k), v)),
                // LRU eviction while iterating: skip, the next scan sees the rest.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(op(n, "iterate")(e)),
            }
        }
        Ok(out)
    }

    /// Number of entries in the half-open table (O(n); tests only).
    pub fn half_open_entries(&self) -> Result<usize, MapsError> {
        let n = map_names::HALF_OPEN;
        let m: HashMap<&MapData, tcpguard_common::FlowKey, tcpguard_common::HalfOpen> =
            HashMap::try_from(self.map(n)?).map_err(op(n, "open"))?;
        Ok(m.keys().flatten().count())
    }
}

/// The first byte of an address (IPv4's first octet).
fn first_byte(a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(a) => a.octets()[0],
        IpAddr::V6(a) => a.octets()[0],
    }
}

pub fn src_key(addr: IpAddr) -> SrcKey {
    match addr {
        IpAddr::V4(a) => SrcKey::from_v4(a.octets()),
        IpAddr::V6(a) => SrcKey { addr: a.octets() },
    }
}

pub fn key_addr(k: &SrcKey) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(k.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// CLOCK_MONOTONIC in ns, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
