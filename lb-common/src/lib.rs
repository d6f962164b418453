//! Types shared by the XDP program (`lb-ebpf`) and user space (`lbctl`).
//!
//! Every type here is `#[repr(C)]`, has no implicit padding, and is the exact
//! byte layout of a BPF map key or value. Addresses and ports are stored in
//! network byte order, as they appear on the wire, so the data plane can
//! compare them without swapping.
#![no_std]

/// Maximum number of VIPs (size of the VIP and per-VIP stats maps).
pub const MAX_VIPS: u32 = 256;
/// Maximum number of backends (size of the backend and per-backend stats maps).
pub const MAX_BACKENDS: u32 = 4096;
/// Default Maglev lookup table size (a prime, as the paper requires).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Default capacity of the connection table.
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 262_144;
/// Entries of the VIP address slot array (see [`vip_slot`] and [`slot_record`]).
pub const VIP_SLOTS: u32 = 1 << 16;
/// Entries of the VIP table array: two copies per VIP id (see [`VipEntry`]).
pub const VIP_TABLE_ENTRIES: u32 = 2 * MAX_VIPS;
/// Backend id that means "no backend" in a Maglev ring.
pub const NO_BACKEND: u32 = 0;

/// Address family of a [`VipKey`] or [`Backend`] (same values as `AF_INET`/`AF_INET6`).
pub const FAMILY_V4: u8 = 2;
/// IPv6 address family.
pub const FAMILY_V6: u8 = 10;

/// IANA protocol numbers used in keys.
pub const PROTO_TCP: u8 = 6;
/// UDP protocol number.
pub const PROTO_UDP: u8 = 17;

/// Key of the VIP map: (address, port, protocol). A port of 0 is the
/// port-less VIP that catches every port of its address.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    /// IPv4 in the first 4 bytes (rest zero) or IPv6, network order.
    pub addr: [u8; 16],
    /// Destination port, network byte order; 0 for a port-less VIP.
    pub port: u16,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
}

/// Slots of the `LB_TAILS` program array: the programs `lb` tail-calls.
pub mod tail {
    /// `lb_too_big`: answers a packet too big to encapsulate.
    pub const TOO_BIG: u32 = 0;
    /// `lb_rare`: balances ICMP errors about a VIP flow and IP fragments.
    pub const RARE: u32 = 1;
    /// Number of slots.
    pub const SLOTS: u32 = 2;
}

/// VIP flags ([`VipInfo::flags`]).
pub mod vip_flags {
    /// This node is active (VRRP master) for the VIP; otherwise its traffic passes to the kernel.
    pub const ACTIVE: u32 = 1 << 0;
    /// Forward by IPIP/IP6IP6 encapsulation instead of DR MAC rewrite.
    pub const FWD_IPIP: u32 = 1 << 1;
    /// Leave the source port out of the flow hash.
    pub const HASH_NO_SRC_PORT: u32 = 1 << 2;
    /// Leave the destination port out of the flow hash.
    pub const HASH_NO_DST_PORT: u32 = 1 << 3;
    /// Leave the source address out of the flow hash.
    pub const HASH_NO_SRC_ADDR: u32 = 1 << 4;
    /// Do not use the connection table for this VIP (every packet is hashed).
    pub const NO_CONN_TABLE: u32 = 1 << 5;
    /// Log debug events for this VIP through aya-log (off on the fast path by default).
    pub const DEBUG: u32 = 1 << 6;
    /// Every flag: they fit [`super::Backend::fast_flags`].
    pub const ALL: u32 = ACTIVE
        | FWD_IPIP
        | HASH_NO_SRC_PORT
        | HASH_NO_DST_PORT
        | HASH_NO_SRC_ADDR
        | NO_CONN_TABLE
        | DEBUG;
    const _: () = assert!(ALL <= u16::MAX as u32);
}

/// Value of the VIP map.
///
/// The whole value is replaced in one map update, which is how a table switch
/// becomes atomic: user space fills the idle ring slot, then writes a new
/// `VipInfo` with `slot` pointing at it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipInfo {
    /// Dense index of the VIP (rings, stats), `< MAX_VIPS`.
    pub vip_id: u32,
    /// [`vip_flags`] bits.
    pub flags: u32,
    /// Maglev table size for this VIP (a prime, at most the ring stride).
    pub ring_size: u32,
    /// Which of the VIP's two ring slots is live (0 or 1).
    pub slot: u32,
}

/// Entry of the VIP table (the programs' global `VIP_TABLE`, an array of
/// [`VIP_TABLE_ENTRIES`]), at index `2 * vip_id + copy`: the VIP's key and
/// its [`VipInfo`], found by a packet through its address slot's
/// [`slot_record`] without a hash lookup.
///
/// Each VIP has two copies. User space writes the copy that no slot record
/// names (and that none has named for a grace period), then names it in the
/// slot record with one aligned 8-byte store; so a packet that read a record
/// reads a complete, unchanging entry, and `VipInfo` still changes in one step.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipEntry {
    /// The VIP's key, compared in full (slots are shared by colliding addresses).
    pub key: VipKey,
    /// The VIP's value, exactly as in the VIP hash map.
    pub info: VipInfo,
}

impl VipEntry {
    /// Every field zero: an unused entry (a `const` for the programs' global).
    pub const ZERO: Self = Self {
        key: VipKey {
            addr: [0; 16],
            port: 0,
            proto: 0,
            family: 0,
        },
        info: VipInfo {
            vip_id: 0,
            flags: 0,
            ring_size: 0,
            slot: 0,
        },
    };
}

/// Values of the VIP address slot array (a `u64` per [`vip_slot`]).
///
/// - `0`: no VIP has an address in this slot;
/// - [`slot_record::FALLBACK`]: more VIPs than lanes: look them up in the VIP
///   hash map;
/// - otherwise up to [`slot_record::LANES`] 16-bit lanes, filled from the
///   lowest: [`slot_record::LANE_VALID`] | the [`VipEntry`] index of one VIP.
pub mod slot_record {
    /// Lanes in a record.
    pub const LANES: usize = 4;
    /// Set in a lane that names a VIP entry.
    pub const LANE_VALID: u16 = 0x8000;
    /// Mask of the entry index in a lane.
    pub const LANE_INDEX: u16 = 0x01ff;
    /// Record of a slot with more VIPs than lanes (lane 0 without [`LANE_VALID`]).
    pub const FALLBACK: u64 = 1;

    /// The record naming `entries` (at most [`LANES`]; more gives [`FALLBACK`]).
    pub fn pack(entries: &[u32]) -> u64 {
        if entries.len() > LANES {
            return FALLBACK;
        }
        entries.iter().enumerate().fold(0, |r, (i, &e)| {
            r | (u64::from(LANE_VALID | (e as u16 & LANE_INDEX)) << (16 * i))
        })
    }

    /// The entry indices a record names (empty for 0 and [`FALLBACK`]).
    pub fn lanes(record: u64) -> impl Iterator<Item = u32> {
        (0..LANES)
            .map(move |i| (record >> (16 * i)) as u16)
            .take_while(|l| l & LANE_VALID != 0)
            .map(|l| u32::from(l & LANE_INDEX))
    }
}

/// Entry of the backend table (the programs' global `BACKENDS`, an array of
/// [`MAX_BACKENDS`]), indexed by backend id (`1..MAX_BACKENDS`; 0 is
/// [`NO_BACKEND`]).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Backend address (IPIP outer destination), network order.
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`]; 0 for an unused slot.
    pub family: u8,
    /// [`backend_flags`] bits.
    pub flags: u8,
    /// The [`vip_flags`] of the backend's VIP as `lb`'s fast path acts on
    /// them: a connection-table hit reads them here instead of looking the
    /// VIP up. The VIP's own flags, except that [`vip_flags::ACTIVE`] is
    /// left out for a port-less VIP that shares its address and protocol
    /// with a VIP of a port: the general path, which gives that port's
    /// packets to the other VIP, decides for its flows.
    pub fast_flags: u16,
    /// Generation of this slot: connection-table entries of an older generation are stale.
    pub generation: u32,
    /// Destination MAC for frames to this backend (the backend's own for DR, the next hop for IPIP).
    pub mac: [u8; 6],
    /// The VLAN frames to this backend leave on: a VLAN ID (1..=4094) to tag
    /// them with, or [`VLAN_UNTAGGED`]. Whatever tag a frame came with is
    /// replaced (its priority bits kept), added or removed to match.
    pub vlan: u16,
}

impl Backend {
    /// Every field zero: an unused id (a `const` for the programs' global).
    pub const ZERO: Self = Self {
        addr: [0; 16],
        family: 0,
        flags: 0,
        fast_flags: 0,
        generation: 0,
        mac: [0; 6],
        vlan: 0,
    };
}

/// [`Backend::vlan`] of a backend reached without a VLAN tag.
pub const VLAN_UNTAGGED: u16 = 0;
/// The largest VLAN ID (4095 is reserved by IEEE 802.1Q).
pub const VLAN_ID_MAX: u16 = 4094;

/// Backend flags ([`Backend::flags`]).
pub mod backend_flags {
    /// The backend is alive: established flows keep going to it (it may still be draining).
    pub const ALIVE: u8 = 1 << 0;
}

/// Key of the connection table, and the input of [`flow_hash`]: the flow's
/// 5-tuple with the fields its VIP does not hash on set to zero (and, in the
/// table, tagged with the VIP when the destination port is masked: see
/// [`tag_conn_key`]).
///
/// Addresses are raw 32-bit words: each word holds four wire bytes in
/// memory order (`u32::from_ne_bytes`), an IPv4 address in word 0 and the
/// rest zero; see [`addr_words`]. Words, not bytes, so the data plane keeps
/// the key in whole registers and compares and hashes it word by word.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConnKey {
    /// Client address, raw words.
    pub src: [u32; 4],
    /// VIP address, raw words.
    pub dst: [u32; 4],
    /// Client port, network order (0 when the VIP hashes without it).
    pub sport: u16,
    /// VIP port, network order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Address family.
    pub family: u8,
    /// Padding, zero.
    pub _pad: [u8; 2],
}

/// Set in [`ConnKey::proto`] of a connection-table key whose `dport` holds
/// its VIP's id instead of a port (see [`tag_conn_key`]); never set in a
/// protocol the data plane balances (TCP, UDP).
pub const PROTO_VIP_TAG: u8 = 0x80;

/// Makes the connection-table key of a VIP that hashes without the
/// destination port its own: `dport` (zeroed by the mask) takes the VIP id
/// and `proto` [`PROTO_VIP_TAG`]. Without it, two such VIPs on one address
/// and protocol (`:80` and `:443`, both hashing on addresses only) would
/// share a client's entries, and one would send the flow to a backend of
/// the other's pool. A key that keeps its destination port needs no tag: the
/// address, port and protocol name one VIP (an exact-port VIP wins over the
/// port-less one). Applied after the flow hash is taken, so placement on
/// the ring does not depend on VIP ids (which differ between nodes).
#[inline(always)]
pub fn tag_conn_key(k: &mut ConnKey, vip_id: u32) {
    k.dport = vip_id as u16;
    k.proto |= PROTO_VIP_TAG;
}

/// An address (network order, IPv4 in the first 4 bytes) as the raw words of a [`ConnKey`].
#[inline(always)]
pub const fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [word(a, 0), word(a, 1), word(a, 2), word(a, 3)]
}

/// Ways of a [`ConnLine4`].
pub const CONN4_WAYS: usize = 3;

/// One set of the IPv4 connection table: exactly one 64-byte cache line,
/// so a lookup touches one line (the array `CONNS4` is mmapable, which
/// page-aligns its values; each CPU owns a region of `2^k` lines, see
/// [`LbConfig::conn4_mask`]). Three ways, each a full IPv4 flow key (the
/// family is implied), its backend, and the low 16 bits of the backend's
/// generation; fields are grouped by kind so the line holds no padding
/// between ways. A new flow takes an empty way (protocol 0) or evicts the
/// least recently used one (`used` against the line's `clock`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnLine4 {
    /// Client address per way (raw word, as in [`ConnKey::src`]).
    pub src: [u32; CONN4_WAYS],
    /// VIP address per way (raw word).
    pub dst: [u32; CONN4_WAYS],
    /// Ports per way: [`conn4_ports`] of the key.
    pub ports: [u32; CONN4_WAYS],
    /// Low 16 bits of [`Backend::generation`] at the time of the choice.
    pub generation: [u16; CONN4_WAYS],
    /// Backend id per way (ids are below [`MAX_BACKENDS`]).
    pub backend: [u16; CONN4_WAYS],
    /// Per way: [`ConnLine4::clock`] at the way's last use.
    pub used: [u16; CONN4_WAYS],
    /// Counts lookups in this line (the LRU clock).
    pub clock: u16,
    /// Protocol per way; 0 marks an empty way.
    pub proto: [u8; CONN4_WAYS],
    /// Padding, zero.
    pub _pad: [u8; 5],
}

/// The ports of a key as one word of a [`ConnLine4`].
#[inline(always)]
pub const fn conn4_ports(k: &ConnKey) -> u32 {
    (k.sport as u32) | ((k.dport as u32) << 16)
}

/// Number of [`ConnLine4`] lines per CPU for a capacity of `capacity` IPv4
/// flows over `cpus` CPUs: a power of two, at least 1.
pub const fn conn4_lines(capacity: u32, cpus: u32) -> u32 {
    per_cpu_sets(capacity, cpus, CONN4_WAYS as u32)
}

/// Sets per CPU: `capacity / cpus` flows in sets of `ways`, rounded up to a
/// power of two (at most 2^24).
const fn per_cpu_sets(capacity: u32, cpus: u32, ways: u32) -> u32 {
    let cpus = if cpus == 0 { 1 } else { cpus };
    pow2_within((capacity / cpus).div_ceil(ways))
}

/// `n` rounded up to a power of two, at least 1, at most 2^24: the size of
/// a table indexed by a mask.
const fn pow2_within(n: u32) -> u32 {
    if n <= 1 {
        1
    } else if n > 1 << 24 {
        1 << 24
    } else {
        n.next_power_of_two()
    }
}

/// Ways of a [`ConnBucket`].
pub const CONN_WAYS: usize = 4;

/// One flow in a [`ConnBucket`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnEntry {
    /// The flow (masked as its VIP hashes it).
    pub key: ConnKey,
    /// Backend id chosen for the flow.
    pub backend_id: u32,
    /// [`Backend::generation`] at the time of the choice.
    pub generation: u32,
}

/// One set of the IPv6 connection table: the per-CPU array `CONNS` holds
/// `2^k` buckets per CPU, and a flow lives in bucket `flow_hash & (2^k - 1)`
/// (see [`LbConfig::conn_mask`]), in one of [`CONN_WAYS`] ways. A hit is
/// one inlined array lookup and a tag compare; a miss takes an empty way or
/// evicts the least recently used one of the set (set-associative LRU, as
/// in a CPU cache). Each CPU owns its buckets, so nothing is shared or
/// locked; with RSS a flow stays on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnBucket {
    /// Per way: the flow's [`conn_tag`], 0 for an empty way.
    pub tags: [u32; CONN_WAYS],
    /// Per way: [`ConnBucket::clock`] at the way's last use.
    pub used: [u32; CONN_WAYS],
    /// Counts lookups in this bucket (the LRU clock).
    pub clock: u32,
    /// Padding, zero.
    pub _pad: u32,
    /// The flows.
    pub ways: [ConnEntry; CONN_WAYS],
}

/// Tag of a flow in its [`ConnBucket`]: its flow hash, never 0 (0 marks an empty way).
#[inline(always)]
pub const fn conn_tag(hash: u32) -> u32 {
    hash | 1
}

/// One flow of the connection table shared by all CPUs (`CONN_SHARED`), the
/// second level behind the per-CPU tables: a flow whose packets arrive on
/// another CPU than before (a moved RSS queue or IRQ, veth, a sender that
/// migrates) misses that CPU's table and finds here the backend it had,
/// instead of being hashed again on a ring that may have changed since.
///
/// Every CPU writes these entries without a lock, so a reader may see the
/// fields of two writers mixed. [`SharedConn::check`] binds the flow to the
/// backend and generation: the reader recomputes it from the fields it read
/// and drops any entry whose fields do not belong together (see
/// [`shared_conn_check`]). Direct-mapped by the flow hash; the latest flow
/// placed in a slot holds it.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SharedConn {
    /// [`shared_conn_check`] of the flow, backend id and generation; 0 when empty.
    pub check: u64,
    /// Backend id chosen for the flow.
    pub backend_id: u32,
    /// [`Backend::generation`] at the time of the choice.
    pub generation: u32,
}

/// The [`SharedConn::check`] of flow fingerprint `fp` ([`flow_hash64`] of
/// its key) placed on backend `backend_id` of generation `generation`.
///
/// The (backend, generation) pair is mixed by a multiply with an odd
/// constant, a bijection: with the flow's own fingerprint, an entry whose
/// backend or generation came from another write never checks out.
#[inline(always)]
pub const fn shared_conn_check(fp: u64, backend_id: u32, generation: u32) -> u64 {
    fp ^ pair(backend_id, generation).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Entries of the shared connection table for a capacity of `capacity`
/// flows: a power of two, at least 1, at most 2^24.
pub const fn shared_conn_entries(capacity: u32) -> u32 {
    pow2_within(capacity)
}

/// Number of [`ConnBucket`]s per CPU for a capacity of `capacity` IPv6
/// flows over `cpus` CPUs: a power of two, at least 1.
pub const fn conn_buckets(capacity: u32, cpus: u32) -> u32 {
    per_cpu_sets(capacity, cpus, CONN_WAYS as u32)
}

/// Node-wide settings: the programs' global `NODE`, whose map `lbctl`
/// names `dataplane::xdp::NODE_MAP`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LbConfig {
    /// MAC address of the interface the program runs on (source of forwarded frames).
    pub iface_mac: [u8; 6],
    /// Padding, zero.
    pub _pad: [u8; 2],
    /// Largest IP packet (L3 bytes) the egress link takes; 0 means 1500.
    pub mtu: u32,
    /// Outer IPv4 source for IPIP, network order.
    pub ipip_src_v4: [u8; 4],
    /// Outer IPv6 source for IP6IP6, network order.
    pub ipip_src_v6: [u8; 16],
    /// How many low bits of the outer source are taken from the flow hash (0: fixed source).
    pub ipip_src_flow_bits_v4: u8,
    /// Same for IPv6 (at most 32).
    pub ipip_src_flow_bits_v6: u8,
    /// [`config_flags`] bits.
    pub flags: u16,
    /// Ring stride: the space reserved per ring slot in the ring map.
    pub ring_stride: u32,
    /// IPv6 connection-table buckets per CPU minus one (a power of two minus one).
    pub conn_mask: u32,
    /// IPv4 connection-table lines per CPU minus one (a power of two minus one).
    pub conn4_mask: u32,
    /// Entries of the shared connection table minus one (a power of two minus one).
    pub conn_shared_mask: u32,
    /// ICMP errors the program may generate per second, per CPU (a token
    /// bucket's rate; user space writes [`DEFAULT_ICMP_RATE`] unless told).
    pub icmp_rate: u32,
    /// Burst of that token bucket (its size; [`DEFAULT_ICMP_BURST`] unless told).
    pub icmp_burst: u32,
}

impl LbConfig {
    /// Every field zero: the data plane's settings before user space writes
    /// them (a `const` for the programs' global).
    pub const ZERO: Self = Self {
        iface_mac: [0; 6],
        _pad: [0; 2],
        mtu: 0,
        ipip_src_v4: [0; 4],
        ipip_src_v6: [0; 16],
        ipip_src_flow_bits_v4: 0,
        ipip_src_flow_bits_v6: 0,
        flags: 0,
        ring_stride: 0,
        conn_mask: 0,
        conn4_mask: 0,
        conn_shared_mask: 0,
        icmp_rate: 0,
        icmp_burst: 0,
    };
}

/// Default [`LbConfig::icmp_rate`]: ICMP errors per second per CPU.
pub const DEFAULT_ICMP_RATE: u32 = 1000;
/// Default [`LbConfig::icmp_burst`].
pub const DEFAULT_ICMP_BURST: u32 = 50;

/// Node-wide flags ([`LbConfig::flags`]).
pub mod config_flags {
    /// Emit aya-log debug events for every VIP.
    pub const DEBUG: u16 = 1 << 0;
    /// Send every packet to a VIP through `lb`'s general path, without its
    /// IPv4 fast path for established flows (the same outcome, measurably
    /// slower): for diagnosis, and for the tests that compare the two.
    /// (IPv4 packets to an address without a VIP are still passed early.)
    pub const GENERAL_PATH_ONLY: u16 = 1 << 1;
}

/// Per-CPU packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes: the Ethernet header (with its VLAN tag) and the IP packet as
    /// received; link-layer padding is not counted.
    pub bytes: u64,
}

/// Per-CPU counter of a backend (the `BACKEND_STATS` value): the packets
/// and bytes the general path forwarded to it, and those `lb`'s fast path
/// forwarded. The backend's totals are `packets + fast_dr + fast_ipip` and
/// `bytes + fast_bytes`.
///
/// The fast path counts only in its own fields, with one map lookup: not
/// in the VIP's counter (`VIP_STATS`, which counts the general path's
/// packets) nor in the `REASONS` map. User space adds its packets
/// (`fast_dr + fast_ipip`) and `fast_bytes` to the backend's and the VIP's
/// (a backend id belongs to one VIP), and those packets to the reasons
/// they are: `ConnHit`, and `FwdDr` or `FwdIpip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendCounter {
    /// Packets the general path forwarded.
    pub packets: u64,
    /// Their bytes, as [`Counter::bytes`].
    pub bytes: u64,
    /// Bytes of the packets the fast path forwarded.
    pub fast_bytes: u64,
    /// Packets the fast path forwarded by DR.
    pub fast_dr: u64,
    /// Packets the fast path forwarded by IPIP.
    pub fast_ipip: u64,
}

/// Value of the `STATS_CARRY` array, which only user space reads and
/// writes (pinned with the other maps, so it outlives a restart): the
/// fast-path counts of backend ids that have been cleared for reuse or left
/// their VIP, so that the totals they were part of never go down.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StatsCarry {
    /// Entry of a VIP id: fast-path packets of backends that left the VIP.
    pub packets: u64,
    /// Entry of a VIP id: their bytes.
    pub bytes: u64,
    /// Entry [`STATS_CARRY_REASONS`]: fast-path DR packets of reused backend ids.
    pub fast_dr: u64,
    /// Entry [`STATS_CARRY_REASONS`]: fast-path IPIP packets of reused backend ids.
    pub fast_ipip: u64,
}

/// The `STATS_CARRY` entry of the reason counts (after one entry per VIP id).
pub const STATS_CARRY_REASONS: u32 = MAX_VIPS;

/// Why the program returned what it returned; index of the `REASONS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4/IPv6 (ARP and the like): passed.
    PassNotIp = 0,
    /// IP, but not to a VIP of this node: passed.
    PassNotVip = 1,
    /// To a VIP for which this node is not active: passed.
    PassInactive = 2,
    /// Malformed or truncated header: dropped.
    DropMalformed = 3,
    /// VIP has no backend in its table: dropped.
    DropNoBackend = 4,
    /// A fragment that cannot be hashed consistently: dropped.
    DropFragment = 5,
    /// A fragment forwarded on an address-only hash.
    FragmentForwarded = 6,
    /// Forwarded by DR (MAC rewrite).
    FwdDr = 7,
    /// Forwarded by IPIP/IP6IP6.
    FwdIpip = 8,
    /// Connection table hit.
    ConnHit = 9,
    /// Connection table miss (new flow, hashed).
    ConnMiss = 10,
    /// ICMP error for a VIP flow sent to the owning backend.
    IcmpToBackend = 11,
    /// Encapsulation would exceed the MTU: sent the client a too-big error.
    TooBigSent = 12,
    /// An ICMP/ICMPv6 message to a VIP that is not an error we route (echo etc.): passed.
    PassIcmp = 13,
    /// Head adjustment failed (no headroom): dropped.
    DropAdjust = 14,
    /// Decap program: IPIP/IP6IP6 stripped and passed.
    Decapsulated = 15,
    /// Connection-table entry pointed to a dead or recycled backend and was rehashed.
    ConnStale = 16,
    /// IPv6 with more extension headers than the program walks, to a VIP address: passed.
    PassUnsupported = 17,
    /// Too short or inconsistent to tell whether it is for a VIP: passed for the kernel to judge.
    PassMalformed = 18,
    /// Encapsulation would exceed the MTU but no too-big error could be built (IPv4 options): dropped.
    DropTooBig = 19,
    /// A new flow evicted the least recently used flow of its connection-table set
    /// (many of these: the table is too small for the flows).
    ConnEvicted = 20,
    /// Not in this CPU's connection table but in the shared one (the flow's
    /// packets came to another CPU before): kept on its backend.
    ConnShared = 21,
    /// Encapsulation would exceed the MTU, and the packet may not be answered
    /// with a too-big error: IPv4 without DF (RFC 1191), or a non-first
    /// fragment (RFC 1122 3.2.2; an IPv6 one's quote holds no L4 header
    /// either); dropped.
    DropTooBigNoDf = 22,
    /// Encapsulation would exceed the MTU, and the too-big error is over
    /// the ICMP rate limit (RFC 4443 2.4(f)); dropped.
    DropTooBigRateLimited = 23,
    /// Decap program: the outer header was marked CE (congestion) but the
    /// inner packet is not ECN-capable, so the mark cannot be passed on:
    /// dropped, as RFC 6040 section 4.2 requires.
    DropCeNotEct = 24,
}

/// Number of [`Reason`] slots.
pub const NUM_REASONS: u32 = 25;

/// The single per-CPU value of the `REASONS` map: one counter per
/// [`Reason`], by its index (one map lookup counts every reason of a packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReasonCounts(pub [u64; NUM_REASONS as usize]);

impl Default for ReasonCounts {
    fn default() -> Self {
        Self([0; NUM_REASONS as usize])
    }
}

impl Reason {
    /// All reasons, in index order.
    pub const ALL: [Reason; NUM_REASONS as usize] = [
        Reason::PassNotIp,
        Reason::PassNotVip,
        Reason::PassInactive,
        Reason::DropMalformed,
        Reason::DropNoBackend,
        Reason::DropFragment,
        Reason::FragmentForwarded,
        Reason::FwdDr,
        Reason::FwdIpip,
        Reason::ConnHit,
        Reason::ConnMiss,
        Reason::IcmpToBackend,
        Reason::TooBigSent,
        Reason::PassIcmp,
        Reason::DropAdjust,
        Reason::Decapsulated,
        Reason::ConnStale,
        Reason::PassUnsupported,
        Reason::PassMalformed,
        Reason::DropTooBig,
        Reason::ConnEvicted,
        Reason::ConnShared,
        Reason::DropTooBigNoDf,
        Reason::DropTooBigRateLimited,
        Reason::DropCeNotEct,
    ];

    /// Stable snake_case name for output.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassInactive => "pass_inactive",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropFragment => "drop_fragment",
            Reason::FragmentForwarded => "fragment_forwarded",
            Reason::FwdDr => "fwd_dr",
            Reason::FwdIpip => "fwd_ipip",
            Reason::ConnHit => "conn_hit",
            Reason::ConnMiss => "conn_miss",
            Reason::IcmpToBackend => "icmp_to_backend",
            Reason::TooBigSent => "too_big_sent",
            Reason::PassIcmp => "pass_icmp",
            Reason::DropAdjust => "drop_adjust",
            Reason::Decapsulated => "decapsulated",
            Reason::ConnStale => "conn_stale",
            Reason::PassUnsupported => "pass_unsupported",
            Reason::PassMalformed => "pass_malformed",
            Reason::DropTooBig => "drop_too_big",
            Reason::ConnEvicted => "conn_evicted",
            Reason::ConnShared => "conn_shared",
            Reason::DropTooBigNoDf => "drop_too_big_no_df",
            Reason::DropTooBigRateLimited => "drop_too_big_rate_limited",
            Reason::DropCeNotEct => "drop_ce_not_ect",
        }
    }
}

/// Key of the address maps: VIP addresses (fast "is this for us" test) and decap addresses.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AddrKey {
    /// Outer destination, network order.
    pub addr: [u8; 16],
    /// Address family.
    pub family: u8,
    /// Padding, zero.
    pub _pad: [u8; 3],
}

/// Start value of [`flow_hash`] (an arbitrary odd constant).
const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
/// Multiplier of [`flow_hash`]'s absorb step (2^64 / golden ratio, odd).
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One 64-bit absorb step: xor, then multiply by an odd constant (a
/// bijection of the state for a fixed input word).
#[inline(always)]
const fn absorb(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(HASH_MUL)
}

/// murmur3's 64-bit finaliser: every input bit affects every output bit.
#[inline(always)]
const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Two 32-bit words as one 64-bit input word.
#[inline(always)]
const fn pair(hi: u32, lo: u32) -> u64 {
    ((hi as u64) << 32) | lo as u64
}

#[inline(always)]
const fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([a[i * 4], a[i * 4 + 1], a[i * 4 + 2], a[i * 4 + 3]])
}

/// ECN codepoints (the two low bits of the IPv4 TOS / IPv6 traffic class).
pub mod ecn {
    /// Not ECN-capable transport.
    pub const NOT_ECT: u8 = 0;
    /// ECN-capable transport, codepoint 1.
    pub const ECT1: u8 = 1;
    /// ECN-capable transport, codepoint 0.
    pub const ECT0: u8 = 2;
    /// Congestion experienced.
    pub const CE: u8 = 3;
}

/// The inner packet's ECN codepoint after decapsulation (RFC 6040 section
/// 4.2, normal mode), from the arriving inner and outer codepoints; `None`:
/// drop the packet (outer CE on a not-ECN-capable inner packet, where the
/// congestion mark could only be lost).
#[inline(always)]
pub const fn decap_ecn(inner: u8, outer: u8) -> Option<u8> {
    let (inner, outer) = (inner & 3, outer & 3);
    match (inner, outer) {
        (ecn::NOT_ECT, ecn::CE) => None,
        (_, ecn::CE) => Some(ecn::CE),
        (ecn::ECT0, ecn::ECT1) => Some(ecn::ECT1),
        _ => Some(inner),
    }
}

/// The flow hash: it indexes the VIP's Maglev table (see [`ring_index`])
/// and the connection table, over a connection key whose fields the VIP
/// leaves out of its hash are zero.
///
/// 64-bit multiply-xor absorb steps over word pairs (the client's words in
/// the low halves: see `structured_flows_hash_apart`), then murmur3's 64-bit
/// finaliser: two serial multiplies per IPv4 flow before the finaliser
/// (the data plane computes this for every packet to a VIP). IPv4 keys hash
/// only the first word of each address (the rest is zero); padding never
/// enters. The data plane and user space both call this, so tests and tools
/// can predict which backend a flow gets.
#[inline(always)]
pub const fn flow_hash(t: &ConnKey) -> u32 {
    (flow_hash64(t) >> 32) as u32
}

/// The 64-bit hash of which [`flow_hash`] is the upper half: the flow's
/// fingerprint in the shared connection table (see [`SharedConn`]).
#[inline(always)]
pub const fn flow_hash64(t: &ConnKey) -> u64 {
    let mut h = absorb(HASH_SEED, pair(t.dst[0], t.src[0]));
    if t.family != FAMILY_V4 {
        h = absorb(h, pair(t.dst[1], t.src[1]));
        h = absorb(h, pair(t.dst[2], t.src[2]));
        h = absorb(h, pair(t.dst[3], t.src[3]));
    }
    let ports = ((t.sport as u32) << 16) | t.dport as u32;
    h = absorb(h, pair(((t.family as u32) << 8) | t.proto as u32, ports));
    fmix64(h)
}

/// Index of a flow in a Maglev table of `ring_size` entries: the hash scaled
/// to the table by a multiply and shift (Lemire's reduction), which is as
/// uniform as `hash % ring_size` and needs no division.
#[inline(always)]
pub const fn ring_index(hash: u32, ring_size: u32) -> u32 {
    ((hash as u64 * ring_size as u64) >> 32) as u32
}

/// Slot of an address (map layout) in the data plane's VIP pre-filter
/// array: the XOR of its four 32-bit words, folded to 16 bits. A slot in use
/// means "maybe a VIP"; collisions only cost a VIP lookup that misses.
#[inline(always)]
pub const fn vip_slot(addr: &[u8; 16]) -> u32 {
    vip_slot_words(&addr_words(addr))
}

/// [`vip_slot`] of an address in raw words (see [`ConnKey`]).
#[inline(always)]
pub const fn vip_slot_words(w: &[u32; 4]) -> u32 {
    let x = w[0] ^ w[1] ^ w[2] ^ w[3];
    (x ^ (x >> 16)) & (VIP_SLOTS - 1)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], made only of integers and byte arrays,
    // with explicit padding fields, so every bit pattern is valid and there are
    // no implicit padding bytes.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnLine4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SharedConn {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BackendCounter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StatsCarry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReasonCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AddrKey {}
}

#[cfg(test)]
mod tests {
    /// RFC 6040 section 4.2, Figure 4: every cell of the decapsulation table.
    #[test]
    fn decap_ecn_follows_rfc6040_table() {
        use super::{decap_ecn, ecn::*};
        // rows: arriving inner; columns: arriving outer Not-ECT, ECT(0), ECT(1), CE
        let table = [
            (NOT_ECT, [Some(NOT_ECT), Some(NOT_ECT), Some(NOT_ECT), None]),
            (ECT0, [Some(ECT0), Some(ECT0), Some(ECT1), Some(CE)]),
            (ECT1, [Some(ECT1), Some(ECT1), Some(ECT1), Some(CE)]),
            (CE, [Some(CE), Some(CE), Some(CE), Some(CE)]),
        ];
        for (inner, row) in table {
            for (outer, want) in [NOT_ECT, ECT0, ECT1, CE].into_iter().zip(row) {
                assert_eq!(decap_ecn(inner, outer), want, "inner {inner} outer {outer}");
                // the DSCP bits around them do not matter
                assert_eq!(decap_ecn(inner | 0xb8, outer | 0x28), want);
            }
        }
    }

    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<VipInfo>(), 16);
        assert_eq!(size_of::<VipEntry>(), 36);
        assert_eq!(size_of::<Backend>(), 32);
        assert_eq!(size_of::<ConnKey>(), 40);
        assert_eq!(size_of::<ConnEntry>(), 48);
        assert_eq!(size_of::<ConnBucket>(), 40 + 48 * CONN_WAYS);
        assert_eq!(size_of::<LbConfig>(), 60);
        assert_eq!(size_of::<SharedConn>(), 16);
        assert_eq!(size_of::<ConnLine4>(), 64);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<AddrKey>(), 20);
    }

    #[test]
    fn conn_buckets_split_capacity_over_cpus_in_powers_of_two() {
        assert_eq!(conn_buckets(262_144, 2), 32_768);
        assert_eq!(conn_buckets(262_144, 3), 32_768); // 87381 / 4 = 21846 -> 32768
        assert_eq!(conn_buckets(16, 2), 2);
        assert_eq!(conn_buckets(1, 8), 1);
        assert_eq!(conn_buckets(1024, 0), 256);
        assert_eq!(conn_buckets(u32::MAX, 1), 1 << 24);
        assert_eq!(conn4_lines(262_144, 2), 65_536); // 43691 -> 65536
        assert_eq!(conn4_lines(16, 2), 4);
    }

    #[test]
    fn shared_conn_entries_are_powers_of_two_within_bounds() {
        assert_eq!(shared_conn_entries(262_144), 262_144);
        assert_eq!(shared_conn_entries(1000), 1024);
        assert_eq!(shared_conn_entries(0), 1);
        assert_eq!(shared_conn_entries(u32::MAX), 1 << 24);
    }

    /// 10.0.0.1:40000 -> 10.0.0.100:80, TCP.
    fn tcp4_key() -> ConnKey {
        ConnKey {
            src: addr_words(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            dst: addr_words(&[10, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            sport: 40000,
            dport: 80,
            proto: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn shared_conn_check_rejects_fields_of_another_write() {
        let mut k = tcp4_key();
        let fp = flow_hash64(&k);
        assert_eq!(flow_hash(&k), (fp >> 32) as u32);
        let check = shared_conn_check(fp, 7, 3);
        // The writer's own fields check out.
        assert_eq!(check, shared_conn_check(fp, 7, 3));
        // A backend or generation torn in from another write does not.
        for (b, g) in [(8, 3), (7, 4), (6, 3), (7, 2), (0, 0), (3, 7), (7 << 16, 3)] {
            assert_ne!(check, shared_conn_check(fp, b, g), "({b}, {g})");
        }
        // Nor does another flow's check with these fields.
        k.sport += 1;
        assert_ne!(check, shared_conn_check(flow_hash64(&k), 7, 3));
        // An empty entry (all zero) checks out for no flow with a fingerprint.
        assert_ne!(shared_conn_check(fp, 0, 0), 0);
    }

    #[test]
    fn tagged_keys_of_two_vips_differ_from_each_other_and_from_untagged_keys() {
        let mut masked = tcp4_key();
        masked.sport = 0;
        masked.dport = 0;
        let (mut a, mut b) = (masked, masked);
        tag_conn_key(&mut a, 0);
        tag_conn_key(&mut b, 1);
        assert_ne!(a, b);
        assert_ne!(flow_hash64(&a), flow_hash64(&b));
        // No real port makes an untagged key equal to a tagged one.
        for dport in [0u16, 1, 80, u16::MAX] {
            let plain = ConnKey { dport, ..masked };
            assert_ne!(plain, a);
            assert_ne!(plain, b);
        }
    }

    #[test]
    fn ring_index_is_in_range_and_spreads_evenly() {
        for size in [1u32, 2, 251, 65_537] {
            assert_eq!(ring_index(0, size), 0);
            assert_eq!(ring_index(u32::MAX, size), size - 1);
        }
        // Every index of a small table gets its share of evenly spread hashes.
        let size = 251u32;
        let mut hits = std::vec![0u32; size as usize];
        let n = 251 * 1000;
        for i in 0..n {
            let h = (i as u64 * (u64::from(u32::MAX) + 1) / n as u64) as u32;
            hits[ring_index(h, size) as usize] += 1;
        }
        assert!(
            hits.iter().all(|&c| (999..=1001).contains(&c)),
            "{:?}",
            &hits[..8]
        );
    }

    #[test]
    fn conn_tag_is_never_empty() {
        assert_ne!(conn_tag(0), 0);
        assert_eq!(conn_tag(0x1234_5679), 0x1234_5679);
    }

    #[test]
    fn reason_table_is_dense_and_named_uniquely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: std::vec::Vec<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NUM_REASONS as usize);
    }

    #[test]
    fn slot_records_round_trip() {
        assert_eq!(slot_record::pack(&[]), 0);
        for n in 1..=slot_record::LANES {
            let e: std::vec::Vec<u32> = (0..n as u32).map(|i| i * 97 % 512).collect();
            let r = slot_record::pack(&e);
            assert_ne!(r & u64::from(slot_record::LANE_VALID), 0);
            assert_eq!(slot_record::lanes(r).collect::<std::vec::Vec<_>>(), e);
        }
        assert_eq!(slot_record::pack(&[1, 2, 3, 4, 5]), slot_record::FALLBACK);
        assert_eq!(slot_record::lanes(slot_record::FALLBACK).count(), 0);
        assert!(VIP_TABLE_ENTRIES - 1 <= u32::from(slot_record::LANE_INDEX));
    }

    #[test]
    fn zero_constants_are_the_defaults() {
        // The programs' global tables start as these; user space's images
        // of them start as the defaults.
        assert_eq!(Backend::ZERO, Backend::default());
        assert_eq!(VipEntry::ZERO, VipEntry::default());
        assert_eq!(LbConfig::ZERO, LbConfig::default());
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = tcp4_key();
        let h = flow_hash(&base);
        let variants = [
            ConnKey {
                sport: 40001,
                ..base
            },
            ConnKey { dport: 81, ..base },
            ConnKey { proto: 17, ..base },
            ConnKey {
                src: addr_words(&[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                ..base
            },
            ConnKey {
                dst: addr_words(&[10, 0, 0, 101, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                ..base
            },
        ];
        for v in variants {
            assert_ne!(flow_hash(&v), h, "{v:?}");
        }
    }

    /// Flows of one VIP that differ in the client address and the source
    /// port get distinct 64-bit hashes, also where consecutive values differ
    /// only in high bits (the last byte of an address, a port's low byte):
    /// client networks with consecutive ports, NAT addresses with
    /// consecutive ports, IPv6 clients in one /64. When the client's words
    /// sat in the high halves of the absorbed pairs, a multiply (which
    /// carries a difference only upward) let such differences cancel: the
    /// first two shapes hashed to an eighth and a quarter as many values.
    #[test]
    fn structured_flows_hash_apart() {
        extern crate std;
        use std::collections::HashSet;
        let v4 = |c: [u8; 4], sport: u32| ConnKey {
            src: addr_words(&[c[0], c[1], c[2], c[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            dst: addr_words(&[198, 51, 100, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            sport: (sport as u16).to_be(),
            dport: 443u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let mut v6_dst = [0u8; 16];
        v6_dst[..2].copy_from_slice(&[0x20, 0x01]);
        v6_dst[15] = 1;
        let v6 = |i: u32, sport: u32| {
            let mut src = [0u8; 16];
            src[..2].copy_from_slice(&[0x20, 0x01]);
            src[8..12].copy_from_slice(&(i >> 8).to_be_bytes());
            src[12..].copy_from_slice(&(i & 0xff).to_be_bytes());
            ConnKey {
                src: addr_words(&src),
                dst: addr_words(&v6_dst),
                sport: (sport as u16).to_be(),
                dport: 443u16.to_be(),
                proto: PROTO_TCP,
                family: FAMILY_V6,
                _pad: [0; 2],
            }
        };
        let shapes: [(&str, std::vec::Vec<ConnKey>); 3] = [
            (
                "2048 clients x 8 consecutive ports",
                (0..1u32 << 14)
                    .map(|i| v4([10, 0, (i >> 11) as u8, (i >> 3) as u8], 32768 + (i & 7)))
                    .collect(),
            ),
            (
                "4 NAT addresses x 4096 consecutive ports",
                (0..1u32 << 14)
                    .map(|i| v4([203, 0, 113, (i & 3) as u8], 1024 + (i >> 2)))
                    .collect(),
            ),
            (
                "IPv6: 2048 clients (two words vary) x 8 consecutive ports",
                (0..1u32 << 14)
                    .map(|i| v6(i >> 3, 32768 + (i & 7)))
                    .collect(),
            ),
        ];
        for (name, keys) in shapes {
            let hashes: HashSet<u64> = keys.iter().map(flow_hash64).collect();
            assert_eq!(hashes.len(), keys.len(), "{name}");
        }
    }

    /// Two nodes of a VRRP pair must place a flow alike, across versions
    /// too: a change here moves established flows on failover.
    #[test]
    fn flow_placement_is_stable() {
        let k = ConnKey {
            src: addr_words(&[192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            dst: addr_words(&[198, 51, 100, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            sport: 40000u16.to_be(),
            dport: 443u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let h = flow_hash(&k);
        assert_eq!(h, GOLDEN_HASH);
        assert_eq!(ring_index(h, DEFAULT_RING_SIZE), GOLDEN_INDEX);
    }
    const GOLDEN_HASH: u32 = 0xe1fc_b1c8;
    const GOLDEN_INDEX: u32 = 57_853;
}
