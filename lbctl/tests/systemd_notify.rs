//! `lbctl run` as a systemd `Type=notify` service (needs root: a network
//! namespace and XDP): the test stands in for systemd, with its own
//! `NOTIFY_SOCKET` and `WATCHDOG_USEC`, and checks what the daemon says and
//! when: READY only once the control socket answers, WATCHDOG pings while
//! it runs, RELOADING then READY around a reload (a refused one too), and
//! STOPPING at SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

const LBCTL: &str = env!("CARGO_BIN_EXE_lbctl");

/// Everything the test made: a namespace with a veth pair, a temp dir and
/// the daemon; all removed on drop, also when the test fails.
struct World {
    ns: String,
    dir: PathBuf,
    daemon: Option<Child>,
}

impl World {
    fn new() -> World {
        let ns = format!("lbt-sdnotify-{}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let w = World {
            ns,
            dir,
            daemon: None,
        };
        w.ip(&["netns", "add", &w.ns]);
        w.ip(&[
            "-n", &w.ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        w.ip(&["-n", &w.ns, "link", "set", "veth0", "up"]);
        w.ip(&["-n", &w.ns, "link", "set", "veth1", "up"]);
        w
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.path("lbctl.log")).unwrap_or_default();
            eprintln!("==== lbctl.log ====\n{log}");
        }
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The messages the daemon sends, each a set of `KEY=VALUE` lines.
fn next(sock: &UnixDatagram, within: Duration) -> Option<String> {
    let within = within.max(Duration::from_millis(1));
    sock.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Messages until one with the line `want`: the ones before it, and it.
fn until(sock: &UnixDatagram, want: &str, within: Duration) -> (Vec<String>, String) {
    let end = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match next(sock, left) {
            Some(m) if m.lines().any(|l| l == want) => return (seen, m),
            Some(m) => seen.push(m),
            None => break,
        }
    }
    panic!("no {want} within {within:?}; saw {seen:?}");
}

/// One VIP whose backend's health check writes its environment to
/// `DIR/check.env`.
fn config(dir: &Path) -> String {
    format!(
        "[node]\ninterface = \"veth0\"\nstate_dir = \"{}\"\n\
         [[vip]]\nname = \"web\"\naddress = \"10.99.0.100\"\nport = 80\n\
         [[vip.backend]]\naddress = \"10.99.1.1\"\n\
         health_check = {{ type = \"script\", command = [\"/bin/sh\", \"-c\", \"env > {}\"], interval = \"200ms\", timeout = \"100ms\" }}\n",
        dir.join("state").display(),
        dir.join("check.env").display()
    )
}

#[test]
fn run_speaks_systemds_notify_protocol() {
    let mut w = World::new();
    let notify = w.path("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind the notify socket");
    let cfg = w.path("lb.toml");
    std::fs::write(&cfg, config(&w.dir)).expect("config");
    let log = std::fs::File::create(w.path("lbctl.log")).expect("log");
    // As systemd does: WATCHDOG_PID names the daemon (the shell's pid, which
    // `exec` hands on to `ip netns exec`, which hands it on to lbctl).
    let child = Command::new("sh")
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec ip netns exec \"$0\" \"$1\" run --config \"$2\"",
        ])
        .arg(&w.ns)
        .arg(LBCTL)
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "300000")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("lbctl run");
    let pid = child.id();
    w.daemon = Some(child);
    let control = w.path("state").join("lbctl.sock");

    // READY, and by then the control socket answers.
    let (before, ready) = until(&sock, "READY=1", Duration::from_secs(20));
    assert!(
        ready.contains("STATUS=generation 1: 1 VIPs on veth0"),
        "{ready}"
    );
    let st = Command::new(LBCTL)
        .args(["status", "--json", "--socket"])
        .arg(&control)
        .output()
        .expect("lbctl status");
    assert!(
        st.status.success(),
        "READY before the daemon answers: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(
        before.iter().all(|m| !m.contains("WATCHDOG=1")),
        "watchdog pings before READY: {before:?}"
    );

    // Watchdog pings every half WATCHDOG_USEC (150 ms), not every 300.
    let mut at = Vec::new();
    let start = Instant::now();
    while at.len() < 8 && start.elapsed() < Duration::from_secs(5) {
        if next(&sock, Duration::from_millis(500)).is_some_and(|m| m.contains("WATCHDOG=1")) {
            at.push(Instant::now());
        }
    }
    assert_eq!(at.len(), 8, "watchdog pings stopped");
    let mut gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(100) && median <= Duration::from_millis(225),
        "ping gaps {gaps:?}"
    );

    // The programs lbctl runs do not get systemd's variables.
    let path = w.path("check.env");
    let end = Instant::now() + Duration::from_secs(5);
    let env = loop {
        // One read: a check run may be rewriting the file.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("PATH=") {
            break text;
        }
        assert!(Instant::now() < end, "the health check never ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(!env.contains(var), "{var} reached the check: {env}");
    }

    // A reload: RELOADING (with the time) then READY, with its status.
    signal(pid, Signal::SIGHUP);
    let (_, reloading) = until(&sock, "RELOADING=1", Duration::from_secs(5));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let (between, ready) = until(&sock, "READY=1", Duration::from_secs(5));
    assert!(
        between.iter().all(|m| m.contains("WATCHDOG=1")),
        "{between:?}"
    );
    assert!(ready.contains("STATUS=generation 2:"), "{ready}");

    // A refused reload: READY again all the same (the old config serves).
    std::fs::write(&cfg, "[node]\ninterface = 7\n").expect("bad config");
    let r = Command::new(LBCTL)
        .args(["reload", "--socket"])
        .arg(&control)
        .output()
        .expect("lbctl reload");
    assert!(!r.status.success());
    until(&sock, "RELOADING=1", Duration::from_secs(5));
    let (_, ready) = until(&sock, "READY=1", Duration::from_secs(5));
    assert!(ready.contains("STATUS=generation 2:"), "{ready}");

    // SIGTERM: STOPPING, and the daemon exits cleanly.
    signal(pid, Signal::SIGTERM);
    until(&sock, "STOPPING=1", Duration::from_secs(5));
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        // Left in `w` until it exits: killed by the drop if it never does.
        let child = w.daemon.as_mut().expect("daemon");
        if let Some(st) = child.try_wait().expect("wait") {
            w.daemon = None;
            break st;
        }
        assert!(Instant::now() < end, "lbctl did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// Signals the daemon (the shell and `ip netns exec` exec it: same pid).
fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(pid, sig).expect("kill");
}

/// The unit file shipped in contrib/ is one systemd reads without a
/// complaint (its paths pointed at this build).
#[test]
fn the_shipped_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/lbctl.service");
    let text = std::fs::read_to_string(&unit).expect("contrib/systemd/lbctl.service");
    assert!(text.contains("Type=notify\n"), "{text}");
    let w = std::env::temp_dir().join(format!("lbt-sdunit-{}", std::process::id()));
    std::fs::create_dir_all(&w).expect("dir");
    let verify = |name: &str, text: &str| {
        let p = w.join(name);
        std::fs::write(&p, text).expect("unit");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&p)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let ours = text.replace("/usr/local/sbin/lbctl", LBCTL);
    let (ok, said) = verify("lbctl.service", &ours);
    // The check can fail: a misspelt key is reported.
    let (_, bad) = verify(
        "lbctl-bad.service",
        &ours.replace("Type=notify", "Typ=notify"),
    );
    let _ = std::fs::remove_dir_all(&w);
    // Complaints about other units of the host are not this test's.
    assert!(ok && !said.contains("lbctl.service"), "{said}");
    assert!(bad.contains("Unknown key"), "{bad}");
}
