//! keepalived statements to a model of what lb.toml will say (no output yet).

use std::net::IpAddr;

use super::Loc;
use super::convert::{Cx, fmt_ms};
use super::emit::Val;
use super::syntax::{Stmt, Word};

#[derive(Default)]
pub(super) struct Input {
    pub(super) vrrp_version: Option<i64>,
    pub(super) scripts: Vec<Script>,
    pub(super) instances: Vec<Instance>,
    pub(super) servers: Vec<VirtualServer>,
}

pub(super) struct Script {
    pub(super) loc: Loc,
    pub(super) name: String,
    pub(super) command: Vec<String>,
    pub(super) keys: Vec<(&'static str, Val)>,
}

/// One `virtual_ipaddress` line: the address and what lb.toml keeps of it.
pub(super) struct VirtualAddress {
    pub(super) addr: IpAddr,
    /// `ADDRESS[/PREFIX]` as written.
    pub(super) spec: String,
    pub(super) dev: Option<String>,
}

pub(super) struct Instance {
    pub(super) loc: Loc,
    pub(super) name: String,
    pub(super) interface: Option<String>,
    pub(super) state: Option<String>,
    pub(super) vrid: Option<i64>,
    pub(super) priority: Option<i64>,
    pub(super) advert_int: Option<String>,
    pub(super) version: Option<i64>,
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay: Option<String>,
    pub(super) auth_pass: Option<String>,
    pub(super) unicast_src_ip: Option<String>,
    pub(super) unicast_peer: Vec<String>,
    pub(super) vips: Vec<VirtualAddress>,
    pub(super) track_interface: Vec<Val>,
    pub(super) track_script: Vec<Val>,
    pub(super) notify: Option<Vec<String>>,
    pub(super) garp: Vec<(&'static str, Val)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dr,
    Tun,
    Nat,
}

pub(super) struct VirtualServer {
    pub(super) loc: Loc,
    pub(super) addr: IpAddr,
    pub(super) port: u16,
    pub(super) udp: bool,
    pub(super) kind: Kind,
    pub(super) kind_loc: Loc,
    pub(super) lb_algo: Option<Word>,
    pub(super) persistence: Option<(i64, Loc)>,
    /// `sh-port` / `mh-port`: the IPVS hash scheduler hashes the client's
    /// port too.
    pub(super) sched_port: bool,
    /// `sh-fallback` / `mh-fallback`.
    pub(super) sched_fallback: bool,
    pub(super) sorry: Option<(IpAddr, u16, Loc)>,
    pub(super) real: Vec<RealServer>,
}

pub(super) struct RealServer {
    pub(super) loc: Loc,
    pub(super) addr: IpAddr,
    pub(super) port: u16,
    pub(super) weight: i64,
    /// `inhibit_on_failure`: weight 0 instead of removal when it fails.
    pub(super) inhibit: bool,
    pub(super) check: Vec<(&'static str, Val)>,
}

/// What a virtual server gives its real servers' checks.
#[derive(Clone)]
pub(super) struct CheckDefaults {
    /// The virtual server's `virtual_server` statement.
    pub(super) vs_loc: Loc,
    pub(super) delay_loop_ms: u64,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) retry: Option<i64>,
    pub(super) delay_before_retry_ms: Option<u64>,
    pub(super) virtualhost: Option<String>,
}

impl CheckDefaults {
    /// Takes `c` if it is one of the timers a virtual server, a real server
    /// or a checker may set (or `warmup`/`alpha`, which lbctl has no use
    /// for, reported); whether it was.
    fn read(&mut self, c: &Stmt, cx: &mut Cx) -> bool {
        match c.keyword() {
            "delay_loop" => {
                if let Some(ms) = cx.one_secs(c) {
                    self.delay_loop_ms = ms;
                }
            }
            "connect_timeout" => self.connect_timeout_ms = cx.one_secs(c),
            "retry" | "nb_get_retry" => self.retry = cx.one_int(c),
            "delay_before_retry" => self.delay_before_retry_ms = cx.one_secs(c),
            "warmup" | "alpha" => cx.unsupported(
                c,
                "lbctl starts every check at once, and a new backend down until it passes",
            ),
            _ => return false,
        }
        true
    }
}

pub(super) fn read(stmts: &[Stmt], cx: &mut Cx) -> Input {
    let mut input = Input::default();
    for s in stmts {
        match s.keyword() {
            "global_defs" => read_globals(s, &mut input, cx),
            "vrrp_script" => {
                if let Some(sc) = read_script(s, cx) {
                    input.scripts.push(sc);
                }
            }
            "vrrp_instance" => {
                if let Some(i) = read_instance(s, cx) {
                    input.instances.push(i);
                }
            }
            "virtual_server" => {
                if let Some(v) = read_virtual_server(s, cx) {
                    input.servers.push(v);
                }
            }
            "virtual_server_group" => cx.error(
                s.loc(),
                "virtual_server_group cannot be translated: lbctl has one [[vip]] per address, port and protocol",
            ),
            "vrrp_sync_group" => cx.error(
                s.loc(),
                "vrrp_sync_group cannot be translated: lbctl runs each vrrp_instance on its \
                 own, and instances that must fail over together (a NAT pair's outside VIP \
                 and inside gateway) would not; put their addresses in one vrrp_instance",
            ),
            // Addresses, routes and rules keepalived installs on the node:
            // without them, the node does not carry the traffic it did.
            "static_ipaddress" | "static_routes" | "static_rules" => cx.error(
                s.loc(),
                format!(
                    "{} cannot be translated: lbctl does not install node addresses, routes \
                     or rules; configure them in the system's network configuration",
                    s.keyword()
                ),
            ),
            _ => cx.unsupported(s, "lbctl has no equivalent"),
        }
    }
    input
}

fn read_globals(s: &Stmt, input: &mut Input, cx: &mut Cx) {
    for c in s.children() {
        match c.keyword() {
            "vrrp_version" => input.vrrp_version = cx.one_int(c),
            // Identification and mail: no effect on forwarding or VRRP.
            "router_id"
            | "notification_email"
            | "notification_email_from"
            | "smtp_server"
            | "smtp_connect_timeout"
            | "enable_script_security"
            | "script_user" => {}
            _ => cx.unsupported(c, "lbctl has no such global setting"),
        }
    }
}

fn read_script(s: &Stmt, cx: &mut Cx) -> Option<Script> {
    let name = cx.one(s)?.text.clone();
    let (mut interval, mut timeout) = (None, None);
    let mut command = None;
    let mut keys = Vec::new();
    for c in s.children() {
        match c.keyword() {
            "script" => {
                let w = cx.one(c)?;
                command = cx.argv(w, "script");
            }
            "interval" => interval = cx.one_secs(c),
            "timeout" => timeout = cx.one_secs(c),
            "weight" => match c.args() {
                [w] => {
                    if let Some(n) = cx.int(w, "weight") {
                        keys.push(("weight", Val::Int(n)));
                    }
                }
                [_, r, ..] => cx.error(
                    r.loc,
                    format!(
                        "weight option \"{}\" cannot be translated: lbctl applies a script's \
                         weight as written (\"reverse\" would invert it)",
                        r.text
                    ),
                ),
                [] => cx.error(c.loc(), "weight takes one value"),
            },
            "rise" | "fall" => {
                let key = if c.keyword() == "rise" {
                    "rise"
                } else {
                    "fall"
                };
                if let Some(n) = cx.one_int(c) {
                    keys.push((key, Val::Int(n)));
                }
            }
            "user" => cx.unsupported(c, "lbctl runs scripts as its own user"),
            _ => cx.unsupported(c, "lbctl's vrrp_script has no such setting"),
        }
    }
    let Some(command) = command else {
        cx.error(s.loc(), format!("vrrp_script {name} has no script"));
        return None;
    };
    // keepalived's defaults where lbctl's differ: every second, and rise
    // and fall 1 (also lbctl's). A timeout must be shorter than the interval
    // in lbctl; keepalived lets a script run longer.
    let interval = interval.unwrap_or(1_000).max(1);
    let timeout = cx.fit_timeout(
        s.loc(),
        "vrrp_script",
        timeout.unwrap_or(interval),
        interval,
    );
    keys.push(("interval", Val::Str(fmt_ms(interval))));
    keys.push(("timeout", Val::Str(fmt_ms(timeout))));
    Some(Script {
        loc: s.loc(),
        name,
        command,
        keys,
    })
}

fn read_instance(s: &Stmt, cx: &mut Cx) -> Option<Instance> {
    let mut i = Instance {
        loc: s.loc(),
        name: cx.one(s)?.text.clone(),
        interface: None,
        state: None,
        vrid: None,
        priority: None,
        advert_int: None,
        version: None,
        preempt: None,
        preempt_delay: None,
        auth_pass: None,
        unicast_src_ip: None,
        unicast_peer: Vec::new(),
        vips: Vec::new(),
        track_interface: Vec::new(),
        track_script: Vec::new(),
        notify: None,
        garp: Vec::new(),
    };
    let (mut preempt_loc, mut preempt_delay_loc) = (None, None);
    for c in s.children() {
        let k = c.keyword();
        match k {
            "state" => match cx.one(c).map(|w| w.text.as_str()) {
                Some(st @ ("MASTER" | "BACKUP")) => i.state = Some(st.to_owned()),
                Some(other) => cx.error(
                    c.loc(),
                    format!("state \"{other}\": expected MASTER or BACKUP"),
                ),
                None => {}
            },
            "interface" => i.interface = cx.one(c).map(|w| w.text.clone()),
            "virtual_router_id" => i.vrid = cx.one_int(c),
            "priority" => i.priority = cx.one_int(c),
            "advert_int" => i.advert_int = cx.one_secs(c).map(fmt_ms),
            "version" => i.version = cx.one_int(c),
            "nopreempt" => {
                i.preempt = Some(false);
                preempt_loc = Some(c.loc());
            }
            "preempt" => i.preempt = Some(true),
            "preempt_delay" => {
                i.preempt_delay = cx.one_secs(c).map(fmt_ms);
                preempt_delay_loc = Some(c.loc());
            }
            "authentication" => read_auth(c, &mut i, cx),
            "unicast_src_ip" => i.unicast_src_ip = cx.one(c).map(|w| w.text.clone()),
            "unicast_peer" => {
                for p in c.children() {
                    i.unicast_peer.push(p.keyword().to_owned());
                    if !p.args().is_empty() {
                        cx.warn(
                            p.args()[0].loc,
                            "unicast_peer options (min_ttl, max_ttl) not translated",
                        );
                    }
                }
            }
            "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                if k == "virtual_ipaddress_excluded" {
                    cx.warn(
                        c.loc(),
                        "virtual_ipaddress_excluded: its addresses become ordinary virtual_ipaddress \
                         (lbctl lists every address in its adverts)",
                    );
                }
                for a in c.children() {
                    if let Some(v) = read_vip(a, cx) {
                        i.vips.push(v);
                    }
                }
            }
            "track_interface" => {
                for t in c.children() {
                    i.track_interface.push(track(t, cx));
                }
            }
            "track_script" => {
                for t in c.children() {
                    i.track_script.push(track(t, cx));
                }
            }
            "notify" => {
                if let Some(w) = cx.one(c) {
                    i.notify = cx.argv(w, "notify");
                    cx.warn(
                        c.loc(),
                        "notify: lbctl runs it with the instance name and the new state as its \
                         two arguments (keepalived adds \"INSTANCE\" before them and the priority \
                         after): check how the script reads its arguments",
                    );
                }
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => cx.unsupported(
                c,
                "lbctl runs one notify program for every state (with the state as an argument)",
            ),
            "garp_master_delay" | "garp_master_refresh" | "garp_interval" => {
                let key = match k {
                    "garp_master_delay" => "garp_master_delay",
                    "garp_master_refresh" => "garp_master_refresh",
                    _ => "garp_interval",
                };
                if let Some(ms) = cx.one_secs(c) {
                    i.garp.push((key, Val::Str(fmt_ms(ms))));
                }
            }
            "garp_master_repeat" => {
                if let Some(n) = cx.one_int(c) {
                    i.garp.push(("garp_master_repeat", Val::Int(n)));
                }
            }
            // lbctl takes the family from the addresses.
            "native_ipv6" => {}
            // They change which node is master, or where routed traffic goes.
            "track_file" | "track_process" | "track_bfd" | "virtual_routes" | "virtual_rules"
            | "track_src_ip" => cx.error(
                c.loc(),
                format!(
                    "{k} cannot be translated: lbctl's vrrp_instance has no equivalent, and \
                     without it this node would take or keep the master role (or route) \
                     differently"
                ),
            ),
            _ => cx.unsupported(c, "lbctl's vrrp_instance has no such setting"),
        }
    }
    // keepalived clears both for an instance that starts as MASTER.
    if i.state.as_deref() == Some("MASTER") {
        if let (Some(false), Some(loc)) = (i.preempt, preempt_loc) {
            cx.warn(
                loc,
                "nopreempt with state MASTER: keepalived ignores it (and preempts), so lbctl preempts too",
            );
            i.preempt = None;
        }
        if let (Some(_), Some(loc)) = (&i.preempt_delay, preempt_delay_loc) {
            cx.warn(
                loc,
                "preempt_delay with state MASTER: keepalived ignores it, so lbctl has none",
            );
            i.preempt_delay = None;
        }
    }
    Some(i)
}

fn read_auth(s: &Stmt, i: &mut Instance, cx: &mut Cx) {
    let mut pass: Option<&Word> = None;
    let mut is_pass = false;
    for c in s.children() {
        match c.keyword() {
            "auth_type" => match cx.one(c).map(|w| w.text.as_str()) {
                Some("PASS") => is_pass = true,
                Some(other) => cx.error(
                    c.loc(),
                    format!(
                        "auth_type {other} cannot be translated: lbctl speaks only PASS (RFC 3768) \
                         or none, and peers must agree"
                    ),
                ),
                None => {}
            },
            "auth_pass" => pass = cx.one(c),
            _ => cx.unsupported(c, "not an authentication setting"),
        }
    }
    match (is_pass, pass) {
        (true, Some(w)) => {
            // keepalived sends at most 8 characters (RFC 3768 5.3.6.1).
            let mut p = w.text.clone();
            if p.len() > 8 {
                let mut cut = 8;
                while !p.is_char_boundary(cut) {
                    cut -= 1;
                }
                p.truncate(cut);
                cx.warn(
                    w.loc,
                    format!(
                        "auth_pass: keepalived uses its first 8 bytes, \"{p}\", and so does lbctl"
                    ),
                );
            }
            i.auth_pass = Some(p);
        }
        (true, None) => cx.error(s.loc(), "auth_type PASS without auth_pass"),
        (false, Some(w)) => cx.warn(
            w.loc,
            "auth_pass without auth_type PASS: keepalived sends no authentication, nor does lbctl",
        ),
        (false, None) => {}
    }
}

/// One `virtual_ipaddress` line: `ADDR[/LEN] [dev IF] [other options]`.
fn read_vip(a: &Stmt, cx: &mut Cx) -> Option<VirtualAddress> {
    let text = a.keyword();
    let addr_part = text.split('/').next().unwrap_or(text);
    let addr = match addr_part.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            cx.error(
                a.loc(),
                format!("virtual_ipaddress \"{text}\": expected ADDRESS[/PREFIX]"),
            );
            return None;
        }
    };
    let mut dev = None;
    let mut args = a.args().iter();
    while let Some(w) = args.next() {
        match w.text.as_str() {
            "dev" => match args.next() {
                Some(d) => dev = Some(d.text.clone()),
                None => cx.error(w.loc, "dev without an interface name"),
            },
            // Options with a value: the value is skipped with them.
            opt @ ("brd" | "broadcast" | "scope" | "label" | "metric" | "table") => {
                args.next();
                cx.warn(
                    w.loc,
                    format!("virtual_ipaddress option \"{opt}\" not translated: lbctl adds ADDRESS[/PREFIX] [dev IF]"),
                );
            }
            // A peer address changes what the address is.
            "peer" => cx.error(
                w.loc,
                "virtual_ipaddress with peer cannot be translated: lbctl adds ADDRESS[/PREFIX] [dev IF]",
            ),
            flag => cx.warn(
                w.loc,
                format!("virtual_ipaddress option \"{flag}\" not translated: lbctl adds ADDRESS[/PREFIX] [dev IF]"),
            ),
        }
    }
    Some(VirtualAddress {
        addr,
        spec: text.to_owned(),
        dev,
    })
}

/// `NAME [weight N]` in track_interface / track_script.
fn track(t: &Stmt, cx: &mut Cx) -> Val {
    let mut kv = vec![("name", Val::Str(t.keyword().to_owned()))];
    match t.args() {
        [] => {}
        [k, w, rest @ ..] if k.text == "weight" => {
            if let Some(n) = cx.int(w, "weight") {
                kv.push(("weight", Val::Int(n)));
            }
            if let Some(r) = rest.first() {
                cx.error(
                    r.loc,
                    format!(
                        "weight option \"{}\" cannot be translated: lbctl applies the weight \
                         as written (\"reverse\" would invert it)",
                        r.text
                    ),
                );
            }
        }
        [first, ..] => cx.error(
            first.loc,
            format!(
                "track option \"{}\" cannot be translated: lbctl takes NAME [weight N], \
                 and another weight changes which node is master",
                first.text
            ),
        ),
    }
    Val::Table(kv)
}

fn read_virtual_server(s: &Stmt, cx: &mut Cx) -> Option<VirtualServer> {
    let (addr, port) = match s.args() {
        [f, _] if f.text == "fwmark" => {
            cx.error(
                s.loc(),
                "virtual_server fwmark cannot be translated: lbctl matches address, port and protocol",
            );
            return None;
        }
        [g, _] if g.text == "group" => {
            cx.error(
                s.loc(),
                "virtual_server group cannot be translated: lbctl has one [[vip]] per address, port and protocol",
            );
            return None;
        }
        [a, p] => (
            cx.addr(a, "virtual_server")?,
            cx.port(p, "virtual_server port")?,
        ),
        _ => {
            cx.error(
                s.loc(),
                "virtual_server: expected ADDRESS PORT (fwmark and group cannot be translated)",
            );
            return None;
        }
    };
    let mut vs = VirtualServer {
        loc: s.loc(),
        addr,
        port,
        udp: false,
        kind: Kind::Nat,
        kind_loc: s.loc(),
        lb_algo: None,
        persistence: None,
        sched_port: false,
        sched_fallback: false,
        sorry: None,
        real: Vec::new(),
    };
    let mut kind_seen = false;
    let mut defaults = CheckDefaults {
        vs_loc: s.loc(),
        delay_loop_ms: 60_000,
        connect_timeout_ms: None,
        retry: None,
        delay_before_retry_ms: None,
        virtualhost: None,
    };
    // Settings first: keepalived allows them after the real servers too.
    for c in s.children() {
        let k = c.keyword();
        match k {
            "real_server" => {}
            _ if defaults.read(c, cx) => {}
            "virtualhost" => defaults.virtualhost = cx.one(c).map(|w| w.text.clone()),
            "lb_algo" | "lvs_sched" => vs.lb_algo = cx.one(c).cloned(),
            "lb_kind" | "lvs_method" => {
                kind_seen = true;
                vs.kind_loc = c.loc();
                match cx.one(c).map(|w| w.text.as_str()) {
                    Some("DR") => vs.kind = Kind::Dr,
                    Some("TUN") => vs.kind = Kind::Tun,
                    Some("NAT") => vs.kind = Kind::Nat,
                    Some(other) => {
                        cx.error(c.loc(), format!("{k} \"{other}\": expected DR, TUN or NAT"))
                    }
                    None => {}
                }
            }
            "protocol" => match cx.one(c).map(|w| w.text.as_str()) {
                Some("TCP") => vs.udp = false,
                Some("UDP") => vs.udp = true,
                Some(other) => cx.error(
                    c.loc(),
                    format!("protocol {other} cannot be translated: lbctl balances TCP and UDP"),
                ),
                None => {}
            },
            "persistence_timeout" => {
                if let Some(n) = cx.one_int(c) {
                    vs.persistence = Some((n, c.loc()));
                }
            }
            "sh-port" | "mh-port" => vs.sched_port = true,
            "sh-fallback" | "mh-fallback" => vs.sched_fallback = true,
            "sorry_server" => match c.args() {
                [a, p] => {
                    if let (Some(a), Some(p)) =
                        (cx.addr(a, "sorry_server"), cx.port(p, "sorry_server port"))
                    {
                        vs.sorry = Some((a, p, c.loc()));
                    }
                }
                _ => cx.error(c.loc(), "sorry_server: expected ADDRESS PORT"),
            },
            _ => cx.unsupported(c, "lbctl's [[vip]] has no such setting"),
        }
    }
    if !kind_seen {
        // LVS's own default.
        cx.warn(
            s.loc(),
            "no lb_kind: NAT, LVS's default (lbctl forwards NAT through IPVS)",
        );
    }
    for c in s.children().iter().filter(|c| c.keyword() == "real_server") {
        if let Some(rs) = read_real_server(c, &vs, &defaults, cx) {
            vs.real.push(rs);
        }
    }
    Some(vs)
}

fn read_real_server(
    s: &Stmt,
    vs: &VirtualServer,
    vs_defaults: &CheckDefaults,
    cx: &mut Cx,
) -> Option<RealServer> {
    let [a, p] = s.args() else {
        cx.error(s.loc(), "real_server: expected ADDRESS PORT");
        return None;
    };
    let addr = cx.addr(a, "real_server")?;
    let port = cx.port(p, "real_server port")?;
    if port != vs.port {
        if vs.kind == Kind::Nat {
            cx.error(
                p.loc,
                format!(
                    "real_server port {port} differs from the virtual server's {}: lbctl \
                     forwards to the VIP's own port (no port mapping)",
                    vs.port
                ),
            );
        } else if vs.port != 0 {
            cx.warn(
                p.loc,
                format!(
                    "real_server port {port}: with DR and TUN packets keep the VIP's port {} (as in LVS)",
                    vs.port
                ),
            );
        }
    }
    // Timers set on the real server apply to its checkers, wherever they
    // stand in the block: the checkers are read once all are known.
    let mut defaults = vs_defaults.clone();
    let mut weight = 1;
    let mut inhibit = false;
    let mut checkers = Vec::new();
    let mut unsupported = Vec::new();
    for c in s.children() {
        match c.keyword() {
            "weight" => weight = cx.one_int(c).unwrap_or(1),
            "inhibit_on_failure" => inhibit = true,
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" => checkers.push(c),
            "UDP_CHECK" | "DNS_CHECK" | "SMTP_CHECK" | "BFD_CHECK" | "FILE_CHECK"
            | "PING_CHECK" => unsupported.push(c),
            _ if defaults.read(c, cx) => {}
            _ => cx.unsupported(c, "lbctl's backends have no such setting"),
        }
    }
    let mut checks: Vec<(Loc, Vec<(&'static str, Val)>)> = Vec::new();
    for c in checkers {
        if let Some(hc) = read_check(c, port, &defaults, cx) {
            checks.push((c.loc(), hc));
        }
    }
    for c in &unsupported {
        let why = "lbctl checks by TCP connect, HTTP, or a program (MISC_CHECK): \
                   write this check as a MISC_CHECK script";
        if checks.is_empty() {
            // Without any check the server would never leave the table.
            cx.error(
                c.loc(),
                format!("{} cannot be translated: {why}", c.keyword()),
            );
        } else {
            cx.warn(
                c.loc(),
                format!("{} not translated (a weaker check): {why}", c.keyword()),
            );
        }
    }
    let check = match checks.len() {
        0 => vec![("type", Val::from("none"))],
        _ => {
            for (loc, _) in &checks[1..] {
                cx.warn(
                    *loc,
                    "a second checker not translated (a weaker check): lbctl runs one check \
                     per backend, the first; keepalived needs every checker to pass",
                );
            }
            checks.swap_remove(0).1
        }
    };
    Some(RealServer {
        loc: s.loc(),
        addr,
        port,
        weight,
        inhibit,
        check,
    })
}

/// One checker block as an lbctl `health_check` table; `None` with a note
/// when it cannot be one.
fn read_check(
    s: &Stmt,
    rs_port: u16,
    defaults: &CheckDefaults,
    cx: &mut Cx,
) -> Option<Vec<(&'static str, Val)>> {
    let kind = s.keyword();
    let mut port = rs_port;
    let mut d = defaults.clone();
    let mut paths: Vec<(Loc, String, Vec<Val>)> = Vec::new();
    let mut command = None;
    let mut misc_timeout = None;
    for c in s.children() {
        match (kind, c.keyword()) {
            (_, "connect_port") => {
                let w = cx.one(c)?;
                port = cx.port(w, "connect_port")?;
            }
            ("HTTP_GET" | "SSL_GET", "virtualhost") => {
                d.virtualhost = cx.one(c).map(|w| w.text.clone());
            }
            ("HTTP_GET" | "SSL_GET", "url") => {
                if let Some(u) = read_url(c, cx) {
                    paths.push(u);
                }
            }
            ("MISC_CHECK", "misc_path") => {
                let w = cx.one(c)?;
                command = cx.argv(w, "misc_path");
            }
            ("MISC_CHECK", "misc_timeout") => misc_timeout = cx.one_secs(c),
            ("MISC_CHECK", "misc_dynamic") => cx.unsupported(
                c,
                "the script's exit code does not set the weight in lbctl (0 is up, other is down)",
            ),
            _ if d.read(c, cx) => {}
            _ => cx.unsupported(c, "lbctl's health checks have no such setting"),
        }
    }
    let interval = d.delay_loop_ms;
    if interval == 0 {
        cx.error(
            s.loc(),
            format!("{kind}: a delay_loop of 0 checks without pause"),
        );
        return None;
    }
    let mut hc: Vec<(&'static str, Val)> = Vec::new();
    // keepalived's connect_timeout defaults to 5 s; misc_timeout to the delay_loop.
    let timeout = match kind {
        "MISC_CHECK" => misc_timeout.unwrap_or(interval),
        _ => d.connect_timeout_ms.unwrap_or(5_000),
    };
    let retry = d
        .retry
        .unwrap_or(if kind == "MISC_CHECK" { 0 } else { 1 })
        .max(0);
    match kind {
        "TCP_CHECK" | "SSL_GET" => {
            if kind == "SSL_GET" {
                cx.warn(
                    s.loc(),
                    format!(
                        "SSL_GET becomes a TCP connect check on port {port} (a weaker check): \
                         lbctl has no TLS check"
                    ),
                );
            }
            hc.push(("type", "tcp".into()));
            hc.push(("port", Val::Int(port.into())));
        }
        "HTTP_GET" => {
            let Some((_, path, status)) = paths.first().cloned() else {
                // keepalived drops such a checker: the server is always up.
                cx.warn(
                    s.loc(),
                    "HTTP_GET without a url: keepalived ignores such a checker, so the backend has none",
                );
                return None;
            };
            for (loc, _, _) in paths.iter().skip(1) {
                cx.warn(
                    *loc,
                    "a second url not translated (a weaker check): lbctl's HTTP check asks \
                     for one path; keepalived needs every url to pass",
                );
            }
            hc.push(("type", "http".into()));
            hc.push(("port", Val::Int(port.into())));
            hc.push(("path", Val::Str(path)));
            if let Some(h) = d.virtualhost {
                hc.push(("host", Val::Str(h)));
            }
            let status = if status.is_empty() {
                // keepalived: any 2xx when no status_code is given.
                vec![Val::from("200-299")]
            } else {
                status
            };
            hc.push(("expect_status", Val::List(status)));
        }
        _ => {
            let Some(command) = command else {
                cx.error(s.loc(), "MISC_CHECK without misc_path");
                return None;
            };
            hc.push(("type", "script".into()));
            hc.push(("command", Val::strs(&command)));
        }
    }
    if port == 0 && kind != "MISC_CHECK" {
        cx.error(
            s.loc(),
            format!("{kind} has no port (the real server's is 0): expected connect_port"),
        );
        return None;
    }
    if retry > 0 {
        let between = d.delay_before_retry_ms.unwrap_or(1_000);
        cx.warn_once(
            "retry",
            d.vs_loc,
            s.loc(),
            format!(
                "{kind}: retry {retry}: lbctl tries again at the next check, {} later (fall \
                 {}), where keepalived waits delay_before_retry ({}): a dead server leaves \
                 after about {} instead of {} (said once per virtual server)",
                fmt_ms(interval),
                retry + 1,
                fmt_ms(between),
                fmt_ms(interval * (retry as u64 + 1)),
                fmt_ms(interval + between * retry as u64)
            ),
        );
    }
    let timeout = cx.fit_timeout(s.loc(), kind, timeout, interval);
    hc.push(("interval", Val::Str(fmt_ms(interval))));
    hc.push(("timeout", Val::Str(fmt_ms(timeout))));
    hc.push(("rise", Val::Int(1)));
    hc.push(("fall", Val::Int(retry + 1)));
    Some(hc)
}

/// `url { path P; status_code N [...]; digest D }`: the path and the statuses.
fn read_url(s: &Stmt, cx: &mut Cx) -> Option<(Loc, String, Vec<Val>)> {
    let mut path = None;
    let mut status = Vec::new();
    for c in s.children() {
        match c.keyword() {
            "path" => path = cx.one(c).map(|w| w.text.clone()),
            "status_code" => {
                for w in c.args() {
                    if w.text.contains('-') {
                        status.push(Val::Str(w.text.clone()));
                    } else if let Some(n) = cx.int(w, "status_code") {
                        status.push(Val::Int(n));
                    }
                }
            }
            "digest" => cx.unsupported(
                c,
                "lbctl's HTTP check tests the status (and, with expect_body, a substring of the body), not a digest",
            ),
            _ => cx.unsupported(c, "lbctl's HTTP check has no such setting"),
        }
    }
    let Some(path) = path else {
        cx.error(s.loc(), "url without a path");
        return None;
    };
    Some((s.loc(), path, status))
}
