//! Header parsing for the `lb` program: Ethernet (one 802.1Q tag), IPv4
//! (options), IPv6 (extension headers), TCP, UDP, and the ICMP/ICMPv6
//! too-big errors that belong to a VIP flow. Packet fields are read as raw
//! 16-bit words (see `pkt`).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use lb_common::{ConnKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, Reason, VipInfo, vip_flags};

use crate::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, lookup_vip,
    pkt::{ld_be16, ld16, ld32, ldw128, sum16},
    slot_record_of, vip_on_addr_proto,
};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_VLAN: u16 = 0x8100;

/// Low (first on the wire) byte of a raw word.
#[inline(always)]
fn lo(w: u16) -> u8 {
    w as u8
}

/// High (second on the wire) byte of a raw word.
#[inline(always)]
fn hi(w: u16) -> u8 {
    (w >> 8) as u8
}

/// [`Parsed::fragment`]: a whole packet.
pub const FRAG_NONE: u8 = 0;
/// [`Parsed::fragment`]: the first fragment of a datagram (offset 0).
pub const FRAG_FIRST: u8 = 1;
/// [`Parsed::fragment`]: a fragment at a nonzero offset (no L4 header).
pub const FRAG_LATER: u8 = 2;

/// What the parser learned about a packet to a VIP.
#[repr(C, align(8))]
pub struct Parsed {
    /// Offset of the IP header (14, or 18 with a VLAN tag). A `u8` on purpose:
    /// refilled from the stack with a byte load, the verifier knows it is < 256.
    pub l3_off: u8,
    /// The VLAN TCI (host order) when `l3_off == 18`.
    pub vlan_tci: u16,
    /// The flow: client address and port, VIP address and port, protocol
    /// (ports 0 for fragments). Masked in place by the VIP's hash fields.
    pub key: ConnKey,
    /// IPv4 TOS / IPv6 traffic class, copied to the outer header.
    pub tos: u8,
    /// L3 length declared by the IP header (what gets encapsulated).
    pub ip_len: u32,
    /// IPv4 header length (20..=60), 40 for IPv6.
    pub ip_hdr_len: u32,
    /// [`FRAG_NONE`], [`FRAG_FIRST`] (offset 0, more to come) or [`FRAG_LATER`].
    pub fragment: u8,
    /// An ICMP too-big error whose quoted packet belongs to a VIP flow.
    pub icmp_error: bool,
    /// The VIP, when the packet is for one (see [`crate::lookup_vip`]).
    pub vip: Option<&'static VipInfo>,
    /// The slot record of the destination address, read once (nonzero:
    /// maybe a VIP).
    pub slot_rec: u64,
    /// The flow hash of the unmasked key, computed before the VIP lookup so
    /// its multiplies overlap the lookup's loads (valid when the VIP masks nothing).
    pub hash: u32,
}

/// Why parsing stopped before a VIP was found.
#[derive(Clone, Copy)]
pub enum Exit {
    NotIp,
    NotVip,
    PassMalformed,
    DropMalformed,
    DropFragment,
    PassIcmp,
    Unsupported,
}

impl Exit {
    #[inline(always)]
    pub fn action(self) -> u32 {
        match self {
            Exit::DropMalformed | Exit::DropFragment => XDP_DROP,
            _ => XDP_PASS,
        }
    }

    #[inline(always)]
    pub fn reason(self) -> Reason {
        match self {
            Exit::NotIp => Reason::PassNotIp,
            Exit::NotVip => Reason::PassNotVip,
            Exit::PassMalformed => Reason::PassMalformed,
            Exit::DropMalformed => Reason::DropMalformed,
            Exit::DropFragment => Reason::DropFragment,
            Exit::PassIcmp => Reason::PassIcmp,
            Exit::Unsupported => Reason::PassUnsupported,
        }
    }
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Parsed, Exit> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + 14 > end {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 14 bytes checked.
    let mut ethertype = unsafe { ld16(data + 12) };
    let mut l3_off = 14usize;
    let mut vlan_tci = 0u16;
    if ethertype == ETH_P_VLAN.to_be() {
        if data + 18 > end {
            return Err(Exit::PassMalformed);
        }
        // SAFETY: 18 bytes checked.
        unsafe {
            vlan_tci = u16::from_be(ld16(data + 14));
            ethertype = ld16(data + 16);
        }
        l3_off = 18;
    }
    let mut p = Parsed {
        l3_off: l3_off as u8,
        vlan_tci,
        key: ConnKey::default(),
        tos: 0,
        ip_len: 0,
        ip_hdr_len: 0,
        fragment: FRAG_NONE,
        icmp_error: false,
        vip: None,
        slot_rec: 0,
        hash: 0,
    };
    if ethertype == ETH_P_IPV4.to_be() {
        parse_v4(data + l3_off, end, &mut p)?;
    } else if ethertype == ETH_P_IPV6.to_be() {
        parse_v6(data + l3_off, end, &mut p)?;
    } else {
        return Err(Exit::NotIp);
    }
    p.hash = lb_common::flow_hash(&p.key);
    p.vip = Some(find_vip(&p)?);
    Ok(p)
}

/// The VIP of a parsed packet (one lookup site, so one inlined copy of the
/// lookup: the stack is tight). Its key is complete here: for a fragment the
/// ports are 0, so only the port-less VIP matches; for an ICMP error the
/// key is the quoted flow reversed.
#[inline(always)]
fn find_vip(p: &Parsed) -> Result<&'static VipInfo, Exit> {
    let vip = lookup_vip(
        p.slot_rec,
        &p.key.dst,
        p.key.family,
        p.key.dport,
        p.key.proto,
    );
    if p.icmp_error {
        return vip.ok_or(Exit::PassIcmp);
    }
    if p.fragment != FRAG_NONE {
        // A fragment can be placed only by a port-less VIP that hashes without ports.
        let both = vip_flags::HASH_NO_SRC_PORT | vip_flags::HASH_NO_DST_PORT;
        if let Some(v) = vip
            && v.flags & both == both
        {
            return Ok(v);
        }
        // Dropped only when it is for a VIP (this address and protocol) that
        // cannot place it; to any other address (one sharing the VIP's
        // address slot) or protocol it is not ours.
        if vip.is_some() || vip_on_addr_proto(&p.key.dst, p.key.family, p.key.proto) {
            return Err(Exit::DropFragment);
        }
        return Err(Exit::NotVip);
    }
    vip.ok_or(Exit::NotVip)
}

/// Ports at `l4` for TCP (full header within the IP payload) or UDP (length
/// field within the IP payload). `l4_len` is what the IP header leaves for L4.
#[inline(always)]
pub(crate) fn ports(l4: usize, end: usize, proto: u8, l4_len: usize) -> Result<(u16, u16), Exit> {
    let need = if proto == PROTO_TCP { 20 } else { 8 };
    if l4 + need > end || l4_len < need {
        return Err(Exit::DropMalformed);
    }
    if proto == PROTO_TCP {
        // SAFETY: 20 bytes checked.
        let hdr = ((lo(unsafe { ld16(l4 + 12) }) >> 4) as usize) << 2;
        if hdr < 20 || hdr > l4_len {
            return Err(Exit::DropMalformed);
        }
    } else {
        // SAFETY: 8 bytes checked.
        let ulen = unsafe { ld_be16(l4 + 4) } as usize;
        if ulen < 8 || ulen > l4_len {
            return Err(Exit::DropMalformed);
        }
    }
    // SAFETY: at least 8 bytes checked.
    unsafe { Ok((ld16(l4), ld16(l4 + 2))) }
}

#[inline(always)]
fn parse_v4(ip: usize, end: usize, p: &mut Parsed) -> Result<(), Exit> {
    if ip + 20 > end {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 20 bytes checked (for every read below).
    let w0 = unsafe { ld16(ip) };
    if lo(w0) >> 4 != 4 {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 20 bytes checked.
    p.key.dst[0] = unsafe { ld32(ip + 16) };
    p.slot_rec = slot_record_of(&p.key.dst);
    if p.slot_rec == 0 {
        return Err(Exit::NotVip);
    }
    p.key.family = FAMILY_V4;
    // SAFETY: 20 bytes checked.
    let (tot, frags, w4) = unsafe {
        p.key.src[0] = ld32(ip + 12);
        (
            ld_be16(ip + 2) as usize,
            u16::from_be(ld16(ip + 6)),
            ld16(ip + 8),
        )
    };
    p.tos = hi(w0);
    p.key.proto = hi(w4);
    let ihl = ((lo(w0) & 0x0f) as usize) << 2;
    if ihl < 20 || tot < ihl || ip + tot > end {
        return Err(Exit::DropMalformed);
    }
    p.ip_len = tot as u32;
    p.ip_hdr_len = ihl as u32;
    // SAFETY: 20 bytes checked at the top; `ip` is even (14 or 18 from the frame's start).
    if !unsafe { header_checksum_ok(ip, ihl, end) } {
        return Err(Exit::DropMalformed);
    }
    let frag = frags & 0x3fff != 0;
    let l4 = ip + ihl;
    if p.key.proto == IPPROTO_ICMP {
        if frag {
            return Err(Exit::PassIcmp);
        }
        return icmp_v4(l4, end, p);
    }
    if p.key.proto != PROTO_TCP && p.key.proto != PROTO_UDP {
        return Err(Exit::NotVip);
    }
    if frag {
        p.fragment = if frags & 0x1fff != 0 {
            FRAG_LATER
        } else {
            FRAG_FIRST
        };
        return Ok(());
    }
    let (sport, dport) = ports(l4, end, p.key.proto, tot - ihl)?;
    p.key.sport = sport;
    p.key.dport = dport;
    Ok(())
}

/// Verifies the IPv4 header checksum over the base header and any options
/// (a router drops such packets; so does the balancer, rather than forward them).
///
/// # Safety
/// 20 bytes at `ip` are inside the packet (options are checked here), and
/// `ip` is even.
#[inline(always)]
pub(crate) unsafe fn header_checksum_ok(ip: usize, ihl: usize, end: usize) -> bool {
    // SAFETY: the caller's contract.
    let mut s = unsafe { sum16::<10>(ip, 0) };
    let opt_words = (ihl - 20) / 2;
    for i in 0..20usize {
        if i >= opt_words {
            break;
        }
        let at = ip + 20 + 2 * i;
        if at + 2 > end {
            return false;
        }
        // SAFETY: 2 bytes checked.
        s += unsafe { ld16(at) } as u32;
    }
    crate::pkt::fold(s) == 0
}

/// ICMP destination-unreachable/fragmentation-needed to a VIP: the flow is
/// the quoted packet reversed (it was sent from the VIP to the client).
#[inline(always)]
fn icmp_v4(icmp: usize, end: usize, p: &mut Parsed) -> Result<(), Exit> {
    if icmp + 8 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 8 bytes checked.
    let t = unsafe { ld16(icmp) };
    if lo(t) != 3 || hi(t) != 4 {
        return Err(Exit::PassIcmp);
    }
    let inner = icmp + 8;
    if inner + 20 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 20 bytes checked (for every read of the quoted header).
    let (w0, w4, qsrc, qdst) = unsafe {
        (
            ld16(inner),
            ld16(inner + 8),
            ld32(inner + 12),
            ld32(inner + 16),
        )
    };
    let ihl = ((lo(w0) & 0x0f) as usize) << 2;
    if lo(w0) >> 4 != 4 || ihl < 20 {
        return Err(Exit::DropMalformed);
    }
    let proto = hi(w4);
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Exit::PassIcmp);
    }
    // The quoted source must be the VIP the error was sent to.
    if qsrc != p.key.dst[0] {
        return Err(Exit::PassIcmp);
    }
    let l4 = inner + ihl;
    if l4 + 4 > end {
        return Err(Exit::DropMalformed);
    }
    p.key.src[0] = qdst;
    p.key.proto = proto;
    // SAFETY: 4 bytes checked.
    unsafe {
        p.key.sport = ld16(l4 + 2);
        p.key.dport = ld16(l4);
    }
    p.icmp_error = true;
    Ok(())
}

const NH_HOPOPTS: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up (PassUnsupported).
const MAX_EXT_HEADERS: usize = 4;

#[inline(always)]
fn parse_v6(ip: usize, end: usize, p: &mut Parsed) -> Result<(), Exit> {
    if ip + 40 > end {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 40 bytes checked (for every read of the fixed header).
    let w0 = unsafe { ld16(ip) };
    if lo(w0) >> 4 != 6 {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 40 bytes checked.
    p.key.dst = unsafe { ldw128(ip + 24) };
    p.slot_rec = slot_record_of(&p.key.dst);
    if p.slot_rec == 0 {
        return Err(Exit::NotVip);
    }
    p.key.family = FAMILY_V6;
    // SAFETY: 40 bytes checked.
    let (pl, w3) = unsafe {
        p.key.src = ldw128(ip + 8);
        (ld_be16(ip + 4) as usize, ld16(ip + 6))
    };
    p.tos = (lo(w0) << 4) | (hi(w0) >> 4);
    if ip + 40 + pl > end {
        return Err(Exit::DropMalformed);
    }
    p.ip_len = 40 + pl as u32;
    p.ip_hdr_len = 40;
    let mut nh = lo(w3);
    let mut off = 40usize;
    let mut frag = FRAG_NONE;
    for _ in 0..MAX_EXT_HEADERS {
        if nh == NH_HOPOPTS || nh == NH_ROUTING || nh == NH_DSTOPTS {
            let e = ip + off;
            if e + 8 > end {
                return Err(Exit::DropMalformed);
            }
            // SAFETY: 8 bytes checked.
            let x = unsafe { ld16(e) };
            nh = lo(x);
            off += ((hi(x) as usize) + 1) << 3;
        } else if nh == NH_FRAGMENT {
            let e = ip + off;
            if e + 8 > end {
                return Err(Exit::DropMalformed);
            }
            // SAFETY: 8 bytes checked.
            let (x, fo) = unsafe { (ld16(e), u16::from_be(ld16(e + 2))) };
            nh = lo(x);
            off += 8;
            // offset (13 bits) and the M flag; a lone "atomic fragment" (both 0) is whole.
            if fo & 0xfff8 != 0 {
                // What follows is payload from the middle of the datagram,
                // not headers (RFC 8200 4.5): the walk ends here, with the
                // next header the Fragment header names.
                frag = FRAG_LATER;
                break;
            } else if fo & 1 != 0 {
                frag = FRAG_FIRST;
            }
        } else {
            break;
        }
    }
    if nh == NH_HOPOPTS || nh == NH_ROUTING || nh == NH_DSTOPTS || nh == NH_FRAGMENT {
        return Err(Exit::Unsupported);
    }
    if off > 40 + pl {
        return Err(Exit::DropMalformed);
    }
    p.key.proto = nh;
    let l4 = ip + (off & 0x3fff);
    if nh == IPPROTO_ICMPV6 {
        if frag != FRAG_NONE {
            return Err(Exit::PassIcmp);
        }
        return icmp_v6(l4, end, p);
    }
    if nh != PROTO_TCP && nh != PROTO_UDP {
        return Err(Exit::NotVip);
    }
    if frag != FRAG_NONE {
        p.fragment = frag;
        return Ok(());
    }
    let (sport, dport) = ports(l4, end, nh, 40 + pl - off)?;
    p.key.sport = sport;
    p.key.dport = dport;
    Ok(())
}

/// ICMPv6 packet-too-big to a VIP, routed by its quoted packet.
#[inline(always)]
fn icmp_v6(icmp: usize, end: usize, p: &mut Parsed) -> Result<(), Exit> {
    if icmp + 8 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 8 bytes checked.
    if lo(unsafe { ld16(icmp) }) != 2 {
        return Err(Exit::PassIcmp);
    }
    let inner = icmp + 8;
    if inner + 44 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 44 bytes checked (for every read of the quoted packet).
    let (w0, w3) = unsafe { (ld16(inner), ld16(inner + 6)) };
    if lo(w0) >> 4 != 6 {
        return Err(Exit::DropMalformed);
    }
    let proto = lo(w3);
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Exit::PassIcmp);
    }
    // SAFETY: 44 bytes checked.
    let qsrc = unsafe { ldw128(inner + 8) };
    if qsrc != p.key.dst {
        return Err(Exit::PassIcmp);
    }
    // SAFETY: 44 bytes checked.
    unsafe {
        p.key.src = ldw128(inner + 24);
        p.key.sport = ld16(inner + 42);
        p.key.dport = ld16(inner + 40);
    }
    p.key.proto = proto;
    p.icmp_error = true;
    Ok(())
}
