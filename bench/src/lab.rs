//! What every part of the rig shares: addresses, the desired states under
//! test, the loaded objects.

use std::net::IpAddr;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, ProgramArray},
    programs::Xdp,
};
use lbctl::dataplane::{
    BackendSpec, DesiredState, Forwarding, HashFields, NodeSettings, Protocol, VipSpec, VipState,
    xdp::{BENCH_OBJECT, LoadOptions, XdpDataplane},
};

use crate::flows::{GenConfig, L4, MAX_TEMPLATES, Template, TemplateValue};

/// MAC of the generator's veth (source of generated frames, the sink's device).
pub const GEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
/// MAC of the balancer's veth.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
/// IPv4 VIP (TCP 80 and UDP 53).
pub const VIP4: &str = "10.100.0.1";
/// IPv6 VIP (TCP 80 and UDP 53).
pub const VIP6: &str = "2001:db8:100::1";
/// An IPv4 destination that is no VIP.
pub const NON_VIP4: &str = "10.99.0.1";
/// An IPv6 destination that is no VIP.
pub const NON_VIP6: &str = "2001:db8:99::1";
/// Backends per VIP in the data-plane measurements.
pub const BACKENDS: u8 = 16;
/// Connection-table size of the "miss on every packet" data plane: smaller
/// than any flow set the rig generates, so every packet misses, inserts and
/// evicts (what a new flow costs once the table is full).
pub const MISS_TABLE: u32 = 16;
/// TCP VIP port.
pub const TCP_PORT: u16 = 80;
/// UDP VIP port.
pub const UDP_PORT: u16 = 53;

/// Parses a literal address of this module.
pub fn addr(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// MAC of backend `n`.
pub fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x0c, n]
}

fn backends(v6: bool, n: u8) -> Vec<BackendSpec> {
    (1..=n)
        .map(|i| BackendSpec {
            addr: if v6 {
                IpAddr::from([0xfd00, 0x202, 0, 0, 0, 0, 0, u16::from(i)])
            } else {
                IpAddr::from([10, 202, 0, i])
            },
            weight: 1,
            healthy: true,
            mac: Some(backend_mac(i)),
            vlan: 0,
        })
        .collect()
}

/// Node settings of the rig.
pub fn node() -> NodeSettings {
    NodeSettings {
        iface_mac: LB_MAC,
        mtu: 1500,
        ipip_src_v4: Some([10, 201, 0, 1].into()),
        ipip_src_v6: Some([0xfd00, 0x201, 0, 0, 0, 0, 0, 1].into()),
        ipip_src_flow_bits_v4: 0,
        ipip_src_flow_bits_v6: 0,
        debug: false,
        icmp_rate: 0,
        icmp_burst: 0,
    }
}

/// The four VIPs (IPv4/IPv6 x TCP/UDP), each with [`BACKENDS`] backends of
/// its family, forwarding by `fwd`.
pub fn desired(fwd: Forwarding) -> DesiredState {
    let mut vips = Vec::new();
    for (a, v6) in [(VIP4, false), (VIP6, true)] {
        for (protocol, port) in [(Protocol::Tcp, TCP_PORT), (Protocol::Udp, UDP_PORT)] {
            vips.push(VipState {
                spec: VipSpec {
                    addr: addr(a),
                    port: Some(port),
                    protocol,
                },
                forwarding: fwd,
                hash: HashFields::default(),
                ring_size: lb_common::DEFAULT_RING_SIZE,
                active: true,
                debug: false,
                backends: backends(v6, BACKENDS),
            });
        }
    }
    DesiredState { node: node(), vips }
}

/// A template from the generator's MAC to the balancer's.
///
/// # Errors
/// See [`Template::new`].
pub fn template(l4: L4, dst: &str) -> anyhow::Result<Template> {
    let port = match l4 {
        L4::Tcp => TCP_PORT,
        L4::Udp => UDP_PORT,
    };
    Template::new(l4, addr(dst), port, GEN_MAC, LB_MAC)
}

/// The live traffic mixes: name and templates.
///
/// # Errors
/// See [`Template::new`].
pub fn traffic(name: &str) -> anyhow::Result<Vec<Template>> {
    let all = [
        template(L4::Tcp, VIP4)?,
        template(L4::Udp, VIP4)?,
        template(L4::Tcp, VIP6)?,
        template(L4::Udp, VIP6)?,
    ];
    Ok(match name {
        "mix" => all.to_vec(),
        "v4-tcp" => vec![all[0].clone()],
        "v4-udp" => vec![all[1].clone()],
        "v6-tcp" => vec![all[2].clone()],
        "v6-udp" => vec![all[3].clone()],
        other => {
            return Err(anyhow!(
                "unknown traffic {other:?} (mix, v4-tcp, v4-udp, v6-tcp, v6-udp)"
            ));
        }
    })
}

/// The bench object, its programs loaded and its maps taken out.
pub struct BenchObject {
    /// The object (programs).
    pub ebpf: Ebpf,
    /// `BENCH_TEMPLATES`.
    pub templates: Array<MapData, TemplateValue>,
    /// `BENCH_CONFIG`.
    pub config: Array<MapData, GenConfig>,
    /// `BENCH_FRAMES`.
    pub frames: Array<MapData, TemplateValue>,
    /// `BENCH_SINK`.
    pub sink: PerCpuArray<MapData, u64>,
    /// `BENCH_JUMP`.
    pub jump: ProgramArray<MapData>,
}

impl BenchObject {
    /// Loads `lb-bench`.
    ///
    /// # Errors
    /// Not built, verifier or map errors.
    pub fn load() -> anyhow::Result<Self> {
        if BENCH_OBJECT.is_empty() {
            anyhow::bail!("lbctl was built with AYA_BUILD_SKIP=1: no bench object");
        }
        let mut ebpf = EbpfLoader::new()
            .load(BENCH_OBJECT)
            .context("loading lb-bench")?;
        for name in [
            "bench_gen",
            "bench_wrap",
            "bench_grow",
            "bench_sink",
            "bench_pass",
        ] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("lb-bench has no program {name}"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("lb-bench has no map {name}"))
        };
        let templates = Array::try_from(take("BENCH_TEMPLATES")?)?;
        let config = Array::try_from(take("BENCH_CONFIG")?)?;
        let frames = Array::try_from(take("BENCH_FRAMES")?)?;
        let sink = PerCpuArray::try_from(take("BENCH_SINK")?)?;
        let jump = ProgramArray::try_from(take("BENCH_JUMP")?)?;
        Ok(Self {
            ebpf,
            templates,
            config,
            frames,
            sink,
            jump,
        })
    }

    /// A loaded program.
    ///
    /// # Errors
    /// Unknown name.
    pub fn program(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("lb-bench has no program {name}"))?
            .try_into()?)
    }

    /// Sets the templates (1, 2 or 4) and flows per template.
    ///
    /// # Errors
    /// Bad counts or map errors.
    pub fn set_traffic(&mut self, templates: &[Template], flows: u32) -> anyhow::Result<()> {
        let log2 = match templates.len() {
            1 => 0,
            2 => 1,
            4 => 2,
            n => anyhow::bail!("{n} templates: use 1, 2 or {MAX_TEMPLATES}"),
        };
        for (i, t) in templates.iter().enumerate() {
            self.templates.set(i as u32, t.value(), 0)?;
        }
        let flow_mask = crate::flows::flow_mask(flows);
        let frames = crate::flows::precomputed_frames(templates, log2, flow_mask);
        if let Some(frames) = &frames {
            for (i, f) in frames.iter().enumerate() {
                self.frames.set(i as u32, *f, 0)?;
            }
        }
        self.config.set(
            0,
            GenConfig {
                templates_log2: log2,
                flow_mask,
                frames: frames.map_or(0, |f| f.len() as u32),
            },
            0,
        )?;
        Ok(())
    }

    /// Frames counted by the sink so far (all CPUs).
    ///
    /// # Errors
    /// Map read errors.
    pub fn sink_count(&self) -> anyhow::Result<u64> {
        Ok(self.sink.get(&0, 0)?.iter().sum())
    }
}

/// Load options of the rig's data planes.
pub fn load_options(conn_table_size: u32) -> LoadOptions {
    LoadOptions {
        ring_stride: lb_common::DEFAULT_RING_SIZE,
        max_vips: 4,
        conn_table_size,
    }
}

/// Loads a data plane and applies `state`.
///
/// # Errors
/// Load or apply errors.
pub fn dataplane(conn_table_size: u32, state: &DesiredState) -> anyhow::Result<XdpDataplane> {
    let mut dp = XdpDataplane::load(load_options(conn_table_size)).context("loading lb-ebpf")?;
    dp.apply(state).context("applying the rig's state")?;
    Ok(dp)
}

/// Sum of the connection-table reason counters: (hits, misses + stale +
/// found in the shared table), i.e. hits and misses of the per-CPU table.
///
/// # Errors
/// Map read errors.
pub fn conn_counts(dp: &XdpDataplane) -> anyhow::Result<(u64, u64)> {
    let r = dp.stats()?.reasons;
    let g = |k: &str| r.get(k).copied().unwrap_or(0);
    Ok((
        g("conn_hit"),
        g("conn_miss") + g("conn_stale") + g("conn_shared"),
    ))
}
