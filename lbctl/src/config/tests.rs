use std::net::IpAddr;
use std::time::Duration;

use super::*;

const EXAMPLE: &str = include_str!("../../../examples/lb.toml");

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Lines 1-2 of most cases; line 3 onwards is the case itself.
const NODE: &str = "[node]\ninterface = \"eth0\"\n";

fn with_node(rest: &str) -> String {
    format!("{NODE}{rest}")
}

/// A minimal valid VIP (lines 3-7 after NODE).
const VIP: &str = "[[vip]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n[[vip.backend]]\naddress = \"10.0.1.1\"\n";

#[test]
fn example_parses_with_resolved_values() {
    let cfg = parse(EXAMPLE, "lb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.node.interface, "eth0");
    assert_eq!(cfg.node.dataplane, DataplaneKind::Xdp);
    assert_eq!(cfg.node.xdp_mode, XdpMode::Auto);
    assert_eq!(cfg.node.max_vips, 64);
    assert_eq!(cfg.ipip.source_v4, Some("192.0.2.1".parse().expect("v4")));

    assert_eq!(cfg.vips.len(), 3);
    let web = cfg.vip("web").expect("web");
    assert_eq!(web.address, ip("10.0.0.100"));
    assert_eq!(web.port, Some(80));
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.forwarding, Forwarding::Dr);
    assert_eq!(web.table_size, 65537);
    assert_eq!(web.hash.vip_flags(), 0);
    assert_eq!(web.vrrp_instance.as_deref(), Some("VI_1"));
    assert_eq!(web.backends.len(), 3);
    let b0 = &web.backends[0];
    assert_eq!(b0.weight, 100);
    match &b0.health_check.probe {
        Probe::Http(h) => {
            assert_eq!(h.path, "/healthz");
            assert!(h.status_ok(200) && h.status_ok(302) && !h.status_ok(404));
        }
        p => panic!("expected http, got {p:?}"),
    }
    let b1 = &web.backends[1];
    assert_eq!(b1.health_check.probe, Probe::Tcp { port: 8080 });
    assert_eq!(b1.health_check.timeout, Duration::from_millis(500));
    assert_eq!(
        b1.health_check.rise, 2,
        "override takes defaults, not the VIP's values"
    );
    assert_eq!(web.backends[2].weight, 0);
    assert_eq!(web.backends[2].health_check.probe, Probe::None);

    let dns = cfg.vip("dns").expect("dns");
    assert_eq!(dns.port, None);
    assert_eq!(dns.forwarding, Forwarding::Ipip);
    assert_eq!(
        dns.on_no_backend,
        OnNoBackend::SorryServer(ip("2001:db8:1::99"))
    );
    assert_eq!(
        dns.hash.vip_flags(),
        lb_common::vip_flags::HASH_NO_SRC_PORT | lb_common::vip_flags::HASH_NO_DST_PORT
    );
    assert!(matches!(dns.backends[0].health_check.probe, Probe::Udp(ref u) if u.port == 53));

    let web6 = cfg.vip("web6").expect("web6");
    assert_eq!(web6.vrrp_instance, None);
    assert_eq!(
        web6.backends[0].health_check.probe,
        Probe::Tcp { port: 443 }
    );
    assert_eq!(
        web6.backends[0].health_check.interval,
        Duration::from_secs(2)
    );

    let vi = cfg.vrrp_instance("VI_1").expect("VI_1");
    assert_eq!(vi.virtual_router_id, 51);
    assert_eq!(vi.version, VrrpVersion::V3);
    assert_eq!(vi.family, Family::V4);
    assert_eq!(vi.state, InitialState::Backup);
    assert_eq!(vi.advert_int, Duration::from_secs(1));
    assert_eq!(vi.virtual_ipaddress[1].dev.as_deref(), Some("eth1"));
    assert_eq!(vi.track_script[0].weight, -30);
    assert_eq!(vi.track_backends, Some(-50));
    assert_eq!(vi.garp_master_refresh, None);
    assert_eq!(cfg.vips_of_instance("VI_1").count(), 2);
    let v6 = cfg.vrrp_instance("VI_6").expect("VI_6");
    assert_eq!(v6.family, Family::V6);
    assert_eq!(v6.advert_int, Duration::from_millis(100));
    let legacy = cfg.vrrp_instance("VI_legacy").expect("legacy");
    assert_eq!(legacy.version, VrrpVersion::V2);
    assert_eq!(legacy.auth_pass.as_deref(), Some("secret"));
    assert!(!legacy.preempt);
    assert_eq!(
        cfg.vrrp_script("chk_nginx").expect("script").command,
        ["pidof", "nginx"]
    );
}

#[test]
fn minimal_config_takes_defaults() {
    let cfg = parse(&with_node(VIP), "lb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.node.mtu, 1500);
    assert_eq!(
        (cfg.node.icmp_rate, cfg.node.icmp_burst),
        (lb_common::DEFAULT_ICMP_RATE, lb_common::DEFAULT_ICMP_BURST)
    );
    assert_eq!(cfg.node.state_dir, std::path::Path::new("/run/lbctl"));
    assert_eq!(cfg.node.conn_table_size, lb_common::DEFAULT_CONN_TABLE_SIZE);
    assert_eq!(cfg.ipip, Ipip::default());
    let vip = &cfg.vips[0];
    assert_eq!(vip.on_no_backend, OnNoBackend::Drop);
    assert_eq!(vip.hash, HashFields::default());
    assert_eq!(
        vip.identity(),
        VipIdentity {
            address: ip("10.0.0.100"),
            port: Some(80),
            protocol: Protocol::Tcp
        }
    );
    assert_eq!(vip.backends[0].health_check.probe, Probe::Tcp { port: 80 });
}

/// (config text, expected message substring, line, column)
fn bad_cases() -> Vec<(String, &'static str, usize, usize)> {
    vec![
        // 1. syntax error
        (with_node("mtu = \n"), "string values must be quoted", 3, 7),
        // 2. unknown key, named with its position
        (
            with_node("mtux = 1500\n"),
            "unknown field `mtux`, expected one of",
            3,
            1,
        ),
        // 3. wrong type
        (
            with_node("mtu = \"1500\"\n"),
            "invalid type: string \"1500\", expected i64",
            3,
            7,
        ),
        // 4. missing required table
        ("[ipip]\n".to_owned(), "missing field `node`", 1, 1),
        // 5. bad address
        (
            with_node(&VIP.replace("10.0.0.100", "10.0.0.300")),
            "invalid IP address \"10.0.0.300\": expected an IPv4 or IPv6 address",
            5,
            11,
        ),
        // 6. duplicate VIP (same address, port, protocol)
        (
            with_node(&format!("{VIP}{}", VIP.replace("\"web\"", "\"web2\""))),
            "duplicate VIP 10.0.0.100:80/tcp (already defined on line 5)",
            11,
            11,
        ),
        // 7. duplicate VIP name
        (
            with_node(&format!("{VIP}{}", VIP.replace("port = 80", "port = 81"))),
            "duplicate VIP name \"web\" (first defined on line 4)",
            10,
            8,
        ),
        // 8. weight out of range
        (
            with_node(&format!("{VIP}weight = 70000\n")),
            "weight 70000 is out of range: expected 0 to 65535",
            9,
            10,
        ),
        // 9. missing backend list
        (
            with_node("[[vip]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n"),
            "VIP \"web\" has no backends: expected at least one [[vip.backend]]",
            3,
            1,
        ),
        // 10. non-prime table size
        (
            with_node(&VIP.replace("port = 80", "port = 80\ntable_size = 65536")),
            "table_size 65536 is not prime: expected a prime such as 65521 or 65537",
            7,
            14,
        ),
        // 11. table size out of range
        (
            with_node(&VIP.replace("port = 80", "port = 80\ntable_size = 11")),
            "table_size 11 is out of range: expected 13 to 131071",
            7,
            14,
        ),
        // 12. duplicate backend
        (
            with_node(&format!("{VIP}[[vip.backend]]\naddress = \"10.0.1.1\"\n")),
            "duplicate backend 10.0.1.1 in VIP \"web\" (first on line 8)",
            10,
            11,
        ),
        // 13. family mismatch with dr
        (
            with_node(&VIP.replace("10.0.1.1", "2001:db8::1")),
            "backend 2001:db8::1 is IPv6 but VIP \"web\" is IPv4: dr forwarding needs the same family",
            8,
            11,
        ),
        // 14. timeout >= interval
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\nhealth_check = { interval = \"1s\", timeout = \"1s\" }",
            )),
            "timeout 1s must be less than interval 1s",
            7,
            45,
        ),
        // 15. unknown vrrp_instance reference
        (
            with_node(&VIP.replace("port = 80", "port = 80\nvrrp_instance = \"VI_9\"")),
            "unknown vrrp_instance \"VI_9\": no [[vrrp_instance]] is defined",
            7,
            17,
        ),
        // 16. ipip without an outer source of the backend's family
        (
            with_node(&VIP.replace("port = 80", "port = 80\nforwarding = \"ipip\"")),
            "ipip forwarding to IPv4 backend 10.0.1.1 needs an outer source: expected [ipip] source_v4",
            9,
            11,
        ),
        // 17. port-less VIP with a tcp check lacking a port
        (
            with_node(&VIP.replace(
                "port = 80",
                "health_check = { type = \"tcp\", interval = \"5s\" }",
            )),
            "a tcp health check of a port-less VIP needs a port",
            6,
            16,
        ),
        // 18. port-less VIP without any check: the default has no port
        (
            with_node(&VIP.replace("port = 80\n", "")),
            "VIP \"web\" has no port, so the default tcp health check has none",
            3,
            1,
        ),
        // 19. empty script command
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\nhealth_check = { type = \"script\", command = [] }",
            )),
            "empty command: expected a program and its arguments",
            7,
            45,
        ),
        // 20. field of another check type
        (
            with_node(&VIP.replace("port = 80", "port = 80\nhealth_check = { path = \"/\" }")),
            "path does not apply to a health check of type \"tcp\"",
            7,
            25,
        ),
        // 21. bad duration
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\nhealth_check = { interval = \"2\" }",
            )),
            "invalid duration \"2\": expected a number and a unit (ms, s, m, h)",
            7,
            29,
        ),
        // 22. duration given as a number
        (
            with_node(&VIP.replace("port = 80", "port = 80\nhealth_check = { interval = 2 }")),
            "invalid type: integer `2`, expected a duration string like \"2s\" or \"500ms\"",
            7,
            29,
        ),
        // 23. unknown enum value
        (
            with_node(&VIP.replace("port = 80", "port = 80\nprotocol = \"sctp\"")),
            "unknown variant `sctp`, expected `tcp` or `udp`",
            7,
            12,
        ),
        // 24. hash without dst_addr
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\nhash = [\"src_addr\", \"protocol\"]",
            )),
            "hash must include \"dst_addr\"",
            7,
            8,
        ),
        // 25. bad HTTP status range
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\nhealth_check = { type = \"http\", expect_status = [200, \"399-200\"] }",
            )),
            "invalid expect_status \"399-200\": expected a status code from 100 to 599",
            7,
            55,
        ),
        // 26. sorry_server and on_no_backend together
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\non_no_backend = \"drop\"\nsorry_server = \"10.0.0.50\"",
            )),
            "on_no_backend and sorry_server are exclusive",
            7,
            17,
        ),
        // 27. backend is the VIP itself
        (
            with_node(&VIP.replace("10.0.1.1", "10.0.0.100")),
            "backend 10.0.0.100 is the VIP address itself",
            8,
            11,
        ),
        // 28. negative weight
        (
            with_node(&format!("{VIP}weight = -1\n")),
            "weight -1 is out of range: expected 0 to 65535",
            9,
            10,
        ),
        // 29. unknown key in an inline health check
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\nhealth_check = { intervall = \"2s\" }",
            )),
            "unknown field `intervall`, expected one of",
            7,
            18,
        ),
        // 30. duplicate hash field, named
        (
            with_node(&VIP.replace(
                "port = 80",
                "port = 80\nhash = [\"dst_addr\", \"protocol\", \"dst_addr\"]",
            )),
            "duplicate hash field \"dst_addr\"",
            7,
            33,
        ),
        // 31. mtu out of range
        (
            with_node("mtu = 100\n"),
            "mtu 100 is out of range: expected 576 to 9216",
            3,
            7,
        ),
        // 32. an ICMP rate limit of 0 would silence too-big errors entirely
        (
            with_node("icmp_rate = 0\n"),
            "icmp_rate 0 is out of range: expected 1 to 1000000",
            3,
            13,
        ),
    ]
}

/// `[node]` with the IPVS data plane (lines 1-3).
const NODE_IPVS: &str = "[node]\ninterface = \"eth0\"\ndataplane = \"ipvs\"\n";

fn vip_with(extra: &str) -> String {
    VIP.replace("port = 80", &format!("port = 80\n{extra}"))
}

fn ipvs_cases() -> Vec<(String, &'static str, usize, usize)> {
    vec![
        // NAT with the default (xdp) data plane: at the value.
        (
            with_node(&vip_with("forwarding = \"nat\"")),
            "forwarding = \"nat\" needs node.dataplane = \"ipvs\", but it is \"xdp\"",
            7,
            14,
        ),
        // NAT with auto: XDP may run.
        (
            format!(
                "[node]\ninterface = \"eth0\"\ndataplane = \"auto\"\n{}",
                vip_with("forwarding = \"nat\"")
            ),
            "but it is \"auto\" (which may run XDP)",
            8,
            14,
        ),
        // IPVS-only keys with xdp.
        (
            with_node(&vip_with("scheduler = \"wrr\"")),
            "scheduler applies to the IPVS data plane only, but node.dataplane is \"xdp\"",
            7,
            13,
        ),
        (
            with_node(&vip_with("persistence_timeout = \"60s\"")),
            "persistence_timeout applies to the IPVS data plane only",
            7,
            23,
        ),
        (
            with_node("on_unhealthy = \"remove\"\n"),
            "on_unhealthy applies to the IPVS data plane only",
            3,
            16,
        ),
        (
            with_node(&vip_with("on_unhealthy = \"drain\"")),
            "on_unhealthy applies to the IPVS data plane only",
            7,
            16,
        ),
        // Bad values.
        (
            format!("{NODE_IPVS}{}", vip_with("scheduler = \"lc\"")),
            "unknown variant `lc`, expected one of `rr`, `wrr`, `sh`, `mh`",
            8,
            13,
        ),
        (
            format!("{NODE_IPVS}{}", vip_with("on_unhealthy = \"weight0\"")),
            "unknown variant `weight0`, expected `drain` or `remove`",
            8,
            16,
        ),
        (
            format!("{NODE_IPVS}{}", vip_with("persistence_timeout = \"1.5s\"")),
            "persistence_timeout \"1.5s\" must be whole seconds from 1s to 31 days",
            8,
            23,
        ),
        (
            format!("{NODE_IPVS}{}", vip_with("persistence_timeout = \"0s\"")),
            "must be whole seconds",
            8,
            23,
        ),
        // NAT cannot cross families.
        (
            format!(
                "{NODE_IPVS}{}",
                vip_with("forwarding = \"nat\"").replace("10.0.1.1", "2001:db8::1")
            ),
            "backend 2001:db8::1 is IPv6 but VIP \"web\" is IPv4: nat forwarding needs the same family",
            10,
            11,
        ),
    ]
}

#[test]
fn ipvs_keys_resolve_with_defaults() {
    let text = format!(
        "{NODE_IPVS}on_unhealthy = \"remove\"\n{}{}",
        vip_with("forwarding = \"nat\"\nscheduler = \"sh\"\npersistence_timeout = \"5m\""),
        VIP.replace("\"web\"", "\"api\"")
            .replace("port = 80", "port = 81\non_unhealthy = \"drain\"")
    );
    let cfg = parse(&text, "lb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.node.dataplane, DataplaneKind::Ipvs);
    assert_eq!(cfg.node.on_unhealthy, OnUnhealthy::Remove);
    let web = cfg.vip("web").expect("web");
    assert_eq!(web.forwarding, Forwarding::Nat);
    assert_eq!(web.scheduler, Scheduler::Sh);
    assert_eq!(web.persistence_timeout, Some(Duration::from_secs(300)));
    assert_eq!(web.on_unhealthy, OnUnhealthy::Remove, "the node's");
    let api = cfg.vip("api").expect("api");
    assert_eq!(api.scheduler, Scheduler::Mh, "default");
    assert_eq!(api.on_unhealthy, OnUnhealthy::Drain, "the VIP's own");
    assert_eq!(api.persistence_timeout, None);

    // Defaults without any IPVS key.
    let cfg = parse(&with_node(VIP), "lb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.node.on_unhealthy, OnUnhealthy::Drain);
    assert_eq!(cfg.vips[0].scheduler, Scheduler::Mh);
}

/// The IPVS keys the example shows commented out (it runs XDP) are valid
/// once the data plane is IPVS.
#[test]
fn example_ipvs_keys_parse_with_the_ipvs_data_plane() {
    let text = EXAMPLE
        .replace("dataplane = \"xdp\"", "dataplane = \"ipvs\"")
        .replace("# on_unhealthy = ", "on_unhealthy = ")
        .replace("# scheduler = ", "scheduler = ")
        .replace("# persistence_timeout = ", "persistence_timeout = ");
    assert_ne!(text, EXAMPLE);
    let cfg = parse(&text, "lb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.node.on_unhealthy, OnUnhealthy::Drain);
    let web = cfg.vip("web").expect("web");
    assert_eq!(web.scheduler, Scheduler::Mh);
    assert_eq!(web.persistence_timeout, None);
    let dns = cfg.vip("dns").expect("dns");
    assert_eq!(dns.scheduler, Scheduler::Sh);
    assert_eq!(dns.persistence_timeout, Some(Duration::from_secs(600)));
    assert_eq!(dns.on_unhealthy, OnUnhealthy::Remove);
}

fn vrrp_cases() -> Vec<(String, &'static str, usize, usize)> {
    let inst = "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"10.0.0.100/32\"]\n";
    vec![
        // duplicate VRID on the same interface and family
        (
            with_node(&format!(
                "{inst}{}",
                inst.replace("VI_1", "VI_2")
                    .replace("10.0.0.100", "10.0.0.101")
            )),
            "virtual_router_id 51 is already used on eth0 for IPv4 (line 6)",
            11,
            21,
        ),
        // advert_int not a multiple of 10ms for v3
        (
            with_node(&format!("{inst}advert_int = \"15ms\"\n")),
            "advert_int 15ms is invalid for VRRP version 3: expected a multiple of 10ms from 10ms to 40950ms",
            8,
            14,
        ),
        // advert_int fractional for v2
        (
            with_node(&format!("{inst}version = 2\nadvert_int = \"1500ms\"\n")),
            "advert_int 1500ms is invalid for VRRP version 2: expected whole seconds from 1s to 255s",
            9,
            14,
        ),
        // authentication on v3
        (
            with_node(&format!(
                "{inst}authentication = {{ auth_type = \"PASS\", auth_pass = \"x\" }}\n"
            )),
            "authentication is only supported by VRRP version 2",
            8,
            18,
        ),
        // password too long
        (
            with_node(&format!(
                "{inst}version = 2\nauthentication = {{ auth_type = \"PASS\", auth_pass = \"123456789\" }}\n"
            )),
            "auth_pass is 9 bytes long: expected 1 to 8 bytes",
            9,
            52,
        ),
        // unknown vrrp_script
        (
            with_node(&format!("{inst}track_script = [{{ name = \"chk\" }}]\n")),
            "unknown vrrp_script \"chk\": no [[vrrp_script]] is defined",
            8,
            26,
        ),
        // mixed families
        (
            with_node(&inst.replace("\"10.0.0.100/32\"", "\"10.0.0.100/32\", \"2001:db8::1\"")),
            "2001:db8::1 is IPv6 but this instance's first virtual_ipaddress is IPv4",
            7,
            39,
        ),
        // v2 with IPv6
        (
            with_node(&format!(
                "{}version = 2\n",
                inst.replace("10.0.0.100/32", "2001:db8::1")
            )),
            "2001:db8::1 is IPv6 but VRRP version 2 is IPv4 only",
            7,
            22,
        ),
        // VRID out of range
        (
            with_node(&inst.replace("= 51", "= 256")),
            "virtual_router_id 256 is out of range: expected 1 to 255",
            6,
            21,
        ),
        // initial state is upper case, like keepalived
        (
            with_node(&format!("{inst}state = \"master\"\n")),
            "unknown variant `master`, expected `MASTER` or `BACKUP`",
            8,
            9,
        ),
        // empty vrrp_script command
        (
            with_node("[[vrrp_script]]\nname = \"chk\"\ncommand = []\n"),
            "empty command",
            5,
            11,
        ),
        // unicast peer of the wrong family
        (
            with_node(&format!("{inst}unicast_peer = [\"2001:db8::2\"]\n")),
            "unicast_peer 2001:db8::2 is IPv6 but the instance's virtual_ipaddress is IPv4",
            8,
            17,
        ),
    ]
}

#[test]
fn bad_configs_report_message_and_position() {
    let mut failures = Vec::new();
    for (i, (text, msg, line, col)) in bad_cases()
        .into_iter()
        .chain(vrrp_cases())
        .chain(ipvs_cases())
        .enumerate()
    {
        let err = match parse(&text, "lb.toml") {
            Ok(_) => {
                failures.push(format!("case {i}: parsed, expected {msg:?}\n{text}"));
                continue;
            }
            Err(e) => e,
        };
        let found = err.diagnostics().iter().any(|d| {
            d.message.contains(msg) && d.position.line == line && d.position.column == col
        });
        if !found {
            failures.push(format!(
                "case {i}: expected {line}:{col}: ...{msg}...\n got:\n{err}\n in:\n{text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn display_is_file_line_column_message_one_per_line() {
    let text = with_node(
        &VIP.replace("10.0.0.100", "10.0.0.300")
            .replace("10.0.1.1", "10.0.1.x")
            .to_string(),
    );
    let err = parse(&text, "lb.toml").expect_err("two bad addresses");
    assert_eq!(
        err.to_string(),
        "lb.toml:5:11: invalid IP address \"10.0.0.300\": expected an IPv4 or IPv6 address\n\
         lb.toml:8:11: invalid IP address \"10.0.1.x\": expected an IPv4 or IPv6 address"
    );
}

#[test]
fn several_semantic_errors_are_all_reported_in_order() {
    let text = with_node(&format!(
        "mtu = 100\n{}",
        VIP.replace("port = 80", "port = 0\ntable_size = 100")
            .replace("10.0.1.1", "10.0.1.1\"\nweight = -1\n#\"")
    ));
    let err = parse(&text, "lb.toml").expect_err("invalid");
    let lines: Vec<usize> = err.diagnostics().iter().map(|d| d.position.line).collect();
    assert_eq!(lines, [3, 7, 8, 11], "{err}");
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = with_node(&VIP.replace(
        "port = 80",
        "port = 80\nhealth_check = { host = \"é\", port = 0 }",
    ));
    let err = parse(&text, "lb.toml").expect_err("invalid");
    let d = err
        .diagnostics()
        .iter()
        .find(|d| d.message.starts_with("port 0"))
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!((d.position.line, d.position.column), (7, 37), "{err}");
}

#[test]
fn load_reports_missing_file() {
    let err = load(std::path::Path::new("/nonexistent/lb.toml")).expect_err("missing");
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/lb.toml: cannot read configuration")
    );
}

#[test]
fn too_many_vips_for_max_vips() {
    let mut text = with_node("max_vips = 1\n");
    text.push_str(VIP);
    text.push_str(
        &VIP.replace("\"web\"", "\"web2\"")
            .replace("port = 80", "port = 81"),
    );
    let err = parse(&text, "lb.toml").expect_err("too many");
    assert!(
        err.to_string().contains("lb.toml:10:1: too many VIPs"),
        "{err}"
    );
}

#[test]
fn load_reads_the_example_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lb.toml");
    let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.vrrp_instances.len(), 3);
}

#[test]
fn invalid_vip_port_does_not_cascade_into_check_errors() {
    let text = with_node(&VIP.replace("port = 80", "port = 0\nhealth_check = { type = \"tcp\" }"));
    let err = parse(&text, "lb.toml").expect_err("invalid");
    assert_eq!(err.diagnostics().len(), 1, "{err}");
}

#[test]
fn table_size_must_exceed_backend_count() {
    let mut text = with_node(&VIP.replace("port = 80", "port = 80\ntable_size = 13"));
    for i in 2..=13 {
        text.push_str(&format!("[[vip.backend]]\naddress = \"10.0.1.{i}\"\n"));
    }
    let err = parse(&text, "lb.toml").expect_err("too small");
    assert!(
        err.to_string()
            .contains("lb.toml:7:14: table_size 13 is too small for 13 backends"),
        "{err}"
    );
}

#[test]
fn sorry_servers_count_against_the_backend_limit() {
    let limit = lb_common::MAX_BACKENDS as usize - 1;
    let with = |backends: usize, sorry: &str| {
        let mut text = with_node(&format!(
            "[[vip]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\nsorry_server = \"{sorry}\"\n"
        ));
        for i in 0..backends {
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"10.1.{}.{}\"\n",
                i / 250,
                i % 250 + 1
            ));
        }
        parse(&text, "lb.toml")
    };
    // Every backend id in use, the sorry server's included.
    let cfg = with(limit - 1, "10.2.0.9").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.vips[0].backends.len(), limit - 1);
    // One more: the sorry server has no id left.
    let err = with(limit, "10.2.0.9").expect_err("too many");
    assert!(
        err.to_string().contains(
            "lb.toml:7:16: too many backends: at most 4095 in all VIPs together, sorry servers included"
        ),
        "{err}"
    );
    // A sorry server that is one of the backends uses that backend's id.
    assert!(with(limit, "10.1.0.1").is_ok());
}

#[test]
fn too_many_virtual_addresses_for_an_advertisement() {
    let addrs = |n: usize| {
        (0..n)
            .map(|i| format!("\"10.9.{}.{}\"", i / 200, i % 200 + 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let inst = |n: usize| {
        with_node(&format!(
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [{}]\n",
            addrs(n)
        ))
    };
    let cfg = parse(&inst(255), "lb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.vrrp_instances[0].virtual_ipaddress.len(), 255);
    let text = inst(256);
    let err = parse(&text, "lb.toml").expect_err("256 addresses");
    // The 256th address, on line 7.
    let col = text
        .lines()
        .nth(6)
        .map_or(0, |l| l.find("\"10.9.1.56\"").map_or(0, |c| c + 1));
    assert!(col > 0);
    assert!(
        err.to_string().contains(&format!(
            "lb.toml:7:{col}: too many virtual_ipaddress: this is address number 256 but at most 255 fit in a VRRP advertisement"
        )),
        "{err}"
    );
}

#[test]
fn state_dir_must_leave_room_for_the_socket_path() {
    // "/" + 95 bytes + "/lbctl.sock" = 107 bytes: the longest that binds.
    let fits = format!("/{}", "d".repeat(95));
    let cfg = parse(&format!("{NODE}state_dir = \"{fits}\"\n{VIP}"), "lb.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crate::api::socket_path(&cfg.node.state_dir)
            .as_os_str()
            .len(),
        107
    );
    let err = parse(&format!("{NODE}state_dir = \"{fits}d\"\n{VIP}"), "lb.toml")
        .expect_err("one byte too long");
    let msg = err.to_string();
    assert!(
        msg.starts_with("lb.toml:3:13: state_dir \"/ddd")
            && msg.contains("would be 108 bytes, but a Unix socket path holds at most 107")
            && msg.contains("expected a state_dir 1 bytes shorter"),
        "{msg}"
    );
}

#[test]
fn ipv6_ipip_needs_an_mtu_that_keeps_1280_inside() {
    let cfg = |mtu: &str, backend: &str, dataplane: &str| {
        format!(
            "[node]\ninterface = \"eth0\"\n{mtu}{dataplane}\n[ipip]\nsource_v4 = \"192.0.2.1\"\nsource_v6 = \"2001:db8::1\"\n\
             [[vip]]\nname = \"web6\"\naddress = \"2001:db8::100\"\nport = 80\nforwarding = \"ipip\"\n\
             [[vip.backend]]\naddress = \"{backend}\"\n"
        )
    };
    // IP6IP6: 40 bytes of outer header.
    assert!(parse(&cfg("mtu = 1320\n", "2001:db8:1::1", ""), "lb.toml").is_ok());
    let err = parse(&cfg("mtu = 1319\n", "2001:db8:1::1", ""), "lb.toml").expect_err("1279");
    let msg = err.to_string();
    assert!(
        msg.starts_with("lb.toml:14:11: IPv6 VIP \"web6\" forwards by ipip to IPv6 backend 2001:db8:1::1: node.mtu 1319 (line 3) leaves 1279 bytes")
            && msg.contains("less than IPv6's minimum MTU of 1280 (RFC 8200 section 5, RFC 2473 section 7.1): expected node.mtu of at least 1320"),
        "{msg}"
    );
    // 6-in-4: 20 bytes.
    assert!(parse(&cfg("mtu = 1300\n", "10.0.1.1", ""), "lb.toml").is_ok());
    let err = parse(&cfg("mtu = 1299\n", "10.0.1.1", ""), "lb.toml").expect_err("1279");
    assert!(
        err.to_string()
            .contains("to IPv4 backend 10.0.1.1: node.mtu 1299 (line 3) leaves 1279 bytes"),
        "{err}"
    );
    // A sorry server is a destination too; the default MTU is fine.
    let text = cfg("mtu = 1300\n", "10.0.1.1", "").replace(
        "forwarding = \"ipip\"\n",
        "forwarding = \"ipip\"\nsorry_server = \"2001:db8:1::9\"\n",
    );
    let err = parse(&text, "lb.toml").expect_err("sorry server over IP6IP6");
    assert!(
        err.to_string().contains(
            "to IPv6 sorry_server 2001:db8:1::9: node.mtu 1300 (line 3) leaves 1260 bytes"
        ),
        "{err}"
    );
    assert!(parse(&cfg("", "2001:db8:1::1", ""), "lb.toml").is_ok());
    // IPVS does not use node.mtu.
    assert!(
        parse(
            &cfg("mtu = 1300\n", "2001:db8:1::1", "dataplane = \"ipvs\"\n"),
            "lb.toml"
        )
        .is_ok()
    );
}

#[test]
fn metrics_listen_is_an_address_and_a_fixed_port() {
    let cfg = parse(&format!("{NODE}{VIP}"), "lb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.node.metrics_listen, None, "off by default");
    for (text, want) in [
        ("127.0.0.1:9650", "127.0.0.1:9650"),
        ("[::1]:9650", "[::1]:9650"),
    ] {
        let cfg = parse(
            &format!("{NODE}metrics_listen = \"{text}\"\n{VIP}"),
            "lb.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.node.metrics_listen, Some(want.parse().unwrap()));
    }
    for (text, says) in [
        (
            "localhost:9650",
            "is not an address and port: expected ADDRESS:PORT",
        ),
        ("127.0.0.1", "is not an address and port"),
        ("127.0.0.1:0", "has port 0: expected a fixed port"),
    ] {
        let msg = parse(
            &format!("{NODE}metrics_listen = \"{text}\"\n{VIP}"),
            "lb.toml",
        )
        .expect_err(text)
        .to_string();
        assert!(
            msg.starts_with("lb.toml:3:18: metrics_listen") && msg.contains(says),
            "{text}: {msg}"
        );
    }
}
