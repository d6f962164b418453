//! Data planes: the XDP program's maps (`xdp`) and, as a fallback, kernel
//! IPVS. Both take a whole [`DesiredState`] and write only what changed.

pub mod ipvs;
pub mod state;
pub mod xdp;

pub use state::{
    BackendSpec, DesiredState, Forwarding, HashFields, L2NextHop, NodeSettings, Protocol, VipSpec,
    VipState,
};
