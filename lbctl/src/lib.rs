//! lbctl: an XDP Layer-4 load balancer with VRRP failover and backend health checks.
//!
//! One module per concern: `config` (lb.toml), `maglev` (consistent hashing),
//! `health` (checks and rise/fall), `vrrp` (RFC 5798/3768), `dataplane`
//! (XDP maps, IPVS fallback), `daemon` (`lbctl run`: reconciler, neighbours,
//! pinning), `api` (the control socket), `import` (keepalived.conf to lb.toml)
//! and `cli` (the command line).

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod import;
pub mod maglev;
pub mod vrrp;
