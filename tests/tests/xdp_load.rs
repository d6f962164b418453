//! The object loads and passes the verifier on this kernel.
use lbctl::dataplane::xdp::{LoadOptions, XdpDataplane};

#[test]
fn object_loads_and_verifies() {
    let dp = XdpDataplane::load(LoadOptions::default()).expect("load");
    drop(dp);
}
