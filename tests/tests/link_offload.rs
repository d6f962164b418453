//! The daemon's reading of receive VLAN offload (`SIOCETHTOOL`) against
//! what `ethtool` sets, on a veth in the test's own network namespace.

use lbctl::daemon::offload::rx_vlan_offload;
use tests::netns::{NetNs, unique_name};

/// `rx_vlan_offload(dev)` asked from inside `ns`.
fn read(ns: &NetNs, dev: &'static str) -> std::io::Result<bool> {
    ns.enter_thread(move || rx_vlan_offload(dev))
        .expect("enter the namespace")
        .join()
        .expect("thread")
        .expect("in the namespace")
}

#[test]
fn rx_vlan_offload_follows_ethtool() {
    let ns = NetNs::new(&unique_name("offload", "ns")).expect("netns");
    ns.run(&[
        "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb",
    ])
    .expect("veth");
    // veth starts with it on.
    assert!(read(&ns, "va").expect("read"));
    ns.run(&["ethtool", "-K", "va", "rxvlan", "off"])
        .expect("ethtool off");
    assert!(!read(&ns, "va").expect("read"));
    ns.run(&["ethtool", "-K", "va", "rxvlan", "on"])
        .expect("ethtool on");
    assert!(read(&ns, "va").expect("read"));
    let e = read(&ns, "nosuchdev").expect_err("no such device");
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
}
