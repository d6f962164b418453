//! `lbctl`: an XDP Layer-4 load balancer with VRRP failover and health checks.

fn main() {}
