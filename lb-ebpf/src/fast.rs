//! `lb`'s fast path: the packet most traffic to a VIP is, handled in
//! straight-line code before the general path ([`crate::balance`]) runs.
//!
//! It takes an untagged IPv4 TCP or UDP packet without options or
//! fragmentation, to an address whose slot record names VIPs (not the hash
//! map that a slot shared by more than four VIPs falls back to), of a flow
//! this CPU's connection table already holds, whose backend is alive and
//! untagged, of an active VIP that hashes the whole 5-tuple and keeps a
//! connection table, and, for IPIP, IPv4 with the encapsulated packet
//! within the MTU. The VIP is not looked up: a table hit names the backend,
//! which carries its VIP's flags ([`lb_common::Backend::fast_flags`]; see
//! [`forward`] for why that is the VIP the general path finds). Anything
//! else, and any packet that
//! fails a check, goes to the general path untouched: [`forward`] returns
//! `None` before it writes anything. So the outcome (verdict, bytes out,
//! counters) is the general path's, which the fixture tests check packet by
//! packet with [`config_flags::GENERAL_PATH_ONLY`]; only the work differs.
//! It counts only in the backend's [`lb_common::BackendCounter`], in its own
//! fields, with one map lookup; user space adds those counts to the
//! backend's, the VIP's and the reasons.
//!
//! It also passes an untagged IPv4 packet whose destination's address slot
//! is empty (no VIP there) as the general parser does, without reading
//! further: such a packet would otherwise pay for both paths' first steps.
//!
//! A packet of a new flow pays for the attempt (parse, hash, table lookup)
//! before the general path parses it again: about 20 ns here.
//!
//! What it saves is mostly what the general path's generality costs in
//! BPF's few registers: the state of VLANs, IPv6, fragments, ICMP errors,
//! hash masks, misses and eviction kept live across its map lookups (each a
//! call to the compiler, which clobbers r0 to r5), so spilled to the stack
//! and read back.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use lb_common::{
    CONN4_WAYS, ConnKey, FAMILY_V4, PROTO_TCP, PROTO_UDP, Reason, VLAN_UNTAGGED, config_flags,
    conn4_ports, flow_hash, slot_record, vip_flags,
};

use crate::{
    IPPROTO_IPIP, backend_counter, count, find_way4, frame_limit, line4, link_mtu, live_backend,
    node,
    parse::{ETH_P_IPV4, header_checksum_ok, ports},
    pkt::{ld_be16, ld16, ld32, st_mac},
    slot_record_of, write_l2, write_outer_v4,
};

/// VIP flags that send a packet to the general path.
const GENERAL_VIP_FLAGS: u32 = vip_flags::HASH_NO_SRC_ADDR
    | vip_flags::HASH_NO_SRC_PORT
    | vip_flags::HASH_NO_DST_PORT
    | vip_flags::NO_CONN_TABLE
    | vip_flags::DEBUG;

/// Ethernet, IPv4 without options, and a TCP header without options (a
/// UDP frame this short is shorter than Ethernet's minimum frame, padding
/// aside, and takes the general path).
const MIN_LEN: usize = 14 + 20 + 20;

/// Forwards the packet if it is the common case, or passes it if it is for
/// no VIP (see the module's documentation), and returns the verdict;
/// `None`, with nothing written or counted, leaves it to the general path.
#[inline(always)]
pub(crate) fn forward(ctx: &XdpContext) -> Option<u32> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + MIN_LEN > end {
        return None;
    }
    let ip = data + 14;
    // SAFETY: MIN_LEN bytes checked, which every read here stays within.
    let (w0, tot, proto, src, dst) = unsafe {
        if ld16(data + 12) != ETH_P_IPV4.to_be() {
            return None;
        }
        // The address slot first: a packet for no VIP is passed at once,
        // as the general parser passes an IPv4 packet (any header length)
        // whose destination's slot is empty; a slot that falls back to the
        // VIP hash map is the general path's.
        let dst = ld32(ip + 16);
        let rec = slot_record_of(&[dst, 0, 0, 0]);
        let w0 = ld16(ip);
        if rec & slot_record::LANE_VALID as u64 == 0 {
            if rec == 0 && (w0 as u8) >> 4 == 4 {
                count(Reason::PassNotVip);
                return Some(XDP_PASS);
            }
            return None;
        }
        let proto = (ld16(ip + 8) >> 8) as u8;
        // Version 4 without options; neither MF nor a fragment offset.
        if w0 as u8 != 0x45
            || ld16(ip + 6) & 0x3fffu16.to_be() != 0
            || (proto != PROTO_TCP && proto != PROTO_UDP)
        {
            return None;
        }
        (w0, ld_be16(ip + 2) as usize, proto, ld32(ip + 12), dst)
    };
    // SAFETY: MIN_LEN bytes checked, 20 of them at `ip`, which is even.
    if tot < 20 || ip + tot > end || !unsafe { header_checksum_ok(ip, 20, end) } {
        return None;
    }
    let (sport, dport) = ports(ip + 20, end, proto, tot - 20).ok()?;
    let key = ConnKey {
        src: [src, 0, 0, 0],
        dst: [dst, 0, 0, 0],
        sport,
        dport,
        proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    let hash = flow_hash(&key);
    let cfg = node();
    let frame_len = 14 + tot as u64;
    if cfg.flags & (config_flags::DEBUG | config_flags::GENERAL_PATH_ONLY) != 0
        || data + frame_limit(frame_len) < end
    {
        return None;
    }
    let lp = line4(hash, cfg)?;
    // SAFETY: this CPU's line; no other CPU writes it and the program is
    // not re-entered on this CPU during the run.
    let l = unsafe { &mut *lp };
    let way = find_way4(l, proto, src, dst, conn4_ports(&key));
    if way >= CONN4_WAYS {
        return None;
    }
    let id = l.backend[way] as u32;
    let be = live_backend(id)?;
    // The VIP's flags, from the backend (`Backend::fast_flags`): no VIP
    // lookup. The flow was recorded for the backend's VIP, whose key it
    // matched; a VIP keeps its key while it has backends (their ids are
    // released, and their generations move on, before its id is freed); and
    // user space leaves ACTIVE out where another VIP could take the flow.
    let flags = be.fast_flags as u32;
    if be.generation as u16 != l.generation[way]
        || be.vlan & 0x0fff != VLAN_UNTAGGED
        || flags & (GENERAL_VIP_FLAGS | vip_flags::ACTIVE) != vip_flags::ACTIVE
    {
        return None;
    }
    let ipip = flags & vip_flags::FWD_IPIP != 0;
    if ipip {
        if be.family != FAMILY_V4 || tot as u32 + 20 > link_mtu(cfg) {
            return None;
        }
        // SAFETY: helper call on the program's own context.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -20) } != 0 {
            return None;
        }
        let data = ctx.data();
        if data + 34 > ctx.data_end() {
            // Not reached (the head grew by 20 in front of MIN_LEN bytes);
            // the packet has changed, so it cannot go to the general path,
            // which would have counted the VIP and the table hit too.
            count(Reason::DropAdjust);
            return Some(XDP_DROP);
        }
        // SAFETY: 34 bytes checked; `data` stays even (grown by 20). The
        // MACs are map-value fields at even offsets, as `st_mac` needs.
        unsafe {
            write_l2(data, &be.mac, &cfg.iface_mac, false, 0, ETH_P_IPV4);
            write_outer_v4(
                data + 14,
                (w0 >> 8) as u8,
                tot as u32,
                IPPROTO_IPIP,
                cfg,
                hash,
                be,
            );
        }
    } else {
        // SAFETY: MIN_LEN bytes checked above; the MACs are map-value
        // fields at even offsets, as `st_mac` needs.
        unsafe {
            st_mac(data, &be.mac);
            st_mac(data + 6, &cfg.iface_mac);
        }
    }
    let clock = l.clock.wrapping_add(1);
    l.clock = clock;
    l.used[way] = clock;
    // The backend's and the VIP's packets and bytes, and the reasons
    // (`ConnHit`, `FwdDr` or `FwdIpip`), in the backend's fast-path fields:
    // see `BackendCounter`.
    if let Some(c) = backend_counter(id) {
        // SAFETY: per-CPU value owned by this CPU for the program's run.
        unsafe {
            (*c).fast_bytes += frame_len;
            if ipip {
                (*c).fast_ipip += 1;
            } else {
                (*c).fast_dr += 1;
            }
        }
    }
    Some(XDP_TX)
}
