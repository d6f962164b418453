//! What the I/O shell needs to run one instance ([`InstanceSpec`]), and its
//! construction from the validated `lb.toml` model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::config;

use super::{Auth, ChecksumMode, Family, InstanceParams, ParamsError, Version};

/// A virtual address and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipAddress {
    /// The address.
    pub address: IpAddr,
    /// Prefix length it is added with.
    pub prefix_len: u8,
    /// Interface it is added to; the instance's interface when `None`.
    pub dev: Option<String>,
}

/// Gratuitous ARP / unsolicited NA schedule after becoming Master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpConfig {
    /// Messages per address per burst (keepalived `garp_master_repeat`).
    pub repeat: u32,
    /// Gap between the messages of a burst (`garp_interval`).
    pub interval: Duration,
    /// A second burst this long after becoming Master (`garp_master_delay`);
    /// zero: none.
    pub master_delay: Duration,
    /// A burst every this long while Master (`garp_master_refresh`).
    pub refresh: Option<Duration>,
}

impl Default for GarpConfig {
    /// keepalived's defaults: 5 messages, no gap, second burst after 5 s,
    /// no refresh.
    fn default() -> Self {
        GarpConfig {
            repeat: 5,
            interval: Duration::ZERO,
            master_delay: Duration::from_secs(5),
            refresh: None,
        }
    }
}

/// A tracked `vrrp_script`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec {
    /// Script name (for logs).
    pub name: String,
    /// Program and arguments (non-empty), run without a shell.
    pub command: Vec<String>,
    /// Time between runs.
    pub interval: Duration,
    /// Time a run may take.
    pub timeout: Duration,
    /// Consecutive successes to count as up.
    pub rise: u32,
    /// Consecutive failures to count as down.
    pub fall: u32,
    /// Weight for this instance (see [`super::track`]).
    pub weight: i32,
}

/// Everything the shell needs to run one VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Instance name (logs, notify argument).
    pub name: String,
    /// Interface adverts are sent and received on.
    pub interface: String,
    /// Protocol parameters. `primary_address` is replaced when the instance
    /// starts: by `source` if set, else by the interface's first IPv4
    /// address (IPv4) or its link-local address (IPv6).
    pub params: InstanceParams,
    /// Source address of adverts (`unicast_src_ip`).
    pub source: Option<IpAddr>,
    /// keepalived `state MASTER`: advertise at once on startup.
    pub start_as_master: bool,
    /// Unicast peers; multicast when empty.
    pub unicast_peers: Vec<IpAddr>,
    /// The addresses held while Master (same order as `params.vips`).
    pub vips: Vec<VipAddress>,
    /// Announcement schedule.
    pub garp: GarpConfig,
    /// Notify program and leading arguments.
    pub notify: Option<Vec<String>>,
    /// Tracked interfaces and their weights. The instance's own interface
    /// is always tracked with weight 0 (FAULT while down), as keepalived does.
    pub track_interfaces: Vec<(String, i32)>,
    /// Tracked scripts.
    pub track_scripts: Vec<ScriptSpec>,
    /// Weight of "no healthy backend" (`track_backends`); `None`: untracked.
    pub track_backends: Option<i32>,
}

/// The config cannot be turned into a runnable instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Invalid protocol parameters.
    #[error("vrrp_instance {instance}: {source}")]
    Params {
        /// Instance name.
        instance: String,
        /// What is wrong.
        #[source]
        source: ParamsError,
    },
    /// A tracked script is not defined.
    #[error("vrrp_instance {instance}: track_script {script} is not defined")]
    UnknownScript {
        /// Instance name.
        instance: String,
        /// Script name.
        script: String,
    },
}

impl InstanceSpec {
    /// Build the spec of `inst`, resolving tracked scripts in `scripts`.
    pub fn from_config(
        inst: &config::VrrpInstance,
        scripts: &[config::VrrpScript],
    ) -> Result<InstanceSpec, SpecError> {
        let params_err = |source| SpecError::Params {
            instance: inst.name.clone(),
            source,
        };
        let family = match inst.family {
            config::Family::V4 => Family::V4,
            config::Family::V6 => Family::V6,
        };
        let auth = match &inst.auth_pass {
            Some(p) => Auth::password(p.as_bytes()).map_err(params_err)?,
            None => Auth::None,
        };
        let placeholder = match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let params = InstanceParams {
            vrid: inst.virtual_router_id,
            priority: inst.priority,
            advert_interval: inst.advert_int,
            version: match inst.version {
                config::VrrpVersion::V2 => Version::V2,
                config::VrrpVersion::V3 => Version::V3,
            },
            family,
            preempt: inst.preempt,
            preempt_delay: inst.preempt_delay,
            auth,
            checksum_mode: match inst.checksum {
                config::V3Checksum::PseudoHeader => ChecksumMode::PseudoHeader,
                config::V3Checksum::Rfc9568 => ChecksumMode::Rfc9568,
            },
            accept_either_checksum: inst.accept_both_checksums,
            // keepalived does not check the TTL of unicast adverts.
            require_ttl_255: inst.unicast_peers.is_empty(),
            primary_address: inst.unicast_src_ip.unwrap_or(placeholder),
            vips: inst.virtual_ipaddress.iter().map(|v| v.address).collect(),
        };
        params.validate().map_err(params_err)?;
        let track_scripts = inst
            .track_script
            .iter()
            .map(|t| {
                let s = scripts.iter().find(|s| s.name == t.name).ok_or_else(|| {
                    SpecError::UnknownScript {
                        instance: inst.name.clone(),
                        script: t.name.clone(),
                    }
                })?;
                Ok(ScriptSpec {
                    name: s.name.clone(),
                    command: s.command.clone(),
                    interval: s.interval,
                    timeout: s.timeout,
                    rise: s.rise,
                    fall: s.fall,
                    weight: t.weight,
                })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        Ok(InstanceSpec {
            name: inst.name.clone(),
            interface: inst.interface.clone(),
            params,
            source: inst.unicast_src_ip,
            start_as_master: inst.state == config::InitialState::Master,
            unicast_peers: inst.unicast_peers.clone(),
            vips: inst
                .virtual_ipaddress
                .iter()
                .map(|v| VipAddress {
                    address: v.address,
                    prefix_len: v.prefix_len,
                    dev: v.dev.clone(),
                })
                .collect(),
            garp: GarpConfig {
                repeat: inst.garp_master_repeat,
                interval: inst.garp_interval,
                master_delay: inst.garp_master_delay,
                refresh: inst.garp_master_refresh.filter(|d| !d.is_zero()),
            },
            notify: inst.notify.clone(),
            track_interfaces: inst
                .track_interface
                .iter()
                .map(|t| (t.name.clone(), t.weight))
                .collect(),
            track_scripts,
            track_backends: inst.track_backends,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[node]
interface = "eth0"

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
state = "MASTER"
virtual_router_id = 7
priority = 150
version = 2
advert_int = "2s"
preempt = false
authentication = { auth_type = "PASS", auth_pass = "secret" }
unicast_src_ip = "192.168.1.10"
unicast_peer = ["192.168.1.11"]
virtual_ipaddress = ["10.0.0.100/24", "10.0.0.53 dev eth1"]
track_interface = [{ name = "eth1", weight = -20 }]
track_script = [{ name = "chk" }]
track_backends = { weight = -50 }
notify = ["/bin/true", "x"]
garp_master_repeat = 3
garp_master_refresh = "30s"

[[vrrp_script]]
name = "chk"
command = ["pidof", "nginx"]
weight = -30
"#;

    #[test]
    fn from_config_maps_every_field() {
        let cfg = config::parse(TOML, "lb.toml").expect("valid config");
        let spec =
            InstanceSpec::from_config(&cfg.vrrp_instances[0], &cfg.vrrp_scripts).expect("spec");
        let p = &spec.params;
        assert_eq!(p.vrid, 7);
        assert_eq!(p.priority, 150);
        assert_eq!(p.version, Version::V2);
        assert_eq!(p.advert_interval, Duration::from_secs(2));
        assert!(!p.preempt);
        assert_eq!(p.auth, Auth::Password(*b"secret\0\0"));
        assert!(!p.require_ttl_255, "unicast: no TTL check, like keepalived");
        assert_eq!(
            p.primary_address,
            "192.168.1.10".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(spec.source, Some(p.primary_address));
        assert!(spec.start_as_master);
        assert_eq!(
            spec.unicast_peers,
            vec!["192.168.1.11".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(spec.vips.len(), 2);
        assert_eq!(spec.vips[0].prefix_len, 24);
        assert_eq!(spec.vips[1].prefix_len, 32);
        assert_eq!(spec.vips[1].dev.as_deref(), Some("eth1"));
        assert_eq!(spec.garp.repeat, 3);
        assert_eq!(spec.garp.refresh, Some(Duration::from_secs(30)));
        assert_eq!(spec.track_interfaces, vec![("eth1".to_owned(), -20)]);
        assert_eq!(spec.track_scripts.len(), 1);
        assert_eq!(spec.track_scripts[0].weight, -30, "script weight inherited");
        assert_eq!(spec.track_scripts[0].command, vec!["pidof", "nginx"]);
        assert_eq!(spec.track_backends, Some(-50));
        assert_eq!(
            spec.notify,
            Some(vec!["/bin/true".to_owned(), "x".to_owned()])
        );
    }
}
