//! Project tasks: `cargo xtask setup | test | demo | bench | ci`.
//!
//! xtask deliberately does not depend on lbctl: `setup` must build and run
//! before the eBPF toolchain exists.

mod demo;
mod setup;

use std::process::{Command, ExitStatus};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "lbctl project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite (apt packages, eBPF toolchain link, bpf-linker, bpffs). Idempotent.
    Setup {
        /// Which eBPF toolchain to set up.
        #[arg(long, value_enum, default_value = "auto")]
        toolchain: setup::ToolchainChoice,
    },
    /// Setup, then fmt check, clippy -D warnings, and the whole test suite (needs root).
    Test {
        /// Skip the setup step.
        #[arg(long)]
        no_setup: bool,
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, then build a network-namespace topology, run `lbctl run` on it and show traffic through the VIP.
    Demo {
        /// Skip the setup step.
        #[arg(long)]
        no_setup: bool,
        /// Leave the namespaces and processes running (clean up later with `cargo xtask demo --clean`).
        #[arg(long)]
        keep: bool,
        /// Only remove what a previous demo left behind.
        #[arg(long)]
        clean: bool,
    },
    /// Run the packet-rate benchmark (arguments go to the bench binary).
    Bench {
        /// Arguments for `bench`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// What CI runs: setup, then test.
    Ci,
}

/// Runs a command with inherited stdio; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status: ExitStatus = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout when it succeeds.
pub fn run_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(args: &[String]) -> Result<()> {
    println!("== cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("== cargo clippy --all-targets -- -D warnings (host crates)");
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    println!("== cargo clippy -p lb-ebpf for bpfel-unknown-none -- -D warnings");
    // The eBPF crate is linted for its own target, with the toolchain that builds it.
    run(Command::new("cargo")
        .current_dir("lb-ebpf")
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .args([
            &format!("+{}", setup::TOOLCHAIN),
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))?;
    println!("== cargo test (needs root: BPF_PROG_TEST_RUN, network namespaces)");
    run(cargo().arg("test").args(args))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup { toolchain } => setup::setup(toolchain),
        Task::Test { no_setup, args } => {
            if !no_setup {
                setup::setup(setup::ToolchainChoice::Auto)?;
            }
            test(&args)
        }
        Task::Demo {
            no_setup,
            keep,
            clean,
        } => {
            if clean {
                return demo::clean();
            }
            if !no_setup {
                setup::setup(setup::ToolchainChoice::Auto)?;
            }
            demo::demo(keep)
        }
        Task::Bench { args } => run(cargo()
            .args(["run", "--release", "--package", "bench", "--"])
            .args(args)),
        Task::Ci => {
            setup::setup(setup::ToolchainChoice::Auto)?;
            test(&[])
        }
    }
}
