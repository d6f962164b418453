//! The host half of the kernel-VM IPVS test: builds `ipvs_guest` and
//! `lbctl` as static binaries (lbctl without its eBPF object: the guest runs
//! IPVS, and `dataplane = "auto"` must fall back), packs them into an initramfs with ipvsadm and Debian 6.1's IPVS
//! modules, boots the kernel under qemu (software emulation, a few seconds)
//! and asserts on the markers the guest prints on the serial console.
//!
//! Needs the kernel and qemu that `tests/kernel-vm/setup.sh` unpacks into
//! `$KERNEL_VM_DIR` (default `/var/tmp/kernel-vm`; `cargo xtask setup` runs
//! it). The test runs the setup itself when they are missing (idempotent,
//! cached) and fails if that does not produce them: it never skips.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The whole boot, test and power-off; about 30 s here under TCG.
const VM_TIMEOUT: Duration = Duration::from_secs(240);

fn scripts() -> PathBuf {
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

/// Builds `ipvs_guest` and `lbctl` statically (glibc with `+crt-static`: no
/// musl target here) in their own target directory and returns the
/// executables.
fn build_guest(target_dir: &Path) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "tests",
            "--bin",
            "ipvs_guest",
            "-p",
            "lbctl",
            "--bin",
            "lbctl",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--message-format=json",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("AYA_BUILD_SKIP", "1")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo");
    assert!(out.status.success(), "building the guest binaries failed");
    let text = String::from_utf8_lossy(&out.stdout);
    ["ipvs_guest", "lbctl"]
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

#[test]
fn ipvs_data_plane_in_a_debian_6_1_guest() {
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

    // target/<profile>/deps/ipvs_vm-HASH -> target/kernel-vm-guest
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe.ancestors().nth(3).map_or_else(
        || std::env::temp_dir().join("lbctl-kernel-vm"),
        Path::to_path_buf,
    );
    let built = build_guest(&target.join("kernel-vm-guest"));

    let work = target.join("kernel-vm-work");
    std::fs::create_dir_all(&work).expect("work dir");
    let mut bins = Vec::new();
    for exe in &built {
        let bin = work.join(exe.file_name().expect("executable name"));
        std::fs::copy(exe, &bin).expect("copying a guest binary");
        // Smaller initramfs; a missing `strip` only costs size.
        let _ = Command::new("strip").arg(&bin).status();
        bins.push(bin);
    }
    let initrd = work.join("ipvs-initrd.gz");
    let st = Command::new("sh")
        .arg(scripts().join("build-initramfs.sh"))
        .arg(dir.join("kcloud"))
        .arg(&kv)
        .arg(&initrd)
        .args(&bins)
        .status()
        .expect("running build-initramfs.sh");
    assert!(st.success(), "build-initramfs.sh failed");

    let mut child = Command::new("sh")
        .arg(scripts().join("run-vm.sh"))
        .arg(dir.join(format!("kcloud/boot/vmlinuz-{kv}")))
        .arg(&initrd)
        .env("KERNEL_VM_DIR", &dir)
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
        let left = VM_TIMEOUT.saturating_sub(start.elapsed());
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
    let text = console.join("\n");
    assert!(
        !timed_out,
        "the VM did not power off within {VM_TIMEOUT:?}:\n{text}"
    );
    for marker in [
        "IPVS-VM: PASS apply",
        "IPVS-VM: PASS idempotent",
        "IPVS-VM: PASS health",
        "IPVS-VM: PASS reload",
        "IPVS-VM: PASS restart",
        "IPVS-VM: PASS status",
        "IPVS-VM: PASS stop",
        "IPVS-VM: PASS tcp",
        "IPVS-VM: PASS drain-mh",
        "IPVS-VM: PASS daemon-apply",
        "IPVS-VM: PASS daemon-health",
        "IPVS-VM: PASS daemon-status",
        "IPVS-VM: PASS daemon-reload",
        "IPVS-VM: PASS daemon-bad-reload",
        "IPVS-VM: PASS daemon-crash",
        "IPVS-VM: PASS daemon-restart",
        "IPVS-VM: PASS daemon-rise",
        "IPVS-VM: PASS daemon-stop",
        "IPVS-VM: PASS daemon-auto-apply",
        "IPVS-VM: PASS daemon-auto-stop",
        "IPVS-VM: PASS daemon",
        "IPVS-VM: ALL PASS",
        "=== GUEST TEST END rc=0",
    ] {
        assert!(
            console.iter().any(|l| l.trim_end() == marker),
            "missing {marker:?} on the guest console"
        );
    }
    eprintln!("kernel VM run took {:?}", start.elapsed());
}
