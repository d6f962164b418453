//! `lbctl` command-line entry point.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use lbctl::api::{self, Request, Response};
use lbctl::cli::{Cli, Command, LogFormat, ModeArg, Target};
use lbctl::config;
use lbctl::daemon;
use lbctl::dataplane::xdp::AttachMode;
use lbctl::import::keepalived;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Default control socket (the default `node.state_dir`).
const DEFAULT_SOCKET: &str = "/run/lbctl/lbctl.sock";

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LBCTL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lbctl: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lbctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Check { config } => Ok(check(&config)),
        Command::Run { config } => {
            let systemd = daemon::systemd::Systemd::from_env();
            match daemon::run_with(config, CancellationToken::new(), None, systemd).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(daemon::DaemonError::Config(e)) => {
                    eprintln!("{e}");
                    eprintln!("lbctl: configuration refused; nothing was applied");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Status { target, json } => {
            let r = ask(&target, Request::Status).await?;
            print_response(&r, json)
        }
        Command::Stats { target, json } => {
            let r = ask(&target, Request::Stats).await?;
            print_response(&r, json)
        }
        Command::Reload { target } => {
            let r = ask(&target, Request::Reload).await?;
            print_response(&r, false)
        }
        Command::Decap { iface, addrs, mode } => {
            let mode = match mode {
                ModeArg::Auto => AttachMode::Auto,
                ModeArg::Driver => AttachMode::Driver,
                ModeArg::Skb => AttachMode::Skb,
            };
            daemon::run_decap(&iface, &addrs, mode, CancellationToken::new()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportKeepalived {
            file,
            interface,
            ipip_source,
            output,
        } => import_keepalived(
            &file,
            &keepalived::Options {
                interface,
                ipip_source,
            },
            output.as_deref(),
        ),
    }
}

/// `lbctl import-keepalived`: convert, print the notes, validate, write.
fn import_keepalived(
    file: &std::path::Path,
    opts: &keepalived::Options,
    output: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let conv = match keepalived::convert(&name, &text, &keepalived::FileIncludes, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("lbctl: {name} cannot be converted; nothing was written");
            return Ok(ExitCode::FAILURE);
        }
    };
    for n in &conv.notes {
        eprintln!("{}", keepalived::NoteLine(n, &conv.files));
    }
    let out_name = output.map_or_else(|| "<output>".to_owned(), |p| p.display().to_string());
    if let Err(e) = config::parse(&conv.toml, &out_name) {
        for d in e.diagnostics() {
            match keepalived::source_of(&conv.toml, d.position.line) {
                Some(src) => eprintln!("{d} (converted from {src})"),
                None => eprintln!("{d}"),
            }
        }
        eprintln!("lbctl: the converted config does not validate (above); nothing was written");
        return Ok(ExitCode::FAILURE);
    }
    match output {
        None => print!("{}", conv.toml),
        Some(path) => {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "creating {} (an existing file is left alone)",
                        path.display()
                    )
                })?;
            f.write_all(conv.toml.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "lbctl: wrote {} ({} warnings)",
                path.display(),
                conv.notes.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            println!(
                "{}: OK ({} VIPs, {} VRRP instances)",
                path.display(),
                cfg.vips.len(),
                cfg.vrrp_instances.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn socket_path(target: &Target) -> anyhow::Result<PathBuf> {
    if let Some(s) = &target.socket {
        return Ok(s.clone());
    }
    if let Some(c) = &target.config {
        return daemon::socket_of_config(c).map_err(|e| anyhow::anyhow!("{e}"));
    }
    Ok(PathBuf::from(DEFAULT_SOCKET))
}

async fn ask(target: &Target, req: Request) -> anyhow::Result<Response> {
    let path = socket_path(target)?;
    api::call(&path, req)
        .await
        .with_context(|| format!("talking to the daemon at {}", path.display()))
}

fn print_response(r: &Response, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let body = match r {
            Response::Status(s) => serde_json::to_string_pretty(s)?,
            Response::Stats(s) => serde_json::to_string_pretty(s)?,
            other => serde_json::to_string_pretty(other)?,
        };
        println!("{body}");
        return Ok(if matches!(r, Response::Error { .. }) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    match r {
        Response::Status(s) => print!("{}", api::render_status(s)),
        Response::Stats(s) => print!("{}", api::render_stats(s)),
        Response::Reloaded(rep) => println!(
            "reloaded: config generation {} (checks: {} started, {} stopped, {} kept; {} changed, restarted keeping their health)",
            rep.config_generation,
            rep.checks_started,
            rep.checks_stopped,
            rep.checks_kept,
            rep.checks_restarted
        ),
        Response::Error { message } => {
            eprintln!("{message}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
