//! The daemon's data plane: XDP or kernel IPVS, chosen by `node.dataplane`.
//!
//! [`Plane`] is the one thing the owner task hands each [`DesiredState`] to;
//! both data planes take the same state and write only the difference
//! (XDP against its maps, IPVS against the kernel's tables).
//!
//! - `"xdp"`: load and attach the XDP program (adopting a kept one when
//!   `keep_dataplane_on_exit` is set); failure stops the daemon.
//! - `"ipvs"`: open the kernel's IPVS generic netlink family.
//! - `"auto"`: XDP; when the program cannot be loaded or attached, IPVS,
//!   with a warning in the log and the reason in `lbctl status`
//!   ([`Started::note`]).
//!
//! IPVS specifics:
//! - At start the IPVS data plane reads its ownership record
//!   (`{state_dir}/ipvs-owned.json`) and the kernel: services lbctl created
//!   before a crash are reconciled, services it did not create are left
//!   alone (and listed by `lbctl status`). The backends it finds with a
//!   weight above 0 start as healthy ([`Plane::kernel_health`]), so a
//!   restart does not zero weights until checks rise again.
//! - VRRP: a VIP whose instance is BACKUP keeps its IPVS service and real
//!   servers, as keepalived + LVS do: the virtual address, which only the
//!   MASTER holds, decides where traffic arrives, and a takeover needs no
//!   IPVS write. (The XDP data plane passes an inactive VIP's packets to
//!   the kernel instead.)
//! - Next hops are the kernel's business: the neighbour resolver does not
//!   run ([`reconcile::Inputs::kernel_resolves_next_hops`]).
//! - On stop the services lbctl owns are deleted, unless
//!   `keep_dataplane_on_exit` is set: then they stay, with the record, and
//!   the next run reconciles them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use super::pin::{self, PinDir};
use super::reconcile::{self, BackendKey};
use super::{DaemonError, attach_mode, load_options, lock};
use crate::config::{self, Config, DataplaneKind, OnUnhealthy};
use crate::dataplane::ipvs::{
    self, IpvsDataplane, IpvsError, IpvsForwarding, IpvsOptions, IpvsStatus, UnhealthyAction,
    VipOptions,
};
use crate::dataplane::xdp::{self, AdoptedBackend, CounterSum, XdpDataplane, programs};
use crate::dataplane::{DesiredState, VipSpec};

/// The running data plane.
pub enum Plane {
    /// The XDP program.
    Xdp {
        /// The loaded, attached program and its maps.
        dp: Box<XdpDataplane>,
        /// Its pins (used with `keep_dataplane_on_exit`).
        pins: PinDir,
        /// With `keep_dataplane_on_exit`: the adoption record, rewritten
        /// after every change so a crashed daemon's successor can adopt.
        record: Option<PathBuf>,
        /// "driver", "skb" or "adopted".
        mode: String,
        /// Taken over from an earlier run (still pinned, forwarding).
        adopted: bool,
        /// With `keep_dataplane_on_exit`: held while this daemon keeps the
        /// pins, so no other daemon removes them.
        pins_lock: Option<lock::PinsLock>,
    },
    /// Kernel IPVS.
    Ipvs(IpvsDataplane),
}

/// A started data plane.
pub struct Started {
    /// The data plane.
    pub plane: Plane,
    /// Backends found in an adopted XDP data plane (empty otherwise).
    pub adopted: BTreeMap<(VipSpec, IpAddr), AdoptedBackend>,
    /// Why the data plane is not the configured one (`auto` fell back).
    pub note: Option<String>,
}

/// What one `apply` wrote.
#[derive(Debug)]
pub enum ApplyReport {
    /// XDP maps.
    Xdp(xdp::ApplyReport),
    /// IPVS services and real servers.
    Ipvs(ipvs::ApplyReport),
}

impl ApplyReport {
    /// Nothing was written.
    pub fn is_empty(&self) -> bool {
        match self {
            ApplyReport::Xdp(r) => r.is_empty(),
            ApplyReport::Ipvs(r) => r.is_empty(),
        }
    }
}

/// Errors of [`Plane`] operations after start.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// XDP maps.
    #[error("{0}")]
    Xdp(#[from] xdp::XdpError),
    /// IPVS netlink.
    #[error("{0}")]
    Ipvs(#[from] IpvsError),
}

/// Counters in one shape for both data planes.
#[derive(Clone, Debug, Default)]
pub struct PlaneStats {
    /// Per VIP (IPVS: client-to-server direction).
    pub vips: BTreeMap<VipSpec, CounterSum>,
    /// Per (VIP, backend address).
    pub backends: BTreeMap<VipSpec, BTreeMap<IpAddr, CounterSum>>,
    /// XDP pass/drop/forward reasons (empty for IPVS).
    pub reasons: BTreeMap<&'static str, u64>,
}

/// The IPVS data plane's settings for a config.
pub fn ipvs_options(cfg: &Config) -> IpvsOptions {
    let unhealthy = |o: OnUnhealthy| match o {
        OnUnhealthy::Drain => UnhealthyAction::Zero,
        OnUnhealthy::Remove => UnhealthyAction::Remove,
    };
    let mut o = IpvsOptions::new(&cfg.node.state_dir);
    o.unhealthy = unhealthy(cfg.node.on_unhealthy);
    for vip in &cfg.vips {
        o.vips.insert(
            reconcile::vip_spec(&vip.identity()),
            VipOptions {
                scheduler: Some(vip.scheduler),
                forwarding: Some(match vip.forwarding {
                    config::Forwarding::Dr => IpvsForwarding::Dr,
                    config::Forwarding::Ipip => IpvsForwarding::Ipip,
                    config::Forwarding::Nat => IpvsForwarding::Nat,
                }),
                persistence: vip
                    .persistence_timeout
                    .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
                unhealthy: Some(unhealthy(vip.on_unhealthy)),
            },
        );
    }
    o
}

fn start_xdp(cfg: &Config) -> Result<Started, DaemonError> {
    let opts = load_options(cfg);
    let pins = PinDir::for_interface(&cfg.node.interface);
    let mode = attach_mode(cfg.node.xdp_mode);
    // Before any pin is touched: pins found may be a running daemon's.
    let pins_lock = if cfg.node.keep_dataplane_on_exit || pins.dir().exists() {
        Some(lock::acquire_pins(
            Path::new(lock::PINS_LOCK_DIR),
            &cfg.node.interface,
        )?)
    } else {
        None
    };
    let started = if cfg.node.keep_dataplane_on_exit {
        pin::start_pinned(&pins, opts, mode, &cfg.node.state_dir)?
    } else {
        // A data plane kept by an earlier run that is gone is replaced
        // (keeping is off now).
        pin::remove_pins(&pins);
        let mut dp = XdpDataplane::load(opts)?;
        let m = dp.attach(programs::LB, &cfg.node.interface, mode)?;
        pin::Started {
            dp,
            mode: format!("{m:?}").to_lowercase(),
            adopted: BTreeMap::new(),
        }
    };
    Ok(Started {
        plane: Plane::Xdp {
            dp: Box::new(started.dp),
            record: cfg
                .node
                .keep_dataplane_on_exit
                .then(|| pins.snapshot_file(&cfg.node.state_dir)),
            pins,
            adopted: started.mode == "adopted",
            mode: started.mode,
            pins_lock: pins_lock.filter(|_| cfg.node.keep_dataplane_on_exit),
        },
        adopted: started.adopted,
        note: None,
    })
}

fn start_ipvs(cfg: &Config) -> Result<Started, IpvsError> {
    let dp = IpvsDataplane::open(ipvs_options(cfg))?;
    Ok(Started {
        plane: Plane::Ipvs(dp),
        adopted: BTreeMap::new(),
        note: None,
    })
}

/// Starts the data plane `node.dataplane` asks for.
///
/// # Errors
/// The chosen data plane cannot start (with `auto`: neither can).
pub fn start(cfg: &Config) -> Result<Started, DaemonError> {
    match cfg.node.dataplane {
        DataplaneKind::Xdp => start_xdp(cfg),
        DataplaneKind::Ipvs => Ok(start_ipvs(cfg)?),
        DataplaneKind::Auto => match start_xdp(cfg) {
            // Another daemon's data plane: not a reason to fall back (and
            // its pins must stay).
            Err(e @ DaemonError::Lock(_)) => Err(e),
            xdp => fallback(xdp, || {
                // Whatever an earlier run kept pinned would go on forwarding
                // beside IPVS with stale tables.
                pin::remove_pins(&PinDir::for_interface(&cfg.node.interface));
                start_ipvs(cfg)
            }),
        },
    }
}

/// `auto`: the XDP result, or IPVS when XDP failed.
fn fallback(
    xdp: Result<Started, DaemonError>,
    ipvs: impl FnOnce() -> Result<Started, IpvsError>,
) -> Result<Started, DaemonError> {
    let xdp_err = match xdp {
        Ok(s) => {
            info!("dataplane = \"auto\": using XDP");
            return Ok(s);
        }
        Err(e) => e,
    };
    warn!(error = %xdp_err, "dataplane = \"auto\": the XDP program cannot be loaded or attached; falling back to kernel IPVS");
    match ipvs() {
        Ok(mut s) => {
            s.note = Some(format!("auto: XDP unavailable ({xdp_err}); using IPVS"));
            Ok(s)
        }
        Err(e) => Err(DaemonError::Unsupported(format!(
            "dataplane = \"auto\": XDP failed ({xdp_err}) and IPVS failed ({e})"
        ))),
    }
}

impl Plane {
    /// "xdp" or "ipvs".
    pub fn kind(&self) -> &'static str {
        match self {
            Plane::Xdp { .. } => "xdp",
            Plane::Ipvs(_) => "ipvs",
        }
    }

    /// The XDP attach mode, or "-" for IPVS.
    pub fn mode(&self) -> &str {
        match self {
            Plane::Xdp { mode, .. } => mode,
            Plane::Ipvs(_) => "-",
        }
    }

    /// The kernel resolves next hops (no neighbour resolver needed).
    pub fn kernel_resolves_next_hops(&self) -> bool {
        matches!(self, Plane::Ipvs(_))
    }

    /// Writes the difference between the data plane and `desired`.
    ///
    /// # Errors
    /// Map or netlink errors; what was written stays.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, PlaneError> {
        Ok(match self {
            Plane::Xdp { dp, record, .. } => {
                let report = dp.apply(desired)?;
                if let Some(path) = record
                    && !report.is_empty()
                    && let Err(e) = pin::save_record(path, dp)
                {
                    // Forwarding is unaffected; only a crash's successor loses the record.
                    warn!(error = %e, "saving the data plane record failed");
                }
                ApplyReport::Xdp(report)
            }
            Plane::Ipvs(dp) => ApplyReport::Ipvs(dp.apply(desired)?),
        })
    }

    /// Takes a new config's per-VIP settings (IPVS scheduler, forwarding,
    /// persistence, on_unhealthy); effective at the next `apply`.
    pub fn configure(&mut self, cfg: &Config) {
        if let Plane::Ipvs(dp) = self {
            dp.set_options(ipvs_options(cfg));
        }
    }

    /// Counters.
    ///
    /// # Errors
    /// Map or netlink errors.
    pub fn stats(&mut self) -> Result<PlaneStats, PlaneError> {
        match self {
            Plane::Xdp { dp, .. } => {
                let s = dp.stats()?;
                Ok(PlaneStats {
                    vips: s.vips,
                    backends: s.backends,
                    reasons: s.reasons,
                })
            }
            Plane::Ipvs(dp) => {
                let s = dp.stats()?;
                Ok(PlaneStats {
                    vips: s.vips,
                    backends: s.backends,
                    reasons: BTreeMap::new(),
                })
            }
        }
    }

    /// The kernel's IPVS table (`None` for XDP).
    ///
    /// # Errors
    /// Netlink errors.
    pub fn ipvs_status(&mut self) -> Result<Option<IpvsStatus>, PlaneError> {
        match self {
            Plane::Xdp { .. } => Ok(None),
            Plane::Ipvs(dp) => Ok(Some(dp.status()?)),
        }
    }

    /// IPVS after a restart: the configured backends the kernel already
    /// holds with a weight above 0 in a service lbctl owns, as healthy, so
    /// the first reconcile keeps them (their checks start "up" and must
    /// fail `fall` times). Empty for XDP, or when nothing is found.
    pub fn kernel_health(&mut self, cfg: &Config) -> BTreeMap<BackendKey, bool> {
        let mut out = BTreeMap::new();
        let status = match self.ipvs_status() {
            Ok(Some(s)) => s,
            Ok(None) => return out,
            Err(e) => {
                warn!(error = %e, "reading the IPVS table at start failed; backends start down");
                return out;
            }
        };
        let up: BTreeSet<(VipSpec, IpAddr)> = status
            .services
            .iter()
            .filter(|s| s.owned)
            .filter_map(|s| s.vip.map(|v| (v, s)))
            .flat_map(|(v, s)| {
                s.dests
                    .iter()
                    .filter(|d| d.config.weight > 0)
                    .map(move |d| (v, d.key.addr))
            })
            .collect();
        for vip in &cfg.vips {
            let spec = reconcile::vip_spec(&vip.identity());
            for b in &vip.backends {
                if up.contains(&(spec, b.address)) {
                    out.insert(
                        BackendKey {
                            vip: vip.identity(),
                            addr: b.address,
                        },
                        true,
                    );
                }
            }
        }
        if !out.is_empty() {
            info!(
                backends = out.len(),
                "IPVS: backends found serving in lbctl's services start as healthy"
            );
        }
        out
    }

    /// Stops the data plane: XDP detaches (or stays pinned), IPVS removes
    /// lbctl's services (or keeps them) per `keep_dataplane_on_exit`.
    pub fn stop(self, cfg: &Config) {
        let keep = cfg.node.keep_dataplane_on_exit;
        match self {
            Plane::Xdp { mut dp, pins, .. } => {
                if keep {
                    match pin::keep(&pins, &mut dp, &cfg.node.state_dir) {
                        Ok(()) => {
                            info!(dir = %pins.dir().display(), "data plane left running and pinned for the next lbctl run")
                        }
                        Err(e) => {
                            error!(error = %e, "pinning the data plane failed; detaching");
                            dp.detach_all();
                            pin::remove_pins(&pins);
                        }
                    }
                } else {
                    dp.detach_all();
                }
            }
            Plane::Ipvs(mut dp) => {
                if keep {
                    info!(
                        services = dp.owned().len(),
                        "IPVS services left in the kernel for the next lbctl run"
                    );
                } else {
                    match dp.remove_owned() {
                        Ok(n) => info!(services = n, "IPVS services of lbctl removed"),
                        Err(e) => error!(error = %e, "removing lbctl's IPVS services failed"),
                    }
                }
            }
        }
    }

    /// Undoes a start when the daemon cannot go on (socket in use, VRRP
    /// does not start): a fresh XDP data plane detaches and unpins; an
    /// adopted one is left pinned and forwarding, as it was found (its
    /// record is untouched: nothing was applied); IPVS has written nothing.
    pub fn abort(self) {
        match self {
            Plane::Xdp {
                dp,
                pins,
                adopted: true,
                ..
            } => {
                // The link is pinned (moved out of `dp`): dropping `dp`
                // leaves the program attached.
                drop(dp);
                info!(dir = %pins.dir().display(), "start aborted: the adopted data plane stays pinned and forwarding");
            }
            Plane::Xdp { mut dp, pins, .. } => {
                dp.detach_all();
                pin::remove_pins(&pins);
            }
            Plane::Ipvs(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(node: &str, vip: &str) -> Config {
        let text = format!(
            "[node]\ninterface = \"lo\"\nstate_dir = \"/tmp/lbctl-plane-test\"\n{node}\n\
             [[vip]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\n{vip}\n\
             [[vip.backend]]\naddress = \"10.0.1.1\"\n"
        );
        config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ipvs_options_follow_the_config() {
        let c = cfg(
            "dataplane = \"ipvs\"\non_unhealthy = \"remove\"",
            "scheduler = \"wrr\"\nforwarding = \"nat\"\npersistence_timeout = \"2m\"",
        );
        let o = ipvs_options(&c);
        assert_eq!(o.state_dir, std::path::Path::new("/tmp/lbctl-plane-test"));
        assert_eq!(o.unhealthy, UnhealthyAction::Remove);
        let v = &o.vips[&reconcile::vip_spec(&c.vips[0].identity())];
        assert_eq!(v.scheduler, Some(ipvs::Scheduler::Wrr));
        assert_eq!(v.forwarding, Some(IpvsForwarding::Nat));
        assert_eq!(v.persistence, Some(120));
        assert_eq!(v.unhealthy, Some(UnhealthyAction::Remove), "node default");

        let c = cfg(
            "dataplane = \"auto\"\non_unhealthy = \"remove\"",
            "on_unhealthy = \"drain\"",
        );
        let v = &ipvs_options(&c).vips[&reconcile::vip_spec(&c.vips[0].identity())];
        assert_eq!(v.scheduler, Some(ipvs::Scheduler::Mh), "default mh");
        assert_eq!(v.forwarding, Some(IpvsForwarding::Dr));
        assert_eq!(v.persistence, None);
        assert_eq!(v.unhealthy, Some(UnhealthyAction::Zero), "the VIP's wins");
    }

    #[test]
    fn auto_reports_both_failures() {
        let xdp_failed = Err(DaemonError::Unsupported("no BPF here".into()));
        let mut called = false;
        let r = fallback(xdp_failed, || {
            called = true;
            Err(IpvsError::NoFamily(std::io::Error::other("no ip_vs")))
        });
        assert!(called);
        let msg = match r {
            Err(DaemonError::Unsupported(m)) => m,
            Err(e) => panic!("expected both failures: {e}"),
            Ok(_) => panic!("expected both failures"),
        };
        assert!(
            msg.contains("no BPF here") && msg.contains("no ip_vs"),
            "{msg}"
        );
    }
}
