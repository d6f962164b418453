//! Backend health checks.

pub mod state;
