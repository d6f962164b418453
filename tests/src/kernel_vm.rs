//! Host side of the kernel-VM tests: the Debian kernel and qemu that
//! `tests/kernel-vm/setup.sh` unpacks (into `$KERNEL_VM_DIR`, default
//! `/var/tmp/kernel-vm`; run by the tests themselves when missing, never
//! skipped), static guest binaries built with cargo, an initramfs, one boot
//! under qemu with the serial console collected line by line.
//!
//! The guest's `/init` (in `tests/kernel-vm`) runs `/bin/ipvs_guest` or
//! `/bin/xdp-guest.sh`, whichever the initramfs holds, then powers off.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// `tests/kernel-vm`: the scripts.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-vm")
}

fn vm_dir() -> PathBuf {
    std::env::var_os("KERNEL_VM_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp/kernel-vm"), PathBuf::from)
}

/// The kernel ABI setup.sh fetched (it records it in `kver`).
fn kver(dir: &Path) -> Option<String> {
    std::env::var("KERNEL_VM_KVER").ok().or_else(|| {
        std::fs::read_to_string(dir.join("kver"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
}

fn vm_ready(dir: &Path, kv: &str) -> bool {
    dir.join(format!("kcloud/boot/vmlinuz-{kv}")).is_file()
        && dir.join("qemu/usr/bin/qemu-system-x86_64").is_file()
}

/// The unpacked kernel and qemu.
#[derive(Debug, Clone)]
pub struct KernelVm {
    dir: PathBuf,
    kver: String,
}

impl KernelVm {
    /// The kernel VM, running `setup.sh` first when it is missing (idempotent,
    /// cached). Panics when that does not produce it.
    pub fn ensure() -> Self {
        let dir = vm_dir();
        if !kver(&dir).is_some_and(|kv| vm_ready(&dir, &kv)) {
            let st = Command::new("sh")
                .arg(scripts().join("setup.sh"))
                .env("KERNEL_VM_DIR", &dir)
                .status()
                .expect("running setup.sh");
            assert!(st.success(), "tests/kernel-vm/setup.sh failed");
        }
        let kv = kver(&dir).expect("setup.sh records the kernel version in kver");
        assert!(
            vm_ready(&dir, &kv),
            "kernel VM still missing in {} after tests/kernel-vm/setup.sh",
            dir.display()
        );
        KernelVm { dir, kver: kv }
    }

    /// Packs `files` (copied to the guest's `/bin`) into an initramfs at
    /// `out` with busybox, the tools and modules `build-initramfs.sh` adds,
    /// and `/init`.
    pub fn initramfs(&self, out: &Path, files: &[PathBuf]) {
        let st = Command::new("sh")
            .arg(scripts().join("build-initramfs.sh"))
            .arg(self.dir.join("kcloud"))
            .arg(&self.kver)
            .arg(out)
            .args(files)
            .status()
            .expect("running build-initramfs.sh");
        assert!(st.success(), "build-initramfs.sh failed");
    }

    /// Stages `files` (see [`stage`]) as `name`, packs them into an
    /// initramfs and boots it ([`KernelVm::boot`]): the console's lines.
    pub fn run(&self, name: &str, files: &[(PathBuf, &str)], limit: Duration) -> Vec<String> {
        let (work, staged) = stage(name, files);
        let initrd = work.join(format!("{name}-initrd.gz"));
        self.initramfs(&initrd, &staged);
        self.boot(&initrd, limit)
    }

    /// Builds the guest program `guest` (a binary of this `tests` package)
    /// and `lbctl` statically, lbctl with its eBPF object when `with_ebpf`,
    /// and runs them in the VM as `name` (see [`Self::run`]); `/init` starts
    /// the guest program.
    pub fn run_guest_with_lbctl(
        &self,
        name: &str,
        guest: &str,
        with_ebpf: bool,
        limit: Duration,
    ) -> Vec<String> {
        let built = build_static(
            &[
                "build", "-p", "tests", "--bin", guest, "-p", "lbctl", "--bin", "lbctl",
            ],
            &[("AYA_BUILD_SKIP", if with_ebpf { "0" } else { "1" })],
            &[guest, "lbctl"],
        );
        let named: Vec<(_, &str)> = built.into_iter().zip([guest, "lbctl"]).collect();
        self.run(name, &named, limit)
    }

    /// Boots `initrd` and returns the console's lines, each also printed as
    /// `guest| ...`. Panics when the guest does not power off within `limit`.
    pub fn boot(&self, initrd: &Path, limit: Duration) -> Vec<String> {
        let mut child = Command::new("sh")
            .arg(scripts().join("run-vm.sh"))
            .arg(self.dir.join(format!("kcloud/boot/vmlinuz-{}", self.kver)))
            .arg(initrd)
            .env("KERNEL_VM_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting qemu");
        let stdout = child.stdout.take().expect("qemu stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        let mut console = Vec::new();
        let mut timed_out = false;
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    println!("guest| {line}");
                    console.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
            }
        }
        // run-vm.sh execs qemu, so this is qemu's pid.
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            !timed_out,
            "the VM did not power off within {limit:?}:\n{}",
            console.join("\n")
        );
        eprintln!("kernel VM run took {:?}", start.elapsed());
        console
    }
}

/// Runs `cargo ARGS --target x86_64-unknown-linux-gnu --message-format=json
/// --target-dir DIR` for static executables (glibc with `+crt-static`: no
/// musl target here), with `env` added, and returns the executables of the
/// targets named `names`, in that order.
pub fn build_static(args: &[&str], env: &[(&str, &str)], names: &[&str]) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .args([
            "--target",
            "x86_64-unknown-linux-gnu",
            "--message-format=json",
            "--target-dir",
        ])
        .arg(guest_target_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running cargo");
    assert!(out.status.success(), "building the guest binaries failed");
    let text = String::from_utf8_lossy(&out.stdout);
    names
        .iter()
        .map(|name| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["target"]["name"] == *name)
                .find_map(|v| v["executable"].as_str().map(PathBuf::from))
                .unwrap_or_else(|| panic!("cargo reported no {name} executable"))
        })
        .collect()
}

/// `target/kernel-vm-guest` next to the running test's own target dir
/// (`target/<profile>/deps/TEST-HASH`).
fn guest_target_dir() -> PathBuf {
    target_dir().join("kernel-vm-guest")
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors().nth(3).map_or_else(
        || std::env::temp_dir().join("lbctl-kernel-vm"),
        Path::to_path_buf,
    )
}

/// A work directory for `name` under the target dir, with each file copied
/// into it under the name the guest knows it by (test executables carry a
/// hash) and stripped (a smaller initramfs; a missing `strip` only costs
/// size). Returns the copies.
pub fn stage(name: &str, files: &[(PathBuf, &str)]) -> (PathBuf, Vec<PathBuf>) {
    let work = target_dir().join(format!("kernel-vm-{name}"));
    std::fs::create_dir_all(&work).expect("work dir");
    let mut out = Vec::new();
    for (f, guest_name) in files {
        let to = work.join(guest_name);
        std::fs::copy(f, &to).expect("copying a guest file");
        let _ = Command::new("strip")
            .arg(&to)
            .stderr(Stdio::null())
            .status();
        out.push(to);
    }
    (work, out)
}

/// Panics unless every marker is a whole line of the console.
pub fn assert_markers(console: &[String], markers: &[&str]) {
    for marker in markers {
        assert!(
            console.iter().any(|l| l.trim_end() == *marker),
            "missing {marker:?} on the guest console"
        );
    }
}
