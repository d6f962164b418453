//! A small network-namespace harness for end-to-end tests (needs root).
//!
//! ```text
//! let a = NetNs::new(&unique_name("vrrp-basic", "a"))?;   // `ip netns add`; Drop deletes
//! let b = NetNs::new(&unique_name("vrrp-basic", "b"))?;
//! veth_pair(&a, "eth0", &b, "eth0")?;                      // one veth, one end in each
//! a.addr_add("eth0", "10.0.0.1/24")?; a.link_up("eth0")?;
//! let out = a.run(&["ping", "-c1", "10.0.0.2"])?;          // checked, stdout as String
//! let child = a.spawn(&["keepalived", "-n", ...])?;        // ChildGuard: SIGKILL + reap on Drop
//! let r = a.enter_thread(|| build_a_tokio_runtime_and_run())?.join();
//! wait_until(Duration::from_secs(5), Duration::from_millis(20), || a.has_addr("10.0.0.100"));
//! ```
//!
//! Rules the helpers follow so tests can run in parallel and clean up:
//! - every namespace name is the caller's (use [`unique_name`]: a prefix,
//!   the test name and the pid), nothing is created in the root namespace
//!   (veth pairs are created with both ends directly in their namespaces);
//! - [`NetNs`]'s Drop kills (SIGKILL, by pid) every process still inside the
//!   namespace, then deletes it, which also deletes its interfaces; it runs
//!   on panic too, so a failing test leaves nothing behind;
//! - every wait is bounded ([`wait_until`]).

use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use lbctl::dataplane::xdp::{AttachMode, LoadOptions, XdpDataplane, programs};
use nix::sched::{CloneFlags, setns};

/// Prefix of every namespace the project's tests create.
pub const PREFIX: &str = "lbt";

/// `lbt-<test>-<role>-<pid>`: unique per test process, so parallel runs
/// and leftovers of a killed run never collide. Keep `test` and `role`
/// short; the name only has to be a valid file name.
pub fn unique_name(test: &str, role: &str) -> String {
    format!("{PREFIX}-{test}-{role}-{}", std::process::id())
}

/// A network namespace owned by the test. Deleted on Drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// `ip netns add NAME` (replacing a stale namespace of the same name),
    /// then bring `lo` up.
    pub fn new(name: &str) -> Result<NetNs> {
        if std::path::Path::new("/run/netns").join(name).exists() {
            let stale = NetNs {
                name: name.to_owned(),
            };
            drop(stale);
        }
        run_checked(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("ip netns add {name}"))?;
        let ns = NetNs {
            name: name.to_owned(),
        };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` running `program` inside the namespace
    /// (`ip netns exec NAME program`); add arguments, then run or spawn it.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `argv` inside the namespace and return its output, whatever the
    /// exit status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("empty command")?;
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} in {}", self.name))
    }

    /// Run `argv` inside the namespace; fail unless it exits 0. Returns stdout.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = argv.split_first().context("empty command")?;
        run_checked(self.command(program).args(args))
            .with_context(|| format!("in namespace {}", self.name))
    }

    /// Start `argv` inside the namespace, stdin closed, stdout/stderr
    /// inherited (shown by the test harness on failure).
    pub fn spawn(&self, argv: &[&str]) -> Result<ChildGuard> {
        let (program, args) = argv.split_first().context("empty command")?;
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {argv:?} in {}", self.name))?;
        Ok(ChildGuard::new(child))
    }

    /// Run `f` on a new thread that has joined this namespace
    /// (`setns(CLONE_NEWNET)`): sockets, netlink and a tokio runtime built
    /// inside `f` all live in the namespace, as do threads and processes it
    /// starts. Files (like `/sys`) still show the caller's mount namespace.
    pub fn enter_thread<F, R>(&self, f: F) -> Result<JoinHandle<Result<R>>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        enter_thread_named(&self.name, f)
    }

    /// `ip link set DEV up`.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.run(&["ip", "link", "set", dev, "up"]).map(drop)
    }

    /// `ip link set DEV down`.
    pub fn link_down(&self, dev: &str) -> Result<()> {
        self.run(&["ip", "link", "set", dev, "down"]).map(drop)
    }

    /// `ip addr add CIDR dev DEV` (IPv6 with `nodad`, usable at once).
    pub fn addr_add(&self, dev: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.run(&["ip", "addr", "add", cidr, "dev", dev, "nodad"])
        } else {
            self.run(&["ip", "addr", "add", cidr, "dev", dev])
        }
        .map(drop)
    }

    /// `sysctl -w KEY=VALUE` inside the namespace (namespaced keys only,
    /// e.g. `net.ipv6.conf.eth0.accept_dad`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Turn off IPv6 duplicate address detection on `dev` (call before the
    /// link goes up) so its link-local address is usable at once.
    pub fn no_dad(&self, dev: &str) -> Result<()> {
        self.sysctl(&format!("net.ipv6.conf.{dev}.accept_dad"), "0")
    }

    /// Addresses (without prefix) on any interface (`ip -o addr`).
    pub fn addrs(&self) -> Result<Vec<String>> {
        let out = self.run(&["ip", "-o", "addr", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.position(|x| x == "inet" || x == "inet6")?;
                let cidr = w.next()?;
                Some(cidr.split('/').next().unwrap_or(cidr).to_owned())
            })
            .collect())
    }

    /// Whether `addr` is on some interface of the namespace (`false` when
    /// the query itself fails).
    pub fn has_addr(&self, addr: &str) -> bool {
        self.addrs().is_ok_and(|a| a.iter().any(|x| x == addr))
    }

    /// Pids of the processes inside (`ip netns pids`).
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Processes inside keep the namespace alive; they were started by
        // this test (the namespace is its own), so kill them by pid.
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// [`NetNs::enter_thread`] for a namespace named `name` (`ip netns` names,
/// under `/run/netns`) that the caller manages itself.
pub fn enter_thread_named<F, R>(name: &str, f: F) -> Result<JoinHandle<Result<R>>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("open {path}"))?;
    std::thread::Builder::new()
        .name(format!("ns-{name}"))
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns(CLONE_NEWNET)")?;
            drop(file);
            Ok(f())
        })
        .context("spawning namespace thread")
}

/// lb-ebpf's `pass` program (XDP_PASS) on an interface inside a namespace,
/// held by a thread until dropped: a frame sent with XDP_TX into a veth
/// arrives only if the peer runs an XDP program too
/// (shared/docs/netns-testing.md), so topologies put it on the LB's peer
/// port. A NIC does not need this.
pub struct PassHolder {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl PassHolder {
    /// Attaches `pass` to `iface` in `ns`.
    ///
    /// # Errors
    /// The object does not load or the program does not attach (within 60 s).
    pub fn new(ns: &NetNs, iface: &str) -> Result<PassHolder> {
        Self::in_named(&ns.name, iface)
    }

    /// As [`Self::new`], for a namespace known by its name only.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn in_named(ns: &str, iface: &str) -> Result<PassHolder> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let iface = iface.to_owned();
        let thread = enter_thread_named(ns, move || {
            let r = XdpDataplane::load(LoadOptions::minimal()).and_then(|mut dp| {
                dp.attach(programs::PASS, &iface, AttachMode::Auto)?;
                Ok(dp)
            });
            match r {
                Ok(dp) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.recv();
                    drop(dp);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .context("pass holder: no answer")?
            .map_err(|e| anyhow!("attach pass: {e}"))?;
        Ok(PassHolder {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for PassHolder {
    fn drop(&mut self) {
        // The holder thread detaches and ends when the sender goes.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guard `child`.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child: Some(child) }
    }

    /// The process id (of `ip netns exec`, which execs the program, so it
    /// is the program's pid).
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send `sig` to the process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.id().context("already reaped")?;
        let pid = i32::try_from(pid).context("pid")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .with_context(|| format!("kill -{sig} {pid}"))
    }

    /// SIGKILL and reap now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait up to `timeout` for the process to exit on its own; `true` if
    /// it did (and was reaped).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            match self.child.as_mut().map(Child::try_wait) {
                None => return true,
                Some(Ok(Some(_))) => {
                    self.child = None;
                    return true;
                }
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(10)),
                Some(Err(_)) => return false,
            }
        }
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Create a veth pair with one end (`a_dev`) in `a` and the other (`b_dev`)
/// in `b`, both created directly in their namespaces.
pub fn veth_pair(a: &NetNs, a_dev: &str, b: &NetNs, b_dev: &str) -> Result<()> {
    run_checked(Command::new("ip").args([
        "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b.name,
    ]))
    .with_context(|| format!("veth {}:{a_dev} <-> {}:{b_dev}", a.name, b.name))
    .map(drop)
}

/// Create bridge `name` in `ns` (up, STP off, no multicast snooping so
/// VRRP and ND multicast reach every port) and enslave `ports` (already in
/// `ns`), bringing them up.
pub fn bridge(ns: &NetNs, name: &str, ports: &[&str]) -> Result<()> {
    ns.run(&[
        "ip",
        "link",
        "add",
        name,
        "type",
        "bridge",
        "stp_state",
        "0",
        "mcast_snooping",
        "0",
    ])?;
    ns.link_up(name)?;
    for p in ports {
        ns.run(&["ip", "link", "set", p, "master", name])?;
        ns.link_up(p)?;
    }
    Ok(())
}

/// Poll `cond` every `poll` until it holds or `timeout` passes. Returns
/// the time it took, or `None` on timeout. The condition is evaluated at
/// least once.
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(poll);
    }
}

fn run_checked(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_veth_thread_and_cleanup() -> Result<()> {
        let a_name = unique_name("harness", "a");
        {
            let a = NetNs::new(&a_name)?;
            let b = NetNs::new(&unique_name("harness", "b"))?;
            veth_pair(&a, "eth0", &b, "eth0")?;
            a.addr_add("eth0", "192.0.2.1/24")?;
            b.addr_add("eth0", "192.0.2.2/24")?;
            a.link_up("eth0")?;
            b.link_up("eth0")?;
            assert!(a.has_addr("192.0.2.1"));
            assert!(!a.has_addr("192.0.2.2"));
            // Traffic flows across the pair: a TCP connection from a to b.
            let listener = b
                .enter_thread(|| std::net::TcpListener::bind("192.0.2.2:7000"))?
                .join()
                .map_err(|_| anyhow::anyhow!("thread panicked"))??
                .context("bind in b")?;
            a.enter_thread(|| {
                std::net::TcpStream::connect_timeout(
                    &"192.0.2.2:7000".parse().expect("addr"),
                    Duration::from_secs(2),
                )
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("thread panicked"))??
            .context("connect from a")?;
            listener.accept().context("accept in b")?;
            // A thread inside `b` sees b's interfaces.
            let seen = b
                .enter_thread(|| std::net::UdpSocket::bind("192.0.2.2:0").is_ok())?
                .join()
                .map_err(|_| anyhow::anyhow!("thread panicked"))??;
            assert!(seen, "192.0.2.2 is bindable inside b");
            let _sleeper = a.spawn(&["sleep", "30"])?;
            assert!(
                wait_until(Duration::from_secs(2), Duration::from_millis(10), || !a
                    .pids()
                    .is_empty())
                .is_some()
            );
            assert!(
                wait_until(Duration::from_millis(50), Duration::from_millis(10), || {
                    false
                })
                .is_none()
            );
        }
        assert!(!std::path::Path::new("/run/netns").join(&a_name).exists());
        Ok(())
    }
}
