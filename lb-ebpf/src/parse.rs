//! Header parsing for the `lb` program: Ethernet (one 802.1Q tag), IPv4
//! (options), IPv6 (extension headers), TCP, UDP, and the ICMP/ICMPv6
//! too-big errors that belong to a VIP flow.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use lb_common::{ConnKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, Reason, VipInfo, vip_flags};

use crate::{IPPROTO_ICMP, IPPROTO_ICMPV6, is_vip_addr, lookup_vip};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_VLAN: u16 = 0x8100;

/// Unaligned read of a `T` at a packet address.
///
/// # Safety
/// The caller has checked `addr + size_of::<T>() <= data_end`.
#[inline(always)]
pub unsafe fn load<T: Copy>(addr: usize) -> T {
    // SAFETY: bounds are the caller's contract; packet memory has no alignment.
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

/// Unaligned write of a `T` at a packet address.
///
/// # Safety
/// The caller has checked `addr + size_of::<T>() <= data_end`.
#[inline(always)]
pub unsafe fn store<T>(addr: usize, v: T) {
    // SAFETY: bounds are the caller's contract; packet memory has no alignment.
    unsafe { core::ptr::write_unaligned(addr as *mut T, v) }
}

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
    pub fragment: bool,
    /// An ICMP too-big error whose quoted packet belongs to a VIP flow.
    pub icmp_error: bool,
    /// The VIP, when the packet is for one.
    pub vip: Option<VipInfo>,
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
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Parsed, Exit> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + 14 > end {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 14 bytes checked.
    let mut ethertype = be16(unsafe { load(data + 12) });
    let mut l3_off = 14usize;
    let mut vlan_tci = 0u16;
    if ethertype == ETH_P_VLAN {
        if data + 18 > end {
            return Err(Exit::PassMalformed);
        }
        // SAFETY: 18 bytes checked.
        vlan_tci = be16(unsafe { load(data + 14) });
        // SAFETY: 18 bytes checked.
        ethertype = be16(unsafe { load(data + 16) });
        l3_off = 18;
    }
    let mut p = Parsed {
        l3_off: l3_off as u8,
        vlan_tci,
        key: ConnKey::default(),
        tos: 0,
        ip_len: 0,
        ip_hdr_len: 0,
        fragment: false,
        icmp_error: false,
        vip: None,
    };
    if ethertype == ETH_P_IPV4 {
        parse_v4(data + l3_off, end, &mut p)?;
    } else if ethertype == ETH_P_IPV6 {
        parse_v6(data + l3_off, end, &mut p)?;
    } else {
        return Err(Exit::NotIp);
    }
    Ok(p)
}

/// Ports at `l4` for TCP (full header within the IP payload) or UDP (length
/// field within the IP payload). `l4_len` is what the IP header leaves for L4.
#[inline(always)]
fn ports(l4: usize, end: usize, proto: u8, l4_len: usize) -> Result<(u16, u16), Exit> {
    let need = if proto == PROTO_TCP { 20 } else { 8 };
    if l4 + need > end || l4_len < need {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: at least 8 bytes checked.
    let pp: [u8; 8] = unsafe { load(l4) };
    if proto == PROTO_TCP {
        // SAFETY: 20 bytes checked.
        let doff: u8 = unsafe { load(l4 + 12) };
        let hdr = ((doff >> 4) as usize) << 2;
        if hdr < 20 || hdr > l4_len {
            return Err(Exit::DropMalformed);
        }
    } else {
        let ulen = be16([pp[4], pp[5]]) as usize;
        if ulen < 8 || ulen > l4_len {
            return Err(Exit::DropMalformed);
        }
    }
    Ok((
        u16::from_ne_bytes([pp[0], pp[1]]),
        u16::from_ne_bytes([pp[2], pp[3]]),
    ))
}

/// A fragment can be placed only by a port-less VIP that hashes without ports.
#[inline(always)]
fn fragment_vip(dst: &[u8; 16], family: u8, proto: u8) -> Result<VipInfo, Exit> {
    let both = vip_flags::HASH_NO_SRC_PORT | vip_flags::HASH_NO_DST_PORT;
    match lookup_vip(dst, family, 0, proto) {
        Some(v) if v.flags & both == both => Ok(v),
        _ => Err(Exit::DropFragment),
    }
}

#[inline(always)]
fn parse_v4(ip: usize, end: usize, p: &mut Parsed) -> Result<(), Exit> {
    if ip + 20 > end {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 20 bytes checked.
    let h: [u8; 20] = unsafe { load(ip) };
    if h[0] >> 4 != 4 {
        return Err(Exit::PassMalformed);
    }
    p.key.dst[0] = h[16];
    p.key.dst[1] = h[17];
    p.key.dst[2] = h[18];
    p.key.dst[3] = h[19];
    if !is_vip_addr(&p.key.dst, FAMILY_V4) {
        return Err(Exit::NotVip);
    }
    p.key.family = FAMILY_V4;
    p.key.src[0] = h[12];
    p.key.src[1] = h[13];
    p.key.src[2] = h[14];
    p.key.src[3] = h[15];
    p.tos = h[1];
    p.key.proto = h[9];
    let ihl = ((h[0] & 0x0f) as usize) << 2;
    let tot = be16([h[2], h[3]]) as usize;
    if ihl < 20 || tot < ihl || ip + tot > end {
        return Err(Exit::DropMalformed);
    }
    p.ip_len = tot as u32;
    p.ip_hdr_len = ihl as u32;
    if !header_checksum_ok(&h, ip, ihl, end) {
        return Err(Exit::DropMalformed);
    }
    let frag = be16([h[6], h[7]]) & 0x3fff != 0;
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
        p.fragment = true;
        p.vip = Some(fragment_vip(&p.key.dst, FAMILY_V4, p.key.proto)?);
        return Ok(());
    }
    let (sport, dport) = ports(l4, end, p.key.proto, tot - ihl)?;
    p.key.sport = sport;
    p.key.dport = dport;
    p.vip = lookup_vip(&p.key.dst, FAMILY_V4, dport, p.key.proto);
    if p.vip.is_none() {
        return Err(Exit::NotVip);
    }
    Ok(())
}

/// Verifies the IPv4 header checksum over the base header and any options
/// (a router drops such packets; so does the balancer, rather than forward them).
#[inline(always)]
fn header_checksum_ok(h: &[u8; 20], ip: usize, ihl: usize, end: usize) -> bool {
    let mut s = crate::csum::sum_bytes(h, 0);
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
        let w: [u8; 2] = unsafe { load(at) };
        s += be16(w) as u32;
    }
    crate::csum::fold(s) == 0
}

/// ICMP destination-unreachable/fragmentation-needed to a VIP: the flow is
/// the quoted packet reversed (it was sent from the VIP to the client).
#[inline(always)]
fn icmp_v4(icmp: usize, end: usize, p: &mut Parsed) -> Result<(), Exit> {
    if icmp + 8 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 8 bytes checked.
    let t: [u8; 2] = unsafe { load(icmp) };
    if t[0] != 3 || t[1] != 4 {
        return Err(Exit::PassIcmp);
    }
    let inner = icmp + 8;
    if inner + 20 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 20 bytes checked.
    let h: [u8; 20] = unsafe { load(inner) };
    let ihl = ((h[0] & 0x0f) as usize) << 2;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(Exit::DropMalformed);
    }
    let proto = h[9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Exit::PassIcmp);
    }
    // The quoted source must be the VIP the error was sent to.
    if h[12] != p.key.dst[0]
        || h[13] != p.key.dst[1]
        || h[14] != p.key.dst[2]
        || h[15] != p.key.dst[3]
    {
        return Err(Exit::PassIcmp);
    }
    let l4 = inner + ihl;
    if l4 + 4 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 4 bytes checked.
    let pp: [u8; 4] = unsafe { load(l4) };
    p.key.src = [0; 16];
    p.key.src[0] = h[16];
    p.key.src[1] = h[17];
    p.key.src[2] = h[18];
    p.key.src[3] = h[19];
    p.key.proto = proto;
    p.key.sport = u16::from_ne_bytes([pp[2], pp[3]]);
    p.key.dport = u16::from_ne_bytes([pp[0], pp[1]]);
    p.icmp_error = true;
    p.vip = lookup_vip(&p.key.dst, FAMILY_V4, p.key.dport, proto);
    if p.vip.is_none() {
        return Err(Exit::PassIcmp);
    }
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
    // SAFETY: 40 bytes checked.
    let vcf: [u8; 8] = unsafe { load(ip) };
    if vcf[0] >> 4 != 6 {
        return Err(Exit::PassMalformed);
    }
    // SAFETY: 40 bytes checked.
    p.key.dst = unsafe { load(ip + 24) };
    if !is_vip_addr(&p.key.dst, FAMILY_V6) {
        return Err(Exit::NotVip);
    }
    p.key.family = FAMILY_V6;
    // SAFETY: 40 bytes checked.
    p.key.src = unsafe { load(ip + 8) };
    p.tos = (vcf[0] << 4) | (vcf[1] >> 4);
    let pl = be16([vcf[4], vcf[5]]) as usize;
    if ip + 40 + pl > end {
        return Err(Exit::DropMalformed);
    }
    p.ip_len = 40 + pl as u32;
    p.ip_hdr_len = 40;
    let mut nh = vcf[6];
    let mut off = 40usize;
    let mut frag = false;
    for _ in 0..MAX_EXT_HEADERS {
        if nh == NH_HOPOPTS || nh == NH_ROUTING || nh == NH_DSTOPTS {
            let e = ip + off;
            if e + 8 > end {
                return Err(Exit::DropMalformed);
            }
            // SAFETY: 8 bytes checked.
            let x: [u8; 2] = unsafe { load(e) };
            nh = x[0];
            off += ((x[1] as usize) + 1) << 3;
        } else if nh == NH_FRAGMENT {
            let e = ip + off;
            if e + 8 > end {
                return Err(Exit::DropMalformed);
            }
            // SAFETY: 8 bytes checked.
            let x: [u8; 4] = unsafe { load(e) };
            nh = x[0];
            // offset (13 bits) and the M flag; a lone "atomic fragment" (both 0) is whole.
            if be16([x[2], x[3]]) & 0xfff9 != 0 {
                frag = true;
            }
            off += 8;
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
        if frag {
            return Err(Exit::PassIcmp);
        }
        return icmp_v6(l4, end, p);
    }
    if nh != PROTO_TCP && nh != PROTO_UDP {
        return Err(Exit::NotVip);
    }
    if frag {
        p.fragment = true;
        p.vip = Some(fragment_vip(&p.key.dst, FAMILY_V6, nh)?);
        return Ok(());
    }
    let (sport, dport) = ports(l4, end, nh, 40 + pl - off)?;
    p.key.sport = sport;
    p.key.dport = dport;
    p.vip = lookup_vip(&p.key.dst, FAMILY_V6, dport, nh);
    if p.vip.is_none() {
        return Err(Exit::NotVip);
    }
    Ok(())
}

/// ICMPv6 packet-too-big to a VIP, routed by its quoted packet.
#[inline(always)]
fn icmp_v6(icmp: usize, end: usize, p: &mut Parsed) -> Result<(), Exit> {
    if icmp + 8 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 8 bytes checked.
    let t: [u8; 2] = unsafe { load(icmp) };
    if t[0] != 2 {
        return Err(Exit::PassIcmp);
    }
    let inner = icmp + 8;
    if inner + 44 > end {
        return Err(Exit::DropMalformed);
    }
    // SAFETY: 44 bytes checked.
    let h: [u8; 8] = unsafe { load(inner) };
    if h[0] >> 4 != 6 {
        return Err(Exit::DropMalformed);
    }
    let proto = h[6];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Exit::PassIcmp);
    }
    // SAFETY: 44 bytes checked.
    let qsrc: [u8; 16] = unsafe { load(inner + 8) };
    if qsrc != p.key.dst {
        return Err(Exit::PassIcmp);
    }
    // SAFETY: 44 bytes checked.
    p.key.src = unsafe { load(inner + 24) };
    // SAFETY: 44 bytes checked.
    let pp: [u8; 4] = unsafe { load(inner + 40) };
    p.key.proto = proto;
    p.key.sport = u16::from_ne_bytes([pp[2], pp[3]]);
    p.key.dport = u16::from_ne_bytes([pp[0], pp[1]]);
    p.icmp_error = true;
    p.vip = lookup_vip(&p.key.dst, FAMILY_V6, p.key.dport, proto);
    if p.vip.is_none() {
        return Err(Exit::PassIcmp);
    }
    Ok(())
}
