//! Codec tests against byte layouts from `linux/ip_vs.h` and the kernel's
//! reply format, and data-plane tests against a model of the IPVS table.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use netlink_packet_core::NetlinkPayload;

use super::{
    codec::{self, CmdAttr, DestAttr, IpvsCmd, IpvsMessage, StatsAttr, SvcAttr},
    *,
};
use crate::dataplane::state::{BackendSpec, HashFields, NodeSettings};

// ---------------------------------------------------------------------------
// Byte-level helpers, independent of the codec: plain TLVs as the kernel's
// nla_put* write them (4-byte header, value, zero padding to 4).

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut v = Vec::new();
    v.extend_from_slice(&(len as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn nlmsg(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&msg_type.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&4242u32.to_ne_bytes()); // port id
    v.extend_from_slice(payload);
    v
}

fn genl(cmd: u8, attrs: &[u8]) -> Vec<u8> {
    let mut v = vec![cmd, 1, 0, 0];
    v.extend_from_slice(attrs);
    v
}

const FAMILY: u16 = 0x25;

// ---------------------------------------------------------------------------
// Requests: exact bytes

#[test]
fn new_service_bytes_match_the_uapi_layout() {
    let key = ServiceKey::Addr {
        protocol: 6,
        addr: "10.0.0.1".parse().unwrap(),
        port: 80,
    };
    let cfg = ServiceConfig {
        sched_name: "mh".into(),
        flags: codec::svc_flags::SCHED2,
        timeout: 0,
        netmask: u32::MAX,
    };
    let got = codec::encode_request(codec::new_service(&key, &cfg), FAMILY, 7, false);
    #[rustfmt::skip]
    let want: Vec<u8> = [
        // nlmsghdr: len 104, type = family id, flags REQUEST|ACK, seq 7, pid 0
        &104u32.to_ne_bytes()[..], &FAMILY.to_ne_bytes(), &5u16.to_ne_bytes(),
        &7u32.to_ne_bytes(), &0u32.to_ne_bytes(),
        // genlmsghdr: IPVS_CMD_NEW_SERVICE = 1, version 1
        &[1, 1, 0, 0],
        // IPVS_CMD_ATTR_SERVICE = 1 (not flagged nested, like libipvs), len 84
        &84u16.to_ne_bytes(), &1u16.to_ne_bytes(),
        //   IPVS_SVC_ATTR_AF = 1: u16 AF_INET
        &6u16.to_ne_bytes(), &1u16.to_ne_bytes(), &2u16.to_ne_bytes(), &[0, 0],
        //   IPVS_SVC_ATTR_PROTOCOL = 2: u16 IPPROTO_TCP
        &6u16.to_ne_bytes(), &2u16.to_ne_bytes(), &6u16.to_ne_bytes(), &[0, 0],
        //   IPVS_SVC_ATTR_ADDR = 3: union nf_inet_addr (16 bytes)
        &20u16.to_ne_bytes(), &3u16.to_ne_bytes(), &[10, 0, 0, 1], &[0; 12],
        //   IPVS_SVC_ATTR_PORT = 4: be16
        &6u16.to_ne_bytes(), &4u16.to_ne_bytes(), &[0, 80], &[0, 0],
        //   IPVS_SVC_ATTR_SCHED_NAME = 6: "mh\0"
        &7u16.to_ne_bytes(), &6u16.to_ne_bytes(), b"mh\0", &[0],
        //   IPVS_SVC_ATTR_FLAGS = 7: struct ip_vs_flags { flags, mask }
        &12u16.to_ne_bytes(), &7u16.to_ne_bytes(), &0x10u32.to_ne_bytes(), &[0xff; 4],
        //   IPVS_SVC_ATTR_TIMEOUT = 8: u32
        &8u16.to_ne_bytes(), &8u16.to_ne_bytes(), &0u32.to_ne_bytes(),
        //   IPVS_SVC_ATTR_NETMASK = 9: be32 255.255.255.255
        &8u16.to_ne_bytes(), &9u16.to_ne_bytes(), &[0xff; 4],
    ]
    .concat();
    assert_eq!(got, want);
}

#[test]
fn new_dest_bytes_match_the_uapi_layout() {
    let svc = ServiceKey::Addr {
        protocol: 17,
        addr: "2001:db8::1".parse().unwrap(),
        port: 53,
    };
    let key = DestKey {
        addr: "2001:db8::10".parse().unwrap(),
        port: 53,
    };
    let cfg = DestConfig {
        fwd: FwdMethod::Tunnel,
        weight: 5,
        u_thresh: 0,
        l_thresh: 0,
    };
    let got = codec::encode_request(codec::new_dest(&svc, &key, &cfg), FAMILY, 9, false);
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let svc_attrs = [
        nla(1, &10u16.to_ne_bytes()),
        nla(2, &17u16.to_ne_bytes()),
        nla(3, &v6("2001:db8::1")),
        nla(4, &53u16.to_be_bytes()),
    ]
    .concat();
    let dest_attrs = [
        nla(11, &10u16.to_ne_bytes()), // IPVS_DEST_ATTR_ADDR_FAMILY
        nla(1, &v6("2001:db8::10")),   // IPVS_DEST_ATTR_ADDR
        nla(2, &53u16.to_be_bytes()),  // IPVS_DEST_ATTR_PORT
        nla(3, &2u32.to_ne_bytes()),   // IPVS_DEST_ATTR_FWD_METHOD: IP_VS_CONN_F_TUNNEL
        nla(4, &5u32.to_ne_bytes()),   // IPVS_DEST_ATTR_WEIGHT
        nla(5, &0u32.to_ne_bytes()),   // IPVS_DEST_ATTR_U_THRESH
        nla(6, &0u32.to_ne_bytes()),   // IPVS_DEST_ATTR_L_THRESH
    ]
    .concat();
    let payload = genl(5, &[nla(1, &svc_attrs), nla(2, &dest_attrs)].concat());
    let mut want = nlmsg(FAMILY, 5, 9, &payload);
    want[12..16].copy_from_slice(&0u32.to_ne_bytes()); // requests carry port id 0
    assert_eq!(got, want);
}

#[test]
fn del_and_dump_requests() {
    let svc = ServiceKey::Addr {
        protocol: 6,
        addr: "192.0.2.1".parse().unwrap(),
        port: 0,
    };
    let got = codec::encode_request(codec::get_services(), FAMILY, 1, true);
    // NLM_F_REQUEST | NLM_F_DUMP (0x300), no ACK; IPVS_CMD_GET_SERVICE = 4.
    let mut want = 20u32.to_ne_bytes().to_vec();
    want.extend_from_slice(&FAMILY.to_ne_bytes());
    want.extend_from_slice(&0x301u16.to_ne_bytes());
    want.extend_from_slice(&1u32.to_ne_bytes());
    want.extend_from_slice(&0u32.to_ne_bytes());
    want.extend_from_slice(&[4, 1, 0, 0]);
    assert_eq!(got, want);

    let got = codec::encode_request(codec::del_service(&svc), FAMILY, 2, false);
    let ident = [
        nla(1, &2u16.to_ne_bytes()),
        nla(2, &6u16.to_ne_bytes()),
        nla(3, &[192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(4, &[0, 0]),
    ]
    .concat();
    assert_eq!(&got[20..], &nla(1, &ident)[..]);
    assert_eq!(got[16], 3, "IPVS_CMD_DEL_SERVICE");

    let got = codec::encode_request(codec::get_dests(&svc), FAMILY, 3, true);
    assert_eq!(got[16], 8, "IPVS_CMD_GET_DEST");
    assert_eq!(&got[20..], &nla(1, &ident)[..]);

    let got = codec::encode_request(codec::flush(), FAMILY, 4, false);
    assert_eq!(got.len(), 20);
    assert_eq!(got[16], 17, "IPVS_CMD_FLUSH");
}

// ---------------------------------------------------------------------------
// Replies: as ip_vs_genl_fill_service / _dest / _stats{,64} write them

fn stats32(base: u64) -> Vec<u8> {
    // CONNS, INPKTS, OUTPKTS: u32; INBYTES, OUTBYTES: u64 (nla_put_u64_64bit,
    // no PAD on x86-64); CPS..OUTBPS: u32.
    [
        nla(1, &(base as u32).to_ne_bytes()),
        nla(2, &(base as u32 + 1).to_ne_bytes()),
        nla(3, &(base as u32 + 2).to_ne_bytes()),
        nla(4, &(base + 3).to_ne_bytes()),
        nla(5, &(base + 4).to_ne_bytes()),
        nla(6, &0u32.to_ne_bytes()),
        nla(7, &0u32.to_ne_bytes()),
        nla(8, &0u32.to_ne_bytes()),
        nla(9, &0u32.to_ne_bytes()),
        nla(10, &0u32.to_ne_bytes()),
    ]
    .concat()
}

fn stats64(base: u64) -> Vec<u8> {
    let mut v = vec![nla(11, &[])]; // a PAD attribute, as on strict-alignment arches
    for k in 1..=10u16 {
        let val = if k <= 5 { base + u64::from(k) - 1 } else { 0 };
        v.push(nla(k, &val.to_ne_bytes()));
    }
    v.concat()
}

fn kernel_service_reply(seq: u32) -> Vec<u8> {
    let svc = [
        nla(1, &2u16.to_ne_bytes()),
        nla(2, &6u16.to_ne_bytes()),
        nla(3, &[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(4, &80u16.to_be_bytes()),
        nla(6, b"mh\0"),
        // flags reported with HASHED (0x2) and mask ~0
        nla(7, &[0x12u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat()),
        nla(8, &0u32.to_ne_bytes()),
        nla(9, &u32::MAX.to_be_bytes()),
        nla(10, &stats32(100)),
        nla(12, &stats64(5_000_000_000)),
    ]
    .concat();
    // NLM_F_MULTI = 2; the kernel answers GET_SERVICE with cmd NEW_SERVICE.
    nlmsg(FAMILY, 2, seq, &genl(1, &nla(1, &svc)))
}

fn kernel_fwmark_reply(seq: u32) -> Vec<u8> {
    let svc = [
        nla(1, &2u16.to_ne_bytes()),
        nla(5, &7u32.to_ne_bytes()),
        nla(6, b"rr\0"),
        nla(11, b"sip\0"),
        nla(7, &[2u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat()),
        nla(8, &0u32.to_ne_bytes()),
        nla(9, &u32::MAX.to_be_bytes()),
    ]
    .concat();
    nlmsg(FAMILY, 2, seq, &genl(1, &nla(1, &svc)))
}

fn done(seq: u32) -> Vec<u8> {
    nlmsg(3, 2, seq, &0i32.to_ne_bytes())
}

#[test]
fn decodes_a_get_service_dump_as_the_kernel_sends_it() {
    let datagram = [kernel_service_reply(11), kernel_fwmark_reply(11), done(11)].concat();
    let msgs = codec::decode_datagram(&datagram).unwrap();
    assert_eq!(msgs.len(), 3);
    let NetlinkPayload::InnerMessage(g) = &msgs[0].payload else {
        panic!("not an IPVS message: {:?}", msgs[0].payload)
    };
    assert_eq!(g.payload.cmd, IpvsCmd::NewService);
    let s = codec::parse_service(&g.payload).unwrap();
    assert_eq!(
        s.key,
        ServiceKey::Addr {
            protocol: 6,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80
        }
    );
    assert_eq!(s.config.sched_name, "mh");
    assert_eq!(
        s.config.flags,
        codec::svc_flags::SCHED2,
        "HASHED is masked out"
    );
    assert_eq!(s.config.netmask, u32::MAX);
    // the 64-bit nest wins over the 32-bit one
    assert_eq!(s.stats.conns, 5_000_000_000);
    assert_eq!(s.stats.inpkts, 5_000_000_001);
    assert_eq!(s.stats.outbytes, 5_000_000_004);

    let NetlinkPayload::InnerMessage(g) = &msgs[1].payload else {
        panic!("not an IPVS message")
    };
    let f = codec::parse_service(&g.payload).unwrap();
    assert_eq!(f.key, ServiceKey::Fwmark { af: 2, mark: 7 });
    assert_eq!(f.pe_name.as_deref(), Some("sip"));
    assert!(matches!(msgs[2].payload, NetlinkPayload::Done(ref d) if d.code == 0));

    // The raw attribute view keeps the 32-bit nest too.
    let CmdAttr::Service(attrs) = &g.payload.attrs[0] else {
        panic!()
    };
    assert!(attrs.contains(&SvcAttr::PeName("sip".into())));
    let NetlinkPayload::InnerMessage(g0) = &msgs[0].payload else {
        panic!()
    };
    let CmdAttr::Service(attrs) = &g0.payload.attrs[0] else {
        panic!()
    };
    let st = attrs
        .iter()
        .find_map(|a| match a {
            SvcAttr::Stats(v) => Some(v),
            _ => None,
        })
        .unwrap();
    assert_eq!(st[0], StatsAttr::Value(1, 100));
    assert_eq!(st[3], StatsAttr::Value(4, 103));
}

#[test]
fn decodes_a_get_dest_dump_as_the_kernel_sends_it() {
    let dest = [
        nla(1, &[10, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(11, &2u16.to_ne_bytes()),
        nla(2, &80u16.to_be_bytes()),
        nla(3, &3u32.to_ne_bytes()), // IP_VS_CONN_F_DROUTE
        nla(4, &7u32.to_ne_bytes()),
        nla(13, &[0]), // TUN_TYPE u8
        nla(14, &0u16.to_be_bytes()),
        nla(15, &0u16.to_ne_bytes()),
        nla(5, &0u32.to_ne_bytes()),
        nla(6, &0u32.to_ne_bytes()),
        nla(7, &12u32.to_ne_bytes()),
        nla(8, &34u32.to_ne_bytes()),
        nla(9, &0u32.to_ne_bytes()),
        nla(10, &stats32(1)),
        nla(12, &stats64(1)),
    ]
    .concat();
    let datagram = [nlmsg(FAMILY, 2, 5, &genl(5, &nla(2, &dest))), done(5)].concat();
    let msgs = codec::decode_datagram(&datagram).unwrap();
    let NetlinkPayload::InnerMessage(g) = &msgs[0].payload else {
        panic!()
    };
    assert_eq!(g.payload.cmd, IpvsCmd::NewDest);
    let d = codec::parse_dest(&g.payload, codec::AF_INET).unwrap();
    assert_eq!(d.key.addr, "10.0.1.2".parse::<IpAddr>().unwrap());
    assert_eq!(d.key.port, 80);
    assert_eq!(d.config.fwd, FwdMethod::Route);
    assert_eq!(d.config.weight, 7);
    assert_eq!((d.active_conns, d.inact_conns), (12, 34));
    assert_eq!(d.stats.inpkts, 2);
    let CmdAttr::Dest(attrs) = &g.payload.attrs[0] else {
        panic!()
    };
    assert!(attrs.contains(&DestAttr::TunType(0)));
}

#[test]
fn decodes_kernel_errors_and_acks() {
    // NLMSG_ERROR: int error, then the offending request's header.
    let req = codec::encode_request(codec::flush(), FAMILY, 3, false);
    let mut payload = (-17i32).to_ne_bytes().to_vec(); // -EEXIST
    payload.extend_from_slice(&req[..16]);
    let ack = {
        let mut p = 0i32.to_ne_bytes().to_vec();
        p.extend_from_slice(&req[..16]);
        nlmsg(2, 0x100, 4, &p) // NLM_F_CAPPED
    };
    let msgs = codec::decode_datagram(&[nlmsg(2, 0, 3, &payload), ack].concat()).unwrap();
    let NetlinkPayload::Error(e) = &msgs[0].payload else {
        panic!()
    };
    assert_eq!(e.to_io().raw_os_error(), Some(17));
    let NetlinkPayload::Error(e) = &msgs[1].payload else {
        panic!()
    };
    assert!(e.code.is_none(), "code 0 is an ACK");
}

#[test]
fn requests_round_trip_through_the_parser() {
    let key = ServiceKey::Addr {
        protocol: 17,
        addr: "2001:db8::5".parse().unwrap(),
        port: 0,
    };
    let cfg = ServiceConfig {
        sched_name: "wrr".into(),
        flags: codec::svc_flags::PERSISTENT,
        timeout: 300,
        netmask: 128,
    };
    let bytes = codec::encode_request(codec::set_service(&key, &cfg), FAMILY, 1, false);
    let msgs = codec::decode_datagram(&bytes).unwrap();
    let NetlinkPayload::InnerMessage(g) = &msgs[0].payload else {
        panic!()
    };
    assert_eq!(g.payload.cmd, IpvsCmd::SetService);
    let s = codec::parse_service(&g.payload).unwrap();
    assert_eq!((s.key, s.config), (key, cfg));
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    let good = [kernel_service_reply(1), done(1)].concat();
    for cut in 0..good.len() {
        let _ = codec::decode_datagram(&good[..cut]);
    }
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let mut b = good.clone();
        for _ in 0..3 {
            let i = rng.usize(..b.len());
            b[i] = rng.u8(..);
        }
        if let Ok(msgs) = codec::decode_datagram(&b) {
            for m in msgs {
                if let NetlinkPayload::InnerMessage(g) = m.payload {
                    let _ = codec::parse_service(&g.payload);
                    let _ = codec::parse_dest(&g.payload, codec::AF_INET);
                }
            }
        }
    }
    // A short address is rejected.
    let svc = [nla(1, &2u16.to_ne_bytes()), nla(3, &[1, 2])].concat();
    assert!(codec::decode_datagram(&nlmsg(FAMILY, 2, 1, &genl(1, &nla(1, &svc)))).is_err());
}

// ---------------------------------------------------------------------------
// A model of the kernel's IPVS table

#[derive(Default)]
struct FakeKernel {
    services: BTreeMap<ServiceKey, (ServiceConfig, BTreeMap<DestKey, DestConfig>)>,
    writes: Vec<IpvsCmd>,
}

fn errno(cmd: IpvsCmd, e: i32) -> IpvsError {
    IpvsError::Kernel {
        cmd: format!("{cmd:?}"),
        source: std::io::Error::from_raw_os_error(e),
    }
}

fn svc_key_of(m: &IpvsMessage) -> ServiceKey {
    let mut af = 0;
    let (mut proto, mut addr, mut port) = (0, [0; 16], 0);
    for a in &m.attrs {
        if let CmdAttr::Service(v) = a {
            for a in v {
                match a {
                    SvcAttr::Af(x) => af = *x,
                    SvcAttr::Protocol(x) => proto = *x,
                    SvcAttr::Addr(x) => addr = *x,
                    SvcAttr::Port(x) => port = *x,
                    _ => {}
                }
            }
        }
    }
    let addr = if af == codec::AF_INET {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        IpAddr::from(addr)
    };
    ServiceKey::Addr {
        protocol: proto,
        addr,
        port,
    }
}

impl IpvsKernel for FakeKernel {
    fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        Ok(self
            .services
            .iter()
            .map(|(k, (c, _))| ServiceEntry {
                key: *k,
                config: c.clone(),
                pe_name: None,
                stats: IpvsCounters {
                    inpkts: 10,
                    inbytes: 1000,
                    ..Default::default()
                },
            })
            .collect())
    }

    fn dests(&mut self, svc: &ServiceKey) -> Result<Vec<DestEntry>, IpvsError> {
        let (_, d) = self
            .services
            .get(svc)
            .ok_or_else(|| errno(IpvsCmd::GetDest, libc::ESRCH))?;
        Ok(d.iter()
            .map(|(k, c)| DestEntry {
                key: *k,
                config: c.clone(),
                active_conns: 1,
                inact_conns: 2,
                persist_conns: 0,
                stats: IpvsCounters {
                    inpkts: 3,
                    inbytes: 300,
                    ..Default::default()
                },
            })
            .collect())
    }

    fn execute(&mut self, msg: IpvsMessage) -> Result<(), IpvsError> {
        // Through the bytes, as the kernel would see them.
        let bytes = codec::encode_request(msg, FAMILY, 1, false);
        let mut msgs = codec::decode_datagram(&bytes)?;
        let NetlinkPayload::InnerMessage(g) = msgs.remove(0).payload else {
            panic!("not an IPVS message")
        };
        let m = g.payload;
        let cmd = m.cmd;
        self.writes.push(cmd);
        let key = svc_key_of(&m);
        let dest = || {
            let mut d = codec::parse_dest(&m, key.af()).ok();
            if d.is_none() {
                // DEL_DEST carries only the address and port.
                let mut k = None;
                let mut port = 0;
                for a in &m.attrs {
                    if let CmdAttr::Dest(v) = a {
                        for a in v {
                            match a {
                                DestAttr::Addr(x) => k = Some(*x),
                                DestAttr::Port(p) => port = *p,
                                _ => {}
                            }
                        }
                    }
                }
                let raw = k.expect("dest address");
                let addr = if key.af() == codec::AF_INET {
                    IpAddr::from([raw[0], raw[1], raw[2], raw[3]])
                } else {
                    IpAddr::from(raw)
                };
                d = Some(DestEntry {
                    key: DestKey { addr, port },
                    config: DestConfig {
                        fwd: FwdMethod::Masq,
                        weight: 0,
                        u_thresh: 0,
                        l_thresh: 0,
                    },
                    active_conns: 0,
                    inact_conns: 0,
                    persist_conns: 0,
                    stats: IpvsCounters::default(),
                });
            }
            d.expect("dest")
        };
        match cmd {
            IpvsCmd::NewService => {
                let s = codec::parse_service(&m)?;
                if self.services.contains_key(&key) {
                    return Err(errno(cmd, libc::EEXIST));
                }
                self.services.insert(key, (s.config, BTreeMap::new()));
            }
            IpvsCmd::SetService => {
                let s = codec::parse_service(&m)?;
                let e = self
                    .services
                    .get_mut(&key)
                    .ok_or_else(|| errno(cmd, libc::ESRCH))?;
                e.0 = s.config;
            }
            IpvsCmd::DelService => {
                self.services
                    .remove(&key)
                    .ok_or_else(|| errno(cmd, libc::ESRCH))?;
            }
            IpvsCmd::NewDest | IpvsCmd::SetDest | IpvsCmd::DelDest => {
                let d = dest();
                let (_, ds) = self
                    .services
                    .get_mut(&key)
                    .ok_or_else(|| errno(cmd, libc::ESRCH))?;
                match cmd {
                    IpvsCmd::NewDest if ds.contains_key(&d.key) => {
                        return Err(errno(cmd, libc::EEXIST));
                    }
                    IpvsCmd::SetDest | IpvsCmd::DelDest if !ds.contains_key(&d.key) => {
                        return Err(errno(cmd, libc::ENOENT));
                    }
                    IpvsCmd::DelDest => {
                        ds.remove(&d.key);
                    }
                    _ => {
                        ds.insert(d.key, d.config);
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "lbctl-ipvs-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn backend(addr: &str, weight: u32, healthy: bool) -> BackendSpec {
    BackendSpec {
        addr: addr.parse().unwrap(),
        weight,
        healthy,
        mac: None,
        vlan: 0,
    }
}

fn vip(addr: &str, port: Option<u16>, fwd: Forwarding, backends: Vec<BackendSpec>) -> VipState {
    VipState {
        spec: VipSpec {
            addr: addr.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
        },
        forwarding: fwd,
        hash: HashFields::default(),
        ring_size: 65537,
        active: true,
        debug: false,
        backends,
    }
}

fn state(vips: Vec<VipState>) -> DesiredState {
    DesiredState {
        node: NodeSettings::default(),
        vips,
    }
}

fn base_state() -> DesiredState {
    state(vec![
        vip(
            "10.0.0.1",
            Some(80),
            Forwarding::Dr,
            vec![backend("10.0.1.1", 1, true), backend("10.0.1.2", 2, true)],
        ),
        vip(
            "10.0.0.2",
            None,
            Forwarding::Ipip,
            vec![backend("10.0.2.1", 1, true)],
        ),
    ])
}

fn key(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: 6,
        addr: addr.parse().unwrap(),
        port,
    }
}

fn foreign() -> (ServiceKey, ServiceConfig) {
    (
        key("192.0.2.9", 443),
        ServiceConfig {
            sched_name: "rr".into(),
            flags: 0,
            timeout: 0,
            netmask: u32::MAX,
        },
    )
}

#[test]
fn apply_creates_then_writes_nothing_when_unchanged() {
    let dir = temp_dir();
    let mut k = FakeKernel::default();
    let (fk, fc) = foreign();
    k.services.insert(fk, (fc.clone(), BTreeMap::new()));
    let mut dp = IpvsDataplane::with_kernel(k, IpvsOptions::new(&dir)).unwrap();

    let r = dp.apply(&base_state()).unwrap();
    assert_eq!(r.services_added, 2);
    assert_eq!(r.dests_added, 3);
    let kern = &dp.kernel_mut().services;
    let (c, d) = &kern[&key("10.0.0.1", 80)];
    assert_eq!(c.sched_name, "mh");
    assert_eq!(
        c.flags,
        codec::svc_flags::SCHED1 | codec::svc_flags::SCHED2,
        "mh-fallback always (drain must not refuse connections), mh-port from hash.src_port"
    );
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[&DestKey {
            addr: "10.0.1.2".parse().unwrap(),
            port: 80
        }],
        DestConfig {
            fwd: FwdMethod::Route,
            weight: 2,
            u_thresh: 0,
            l_thresh: 0
        }
    );
    // port-less: port 0, persistent, tunnel, real servers on port 0
    let (c, d) = &kern[&key("10.0.0.2", 0)];
    assert_eq!(
        c.flags & codec::svc_flags::PERSISTENT,
        codec::svc_flags::PERSISTENT
    );
    assert_eq!(c.timeout, DEFAULT_PORTLESS_PERSISTENCE);
    assert_eq!(d.keys().next().unwrap().port, 0);
    assert_eq!(d.values().next().unwrap().fwd, FwdMethod::Tunnel);
    assert_eq!(kern[&fk].0, fc, "foreign service untouched");

    dp.kernel_mut().writes.clear();
    let r = dp.apply(&base_state()).unwrap();
    assert!(r.is_empty(), "{r:?}");
    assert!(dp.kernel_mut().writes.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn health_and_weight_changes_are_single_dest_updates() {
    let dir = temp_dir();
    let mut dp = IpvsDataplane::with_kernel(FakeKernel::default(), IpvsOptions::new(&dir)).unwrap();
    dp.apply(&base_state()).unwrap();

    let mut s = base_state();
    s.vips[0].backends[0].healthy = false;
    s.vips[0].backends[1].weight = 5;
    dp.kernel_mut().writes.clear();
    let r = dp.apply(&s).unwrap();
    assert_eq!(r.dests_updated, 2);
    assert_eq!(
        dp.kernel_mut().writes,
        vec![IpvsCmd::SetDest, IpvsCmd::SetDest]
    );
    let d = &dp.kernel_mut().services[&key("10.0.0.1", 80)].1;
    let w: Vec<u32> = d.values().map(|c| c.weight).collect();
    assert_eq!(w, vec![0, 5]);

    // Remove instead of zeroing, per VIP.
    let mut o = IpvsOptions::new(&dir);
    o.vips.insert(
        s.vips[0].spec,
        VipOptions {
            unhealthy: Some(UnhealthyAction::Remove),
            ..Default::default()
        },
    );
    dp.set_options(o);
    let r = dp.apply(&s).unwrap();
    assert_eq!((r.dests_removed, r.dests_updated), (1, 0));
    // The VIP's choice wins over the node's.
    let mut o = IpvsOptions::new(&dir);
    o.unhealthy = UnhealthyAction::Remove;
    o.vips.insert(
        s.vips[0].spec,
        VipOptions {
            unhealthy: Some(UnhealthyAction::Zero),
            ..Default::default()
        },
    );
    dp.set_options(o);
    let r = dp.apply(&s).unwrap();
    assert_eq!((r.dests_added, r.dests_removed), (1, 0), "back at weight 0");
    let mut o = IpvsOptions::new(&dir);
    o.unhealthy = UnhealthyAction::Remove;
    dp.set_options(o);
    let r = dp.apply(&s).unwrap();
    assert_eq!((r.dests_removed, r.dests_updated), (1, 0));
    // Healthy again: added back.
    let r = dp.apply(&base_state()).unwrap();
    assert_eq!((r.dests_added, r.dests_updated), (1, 1));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn options_choose_scheduler_nat_and_persistence() {
    let dir = temp_dir();
    let mut o = IpvsOptions::new(&dir);
    let spec = base_state().vips[0].spec;
    o.vips.insert(
        spec,
        VipOptions {
            scheduler: Some(Scheduler::Wrr),
            forwarding: Some(IpvsForwarding::Nat),
            persistence: Some(60),
            unhealthy: None,
        },
    );
    let mut dp = IpvsDataplane::with_kernel(FakeKernel::default(), o).unwrap();
    dp.apply(&base_state()).unwrap();
    let (c, d) = &dp.kernel_mut().services[&key("10.0.0.1", 80)];
    assert_eq!(c.sched_name, "wrr");
    assert_eq!(
        c.flags,
        codec::svc_flags::PERSISTENT,
        "no mh-port flag for wrr"
    );
    assert_eq!(c.timeout, 60);
    assert!(d.values().all(|c| c.fwd == FwdMethod::Masq));

    // Scheduler change of a live service: one SET_SERVICE, dests untouched.
    dp.set_options(IpvsOptions::new(&dir));
    dp.kernel_mut().writes.clear();
    let r = dp.apply(&base_state()).unwrap();
    assert_eq!(r.services_updated, 1);
    assert_eq!(r.dests_updated, 2, "NAT -> DR");
    assert_eq!(dp.kernel_mut().writes[0], IpvsCmd::SetService);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn restart_reconciles_and_leaves_foreign_services_alone() {
    let dir = temp_dir();
    let mut k = FakeKernel::default();
    let (fk, fc) = foreign();
    k.services.insert(fk, (fc, BTreeMap::new()));
    let mut dp = IpvsDataplane::with_kernel(k, IpvsOptions::new(&dir)).unwrap();
    dp.apply(&base_state()).unwrap();
    assert!(dir.join(OWNED_FILE).exists());

    // "Crash": the kernel keeps its table; a new process starts with a
    // config that dropped the second VIP and changed a weight.
    let mut kernel = std::mem::take(dp.kernel_mut());
    drop(dp);
    // Someone deleted a real server by hand meanwhile.
    kernel
        .services
        .get_mut(&key("10.0.0.1", 80))
        .unwrap()
        .1
        .pop_first();
    let mut dp = IpvsDataplane::with_kernel(kernel, IpvsOptions::new(&dir)).unwrap();
    assert_eq!(dp.owned().len(), 2);
    let mut s = base_state();
    s.vips.truncate(1);
    s.vips[0].backends[1].weight = 9;
    let r = dp.apply(&s).unwrap();
    assert_eq!(r.services_removed, 1);
    assert_eq!(r.dests_added, 1);
    assert_eq!(r.dests_updated, 1);
    assert!(r.conflicts.is_empty());
    assert!(dp.kernel_mut().services.contains_key(&fk));
    assert_eq!(dp.owned().len(), 1);

    // A VIP colliding with the foreign service is a conflict, not a takeover.
    let mut s2 = s.clone();
    s2.vips.push(vip(
        "192.0.2.9",
        Some(443),
        Forwarding::Dr,
        vec![backend("10.9.9.9", 1, true)],
    ));
    dp.kernel_mut().writes.clear();
    let r = dp.apply(&s2).unwrap();
    assert_eq!(r.conflicts, vec![s2.vips[1].spec]);
    assert!(dp.kernel_mut().writes.is_empty());
    assert!(dp.kernel_mut().services[&fk].1.is_empty());

    // Stop: only what lbctl owns goes.
    assert_eq!(dp.remove_owned().unwrap(), 1);
    let left: Vec<ServiceKey> = dp.kernel_mut().services.keys().copied().collect();
    assert_eq!(left, vec![fk]);
    assert!(dp.owned().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn record_of_a_service_the_kernel_lost_is_dropped() {
    let dir = temp_dir();
    let mut dp = IpvsDataplane::with_kernel(FakeKernel::default(), IpvsOptions::new(&dir)).unwrap();
    dp.apply(&base_state()).unwrap();
    // The kernel lost everything (module reloaded, reboot without state reset).
    dp.kernel_mut().services.clear();
    let r = dp.apply(&state(vec![])).unwrap();
    assert_eq!(r.services_removed, 0);
    assert!(dp.owned().is_empty());
    let rec = OwnedRecord::load(dir.join(OWNED_FILE)).unwrap();
    assert!(rec.is_empty());
    // And a corrupt record is an error, not a silent loss of ownership.
    std::fs::write(dir.join(OWNED_FILE), b"{").unwrap();
    assert!(matches!(
        OwnedRecord::load(dir.join(OWNED_FILE)),
        Err(IpvsError::Record { .. })
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn adopt_existing_takes_over_a_matching_service() {
    let dir = temp_dir();
    let mut k = FakeKernel::default();
    let (fk, fc) = foreign();
    k.services.insert(fk, (fc, BTreeMap::new()));
    let mut o = IpvsOptions::new(&dir);
    o.adopt_existing = true;
    let mut dp = IpvsDataplane::with_kernel(k, o).unwrap();
    let s = state(vec![vip(
        "192.0.2.9",
        Some(443),
        Forwarding::Dr,
        vec![backend("10.9.9.9", 1, true)],
    )]);
    let r = dp.apply(&s).unwrap();
    assert_eq!((r.services_updated, r.dests_added), (1, 1));
    assert!(dp.owned().contains(&fk));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn status_and_stats_have_the_xdp_shape() {
    let dir = temp_dir();
    let mut k = FakeKernel::default();
    let (fk, fc) = foreign();
    k.services.insert(fk, (fc, BTreeMap::new()));
    let mut dp = IpvsDataplane::with_kernel(k, IpvsOptions::new(&dir)).unwrap();
    dp.apply(&base_state()).unwrap();
    let st = dp.status().unwrap();
    assert_eq!(st.services.len(), 3);
    assert!(st.services[0].owned && st.services[1].owned && !st.services[2].owned);
    assert_eq!(st.services[0].vip, Some(base_state().vips[0].spec));
    assert_eq!(st.services[0].dests[0].active_conns, 1);
    let stats = dp.stats().unwrap();
    let v = base_state().vips[0].spec;
    assert_eq!(stats.vips[&v].packets, 10);
    assert_eq!(stats.backends[&v].len(), 2);
    assert_eq!(
        stats.backends[&v][&"10.0.1.1".parse::<IpAddr>().unwrap()].bytes,
        300
    );
    assert!(serde_json::to_string(&st).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn invalid_values_are_errors() {
    let dir = temp_dir();
    let mut dp = IpvsDataplane::with_kernel(FakeKernel::default(), IpvsOptions::new(&dir)).unwrap();
    let s = state(vec![vip(
        "10.0.0.1",
        Some(80),
        Forwarding::Dr,
        vec![backend("10.0.1.1", u32::MAX, true)],
    )]);
    assert!(matches!(dp.apply(&s), Err(IpvsError::Invalid { .. })));
    let s = state(vec![vip(
        "10.0.0.1",
        Some(80),
        Forwarding::Dr,
        vec![backend("2001:db8::1", 1, true)],
    )]);
    assert!(matches!(dp.apply(&s), Err(IpvsError::Invalid { .. })));
    assert!(dp.kernel_mut().writes.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn vip_and_service_keys_map_both_ways() {
    for v in base_state().vips {
        assert_eq!(vip_of(&service_key(&v.spec)), Some(v.spec));
    }
    assert_eq!(vip_of(&ServiceKey::Fwmark { af: 2, mark: 1 }), None);
}
