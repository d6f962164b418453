//! Packet fixtures for the XDP programs: a loaded data plane with a known
//! desired state, packet builders (etherparse), and a runner that pushes one
//! packet through BPF_PROG_TEST_RUN and returns the verdict and output bytes.

use std::{collections::BTreeMap, net::IpAddr};

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, VlanId};
use lb_common::{ConnKey, FAMILY_V4, FAMILY_V6};
use lbctl::dataplane::{
    BackendSpec, DesiredState, Forwarding, HashFields, NodeSettings, Protocol, VipSpec, VipState,
    xdp::{LoadOptions, XdpDataplane, programs},
};

/// XDP verdicts.
pub mod verdict {
    /// XDP_DROP.
    pub const DROP: u32 = 1;
    /// XDP_PASS.
    pub const PASS: u32 = 2;
    /// XDP_TX.
    pub const TX: u32 = 3;
}

/// The balancer's own MAC.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The client-side router's MAC (source of incoming frames).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
/// Outer IPv4 source for IPIP.
pub const IPIP_SRC_V4: [u8; 4] = [10, 0, 0, 1];
/// Outer IPv6 source for IP6IP6.
pub const IPIP_SRC_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// Egress MTU configured in the fixtures.
pub const MTU: u32 = 1500;
/// Connection-table capacity of the fixture data plane (all CPUs).
pub const CONN_TABLE_SIZE: u32 = 4096;
/// Maglev table size used by the fixtures (prime).
pub const RING: u32 = 65537;

/// MAC of fixture backend `n`.
pub const fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, n]
}

/// A backend spec with the fixture MAC `n`.
pub fn backend(addr: &str, n: u8, weight: u32) -> BackendSpec {
    BackendSpec {
        addr: ip(addr),
        weight,
        healthy: true,
        mac: Some(backend_mac(n)),
        vlan: lb_common::VLAN_UNTAGGED,
    }
}

/// Parses an address literal.
pub fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad fixture address {s}: {e}"))
}

/// A VIP spec.
pub fn vip(addr: &str, port: Option<u16>, protocol: Protocol) -> VipSpec {
    VipSpec {
        addr: ip(addr),
        port,
        protocol,
    }
}

/// A VIP state with default hashing, active, the given backends.
pub fn vip_state(spec: VipSpec, forwarding: Forwarding, backends: Vec<BackendSpec>) -> VipState {
    VipState {
        spec,
        forwarding,
        hash: HashFields::default(),
        ring_size: RING,
        active: true,
        debug: false,
        backends,
    }
}

/// Node settings of the fixtures.
pub fn node() -> NodeSettings {
    NodeSettings {
        iface_mac: LB_MAC,
        mtu: MTU,
        ipip_src_v4: Some(IPIP_SRC_V4.into()),
        ipip_src_v6: Some(IPIP_SRC_V6.into()),
        ipip_src_flow_bits_v4: 0,
        ipip_src_flow_bits_v6: 0,
        debug: false,
        icmp_rate: 0,
        icmp_burst: 0,
    }
}

/// A loaded data plane programmed with a desired state.
pub struct Lab {
    /// The data plane.
    pub dp: XdpDataplane,
    /// What it was last given.
    pub state: DesiredState,
}

/// Pins the calling thread to CPU `cpu` (the data plane's connection
/// tables are per CPU first: what a test sees depends on where it runs).
///
/// # Panics
/// When the CPU does not exist or the call fails.
pub fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu set");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .unwrap_or_else(|e| panic!("pin the thread to CPU {cpu}: {e}"));
}

/// The shared connection table's slot of a flow with flow hash `hash`, in
/// a data plane loaded with [`CONN_TABLE_SIZE`] (as the data plane indexes it).
pub fn shared_slot(hash: u32) -> u32 {
    hash & (lb_common::shared_conn_entries(CONN_TABLE_SIZE) - 1)
}

impl Lab {
    /// Loads the object and applies `state`, and pins the calling thread to
    /// CPU 0: the connection table is per CPU first, and a test that follows
    /// a flow across runs runs them all on one CPU (as RSS keeps a flow on
    /// one CPU), unless it tests a flow that moves.
    ///
    /// # Panics
    /// When loading, applying or pinning fails (a test failure).
    pub fn new(state: DesiredState) -> Self {
        Self::with_max_vips(state, 16)
    }

    /// As [`Lab::new`], with room for `max_vips` VIPs (ids).
    ///
    /// # Panics
    /// As [`Lab::new`].
    pub fn with_max_vips(state: DesiredState, max_vips: u32) -> Self {
        pin_to_cpu(0);
        let mut dp = XdpDataplane::load(LoadOptions {
            ring_stride: RING,
            max_vips,
            conn_table_size: CONN_TABLE_SIZE,
        })
        .expect("load lb-ebpf (needs root)");
        dp.apply(&state).expect("apply");
        Self { dp, state }
    }

    /// Applies a changed state.
    ///
    /// # Panics
    /// When apply fails.
    pub fn apply(&mut self, state: DesiredState) -> lbctl::dataplane::xdp::ApplyReport {
        let r = self.dp.apply(&state).expect("apply");
        self.state = state;
        r
    }

    /// Runs `pkt` through program `prog`; returns the verdict and the output frame.
    ///
    /// # Errors
    /// The kernel refuses the input (e.g. shorter than an Ethernet header).
    pub fn run_prog(
        &self,
        prog: &str,
        pkt: &[u8],
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let p = self.dp.program(prog).expect("program");
        let mut out = vec![0u8; pkt.len() + 512];
        let r = p.test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Runs `pkt` through the balancer.
    ///
    /// # Panics
    /// When the kernel refuses the run.
    pub fn run(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.run_prog(programs::LB, pkt).expect("test run")
    }

    /// A map of the load balancer program, by name, opened anew (to read or
    /// write entries the data plane's API does not expose).
    ///
    /// # Panics
    /// When the program's maps cannot be listed or `name` is not among them.
    pub fn lb_map(&self, name: &str) -> aya::maps::MapData {
        let info = self
            .dp
            .program(programs::LB)
            .expect("program")
            .info()
            .expect("program info");
        let ids = info.map_ids().expect("map ids").expect("map ids");
        ids.into_iter()
            .map(|id| aya::maps::MapData::from_id(id).expect("map by id"))
            .find(|m| m.info().expect("map info").name_as_str() == Some(name))
            .unwrap_or_else(|| panic!("no map {name}"))
    }

    /// Reason counters by name.
    ///
    /// # Panics
    /// When the maps cannot be read.
    pub fn reasons(&self) -> BTreeMap<&'static str, u64> {
        self.dp.stats().expect("stats").reasons
    }

    /// Sum of all reason counters (every run of `lb` adds exactly one).
    pub fn reasons_total(&self) -> u64 {
        self.reasons()
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    **k,
                    "conn_hit"
                        | "conn_miss"
                        | "conn_stale"
                        | "conn_evicted"
                        | "conn_shared"
                        | lbctl::dataplane::xdp::FAST_PATH
                )
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The backend address the data plane's live table gives a flow (no connection table).
    pub fn predicted_backend(&self, spec: &VipSpec, key: &ConnKey) -> Option<IpAddr> {
        let ring = self.dp.live_ring(spec)?;
        let id = ring[lb_common::ring_index(lb_common::flow_hash(key), ring.len() as u32) as usize];
        let vip = self.state.vips.iter().find(|v| v.spec == *spec)?;
        vip.backends
            .iter()
            .find(|b| self.dp.backend_id(spec, b.addr) == Some(id))
            .map(|b| b.addr)
    }
}

/// The connection key of a client flow (unmasked), as the data plane builds it.
pub fn conn_key(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: Protocol) -> ConnKey {
    let (s, family) = lbctl::dataplane::state::addr_bytes(src);
    let (d, _) = lbctl::dataplane::state::addr_bytes(dst);
    ConnKey {
        src: lb_common::addr_words(&s),
        dst: lb_common::addr_words(&d),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: proto.number(),
        family,
        _pad: [0; 2],
    }
}

/// Masks a key the way a VIP's hash fields do.
pub fn masked(mut k: ConnKey, h: HashFields) -> ConnKey {
    if !h.src_addr {
        k.src = [0; 4];
    }
    if !h.src_port {
        k.sport = 0;
    }
    if !h.dst_port {
        k.dport = 0;
    }
    k
}

/// A client packet: Ethernet from the router to the LB, optional VLAN, IPv4 or
/// IPv6 (by address family), TCP or UDP, with `payload`.
pub fn client_packet(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    proto: Protocol,
    vlan: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC);
    let mut out = Vec::new();
    macro_rules! finish {
        ($ipb:expr) => {
            match proto {
                Protocol::Tcp => $ipb.tcp(sport, dport, 1000, 64240).write(&mut out, payload),
                Protocol::Udp => $ipb.udp(sport, dport).write(&mut out, payload),
            }
        };
    }
    let r = match (ip(src), ip(dst), vlan) {
        (IpAddr::V4(s), IpAddr::V4(d), None) => finish!(eth.ipv4(s.octets(), d.octets(), 64)),
        (IpAddr::V6(s), IpAddr::V6(d), None) => finish!(eth.ipv6(s.octets(), d.octets(), 64)),
        (IpAddr::V4(s), IpAddr::V4(d), Some(v)) => finish!(
            eth.single_vlan(VlanId::try_new(v).expect("vlan id"))
                .ipv4(s.octets(), d.octets(), 64)
        ),
        (IpAddr::V6(s), IpAddr::V6(d), Some(v)) => finish!(
            eth.single_vlan(VlanId::try_new(v).expect("vlan id"))
                .ipv6(s.octets(), d.octets(), 64)
        ),
        _ => panic!("mixed families in a client packet"),
    };
    r.expect("build packet");
    out
}

/// The frame DR sends: the input with new Ethernet addresses.
pub fn dr_expected(input: &[u8], backend_mac: [u8; 6]) -> Vec<u8> {
    let mut out = input.to_vec();
    out[..6].copy_from_slice(&backend_mac);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

/// `frame` with its 802.1Q tag set to `tci` (added when it has none), or
/// without one (`None`): the frame as it leaves on a backend's VLAN.
pub fn with_tag(frame: &[u8], tci: Option<u16>) -> Vec<u8> {
    let tagged = frame[12..14] == [0x81, 0x00];
    let mut out = frame[..12].to_vec();
    if let Some(t) = tci {
        out.extend_from_slice(&[0x81, 0x00]);
        out.extend_from_slice(&t.to_be_bytes());
    }
    out.extend_from_slice(&frame[if tagged { 16 } else { 12 }..]);
    out
}

/// Puts every backend of `st` on VLAN `vlan` (as a route through a VLAN
/// interface with this ID would).
pub fn backends_on_vlan(st: &mut DesiredState, vlan: u16) {
    for v in &mut st.vips {
        for b in &mut v.backends {
            b.vlan = vlan;
        }
    }
}

/// The frame IPIP sends: L2 to `next_hop`, an outer header to `backend` from
/// the fixture source, then the input's IP packet unchanged.
pub fn ipip_expected(input: &[u8], backend: IpAddr, next_hop: [u8; 6], flow_hash: u32) -> Vec<u8> {
    let vlan = u16::from_be_bytes([input[12], input[13]]) == 0x8100;
    let l3 = if vlan { 18 } else { 14 };
    let inner = &input[l3..];
    let inner_v4 = inner[0] >> 4 == 4;
    let tos = if inner_v4 {
        inner[1]
    } else {
        (inner[0] << 4) | (inner[1] >> 4)
    };
    let inner_proto = if inner_v4 {
        IpNumber::IPV4
    } else {
        IpNumber::IPV6
    };
    let mut out = Vec::new();
    out.extend_from_slice(&next_hop);
    out.extend_from_slice(&LB_MAC);
    if vlan {
        out.extend_from_slice(&input[12..16]);
    }
    match backend {
        IpAddr::V4(b) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h =
                Ipv4Header::new(inner.len() as u16, 64, inner_proto, IPIP_SRC_V4, b.octets())
                    .expect("outer v4");
            h.dont_fragment = true;
            h.identification = 0;
            h.dscp = etherparse::IpDscp::try_new(tos >> 2).expect("dscp");
            h.ecn = etherparse::IpEcn::try_new(tos & 3).expect("ecn");
            h.header_checksum = h.calc_header_checksum();
            out.extend_from_slice(&h.to_bytes());
        }
        IpAddr::V6(b) => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            let h = Ipv6Header {
                traffic_class: tos,
                flow_label: Ipv6FlowLabel::try_new(flow_hash & 0xfffff).expect("label"),
                payload_length: inner.len() as u16,
                next_header: inner_proto,
                hop_limit: 64,
                source: IPIP_SRC_V6,
                destination: b.octets(),
            };
            h.write(&mut out).expect("outer v6");
        }
    }
    out.extend_from_slice(inner);
    out
}

/// A family-agnostic address pair helper for tests.
pub fn family_of(a: IpAddr) -> u8 {
    if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// Internet checksum of `data` (RFC 1071), for checking outputs.
pub fn inet_csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A handle that runs a loaded program through BPF_PROG_TEST_RUN from any
/// thread (for tests that send packets while another thread changes the
/// data plane): the program's own file descriptor, duplicated.
pub struct ProgRunner(std::os::fd::OwnedFd);

impl ProgRunner {
    /// A runner for program `name` of `lab`.
    ///
    /// # Panics
    /// When the program is missing.
    pub fn new(lab: &Lab, name: &str) -> Self {
        use std::os::fd::AsFd as _;
        let fd = lab
            .dp
            .program(name)
            .expect("program")
            .fd()
            .expect("program fd")
            .as_fd()
            .try_clone_to_owned()
            .expect("dup program fd");
        Self(fd)
    }

    /// Runs `pkt` once; returns the verdict.
    ///
    /// # Panics
    /// When the kernel refuses the run.
    pub fn run(&self, pkt: &[u8]) -> u32 {
        use std::os::fd::AsRawFd as _;
        // struct bpf_attr, test: prog_fd, retval, data_size_in,
        // data_size_out, data_in, data_out, repeat, duration (linux/bpf.h).
        #[repr(C)]
        #[derive(Default)]
        struct TestAttr {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
            rest: [u64; 8],
        }
        const BPF_PROG_TEST_RUN: nix::libc::c_long = 10;
        let mut out = vec![0u8; pkt.len() + 512];
        let mut attr = TestAttr {
            prog_fd: u32::try_from(self.0.as_raw_fd()).expect("fd"),
            data_size_in: u32::try_from(pkt.len()).expect("len"),
            data_size_out: u32::try_from(out.len()).expect("len"),
            data_in: pkt.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: FFI; `attr` is a valid bpf_attr prefix for this command,
        // its buffers live across the call and are as long as it says.
        let r = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestAttr,
                std::mem::size_of::<TestAttr>(),
            )
        };
        assert_eq!(
            r,
            0,
            "BPF_PROG_TEST_RUN: {}",
            std::io::Error::last_os_error()
        );
        attr.retval
    }
}
