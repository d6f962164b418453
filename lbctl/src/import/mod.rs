//! Configurations of other tools turned into lb.toml.

pub mod keepalived;
