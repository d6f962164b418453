//! Shared helpers of the project's end-to-end tests.
//!
//! - [`netns`]: network namespaces, veth pairs, bridges, running commands
//!   and in-process code inside a namespace, bounded waits.

pub mod netns;
