//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6)
//! announcing the virtual addresses after becoming Master (RFC 5798 §6.4.1,
//! §6.4.2: "broadcast a gratuitous ARP request" / "send an unsolicited ND
//! Neighbor Advertisement").
//!
//! - ARP: an Ethernet broadcast ARP *request* whose sender and target
//!   protocol addresses are both the VIP (RFC 5227 §3 "ARP Announcement"),
//!   sent on an `AF_PACKET` socket bound to the interface.
//! - NA: ICMPv6 type 136 to ff02::1 with the Override flag, the VIP as
//!   target and our MAC as target link-layer address option (RFC 4861
//!   §7.2.6), hop limit 255, on a raw ICMPv6 socket (the kernel fills in the
//!   checksum and picks the link-local source).
//!
//!   The Router flag: RFC 5798 §6.4.1/§6.4.2 ask for it, since a VRRP
//!   router's virtual address is a default gateway. But R tells every
//!   neighbour "the sender is a router" (RFC 4861 §4.4), and a host that
//!   later sees R clear removes it from its Default Router List (§7.2.5);
//!   a load balancer's VIP is often not a router at all. So, as keepalived
//!   does, R is set only when the node forwards IPv6 on that interface
//!   (`/proc/sys/net/ipv6/conf/<iface>/forwarding` is 1), read at each
//!   announcement so a sysctl change applies to the next one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

/// `ETH_P_ARP`.
const ETH_P_ARP: u16 = 0x0806;
/// IPv6 all-nodes multicast address.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Build the Ethernet frame of a gratuitous ARP request for `vip`.
pub fn arp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol IPv4
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac); // sender hardware address
    f[28..32].copy_from_slice(&vip.octets()); // sender protocol address
    // target hardware address stays zero
    f[38..42].copy_from_slice(&vip.octets()); // target protocol address
    f
}

/// NA flag: Router (RFC 4861 §4.4).
const NA_ROUTER: u8 = 0x80;
/// NA flag: Override.
const NA_OVERRIDE: u8 = 0x20;

/// Build an unsolicited neighbour advertisement (ICMPv6 message, checksum
/// left zero for the kernel) for `vip` with our `mac`: Override set,
/// Solicited clear, Router set when `router` (see the module docs).
pub fn na_message(mac: [u8; 6], vip: Ipv6Addr, router: bool) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136; // Neighbor Advertisement
    m[4] = NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
    m[8..24].copy_from_slice(&vip.octets());
    m[24] = 2; // option: target link-layer address
    m[25] = 1; // length in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

/// Whether a `/proc/sys/net/ipv6/conf/*/forwarding` value means the
/// interface forwards (any non-zero number; unreadable text: no).
pub fn parse_forwarding(text: &str) -> bool {
    text.trim().parse::<u32>().is_ok_and(|v| v != 0)
}

/// Whether this node forwards IPv6 on `ifname` (read from `/proc` now, in
/// the calling thread's network namespace). An unreadable value or an
/// odd name counts as not forwarding.
pub fn ipv6_forwarding(ifname: &str) -> bool {
    if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
        return false;
    }
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding"))
        .is_ok_and(|t| parse_forwarding(&t))
}

/// Sends announcements on one interface.
#[derive(Debug)]
pub struct Announcer {
    ifindex: u32,
    ifname: String,
    mac: [u8; 6],
    arp: Option<Socket>,
    icmp6: Option<Socket>,
}

impl Announcer {
    /// Open the sockets needed for `vips` on interface `ifindex` (named
    /// `ifname`) with Ethernet address `mac`.
    pub fn new(ifindex: u32, ifname: &str, mac: [u8; 6], vips: &[IpAddr]) -> io::Result<Announcer> {
        let arp = if vips.iter().any(IpAddr::is_ipv4) {
            // Protocol 0: a send-only packet socket that receives nothing.
            let s = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
            s.bind(&link_addr(ifindex)?)?;
            s.set_nonblocking(true)?;
            Some(s)
        } else {
            None
        };
        let icmp6 = if vips.iter().any(IpAddr::is_ipv6) {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            s.set_multicast_if_v6(ifindex)?;
            s.set_multicast_hops_v6(255)?;
            s.set_unicast_hops_v6(255)?;
            s.set_multicast_loop_v6(false)?;
            // Never read: keep the receive queue from filling with traffic.
            s.set_recv_buffer_size(0)?;
            s.set_nonblocking(true)?;
            Some(s)
        } else {
            None
        };
        Ok(Announcer {
            ifindex,
            ifname: ifname.to_owned(),
            mac,
            arp,
            icmp6,
        })
    }

    /// Announce one address.
    pub fn announce(&self, vip: IpAddr) -> io::Result<()> {
        match (vip, &self.arp, &self.icmp6) {
            (IpAddr::V4(a), Some(s), _) => {
                s.send(&arp_frame(self.mac, a))?;
            }
            (IpAddr::V6(a), _, Some(s)) => {
                let dst = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, self.ifindex));
                let router = ipv6_forwarding(&self.ifname);
                s.send_to(&na_message(self.mac, a, router), &dst)?;
            }
            _ => return Err(io::Error::other("no socket for this address family")),
        }
        Ok(())
    }
}

/// A `sockaddr_ll` for binding a packet socket to interface `ifindex`
/// (all protocols 0: send only).
fn link_addr(ifindex: u32) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex out of range"))?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` is a `sockaddr_storage`, larger than and
    // suitably aligned for `sockaddr_ll`; the view only writes plain integer
    // fields of a zeroed value.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_ifindex = ifindex;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
        .map_err(|_| io::Error::other("sockaddr_ll size"))?;
    // SAFETY: the storage holds an initialised `sockaddr_ll` of `len` bytes.
    Ok(unsafe { SockAddr::new(storage, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_announcement_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = arp_frame(mac, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[10, 0, 0, 100]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 100]);
    }

    #[test]
    fn na_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip: Ipv6Addr = "2001:db8::100".parse().expect("addr");
        let m = na_message(mac, vip, false);
        assert_eq!(m[0], 136);
        assert_eq!(m[1], 0);
        // Override only: not forwarding, so not a router (RFC 4861 §4.4).
        assert_eq!(m[4], 0x20);
        assert_eq!(&m[8..24], &vip.octets());
        assert_eq!(&m[24..26], &[2, 1]);
        assert_eq!(&m[26..32], &mac);
        // Forwarding: Router and Override (RFC 5798 §6.4.1/§6.4.2 R flag).
        let r = na_message(mac, vip, true);
        assert_eq!(r[4], 0xa0);
        assert_eq!(r[..4], m[..4]);
        assert_eq!(r[5..], m[5..]);
    }

    #[test]
    fn forwarding_sysctl_values() {
        assert!(parse_forwarding("1\n"));
        assert!(parse_forwarding("2"));
        assert!(!parse_forwarding("0\n"));
        assert!(!parse_forwarding(""));
        assert!(!parse_forwarding("yes"));
        assert!(!ipv6_forwarding("../../../etc"));
        assert!(!ipv6_forwarding("lbt-no-such-interface"));
    }
}
