use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::config::{self, DataplaneKind, Forwarding, InitialState, Probe, Scheduler, VrrpVersion};

struct NoIncludes;
impl Includes for NoIncludes {
    fn resolve(&self, pattern: &str, _: &str) -> Result<Vec<(String, String)>, String> {
        Err(format!("no file matches {pattern}"))
    }
}

const EXAMPLE: &str = include_str!("../../../../../examples/keepalived/keepalived.conf");

fn conv(text: &str, opts: &Options) -> Result<Conversion, ImportError> {
    convert("keepalived.conf", text, &NoIncludes, opts)
}

fn tun_opts() -> Options {
    Options {
        interface: None,
        ipip_source: vec!["192.168.1.10".parse().unwrap()],
    }
}

/// The messages of the notes, as `LINE:COLUMN severity message`.
fn notes(c: &[Note]) -> Vec<String> {
    c.iter()
        .map(|n| {
            format!(
                "{}:{} {:?} {}",
                n.loc.line, n.loc.column, n.severity, n.message
            )
        })
        .collect()
}

fn has(notes: &[String], line_col: &str, text: &str) -> bool {
    notes
        .iter()
        .any(|n| n.starts_with(&format!("{line_col} ")) && n.contains(text))
}

fn errors(r: Result<Conversion, ImportError>) -> Vec<String> {
    match r {
        Err(ImportError::Untranslatable(n, _)) => notes(&n)
            .into_iter()
            .filter(|n| n.contains(" Error "))
            .collect(),
        Err(e) => panic!("expected untranslatable, got {e}"),
        Ok(c) => panic!("expected errors, got:\n{}", c.toml),
    }
}

#[test]
fn seconds_become_durations() {
    let d = |t: &str| seconds_to_ms(t).map(fmt_ms);
    assert_eq!(d("1").as_deref(), Some("1s"));
    assert_eq!(d("60").as_deref(), Some("60s"));
    assert_eq!(d("0.5").as_deref(), Some("500ms"));
    assert_eq!(d("1.25").as_deref(), Some("1250ms"));
    assert_eq!(d("0").as_deref(), Some("0s"));
    assert_eq!(d("0.0001"), None);
    assert_eq!(d("-1"), None);
    assert_eq!(d("2s"), None);
    assert_eq!(d("NaN"), None);
}

/// The example converts, and the result is an lb.toml that validates and
/// says what the keepalived config said.
#[test]
fn example_converts_to_a_valid_equivalent_config() {
    let c = conv(EXAMPLE, &tun_opts()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config::parse(&c.toml, "out.toml").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));

    assert_eq!(cfg.node.interface, "eth0");
    assert_eq!(cfg.node.dataplane, DataplaneKind::Xdp);

    let web = cfg.vip("vs-10.0.0.100-80").expect("web VIP");
    assert_eq!(web.address, "10.0.0.100".parse::<IpAddr>().unwrap());
    assert_eq!(web.port, Some(80));
    assert_eq!(web.forwarding, Forwarding::Dr);
    assert_eq!(web.vrrp_instance.as_deref(), Some("VI_1"));
    let w: Vec<u16> = web.backends.iter().map(|b| b.weight).collect();
    assert_eq!(w, [100, 50, 0]);
    // HTTP_GET: url path and status, connect_timeout, retry 2 -> fall 3.
    let hc = &web.backends[0].health_check;
    match &hc.probe {
        Probe::Http(h) => {
            assert_eq!((h.port, h.path.as_str()), (80, "/healthz"));
            assert!(h.status_ok(200) && !h.status_ok(204));
        }
        p => panic!("{p:?}"),
    }
    assert_eq!(
        (hc.interval, hc.timeout, hc.rise, hc.fall),
        (Duration::from_secs(2), Duration::from_secs(1), 1, 3)
    );
    // TCP_CHECK on connect_port; keepalived's default retry 1 -> fall 2.
    let hc = &web.backends[1].health_check;
    assert_eq!(hc.probe, Probe::Tcp { port: 8080 });
    assert_eq!((hc.rise, hc.fall), (1, 2));
    // No checker: always up, as in keepalived.
    assert_eq!(web.backends[2].health_check.probe, Probe::None);

    let dns = cfg.vip("vs-10.0.0.53-53-udp").expect("dns VIP");
    assert_eq!(dns.forwarding, Forwarding::Ipip);
    assert_eq!(dns.protocol, config::Protocol::Udp);
    // persistence_timeout under XDP: affinity by client address.
    assert!(!dns.hash.src_port && dns.hash.src_addr, "{:?}", dns.hash);
    let hc = &dns.backends[0].health_check;
    assert_eq!(
        hc.probe,
        Probe::Script {
            command: vec!["/usr/local/bin/check-dns".into(), "10.0.2.1".into()]
        }
    );
    // misc_timeout 3; MISC_CHECK has no retry: fall 1.
    assert_eq!((hc.timeout, hc.fall), (Duration::from_secs(3), 1));
    // misc_timeout defaults to the delay_loop (5 s), which lbctl wants
    // shorter than the interval: 9/10 of it, with a warning.
    assert_eq!(
        dns.backends[1].health_check.timeout,
        Duration::from_millis(4500)
    );
    assert_eq!(
        cfg.ipip.source_v4,
        Some("192.168.1.10".parse().unwrap()),
        "{}",
        c.toml
    );

    let vi = cfg.vrrp_instance("VI_1").expect("VI_1");
    assert_eq!(vi.state, InitialState::Backup);
    assert_eq!((vi.virtual_router_id, vi.priority), (51, 100));
    assert_eq!(vi.version, VrrpVersion::V2);
    assert_eq!(vi.advert_int, Duration::from_secs(1));
    assert!(!vi.preempt);
    assert_eq!(vi.auth_pass.as_deref(), Some("s3cret"));
    assert_eq!(
        vi.unicast_peers,
        ["192.168.1.11".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(vi.virtual_ipaddress.len(), 2);
    assert_eq!(vi.track_interface[0].name, "eth1");
    assert_eq!(vi.track_interface[0].weight, -20);
    assert_eq!(vi.track_script[0].name, "chk_nginx");
    assert_eq!(
        vi.notify.as_deref(),
        Some(&["/etc/keepalived/notify.sh".to_owned(), "--log".to_owned()][..])
    );
    assert_eq!(vi.garp_master_delay, Duration::from_secs(5));
    assert_eq!(vi.garp_master_repeat, 3);

    let sc = cfg.vrrp_script("chk_nginx").expect("script");
    assert_eq!(sc.command, ["/usr/bin/pgrep", "-x", "nginx"]);
    assert_eq!(sc.weight, -30);

    // What did not translate is named, with its place.
    let n = notes(&c.notes);
    assert!(c.notes.iter().all(|n| n.severity == Severity::Warning));
    assert!(has(&n, "49:4", "notify_master not translated"), "{n:#?}");
    assert!(has(&n, "48:4", "INSTANCE"), "{n:#?}");
    assert!(has(&n, "56:12", "lb_algo wlc"), "{n:#?}");
    assert!(has(&n, "69:10", "delay_before_retry"), "{n:#?}");
    assert!(has(&n, "89:4", "persistence_timeout"), "{n:#?}");
    assert!(has(&n, "86:12", "lb_algo sh"), "{n:#?}");
    assert!(has(&n, "100:7", "timeout 5s is not shorter"), "{n:#?}");
    // Harmless globals are not reported; others would be.
    assert!(!n.iter().any(|n| n.contains("router_id")), "{n:#?}");
    // Each table names where it came from.
    assert!(
        c.toml
            .contains("# real_server 10.0.1.2 80 (keepalived.conf:72:4)"),
        "{}",
        c.toml
    );
}

#[test]
fn nat_runs_on_ipvs_with_its_scheduler_and_persistence() {
    let text = "vrrp_instance V { interface eth0\n virtual_router_id 9\n virtual_ipaddress {\n 10.1.0.1\n }\n}\n\
                virtual_server 10.1.0.1 443 {\n lb_algo lc\n lb_kind NAT\n persistence_timeout 300\n\
                real_server 10.2.0.1 443 {\n }\n}\n\
                virtual_server 10.1.0.1 80 {\n lb_algo rr\n lb_kind NAT\n real_server 10.2.0.1 80 {\n SSL_GET {\n }\n }\n}\n";
    let c = conv(text, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config::parse(&c.toml, "out.toml").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
    assert_eq!(cfg.node.dataplane, DataplaneKind::Ipvs);
    let v = cfg.vip("vs-10.1.0.1-443").unwrap();
    assert_eq!(v.forwarding, Forwarding::Nat);
    assert_eq!(v.scheduler, Scheduler::Rr);
    assert_eq!(v.persistence_timeout, Some(Duration::from_secs(300)));
    let v = cfg.vip("vs-10.1.0.1-80").unwrap();
    assert_eq!(v.scheduler, Scheduler::Rr);
    // SSL_GET: a TCP connect check, and a warning that says so.
    assert_eq!(v.backends[0].health_check.probe, Probe::Tcp { port: 80 });
    // keepalived's defaults: delay_loop 60 s, connect_timeout 5 s.
    assert_eq!(v.backends[0].health_check.interval, Duration::from_secs(60));
    assert_eq!(v.backends[0].health_check.timeout, Duration::from_secs(5));
    let n = notes(&c.notes);
    assert!(has(&n, "8:10", "lb_algo lc"), "{n:#?}");
    assert!(
        has(&n, "18:2", "SSL_GET becomes a TCP connect check"),
        "{n:#?}"
    );
}

#[test]
fn ipv6_instances_speak_version_3() {
    let text = "vrrp_instance V6 {\n interface eth0\n virtual_router_id 9\n advert_int 0.5\n\
                virtual_ipaddress {\n 2001:db8::100/64\n }\n}\n\
                virtual_server 2001:db8::100 0 {\n lb_kind DR\n real_server 2001:db8::1 0 {\n }\n}\n";
    let c = conv(text, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config::parse(&c.toml, "out.toml").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
    let vi = cfg.vrrp_instance("V6").unwrap();
    assert_eq!(vi.version, VrrpVersion::V3);
    assert_eq!(vi.advert_int, Duration::from_millis(500));
    // Port 0: every port of the address.
    let v = cfg.vip("vs-2001_db8__100").unwrap();
    assert_eq!(v.port, None);
    assert_eq!(v.vrrp_instance.as_deref(), Some("V6"));
}

/// LVS's source hashing keeps a client on one real server: under XDP, a
/// flow hash without the client's port does the same.
#[test]
fn source_hashing_becomes_a_hash_without_the_client_port() {
    let text = "virtual_server 10.0.0.1 80 {\n lb_algo sh\n lb_kind DR\n real_server 10.0.1.1 80 {\n }\n}\n\
                virtual_server 10.0.0.1 81 {\n lb_algo rr\n lb_kind DR\n real_server 10.0.1.1 81 {\n }\n}\n";
    let opts = Options {
        interface: Some("eth0".into()),
        ..Options::default()
    };
    let c = conv(text, &opts).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config::parse(&c.toml, "out.toml").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
    let h = cfg.vip("vs-10.0.0.1-80").unwrap().hash;
    assert!(h.src_addr && !h.src_port, "{h:?}");
    let h = cfg.vip("vs-10.0.0.1-81").unwrap().hash;
    assert!(h.src_addr && h.src_port, "{h:?}");
    let n = notes(&c.notes);
    assert!(has(&n, "2:10", "lb_algo sh"), "{n:#?}");
    assert!(has(&n, "8:10", "lb_algo rr"), "{n:#?}");
}

#[test]
fn what_would_change_forwarding_is_refused_with_its_place() {
    let e = errors(conv(
        "virtual_server fwmark 1 {\n}\nvirtual_server_group G {\n}\n",
        &Options {
            interface: Some("eth0".into()),
            ..Options::default()
        },
    ));
    assert!(has(&e, "1:1", "fwmark cannot be translated"), "{e:#?}");
    assert!(has(&e, "3:1", "virtual_server_group"), "{e:#?}");

    let e = errors(conv(
        "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n authentication {\n  auth_type AH\n }\n\
         virtual_ipaddress {\n 10.0.0.1\n }\n}\n\
         virtual_server 10.0.0.1 80 {\n lb_kind NAT\n real_server 10.0.1.1 8080 {\n }\n\
         sorry_server 10.0.9.9 8080\n protocol SCTP\n}\n",
        &Options::default(),
    ));
    assert!(has(&e, "5:3", "auth_type AH"), "{e:#?}");
    assert!(has(&e, "13:23", "port 8080 differs"), "{e:#?}");
    assert!(has(&e, "15:1", "sorry_server port 8080"), "{e:#?}");
    assert!(has(&e, "16:2", "protocol SCTP"), "{e:#?}");

    // TUN needs an outer source; no interface at all is an error too.
    let e = errors(conv(
        "virtual_server 10.0.0.1 80 {\n lb_kind TUN\n real_server 10.0.1.1 80 {\n }\n}\n",
        &Options::default(),
    ));
    assert!(has(&e, "1:1", "no interface"), "{e:#?}");
    assert!(has(&e, "2:2", "--ipip-source"), "{e:#?}");

    // Values keepalived would not take either.
    let e = errors(conv(
        "vrrp_instance V {\n interface eth0\n virtual_router_id x\n advert_int -1\n state FAULT\n}\n",
        &Options::default(),
    ));
    assert!(has(&e, "3:20", "expected an integer"), "{e:#?}");
    assert!(has(&e, "4:13", "expected seconds"), "{e:#?}");
    assert!(has(&e, "5:2", "expected MASTER or BACKUP"), "{e:#?}");
}

#[test]
fn syntax_errors_name_the_place() {
    match conv("vrrp_instance V {\n interface eth0\n", &Options::default()) {
        Err(ImportError::Syntax(e, files)) => {
            assert_eq!(files.at(e.loc), "keepalived.conf:1:17");
        }
        other => panic!("{other:?}"),
    }
}

/// Every keepalived statement this converter reads is named somewhere:
/// unknown ones are warned about, not dropped in silence.
#[test]
fn unknown_statements_are_reported() {
    let c = conv(
        "static_ipaddress {\n 1.2.3.4\n}\nglobal_defs {\n lvs_timeouts tcp 10\n}\n\
         vrrp_instance V {\n interface eth0\n virtual_router_id 1\n use_vmac\n\
         virtual_ipaddress {\n 10.0.0.1 label eth0:1\n }\n}\n",
        &Options::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let n = notes(&c.notes);
    assert!(has(&n, "1:1", "static_ipaddress not translated"), "{n:#?}");
    assert!(has(&n, "5:2", "lvs_timeouts not translated"), "{n:#?}");
    assert!(has(&n, "10:2", "use_vmac not translated"), "{n:#?}");
    assert!(has(&n, "12:11", "option \"label\""), "{n:#?}");
    config::parse(&c.toml, "out.toml").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
}
