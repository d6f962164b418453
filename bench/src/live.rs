//! The live-traffic rig: generator and sink in one namespace, the balancer
//! in another, one veth pair between them.
//!
//! ```text
//!  lbb-PID-gen                         lbb-PID-lb
//!  bench_gen --XDP_TX--> gen0 ====veth==== lb0  [variant under test]
//!  bench_sink (count, DROP) <-- gen0 <==== lb0  XDP_TX / kernel forwarding
//! ```
//!
//! `lb` is a one-armed balancer: it sends every frame back out of the
//! interface it came in on (XDP_TX), as Katran does. On a veth pair that
//! interface's peer is the generator's own veth, so the sink counts there.
//! Every variant uses exactly this path, so the bare MAC-swap reflector on
//! `lb0` is its ceiling; the kernel's forwarding routes the VIPs back out of
//! `lb0` to a static next hop (the same path, through the IP stack).

use std::{
    ffi::CString,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId};
use lbctl::dataplane::{
    Forwarding,
    xdp::{AttachMode, XdpDataplane, programs},
};
use nix::sys::pthread::{pthread_kill, pthread_self};
use serde::Serialize;

use crate::{
    flows::Template,
    lab::{self, BenchObject},
    sys::{self, Netns},
};

/// Live variants, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// (a) bare MAC-swap XDP_TX on lb0: the ceiling of this path.
    Reflect,
    /// (b) lb, DR.
    Dr,
    /// (c) lb, IPIP/IP6IP6.
    Ipip,
    /// (d) lb, IPIP, with a connection-table miss on every packet.
    IpipMiss,
    /// (e) the kernel's IP forwarding (XDP_PASS on lb0).
    Kernel,
}

impl Variant {
    /// All, in report order.
    pub const ALL: [Variant; 5] = [
        Variant::Reflect,
        Variant::Dr,
        Variant::Ipip,
        Variant::IpipMiss,
        Variant::Kernel,
    ];

    /// Stable id.
    pub fn id(self) -> &'static str {
        match self {
            Variant::Reflect => "reflect",
            Variant::Dr => "dr",
            Variant::Ipip => "ipip",
            Variant::IpipMiss => "ipip_miss",
            Variant::Kernel => "kernel",
        }
    }

    /// Label for the table.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Reflect => "(a) MAC-swap XDP_TX reflector",
            Variant::Dr => "(b) lb DR",
            Variant::Ipip => "(c) lb IPIP",
            Variant::IpipMiss => "(d) lb IPIP, conn-table miss every packet",
            Variant::Kernel => "(e) kernel IP forwarding",
        }
    }
}

/// One window of one variant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LiveSample {
    /// Frames counted at the sink per second, in millions.
    pub mpps: f64,
    /// Frames counted in the window.
    pub packets: u64,
    /// Window length, seconds.
    pub seconds: f64,
    /// Connection-table hits in the window (lb variants).
    pub conn_hits: u64,
    /// Connection-table misses in the window (lb variants).
    pub conn_misses: u64,
}

/// Namespaces, veths and the programs that stay attached.
pub struct Topology {
    gen_ns: Netns,
    lb_ns: Netns,
    gen_ifindex: u32,
    sink_link: Option<XdpLinkId>,
}

/// Names of the rig's namespaces start with this (then `PID-`).
pub const NS_PREFIX: &str = "lbb-";

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: FFI; `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("ifindex of {name}"));
    }
    Ok(i)
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Topology {
    /// Builds the namespaces and the veth pair, configures the kernel's
    /// forwarding in the balancer namespace (used by variant (e) only; XDP
    /// variants consume every frame before the stack sees it) and attaches
    /// the sink.
    ///
    /// # Errors
    /// `ip`, sysctl or attach failures.
    pub fn build(bench: &mut BenchObject) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let gen_ns = Netns::create(&format!("{NS_PREFIX}{pid}-gen"))?;
        let lb_ns = Netns::create(&format!("{NS_PREFIX}{pid}-lb"))?;
        sys::ip(&[
            "link",
            "add",
            "gen0",
            "netns",
            gen_ns.name(),
            "address",
            &mac_str(lab::GEN_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "lb0",
            "netns",
            lb_ns.name(),
            "address",
            &mac_str(lab::LB_MAC),
        ])?;
        for (ns, dev) in [(&gen_ns, "gen0"), (&lb_ns, "lb0")] {
            ns.ip(&["link", "set", "lo", "up"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        lb_ns.sysctl("net.ipv4.ip_forward", "1")?;
        lb_ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        for dev in ["all", "default", "lb0"] {
            lb_ns.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
            lb_ns.sysctl(&format!("net.ipv4.conf.{dev}.send_redirects"), "0")?;
        }
        lb_ns.ip(&["addr", "add", "10.201.0.1/24", "dev", "lb0"])?;
        lb_ns.ip(&["addr", "add", "fd00:201::1/64", "dev", "lb0", "nodad"])?;
        let gen_mac = mac_str(lab::GEN_MAC);
        lb_ns.ip(&[
            "neigh",
            "replace",
            "10.201.0.2",
            "lladdr",
            &gen_mac,
            "dev",
            "lb0",
            "nud",
            "permanent",
        ])?;
        lb_ns.ip(&[
            "neigh",
            "replace",
            "fd00:201::2",
            "lladdr",
            &gen_mac,
            "dev",
            "lb0",
            "nud",
            "permanent",
        ])?;
        lb_ns.ip(&[
            "route",
            "add",
            "10.100.0.0/24",
            "via",
            "10.201.0.2",
            "dev",
            "lb0",
        ])?;
        lb_ns.ip(&[
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            "10.201.0.2",
            "dev",
            "lb0",
        ])?;
        lb_ns.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:100::/64",
            "via",
            "fd00:201::2",
            "dev",
            "lb0",
        ])?;

        let mut topo = Self {
            gen_ns,
            lb_ns,
            gen_ifindex: 0,
            sink_link: None,
        };
        let _in = topo.gen_ns.enter()?;
        topo.gen_ifindex = ifindex("gen0")?;
        let sink: &mut Xdp = bench
            .ebpf
            .program_mut("bench_sink")
            .ok_or_else(|| anyhow!("no bench_sink"))?
            .try_into()?;
        topo.sink_link = Some(
            sink.attach("gen0", XdpMode::Driver)
                .context("attaching the sink to gen0 (native mode)")?,
        );
        Ok(topo)
    }

    /// Detaches the sink (the namespaces go when the topology drops).
    pub fn detach(&mut self, bench: &mut BenchObject) {
        if let Some(link) = self.sink_link.take()
            && let Some(p) = bench.ebpf.program_mut("bench_sink")
            && let Ok(x) = <&mut Xdp>::try_from(p)
        {
            let _ = x.detach(link);
        }
    }

    /// Attaches `program` of `dp` to lb0.
    ///
    /// # Errors
    /// Attach failures.
    pub fn attach_lb(&self, dp: &mut XdpDataplane, program: &'static str) -> anyhow::Result<()> {
        let _in = self.lb_ns.enter()?;
        dp.attach(program, "lb0", AttachMode::Driver)
            .with_context(|| format!("attaching {program} to lb0"))?;
        Ok(())
    }

    /// Runs the generator for `warmup + window` and counts at the sink over
    /// `window`. The generating thread is pinned to CPU 0 (the receive path
    /// runs there too); a helper thread samples the sink and ends the
    /// generator's BPF_PROG_TEST_RUN with a signal, repeated until it returns.
    ///
    /// # Errors
    /// Test-run errors other than the expected EINTR, or an interrupt.
    pub fn window(
        &self,
        bench: &BenchObject,
        templates: &[Template],
        warmup: Duration,
        window: Duration,
    ) -> anyhow::Result<(u64, f64)> {
        let frame_len = templates
            .iter()
            .map(|t| t.frame.len())
            .max()
            .ok_or_else(|| anyhow!("no templates"))?;
        let mut data = vec![0u8; frame_len];
        if let Some(t) = templates.iter().find(|t| t.frame.len() == frame_len) {
            data.copy_from_slice(&t.frame);
        }
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, frame_len as u32, 0, self.gen_ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let generator = bench.program("bench_gen")?;
        let _in = self.gen_ns.enter()?;
        let _pin = sys::Pin::to(0)?;
        let me = pthread_self();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let sampler = s.spawn(|| -> anyhow::Result<(u64, f64)> {
                let _pin = sys::Pin::to(1).ok();
                let wait = |d: Duration| {
                    let end = Instant::now() + d;
                    while Instant::now() < end && !sys::stopping() && !done.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5).min(d));
                    }
                };
                wait(warmup);
                let c0 = bench.sink_count()?;
                let t0 = Instant::now();
                wait(window);
                let c1 = bench.sink_count()?;
                let secs = t0.elapsed().as_secs_f64();
                // Stop the generator; repeat until it has returned (a signal
                // sent before it entered the kernel would otherwise be lost).
                let deadline = Instant::now() + Duration::from_secs(10);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let _ = pthread_kill(me, sys::WAKE);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok((c1.saturating_sub(c0), secs))
            });
            let r = generator.test_run(TestRunOptions {
                data_in: Some(&data),
                ctx_in: Some(&ctx),
                repeat: u32::MAX,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            });
            done.store(true, Ordering::SeqCst);
            let counted = sampler
                .join()
                .map_err(|_| anyhow!("sampler thread panicked"))??;
            match r {
                Ok(_) => {}
                Err(aya::programs::ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(anyhow::Error::from(e).context("generator test run")),
            }
            sys::check_stop()?;
            if counted.0 == 0 {
                bail!("no frame reached the sink");
            }
            Ok(counted)
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Netns drops delete the namespaces and with them the veth pair.
    }
}

/// The data planes and the topology of the live measurement.
pub struct LiveLab<'a> {
    /// The bench object.
    pub bench: &'a mut BenchObject,
    /// Large connection table.
    pub hit: &'a mut XdpDataplane,
    /// Tiny connection table.
    pub miss: &'a mut XdpDataplane,
    /// Namespaces and veths.
    pub topo: &'a Topology,
    /// The traffic.
    pub templates: Vec<Template>,
    /// Flows per template.
    pub flows: u32,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Window length.
    pub window: Duration,
}

impl LiveLab<'_> {
    /// One window of `v`.
    ///
    /// # Errors
    /// Setup or measurement errors.
    pub fn sample(&mut self, v: Variant) -> anyhow::Result<LiveSample> {
        sys::check_stop()?;
        self.bench.set_traffic(&self.templates, self.flows)?;
        let which: Option<&mut XdpDataplane> = match v {
            Variant::Reflect => {
                self.topo.attach_lb(self.hit, programs::REFLECT)?;
                None
            }
            Variant::Kernel => {
                self.topo.attach_lb(self.hit, programs::PASS)?;
                None
            }
            Variant::Dr | Variant::Ipip => {
                let fwd = if v == Variant::Dr {
                    Forwarding::Dr
                } else {
                    Forwarding::Ipip
                };
                self.hit.apply(&lab::desired(fwd))?;
                self.topo.attach_lb(self.hit, programs::LB)?;
                Some(&mut *self.hit)
            }
            Variant::IpipMiss => {
                self.miss.apply(&lab::desired(Forwarding::Ipip))?;
                self.topo.attach_lb(self.miss, programs::LB)?;
                Some(&mut *self.miss)
            }
        };
        let before = which.as_deref().map(lab::conn_counts).transpose()?;
        let r = self
            .topo
            .window(self.bench, &self.templates, self.warmup, self.window);
        let after = which.as_deref().map(lab::conn_counts).transpose()?;
        self.hit.detach_all();
        self.miss.detach_all();
        let (packets, seconds) = r?;
        let (h, m) = match (before, after) {
            (Some(b), Some(a)) => (a.0 - b.0, a.1 - b.1),
            _ => (0, 0),
        };
        Ok(LiveSample {
            mpps: packets as f64 / seconds / 1e6,
            packets,
            seconds,
            conn_hits: h,
            conn_misses: m,
        })
    }
}
