//! Shared harnesses for lbctl's integration tests: packet fixtures for the
//! XDP programs (BPF_PROG_TEST_RUN) and network-namespace topologies.
//!
//! - [`fixtures`]: packets in, packets and verdicts out, through the XDP programs;
//! - [`kernel_vm`]: booting Debian's kernel under qemu with static guest
//!   binaries (the IPVS and old-verifier tests);
//! - [`netns`]: network namespaces, veth pairs, bridges, running commands
//!   and in-process code inside a namespace, bounded waits;
//! - [`vrrp_node`]: reading the stats of the `vrrp-node` test binary.

pub mod fixtures;
pub mod kernel_vm;
pub mod netns;
pub mod vrrp_node;
