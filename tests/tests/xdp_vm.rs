//! The host half of the kernel-VM XDP test: Debian 12's own kernel (6.1)
//! has an older BPF verifier than the 6.18 kernel the project is developed
//! on (it loses a register's bounds after a byte swap or an OR, which once
//! made `lb` fail to load there). This test builds `lbctl` (with its eBPF
//! object) and the packet-fixture test binary statically, boots that kernel
//! under qemu with `tests/kernel-vm/xdp-guest.sh` as the guest's test, and
//! asserts on its markers: `lb` attaches in driver mode from `lbctl run`,
//! `lb` and the programs it tail-calls (`lb_rare`, `lb_too_big`) each
//! having used at most 90% of the verifier's instruction limit there,
//! `decap` attaches, and every fixture of `xdp_fixtures.rs` passes there.
//!
//! Needs the kernel and qemu that `tests/kernel-vm/setup.sh` unpacks (see
//! `tests::kernel_vm`; the test runs the setup itself when they are
//! missing and never skips). Software emulation makes the verifier slow:
//! the run takes about five minutes.

use std::time::Duration;

use tests::kernel_vm::{KernelVm, assert_markers, build_static, scripts};

/// The whole boot, fixtures and power-off (about 5 minutes here under TCG).
const VM_TIMEOUT: Duration = Duration::from_secs(1200);

#[test]
fn xdp_programs_on_a_debian_6_1_kernel() {
    let vm = KernelVm::ensure();
    let lbctl = build_static(
        &["build", "-p", "lbctl", "--bin", "lbctl"],
        &[("AYA_BUILD_SKIP", "0")],
        &["lbctl"],
    );
    let fixtures = build_static(
        &["test", "--no-run", "-p", "tests", "--test", "xdp_fixtures"],
        &[("AYA_BUILD_SKIP", "0")],
        &["xdp_fixtures"],
    );
    let named: Vec<(_, &str)> = lbctl
        .into_iter()
        .map(|p| (p, "lbctl"))
        .chain(fixtures.into_iter().map(|p| (p, "xdp_fixtures")))
        .chain([(scripts().join("xdp-guest.sh"), "xdp-guest.sh")])
        .collect();
    let console = vm.run("xdp", &named, VM_TIMEOUT);
    assert_markers(
        &console,
        &[
            "XDP-VM: PASS attach-driver",
            "XDP-VM: PASS verifier-headroom",
            "XDP-VM: PASS daemon-stop",
            "XDP-VM: PASS decap-attach",
            "XDP-VM: PASS decap-stop",
            "XDP-VM: PASS fixtures",
            "XDP-VM: ALL PASS",
            "=== GUEST TEST END rc=0",
        ],
    );
}
