//! lbctl's benchmarking rig: live packet rate through network namespaces,
//! per-packet cost through BPF_PROG_TEST_RUN, control-plane figures.
//! See `bench/README.md` for the method and how to read the output.

pub mod control;
pub mod cost;
pub mod flows;
pub mod lab;
pub mod live;
pub mod report;
pub mod stats;
pub mod sys;

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    control::SwitchLab,
    cost::{CostLab, CostSample},
    lab::BenchObject,
    live::{LiveLab, LiveSample, Topology, Variant},
    report::{Control, MaglevRow, Meta, Report, SwitchRow},
    stats::Summary,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Smoke mode.
    pub quick: bool,
    /// Samples per variant / path.
    pub runs: usize,
    /// Live window.
    pub window: Duration,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Live traffic mix.
    pub traffic: String,
    /// Flows per template.
    pub flows: u32,
    /// Repeat count per cost sample.
    pub cost_repeat: u32,
    /// Cost paths to measure besides the baselines (empty: all).
    pub cost_paths: Vec<String>,
    /// Parts to run.
    pub live: bool,
    /// Per-packet cost.
    pub cost: bool,
    /// Control-plane figures.
    pub control: bool,
    /// Output directory.
    pub out: PathBuf,
}

/// Progress on stderr: one rewritten line on a terminal, plain lines otherwise.
pub struct Progress {
    total: usize,
    done: usize,
    tty: bool,
}

impl Progress {
    /// A display for `total` steps.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Starts a step.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format!("[{:>3}/{}] {what}", self.done.min(self.total), self.total);
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }

    /// Reports the result of the current step.
    pub fn note(&mut self, what: &str) {
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "  {what}");
        } else {
            let _ = writeln!(e, "        {what}");
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Runs the rig and writes `report.json` and `report.svg` to `opts.out`.
///
/// # Errors
/// Any setup or measurement failure, or an interrupt; namespaces and
/// programs are removed in every case.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    sys::install_handlers()?;
    sys::reap_stale(live::NS_PREFIX);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let templates = lab::traffic(&opts.traffic)?;

    let n_live = if opts.live {
        Variant::ALL.len() * opts.runs
    } else {
        0
    };
    let n_cost = if opts.cost { opts.runs } else { 0 };
    let n_ctl = if opts.control { 3 + 2 * opts.runs } else { 0 };
    let mut progress = Progress::new(n_live + n_cost + n_ctl);

    let mut bench = BenchObject::load()?;
    let mut hit = lab::dataplane(
        lb_common::DEFAULT_CONN_TABLE_SIZE,
        &lab::desired(lbctl::dataplane::Forwarding::Dr),
    )?;
    let mut miss = lab::dataplane(
        lab::MISS_TABLE,
        &lab::desired(lbctl::dataplane::Forwarding::Ipip),
    )?;

    let mut live_samples: Vec<(Variant, Vec<LiveSample>)> =
        Variant::ALL.iter().map(|v| (*v, Vec::new())).collect();
    if opts.live {
        let mut topo = Topology::build(&mut bench)?;
        let mut lab = LiveLab {
            bench: &mut bench,
            hit: &mut hit,
            miss: &mut miss,
            topo: &topo,
            templates: templates.clone(),
            flows: opts.flows,
            warmup: opts.warmup,
            window: opts.window,
        };
        let mut result = Ok(());
        'runs: for run in 0..opts.runs {
            for (v, samples) in live_samples.iter_mut() {
                progress.step(&format!(
                    "live run {}/{}: {}",
                    run + 1,
                    opts.runs,
                    v.label()
                ));
                match lab.sample(*v) {
                    Ok(s) => {
                        progress.note(&format!("{:.2} Mpps", s.mpps));
                        samples.push(s);
                    }
                    Err(e) => {
                        result = Err(e.context(format!("live variant {}", v.id())));
                        break 'runs;
                    }
                }
            }
        }
        topo.detach(&mut bench);
        drop(topo);
        result?;
    }

    let specs = CostLab::paths();
    let mut cost_samples: Vec<(String, Vec<CostSample>)> =
        specs.iter().map(|p| (p.id.clone(), Vec::new())).collect();
    if opts.cost {
        let _pin = sys::Pin::to(0)?;
        let mut lab = CostLab {
            bench: &mut bench,
            hit: &mut hit,
            miss: &mut miss,
            repeat: opts.cost_repeat,
            only: &opts.cost_paths,
        };
        for run in 0..opts.runs {
            progress.step(&format!("per-packet cost run {}/{}", run + 1, opts.runs));
            for (id, s) in lab.sample_all(|_| ())? {
                if let Some((_, v)) = cost_samples.iter_mut().find(|(x, _)| *x == id) {
                    v.push(s);
                }
            }
        }
    }

    let mut control = Control::default();
    if opts.control {
        let builds = if opts.quick { 3 } else { opts.runs.max(5) };
        for n in [10u32, 100, 1000] {
            progress.step(&format!("Maglev build, {n} backends"));
            let mut ms = Vec::new();
            for _ in 0..builds {
                sys::check_stop()?;
                ms.push(control::maglev_build_ms(n)?);
            }
            control.maglev_build.push(MaglevRow {
                backends: n,
                table: control::TABLE,
                ms: Summary::of(&ms),
                samples_ms: ms,
            });
        }
        for n in [10u32, 100] {
            control.remap.push(control::remap(n)?);
        }
        let mut sw = SwitchLab::new()?;
        let mut switch = Vec::new();
        let mut death = Vec::new();
        let interval = if opts.quick {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        };
        for run in 0..opts.runs {
            progress.step(&format!("table switch {}/{}", run + 1, opts.runs));
            switch.push(sw.switch(10 + run as u8 % 80)?);
            progress.step(&format!("backend death {}/{}", run + 1, opts.runs));
            death.push(sw.death(20 + run as u8 % 70, interval)?);
        }
        let sum = |v: &[control::SwitchSample], f: fn(&control::SwitchSample) -> f64| {
            Summary::of(&v.iter().map(f).collect::<Vec<_>>())
        };
        control.switches.push(SwitchRow {
            what: "full table switch (1 of 100 backends leaves)".into(),
            interval_ms: None,
            fall: None,
            detect_ms: None,
            apply_ms: sum(&switch, |s| s.apply_ms),
            visible_ms: sum(&switch, |s| s.visible_ms),
            samples: switch,
        });
        control.switches.push(SwitchRow {
            what: "backend death to removal".into(),
            interval_ms: Some(interval.as_secs_f64() * 1e3),
            fall: Some(3),
            detect_ms: sum(&death, |s| s.detect_ms),
            apply_ms: sum(&death, |s| s.apply_ms),
            visible_ms: sum(&death, |s| s.visible_ms),
            samples: death,
        });
    }
    progress.finish();

    let live_rows = if opts.live {
        report::live_rows(&live_samples)
    } else {
        Vec::new()
    };
    let cost_rows = if opts.cost {
        report::cost_rows(&specs, &cost_samples)
    } else {
        Vec::new()
    };
    let targets = report::targets(&live_rows, &cost_rows, &control);
    let report = Report {
        meta: Meta {
            kernel: kernel(),
            cpus,
            quick: opts.quick,
            runs: opts.runs,
            window_s: opts.window.as_secs_f64(),
            warmup_s: opts.warmup.as_secs_f64(),
            traffic: opts.traffic.clone(),
            flows_per_template: crate::flows::flow_mask(opts.flows) + 1,
            cost_repeat: opts.cost_repeat,
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
        live: live_rows,
        cost: cost_rows,
        control,
        targets,
    };
    let json = opts.out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = opts.out.join("report.svg");
    std::fs::write(&svg, report::svg(&report))
        .with_context(|| format!("writing {}", svg.display()))?;
    Ok(report)
}
