//! Raw IP sockets for VRRP (IP protocol 112), IPv4 and IPv6.
//!
//! - one **receive** socket per (interface, family), shared by the
//!   instances on it ([`RxSocket`], dispatched by VRID in [`super::rx`]),
//!   bound to the interface (`SO_BINDTODEVICE`), joined to 224.0.0.18 /
//!   ff02::12 when an instance on it uses multicast. It is not bound to an
//!   address: a raw socket bound to a local address only receives packets
//!   addressed to it, which would hide the multicast adverts;
//! - one **send** socket per instance ([`TxSocket`]) bound to the primary address (the source of our
//!   adverts, and part of the checksum), on the interface, TTL / hop limit
//!   255 for unicast and multicast, multicast loop off (so we never hear
//!   ourselves; the shell also drops packets from its own address).
//!
//! IPv4 raw sockets deliver the IP header (`IP_HDRINCL` stays off for
//! sending: the kernel writes it), from which [`VrrpSocket::recv`] takes the
//! TTL, source and destination. IPv6 raw sockets never deliver the header:
//! the hop limit and destination come as ancillary data
//! (`IPV6_RECVHOPLIMIT`, `IPV6_RECVPKTINFO`), the source from `recvmsg`.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn6, recv, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::codec::RxMeta;
use super::{Family, IPPROTO_VRRP, MCAST_GROUP_V4, MCAST_GROUP_V6, REQUIRED_TTL};

/// Largest packet read (a VRRP advert is at most 8 + 255 * 16 + 40 bytes).
pub const RECV_BUF: usize = 4600;

/// Errors setting up a VRRP socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A socket call failed.
    #[error("{what}: {source}")]
    Io {
        /// Which call.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The primary address is of the other family.
    #[error("primary address {0} does not match the socket family")]
    Family(IpAddr),
    /// Another instance already receives this VRID on this interface and
    /// family.
    #[error("VRID {vrid} is already used on {interface} by another instance")]
    VridTaken {
        /// Interface.
        interface: String,
        /// The VRID.
        vrid: u8,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError::Io { what, source }
}

fn nix_err(what: &'static str) -> impl FnOnce(nix::Error) -> SocketError {
    move |e| SocketError::Io {
        what,
        source: io::Error::from(e),
    }
}

/// A received packet: IP facts and where the VRRP message is in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Source, destination, TTL / hop limit.
    pub meta: RxMeta,
    /// The VRRP message within the receive buffer.
    pub payload: Range<usize>,
}

/// The receive socket of one (interface, family), shared by every
/// instance on it (see [`super::rx`]): raw, protocol 112, bound to the
/// interface, not to an address.
#[derive(Debug)]
pub struct RxSocket {
    family: Family,
    ifindex: u32,
    rx: AsyncFd<Socket>,
    joined: std::sync::atomic::AtomicBool,
}

impl RxSocket {
    /// Open the receive socket on interface `ifname` (index `ifindex`).
    pub fn open(ifname: &str, ifindex: u32, family: Family) -> Result<RxSocket, SocketError> {
        let proto = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
        let domain = match family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let rx = Socket::new(domain, Type::RAW, proto).map_err(io_err("socket (receive)"))?;
        rx.bind_device(Some(ifname.as_bytes()))
            .map_err(io_err("SO_BINDTODEVICE (receive)"))?;
        if family == Family::V6 {
            setsockopt(&rx, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(nix_err("IPV6_RECVPKTINFO"))?;
            setsockopt(&rx, sockopt::Ipv6RecvHopLimit, &true)
                .map_err(nix_err("IPV6_RECVHOPLIMIT"))?;
        }
        rx.set_nonblocking(true)
            .map_err(io_err("O_NONBLOCK (receive)"))?;
        // SAFETY: `rx` is an open socket owned by the AsyncFd for its whole
        // life; a socket2 `Socket` always returns the same descriptor.
        let rx = unsafe { AsyncFd::register_with_interest(rx, Interest::READABLE) }
            .map_err(|e| io_err("register with tokio")(io::Error::from(e)))?;
        Ok(RxSocket {
            family,
            ifindex,
            rx,
            joined: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Join 224.0.0.18 / ff02::12 on the interface (once; later calls do
    /// nothing).
    pub fn join_multicast(&self) -> Result<(), SocketError> {
        use std::sync::atomic::Ordering;
        if self.joined.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let s = self.rx.get_ref();
        let r = match self.family {
            Family::V4 => s
                .join_multicast_v4_n(
                    &MCAST_GROUP_V4,
                    &InterfaceIndexOrAddress::Index(self.ifindex),
                )
                .map_err(io_err("IP_ADD_MEMBERSHIP 224.0.0.18")),
            Family::V6 => s
                .join_multicast_v6(&MCAST_GROUP_V6, self.ifindex)
                .map_err(io_err("IPV6_ADD_MEMBERSHIP ff02::12")),
        };
        if r.is_err() {
            self.joined.store(false, Ordering::Release);
        }
        r
    }

    /// Wait for the next packet. `Ok(None)`: a packet arrived but its IP
    /// header (IPv4) or ancillary data (IPv6) was unusable. Cancel safe.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        loop {
            let mut guard = self.rx.readable().await?;
            let res = guard.try_io(|s| {
                let fd = s.get_ref().as_raw_fd();
                match self.family {
                    Family::V4 => recv(fd, buf, MsgFlags::empty())
                        .map(|n| parse_ipv4(buf.get(..n).unwrap_or(&[])))
                        .map_err(io::Error::from),
                    Family::V6 => recv_v6(fd, buf),
                }
            });
            match res {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The send socket of one instance: raw, protocol 112, bound to the
/// primary address and the interface, TTL / hop limit 255, multicast loop
/// off. It never reads: a filter drops everything the kernel would queue
/// to it (every raw socket of protocol 112 gets a copy of every packet).
#[derive(Debug)]
pub struct TxSocket {
    ifindex: u32,
    tx: Socket,
}

impl TxSocket {
    /// Open the send socket on `ifname` (index `ifindex`) with `primary`
    /// as the source address.
    pub fn open(ifname: &str, ifindex: u32, primary: IpAddr) -> Result<TxSocket, SocketError> {
        let proto = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
        let domain = match primary {
            IpAddr::V4(_) => Domain::IPV4,
            IpAddr::V6(_) => Domain::IPV6,
        };
        let tx = Socket::new(domain, Type::RAW, proto).map_err(io_err("socket (send)"))?;
        // Classic BPF "ret #0": accept no packet for reading.
        tx.attach_filter(&[socket2::SockFilter::new(0x06, 0, 0, 0)])
            .map_err(io_err("SO_ATTACH_FILTER (send)"))?;
        tx.bind_device(Some(ifname.as_bytes()))
            .map_err(io_err("SO_BINDTODEVICE (send)"))?;
        match primary {
            IpAddr::V4(src) => {
                tx.set_header_included_v4(false)
                    .map_err(io_err("IP_HDRINCL"))?;
                tx.set_ttl_v4(u32::from(REQUIRED_TTL))
                    .map_err(io_err("IP_TTL"))?;
                tx.set_multicast_ttl_v4(u32::from(REQUIRED_TTL))
                    .map_err(io_err("IP_MULTICAST_TTL"))?;
                tx.set_multicast_if_v4(&src)
                    .map_err(io_err("IP_MULTICAST_IF"))?;
                tx.set_multicast_loop_v4(false)
                    .map_err(io_err("IP_MULTICAST_LOOP"))?;
                tx.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
                    .map_err(io_err("bind (send)"))?;
            }
            IpAddr::V6(src) => {
                tx.set_unicast_hops_v6(u32::from(REQUIRED_TTL))
                    .map_err(io_err("IPV6_UNICAST_HOPS"))?;
                tx.set_multicast_hops_v6(u32::from(REQUIRED_TTL))
                    .map_err(io_err("IPV6_MULTICAST_HOPS"))?;
                tx.set_multicast_if_v6(ifindex)
                    .map_err(io_err("IPV6_MULTICAST_IF"))?;
                tx.set_multicast_loop_v6(false)
                    .map_err(io_err("IPV6_MULTICAST_LOOP"))?;
                tx.bind(&SockAddr::from(SocketAddrV6::new(
                    src,
                    0,
                    0,
                    scope_for(&src, ifindex),
                )))
                .map_err(io_err("bind (send)"))?;
            }
        }
        tx.set_nonblocking(true)
            .map_err(io_err("O_NONBLOCK (send)"))?;
        Ok(TxSocket { ifindex, tx })
    }

    /// Send one VRRP message (the kernel adds the IP header) to `dst`.
    /// Never blocks: a full socket buffer is an error (`WouldBlock`).
    pub fn send(&self, msg: &[u8], dst: IpAddr) -> io::Result<()> {
        let addr = match dst {
            IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, 0)),
            IpAddr::V6(a) => {
                SocketAddr::V6(SocketAddrV6::new(a, 0, 0, scope_for(&a, self.ifindex)))
            }
        };
        let n = self.tx.send_to(msg, &SockAddr::from(addr))?;
        if n != msg.len() {
            return Err(io::Error::other(format!(
                "short send: {n} of {}",
                msg.len()
            )));
        }
        Ok(())
    }
}

/// The scope id to use with `a`: the interface for link-local and
/// link-scope multicast addresses, 0 otherwise.
fn scope_for(a: &Ipv6Addr, ifindex: u32) -> u32 {
    if a.is_unicast_link_local() || (a.is_multicast() && (a.segments()[0] & 0x000f) <= 2) {
        ifindex
    } else {
        0
    }
}

fn recv_v6(fd: i32, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let len = msg.bytes;
    let src = msg.address.map(|a| a.ip());
    let mut dst = None;
    let mut hops = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv6PacketInfo(pi) => {
                    dst = Some(Ipv6Addr::from(pi.ipi6_addr.s6_addr));
                }
                ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
                _ => {}
            }
        }
    }
    Ok(match (src, dst, hops) {
        (Some(src), Some(dst), Some(ttl)) => Some(Received {
            meta: RxMeta {
                src: IpAddr::V6(src),
                dst: IpAddr::V6(dst),
                ttl,
            },
            payload: 0..len,
        }),
        _ => None,
    })
}

/// Parse the IPv4 header a raw socket delivers: TTL, addresses and the
/// payload range (bounded by the total length). `None` if malformed or
/// not VRRP.
pub fn parse_ipv4(pkt: &[u8]) -> Option<Received> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || pkt.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
    // The kernel hands raw sockets the datagram as received; a total
    // length beyond it means truncation.
    if total < ihl || total > pkt.len() {
        return None;
    }
    if *pkt.get(9)? != IPPROTO_VRRP {
        return None;
    }
    let ttl = *pkt.get(8)?;
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
    Some(Received {
        meta: RxMeta {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            ttl,
        },
        payload: ihl..total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ttl: u8, total: u16, ihl_words: u8) -> Vec<u8> {
        let mut h = vec![0u8; usize::from(ihl_words) * 4];
        h[0] = 0x40 | ihl_words;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[8] = ttl;
        h[9] = IPPROTO_VRRP;
        h[12..16].copy_from_slice(&[192, 0, 2, 1]);
        h[16..20].copy_from_slice(&[224, 0, 0, 18]);
        h
    }

    #[test]
    fn ipv4_header_parsed() {
        let mut p = header(255, 28, 5);
        p.extend_from_slice(&[0x31, 1, 100, 1, 0, 100, 0, 0]);
        let r = parse_ipv4(&p).expect("valid");
        assert_eq!(r.meta.ttl, 255);
        assert_eq!(r.meta.src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r.meta.dst, IpAddr::V4(MCAST_GROUP_V4));
        assert_eq!(r.payload, 20..28);
    }

    #[test]
    fn ipv4_options_and_padding() {
        // 24-byte header (one option word), trailing Ethernet padding.
        let mut p = header(64, 32, 6);
        p.extend_from_slice(&[0u8; 8]);
        p.extend_from_slice(&[0xee; 6]);
        let r = parse_ipv4(&p).expect("valid");
        assert_eq!(r.meta.ttl, 64);
        assert_eq!(r.payload, 24..32);
    }

    #[test]
    fn ipv4_malformed_rejected() {
        assert_eq!(parse_ipv4(&[]), None);
        assert_eq!(parse_ipv4(&[0x45; 10]), None);
        // total length beyond the data
        let p = header(255, 60, 5);
        assert_eq!(parse_ipv4(&p), None);
        // IHL below 5
        let mut p = header(255, 20, 5);
        p[0] = 0x44;
        assert_eq!(parse_ipv4(&p), None);
        // IPv6 version nibble
        let mut p = header(255, 20, 5);
        p[0] = 0x65;
        assert_eq!(parse_ipv4(&p), None);
        // other protocol
        let mut p = header(255, 20, 5);
        p[9] = 6;
        assert_eq!(parse_ipv4(&p), None);
    }

    #[test]
    fn scope_ids() {
        assert_eq!(scope_for(&"fe80::1".parse().expect("addr"), 7), 7);
        assert_eq!(scope_for(&MCAST_GROUP_V6, 7), 7);
        assert_eq!(scope_for(&"2001:db8::1".parse().expect("addr"), 7), 0);
    }
}
