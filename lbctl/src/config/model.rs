//! The validated configuration model: resolved types, defaults applied,
//! cross references checked. See `examples/lb.toml` for every field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// A whole, validated lb.toml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Node-wide settings (`[node]`).
    pub node: Node,
    /// Outer source addresses for IPIP forwarding (`[ipip]`; all empty when absent).
    pub ipip: Ipip,
    /// Virtual services (`[[vip]]`), in file order.
    pub vips: Vec<Vip>,
    /// VRRP instances (`[[vrrp_instance]]`), in file order.
    pub vrrp_instances: Vec<VrrpInstance>,
    /// Scripts VRRP instances can track (`[[vrrp_script]]`), in file order.
    pub vrrp_scripts: Vec<VrrpScript>,
}

impl Config {
    /// The VIP named `name`.
    pub fn vip(&self, name: &str) -> Option<&Vip> {
        self.vips.iter().find(|v| v.name == name)
    }

    /// The VRRP instance named `name`.
    pub fn vrrp_instance(&self, name: &str) -> Option<&VrrpInstance> {
        self.vrrp_instances.iter().find(|v| v.name == name)
    }

    /// The VRRP script named `name`.
    pub fn vrrp_script(&self, name: &str) -> Option<&VrrpScript> {
        self.vrrp_scripts.iter().find(|v| v.name == name)
    }

    /// VIPs that are active only while `instance` is MASTER.
    pub fn vips_of_instance<'a>(&'a self, instance: &'a str) -> impl Iterator<Item = &'a Vip> {
        self.vips
            .iter()
            .filter(move |v| v.vrrp_instance.as_deref() == Some(instance))
    }
}

/// IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Family of `addr`.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// "IPv4" or "IPv6", for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// `lb_common::FAMILY_V4` or `lb_common::FAMILY_V6`.
    pub fn to_abi(self) -> u8 {
        match self {
            Family::V4 => lb_common::FAMILY_V4,
            Family::V6 => lb_common::FAMILY_V6,
        }
    }
}

/// `[node]`: settings of this load balancer node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Interface the XDP program attaches to (or IPVS serves).
    pub interface: String,
    /// Which data plane to run.
    pub dataplane: DataplaneKind,
    /// How to attach the XDP program.
    pub xdp_mode: XdpMode,
    /// Largest L3 packet the egress link takes (576..=9216), for IPIP "too big".
    pub mtu: u32,
    /// ICMP errors the XDP program may send per second, per CPU (too-big
    /// replies; a token bucket, RFC 4443 section 2.4(f)).
    pub icmp_rate: u32,
    /// Depth of that token bucket.
    pub icmp_burst: u32,
    /// Directory of the control socket, the daemon lock and the data
    /// plane's records (absolute); pins live on bpffs, not here.
    pub state_dir: PathBuf,
    /// Leave program and maps pinned on exit, so the next `lbctl run` adopts them.
    pub keep_dataplane_on_exit: bool,
    /// Capacity of the connection table (flows of each family), shared out among the CPUs.
    pub conn_table_size: u32,
    /// Size of the VIP maps (1..=`lb_common::MAX_VIPS`); at least the number of VIPs.
    pub max_vips: u32,
    /// IPVS: what a backend that fails its check becomes, for VIPs without
    /// their own `on_unhealthy`.
    pub on_unhealthy: OnUnhealthy,
    /// Where `lbctl run` serves Prometheus metrics over HTTP (`GET
    /// /metrics`); `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// IPVS: what happens to a real server that fails its health check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnUnhealthy {
    /// Weight 0 (keepalived's `inhibit_on_failure`): no new connections,
    /// established ones run out on it.
    #[default]
    Drain,
    /// Deleted from the service (keepalived's default).
    Remove,
}

/// IPVS scheduler of a VIP: the IPVS data plane's own type.
pub use crate::dataplane::ipvs::Scheduler;

/// `node.dataplane`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataplaneKind {
    /// The XDP program of this project.
    Xdp,
    /// Kernel IPVS, programmed over generic netlink.
    Ipvs,
    /// XDP, falling back to IPVS when XDP cannot be loaded.
    Auto,
}

/// `node.xdp_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// Native (driver) XDP only.
    Driver,
    /// Generic (skb) XDP only.
    Skb,
    /// Driver mode, falling back to skb mode.
    Auto,
}

/// `[ipip]`: outer source of encapsulated packets.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Ipip {
    /// Outer IPv4 source; required when a VIP sends IPIP to an IPv4 backend.
    pub source_v4: Option<Ipv4Addr>,
    /// Outer IPv6 source; required when a VIP sends IPIP to an IPv6 backend.
    pub source_v6: Option<Ipv6Addr>,
    /// Low bits of the outer IPv4 source taken from the flow hash (0..=16).
    pub source_flow_bits_v4: u8,
    /// Low bits of the outer IPv6 source taken from the flow hash (0..=32).
    pub source_flow_bits_v6: u8,
}

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// IANA protocol number (`lb_common::PROTO_TCP` / `PROTO_UDP`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }

    /// "tcp" or "udp".
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How packets reach the backends of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// Direct routing: rewrite the Ethernet destination (LVS "DR"); backend on the same link and family.
    Dr,
    /// IPIP / IP6IP6 (or mixed) encapsulation (LVS "TUN"); outer family is the backend's.
    Ipip,
    /// NAT (LVS "MASQ"): IPVS data plane only; backend in the VIP's family,
    /// routing its replies back through this node.
    Nat,
}

/// Which parts of the flow the VIP hashes on: the data plane's own type.
pub use crate::dataplane::state::HashFields;

/// What a VIP does with new flows when no backend can take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnNoBackend {
    /// Drop the packets.
    Drop,
    /// Send them to this server (keepalived's `sorry_server`), by the VIP's forwarding method.
    SorryServer(IpAddr),
}

/// What identifies a VIP in the data plane: address, port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipIdentity {
    /// VIP address.
    pub address: IpAddr,
    /// Port; `None` for a port-less VIP (port 0 in `lb_common::VipKey`).
    pub port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
}

/// `[[vip]]`: one virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    /// Unique name.
    pub name: String,
    /// Virtual address.
    pub address: IpAddr,
    /// Port; `None` is a port-less VIP that takes every port of the address.
    pub port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
    /// Forwarding method.
    pub forwarding: Forwarding,
    /// Flow hash inputs.
    pub hash: HashFields,
    /// Maglev table size: a prime in 13..=131071.
    pub table_size: u32,
    /// What to do when no backend is available.
    pub on_no_backend: OnNoBackend,
    /// The VRRP instance gating this VIP: active only while that instance is
    /// MASTER. `None`: always active. Always names an existing instance.
    pub vrrp_instance: Option<String>,
    /// IPVS scheduler (default [`Scheduler::Mh`]).
    pub scheduler: Scheduler,
    /// IPVS: what a failed backend becomes (the VIP's, else the node's).
    pub on_unhealthy: OnUnhealthy,
    /// IPVS persistence timeout (whole seconds): clients stick to one real
    /// server for that long. `None`: not persistent, except port-less VIPs,
    /// which IPVS schedules only as persistent services (300 s then).
    pub persistence_timeout: Option<Duration>,
    /// Backends, in file order (at least one; addresses unique within the VIP).
    pub backends: Vec<Backend>,
}

impl Vip {
    /// Address, port and protocol.
    pub fn identity(&self) -> VipIdentity {
        VipIdentity {
            address: self.address,
            port: self.port,
            protocol: self.protocol,
        }
    }

    /// Address family of the VIP.
    pub fn family(&self) -> Family {
        Family::of(&self.address)
    }
}

/// `[[vip.backend]]`: one real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Address (for IPIP, the outer destination).
    pub address: IpAddr,
    /// Maglev weight; 0 drains the backend (established flows stay, no new ones).
    pub weight: u16,
    /// The effective health check: the backend's own, else the VIP's, else
    /// a TCP connect to the VIP port.
    pub health_check: HealthCheck,
}

/// A health check with its timing. With [`Probe::None`] the backend is
/// always up and the timing fields are unused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// What to probe.
    pub probe: Probe,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take (less than `interval`).
    pub timeout: Duration,
    /// Consecutive successes that bring a backend up (1..=100).
    pub rise: u32,
    /// Consecutive failures that bring a backend down (1..=100).
    pub fall: u32,
}

impl HealthCheck {
    /// Default interval of checks.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    /// Default timeout of checks.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default rise.
    pub const DEFAULT_RISE: u32 = 2;
    /// Default fall.
    pub const DEFAULT_FALL: u32 = 3;
}

/// The probe of a health check. Ports are resolved (the VIP port unless given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// No check: always healthy.
    None,
    /// TCP connect to `port`.
    Tcp {
        /// Port to connect to.
        port: u16,
    },
    /// HTTP GET.
    Http(HttpProbe),
    /// UDP request/response.
    Udp(UdpProbe),
    /// Run a program; exit status 0 is success. Gets no shell.
    Script {
        /// Program and arguments (non-empty).
        command: Vec<String>,
    },
}

/// An HTTP GET probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// Port.
    pub port: u16,
    /// Request path (starts with `/`).
    pub path: String,
    /// Host header; the backend address when `None`.
    pub host: Option<String>,
    /// Accepted status codes (default 200..=299).
    pub expect_status: Vec<RangeInclusive<u16>>,
    /// Substring the body must contain.
    pub expect_body: Option<String>,
}

impl HttpProbe {
    /// Whether `status` is accepted.
    pub fn status_ok(&self, status: u16) -> bool {
        self.expect_status.iter().any(|r| r.contains(&status))
    }
}

/// A UDP probe: send a datagram, wait for an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpProbe {
    /// Port.
    pub port: u16,
    /// Payload to send (may be empty).
    pub send: String,
    /// Substring the answer must contain; any answer is success when `None`.
    pub expect: Option<String>,
}

/// VRRP state an instance starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InitialState {
    /// Start as master (keepalived `state MASTER`): send adverts at once
    /// instead of waiting for the master-down timer. A higher-priority
    /// master still wins.
    Master,
    /// Start as backup (the usual choice).
    Backup,
}

/// VRRP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VrrpVersion {
    /// RFC 3768 (IPv4 only, advert_int in whole seconds, optional simple password).
    V2,
    /// RFC 5798 (IPv4 and IPv6, centisecond advert_int).
    V3,
}

/// Checksum of VRRPv3 over IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum V3Checksum {
    /// Include the IPv4 pseudo-header (RFC 5798 as implemented by keepalived up to 2.2.7 default).
    PseudoHeader,
    /// RFC 9568: the VRRP message only.
    Rfc9568,
}

/// An address the VRRP master holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualIpAddress {
    /// The address.
    pub address: IpAddr,
    /// Prefix length (32 / 128 when not given).
    pub prefix_len: u8,
    /// Interface to add it to; the instance's interface when `None`.
    pub dev: Option<String>,
}

/// A tracked object's effect on priority (keepalived semantics): 0 puts
/// the instance in FAULT while the object is down; a positive weight is
/// added to the priority while it is up; a negative one while it is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// Interface or script name.
    pub name: String,
    /// -254..=254.
    pub weight: i32,
}

/// `[[vrrp_instance]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpInstance {
    /// Unique name.
    pub name: String,
    /// Interface adverts are sent on.
    pub interface: String,
    /// Initial state.
    pub state: InitialState,
    /// VRID, 1..=255; unique per interface and family.
    pub virtual_router_id: u8,
    /// Priority 1..=255 (255: address owner).
    pub priority: u8,
    /// Advertisement interval (v2: whole seconds 1..=255; v3: 10ms steps, 10ms..=40.95s).
    pub advert_int: Duration,
    /// Protocol version.
    pub version: VrrpVersion,
    /// Address family of the instance (of its virtual addresses).
    pub family: Family,
    /// Whether a higher priority preempts a lower-priority master.
    pub preempt: bool,
    /// Delay before preempting after start (0..=1000s).
    pub preempt_delay: Duration,
    /// VRRPv2 simple password (at most 8 bytes).
    pub auth_pass: Option<String>,
    /// Source of unicast adverts.
    pub unicast_src_ip: Option<IpAddr>,
    /// Unicast peers; multicast when empty.
    pub unicast_peers: Vec<IpAddr>,
    /// Addresses held while master (non-empty, one family, no duplicates).
    pub virtual_ipaddress: Vec<VirtualIpAddress>,
    /// Tracked interfaces.
    pub track_interface: Vec<Track>,
    /// Tracked scripts; the weight is resolved (the instance's, else the script's).
    pub track_script: Vec<Track>,
    /// Weight applied while a VIP of this instance has no healthy backend.
    pub track_backends: Option<i32>,
    /// Program run with the instance name and new state appended as arguments.
    pub notify: Option<Vec<String>>,
    /// Delay of the second burst of gratuitous ARP/NA after becoming master.
    pub garp_master_delay: Duration,
    /// Gratuitous ARP/NA per burst.
    pub garp_master_repeat: u32,
    /// Period of gratuitous ARP/NA refresh while master; `None`: no refresh.
    pub garp_master_refresh: Option<Duration>,
    /// Gap between gratuitous ARP/NA of one burst.
    pub garp_interval: Duration,
    /// VRRPv3 IPv4 checksum to send.
    pub checksum: V3Checksum,
    /// Accept adverts with either VRRPv3 IPv4 checksum.
    pub accept_both_checksums: bool,
}

/// `[[vrrp_script]]`: a check VRRP instances can track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpScript {
    /// Unique name.
    pub name: String,
    /// Program and arguments (no shell).
    pub command: Vec<String>,
    /// Time between runs.
    pub interval: Duration,
    /// Time a run may take (less than `interval`).
    pub timeout: Duration,
    /// Default weight for instances tracking it (see [`Track`]).
    pub weight: i32,
    /// Consecutive successes to count as up (1..=100).
    pub rise: u32,
    /// Consecutive failures to count as down (1..=100).
    pub fall: u32,
}
