//! The report: rows computed from samples, the terminal table, the SVG chart.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    control::{Remap, SwitchSample},
    cost::{CostSample, PathSpec},
    live::{LiveSample, Variant},
    stats::{Summary, ratio},
};

/// How the run was made.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Smoke mode.
    pub quick: bool,
    /// Samples per variant / path.
    pub runs: usize,
    /// Live window, seconds.
    pub window_s: f64,
    /// Generator warm-up before each window, seconds.
    pub warmup_s: f64,
    /// Live traffic mix.
    pub traffic: String,
    /// Flows per template in the live traffic.
    pub flows_per_template: u32,
    /// Repeat count of each per-packet-cost sample.
    pub cost_repeat: u32,
    /// Seconds since the epoch at the start.
    pub started_unix: u64,
}

/// One live variant.
#[derive(Clone, Debug, Serialize)]
pub struct LiveRow {
    /// Stable id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Every window.
    pub samples: Vec<LiveSample>,
    /// Mpps over the windows.
    pub mpps: Option<Summary>,
    /// Median over the reflector's median.
    pub vs_reflect: Option<f64>,
    /// Median over the kernel forwarding's median.
    pub vs_kernel: Option<f64>,
    /// Share of connection-table lookups that hit (lb variants).
    pub conn_hit_share: Option<f64>,
}

/// One per-packet-cost path.
#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    /// What it is.
    #[serde(flatten)]
    pub spec: PathSpec,
    /// Every sample.
    pub samples: Vec<CostSample>,
    /// ns per packet over the samples.
    pub ns: Option<Summary>,
    /// Median over the bare reflector's median (wrapper included for
    /// wrapped paths: the conservative figure, as Katran's was measured).
    pub vs_reflect: Option<f64>,
    /// Median less the wrapper's own cost (wrapped paths).
    pub net_ns: Option<f64>,
    /// `net_ns` over the bare reflector's median.
    pub net_vs_reflect: Option<f64>,
    /// Share of connection-table lookups that hit.
    pub conn_hit_share: Option<f64>,
}

/// Maglev build times for one backend count.
#[derive(Clone, Debug, Serialize)]
pub struct MaglevRow {
    /// Backends.
    pub backends: u32,
    /// Table entries.
    pub table: u32,
    /// Every build, ms.
    pub samples_ms: Vec<f64>,
    /// Over the builds.
    pub ms: Option<Summary>,
}

/// Timed switches.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchRow {
    /// What was timed.
    pub what: String,
    /// Health-check interval (backend death only), ms.
    pub interval_ms: Option<f64>,
    /// Health-check fall count (backend death only).
    pub fall: Option<u32>,
    /// Every sample.
    pub samples: Vec<SwitchSample>,
    /// Detection, ms.
    pub detect_ms: Option<Summary>,
    /// Apply, ms.
    pub apply_ms: Option<Summary>,
    /// Until a packet sees it, ms.
    pub visible_ms: Option<Summary>,
}

/// Control-plane figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Control {
    /// Maglev build time.
    pub maglev_build: Vec<MaglevRow>,
    /// Disruption when one backend leaves.
    pub remap: Vec<Remap>,
    /// Table switch and backend death.
    pub switches: Vec<SwitchRow>,
}

/// A target of issue 6 / issue 3 and whether this run meets it.
#[derive(Clone, Debug, Serialize)]
pub struct TargetRow {
    /// What.
    pub name: String,
    /// The target, in words.
    pub target: String,
    /// The measured figure.
    pub value: Option<f64>,
    /// Met?
    pub met: Option<bool>,
}

/// Everything.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How the run was made.
    pub meta: Meta,
    /// Live packet rates.
    pub live: Vec<LiveRow>,
    /// Per-packet cost.
    pub cost: Vec<CostRow>,
    /// Control plane.
    pub control: Control,
    /// Targets.
    pub targets: Vec<TargetRow>,
}

fn hit_share(h: u64, m: u64) -> Option<f64> {
    (h + m > 0).then(|| h as f64 / (h + m) as f64)
}

/// Live rows from the samples of each variant.
pub fn live_rows(samples: &[(Variant, Vec<LiveSample>)]) -> Vec<LiveRow> {
    let med = |v: Variant| {
        samples
            .iter()
            .find(|(x, _)| *x == v)
            .and_then(|(_, s)| Summary::of(&s.iter().map(|s| s.mpps).collect::<Vec<_>>()))
            .map(|s| s.median)
    };
    let reflect = med(Variant::Reflect);
    let kernel = med(Variant::Kernel);
    samples
        .iter()
        .map(|(v, s)| {
            let mpps = Summary::of(&s.iter().map(|s| s.mpps).collect::<Vec<_>>());
            let m = mpps.map(|s| s.median);
            let lb = matches!(v, Variant::Dr | Variant::Ipip | Variant::IpipMiss);
            LiveRow {
                id: v.id().to_owned(),
                label: v.label().to_owned(),
                samples: s.clone(),
                mpps,
                vs_reflect: m.zip(reflect).and_then(|(a, b)| ratio(a, b)),
                vs_kernel: m.zip(kernel).and_then(|(a, b)| ratio(a, b)),
                conn_hit_share: if lb {
                    hit_share(
                        s.iter().map(|s| s.conn_hits).sum(),
                        s.iter().map(|s| s.conn_misses).sum(),
                    )
                } else {
                    None
                },
            }
        })
        .collect()
}

/// Cost rows from the samples of each path.
pub fn cost_rows(specs: &[PathSpec], samples: &[(String, Vec<CostSample>)]) -> Vec<CostRow> {
    let med = |id: &str| {
        samples
            .iter()
            .find(|(x, _)| x == id)
            .and_then(|(_, s)| Summary::of(&s.iter().map(|s| s.ns).collect::<Vec<_>>()))
            .map(|s| s.median)
    };
    let reflect = med("reflect");
    let wrapper = med("wrap_reflect").zip(reflect).map(|(w, r)| w - r);
    specs
        .iter()
        .filter_map(|spec| {
            let (_, s) = samples.iter().find(|(id, _)| *id == spec.id)?;
            let ns = Summary::of(&s.iter().map(|s| s.ns).collect::<Vec<_>>());
            let m = ns.map(|s| s.median);
            let net = if spec.wrapped {
                m.zip(wrapper).map(|(a, w)| a - w)
            } else {
                m
            };
            Some(CostRow {
                spec: spec.clone(),
                samples: s.clone(),
                ns,
                vs_reflect: m.zip(reflect).and_then(|(a, b)| ratio(a, b)),
                net_ns: net,
                net_vs_reflect: net.zip(reflect).and_then(|(a, b)| ratio(a, b)),
                conn_hit_share: hit_share(
                    s.iter().map(|s| s.conn_hits).sum(),
                    s.iter().map(|s| s.conn_misses).sum(),
                ),
            })
        })
        .collect()
}

/// The targets, evaluated on this run's rows.
pub fn targets(live: &[LiveRow], cost: &[CostRow], control: &Control) -> Vec<TargetRow> {
    let lr = |id: &str| live.iter().find(|r| r.id == id);
    let cr = |id: &str| cost.iter().find(|r| r.spec.id == id);
    let mut t = Vec::new();
    let mut push = |name: &str, target: &str, value: Option<f64>, ok: &dyn Fn(f64) -> bool| {
        t.push(TargetRow {
            name: name.to_owned(),
            target: target.to_owned(),
            value,
            met: value.map(ok),
        });
    };
    push(
        "live: lb DR / reflector",
        ">= 0.90",
        lr("dr").and_then(|r| r.vs_reflect),
        &|v| v >= 0.90,
    );
    push(
        "live: lb IPIP / reflector",
        ">= 0.85",
        lr("ipip").and_then(|r| r.vs_reflect),
        &|v| v >= 0.85,
    );
    push(
        "live: lb DR / kernel forwarding",
        ">= 4.0",
        lr("dr").and_then(|r| r.vs_kernel),
        &|v| v >= 4.0,
    );
    push(
        "live: lb IPIP / kernel forwarding",
        ">= 4.0",
        lr("ipip").and_then(|r| r.vs_kernel),
        &|v| v >= 4.0,
    );
    for fam in ["v4", "v6"] {
        push(
            &format!("cost: IPIP hit {fam} / reflector (wrapper included)"),
            "<= 3.0 (Katran ~5.5)",
            cr(&format!("ipip_hit_{fam}")).and_then(|r| r.vs_reflect),
            &|v| v <= 3.0,
        );
    }
    push(
        "Maglev 65537 entries, 100 backends, median ms",
        "< 5",
        control
            .maglev_build
            .iter()
            .find(|r| r.backends == 100)
            .and_then(|r| r.ms)
            .map(|s| s.median),
        &|v| v < 5.0,
    );
    t
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// The terminal table.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let m = &r.meta;
    let _ = writeln!(
        o,
        "lbctl bench: kernel {}, {} CPUs, {} run(s), {:.1} s windows, traffic {} ({} flows/template), cost repeat {}{}",
        m.kernel,
        m.cpus,
        m.runs,
        m.window_s,
        m.traffic,
        m.flows_per_template,
        m.cost_repeat,
        if m.quick {
            " [quick: smoke figures]"
        } else {
            ""
        }
    );
    if !r.live.is_empty() {
        let _ = writeln!(
            o,
            "\nLive packet rate at the sink (Mpps; one generator CPU)\n{:<44} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8}",
            "variant", "median", "min", "max", "/refl", "/kernel", "conn hit"
        );
        for row in &r.live {
            let s = row.mpps;
            let _ = writeln!(
                o,
                "{:<44} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8}",
                row.label,
                f(s.map(|s| s.median), 2),
                f(s.map(|s| s.min), 2),
                f(s.map(|s| s.max), 2),
                f(row.vs_reflect, 2),
                f(row.vs_kernel, 2),
                pct(row.conn_hit_share),
            );
        }
    }
    if !r.cost.is_empty() {
        let _ = writeln!(
            o,
            "\nPer-packet cost, BPF_PROG_TEST_RUN (ns/packet; wrapped = behind the restore wrapper)\n{:<40} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
            "path", "median", "min", "max", "/refl", "net", "net/rf", "conn hit"
        );
        for row in &r.cost {
            let s = row.ns;
            let _ = writeln!(
                o,
                "{:<40} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
                row.spec.label,
                f(s.map(|s| s.median), 1),
                f(s.map(|s| s.min), 1),
                f(s.map(|s| s.max), 1),
                f(row.vs_reflect, 2),
                f(row.net_ns, 1),
                f(row.net_vs_reflect, 2),
                if row.spec.wrapped && row.spec.id.contains("_hit_")
                    || row.spec.id.contains("_miss_")
                {
                    pct(row.conn_hit_share)
                } else {
                    "-".to_owned()
                },
            );
        }
    }
    let c = &r.control;
    if !c.maglev_build.is_empty() || !c.remap.is_empty() || !c.switches.is_empty() {
        let _ = writeln!(o, "\nControl plane");
        for row in &c.maglev_build {
            let _ = writeln!(
                o,
                "  Maglev build, {} entries, {:>4} backends: {} ms median [{} - {}]",
                row.table,
                row.backends,
                f(row.ms.map(|s| s.median), 2),
                f(row.ms.map(|s| s.min), 2),
                f(row.ms.map(|s| s.max), 2),
            );
        }
        for row in &c.remap {
            let _ = writeln!(
                o,
                "  1 of {:>3} backends leaves: {} of flows remapped (ideal {}), {} between survivors",
                row.backends,
                pct(Some(row.remapped)),
                pct(Some(row.ideal)),
                pct(Some(row.between_survivors)),
            );
        }
        for row in &c.switches {
            let extra = match (row.interval_ms, row.fall) {
                (Some(i), Some(fall)) => format!(" (TCP check every {i:.0} ms, fall {fall})"),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "  {}{extra}: detect {} ms, apply {} ms, visible to packets after {} ms [{} - {}] (medians)",
                row.what,
                f(row.detect_ms.map(|s| s.median), 1),
                f(row.apply_ms.map(|s| s.median), 2),
                f(row.visible_ms.map(|s| s.median), 2),
                f(row.visible_ms.map(|s| s.min), 2),
                f(row.visible_ms.map(|s| s.max), 2),
            );
        }
    }
    if !r.targets.is_empty() {
        let _ = writeln!(o, "\nTargets");
        for t in &r.targets {
            let _ = writeln!(
                o,
                "  {:<52} {:>8}  target {:<22} {}",
                t.name,
                f(t.value, 2),
                t.target,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "not measured",
                }
            );
        }
    }
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One horizontal bar chart with min-max error bars; returns its height.
fn bars(
    o: &mut String,
    y0: f64,
    title: &str,
    unit: &str,
    rows: &[(String, Summary)],
    color: &str,
) -> f64 {
    const LEFT: f64 = 330.0;
    const WIDTH: f64 = 520.0;
    const ROW: f64 = 22.0;
    let max = rows
        .iter()
        .map(|(_, s)| s.max)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let scale = WIDTH / (max * 1.1);
    let _ = writeln!(
        o,
        r#"<text x="10" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        y0 + 18.0,
        esc(title)
    );
    let top = y0 + 30.0;
    for (i, (label, s)) in rows.iter().enumerate() {
        let y = top + i as f64 * ROW;
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 14.0,
            esc(label)
        );
        let _ = writeln!(
            o,
            r#"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
            y + 3.0,
            s.median * scale,
            ROW - 6.0
        );
        let (x1, x2, yc) = (LEFT + s.min * scale, LEFT + s.max * scale, y + ROW / 2.0);
        let _ = writeln!(
            o,
            r#"<path d="M{x1:.1} {yc:.1}H{x2:.1}M{x1:.1} {:.1}V{:.1}M{x2:.1} {:.1}V{:.1}" stroke="black" stroke-width="1.2" fill="none"/>"#,
            yc - 5.0,
            yc + 5.0,
            yc - 5.0,
            yc + 5.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{:.2} {unit}</text>"#,
            x2 + 6.0,
            y + 14.0,
            s.median
        );
    }
    30.0 + rows.len() as f64 * ROW + 20.0
}

/// The SVG chart: Mpps per live variant and ns per path, medians with
/// min-max error bars.
pub fn svg(r: &Report) -> String {
    let mut body = String::new();
    let mut y = 10.0;
    let live: Vec<(String, Summary)> = r
        .live
        .iter()
        .filter_map(|row| Some((row.label.clone(), row.mpps?)))
        .collect();
    if !live.is_empty() {
        y += bars(
            &mut body,
            y,
            "Live packet rate at the sink (Mpps, median, min-max)",
            "Mpps",
            &live,
            "#4878a8",
        );
    }
    let cost: Vec<(String, Summary)> = r
        .cost
        .iter()
        .filter_map(|row| Some((row.spec.label.clone(), row.ns?)))
        .collect();
    if !cost.is_empty() {
        y += bars(
            &mut body,
            y,
            "Per-packet cost, BPF_PROG_TEST_RUN (ns/packet, median, min-max)",
            "ns",
            &cost,
            "#c8783c",
        );
    }
    let _ = writeln!(
        body,
        r##"<text x="10" y="{:.1}" font-size="11" fill="#555">kernel {}, {} run(s); compare only within one run</text>"##,
        y + 4.0,
        esc(&r.meta.kernel),
        r.meta.runs
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"{:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        y + 16.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::CostLab;

    fn live_sample(mpps: f64, hits: u64) -> LiveSample {
        LiveSample {
            mpps,
            packets: (mpps * 1e6) as u64,
            seconds: 1.0,
            conn_hits: hits,
            conn_misses: 100 - hits,
        }
    }

    fn report() -> Report {
        let live = live_rows(&[
            (
                Variant::Reflect,
                vec![live_sample(5.0, 0), live_sample(4.0, 0)],
            ),
            (
                Variant::Dr,
                vec![live_sample(4.6, 100), live_sample(4.4, 100)],
            ),
            (Variant::Ipip, vec![live_sample(4.0, 100)]),
            (Variant::IpipMiss, vec![live_sample(3.0, 0)]),
            (
                Variant::Kernel,
                vec![live_sample(1.0, 0), live_sample(1.2, 0)],
            ),
        ]);
        let specs = CostLab::paths();
        let samples: Vec<(String, Vec<CostSample>)> = specs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ns = match p.id.as_str() {
                    "reflect" => 30.0,
                    "wrap_reflect" => 45.0,
                    _ => 50.0 + i as f64,
                };
                (
                    p.id.clone(),
                    vec![CostSample {
                        ns,
                        verdict: p.expect,
                        conn_hits: 9,
                        conn_misses: 1,
                    }],
                )
            })
            .collect();
        let cost = cost_rows(&specs, &samples);
        let control = Control {
            maglev_build: vec![MaglevRow {
                backends: 100,
                table: 65537,
                samples_ms: vec![1.0, 2.0, 3.0],
                ms: Summary::of(&[1.0, 2.0, 3.0]),
            }],
            ..Default::default()
        };
        let targets = targets(&live, &cost, &control);
        Report {
            meta: Meta {
                kernel: "test".into(),
                cpus: 2,
                quick: true,
                runs: 2,
                window_s: 1.0,
                warmup_s: 0.1,
                traffic: "mix".into(),
                flows_per_template: 1024,
                cost_repeat: 1000,
                started_unix: 0,
            },
            live,
            cost,
            control,
            targets,
        }
    }

    #[test]
    fn ratios_are_medians_over_the_baselines() {
        let r = report();
        let dr = r.live.iter().find(|x| x.id == "dr").unwrap();
        assert!((dr.vs_reflect.unwrap() - 4.5 / 4.5).abs() < 1e-9);
        assert!((dr.vs_kernel.unwrap() - 4.5 / 1.1).abs() < 1e-9);
        assert_eq!(dr.conn_hit_share, Some(1.0));
        assert_eq!(
            r.live
                .iter()
                .find(|x| x.id == "kernel")
                .unwrap()
                .conn_hit_share,
            None
        );
        let wr = r.cost.iter().find(|x| x.spec.id == "wrap_reflect").unwrap();
        // wrapper cost 15 ns: net of the wrapped reflector is the bare reflector
        assert!((wr.net_ns.unwrap() - 30.0).abs() < 1e-9);
        assert!((wr.vs_reflect.unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(wr.conn_hit_share, Some(0.9));
    }

    #[test]
    fn json_has_every_variant_path_and_target() {
        let r = report();
        let v = serde_json::to_value(&r).unwrap();
        let ids: Vec<&str> = v["live"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["reflect", "dr", "ipip", "ipip_miss", "kernel"]);
        assert_eq!(v["cost"].as_array().unwrap().len(), CostLab::paths().len());
        for row in v["cost"].as_array().unwrap() {
            assert!(row["id"].is_string() && row["ns"]["median"].is_number());
            assert!(row["samples"].as_array().unwrap().len() == 1);
        }
        assert!(v["live"][0]["samples"][0]["mpps"].is_number());
        assert_eq!(v["targets"].as_array().unwrap().len(), 7);
        let maglev = r.targets.last().unwrap();
        assert_eq!(maglev.value, Some(2.0));
        assert_eq!(maglev.met, Some(true));
    }

    #[test]
    fn table_and_svg_mention_every_row() {
        let r = report();
        let t = render(&r);
        let s = svg(&r);
        for row in &r.live {
            assert!(t.contains(&row.label));
            assert!(s.contains(&esc(&row.label)));
        }
        for row in &r.cost {
            assert!(t.contains(&row.spec.label));
        }
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<rect").count(), 1 + r.live.len() + r.cost.len());
    }
}
