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
    assert!(has(&n, "62:7", "HTTP_GET: retry 2"), "{n:#?}");
    // Once per virtual server, though its TCP_CHECK retries too (retry 1).
    assert_eq!(
        n.iter().filter(|x| x.contains(": retry ")).count(),
        1,
        "{n:#?}"
    );
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
        "garp_group {\n garp_interval 0.001\n}\nglobal_defs {\n lvs_timeouts tcp 10\n}\n\
         vrrp_instance V {\n interface eth0\n virtual_router_id 1\n use_vmac\n\
         virtual_ipaddress {\n 10.0.0.1 label eth0:1\n }\n}\n",
        &Options::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let n = notes(&c.notes);
    assert!(has(&n, "1:1", "garp_group not translated"), "{n:#?}");
    assert!(has(&n, "5:2", "lvs_timeouts not translated"), "{n:#?}");
    assert!(has(&n, "10:2", "use_vmac not translated"), "{n:#?}");
    assert!(has(&n, "12:11", "option \"label\""), "{n:#?}");
    config::parse(&c.toml, "out.toml").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
}

fn eth0() -> Options {
    Options {
        interface: Some("eth0".into()),
        ..Options::default()
    }
}

/// A vrrp_instance on eth0 holding 10.0.0.1, then `rest`.
fn with_instance(rest: &str) -> String {
    format!(
        "vrrp_instance V {{\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {{\n 10.0.0.1\n }}\n}}\n{rest}"
    )
}

fn ok(text: &str, opts: &Options) -> (config::Config, Vec<String>, String) {
    let c = conv(text, opts).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config::parse(&c.toml, "out.toml").unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
    (cfg, notes(&c.notes), c.toml)
}

#[test]
fn virtual_ipaddress_keeps_its_dev_after_other_options() {
    let (cfg, n, _) = ok(
        "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n \
         10.0.0.1/24 brd 10.0.0.255 dev eth1 label eth1:vip\n }\n}\n",
        &Options::default(),
    );
    let vi = cfg.vrrp_instance("V").unwrap();
    assert_eq!(vi.virtual_ipaddress[0].dev.as_deref(), Some("eth1"));
    assert!(has(&n, "5:14", "option \"brd\""), "{n:#?}");
    assert!(has(&n, "5:38", "option \"label\""), "{n:#?}");
}

#[test]
fn master_state_clears_nopreempt_as_keepalived_does() {
    let (cfg, n, _) = ok(
        "vrrp_instance V {\n state MASTER\n nopreempt\n preempt_delay 5\n interface eth0\n \
         virtual_router_id 1\n virtual_ipaddress {\n 10.0.0.1\n }\n}\n",
        &Options::default(),
    );
    let vi = cfg.vrrp_instance("V").unwrap();
    assert!(vi.preempt);
    assert_eq!(vi.preempt_delay, Duration::ZERO);
    assert!(has(&n, "3:2", "nopreempt with state MASTER"), "{n:#?}");
    assert!(has(&n, "4:2", "preempt_delay with state MASTER"), "{n:#?}");
}

#[test]
fn authentication_is_what_keepalived_sends() {
    // PASS: at most 8 characters; `\#` is a literal #.
    let (cfg, n, _) = ok(
        "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n authentication {\n  \
         auth_type PASS\n  auth_pass ab\\#cdefghij\n }\n virtual_ipaddress {\n 10.0.0.1\n }\n}\n",
        &Options::default(),
    );
    assert_eq!(
        cfg.vrrp_instance("V").unwrap().auth_pass.as_deref(),
        Some("ab#cdefg")
    );
    assert!(has(&n, "6:13", "first 8 bytes"), "{n:#?}");
    // A password without auth_type PASS is not sent.
    let (cfg, n, _) = ok(
        "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n authentication {\n  \
         auth_pass secret\n }\n virtual_ipaddress {\n 10.0.0.1\n }\n}\n",
        &Options::default(),
    );
    assert_eq!(cfg.vrrp_instance("V").unwrap().auth_pass, None);
    assert!(has(&n, "5:13", "without auth_type PASS"), "{n:#?}");
}

#[test]
fn scripts_keep_keepalived_timing() {
    // keepalived's default interval (1 s) and a timeout lbctl accepts.
    let (cfg, n, _) = ok(
        &with_instance(
            "vrrp_script chk {\n script \"/bin/true\"\n}\nvrrp_script slow {\n \
             script \"/bin/true\"\n interval 2\n timeout 5\n}\n",
        ),
        &Options::default(),
    );
    let s = cfg.vrrp_script("chk").unwrap();
    assert_eq!(s.interval, Duration::from_secs(1));
    assert_eq!(s.timeout, Duration::from_millis(900));
    let s = cfg.vrrp_script("slow").unwrap();
    assert_eq!(s.timeout, Duration::from_millis(1800));
    assert!(has(&n, "8:1", "timeout 1s is not shorter"), "{n:#?}");
    assert!(has(&n, "11:1", "timeout 5s is not shorter"), "{n:#?}");
}

#[test]
fn checks_inherit_real_server_timers_and_name_weaker_ones() {
    let (cfg, n, _) = ok(
        &with_instance(
            "virtual_server 10.0.0.1 80 {\n lb_kind DR\n delay_loop 10\n connect_timeout 2\n\
             real_server 10.0.1.1 80 {\n  delay_loop 3\n  retry 0\n  HTTP_GET {\n   \
             url {\n    path /a\n   }\n   url {\n    path /b\n   }\n  }\n  TCP_CHECK {\n  }\n }\n\
             real_server 10.0.1.2 80 {\n  HTTP_GET {\n  }\n }\n\
             real_server 10.0.1.3 80 {\n  MISC_CHECK {\n   misc_path /bin/true\n  }\n }\n}\n",
        ),
        &eth0(),
    );
    let v = cfg.vip("vs-10.0.0.1-80").unwrap();
    let hc = &v.backends[0].health_check;
    assert!(
        matches!(&hc.probe, Probe::Http(h) if h.path == "/a"),
        "{hc:?}"
    );
    // Real-server delay_loop and retry, virtual-server connect_timeout.
    assert_eq!(
        (hc.interval, hc.timeout, hc.fall),
        (Duration::from_secs(3), Duration::from_secs(2), 1)
    );
    assert!(has(&n, "19:4", "a second url"), "{n:#?}");
    assert!(has(&n, "23:3", "a second checker"), "{n:#?}");
    // HTTP_GET without url: keepalived drops the checker.
    assert_eq!(v.backends[1].health_check.probe, Probe::None);
    assert!(has(&n, "27:3", "HTTP_GET without a url"), "{n:#?}");
    // MISC_CHECK's timeout is the delay_loop (not connect_timeout), fitted.
    let hc = &v.backends[2].health_check;
    assert_eq!(hc.timeout, Duration::from_secs(9));
    // retry 0 on the first server, none on the others: no retry note.
    assert_eq!(
        n.iter().filter(|x| x.contains("retry")).count(),
        0,
        "{n:#?}"
    );
}

#[test]
fn a_server_whose_only_check_lbctl_lacks_is_refused() {
    let e = errors(conv(
        &with_instance(
            "virtual_server 10.0.0.1 53 {\n lb_kind DR\n protocol UDP\n\
             real_server 10.0.1.1 53 {\n  DNS_CHECK {\n  }\n }\n}\n",
        ),
        &eth0(),
    ));
    assert!(has(&e, "12:3", "DNS_CHECK cannot be translated"), "{e:#?}");
}

#[test]
fn nat_removes_failed_servers_unless_inhibited() {
    let vs = |inhibit_a: &str, inhibit_b: &str| {
        with_instance(&format!(
            "virtual_server 10.0.0.1 80 {{\n lb_kind NAT\n lb_algo wrr\n\
             real_server 10.0.1.1 80 {{\n{inhibit_a} }}\n real_server 10.0.1.2 80 {{\n{inhibit_b} }}\n}}\n"
        ))
    };
    let (cfg, _, _) = ok(&vs("", ""), &eth0());
    assert_eq!(cfg.node.on_unhealthy, config::OnUnhealthy::Remove);
    assert_eq!(
        cfg.vip("vs-10.0.0.1-80").unwrap().on_unhealthy,
        config::OnUnhealthy::Remove
    );
    let inh = "  inhibit_on_failure\n";
    let (cfg, _, _) = ok(&vs(inh, inh), &eth0());
    assert_eq!(
        cfg.vip("vs-10.0.0.1-80").unwrap().on_unhealthy,
        config::OnUnhealthy::Drain
    );
    let e = errors(conv(&vs(inh, ""), &eth0()));
    assert!(has(&e, "11:1", "inhibit_on_failure on some"), "{e:#?}");
}

#[test]
fn what_changes_mastership_or_routes_is_refused() {
    let e = errors(conv(
        &with_instance(
            "vrrp_sync_group G {\n group {\n  V\n }\n}\nstatic_routes {\n 10.9.0.0/16 via 10.0.0.254\n}\n\
             vrrp_instance W {\n interface eth0\n virtual_router_id 2\n track_file {\n  f\n }\n\
             track_script {\n  chk weight -20 reverse\n }\n virtual_ipaddress {\n 10.0.0.2\n }\n}\n\
             vrrp_script chk {\n script /bin/true\n weight 10 reverse\n}\n",
        ),
        &eth0(),
    ));
    assert!(
        has(&e, "8:1", "vrrp_sync_group cannot be translated"),
        "{e:#?}"
    );
    assert!(
        has(&e, "13:1", "static_routes cannot be translated"),
        "{e:#?}"
    );
    assert!(has(&e, "19:2", "track_file cannot be translated"), "{e:#?}");
    assert!(has(&e, "23:18", "weight option \"reverse\""), "{e:#?}");
    assert!(has(&e, "31:12", "weight option \"reverse\""), "{e:#?}");
}

#[test]
fn xdp_balances_the_vips_of_its_own_interface_only() {
    let e = errors(conv(
        "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n 10.0.0.1\n }\n}\n\
         vrrp_instance B {\n interface eth0\n virtual_router_id 2\n virtual_ipaddress {\n 10.1.0.1 dev eth1\n }\n}\n\
         virtual_server 10.0.0.1 80 {\n lb_kind DR\n real_server 10.0.1.1 80 {\n }\n}\n\
         virtual_server 10.1.0.1 80 {\n lb_kind DR\n real_server 10.1.1.1 80 {\n }\n}\n",
        &Options::default(),
    ));
    assert!(has(&e, "20:1", "10.1.0.1 is on eth1"), "{e:#?}");
    assert_eq!(e.len(), 1, "{e:#?}");
}

#[test]
fn ipv6_instances_are_version_3_even_when_told_2() {
    let (cfg, n, _) = ok(
        "global_defs {\n vrrp_version 2\n}\nvrrp_instance V6 {\n interface eth0\n \
         virtual_router_id 9\n virtual_ipaddress {\n 2001:db8::100/64\n }\n}\n",
        &Options::default(),
    );
    assert_eq!(cfg.vrrp_instance("V6").unwrap().version, VrrpVersion::V3);
    assert!(has(&n, "4:1", "VRRP version 2 for IPv6"), "{n:#?}");
}

/// IPVS's sh hashes the client address only (unless `sh-port`): lbctl
/// sets the port flag from `src_port` in the hash, so the hash leaves it out.
#[test]
fn ipvs_source_hashing_keeps_its_port_flag_off() {
    let vs = |flags: &str| {
        with_instance(&format!(
            "virtual_server 10.0.0.1 80 {{\n lb_algo sh\n{flags} lb_kind NAT\n real_server 10.0.1.1 80 {{\n }}\n}}\n"
        ))
    };
    let (cfg, n, _) = ok(&vs(""), &eth0());
    let v = cfg.vip("vs-10.0.0.1-80").unwrap();
    assert_eq!(v.scheduler, Scheduler::Sh);
    assert!(v.hash.src_addr && !v.hash.src_port, "{:?}", v.hash);
    assert!(has(&n, "9:10", "without sh-fallback"), "{n:#?}");
    let (cfg, n, _) = ok(&vs(" sh-port\n sh-fallback\n"), &eth0());
    assert!(cfg.vip("vs-10.0.0.1-80").unwrap().hash.src_port);
    assert!(!n.iter().any(|x| x.contains("fallback")), "{n:#?}");
}
