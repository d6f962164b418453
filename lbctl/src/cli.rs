//! Command-line interface of `lbctl` (clap).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// An XDP Layer-4 load balancer with VRRP failover and backend health checks.
#[derive(Debug, Parser)]
#[command(name = "lbctl", version, about)]
pub struct Cli {
    /// Log format on stderr. The level comes from LBCTL_LOG or RUST_LOG
    /// (default "info"), e.g. LBCTL_LOG=lbctl=debug.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach the data plane, check backends, follow the config.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file without touching the system.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show VIPs, backends, health and VRRP state of the running daemon.
    Status {
        /// Where to find the daemon.
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show packet/byte counters per VIP and backend, and every reason counter.
    Stats {
        /// Where to find the daemon.
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read its configuration file.
    Reload {
        /// Where to find the daemon.
        #[command(flatten)]
        target: Target,
    },
    /// Decapsulate IPIP/IP6IP6 on a real server with the XDP `decap` program
    /// (runs until SIGINT/SIGTERM).
    Decap {
        /// Interface tunnelled packets arrive on.
        #[arg(long)]
        iface: String,
        /// Tunnel endpoint address to accept (repeatable).
        #[arg(long = "addr", required = true)]
        addrs: Vec<IpAddr>,
        /// Attach mode.
        #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
        mode: ModeArg,
    },
    /// Convert a keepalived.conf (VRRP instances and scripts, LVS virtual
    /// servers and their checkers) to an lb.toml, and validate it. What has no
    /// lbctl equivalent is named with its file:line:column; what would change
    /// where traffic goes is an error, and nothing is written.
    ImportKeepalived {
        /// The keepalived.conf to read (its `include`s are followed).
        file: PathBuf,
        /// node.interface (default: the first vrrp_instance's interface).
        #[arg(long)]
        interface: Option<String>,
        /// Outer source address for IPIP (`lb_kind TUN`), one per family (repeatable).
        #[arg(long = "ipip-source")]
        ipip_source: Vec<IpAddr>,
        /// Write the lb.toml to this new file (an existing one is left alone)
        /// instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// How to reach the daemon's control socket.
#[derive(Debug, Args)]
pub struct Target {
    /// The daemon's configuration file (its node.state_dir holds the socket).
    #[arg(long, short, conflicts_with = "socket")]
    pub config: Option<PathBuf>,
    /// The control socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// `--mode` of `lbctl decap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Driver mode, falling back to skb mode.
    Auto,
    /// Driver (native) mode only.
    Driver,
    /// Generic (skb) mode only.
    Skb,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_decap() {
        let c = Cli::try_parse_from([
            "lbctl",
            "decap",
            "--iface",
            "eth0",
            "--addr",
            "10.0.0.1",
            "--addr",
            "2001:db8::1",
            "--mode",
            "skb",
        ])
        .unwrap();
        match c.command {
            Command::Decap { iface, addrs, mode } => {
                assert_eq!(iface, "eth0");
                assert_eq!(addrs.len(), 2);
                assert_eq!(mode, ModeArg::Skb);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["lbctl", "decap", "--iface", "eth0"]).is_err());
        assert!(
            Cli::try_parse_from(["lbctl", "status", "--config", "a", "--socket", "b"]).is_err()
        );
    }
}
