//! The object loads and passes the verifier on this kernel.
use lbctl::dataplane::xdp::{LoadOptions, XdpDataplane};
use std::path::PathBuf;

/// A test's pin directory under bpffs, removed also when the test fails.
struct PinDir(PathBuf);
impl PinDir {
    /// `/sys/fs/bpf/lbctl-test-{name}-{pid}`.
    fn new(name: &str) -> Self {
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/lbctl-test-{name}-{}",
            std::process::id()
        )))
    }
}
impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
    use std::path::Path;

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
    let dir = PinDir::new("tails");
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

/// The node settings and the backend and VIP tables live in the programs'
/// global data, whose maps the loader fills with the object's initial value
/// (all zero) even when it reuses pinned ones. An adopting load must leave
/// the kept values in place, and a program still attached must never read
/// others meanwhile: a reader polls the pinned maps from before the second
/// load starts until it ends.
#[test]
fn an_adopting_load_keeps_the_global_data_the_running_program_reads() {
    use aya::maps::{Array, Map, MapData};
    use lb_common::{Backend, LbConfig, MAX_BACKENDS, VIP_TABLE_ENTRIES, VipEntry, backend_flags};
    use lbctl::dataplane::xdp::{BACKENDS_TABLE, NODE_PIN, VIP_TABLE};
    use lbctl::dataplane::{DesiredState, Forwarding, NodeSettings, Protocol};
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    use tests::fixtures::{RING, backend, vip, vip_state};

    type Backends = [Backend; MAX_BACKENDS as usize];
    type VipTable = [VipEntry; VIP_TABLE_ENTRIES as usize];
    /// The value of a pinned one-value array.
    fn value<V: aya::Pod>(pin: &std::path::Path) -> Box<V> {
        let map = MapData::from_pin(pin).expect("pinned map");
        let a: Array<MapData, V> = Array::try_from(Map::Array(map)).expect("array");
        Box::new(a.get(&0, 0).expect("value"))
    }

    let dir = PinDir::new("global");
    let opts = LoadOptions {
        ring_stride: RING,
        max_vips: 4,
        conn_table_size: 1024,
    };
    let mut first = XdpDataplane::load_pinned(opts, &dir.0).expect("first load");
    first
        .apply(&DesiredState {
            node: NodeSettings {
                iface_mac: [2, 0, 0, 0, 0, 7],
                mtu: 1480,
                ipip_src_v4: Some(Ipv4Addr::new(10, 9, 8, 7)),
                ipip_src_flow_bits_v4: 4,
                ..NodeSettings::default()
            },
            vips: vec![vip_state(
                vip("10.0.0.104", Some(80), Protocol::Tcp),
                Forwarding::Dr,
                vec![backend("10.0.3.1", 1, 100), backend("10.0.3.2", 2, 100)],
            )],
        })
        .expect("apply");
    let node_pin = dir.0.join(NODE_PIN);
    let backends_pin = dir.0.join(BACKENDS_TABLE.pin);
    let vips_pin = dir.0.join(VIP_TABLE.pin);
    let kept_node = *value::<LbConfig>(&node_pin);
    let kept_backends = value::<Backends>(&backends_pin);
    let kept_vips = value::<VipTable>(&vips_pin);
    assert_eq!(kept_node.iface_mac, [2, 0, 0, 0, 0, 7]);
    assert_eq!(kept_node.mtu, 1480);
    assert_ne!(
        kept_node.conn4_mask, 0,
        "the table mask is part of the settings"
    );
    let alive = kept_backends
        .iter()
        .filter(|b| b.flags & backend_flags::ALIVE != 0)
        .count();
    assert_eq!(alive, 2, "the backends are in the table");
    assert!(
        kept_vips.iter().any(|e| e.key.port == 80u16.to_be()),
        "the VIP is in the table"
    );
    drop(first);

    let loading = AtomicBool::new(true);
    let reading = AtomicBool::new(false);
    let (second, reads) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let open = |pin: &std::path::Path| MapData::from_pin(pin).expect("pinned map");
            let node: Array<MapData, LbConfig> =
                Array::try_from(Map::Array(open(&node_pin))).expect("array");
            let backends: Array<MapData, Backends> =
                Array::try_from(Map::Array(open(&backends_pin))).expect("array");
            let vips: Array<MapData, VipTable> =
                Array::try_from(Map::Array(open(&vips_pin))).expect("array");
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut reads = 0u64;
            while loading.load(Ordering::Relaxed) && Instant::now() < deadline {
                assert_eq!(node.get(&0, 0).expect("read"), kept_node, "read {reads}");
                let b = backends.get(&0, 0).expect("read");
                assert!(b[..] == kept_backends[..], "backends, read {reads}");
                let v = vips.get(&0, 0).expect("read");
                assert!(v[..] == kept_vips[..], "VIP table, read {reads}");
                reads += 1;
                reading.store(true, Ordering::Relaxed);
            }
            reads
        });
        // The second load starts once the reader reads (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reading.load(Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let second = XdpDataplane::load_pinned(opts, &dir.0);
        loading.store(false, Ordering::Relaxed);
        (
            second,
            reader.join().expect("the reader saw only the kept values"),
        )
    });
    let second = second.expect("second load");
    assert!(reads > 0);
    assert_eq!(*value::<LbConfig>(&node_pin), kept_node);
    assert!(value::<Backends>(&backends_pin)[..] == kept_backends[..]);
    assert!(value::<VipTable>(&vips_pin)[..] == kept_vips[..]);
    drop(second);
}

/// A backend id freed before a restart and handed out after the restart
/// adopted the maps gets a newer generation than the connection-table
/// entries of its earlier backend: a flow still recorded there is placed
/// again on its own VIP's ring, never sent to the id's new backend (here a
/// backend of another VIP).
#[test]
fn a_backend_id_reused_after_an_adopting_load_does_not_take_old_flows() {
    use lbctl::dataplane::{DesiredState, Forwarding, Protocol};
    use tests::fixtures::{
        CONN_TABLE_SIZE, Lab, RING, backend, backend_mac, client_packet, node, pin_to_cpu, verdict,
        vip, vip_state,
    };

    pin_to_cpu(0);
    let dir = PinDir::new("generation");
    let opts = LoadOptions {
        ring_stride: RING,
        max_vips: 4,
        conn_table_size: CONN_TABLE_SIZE,
    };
    let a = vip("10.0.0.104", Some(80), Protocol::Tcp);
    let b = vip("10.0.0.105", Some(80), Protocol::Tcp);
    let (x, y, z) = (
        backend("10.0.3.1", 1, 100),
        backend("10.0.3.2", 2, 100),
        backend("10.0.4.1", 3, 100),
    );
    let state = |vips| DesiredState { node: node(), vips };
    let flow = |sport| {
        client_packet(
            "192.0.2.7",
            sport,
            "10.0.0.104",
            80,
            Protocol::Tcp,
            None,
            b"x",
        )
    };
    let mut first = Lab {
        dp: XdpDataplane::load_pinned(opts, &dir.0).expect("first load"),
        state: state(Vec::new()),
    };
    first.apply(state(vec![vip_state(
        a,
        Forwarding::Dr,
        vec![x.clone(), y.clone()],
    )]));
    // A flow placed on x (its first packet records it in this CPU's table).
    let sport = (20000..20400)
        .find(|&p| {
            let (v, out) = first.run(&flow(p));
            v == verdict::TX && out[..6] == backend_mac(1)
        })
        .expect("a flow on x");
    let x_id = first.dp.backend_id(&a, x.addr).expect("x's id");
    first.apply(state(vec![vip_state(a, Forwarding::Dr, vec![y.clone()])]));
    let snapshot = first.dp.snapshot();
    drop(first);

    let mut second = Lab {
        dp: XdpDataplane::load_pinned(opts, &dir.0).expect("second load"),
        state: state(Vec::new()),
    };
    second.dp.restore(&snapshot).expect("restore");
    second.apply(state(vec![
        vip_state(a, Forwarding::Dr, vec![y.clone()]),
        vip_state(b, Forwarding::Dr, vec![z.clone()]),
    ]));
    assert_eq!(
        second.dp.backend_id(&b, z.addr),
        Some(x_id),
        "z takes the id x had"
    );
    let (v, out) = second.run(&flow(sport));
    assert_eq!(v, verdict::TX);
    assert_eq!(
        out[..6],
        backend_mac(2),
        "the flow goes to y, its VIP's backend"
    );
}
