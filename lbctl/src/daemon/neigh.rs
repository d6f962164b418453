//! Neighbour resolution: the MAC of the L2 next hop towards every backend.
//!
//! For each [`NeighTarget`] the kernel's route to the address is looked up
//! (`RTM_GETROUTE`, like `ip route get`): the next hop is the route's
//! gateway, or the address itself when it is on-link. Direct-routing
//! targets must be on-link. The route must leave through the interface the
//! XDP program runs on (XDP_TX sends frames back out of it), or through an
//! 802.1Q VLAN interface on top of it: frames to that target then leave
//! tagged with the VLAN's ID (the program adds, rewrites or removes the tag).
//!
//! The next hop's MAC comes from the kernel neighbour table (`RTM_GETNEIGH`).
//! When the entry is missing or unusable, resolution is triggered by sending
//! one UDP datagram to the next hop's discard port (9): the kernel ARPs / NDs
//! for it like for any traffic. Changes are followed through the netlink
//! neighbour multicast group (any change triggers a new pass) and a periodic
//! refresh (every second while something is unresolved, else every
//! [`REFRESH`]). Stale entries are re-probed every [`STALE_REPROBE`] so a
//! changed MAC is noticed even though forwarded traffic bypasses the kernel.
//!
//! [`select`] is the pure decision; [`Resolver`] does the netlink I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo as LinkInfoNla, LinkMessage, VlanProtocol,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::reconcile::NeighTarget;
use crate::dataplane::L2NextHop;
use lb_common::VLAN_UNTAGGED;

/// Refresh period when everything is resolved.
pub const REFRESH: Duration = Duration::from_secs(5);
/// Refresh period while some target is unresolved.
pub const RETRY: Duration = Duration::from_secs(1);
/// How often a usable but stale entry is re-probed.
pub const STALE_REPROBE: Duration = Duration::from_secs(30);
/// Port that resolution datagrams are sent to (discard).
pub const PROBE_PORT: u16 = 9;

/// Errors of the netlink side.
#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    /// Opening the netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// The interface does not exist.
    #[error("no interface named {0}")]
    NoInterface(String),
    /// The interface has no 6-byte hardware address.
    #[error("interface {0} has no Ethernet address")]
    NoMac(String),
}

/// The kernel's route towards a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Output interface index.
    pub oif: Option<u32>,
    /// Gateway, when not on-link.
    pub gateway: Option<IpAddr>,
}

/// A usable-or-not neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    /// Link-layer address.
    pub mac: Option<[u8; 6]>,
    /// Kernel state.
    pub state: NeighbourState,
}

/// Outcome for one target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Resolution {
    /// Resolved: frames for the target go to `mac` (the next hop's), on
    /// VLAN `vlan`.
    Resolved {
        /// Next hop address.
        next_hop: IpAddr,
        /// Its MAC.
        #[serde(serialize_with = "ser_mac")]
        mac: [u8; 6],
        /// VLAN ID of the route's VLAN interface ([`VLAN_UNTAGGED`]: the
        /// route leaves through the XDP interface itself).
        vlan: u16,
    },
    /// Waiting for the kernel to resolve the next hop.
    Pending {
        /// Next hop address.
        next_hop: IpAddr,
    },
    /// Cannot be reached the way the data plane needs.
    Unusable {
        /// Why.
        reason: String,
    },
}

fn ser_mac<S: serde::Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mac(mac))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Resolution {
    /// The next hop's MAC and VLAN, when resolved.
    pub fn next_hop(&self) -> Option<L2NextHop> {
        match self {
            Resolution::Resolved { mac, vlan, .. } => Some(L2NextHop {
                mac: *mac,
                vlan: *vlan,
            }),
            _ => None,
        }
    }
}

/// Whether the kernel's entry may be used for forwarding.
pub fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// What to do for one target given its route and the neighbour entry of
/// the next hop on the route's interface: `ifindex` (the XDP interface) or
/// one of `vlans` (index to VLAN ID: its 802.1Q VLAN interfaces). Pure.
pub fn select(
    target: NeighTarget,
    route: Option<RouteInfo>,
    ifindex: u32,
    vlans: &BTreeMap<u32, u16>,
    entry: Option<NeighEntry>,
) -> Resolution {
    let Some(route) = route else {
        return Resolution::Unusable {
            reason: "no route".into(),
        };
    };
    let vlan = match route.oif {
        Some(oif) if oif == ifindex => VLAN_UNTAGGED,
        Some(oif) if vlans.contains_key(&oif) => vlans[&oif],
        oif => {
            return Resolution::Unusable {
                reason: format!(
                    "route leaves through interface index {}, neither the XDP interface \
                     ({ifindex}) nor an 802.1Q VLAN interface on it",
                    oif.map_or_else(|| "none".to_owned(), |i| i.to_string())
                ),
            };
        }
    };
    let next_hop = match route.gateway {
        Some(gw) if target.on_link_only => {
            return Resolution::Unusable {
                reason: format!("direct routing needs the backend on-link, route is via {gw}"),
            };
        }
        Some(gw) => gw,
        None => target.addr,
    };
    match entry {
        Some(NeighEntry {
            mac: Some(mac),
            state,
        }) if usable(state) && mac != [0; 6] => Resolution::Resolved {
            next_hop,
            mac,
            vlan,
        },
        _ => Resolution::Pending { next_hop },
    }
}

/// Interface facts the daemon needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Hardware address.
    pub mac: [u8; 6],
}

/// Netlink I/O for neighbour resolution.
#[derive(Clone, Debug)]
pub struct Resolver {
    handle: Handle,
}

impl Resolver {
    /// Opens a netlink connection (spawned on the current tokio runtime).
    ///
    /// # Errors
    /// The socket cannot be opened.
    pub fn new() -> Result<Self, NeighError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Index and MAC of interface `name`.
    ///
    /// # Errors
    /// No such interface, no MAC, netlink errors.
    pub async fn link(&self, name: &str) -> Result<LinkInfo, NeighError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let msg = match links.next().await {
            Some(Ok(m)) => m,
            Some(Err(rtnetlink::Error::NetlinkError(e))) if e.raw_code() == -libc::ENODEV => {
                return Err(NeighError::NoInterface(name.to_owned()));
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err(NeighError::NoInterface(name.to_owned())),
        };
        let mac = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) if b.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(b);
                    Some(m)
                }
                _ => None,
            })
            .ok_or_else(|| NeighError::NoMac(name.to_owned()))?;
        Ok(LinkInfo {
            index: msg.header.index,
            mac,
        })
    }

    /// The 802.1Q VLAN interfaces on interface `parent`: index to VLAN ID.
    ///
    /// # Errors
    /// Netlink errors.
    pub async fn vlans(&self, parent: u32) -> Result<BTreeMap<u32, u16>, NeighError> {
        let mut out = BTreeMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(m) = links.next().await {
            if let Some((index, vid)) = vlan_on(&m?, parent) {
                out.insert(index, vid);
            }
        }
        Ok(out)
    }

    /// The route to `addr` (`ip route get`), `None` when unreachable.
    ///
    /// # Errors
    /// Netlink errors other than "unreachable".
    pub async fn route(&self, addr: IpAddr) -> Result<Option<RouteInfo>, NeighError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        let mut s = self.handle.route().get(msg).execute();
        match s.next().await {
            Some(Ok(r)) => {
                let mut info = RouteInfo {
                    oif: None,
                    gateway: None,
                };
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Oif(i) => info.oif = Some(*i),
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                            info.gateway = Some(IpAddr::V4(*g));
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => {
                            info.gateway = Some(IpAddr::V6(*g));
                        }
                        _ => {}
                    }
                }
                Ok(Some(info))
            }
            Some(Err(rtnetlink::Error::NetlinkError(e)))
                if matches!(
                    -e.raw_code(),
                    libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ESRCH
                ) =>
            {
                Ok(None)
            }
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// The neighbour table, by (interface index, address).
    ///
    /// # Errors
    /// Netlink errors.
    pub async fn neighbours(&self) -> Result<HashMap<(u32, IpAddr), NeighEntry>, NeighError> {
        let mut out = HashMap::new();
        let mut s = self.handle.neighbours().get().execute();
        while let Some(m) = s.next().await {
            if let Some((k, v)) = parse_neigh(&m?) {
                out.insert(k, v);
            }
        }
        Ok(out)
    }
}

/// `(index, VLAN ID)` when link `m` is an 802.1Q VLAN interface on
/// interface `parent` of the same network namespace. An 802.1ad (QinQ
/// service) VLAN is not one: its tag has another EtherType.
pub fn vlan_on(m: &LinkMessage, parent: u32) -> Option<(u32, u16)> {
    let mut on_parent = false;
    let mut id = None;
    let mut dot1q = true;
    for a in &m.attributes {
        match a {
            LinkAttribute::Link(p) => on_parent = *p == parent,
            // The parent index names a link in another namespace.
            LinkAttribute::LinkNetNsId(_) => return None,
            LinkAttribute::LinkInfo(infos) => {
                let mut is_vlan = false;
                for i in infos {
                    match i {
                        LinkInfoNla::Kind(InfoKind::Vlan) => is_vlan = true,
                        LinkInfoNla::Data(InfoData::Vlan(v)) => {
                            for x in v {
                                match x {
                                    InfoVlan::Id(n) => id = Some(*n),
                                    InfoVlan::Protocol(p) => {
                                        dot1q = *p == VlanProtocol::Ieee8021Q;
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if !is_vlan {
                    return None;
                }
            }
            _ => {}
        }
    }
    let id = id.filter(|v| (1..=4094).contains(v))?;
    (on_parent && dot1q).then_some((m.header.index, id))
}

fn parse_neigh(m: &NeighbourMessage) -> Option<((u32, IpAddr), NeighEntry)> {
    let mut addr = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                addr = Some(IpAddr::V4(*v4));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                addr = Some(IpAddr::V6(*v6));
            }
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                let mut x = [0u8; 6];
                x.copy_from_slice(b);
                mac = Some(x);
            }
            _ => {}
        }
    }
    Some((
        (m.header.ifindex, addr?),
        NeighEntry {
            mac,
            state: m.header.state,
        },
    ))
}

/// Makes the kernel resolve `next_hop`: one datagram to its discard port.
fn trigger(next_hop: IpAddr) {
    let bind: SocketAddr = match next_hop {
        IpAddr::V4(_) => ([0u8; 4], 0).into(),
        IpAddr::V6(_) => ([0u16; 8], 0).into(),
    };
    let r = UdpSocket::bind(bind).and_then(|s| s.send_to(b"", (next_hop, PROBE_PORT)));
    match r {
        Ok(_) => debug!(%next_hop, "neighbour resolution triggered"),
        // EAGAIN / unreachable while ARP is pending is expected; try again next pass.
        Err(e) => debug!(%next_hop, error = %e, "resolution datagram not sent"),
    }
}

/// Resolves `targets` on interface `ifindex` until `cancel`, publishing the
/// result whenever it changes.
pub async fn run(
    resolver: Resolver,
    ifindex: u32,
    mut targets: watch::Receiver<BTreeSet<NeighTarget>>,
    out: watch::Sender<BTreeMap<IpAddr, Resolution>>,
    cancel: CancellationToken,
) {
    let mut events = match rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh]) {
        Ok((conn, _handle, msgs)) => {
            tokio::spawn(conn);
            Some(msgs)
        }
        Err(e) => {
            warn!(error = %e, "no neighbour notifications; falling back to polling");
            None
        }
    };
    let mut last_probe: HashMap<IpAddr, Instant> = HashMap::new();
    let mut vlans = BTreeMap::new();
    loop {
        let wanted = targets.borrow_and_update().clone();
        let result = pass(&resolver, ifindex, &wanted, &mut vlans, &mut last_probe).await;
        let pending = result
            .values()
            .any(|r| !matches!(r, Resolution::Resolved { .. }));
        out.send_if_modified(|cur| {
            if *cur == result {
                return false;
            }
            for (addr, r) in &result {
                if cur.get(addr) != Some(r) {
                    match r {
                        Resolution::Resolved { next_hop, mac, vlan } => {
                            info!(backend = %addr, %next_hop, mac = %format_mac(mac), vlan, "next hop resolved");
                        }
                        Resolution::Pending { next_hop } => {
                            info!(backend = %addr, %next_hop, "next hop not resolved yet; backend left out of the table");
                        }
                        Resolution::Unusable { reason } => {
                            warn!(backend = %addr, %reason, "backend cannot be reached by the data plane");
                        }
                    }
                }
            }
            *cur = result;
            true
        });
        let wait = if pending { RETRY } else { REFRESH };
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        // Wait for the timer, a target change or a neighbour event (debounced).
        tokio::select! {
            () = cancel.cancelled() => return,
            () = &mut sleep => {}
            r = targets.changed() => if r.is_err() { return },
            Some(_) = async {
                match events.as_mut() {
                    Some(e) => e.next().await,
                    None => std::future::pending().await,
                }
            } => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(e) = events.as_mut() {
                    while e.try_recv().is_ok() {}
                }
            }
        }
    }
}

/// One resolution pass over `targets`. `vlans` is the last list of VLAN
/// interfaces read, kept when reading it again fails (a transient netlink
/// error must not take the backends behind them out of the table).
async fn pass(
    resolver: &Resolver,
    ifindex: u32,
    targets: &BTreeSet<NeighTarget>,
    vlans: &mut BTreeMap<u32, u16>,
    last_probe: &mut HashMap<IpAddr, Instant>,
) -> BTreeMap<IpAddr, Resolution> {
    let table = match resolver.neighbours().await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "reading the neighbour table failed");
            HashMap::new()
        }
    };
    match resolver.vlans(ifindex).await {
        Ok(v) => *vlans = v,
        Err(e) => warn!(error = %e, "listing the VLAN interfaces failed; using the last list"),
    }
    let mut out = BTreeMap::new();
    for t in targets {
        let route = match resolver.route(t.addr).await {
            Ok(r) => r,
            Err(e) => {
                out.insert(
                    t.addr,
                    Resolution::Unusable {
                        reason: format!("route lookup failed: {e}"),
                    },
                );
                continue;
            }
        };
        let entry = route.and_then(|r| {
            let next_hop = r.gateway.unwrap_or(t.addr);
            table.get(&(r.oif?, next_hop)).copied()
        });
        let res = select(*t, route, ifindex, vlans, entry);
        match &res {
            Resolution::Pending { next_hop } => {
                trigger(*next_hop);
                last_probe.insert(*next_hop, Instant::now());
            }
            Resolution::Resolved { next_hop, .. }
                if entry.is_some_and(|e| e.state == NeighbourState::Stale) =>
            {
                let due = last_probe
                    .get(next_hop)
                    .is_none_or(|t| t.elapsed() >= STALE_REPROBE);
                if due {
                    trigger(*next_hop);
                    last_probe.insert(*next_hop, Instant::now());
                }
            }
            _ => {}
        }
        out.insert(t.addr, res);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(addr: &str, on_link_only: bool) -> NeighTarget {
        NeighTarget {
            addr: addr.parse().unwrap(),
            on_link_only,
        }
    }
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];

    fn entry(state: NeighbourState) -> Option<NeighEntry> {
        Some(NeighEntry {
            mac: Some(MAC),
            state,
        })
    }

    #[test]
    fn on_link_backend_uses_its_own_entry() {
        let r = select(
            t("10.0.1.1", true),
            Some(RouteInfo {
                oif: Some(4),
                gateway: None,
            }),
            4,
            &no_vlans(),
            entry(NeighbourState::Reachable),
        );
        assert_eq!(
            r,
            Resolution::Resolved {
                next_hop: "10.0.1.1".parse().unwrap(),
                mac: MAC,
                vlan: VLAN_UNTAGGED,
            }
        );
        assert_eq!(
            r.next_hop(),
            Some(L2NextHop {
                mac: MAC,
                vlan: VLAN_UNTAGGED
            })
        );
    }

    #[test]
    fn ipip_backend_behind_a_gateway_uses_the_gateway() {
        let r = select(
            t("10.9.0.1", false),
            Some(RouteInfo {
                oif: Some(4),
                gateway: Some("10.0.0.254".parse().unwrap()),
            }),
            4,
            &no_vlans(),
            entry(NeighbourState::Stale),
        );
        assert_eq!(
            r,
            Resolution::Resolved {
                next_hop: "10.0.0.254".parse().unwrap(),
                mac: MAC,
                vlan: VLAN_UNTAGGED,
            }
        );
    }

    #[test]
    fn dr_backend_behind_a_gateway_is_unusable() {
        let r = select(
            t("10.9.0.1", true),
            Some(RouteInfo {
                oif: Some(4),
                gateway: Some("10.0.0.254".parse().unwrap()),
            }),
            4,
            &no_vlans(),
            entry(NeighbourState::Reachable),
        );
        assert!(matches!(r, Resolution::Unusable { .. }), "{r:?}");
        assert_eq!(r.next_hop(), None);
    }

    #[test]
    fn other_interface_or_no_route_is_unusable() {
        let route = Some(RouteInfo {
            oif: Some(5),
            gateway: None,
        });
        assert!(matches!(
            select(
                t("10.0.1.1", false),
                route,
                4,
                &no_vlans(),
                entry(NeighbourState::Reachable)
            ),
            Resolution::Unusable { .. }
        ));
        assert!(matches!(
            select(t("10.0.1.1", false), None, 4, &no_vlans(), None),
            Resolution::Unusable { .. }
        ));
    }

    #[test]
    fn missing_incomplete_or_failed_entries_are_pending() {
        let route = Some(RouteInfo {
            oif: Some(4),
            gateway: None,
        });
        for e in [
            None,
            entry(NeighbourState::Incomplete),
            entry(NeighbourState::Failed),
            Some(NeighEntry {
                mac: None,
                state: NeighbourState::Reachable,
            }),
        ] {
            assert_eq!(
                select(t("10.0.1.1", true), route, 4, &no_vlans(), e),
                Resolution::Pending {
                    next_hop: "10.0.1.1".parse().unwrap()
                },
                "{e:?}"
            );
        }
    }

    fn no_vlans() -> BTreeMap<u32, u16> {
        BTreeMap::new()
    }

    #[test]
    fn a_route_through_a_vlan_interface_tags_with_its_id() {
        let vlans = BTreeMap::from([(7, 200), (8, 300)]);
        for (gateway, next_hop) in [(None, "10.0.2.1"), (Some("10.0.2.254"), "10.0.2.254")] {
            let r = select(
                t("10.0.2.1", gateway.is_none()),
                Some(RouteInfo {
                    oif: Some(7),
                    gateway: gateway.map(|g| g.parse().unwrap()),
                }),
                4,
                &vlans,
                entry(NeighbourState::Reachable),
            );
            assert_eq!(
                r,
                Resolution::Resolved {
                    next_hop: next_hop.parse().unwrap(),
                    mac: MAC,
                    vlan: 200,
                }
            );
        }
        // Not a VLAN of the XDP interface (or not 802.1Q): unusable.
        let r = select(
            t("10.0.2.1", true),
            Some(RouteInfo {
                oif: Some(9),
                gateway: None,
            }),
            4,
            &vlans,
            entry(NeighbourState::Reachable),
        );
        assert!(matches!(r, Resolution::Unusable { .. }), "{r:?}");
    }

    fn vlan_link(index: u32, parent: u32, id: u16, proto: Option<VlanProtocol>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Link(parent));
        let mut data = vec![InfoVlan::Id(id)];
        if let Some(p) = proto {
            data.push(InfoVlan::Protocol(p));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfoNla::Kind(InfoKind::Vlan),
            LinkInfoNla::Data(InfoData::Vlan(data)),
        ]));
        m
    }

    #[test]
    fn only_802_1q_vlans_on_the_xdp_interface_count() {
        assert_eq!(vlan_on(&vlan_link(7, 4, 200, None), 4), Some((7, 200)));
        assert_eq!(
            vlan_on(&vlan_link(7, 4, 200, Some(VlanProtocol::Ieee8021Q)), 4),
            Some((7, 200))
        );
        // QinQ service VLAN, another parent, another namespace, VLAN ID 0.
        assert_eq!(
            vlan_on(&vlan_link(7, 4, 200, Some(VlanProtocol::Ieee8021Ad)), 4),
            None
        );
        assert_eq!(vlan_on(&vlan_link(7, 5, 200, None), 4), None);
        let mut other_ns = vlan_link(7, 4, 200, None);
        other_ns.attributes.push(LinkAttribute::LinkNetNsId(1));
        assert_eq!(vlan_on(&other_ns, 4), None);
        assert_eq!(vlan_on(&vlan_link(7, 4, 0, None), 4), None);
        // Not a VLAN (a macvlan on the same parent).
        let mut mv = LinkMessage::default();
        mv.header.index = 8;
        mv.attributes.push(LinkAttribute::Link(4));
        mv.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfoNla::Kind(
                InfoKind::MacVlan,
            )]));
        assert_eq!(vlan_on(&mv, 4), None);
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(
            format_mac(&[0x02, 0, 0xab, 0, 0, 0xff]),
            "02:00:ab:00:00:ff"
        );
    }
}
