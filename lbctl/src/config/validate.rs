//! Conversion of the raw serde structs into the validated [`Config`], with
//! every semantic error collected as a positioned [`Diagnostic`].

use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{Diagnostic, Position};
use super::model::*;
use super::raw::*;
use super::values::*;

/// Default Maglev table size of a VIP.
pub(crate) const DEFAULT_TABLE_SIZE: u32 = lb_common::DEFAULT_RING_SIZE;
const TABLE_SIZE_RANGE: RangeInclusive<i64> = 13..=131_071;
const WEIGHT_RANGE: RangeInclusive<i64> = -254..=254;
const DEFAULT_BACKEND_WEIGHT: u16 = 100;

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(self.file, self.text, span, message.into()));
    }

    /// "line L" of a span, for "first defined at" notes.
    fn line_of(&self, span: &Range<usize>) -> usize {
        Position::from_offset(self.text, span.start).line
    }

    fn int<T: TryFrom<i64>>(
        &mut self,
        v: &S<i64>,
        what: &str,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let n = *v.get_ref();
        if !range.contains(&n) {
            self.err(
                v.span(),
                format!(
                    "{what} {n} is out of range: expected {} to {}",
                    range.start(),
                    range.end()
                ),
            );
            return None;
        }
        match T::try_from(n) {
            Ok(t) => Some(t),
            Err(_) => {
                self.err(v.span(), format!("{what} {n} is out of range"));
                None
            }
        }
    }

    fn opt_int<T: TryFrom<i64>>(
        &mut self,
        v: &Option<S<i64>>,
        what: &str,
        range: RangeInclusive<i64>,
        default: T,
    ) -> Option<T> {
        match v {
            Some(v) => self.int(v, what, range),
            None => Some(default),
        }
    }

    fn duration(&mut self, v: &S<RawDuration>) -> Option<Duration> {
        match parse_duration(&v.get_ref().0) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(v.span(), e);
                None
            }
        }
    }

    fn opt_duration(&mut self, v: &Option<S<RawDuration>>, default: Duration) -> Option<Duration> {
        match v {
            Some(v) => self.duration(v),
            None => Some(default),
        }
    }

    /// A unicast IP address.
    fn ip(&mut self, v: &S<String>) -> Option<IpAddr> {
        let res = parse_ip(v.get_ref()).and_then(|a| check_unicast(&a).map(|()| a));
        self.ok(v.span(), res)
    }

    fn ok<T>(&mut self, span: Range<usize>, res: Result<T, String>) -> Option<T> {
        match res {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(span, e);
                None
            }
        }
    }

    fn name(&mut self, v: &S<String>) -> Option<String> {
        let res = check_name(v.get_ref()).map(|()| v.get_ref().clone());
        self.ok(v.span(), res)
    }

    fn ifname(&mut self, v: &S<String>) -> Option<String> {
        let res = check_ifname(v.get_ref()).map(|()| v.get_ref().clone());
        self.ok(v.span(), res)
    }

    /// A non-empty argument list whose first element (the program) is non-empty.
    fn command(&mut self, v: &S<Vec<S<String>>>, what: &str) -> Option<Vec<String>> {
        let Some(first) = v.get_ref().first() else {
            self.err(
                v.span(),
                format!("empty {what}: expected a program and its arguments, like [\"/usr/bin/check\", \"arg\"]"),
            );
            return None;
        };
        if first.get_ref().trim().is_empty() {
            self.err(first.span(), format!("empty program name in {what}"));
            return None;
        }
        Some(v.get_ref().iter().map(|a| a.get_ref().clone()).collect())
    }

    /// Checks that `timeout < interval`, pointing at whichever was written.
    fn timeout_below_interval(
        &mut self,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        interval_span: Option<Range<usize>>,
        timeout_span: Option<Range<usize>>,
        anchor: Range<usize>,
    ) {
        let (Some(i), Some(t)) = (interval, timeout) else {
            return;
        };
        if i.is_zero() {
            self.err(
                interval_span.unwrap_or(anchor),
                "interval must be greater than 0",
            );
        } else if t.is_zero() {
            self.err(
                timeout_span.unwrap_or(anchor),
                "timeout must be greater than 0",
            );
        } else if t >= i {
            let span = timeout_span.or(interval_span).unwrap_or(anchor);
            self.err(
                span,
                format!(
                    "timeout {} must be less than interval {}",
                    fmt_duration(t),
                    fmt_duration(i)
                ),
            );
        }
    }
}

/// Remembers the first occurrence of keys, to report duplicates.
struct Seen<K> {
    first: HashMap<K, Range<usize>>,
}

impl<K: std::hash::Hash + Eq> Seen<K> {
    fn new() -> Self {
        Self {
            first: HashMap::new(),
        }
    }

    /// Returns the span of the earlier occurrence if `key` was seen before.
    fn insert(&mut self, key: K, span: Range<usize>) -> Option<Range<usize>> {
        match self.first.get(&key) {
            Some(s) => Some(s.clone()),
            None => {
                self.first.insert(key, span);
                None
            }
        }
    }
}

fn quoted_list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates `raw`; returns every problem found, sorted by position.
pub(crate) fn validate(raw: RawConfig, file: &str, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let mut cx = Ctx {
        file,
        text,
        diags: Vec::new(),
    };
    let node = node(&mut cx, &raw.node);
    let ipip = ipip(&mut cx, raw.ipip.as_ref());
    let scripts = vrrp_scripts(&mut cx, &raw.vrrp_script);
    let instances = vrrp_instances(&mut cx, &raw.vrrp_instance, &scripts);
    let dp = Dataplane::of(raw.node.get_ref());
    let mtu = node
        .as_ref()
        .map(|n| (n.mtu, raw.node.get_ref().mtu.as_ref().map(|m| m.span())));
    let vips = vips(&mut cx, &raw.vip, &ipip, &instances, &dp, mtu);

    if let Some(node) = &node
        && let Some(extra) = raw.vip.get(node.max_vips as usize)
    {
        cx.err(
            extra.span(),
            format!(
                "too many VIPs: this is VIP number {} but node.max_vips is {} (at most {})",
                node.max_vips as usize + 1,
                node.max_vips,
                lb_common::MAX_VIPS
            ),
        );
    }
    // Backend ids are per (VIP, backend) since health is per VIP; id 0 is
    // reserved. A sorry server in use takes an id of its own too (the data
    // plane adds it to the VIP's backends), unless it is one of them.
    let limit = lb_common::MAX_BACKENDS as usize - 1;
    if let Some(span) = raw
        .vip
        .iter()
        .flat_map(|v| backend_id_users(v.get_ref()))
        .nth(limit)
    {
        cx.err(
            span,
            format!(
                "too many backends: at most {limit} in all VIPs together, sorry servers included"
            ),
        );
    }

    let mut diags = cx.diags;
    if !diags.is_empty() {
        diags.sort_by_key(|d| d.position);
        return Err(diags);
    }
    match node {
        Some(node) => Ok(Config {
            node,
            ipip,
            vips,
            vrrp_instances: instances,
            vrrp_scripts: scripts,
        }),
        // `node` only fails with a diagnostic, so this is unreachable; stay total anyway.
        None => Err(vec![Diagnostic::at(
            file,
            text,
            raw.node.span(),
            "invalid [node]".into(),
        )]),
    }
}

/// Where each backend id a VIP may use is configured: its backends, then
/// its sorry server when that is not one of them.
fn backend_id_users(v: &RawVip) -> impl Iterator<Item = Range<usize>> + '_ {
    let same = |a: &S<String>, b: &S<String>| match (parse_ip(a.get_ref()), parse_ip(b.get_ref())) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    let sorry = v
        .sorry_server
        .as_ref()
        .filter(|s| !v.backend.iter().any(|b| same(s, &b.get_ref().address)))
        .map(|s| s.span());
    v.backend.iter().map(|b| b.span()).chain(sorry)
}

/// The data plane chosen in `[node]` (parsing it cannot fail), for the
/// checks of IPVS-only keys.
struct Dataplane {
    kind: DataplaneKind,
    on_unhealthy: OnUnhealthy,
}

impl Dataplane {
    fn of(r: &RawNode) -> Self {
        let kind = match r.dataplane.as_ref().map(|v| *v.get_ref()) {
            None | Some(RawDataplane::Xdp) => DataplaneKind::Xdp,
            Some(RawDataplane::Ipvs) => DataplaneKind::Ipvs,
            Some(RawDataplane::Auto) => DataplaneKind::Auto,
        };
        Self {
            kind,
            on_unhealthy: r
                .on_unhealthy
                .as_ref()
                .map_or(OnUnhealthy::default(), |v| on_unhealthy(*v.get_ref())),
        }
    }

    /// Reports `key` (at `span`) when the XDP data plane is forced: the key
    /// would do nothing.
    fn ipvs_only(&self, cx: &mut Ctx<'_>, key: &str, span: Range<usize>) {
        if self.kind == DataplaneKind::Xdp {
            cx.err(
                span,
                format!(
                    "{key} applies to the IPVS data plane only, but node.dataplane is \"xdp\": \
                     expected node.dataplane = \"ipvs\" or \"auto\", or remove {key}"
                ),
            );
        }
    }
}

fn on_unhealthy(r: RawOnUnhealthy) -> OnUnhealthy {
    match r {
        RawOnUnhealthy::Drain => OnUnhealthy::Drain,
        RawOnUnhealthy::Remove => OnUnhealthy::Remove,
    }
}

/// Longest path of a Unix socket: `sun_path` is 108 bytes on Linux, one of
/// them the terminating NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Longest IPVS persistence timeout accepted (31 days).
const MAX_PERSISTENCE: Duration = Duration::from_secs(31 * 24 * 3600);

fn node(cx: &mut Ctx<'_>, raw: &S<RawNode>) -> Option<Node> {
    let r = raw.get_ref();
    let interface = cx.ifname(&r.interface);
    let dp = Dataplane::of(r);
    let dataplane = dp.kind;
    if let Some(o) = &r.on_unhealthy {
        dp.ipvs_only(cx, "on_unhealthy", o.span());
    }
    let xdp_mode = match r.xdp_mode.as_ref().map(|v| *v.get_ref()) {
        None | Some(RawXdpMode::Auto) => XdpMode::Auto,
        Some(RawXdpMode::Driver) => XdpMode::Driver,
        Some(RawXdpMode::Skb) => XdpMode::Skb,
    };
    let mtu = cx.opt_int(&r.mtu, "mtu", 576..=9216, 1500u32);
    let icmp_rate = cx.opt_int(
        &r.icmp_rate,
        "icmp_rate",
        1..=1_000_000,
        lb_common::DEFAULT_ICMP_RATE,
    );
    let icmp_burst = cx.opt_int(
        &r.icmp_burst,
        "icmp_burst",
        1..=1_000_000,
        lb_common::DEFAULT_ICMP_BURST,
    );
    let state_dir = match &r.state_dir {
        None => Some(PathBuf::from("/run/lbctl")),
        Some(s) if s.get_ref().starts_with('/') => {
            let socket = crate::api::socket_path(Path::new(s.get_ref()));
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                let over = len - MAX_SOCKET_PATH;
                cx.err(
                    s.span(),
                    format!(
                        "state_dir \"{}\" is too long: the control socket {} would be {len} bytes, \
                         but a Unix socket path holds at most {MAX_SOCKET_PATH} (sun_path is 108 bytes \
                         with the terminating NUL): expected a state_dir {over} bytes shorter",
                        s.get_ref(),
                        socket.display()
                    ),
                );
                None
            } else {
                Some(PathBuf::from(s.get_ref()))
            }
        }
        Some(s) => {
            cx.err(
                s.span(),
                format!(
                    "state_dir \"{}\" is relative: expected an absolute path",
                    s.get_ref()
                ),
            );
            None
        }
    };
    let conn_table_size = cx.opt_int(
        &r.conn_table_size,
        "conn_table_size",
        1024..=16_777_216,
        lb_common::DEFAULT_CONN_TABLE_SIZE,
    );
    let max_vips = cx.opt_int(
        &r.max_vips,
        "max_vips",
        1..=i64::from(lb_common::MAX_VIPS),
        64u32,
    );
    let metrics_listen = match &r.metrics_listen {
        None => Some(None),
        Some(v) => match v.get_ref().parse::<std::net::SocketAddr>() {
            Ok(a) if a.port() != 0 => Some(Some(a)),
            Ok(_) => {
                cx.err(
                    v.span(),
                    format!(
                        "metrics_listen \"{}\" has port 0: expected a fixed port to scrape",
                        v.get_ref()
                    ),
                );
                None
            }
            Err(_) => {
                cx.err(
                    v.span(),
                    format!(
                        "metrics_listen \"{}\" is not an address and port: expected \
                         ADDRESS:PORT, like \"127.0.0.1:9650\" or \"[::1]:9650\"",
                        v.get_ref()
                    ),
                );
                None
            }
        },
    };
    Some(Node {
        interface: interface?,
        dataplane,
        xdp_mode,
        mtu: mtu?,
        icmp_rate: icmp_rate?,
        icmp_burst: icmp_burst?,
        state_dir: state_dir?,
        keep_dataplane_on_exit: r.keep_dataplane_on_exit.unwrap_or(false),
        conn_table_size: conn_table_size?,
        max_vips: max_vips?,
        on_unhealthy: dp.on_unhealthy,
        metrics_listen: metrics_listen?,
    })
}

fn ipip(cx: &mut Ctx<'_>, raw: Option<&S<RawIpip>>) -> Ipip {
    let Some(raw) = raw else {
        return Ipip::default();
    };
    let r = raw.get_ref();
    let mut out = Ipip::default();
    if let Some(v) = &r.source_v4 {
        match cx.ip(v) {
            Some(IpAddr::V4(a)) => out.source_v4 = Some(a),
            Some(IpAddr::V6(a)) => cx.err(
                v.span(),
                format!("source_v4 {a} is an IPv6 address: expected an IPv4 address"),
            ),
            None => {}
        }
    }
    if let Some(v) = &r.source_v6 {
        match cx.ip(v) {
            Some(IpAddr::V6(a)) => out.source_v6 = Some(a),
            Some(IpAddr::V4(a)) => cx.err(
                v.span(),
                format!("source_v6 {a} is an IPv4 address: expected an IPv6 address"),
            ),
            None => {}
        }
    }
    out.source_flow_bits_v4 = cx
        .opt_int(&r.source_flow_bits_v4, "source_flow_bits_v4", 0..=16, 0u8)
        .unwrap_or(0);
    out.source_flow_bits_v6 = cx
        .opt_int(&r.source_flow_bits_v6, "source_flow_bits_v6", 0..=32, 0u8)
        .unwrap_or(0);
    for (bits, span, name, present) in [
        (
            out.source_flow_bits_v4,
            r.source_flow_bits_v4.as_ref().map(|s| s.span()),
            "source_flow_bits_v4",
            out.source_v4.is_some() || r.source_v4.is_some(),
        ),
        (
            out.source_flow_bits_v6,
            r.source_flow_bits_v6.as_ref().map(|s| s.span()),
            "source_flow_bits_v6",
            out.source_v6.is_some() || r.source_v6.is_some(),
        ),
    ] {
        if let (true, Some(span), false) = (bits > 0, span, present) {
            let src = name.trim_start_matches("source_flow_bits_");
            cx.err(span, format!("{name} needs source_{src} to be set"));
        }
    }
    out
}

fn vrrp_scripts(cx: &mut Ctx<'_>, raw: &[S<RawVrrpScript>]) -> Vec<VrrpScript> {
    let mut out = Vec::new();
    let mut names = Seen::new();
    for s in raw {
        let r = s.get_ref();
        let name = cx.name(&r.name);
        if let Some(n) = &name
            && let Some(first) = names.insert(n.clone(), r.name.span())
        {
            let line = cx.line_of(&first);
            cx.err(
                r.name.span(),
                format!("duplicate vrrp_script name \"{n}\" (first defined on line {line})"),
            );
        }
        let command = cx.command(&r.command, "command");
        let interval = cx.opt_duration(&r.interval, HealthCheck::DEFAULT_INTERVAL);
        let timeout = cx.opt_duration(&r.timeout, HealthCheck::DEFAULT_TIMEOUT);
        cx.timeout_below_interval(
            interval,
            timeout,
            r.interval.as_ref().map(|v| v.span()),
            r.timeout.as_ref().map(|v| v.span()),
            s.span(),
        );
        let weight = cx.opt_int(&r.weight, "weight", WEIGHT_RANGE, 0i32);
        let rise = cx.opt_int(&r.rise, "rise", 1..=100, 1u32);
        let fall = cx.opt_int(&r.fall, "fall", 1..=100, 1u32);
        if let (
            Some(name),
            Some(command),
            Some(interval),
            Some(timeout),
            Some(weight),
            Some(rise),
            Some(fall),
        ) = (name, command, interval, timeout, weight, rise, fall)
        {
            out.push(VrrpScript {
                name,
                command,
                interval,
                timeout,
                weight,
                rise,
                fall,
            });
        }
    }
    out
}

/// Most virtual addresses of one VRRP instance (the advertisement's
/// 8-bit "Count IPvX Addr" field).
pub(crate) const MAX_VRRP_ADDRESSES: usize = 255;

fn vrrp_instances(
    cx: &mut Ctx<'_>,
    raw: &[S<RawVrrpInstance>],
    scripts: &[VrrpScript],
) -> Vec<VrrpInstance> {
    let mut out = Vec::new();
    let mut names = Seen::new();
    let mut vrids: Seen<(String, Family, u8)> = Seen::new();
    let mut vaddrs: Seen<IpAddr> = Seen::new();
    for s in raw {
        let r = s.get_ref();
        let name = cx.name(&r.name);
        if let Some(n) = &name
            && let Some(first) = names.insert(n.clone(), r.name.span())
        {
            let line = cx.line_of(&first);
            cx.err(
                r.name.span(),
                format!("duplicate vrrp_instance name \"{n}\" (first defined on line {line})"),
            );
        }
        let interface = cx.ifname(&r.interface);
        let state = match r.state.as_ref().map(|v| *v.get_ref()) {
            Some(RawState::Master) => InitialState::Master,
            None | Some(RawState::Backup) => InitialState::Backup,
        };
        let vrid = cx.int::<u8>(&r.virtual_router_id, "virtual_router_id", 1..=255);
        let priority = cx.opt_int(&r.priority, "priority", 1..=255, 100u8);
        let version = match &r.version {
            None => Some(VrrpVersion::V3),
            Some(v) => match *v.get_ref() {
                2 => Some(VrrpVersion::V2),
                3 => Some(VrrpVersion::V3),
                n => {
                    cx.err(
                        v.span(),
                        format!("unsupported VRRP version {n}: expected 2 or 3"),
                    );
                    None
                }
            },
        };

        // Virtual addresses decide the family of the instance.
        let mut family: Option<Family> = None;
        let mut virtual_ipaddress = Vec::new();
        if r.virtual_ipaddress.get_ref().is_empty() {
            cx.err(
                r.virtual_ipaddress.span(),
                "empty virtual_ipaddress: expected at least one address, like [\"10.0.0.100/32\"]",
            );
        }
        if let Some(extra) = r.virtual_ipaddress.get_ref().get(MAX_VRRP_ADDRESSES) {
            cx.err(
                extra.span(),
                format!(
                    "too many virtual_ipaddress: this is address number {} but at most {MAX_VRRP_ADDRESSES} fit in a VRRP advertisement (its count field is 8 bits): expected another vrrp_instance for the rest",
                    MAX_VRRP_ADDRESSES + 1
                ),
            );
        }
        for a in r.virtual_ipaddress.get_ref() {
            let Some(vip) = cx.ok(a.span(), parse_virtual_ip(a.get_ref())) else {
                continue;
            };
            let f = Family::of(&vip.address);
            match family {
                None => family = Some(f),
                Some(fam) if fam != f => {
                    cx.err(
                        a.span(),
                        format!(
                            "{} is {} but this instance's first virtual_ipaddress is {}: expected one family per vrrp_instance",
                            vip.address,
                            f.name(),
                            fam.name()
                        ),
                    );
                    continue;
                }
                Some(_) => {}
            }
            if f == Family::V6 && version == Some(VrrpVersion::V2) {
                cx.err(
                    a.span(),
                    format!(
                        "{} is IPv6 but VRRP version 2 is IPv4 only: expected version = 3",
                        vip.address
                    ),
                );
            }
            if let Some(first) = vaddrs.insert(vip.address, a.span()) {
                let line = cx.line_of(&first);
                cx.err(
                    a.span(),
                    format!(
                        "duplicate virtual_ipaddress {} (first on line {line})",
                        vip.address
                    ),
                );
            }
            virtual_ipaddress.push(vip);
        }

        if let (Some(i), Some(f), Some(v)) = (&interface, family, vrid)
            && let Some(first) = vrids.insert((i.clone(), f, v), r.virtual_router_id.span())
        {
            let line = cx.line_of(&first);
            cx.err(
                    r.virtual_router_id.span(),
                    format!(
                        "virtual_router_id {v} is already used on {i} for {} (line {line}): expected a VRID unique per interface and family",
                        f.name()
                    ),
                );
        }

        let advert_int = cx.opt_duration(&r.advert_int, Duration::from_secs(1));
        if let (Some(d), Some(ver)) = (advert_int, version) {
            let span = r.advert_int.as_ref().map_or(s.span(), |v| v.span());
            match ver {
                VrrpVersion::V2 => {
                    if d.subsec_nanos() != 0 || !(1..=255).contains(&d.as_secs()) {
                        cx.err(
                            span,
                            format!(
                                "advert_int {} is invalid for VRRP version 2: expected whole seconds from 1s to 255s",
                                fmt_duration(d)
                            ),
                        );
                    }
                }
                VrrpVersion::V3 => {
                    let ns = d.as_nanos();
                    if ns % 10_000_000 != 0 || !(10_000_000..=40_950_000_000).contains(&ns) {
                        cx.err(
                            span,
                            format!(
                                "advert_int {} is invalid for VRRP version 3: expected a multiple of 10ms from 10ms to 40950ms",
                                fmt_duration(d)
                            ),
                        );
                    }
                }
            }
        }

        let preempt = r.preempt.as_ref().is_none_or(|p| *p.get_ref());
        let preempt_delay = cx.opt_duration(&r.preempt_delay, Duration::ZERO);
        if let (Some(d), Some(span)) = (preempt_delay, r.preempt_delay.as_ref().map(|v| v.span())) {
            if d > Duration::from_secs(1000) {
                cx.err(
                    span.clone(),
                    format!(
                        "preempt_delay {} is too long: expected at most 1000s",
                        fmt_duration(d)
                    ),
                );
            } else if !preempt && !d.is_zero() {
                cx.err(span, "preempt_delay has no effect with preempt = false");
            }
        }

        let auth_pass = match &r.authentication {
            None => Some(None),
            Some(a) if version == Some(VrrpVersion::V3) => {
                cx.err(
                    a.span(),
                    "authentication is only supported by VRRP version 2 (RFC 5798 removed it): expected version = 2 or no authentication",
                );
                None
            }
            Some(a) => {
                let RawAuthType::Pass = *a.get_ref().auth_type.get_ref();
                let p = &a.get_ref().auth_pass;
                let len = p.get_ref().len();
                if len == 0 || len > 8 {
                    cx.err(
                        p.span(),
                        format!("auth_pass is {len} bytes long: expected 1 to 8 bytes"),
                    );
                    None
                } else {
                    Some(Some(p.get_ref().clone()))
                }
            }
        };

        let family_check = |cx: &mut Ctx<'_>, what: &str, a: IpAddr, span: Range<usize>| {
            if let Some(f) = family
                && Family::of(&a) != f
            {
                cx.err(
                        span,
                        format!(
                            "{what} {a} is {} but the instance's virtual_ipaddress is {}: expected the same family",
                            Family::of(&a).name(),
                            f.name()
                        ),
                    );
            }
        };
        let unicast_src_ip = match &r.unicast_src_ip {
            None => Some(None),
            Some(v) => cx.ip(v).map(|a| {
                family_check(cx, "unicast_src_ip", a, v.span());
                Some(a)
            }),
        };
        let mut unicast_peers = Vec::new();
        if let Some(peers) = &r.unicast_peer {
            if peers.get_ref().is_empty() {
                cx.err(
                    peers.span(),
                    "empty unicast_peer: expected at least one address (omit unicast_peer for multicast)",
                );
            }
            let mut seen = Seen::new();
            for p in peers.get_ref() {
                let Some(a) = cx.ip(p) else { continue };
                family_check(cx, "unicast_peer", a, p.span());
                if seen.insert(a, p.span()).is_some() {
                    cx.err(p.span(), format!("duplicate unicast_peer {a}"));
                }
                if unicast_src_ip.flatten() == Some(a) {
                    cx.err(
                        p.span(),
                        format!("unicast_peer {a} is this node's unicast_src_ip"),
                    );
                }
                unicast_peers.push(a);
            }
        }

        let mut track_interface = Vec::new();
        let mut seen = Seen::new();
        for t in &r.track_interface {
            let tr = t.get_ref();
            let name = cx.ifname(&tr.name);
            let weight = cx.opt_int(&tr.weight, "weight", WEIGHT_RANGE, 0i32);
            if let Some(n) = &name
                && seen.insert(n.clone(), tr.name.span()).is_some()
            {
                cx.err(
                    tr.name.span(),
                    format!("interface \"{n}\" is tracked twice"),
                );
            }
            if let (Some(name), Some(weight)) = (name, weight) {
                track_interface.push(Track { name, weight });
            }
        }

        let mut track_script = Vec::new();
        let mut seen = Seen::new();
        for t in &r.track_script {
            let tr = t.get_ref();
            let n = tr.name.get_ref();
            let override_weight = match &tr.weight {
                None => Some(None),
                Some(w) => cx.int::<i32>(w, "weight", WEIGHT_RANGE).map(Some),
            };
            if seen.insert(n.clone(), tr.name.span()).is_some() {
                cx.err(
                    tr.name.span(),
                    format!("vrrp_script \"{n}\" is tracked twice"),
                );
            }
            match scripts.iter().find(|s| &s.name == n) {
                None => {
                    let known = if scripts.is_empty() {
                        "no [[vrrp_script]] is defined".to_owned()
                    } else {
                        format!(
                            "expected one of {}",
                            quoted_list(scripts.iter().map(|s| &s.name))
                        )
                    };
                    cx.err(
                        tr.name.span(),
                        format!("unknown vrrp_script \"{n}\": {known}"),
                    );
                }
                Some(script) => {
                    if let Some(w) = override_weight {
                        track_script.push(Track {
                            name: n.clone(),
                            weight: w.unwrap_or(script.weight),
                        });
                    }
                }
            }
        }

        let track_backends = match &r.track_backends {
            None => Some(None),
            Some(t) => cx
                .opt_int(&t.get_ref().weight, "weight", WEIGHT_RANGE, 0i32)
                .map(Some),
        };
        let notify = match &r.notify {
            None => Some(None),
            Some(n) => cx.command(n, "notify").map(Some),
        };
        let garp_master_delay = cx.opt_duration(&r.garp_master_delay, Duration::from_secs(5));
        let garp_master_repeat =
            cx.opt_int(&r.garp_master_repeat, "garp_master_repeat", 1..=255, 5u32);
        let garp_master_refresh = cx
            .opt_duration(&r.garp_master_refresh, Duration::ZERO)
            .map(|d| (!d.is_zero()).then_some(d));
        let garp_interval = cx.opt_duration(&r.garp_interval, Duration::ZERO);

        let checksum = match r.checksum.as_ref().map(|c| *c.get_ref()) {
            None | Some(RawChecksum::PseudoHeader) => V3Checksum::PseudoHeader,
            Some(RawChecksum::Rfc9568) => V3Checksum::Rfc9568,
        };
        let accept_both_checksums = r
            .accept_both_checksums
            .as_ref()
            .is_some_and(|b| *b.get_ref());
        let v3_v4 = version == Some(VrrpVersion::V3) && family != Some(Family::V6);
        for (key, span) in [
            ("checksum", r.checksum.as_ref().map(|c| c.span())),
            (
                "accept_both_checksums",
                r.accept_both_checksums.as_ref().map(|c| c.span()),
            ),
        ] {
            if let (Some(span), false, Some(_), Some(_)) = (span, v3_v4, version, family) {
                cx.err(
                    span,
                    format!("{key} only applies to VRRP version 3 over IPv4"),
                );
            }
        }

        let built = (|| {
            Some(VrrpInstance {
                name: name?,
                interface: interface?,
                state,
                virtual_router_id: vrid?,
                priority: priority?,
                advert_int: advert_int?,
                version: version?,
                family: family?,
                preempt,
                preempt_delay: preempt_delay?,
                auth_pass: auth_pass?,
                unicast_src_ip: unicast_src_ip?,
                unicast_peers,
                virtual_ipaddress,
                track_interface,
                track_script,
                track_backends: track_backends?,
                notify: notify?,
                garp_master_delay: garp_master_delay?,
                garp_master_repeat: garp_master_repeat?,
                garp_master_refresh: garp_master_refresh?,
                garp_interval: garp_interval?,
                checksum,
                accept_both_checksums,
            })
        })();
        if let Some(i) = built {
            out.push(i);
        }
    }
    out
}

/// IPv6's minimum link MTU (RFC 8200 section 5).
pub(crate) const IPV6_MIN_MTU: u32 = 1280;

/// The MTU the XDP data plane's packet-too-big advertises to a client of an
/// IPv6 VIP whose packets are encapsulated towards a backend of family
/// `outer`: `mtu` minus the outer header.
pub(crate) fn ipip_inner_mtu(mtu: u32, outer: Family) -> u32 {
    let overhead = match outer {
        Family::V4 => 20,
        Family::V6 => 40,
    };
    mtu.saturating_sub(overhead)
}

/// `mtu`: `node.mtu` and where it is written (`None` when invalid).
fn vips(
    cx: &mut Ctx<'_>,
    raw: &[S<RawVip>],
    ipip: &Ipip,
    instances: &[VrrpInstance],
    dp: &Dataplane,
    mtu: Option<(u32, Option<Range<usize>>)>,
) -> Vec<Vip> {
    let mut out = Vec::new();
    let mut names: Seen<String> = Seen::new();
    let mut identities: Seen<VipIdentity> = Seen::new();
    for s in raw {
        let r = s.get_ref();
        let name = cx.name(&r.name);
        if let Some(n) = &name
            && let Some(first) = names.insert(n.clone(), r.name.span())
        {
            let line = cx.line_of(&first);
            cx.err(
                r.name.span(),
                format!("duplicate VIP name \"{n}\" (first defined on line {line})"),
            );
        }
        let label = r.name.get_ref();
        let address = cx.ip(&r.address);
        let vip_address = address;
        let port = match &r.port {
            None => Some(None),
            Some(p) => cx.int::<u16>(p, "port", 1..=65535).map(Some),
        };
        let protocol = match r.protocol.as_ref().map(|p| *p.get_ref()) {
            None | Some(RawProtocol::Tcp) => Protocol::Tcp,
            Some(RawProtocol::Udp) => Protocol::Udp,
        };
        if let (Some(address), Some(port)) = (address, port) {
            let id = VipIdentity {
                address,
                port,
                protocol,
            };
            if let Some(first) = identities.insert(id, r.address.span()) {
                let line = cx.line_of(&first);
                let port = port.map_or_else(|| "*".to_owned(), |p| p.to_string());
                let addr = match address {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                };
                cx.err(
                    r.address.span(),
                    format!(
                        "duplicate VIP {addr}:{port}/{} (already defined on line {line})",
                        protocol.name()
                    ),
                );
            }
        }
        let forwarding = match r.forwarding.as_ref().map(|p| *p.get_ref()) {
            None | Some(RawForwarding::Dr) => Forwarding::Dr,
            Some(RawForwarding::Ipip) => Forwarding::Ipip,
            Some(RawForwarding::Nat) => Forwarding::Nat,
        };
        if let (Forwarding::Nat, Some(f)) = (forwarding, &r.forwarding)
            && dp.kind != DataplaneKind::Ipvs
        {
            let kind = match dp.kind {
                DataplaneKind::Auto => "\"auto\" (which may run XDP)",
                _ => "\"xdp\"",
            };
            cx.err(
                f.span(),
                format!(
                    "forwarding = \"nat\" needs node.dataplane = \"ipvs\", but it is {kind}: \
                     the XDP data plane forwards by \"dr\" or \"ipip\""
                ),
            );
        }
        let scheduler = match r.scheduler.as_ref() {
            None => Scheduler::default(),
            Some(v) => {
                dp.ipvs_only(cx, "scheduler", v.span());
                match *v.get_ref() {
                    RawScheduler::Rr => Scheduler::Rr,
                    RawScheduler::Wrr => Scheduler::Wrr,
                    RawScheduler::Sh => Scheduler::Sh,
                    RawScheduler::Mh => Scheduler::Mh,
                }
            }
        };
        let vip_on_unhealthy = match r.on_unhealthy.as_ref() {
            None => dp.on_unhealthy,
            Some(v) => {
                dp.ipvs_only(cx, "on_unhealthy", v.span());
                on_unhealthy(*v.get_ref())
            }
        };
        let persistence_timeout = match r.persistence_timeout.as_ref() {
            None => Some(None),
            Some(v) => {
                dp.ipvs_only(cx, "persistence_timeout", v.span());
                cx.duration(v).and_then(|d| {
                    if d.subsec_nanos() != 0 || d.is_zero() || d > MAX_PERSISTENCE {
                        cx.err(
                            v.span(),
                            format!(
                                "persistence_timeout \"{}\" must be whole seconds from 1s to 31 days (\"{}\")",
                                v.get_ref().0,
                                fmt_duration(MAX_PERSISTENCE)
                            ),
                        );
                        None
                    } else {
                        Some(Some(d))
                    }
                })
            }
        };
        let hash = r
            .hash
            .as_ref()
            .map_or(Some(HashFields::default()), |h| hash_fields(cx, h));

        let table_size = match &r.table_size {
            None => Some(DEFAULT_TABLE_SIZE),
            Some(t) => cx
                .int::<u32>(t, "table_size", TABLE_SIZE_RANGE)
                .and_then(|n| {
                    if is_prime(u64::from(n)) {
                        Some(n)
                    } else {
                        let below = prime_at_most(u64::from(n))
                            .filter(|p| TABLE_SIZE_RANGE.contains(&(*p as i64)));
                        let above = prime_at_least(u64::from(n));
                        let hint = match below {
                            Some(b) => format!("{b} or {above}"),
                            None => above.to_string(),
                        };
                        cx.err(
                            t.span(),
                            format!("table_size {n} is not prime: expected a prime such as {hint}"),
                        );
                        None
                    }
                }),
        };
        if let (Some(t), Some(ts)) = (table_size, &r.table_size)
            && r.backend.len() >= t as usize
        {
            let n = r.backend.len();
            let msg = format!(
                "table_size {t} is too small for {n} backends: \
                 expected a prime larger than the backend count (ideally 100 times larger)"
            );
            cx.err(ts.span(), msg);
        }

        // Where forwarded packets go: family rules and the outer source for ipip.
        let dest_check = |cx: &mut Ctx<'_>, what: &str, a: IpAddr, span: Range<usize>| {
            let Some(vip_addr) = address else { return };
            let (vf, bf) = (Family::of(&vip_addr), Family::of(&a));
            match forwarding {
                Forwarding::Nat if vf != bf => cx.err(
                    span,
                    format!(
                        "{what} {a} is {} but VIP \"{label}\" is {}: nat forwarding needs the same family",
                        bf.name(),
                        vf.name()
                    ),
                ),
                Forwarding::Dr if vf != bf => cx.err(
                    span,
                    format!(
                        "{what} {a} is {} but VIP \"{label}\" is {}: dr forwarding needs the same family (forwarding = \"ipip\" can mix)",
                        bf.name(),
                        vf.name()
                    ),
                ),
                Forwarding::Ipip => {
                    let (present, key) = match bf {
                        Family::V4 => (ipip.source_v4.is_some(), "source_v4"),
                        Family::V6 => (ipip.source_v6.is_some(), "source_v6"),
                    };
                    if !present {
                        cx.err(
                            span.clone(),
                            format!(
                                "ipip forwarding to {} {what} {a} needs an outer source: expected [ipip] {key}",
                                bf.name()
                            ),
                        );
                    }
                    // An IPv6 client told to use less than 1280 (RFC 8200
                    // section 5) would not, and the flow would black-hole
                    // (RFC 2473 section 7.1: the tunnel must carry 1280).
                    // IPVS does not use node.mtu.
                    if let (Family::V6, Some((mtu, mtu_span)), false) =
                        (vf, &mtu, dp.kind == DataplaneKind::Ipvs)
                    {
                        let inner = ipip_inner_mtu(*mtu, bf);
                        if inner < IPV6_MIN_MTU {
                            let need = *mtu + IPV6_MIN_MTU - inner;
                            let written = match mtu_span {
                                Some(s) => format!(" (line {})", cx.line_of(s)),
                                None => " (the default)".to_owned(),
                            };
                            cx.err(
                                span,
                                format!(
                                    "IPv6 VIP \"{label}\" forwards by ipip to {} {what} {a}: node.mtu {mtu}{written} \
                                     leaves {inner} bytes for the inner packet, so the packet-too-big sent to clients \
                                     would advertise less than IPv6's minimum MTU of {IPV6_MIN_MTU} \
                                     (RFC 8200 section 5, RFC 2473 section 7.1): expected node.mtu of at least {need}",
                                    bf.name()
                                ),
                            );
                        }
                    }
                }
                Forwarding::Dr | Forwarding::Nat => {}
            }
        };

        let on_no_backend = match (&r.on_no_backend, &r.sorry_server) {
            (Some(o), Some(_)) => {
                cx.err(
                    o.span(),
                    "on_no_backend and sorry_server are exclusive: expected one of them",
                );
                None
            }
            (_, Some(ss)) => cx.ip(ss).map(|a| {
                dest_check(cx, "sorry_server", a, ss.span());
                OnNoBackend::SorryServer(a)
            }),
            (Some(_), None) | (None, None) => Some(OnNoBackend::Drop),
        };

        let vrrp_instance = match &r.vrrp_instance {
            None => Some(None),
            Some(v) => {
                let n = v.get_ref();
                if instances.iter().any(|i| &i.name == n) {
                    Some(Some(n.clone()))
                } else {
                    let known = if instances.is_empty() {
                        "no [[vrrp_instance]] is defined".to_owned()
                    } else {
                        format!(
                            "expected one of {}",
                            quoted_list(instances.iter().map(|i| &i.name))
                        )
                    };
                    cx.err(v.span(), format!("unknown vrrp_instance \"{n}\": {known}"));
                    None
                }
            }
        };

        // The VIP-wide check: `Ok(None)` means "not given", `Err(())` means invalid.
        let vip_check = match &r.health_check {
            None => Ok(None),
            Some(h) => health_check(cx, h, port).map(Some).ok_or(()),
        };
        let mut missing_default_reported = false;

        if r.backend.is_empty() {
            cx.err(
                s.span(),
                format!("VIP \"{label}\" has no backends: expected at least one [[vip.backend]]"),
            );
        }
        let mut backends = Vec::new();
        let mut seen = Seen::new();
        let mut ipip_reported = [false; 2];
        for b in &r.backend {
            let br = b.get_ref();
            let address = cx.ip(&br.address);
            if let Some(a) = address {
                if Some(a) == vip_address {
                    cx.err(
                        br.address.span(),
                        format!("backend {a} is the VIP address itself: expected a real server's address"),
                    );
                }
                if let Some(first) = seen.insert(a, br.address.span()) {
                    let line = cx.line_of(&first);
                    cx.err(
                        br.address.span(),
                        format!("duplicate backend {a} in VIP \"{label}\" (first on line {line})"),
                    );
                }
                let fam_idx = usize::from(a.is_ipv6());
                let before = cx.diags.len();
                if !(forwarding == Forwarding::Ipip && ipip_reported[fam_idx]) {
                    dest_check(cx, "backend", a, br.address.span());
                }
                if forwarding == Forwarding::Ipip && cx.diags.len() > before {
                    ipip_reported[fam_idx] = true;
                }
            }
            let weight = cx.opt_int(&br.weight, "weight", 0..=65535, DEFAULT_BACKEND_WEIGHT);
            let check = match (&br.health_check, &vip_check) {
                (Some(h), _) => health_check(cx, h, port),
                (None, Ok(Some(c))) => Some(c.clone()),
                (None, Err(())) => None,
                (None, Ok(None)) => match port.flatten() {
                    Some(p) => Some(HealthCheck {
                        probe: Probe::Tcp { port: p },
                        interval: HealthCheck::DEFAULT_INTERVAL,
                        timeout: HealthCheck::DEFAULT_TIMEOUT,
                        rise: HealthCheck::DEFAULT_RISE,
                        fall: HealthCheck::DEFAULT_FALL,
                    }),
                    None => {
                        if port.is_some() && !missing_default_reported {
                            missing_default_reported = true;
                            cx.err(
                                s.span(),
                                format!(
                                    "VIP \"{label}\" has no port, so the default tcp health check has none: expected a health_check with a port (or type = \"none\")"
                                ),
                            );
                        }
                        None
                    }
                },
            };
            if let (Some(address), Some(weight), Some(health_check)) = (address, weight, check) {
                backends.push(Backend {
                    address,
                    weight,
                    health_check,
                });
            }
        }

        let built = (|| {
            Some(Vip {
                name: name?,
                address: address?,
                port: port?,
                protocol,
                forwarding,
                hash: hash?,
                table_size: table_size?,
                on_no_backend: on_no_backend?,
                vrrp_instance: vrrp_instance?,
                scheduler,
                on_unhealthy: vip_on_unhealthy,
                persistence_timeout: persistence_timeout?,
                backends,
            })
        })();
        if let Some(v) = built {
            out.push(v);
        }
    }
    out
}

fn hash_fields(cx: &mut Ctx<'_>, raw: &S<Vec<S<RawHashField>>>) -> Option<HashFields> {
    let mut seen = Seen::new();
    let mut ok = true;
    for f in raw.get_ref() {
        if seen.insert(*f.get_ref(), f.span()).is_some() {
            cx.err(
                f.span(),
                format!("duplicate hash field \"{}\"", f.get_ref().name()),
            );
            ok = false;
        }
    }
    let has = |x: RawHashField| raw.get_ref().iter().any(|f| *f.get_ref() == x);
    for (field, name) in [
        (RawHashField::DstAddr, "dst_addr"),
        (RawHashField::Protocol, "protocol"),
    ] {
        if !has(field) {
            cx.err(
                raw.span(),
                format!("hash must include \"{name}\": the data plane always hashes the VIP address and protocol"),
            );
            ok = false;
        }
    }
    ok.then(|| HashFields {
        src_addr: has(RawHashField::SrcAddr),
        src_port: has(RawHashField::SrcPort),
        dst_port: has(RawHashField::DstPort),
    })
}

/// A health check field: name, span if written, check types it belongs to.
type FieldUse<'a> = (&'a str, Option<Range<usize>>, &'a [RawCheckType]);

/// `vip_port`: `Some(None)` for a port-less VIP, `None` when the VIP's port was invalid.
fn health_check(
    cx: &mut Ctx<'_>,
    raw: &S<RawHealthCheck>,
    vip_port: Option<Option<u16>>,
) -> Option<HealthCheck> {
    let r = raw.get_ref();
    let kind = r.kind.as_ref().map_or(RawCheckType::Tcp, |k| *k.get_ref());
    let kind_name = match kind {
        RawCheckType::Tcp => "tcp",
        RawCheckType::Http => "http",
        RawCheckType::Udp => "udp",
        RawCheckType::Script => "script",
        RawCheckType::None => "none",
    };
    // Fields and the check types they belong to.
    let fields: [FieldUse<'_>; 12] = {
        use RawCheckType::*;
        const TIMED: &[RawCheckType] = &[Tcp, Http, Udp, Script];
        [
            ("port", r.port.as_ref().map(|v| v.span()), &[Tcp, Http, Udp]),
            ("path", r.path.as_ref().map(|v| v.span()), &[Http]),
            ("host", r.host.as_ref().map(|v| v.span()), &[Http]),
            (
                "expect_status",
                r.expect_status.as_ref().map(|v| v.span()),
                &[Http],
            ),
            (
                "expect_body",
                r.expect_body.as_ref().map(|v| v.span()),
                &[Http],
            ),
            ("send", r.send.as_ref().map(|v| v.span()), &[Udp]),
            ("expect", r.expect.as_ref().map(|v| v.span()), &[Udp]),
            ("command", r.command.as_ref().map(|v| v.span()), &[Script]),
            ("interval", r.interval.as_ref().map(|v| v.span()), TIMED),
            ("timeout", r.timeout.as_ref().map(|v| v.span()), TIMED),
            ("rise", r.rise.as_ref().map(|v| v.span()), TIMED),
            ("fall", r.fall.as_ref().map(|v| v.span()), TIMED),
        ]
    };
    let mut ok = true;
    for (field, span, kinds) in fields {
        if let Some(span) = span
            && !kinds.contains(&kind)
        {
            cx.err(
                span,
                format!("{field} does not apply to a health check of type \"{kind_name}\""),
            );
            ok = false;
        }
    }

    let port = match &r.port {
        Some(p) => cx.int::<u16>(p, "port", 1..=65535),
        None => vip_port.flatten(),
    };
    let needs_port = matches!(
        kind,
        RawCheckType::Tcp | RawCheckType::Http | RawCheckType::Udp
    );
    if needs_port && r.port.is_none() && vip_port == Some(None) {
        cx.err(
            raw.span(),
            format!(
                "a {kind_name} health check of a port-less VIP needs a port: expected port = N"
            ),
        );
        ok = false;
    }

    let probe = match kind {
        RawCheckType::None => Some(Probe::None),
        RawCheckType::Tcp => port.map(|port| Probe::Tcp { port }),
        RawCheckType::Http => {
            let path = match &r.path {
                None => Some("/".to_owned()),
                Some(p) => {
                    let t = p.get_ref();
                    if t.starts_with('/') && !t.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        Some(t.clone())
                    } else {
                        cx.err(
                            p.span(),
                            format!("invalid HTTP path \"{t}\": expected a path starting with '/' and without spaces"),
                        );
                        None
                    }
                }
            };
            let host = match &r.host {
                None => Some(None),
                Some(h) => {
                    let t = h.get_ref();
                    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        cx.err(
                            h.span(),
                            format!(
                                "invalid HTTP host \"{t}\": expected a host name without spaces"
                            ),
                        );
                        None
                    } else {
                        Some(Some(t.clone()))
                    }
                }
            };
            let expect_status = match &r.expect_status {
                None => Some(vec![200..=299]),
                Some(list) => status_list(cx, list),
            };
            let expect_body = r.expect_body.as_ref().map(|b| b.get_ref().clone());
            match (port, path, host, expect_status) {
                (Some(port), Some(path), Some(host), Some(expect_status)) => {
                    Some(Probe::Http(HttpProbe {
                        port,
                        path,
                        host,
                        expect_status,
                        expect_body,
                    }))
                }
                _ => None,
            }
        }
        RawCheckType::Udp => port.map(|port| {
            Probe::Udp(UdpProbe {
                port,
                send: r
                    .send
                    .as_ref()
                    .map(|s| s.get_ref().clone())
                    .unwrap_or_default(),
                expect: r.expect.as_ref().map(|s| s.get_ref().clone()),
            })
        }),
        RawCheckType::Script => match &r.command {
            None => {
                cx.err(
                    raw.span(),
                    "a script health check needs a command: expected command = [\"/path/to/program\", \"arg\", ...]",
                );
                None
            }
            Some(c) => cx
                .command(c, "command")
                .map(|command| Probe::Script { command }),
        },
    };

    let interval = cx.opt_duration(&r.interval, HealthCheck::DEFAULT_INTERVAL);
    let timeout = cx.opt_duration(&r.timeout, HealthCheck::DEFAULT_TIMEOUT);
    if kind != RawCheckType::None {
        cx.timeout_below_interval(
            interval,
            timeout,
            r.interval.as_ref().map(|v| v.span()),
            r.timeout.as_ref().map(|v| v.span()),
            raw.span(),
        );
    }
    let rise = cx.opt_int(&r.rise, "rise", 1..=100, HealthCheck::DEFAULT_RISE);
    let fall = cx.opt_int(&r.fall, "fall", 1..=100, HealthCheck::DEFAULT_FALL);
    if !ok {
        return None;
    }
    Some(HealthCheck {
        probe: probe?,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
    })
}

fn status_list(cx: &mut Ctx<'_>, list: &S<Vec<S<RawStatus>>>) -> Option<Vec<RangeInclusive<u16>>> {
    if list.get_ref().is_empty() {
        cx.err(
            list.span(),
            "empty expect_status: expected status codes or ranges, like [200, \"300-399\"]",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let valid = 100..=599;
    for s in list.get_ref() {
        let range = match s.get_ref() {
            RawStatus::Code(c) => (valid.contains(c)).then_some((*c, *c)),
            RawStatus::Text(t) => {
                let parsed = match t.split_once('-') {
                    Some((a, b)) => a
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .zip(b.trim().parse::<i64>().ok()),
                    None => t.trim().parse::<i64>().ok().map(|c| (c, c)),
                };
                parsed.filter(|(a, b)| valid.contains(a) && valid.contains(b) && a <= b)
            }
        };
        match range.and_then(|(a, b)| Some(u16::try_from(a).ok()?..=u16::try_from(b).ok()?)) {
            Some(r) => out.push(r),
            None => {
                let shown = match s.get_ref() {
                    RawStatus::Code(c) => c.to_string(),
                    RawStatus::Text(t) => format!("\"{t}\""),
                };
                cx.err(
                    s.span(),
                    format!("invalid expect_status {shown}: expected a status code from 100 to 599 or a range like \"200-399\""),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}
