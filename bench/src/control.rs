//! Control-plane figures: Maglev build time and disruption, table-switch
//! latency, and backend death to removal.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{TestRun as _, TestRunOptions};
use lb_common::{ConnKey, flow_hash, ring_index};
use lbctl::{
    dataplane::{
        BackendSpec, DesiredState, Forwarding, HashFields, Protocol, VipSpec, VipState,
        xdp::{XdpDataplane, programs},
    },
    health::{CheckKind, CheckSpec, Status, spawn_check},
    maglev::{self, MaglevBackend},
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    flows::{L4, Template},
    lab, sys,
};

/// Maglev table size measured (the data plane's default).
pub const TABLE: u32 = lb_common::DEFAULT_RING_SIZE;

fn maglev_backends(n: u32) -> Vec<MaglevBackend> {
    (1..=n)
        .map(|i| {
            let a = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 80));
            MaglevBackend::new(i, MaglevBackend::socket_key(a), 1)
        })
        .collect()
}

/// Build time of a [`TABLE`]-entry table with `n` backends, in ms.
///
/// # Errors
/// Maglev errors.
pub fn maglev_build_ms(n: u32) -> anyhow::Result<f64> {
    let b = maglev_backends(n);
    let t = Instant::now();
    let table = maglev::build_table(&b, TABLE)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    std::hint::black_box(table);
    Ok(ms)
}

/// Disruption when one of `n` backends leaves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Remap {
    /// Backends before.
    pub backends: u32,
    /// Share of table entries (= uniformly hashed new flows) that change backend.
    pub remapped: f64,
    /// The unavoidable share: the leaving backend's entries (about 1/n).
    pub ideal: f64,
    /// Share moved between two surviving backends (Maglev keeps it small).
    pub between_survivors: f64,
}

/// Removes the middle backend of `n` and compares the tables.
///
/// # Errors
/// Maglev errors.
pub fn remap(n: u32) -> anyhow::Result<Remap> {
    let all = maglev_backends(n);
    let gone = n / 2 + 1;
    let rest: Vec<MaglevBackend> = all.iter().filter(|b| b.id != gone).cloned().collect();
    let old = maglev::build_table(&all, TABLE)?;
    let new = maglev::build_table(&rest, TABLE)?;
    let len = old.len() as f64;
    let ideal = old.iter().filter(|&&id| id == gone).count() as f64 / len;
    let between = old
        .iter()
        .zip(&new)
        .filter(|(o, n)| **o != gone && o != n)
        .count() as f64
        / len;
    Ok(Remap {
        backends: n,
        remapped: maglev::remap_fraction(&old, &new),
        ideal,
        between_survivors: between,
    })
}

/// One table switch or backend removal, timed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SwitchSample {
    /// Health detection (close of the listener to the Down event), ms; 0 for a plain switch.
    pub detect_ms: f64,
    /// `apply` of the new desired state, ms.
    pub apply_ms: f64,
    /// From the start (the switch request, or the backend's death) until a
    /// test-run packet of a flow on the removed backend goes elsewhere, ms.
    pub visible_ms: f64,
}

const CP_BACKENDS: u8 = 100;

fn cp_vip() -> VipSpec {
    VipSpec {
        addr: lab::addr(lab::VIP4),
        port: Some(lab::TCP_PORT),
        protocol: Protocol::Tcp,
    }
}

fn cp_state(dead: Option<u8>) -> DesiredState {
    let backends = (1..=CP_BACKENDS)
        .map(|i| BackendSpec {
            addr: IpAddr::from([10, 203, 0, i]),
            weight: 1,
            healthy: Some(i) != dead,
            mac: Some(lab::backend_mac(i)),
            vlan: 0,
        })
        .collect();
    DesiredState {
        node: lab::node(),
        vips: vec![VipState {
            spec: cp_vip(),
            forwarding: Forwarding::Dr,
            hash: HashFields::default(),
            ring_size: TABLE,
            active: true,
            debug: false,
            backends,
        }],
    }
}

/// A data plane for the control-plane figures (one VIP, 100 backends, DR).
pub struct SwitchLab {
    dp: XdpDataplane,
}

impl SwitchLab {
    /// Loads and programs it.
    ///
    /// # Errors
    /// Load or apply errors.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dp: lab::dataplane(lib_conn_table(), &cp_state(None))?,
        })
    }

    /// A flow (source port) the live table sends to backend `n`.
    fn flow_on(&self, n: u8) -> anyhow::Result<(u16, Template)> {
        let spec = cp_vip();
        let id = self
            .dp
            .backend_id(&spec, IpAddr::from([10, 203, 0, n]))
            .ok_or_else(|| anyhow!("backend {n} not programmed"))?;
        let ring = self.dp.live_ring(&spec).ok_or_else(|| anyhow!("no ring"))?;
        let base = lab::template(L4::Tcp, lab::VIP4)?;
        for flow in 0..0x8000u32 {
            let (sport, _) = crate::flows::flow_fields(flow);
            let key = ConnKey {
                src: {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&crate::flows::CLIENT_V4.octets());
                    lb_common::addr_words(&a)
                },
                dst: {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&[10, 100, 0, 1]);
                    lb_common::addr_words(&a)
                },
                sport: sport.to_be(),
                dport: lab::TCP_PORT.to_be(),
                proto: lb_common::PROTO_TCP,
                family: lb_common::FAMILY_V4,
                _pad: [0; 2],
            };
            if ring[ring_index(flow_hash(&key), ring.len() as u32) as usize] == id {
                let mut t = base.clone();
                let kind = t.kind();
                crate::flows::apply_flow(&mut t.frame, kind, flow);
                return Ok((sport, t));
            }
        }
        bail!("no flow found on backend {n}")
    }

    /// Destination MAC of `frame` after one run of `lb`.
    fn probe(&self, frame: &[u8]) -> anyhow::Result<[u8; 6]> {
        let mut out = vec![0u8; frame.len() + 128];
        let r = self.dp.program(programs::LB)?.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })?;
        let mut mac = [0u8; 6];
        if r.return_value == crate::cost::XDP_TX && r.data_size_out >= 6 {
            mac.copy_from_slice(&out[..6]);
        }
        Ok(mac)
    }

    /// Waits until `frame` no longer goes to backend `n` (bounded: 2 s).
    fn wait_moved(&self, frame: &[u8], n: u8, start: Instant) -> anyhow::Result<f64> {
        let old = lab::backend_mac(n);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mac = self.probe(frame)?;
            if mac != old && mac != [0; 6] {
                return Ok(start.elapsed().as_secs_f64() * 1e3);
            }
            if Instant::now() > deadline {
                bail!("flow still on backend {n} after 2 s");
            }
        }
    }

    /// A full table switch: backend `n` leaves the set; timed until a flow
    /// that was on it goes elsewhere. Restores the full set afterwards.
    ///
    /// # Errors
    /// Apply or probe errors.
    pub fn switch(&mut self, n: u8) -> anyhow::Result<SwitchSample> {
        sys::check_stop()?;
        let (_, frame) = self.flow_on(n)?;
        if self.probe(&frame.frame)? != lab::backend_mac(n) {
            bail!("probe flow is not on backend {n} before the switch");
        }
        // Stay clear of the slot-reuse grace period so it is not measured.
        std::thread::sleep(lbctl::dataplane::xdp::SLOT_REUSE_GRACE * 2);
        let t0 = Instant::now();
        self.dp.apply(&cp_state(Some(n)))?;
        let apply_ms = t0.elapsed().as_secs_f64() * 1e3;
        let visible_ms = self.wait_moved(&frame.frame, n, t0)?;
        std::thread::sleep(lbctl::dataplane::xdp::SLOT_REUSE_GRACE * 2);
        self.dp.apply(&cp_state(None))?;
        Ok(SwitchSample {
            detect_ms: 0.0,
            apply_ms,
            visible_ms,
        })
    }

    /// Backend `n`'s health check (TCP connect to a local listener, the
    /// given interval, fall 3) sees the listener close; the Down event is
    /// applied as the daemon would; timed until a flow on it moves.
    ///
    /// # Errors
    /// Listener, runtime, apply or probe errors, or no Down event in 5 s.
    pub fn death(&mut self, n: u8, interval: Duration) -> anyhow::Result<SwitchSample> {
        sys::check_stop()?;
        let (_, frame) = self.flow_on(n)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the backend listener")?;
        let addr = listener.local_addr()?;
        let r = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let cancel = CancellationToken::new();
            let spec = CheckSpec {
                kind: CheckKind::Tcp(addr),
                interval,
                timeout: interval,
                rise: 2,
                fall: 3,
                initial: Status::Up,
            };
            let handle = spawn_check(n, spec, tx, &cancel);
            // Let it pass a few checks first.
            tokio::time::sleep(interval * 3).await;
            if !handle.stats().up || handle.stats().failures > 0 {
                bail!("health check of the live listener is failing");
            }
            let t0 = Instant::now();
            drop(listener);
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .map_err(|_| anyhow!("no health event within 5 s"))?
                .ok_or_else(|| anyhow!("health channel closed"))?;
            let detect = t0.elapsed();
            handle.stop().await;
            if ev.up {
                bail!("unexpected Up event");
            }
            Ok((t0, detect))
        });
        let (t0, detect) = r?;
        let t1 = Instant::now();
        self.dp.apply(&cp_state(Some(n)))?;
        let apply_ms = t1.elapsed().as_secs_f64() * 1e3;
        let visible_ms = self.wait_moved(&frame.frame, n, t0)?;
        std::thread::sleep(lbctl::dataplane::xdp::SLOT_REUSE_GRACE * 2);
        self.dp.apply(&cp_state(None))?;
        Ok(SwitchSample {
            detect_ms: detect.as_secs_f64() * 1e3,
            apply_ms,
            visible_ms,
        })
    }
}

fn lib_conn_table() -> u32 {
    lb_common::DEFAULT_CONN_TABLE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_of_one_in_ten_is_near_a_tenth() {
        let r = remap(10).unwrap();
        assert!((r.ideal - 0.1).abs() < 0.02, "{r:?}");
        assert!(r.remapped >= r.ideal);
        assert!((r.remapped - r.ideal - r.between_survivors).abs() < 1e-9);
    }
}
