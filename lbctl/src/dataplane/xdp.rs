//! The XDP data plane: loads `lb-ebpf`, attaches it, and keeps its maps equal
//! to a [`DesiredState`].
//!
//! Table switch: each VIP owns two ring slots in the mmapable `RINGS` array.
//! [`XdpDataplane::apply`] writes a changed Maglev table into the idle slot
//! with a plain memory copy, then replaces the VIP's `VipInfo` (which names
//! the live slot) in one map update. A packet reads `VipInfo` once, so it
//! sees the old table or the new one, never a mix. A slot is not rewritten
//! until [`SLOT_REUSE_GRACE`] after it stopped being live, so packets still
//! running on the old slot finish first (an XDP run takes microseconds).
//!
//! A packet finds its `VipInfo` without a hash lookup: the address slot array
//! `VIP_ADDR_SLOTS` (mmapped here) holds per slot a record naming up to four
//! entries of the VIP table (key + `VipInfo`; two copies per VIP id), which
//! like the backend table is the programs' global data ([`GLOBAL_TABLES`]).
//! A `VipInfo` change is the same double-buffered flip: the idle copy is
//! written (not rewritten until [`SLOT_REUSE_GRACE`] after it stopped being
//! named), then the slot's record is replaced by one aligned 8-byte store. The
//! `VIPS` hash map is written too, before a VIP is named and after it is no
//! longer named; packets use it only for slots with more than four VIPs
//! (`slot_record::FALLBACK`). Either way a packet reads one `VipInfo` that
//! changed in one step.
//!
//! `lb`'s fast path reads a flow's VIP flags from its backend instead
//! (`Backend::fast_flags`). An apply first takes out of the fast path the
//! backends whose flags change (their flows take the general path), and
//! writes their new flags with their VIP's switch.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    os::fd::AsRawFd as _,
    path::Path,
    ptr::NonNull,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues,
        ProgramArray,
    },
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::{
    AddrKey, Backend, BackendCounter, ConnBucket, ConnLine4, Counter, LbConfig, MAX_BACKENDS,
    MAX_VIPS, NO_BACKEND, NUM_REASONS, Reason, ReasonCounts, STATS_CARRY_REASONS, StatsCarry,
    VIP_SLOTS, VIP_TABLE_ENTRIES, VipEntry, VipInfo, VipKey, backend_flags, config_flags,
    slot_record, vip_flags,
};
use tracing::{debug, info, warn};

use super::state::{DesiredState, NodeSettings, VipSpec, addr_bytes, addr_key};
use crate::maglev::{self, MaglevBackend, MaglevError};

/// The compiled `lb-ebpf` object (empty when built with `AYA_BUILD_SKIP=1`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The compiled bench-only object (`lb-ebpf/src/bench.rs`: traffic generator,
/// per-packet-cost wrapper, counting sink), for the `bench` crate; empty when
/// built with `AYA_BUILD_SKIP=1`. lbctl itself never loads it.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-bench"));

/// Minimum time between a slot going idle and its next rewrite.
pub const SLOT_REUSE_GRACE: Duration = Duration::from_millis(10);

/// Programs in the object.
pub mod programs {
    /// The load balancer.
    pub const LB: &str = "lb";
    /// Tail-called by `lb`: balances ICMP errors about a VIP flow and IP
    /// fragments (verified apart from `lb`, which stays small).
    pub const LB_RARE: &str = "lb_rare";
    /// Tail-called by `lb` and `lb_rare`: answers a packet too big to encapsulate.
    pub const LB_TOO_BIG: &str = "lb_too_big";
    /// The real-server decapsulator.
    pub const DECAP: &str = "decap";
    /// XDP_PASS, for veth peers.
    pub const PASS: &str = "pass";
    /// Bare MAC-swap XDP_TX, the benchmark baseline.
    pub const REFLECT: &str = "reflect";
    /// What each `LB_TAILS` slot holds: (slot, program); every slot listed.
    pub const TAIL_SLOTS: [(u32, &str); lb_common::tail::SLOTS as usize] = [
        (lb_common::tail::TOO_BIG, LB_TOO_BIG),
        (lb_common::tail::RARE, LB_RARE),
    ];
}

/// Every map the object declares (the names of their pins under a pin
/// directory); the programs' global data is [`NODE_MAP`] and the tables of
/// [`GLOBAL_TABLES`].
pub const MAP_NAMES: [&str; 16] = [
    "VIPS",
    "VIP_PROTOS",
    "VIP_ADDR_SLOTS",
    "VIP_SCRATCH",
    "RINGS",
    "CONNS",
    "CONNS4",
    "CONN_SHARED",
    "ICMP_LIMIT",
    "VIP_STATS",
    "BACKEND_STATS",
    "REASONS",
    "STATS_CARRY",
    "DECAP_ADDRS",
    "LB_TAILS",
    "TAIL_ARG",
];

/// Version of the map layout (types, key and value sizes) of the `lb-ebpf`
/// object this lbctl carries. A kept data plane with another layout (left by
/// an older lbctl) is not adopted: its maps do not fit this program.
/// 2: per-CPU set-associative `CONNS`, one-value `REASONS`.
/// 3: `CONN_SHARED`, `LbConfig::conn_shared_mask`, reason `conn_shared`.
/// 4: `VIP_PROTOS`.
/// 5: `ICMP_LIMIT`, `LbConfig::icmp_rate` / `icmp_burst`, reasons
/// `drop_too_big_no_df` and `drop_too_big_rate_limited`.
/// 6: `LB_TAILS` and `TAIL_ARG` (the too-big path in its own program).
/// 7: `LB_TAILS` slot `RARE` (ICMP errors and fragments in their own program).
/// 8: `Backend::vlan` (the VLAN frames to a backend leave on).
/// 9: reason `fast_path`.
/// 10: node settings in the programs' global data ([`NODE_MAP`], pinned as
/// [`NODE_PIN`]) instead of the `CONFIG` map; the fast path counts in
/// `BACKEND_STATS` only ([`BackendCounter`]), no longer reason `fast_path`;
/// `STATS_CARRY`.
/// 11: the backend and VIP tables in the programs' global data
/// ([`GLOBAL_TABLES`]) instead of the `BACKENDS` and `VIP_TABLE` maps;
/// [`BackendCounter`]'s `packets` and `bytes` count the general path only.
pub const MAP_LAYOUT: u32 = 11;

/// The entry of [`Stats::reasons`] that is not a [`Reason`]: packets that
/// `lb`'s fast path forwarded (each also counted by its reasons).
pub const FAST_PATH: &str = "fast_path";

/// The map of the programs' global `NODE` (the node settings, an
/// [`LbConfig`]): aya names a global-data map after its ELF section.
pub const NODE_MAP: &str = ".data.node";
/// The name of [`NODE_MAP`]'s pin under a pin directory.
pub const NODE_PIN: &str = "NODE";
/// The symbol of the node settings in the object.
const NODE_SYMBOL: &str = "NODE";

/// A table the programs read as global data: its map (named after its ELF
/// section), the name of its pin, and its symbol in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalTableNames {
    /// The map: aya names a global-data map after its ELF section.
    pub map: &'static str,
    /// The name of its pin under a pin directory.
    pub pin: &'static str,
    /// The symbol (the loader overrides it to keep a pinned table's contents).
    pub symbol: &'static str,
}

/// The backend table (`[Backend; MAX_BACKENDS]`).
pub const BACKENDS_TABLE: GlobalTableNames = GlobalTableNames {
    map: ".bss.backends",
    pin: "BACKENDS",
    symbol: "BACKENDS",
};
/// The VIP table (`[VipEntry; VIP_TABLE_ENTRIES]`).
pub const VIP_TABLE: GlobalTableNames = GlobalTableNames {
    map: ".bss.vip_table",
    pin: "VIP_TABLE",
    symbol: "VIP_TABLE",
};
/// The tables the programs read as global data rather than through map
/// lookups (a lookup is a call to the compiler, which then spills the
/// packet's state around it). Each is one map value that user space writes
/// whole from its image of it ([`GlobalTable`]).
pub const GLOBAL_TABLES: [GlobalTableNames; 2] = [BACKENDS_TABLE, VIP_TABLE];

/// User-space bookkeeping that cannot be read back from the maps alone
/// (which backend id belongs to which VIP), saved when the data plane is
/// kept over a restart and given back to [`XdpDataplane::restore`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// [`MAP_LAYOUT`] of the lbctl that created the maps (0 in records from
    /// lbctl versions that predate the field).
    #[serde(default)]
    pub layout: u32,
    /// Ring stride the maps were created with.
    pub ring_stride: u32,
    /// Programmed VIPs.
    pub vips: Vec<SnapshotVip>,
}

/// One VIP in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotVip {
    /// Address.
    pub addr: IpAddr,
    /// Port (`None`: port-less).
    pub port: Option<u16>,
    /// IANA protocol number.
    pub proto: u8,
    /// VIP id.
    pub id: u32,
    /// Backend ids by address.
    pub backends: Vec<(IpAddr, u32)>,
}

/// A backend as found in adopted maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptedBackend {
    /// Alive flag set.
    pub alive: bool,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its VLAN ([`Backend::vlan`]).
    pub vlan: u16,
}

/// Errors of the XDP data plane.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The binary was built with `AYA_BUILD_SKIP=1`.
    #[error("lbctl was built without its eBPF object (AYA_BUILD_SKIP=1); rebuild without it")]
    NotBuilt,
    /// The object failed to load (verifier, map creation).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program operation failed.
    #[error("eBPF program: {0}")]
    Program(#[from] ProgramError),
    /// A map operation failed.
    #[error("eBPF map: {0}")]
    Map(#[from] MapError),
    /// The object lacks a map or program this code expects.
    #[error("the eBPF object has no {0}")]
    Missing(String),
    /// Mapping the ring array into memory failed.
    #[error("mmap of the ring map: {0}")]
    Mmap(std::io::Error),
    /// Building per-CPU values (CPU count unknown).
    #[error("per-CPU map values: {0}")]
    PerCpu(std::io::Error),
    /// More VIPs or backends than the maps hold, or a table larger than the stride.
    #[error("capacity exceeded: {0}")]
    Capacity(String),
    /// The desired state holds a value the data plane cannot carry out
    /// (nothing of it was written).
    #[error("invalid desired state: {0}")]
    Invalid(String),
    /// Building a Maglev table failed.
    #[error("Maglev table for {vip}: {source}")]
    Maglev {
        /// The VIP.
        vip: VipSpec,
        /// Why.
        source: MaglevError,
    },
    /// Pinning, unpinning or adopting a pinned object failed.
    #[error("pinning: {0}")]
    Pin(String),
    /// Attaching to an interface failed in every allowed mode.
    #[error("attaching XDP to {iface}: {source}")]
    Attach {
        /// Interface name.
        iface: String,
        /// Last error.
        source: ProgramError,
    },
}

/// How to attach the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode only.
    Driver,
    /// Generic (skb) mode only.
    Skb,
    /// Driver mode, falling back to generic mode with a warning.
    Auto,
}

/// Sizes fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Space per ring slot: the largest table size any VIP may use.
    pub ring_stride: u32,
    /// VIPs the rings have room for (at most `MAX_VIPS`).
    pub max_vips: u32,
    /// Connection table capacity (flows of each family), shared out among
    /// the CPUs (see [`lb_common::conn4_lines`], [`lb_common::conn_buckets`]).
    pub conn_table_size: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_stride: lb_common::DEFAULT_RING_SIZE,
            max_vips: 16,
            conn_table_size: lb_common::DEFAULT_CONN_TABLE_SIZE,
        }
    }
}

impl LoadOptions {
    /// Tiny maps, for a node that only runs `decap`.
    pub fn minimal() -> Self {
        Self {
            ring_stride: 1,
            max_vips: 1,
            conn_table_size: 16,
        }
    }
}

/// A mmapable array (`RINGS`, `VIP_ADDR_SLOTS`) mapped into this process.
///
/// The kernel stores array values in 8-byte slots (`elem_size` is
/// `round_up(value_size, 8)`), so entry `i` of the `u32` array lives in the
/// low half (this is a little-endian-only program) of `u64` number `i`.
struct RingMemory {
    ptr: NonNull<u64>,
    len: usize,
    map_len: usize,
    _map: Map,
}

impl RingMemory {
    fn new(map: Map, entries: usize) -> Result<Self, XdpError> {
        let Map::Array(data) = &map else {
            return Err(XdpError::Missing("a mmapable array map".into()));
        };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let bytes = entries * 8;
        let map_len = bytes.div_ceil(page) * page;
        let fd = data.fd().as_fd_raw();
        // SAFETY: FFI call; `fd` is a BPF array created with BPF_F_MMAPABLE whose
        // value area is at least `map_len` bytes (the kernel rounds it to pages);
        // the mapping is owned by this struct and unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XdpError::Mmap(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<u64>())
            .ok_or_else(|| XdpError::Mmap(std::io::Error::other("mmap returned a null pointer")))?;
        Ok(Self {
            ptr,
            len: entries,
            map_len,
            _map: map,
        })
    }

    /// Writes `table` at entry `base`.
    fn write(&mut self, base: usize, table: &[u32]) {
        let slots = &mut self.slice_mut()[base..base + table.len()];
        for (slot, id) in slots.iter_mut().zip(table) {
            *slot = u64::from(*id);
        }
    }

    /// Entry `idx` with one aligned 8-byte store (what a packet reads in one load).
    fn store(&mut self, idx: usize, value: u64) {
        let slot = &mut self.slice_mut()[idx];
        // SAFETY: `slot` is an aligned, live u64 of the mapping; the kernel
        // only reads it, and atomically (one 8-byte load).
        let atomic = unsafe { std::sync::atomic::AtomicU64::from_ptr(slot) };
        atomic.store(value, std::sync::atomic::Ordering::Release);
    }

    fn load(&mut self, idx: usize) -> u64 {
        self.slice_mut()[idx]
    }

    fn slice_mut(&mut self) -> &mut [u64] {
        // SAFETY: `ptr` maps `len` 8-byte slots for the life of `self`, and the
        // `&mut self` borrow makes this the only Rust reference to them (the
        // kernel reads them concurrently, which is what the slot protocol is for).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: FFI call unmapping exactly the region mapped in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

/// User space's image of a table the programs read as global data (see
/// [`GLOBAL_TABLES`]): `N` entries in one map value.
///
/// Every change writes the whole value from the image (128 KiB for the
/// backends, 18 KiB for the VIP table: tens of microseconds), as the
/// programs' global data is one map value. The kernel copies it over the
/// old one, so an entry that did not change is overwritten with its own
/// bytes: a packet reading it meanwhile cannot tell. Only user space writes
/// these tables, so the image is the truth; it is read back from the map
/// when a kept data plane is adopted.
struct GlobalTable<T: aya::Pod, const N: usize> {
    names: GlobalTableNames,
    image: Box<[T; N]>,
    /// The image holds staged entries the map does not yet.
    dirty: bool,
}

impl<T: aya::Pod + Default + PartialEq, const N: usize> GlobalTable<T, N> {
    /// A table of default (zero) entries, as the loader creates it.
    fn zeroed(names: GlobalTableNames) -> Self {
        let image: Box<[T]> = vec![T::default(); N].into_boxed_slice();
        let image = image
            .try_into()
            .unwrap_or_else(|_| unreachable!("built with N entries"));
        Self {
            names,
            image,
            dirty: false,
        }
    }

    /// The table a pinned map holds.
    fn read_pinned(names: GlobalTableNames, pin: &Path) -> Result<Self, XdpError> {
        let map =
            MapData::from_pin(pin).map_err(|e| XdpError::Pin(format!("{}: {e}", pin.display())))?;
        let table: Array<MapData, [T; N]> = Array::try_from(Map::Array(map))?;
        let value = Box::new(table.get(&0, 0)?);
        Ok(Self {
            names,
            image: value,
            dirty: false,
        })
    }

    /// The table's bytes, for the loader's `override_global`.
    fn as_slice(&self) -> &[T] {
        &self.image[..]
    }

    /// Entry `i` as last set or staged (default beyond the table).
    fn get(&self, i: u32) -> T {
        self.image.get(i as usize).copied().unwrap_or_default()
    }

    /// Sets entry `i` in the image only; [`Self::flush`] writes it (with
    /// every other staged entry, in one write). Whether the entry changed.
    fn stage(&mut self, i: u32, value: T) -> Result<bool, XdpError> {
        let slot = self
            .image
            .get_mut(i as usize)
            .ok_or_else(|| XdpError::Capacity(format!("{} entry {i}", self.names.symbol)))?;
        if *slot == value {
            return Ok(false);
        }
        *slot = value;
        self.dirty = true;
        Ok(true)
    }

    /// Writes the table if entries were staged since the last write.
    fn flush(&mut self, ebpf: &mut Ebpf) -> Result<(), XdpError> {
        if self.dirty {
            self.write(ebpf)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Sets entry `i` and writes the table (with anything staged).
    fn set(&mut self, ebpf: &mut Ebpf, i: u32, value: T) -> Result<(), XdpError> {
        self.stage(i, value)?;
        self.flush(ebpf)
    }

    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the whole table would be copied onto the stack"
    )]
    fn write(&self, ebpf: &mut Ebpf) -> Result<(), XdpError> {
        let map = ebpf
            .map_mut(self.names.map)
            .ok_or_else(|| XdpError::Missing(format!("map {}", self.names.map)))?;
        let mut table: Array<&mut MapData, [T; N]> = Array::try_from(map)?;
        table.set(0, &*self.image, 0)?;
        Ok(())
    }
}

trait AsFdRaw {
    fn as_fd_raw(&self) -> i32;
}

impl AsFdRaw for aya::maps::MapFd {
    fn as_fd_raw(&self) -> i32 {
        use std::os::fd::AsFd as _;
        self.as_fd().as_raw_fd()
    }
}

/// What the data plane knows about one VIP it programmed.
struct VipSlot {
    id: u32,
    info: VipInfo,
    /// The table in the live slot.
    live_ring: Vec<u32>,
    /// When the other slot stopped being live.
    last_flip: Option<Instant>,
    /// Backend ids by address.
    backends: BTreeMap<IpAddr, u32>,
}

/// The `VIP_TABLE` copies of one VIP id.
#[derive(Clone, Copy, Debug, Default)]
struct EntryCopies {
    /// The copy slot records name (`None`: the id is named by none).
    live: Option<u32>,
    /// When the other copy (or, with `live` `None`, both) stopped being named.
    since: Option<Instant>,
}

/// Counts of what one `apply` wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// VIPs created.
    pub vips_added: usize,
    /// VIPs removed.
    pub vips_removed: usize,
    /// `VipInfo` entries rewritten (flags or slot).
    pub vip_updates: usize,
    /// Tables switched.
    pub rings_switched: usize,
    /// Backend entries written.
    pub backends_written: usize,
    /// Whether the node settings were written.
    pub node_written: bool,
}

impl ApplyReport {
    /// Nothing was written.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Packet and byte counters summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Per VIP.
    pub vips: BTreeMap<VipSpec, CounterSum>,
    /// Per (VIP, backend address).
    pub backends: BTreeMap<VipSpec, BTreeMap<IpAddr, CounterSum>>,
    /// Every pass/drop/forward reason by name, and [`FAST_PATH`].
    pub reasons: BTreeMap<&'static str, u64>,
}

/// A counter summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSum {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Free VIP or backend ids, oldest released first. A released id may still
/// be read by packets in flight (a ring named it, a table entry is being
/// read): it is handed out again only [`SLOT_REUSE_GRACE`] after its release
/// (`take` waits for the rest when every free id is that fresh), and after
/// every id released before it, so in practice it waits for nothing.
#[derive(Debug)]
struct IdPool {
    free: std::collections::VecDeque<(u32, Option<Instant>)>,
}

impl IdPool {
    /// All of `ids` free, never used.
    fn new(ids: std::ops::Range<u32>) -> Self {
        Self {
            free: ids.map(|id| (id, None)).collect(),
        }
    }

    /// How long the next id still has to rest at `now` (zero: none).
    fn rest(&self, now: Instant) -> Option<Duration> {
        self.free.front().map(|&(_, released)| {
            released.map_or(Duration::ZERO, |t| {
                SLOT_REUSE_GRACE.saturating_sub(now.saturating_duration_since(t))
            })
        })
    }

    /// The next id, after its rest (see the type's docs).
    fn take(&mut self) -> Option<u32> {
        let rest = self.rest(Instant::now())?;
        if !rest.is_zero() {
            std::thread::sleep(rest);
        }
        self.free.pop_front().map(|(id, _)| id)
    }

    /// `id` is free again as of `at`; packets may still read it.
    fn release(&mut self, id: u32, at: Instant) {
        self.free.push_back((id, Some(at)));
    }

    /// `id` was taken but never named by any table: free at once.
    fn unused(&mut self, id: u32) {
        self.free.push_front((id, None));
    }

    /// Keeps the free ids for which `keep` holds.
    fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.free.retain(|&(id, _)| keep(id));
    }
}

/// A loaded `lb-ebpf` object and the state it was last given.
pub struct XdpDataplane {
    ebpf: Ebpf,
    rings: Option<RingMemory>,
    opts: LoadOptions,
    vips: HashMap<VipSpec, VipSlot>,
    free_vip_ids: IdPool,
    free_backend_ids: IdPool,
    generations: Vec<u32>,
    /// `VIP_ADDR_SLOTS` mapped into this process.
    addr_slots: Option<RingMemory>,
    /// `VIP_TABLE` copies by VIP id.
    entries: Vec<EntryCopies>,
    /// The backend table (see [`GLOBAL_TABLES`]).
    backends: GlobalTable<Backend, { MAX_BACKENDS as usize }>,
    /// The VIP table.
    vip_table: GlobalTable<VipEntry, { VIP_TABLE_ENTRIES as usize }>,
    node: Option<LbConfig>,
    /// `CONNS` buckets per CPU minus one.
    conn_mask: u32,
    /// `CONNS4` lines per CPU minus one.
    conn4_mask: u32,
    /// `CONN_SHARED` entries minus one.
    conn_shared_mask: u32,
    /// See [`XdpDataplane::set_general_path_only`].
    general_path_only: bool,
    /// Backend ids whose counters may hold fast-path counts: every id
    /// handed out since the load, the adopted backends' ids, and the ids a
    /// kept data plane had counted on (found at load). `stats` sums the
    /// reasons over these only.
    counted_backends: BTreeSet<u32>,
    links: Vec<(String, &'static str, XdpLinkId)>,
}

impl XdpDataplane {
    /// Loads the object and its programs (not yet attached).
    ///
    /// # Errors
    /// [`XdpError::NotBuilt`] without an object; load, verifier or map errors.
    pub fn load(opts: LoadOptions) -> Result<Self, XdpError> {
        Self::load_with(opts, None)
    }

    /// Loads the object with every map pinned under `pin_dir`: maps already
    /// pinned there are reused with their contents (node settings included),
    /// missing ones are created and pinned. Call [`Self::restore`] next when
    /// maps were reused.
    ///
    /// # Errors
    /// As [`Self::load`], and pinning errors.
    pub fn load_pinned(opts: LoadOptions, pin_dir: &Path) -> Result<Self, XdpError> {
        Self::load_with(opts, Some(pin_dir))
    }

    fn load_with(opts: LoadOptions, pin_dir: Option<&Path>) -> Result<Self, XdpError> {
        if EBPF_OBJECT.is_empty() {
            return Err(XdpError::NotBuilt);
        }
        if opts.max_vips == 0 || opts.max_vips > MAX_VIPS {
            return Err(XdpError::Capacity(format!(
                "max_vips must be 1..={MAX_VIPS}, got {}",
                opts.max_vips
            )));
        }
        let ring_entries = u64::from(opts.ring_stride) * 2 * u64::from(opts.max_vips);
        let ring_entries = u32::try_from(ring_entries)
            .map_err(|_| XdpError::Capacity(format!("{ring_entries} ring entries")))?;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("RINGS", ring_entries.max(1))
            .map_max_entries("CONNS", conn_buckets_for(opts.conn_table_size)?)
            .map_max_entries("CONNS4", conn4_entries_for(opts.conn_table_size)?)
            .map_max_entries(
                "CONN_SHARED",
                lb_common::shared_conn_entries(opts.conn_table_size),
            );
        // The kept node settings and tables, when the maps are adopted.
        let mut kept_node = None;
        let mut backends = GlobalTable::zeroed(BACKENDS_TABLE);
        let mut vip_table = GlobalTable::zeroed(VIP_TABLE);
        if let Some(dir) = pin_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| XdpError::Pin(format!("{}: {e}", dir.display())))?;
            for name in MAP_NAMES {
                loader.map_pin_path(name, dir.join(name));
            }
            let node_pin = dir.join(NODE_PIN);
            if node_pin.exists() {
                kept_node = Some(read_pinned_node(&node_pin)?);
                backends = GlobalTable::read_pinned(BACKENDS_TABLE, &dir.join(BACKENDS_TABLE.pin))?;
                vip_table = GlobalTable::read_pinned(VIP_TABLE, &dir.join(VIP_TABLE.pin))?;
            }
            loader.map_pin_path(NODE_MAP, node_pin);
            for t in GLOBAL_TABLES {
                loader.map_pin_path(t.map, dir.join(t.pin));
            }
        }
        // The loader writes a global-data map's initial value even into a
        // pinned map it reuses: make that the value it already holds, so the
        // program still attached (the one being adopted) never sees another.
        if let Some(node) = &kept_node {
            loader.override_global(NODE_SYMBOL, node, true);
            loader.override_global(BACKENDS_TABLE.symbol, backends.as_slice(), true);
            loader.override_global(VIP_TABLE.symbol, vip_table.as_slice(), true);
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        // Every map is pinned by name: a name missing here would go unpinned.
        if let Some(name) = MAP_NAMES
            .iter()
            .copied()
            .chain([NODE_MAP])
            .chain(GLOBAL_TABLES.iter().map(|t| t.map))
            .find(|n| ebpf.map(n).is_none())
        {
            return Err(XdpError::Missing(format!("map {name}")));
        }
        for name in [
            programs::LB,
            programs::LB_RARE,
            programs::LB_TOO_BIG,
            programs::DECAP,
            programs::PASS,
            programs::REFLECT,
        ] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| XdpError::Missing(format!("program {name}")))?
                .try_into()?;
            prog.load()?;
            // How close a program came to the verifier's limit (1M
            // instructions processed) on this kernel: older verifiers need more.
            let verified_insns = prog
                .info()
                .ok()
                .and_then(|i| i.verified_instruction_count());
            debug!(program = name, ?verified_insns, "eBPF program verified");
        }
        fill_tail_slots(&mut ebpf)?;
        let rings_map = ebpf
            .take_map("RINGS")
            .ok_or_else(|| XdpError::Missing("array map RINGS".into()))?;
        let rings = RingMemory::new(rings_map, ring_entries as usize)?;
        let slots_map = ebpf
            .take_map("VIP_ADDR_SLOTS")
            .ok_or_else(|| XdpError::Missing("array map VIP_ADDR_SLOTS".into()))?;
        let addr_slots = RingMemory::new(slots_map, VIP_SLOTS as usize)?;
        // From the map itself: a pinned one may predate these options.
        let conn_mask = match ebpf.map("CONNS") {
            Some(aya::maps::Map::PerCpuArray(m)) => mask_below(m.info()?.max_entries()),
            _ => return Err(XdpError::Missing("per-CPU array map CONNS".into())),
        };
        let conn4_mask = match ebpf.map("CONNS4") {
            Some(aya::maps::Map::Array(m)) => mask_below(m.info()?.max_entries() / cpu_count()?),
            _ => return Err(XdpError::Missing("array map CONNS4".into())),
        };
        let conn_shared_mask = match ebpf.map("CONN_SHARED") {
            Some(aya::maps::Map::Array(m)) => mask_below(m.info()?.max_entries()),
            _ => return Err(XdpError::Missing("array map CONN_SHARED".into())),
        };
        let mut dp = Self {
            ebpf,
            rings: Some(rings),
            opts,
            vips: HashMap::new(),
            free_vip_ids: IdPool::new(0..opts.max_vips),
            free_backend_ids: IdPool::new(1..MAX_BACKENDS),
            generations: vec![0; MAX_BACKENDS as usize],
            addr_slots: Some(addr_slots),
            entries: vec![EntryCopies::default(); MAX_VIPS as usize],
            backends,
            vip_table,
            node: None,
            conn_mask,
            conn4_mask,
            conn_shared_mask,
            general_path_only: false,
            counted_backends: BTreeSet::new(),
            links: Vec::new(),
        };
        if kept_node.is_some() {
            dp.adopt_backend_ids()?;
            // Keep what the running program uses; `apply` rewrites it if it differs.
            dp.node = kept_node;
        } else {
            dp.write_node(&NodeSettings::default())?;
        }
        Ok(dp)
    }

    /// The options the object was loaded with.
    pub fn options(&self) -> LoadOptions {
        self.opts
    }

    /// A loaded program, for attaching elsewhere or BPF_PROG_TEST_RUN.
    ///
    /// # Errors
    /// [`XdpError::Missing`] for an unknown name.
    pub fn program(&self, name: &str) -> Result<&Xdp, XdpError> {
        Ok(self
            .ebpf
            .program(name)
            .ok_or_else(|| XdpError::Missing(format!("program {name}")))?
            .try_into()?)
    }

    /// Attaches program `name` to `iface`.
    ///
    /// # Errors
    /// [`XdpError::Attach`] when every allowed mode fails.
    pub fn attach(
        &mut self,
        name: &'static str,
        iface: &str,
        mode: AttachMode,
    ) -> Result<XdpMode, XdpError> {
        let modes: &[XdpMode] = match mode {
            AttachMode::Driver => &[XdpMode::Driver],
            AttachMode::Skb => &[XdpMode::Skb],
            AttachMode::Auto => &[XdpMode::Driver, XdpMode::Skb],
        };
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| XdpError::Missing(format!("program {name}")))?
            .try_into()?;
        let mut last = None;
        for &m in modes {
            match prog.attach(iface, m) {
                Ok(link) => {
                    if last.is_some() {
                        warn!(iface, error = ?last, "driver mode refused; attached in generic (skb) mode");
                    }
                    info!(iface, program = name, mode = ?m, "XDP program attached");
                    self.links.push((iface.to_owned(), name, link));
                    return Ok(m);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(XdpError::Attach {
            iface: iface.to_owned(),
            source: last.unwrap_or(ProgramError::NotAttached),
        })
    }

    /// Detaches every program this instance attached.
    pub fn detach_all(&mut self) {
        for (iface, name, link) in self.links.drain(..) {
            let detached = self
                .ebpf
                .program_mut(name)
                .and_then(|p| <&mut Xdp>::try_from(p).ok())
                .map(|p| p.detach(link));
            match detached {
                Some(Ok(())) => info!(iface, program = name, "XDP program detached"),
                Some(Err(e)) => warn!(iface, program = name, error = %e, "detach failed"),
                None => warn!(iface, program = name, "program vanished before detach"),
            }
        }
    }

    /// Moves the link of program `name` on `iface` out of this instance and
    /// pins it at `path`: the program stays attached after this process ends.
    ///
    /// # Errors
    /// No such link, or pinning errors.
    pub fn pin_link(&mut self, name: &str, iface: &str, path: &Path) -> Result<(), XdpError> {
        let pos = self
            .links
            .iter()
            .position(|(i, n, _)| i == iface && *n == name)
            .ok_or_else(|| XdpError::Missing(format!("link of {name} on {iface}")))?;
        let (_, _, id) = self.links.remove(pos);
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| XdpError::Missing(format!("program {name}")))?
            .try_into()?;
        let link: XdpLink = prog.take_link(id)?;
        let fd_link = FdLink::try_from(link).map_err(|e| {
            XdpError::Pin(format!("link of {name} on {iface} is not a bpf_link: {e}"))
        })?;
        let _ = std::fs::remove_file(path);
        fd_link
            .pin(path)
            .map_err(|e| XdpError::Pin(format!("{}: {e}", path.display())))?;
        info!(iface, program = name, path = %path.display(), "XDP link pinned");
        Ok(())
    }

    /// Takes over the link pinned at `path`: program `name` of this instance
    /// replaces the linked program in one step (no moment without a program),
    /// and the pin is removed (this instance now owns the link; call
    /// [`Self::pin_link`] to keep it again).
    ///
    /// # Errors
    /// No pinned link, not an XDP link, or the update fails.
    pub fn adopt_link(
        &mut self,
        name: &'static str,
        iface: &str,
        path: &Path,
    ) -> Result<(), XdpError> {
        let pinned = PinnedLink::from_pin(path)
            .map_err(|e| XdpError::Pin(format!("{}: {e}", path.display())))?;
        let fd_link: FdLink = pinned.into();
        let link = XdpLink::try_from(fd_link)
            .map_err(|e| XdpError::Pin(format!("{}: not an XDP link: {e}", path.display())))?;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| XdpError::Missing(format!("program {name}")))?
            .try_into()?;
        let id = prog.attach_to_link(link)?;
        self.links.push((iface.to_owned(), name, id));
        std::fs::remove_file(path)
            .map_err(|e| XdpError::Pin(format!("unpinning {}: {e}", path.display())))?;
        info!(iface, program = name, "adopted the running XDP link");
        Ok(())
    }

    /// The bookkeeping to save for [`Self::restore`].
    pub fn snapshot(&self) -> Snapshot {
        let mut vips: Vec<SnapshotVip> = self
            .vips
            .iter()
            .map(|(spec, slot)| SnapshotVip {
                addr: spec.addr,
                port: spec.port,
                proto: spec.protocol.number(),
                id: slot.id,
                backends: slot.backends.iter().map(|(a, id)| (*a, *id)).collect(),
            })
            .collect();
        vips.sort_by_key(|v| v.id);
        Snapshot {
            layout: MAP_LAYOUT,
            ring_stride: self.opts.ring_stride,
            vips,
        }
    }

    /// Rebuilds the bookkeeping of adopted maps from `snap`, checking it
    /// against the maps: every VIP must be in `VIPS` under its id and its
    /// live table must fit. Returns the backends found, by (VIP, address).
    ///
    /// # Errors
    /// [`XdpError::Pin`] when the snapshot does not match the maps.
    pub fn restore(
        &mut self,
        snap: &Snapshot,
    ) -> Result<BTreeMap<(VipSpec, IpAddr), AdoptedBackend>, XdpError> {
        use super::state::Protocol;
        if snap.ring_stride != self.opts.ring_stride {
            return Err(XdpError::Pin(format!(
                "saved ring stride {} differs from {}",
                snap.ring_stride, self.opts.ring_stride
            )));
        }
        let mut found = BTreeMap::new();
        let stride = self.opts.ring_stride as usize;
        for v in &snap.vips {
            let protocol = match v.proto {
                lb_common::PROTO_TCP => Protocol::Tcp,
                lb_common::PROTO_UDP => Protocol::Udp,
                p => return Err(XdpError::Pin(format!("unknown protocol {p}"))),
            };
            let spec = VipSpec {
                addr: v.addr,
                port: v.port,
                protocol,
            };
            let info = self
                .hash::<VipKey, VipInfo>("VIPS")?
                .get(&spec.key(), 0)
                .map_err(|e| XdpError::Pin(format!("{spec} not in the VIP map: {e}")))?;
            if info.vip_id != v.id
                || info.slot > 1
                || info.ring_size as usize > stride
                || v.id >= self.opts.max_vips
            {
                return Err(XdpError::Pin(format!(
                    "{spec}: map entry {info:?} does not match"
                )));
            }
            let rings = self
                .rings
                .as_mut()
                .ok_or_else(|| XdpError::Missing("ring memory".into()))?;
            let base = (v.id as usize * 2 + info.slot as usize) * stride;
            let live_ring: Vec<u32> = rings.slice_mut()[base..base + info.ring_size as usize]
                .iter()
                .map(|x| *x as u32)
                .collect();
            let mut backends = BTreeMap::new();
            for &(addr, id) in &v.backends {
                if id == 0 || id >= MAX_BACKENDS {
                    return Err(XdpError::Pin(format!("backend id {id} out of range")));
                }
                let b = self.backends.get(id);
                if b.addr != addr_bytes(addr).0 {
                    return Err(XdpError::Pin(format!("backend {id} is not {addr}")));
                }
                self.generations[id as usize] = b.generation;
                backends.insert(addr, id);
                found.insert(
                    (spec, addr),
                    AdoptedBackend {
                        alive: b.flags & backend_flags::ALIVE != 0,
                        mac: b.mac,
                        vlan: b.vlan,
                    },
                );
            }
            // The copy the slot's record names now, if any (a pinned map of this version).
            let record = self.addr_slots_mut()?.load(slot_of(spec.addr) as usize);
            self.entries[v.id as usize] = EntryCopies {
                live: slot_record::lanes(record)
                    .find(|e| e / 2 == v.id)
                    .map(|e| e % 2),
                since: None,
            };
            self.vips.insert(
                spec,
                VipSlot {
                    id: v.id,
                    info,
                    live_ring,
                    last_flip: Some(Instant::now()),
                    backends,
                },
            );
        }
        let used_vips: Vec<u32> = self.vips.values().map(|s| s.id).collect();
        self.free_vip_ids.retain(|id| !used_vips.contains(&id));
        let used_backends: std::collections::HashSet<u32> = self
            .vips
            .values()
            .flat_map(|s| s.backends.values().copied())
            .collect();
        self.free_backend_ids
            .retain(|id| !used_backends.contains(&id));
        self.counted_backends.extend(&used_backends);
        // The VIP table and slot records must match what `apply` will assume:
        // every VIP republished (idle copy written, then named), and records
        // of slots without a restored VIP cleared.
        let specs: Vec<VipSpec> = self.vips.keys().copied().collect();
        for spec in &specs {
            self.publish_vip(*spec)?;
        }
        let used: std::collections::HashSet<u32> = specs.iter().map(|s| slot_of(s.addr)).collect();
        let slots = self.addr_slots_mut()?;
        for slot in 0..VIP_SLOTS {
            if !used.contains(&slot) && slots.load(slot as usize) != 0 {
                slots.store(slot as usize, 0);
            }
        }
        self.sync_vip_protos()?;
        info!(
            vips = self.vips.len(),
            backends = found.len(),
            "adopted the pinned data plane state"
        );
        Ok(found)
    }

    fn array<T: aya::Pod>(&mut self, name: &str) -> Result<Array<&mut MapData, T>, XdpError> {
        Ok(Array::try_from(self.ebpf.map_mut(name).ok_or_else(
            || XdpError::Missing(format!("map {name}")),
        )?)?)
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>, XdpError> {
        Ok(BpfHashMap::try_from(self.ebpf.map_mut(name).ok_or_else(
            || XdpError::Missing(format!("map {name}")),
        )?)?)
    }

    fn array_ref<T: aya::Pod>(&self, name: &str) -> Result<Array<&MapData, T>, XdpError> {
        Ok(Array::try_from(self.ebpf.map(name).ok_or_else(|| {
            XdpError::Missing(format!("map {name}"))
        })?)?)
    }

    fn per_cpu<T: aya::Pod>(&self, name: &str) -> Result<PerCpuArray<&MapData, T>, XdpError> {
        Ok(PerCpuArray::try_from(self.ebpf.map(name).ok_or_else(
            || XdpError::Missing(format!("map {name}")),
        )?)?)
    }

    /// Zeroes the counters of a VIP id about to be handed out again, and
    /// what its `STATS_CARRY` entry holds for the VIP that had it.
    fn zero_vip_counter(&mut self, id: u32) -> Result<(), XdpError> {
        self.zero_counter::<Counter>("VIP_STATS", id)?;
        self.array::<StatsCarry>("STATS_CARRY")?
            .set(id, StatsCarry::default(), 0)?;
        Ok(())
    }

    /// A backend id's counter, summed over CPUs.
    fn backend_counter(&self, id: u32) -> Result<BackendCounter, XdpError> {
        let per_cpu = self
            .per_cpu::<BackendCounter>("BACKEND_STATS")?
            .get(&id, 0)?;
        Ok(per_cpu
            .iter()
            .fold(BackendCounter::default(), |a, c| BackendCounter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                fast_bytes: a.fast_bytes + c.fast_bytes,
                fast_dr: a.fast_dr + c.fast_dr,
                fast_ipip: a.fast_ipip + c.fast_ipip,
            }))
    }

    /// What the kept maps say of every backend id, read once when a kept
    /// data plane is adopted: its generation (free ids keep theirs, so the
    /// next backend on an id gets a newer one than any connection-table
    /// entry of the id holds), and whether its counter holds fast-path
    /// counts (see `counted_backends`).
    fn adopt_backend_ids(&mut self) -> Result<(), XdpError> {
        let mut generations = vec![0; MAX_BACKENDS as usize];
        let mut counted = BTreeSet::new();
        for id in 1..MAX_BACKENDS {
            generations[id as usize] = self.backends.get(id).generation;
            let c = self.backend_counter(id)?;
            if c.fast_dr != 0 || c.fast_ipip != 0 {
                counted.insert(id);
            }
        }
        self.generations = generations;
        self.counted_backends.extend(counted);
        Ok(())
    }

    /// Adds to `STATS_CARRY` entry `idx`.
    fn carry(&mut self, idx: u32, add: StatsCarry) -> Result<(), XdpError> {
        let mut m = self.array::<StatsCarry>("STATS_CARRY")?;
        let c = m.get(&idx, 0)?;
        m.set(
            idx,
            StatsCarry {
                packets: c.packets + add.packets,
                bytes: c.bytes + add.bytes,
                fast_dr: c.fast_dr + add.fast_dr,
                fast_ipip: c.fast_ipip + add.fast_ipip,
            },
            0,
        )?;
        Ok(())
    }

    /// Zeroes entry `idx` of per-CPU counter map `map` (values of type `T`) on every CPU.
    fn zero_counter<T: aya::Pod + Default>(&mut self, map: &str, idx: u32) -> Result<(), XdpError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| XdpError::PerCpu(e))?;
        let mut m: PerCpuArray<&mut MapData, T> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(map)
                .ok_or_else(|| XdpError::Missing(format!("map {map}")))?,
        )?;
        let zeros = PerCpuValues::try_from(vec![T::default(); cpus]).map_err(XdpError::PerCpu)?;
        m.set(idx, zeros, 0)?;
        Ok(())
    }

    fn write_node(&mut self, node: &NodeSettings) -> Result<bool, XdpError> {
        let cfg = LbConfig {
            iface_mac: node.iface_mac,
            _pad: [0; 2],
            mtu: node.mtu,
            ipip_src_v4: node.ipip_src_v4.map_or([0; 4], |a| a.octets()),
            ipip_src_v6: node.ipip_src_v6.map_or([0; 16], |a| a.octets()),
            ipip_src_flow_bits_v4: node.ipip_src_flow_bits_v4,
            ipip_src_flow_bits_v6: node.ipip_src_flow_bits_v6,
            flags: if node.debug { config_flags::DEBUG } else { 0 }
                | if self.general_path_only {
                    config_flags::GENERAL_PATH_ONLY
                } else {
                    0
                },
            ring_stride: self.opts.ring_stride,
            conn_mask: self.conn_mask,
            conn4_mask: self.conn4_mask,
            conn_shared_mask: self.conn_shared_mask,
            // The data plane takes them as they are: 0 means the default here.
            icmp_rate: match node.icmp_rate {
                0 => lb_common::DEFAULT_ICMP_RATE,
                r => r,
            },
            icmp_burst: match node.icmp_burst {
                0 => lb_common::DEFAULT_ICMP_BURST,
                b => b,
            },
        };
        if self.node == Some(cfg) {
            return Ok(false);
        }
        self.array::<LbConfig>(NODE_MAP)?.set(0, cfg, 0)?;
        self.node = Some(cfg);
        Ok(true)
    }

    /// Sends every packet through `lb`'s general path, without its IPv4
    /// fast path for established flows: the outcome is the same, only the
    /// cost is higher. For the tests that compare the two paths packet by
    /// packet, and for a developer who suspects the fast path (lb.toml has
    /// no such setting). Written at once. Not kept over a restart: a data
    /// plane loaded anew, or adopting a kept one, starts with the fast path
    /// on and writes that with its first `apply`.
    ///
    /// # Errors
    /// Map errors.
    pub fn set_general_path_only(&mut self, on: bool) -> Result<(), XdpError> {
        self.general_path_only = on;
        if let Some(mut cfg) = self.node {
            cfg.flags &= !config_flags::GENERAL_PATH_ONLY;
            if on {
                cfg.flags |= config_flags::GENERAL_PATH_ONLY;
            }
            self.array::<LbConfig>(NODE_MAP)?.set(0, cfg, 0)?;
            self.node = Some(cfg);
        }
        Ok(())
    }

    fn alloc_backend_id(&mut self) -> Result<u32, XdpError> {
        let id = self.free_backend_ids.take().ok_or_else(|| {
            XdpError::Capacity(format!("more than {} backends", MAX_BACKENDS - 1))
        })?;
        self.generations[id as usize] = self.generations[id as usize].wrapping_add(1).max(1);
        // Its fast-path counts move to the reasons' carry, then it starts
        // from zero. It has been free for `SLOT_REUSE_GRACE` (or was free
        // when the maps were adopted): no packet counts on it any more.
        // Should the process die between the two writes, the counts are in
        // both: the reasons then count them twice, but never go down.
        let c = self.backend_counter(id)?;
        self.carry(
            STATS_CARRY_REASONS,
            StatsCarry {
                fast_dr: c.fast_dr,
                fast_ipip: c.fast_ipip,
                ..StatsCarry::default()
            },
        )?;
        self.zero_counter::<BackendCounter>("BACKEND_STATS", id)?;
        self.counted_backends.insert(id);
        Ok(id)
    }

    /// The entry of a free backend id: unused and not alive, but with the
    /// id's generation, which a restart that adopts the maps reads back
    /// (see `adopt_backend_ids`): connection-table entries of the id's
    /// earlier backends must stay stale for the next one.
    fn free_entry(&self, id: u32) -> Backend {
        Backend {
            generation: self.generations.get(id as usize).copied().unwrap_or(0),
            ..Backend::default()
        }
    }

    fn write_backend(&mut self, id: u32, entry: Backend) -> Result<(), XdpError> {
        self.backends.set(&mut self.ebpf, id, entry)
    }

    /// Stages a backend entry for [`Self::flush_backends`], which writes
    /// every staged one at once (the table is one value: see `GlobalTable`).
    fn stage_backend(&mut self, id: u32, entry: Backend) -> Result<(), XdpError> {
        self.backends.stage(id, entry).map(|_| ())
    }

    fn flush_backends(&mut self) -> Result<(), XdpError> {
        self.backends.flush(&mut self.ebpf)
    }

    /// Rewrites backends `ids` as `f` makes each from its entry, in one
    /// write; how many changed.
    fn rewrite_backends(
        &mut self,
        ids: impl IntoIterator<Item = u32>,
        f: impl Fn(&Self, u32, Backend) -> Backend,
    ) -> Result<usize, XdpError> {
        let mut changed = 0;
        for id in ids {
            let entry = f(self, id, self.backends.get(id));
            if self.backends.stage(id, entry)? {
                changed += 1;
            }
        }
        self.flush_backends()?;
        Ok(changed)
    }

    /// Before an apply changes anything: takes out of the fast path, in one
    /// write, the backends of every programmed VIP whose fast-path flags
    /// change. The fast path reads a flow's VIP flags from its backend
    /// (`Backend::fast_flags`), so it must not act on new ones before the
    /// general path does (the VIP's switch), nor on old ones after it, nor
    /// on a port-less VIP's while a VIP of one of its ports is published
    /// before it (VIPs are applied in config order). Until its VIP's switch
    /// writes the new flags, such a backend's flows take the general path;
    /// after a failed apply, until the next one.
    /// Returns how many entries it changed.
    fn quiesce_fast_flags(&mut self, desired: &DesiredState) -> Result<usize, XdpError> {
        let mut changing = Vec::new();
        for vip in &desired.vips {
            let Some(slot) = self.vips.get(&vip.spec) else {
                continue;
            };
            let new = desired.fast_flags(vip);
            changing.extend(
                slot.backends
                    .values()
                    .copied()
                    .filter(|&id| self.backends.get(id).fast_flags != new),
            );
        }
        self.rewrite_backends(changing, |_, _, b| fast_path_off(b))
    }

    /// Frees a backend id. `vip`: the id of the VIP it leaves, which goes
    /// on (its total keeps the backend's fast-path packets); `None` when the
    /// VIP goes too. A packet that the fast path counts on the backend in
    /// the instant it is freed may be missing from the VIP's total (never
    /// counted twice); the reasons count it.
    fn release_backend(&mut self, id: u32, vip: Option<u32>) -> Result<(), XdpError> {
        self.write_backend(id, self.free_entry(id))?;
        if let Some(v) = vip {
            let c = self.backend_counter(id)?;
            self.carry(
                v,
                StatsCarry {
                    packets: c.fast_dr + c.fast_ipip,
                    bytes: c.fast_bytes,
                    ..StatsCarry::default()
                },
            )?;
        }
        self.free_backend_ids.release(id, Instant::now());
        Ok(())
    }

    /// Hands back ids allocated by an apply that gives up before any table
    /// names them (the entries written for them are cleared; should that
    /// fail, the id is still free: nothing points at it).
    fn release_fresh(&mut self, fresh: &[u32]) {
        for &id in fresh.iter().rev() {
            if let Err(e) = self.write_backend(id, self.free_entry(id)) {
                warn!(id, error = %e, "clearing an unused backend entry failed");
            }
            self.free_backend_ids.unused(id);
        }
    }

    fn addr_slots_mut(&mut self) -> Result<&mut RingMemory, XdpError> {
        self.addr_slots
            .as_mut()
            .ok_or_else(|| XdpError::Missing("VIP address slot memory".into()))
    }

    /// Rewrites the record of address slot `slot` from the VIPs whose
    /// `VIP_TABLE` copy is live, in one aligned 8-byte store.
    fn write_slot_record(&mut self, slot: u32) -> Result<(), XdpError> {
        let mut named: Vec<u32> = self
            .vips
            .iter()
            .filter(|(spec, _)| slot_of(spec.addr) == slot)
            .filter_map(|(_, v)| self.entries[v.id as usize].live.map(|copy| v.id * 2 + copy))
            .collect();
        named.sort_unstable();
        let record = slot_record::pack(&named);
        self.addr_slots_mut()?.store(slot as usize, record);
        Ok(())
    }

    /// Makes packets see `spec`'s current `VipInfo` through the VIP table:
    /// writes the idle copy (after the grace period), then names it in the
    /// slot record. `VIPS` must already hold the same value.
    fn publish_vip(&mut self, spec: VipSpec) -> Result<(), XdpError> {
        let (id, info) = {
            let v = self
                .vips
                .get(&spec)
                .ok_or_else(|| XdpError::Missing(format!("slot of {spec}")))?;
            (v.id, v.info)
        };
        let copies = self.entries[id as usize];
        if let Some(t) = copies.since {
            let since = t.elapsed();
            if since < SLOT_REUSE_GRACE {
                std::thread::sleep(SLOT_REUSE_GRACE - since);
            }
        }
        let copy = copies.live.map_or(0, |c| c ^ 1);
        let entry = VipEntry {
            key: spec.key(),
            info,
        };
        self.vip_table.set(&mut self.ebpf, id * 2 + copy, entry)?;
        self.entries[id as usize] = EntryCopies {
            live: Some(copy),
            since: Some(Instant::now()),
        };
        self.write_slot_record(slot_of(spec.addr))
    }

    /// Stops naming `spec` (still in `self.vips`) in its slot record.
    fn unpublish_vip(&mut self, spec: VipSpec) -> Result<(), XdpError> {
        let Some(id) = self.vips.get(&spec).map(|v| v.id) else {
            return Ok(());
        };
        self.entries[id as usize] = EntryCopies {
            live: None,
            since: Some(Instant::now()),
        };
        self.write_slot_record(slot_of(spec.addr))
    }

    /// Makes the maps equal to `desired`, writing only what changed.
    ///
    /// # Errors
    /// [`XdpError::Invalid`] (a backend VLAN outside 802.1Q's IDs) before
    /// anything is written; capacity, Maglev or map errors, after which the
    /// maps hold a consistent mix: every VIP entry points at a complete table.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, XdpError> {
        for v in &desired.vips {
            if let Some(b) = v.backends.iter().find(|b| b.vlan > lb_common::VLAN_ID_MAX) {
                return Err(XdpError::Invalid(format!(
                    "{}: backend {} on VLAN {}: expected a VLAN ID 1..={} or {} (untagged)",
                    v.spec,
                    b.addr,
                    b.vlan,
                    lb_common::VLAN_ID_MAX,
                    lb_common::VLAN_UNTAGGED
                )));
            }
        }
        let applied = self.apply_vips(desired);
        // Also after a failure: the VIPs published before it forward, and
        // their fragments must be told from traffic for no VIP; and the
        // backend entries staged before it are written (the image of the
        // table must be what the map holds).
        let synced = self.sync_vip_protos();
        let flushed = self.flush_backends();
        let report = applied?;
        synced?;
        flushed?;
        Ok(report)
    }

    /// [`Self::apply`] without the `VIP_PROTOS` sync.
    fn apply_vips(&mut self, desired: &DesiredState) -> Result<ApplyReport, XdpError> {
        let mut report = ApplyReport {
            node_written: self.write_node(&desired.node)?,
            ..Default::default()
        };
        report.backends_written += self.quiesce_fast_flags(desired)?;
        let wanted: HashMap<VipSpec, usize> = desired
            .vips
            .iter()
            .enumerate()
            .map(|(i, v)| (v.spec, i))
            .collect();

        // Removed VIPs first: their traffic passes to the kernel from now on.
        let gone: Vec<VipSpec> = self
            .vips
            .keys()
            .filter(|s| !wanted.contains_key(s))
            .copied()
            .collect();
        for spec in gone {
            self.remove_vip(spec)?;
            report.vips_removed += 1;
        }

        for vip in &desired.vips {
            if vip.ring_size == 0 || vip.ring_size > self.opts.ring_stride {
                return Err(XdpError::Capacity(format!(
                    "{}: table size {} exceeds the loaded stride {}",
                    vip.spec, vip.ring_size, self.opts.ring_stride
                )));
            }
            if !self.vips.contains_key(&vip.spec) {
                let id = self.free_vip_ids.take().ok_or_else(|| {
                    XdpError::Capacity(format!("more than {} VIPs", self.opts.max_vips))
                })?;
                self.zero_vip_counter(id)?;
                self.vips.insert(
                    vip.spec,
                    VipSlot {
                        id,
                        info: VipInfo {
                            vip_id: id,
                            flags: 0,
                            ring_size: 0,
                            slot: 1,
                        },
                        live_ring: Vec::new(),
                        last_flip: None,
                        backends: BTreeMap::new(),
                    },
                );
                report.vips_added += 1;
            }

            // Backends: ids per (VIP, address); entries written when changed,
            // except that a backend losing ALIVE is written only after the
            // switch below: until the new table is live, the old one still
            // sends new flows to it, and they would be dropped meanwhile.
            let mut ids = BTreeMap::new();
            let mut dying = Vec::new();
            // Entries whose fast-path flags change: written with the switch.
            let mut after_switch = Vec::new();
            let old_ids = self
                .vips
                .get(&vip.spec)
                .map(|s| s.backends.clone())
                .unwrap_or_default();
            // Ids taken for this VIP's new backends: handed back when the
            // VIP cannot be programmed (no id left, no table), so a refused
            // apply loses none and its retry can succeed.
            let mut fresh: Vec<u32> = Vec::new();
            let fast_flags = desired.fast_flags(vip);
            for b in &vip.backends {
                let id = match old_ids.get(&b.addr) {
                    Some(&id) => id,
                    None => match self.alloc_backend_id() {
                        Ok(id) => {
                            fresh.push(id);
                            id
                        }
                        Err(e) => {
                            self.release_fresh(&fresh);
                            return Err(e);
                        }
                    },
                };
                ids.insert(b.addr, id);
                let (addr, family) = addr_bytes(b.addr);
                let entry = Backend {
                    addr,
                    family,
                    flags: if b.alive() { backend_flags::ALIVE } else { 0 },
                    fast_flags,
                    generation: self.generations[id as usize],
                    mac: b.mac.unwrap_or_default(),
                    vlan: b.vlan,
                };
                let current = self.backends.get(id);
                if current != entry {
                    let was_alive = current.flags & backend_flags::ALIVE != 0;
                    if was_alive && entry.flags & backend_flags::ALIVE == 0 {
                        dying.push((id, entry));
                    } else if entry.fast_flags != current.fast_flags {
                        // The fast path takes the new flags with the VIP's
                        // switch below, not before: until then it leaves
                        // the backend's flows to the general path.
                        self.stage_backend(id, fast_path_off(entry))?;
                        after_switch.push((id, entry));
                    } else {
                        self.stage_backend(id, entry)?;
                    }
                    report.backends_written += 1;
                }
            }
            // One write for the VIP's backends, before its table names them.
            self.flush_backends()?;

            // The table, from the backends that take new flows.
            let members: Vec<MaglevBackend> = vip
                .backends
                .iter()
                .filter(|b| b.in_ring())
                .filter_map(|b| {
                    ids.get(&b.addr)
                        .map(|&id| MaglevBackend::new(id, b.addr.to_string(), b.weight))
                })
                .collect();
            let ring = match maglev::build_table(&members, vip.ring_size) {
                Ok(r) => r,
                Err(source) => {
                    self.release_fresh(&fresh);
                    return Err(XdpError::Maglev {
                        vip: vip.spec,
                        source,
                    });
                }
            };
            let flags = vip.flags();
            let (needs_ring, mut info, last_flip) = {
                let slot = self
                    .vips
                    .get(&vip.spec)
                    .ok_or_else(|| XdpError::Missing(format!("slot of {}", vip.spec)))?;
                (
                    slot.live_ring != ring || slot.info.ring_size != vip.ring_size,
                    slot.info,
                    slot.last_flip,
                )
            };
            if needs_ring {
                if let Some(t) = last_flip {
                    let since = t.elapsed();
                    if since < SLOT_REUSE_GRACE {
                        std::thread::sleep(SLOT_REUSE_GRACE - since);
                    }
                }
                let idle = info.slot ^ 1;
                let stride = self.opts.ring_stride as usize;
                let base = (info.vip_id as usize * 2 + idle as usize) * stride;
                let rings = self
                    .rings
                    .as_mut()
                    .ok_or_else(|| XdpError::Missing("ring memory".into()))?;
                rings.write(base, &ring);
                info.slot = idle;
                info.ring_size = vip.ring_size;
                report.rings_switched += 1;
            }
            info.flags = flags;
            let old_info = self.vips.get(&vip.spec).map(|s| s.info);
            if old_info != Some(info) || needs_ring {
                // The switch: one update of the whole VipInfo, in the hash
                // map, then (the idle copy, named by one store) the VIP table.
                self.hash::<VipKey, VipInfo>("VIPS")?
                    .insert(vip.spec.key(), info, 0)?;
                if let Some(slot) = self.vips.get_mut(&vip.spec) {
                    slot.info = info;
                }
                self.publish_vip(vip.spec)?;
                report.vip_updates += 1;
            }
            // Now the live table no longer names them (a dead backend is
            // never in it): established flows on them are rehashed from here.
            // And the fast path takes the VIP's new flags, as the general
            // path now does.
            for (id, entry) in dying.into_iter().chain(after_switch) {
                self.stage_backend(id, entry)?;
            }
            self.flush_backends()?;
            // Backends that left this VIP: no longer alive, ids recycled.
            // Until each is released the slot names it beside the new
            // backends, so that an error part-way leaves the next apply
            // exactly the ones still to release (each released, and its
            // counts carried, once).
            let left: Vec<(IpAddr, u32)> = old_ids
                .iter()
                .filter(|(a, _)| !ids.contains_key(a))
                .map(|(a, &id)| (*a, id))
                .collect();
            if let Some(slot) = self.vips.get_mut(&vip.spec) {
                slot.backends = ids.clone();
                slot.backends.extend(left.iter().copied());
            }
            // Their free entries in one write (each release below then
            // finds its entry written).
            self.rewrite_backends(left.iter().map(|&(_, id)| id), |dp, id, _| {
                dp.free_entry(id)
            })?;
            for (addr, id) in left {
                self.release_backend(id, Some(info.vip_id))?;
                if let Some(slot) = self.vips.get_mut(&vip.spec) {
                    slot.backends.remove(&addr);
                }
                report.backends_written += 1;
            }

            if let Some(slot) = self.vips.get_mut(&vip.spec) {
                if needs_ring {
                    slot.live_ring = ring;
                    slot.last_flip = Some(Instant::now());
                }
                slot.info = info;
                slot.backends = ids;
            }
            debug!(vip = %vip.spec, ?info, "VIP programmed");
        }
        Ok(report)
    }

    /// Makes `VIP_PROTOS` name exactly the (address, protocol) pairs of the
    /// programmed VIPs (the data plane drops a fragment it cannot place
    /// only when it is to such a pair).
    fn sync_vip_protos(&mut self) -> Result<(), XdpError> {
        let wanted: std::collections::HashSet<VipKey> = self
            .vips
            .keys()
            .map(|s| VipKey { port: 0, ..s.key() })
            .collect();
        let mut map = self.hash::<VipKey, u32>("VIP_PROTOS")?;
        let have: std::collections::HashSet<VipKey> = map.keys().collect::<Result<_, _>>()?;
        for k in have.difference(&wanted) {
            map.remove(k).or_else(ignore_missing)?;
        }
        for k in wanted.difference(&have) {
            map.insert(k, 1, 0)?;
        }
        Ok(())
    }

    fn remove_vip(&mut self, spec: VipSpec) -> Result<(), XdpError> {
        // The fast path first, in one write: it reads the VIP's flags from
        // its backends (`Backend::fast_flags`), not from the VIP entry.
        let ids: Vec<u32> = self
            .vips
            .get(&spec)
            .map(|s| s.backends.values().copied().collect())
            .unwrap_or_default();
        self.rewrite_backends(ids, |_, _, b| fast_path_off(b))?;
        self.unpublish_vip(spec)?;
        let Some(slot) = self.vips.remove(&spec) else {
            return Ok(());
        };
        self.hash::<VipKey, VipInfo>("VIPS")?
            .remove(&spec.key())
            .or_else(ignore_missing)?;
        // Their free entries in one write (each release then finds its
        // entry written).
        self.rewrite_backends(slot.backends.values().copied(), |dp, id, _| {
            dp.free_entry(id)
        })?;
        for (_, id) in slot.backends {
            self.release_backend(id, None)?;
        }
        self.free_vip_ids.release(slot.id, Instant::now());
        info!(vip = %spec, "VIP removed");
        Ok(())
    }

    /// Counters summed over CPUs.
    ///
    /// # Errors
    /// Map read errors.
    pub fn stats(&self) -> Result<Stats, XdpError> {
        let mut out = Stats::default();
        let vip_stats = self.per_cpu::<Counter>("VIP_STATS")?;
        let carries = self.array_ref::<StatsCarry>("STATS_CARRY")?;
        // Every counted backend id's counter, read once.
        let mut counters = BTreeMap::new();
        for id in &self.counted_backends {
            counters.insert(*id, self.backend_counter(*id)?);
        }
        for (spec, slot) in &self.vips {
            // The general path's packets, the fast path's (counted on the
            // backends), and those of backends that left the VIP.
            let carry = carries.get(&slot.id, 0)?;
            let mut vip = sum(&vip_stats.get(&slot.id, 0)?);
            vip.packets += carry.packets;
            vip.bytes += carry.bytes;
            let per = out.backends.entry(*spec).or_default();
            for (addr, id) in &slot.backends {
                let c = match counters.get(id) {
                    Some(c) => *c,
                    None => self.backend_counter(*id)?,
                };
                per.insert(
                    *addr,
                    CounterSum {
                        packets: c.packets + c.fast_dr + c.fast_ipip,
                        bytes: c.bytes + c.fast_bytes,
                    },
                );
                vip.packets += c.fast_dr + c.fast_ipip;
                vip.bytes += c.fast_bytes;
            }
            out.vips.insert(*spec, vip);
        }
        let per_cpu = self.per_cpu::<ReasonCounts>("REASONS")?.get(&0, 0)?;
        let mut reasons: [u64; NUM_REASONS as usize] = [0; NUM_REASONS as usize];
        for r in Reason::ALL {
            reasons[r as usize] = per_cpu.iter().map(|c| c.0[r as usize]).sum();
        }
        // The fast path's packets: on the backend ids that count, and
        // carried from the ids cleared for reuse.
        let carried = carries.get(&STATS_CARRY_REASONS, 0)?;
        let (mut fast_dr, mut fast_ipip) = (carried.fast_dr, carried.fast_ipip);
        for c in counters.values() {
            fast_dr += c.fast_dr;
            fast_ipip += c.fast_ipip;
        }
        reasons[Reason::ConnHit as usize] += fast_dr + fast_ipip;
        reasons[Reason::FwdDr as usize] += fast_dr;
        reasons[Reason::FwdIpip as usize] += fast_ipip;
        for r in Reason::ALL {
            out.reasons.insert(r.name(), reasons[r as usize]);
        }
        out.reasons.insert(FAST_PATH, fast_dr + fast_ipip);
        debug_assert_eq!(out.reasons.len(), NUM_REASONS as usize + 1);
        Ok(out)
    }

    /// Backend id of `addr` under `vip`, if programmed (for tests and tools).
    pub fn backend_id(&self, vip: &VipSpec, addr: IpAddr) -> Option<u32> {
        self.vips.get(vip)?.backends.get(&addr).copied()
    }

    /// The live Maglev table of a VIP.
    pub fn live_ring(&self, vip: &VipSpec) -> Option<&[u32]> {
        self.vips.get(vip).map(|s| s.live_ring.as_slice())
    }

    /// Sets the tunnel endpoints the `decap` program accepts.
    ///
    /// # Errors
    /// Map errors.
    pub fn set_decap_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        let mut m = self.hash::<AddrKey, u32>("DECAP_ADDRS")?;
        let old: Vec<AddrKey> = m.keys().collect::<Result<_, _>>()?;
        for k in old {
            m.remove(&k).or_else(ignore_missing)?;
        }
        for a in addrs {
            m.insert(addr_key(*a), 1, 0)?;
        }
        Ok(())
    }

    /// Number of flows in the per-CPU connection tables, over all CPUs
    /// (reads them whole; for tests and tools, not for a hot path). Flows
    /// in the shared table are also in the table of the CPU that placed them.
    ///
    /// # Errors
    /// Map errors.
    pub fn conn_count(&self) -> Result<usize, XdpError> {
        let m = self.per_cpu::<ConnBucket>("CONNS")?;
        let mut n = 0;
        for i in 0..=self.conn_mask {
            for b in m.get(&i, 0)?.iter() {
                n += b.tags.iter().filter(|t| **t != 0).count();
            }
        }
        let m4: Array<&MapData, ConnLine4> = Array::try_from(
            self.ebpf
                .map("CONNS4")
                .ok_or_else(|| XdpError::Missing("map CONNS4".into()))?,
        )?;
        for l in m4.iter() {
            n += l?.proto.iter().filter(|p| **p != 0).count();
        }
        Ok(n)
    }
}

/// Puts the programs `lb` tail-calls into `LB_TAILS` (a pinned array adopted
/// from an earlier run gets this run's programs). The array stays in `ebpf`:
/// the kernel empties a program array when its last user-space reference
/// (file descriptor or pin) goes.
fn fill_tail_slots(ebpf: &mut Ebpf) -> Result<(), XdpError> {
    let mut fds = Vec::with_capacity(programs::TAIL_SLOTS.len());
    for (slot, name) in programs::TAIL_SLOTS {
        let fd = ebpf
            .program(name)
            .ok_or_else(|| XdpError::Missing(format!("program {name}")))?
            .fd()?
            .try_clone()
            .map_err(ProgramError::from)?;
        fds.push((slot, fd));
    }
    let mut tails = ProgramArray::try_from(
        ebpf.map_mut("LB_TAILS")
            .ok_or_else(|| XdpError::Missing("program array map LB_TAILS".into()))?,
    )?;
    for (slot, fd) in &fds {
        tails.set(*slot, fd, 0)?;
    }
    Ok(())
}

/// `entry` as the fast path declines it: its VIP flags without ACTIVE (the
/// general path then decides the backend's flows).
fn fast_path_off(entry: Backend) -> Backend {
    Backend {
        fast_flags: entry.fast_flags & !(vip_flags::ACTIVE as u16),
        ..entry
    }
}

/// The node settings held by a pinned [`NODE_MAP`].
fn read_pinned_node(pin: &Path) -> Result<LbConfig, XdpError> {
    let map =
        MapData::from_pin(pin).map_err(|e| XdpError::Pin(format!("{}: {e}", pin.display())))?;
    let node: Array<MapData, LbConfig> = Array::try_from(Map::Array(map))?;
    Ok(node.get(&0, 0)?)
}

/// Possible CPUs (per-CPU maps and `CONNS4` regions are sized by them).
fn cpu_count() -> Result<u32, XdpError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| XdpError::PerCpu(e))?;
    Ok(u32::try_from(cpus).unwrap_or(u32::MAX).max(1))
}

/// Per-CPU bucket count of the IPv6 connection table for a total capacity.
fn conn_buckets_for(capacity: u32) -> Result<u32, XdpError> {
    Ok(lb_common::conn_buckets(capacity, cpu_count()?))
}

/// Entries of the IPv4 connection table (lines of every CPU) for a total capacity.
fn conn4_entries_for(capacity: u32) -> Result<u32, XdpError> {
    let cpus = cpu_count()?;
    let lines = lb_common::conn4_lines(capacity, cpus);
    lines.checked_mul(cpus).ok_or_else(|| {
        XdpError::Capacity(format!(
            "conn_table_size {capacity}: {lines} lines x {cpus} CPUs"
        ))
    })
}

/// The largest power of two at most `n` (at least 1), minus one: a bucket mask.
fn mask_below(n: u32) -> u32 {
    if n <= 1 {
        return 0;
    }
    // The largest power of two at most n, minus one (no overflow for any n).
    (1u32 << (31 - n.leading_zeros())) - 1
}

impl Drop for XdpDataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Pre-filter slot of a VIP address.
fn slot_of(addr: IpAddr) -> u32 {
    lb_common::vip_slot(&addr_bytes(addr).0)
}

fn sum(v: &PerCpuValues<Counter>) -> CounterSum {
    v.iter().fold(CounterSum::default(), |a, c| CounterSum {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

fn ignore_missing(e: MapError) -> Result<(), MapError> {
    match e {
        MapError::KeyNotFound => Ok(()),
        MapError::SyscallError(ref s) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        e => Err(e),
    }
}

/// Unused-slot marker, re-exported for tests that read rings.
pub const EMPTY_SLOT: u32 = NO_BACKEND;

#[cfg(test)]
mod tests {
    use super::{IdPool, SLOT_REUSE_GRACE, mask_below};
    use std::time::{Duration, Instant};

    /// A released id comes back last, and only after the grace period: a
    /// packet in flight that read it before the release must not find it
    /// naming something else.
    #[test]
    fn released_ids_rest_before_reuse() {
        let mut pool = IdPool::new(1..4);
        assert_eq!(pool.take(), Some(1));
        assert_eq!(pool.take(), Some(2));
        let now = Instant::now();
        pool.release(1, now);
        // Never-used ids first, then the released one.
        assert_eq!(pool.rest(now), Some(Duration::ZERO));
        assert_eq!(pool.take(), Some(3));
        assert_eq!(pool.rest(now), Some(SLOT_REUSE_GRACE));
        assert_eq!(pool.rest(now + SLOT_REUSE_GRACE), Some(Duration::ZERO));
        assert_eq!(pool.take(), Some(1));
        assert!(now.elapsed() >= SLOT_REUSE_GRACE, "{:?}", now.elapsed());
        assert_eq!(pool.take(), None);
        // An id taken and handed back unused is free at once, first.
        pool.release(2, Instant::now());
        pool.unused(3);
        assert_eq!(pool.rest(Instant::now()), Some(Duration::ZERO));
        assert_eq!(pool.take(), Some(3));
        pool.retain(|id| id != 2);
        assert_eq!(pool.take(), None);
    }

    /// The program indexes a table with `hash & mask`: the mask must keep
    /// every index inside the table, also for a table (a kept one) whose
    /// size is not a power of two.
    #[test]
    fn bucket_masks_stay_inside_their_table() {
        for n in [0u32, 1, 2, 3, 4, 5, 1000, 1024, 65_536, 87_381, u32::MAX] {
            let m = mask_below(n);
            assert!(u64::from(m) < u64::from(n.max(1)), "{n}: mask {m}");
            assert!((m + 1).is_power_of_two(), "{n}: mask {m}");
        }
        assert_eq!(mask_below(65_536), 65_535);
        assert_eq!(mask_below(87_381), 65_535);
        assert_eq!(mask_below(1), 0);
    }
}
