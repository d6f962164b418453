//! The host half of the kernel-VM VLAN test (`src/bin/vlan_guest.rs` is the
//! guest half, which says what it checks): this kernel has no 802.1Q,
//! Debian's has. Builds `lbctl` (with its eBPF object) and the guest
//! statically, boots Debian's kernel under qemu and asserts on the guest's
//! markers.
//!
//! Needs the kernel and qemu that `tests/kernel-vm/setup.sh` unpacks (see
//! `tests::kernel_vm`; the test runs the setup itself when they are
//! missing and never skips).

use std::time::Duration;

use tests::kernel_vm::{KernelVm, assert_markers, build_static};

/// The whole boot, test and power-off (about a minute here under TCG).
const VM_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn dr_on_a_vlan_interface_in_a_debian_guest() {
    let vm = KernelVm::ensure();
    let built = build_static(
        &[
            "build",
            "-p",
            "tests",
            "--bin",
            "vlan_guest",
            "-p",
            "lbctl",
            "--bin",
            "lbctl",
        ],
        &[("AYA_BUILD_SKIP", "0")],
        &["vlan_guest", "lbctl"],
    );
    let named: Vec<(_, &str)> = built.into_iter().zip(["vlan_guest", "lbctl"]).collect();
    let console = vm.run("vlan", &named, VM_TIMEOUT);
    assert_markers(
        &console,
        &[
            "VLAN-VM: PASS attach-generic",
            "VLAN-VM: PASS connections",
            "VLAN-VM: PASS counted",
            "VLAN-VM: PASS tagged",
            "VLAN-VM: PASS stop",
            "VLAN-VM: ALL PASS",
            "=== GUEST TEST END rc=0",
        ],
    );
}
