//! Per-packet cost of every data-plane path through BPF_PROG_TEST_RUN.
//!
//! Method (see bench/README.md): one call with a large repeat count per
//! sample. The kernel does not reset the packet between repeats, so every
//! `lb` path runs behind `bench_wrap`, which restores the input (undoes head
//! growth, writes what differs from the next precomputed frame: one per
//! flow; the run's input must be the template itself) and
//! tail-calls the program under test. The bare programs (`pass`, `reflect`)
//! are measured both directly and behind the same wrapper, which gives the
//! wrapper's own cost; `bench_grow` behind it gives the floor of an
//! encapsulating path (a head growth and the wrapper's undo: two helper
//! calls).

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lbctl::dataplane::{Forwarding, xdp::XdpDataplane, xdp::programs};
use serde::Serialize;

use crate::{
    flows::{L4, Template},
    lab::{self, BenchObject},
    sys,
};

/// XDP verdict numbers.
pub const XDP_PASS: u32 = 2;
/// XDP_TX.
pub const XDP_TX: u32 = 3;

/// Flows the wrapper cycles through (all fit the hit table; none fit the miss table).
pub const COST_FLOWS: u32 = 1024;
// The wrapper restores precomputed frames: one per flow must fit.
const _: () = assert!(COST_FLOWS as usize <= crate::flows::MAX_FRAMES);

/// What one path measurement is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathSpec {
    /// Stable id, e.g. `ipip_hit_v4`.
    pub id: String,
    /// Label for the table.
    pub label: String,
    /// Behind the restore wrapper.
    pub wrapped: bool,
    /// Verdict the path must return.
    pub expect: u32,
}

/// One sample of one path.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CostSample {
    /// Mean ns per run over the repeat count, as the kernel reports it.
    pub ns: f64,
    /// Verdict of the last run.
    pub verdict: u32,
    /// Connection-table hits during the sample.
    pub conn_hits: u64,
    /// Connection-table misses (and stale entries) during the sample.
    pub conn_misses: u64,
}

/// The data planes the cost measurement uses.
pub struct CostLab<'a> {
    /// The bench object.
    pub bench: &'a mut BenchObject,
    /// Large connection table (hits).
    pub hit: &'a mut XdpDataplane,
    /// [`lab::MISS_TABLE`]-entry table (a miss on every packet).
    pub miss: &'a mut XdpDataplane,
    /// Repeat count per sample.
    pub repeat: u32,
    /// `lb` path ids to measure (empty: all); the baselines always run.
    pub only: &'a [String],
}

fn run_raw(prog: &Xdp, data: &[u8], repeat: u32) -> anyhow::Result<(f64, u32)> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(data),
        repeat,
        ..Default::default()
    })?;
    Ok((r.duration.as_nanos() as f64, r.return_value))
}

impl CostLab<'_> {
    /// Every path, in report order.
    pub fn paths() -> Vec<PathSpec> {
        let mut v = vec![
            spec("xdp_pass", "XDP_PASS (bare)", false, XDP_PASS),
            spec("reflect", "MAC-swap XDP_TX reflector (bare)", false, XDP_TX),
            spec("wrap_pass", "wrapper + XDP_PASS", true, XDP_PASS),
            spec("wrap_reflect", "wrapper + reflector", true, XDP_TX),
            spec(
                "wrap_grow",
                "wrapper + head growth (encap floor)",
                true,
                XDP_TX,
            ),
        ];
        for fam in ["v4", "v6"] {
            v.push(spec(
                &format!("non_vip_{fam}"),
                &format!("lb: not for a VIP, {fam}"),
                true,
                XDP_PASS,
            ));
        }
        for mode in ["dr", "ipip"] {
            for hit in ["hit", "miss"] {
                for fam in ["v4", "v6"] {
                    v.push(spec(
                        &format!("{mode}_{hit}_{fam}"),
                        &format!("lb: {} conn-table {hit}, {fam}", mode.to_uppercase()),
                        true,
                        XDP_TX,
                    ));
                }
            }
        }
        v
    }

    /// Measures one sample of every path; `progress` is told each path id.
    ///
    /// # Errors
    /// Test-run or map errors, or a path returning the wrong verdict.
    pub fn sample_all(
        &mut self,
        mut progress: impl FnMut(&str),
    ) -> anyhow::Result<Vec<(String, CostSample)>> {
        let tcp4 = lab::template(L4::Tcp, lab::VIP4)?;
        let tcp6 = lab::template(L4::Tcp, lab::VIP6)?;
        let mut out = Vec::new();
        let repeat = self.repeat;
        let only = self.only;
        let wanted = |id: &str| only.is_empty() || only.iter().any(|p| p == id);

        // Bare programs: the packet needs no restoring.
        for (id, name) in [("xdp_pass", programs::PASS), ("reflect", programs::REFLECT)] {
            progress(id);
            let (ns, verdict) = run_raw(self.hit.program(name)?, &tcp4.frame, repeat)?;
            out.push((id.to_owned(), sample(ns, verdict, (0, 0))));
        }
        // The wrapper's own cost (trivial programs behind it), and the floor
        // of an IPv4 encapsulation in this harness: `bench_grow`'s
        // `bpf_xdp_adjust_head` and the wrapper's undo of it.
        let wrapped_baselines = [
            (
                "wrap_pass",
                self.hit.program(programs::PASS)?.fd()?.try_clone()?,
            ),
            (
                "wrap_reflect",
                self.hit.program(programs::REFLECT)?.fd()?.try_clone()?,
            ),
            (
                "wrap_grow",
                self.bench.program("bench_grow")?.fd()?.try_clone()?,
            ),
        ];
        for (id, fd) in wrapped_baselines {
            progress(id);
            self.bench.jump.set(0, &fd, 0)?;
            let s = self.wrapped(None, &tcp4)?;
            out.push((id.to_owned(), s));
        }
        self.hit.apply(&lab::desired(Forwarding::Dr))?;
        for (id, dst) in [("non_vip_v4", lab::NON_VIP4), ("non_vip_v6", lab::NON_VIP6)] {
            if !wanted(id) {
                continue;
            }
            progress(id);
            let t = lab::template(L4::Tcp, dst)?;
            let fd = self.hit.program(programs::LB)?.fd()?.try_clone()?;
            self.bench.jump.set(0, &fd, 0)?;
            let s = self.wrapped(Some(Which::Hit), &t)?;
            out.push((id.to_owned(), s));
        }
        for (mode, fwd) in [("dr", Forwarding::Dr), ("ipip", Forwarding::Ipip)] {
            self.hit.apply(&lab::desired(fwd))?;
            self.miss.apply(&lab::desired(fwd))?;
            for (hit, which) in [("hit", Which::Hit), ("miss", Which::Miss)] {
                let fd = match which {
                    Which::Hit => self.hit.program(programs::LB)?.fd()?.try_clone()?,
                    Which::Miss => self.miss.program(programs::LB)?.fd()?.try_clone()?,
                };
                self.bench.jump.set(0, &fd, 0)?;
                for (fam, t) in [("v4", &tcp4), ("v6", &tcp6)] {
                    let id = format!("{mode}_{hit}_{fam}");
                    if !wanted(&id) {
                        continue;
                    }
                    progress(&id);
                    let s = self.wrapped(Some(which), t)?;
                    out.push((id, s));
                }
            }
        }
        let specs = Self::paths();
        for (id, s) in &out {
            if let Some(p) = specs.iter().find(|p| &p.id == id)
                && s.verdict != p.expect
            {
                anyhow::bail!(
                    "path {id} returned verdict {} instead of {}",
                    s.verdict,
                    p.expect
                );
            }
        }
        Ok(out)
    }

    /// One wrapped sample: warm-up (fills the connection table for the hit
    /// paths), then the measured call with the reason counters around it.
    fn wrapped(&mut self, which: Option<Which>, t: &Template) -> anyhow::Result<CostSample> {
        sys::check_stop()?;
        self.bench
            .set_traffic(std::slice::from_ref(t), COST_FLOWS)?;
        let wrap = self.bench.program("bench_wrap")?;
        // The input is the template itself: the wrapper writes only what differs from it.
        run_raw(wrap, &t.frame, 4 * COST_FLOWS)?;
        let dp: Option<&XdpDataplane> = match which {
            Some(Which::Hit) => Some(self.hit),
            Some(Which::Miss) => Some(self.miss),
            None => None,
        };
        let before = dp.map(lab::conn_counts).transpose()?.unwrap_or_default();
        let (ns, verdict) = run_raw(wrap, &t.frame, self.repeat)?;
        let after = dp.map(lab::conn_counts).transpose()?.unwrap_or_default();
        Ok(sample(
            ns,
            verdict,
            (after.0 - before.0, after.1 - before.1),
        ))
    }
}

#[derive(Clone, Copy)]
enum Which {
    Hit,
    Miss,
}

fn spec(id: &str, label: &str, wrapped: bool, expect: u32) -> PathSpec {
    PathSpec {
        id: id.to_owned(),
        label: label.to_owned(),
        wrapped,
        expect,
    }
}

fn sample(ns: f64, verdict: u32, conn: (u64, u64)) -> CostSample {
    CostSample {
        ns,
        verdict,
        conn_hits: conn.0,
        conn_misses: conn.1,
    }
}
