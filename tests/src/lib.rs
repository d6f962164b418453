//! Shared harnesses for lbctl's integration tests: packet fixtures for the
//! XDP programs (BPF_PROG_TEST_RUN) and network-namespace topologies.

pub mod fixtures;
