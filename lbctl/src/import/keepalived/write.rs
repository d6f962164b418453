//! The model read from keepalived.conf, written as lb.toml text.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::convert::Cx;
use super::emit::{TomlOut, Val};
use super::read::{Input, Instance, Kind, VirtualServer};
use super::{Loc, Options, SourceFiles};

fn vip_name(vs: &VirtualServer) -> String {
    let addr = vs.addr.to_string().replace(':', "_");
    let mut name = format!("vs-{addr}");
    if vs.port != 0 {
        name.push_str(&format!("-{}", vs.port));
    }
    if vs.udp {
        name.push_str("-udp");
    }
    name
}

/// The vrrp_instance that carries an address, and the interface it is on.
struct Owner<'a> {
    instance: &'a str,
    iface: Option<&'a str>,
}

pub(super) fn write(input: &Input, opts: &Options, cx: &mut Cx, files: &SourceFiles) -> String {
    let mut out = TomlOut::default();

    let nat = input.servers.iter().find(|v| v.kind == Kind::Nat);
    let interface = opts
        .interface
        .clone()
        .or_else(|| input.instances.iter().find_map(|i| i.interface.clone()));
    out.table("node");
    match &interface {
        Some(i) => out.kv("interface", i.as_str()),
        None => {
            let loc = input.servers.first().map_or(
                Loc {
                    file: 0,
                    line: 1,
                    column: 1,
                },
                |v| v.loc,
            );
            cx.error(
                loc,
                "no interface to attach to: no vrrp_instance names one; pass --interface",
            );
        }
    }
    if let Some(vs) = nat {
        out.comment(&format!(
            "NAT ({}): only IPVS forwards by NAT",
            files.at(vs.kind_loc)
        ));
        out.kv("dataplane", "ipvs");
        // keepalived removes a failed real server (unless inhibit_on_failure).
        out.kv("on_unhealthy", "remove");
    } else {
        out.kv("dataplane", "xdp");
    }
    let ipvs = nat.is_some();

    write_ipip(input, opts, cx, &mut out);

    // Which instance carries each address, and on which interface.
    let mut owner: BTreeMap<IpAddr, Owner<'_>> = BTreeMap::new();
    for i in &input.instances {
        for v in &i.vips {
            owner.entry(v.addr).or_insert(Owner {
                instance: &i.name,
                iface: v.dev.as_deref().or(i.interface.as_deref()),
            });
        }
    }
    for vs in &input.servers {
        // XDP sees the packets of one interface only.
        if let (
            false,
            Some(node_if),
            Some(Owner {
                iface: Some(vip_if),
                instance,
            }),
        ) = (ipvs, &interface, owner.get(&vs.addr))
            && vip_if != node_if
        {
            cx.error(
                vs.loc,
                format!(
                    "{} is on {vip_if} (vrrp_instance {instance}) but the XDP data plane runs \
                     on {node_if}: lbctl balances the VIPs of one interface; convert the \
                     virtual servers of {vip_if} into another lb.toml (--interface {vip_if})",
                    vs.addr
                ),
            );
        }
        write_vip(vs, ipvs, &owner, cx, files, &mut out);
    }

    let default_version = input.vrrp_version;
    for i in &input.instances {
        write_instance(i, default_version, cx, files, &mut out);
    }
    for s in &input.scripts {
        out.array_table("vrrp_script");
        out.comment(&format!("vrrp_script {} ({})", s.name, files.at(s.loc)));
        out.kv("name", s.name.clone());
        out.kv("command", Val::strs(&s.command));
        for (k, v) in &s.keys {
            out.kv(k, v.clone());
        }
    }
    out.finish()
}

fn write_ipip(input: &Input, opts: &Options, cx: &mut Cx, out: &mut TomlOut) {
    let mut need_v4 = None;
    let mut need_v6 = None;
    for vs in input.servers.iter().filter(|v| v.kind == Kind::Tun) {
        for rs in &vs.real {
            let slot = if rs.addr.is_ipv4() {
                &mut need_v4
            } else {
                &mut need_v6
            };
            slot.get_or_insert(vs.kind_loc);
        }
    }
    if need_v4.is_none() && need_v6.is_none() {
        return;
    }
    let v4 = opts.ipip_source.iter().find(|a| a.is_ipv4());
    let v6 = opts.ipip_source.iter().find(|a| a.is_ipv6());
    out.table("ipip");
    for (need, have, key, fam) in [
        (need_v4, v4, "source_v4", "IPv4"),
        (need_v6, v6, "source_v6", "IPv6"),
    ] {
        match (need, have) {
            (Some(_), Some(a)) => out.kv(key, a.to_string()),
            (Some(loc), None) => cx.error(
                loc,
                format!(
                    "lb_kind TUN to {fam} real servers: lbctl encapsulates in XDP and needs the \
                     outer source address: pass --ipip-source ADDRESS ({fam})"
                ),
            ),
            (None, _) => {}
        }
    }
}

fn write_vip(
    vs: &VirtualServer,
    ipvs: bool,
    owner: &BTreeMap<IpAddr, Owner<'_>>,
    cx: &mut Cx,
    files: &SourceFiles,
    out: &mut TomlOut,
) {
    out.array_table("vip");
    out.comment(&format!(
        "virtual_server {} {} ({})",
        vs.addr,
        vs.port,
        files.at(vs.loc)
    ));
    out.kv("name", vip_name(vs));
    out.kv("address", vs.addr.to_string());
    if vs.port != 0 {
        out.kv("port", i64::from(vs.port));
    }
    out.kv("protocol", if vs.udp { "udp" } else { "tcp" });
    out.kv(
        "forwarding",
        match vs.kind {
            Kind::Dr => "dr",
            Kind::Tun => "ipip",
            Kind::Nat => "nat",
        },
    );
    // keepalived (LVS) schedules by wlc when no lb_algo is given.
    let (algo, algo_loc) = match &vs.lb_algo {
        Some(w) => (w.text.as_str(), w.loc),
        None => ("wlc", vs.loc),
    };
    let given = if vs.lb_algo.is_some() {
        format!("lb_algo {algo}")
    } else {
        "no lb_algo (LVS's default, wlc)".to_owned()
    };
    if ipvs {
        let sched = match algo {
            "rr" | "wrr" | "sh" | "mh" => algo,
            "lc" => "rr",
            _ => "wrr",
        };
        if sched != algo {
            cx.warn(
                algo_loc,
                format!("{given}: lbctl's IPVS schedulers are rr, wrr, sh and mh; using {sched}"),
            );
        }
        out.kv("scheduler", sched);
    } else if algo == "sh" {
        cx.warn(
            algo_loc,
            "lb_algo sh: lbctl's XDP data plane keeps a client on one backend by hashing \
             its address (hash without src_port), with weighted Maglev hashing",
        );
    } else if algo != "mh" {
        cx.warn(
            algo_loc,
            format!(
                "{given}: lbctl's XDP data plane spreads flows by weighted Maglev hashing, \
                 and a connection table keeps each flow on its backend"
            ),
        );
    }
    match vs.persistence {
        Some((secs, _)) if ipvs => out.kv("persistence_timeout", format!("{secs}s")),
        Some((_, loc)) => cx.warn(
            loc,
            "persistence_timeout: lbctl's XDP data plane keeps a client on one backend by \
             hashing its address (hash without src_port), with no timeout",
        ),
        None => {}
    }
    // IPVS's sh and mh hash the client's address only, unless keepalived
    // sets their port flag; lbctl sets it from `src_port` in the hash.
    let ipvs_hash = ipvs && matches!(algo, "sh" | "mh");
    if ipvs_hash && !vs.sched_fallback {
        cx.warn(
            algo_loc,
            format!(
                "lb_algo {algo} without {algo}-fallback: lbctl always sets the fallback flag, so a \
                 connection that hashes to a real server of weight 0 goes to another one \
                 instead of being refused"
            ),
        );
    }
    if (ipvs_hash && !vs.sched_port) || (!ipvs && (algo == "sh" || vs.persistence.is_some())) {
        // Client affinity: the flow hash leaves the client's port out.
        let mut fields = vec![Val::from("src_addr"), Val::from("dst_addr")];
        if vs.port != 0 {
            fields.push(Val::from("dst_port"));
        }
        fields.push(Val::from("protocol"));
        out.kv("hash", Val::List(fields));
    }
    if let Some((addr, port, loc)) = vs.sorry {
        if port != vs.port && vs.kind == Kind::Nat {
            cx.error(
                loc,
                format!(
                    "sorry_server port {port} differs from the virtual server's {}: lbctl has no port mapping",
                    vs.port
                ),
            );
        }
        out.kv("sorry_server", addr.to_string());
    }
    match owner.get(&vs.addr) {
        Some(o) => out.kv("vrrp_instance", o.instance),
        None => cx.warn(
            vs.loc,
            format!(
                "{} is in no vrrp_instance's virtual_ipaddress: the VIP is forwarded whatever the VRRP state",
                vs.addr
            ),
        ),
    }
    if vs.real.is_empty() {
        cx.warn(vs.loc, "virtual_server without real servers");
    }
    // inhibit_on_failure: weight 0 (drain) instead of removal. lbctl sets
    // it per VIP, so the real servers of one virtual server must agree.
    let inhibited: Vec<_> = vs.real.iter().filter(|r| r.inhibit).collect();
    if !inhibited.is_empty() {
        if inhibited.len() != vs.real.len() {
            cx.error(
                inhibited[0].loc,
                "inhibit_on_failure on some real servers of this virtual server only: lbctl \
                 drains or removes the failed backends of a VIP alike",
            );
        } else if ipvs {
            out.kv("on_unhealthy", "drain");
        } else {
            cx.warn(
                inhibited[0].loc,
                "inhibit_on_failure: lbctl's XDP data plane takes a failed backend out of its \
                 table; its connection table keeps established flows on it",
            );
        }
    }
    for rs in &vs.real {
        out.array_table("vip.backend");
        out.comment(&format!(
            "real_server {} {} ({})",
            rs.addr,
            rs.port,
            files.at(rs.loc)
        ));
        out.kv("address", rs.addr.to_string());
        out.kv("weight", rs.weight);
        out.kv("health_check", Val::Table(rs.check.clone()));
    }
}

fn write_instance(
    i: &Instance,
    default_version: Option<i64>,
    cx: &mut Cx,
    files: &SourceFiles,
    out: &mut TomlOut,
) {
    out.array_table("vrrp_instance");
    out.comment(&format!("vrrp_instance {} ({})", i.name, files.at(i.loc)));
    out.kv("name", i.name.clone());
    let loc = i.loc;
    match &i.interface {
        Some(ifname) => out.kv("interface", ifname.clone()),
        None => cx.error(loc, format!("vrrp_instance {} has no interface", i.name)),
    }
    if let Some(s) = &i.state {
        out.kv("state", s.clone());
    }
    match i.vrid {
        Some(v) => out.kv("virtual_router_id", v),
        None => cx.error(
            loc,
            format!("vrrp_instance {} has no virtual_router_id", i.name),
        ),
    }
    if let Some(p) = i.priority {
        out.kv("priority", p);
    }
    // keepalived speaks version 2 unless told otherwise; IPv6 is always 3
    // (keepalived ignores a version 2 for it).
    let v6 = i.vips.iter().any(|v| v.addr.is_ipv6());
    let mut version = i.version.or(default_version).unwrap_or(2);
    if v6 && version == 2 {
        if i.version.is_some() || default_version.is_some() {
            cx.warn(
                loc,
                "VRRP version 2 for IPv6 addresses: keepalived speaks version 3 for them, and so does lbctl",
            );
        }
        version = 3;
    }
    out.kv("version", version);
    out.kv(
        "advert_int",
        i.advert_int.clone().unwrap_or_else(|| "1s".to_owned()),
    );
    if let Some(p) = i.preempt {
        out.kv("preempt", p);
    }
    if let Some(d) = &i.preempt_delay {
        out.kv("preempt_delay", d.clone());
    }
    if let Some(pass) = &i.auth_pass {
        out.kv(
            "authentication",
            Val::Table(vec![
                ("auth_type", "PASS".into()),
                ("auth_pass", Val::Str(pass.clone())),
            ]),
        );
    }
    if let Some(src) = &i.unicast_src_ip {
        out.kv("unicast_src_ip", src.clone());
    }
    if !i.unicast_peer.is_empty() {
        out.kv("unicast_peer", Val::strs(&i.unicast_peer));
    }
    out.kv(
        "virtual_ipaddress",
        Val::List(
            i.vips
                .iter()
                .map(|v| {
                    Val::Str(match &v.dev {
                        Some(d) => format!("{} dev {d}", v.spec),
                        None => v.spec.clone(),
                    })
                })
                .collect(),
        ),
    );
    if !i.track_interface.is_empty() {
        out.kv("track_interface", Val::List(i.track_interface.clone()));
    }
    if !i.track_script.is_empty() {
        out.kv("track_script", Val::List(i.track_script.clone()));
    }
    if let Some(n) = &i.notify {
        out.kv("notify", Val::strs(n));
    }
    for (k, v) in &i.garp {
        out.kv(k, v.clone());
    }
}
