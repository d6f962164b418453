//! The guest half of the kernel-VM IPVS test (`ipvs_vm.rs` is the host half).
//!
//! Built static and put into the initramfs of a Debian 6.1 kernel that has
//! IPVS; the guest's `/init` runs it with `LBCTL_IPVS_GUEST=1`, and it refuses
//! to run anywhere else (it flushes IPVS and creates interfaces). It programs IPVS through lbctl's data
//! plane, checks `ipvsadm -Ln` (the kernel's view, through ipvsadm's own
//! code) after every step, and prints `IPVS-VM:` markers on the serial
//! console for the host to assert on.

use std::{collections::BTreeSet, net::IpAddr, process::Command};

use lbctl::dataplane::{
    BackendSpec, DesiredState, Forwarding, HashFields, NodeSettings, Protocol, VipSpec, VipState,
    ipvs::{IpvsDataplane, IpvsForwarding, IpvsOptions, Scheduler, VipOptions},
};

/// One line of `ipvsadm -Ln`, reduced to what the test compares.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Line {
    /// `PROT ADDR:PORT SCHED [flags...]`
    Service(String),
    /// `SERVICE -> ADDR:PORT FORWARD WEIGHT`
    Dest(String),
}

fn ipvsadm(args: &[&str]) -> String {
    let out = Command::new("ipvsadm")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ipvsadm {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ipvsadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ipvsadm -Ln` as a set of normalised lines (columns joined by one space,
/// connection counters dropped).
fn table() -> BTreeSet<Line> {
    let text = ipvsadm(&["-Ln"]);
    println!("--- ipvsadm -Ln\n{text}---");
    let mut out = BTreeSet::new();
    let mut svc = String::new();
    for l in text.lines() {
        let t: Vec<&str> = l.split_whitespace().collect();
        match t.first() {
            Some(&("TCP" | "UDP" | "FWM")) => {
                svc = t.join(" ");
                out.insert(Line::Service(svc.clone()));
            }
            Some(&"->") if t.get(1) != Some(&"RemoteAddress:Port") => {
                // -> ADDR:PORT FORWARD WEIGHT ACTIVE INACTIVE
                out.insert(Line::Dest(format!("{svc} -> {}", t[1..4].join(" "))));
            }
            _ => {}
        }
    }
    out
}

fn expect(step: &str, want: &[&str]) {
    let want: BTreeSet<Line> = want
        .iter()
        .map(|s| {
            if s.contains(" -> ") {
                Line::Dest((*s).to_owned())
            } else {
                Line::Service((*s).to_owned())
            }
        })
        .collect();
    let got = table();
    if got != want {
        println!("IPVS-VM: FAIL {step}");
        println!(
            "  missing:    {:?}",
            want.difference(&got).collect::<Vec<_>>()
        );
        println!(
            "  unexpected: {:?}",
            got.difference(&want).collect::<Vec<_>>()
        );
        panic!("{step}: ipvsadm -Ln differs");
    }
    println!("IPVS-VM: PASS {step}");
}

fn backend(addr: &str, weight: u32) -> BackendSpec {
    BackendSpec {
        addr: addr.parse().expect("address"),
        weight,
        healthy: true,
        mac: None,
    }
}

fn vip(addr: &str, port: Option<u16>, protocol: Protocol, fwd: Forwarding) -> VipState {
    VipState {
        spec: VipSpec {
            addr: addr.parse::<IpAddr>().expect("address"),
            port,
            protocol,
        },
        forwarding: fwd,
        hash: HashFields::default(),
        ring_size: 65537,
        active: true,
        debug: false,
        backends: vec![],
    }
}

fn desired() -> DesiredState {
    let mut web = vip("10.0.0.1", Some(80), Protocol::Tcp, Forwarding::Dr);
    web.backends = vec![backend("10.0.1.1", 1), backend("10.0.1.2", 2)];
    let mut dns = vip("10.0.0.2", Some(53), Protocol::Udp, Forwarding::Ipip);
    dns.backends = vec![backend("10.0.2.1", 3), backend("10.0.2.2", 4)];
    let mut v6 = vip("2001:db8::1", Some(443), Protocol::Tcp, Forwarding::Dr);
    v6.backends = vec![backend("2001:db8::10", 1)];
    let mut any = vip("10.0.0.3", None, Protocol::Tcp, Forwarding::Dr);
    any.hash.src_port = false;
    any.backends = vec![backend("10.0.3.1", 1)];
    DesiredState {
        node: NodeSettings::default(),
        vips: vec![web, dns, v6, any],
    }
}

fn options(dir: &std::path::Path) -> IpvsOptions {
    let mut o = IpvsOptions::new(dir);
    let d = desired();
    o.vips.insert(
        d.vips[1].spec,
        VipOptions {
            scheduler: Some(Scheduler::Wrr),
            ..Default::default()
        },
    );
    o.vips.insert(
        d.vips[2].spec,
        VipOptions {
            scheduler: Some(Scheduler::Sh),
            forwarding: Some(IpvsForwarding::Nat),
            persistence: None,
        },
    );
    o.vips.insert(
        d.vips[3].spec,
        VipOptions {
            scheduler: Some(Scheduler::Rr),
            ..Default::default()
        },
    );
    o
}

const FOREIGN: &str = "TCP 192.0.2.9:443 rr";
const FOREIGN_DEST: &str = "TCP 192.0.2.9:443 rr -> 192.0.2.10:443 Route 1";

fn main() {
    if std::env::var_os("LBCTL_IPVS_GUEST").is_none() {
        eprintln!("ipvs_guest runs only inside the kernel VM guest (LBCTL_IPVS_GUEST unset)");
        std::process::exit(2);
    }
    println!("IPVS-VM: START");
    let dir = std::env::temp_dir().join("lbctl-state");
    let _ = std::fs::remove_dir_all(&dir);

    // Someone else's service, made with ipvsadm before lbctl starts.
    ipvsadm(&["-A", "-t", "192.0.2.9:443", "-s", "rr"]);
    ipvsadm(&[
        "-a",
        "-t",
        "192.0.2.9:443",
        "-r",
        "192.0.2.10:443",
        "-g",
        "-w",
        "1",
    ]);

    let mut dp = IpvsDataplane::open(options(&dir)).expect("open IPVS");
    let r = dp.apply(&desired()).expect("first apply");
    println!("report: {r:?}");
    assert_eq!((r.services_added, r.dests_added), (4, 6));
    let first = [
        FOREIGN,
        FOREIGN_DEST,
        "TCP 10.0.0.1:80 mh (mh-port)",
        "TCP 10.0.0.1:80 mh (mh-port) -> 10.0.1.1:80 Route 1",
        "TCP 10.0.0.1:80 mh (mh-port) -> 10.0.1.2:80 Route 2",
        "UDP 10.0.0.2:53 wrr",
        "UDP 10.0.0.2:53 wrr -> 10.0.2.1:53 Tunnel 3",
        "UDP 10.0.0.2:53 wrr -> 10.0.2.2:53 Tunnel 4",
        "TCP [2001:db8::1]:443 sh (sh-port)",
        "TCP [2001:db8::1]:443 sh (sh-port) -> [2001:db8::10]:443 Masq 1",
        "TCP 10.0.0.3:0 rr persistent 300",
        "TCP 10.0.0.3:0 rr persistent 300 -> 10.0.3.1:0 Route 1",
    ];
    expect("apply", &first);

    // Nothing changed: nothing written.
    let r = dp.apply(&desired()).expect("second apply");
    assert!(r.is_empty(), "{r:?}");
    println!("IPVS-VM: PASS idempotent");

    // Health: 10.0.1.1 fails its check -> weight 0.
    let mut s = desired();
    s.vips[0].backends[0].healthy = false;
    let r = dp.apply(&s).expect("health apply");
    assert_eq!(r.dests_updated, 1, "{r:?}");
    let mut want: Vec<&str> = first.to_vec();
    want[3] = "TCP 10.0.0.1:80 mh (mh-port) -> 10.0.1.1:80 Route 0";
    expect("health", &want);

    // Reload: a weight changes, the UDP VIP goes, a backend is added.
    s.vips[0].backends[1].weight = 5;
    s.vips[0].backends.push(backend("10.0.1.3", 7));
    s.vips.remove(1);
    let r = dp.apply(&s).expect("reload apply");
    println!("report: {r:?}");
    assert_eq!(
        (r.services_removed, r.dests_updated, r.dests_added),
        (1, 1, 1),
        "{r:?}"
    );
    let reloaded = [
        FOREIGN,
        FOREIGN_DEST,
        "TCP 10.0.0.1:80 mh (mh-port)",
        "TCP 10.0.0.1:80 mh (mh-port) -> 10.0.1.1:80 Route 0",
        "TCP 10.0.0.1:80 mh (mh-port) -> 10.0.1.2:80 Route 5",
        "TCP 10.0.0.1:80 mh (mh-port) -> 10.0.1.3:80 Route 7",
        "TCP [2001:db8::1]:443 sh (sh-port)",
        "TCP [2001:db8::1]:443 sh (sh-port) -> [2001:db8::10]:443 Masq 1",
        "TCP 10.0.0.3:0 rr persistent 300",
        "TCP 10.0.0.3:0 rr persistent 300 -> 10.0.3.1:0 Route 1",
    ];
    expect("reload", &reloaded);

    // Crash and restart: a new process reads the record and the kernel and
    // writes nothing for the same state.
    drop(dp);
    let mut dp = IpvsDataplane::open(options(&dir)).expect("reopen IPVS");
    assert_eq!(dp.owned().len(), 3);
    let r = dp.apply(&s).expect("apply after restart");
    assert!(r.is_empty(), "{r:?}");
    expect("restart", &reloaded);

    // The status view.
    let st = dp.status().expect("status");
    assert_eq!(st.services.len(), 4);
    assert_eq!(st.services.iter().filter(|s| s.owned).count(), 3);
    let stats = dp.stats().expect("stats");
    assert_eq!(stats.vips.len(), 3);
    println!("IPVS-VM: PASS status");

    // Stop: lbctl's services go, the foreign one stays.
    let n = dp.remove_owned().expect("remove_owned");
    assert_eq!(n, 3);
    expect("stop", &[FOREIGN, FOREIGN_DEST]);

    tcp_through_the_vip(&dir);
    println!("IPVS-VM: ALL PASS");
}

/// A real TCP connection from a local client through a NAT VIP to a real
/// server in the guest (IPVS hooks locally originated traffic too).
fn tcp_through_the_vip(dir: &std::path::Path) {
    use std::io::{Read as _, Write as _};
    for a in ["10.0.0.100/32", "10.0.0.200/32"] {
        let st = Command::new("ip")
            .args(["addr", "add", a, "dev", "lo"])
            .status()
            .expect("ip addr add");
        assert!(st.success(), "ip addr add {a}");
    }
    let server = std::net::TcpListener::bind("10.0.0.200:80").expect("bind the real server");
    let t = std::thread::spawn(move || {
        let (mut c, peer) = server.accept().expect("accept");
        c.write_all(format!("hello {peer} from 10.0.0.200\n").as_bytes())
            .expect("write");
    });
    let mut web = vip("10.0.0.100", Some(80), Protocol::Tcp, Forwarding::Dr);
    web.backends = vec![backend("10.0.0.200", 1)];
    let s = DesiredState {
        node: NodeSettings::default(),
        vips: vec![web],
    };
    let mut o = IpvsOptions::new(dir);
    o.vips.insert(
        s.vips[0].spec,
        VipOptions {
            scheduler: Some(Scheduler::Rr),
            forwarding: Some(IpvsForwarding::Nat),
            persistence: None,
        },
    );
    let mut dp = IpvsDataplane::open(o).expect("open IPVS");
    dp.apply(&s).expect("apply the NAT VIP");
    let addr: std::net::SocketAddr = "10.0.0.100:80".parse().expect("address");
    let mut c = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .expect("connect to the VIP");
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut got = String::new();
    c.read_to_string(&mut got).expect("read from the VIP");
    t.join().expect("server thread");
    println!("client got: {got:?}");
    assert!(got.contains("from 10.0.0.200"), "{got:?}");
    // Show the kernel's own counters next to what lbctl decodes.
    ipvsadm(&["-Ln", "--stats"]);
    // The kernel folds its per-CPU counters into the dumped ones in its
    // rate estimator, every 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let svc = loop {
        let st = dp.status().expect("status");
        let svc = st
            .services
            .into_iter()
            .find(|s| s.owned)
            .expect("the NAT service");
        if svc.stats.conns >= 1 || std::time::Instant::now() > deadline {
            break svc;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    println!("service counters: {:?}", svc.stats);
    println!("real server: {:?}", svc.dests);
    ipvsadm(&["-Ln", "--stats"]);
    assert!(svc.stats.conns >= 1, "{:?}", svc.stats);
    dp.remove_owned().expect("remove_owned");
    println!("IPVS-VM: PASS tcp");
}
