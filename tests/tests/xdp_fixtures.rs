//! BPF_PROG_TEST_RUN fixtures for `lb-ebpf`: for every path a packet in, the
//! exact packet and verdict out, plus truncated, random and mutated packets.
//! Needs root (CI runs as root).

use std::net::IpAddr;

use etherparse::{
    Icmpv4Type, Icmpv6Type, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder,
    SlicedPacket, icmpv4::DestUnreachableHeader,
};
use lbctl::dataplane::{
    DesiredState, Forwarding, HashFields, Protocol,
    xdp::{BACKENDS_TABLE, programs},
};
use tests::fixtures::*;

const CLIENT: &str = "192.0.2.10";
const CLIENT6: &str = "2001:db8:ff::10";

fn vip_a() -> lbctl::dataplane::VipSpec {
    vip("10.0.0.100", Some(80), Protocol::Tcp)
}
fn vip_b() -> lbctl::dataplane::VipSpec {
    vip("10.0.0.100", Some(53), Protocol::Udp)
}
fn vip_c() -> lbctl::dataplane::VipSpec {
    vip("2001:db8::100", Some(80), Protocol::Tcp)
}
fn vip_d() -> lbctl::dataplane::VipSpec {
    vip("2001:db8::100", Some(53), Protocol::Udp)
}
fn vip_e() -> lbctl::dataplane::VipSpec {
    vip("10.0.0.101", None, Protocol::Tcp)
}
fn vip_f() -> lbctl::dataplane::VipSpec {
    vip("10.0.0.102", Some(443), Protocol::Tcp)
}
fn vip_g() -> lbctl::dataplane::VipSpec {
    vip("10.0.0.103", Some(80), Protocol::Tcp)
}
fn vip_h() -> lbctl::dataplane::VipSpec {
    vip("2001:db8::101", None, Protocol::Udp)
}
fn vip_i() -> lbctl::dataplane::VipSpec {
    vip("10.0.0.104", Some(80), Protocol::Tcp)
}
fn vip_j() -> lbctl::dataplane::VipSpec {
    vip("2001:db8::102", Some(80), Protocol::Tcp)
}

const ADDR_ONLY: HashFields = HashFields {
    src_addr: true,
    src_port: false,
    dst_port: false,
};

fn multi_backends() -> Vec<lbctl::dataplane::BackendSpec> {
    (1..=4)
        .map(|n| backend(&format!("10.0.3.{n}"), 10 + n, 100))
        .collect()
}

fn state() -> DesiredState {
    let mut e = vip_state(vip_e(), Forwarding::Dr, vec![backend("10.0.1.5", 5, 100)]);
    e.hash = ADDR_ONLY;
    let mut g = vip_state(vip_g(), Forwarding::Dr, vec![backend("10.0.1.7", 7, 100)]);
    g.active = false;
    let mut h = vip_state(
        vip_h(),
        Forwarding::Dr,
        vec![backend("2001:db8:1::8", 8, 100)],
    );
    h.hash = ADDR_ONLY;
    DesiredState {
        node: node(),
        vips: vec![
            vip_state(vip_a(), Forwarding::Dr, vec![backend("10.0.1.1", 1, 100)]),
            vip_state(vip_b(), Forwarding::Ipip, vec![backend("10.0.2.1", 2, 100)]),
            vip_state(
                vip_c(),
                Forwarding::Dr,
                vec![backend("2001:db8:1::1", 3, 100)],
            ),
            vip_state(
                vip_d(),
                Forwarding::Ipip,
                vec![backend("2001:db8:2::1", 4, 100)],
            ),
            e,
            vip_state(
                vip_f(),
                Forwarding::Ipip,
                vec![backend("2001:db8:2::2", 6, 100)],
            ),
            g,
            h,
            vip_state(vip_i(), Forwarding::Dr, multi_backends()),
            vip_state(vip_j(), Forwarding::Ipip, vec![backend("10.0.2.9", 9, 100)]),
        ],
    }
}

fn hash_of(src: &str, sport: u16, dst: &str, dport: u16, proto: Protocol, h: HashFields) -> u32 {
    lb_common::flow_hash(&masked(conn_key(ip(src), sport, ip(dst), dport, proto), h))
}

fn assert_frame(got: &[u8], want: &[u8]) {
    assert_eq!(
        got.len(),
        want.len(),
        "length\n got {got:02x?}\nwant {want:02x?}"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "byte {i} differs\n got {got:02x?}\nwant {want:02x?}");
    }
}

// ---------------------------------------------------------------- pass-through

#[test]
fn traffic_not_for_a_vip_passes_unchanged() {
    let lab = Lab::new(state());
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "other address",
            client_packet(CLIENT, 40000, "10.0.0.200", 80, Protocol::Tcp, None, b"x"),
        ),
        (
            "VIP address, other port",
            client_packet(CLIENT, 40000, "10.0.0.100", 22, Protocol::Tcp, None, b"x"),
        ),
        (
            "VIP address, other protocol",
            client_packet(CLIENT, 40000, "10.0.0.100", 80, Protocol::Udp, None, b"x"),
        ),
        (
            "IPv6 other address",
            client_packet(
                CLIENT6,
                40000,
                "2001:db8::200",
                80,
                Protocol::Tcp,
                None,
                b"x",
            ),
        ),
    ];
    // ARP request for the VIP.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&ROUTER_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&ROUTER_MAC);
    arp.extend_from_slice(&[192, 0, 2, 254, 0, 0, 0, 0, 0, 0, 10, 0, 0, 100]);
    cases.push(("ARP", arp));
    // VRRP advertisement to 224.0.0.18.
    let mut vrrp = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, [0x01, 0, 0x5e, 0, 0, 0x12])
        .ipv4([10, 0, 0, 2], [224, 0, 0, 18], 255)
        .write(
            &mut vrrp,
            IpNumber(112),
            &[0x31, 51, 100, 1, 0, 100, 0, 0, 10, 0, 0, 100],
        )
        .expect("vrrp");
    cases.push(("VRRP", vrrp));
    // ICMP echo to a VIP: the kernel answers it.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv4([192, 0, 2, 10], [10, 0, 0, 100], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .expect("ping");
    cases.push(("ICMP echo to VIP", ping));
    // Neighbour solicitation for a v6 VIP.
    let mut ns = Vec::new();
    let target: [u8; 16] = ip("2001:db8::100")
        .to_canonical()
        .to_string()
        .parse::<std::net::Ipv6Addr>()
        .expect("v6")
        .octets();
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&target);
    PacketBuilder::ethernet2(ROUTER_MAC, [0x33, 0x33, 0xff, 0, 1, 0])
        .ipv6(
            ip(CLIENT6)
                .to_string()
                .parse::<std::net::Ipv6Addr>()
                .expect("v6")
                .octets(),
            [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 1, 0],
            255,
        )
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut ns, &target)
        .expect("ns");
    cases.push(("NDP", ns));

    for (name, pkt) in &cases {
        let (v, out) = lab.run(pkt);
        assert_eq!(v, verdict::PASS, "{name}");
        assert_frame(&out, pkt);
    }
    let r = lab.reasons();
    assert_eq!(r["pass_not_vip"], 6, "{r:?}");
    assert_eq!(r["pass_not_ip"], 1, "{r:?}");
    assert_eq!(r["pass_icmp"], 1, "{r:?}");
}

/// A client's TCP packet to VIP `g` (10.0.0.103:80), which this node does not serve (inactive).
fn to_inactive_vip(payload: &[u8]) -> Vec<u8> {
    client_packet(
        CLIENT,
        40000,
        "10.0.0.103",
        80,
        Protocol::Tcp,
        None,
        payload,
    )
}

#[test]
fn inactive_node_passes_vip_traffic() {
    let lab = Lab::new(state());
    let pkt = to_inactive_vip(b"GET /");
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::PASS);
    assert_frame(&out, &pkt);
    assert_eq!(lab.reasons()["pass_inactive"], 1);
}

// ---------------------------------------------------------------------- DR

#[test]
fn dr_ipv4_tcp_rewrites_macs_only() {
    let lab = Lab::new(state());
    let pkt = client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        80,
        Protocol::Tcp,
        None,
        b"GET / HTTP/1.1\r\n",
    );
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX, "{:?}", lab.reasons());
    assert_frame(&out, &dr_expected(&pkt, backend_mac(1)));
    let s = lab.dp.stats().expect("stats");
    assert_eq!(s.reasons["fwd_dr"], 1);
    assert_eq!(s.reasons["conn_miss"], 1);
    assert_eq!(s.vips[&vip_a()].packets, 1);
    assert_eq!(s.vips[&vip_a()].bytes, pkt.len() as u64);
    assert_eq!(s.backends[&vip_a()][&ip("10.0.1.1")].packets, 1);
    // the second packet of the flow hits the connection table
    let (v, _) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    assert_eq!(lab.reasons()["conn_hit"], 1);
}

#[test]
fn dr_ipv6_tcp() {
    let lab = Lab::new(state());
    let pkt = client_packet(
        CLIENT6,
        40000,
        "2001:db8::100",
        80,
        Protocol::Tcp,
        None,
        b"hello",
    );
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    assert_frame(&out, &dr_expected(&pkt, backend_mac(3)));
}

/// A backend's VLAN (the ID of the VLAN interface its route leaves through)
/// decides the tag a forwarded frame leaves with, whatever tag it came
/// with: added, rewritten (the priority and DEI bits kept) or removed, by DR
/// and by every IPIP family pair; everything after it as without VLANs.
#[test]
fn forwarded_frames_leave_on_the_backends_vlan() {
    // (client, VIP, port, protocol, backend, its MAC number, IPIP)
    let paths: [(&str, &str, u16, Protocol, &str, u8, bool); 6] = [
        (
            CLIENT,
            "10.0.0.100",
            80,
            Protocol::Tcp,
            "10.0.1.1",
            1,
            false,
        ),
        (
            CLIENT6,
            "2001:db8::100",
            80,
            Protocol::Tcp,
            "2001:db8:1::1",
            3,
            false,
        ),
        (CLIENT, "10.0.0.100", 53, Protocol::Udp, "10.0.2.1", 2, true),
        (
            CLIENT6,
            "2001:db8::100",
            53,
            Protocol::Udp,
            "2001:db8:2::1",
            4,
            true,
        ),
        (
            CLIENT,
            "10.0.0.102",
            443,
            Protocol::Tcp,
            "2001:db8:2::2",
            6,
            true,
        ),
        (
            CLIENT6,
            "2001:db8::102",
            80,
            Protocol::Tcp,
            "10.0.2.9",
            9,
            true,
        ),
    ];
    for out_vlan in [lb_common::VLAN_UNTAGGED, 42, 4094] {
        let mut st = state();
        backends_on_vlan(&mut st, out_vlan);
        let lab = Lab::new(st);
        // Untagged; VLAN 42; VLAN 7 with priority 5 and DEI set; priority
        // tagged (VLAN ID 0, priority 5).
        for in_tci in [None, Some(42u16), Some(0xb007), Some(0xa000)] {
            let out_tci = (out_vlan != lb_common::VLAN_UNTAGGED)
                .then(|| (in_tci.unwrap_or(0) & 0xf000) | out_vlan);
            for (src, dst, port, proto, be, n, ipip) in paths {
                // Built with some VLAN ID (the builder refuses 0), then the TCI.
                let build_vid = in_tci.map(|t| (t & 0xfff).max(1));
                let mut pkt = client_packet(src, 40000, dst, port, proto, build_vid, b"v");
                if let Some(t) = in_tci {
                    pkt[14..16].copy_from_slice(&t.to_be_bytes());
                }
                let before = lab.reasons();
                let (v, out) = lab.run(&pkt);
                let what = format!("{dst}:{port} in {in_tci:x?} out VLAN {out_vlan}");
                assert_eq!(v, verdict::TX, "{what}");
                let want = if ipip {
                    let h = hash_of(src, 40000, dst, port, proto, HashFields::default());
                    ipip_expected(&pkt, ip(be), backend_mac(n), h)
                } else {
                    dr_expected(&pkt, backend_mac(n))
                };
                assert_frame(&out, &with_tag(&want, out_tci));
                let reason = if ipip { "fwd_ipip" } else { "fwd_dr" };
                assert_eq!(lab.reasons()[reason], before[reason] + 1, "{what}");
            }
        }
    }
}

/// A backend VLAN that is no 802.1Q VLAN ID (4095 is reserved, 4096 does
/// not fit the 12 bits) is refused before anything is written.
#[test]
fn a_backend_vlan_outside_802_1q_is_refused_before_anything_is_written() {
    let mut lab = Lab::new(state());
    let pkt = client_packet(CLIENT, 40000, "10.0.0.100", 80, Protocol::Tcp, None, b"v");
    for vlan in [4095, 4096, u16::MAX] {
        let mut st = state();
        // Valid changes before the bad VLAN: none of them may be written.
        backends_on_vlan(&mut st, 42);
        st.vips.last_mut().expect("vips").backends[0].vlan = vlan;
        let e = lab.dp.apply(&st).expect_err("refused");
        assert!(
            e.to_string()
                .contains(&format!("on VLAN {vlan}: expected a VLAN ID 1..=4094")),
            "{e}"
        );
        let (v, out) = lab.run(&pkt);
        assert_eq!(v, verdict::TX);
        assert_frame(&out, &dr_expected(&pkt, backend_mac(1)));
    }
}

#[test]
fn portless_vip_catches_every_port() {
    let lab = Lab::new(state());
    for port in [1u16, 80, 443, 8080, 65535] {
        let pkt = client_packet(CLIENT, 40000, "10.0.0.101", port, Protocol::Tcp, None, b"x");
        let (v, out) = lab.run(&pkt);
        assert_eq!(v, verdict::TX, "port {port}");
        assert_frame(&out, &dr_expected(&pkt, backend_mac(5)));
    }
}

#[test]
fn backend_choice_follows_the_maglev_table() {
    let lab = Lab::new(state());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..400u16 {
        let sport = 10000 + i;
        let src = format!("198.51.100.{}", i % 200 + 1);
        let pkt = client_packet(&src, sport, "10.0.0.104", 80, Protocol::Tcp, None, b"x");
        let (v, out) = lab.run(&pkt);
        assert_eq!(v, verdict::TX);
        let key = conn_key(ip(&src), sport, ip("10.0.0.104"), 80, Protocol::Tcp);
        let want = lab.predicted_backend(&vip_i(), &key).expect("a backend");
        let n = match want {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(&out[..6], &backend_mac(10 + n), "flow {i}");
        seen.insert(n);
    }
    assert_eq!(seen.len(), 4, "all four backends get flows");
}

// ---------------------------------------------------------------------- IPIP

#[test]
fn ipip_ipv4_in_ipv4() {
    let lab = Lab::new(state());
    let pkt = client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        None,
        b"dns query",
    );
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    let h = hash_of(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        HashFields::default(),
    );
    assert_frame(
        &out,
        &ipip_expected(&pkt, ip("10.0.2.1"), backend_mac(2), h),
    );
    assert_eq!(lab.reasons()["fwd_ipip"], 1);
}

#[test]
fn ipip_ipv6_in_ipv6() {
    let lab = Lab::new(state());
    let pkt = client_packet(
        CLIENT6,
        40000,
        "2001:db8::100",
        53,
        Protocol::Udp,
        None,
        b"dns query",
    );
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    let h = hash_of(
        CLIENT6,
        40000,
        "2001:db8::100",
        53,
        Protocol::Udp,
        HashFields::default(),
    );
    assert_frame(
        &out,
        &ipip_expected(&pkt, ip("2001:db8:2::1"), backend_mac(4), h),
    );
}

#[test]
fn ipip_ipv4_in_ipv6_and_ipv6_in_ipv4() {
    let lab = Lab::new(state());
    let pkt = client_packet(
        CLIENT,
        40000,
        "10.0.0.102",
        443,
        Protocol::Tcp,
        None,
        b"tls",
    );
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    let h = hash_of(
        CLIENT,
        40000,
        "10.0.0.102",
        443,
        Protocol::Tcp,
        HashFields::default(),
    );
    assert_frame(
        &out,
        &ipip_expected(&pkt, ip("2001:db8:2::2"), backend_mac(6), h),
    );

    let pkt = client_packet(
        CLIENT6,
        40000,
        "2001:db8::102",
        80,
        Protocol::Tcp,
        None,
        b"x",
    );
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    let h = hash_of(
        CLIENT6,
        40000,
        "2001:db8::102",
        80,
        Protocol::Tcp,
        HashFields::default(),
    );
    assert_frame(
        &out,
        &ipip_expected(&pkt, ip("10.0.2.9"), backend_mac(9), h),
    );
}

#[test]
fn ipip_with_vlan_and_tos() {
    // The backend on the client's VLAN: the tag is kept.
    let mut st = state();
    backends_on_vlan(&mut st, 7);
    let lab = Lab::new(st);
    let mut pkt = client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        Some(7),
        b"q",
    );
    // DSCP AF41 + ECT(0): copied to the outer header (checksum not checked by the LB).
    pkt[18 + 1] = 0x8a;
    let mut h = Ipv4Header::from_slice(&pkt[18..]).expect("ip").0;
    h.header_checksum = h.calc_header_checksum();
    pkt[18..38].copy_from_slice(&h.to_bytes());
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    let h = hash_of(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        HashFields::default(),
    );
    assert_frame(
        &out,
        &ipip_expected(&pkt, ip("10.0.2.1"), backend_mac(2), h),
    );
}

#[test]
fn ipip_flow_derived_outer_source() {
    let mut st = state();
    st.node.ipip_src_flow_bits_v4 = 8;
    let lab = Lab::new(st);
    let mut sources = std::collections::BTreeSet::new();
    for sport in 40000..40064u16 {
        let pkt = client_packet(CLIENT, sport, "10.0.0.100", 53, Protocol::Udp, None, b"q");
        let (v, out) = lab.run(&pkt);
        assert_eq!(v, verdict::TX);
        let h = hash_of(
            CLIENT,
            sport,
            "10.0.0.100",
            53,
            Protocol::Udp,
            HashFields::default(),
        );
        assert_eq!(&out[14 + 12..14 + 15], &IPIP_SRC_V4[..3]);
        assert_eq!(out[14 + 15], (h & 0xff) as u8);
        let outer = Ipv4Header::from_slice(&out[14..]).expect("outer").0;
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        sources.insert(out[14 + 15]);
    }
    assert!(
        sources.len() > 40,
        "flows spread over outer sources: {}",
        sources.len()
    );
}

// --------------------------------------------------------------- ICMP errors

#[test]
fn icmp_frag_needed_goes_to_the_flows_backend() {
    let lab = Lab::new(state());
    // The backend's reply (VIP:80 -> client:40000) hit a small-MTU link; the
    // router answers the VIP.
    let mut quoted = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 104], [192, 0, 2, 10], 60)
        .tcp(80, 40000, 5, 100)
        .write(&mut quoted, &[])
        .expect("quoted");
    let mut pkt = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv4([192, 0, 2, 254], [10, 0, 0, 104], 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut pkt, &quoted)
        .expect("icmp");
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    let key = conn_key(ip(CLIENT), 40000, ip("10.0.0.104"), 80, Protocol::Tcp);
    let want = lab.predicted_backend(&vip_i(), &key).expect("backend");
    let n = match want {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(_) => unreachable!(),
    };
    assert_frame(&out, &dr_expected(&pkt, backend_mac(10 + n)));
    // and the client's own flow lands on the same backend
    let data = client_packet(CLIENT, 40000, "10.0.0.104", 80, Protocol::Tcp, None, b"x");
    let (_, out2) = lab.run(&data);
    assert_eq!(&out2[..6], &out[..6]);
    assert_eq!(lab.reasons()["icmp_to_backend"], 1);
}

#[test]
fn icmpv6_packet_too_big_goes_to_the_flows_backend() {
    let lab = Lab::new(state());
    let mut quoted = Vec::new();
    PacketBuilder::ipv6(ip6("2001:db8::100"), ip6(CLIENT6), 60)
        .tcp(80, 40000, 5, 100)
        .write(&mut quoted, &[])
        .expect("quoted");
    let mut pkt = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv6(ip6("2001:db8:ff::1"), ip6("2001:db8::100"), 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut pkt, &quoted)
        .expect("icmp6");
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    assert_frame(&out, &dr_expected(&pkt, backend_mac(3)));
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("v6").octets()
}

// ----------------------------------------------------------------- fragments

fn v4_fragment(dst: [u8; 4], first: bool) -> Vec<u8> {
    let mut pkt = Vec::new();
    let payload = [0x55u8; 64];
    PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv4([192, 0, 2, 10], dst, 64)
        .udp(40000, 53)
        .write(&mut pkt, &payload)
        .expect("udp");
    let mut h = Ipv4Header::from_slice(&pkt[14..]).expect("ip").0;
    h.dont_fragment = false;
    h.more_fragments = true;
    if !first {
        h.fragment_offset = etherparse::IpFragOffset::try_new(185).expect("off");
        h.protocol = IpNumber::TCP;
    }
    h.header_checksum = h.calc_header_checksum();
    let b = h.to_bytes();
    pkt[14..34].copy_from_slice(&b);
    pkt
}

#[test]
fn fragments_follow_the_documented_policy() {
    let lab = Lab::new(state());
    // To a port VIP: dropped and counted, never misrouted.
    let first = v4_fragment([10, 0, 0, 100], true);
    assert_eq!(lab.run(&first).0, verdict::DROP);
    // Non-first fragment of TCP to the address-only, port-less VIP: forwarded.
    let later = v4_fragment([10, 0, 0, 101], false);
    let (v, out) = lab.run(&later);
    assert_eq!(v, verdict::TX);
    assert_frame(&out, &dr_expected(&later, backend_mac(5)));
    // and it lands on the same backend as a whole packet of the same client.
    let whole = client_packet(CLIENT, 1234, "10.0.0.101", 80, Protocol::Tcp, None, b"x");
    assert_eq!(&lab.run(&whole).1[..6], &out[..6]);
    let r = lab.reasons();
    assert_eq!(r["drop_fragment"], 1, "{r:?}");
    assert_eq!(r["fragment_forwarded"], 1, "{r:?}");

    // IPv6 fragment header: to the address-only UDP VIP forwarded, to a port VIP dropped.
    for (dst, want) in [
        ("2001:db8::101", verdict::TX),
        ("2001:db8::100", verdict::DROP),
    ] {
        let mut pkt = Vec::new();
        let mut ext = vec![17u8, 0, 0, 185 << 3 | 1, 0, 0, 0, 1];
        ext.extend_from_slice(&[0x66; 40]);
        PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
            .ipv6(ip6(CLIENT6), ip6(dst), 64)
            .write(&mut pkt, IpNumber(44), &ext)
            .expect("frag6");
        let (v, out) = lab.run(&pkt);
        assert_eq!(v, want, "{dst}");
        if v == verdict::TX {
            assert_frame(&out, &dr_expected(&pkt, backend_mac(8)));
        }
    }
}

/// A fragment is dropped only when it is to a VIP (its address and
/// protocol) that cannot place it; to any other address, including one that
/// shares a VIP's 16-bit address slot, or to a VIP address with a protocol
/// no VIP there serves, it is not ours and passes unchanged.
#[test]
fn fragments_not_for_a_vip_pass_unchanged() {
    // 10.100.0.0 shares the address slot of 10.0.0.100 (vip_a, vip_b).
    assert_eq!(
        lb_common::vip_slot(&[10, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        lb_common::vip_slot(&[10, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    let frag6 = |dst: &str, nh: u8| {
        let mut pkt = Vec::new();
        let mut ext = vec![nh, 0, 0, 185 << 3 | 1, 0, 0, 0, 1];
        ext.extend_from_slice(&[0x66; 40]);
        PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
            .ipv6(ip6(CLIENT6), ip6(dst), 64)
            .write(&mut pkt, IpNumber(44), &ext)
            .expect("frag6");
        pkt
    };
    let check = |lab: &Lab, name: &str, pkt: &[u8], want: u32| {
        let (v, out) = lab.run(pkt);
        assert_eq!(v, want, "{name}: {:?}", lab.reasons());
        if v == verdict::PASS {
            assert_frame(&out, pkt);
        }
    };
    let udp_first = |dst| v4_fragment(dst, true); // UDP, offset 0, MF
    let tcp_later = |dst| v4_fragment(dst, false); // TCP, offset 185
    let lab = Lab::new(state());
    let passing = [
        ("colliding non-VIP address", udp_first([10, 100, 0, 0])),
        ("colliding non-VIP address, TCP", tcp_later([10, 100, 0, 0])),
        // 10.0.0.101 has a TCP VIP only.
        ("VIP address, UDP, no UDP VIP", udp_first([10, 0, 0, 101])),
        // 10.0.0.102 has a TCP VIP only (port 443).
        ("port VIP address, UDP", udp_first([10, 0, 0, 102])),
        // 2001:db8::101 has a UDP VIP only.
        (
            "IPv6 VIP address, TCP, no TCP VIP",
            frag6("2001:db8::101", 6),
        ),
    ];
    for (name, pkt) in &passing {
        check(&lab, name, pkt, verdict::PASS);
    }
    let r = lab.reasons();
    assert_eq!(
        (r["pass_not_vip"], r["drop_fragment"]),
        (passing.len() as u64, 0),
        "{r:?}"
    );
    // Still dropped: fragments for a VIP that cannot place them (RFC 791
    // 2.3 / RFC 8200 4.5: only the first fragment carries the ports).
    check(
        &lab,
        "port VIP, TCP",
        &tcp_later([10, 0, 0, 100]),
        verdict::DROP,
    );
    check(
        &lab,
        "port VIP, UDP",
        &udp_first([10, 0, 0, 100]),
        verdict::DROP,
    );
    check(
        &lab,
        "IPv6 port VIP, TCP",
        &frag6("2001:db8::100", 6),
        verdict::DROP,
    );
    assert_eq!(lab.reasons()["drop_fragment"], 3);

    // A slot with more VIPs than its record names (hash-map fallback):
    // the same answers.
    let mut st = state();
    for port in [80u16, 81, 82] {
        st.vips.push(vip_state(
            vip("10.100.0.0", Some(port), Protocol::Tcp),
            Forwarding::Dr,
            vec![backend("10.0.4.1", 20, 100)],
        ));
    }
    let mut lab = Lab::new(st);
    check(
        &lab,
        "crowded slot, TCP",
        &tcp_later([10, 100, 0, 0]),
        verdict::DROP,
    );
    check(
        &lab,
        "crowded slot, UDP",
        &udp_first([10, 100, 0, 0]),
        verdict::PASS,
    );
    check(
        &lab,
        "crowded slot, other UDP",
        &udp_first([10, 0, 0, 100]),
        verdict::DROP,
    );
    check(
        &lab,
        "crowded slot, other TCP",
        &tcp_later([10, 0, 0, 100]),
        verdict::DROP,
    );
    // Removing the VIPs of an address and protocol makes its fragments pass.
    lab.apply(state());
    check(
        &lab,
        "VIPs removed",
        &tcp_later([10, 100, 0, 0]),
        verdict::PASS,
    );
    let r = lab.reasons();
    assert_eq!((r["pass_not_vip"], r["drop_fragment"]), (2, 3), "{r:?}");
}

/// The bytes after a non-first IPv6 Fragment header are payload from the
/// middle of the datagram, not extension headers (RFC 8200 4.5): the parser
/// stops there. A fragment whose Fragment header names a Destination
/// Options header, and whose payload happens to look like one leading to
/// UDP, is not taken for a UDP fragment to the port-less UDP VIP; its
/// upper-layer protocol is unknown, so it passes unchanged
/// (`pass_unsupported`). A first fragment's headers are still walked.
#[test]
fn ipv6_header_walk_stops_at_a_non_first_fragment() {
    let lab = Lab::new(state());
    let frag = |offset: u16| {
        // Fragment header: next header Destination Options (60).
        let mut ext = vec![60u8, 0];
        ext.extend_from_slice(&((offset << 3) | 1).to_be_bytes());
        ext.extend_from_slice(&[0, 0, 0, 9]);
        // Then what reads as Destination Options (8 bytes) naming UDP, and UDP.
        ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 40, 0, 0]);
        ext.extend_from_slice(&[0x77; 32]);
        let mut pkt = Vec::new();
        PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
            .ipv6(ip6(CLIENT6), ip6("2001:db8::101"), 64)
            .write(&mut pkt, IpNumber(44), &ext)
            .expect("frag6");
        pkt
    };
    let later = frag(185);
    let (v, out) = lab.run(&later);
    assert_eq!(v, verdict::PASS, "{:?}", lab.reasons());
    assert_frame(&out, &later);
    assert_eq!(lab.reasons()["pass_unsupported"], 1);
    // Offset 0: the Destination Options header is real and names UDP.
    let first = frag(0);
    let (v, out) = lab.run(&first);
    assert_eq!(v, verdict::TX, "{:?}", lab.reasons());
    assert_frame(&out, &dr_expected(&first, backend_mac(8)));
    assert_eq!(lab.reasons()["fragment_forwarded"], 1);
}

// ------------------------------------------------------------------ MTU

/// 1500 bytes of IPv4 UDP with DF to the IPIP VIP `10.0.0.100:53`: 20
/// bytes too big to encapsulate within [`MTU`].
fn too_big_v4() -> Vec<u8> {
    client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        None,
        &[7u8; 1472],
    )
}

/// 1480 bytes of IPv6 UDP, VLAN 9, to the IPIP VIP `[2001:db8::100]:53`:
/// too big to encapsulate within [`MTU`].
fn too_big_v6() -> Vec<u8> {
    client_packet(
        CLIENT6,
        40000,
        "2001:db8::100",
        53,
        Protocol::Udp,
        Some(9),
        &[7u8; 1432],
    )
}

#[test]
fn ipip_over_mtu_answers_fragmentation_needed() {
    let lab = Lab::new(state());
    let pkt = too_big_v4();
    assert_eq!(pkt.len(), 14 + 1500);
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    let mut want = Vec::new();
    want.extend_from_slice(&ROUTER_MAC);
    want.extend_from_slice(&LB_MAC);
    want.extend_from_slice(&[0x08, 0x00]);
    let mut h =
        Ipv4Header::new(556, 64, IpNumber::ICMP, [10, 0, 0, 100], [192, 0, 2, 10]).expect("ip");
    h.dont_fragment = false;
    h.header_checksum = h.calc_header_checksum();
    want.extend_from_slice(&h.to_bytes());
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&((MTU - 20) as u16).to_be_bytes());
    // As much of the packet as fits in 576 bytes (RFC 1812 4.3.2.3).
    icmp.extend_from_slice(&pkt[14..14 + 548]);
    let c = inet_csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&icmp);
    assert_frame(&out, &want);
    assert_eq!(lab.reasons()["too_big_sent"], 1);
    // The error went back to the client: the VIP counts the packet, no
    // backend does.
    let vip_packets = |lab: &Lab| -> (u64, u64) {
        let st = lab.dp.stats().expect("stats");
        let is_vip = |a: &IpAddr| *a == "10.0.0.100".parse::<IpAddr>().expect("addr");
        let vip: u64 = st
            .vips
            .iter()
            .filter(|(k, _)| is_vip(&k.addr))
            .map(|(_, c)| c.packets)
            .sum();
        let backends: u64 = st
            .backends
            .iter()
            .filter(|(k, _)| is_vip(&k.addr))
            .flat_map(|(_, b)| b.values())
            .map(|c| c.packets)
            .sum();
        (vip, backends)
    };
    assert_eq!(
        vip_packets(&lab),
        (1, 0),
        "a too-big reply is not backend traffic"
    );
    // One byte less fits.
    let ok = client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        None,
        &[7u8; 1452],
    );
    assert_eq!(lab.run(&ok).0, verdict::TX);
    assert_eq!(lab.reasons()["fwd_ipip"], 1);
    assert_eq!(vip_packets(&lab), (2, 1));
}

#[test]
fn ip6ip6_over_mtu_answers_packet_too_big() {
    let lab = Lab::new(state());
    let pkt = too_big_v6();
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX);
    // The test packet carries a VLAN tag, kept on the reply.
    assert_eq!(pkt[12..14], [0x81, 0x00]);
    assert_frame(
        &out,
        &packet_too_big_expected(&pkt, "2001:db8::100", MTU - 40),
    );
}

/// The packet-too-big `lb` answers `pkt` (an IPv6 frame, with or without
/// one VLAN tag) with, from `vip`, announcing `mtu`.
fn packet_too_big_expected(pkt: &[u8], vip: &str, mtu: u32) -> Vec<u8> {
    let l3 = l3_offset(pkt);
    let mut want = Vec::new();
    want.extend_from_slice(&ROUTER_MAC);
    want.extend_from_slice(&LB_MAC);
    want.extend_from_slice(&pkt[12..l3]);
    let h = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: 1240,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: 255,
        source: ip6(vip),
        destination: ip6(CLIENT6),
    };
    h.write(&mut want).expect("v6");
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    // As much of the packet as fits in 1280 bytes (RFC 4443 2.4(c)).
    icmp.extend_from_slice(&pkt[l3..l3 + 1232]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&h.source);
    pseudo.extend_from_slice(&h.destination);
    pseudo.extend_from_slice(&1240u32.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let c = inet_csum(&pseudo);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&icmp);
    want
}

/// An IPv4 UDP packet of `total` bytes to `dst`:53 with its DF and MF bits
/// and fragment offset (in 8-byte units) set as given.
fn v4_sized(dst: [u8; 4], total: usize, df: bool, mf: bool, offset: u16) -> Vec<u8> {
    let mut pkt = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv4([192, 0, 2, 10], dst, 64)
        .udp(40000, 53)
        .write(&mut pkt, &vec![7u8; total - 28])
        .expect("udp");
    let mut h = Ipv4Header::from_slice(&pkt[14..]).expect("ip").0;
    h.dont_fragment = df;
    h.more_fragments = mf;
    h.fragment_offset = etherparse::IpFragOffset::try_new(offset).expect("offset");
    h.header_checksum = h.calc_header_checksum();
    pkt[14..34].copy_from_slice(&h.to_bytes());
    assert_eq!(pkt.len(), 14 + total);
    pkt
}

/// An IPv6 fragment of a UDP datagram to `dst`: a Fragment header with
/// `offset` (8-byte units) and M set, then `payload` bytes.
fn v6_fragment(dst: &str, offset: u16, payload: usize) -> Vec<u8> {
    let mut ext = vec![17u8, 0];
    ext.extend_from_slice(&((offset << 3) | 1).to_be_bytes());
    ext.extend_from_slice(&[0, 0, 0, 7]);
    ext.extend(std::iter::repeat_n(0x66u8, payload));
    let mut pkt = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, LB_MAC)
        .ipv6(ip6(CLIENT6), ip6(dst), 64)
        .write(&mut pkt, IpNumber(44), &ext)
        .expect("frag6");
    pkt
}

/// Port-less IPIP VIPs that place fragments (hash on addresses only).
fn state_with_ipip_fragment_vips() -> DesiredState {
    let mut st = state();
    for (addr, be, mac) in [
        ("10.0.0.120", "10.0.2.20", 50),
        ("2001:db8::120", "2001:db8:2::20", 51),
    ] {
        let mut v = vip_state(
            vip(addr, None, Protocol::Udp),
            Forwarding::Ipip,
            vec![backend(be, mac, 100)],
        );
        v.hash = ADDR_ONLY;
        st.vips.push(v);
    }
    st
}

/// Too big to encapsulate: IPv4 is answered with fragmentation-needed only
/// when DF is set and the offset is 0 (RFC 1191; RFC 1122 3.2.2: no ICMP
/// error about a non-initial fragment), IPv6 with packet-too-big when whole
/// or a first fragment (a later one's quote would hold no L4 header, see
/// `TOO_BIG_LATER_FRAGMENT` in lb-ebpf); the rest is dropped and counted.
#[test]
fn too_big_without_df_or_past_the_first_fragment_is_dropped_not_answered() {
    let lab = Lab::new(state_with_ipip_fragment_vips());
    let check = |name: &str, pkt: &[u8], want: u32| {
        let (v, out) = lab.run(pkt);
        assert_eq!(v, want, "{name}: {:?}", lab.reasons());
        if v == verdict::TX {
            // An error back to the client, not the packet encapsulated.
            assert_eq!(&out[..6], &ROUTER_MAC, "{name}");
            let icmp = if pkt[12..14] == [0x08, 0x00] {
                out[14 + 20]
            } else {
                out[14 + 40]
            };
            assert!(icmp == 3 || icmp == 2, "{name}: ICMP type {icmp}");
        }
    };
    // Whole IPv4, 1500 bytes, to a port VIP forwarding by IPIP.
    check(
        "DF",
        &v4_sized([10, 0, 0, 100], 1500, true, false, 0),
        verdict::TX,
    );
    check(
        "no DF",
        &v4_sized([10, 0, 0, 100], 1500, false, false, 0),
        verdict::DROP,
    );
    // Fragments to the port-less VIP that places them.
    check(
        "first fragment, no DF",
        &v4_sized([10, 0, 0, 120], 1500, false, true, 0),
        verdict::DROP,
    );
    check(
        "non-first fragment, DF",
        &v4_sized([10, 0, 0, 120], 1500, true, true, 185),
        verdict::DROP,
    );
    check(
        "IPv6 first fragment",
        &v6_fragment("2001:db8::120", 0, 1440),
        verdict::TX,
    );
    check(
        "IPv6 non-first fragment",
        &v6_fragment("2001:db8::120", 185, 1440),
        verdict::DROP,
    );
    // Fragments that fit are forwarded as before.
    let small = v4_sized([10, 0, 0, 120], 200, false, true, 185);
    let (v, out) = lab.run(&small);
    assert_eq!(v, verdict::TX, "small fragment");
    assert_frame(
        &out,
        &ipip_expected(&small, ip("10.0.2.20"), backend_mac(50), 0),
    );
    let r = lab.reasons();
    assert_eq!(
        (
            r["too_big_sent"],
            r["drop_too_big_no_df"],
            r["drop_too_big"]
        ),
        (2, 4, 0),
        "{r:?}"
    );
    assert_eq!(r["fragment_forwarded"], 1, "{r:?}");
}

/// An IPv6 first fragment too big to encapsulate is answered like a whole
/// packet (RFC 4443 3.2), quoting its first 1232 bytes: the Fragment header
/// and the UDP header with them, so the sender can tell the socket.
#[test]
fn ipv6_first_fragment_over_mtu_answers_packet_too_big() {
    let lab = Lab::new(state_with_ipip_fragment_vips());
    let pkt = v6_fragment("2001:db8::120", 0, 1440);
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::TX, "{:?}", lab.reasons());
    assert_frame(
        &out,
        &packet_too_big_expected(&pkt, "2001:db8::120", MTU - 40),
    );
    assert_eq!(lab.reasons()["too_big_sent"], 1);
}

/// The ICMP errors the program sends are rate limited per CPU by a token
/// bucket (RFC 4443 2.4(f) for ICMPv6, the same for ICMPv4): with a burst
/// of 5 and 1 per second, 5 errors go out at once, then each further one
/// is dropped and counted until a token has accrued.
#[test]
fn too_big_errors_are_rate_limited() {
    let mut st = state();
    st.node.icmp_rate = 1;
    st.node.icmp_burst = 5;
    let lab = Lab::new(st);
    let v4 = v4_sized([10, 0, 0, 100], 1500, true, false, 0);
    let v6 = client_packet(
        CLIENT6,
        40000,
        "2001:db8::100",
        53,
        Protocol::Udp,
        None,
        &[7u8; 1432],
    );
    let started = std::time::Instant::now();
    let verdicts: Vec<u32> = (0..8)
        .map(|_| lab.run(&v4).0)
        .chain((0..2).map(|_| lab.run(&v6).0))
        .collect();
    // At 1 token per second, a second's stall would let one more through;
    // and the check below needs less than 2 s from the 5th run to its last.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(600),
        "runs too slow for an exact count: {:?}",
        started.elapsed()
    );
    let mut want = vec![verdict::TX; 5];
    want.extend([verdict::DROP; 5]);
    assert_eq!(verdicts, want);
    let r = lab.reasons();
    assert_eq!(
        (r["too_big_sent"], r["drop_too_big_rate_limited"]),
        (5, 5),
        "{r:?}"
    );
    // A token later, one more error.
    std::thread::sleep(std::time::Duration::from_millis(1050));
    assert_eq!(lab.run(&v6).0, verdict::TX);
    assert_eq!(lab.run(&v4).0, verdict::DROP);
    let r = lab.reasons();
    assert_eq!(
        (r["too_big_sent"], r["drop_too_big_rate_limited"]),
        (6, 6),
        "{r:?}"
    );
}

/// Bytes after the IP packet (beyond what the link padding of a
/// minimum-size frame explains) are not part of it: they are cut before the
/// frame is forwarded, so encapsulation neither carries them nor is pushed
/// past the MTU by them. Padding of a minimum-size frame stays (no helper
/// call for the common small packet; the outer length excludes it).
#[test]
fn bytes_after_the_ip_packet_are_cut_before_forwarding() {
    let lab = Lab::new(state());
    let with_trailer = |pkt: &[u8], n: usize| {
        let mut p = pkt.to_vec();
        p.extend(std::iter::repeat_n(0xeeu8, n));
        p
    };
    let udp4 = |payload: usize| {
        client_packet(
            CLIENT,
            40000,
            "10.0.0.100",
            53,
            Protocol::Udp,
            None,
            &vec![7u8; payload],
        )
    };
    let h4 = hash_of(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        HashFields::default(),
    );
    let ipip4 = |pkt: &[u8]| ipip_expected(pkt, ip("10.0.2.1"), backend_mac(2), h4);
    // A 1514-byte frame whose IPv4 packet is 100 bytes.
    let small = udp4(72);
    assert_eq!(small.len(), 14 + 100);
    let (v, out) = lab.run(&with_trailer(&small, 1400));
    assert_eq!(v, verdict::TX, "{:?}", lab.reasons());
    assert_frame(&out, &ipip4(&small));
    // A packet that fits the MTU once encapsulated, and a trailer that
    // would have pushed the frame past it.
    let full = udp4(1452);
    assert_eq!(full.len(), 14 + 1480);
    let (v, out) = lab.run(&with_trailer(&full, 30));
    assert_eq!(v, verdict::TX);
    assert_frame(&out, &ipip4(&full));
    assert_eq!(out.len(), 14 + MTU as usize);
    // A minimum-size frame's padding is encapsulated as it was.
    let tiny = udp4(0);
    let padded = with_trailer(&tiny, 60 - tiny.len());
    let (v, out) = lab.run(&padded);
    assert_eq!(v, verdict::TX);
    let mut want = ipip4(&tiny);
    want.extend_from_slice(&padded[tiny.len()..]);
    assert_frame(&out, &want);
    // A small frame with more than padding after it is cut to the minimum
    // frame, not below it (what XDP_TX sends is not padded by every driver).
    let (v, out) = lab.run(&with_trailer(&tiny, 100));
    assert_eq!(v, verdict::TX);
    let mut want = ipip4(&tiny);
    want.extend_from_slice(&[0xee; 64 - 14 - 28]);
    assert_frame(&out, &want);
    // IPv6 in IPv6, and DR (whose frame is otherwise sent as it came);
    // frames over 64 bytes, cut to their IP packet.
    let udp6 = client_packet(
        CLIENT6,
        40000,
        "2001:db8::100",
        53,
        Protocol::Udp,
        None,
        b"query?",
    );
    assert!(udp6.len() > 64);
    let h6 = hash_of(
        CLIENT6,
        40000,
        "2001:db8::100",
        53,
        Protocol::Udp,
        HashFields::default(),
    );
    let (v, out) = lab.run(&with_trailer(&udp6, 200));
    assert_eq!(v, verdict::TX);
    assert_frame(
        &out,
        &ipip_expected(&udp6, ip("2001:db8:2::1"), backend_mac(4), h6),
    );
    let tcp = client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        80,
        Protocol::Tcp,
        None,
        b"GET / HTTP/1.0",
    );
    assert!(tcp.len() > 64);
    let (v, out) = lab.run(&with_trailer(&tcp, 100));
    assert_eq!(v, verdict::TX);
    assert_frame(&out, &dr_expected(&tcp, backend_mac(1)));
    let r = lab.reasons();
    assert_eq!(
        (r["fwd_ipip"], r["fwd_dr"], r["drop_adjust"]),
        (5, 1, 0),
        "{r:?}"
    );
}

// ------------------------------------------------ connection table and drain

fn flow_to_i(sport: u16) -> Vec<u8> {
    client_packet(CLIENT, sport, "10.0.0.104", 80, Protocol::Tcp, None, b"x")
}

fn backend_of(out: &[u8]) -> u8 {
    out[5] - 10
}

#[test]
fn established_flow_survives_a_table_switch() {
    let mut lab = Lab::new(state());
    let flows: Vec<u16> = (20000..20100).collect();
    let before: Vec<u8> = flows
        .iter()
        .map(|&p| backend_of(&lab.run(&flow_to_i(p)).1))
        .collect();
    let mut st = lab.state.clone();
    let i = st
        .vips
        .iter_mut()
        .find(|v| v.spec == vip_i())
        .expect("vip i");
    i.backends.push(backend("10.0.3.5", 15, 100));
    i.backends.push(backend("10.0.3.6", 16, 100));
    let report = lab.apply(st);
    assert_eq!(report.rings_switched, 1, "{report:?}");
    assert_eq!(report.vip_updates, 1, "{report:?}");
    assert_eq!(report.backends_written, 2, "{report:?}");
    let after: Vec<u8> = flows
        .iter()
        .map(|&p| backend_of(&lab.run(&flow_to_i(p)).1))
        .collect();
    assert_eq!(before, after, "established flows keep their backend");
    // new flows do reach the new backends
    let fresh: std::collections::BTreeSet<u8> = (30000..30400u16)
        .map(|p| backend_of(&lab.run(&flow_to_i(p)).1))
        .collect();
    assert!(fresh.contains(&5) && fresh.contains(&6), "{fresh:?}");
}

/// The fast path counts only on the backend (see
/// `lb_common::BackendCounter`); user space adds those counts to the VIP's
/// and to the reasons. Totals never go down: not when a backend leaves its
/// VIP, not when its id is handed to another backend (which starts from
/// zero), not when the VIP goes and its id is handed to another VIP.
#[test]
fn fast_path_counts_outlive_the_backends_and_vips_they_were_counted_on() {
    use lbctl::dataplane::xdp::CounterSum;
    let only = |vips: Vec<lbctl::dataplane::VipState>| DesiredState { node: node(), vips };
    let mut lab = Lab::with_max_vips(
        only(vec![vip_state(vip_i(), Forwarding::Dr, multi_backends())]),
        1,
    );
    let mut served = std::collections::BTreeMap::<u8, u64>::new();
    for round in 0..2 {
        for p in 20000..20040 {
            let (verdict, out) = lab.run(&flow_to_i(p));
            assert_eq!(verdict, verdict::TX, "round {round}");
            *served.entry(backend_of(&out)).or_default() += 1;
        }
    }
    let before = lab.dp.stats().expect("stats");
    assert_eq!(before.reasons["fast_path"], 40, "{:?}", before.reasons);
    assert_eq!(before.reasons["conn_hit"], 40, "{:?}", before.reasons);
    assert_eq!(before.reasons["fwd_dr"], 80, "{:?}", before.reasons);
    let vip_total = before.vips[&vip_i()];
    assert_eq!(vip_total.packets, 80);

    // The busiest backend leaves the VIP: the VIP keeps its packets.
    let (&gone, _) = served.iter().max_by_key(|(_, n)| **n).expect("served");
    let gone_addr = ip(&format!("10.0.3.{gone}"));
    let gone_id = lab.dp.backend_id(&vip_i(), gone_addr).expect("backend id");
    let mut st = lab.state.clone();
    st.vips[0].backends.retain(|b| b.addr != gone_addr);
    lab.apply(st.clone());
    let after_leave = lab.dp.stats().expect("stats");
    assert_eq!(after_leave.vips[&vip_i()], vip_total, "a backend left");
    assert_eq!(after_leave.reasons, before.reasons, "a backend left");

    // Every backend id in use, so the freed one is handed out again.
    let free = (lb_common::MAX_BACKENDS - 1) as usize - st.vips[0].backends.len();
    st.vips[0]
        .backends
        .extend((0..free as u32).map(|i| lbctl::dataplane::BackendSpec {
            addr: std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a05_0000 + i)),
            ..backend("10.5.0.0", 50, 1)
        }));
    lab.apply(st.clone());
    let reused = st.vips[0]
        .backends
        .iter()
        .find(|b| lab.dp.backend_id(&vip_i(), b.addr) == Some(gone_id))
        .expect("the freed id handed out again")
        .addr;
    let after_reuse = lab.dp.stats().expect("stats");
    assert_eq!(
        after_reuse.backends[&vip_i()][&reused],
        CounterSum::default(),
        "a reused backend id starts from zero"
    );
    assert_eq!(after_reuse.vips[&vip_i()], vip_total, "a backend id reused");
    assert_eq!(after_reuse.reasons, before.reasons, "a backend id reused");

    // The only VIP id goes, and comes back (after its grace period) for
    // another VIP, which starts from zero.
    lab.apply(only(Vec::new()));
    let other = vip("10.0.0.105", Some(80), Protocol::Tcp);
    lab.apply(only(vec![vip_state(
        other,
        Forwarding::Ipip,
        vec![backend("10.0.2.1", 2, 100)],
    )]));
    let stats = lab.dp.stats().expect("stats");
    assert_eq!(
        stats.vips.get(&other).copied(),
        Some(CounterSum::default()),
        "a reused VIP id starts from zero"
    );
    assert_eq!(stats.reasons, before.reasons, "a VIP id reused");
}

/// A flow whose packets come to another CPU than before (a moved RSS queue
/// or IRQ, veth, a sender that migrates) misses that CPU's table: the
/// shared table keeps it on its backend although the ring changed in
/// between, and puts it in that CPU's table.
fn flow_moving_to_another_cpu_keeps_its_backend(v6: bool) {
    let cpus = aya::util::nr_cpus().expect("CPU count");
    assert!(
        cpus >= 2,
        "this test needs two CPUs; the machine has {cpus}"
    );
    let (spec, client, vip_addr) = if v6 {
        (vip_j(), CLIENT6, "2001:db8::102")
    } else {
        (vip_i(), CLIENT, "10.0.0.104")
    };
    let mut st = state();
    for v in st.vips.iter_mut().filter(|v| v.spec == spec) {
        v.backends = multi_backends();
    }
    let mut lab = Lab::new(st); // on CPU 0
    // The shared table is direct-mapped (a later flow on a slot replaces
    // the earlier): flows on distinct slots.
    let mut slots = std::collections::BTreeSet::new();
    let flows: Vec<u16> = (20000..u16::MAX)
        .filter(|&p| {
            let h = hash_of(
                client,
                p,
                vip_addr,
                80,
                Protocol::Tcp,
                HashFields::default(),
            );
            slots.insert(shared_slot(h))
        })
        .take(200)
        .collect();
    let pkt = |p: u16| client_packet(client, p, vip_addr, 80, Protocol::Tcp, None, b"x");
    let backends = |lab: &Lab| -> Vec<u8> {
        flows
            .iter()
            .map(|&p| {
                let (verdict, out) = lab.run(&pkt(p));
                assert_eq!(verdict, verdict::TX);
                backend_of(&out)
            })
            .collect()
    };
    let before = backends(&lab);
    let mut st = lab.state.clone();
    let v = st.vips.iter_mut().find(|v| v.spec == spec).expect("vip");
    v.backends.push(backend("10.0.3.5", 15, 100));
    v.backends.push(backend("10.0.3.6", 16, 100));
    assert_eq!(lab.apply(st).rings_switched, 1);
    // The new ring would move some of them.
    let moved = flows
        .iter()
        .zip(&before)
        .filter(|&(&p, &b)| {
            let key = conn_key(ip(client), p, ip(vip_addr), 80, Protocol::Tcp);
            lab.predicted_backend(&spec, &key) != Some(ip(&format!("10.0.3.{b}")))
        })
        .count();
    assert!(moved > 20, "the ring switch moves only {moved} flows");

    pin_to_cpu(1);
    assert_eq!(backends(&lab), before, "flows kept their backends on CPU 1");
    let r = lab.reasons();
    let n = flows.len() as u64;
    assert_eq!(
        (r["conn_miss"], r["conn_shared"], r["conn_hit"]),
        (n, n, 0),
        "placed on CPU 0, found in the shared table on CPU 1"
    );
    assert_eq!(backends(&lab), before);
    assert_eq!(lab.reasons()["conn_hit"], n, "now in CPU 1's table too");
    // New flows on CPU 1 do reach the new backends.
    let fresh: std::collections::BTreeSet<u8> = (40000..40400u16)
        .map(|p| backend_of(&lab.run(&pkt(p)).1))
        .collect();
    assert!(fresh.contains(&5) && fresh.contains(&6), "{fresh:?}");
}

#[test]
fn ipv4_flow_moving_to_another_cpu_keeps_its_backend() {
    flow_moving_to_another_cpu_keeps_its_backend(false);
}

#[test]
fn ipv6_flow_moving_to_another_cpu_keeps_its_backend() {
    flow_moving_to_another_cpu_keeps_its_backend(true);
}

/// Entries of the shared table are written by every CPU without a lock: an
/// entry whose backend and generation were torn in from another write is
/// not trusted, and the flow is hashed on the ring as if it were not there.
#[test]
fn torn_shared_entry_is_not_trusted() {
    use aya::maps::{Array, Map};
    let mut st = state();
    for v in st.vips.iter_mut().filter(|v| v.spec == vip_i()) {
        v.backends = multi_backends();
    }
    let lab = Lab::new(st); // on CPU 0
    let key = conn_key(ip(CLIENT), 20000, ip("10.0.0.104"), 80, Protocol::Tcp);
    let fp = lb_common::flow_hash64(&key);
    let slot = shared_slot(lb_common::flow_hash(&key));
    let placed = backend_of(&lab.run(&flow_to_i(20000)).1);
    let mut shared: Array<_, lb_common::SharedConn> =
        Array::try_from(Map::Array(lab.lb_map("CONN_SHARED"))).expect("CONN_SHARED");
    // The programs' backend table: one value, all the entries.
    let backends: Array<_, [lb_common::Backend; lb_common::MAX_BACKENDS as usize]> =
        Array::try_from(Map::Array(lab.lb_map(BACKENDS_TABLE.map))).expect("backend table");
    let entry = shared.get(&slot, 0).expect("entry");
    let id_of = |n: u8| {
        lab.dp
            .backend_id(&vip_i(), ip(&format!("10.0.3.{n}")))
            .expect("backend id")
    };
    assert_eq!(entry.backend_id, id_of(placed), "the placement is shared");
    assert_eq!(
        entry.check,
        lb_common::shared_conn_check(fp, entry.backend_id, entry.generation)
    );
    // Another live backend with its own generation: only the check can
    // tell that this entry is torn.
    let other = if placed == 1 { 2 } else { 1 };
    let table = backends.get(&0, 0).expect("backend table");
    let other_gen = table[id_of(other) as usize].generation;
    let torn = lb_common::SharedConn {
        check: entry.check,
        backend_id: id_of(other),
        generation: other_gen,
    };
    shared.set(slot, torn, 0).expect("write torn entry");

    pin_to_cpu(1);
    assert_eq!(
        backend_of(&lab.run(&flow_to_i(20000)).1),
        placed,
        "hashed on the ring, not sent to the torn entry's backend"
    );
    let r = lab.reasons();
    assert_eq!((r["conn_shared"], r["conn_miss"]), (0, 2), "{r:?}");

    // Control: an entry whose check matches is followed, even to a backend
    // the ring would not choose (a flow no CPU has seen).
    let key = conn_key(ip(CLIENT), 20001, ip("10.0.0.104"), 80, Protocol::Tcp);
    let fp = lb_common::flow_hash64(&key);
    let slot = shared_slot(lb_common::flow_hash(&key));
    let ring = lab.predicted_backend(&vip_i(), &key).expect("ring choice");
    let other = (1..=4u8)
        .find(|n| ip(&format!("10.0.3.{n}")) != ring)
        .expect("another backend");
    let generation = table[id_of(other) as usize].generation;
    let entry = lb_common::SharedConn {
        check: lb_common::shared_conn_check(fp, id_of(other), generation),
        backend_id: id_of(other),
        generation,
    };
    shared.set(slot, entry, 0).expect("write entry");
    assert_eq!(backend_of(&lab.run(&flow_to_i(20001)).1), other);
    assert_eq!(lab.reasons()["conn_shared"], 1);
}

#[test]
fn drained_backend_keeps_its_flows_and_gets_no_new_ones() {
    let mut lab = Lab::new(state());
    let flows: Vec<u16> = (20000..20200).collect();
    let before: Vec<u8> = flows
        .iter()
        .map(|&p| backend_of(&lab.run(&flow_to_i(p)).1))
        .collect();
    assert!(before.contains(&2));
    let mut st = lab.state.clone();
    let i = st
        .vips
        .iter_mut()
        .find(|v| v.spec == vip_i())
        .expect("vip i");
    i.backends[1].weight = 0; // 10.0.3.2
    lab.apply(st);
    let after: Vec<u8> = flows
        .iter()
        .map(|&p| backend_of(&lab.run(&flow_to_i(p)).1))
        .collect();
    assert_eq!(before, after, "drained backend keeps its established flows");
    for p in 40000..40500u16 {
        assert_ne!(
            backend_of(&lab.run(&flow_to_i(p)).1),
            2,
            "new flow {p} sent to a drained backend"
        );
    }
}

/// The connection table is set-associative per CPU (IPv4: 3-way lines,
/// IPv6: 4-way buckets): a new flow in a full set evicts the set's least
/// recently used flow, and counts it.
fn full_set_evicts_its_least_recently_used_flow(v6: bool) {
    let mut lab = Lab::new(state());
    let cpus = u32::try_from(aya::util::nr_cpus().expect("CPU count")).expect("CPUs");
    let (ways, sets) = if v6 {
        (
            lb_common::CONN_WAYS,
            lb_common::conn_buckets(CONN_TABLE_SIZE, cpus),
        )
    } else {
        (
            lb_common::CONN4_WAYS,
            lb_common::conn4_lines(CONN_TABLE_SIZE, cpus),
        )
    };
    let (client, vip_addr) = if v6 {
        (CLIENT6, "2001:db8::102")
    } else {
        (CLIENT, "10.0.0.104")
    };
    let hash = |p: u16| {
        hash_of(
            client,
            p,
            vip_addr,
            80,
            Protocol::Tcp,
            HashFields::default(),
        )
    };
    // Flows of one set of this CPU's table; flow 1, the one to be evicted,
    // alone in its entry of the shared table (so no other flow here
    // overwrites what it comes back from).
    let shared_mask = lb_common::shared_conn_entries(CONN_TABLE_SIZE) - 1;
    let first = hash(20000) & (sets - 1);
    let in_set: Vec<u16> = (20000..u16::MAX)
        .filter(|&p| hash(p) & (sets - 1) == first)
        .collect();
    let evicted = in_set[0];
    let mut flows: Vec<u16> = in_set
        .iter()
        .copied()
        .filter(|&p| hash(p) & shared_mask != hash(evicted) & shared_mask)
        .take(ways + 1)
        .collect();
    flows.insert(1, evicted);
    assert_eq!(flows.len(), ways + 2);
    let counts = || {
        let r = lab.reasons();
        (r["conn_hit"], r["conn_miss"], r["conn_evicted"])
    };
    let run = |i: usize| {
        let pkt = client_packet(client, flows[i], vip_addr, 80, Protocol::Tcp, None, b"x");
        assert_eq!(lab.run(&pkt).0, verdict::TX);
    };
    let w = ways as u64;
    for i in 0..ways {
        run(i);
    }
    assert_eq!(counts(), (0, w, 0), "new flows fill the set");
    for i in (0..ways).filter(|&i| i != 1) {
        run(i);
    }
    assert_eq!(counts(), (w - 1, w, 0), "all but flow 1 used again");
    run(ways);
    assert_eq!(counts(), (w - 1, w + 1, 1), "one more flow evicts one");
    for i in (0..=ways).filter(|&i| i != 1) {
        run(i);
    }
    assert_eq!(
        counts(),
        (2 * w - 1, w + 1, 1),
        "the recently used flows stayed"
    );
    run(1);
    assert_eq!(
        counts(),
        (2 * w - 1, w + 1, 2),
        "flow 1 was the one evicted (and evicts another to come back)"
    );
    assert_eq!(
        lab.reasons()["conn_shared"],
        1,
        "flow 1 came back from the shared table"
    );
    // With every backend drained, a new flow finds none: it is dropped and
    // not placed, so it evicts nothing (the miss still counts).
    let mut st = lab.state.clone();
    let vip_ip: IpAddr = vip_addr.parse().expect("vip");
    for v in st.vips.iter_mut().filter(|v| v.spec.addr == vip_ip) {
        for b in &mut v.backends {
            b.weight = 0;
        }
    }
    lab.apply(st);
    let pkt = client_packet(
        client,
        flows[ways + 1],
        vip_addr,
        80,
        Protocol::Tcp,
        None,
        b"x",
    );
    assert_eq!(lab.run(&pkt).0, verdict::DROP);
    let r = lab.reasons();
    assert_eq!(r["drop_no_backend"], 1);
    assert_eq!(
        (r["conn_hit"], r["conn_miss"], r["conn_evicted"]),
        (2 * w - 1, w + 2, 2),
        "a flow without a backend evicts nothing"
    );
}

#[test]
fn full_ipv4_set_evicts_its_least_recently_used_flow() {
    full_set_evicts_its_least_recently_used_flow(false);
}

#[test]
fn full_ipv6_set_evicts_its_least_recently_used_flow() {
    full_set_evicts_its_least_recently_used_flow(true);
}

/// A backend that fails leaves the live table before it is marked dead:
/// otherwise, while the switch is built (and waits out the slot grace), the
/// old table still sends new flows to a backend the data plane already
/// treats as dead, and they are dropped (`drop_no_backend`). New flows are
/// sent from another CPU during the change.
#[test]
fn dying_backend_leaves_the_table_before_it_is_marked_dead() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut lab = Lab::new(state());
    let i_of = |st: &DesiredState| {
        st.vips
            .iter()
            .position(|v| v.spec == vip_i())
            .expect("vip i")
    };
    // A first change flips vip i's table, so the next switch of it waits.
    let mut st = lab.state.clone();
    let i = i_of(&st);
    st.vips[i].backends[0].weight = 150;
    lab.apply(st.clone());
    let runner = ProgRunner::new(&lab, programs::LB);
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let cpus = aya::util::nr_cpus().expect("CPU count");
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            pin_to_cpu(if cpus > 1 { 1 } else { 0 });
            let started = std::time::Instant::now();
            let mut port = 1024u16;
            // Bounded in count and time.
            while !stop.load(Ordering::Relaxed)
                && sent.load(Ordering::Relaxed) < 2_000_000
                && started.elapsed() < std::time::Duration::from_secs(20)
            {
                assert_eq!(runner.run(&flow_to_i(port)), verdict::TX);
                sent.fetch_add(1, Ordering::Relaxed);
                port = if port == u16::MAX { 1024 } else { port + 1 };
            }
        });
        while sent.load(Ordering::Relaxed) < 2000 && !sender.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        st.vips[i].backends[2].healthy = false; // 10.0.3.3
        lab.apply(st);
        let after = sent.load(Ordering::Relaxed);
        while sent.load(Ordering::Relaxed) < after + 2000 && !sender.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        sender.join().expect("sender");
    });
    assert!(sent.into_inner() > 4000);
    assert_eq!(lab.reasons()["drop_no_backend"], 0);
}

#[test]
fn dead_backend_loses_its_flows_to_survivors() {
    let mut lab = Lab::new(state());
    let flows: Vec<u16> = (20000..20200).collect();
    let before: Vec<u8> = flows
        .iter()
        .map(|&p| backend_of(&lab.run(&flow_to_i(p)).1))
        .collect();
    let mut st = lab.state.clone();
    let i = st
        .vips
        .iter_mut()
        .find(|v| v.spec == vip_i())
        .expect("vip i");
    i.backends[2].healthy = false; // 10.0.3.3
    lab.apply(st);
    let after: Vec<u8> = flows
        .iter()
        .map(|&p| backend_of(&lab.run(&flow_to_i(p)).1))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(*a, 3);
        if *b != 3 {
            assert_eq!(a, b, "flows of surviving backends stay put");
        }
    }
    let moved = before.iter().filter(|&&b| b == 3).count() as u64;
    assert!(moved > 0);
    assert_eq!(lab.reasons()["conn_stale"], moved);
}

#[test]
fn no_healthy_backend_drops_and_counts() {
    let mut lab = Lab::new(state());
    let mut st = lab.state.clone();
    for v in &mut st.vips {
        if v.spec == vip_a() {
            v.backends[0].healthy = false;
        }
    }
    lab.apply(st);
    let pkt = client_packet(CLIENT, 40000, "10.0.0.100", 80, Protocol::Tcp, None, b"x");
    assert_eq!(lab.run(&pkt).0, verdict::DROP);
    assert_eq!(lab.reasons()["drop_no_backend"], 1);
}

#[test]
fn apply_writes_only_what_changed() {
    let mut lab = Lab::new(state());
    let again = lab.apply(state());
    assert!(again.is_empty(), "{again:?}");
    let mut st = state();
    st.vips
        .iter_mut()
        .find(|v| v.spec == vip_g())
        .expect("g")
        .active = true;
    let r = lab.apply(st.clone());
    assert_eq!(r.vip_updates, 1, "{r:?}");
    assert_eq!(r.rings_switched, 0, "{r:?}");
    // The VIP's backends carry its flags for the fast path (`fast_flags`).
    let g_backends = st
        .vips
        .iter()
        .find(|v| v.spec == vip_g())
        .map_or(0, |v| v.backends.len());
    assert_eq!(r.backends_written, g_backends, "{r:?}");
    let pkt = client_packet(CLIENT, 40000, "10.0.0.103", 80, Protocol::Tcp, None, b"x");
    assert_eq!(lab.run(&pkt).0, verdict::TX);
    // removing a VIP makes its traffic pass
    st.vips.retain(|v| v.spec != vip_g());
    let r = lab.apply(st);
    assert_eq!(r.vips_removed, 1);
    let (v, out) = lab.run(&pkt);
    assert_eq!(v, verdict::PASS);
    assert_frame(&out, &pkt);
}

#[test]
fn vip_lookup_with_colliding_addresses_and_crowded_slots() {
    // 10.100.0.0 folds to the same address slot as 10.0.0.100 (vip_a, vip_b).
    assert_eq!(
        lb_common::vip_slot(&[10, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        lb_common::vip_slot(&[10, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    let to =
        |dst: &str, port: u16| client_packet(CLIENT, 40000, dst, port, Protocol::Tcp, None, b"x");
    let check = |lab: &Lab, dst: &str, port: u16, want: Option<u8>| {
        let pkt = to(dst, port);
        let (v, out) = lab.run(&pkt);
        match want {
            Some(n) => {
                assert_eq!(v, verdict::TX, "{dst}:{port}");
                assert_frame(&out, &dr_expected(&pkt, backend_mac(n)));
            }
            None => {
                assert_eq!(v, verdict::PASS, "{dst}:{port}");
                assert_frame(&out, &pkt);
            }
        }
    };
    let crowded = |ports: &[u16], portless: bool| {
        let mut st = state();
        for (i, &port) in ports.iter().enumerate() {
            st.vips.push(vip_state(
                vip("10.100.0.0", Some(port), Protocol::Tcp),
                Forwarding::Dr,
                vec![backend(&format!("10.0.4.{i}"), 20 + i as u8, 100)],
            ));
        }
        if portless {
            st.vips.push(vip_state(
                vip("10.100.0.0", None, Protocol::Tcp),
                Forwarding::Dr,
                vec![backend("10.0.4.99", 30, 100)],
            ));
        }
        st
    };
    let mut lab = Lab::new(state());
    check(&lab, "10.100.0.0", 80, None);
    // One colliding VIP: 2 + 1 VIPs in the slot, each found by its full key.
    lab.apply(crowded(&[80], false));
    check(&lab, "10.0.0.100", 80, Some(1));
    check(&lab, "10.100.0.0", 80, Some(20));
    check(&lab, "10.100.0.0", 81, None);
    check(&lab, "10.0.0.100", 81, None);
    // Exact first, then the port-less VIP (4 in the slot: still the array path).
    lab.apply(crowded(&[80], true));
    check(&lab, "10.100.0.0", 80, Some(20));
    check(&lab, "10.100.0.0", 81, Some(30));
    check(&lab, "10.0.0.100", 81, None);
    // 2 + 4 VIPs in the slot: the hash-map fallback, same answers.
    lab.apply(crowded(&[80, 82, 83], true));
    check(&lab, "10.0.0.100", 80, Some(1));
    check(&lab, "10.100.0.0", 80, Some(20));
    check(&lab, "10.100.0.0", 83, Some(22));
    check(&lab, "10.100.0.0", 81, Some(30));
    check(&lab, "10.0.0.100", 81, None);
    // And back: removing VIPs leaves the array path with the rest.
    lab.apply(crowded(&[83], false));
    check(&lab, "10.100.0.0", 83, Some(20));
    check(&lab, "10.100.0.0", 80, None);
    check(&lab, "10.0.0.100", 80, Some(1));
    lab.apply(state());
    check(&lab, "10.100.0.0", 83, None);
    check(&lab, "10.0.0.100", 80, Some(1));
}

/// Two VIPs on one address and protocol that both hash without the
/// destination port (`hash = ["src_addr", "dst_addr", "protocol"]`) mask a
/// client's flows to both to the same key: each VIP must still find only
/// its own connection-table entries (per-CPU and shared), not the other's,
/// whose backend is not in its pool.
fn vips_sharing_an_address_keep_their_flows_apart(v6: bool) {
    let (client, addr, pool80, pool443) = if v6 {
        (
            CLIENT6,
            "2001:db8::110",
            "2001:db8:5::80",
            "2001:db8:5::443",
        )
    } else {
        (CLIENT, "10.0.0.110", "10.0.5.80", "10.0.5.143")
    };
    let mut st = state();
    for (port, be, mac) in [(80, pool80, 40), (443, pool443, 41)] {
        let mut v = vip_state(
            vip(addr, Some(port), Protocol::Tcp),
            Forwarding::Dr,
            vec![backend(be, mac, 100)],
        );
        v.hash = ADDR_ONLY;
        st.vips.push(v);
    }
    let lab = Lab::new(st); // on CPU 0
    let to = |port: u16| client_packet(client, 40000, addr, port, Protocol::Tcp, None, b"x");
    let mac_of = |port: u16| {
        let (v, out) = lab.run(&to(port));
        assert_eq!(v, verdict::TX, ":{port} {:?}", lab.reasons());
        out[5]
    };
    assert_eq!(mac_of(80), 40, ":80 placed on its pool");
    // On another CPU only the shared table knows the :80 flow.
    pin_to_cpu(1);
    assert_eq!(mac_of(443), 41, ":443 on CPU 1 (shared table)");
    // On CPU 0 this CPU's table holds the :80 flow in the same set (and
    // the shared table now the :443 flow, placed by CPU 1).
    pin_to_cpu(0);
    assert_eq!(mac_of(443), 41, ":443 on CPU 0 (per-CPU table)");
    assert_eq!(mac_of(80), 40, ":80 kept");
    assert_eq!(mac_of(443), 41, ":443 kept");
    let r = lab.reasons();
    assert_eq!(
        (r["conn_miss"], r["conn_hit"], r["conn_shared"]),
        (2, 2, 1),
        "each VIP hits only its own entries: {r:?}"
    );
}

#[test]
fn ipv4_vips_sharing_an_address_keep_their_flows_apart() {
    vips_sharing_an_address_keep_their_flows_apart(false);
}

#[test]
fn ipv6_vips_sharing_an_address_keep_their_flows_apart() {
    vips_sharing_an_address_keep_their_flows_apart(true);
}

// ------------------------------------------------------------------- decap

#[test]
fn decap_strips_tunnels_to_this_host_only() {
    // Backends untagged, then on VLAN 5: tunnels arrive with and without a tag.
    for backend_vlan in [lb_common::VLAN_UNTAGGED, 5] {
        let mut st = state();
        backends_on_vlan(&mut st, backend_vlan);
        let mut lab = Lab::new(st);
        lab.dp
            .set_decap_addrs(&[ip("10.0.2.1"), ip("2001:db8:2::1"), ip("2001:db8:2::2")])
            .expect("decap addrs");
        for (src, dst, port, proto) in [
            (CLIENT, "10.0.0.100", 53, Protocol::Udp),
            (CLIENT6, "2001:db8::100", 53, Protocol::Udp),
            (CLIENT, "10.0.0.102", 443, Protocol::Tcp),
        ] {
            for vlan in [None, Some(5)] {
                let pkt = client_packet(src, 40000, dst, port, proto, vlan, b"inner");
                let (v, tunneled) = lab.run(&pkt);
                assert_eq!(v, verdict::TX);
                let (v, out) = lab.run_prog(programs::DECAP, &tunneled).expect("decap run");
                assert_eq!(v, verdict::PASS);
                // The inner packet, behind the tunnel's L2 header with the
                // inner EtherType.
                let in_l3 = if vlan.is_some() { 18 } else { 14 };
                let l3 = if backend_vlan == 5 { 18 } else { 14 };
                let mut want = tunneled[..l3].to_vec();
                want[l3 - 2..l3].copy_from_slice(&pkt[in_l3 - 2..in_l3]);
                want.extend_from_slice(&pkt[in_l3..]);
                assert_frame(&out, &want);
            }
        }
        // 6-in-4 to an address that is not ours passes untouched
        let pkt = client_packet(
            CLIENT6,
            40000,
            "2001:db8::102",
            80,
            Protocol::Tcp,
            None,
            b"x",
        );
        let (_, tunneled) = lab.run(&pkt);
        let (v, out) = lab.run_prog(programs::DECAP, &tunneled).expect("decap run");
        assert_eq!(v, verdict::PASS);
        assert_frame(&out, &tunneled);
        assert_eq!(lab.reasons()["decapsulated"], 6);
    }
}

/// Sets the ECN bits of the IP header at `l3` (fixing the IPv4 checksum).
fn set_ecn(frame: &mut [u8], l3: usize, ecn: u8) {
    if frame[l3] >> 4 == 4 {
        frame[l3 + 1] = (frame[l3 + 1] & !3) | ecn;
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        let (h, _) = Ipv4Header::from_slice(&frame[l3..l3 + ihl]).expect("ipv4 header");
        let c = h.calc_header_checksum();
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        frame[l3 + 1] = (frame[l3 + 1] & !0x30) | (ecn << 4);
    }
}

/// RFC 6040 section 4.2: a congestion mark on the outer header reaches the
/// inner packet (whose IPv4 checksum stays right), ECT(1) on the outer one
/// turns an inner ECT(0) into ECT(1), and outer CE on an inner packet that
/// is not ECN-capable is dropped and counted; every combination, IPIP and
/// IP6IP6.
#[test]
fn decap_carries_congestion_marks_inward() {
    use lb_common::ecn::{CE, ECT0, ECT1, NOT_ECT};
    let mut lab = Lab::new(state());
    lab.dp
        .set_decap_addrs(&[ip("10.0.2.1"), ip("2001:db8:2::1"), ip("2001:db8:2::2")])
        .expect("decap addrs");
    let mut dropped = 0;
    for (src, dst) in [(CLIENT, "10.0.0.100"), (CLIENT6, "2001:db8::100")] {
        for inner in [NOT_ECT, ECT0, ECT1, CE] {
            for outer in [NOT_ECT, ECT0, ECT1, CE] {
                let mut pkt = client_packet(src, 40000, dst, 53, Protocol::Udp, None, b"ecn");
                set_ecn(&mut pkt, 14, inner);
                let (v, mut tunneled) = lab.run(&pkt);
                assert_eq!(v, verdict::TX);
                set_ecn(&mut tunneled, 14, outer);
                let (v, out) = lab.run_prog(programs::DECAP, &tunneled).expect("decap run");
                let case = format!("{dst}: inner {inner} outer {outer}");
                let want_ecn = match (inner, outer) {
                    (NOT_ECT, CE) => None,
                    (_, CE) => Some(CE),
                    (ECT0, ECT1) => Some(ECT1),
                    _ => Some(inner),
                };
                let Some(want_ecn) = want_ecn else {
                    assert_eq!(v, verdict::DROP, "{case}");
                    dropped += 1;
                    continue;
                };
                assert_eq!(v, verdict::PASS, "{case}");
                let mut want = tunneled[..14].to_vec();
                want[12..14].copy_from_slice(&pkt[12..14]);
                let mut inner_pkt = pkt[14..].to_vec();
                set_ecn(&mut inner_pkt, 0, want_ecn);
                want.extend_from_slice(&inner_pkt);
                assert_frame(&out, &want);
            }
        }
    }
    assert_eq!(dropped, 2);
    assert_eq!(lab.reasons()["drop_ce_not_ect"], 2);
    assert_eq!(lab.reasons()["decapsulated"], 30);
}

// ------------------------------------------------------------- bad input

fn fixture_packets() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (src, dst, port, proto) in [
        (CLIENT, "10.0.0.100", 80, Protocol::Tcp),
        (CLIENT, "10.0.0.100", 53, Protocol::Udp),
        (CLIENT6, "2001:db8::100", 80, Protocol::Tcp),
        (CLIENT6, "2001:db8::100", 53, Protocol::Udp),
        (CLIENT, "10.0.0.101", 9999, Protocol::Tcp),
        (CLIENT, "10.0.0.102", 443, Protocol::Tcp),
        (CLIENT6, "2001:db8::102", 80, Protocol::Tcp),
        (CLIENT, "10.0.0.104", 80, Protocol::Tcp),
    ] {
        for vlan in [None, Some(3)] {
            v.push(client_packet(
                src,
                40000,
                dst,
                port,
                proto,
                vlan,
                b"0123456789abcdef",
            ));
        }
    }
    v.push(v4_fragment([10, 0, 0, 101], false));
    v.push(v4_fragment([10, 0, 0, 100], true));
    // Too big to encapsulate: `lb` hands them to `lb_too_big`, which parses
    // them again and answers (or drops): each run still counted once.
    v.push(too_big_v4());
    v.push(too_big_v6());
    v
}

/// A forwarded frame must parse cleanly, with consistent lengths and a valid
/// outer IPv4 checksum.
fn assert_well_formed(out: &[u8], input: &[u8]) {
    let p = SlicedPacket::from_ethernet(out).unwrap_or_else(|e| {
        panic!("forwarded a malformed frame: {e}\n in {input:02x?}\nout {out:02x?}")
    });
    if let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net {
        let h = v4.header().to_header();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "outer checksum\nout {out:02x?}"
        );
    }
}

/// A lab of the fixture state with every backend on `vlan`: the bad-input
/// corpora run untagged and tagged backends both (tags rewritten, added and
/// removed on the way out).
fn lab_on_vlan(vlan: u16) -> Lab {
    let mut st = state();
    backends_on_vlan(&mut st, vlan);
    Lab::new(st)
}

#[test]
fn every_truncation_of_every_fixture_is_never_forwarded() {
    for vlan in [lb_common::VLAN_UNTAGGED, 42] {
        truncations_are_never_forwarded(&lab_on_vlan(vlan));
    }
}

fn truncations_are_never_forwarded(lab: &Lab) {
    let mut runs = 0u64;
    for pkt in fixture_packets() {
        for len in 14..pkt.len() {
            let (v, _) = lab.run(&pkt[..len]);
            assert_ne!(
                v,
                verdict::TX,
                "truncated to {len} of {}: {:02x?}",
                pkt.len(),
                &pkt[..len]
            );
            runs += 1;
        }
        assert!(
            lab.run_prog(programs::LB, &pkt[..13]).is_err(),
            "kernel refuses < 14 bytes"
        );
    }
    assert_eq!(lab.reasons_total(), runs, "every run is counted once");
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_packets_never_forward_malformed_frames() {
    for vlan in [lb_common::VLAN_UNTAGGED, 42] {
        random_and_mutated_packets(&lab_on_vlan(vlan), vlan);
    }
}

fn random_and_mutated_packets(lab: &Lab, backend_vlan: u16) {
    let fixtures = fixture_packets();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut runs = 0u64;
    let mut forwarded = 0u64;
    for i in 0..6000 {
        let pkt: Vec<u8> = if i % 2 == 0 {
            // mutate a fixture: flip 1-4 bytes anywhere
            let mut p = fixtures[rng.below(fixtures.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(p.len());
                p[at] ^= 1 << rng.below(8);
            }
            if rng.below(4) == 0 {
                let cut = 14 + rng.below(p.len() - 14);
                p.truncate(cut);
            }
            p
        } else {
            // random bytes behind a plausible header, so parsing goes deep
            let base = &fixtures[rng.below(fixtures.len())];
            let keep = rng.below(base.len().min(60));
            let mut p = base[..keep].to_vec();
            let len = 14.max(keep) + rng.below(120);
            while p.len() < len {
                p.push(rng.next() as u8);
            }
            p
        };
        let (v, out) = lab.run(&pkt);
        runs += 1;
        assert!(
            v == verdict::PASS || v == verdict::DROP || v == verdict::TX,
            "verdict {v}"
        );
        if v == verdict::TX {
            forwarded += 1;
            assert_well_formed(&out, &pkt);
            // A frame to a backend (not a too-big reply to the client) is
            // on the backend's VLAN.
            if out[..5] == backend_mac(0)[..5] {
                let vid = (out[12..14] == [0x81, 0x00])
                    .then(|| u16::from_be_bytes([out[14], out[15]]) & 0x0fff);
                assert_eq!(
                    vid.unwrap_or(lb_common::VLAN_UNTAGGED),
                    backend_vlan,
                    "in {pkt:02x?}\nout {out:02x?}"
                );
            }
        }
    }
    assert!(
        forwarded > 100,
        "the mutations still reach the forwarding paths: {forwarded}"
    );
    let r = lab.reasons();
    assert!(
        r["too_big_sent"] > 0,
        "the mutations reach lb_too_big's answer: {r:?}"
    );
    assert_eq!(lab.reasons_total(), runs, "every run is counted once");
}

#[test]
fn bad_ipv4_checksum_or_l4_length_to_a_vip_is_dropped() {
    let lab = Lab::new(state());
    let good = client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        80,
        Protocol::Tcp,
        None,
        b"0123",
    );
    let mut bad_csum = good.clone();
    bad_csum[14 + 8] = 1; // TTL changed, checksum not updated
    let mut bad_doff = good.clone();
    bad_doff[14 + 20 + 12] = 0xf0; // TCP header claims 60 bytes, the IP payload has 24
    let udp = client_packet(
        CLIENT,
        40000,
        "10.0.0.100",
        53,
        Protocol::Udp,
        None,
        b"0123",
    );
    let mut bad_ulen = udp.clone();
    bad_ulen[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&100u16.to_be_bytes());
    for (name, pkt) in [
        ("checksum", &bad_csum),
        ("tcp doff", &bad_doff),
        ("udp length", &bad_ulen),
    ] {
        assert_eq!(lab.run(pkt).0, verdict::DROP, "{name}");
    }
    assert_eq!(lab.reasons()["drop_malformed"], 3);
    assert_eq!(lab.run(&good).0, verdict::TX);
    assert_eq!(lab.run(&udp).0, verdict::TX);
}

/// Every counter of the data plane, flattened: reasons, and packets and
/// bytes per VIP and per (VIP, backend).
fn counters(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    let s = lab.dp.stats().expect("stats");
    let mut m: std::collections::BTreeMap<String, u64> = s
        .reasons
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    for (vip, c) in &s.vips {
        m.insert(format!("{vip:?} packets"), c.packets);
        m.insert(format!("{vip:?} bytes"), c.bytes);
    }
    for (vip, bs) in &s.backends {
        for (addr, c) in bs {
            m.insert(format!("{vip:?} {addr} packets"), c.packets);
            m.insert(format!("{vip:?} {addr} bytes"), c.bytes);
        }
    }
    m
}

/// What one run changed in [`counters`].
fn counters_delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d != 0)
        .collect()
}

/// Offset of the IP header in a frame, untagged or with one 802.1Q tag.
fn l3_offset(pkt: &[u8]) -> usize {
    if pkt[12..14] == [0x81, 0x00] { 18 } else { 14 }
}

/// Rewrites the IPv4 header checksum of a frame (untagged or with one
/// 802.1Q tag), if it has a whole IPv4 header.
fn fix_ipv4_checksum(pkt: &mut [u8]) {
    let l3 = l3_offset(pkt);
    if pkt.len() < l3 + 20 || pkt[l3 - 2..l3] != [0x08, 0x00] || pkt[l3] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(pkt[l3] & 0x0f) * 4;
    if ihl < 20 || pkt.len() < l3 + ihl {
        return;
    }
    pkt[l3 + 10..l3 + 12].fill(0);
    let c = inet_csum(&pkt[l3..l3 + ihl]);
    pkt[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// A lab for [`fast_path_decides_every_packet_as_the_general_path_does`]:
/// the fixture state with backends on `vlan`, VIP `a`'s debug events on or
/// off, and an ICMP rate limit that never runs dry (the too-big fixtures
/// take a token on every run: a bucket refilling between the two runs of
/// one packet would make them differ).
fn differential_lab(vlan: u16, debug_a: bool) -> Lab {
    let mut st = state();
    backends_on_vlan(&mut st, vlan);
    st.node.icmp_rate = 1_000_000;
    st.node.icmp_burst = 1_000_000;
    st.vips[0].debug = debug_a;
    Lab::new(st)
}

/// `lb`'s fast path for established IPv4 flows (`lb-ebpf/src/fast.rs`)
/// must decide every packet as the general path does: the same verdict,
/// the same bytes out, the same counters (but for `fast_path`, which counts
/// what took the fast path). Each packet runs once to establish its flow,
/// once through the general path alone (`set_general_path_only`), once
/// with the fast path; the last two must agree. The packets: every fixture
/// and one to the inactive VIP; each of them with an IPv4 header field
/// changed and the checksum made valid again (IHL, TOS, flags, fragment
/// offset, TTL); then random ones: unchanged, bits flipped anywhere,
/// padding added, cut short. Three
/// labs: untagged backends (the fast path must take at least 40 of the
/// packets), backends on VLAN 42 (it must take none), and VIP `a` with
/// debug events (the general path logs them).
#[test]
fn fast_path_decides_every_packet_as_the_general_path_does() {
    for (vlan, debug_a) in [
        (lb_common::VLAN_UNTAGGED, false),
        (42, false),
        (lb_common::VLAN_UNTAGGED, true),
    ] {
        let mut lab = differential_lab(vlan, debug_a);
        let mut base = fixture_packets();
        base.push(to_inactive_vip(b"inactive"));
        // Every packet as it is, then each IPv4 header field of each with
        // two of its bits flipped in turn (checksum valid again), then
        // random mutations.
        let mut corpus = base.clone();
        for p in &base {
            for field in [0, 1, 6, 7, 8] {
                for bit in [0, 5] {
                    let mut q = p.clone();
                    let l3 = l3_offset(&q);
                    q[l3 + field] ^= 1 << bit;
                    fix_ipv4_checksum(&mut q);
                    corpus.push(q);
                }
            }
        }
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        while corpus.len() < 1500 {
            let mut pkt = base[rng.below(base.len())].clone();
            match rng.below(4) {
                0 => pkt.extend((0..1 + rng.below(40)).map(|_| rng.next() as u8)),
                1 => pkt.truncate(14 + rng.below(pkt.len() - 14)),
                // as it is: most traffic is well formed
                2 => {}
                _ => {
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(pkt.len());
                        pkt[at] ^= 1 << rng.below(8);
                    }
                }
            }
            corpus.push(pkt);
        }
        let mut fast = 0u32;
        for pkt in &corpus {
            lab.dp
                .set_general_path_only(true)
                .expect("general path only");
            lab.run(pkt);
            let c0 = counters(&lab);
            let general = lab.run(pkt);
            let c1 = counters(&lab);
            lab.dp.set_general_path_only(false).expect("fast path on");
            let out = lab.run(pkt);
            let c2 = counters(&lab);
            let ctx = format!("vlan {vlan}, debug {debug_a}, in {pkt:02x?}");
            assert_eq!(out, general, "verdict and bytes, {ctx}");
            let dg = counters_delta(&c0, &c1);
            let mut df = counters_delta(&c1, &c2);
            assert_eq!(dg.get("fast_path"), None, "general path only, {ctx}");
            if df.remove("fast_path") == Some(1) {
                fast += 1;
            }
            assert_eq!(df, dg, "counters, {ctx}");
        }
        if vlan == lb_common::VLAN_UNTAGGED {
            assert!(fast >= 40, "the fast path took {fast} packets");
        } else {
            assert_eq!(fast, 0, "the fast path declines tagged backends");
        }
    }
}

/// A port-less VIP shares its address and protocol with a VIP of a port:
/// the general path gives that port's packets to the VIP of the port (the
/// exact match first), even those of a flow the connection table holds for
/// the port-less VIP. `lb`'s fast path reads a flow's VIP flags from its
/// backend and does not look the VIP up, so user space leaves such a
/// port-less VIP's flows to the general path (`Backend::fast_flags`
/// without ACTIVE), whichever of the two the config lists first. Each
/// packet here runs through the general path alone and then with the fast
/// path on; both must decide it the same, and the fast path takes the
/// port-less VIP's flows only while it is alone (again once the other VIP
/// goes).
#[test]
fn a_portless_vip_shadowed_by_a_vip_of_a_port_leaves_its_flows_to_the_general_path() {
    let portless = vip("10.0.0.110", None, Protocol::Tcp);
    let exact = vip("10.0.0.110", Some(443), Protocol::Tcp);
    let p = vip_state(portless, Forwarding::Dr, vec![backend("10.0.5.1", 21, 100)]);
    let e = vip_state(exact, Forwarding::Ipip, vec![backend("10.0.5.2", 22, 100)]);
    let alone = DesiredState {
        node: node(),
        vips: vec![p.clone()],
    };
    let flow = |dport| {
        client_packet(
            CLIENT,
            41000,
            "10.0.0.110",
            dport,
            Protocol::Tcp,
            None,
            b"x",
        )
    };
    // Runs `pkt` through the general path, then with the fast path: the
    // outcomes must agree; whether the fast path took it.
    let both = |lab: &mut Lab, pkt: &[u8]| {
        lab.dp
            .set_general_path_only(true)
            .expect("general path only");
        let general = lab.run(pkt);
        lab.dp.set_general_path_only(false).expect("fast path on");
        let c0 = counters(lab);
        let fast = lab.run(pkt);
        assert_eq!(fast, general, "verdict and bytes");
        counters_delta(&c0, &counters(lab)).get("fast_path") == Some(&1)
    };
    for (order, vips) in [
        ("port-less first", vec![p.clone(), e.clone()]),
        ("exact first", vec![e.clone(), p.clone()]),
    ] {
        let mut lab = Lab::new(alone.clone());
        for dport in [443, 8080] {
            lab.run(&flow(dport)); // recorded in this CPU's table
            assert!(
                both(&mut lab, &flow(dport)),
                "{order}, port {dport}: alone, fast"
            );
        }
        let shadowed = DesiredState { node: node(), vips };
        assert_eq!(
            shadowed.fast_flags(&p) & lb_common::vip_flags::ACTIVE as u16,
            0,
            "shadowed: not active on the fast path"
        );
        lab.apply(shadowed);
        for dport in [443, 8080] {
            assert!(
                !both(&mut lab, &flow(dport)),
                "{order}, port {dport}: shadowed, general"
            );
        }
        // Port 443 is the exact VIP's now: its established flow still goes
        // to the port-less VIP's backend (the table keeps it), forwarded as
        // the exact VIP forwards, by the general path.
        let (v, out) = lab.run(&flow(443));
        assert_eq!(v, verdict::TX);
        assert_eq!(out.len(), flow(443).len() + 20, "{order}: encapsulated");
        lab.apply(alone.clone());
        for dport in [443, 8080] {
            assert!(
                both(&mut lab, &flow(dport)),
                "{order}, port {dport}: alone again, fast"
            );
        }
    }
    // An apply that publishes the VIP of the port and then fails on the
    // port-less one (a table larger than the loaded stride): the port-less
    // VIP's backends were taken out of the fast path before anything else
    // was written, so both paths still decide its flows the same.
    let mut lab = Lab::new(alone.clone());
    for dport in [443, 8080] {
        lab.run(&flow(dport));
    }
    let mut too_big = p.clone();
    too_big.ring_size = u32::MAX;
    let failing = DesiredState {
        node: node(),
        vips: vec![e.clone(), too_big],
    };
    assert!(
        lab.dp.apply(&failing).is_err(),
        "the port-less VIP's table does not fit"
    );
    for dport in [443, 8080] {
        assert!(
            !both(&mut lab, &flow(dport)),
            "failed apply, port {dport}: general"
        );
    }
}
