//! `cargo xtask setup`: installs every prerequisite on a fresh Debian 12
//! machine, idempotently, saying what it does. A second run changes nothing
//! and finishes in seconds.
//!
//! The eBPF crate needs a compiler that can build `core` for
//! `bpfel-unknown-none` and a `bpf-linker` built against the same LLVM:
//! - `debian` path (offline machines): Debian's rustc-web 1.96 + rust-web-src,
//!   linked as the rustup toolchain `lbctl-ebpf`; bpf-linker against llvm-22.
//! - `nightly` path (rustup with internet): nightly + rust-src, linked as
//!   `lbctl-ebpf`; bpf-linker with its default LLVM.
//!
//! `auto` takes the Debian path when apt can install rustc-web, else nightly.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{run, run_ok};

/// The rustup toolchain name lbctl's build script looks for.
pub const TOOLCHAIN: &str = "lbctl-ebpf";
const LLVM_MAJOR: &str = "22";

/// Debian packages: the eBPF toolchain, and the tools tests and the demo use.
const TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    "llvm-22-dev",
];
const TOOL_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "keepalived",
    "tcpdump",
    "tshark",
    "bpftool",
    "ipvsadm",
    "curl",
    "python3",
    // systemd-analyze: the shipped unit file is verified
    "systemd",
    // kernel VM harness (the IPVS, old-kernel XDP and traffic tests under qemu)
    "busybox-static",
    "cpio",
    "kmod",
    "gzip",
];

/// Which eBPF toolchain to set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolchainChoice {
    /// Debian's rustc-web when apt has it, else rustup nightly.
    Auto,
    /// Debian's rustc-web + rust-web-src + llvm-22 (works offline).
    Debian,
    /// rustup nightly with rust-src (needs internet).
    Nightly,
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, pkgs: &[&str]) -> Result<()> {
        let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
        if missing.is_empty() {
            println!("ok: apt packages present: {}", pkgs.join(" "));
            return Ok(());
        }
        if !self.updated {
            println!("run: apt-get update");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        println!("run: apt-get install {}", missing.join(" "));
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing))
    }

    fn can_install(&mut self, pkg: &str) -> bool {
        if installed(pkg) {
            return true;
        }
        if !self.updated && run(Command::new("apt-get").args(["update", "-q"])).is_ok() {
            self.updated = true;
        }
        Command::new("apt-cache")
            .args(["show", pkg])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    }
}

fn toolchains() -> String {
    Command::new("rustup")
        .args(["toolchain", "list", "-v"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Path a toolchain name is linked to, from `rustup toolchain list -v`.
fn toolchain_path(name: &str) -> Option<String> {
    toolchains().lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(name)).then(|| parts.last().unwrap_or_default().to_owned())
    })
}

fn link_toolchain(path: &str) -> Result<()> {
    match toolchain_path(TOOLCHAIN) {
        Some(p) if p == path => {
            println!("ok: rustup toolchain {TOOLCHAIN} -> {path}");
            return Ok(());
        }
        Some(p) => {
            println!("run: rustup toolchain uninstall {TOOLCHAIN} (was {p})");
            run(Command::new("rustup").args(["toolchain", "uninstall", TOOLCHAIN]))?;
        }
        None => {}
    }
    println!("run: rustup toolchain link {TOOLCHAIN} {path}");
    run(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, path]))
}

/// Whether `bpf-linker` is installed, and the major version of the shared
/// libLLVM it links (None for a statically linked one).
fn bpf_linker_llvm() -> Option<Option<String>> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let path = run_ok(Command::new("sh").args(["-c", "command -v bpf-linker"]))?;
    let ldd = run_ok(Command::new("ldd").arg(path.trim())).unwrap_or_default();
    Some(
        ldd.split("libLLVM.so.")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .map(str::to_owned),
    )
}

fn install_bpf_linker_debian() -> Result<()> {
    if bpf_linker_llvm().flatten().as_deref() == Some(LLVM_MAJOR) {
        println!("ok: bpf-linker built against LLVM {LLVM_MAJOR}");
        return Ok(());
    }
    println!("run: cargo install bpf-linker --no-default-features --features llvm-{LLVM_MAJOR}");
    run(Command::new("cargo")
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
        .args([
            "install",
            "--locked",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ]))
    .or_else(|_| {
        // --locked can pin an llvm-sys that does not match; retry unlocked.
        run(Command::new("cargo")
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ]))
    })
}

fn setup_debian(apt: &mut Apt) -> Result<()> {
    apt.install(TOOLCHAIN_PACKAGES)?;
    if !std::path::Path::new("/usr/lib/rustlib/src/rust/library/core").exists() {
        bail!("rust-web-src is installed but /usr/lib/rustlib/src/rust/library/core is missing");
    }
    link_toolchain("/usr")?;
    install_bpf_linker_debian()
}

fn setup_nightly() -> Result<()> {
    let has_src = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("rust-src"));
    if has_src {
        println!("ok: rustup nightly with rust-src");
    } else {
        println!("run: rustup toolchain install nightly --component rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--component",
            "rust-src",
        ]))?;
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("rustc --print sysroot")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    link_toolchain(&sysroot)?;
    if bpf_linker_llvm().is_some() {
        println!("ok: bpf-linker installed");
        Ok(())
    } else {
        println!("run: cargo install bpf-linker");
        run(Command::new("cargo").args(["install", "bpf-linker"]))
    }
}

fn mount_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        println!("ok: bpffs mounted at /sys/fs/bpf");
        return Ok(());
    }
    println!("run: mount -t bpf bpf /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// Runs the whole setup.
pub fn setup(choice: ToolchainChoice) -> Result<()> {
    if run_ok(Command::new("id").arg("-u")).is_none_or(|o| o.trim() != "0") {
        bail!("setup installs packages and mounts bpffs: run it as root");
    }
    let mut apt = Apt { updated: false };
    apt.install(TOOL_PACKAGES)?;
    let choice = match choice {
        ToolchainChoice::Auto if apt.can_install("rustc-web") => ToolchainChoice::Debian,
        ToolchainChoice::Auto => ToolchainChoice::Nightly,
        c => c,
    };
    println!("eBPF toolchain: {choice:?}");
    match choice {
        ToolchainChoice::Debian => setup_debian(&mut apt)?,
        ToolchainChoice::Nightly => setup_nightly()?,
        ToolchainChoice::Auto => unreachable!("resolved above"),
    }
    mount_bpffs()?;
    // Debian's 6.1 kernel + qemu, unpacked (not installed) for the IPVS tests.
    let vm = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/kernel-vm/setup.sh");
    println!("run: tests/kernel-vm/setup.sh (kernel VM for the IPVS tests)");
    run(Command::new("sh").arg(vm))?;
    println!("setup complete");
    Ok(())
}
