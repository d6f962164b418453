//! lbctl's XDP data plane.
//!
//! Programs in this object:
//! - `lb`: the load balancer. Packets to a VIP of this node are sent to a
//!   backend chosen by the connection table or the VIP's Maglev ring, by DR
//!   (MAC rewrite) or IPIP/IP6IP6 encapsulation, out of the same interface
//!   (XDP_TX). Everything else passes to the kernel byte for byte unchanged.
//!   Established IPv4 flows take a fast path (`fast`) to the same outcome.
//! - `lb_rare`: tail-called by `lb` (slot [`tail::RARE`] of [`LB_TAILS`])
//!   for an ICMP error about a VIP flow or a fragment to a VIP: the same
//!   code, verified apart so neither program nears the verifier's limit.
//! - `lb_too_big`: tail-called by `lb` or `lb_rare` (slot [`tail::TOO_BIG`] of
//!   [`LB_TAILS`]) for a packet too big to encapsulate: answers the client
//!   with fragmentation-needed / packet-too-big, or drops it. A program of
//!   its own so the verifier checks it once, from one state, not once per
//!   forwarding path that reaches it.
//! - `decap`: for real servers: strips IPIP/IP6IP6 addressed to the host and
//!   passes the inner packet to the kernel.
//! - `pass`: returns XDP_PASS (veth peers need an XDP program for XDP_TX
//!   frames to arrive; see shared/docs/netns-testing.md).
//! - `reflect`: a bare MAC-swap XDP_TX program, the benchmark's baseline.
//!
//! Packet access: every read or write is preceded by a bounds check against
//! `data_end` that the verifier can see; offsets are kept in small, known
//! ranges (VLAN: 14 or 18, IPv4 header: 20..=60).
#![no_std]
#![no_main]

mod fast;
mod parse;
mod pkt;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{
        bpf_csum_diff, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_adjust_head,
        bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use lb_common::{
    AddrKey, Backend, BackendCounter, CONN_WAYS, CONN4_WAYS, ConnBucket, ConnKey, ConnLine4,
    Counter, FAMILY_V4, FAMILY_V6, LbConfig, MAX_BACKENDS, MAX_VIPS, NO_BACKEND, Reason,
    ReasonCounts, SharedConn, VIP_TABLE_ENTRIES, VLAN_UNTAGGED, VipEntry, VipInfo, VipKey,
    backend_flags, config_flags, conn_tag, conn4_ports, flow_hash, flow_hash64, ring_index,
    shared_conn_check, slot_record, tag_conn_key, tail, vip_flags,
};
use parse::{ETH_P_IPV4, ETH_P_IPV6, ETH_P_VLAN, Parsed};
use pkt::{copy_mac, fold, ld16, ld32, st_mac, st16, st32, sum16, word4, words16};

// `words16` / `word4` read these map-value fields as whole words.
const _: () = {
    use core::mem::{align_of, offset_of};
    assert!(align_of::<Backend>() >= 4 && offset_of!(Backend, addr) % 4 == 0);
    assert!(align_of::<LbConfig>() >= 4);
    // `st_mac` reads these as 16-bit words.
    assert!(offset_of!(Backend, mac) % 2 == 0 && offset_of!(LbConfig, iface_mac) % 2 == 0);
    assert!(offset_of!(LbConfig, ipip_src_v4) % 4 == 0);
    assert!(offset_of!(LbConfig, ipip_src_v6) % 4 == 0);
    assert!(align_of::<VipKey>() >= 4 && offset_of!(VipKey, addr) % 4 == 0);
    assert!(offset_of!(VipKey, port) == 16 && core::mem::size_of::<VipKey>() == 20);
    // ConnLine4 keeps backend ids in 16 bits.
    assert!(MAX_BACKENDS <= 1 << 16 && MAX_BACKENDS.is_power_of_two());
    // A lane's index always names a `VIP_TABLE` entry.
    assert!(slot_record::LANE_INDEX as u32 + 1 == VIP_TABLE_ENTRIES);
};

const BPF_F_MMAPABLE: u32 = 1 << 10;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const OUTER_TTL: u8 = 64;

/// VIPs by (address, port, protocol): the lookup for address slots in
/// [`slot_record::FALLBACK`] (more VIPs than a record holds).
#[map]
static VIPS: HashMap<VipKey, VipInfo> = HashMap::with_max_entries(MAX_VIPS, 0);
/// (address, protocol) pairs that have at least one VIP, as [`VipKey`]s
/// with port 0 (value unused): what a fragment that no VIP can place is
/// checked against, to tell a fragment to a VIP (dropped) from one to
/// another address or protocol (passed). Only fragments look here.
#[map]
static VIP_PROTOS: HashMap<VipKey, u32> = HashMap::with_max_entries(MAX_VIPS, 0);
/// VIP address slots: entry [`lb_common::vip_slot`] is the [`slot_record`] of
/// the VIPs whose address folds to it. An array lookup (inlined by the
/// verifier) turns away most non-VIP traffic without hashing a key, and names
/// the [`VIP_TABLE`] entries of the others. Mmapable: user space replaces a
/// record with one aligned 8-byte store, read here with one 8-byte load.
#[map]
static VIP_ADDR_SLOTS: Array<u64> = Array::with_max_entries(lb_common::VIP_SLOTS, BPF_F_MMAPABLE);
/// Scratch space for a `VIPS` lookup: the key, and the value copied out
/// (the stack is full, and a hash value may be recycled while it is read).
#[map]
static VIP_SCRATCH: PerCpuArray<VipEntry> = PerCpuArray::with_max_entries(1, 0);
/// VIP keys and values by entry index (`2 * vip_id + copy`), see
/// [`VipEntry`]: global data (`.bss.vip_table`), read as [`BACKENDS`] is.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.vip_table")]
static mut VIP_TABLE: [VipEntry; VIP_TABLE_ENTRIES as usize] =
    [VipEntry::ZERO; VIP_TABLE_ENTRIES as usize];
/// Maglev rings: VIP `v`, slot `s` occupies `[(2v+s)*stride, (2v+s)*stride + ring_size)`.
/// Sized by user space at load time; mmapable so a table is written with memcpy.
#[map]
static RINGS: Array<u32> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// Backends by id: global data (one map value, `.bss.backends`, which user
/// space writes whole), so reading an entry is a load at the table's
/// constant address plus the index. A map lookup would be a call to the
/// compiler, which then keeps the packet's state in r6-r9 or spills it to
/// the stack. The symbol is global: the loader finds it by this name when a
/// restart keeps the table (`override_global`).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.backends")]
static mut BACKENDS: [Backend; MAX_BACKENDS as usize] = [Backend::ZERO; MAX_BACKENDS as usize];
/// IPv6 connection table: per CPU, `LbConfig::conn_mask + 1` set-associative
/// buckets (see [`ConnBucket`]); sized by user space at load time.
#[map]
static CONNS: PerCpuArray<ConnBucket> = PerCpuArray::with_max_entries(1, 0);
/// IPv4 connection table: one-cache-line sets (see [`ConnLine4`]), CPU `c`
/// owning lines `c * (conn4_mask + 1) ..`; mmapable so the values start
/// page-aligned and every line is one cache line. Sized by user space.
#[map]
static CONNS4: Array<ConnLine4> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// The connection table shared by all CPUs, behind the per-CPU ones: a flow
/// that misses this CPU's table is looked up here before it is hashed on the
/// ring (see [`SharedConn`]). `LbConfig::conn_shared_mask + 1` entries, sized
/// by user space.
#[map]
static CONN_SHARED: Array<SharedConn> = Array::with_max_entries(1, 0);
/// This CPU's token bucket for the ICMP errors the program sends.
#[map]
static ICMP_LIMIT: PerCpuArray<IcmpBucket> = PerCpuArray::with_max_entries(1, 0);
/// Node settings, as global data: the `.data.node` section, which the
/// loader makes an array map of one entry and whose address the programs
/// load as a constant, so reading them takes no map lookup (a lookup is a
/// call to the compiler, which then keeps less in registers). User space
/// writes the value on every change with one map update, a plain copy that
/// a packet on another CPU may see half done (as with the `CONFIG` map that
/// held them before), and pins the map with the others. `no_mangle` keeps
/// the symbol global: the loader finds it by this name
/// (`override_global`), and an internal one would let LLVM, seeing no
/// store, fold every read to `LbConfig::ZERO`.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.node")]
static mut NODE: LbConfig = LbConfig::ZERO;

/// The node settings.
#[inline(always)]
fn node() -> &'static LbConfig {
    // SAFETY: a global the programs never write; user space updates it as
    // described above (the reads this reference makes are plain loads).
    unsafe { &*core::ptr::addr_of!(NODE) }
}
/// Per-VIP packets and bytes of the general path (the fast path counts
/// per backend only: see [`BackendCounter`]).
#[map]
static VIP_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_VIPS, 0);
/// Per-backend packets and bytes.
#[map]
static BACKEND_STATS: PerCpuArray<BackendCounter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
/// Only user space reads and writes it (see [`lb_common::StatsCarry`]); it
/// is part of the object so that it is created and pinned with the others.
#[map]
static STATS_CARRY: Array<lb_common::StatsCarry> =
    Array::with_max_entries(lb_common::STATS_CARRY_REASONS + 1, 0);
/// One counter per [`Reason`].
#[map]
static REASONS: PerCpuArray<ReasonCounts> = PerCpuArray::with_max_entries(1, 0);
/// Programs `lb` tail-calls, by [`tail`] slot; filled by user space.
#[map]
static LB_TAILS: ProgramArray = ProgramArray::with_max_entries(tail::SLOTS, 0);
/// What `lb` hands the program it tail-calls (per CPU: the tail call runs on
/// the same CPU, in the same run): for [`tail::TOO_BIG`], the
/// [`Handover::too_big`] overhead.
#[map]
static TAIL_ARG: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
/// Tunnel endpoints the decap program accepts.
#[map]
static DECAP_ADDRS: HashMap<AddrKey, u32> = HashMap::with_max_entries(64, 0);

/// This CPU's reason counters.
#[inline(always)]
fn reason_counts() -> Option<&'static mut ReasonCounts> {
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    REASONS.get_ptr_mut(0).map(|c| unsafe { &mut *c })
}

#[inline(always)]
fn bump(c: &mut ReasonCounts, reason: Reason) {
    if let Some(n) = c.0.get_mut(reason as usize) {
        *n += 1;
    }
}

#[inline(always)]
fn count(reason: Reason) {
    if let Some(c) = reason_counts() {
        bump(c, reason);
    }
}

/// What `lb` carries from the forwarding paths to its end besides the
/// verdict: only this. A value set on one path and read at the end is a
/// constant the verifier keeps apart in every state between the two, so the
/// connection table's outcome is counted where it is decided, not carried
/// (carried, it took `lb` from 278k to 602k verified instructions on 6.18,
/// and from 562k to 863k on Debian 12's 6.1, of the 1M allowed).
#[derive(Clone, Copy)]
struct Handover {
    /// Nonzero: encapsulation would exceed the MTU; the length of the outer
    /// header that did not fit (20 or 40), which `lb_too_big` takes off the
    /// MTU it announces. Only this, a constant on each path: anything that
    /// varies more here (the MTU, the fragment state) multiplies the states
    /// the verifier must tell apart; `lb_too_big` reads the rest.
    too_big: u32,
}

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, idx: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU value owned by this CPU for the program's run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// This CPU's counter of backend `id`, for the fast path's own fields.
#[inline(always)]
fn backend_counter(id: u32) -> Option<*mut BackendCounter> {
    BACKEND_STATS.get_ptr_mut(id)
}

/// Counts a packet of `bytes` to backend `id` (the general path); this
/// CPU's counter of it.
#[inline(always)]
fn add_backend(id: u32, bytes: u64) -> Option<*mut BackendCounter> {
    let c = backend_counter(id)?;
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    unsafe {
        (*c).packets += 1;
        (*c).bytes += bytes;
    }
    Some(c)
}

/// Frame length (the verifier forbids `data_end - data`).
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    // SAFETY: helper call on the program's own context.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) }
}

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    // Established IPv4 flows first (see `fast`); everything else, and
    // anything it declines, takes the general path.
    if let Some(action) = fast::forward(&ctx) {
        return action;
    }
    run::<false>(&ctx)
}

/// Tail-called by `lb` for the packets to a VIP that few flows send: ICMP
/// errors about a VIP flow and IP fragments. The same code as `lb`, but
/// verified apart: in `lb`, their paths through the forwarding code
/// multiplied the states the verifier must tell apart. Split off, `lb`
/// verifies in 199k instructions instead of 562k on Debian 12's 6.1 (of
/// the 1M allowed), and `lb_rare` in 402k; on 6.18, 112k and 182k instead
/// of 278k (counts with backend VLANs). A packet `lb` hands over costs a
/// tail call and a second parse.
#[xdp]
pub fn lb_rare(ctx: XdpContext) -> u32 {
    run::<true>(&ctx)
}

/// `lb` (`RARE` false) or `lb_rare` (`RARE` true): balance the packet, hand
/// one too big to encapsulate to `lb_too_big`, count the verdict.
#[inline(always)]
fn run<const RARE: bool>(ctx: &XdpContext) -> u32 {
    let mut handover = Handover { too_big: 0 };
    let (action, reason) = balance::<RARE>(ctx, &mut handover);
    // `lb_too_big` answers (or drops) and counts the packet itself (the
    // connection outcome is already counted). A program of its own, verified
    // once, not once for each verifier state of the forwarding paths that
    // reaches this point (inlined here, it took about 120k of the 1M
    // instructions the verifier allows, and more with IPv6 first fragments
    // answered, which 6.1's verifier then refused).
    if handover.too_big != 0
        && let Some(arg) = TAIL_ARG.get_ptr_mut(0)
    {
        // SAFETY: per-CPU value owned by this CPU for the program's run,
        // which the tail call continues.
        unsafe { *arg = handover.too_big };
        // SAFETY: a tail call with the program's own context; it returns
        // only when slot TOO_BIG is empty (the packet is then dropped as
        // `encap` said).
        unsafe { LB_TAILS.tail_call(ctx, tail::TOO_BIG) };
    }
    count(reason);
    action
}

/// Tail-called by `lb` for a packet too big to encapsulate (see [`too_big`]).
#[xdp]
pub fn lb_too_big(ctx: XdpContext) -> u32 {
    let (action, reason) = answer_too_big(&ctx);
    count(reason);
    action
}

/// `lb_too_big`'s work: the MTU to announce (the node's, less the overhead
/// `lb` handed over) and the fragment state, read again, then [`too_big`].
#[inline(always)]
fn answer_too_big(ctx: &XdpContext) -> (u32, Reason) {
    let overhead = match TAIL_ARG.get_ptr_mut(0) {
        // SAFETY: per-CPU value owned by this CPU for the program's run;
        // taken, so a request is answered once.
        Some(arg) => unsafe { core::mem::replace(&mut *arg, 0) },
        None => 0,
    };
    // Zero: not reached from `lb`, which hands over a nonzero overhead.
    // A parse error cannot happen on the packet `lb` just parsed.
    let Ok(p) = parse::parse(ctx) else {
        return (XDP_DROP, Reason::DropTooBig);
    };
    let cfg = node();
    let mtu = link_mtu(cfg);
    if overhead == 0 || mtu <= overhead {
        return (XDP_DROP, Reason::DropTooBig);
    }
    too_big(ctx, cfg, mtu - overhead, p.fragment == parse::FRAG_LATER)
}

#[xdp]
pub fn pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[xdp]
pub fn reflect(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + 12 > ctx.data_end() {
        return XDP_DROP;
    }
    // SAFETY: 12 bytes checked; the packet starts 2-aligned.
    unsafe {
        let (d0, d1, d2) = (ld16(data), ld16(data + 2), ld16(data + 4));
        copy_mac(data, data + 6);
        st16(data + 6, d0);
        st16(data + 8, d1);
        st16(data + 10, d2);
    }
    XDP_TX
}

#[inline(always)]
fn balance<const RARE: bool>(ctx: &XdpContext, handover: &mut Handover) -> (u32, Reason) {
    let mut p = match parse::parse(ctx) {
        Ok(p) => p,
        Err(r) => return (r.action(), r.reason()),
    };
    // Whether the packet is `lb_rare`'s depends on its bytes alone, so
    // `lb_rare` parses it the same way.
    let rare = p.icmp_error || p.fragment != parse::FRAG_NONE;
    if rare != RARE {
        if RARE {
            // Not reached: `lb` keeps such packets.
            return (XDP_PASS, Reason::PassUnsupported);
        }
        // SAFETY: a tail call with the program's own context, before
        // anything is counted; it returns only when slot RARE is empty.
        unsafe { LB_TAILS.tail_call(ctx, tail::RARE) };
        return if p.icmp_error {
            (XDP_PASS, Reason::PassIcmp)
        } else {
            (XDP_DROP, Reason::DropFragment)
        };
    }
    let Some(vip) = p.vip else {
        return (XDP_PASS, Reason::PassNotVip);
    };
    if vip.flags & vip_flags::ACTIVE == 0 {
        return (XDP_PASS, Reason::PassInactive);
    }
    let cfg = node();
    // What the counters count as bytes: L2 header and the IP packet (no
    // helper call for the buffer length; link padding is not counted).
    let frame_len = p.l3_off as u64 + p.ip_len as u64;
    add(&VIP_STATS, vip.vip_id, frame_len);
    // Bytes after the IP packet are not part of it: cut them before the
    // frame is forwarded (encapsulated, they would be carried and could
    // push it past the MTU), unless they can be the link padding of a
    // minimum-size frame: no helper call for the common small packet, and
    // a cut frame keeps that minimum (not every driver pads what XDP_TX sends).
    // One packet compare (against max(frame_len, MIN_FRAME), branch-free);
    // here, where few verifier states meet and no packet pointer is live.
    let limit = frame_limit(frame_len);
    if ctx.data() + limit < ctx.data_end() && !trim_to(ctx, limit as u32) {
        return (XDP_DROP, Reason::DropAdjust);
    }

    let masks =
        vip_flags::HASH_NO_SRC_ADDR | vip_flags::HASH_NO_SRC_PORT | vip_flags::HASH_NO_DST_PORT;
    let hash = if vip.flags & masks == 0 {
        p.hash
    } else {
        mask_key(&mut p.key, vip.flags);
        let h = flow_hash(&p.key);
        if vip.flags & vip_flags::HASH_NO_DST_PORT != 0 {
            // The masked key no longer names the VIP: make it this VIP's own.
            tag_conn_key(&mut p.key, vip.vip_id);
        }
        h
    };
    let (backend_id, backend) = match choose_backend(&p.key, hash, vip, cfg) {
        Some(b) => b,
        None => return (XDP_DROP, Reason::DropNoBackend),
    };
    if vip.flags & vip_flags::DEBUG != 0 || cfg.flags & config_flags::DEBUG != 0 {
        debug!(ctx, "vip {} -> backend {}", vip.vip_id, backend_id);
    }

    let (action, reason) = if vip.flags & vip_flags::FWD_IPIP != 0 {
        encap(ctx, &p, backend, cfg, hash, handover)
    } else {
        dr(ctx, &p, backend, cfg)
    };
    // A packet too big to encapsulate is not backend traffic (it is
    // answered or dropped by `lb`, and counted as that even for a fragment).
    if action == XDP_TX {
        add_backend(backend_id, frame_len);
        if p.icmp_error {
            return (action, Reason::IcmpToBackend);
        }
        if p.fragment != parse::FRAG_NONE {
            return (action, Reason::FragmentForwarded);
        }
    }
    (action, reason)
}

/// Zeroes the fields the VIP leaves out of its hash.
#[inline(always)]
fn mask_key(k: &mut ConnKey, flags: u32) {
    if flags & vip_flags::HASH_NO_SRC_ADDR != 0 {
        k.src = [0; 4];
    }
    if flags & vip_flags::HASH_NO_SRC_PORT != 0 {
        k.sport = 0;
    }
    if flags & vip_flags::HASH_NO_DST_PORT != 0 {
        k.dport = 0;
    }
}

#[inline(always)]
fn live_backend(id: u32) -> Option<&'static Backend> {
    // Ids in the rings and connection tables are below MAX_BACKENDS (a
    // power of two, asserted above): the mask changes none of them, and is
    // the bound the verifier can follow (LLVM rewrites an `id < MAX` test
    // into arithmetic on a copy, which leaves the index unbounded).
    let i = (id & (MAX_BACKENDS - 1)) as usize;
    // SAFETY: `i` is within the table; the programs never write it, and
    // user space's whole-table writes store each unchanged entry's own bytes.
    let b = unsafe { &*core::ptr::addr_of!(BACKENDS).cast::<Backend>().add(i) };
    if b.flags & backend_flags::ALIVE == 0 {
        return None;
    }
    Some(b)
}

/// Whether a connection-table entry's key is the flow `k` (IPv6 buckets use
/// it; IPv4 keys would compare only the first word of each address, the
/// rest being zero in both). The first words are compared first: that
/// early exit measured 2-3 ns cheaper than comparing whole arrays.
#[inline(always)]
fn same_flow(e: &ConnKey, k: &ConnKey) -> bool {
    if e.src[0] != k.src[0]
        || e.dst[0] != k.dst[0]
        || e.sport != k.sport
        || e.dport != k.dport
        || e.proto != k.proto
        || e.family != k.family
    {
        return false;
    }
    if k.family == FAMILY_V4 {
        return true;
    }
    e.src[1] == k.src[1]
        && e.src[2] == k.src[2]
        && e.src[3] == k.src[3]
        && e.dst[1] == k.dst[1]
        && e.dst[2] == k.dst[2]
        && e.dst[3] == k.dst[3]
}

/// The way a new flow takes in a set of `WAYS`: an empty one, else the
/// least recently used (the largest `age`, measured on the set's clock).
#[inline(always)]
fn victim_way<const WAYS: usize>(
    empty: impl Fn(usize) -> bool,
    age: impl Fn(usize) -> u32,
) -> usize {
    let mut best = 0;
    let mut best_age = 0;
    let mut i = 0;
    while i < WAYS {
        if empty(i) {
            return i;
        }
        let a = age(i);
        if a >= best_age {
            best_age = a;
            best = i;
        }
        i += 1;
    }
    best
}

/// Where a flow placed by the Maglev ring is recorded.
#[derive(Clone, Copy)]
enum Fill {
    /// Nowhere (the VIP does without the table, or no set was found).
    None,
    /// A way of an IPv4 line, and whether filling it evicts another flow.
    V4(*mut ConnLine4, usize, bool),
    /// A way of an IPv6 bucket, and whether filling it evicts another flow.
    V6(*mut ConnBucket, usize, bool),
}

/// What a connection-table lookup found (a hit is counted by the lookup).
enum Lookup {
    /// The flow's live backend.
    Hit(u32, &'static Backend),
    /// Not there (`ConnMiss`) or its backend gone (`ConnStale`): place the
    /// flow, then record it here. Counted once the shared table has been asked.
    Place(Fill, Reason),
}

/// This CPU's line of the IPv4 connection table for `hash`.
#[inline(always)]
fn line4(hash: u32, cfg: &LbConfig) -> Option<*mut ConnLine4> {
    // SAFETY: a helper without arguments (inlined by the verifier).
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let lines = cfg.conn4_mask.wrapping_add(1);
    CONNS4.get_ptr_mut(cpu.wrapping_mul(lines).wrapping_add(hash & cfg.conn4_mask))
}

/// The way of line `l` that holds the IPv4 flow (`ports` as
/// [`conn4_ports`]), or [`CONN4_WAYS`].
#[inline(always)]
fn find_way4(l: &ConnLine4, proto: u8, src: u32, dst: u32, ports: u32) -> usize {
    let mut i = 0;
    while i < CONN4_WAYS {
        if l.proto[i] == proto && l.src[i] == src && l.dst[i] == dst && l.ports[i] == ports {
            return i;
        }
        i += 1;
    }
    CONN4_WAYS
}

/// The IPv4 table: this CPU's line for `hash`, then the flow in it.
#[inline(always)]
fn lookup4(key: &ConnKey, hash: u32, cfg: &LbConfig) -> Lookup {
    let Some(lp) = line4(hash, cfg) else {
        return Lookup::Place(Fill::None, Reason::ConnMiss);
    };
    // SAFETY: this CPU's region of the array; no other CPU writes it and the
    // program is not re-entered on this CPU during the run.
    let l = unsafe { &mut *lp };
    let clock = l.clock.wrapping_add(1);
    l.clock = clock;
    let way = find_way4(l, key.proto, key.src[0], key.dst[0], conn4_ports(key));
    if way < CONN4_WAYS {
        let id = l.backend[way] as u32;
        if let Some(be) = live_backend(id)
            && be.generation as u16 == l.generation[way]
        {
            l.used[way] = clock;
            count(Reason::ConnHit);
            return Lookup::Hit(id, be);
        }
        return Lookup::Place(Fill::V4(lp, way, false), Reason::ConnStale);
    }
    let victim = victim_way::<CONN4_WAYS>(
        |i| l.proto[i] == 0,
        |i| clock.wrapping_sub(l.used[i]) as u32,
    );
    let evicts = victim < CONN4_WAYS && l.proto[victim] != 0;
    Lookup::Place(Fill::V4(lp, victim, evicts), Reason::ConnMiss)
}

/// The IPv6 table: this CPU's bucket for `hash`, then the flow in it.
#[inline(always)]
fn lookup6(key: &ConnKey, hash: u32, cfg: &LbConfig) -> Lookup {
    let Some(bp) = CONNS.get_ptr_mut(hash & cfg.conn_mask) else {
        return Lookup::Place(Fill::None, Reason::ConnMiss);
    };
    // SAFETY: this CPU's bucket; nothing else writes it during the run.
    let b = unsafe { &mut *bp };
    let clock = b.clock.wrapping_add(1);
    b.clock = clock;
    let tag = conn_tag(hash);
    let mut way = CONN_WAYS;
    let mut i = 0;
    while i < CONN_WAYS {
        if b.tags[i] == tag && same_flow(&b.ways[i].key, key) {
            way = i;
            break;
        }
        i += 1;
    }
    if way < CONN_WAYS {
        let (id, generation) = (b.ways[way].backend_id, b.ways[way].generation);
        if let Some(be) = live_backend(id)
            && be.generation == generation
        {
            b.used[way] = clock;
            count(Reason::ConnHit);
            return Lookup::Hit(id, be);
        }
        return Lookup::Place(Fill::V6(bp, way, false), Reason::ConnStale);
    }
    let fill = victim_way::<CONN_WAYS>(|i| b.tags[i] == 0, |i| clock.wrapping_sub(b.used[i]));
    let evicts = b.tags[fill & (CONN_WAYS - 1)] != 0;
    Lookup::Place(Fill::V6(bp, fill, evicts), Reason::ConnMiss)
}

/// Records a flow placed by the ring where the lookup said; an eviction
/// counts only here, when a flow is actually placed over another.
#[inline(always)]
fn record(fill: Fill, key: &ConnKey, hash: u32, id: u32, be: &Backend) {
    match fill {
        Fill::None => {}
        Fill::V4(lp, way, evicts) => {
            // SAFETY: as in `lookup4`.
            let l = unsafe { &mut *lp };
            // A bound the verifier can see (it does not track `%`).
            if way >= CONN4_WAYS {
                return;
            }
            if evicts {
                count(Reason::ConnEvicted);
            }
            let w = way;
            l.src[w] = key.src[0];
            l.dst[w] = key.dst[0];
            l.ports[w] = conn4_ports(key);
            l.proto[w] = key.proto;
            l.backend[w] = id as u16;
            l.generation[w] = be.generation as u16;
            l.used[w] = l.clock;
        }
        Fill::V6(bp, way, evicts) => {
            if evicts {
                count(Reason::ConnEvicted);
            }
            // SAFETY: as in `lookup6`.
            let b = unsafe { &mut *bp };
            let w = way & (CONN_WAYS - 1);
            b.ways[w].key = *key;
            b.ways[w].backend_id = id;
            b.ways[w].generation = be.generation;
            b.tags[w] = conn_tag(hash);
            b.used[w] = b.clock;
        }
    }
}

/// This CPU's connection table first, then the shared one, then the VIP's
/// live Maglev ring; a flow placed by the ring is recorded in both tables,
/// one found in the shared table in this CPU's.
#[inline(always)]
fn choose_backend(
    key: &ConnKey,
    hash: u32,
    vip: &VipInfo,
    cfg: &LbConfig,
) -> Option<(u32, &'static Backend)> {
    let (fill, outcome) = if vip.flags & vip_flags::NO_CONN_TABLE != 0 {
        (Fill::None, None)
    } else {
        let found = if key.family == FAMILY_V4 {
            lookup4(key, hash, cfg)
        } else {
            lookup6(key, hash, cfg)
        };
        match found {
            Lookup::Hit(id, be) => return Some((id, be)),
            Lookup::Place(fill, outcome) => (fill, Some(outcome)),
        }
    };
    // Not in this CPU's table: another CPU may have placed the flow.
    let shared = match fill {
        Fill::None => None,
        _ => CONN_SHARED
            .get_ptr_mut(hash & cfg.conn_shared_mask)
            .map(|sp| (sp, flow_hash64(key))),
    };
    if let Some((sp, fp)) = shared
        && let Some((id, be)) = shared_lookup(sp, fp)
    {
        count(Reason::ConnShared);
        record(fill, key, hash, id, be);
        return Some((id, be));
    }
    if let Some(r) = outcome {
        count(r);
    }
    let ring_size = vip.ring_size;
    if ring_size == 0 {
        return None;
    }
    let idx = (vip.vip_id * 2 + (vip.slot & 1)) * cfg.ring_stride + ring_index(hash, ring_size);
    let id = *RINGS.get(idx)?;
    if id == NO_BACKEND {
        return None;
    }
    let be = live_backend(id)?;
    record(fill, key, hash, id, be);
    if let Some((sp, fp)) = shared {
        let entry = SharedConn {
            check: shared_conn_check(fp, id, be.generation),
            backend_id: id,
            generation: be.generation,
        };
        // SAFETY: an entry of the shared array; other CPUs may write it at
        // the same time, which `check` lets readers detect.
        unsafe { core::ptr::write_volatile(sp, entry) };
    }
    Some((id, be))
}

/// The flow with fingerprint `fp` in a shared-table entry: its backend, if
/// the entry is the flow's, its fields belong together (not torn by
/// concurrent writers) and the backend is still the one chosen.
#[inline(always)]
fn shared_lookup(sp: *mut SharedConn, fp: u64) -> Option<(u32, &'static Backend)> {
    // SAFETY: an entry of the shared array, read once into a copy (other
    // CPUs may be writing it; the check below rejects a torn copy).
    let e = unsafe { core::ptr::read_volatile(sp) };
    if e.check != shared_conn_check(fp, e.backend_id, e.generation) {
        return None;
    }
    let be = live_backend(e.backend_id)?;
    if be.generation != e.generation {
        return None;
    }
    Some((e.backend_id, be))
}

/// DR: the frame goes to the backend's MAC unchanged above L2, on the
/// backend's VLAN (see [`egress_vlan`]): a tag is rewritten in place, added
/// (the head grows by 4) or removed (it shrinks by 4).
#[inline(always)]
fn dr(ctx: &XdpContext, p: &Parsed, b: &Backend, cfg: &LbConfig) -> (u32, Reason) {
    let tagged_in = p.l3_off == 18;
    let (tagged_out, tci) = egress_vlan(p, b);
    if tagged_in != tagged_out {
        let delta = if tagged_out { -4 } else { 4 };
        // SAFETY: helper call on the program's own context.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
            return (XDP_DROP, Reason::DropAdjust);
        }
    }
    let data = ctx.data();
    if data + 18 > ctx.data_end() {
        return (XDP_DROP, Reason::DropMalformed);
    }
    // SAFETY: 18 bytes checked; the MACs are map-value fields at even
    // offsets, as `st_mac` needs. The EtherType is already in place: at 12
    // (untagged out), or at 16 after a tag, where growing the head by 4 or
    // an existing tag left it.
    unsafe {
        st_mac(data, &b.mac);
        st_mac(data + 6, &cfg.iface_mac);
        if tagged_out {
            st16(data + 12, ETH_P_VLAN.to_be());
            st16(data + 14, tci.to_be());
        }
    }
    (XDP_TX, Reason::FwdDr)
}

/// The tag a frame to backend `b` leaves with: whether it has one, and its
/// TCI (the backend's VLAN ID, with the priority and DEI bits the frame came
/// with; none when it came untagged).
#[inline(always)]
fn egress_vlan(p: &Parsed, b: &Backend) -> (bool, u16) {
    let vid = b.vlan & 0x0fff;
    (vid != VLAN_UNTAGGED, (p.vlan_tci & 0xf000) | vid)
}

/// Outer IPv4 source, raw (wire bytes in memory order).
#[inline(always)]
fn outer_src_v4(cfg: &LbConfig, hash: u32) -> u32 {
    // SAFETY: a 4-aligned field (asserted above).
    let raw = unsafe { word4(&cfg.ipip_src_v4) };
    let bits = cfg.ipip_src_flow_bits_v4 as u32;
    if bits == 0 || bits > 16 {
        return raw;
    }
    let mask = (1u32 << bits) - 1;
    let base = u32::from_be(raw);
    ((base & !mask) | (hash & mask)).to_be()
}

/// Low 32 bits of the outer IPv6 source, raw.
#[inline(always)]
fn outer_src_v6_low(cfg: &LbConfig, hash: u32) -> u32 {
    // SAFETY: a 4-aligned field (asserted above).
    let raw = unsafe { words16(&cfg.ipip_src_v6) }[3];
    let bits = cfg.ipip_src_flow_bits_v6 as u32;
    if bits == 0 || bits > 32 {
        return raw;
    }
    let mask = if bits == 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    let base = u32::from_be(raw);
    ((base & !mask) | (hash & mask)).to_be()
}

/// IPIP / IP6IP6 (and 4-in-6, 6-in-4): grow the head, write L2 (on the
/// backend's VLAN, see [`egress_vlan`]) and the outer header.
#[inline(always)]
fn encap(
    ctx: &XdpContext,
    p: &Parsed,
    b: &Backend,
    cfg: &LbConfig,
    hash: u32,
    handover: &mut Handover,
) -> (u32, Reason) {
    let outer_v4 = b.family == FAMILY_V4;
    let overhead: u32 = if outer_v4 { 20 } else { 40 };
    let mtu = link_mtu(cfg);
    let inner_len = p.ip_len;
    if inner_len + overhead > mtu {
        if p.icmp_error {
            // Never answer an error with an error (RFC 1122 3.2.2, RFC 4443 2.4).
            return (XDP_DROP, Reason::DropTooBig);
        }
        // Answered (or not) by `lb_too_big`, after `lb` has counted.
        handover.too_big = overhead;
        return (XDP_DROP, Reason::DropTooBig);
    }
    // The new L2 header may be 4 bytes longer or shorter than the old one
    // (a tag added or removed): the inner packet stays where it is.
    let tagged_in = p.l3_off == 18;
    let (vlan, vlan_tci) = egress_vlan(p, b);
    let grow = overhead as i32 + 4 * (vlan as i32 - tagged_in as i32);
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return (XDP_DROP, Reason::DropAdjust);
    }
    let data = ctx.data();
    let end = ctx.data_end();
    let inner_proto = if p.key.family == FAMILY_V4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    let ip = if vlan { data + 18 } else { data + 14 };
    if outer_v4 {
        if data + 18 > end || ip + 20 > end {
            return (XDP_DROP, Reason::DropAdjust);
        }
        // SAFETY: 18 bytes at `data` and 20 at `ip` checked above; the MACs
        // are map-value fields at even offsets, as `st_mac` needs.
        unsafe {
            write_l2(data, &b.mac, &cfg.iface_mac, vlan, vlan_tci, ETH_P_IPV4);
            write_outer_v4(ip, p.tos, inner_len, inner_proto, cfg, hash, b);
        }
    } else {
        if data + 18 > end || ip + 40 > end {
            return (XDP_DROP, Reason::DropAdjust);
        }
        let vcf = ((6u32 << 28) | ((p.tos as u32) << 20) | (hash & 0x000f_ffff)).to_be();
        // SAFETY: 18 bytes at `data` and 40 at `ip` checked above; the MACs
        // are map-value fields at even offsets, as `st_mac` needs.
        unsafe {
            write_l2(data, &b.mac, &cfg.iface_mac, vlan, vlan_tci, ETH_P_IPV6);
            st32(ip, vcf);
            st16(ip + 4, (inner_len as u16).to_be());
            st16(ip + 6, u16::from_ne_bytes([inner_proto, OUTER_TTL]));
            let src = words16(&cfg.ipip_src_v6);
            st32(ip + 8, src[0]);
            st32(ip + 12, src[1]);
            st32(ip + 16, src[2]);
            st32(ip + 20, outer_src_v6_low(cfg, hash));
            let dst = words16(&b.addr);
            st32(ip + 24, dst[0]);
            st32(ip + 28, dst[1]);
            st32(ip + 32, dst[2]);
            st32(ip + 36, dst[3]);
        }
    }
    (XDP_TX, Reason::FwdIpip)
}

/// Writes the outer IPv4 header of an encapsulation at `ip`: to backend
/// `b`, from the node's outer source (see [`outer_src_v4`]), carrying
/// `inner_len` bytes of `inner_proto` with the inner packet's TOS, DF set.
///
/// # Safety
/// 20 bytes at `ip` are inside the packet, and `ip` is even.
#[inline(always)]
unsafe fn write_outer_v4(
    ip: usize,
    tos: u8,
    inner_len: u32,
    inner_proto: u8,
    cfg: &LbConfig,
    hash: u32,
    b: &Backend,
) {
    let w0 = u16::from_ne_bytes([0x45, tos]);
    let w1 = ((inner_len + 20) as u16).to_be();
    let w3 = 0x4000u16.to_be(); // DF
    let w4 = u16::from_ne_bytes([OUTER_TTL, inner_proto]);
    let src = outer_src_v4(cfg, hash);
    // SAFETY: a 4-aligned field (asserted at the top of this file).
    let dst = unsafe { words16(&b.addr) }[0];
    let sum = w0 as u32
        + w1 as u32
        + w3 as u32
        + w4 as u32
        + (src & 0xffff)
        + (src >> 16)
        + (dst & 0xffff)
        + (dst >> 16);
    // SAFETY: the caller's contract.
    unsafe {
        st16(ip, w0);
        st16(ip + 2, w1);
        st16(ip + 4, 0);
        st16(ip + 6, w3);
        st16(ip + 8, w4);
        st16(ip + 10, fold(sum));
        st32(ip + 12, src);
        st32(ip + 16, dst);
    }
}

/// The node's egress MTU (L3 bytes): 0 in the settings means 1500.
#[inline(always)]
fn link_mtu(cfg: &LbConfig) -> u32 {
    if cfg.mtu == 0 { 1500 } else { cfg.mtu }
}

/// The longest frame whose bytes after the IP packet may be link padding:
/// the Ethernet minimum (60 bytes without FCS) with a VLAN tag.
const MIN_FRAME: u64 = 64;

/// How long a frame of an IP packet with `frame_len` bytes up to its end
/// may be: bytes beyond are not part of it (see `balance`), unless they can
/// be the link padding of a minimum-size frame. Branch-free.
#[inline(always)]
fn frame_limit(frame_len: u64) -> usize {
    let d = frame_len.wrapping_sub(MIN_FRAME);
    (frame_len.wrapping_sub(d & (((d as i64) >> 63) as u64)) & 0x1ffff) as usize
}

/// Cuts the frame to `len` bytes (slow path: bytes after the IP packet);
/// whether it worked.
#[inline(never)]
fn trim_to(ctx: &XdpContext, len: u32) -> bool {
    let cur = frame_len(ctx) as i32;
    // SAFETY: helper call on the program's own context.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - cur) == 0 }
}

/// Writes Ethernet (and the VLAN tag, when the frame had one) at `data`.
///
/// # Safety
/// 18 bytes at `data` are inside the packet; `dst` and `src` are 2-aligned
/// (see [`st_mac`]).
#[inline(always)]
unsafe fn write_l2(
    data: usize,
    dst: &[u8; 6],
    src: &[u8; 6],
    vlan: bool,
    vlan_tci: u16,
    ethertype: u16,
) {
    // SAFETY: the caller's contract.
    unsafe {
        st_mac(data, dst);
        st_mac(data + 6, src);
        if vlan {
            st16(data + 12, ETH_P_VLAN.to_be());
            st16(data + 14, vlan_tci.to_be());
            st16(data + 16, ethertype.to_be());
        } else {
            st16(data + 12, ethertype.to_be());
        }
    }
}

/// A token bucket (per CPU) for the ICMP errors the program generates.
#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpBucket {
    /// Tokens, in billionths (one error costs [`NS_PER_SEC`]).
    tokens: u64,
    /// `bpf_ktime_get_ns` at the last refill (0: never used).
    last_ns: u64,
}

const NS_PER_SEC: u64 = 1_000_000_000;

/// Takes a token from this CPU's ICMP bucket ([`LbConfig::icmp_rate`] per
/// second, [`LbConfig::icmp_burst`] deep): whether an error may be sent
/// (RFC 4443 2.4(f); done for ICMPv4 too). Only on the too-big path.
#[inline(always)]
fn icmp_allowed(cfg: &LbConfig) -> bool {
    let Some(bp) = ICMP_LIMIT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    let b = unsafe { &mut *bp };
    // User space writes the effective values (never 0): a rate of 0 does
    // not limit, a burst of 0 allows nothing.
    let rate = cfg.icmp_rate as u64;
    let burst = cfg.icmp_burst as u64;
    let cap = burst * NS_PER_SEC;
    let Some(fill_ns) = cap.checked_div(rate) else {
        return true;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let elapsed = now.wrapping_sub(b.last_ns);
    b.last_ns = now;
    // Past the time to fill an empty bucket it is full (and `elapsed * rate`
    // below stays under `cap`, so nothing overflows).
    let tokens = if elapsed >= fill_ns {
        cap
    } else {
        let t = b.tokens + elapsed * rate;
        if t > cap { cap } else { t }
    };
    if tokens < NS_PER_SEC {
        b.tokens = tokens;
        return false;
    }
    b.tokens = tokens - NS_PER_SEC;
    true
}

/// Answers the client with ICMP fragmentation-needed (IPv4) or packet-too-big
/// (IPv6) carrying `mtu`, from the VIP, out of the interface it came in on.
/// The error quotes as much of the client's packet as fits (see
/// [`QUOTE_V4`] and [`QUOTE_V6`]); addresses are read back from that quote
/// (the flow key may be masked). The packet was parsed before: only what is
/// needed is read again.
///
/// Only for a packet that may be answered: IPv4 with DF and at offset 0
/// (RFC 1191; RFC 1122 3.2.2: no error about a non-initial fragment), IPv6
/// whole or a first fragment (`later_fragment` false: a later one's quote
/// would hold no L4 header, so the sender could not tell which socket it
/// concerns); others are dropped (`DropTooBigNoDf`), as are errors over the
/// rate limit (`DropTooBigRateLimited`) and IPv4 with options (`DropTooBig`).
///
/// Growing the head by the new IP + ICMP header length leaves the original IP
/// header exactly where the quote goes; the tail is then cut after the quote.
#[inline(always)]
fn too_big(ctx: &XdpContext, cfg: &LbConfig, mtu: u32, later_fragment: bool) -> (u32, Reason) {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + 18 > end {
        return (XDP_DROP, Reason::DropMalformed);
    }
    // SAFETY: 18 bytes checked.
    let vlan = unsafe { ld16(data + 12) } == ETH_P_VLAN.to_be();
    let ip = if vlan { data + 18 } else { data + 14 };
    if ip + 20 > end {
        return (XDP_DROP, Reason::DropMalformed);
    }
    // SAFETY: 20 bytes checked.
    let (w0, frags) = unsafe { (ld16(ip), u16::from_be(ld16(ip + 6))) };
    let v4 = (w0 as u8) >> 4 == 4;
    if v4 {
        // DF clear, or a nonzero offset.
        if frags & 0x5fff != 0x4000 {
            return (XDP_DROP, Reason::DropTooBigNoDf);
        }
        if w0 as u8 != 0x45 {
            return (XDP_DROP, Reason::DropTooBig);
        }
    } else if later_fragment {
        return (XDP_DROP, Reason::DropTooBigNoDf);
    }
    if !icmp_allowed(cfg) {
        return (XDP_DROP, Reason::DropTooBigRateLimited);
    }
    if v4 {
        too_big_v4(ctx, vlan, cfg, mtu)
    } else {
        too_big_v6(ctx, vlan, cfg, mtu)
    }
}

/// Grows the head by `grow`, cuts the frame to `l3_off + total` bytes, and
/// rewrites L2 as a reply (source MAC ours, destination the sender's).
/// Returns the new `data` pointer.
#[inline(always)]
fn reply_frame(
    ctx: &XdpContext,
    vlan: bool,
    grow: usize,
    total: usize,
    ethertype: u16,
    cfg: &LbConfig,
) -> Option<usize> {
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return None;
    }
    let l3_off = if vlan { 18 } else { 14 };
    let cur_len = frame_len(ctx) as i32;
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (l3_off + total) as i32 - cur_len) } != 0 {
        return None;
    }
    let data = ctx.data();
    if data + grow + 18 > ctx.data_end() {
        return None;
    }
    // SAFETY: `data + grow + 18` checked above, and grow >= 28 > 18; the
    // node's MAC is a map-value field at an even offset, as `st_mac` needs.
    unsafe {
        copy_mac(data, data + grow + 6);
        st_mac(data + 6, &cfg.iface_mac);
        if vlan {
            st16(data + 12, ld16(data + grow + 12));
            st16(data + 14, ld16(data + grow + 14));
            st16(data + 16, ethertype.to_be());
        } else {
            st16(data + 12, ethertype.to_be());
        }
    }
    Some(data)
}

/// Bytes of the offending packet an ICMP error quotes: as many as fit in a
/// 576-byte IPv4 datagram (RFC 1812 4.3.2.3) or a 1280-byte IPv6 packet
/// (RFC 4443 2.4(c)). The offending packet is always longer (it exceeded an
/// MTU of at least 576, or an inner MTU of at least 1280 for IPv6), so the
/// quote is always exactly this long.
const QUOTE_V4: usize = 576 - 28;
const QUOTE_V6: usize = 1280 - 48;

/// Adds the one's-complement sum of the `N` bytes at `addr` (a multiple of
/// 4) to `seed`, through `bpf_csum_diff` (the kernel's `csum_partial`) in
/// its 512-byte steps; the result is folded by [`fold`]. `N` is a constant,
/// so the loop is unrolled and every size the helper sees is a constant.
/// `None` if the helper refuses.
///
/// # Safety
/// `addr + N <= data_end` was checked on the same packet pointer.
#[inline(always)]
unsafe fn sum_quote<const N: usize>(addr: usize, seed: u32) -> Option<u32> {
    const STEP: usize = 512;
    let mut s = seed;
    let mut off = 0;
    while off < N {
        let len = if N - off < STEP { N - off } else { STEP };
        // SAFETY: helper call reading `len` of the caller's N checked bytes.
        let r = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                (addr + off) as *mut u32,
                len as u32,
                s,
            )
        };
        s = u32::try_from(r).ok()?;
        off += STEP;
    }
    Some(s)
}

#[inline(always)]
fn too_big_v4(ctx: &XdpContext, vlan: bool, cfg: &LbConfig, mtu: u32) -> (u32, Reason) {
    // [l2][ip 20][icmp 8][quoted: ip 20, then 528 more]
    let Some(data) = reply_frame(ctx, vlan, 28, 28 + QUOTE_V4, ETH_P_IPV4, cfg) else {
        return (XDP_DROP, Reason::DropAdjust);
    };
    let ip = if vlan { data + 18 } else { data + 14 };
    if ip + 28 + QUOTE_V4 > ctx.data_end() {
        return (XDP_DROP, Reason::DropAdjust);
    }
    // SAFETY: 576 bytes at `ip` checked above.
    unsafe {
        let client = ld32(ip + 28 + 12);
        let vip = ld32(ip + 28 + 16);
        st16(ip, u16::from_ne_bytes([0x45, 0]));
        st16(ip + 2, ((28 + QUOTE_V4) as u16).to_be());
        st32(ip + 4, 0);
        st16(ip + 8, u16::from_ne_bytes([OUTER_TTL, IPPROTO_ICMP]));
        st16(ip + 10, 0);
        st32(ip + 12, vip);
        st32(ip + 16, client);
        st16(ip + 10, fold(sum16::<10>(ip, 0)));
        let icmp = ip + 20;
        st16(icmp, u16::from_ne_bytes([3, 4]));
        st16(icmp + 2, 0);
        st16(icmp + 4, 0);
        st16(icmp + 6, (mtu as u16).to_be());
        let Some(s) = sum_quote::<QUOTE_V4>(icmp + 8, sum16::<4>(icmp, 0)) else {
            return (XDP_DROP, Reason::DropTooBig);
        };
        st16(icmp + 2, fold(s));
    }
    (XDP_TX, Reason::TooBigSent)
}

#[inline(always)]
fn too_big_v6(ctx: &XdpContext, vlan: bool, cfg: &LbConfig, mtu: u32) -> (u32, Reason) {
    // [l2][ip6 40][icmp6 8][quoted: ip6 40, then 1192 more]
    let Some(data) = reply_frame(ctx, vlan, 48, 48 + QUOTE_V6, ETH_P_IPV6, cfg) else {
        return (XDP_DROP, Reason::DropAdjust);
    };
    let ip = if vlan { data + 18 } else { data + 14 };
    if ip + 48 + QUOTE_V6 > ctx.data_end() {
        return (XDP_DROP, Reason::DropAdjust);
    }
    // SAFETY: 1280 bytes at `ip` checked above.
    unsafe {
        // new source = quoted destination (the VIP), new destination = quoted source
        let q = ip + 48;
        let mut i = 0;
        while i < 16 {
            let client = ld32(q + 8 + i);
            let vip = ld32(q + 24 + i);
            st32(ip + 8 + i, vip);
            st32(ip + 24 + i, client);
            i += 4;
        }
        st32(ip, (6u32 << 28).to_be());
        st16(ip + 4, ((8 + QUOTE_V6) as u16).to_be());
        st16(ip + 6, u16::from_ne_bytes([IPPROTO_ICMPV6, 255]));
        let icmp = ip + 40;
        st16(icmp, u16::from_ne_bytes([2, 0]));
        st16(icmp + 2, 0);
        st32(icmp + 4, mtu.to_be());
        // pseudo-header: both addresses (ip+8..ip+40), length, next header 58
        let pseudo =
            ((8 + QUOTE_V6) as u16).to_be() as u32 + (IPPROTO_ICMPV6 as u16).to_be() as u32;
        let s = sum16::<4>(icmp, sum16::<16>(ip + 8, pseudo));
        let Some(s) = sum_quote::<QUOTE_V6>(icmp + 8, s) else {
            return (XDP_DROP, Reason::DropTooBig);
        };
        st16(icmp + 2, fold(s));
    }
    (XDP_TX, Reason::TooBigSent)
}

/// Real-server side: strip IPIP/IP6IP6 addressed to this host, pass the inner packet.
#[xdp]
pub fn decap(ctx: XdpContext) -> u32 {
    let (action, reason) = decapsulate(&ctx);
    if let Some(r) = reason {
        count(r);
    }
    action
}

#[inline(always)]
fn decapsulate(ctx: &XdpContext) -> (u32, Option<Reason>) {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + 14 > end {
        return (XDP_PASS, None);
    }
    // SAFETY: 14 bytes checked.
    let mut ethertype = unsafe { ld16(data + 12) };
    let mut vlan = false;
    if ethertype == ETH_P_VLAN.to_be() {
        if data + 18 > end {
            return (XDP_PASS, None);
        }
        // SAFETY: 18 bytes checked.
        ethertype = unsafe { ld16(data + 16) };
        vlan = true;
    }
    let ip = if vlan { data + 18 } else { data + 14 };
    let mut key = AddrKey::default();
    let (outer_len, inner_proto, outer_ecn) = if ethertype == ETH_P_IPV4.to_be() {
        if ip + 20 > end {
            return (XDP_PASS, None);
        }
        // SAFETY: 20 bytes checked.
        let (w0, frags, w4, dst) = unsafe {
            (
                ld16(ip),
                u16::from_be(ld16(ip + 6)),
                ld16(ip + 8),
                ld32(ip + 16),
            )
        };
        let ihl = ((w0 as u8 & 0x0f) as usize) << 2;
        let proto = (w4 >> 8) as u8;
        if w0 as u8 >> 4 != 4 || ihl < 20 || (proto != IPPROTO_IPIP && proto != IPPROTO_IPV6) {
            return (XDP_PASS, None);
        }
        if frags & 0x3fff != 0 {
            // An outer fragment: the kernel reassembles (it has no tunnel to give it to, so it drops).
            return (XDP_PASS, None);
        }
        key.family = FAMILY_V4;
        pkt::set32(&mut key.addr, 0, dst);
        // TOS is the second byte of the first word.
        (ihl, proto, (w0 >> 8) as u8)
    } else if ethertype == ETH_P_IPV6.to_be() {
        if ip + 40 > end {
            return (XDP_PASS, None);
        }
        // SAFETY: 40 bytes checked.
        let (w0, nh) = unsafe { (ld16(ip), ld16(ip + 6) as u8) };
        if nh != IPPROTO_IPIP && nh != IPPROTO_IPV6 {
            return (XDP_PASS, None);
        }
        key.family = FAMILY_V6;
        // SAFETY: 40 bytes checked.
        unsafe { pkt::ld128(ip + 24, &mut key.addr) };
        // ECN: bits 4-5 of the second byte (the traffic class's low bits).
        (40usize, nh, (w0 >> 12) as u8)
    } else {
        return (XDP_PASS, None);
    };
    // SAFETY: the value is only tested for presence.
    if unsafe { DECAP_ADDRS.get(key) }.is_none() {
        return (XDP_PASS, None);
    }
    let inner_type = if inner_proto == IPPROTO_IPIP {
        ETH_P_IPV4
    } else {
        ETH_P_IPV6
    };
    if outer_len > 60 {
        return (XDP_DROP, Some(Reason::DropMalformed));
    }
    let inner = ip + outer_len;
    if inner + 2 > end {
        return (XDP_DROP, Some(Reason::DropMalformed));
    }
    // SAFETY: 2 bytes checked.
    let w0 = unsafe { ld16(inner) };
    let ver = w0 as u8 >> 4;
    if (inner_type == ETH_P_IPV4 && ver != 4) || (inner_type == ETH_P_IPV6 && ver != 6) {
        return (XDP_DROP, Some(Reason::DropMalformed));
    }
    // Congestion marks set on the way from the balancer go to the inner
    // packet (RFC 6040 section 4.2).
    if outer_ecn & 3 != 0 {
        let v4 = inner_type == ETH_P_IPV4;
        let inner_ecn = if v4 {
            (w0 >> 8) as u8
        } else {
            (w0 >> 12) as u8
        };
        let Some(ecn) = lb_common::decap_ecn(inner_ecn, outer_ecn) else {
            return (XDP_DROP, Some(Reason::DropCeNotEct));
        };
        if ecn != inner_ecn & 3 {
            if v4 {
                if inner + 20 > end {
                    return (XDP_DROP, Some(Reason::DropMalformed));
                }
                let new = (w0 & !0x0300) | ((ecn as u16) << 8);
                // SAFETY: 20 bytes checked; the header checksum follows the
                // change incrementally (RFC 1624 eqn. 3, byte-order independent).
                unsafe {
                    let c = ld16(inner + 10);
                    st16(inner, new);
                    st16(inner + 10, fold((!c) as u32 + (!w0) as u32 + new as u32));
                }
            } else {
                // SAFETY: 2 bytes checked above.
                unsafe { st16(inner, (w0 & !0x3000) | ((ecn as u16) << 12)) };
            }
        }
    }
    // Move L2 forward over the outer header, then drop the bytes in front.
    let new_l2 = data + outer_len;
    if new_l2 + 18 > end || data + 18 > end {
        return (XDP_DROP, Some(Reason::DropMalformed));
    }
    // SAFETY: both 18-byte ranges checked above; they do not overlap (outer_len >= 20).
    unsafe {
        copy_mac(new_l2, data);
        copy_mac(new_l2 + 6, data + 6);
        if vlan {
            st16(new_l2 + 12, ETH_P_VLAN.to_be());
            st16(new_l2 + 14, ld16(data + 14));
            st16(new_l2 + 16, inner_type.to_be());
        } else {
            st16(new_l2 + 12, inner_type.to_be());
        }
    }
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return (XDP_DROP, Some(Reason::DropAdjust));
    }
    (XDP_PASS, Some(Reason::Decapsulated))
}

/// The [`slot_record`] of an address's slot, read once.
#[inline(always)]
pub(crate) fn slot_record_of(addr: &[u32; 4]) -> u64 {
    match VIP_ADDR_SLOTS.get_ptr(lb_common::vip_slot_words(addr)) {
        // SAFETY: a valid map value pointer; one aligned 8-byte load (user
        // space stores the record in one aligned 8-byte store).
        Some(r) => unsafe { core::ptr::read_volatile(r) },
        None => 0,
    }
}

/// The last word of a [`VipKey`] (port, protocol, family), read with one load.
#[inline(always)]
fn vip_key_tail(k: &VipKey) -> u32 {
    // SAFETY: bytes 16..20 of a 4-aligned 20-byte VipKey (asserted above).
    unsafe { core::ptr::read((k as *const VipKey).cast::<u32>().add(4)) }
}

/// [`vip_key_tail`] of a key built from its parts.
#[inline(always)]
fn key_tail(port: u16, proto: u8, family: u8) -> u32 {
    let p = port.to_ne_bytes();
    u32::from_ne_bytes([p[0], p[1], proto, family])
}

/// VIP lookup: the exact (address, port, protocol) first, then the port-less
/// VIP. Through the entries that `rec` (the address's [`slot_record`], read
/// once by the parser) names in [`VIP_TABLE`] (global data, no lookup), or the
/// hash map when the slot is in [`slot_record::FALLBACK`].
///
/// The value is returned by reference, to a `VIP_TABLE` entry or this CPU's
/// scratch copy: neither changes during the program's run (user space does
/// not rewrite an entry until a grace period after no record names it), so
/// every field read from it belongs to one `VipInfo`.
#[inline(always)]
pub(crate) fn lookup_vip(
    rec: u64,
    addr: &[u32; 4],
    family: u8,
    port: u16,
    proto: u8,
) -> Option<&'static VipInfo> {
    if rec & slot_record::LANE_VALID as u64 == 0 {
        if rec == 0 {
            return None;
        }
        return lookup_vip_hash(addr, family, port, proto);
    }
    let exact = key_tail(port, proto, family);
    let portless = key_tail(0, proto, family);
    let [a0, a1, a2, a3] = *addr;
    // The entry found (a pointer: the stack is tight).
    let mut found: *const VipEntry = core::ptr::null();
    let mut i = 0;
    while i < slot_record::LANES {
        let lane = (rec >> (16 * i)) as u16;
        if lane & slot_record::LANE_VALID == 0 {
            break;
        }
        i += 1;
        // SAFETY: a masked index, within the table (asserted above); the
        // programs never write it (see `BACKENDS` for user space's writes).
        let e = unsafe {
            &*core::ptr::addr_of!(VIP_TABLE)
                .cast::<VipEntry>()
                .add((lane & slot_record::LANE_INDEX) as usize)
        };
        let k = &e.key;
        // SAFETY: a 4-aligned field (asserted above).
        let [k0, k1, k2, k3] = unsafe { words16(&k.addr) };
        if k0 != a0 || k1 != a1 || k2 != a2 || k3 != a3 {
            continue;
        }
        let tail = vip_key_tail(k);
        if tail == exact {
            found = e;
            break;
        }
        if tail == portless {
            found = e;
        }
    }
    if found.is_null() {
        return None;
    }
    // SAFETY: a VIP_TABLE value pointer (see above for why it is stable).
    Some(unsafe { &(*found).info })
}

/// Whether some VIP has this address and protocol (any port): one hash
/// lookup, made only for fragments, through this CPU's scratch key.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
pub(crate) fn vip_on_addr_proto(addr: &[u32; 4], family: u8, proto: u8) -> bool {
    let Some(sp) = VIP_SCRATCH.get_ptr_mut(0) else {
        // Cannot tell: keep the conservative answer (the fragment is dropped).
        return true;
    };
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    let scratch = unsafe { &mut *sp };
    let mut i = 0;
    while i < 4 {
        pkt::set32(&mut scratch.key.addr, i, addr[i]);
        i += 1;
    }
    scratch.key.port = 0;
    scratch.key.proto = proto;
    scratch.key.family = family;
    // SAFETY: the value is only tested for presence.
    unsafe { VIP_PROTOS.get(&scratch.key) }.is_some()
}

/// [`lookup_vip`] in the hash map, through this CPU's scratch entry.
// The key is passed by reference on purpose: by value it would be copied to the stack.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
fn lookup_vip_hash(addr: &[u32; 4], family: u8, port: u16, proto: u8) -> Option<&'static VipInfo> {
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    let scratch = unsafe { &mut *VIP_SCRATCH.get_ptr_mut(0)? };
    let mut i = 0;
    while i < 4 {
        pkt::set32(&mut scratch.key.addr, i, addr[i]);
        i += 1;
    }
    scratch.key.port = port;
    scratch.key.proto = proto;
    scratch.key.family = family;
    // SAFETY: the value is copied out at once.
    let mut v = unsafe { VIPS.get(&scratch.key) };
    if v.is_none() && port != 0 {
        scratch.key.port = 0;
        // SAFETY: as above.
        v = unsafe { VIPS.get(&scratch.key) };
    }
    scratch.info = *v?;
    Some(&scratch.info)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
