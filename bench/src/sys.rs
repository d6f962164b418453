//! Process plumbing: signals, CPU pinning, network namespaces.

use std::{
    fs::File,
    os::fd::AsFd as _,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, bail};
use nix::{
    sched::{CloneFlags, CpuSet, sched_getaffinity, sched_setaffinity, setns},
    sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction},
    unistd::Pid,
};

/// Set by SIGINT/SIGTERM: stop generating, clean up, exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_wake(_: libc::c_int) {}

/// The signal that ends a generator window (sent to the generating thread).
pub const WAKE: Signal = Signal::SIGUSR1;

/// Installs the SIGINT/SIGTERM flag handler and a no-op [`WAKE`] handler
/// (without SA_RESTART, so a blocking BPF_PROG_TEST_RUN returns EINTR).
///
/// # Errors
/// sigaction failures.
pub fn install_handlers() -> anyhow::Result<()> {
    let stop = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let wake = SigAction::new(
        SigHandler::Handler(on_wake),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: FFI; both handlers only touch an atomic (async-signal-safe).
    unsafe {
        sigaction(Signal::SIGINT, &stop)?;
        sigaction(Signal::SIGTERM, &stop)?;
        sigaction(WAKE, &wake)?;
    }
    Ok(())
}

/// Whether an interrupt was received.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Fails with a clear error once interrupted.
///
/// # Errors
/// After SIGINT/SIGTERM.
pub fn check_stop() -> anyhow::Result<()> {
    if stopping() {
        bail!("interrupted");
    }
    Ok(())
}

/// Pins the calling thread to `cpu` until dropped (then restores its mask).
pub struct Pin {
    old: CpuSet,
}

impl Pin {
    /// Pins the calling thread.
    ///
    /// # Errors
    /// sched_setaffinity failures (e.g. no such CPU).
    pub fn to(cpu: usize) -> anyhow::Result<Self> {
        let old = sched_getaffinity(Pid::from_raw(0))?;
        let mut set = CpuSet::new();
        set.set(cpu)?;
        sched_setaffinity(Pid::from_raw(0), &set)
            .with_context(|| format!("pinning to CPU {cpu}"))?;
        Ok(Self { old })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.old);
    }
}

/// Runs `ip` with `args`; the error carries its stderr.
///
/// # Errors
/// When `ip` cannot run or fails.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

/// Runs a program; the error carries its stderr.
///
/// # Errors
/// When it cannot run or exits non-zero.
pub fn run(prog: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A network namespace this process created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` (`ip netns add`).
    ///
    /// # Errors
    /// When it exists already or `ip` fails.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        ip(&["netns", "add", name])?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args`.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// Sets a sysctl inside the namespace.
    ///
    /// # Errors
    /// When the write fails.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let _in = self.enter()?;
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).with_context(|| format!("writing {path}"))
    }

    /// Moves the calling thread into the namespace until the guard drops.
    ///
    /// # Errors
    /// When the namespace file cannot be opened or setns fails.
    pub fn enter(&self) -> anyhow::Result<Entered> {
        let orig = File::open("/proc/thread-self/ns/net").context("opening own netns")?;
        let target = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening netns {}", self.name))?;
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {}", self.name))?;
        Ok(Entered { orig })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: deleting netns {}: {e:#}", self.name);
        }
    }
}

/// The calling thread is inside a namespace; returns on drop.
pub struct Entered {
    orig: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(self.orig.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("warning: returning to the original netns: {e}");
        }
    }
}

/// Deletes namespaces named `{prefix}{pid}-*` whose process is gone
/// (left by a run that was killed with SIGKILL).
pub fn reap_stale(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}
