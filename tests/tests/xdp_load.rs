//! The object loads and passes the verifier on this kernel.
use lbctl::dataplane::xdp::{LoadOptions, XdpDataplane};

#[test]
fn object_loads_and_verifies() {
    let dp = XdpDataplane::load(LoadOptions::default()).expect("load");
    drop(dp);
}

/// An apply refused for want of backend ids hands back the ids it took, so
/// the daemon's retry (or a reload back) succeeds and later applies still
/// have every id. Backend ids are per (VIP, backend) and a VIP's new
/// backends get theirs before its old ones are released, so replacing all
/// 2100 backends of a VIP needs 4200 ids at once (4095 exist).
#[test]
fn a_refused_apply_loses_no_backend_ids() {
    use lbctl::dataplane::xdp::XdpError;
    use lbctl::dataplane::{
        BackendSpec, DesiredState, Forwarding, HashFields, NodeSettings, Protocol, VipSpec,
        VipState,
    };
    use std::net::{IpAddr, Ipv4Addr};

    const N: u32 = 2100;
    let state = |first: u32, n: u32| DesiredState {
        node: NodeSettings {
            iface_mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            ..NodeSettings::default()
        },
        vips: vec![VipState {
            spec: VipSpec {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
                port: Some(80),
                protocol: Protocol::Tcp,
            },
            forwarding: Forwarding::Dr,
            hash: HashFields::default(),
            ring_size: 4099,
            active: true,
            debug: false,
            backends: (first..first + n)
                .map(|i| BackendSpec {
                    addr: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)),
                    weight: 1,
                    healthy: true,
                    mac: Some([2, 0, 0, 0, 0, 2]),
                    vlan: 0,
                })
                .collect(),
        }],
    };
    let mut dp = XdpDataplane::load(LoadOptions {
        ring_stride: 4099,
        max_vips: 4,
        conn_table_size: 1024,
    })
    .expect("load");
    dp.apply(&state(0, N)).expect("first apply");
    for attempt in 0..3 {
        match dp.apply(&state(N, N)) {
            Err(XdpError::Capacity(m)) => assert!(m.contains("backends"), "{m}"),
            other => panic!("attempt {attempt}: expected a capacity error, got {other:?}"),
        }
    }
    // The running state applies again, and the ids are all there: 1995
    // new backends fit beside the 2100 (4095 in all).
    dp.apply(&state(0, N)).expect("the running state");
    dp.apply(&state(0, 4095)).expect("every id free once more");
}

/// The program array `lb` tail-calls through is pinned with the other maps:
/// while it is pinned its slots keep `lb_too_big` and `lb_rare` (a kept data
/// plane with no daemon still answers too-big packets and balances ICMP
/// errors and fragments), and a daemon that adopts the pins puts its own
/// programs there.
#[test]
fn pinned_tail_slot_outlives_its_loader_and_takes_the_next_program() {
    use lbctl::dataplane::xdp::programs::TAIL_SLOTS;
    use std::path::{Path, PathBuf};

    /// Removes the test's pin directory, also when the test fails.
    struct PinDir(PathBuf);
    impl Drop for PinDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let slot = |dir: &Path, key: u32| -> u32 {
        let key = key.to_le_bytes().map(|b| b.to_string());
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "lookup", "pinned"])
            .arg(dir.join("LB_TAILS"))
            .arg("key")
            .args(&key)
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let bytes: Vec<u8> = v["value"]
            .as_array()
            .expect("value bytes")
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().expect("byte").trim_start_matches("0x"), 16))
            .collect::<Result<_, _>>()
            .expect("hex");
        u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
    };
    let dir = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/lbctl-test-tails-{}",
        std::process::id()
    )));
    let opts = LoadOptions {
        ring_stride: 251,
        max_vips: 4,
        conn_table_size: 1024,
    };
    // What each slot should hold: (slot, program id), for every slot.
    let ids_of = |dp: &XdpDataplane| {
        TAIL_SLOTS.map(|(key, name)| {
            (
                key,
                dp.program(name).expect(name).info().expect("info").id(),
            )
        })
    };
    let slots = |dir: &Path| TAIL_SLOTS.map(|(key, _)| (key, slot(dir, key)));

    let first = XdpDataplane::load_pinned(opts, &dir.0).expect("first load");
    let first_ids = ids_of(&first);
    assert_eq!(slots(&dir.0), first_ids);
    drop(first);
    assert_eq!(slots(&dir.0), first_ids, "a pinned slot was emptied");

    let second = XdpDataplane::load_pinned(opts, &dir.0).expect("second load");
    let second_ids = ids_of(&second);
    for ((_, old), (_, new)) in first_ids.iter().zip(&second_ids) {
        assert_ne!(old, new);
    }
    assert_eq!(
        slots(&dir.0),
        second_ids,
        "the adopting load left an old program"
    );
}
