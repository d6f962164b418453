//! Test and demo aid: attaches lb-ebpf's `pass` program (XDP_PASS) to an
//! interface until SIGINT/SIGTERM.
//!
//! On veth, a frame sent with XDP_TX arrives at the peer only if the peer
//! runs an XDP program of its own (shared/docs/netns-testing.md). Real NICs do
//! not need this; namespace topologies do, on the LB's peer port.
//!
//! Usage: `xdp-pass IFACE [IFACE...]`

use anyhow::{Context as _, Result, bail};
use lbctl::dataplane::xdp::{AttachMode, LoadOptions, XdpDataplane, programs};
use nix::sys::signal::{SigSet, Signal};

fn main() -> Result<()> {
    let ifaces: Vec<String> = std::env::args().skip(1).collect();
    if ifaces.is_empty() {
        bail!("usage: xdp-pass IFACE [IFACE...]");
    }
    // Block the signals before anything else so sigwait gets them.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("blocking signals")?;
    let mut dp = XdpDataplane::load(LoadOptions::minimal()).context("loading lb-ebpf")?;
    for iface in &ifaces {
        let mode = dp
            .attach(programs::PASS, iface, AttachMode::Auto)
            .with_context(|| format!("attaching pass to {iface}"))?;
        println!("xdp-pass: attached to {iface} ({mode:?})");
    }
    let sig = set.wait().context("waiting for a signal")?;
    println!("xdp-pass: {sig:?}, detaching");
    dp.detach_all();
    Ok(())
}
