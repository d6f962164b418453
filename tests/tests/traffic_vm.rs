//! The host half of the kernel-VM traffic test (`src/bin/traffic_guest.rs`
//! is the guest half, which says what it checks): real connections through
//! lbctl on Debian 12's kernel, on a VLAN interface (this kernel has no
//! 802.1Q, Debian's has), natively on a veth with DR, IPIP and `lbctl
//! decap`, and natively on a trunk with backends on other VLANs. Builds `lbctl` (with its eBPF object) and the guest statically,
//! boots Debian's kernel under qemu and asserts on the guest's markers.
//!
//! Needs the kernel and qemu that `tests/kernel-vm/setup.sh` unpacks (see
//! `tests::kernel_vm`; the test runs the setup itself when they are
//! missing and never skips).

use std::time::Duration;

use tests::kernel_vm::{KernelVm, assert_markers};

/// The whole boot, test and power-off (a few minutes here under TCG).
const VM_TIMEOUT: Duration = Duration::from_secs(900);

#[test]
fn connections_through_lbctl_in_a_debian_guest() {
    let vm = KernelVm::ensure();
    let console = vm.run_guest_with_lbctl("traffic", "traffic_guest", true, VM_TIMEOUT);
    assert_markers(
        &console,
        &[
            "TRAFFIC-VM: PASS vlan attach-generic",
            "TRAFFIC-VM: PASS vlan connections",
            "TRAFFIC-VM: PASS vlan counted",
            "TRAFFIC-VM: PASS vlan tagged",
            "TRAFFIC-VM: PASS vlan stop",
            "TRAFFIC-VM: PASS native attach-driver",
            "TRAFFIC-VM: PASS native dr connections",
            "TRAFFIC-VM: PASS native ipip connections",
            "TRAFFIC-VM: PASS native counted",
            "TRAFFIC-VM: PASS native stop",
            "TRAFFIC-VM: PASS trunk backend vlans",
            "TRAFFIC-VM: PASS trunk dr connections",
            "TRAFFIC-VM: PASS trunk ipip connections",
            "TRAFFIC-VM: PASS trunk tagged",
            "TRAFFIC-VM: PASS trunk stop",
            "TRAFFIC-VM: ALL PASS",
            "=== GUEST TEST END rc=0",
        ],
    );
}
