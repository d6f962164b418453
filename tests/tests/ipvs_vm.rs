//! The host half of the kernel-VM IPVS test: builds `ipvs_guest` and
//! `lbctl` as static binaries (lbctl without its eBPF object: the guest runs
//! IPVS, and `dataplane = "auto"` must fall back), packs them into an initramfs with ipvsadm and Debian 6.1's IPVS
//! modules, boots the kernel under qemu (software emulation, a few seconds)
//! and asserts on the markers the guest prints on the serial console.
//!
//! Needs the kernel and qemu that `tests/kernel-vm/setup.sh` unpacks (see
//! `tests::kernel_vm`; the test runs the setup itself when they are
//! missing and never skips).

use std::time::Duration;

use tests::kernel_vm::{KernelVm, assert_markers};

/// The whole boot, test and power-off; about 30 s here under TCG.
const VM_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn ipvs_data_plane_in_a_debian_6_1_guest() {
    let vm = KernelVm::ensure();
    let console = vm.run_guest_with_lbctl("ipvs", "ipvs_guest", false, VM_TIMEOUT);
    assert_markers(
        &console,
        &[
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
            "IPVS-VM: PASS keepalived-ipvs",
            "IPVS-VM: PASS keepalived-stop",
            "IPVS-VM: PASS lbctl-imported-ipvs",
            "IPVS-VM: PASS keepalived-import",
            "IPVS-VM: ALL PASS",
            "=== GUEST TEST END rc=0",
        ],
    );
}
