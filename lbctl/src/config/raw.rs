//! The serde shape of lb.toml, as written. Values that need semantic checks
//! are kept as `Spanned` strings or integers so that `validate` can point at
//! them; closed sets of words are serde enums (serde reports bad variants).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub node: S<RawNode>,
    pub ipip: Option<S<RawIpip>>,
    #[serde(default)]
    pub vip: Vec<S<RawVip>>,
    #[serde(default)]
    pub vrrp_instance: Vec<S<RawVrrpInstance>>,
    #[serde(default)]
    pub vrrp_script: Vec<S<RawVrrpScript>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub interface: S<String>,
    pub dataplane: Option<S<RawDataplane>>,
    pub xdp_mode: Option<S<RawXdpMode>>,
    pub mtu: Option<S<i64>>,
    pub icmp_rate: Option<S<i64>>,
    pub icmp_burst: Option<S<i64>>,
    pub state_dir: Option<S<String>>,
    pub keep_dataplane_on_exit: Option<bool>,
    pub conn_table_size: Option<S<i64>>,
    pub max_vips: Option<S<i64>>,
    pub on_unhealthy: Option<S<RawOnUnhealthy>>,
    pub metrics_listen: Option<S<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawOnUnhealthy {
    Drain,
    Remove,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawScheduler {
    Rr,
    Wrr,
    Sh,
    Mh,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawDataplane {
    Xdp,
    Ipvs,
    Auto,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawXdpMode {
    Driver,
    Skb,
    Auto,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIpip {
    pub source_v4: Option<S<String>>,
    pub source_v6: Option<S<String>>,
    pub source_flow_bits_v4: Option<S<i64>>,
    pub source_flow_bits_v6: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVip {
    pub name: S<String>,
    pub address: S<String>,
    pub port: Option<S<i64>>,
    pub protocol: Option<S<RawProtocol>>,
    pub forwarding: Option<S<RawForwarding>>,
    pub hash: Option<S<Vec<S<RawHashField>>>>,
    pub table_size: Option<S<i64>>,
    pub on_no_backend: Option<S<RawOnNoBackend>>,
    pub sorry_server: Option<S<String>>,
    pub vrrp_instance: Option<S<String>>,
    pub health_check: Option<S<RawHealthCheck>>,
    pub scheduler: Option<S<RawScheduler>>,
    pub on_unhealthy: Option<S<RawOnUnhealthy>>,
    pub persistence_timeout: Option<S<RawDuration>>,
    #[serde(default)]
    pub backend: Vec<S<RawBackend>>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProtocol {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawForwarding {
    Dr,
    Ipip,
    Nat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawHashField {
    SrcAddr,
    SrcPort,
    DstAddr,
    DstPort,
    Protocol,
}

impl RawHashField {
    pub fn name(self) -> &'static str {
        match self {
            RawHashField::SrcAddr => "src_addr",
            RawHashField::SrcPort => "src_port",
            RawHashField::DstAddr => "dst_addr",
            RawHashField::DstPort => "dst_port",
            RawHashField::Protocol => "protocol",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawOnNoBackend {
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub address: S<String>,
    pub weight: Option<S<i64>>,
    pub health_check: Option<S<RawHealthCheck>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCheckType {
    Tcp,
    Http,
    Udp,
    Script,
    None,
}

/// One flat table for every check type; `validate` rejects fields that do
/// not belong to the chosen type (serde's internally tagged enums would lose
/// the spans).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<S<RawCheckType>>,
    pub port: Option<S<i64>>,
    pub path: Option<S<String>>,
    pub host: Option<S<String>>,
    pub expect_status: Option<S<Vec<S<RawStatus>>>>,
    pub expect_body: Option<S<String>>,
    pub send: Option<S<String>>,
    pub expect: Option<S<String>>,
    pub command: Option<S<Vec<S<String>>>>,
    pub interval: Option<S<RawDuration>>,
    pub timeout: Option<S<RawDuration>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
}

/// An `expect_status` element: `200` or `"200-399"`.
#[derive(Debug)]
pub(crate) enum RawStatus {
    Code(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an HTTP status code like 200 or a range like \"200-399\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatus, E> {
                Ok(RawStatus::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawStatus, E> {
                Ok(RawStatus::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatus, E> {
                Ok(RawStatus::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as written (`"500ms"`, `"2s"`); parsed by `validate`.
#[derive(Debug)]
pub(crate) struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"2s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrpInstance {
    pub name: S<String>,
    pub interface: S<String>,
    pub state: Option<S<RawState>>,
    pub virtual_router_id: S<i64>,
    pub priority: Option<S<i64>>,
    pub advert_int: Option<S<RawDuration>>,
    pub version: Option<S<i64>>,
    pub preempt: Option<S<bool>>,
    pub preempt_delay: Option<S<RawDuration>>,
    pub authentication: Option<S<RawAuth>>,
    pub unicast_src_ip: Option<S<String>>,
    pub unicast_peer: Option<S<Vec<S<String>>>>,
    pub virtual_ipaddress: S<Vec<S<String>>>,
    #[serde(default)]
    pub track_interface: Vec<S<RawTrack>>,
    #[serde(default)]
    pub track_script: Vec<S<RawTrack>>,
    pub track_backends: Option<S<RawTrackBackends>>,
    pub notify: Option<S<Vec<S<String>>>>,
    pub garp_master_delay: Option<S<RawDuration>>,
    pub garp_master_repeat: Option<S<i64>>,
    pub garp_master_refresh: Option<S<RawDuration>>,
    pub garp_interval: Option<S<RawDuration>>,
    pub checksum: Option<S<RawChecksum>>,
    pub accept_both_checksums: Option<S<bool>>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) enum RawState {
    #[serde(rename = "MASTER")]
    Master,
    #[serde(rename = "BACKUP")]
    Backup,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub auth_type: S<RawAuthType>,
    pub auth_pass: S<String>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) enum RawAuthType {
    #[serde(rename = "PASS")]
    Pass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrack {
    pub name: S<String>,
    pub weight: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrackBackends {
    pub weight: Option<S<i64>>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawChecksum {
    PseudoHeader,
    Rfc9568,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrpScript {
    pub name: S<String>,
    pub command: S<Vec<S<String>>>,
    pub interval: Option<S<RawDuration>>,
    pub timeout: Option<S<RawDuration>>,
    pub weight: Option<S<i64>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
}
