//! The kernel IPVS data plane: the fallback for hosts where XDP cannot run.
//!
//! [`IpvsDataplane::apply`] takes the same [`DesiredState`] as the XDP data
//! plane, reads what the kernel holds (one `GET_SERVICE` dump, one
//! `GET_DEST` dump per owned service) and sends only the difference over
//! generic netlink, the way `ipvsadm` does, without shelling out. Because it
//! diffs against the kernel, not against its own memory, an `apply` that
//! failed half-way, or a restart after a crash, converges on the next call.
//!
//! # Mapping
//! - VIP `(addr, port, protocol)` → virtual service `(protocol, addr, port)`.
//! - A port-less VIP → a service on port 0. The kernel only schedules port-0
//!   services that are persistent, so such a service gets
//!   `IP_VS_SVC_F_PERSISTENT` with [`IpvsOptions::portless_persistence`]
//!   seconds (clients stick to a real server across ports for that long).
//!   Its real servers get port 0 (keep the client's destination port).
//! - Real servers use the VIP's port (DR and tunnel cannot change it anyway).
//! - `Forwarding::Dr` → route (`-g`), `Forwarding::Ipip` → tunnel (`-i`);
//!   NAT (`-m`) is an IPVS-only choice through [`VipOptions::forwarding`].
//! - Scheduler per service, default [`Scheduler::Mh`] (Maglev, as the XDP
//!   path). With `mh` or `sh`, the XDP hash field `src_port` maps to the
//!   scheduler's port flag (`mh-port`/`sh-port`), and the fallback flag
//!   (`mh-fallback`/`sh-fallback`) is always set: the kernel leaves a real
//!   server of weight 0 in its hash table (it keeps the last weight), and
//!   without fallback a new connection that hashes to it is refused ("no
//!   destination available") instead of going to another real server. With
//!   fallback it is rehashed, so drain means what it means in the XDP path:
//!   no new connections, existing ones stay.
//! - A healthy backend gets its weight (0 drains: no new connections,
//!   existing ones stay). An unhealthy one gets weight 0, or is removed when
//!   [`IpvsOptions::unhealthy`] (or the VIP's [`VipOptions::unhealthy`]) is
//!   [`UnhealthyAction::Remove`].
//! - `VipState::active` (VRRP) does not remove services: like keepalived,
//!   a backup keeps its IPVS table so that taking over is instant; the VIP
//!   address, which VRRP owns, decides where traffic arrives. MACs, ring
//!   sizes, debug flags and node settings are XDP-only and ignored here.
//!
//! # Ownership
//! IPVS has no owner tag, so lbctl keeps a record of the services it
//! created: `ipvs-owned.json` in [`IpvsOptions::state_dir`], replaced
//! atomically (write, fsync, rename). A service is recorded *before* it is
//! created and forgotten *after* it is deleted, so a crash can only leave a
//! record naming a service the kernel no longer has, which the next `apply`
//! drops. lbctl changes and deletes only recorded services; a desired VIP
//! whose service already exists without being recorded is someone else's
//! and is reported as a conflict and left alone, unless
//! [`IpvsOptions::adopt_existing`] is set (for a lost state directory).
//! Real servers inside an owned service all belong to lbctl.

pub mod codec;
pub mod netlink;
mod owned;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
};

use tracing::{debug, info, warn};

pub use self::{
    codec::{
        CodecError, DestConfig, DestEntry, DestKey, FwdMethod, IpvsCounters, ServiceConfig,
        ServiceEntry, ServiceKey,
    },
    netlink::{IpvsKernel, IpvsSocket},
    owned::OwnedRecord,
};
use super::{
    state::{DesiredState, Forwarding, Protocol, VipSpec, VipState},
    xdp::CounterSum,
};

/// Name of the ownership record in the state directory.
pub const OWNED_FILE: &str = "ipvs-owned.json";

/// Default persistence of port-less VIPs, in seconds (`ipvsadm -p`'s default).
pub const DEFAULT_PORTLESS_PERSISTENCE: u32 = 300;

/// Errors of the IPVS data plane.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    /// The kernel has no IPVS family (module `ip_vs` not loaded or built).
    #[error("the kernel has no IPVS generic netlink family (is ip_vs loaded?): {0}")]
    NoFamily(std::io::Error),
    /// The kernel refused a command.
    #[error("IPVS {cmd}: {source}")]
    Kernel {
        /// The command.
        cmd: String,
        /// The errno.
        source: std::io::Error,
    },
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Reading or writing the ownership record failed.
    #[error("ownership record {path}: {source}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value does not fit IPVS.
    #[error("{vip}: {msg}")]
    Invalid {
        /// The VIP.
        vip: VipSpec,
        /// What.
        msg: String,
    },
}

/// IPVS scheduler.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Source hashing.
    Sh,
    /// Maglev hashing.
    #[default]
    Mh,
}

impl Scheduler {
    /// Kernel name.
    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Sh => "sh",
            Scheduler::Mh => "mh",
        }
    }
}

/// How IPVS reaches a VIP's real servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvsForwarding {
    /// Direct routing (`-g`).
    Dr,
    /// IPIP tunnel (`-i`).
    Ipip,
    /// NAT (`-m`); real servers must route replies back through this node.
    Nat,
}

impl IpvsForwarding {
    /// The kernel's method.
    pub const fn method(self) -> FwdMethod {
        match self {
            IpvsForwarding::Dr => FwdMethod::Route,
            IpvsForwarding::Ipip => FwdMethod::Tunnel,
            IpvsForwarding::Nat => FwdMethod::Masq,
        }
    }
}

impl From<Forwarding> for IpvsForwarding {
    fn from(f: Forwarding) -> Self {
        match f {
            Forwarding::Dr => IpvsForwarding::Dr,
            Forwarding::Ipip => IpvsForwarding::Ipip,
        }
    }
}

/// What happens to a backend that fails its health check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnhealthyAction {
    /// Weight 0: no new connections; existing ones run out.
    #[default]
    Zero,
    /// Removed from the service.
    Remove,
}

/// IPVS-only settings of one VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VipOptions {
    /// Scheduler; [`IpvsOptions::default_scheduler`] when unset.
    pub scheduler: Option<Scheduler>,
    /// Forwarding method; the VIP's own (DR/IPIP) when unset.
    pub forwarding: Option<IpvsForwarding>,
    /// Persistence timeout (s): makes the service persistent. Port-less
    /// VIPs are always persistent.
    pub persistence: Option<u32>,
    /// What an unhealthy backend becomes; [`IpvsOptions::unhealthy`] when unset.
    pub unhealthy: Option<UnhealthyAction>,
}

/// Settings of the IPVS data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsOptions {
    /// Where the ownership record lives.
    pub state_dir: PathBuf,
    /// Scheduler of VIPs without their own.
    pub default_scheduler: Scheduler,
    /// What an unhealthy backend becomes.
    pub unhealthy: UnhealthyAction,
    /// Persistence of port-less VIPs (s).
    pub portless_persistence: u32,
    /// Take over services that match the config but are not recorded.
    pub adopt_existing: bool,
    /// Per-VIP settings.
    pub vips: BTreeMap<VipSpec, VipOptions>,
}

impl IpvsOptions {
    /// Defaults with the record in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            default_scheduler: Scheduler::default(),
            unhealthy: UnhealthyAction::default(),
            portless_persistence: DEFAULT_PORTLESS_PERSISTENCE,
            adopt_existing: false,
            vips: BTreeMap::new(),
        }
    }
}

/// Counts of what one `apply` wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Services created.
    pub services_added: usize,
    /// Services deleted.
    pub services_removed: usize,
    /// Services whose scheduler, flags or timeout changed.
    pub services_updated: usize,
    /// Real servers added.
    pub dests_added: usize,
    /// Real servers removed.
    pub dests_removed: usize,
    /// Real servers whose weight, method or thresholds changed.
    pub dests_updated: usize,
    /// Desired VIPs whose service exists but belongs to someone else.
    pub conflicts: Vec<VipSpec>,
}

impl ApplyReport {
    /// Nothing was written.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One service as `lbctl status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    /// The service.
    pub key: ServiceKey,
    /// The VIP it serves, when lbctl owns it.
    pub vip: Option<VipSpec>,
    /// lbctl created it.
    pub owned: bool,
    /// Scheduler, flags, persistence.
    pub config: ServiceConfig,
    /// Counters.
    pub stats: IpvsCounters,
    /// Real servers with weights and connection counts.
    pub dests: Vec<DestEntry>,
}

/// The IPVS view for `lbctl status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IpvsStatus {
    /// Every service in the kernel, lbctl's first.
    pub services: Vec<ServiceStatus>,
}

/// Counters of lbctl's services, in the XDP data plane's shape
/// (`packets`/`bytes` are the client-to-server direction).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Per VIP.
    pub vips: BTreeMap<VipSpec, CounterSum>,
    /// Per (VIP, backend address).
    pub backends: BTreeMap<VipSpec, BTreeMap<IpAddr, CounterSum>>,
}

/// A service as lbctl wants it.
struct WantedService {
    vip: VipSpec,
    config: ServiceConfig,
    dests: BTreeMap<DestKey, DestConfig>,
}

/// The IPVS data plane.
#[derive(Debug)]
pub struct IpvsDataplane<K: IpvsKernel = IpvsSocket> {
    kernel: K,
    opts: IpvsOptions,
    owned: OwnedRecord,
}

impl IpvsDataplane<IpvsSocket> {
    /// Opens the IPVS netlink family and loads the ownership record.
    ///
    /// # Errors
    /// No IPVS in the kernel; an unreadable record.
    pub fn open(opts: IpvsOptions) -> Result<Self, IpvsError> {
        Self::with_kernel(IpvsSocket::open()?, opts)
    }
}

impl<K: IpvsKernel> IpvsDataplane<K> {
    /// A data plane over any [`IpvsKernel`].
    ///
    /// # Errors
    /// An unreadable ownership record.
    pub fn with_kernel(kernel: K, opts: IpvsOptions) -> Result<Self, IpvsError> {
        let owned = OwnedRecord::load(opts.state_dir.join(OWNED_FILE))?;
        info!(
            owned = owned.len(),
            state_dir = %opts.state_dir.display(),
            "IPVS data plane ready"
        );
        Ok(Self {
            kernel,
            opts,
            owned,
        })
    }

    /// The options.
    pub fn options(&self) -> &IpvsOptions {
        &self.opts
    }

    /// Replaces the options (takes effect at the next `apply`).
    pub fn set_options(&mut self, opts: IpvsOptions) {
        self.opts = opts;
    }

    /// The kernel link (for tests and tools).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// Services lbctl has recorded as its own.
    pub fn owned(&self) -> &BTreeSet<ServiceKey> {
        self.owned.services()
    }

    fn wanted(&self, vip: &VipState) -> Result<(ServiceKey, WantedService), IpvsError> {
        let spec = vip.spec;
        let o = self.opts.vips.get(&spec).cloned().unwrap_or_default();
        let key = service_key(&spec);
        let af = key.af();
        let sched = o.scheduler.unwrap_or(self.opts.default_scheduler);
        let persistence = match (spec.port, o.persistence) {
            (_, Some(t)) if t > 0 => Some(t),
            (None, _) => Some(self.opts.portless_persistence.max(1)),
            _ => None,
        };
        let mut flags = 0;
        if persistence.is_some() {
            flags |= codec::svc_flags::PERSISTENT;
        }
        if matches!(sched, Scheduler::Mh | Scheduler::Sh) {
            // Fallback: the kernel keeps a drained (weight 0) or failed real
            // server in the hash table, and without this flag a new
            // connection hashed to it gets no destination at all.
            flags |= codec::svc_flags::SCHED1;
            if vip.hash.src_port {
                flags |= codec::svc_flags::SCHED2;
            }
        }
        let config = ServiceConfig {
            sched_name: sched.name().to_owned(),
            flags,
            timeout: persistence.unwrap_or(0),
            netmask: codec::default_netmask(af),
        };
        let fwd = o
            .forwarding
            .unwrap_or_else(|| vip.forwarding.into())
            .method();
        let unhealthy = o.unhealthy.unwrap_or(self.opts.unhealthy);
        let mut dests = BTreeMap::new();
        for b in &vip.backends {
            if !b.healthy && unhealthy == UnhealthyAction::Remove {
                continue;
            }
            let weight = if b.healthy { b.weight } else { 0 };
            if weight > i32::MAX as u32 {
                return Err(IpvsError::Invalid {
                    vip: spec,
                    msg: format!("weight {weight} of {} exceeds IPVS's maximum", b.addr),
                });
            }
            if codec::af_of(b.addr) != af && fwd != FwdMethod::Tunnel {
                return Err(IpvsError::Invalid {
                    vip: spec,
                    msg: format!(
                        "backend {} of another family needs tunnel forwarding",
                        b.addr
                    ),
                });
            }
            dests.insert(
                DestKey {
                    addr: b.addr,
                    port: spec.port.unwrap_or(0),
                },
                DestConfig {
                    fwd,
                    weight,
                    u_thresh: 0,
                    l_thresh: 0,
                },
            );
        }
        Ok((
            key,
            WantedService {
                vip: spec,
                config,
                dests,
            },
        ))
    }

    /// Makes lbctl's services in the kernel equal to `desired`, writing only
    /// the difference. Services lbctl does not own are never touched.
    ///
    /// # Errors
    /// Netlink or kernel errors, record I/O, values IPVS cannot hold. What
    /// was written stays; the next call continues from the kernel's state.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, IpvsError> {
        let mut report = ApplyReport::default();
        let mut wanted = BTreeMap::new();
        for vip in &desired.vips {
            let (key, w) = self.wanted(vip)?;
            wanted.insert(key, w);
        }
        let present: BTreeMap<ServiceKey, ServiceEntry> = self
            .kernel
            .services()?
            .into_iter()
            .map(|s| (s.key, s))
            .collect();

        // Forget recorded services the kernel no longer has (deleted by
        // hand, or a crash between recording and creating).
        let stale: Vec<ServiceKey> = self
            .owned
            .services()
            .iter()
            .filter(|k| !present.contains_key(k))
            .copied()
            .collect();
        if !stale.is_empty() {
            debug!(
                ?stale,
                "forgetting recorded services the kernel does not hold"
            );
            self.owned.remove_all(&stale)?;
        }

        // Owned services no longer wanted: delete, then forget.
        let gone: Vec<ServiceKey> = self
            .owned
            .services()
            .iter()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.kernel.execute(codec::del_service(&key))?;
            self.owned.remove_all(&[key])?;
            info!(service = %key, "IPVS service removed");
            report.services_removed += 1;
        }

        for (key, want) in &wanted {
            let current_dests = match present.get(key) {
                None => {
                    // Record first: a crash after this line leaves a record
                    // of a service that may not exist, never the reverse.
                    self.owned.insert(*key)?;
                    self.kernel.execute(codec::new_service(key, &want.config))?;
                    info!(service = %key, vip = %want.vip, sched = %want.config.sched_name, "IPVS service created");
                    report.services_added += 1;
                    Vec::new()
                }
                Some(entry) => {
                    if !self.owned.contains(key) {
                        if !self.opts.adopt_existing {
                            warn!(service = %key, vip = %want.vip, "IPVS service exists and is not lbctl's; leaving it alone");
                            report.conflicts.push(want.vip);
                            continue;
                        }
                        self.owned.insert(*key)?;
                        info!(service = %key, "adopting existing IPVS service");
                    }
                    if entry.config != want.config {
                        self.kernel.execute(codec::set_service(key, &want.config))?;
                        info!(service = %key, from = ?entry.config, to = ?want.config, "IPVS service updated");
                        report.services_updated += 1;
                    }
                    self.kernel.dests(key)?
                }
            };
            self.sync_dests(key, &want.dests, current_dests, &mut report)?;
        }
        if !report.is_empty() {
            debug!(?report, "IPVS applied");
        }
        Ok(report)
    }

    fn sync_dests(
        &mut self,
        svc: &ServiceKey,
        want: &BTreeMap<DestKey, DestConfig>,
        current: Vec<DestEntry>,
        report: &mut ApplyReport,
    ) -> Result<(), IpvsError> {
        let current: BTreeMap<DestKey, DestConfig> =
            current.into_iter().map(|d| (d.key, d.config)).collect();
        for key in current.keys().filter(|k| !want.contains_key(k)) {
            self.kernel.execute(codec::del_dest(svc, key))?;
            info!(service = %svc, dest = %key.addr, "IPVS real server removed");
            report.dests_removed += 1;
        }
        for (key, cfg) in want {
            match current.get(key) {
                None => {
                    self.kernel.execute(codec::new_dest(svc, key, cfg))?;
                    info!(service = %svc, dest = %key.addr, weight = cfg.weight, fwd = ?cfg.fwd, "IPVS real server added");
                    report.dests_added += 1;
                }
                Some(c) if c != cfg => {
                    self.kernel.execute(codec::set_dest(svc, key, cfg))?;
                    info!(service = %svc, dest = %key.addr, from = c.weight, to = cfg.weight, fwd = ?cfg.fwd, "IPVS real server updated");
                    report.dests_updated += 1;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Deletes every service lbctl owns (on stop), and only those.
    ///
    /// # Errors
    /// Netlink or kernel errors, record I/O.
    pub fn remove_owned(&mut self) -> Result<usize, IpvsError> {
        let present: BTreeSet<ServiceKey> =
            self.kernel.services()?.into_iter().map(|s| s.key).collect();
        let owned: Vec<ServiceKey> = self.owned.services().iter().copied().collect();
        let mut n = 0;
        for key in owned {
            if present.contains(&key) {
                self.kernel.execute(codec::del_service(&key))?;
                info!(service = %key, "IPVS service removed on stop");
                n += 1;
            }
            self.owned.remove_all(&[key])?;
        }
        Ok(n)
    }

    /// Every IPVS service with its real servers, lbctl's first.
    ///
    /// # Errors
    /// Netlink errors.
    pub fn status(&mut self) -> Result<IpvsStatus, IpvsError> {
        let mut out = Vec::new();
        for s in self.kernel.services()? {
            let owned = self.owned.contains(&s.key);
            let dests = self.kernel.dests(&s.key)?;
            out.push(ServiceStatus {
                key: s.key,
                vip: if owned { vip_of(&s.key) } else { None },
                owned,
                config: s.config,
                stats: s.stats,
                dests,
            });
        }
        out.sort_by_key(|s| (!s.owned, s.key));
        Ok(IpvsStatus { services: out })
    }

    /// Counters of lbctl's services in the XDP view's shape.
    ///
    /// # Errors
    /// Netlink errors.
    pub fn stats(&mut self) -> Result<Stats, IpvsError> {
        let mut out = Stats::default();
        for s in self.status()?.services {
            let Some(vip) = s.vip else { continue };
            out.vips.insert(
                vip,
                CounterSum {
                    packets: s.stats.inpkts,
                    bytes: s.stats.inbytes,
                },
            );
            let per = out.backends.entry(vip).or_default();
            for d in s.dests {
                per.insert(
                    d.key.addr,
                    CounterSum {
                        packets: d.stats.inpkts,
                        bytes: d.stats.inbytes,
                    },
                );
            }
        }
        Ok(out)
    }
}

/// The IPVS service of a VIP.
pub fn service_key(spec: &VipSpec) -> ServiceKey {
    ServiceKey::Addr {
        protocol: u16::from(spec.protocol.number()),
        addr: spec.addr,
        port: spec.port.unwrap_or(0),
    }
}

/// The VIP of an IPVS service lbctl could have made.
pub fn vip_of(key: &ServiceKey) -> Option<VipSpec> {
    match *key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => Some(VipSpec {
            addr,
            port: (port != 0).then_some(port),
            protocol: match protocol {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                _ => return None,
            },
        }),
        ServiceKey::Fwmark { .. } => None,
    }
}

#[cfg(test)]
mod tests;
