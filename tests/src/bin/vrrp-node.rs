//! `vrrp-node CONFIG [STATS_FILE]`: run the `[[vrrp_instance]]`s of an
//! lb.toml with lbctl's VRRP shell, for the namespace tests (run it with
//! `ip netns exec`). SIGTERM / SIGINT stop it cleanly (priority 0, VIPs
//! removed); SIGKILL is the crash case. Logs go to stderr (`RUST_LOG`,
//! default info). With STATS_FILE, the state and counters of every instance
//! are written there (replaced atomically) every 100 ms and at exit, one
//! line per instance: `NAME STATE PRIORITY Counters{..} ShellCounters{..}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use lbctl::vrrp::{Instances, run_instances};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

fn write_stats(path: &Path, instances: &Instances) -> Result<()> {
    let mut text = String::new();
    for h in instances.iter() {
        let s = h.state();
        text.push_str(&format!(
            "{} {:?} {} {:?} {:?}\n",
            h.name(),
            s.state,
            s.priority,
            h.counters(),
            h.shell_counters()
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args_os().skip(1);
    let config = PathBuf::from(
        args.next()
            .context("usage: vrrp-node CONFIG [STATS_FILE]")?,
    );
    let stats = args.next().map(PathBuf::from);
    let cfg = lbctl::config::load(&config)?;
    let cancel = CancellationToken::new();
    let instances = run_instances(&cfg, None, &cancel).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                if let Some(p) = &stats {
                    write_stats(p, &instances)?;
                }
                if instances.iter().all(|h| h.is_finished()) {
                    tracing::error!("every instance has stopped");
                    break;
                }
            }
        }
    }
    cancel.cancel();
    // Final counters before the handles go away.
    if let Some(p) = &stats {
        // Give the instances a moment to finish their shutdown actions.
        tokio::time::sleep(Duration::from_millis(50)).await;
        write_stats(p, &instances)?;
    }
    let errors = instances.shutdown().await;
    for e in &errors {
        tracing::error!(error = %e, "instance failed");
    }
    anyhow::ensure!(errors.is_empty(), "{} instance(s) failed", errors.len());
    Ok(())
}
