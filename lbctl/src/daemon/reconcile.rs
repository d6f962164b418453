//! The reconciler: config + health + VRRP + neighbours → [`DesiredState`].
//!
//! Pure functions only. The daemon's owner task keeps the inputs
//! ([`Inputs`]) up to date from events and calls [`desired_state`] after
//! every change; the data plane's `apply` then writes only what differs.
//!
//! Rules:
//! - a VIP gated by a VRRP instance is active only while that instance is
//!   MASTER; a VIP without `vrrp_instance` is always active;
//! - a backend takes new flows when it is healthy, has a weight above 0 and
//!   its L2 next hop has a MAC (a backend without a MAC is left out of the
//!   ring, see [`BackendSpec::in_ring`]); with a data plane that resolves
//!   next hops itself (IPVS, [`Inputs::kernel_resolves_next_hops`]) every
//!   backend counts as resolved ([`KERNEL_NEXT_HOP`]);
//! - when no regular backend of a VIP can take new flows and the VIP has a
//!   sorry server (`on_no_backend`), the sorry server is added to the VIP's
//!   backends (weight 1, always healthy) so the ring is not empty.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::config::{self, Config, OnNoBackend, Probe, VipIdentity};
use crate::dataplane::{
    BackendSpec, DesiredState, Forwarding, L2NextHop, NodeSettings, Protocol, VipSpec, VipState,
};
use crate::health::{CheckKind, CheckSpec, HttpCheck, ScriptCheck, Status, StatusSet, UdpCheck};
use lb_common::VLAN_UNTAGGED;

/// Identifies one backend of one VIP: the unit of health checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// The VIP (address, port, protocol).
    pub vip: VipIdentity,
    /// The backend address.
    pub addr: IpAddr,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", vip_spec(&self.vip), self.addr)
    }
}

/// VRRP role of an instance as far as the data plane cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VrrpRole {
    /// Holds the virtual addresses: the instance's VIPs are forwarded.
    Master,
    /// Standby (also Initialize): the instance's VIPs pass to the kernel.
    Backup,
    /// Fault: like Backup.
    Fault,
}

/// Everything besides the config that decides the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Health by backend; a backend missing here is down (unless it has no check).
    pub health: BTreeMap<BackendKey, bool>,
    /// VRRP role by instance name; a missing instance counts as Backup.
    pub vrrp: BTreeMap<String, VrrpRole>,
    /// Resolved L2 next hop (MAC and VLAN) by backend (or sorry server) address.
    pub next_hops: BTreeMap<IpAddr, L2NextHop>,
    /// MAC of the node's interface.
    pub iface_mac: [u8; 6],
    /// The data plane resolves next hops itself (kernel IPVS): `next_hops` is
    /// not used and every backend's `mac` is [`KERNEL_NEXT_HOP`].
    pub kernel_resolves_next_hops: bool,
}

/// The `BackendSpec::mac` of every backend when the kernel resolves next
/// hops (IPVS): "resolved", by the kernel. Never written to an XDP map.
pub const KERNEL_NEXT_HOP: [u8; 6] = [0; 6];

/// Maps a config protocol to the data plane's.
pub fn protocol(p: config::Protocol) -> Protocol {
    match p {
        config::Protocol::Tcp => Protocol::Tcp,
        config::Protocol::Udp => Protocol::Udp,
    }
}

/// The data plane's identity of a VIP.
pub fn vip_spec(id: &VipIdentity) -> VipSpec {
    VipSpec {
        addr: id.address,
        port: id.port,
        protocol: protocol(id.protocol),
    }
}

/// Node settings from the config and the interface MAC.
pub fn node_settings(cfg: &Config, iface_mac: [u8; 6]) -> NodeSettings {
    NodeSettings {
        iface_mac,
        mtu: cfg.node.mtu,
        ipip_src_v4: cfg.ipip.source_v4,
        ipip_src_v6: cfg.ipip.source_v6,
        ipip_src_flow_bits_v4: cfg.ipip.source_flow_bits_v4,
        ipip_src_flow_bits_v6: cfg.ipip.source_flow_bits_v6,
        debug: false,
        icmp_rate: cfg.node.icmp_rate,
        icmp_burst: cfg.node.icmp_burst,
    }
}

/// Whether a backend counts as healthy: no check means always up.
pub fn is_healthy(inputs: &Inputs, key: &BackendKey, probe: &Probe) -> bool {
    matches!(probe, Probe::None) || inputs.health.get(key).copied().unwrap_or(false)
}

/// Whether the VIPs of a VRRP instance are active.
pub fn vip_active(vip: &config::Vip, inputs: &Inputs) -> bool {
    match &vip.vrrp_instance {
        None => true,
        Some(name) => inputs.vrrp.get(name) == Some(&VrrpRole::Master),
    }
}

/// The L2 next hop of `addr` as far as the data plane needs it: its MAC,
/// once known, and its VLAN.
fn next_hop(inputs: &Inputs, addr: IpAddr) -> (Option<[u8; 6]>, u16) {
    if inputs.kernel_resolves_next_hops {
        return (Some(KERNEL_NEXT_HOP), VLAN_UNTAGGED);
    }
    match inputs.next_hops.get(&addr) {
        Some(h) => (Some(h.mac), h.vlan),
        None => (None, VLAN_UNTAGGED),
    }
}

/// The desired state of the data plane.
pub fn desired_state(cfg: &Config, inputs: &Inputs) -> DesiredState {
    let vips = cfg
        .vips
        .iter()
        .map(|vip| {
            let id = vip.identity();
            let mut backends: Vec<BackendSpec> = vip
                .backends
                .iter()
                .map(|b| {
                    let key = BackendKey {
                        vip: id,
                        addr: b.address,
                    };
                    let (mac, vlan) = next_hop(inputs, b.address);
                    BackendSpec {
                        addr: b.address,
                        weight: u32::from(b.weight),
                        healthy: is_healthy(inputs, &key, &b.health_check.probe),
                        mac,
                        vlan,
                    }
                })
                .collect();
            if let OnNoBackend::SorryServer(sorry) = vip.on_no_backend
                && !backends.iter().any(BackendSpec::in_ring)
                && !backends.iter().any(|b| b.addr == sorry)
            {
                let (mac, vlan) = next_hop(inputs, sorry);
                backends.push(BackendSpec {
                    addr: sorry,
                    weight: 1,
                    healthy: true,
                    mac,
                    vlan,
                });
            }
            VipState {
                spec: vip_spec(&id),
                forwarding: match vip.forwarding {
                    // NAT is IPVS-only (validated): the IPVS data plane takes
                    // it from its per-VIP options; nothing else sees it.
                    config::Forwarding::Dr | config::Forwarding::Nat => Forwarding::Dr,
                    config::Forwarding::Ipip => Forwarding::Ipip,
                },
                hash: vip.hash,
                ring_size: vip.table_size,
                active: vip_active(vip, inputs),
                debug: false,
                backends,
            }
        })
        .collect();
    DesiredState {
        node: node_settings(cfg, inputs.iface_mac),
        vips,
    }
}

/// A neighbour-resolution target: an address the data plane sends frames
/// towards and how (DR needs the address itself on-link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighTarget {
    /// Backend or sorry-server address.
    pub addr: IpAddr,
    /// Direct routing: the address must be on-link, no gateway allowed.
    pub on_link_only: bool,
}

/// Every address whose L2 next hop must be resolved. An address used by a
/// DR VIP and an IPIP VIP is listed once, as on-link-only.
pub fn neigh_targets(cfg: &Config) -> BTreeSet<NeighTarget> {
    let mut by_addr: BTreeMap<IpAddr, bool> = BTreeMap::new();
    for vip in &cfg.vips {
        let dr = vip.forwarding != config::Forwarding::Ipip;
        let sorry = match vip.on_no_backend {
            OnNoBackend::SorryServer(a) => Some(a),
            OnNoBackend::Drop => None,
        };
        for addr in vip.backends.iter().map(|b| b.address).chain(sorry) {
            *by_addr.entry(addr).or_insert(false) |= dr;
        }
    }
    by_addr
        .into_iter()
        .map(|(addr, on_link_only)| NeighTarget { addr, on_link_only })
        .collect()
}

/// The health check of one backend, or `None` when it has no check (always up).
pub fn check_spec(backend: &config::Backend) -> Option<CheckSpec> {
    let hc = &backend.health_check;
    let at = |port: u16| SocketAddr::new(backend.address, port);
    let kind = match &hc.probe {
        Probe::None => return None,
        Probe::Tcp { port } => CheckKind::Tcp(at(*port)),
        Probe::Http(h) => CheckKind::Http(HttpCheck {
            addr: at(h.port),
            path: h.path.clone(),
            host: h.host.clone(),
            status: StatusSet::from_ranges(h.expect_status.iter().map(|r| (*r.start(), *r.end()))),
            body_contains: h.expect_body.as_ref().map(|b| b.as_bytes().to_vec()),
        }),
        Probe::Udp(u) => CheckKind::Udp(UdpCheck {
            addr: at(u.port),
            payload: u.send.as_bytes().to_vec(),
            expect: u
                .expect
                .as_ref()
                .map(|e| e.as_bytes().to_vec())
                .unwrap_or_default(),
        }),
        Probe::Script { command } => {
            let (program, args) = command.split_first()?;
            CheckKind::Script(ScriptCheck {
                program: PathBuf::from(program),
                args: args.to_vec(),
            })
        }
    };
    Some(CheckSpec {
        kind,
        interval: hc.interval,
        timeout: hc.timeout,
        rise: hc.rise,
        fall: hc.fall,
        initial: Status::Down,
    })
}

/// Every checked backend with its check.
pub fn checks(cfg: &Config) -> BTreeMap<BackendKey, CheckSpec> {
    let mut out = BTreeMap::new();
    for vip in &cfg.vips {
        for b in &vip.backends {
            if let Some(spec) = check_spec(b) {
                out.insert(
                    BackendKey {
                        vip: vip.identity(),
                        addr: b.address,
                    },
                    spec,
                );
            }
        }
    }
    out
}

/// What to do with the running checks when the config changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckPlan {
    /// New checks (a backend added, or given a check): they start from the
    /// configured initial status (down).
    pub start: Vec<BackendKey>,
    /// Changed checks of a backend that stays: the old run stops and a new
    /// one starts from the backend's current health ([`restart_initial`]),
    /// so a changed `interval` or `timeout` does not take it out of the ring.
    pub restart: Vec<BackendKey>,
    /// Checks to stop for good (backend removed, or its check removed):
    /// the backend's health is forgotten.
    pub stop: Vec<BackendKey>,
    /// Checks that keep running with their health state.
    pub keep: Vec<BackendKey>,
}

/// Compares the running checks with the wanted ones. Both maps hold the
/// configured specs ([`checks`]); a check's `initial` status is not part of
/// the comparison (a backend seeded healthy runs with `initial` = Up, which
/// is not a config change). An unchanged check keeps running, a changed one
/// is restarted, a new one started, one no longer wanted stopped.
pub fn plan_checks(
    running: &BTreeMap<BackendKey, CheckSpec>,
    wanted: &BTreeMap<BackendKey, CheckSpec>,
) -> CheckPlan {
    let same = |a: &CheckSpec, b: &CheckSpec| {
        CheckSpec {
            initial: b.initial,
            ..a.clone()
        } == *b
    };
    let mut plan = CheckPlan::default();
    for (key, spec) in running {
        match wanted.get(key) {
            Some(w) if same(spec, w) => plan.keep.push(*key),
            Some(_) => plan.restart.push(*key),
            None => plan.stop.push(*key),
        }
    }
    for key in wanted.keys() {
        if !running.contains_key(key) {
            plan.start.push(*key);
        }
    }
    plan
}

/// The spec to run for a backend's configured check: a backend known to be
/// healthy (seeded from an adopted data plane or the kernel's IPVS table at
/// start, or up when its changed check is restarted by a reload) starts Up
/// and stays in the ring until the check fails `fall` times; otherwise the
/// configured initial status holds.
pub fn restart_initial(configured: &CheckSpec, healthy: Option<bool>) -> CheckSpec {
    let mut spec = configured.clone();
    if healthy == Some(true) {
        spec.initial = Status::Up;
    }
    spec
}

/// Per VRRP instance: whether at least one VIP gated by it has a backend that
/// can take new flows (for `track_backends`). Instances without VIPs count
/// as healthy.
pub fn instance_backends_healthy(cfg: &Config, state: &DesiredState) -> BTreeMap<String, bool> {
    let mut out: BTreeMap<String, bool> = cfg
        .vrrp_instances
        .iter()
        .map(|i| (i.name.clone(), true))
        .collect();
    for inst in &cfg.vrrp_instances {
        let mut any_vip = false;
        let mut all_served = true;
        for vip in cfg.vips_of_instance(&inst.name) {
            any_vip = true;
            let spec = vip_spec(&vip.identity());
            let served = state.vips.iter().find(|v| v.spec == spec).is_some_and(|v| {
                v.backends
                    .iter()
                    .any(|b| b.in_ring() && vip.backends.iter().any(|cb| cb.address == b.addr))
            });
            all_served &= served;
        }
        out.insert(inst.name.clone(), !any_vip || all_served);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const MAC9: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn cfg(extra: &str) -> Config {
        let text = format!(
            r#"
[node]
interface = "veth0"
[ipip]
source_v4 = "10.0.0.1"
{extra}
"#
        );
        match config::parse(&text, "test.toml") {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        }
    }

    const WEB: &str = r#"
[[vip]]
name = "web"
address = "10.0.0.100"
port = 80
sorry_server = "10.0.1.9"
health_check = { type = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 2 }
  [[vip.backend]]
  address = "10.0.1.1"
  weight = 100
  [[vip.backend]]
  address = "10.0.1.2"
  weight = 50
  [[vip.backend]]
  address = "10.0.1.3"
  health_check = { type = "none" }
  weight = 0
"#;

    fn web() -> Config {
        cfg(WEB)
    }

    fn key(c: &Config, addr: &str) -> BackendKey {
        BackendKey {
            vip: c.vips[0].identity(),
            addr: addr.parse().unwrap(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hop(mac: [u8; 6], vlan: u16) -> L2NextHop {
        L2NextHop { mac, vlan }
    }

    #[test]
    fn maps_the_config_onto_the_data_plane() {
        let c = web();
        let mut inputs = Inputs {
            iface_mac: [2, 0, 0, 0, 0, 0xaa],
            ..Default::default()
        };
        inputs.health.insert(key(&c, "10.0.1.1"), true);
        inputs
            .next_hops
            .insert(ip("10.0.1.1"), hop(MAC1, VLAN_UNTAGGED));
        inputs
            .next_hops
            .insert(ip("10.0.1.2"), hop(MAC2, VLAN_UNTAGGED));
        let s = desired_state(&c, &inputs);
        assert_eq!(s.node.iface_mac, [2, 0, 0, 0, 0, 0xaa]);
        assert_eq!(s.node.mtu, 1500);
        assert_eq!(s.node.ipip_src_v4, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(s.vips.len(), 1);
        let v = &s.vips[0];
        assert_eq!(v.spec.to_string(), "10.0.0.100:80/tcp");
        assert!(v.active, "no vrrp_instance: always active");
        assert_eq!(v.ring_size, 65537);
        assert_eq!(v.forwarding, Forwarding::Dr);
        let b: Vec<(String, u32, bool, Option<[u8; 6]>)> = v
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight, b.healthy, b.mac))
            .collect();
        assert_eq!(
            b,
            vec![
                ("10.0.1.1".into(), 100, true, Some(MAC1)),
                // no health event yet: down
                ("10.0.1.2".into(), 50, false, Some(MAC2)),
                // no check: up, but no MAC and drained
                ("10.0.1.3".into(), 0, true, None),
            ]
        );
    }

    #[test]
    fn a_backend_keeps_the_vlan_of_its_next_hop() {
        let c = web();
        let mut inputs = Inputs::default();
        inputs.next_hops.insert(ip("10.0.1.1"), hop(MAC1, 200));
        inputs
            .next_hops
            .insert(ip("10.0.1.2"), hop(MAC2, VLAN_UNTAGGED));
        // No backend healthy yet: the sorry server is in, on its own VLAN.
        inputs.next_hops.insert(ip("10.0.1.9"), hop(MAC9, 300));
        let s = desired_state(&c, &inputs);
        let vlans: Vec<(String, u16)> = s.vips[0]
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.vlan))
            .collect();
        assert_eq!(
            vlans,
            vec![
                ("10.0.1.1".into(), 200),
                ("10.0.1.2".into(), VLAN_UNTAGGED),
                // not resolved: no VLAN either
                ("10.0.1.3".into(), VLAN_UNTAGGED),
                ("10.0.1.9".into(), 300),
            ]
        );
    }

    #[test]
    fn sorry_server_only_when_no_backend_takes_flows() {
        let c = web();
        let mut inputs = Inputs::default();
        inputs
            .next_hops
            .insert(ip("10.0.1.1"), hop(MAC1, VLAN_UNTAGGED));
        inputs
            .next_hops
            .insert(ip("10.0.1.9"), hop(MAC9, VLAN_UNTAGGED));
        let s = desired_state(&c, &inputs);
        let last = s.vips[0].backends.last().unwrap();
        assert_eq!(last.addr, ip("10.0.1.9"));
        assert!(last.in_ring());

        inputs.health.insert(key(&c, "10.0.1.1"), true);
        let s = desired_state(&c, &inputs);
        assert_eq!(s.vips[0].backends.len(), 3, "sorry server gone");
        assert!(s.vips[0].backends.iter().all(|b| b.addr != ip("10.0.1.9")));
    }

    #[test]
    fn backend_without_mac_is_not_in_the_ring() {
        let c = web();
        let mut inputs = Inputs::default();
        inputs.health.insert(key(&c, "10.0.1.1"), true);
        let s = desired_state(&c, &inputs);
        assert!(!s.vips[0].backends[0].in_ring());
        inputs
            .next_hops
            .insert(ip("10.0.1.1"), hop(MAC1, VLAN_UNTAGGED));
        let s = desired_state(&c, &inputs);
        assert!(s.vips[0].backends[0].in_ring());
    }

    #[test]
    fn kernel_resolved_next_hops_need_no_mac() {
        let c = web();
        let mut inputs = Inputs {
            kernel_resolves_next_hops: true,
            ..Default::default()
        };
        inputs.health.insert(key(&c, "10.0.1.1"), true);
        let s = desired_state(&c, &inputs);
        let b = &s.vips[0].backends;
        assert!(
            b[0].in_ring(),
            "IPVS: healthy backend takes flows without a MAC"
        );
        assert_eq!(b[0].mac, Some(KERNEL_NEXT_HOP));
        assert!(!b[1].in_ring(), "still down");
        assert_eq!(b.len(), 3, "no sorry server while one backend is up");
        inputs.health.insert(key(&c, "10.0.1.1"), false);
        let s = desired_state(&c, &inputs);
        assert!(
            s.vips[0]
                .backends
                .last()
                .is_some_and(|b| b.addr == ip("10.0.1.9") && b.in_ring()),
            "sorry server, with no MAC either"
        );
    }

    #[test]
    fn vrrp_gates_vips() {
        let c = cfg(r#"
[[vip]]
name = "a"
address = "10.0.0.100"
port = 80
vrrp_instance = "VI_1"
  [[vip.backend]]
  address = "10.0.1.1"
[[vip]]
name = "b"
address = "10.0.0.101"
port = 80
  [[vip.backend]]
  address = "10.0.1.1"
[[vrrp_instance]]
name = "VI_1"
interface = "veth0"
virtual_router_id = 1
virtual_ipaddress = ["10.0.0.100"]
"#);
        let mut inputs = Inputs::default();
        let s = desired_state(&c, &inputs);
        assert!(!s.vips[0].active, "unknown role counts as backup");
        assert!(s.vips[1].active);
        inputs.vrrp.insert("VI_1".into(), VrrpRole::Master);
        assert!(desired_state(&c, &inputs).vips[0].active);
        inputs.vrrp.insert("VI_1".into(), VrrpRole::Fault);
        assert!(!desired_state(&c, &inputs).vips[0].active);

        // track_backends input: VI_1's only VIP has no healthy backend yet.
        let s = desired_state(&c, &inputs);
        assert_eq!(instance_backends_healthy(&c, &s).get("VI_1"), Some(&false));
        inputs.health.insert(
            BackendKey {
                vip: c.vips[0].identity(),
                addr: ip("10.0.1.1"),
            },
            true,
        );
        inputs
            .next_hops
            .insert(ip("10.0.1.1"), hop(MAC1, VLAN_UNTAGGED));
        let s = desired_state(&c, &inputs);
        assert_eq!(instance_backends_healthy(&c, &s).get("VI_1"), Some(&true));
    }

    #[test]
    fn sorry_server_does_not_count_as_healthy_backend_for_tracking() {
        let c = cfg(r#"
[[vip]]
name = "a"
address = "10.0.0.100"
port = 80
vrrp_instance = "VI_1"
sorry_server = "10.0.1.9"
  [[vip.backend]]
  address = "10.0.1.1"
[[vrrp_instance]]
name = "VI_1"
interface = "veth0"
virtual_router_id = 1
virtual_ipaddress = ["10.0.0.100"]
"#);
        let mut inputs = Inputs::default();
        inputs
            .next_hops
            .insert(ip("10.0.1.9"), hop(MAC9, VLAN_UNTAGGED));
        let s = desired_state(&c, &inputs);
        assert!(s.vips[0].backends.iter().any(|b| b.addr == ip("10.0.1.9")));
        assert_eq!(instance_backends_healthy(&c, &s).get("VI_1"), Some(&false));
    }

    #[test]
    fn neighbour_targets_merge_dr_and_ipip() {
        let c = cfg(r#"
[[vip]]
name = "a"
address = "10.0.0.100"
port = 80
forwarding = "ipip"
sorry_server = "10.0.2.9"
  [[vip.backend]]
  address = "10.0.1.1"
  [[vip.backend]]
  address = "10.0.2.2"
[[vip]]
name = "b"
address = "10.0.0.100"
port = 81
  [[vip.backend]]
  address = "10.0.1.1"
"#);
        let t: Vec<(String, bool)> = neigh_targets(&c)
            .into_iter()
            .map(|t| (t.addr.to_string(), t.on_link_only))
            .collect();
        assert_eq!(
            t,
            vec![
                ("10.0.1.1".into(), true),
                ("10.0.2.2".into(), false),
                ("10.0.2.9".into(), false)
            ]
        );
    }

    #[test]
    fn checks_map_every_probe() {
        let c = cfg(r#"
[[vip]]
name = "a"
address = "10.0.0.100"
port = 80
health_check = { type = "http", path = "/h", host = "x", expect_status = [200, "300-302"], expect_body = "ok", interval = "3s", timeout = "1s", rise = 4, fall = 5 }
  [[vip.backend]]
  address = "10.0.1.1"
  [[vip.backend]]
  address = "10.0.1.2"
  health_check = { type = "udp", port = 53, send = "ping", expect = "pong" }
  [[vip.backend]]
  address = "10.0.1.3"
  health_check = { type = "script", command = ["/bin/true", "x"] }
  [[vip.backend]]
  address = "10.0.1.4"
  health_check = { type = "none" }
  [[vip.backend]]
  address = "10.0.1.5"
  health_check = { type = "tcp", port = 8080 }
"#);
        let all = checks(&c);
        assert_eq!(all.len(), 4, "type none has no check");
        let http = &all[&key(&c, "10.0.1.1")];
        assert_eq!(http.interval, std::time::Duration::from_secs(3));
        assert_eq!((http.rise, http.fall), (4, 5));
        assert_eq!(http.initial, Status::Down);
        let CheckKind::Http(h) = &http.kind else {
            panic!("not http: {:?}", http.kind)
        };
        assert_eq!(h.addr, "10.0.1.1:80".parse().unwrap());
        assert_eq!(h.path, "/h");
        assert_eq!(h.host.as_deref(), Some("x"));
        assert!(h.status.contains(200) && h.status.contains(301) && !h.status.contains(201));
        assert_eq!(h.body_contains.as_deref(), Some(&b"ok"[..]));
        let CheckKind::Udp(u) = &all[&key(&c, "10.0.1.2")].kind else {
            panic!("not udp")
        };
        assert_eq!(u.addr, "10.0.1.2:53".parse().unwrap());
        assert_eq!(
            (u.payload.as_slice(), u.expect.as_slice()),
            (&b"ping"[..], &b"pong"[..])
        );
        let CheckKind::Script(s) = &all[&key(&c, "10.0.1.3")].kind else {
            panic!("not script")
        };
        assert_eq!(s.program, PathBuf::from("/bin/true"));
        assert_eq!(s.args, vec!["x".to_owned()]);
        assert_eq!(
            all[&key(&c, "10.0.1.5")].kind,
            CheckKind::Tcp("10.0.1.5:8080".parse().unwrap())
        );
    }

    #[test]
    fn reload_keeps_unchanged_checks() {
        let old = web();
        let new = cfg(r#"
[[vip]]
name = "web"
address = "10.0.0.100"
port = 80
health_check = { type = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 2 }
  [[vip.backend]]
  address = "10.0.1.1"
  weight = 10
  [[vip.backend]]
  address = "10.0.1.2"
  health_check = { type = "tcp", port = 81 }
  [[vip.backend]]
  address = "10.0.1.4"
"#);
        let plan = plan_checks(&checks(&old), &checks(&new));
        assert_eq!(
            plan.keep,
            vec![key(&old, "10.0.1.1")],
            "weight change keeps the check"
        );
        assert_eq!(plan.restart, vec![key(&old, "10.0.1.2")], "port changed");
        assert_eq!(plan.stop, Vec::<BackendKey>::new());
        assert_eq!(plan.start, vec![key(&new, "10.0.1.4")]);
        let plan = plan_checks(&checks(&new), &checks(&old));
        assert_eq!(plan.stop, vec![key(&new, "10.0.1.4")], "backend removed");
    }

    #[test]
    fn seeded_initial_status_is_not_a_change() {
        let c = web();
        let wanted = checks(&c);
        // What the daemon runs for backends seeded healthy (adopted data plane).
        let running: BTreeMap<BackendKey, CheckSpec> = wanted
            .iter()
            .map(|(k, s)| (*k, restart_initial(s, Some(true))))
            .collect();
        assert!(running.values().all(|s| s.initial == Status::Up));
        let plan = plan_checks(&running, &wanted);
        assert_eq!(plan.keep.len(), 2, "{plan:?}");
        assert!(plan.start.is_empty() && plan.restart.is_empty() && plan.stop.is_empty());
    }

    #[test]
    fn a_changed_interval_restarts_checks_from_current_health() {
        let old = web();
        let new = cfg(&WEB.replace("interval = \"1s\"", "interval = \"2s\""));
        let plan = plan_checks(&checks(&old), &checks(&new));
        assert_eq!(
            plan.restart,
            vec![key(&old, "10.0.1.1"), key(&old, "10.0.1.2")],
            "{plan:?}"
        );
        assert!(plan.start.is_empty() && plan.stop.is_empty() && plan.keep.is_empty());
        let wanted = checks(&new);
        let up = restart_initial(&wanted[&key(&new, "10.0.1.1")], Some(true));
        assert_eq!(
            up.initial,
            Status::Up,
            "a healthy backend stays in the ring"
        );
        assert_eq!(up.interval, std::time::Duration::from_secs(2));
        let down = restart_initial(&wanted[&key(&new, "10.0.1.2")], Some(false));
        assert_eq!(down.initial, Status::Down, "a down backend stays down");
        let unknown = restart_initial(&wanted[&key(&new, "10.0.1.2")], None);
        assert_eq!(unknown.initial, Status::Down);
    }
}
