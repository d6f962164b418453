//! Backend health checks.
//!
//! - [`state`]: the pure rise/fall state machine of one backend;
//! - [`check`]: the checkers (TCP connect, HTTP GET, UDP, script), each a
//!   single async check with a hard timeout;
//! - [`runner`]: a tokio task per backend that runs its check periodically
//!   with jitter, feeds the state machine and reports transitions as
//!   [`HealthEvent`]s on a channel.
//!
//! The module does not know the config file: the caller maps its config onto
//! [`CheckSpec`] and picks the opaque `target` id carried by events.

pub mod check;
pub mod runner;
pub mod state;

pub use check::{CheckError, CheckKind, HttpCheck, ScriptCheck, SpecError, StatusSet, UdpCheck};
pub use runner::{CheckHandle, CheckSpec, CheckStats, HealthEvent, spawn_check};
pub use state::{HealthState, Status, Transition};
