//! `cargo run -p bench --release -- [--quick] [--runs N] [--seconds S] [--out DIR]`
//!
//! Re-executes itself in a new session at nice -20 (per-process nice does
//! not count across sessions: see shared/docs/bench-notes.md), forwarding
//! Ctrl-C to it; the child cleans up its namespaces on any exit.

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use nix::{
    sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction},
    unistd::Pid,
};

/// lbctl's benchmarking rig (needs root).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Smoke mode: short windows, one run (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Samples per variant and per path.
    #[arg(long)]
    runs: Option<usize>,
    /// Live measurement window per variant, seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Output directory for report.json and report.svg.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Live traffic: mix (IPv4/IPv6 x TCP SYN/UDP), v4-tcp, v4-udp, v6-tcp, v6-udp.
    #[arg(long, default_value = "mix")]
    traffic: String,
    /// Flows per template in the live traffic (rounded up to a power of two).
    #[arg(long, default_value_t = 16384)]
    flows: u32,
    /// Repeat count of each per-packet-cost sample.
    #[arg(long)]
    repeat: Option<u32>,
    /// Only these per-packet-cost paths (comma-separated ids, e.g.
    /// ipip_hit_v4); the baselines always run. For profiling one path.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Only these parts (comma-separated: live, cost, control).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Do not re-execute in a new session at nice -20.
    #[arg(long)]
    no_session: bool,
}

const CHILD_ENV: &str = "LBB_SESSION_CHILD";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_int(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Runs this program again under `setsid --wait nice -n -20` and forwards
/// SIGINT/SIGTERM to it.
fn supervise() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating own executable")?;
    let act = SigAction::new(
        SigHandler::Handler(on_int),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: FFI; the handler only stores to an atomic (async-signal-safe).
    unsafe {
        sigaction(Signal::SIGINT, &act)?;
        sigaction(Signal::SIGTERM, &act)?;
    }
    let mut child = Command::new("setsid")
        .args(["--wait", "nice", "-n", "-20"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .spawn()
        .context("starting setsid (util-linux)")?;
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    let mut forwarded = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if INTERRUPTED.load(Ordering::SeqCst) && !forwarded {
            let _ = kill(pid, Signal::SIGINT);
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.no_session && std::env::var_os(CHILD_ENV).is_none() {
        return match supervise() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the rig needs root (namespaces, XDP, BPF_PROG_TEST_RUN)");
    }
    let runs = cli.runs.unwrap_or(if cli.quick { 1 } else { 5 }).max(1);
    let seconds = cli.seconds.unwrap_or(if cli.quick { 0.3 } else { 2.0 });
    if !(0.05..=60.0).contains(&seconds) {
        bail!("--seconds must be within 0.05..=60");
    }
    let part = |p: &str| cli.only.is_empty() || cli.only.iter().any(|x| x == p);
    for p in &cli.only {
        if !matches!(p.as_str(), "live" | "cost" | "control") {
            bail!("unknown part {p:?} (live, cost, control)");
        }
    }
    let known = bench::cost::CostLab::paths();
    for p in &cli.paths {
        if !known.iter().any(|k| &k.id == p) {
            let ids: Vec<&str> = known.iter().map(|k| k.id.as_str()).collect();
            bail!("unknown cost path {p:?} (one of {})", ids.join(", "));
        }
    }
    let opts = bench::Options {
        quick: cli.quick,
        runs,
        window: Duration::from_secs_f64(seconds),
        warmup: Duration::from_secs_f64(if cli.quick { 0.1 } else { 0.3 }),
        traffic: cli.traffic,
        flows: cli.flows,
        cost_repeat: cli
            .repeat
            .unwrap_or(if cli.quick { 100_000 } else { 2_000_000 })
            .max(1000),
        cost_paths: cli.paths,
        live: part("live"),
        cost: part("cost"),
        control: part("control"),
        out: cli.out,
    };
    let report = bench::run(&opts)?;
    print!("{}", bench::report::render(&report));
    println!(
        "\nwrote {} and {}",
        opts.out.join("report.json").display(),
        opts.out.join("report.svg").display()
    );
    Ok(())
}
