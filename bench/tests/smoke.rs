//! The rig's smoke test: the eBPF generator writes the frames the user-space
//! mirror predicts, the cost wrapper restores exactly the packet a fresh run
//! would see, and `--quick` runs end to end with a complete report.
//! Needs root (CI runs as root). No speed is asserted.

use std::{net::IpAddr, process::Command};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use bench::{
    flows::{self, L4},
    lab::{self, BenchObject},
};
use lbctl::dataplane::{Forwarding, xdp::programs};

/// One test run: verdict and output frame.
fn run(prog: &Xdp, input: &[u8], repeat: u32) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; 512];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .unwrap();
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// The cost wrapper's restore is exact: after thousands of repeats through
/// `bench_wrap` (DR and IPIP, IPv4 and IPv6, so head growth is undone), the
/// last run's output equals that of one fresh run of `lb` on one of the
/// flows' frames.
#[test]
fn wrapped_repeats_see_fresh_packets() {
    let mut b = BenchObject::load().expect("load lb-bench (needs root)");
    let flows_n = 1024u32;
    let repeat = 3 * flows_n + 17;
    for fwd in [Forwarding::Dr, Forwarding::Ipip] {
        let dp = lab::dataplane(lb_common::DEFAULT_CONN_TABLE_SIZE, &lab::desired(fwd)).unwrap();
        for dst in [lab::VIP4, lab::VIP6] {
            let t = lab::template(L4::Tcp, dst).unwrap();
            b.set_traffic(std::slice::from_ref(&t), flows_n).unwrap();
            let lb = dp.program(programs::LB).unwrap();
            let fd = lb.fd().unwrap().try_clone().unwrap();
            b.jump.set(0, &fd, 0).unwrap();
            let (verdict, wrapped) = run(b.program("bench_wrap").unwrap(), &t.frame, repeat);
            // The wrapper's packet counter carries over from earlier cases, so
            // the last flow is not known here: the output must be that of a
            // fresh run of one of the flows (a restore that left anything of
            // the previous run behind, e.g. an outer header, matches none).
            let fresh: Vec<(u32, Vec<u8>)> = (0..flows_n)
                .map(|flow| {
                    let mut f = t.frame.clone();
                    flows::apply_flow(&mut f, t.kind(), flow);
                    run(lb, &f, 1)
                })
                .collect();
            assert!(
                fresh
                    .iter()
                    .any(|(v, out)| *v == verdict && *out == wrapped),
                "{fwd:?} {dst}: output after {repeat} wrapped repeats matches no fresh run"
            );
            assert_eq!(verdict, 3, "{fwd:?} {dst}: XDP_TX");
        }
    }
}

#[test]
fn generator_frames_match_the_user_space_mirror() {
    let mut b = BenchObject::load().expect("load lb-bench (needs root)");
    let templates = lab::traffic("mix").unwrap();
    b.set_traffic(&templates, 64).unwrap();
    let generator = b.program("bench_gen").unwrap();
    // The generator's counter starts at 0 in a fresh object.
    for c in 0..300u64 {
        let (ti, flow) = flows::pick(c, 2, flows::flow_mask(64));
        let t = &templates[ti as usize];
        let mut want = t.frame.clone();
        flows::apply_flow(&mut want, t.kind(), flow);
        // Input: the longest template, scribbled over (what a recycled page holds).
        let input = vec![0xeeu8; flows::LEN_V6];
        let (verdict, out) = run(generator, &input, 1);
        assert_eq!(verdict, 3, "XDP_TX");
        // Non-live test runs keep the input length; only the template's bytes count.
        assert_eq!(&out[..want.len()], &want[..], "counter {c} ({})", t.name());
        let (src, sport) = flows::verify_frame(&out[..want.len()]).unwrap();
        assert_eq!(sport, flows::flow_fields(flow).0);
        assert_eq!(src.is_ipv6(), matches!(t.dst, IpAddr::V6(_)));
    }
}

#[test]
fn quick_mode_reports_every_variant_and_path() {
    let out = std::env::temp_dir().join(format!("lbb-smoke-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "--out"])
        .arg(&out)
        .status()
        .expect("run the bench binary");
    assert!(status.success(), "bench --quick failed");
    let json = std::fs::read_to_string(out.join("report.json")).unwrap();
    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();

    let live = v["live"].as_array().unwrap();
    let ids: Vec<&str> = live.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["reflect", "dr", "ipip", "ipip_miss", "kernel"]);
    for r in live {
        assert!(r["mpps"]["median"].as_f64().unwrap() > 0.0, "{r}");
        assert!(!r["samples"].as_array().unwrap().is_empty());
    }
    let miss = live.iter().find(|r| r["id"] == "ipip_miss").unwrap();
    assert!(miss["conn_hit_share"].as_f64().unwrap() < 0.01, "{miss}");

    let cost = v["cost"].as_array().unwrap();
    assert_eq!(cost.len(), bench::cost::CostLab::paths().len());
    for r in cost {
        assert!(r["ns"]["median"].as_f64().unwrap() > 0.0, "{r}");
        let id = r["id"].as_str().unwrap();
        if id.contains("_hit_") {
            assert!(r["conn_hit_share"].as_f64().unwrap() > 0.99, "{r}");
        }
        if id.contains("_miss_") {
            assert!(r["conn_hit_share"].as_f64().unwrap() < 0.01, "{r}");
        }
    }
    let c = &v["control"];
    assert_eq!(c["maglev_build"].as_array().unwrap().len(), 3);
    assert_eq!(c["remap"].as_array().unwrap().len(), 2);
    assert_eq!(c["switches"].as_array().unwrap().len(), 2);
    assert_eq!(v["targets"].as_array().unwrap().len(), 7);
    assert!(svg.starts_with("<svg"));

    // Nothing left behind.
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("lbb-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let _ = std::fs::remove_dir_all(&out);
}
