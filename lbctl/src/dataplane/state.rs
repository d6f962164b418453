//! The desired state of the data plane: what should be forwarded where.
//!
//! Plain data, built by the reconciler from the config, health and VRRP, and
//! handed whole to a data plane's `apply`, which writes only what changed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{AddrKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, VipKey, vip_flags};

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// IANA protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// How packets reach a VIP's backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Direct routing: rewrite the destination MAC; backends hold the VIP on loopback.
    Dr,
    /// IPIP / IP6IP6 encapsulation to the backend's address.
    Ipip,
}

/// Which flow fields the Maglev hash uses. The VIP address and the protocol
/// always take part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct HashFields {
    /// Client address.
    pub src_addr: bool,
    /// Client port.
    pub src_port: bool,
    /// VIP port.
    pub dst_port: bool,
}

impl Default for HashFields {
    fn default() -> Self {
        Self {
            src_addr: true,
            src_port: true,
            dst_port: true,
        }
    }
}

impl HashFields {
    /// The `lb_common::vip_flags::HASH_NO_*` bits for this selection.
    pub fn vip_flags(self) -> u32 {
        let mut flags = 0;
        if !self.src_addr {
            flags |= vip_flags::HASH_NO_SRC_ADDR;
        }
        if !self.src_port {
            flags |= vip_flags::HASH_NO_SRC_PORT;
        }
        if !self.dst_port {
            flags |= vip_flags::HASH_NO_DST_PORT;
        }
        flags
    }
}

/// Identity of a VIP: (address, port, protocol); `port == None` is port-less.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct VipSpec {
    /// VIP address.
    pub addr: IpAddr,
    /// Port, or `None` for every port of the address.
    pub port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
}

impl std::fmt::Display for VipSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let port = self.port.map_or_else(|| "*".to_owned(), |p| p.to_string());
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{port}/{}", self.protocol),
            IpAddr::V6(a) => write!(f, "[{a}]:{port}/{}", self.protocol),
        }
    }
}

impl VipSpec {
    /// The VIP map key.
    pub fn key(&self) -> VipKey {
        let (addr, family) = addr_bytes(self.addr);
        VipKey {
            addr,
            port: self.port.unwrap_or(0).to_be(),
            proto: self.protocol.number(),
            family,
        }
    }
}

/// A backend of one VIP, as the data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackendSpec {
    /// Real server address.
    pub addr: IpAddr,
    /// Maglev weight; 0 drains (no new flows, existing flows stay).
    pub weight: u32,
    /// Passing its health check. An unhealthy backend leaves the table and
    /// its established flows are rehashed.
    pub healthy: bool,
    /// MAC of the L2 next hop towards it, once resolved.
    pub mac: Option<[u8; 6]>,
    /// VLAN ID frames to it are tagged with on the XDP interface's link, or
    /// [`lb_common::VLAN_UNTAGGED`] (the route to it leaves through that
    /// interface itself, not a VLAN interface on top of it).
    pub vlan: u16,
}

/// Where frames to a backend go on the XDP interface's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct L2NextHop {
    /// MAC of the next hop (the backend itself when on-link).
    pub mac: [u8; 6],
    /// VLAN ID of the route's VLAN interface, or [`lb_common::VLAN_UNTAGGED`].
    pub vlan: u16,
}

impl BackendSpec {
    /// Takes part in new-flow hashing.
    pub fn in_ring(&self) -> bool {
        self.healthy && self.weight > 0 && self.mac.is_some()
    }

    /// Keeps its established flows.
    pub fn alive(&self) -> bool {
        self.healthy && self.mac.is_some()
    }
}

/// One VIP and its backends.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VipState {
    /// Identity.
    pub spec: VipSpec,
    /// Forwarding method.
    pub forwarding: Forwarding,
    /// Hash fields.
    pub hash: HashFields,
    /// Maglev table size (prime).
    pub ring_size: u32,
    /// This node forwards the VIP (VRRP master, or no VRRP).
    pub active: bool,
    /// Log a debug event per forwarded packet.
    pub debug: bool,
    /// Backends in config order.
    pub backends: Vec<BackendSpec>,
}

impl VipState {
    /// `VipInfo::flags` for this VIP.
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        if self.active {
            f |= vip_flags::ACTIVE;
        }
        if self.forwarding == Forwarding::Ipip {
            f |= vip_flags::FWD_IPIP;
        }
        f |= self.hash.vip_flags();
        if self.debug {
            f |= vip_flags::DEBUG;
        }
        f
    }
}

impl DesiredState {
    /// `Backend::fast_flags` for the backends of `vip`: its
    /// [`VipState::flags`], without `ACTIVE` when it is port-less and
    /// another VIP has its address and protocol and a port. The general
    /// path gives that port's packets to the other VIP (an exact match
    /// first), and `lb`'s fast path, which reads a flow's VIP flags from
    /// its backend, does not look that up: it leaves such flows to the
    /// general path.
    pub fn fast_flags(&self, vip: &VipState) -> u16 {
        let shadowed = vip.spec.port.is_none()
            && self.vips.iter().any(|o| {
                o.spec.port.is_some()
                    && o.spec.addr == vip.spec.addr
                    && o.spec.protocol == vip.spec.protocol
            });
        let flags = if shadowed {
            vip.flags() & !vip_flags::ACTIVE
        } else {
            vip.flags()
        };
        // Every flag fits (asserted in lb-common; `flags` sets no other).
        (flags & vip_flags::ALL) as u16
    }
}

/// Node-wide data-plane settings.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct NodeSettings {
    /// MAC of the interface the program runs on.
    pub iface_mac: [u8; 6],
    /// Egress L3 MTU.
    pub mtu: u32,
    /// Outer IPv4 source for IPIP.
    pub ipip_src_v4: Option<Ipv4Addr>,
    /// Outer IPv6 source for IP6IP6.
    pub ipip_src_v6: Option<Ipv6Addr>,
    /// Low bits of the outer IPv4 source taken from the flow hash.
    pub ipip_src_flow_bits_v4: u8,
    /// Low bits of the outer IPv6 source taken from the flow hash.
    pub ipip_src_flow_bits_v6: u8,
    /// Debug events for every VIP.
    pub debug: bool,
    /// ICMP errors (too-big) the data plane may send per second, per CPU;
    /// 0: [`lb_common::DEFAULT_ICMP_RATE`].
    pub icmp_rate: u32,
    /// Burst of that rate limit; 0: [`lb_common::DEFAULT_ICMP_BURST`].
    pub icmp_burst: u32,
}

/// Everything the data plane should do.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct DesiredState {
    /// Node settings.
    pub node: NodeSettings,
    /// VIPs.
    pub vips: Vec<VipState>,
}

/// Address in map layout (IPv4 in the first 4 bytes) and its family.
pub fn addr_bytes(addr: IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, FAMILY_V4)
        }
        IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

/// The address-map key of an address.
pub fn addr_key(addr: IpAddr) -> AddrKey {
    let (addr, family) = addr_bytes(addr);
    AddrKey {
        addr,
        family,
        _pad: [0; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_key_is_network_order() {
        let spec = VipSpec {
            addr: "10.0.0.100".parse().unwrap(),
            port: Some(80),
            protocol: Protocol::Tcp,
        };
        let k = spec.key();
        assert_eq!(&k.addr[..4], &[10, 0, 0, 100]);
        assert_eq!(k.port.to_ne_bytes(), [0, 80]);
        assert_eq!(k.proto, 6);
        assert_eq!(k.family, FAMILY_V4);
        assert_eq!(spec.to_string(), "10.0.0.100:80/tcp");
    }

    #[test]
    fn drain_keeps_flows_but_leaves_the_ring() {
        let b = BackendSpec {
            addr: "10.0.1.1".parse().unwrap(),
            weight: 0,
            healthy: true,
            mac: Some([2, 0, 0, 0, 0, 1]),
            vlan: 0,
        };
        assert!(b.alive());
        assert!(!b.in_ring());
        let dead = BackendSpec {
            healthy: false,
            weight: 5,
            ..b.clone()
        };
        assert!(!dead.alive());
        assert!(!dead.in_ring());
    }

    #[test]
    fn fast_flags_leave_a_shadowed_portless_vip_to_the_general_path() {
        let vip = |addr: &str, port, protocol| VipState {
            spec: VipSpec {
                addr: addr.parse().unwrap(),
                port,
                protocol,
            },
            forwarding: Forwarding::Ipip,
            hash: HashFields::default(),
            ring_size: 251,
            active: true,
            debug: false,
            backends: Vec::new(),
        };
        let portless = vip("10.0.0.1", None, Protocol::Tcp);
        let mut st = DesiredState {
            node: NodeSettings::default(),
            vips: vec![portless.clone()],
        };
        let all = (vip_flags::ACTIVE | vip_flags::FWD_IPIP) as u16;
        assert_eq!(st.fast_flags(&portless), all, "alone");
        // Another address, or another protocol: no VIP takes its packets.
        st.vips.push(vip("10.0.0.2", Some(80), Protocol::Tcp));
        st.vips.push(vip("10.0.0.1", Some(53), Protocol::Udp));
        assert_eq!(st.fast_flags(&portless), all);
        // A port of its address and protocol: that port is the other VIP's.
        let exact = vip("10.0.0.1", Some(443), Protocol::Tcp);
        st.vips.push(exact.clone());
        assert_eq!(
            st.fast_flags(&portless),
            vip_flags::FWD_IPIP as u16,
            "shadowed"
        );
        // Every flag a VIP can have is carried.
        let mut every = exact.clone();
        every.debug = true;
        every.hash = HashFields {
            src_addr: false,
            src_port: false,
            dst_port: false,
        };
        every.spec.port = Some(444);
        assert_eq!(every.flags() & !vip_flags::ALL, 0);
        assert_eq!(u32::from(st.fast_flags(&every)), every.flags());
        assert_eq!(
            st.fast_flags(&exact),
            all,
            "a VIP of a port is never shadowed"
        );
    }

    #[test]
    fn flags_follow_the_vip() {
        let v = VipState {
            spec: VipSpec {
                addr: "2001:db8::1".parse().unwrap(),
                port: None,
                protocol: Protocol::Udp,
            },
            forwarding: Forwarding::Ipip,
            hash: HashFields {
                src_addr: true,
                src_port: false,
                dst_port: false,
            },
            ring_size: 13,
            active: true,
            debug: false,
            backends: vec![],
        };
        assert_eq!(
            v.flags(),
            vip_flags::ACTIVE
                | vip_flags::FWD_IPIP
                | vip_flags::HASH_NO_SRC_PORT
                | vip_flags::HASH_NO_DST_PORT
        );
    }
}
