//! The IPVS generic-netlink codec: pure building and parsing of the messages
//! `ipvsadm` exchanges with the kernel (family `"IPVS"`, version 1).
//!
//! Numbers and types follow the kernel's uapi header `linux/ip_vs.h`; the
//! reply layout follows `net/netfilter/ipvs/ip_vs_ctl.c`
//! (`ip_vs_genl_fill_service`, `ip_vs_genl_fill_dest`,
//! `ip_vs_genl_fill_stats{,64}`). Generic-netlink and netlink framing come
//! from `netlink-packet-generic` and `netlink-packet-core`; this module only
//! adds the IPVS attributes.
//!
//! Nested attributes are emitted without `NLA_F_NESTED`, as `libipvs` does
//! and as the kernel itself does in its replies (`nla_nest_start_noflag`);
//! the IPVS family parses its requests with the non-strict validator, and
//! the parser here accepts either form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

/// Generic-netlink family name of IPVS (`IPVS_GENL_NAME`).
pub const IPVS_GENL_NAME: &str = "IPVS";
/// Generic-netlink version of IPVS (`IPVS_GENL_VERSION`).
pub const IPVS_GENL_VERSION: u8 = 1;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// Top-level command attributes (`IPVS_CMD_ATTR_*`).
pub mod cmd_attr {
    /// Nested service attributes.
    pub const SERVICE: u16 = 1;
    /// Nested destination attributes.
    pub const DEST: u16 = 2;
    /// Nested sync-daemon attributes.
    pub const DAEMON: u16 = 3;
    /// TCP timeout (u32).
    pub const TIMEOUT_TCP: u16 = 4;
    /// TCP FIN timeout (u32).
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    /// UDP timeout (u32).
    pub const TIMEOUT_UDP: u16 = 6;
}

/// Service attributes (`IPVS_SVC_ATTR_*`), nested in [`cmd_attr::SERVICE`].
pub mod svc_attr {
    /// Address family (u16).
    pub const AF: u16 = 1;
    /// IP protocol (u16).
    pub const PROTOCOL: u16 = 2;
    /// Address (`union nf_inet_addr`, 16 bytes).
    pub const ADDR: u16 = 3;
    /// Port (be16).
    pub const PORT: u16 = 4;
    /// Firewall mark (u32).
    pub const FWMARK: u16 = 5;
    /// Scheduler name (string, at most 15 bytes + NUL).
    pub const SCHED_NAME: u16 = 6;
    /// `struct ip_vs_flags { u32 flags; u32 mask; }`.
    pub const FLAGS: u16 = 7;
    /// Persistence timeout in seconds (u32).
    pub const TIMEOUT: u16 = 8;
    /// Persistence netmask (be32; a prefix length for IPv6).
    pub const NETMASK: u16 = 9;
    /// Nested 32-bit statistics.
    pub const STATS: u16 = 10;
    /// Persistence engine name (string).
    pub const PE_NAME: u16 = 11;
    /// Nested 64-bit statistics.
    pub const STATS64: u16 = 12;
}

/// Destination attributes (`IPVS_DEST_ATTR_*`), nested in [`cmd_attr::DEST`].
pub mod dest_attr {
    /// Address (`union nf_inet_addr`, 16 bytes).
    pub const ADDR: u16 = 1;
    /// Port (be16).
    pub const PORT: u16 = 2;
    /// Forwarding method (u32, `IP_VS_CONN_F_*` & `IP_VS_CONN_F_FWD_MASK`).
    pub const FWD_METHOD: u16 = 3;
    /// Weight (u32, the kernel keeps an int).
    pub const WEIGHT: u16 = 4;
    /// Upper connection threshold (u32).
    pub const U_THRESH: u16 = 5;
    /// Lower connection threshold (u32).
    pub const L_THRESH: u16 = 6;
    /// Active connections (u32, replies only).
    pub const ACTIVE_CONNS: u16 = 7;
    /// Inactive connections (u32, replies only).
    pub const INACT_CONNS: u16 = 8;
    /// Persistent connections (u32, replies only).
    pub const PERSIST_CONNS: u16 = 9;
    /// Nested 32-bit statistics.
    pub const STATS: u16 = 10;
    /// Address family of the destination (u16).
    pub const ADDR_FAMILY: u16 = 11;
    /// Nested 64-bit statistics.
    pub const STATS64: u16 = 12;
    /// Tunnel type (u8).
    pub const TUN_TYPE: u16 = 13;
    /// Tunnel port (be16).
    pub const TUN_PORT: u16 = 14;
    /// Tunnel flags (u16).
    pub const TUN_FLAGS: u16 = 15;
}

/// Statistics attributes (`IPVS_STATS_ATTR_*`).
pub mod stats_attr {
    /// Connections scheduled.
    pub const CONNS: u16 = 1;
    /// Incoming packets.
    pub const INPKTS: u16 = 2;
    /// Outgoing packets.
    pub const OUTPKTS: u16 = 3;
    /// Incoming bytes.
    pub const INBYTES: u16 = 4;
    /// Outgoing bytes.
    pub const OUTBYTES: u16 = 5;
    /// Connection rate.
    pub const CPS: u16 = 6;
    /// Incoming packet rate.
    pub const INPPS: u16 = 7;
    /// Outgoing packet rate.
    pub const OUTPPS: u16 = 8;
    /// Incoming byte rate.
    pub const INBPS: u16 = 9;
    /// Outgoing byte rate.
    pub const OUTBPS: u16 = 10;
    /// Alignment padding for 64-bit values.
    pub const PAD: u16 = 11;
}

/// Service flags (`IP_VS_SVC_F_*`).
pub mod svc_flags {
    /// Persistent service.
    pub const PERSISTENT: u32 = 0x0001;
    /// Hashed entry (set by the kernel; not a setting).
    pub const HASHED: u32 = 0x0002;
    /// One-packet scheduling (UDP).
    pub const ONEPACKET: u32 = 0x0004;
    /// Scheduler flag 1 (`sh`/`mh`: fallback).
    pub const SCHED1: u32 = 0x0008;
    /// Scheduler flag 2 (`sh`/`mh`: hash the source port too).
    pub const SCHED2: u32 = 0x0010;
    /// Scheduler flag 3.
    pub const SCHED3: u32 = 0x0020;
}

/// IPVS generic-netlink commands (`IPVS_CMD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IpvsCmd {
    /// Add a service.
    NewService = 1,
    /// Modify a service.
    SetService = 2,
    /// Delete a service.
    DelService = 3,
    /// Get services (dump) or one service.
    GetService = 4,
    /// Add a destination.
    NewDest = 5,
    /// Modify a destination.
    SetDest = 6,
    /// Delete a destination.
    DelDest = 7,
    /// Get the destinations of a service (dump).
    GetDest = 8,
    /// Add a sync daemon.
    NewDaemon = 9,
    /// Delete a sync daemon.
    DelDaemon = 10,
    /// Get sync daemons.
    GetDaemon = 11,
    /// Set timeouts.
    SetConfig = 12,
    /// Get timeouts.
    GetConfig = 13,
    /// Unused by the kernel.
    SetInfo = 14,
    /// Version and connection-table size.
    GetInfo = 15,
    /// Zero counters.
    Zero = 16,
    /// Delete every service.
    Flush = 17,
}

impl TryFrom<u8> for IpvsCmd {
    type Error = DecodeError;

    fn try_from(v: u8) -> Result<Self, DecodeError> {
        use IpvsCmd::*;
        Ok(match v {
            1 => NewService,
            2 => SetService,
            3 => DelService,
            4 => GetService,
            5 => NewDest,
            6 => SetDest,
            7 => DelDest,
            8 => GetDest,
            9 => NewDaemon,
            10 => DelDaemon,
            11 => GetDaemon,
            12 => SetConfig,
            13 => GetConfig,
            14 => SetInfo,
            15 => GetInfo,
            16 => Zero,
            17 => Flush,
            other => return Err(DecodeError::from(format!("unknown IPVS command {other}"))),
        })
    }
}

/// Errors of the codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Malformed netlink data.
    #[error("malformed netlink data: {0}")]
    Decode(#[from] DecodeError),
    /// A reply lacks an attribute the kernel always sends.
    #[error("IPVS reply without {0}")]
    Missing(&'static str),
    /// An attribute has a value this code cannot represent.
    #[error("invalid IPVS attribute: {0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------
// Attributes

/// One statistics attribute. 32-bit (`STATS`) and 64-bit (`STATS64`) nests
/// use the same numbers; the value width comes from the attribute length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsAttr {
    /// A known counter or rate and its value.
    Value(u16, u64),
    /// Padding or an attribute this code does not know.
    Other(DefaultNla),
}

/// Service attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SvcAttr {
    /// `AF_INET` or `AF_INET6`.
    Af(u16),
    /// IP protocol number.
    Protocol(u16),
    /// Address in `nf_inet_addr` layout (16 bytes, IPv4 in the first 4).
    Addr([u8; 16]),
    /// Port, host order (sent big-endian).
    Port(u16),
    /// Firewall mark.
    Fwmark(u32),
    /// Scheduler name.
    SchedName(String),
    /// Flags and the mask of flags to change.
    Flags {
        /// Flag values.
        flags: u32,
        /// Which flags to set.
        mask: u32,
    },
    /// Persistence timeout (s).
    Timeout(u32),
    /// Persistence netmask (raw be32 value; IPv6: a prefix length).
    Netmask(u32),
    /// 32-bit statistics.
    Stats(Vec<StatsAttr>),
    /// Persistence engine.
    PeName(String),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttr>),
    /// Unknown.
    Other(DefaultNla),
}

/// Destination attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestAttr {
    /// Address in `nf_inet_addr` layout.
    Addr([u8; 16]),
    /// Port, host order (sent big-endian).
    Port(u16),
    /// Forwarding method.
    FwdMethod(u32),
    /// Weight.
    Weight(u32),
    /// Upper threshold.
    UThresh(u32),
    /// Lower threshold.
    LThresh(u32),
    /// Active connections.
    ActiveConns(u32),
    /// Inactive connections.
    InactConns(u32),
    /// Persistent connections.
    PersistConns(u32),
    /// 32-bit statistics.
    Stats(Vec<StatsAttr>),
    /// Address family.
    AddrFamily(u16),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttr>),
    /// Tunnel type.
    TunType(u8),
    /// Tunnel port (host order; sent big-endian).
    TunPort(u16),
    /// Tunnel flags.
    TunFlags(u16),
    /// Unknown.
    Other(DefaultNla),
}

/// Top-level attributes of an IPVS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdAttr {
    /// The service.
    Service(Vec<SvcAttr>),
    /// The destination.
    Dest(Vec<DestAttr>),
    /// Anything else (daemon, timeouts).
    Other(DefaultNla),
}

fn nested_len<T: Nla>(v: &[T]) -> usize {
    v.iter().map(Emitable::buffer_len).sum()
}

fn emit_nested<T: Nla>(v: &[T], buf: &mut [u8]) {
    v.emit(buf);
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            StatsAttr::Value(kind, _) if is_64bit_stat(*kind) => 8,
            StatsAttr::Value(..) => 4,
            StatsAttr::Other(n) => n.value_len(),
        }
    }
    fn kind(&self) -> u16 {
        match self {
            StatsAttr::Value(k, _) => *k,
            StatsAttr::Other(n) => n.kind(),
        }
    }
    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            StatsAttr::Value(k, v) if is_64bit_stat(*k) => buf.copy_from_slice(&v.to_ne_bytes()),
            StatsAttr::Value(_, v) => buf.copy_from_slice(&(*v as u32).to_ne_bytes()),
            StatsAttr::Other(n) => n.emit_value(buf),
        }
    }
}

/// In the 32-bit nest only the byte counters are 64-bit; the emitter here
/// writes that layout (tests build 64-bit nests from raw bytes).
fn is_64bit_stat(kind: u16) -> bool {
    kind == stats_attr::INBYTES || kind == stats_attr::OUTBYTES
}

impl Nla for SvcAttr {
    fn value_len(&self) -> usize {
        use SvcAttr::*;
        match self {
            Af(_) | Protocol(_) | Port(_) => 2,
            Addr(_) => 16,
            Fwmark(_) | Timeout(_) | Netmask(_) => 4,
            SchedName(s) | PeName(s) => s.len() + 1,
            Flags { .. } => 8,
            Stats(v) | Stats64(v) => nested_len(v),
            Other(n) => n.value_len(),
        }
    }
    fn kind(&self) -> u16 {
        use SvcAttr::*;
        match self {
            Af(_) => svc_attr::AF,
            Protocol(_) => svc_attr::PROTOCOL,
            Addr(_) => svc_attr::ADDR,
            Port(_) => svc_attr::PORT,
            Fwmark(_) => svc_attr::FWMARK,
            SchedName(_) => svc_attr::SCHED_NAME,
            Flags { .. } => svc_attr::FLAGS,
            Timeout(_) => svc_attr::TIMEOUT,
            Netmask(_) => svc_attr::NETMASK,
            Stats(_) => svc_attr::STATS,
            PeName(_) => svc_attr::PE_NAME,
            Stats64(_) => svc_attr::STATS64,
            Other(n) => n.kind(),
        }
    }
    fn emit_value(&self, buf: &mut [u8]) {
        use SvcAttr::*;
        match self {
            Af(v) | Protocol(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Port(v) => buf.copy_from_slice(&v.to_be_bytes()),
            Addr(a) => buf.copy_from_slice(a),
            Fwmark(v) | Timeout(v) | Netmask(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            SchedName(s) | PeName(s) => emit_cstr(s, buf),
            Flags { flags, mask } => {
                buf[..4].copy_from_slice(&flags.to_ne_bytes());
                buf[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            Stats(v) | Stats64(v) => emit_nested(v, buf),
            Other(n) => n.emit_value(buf),
        }
    }
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        use DestAttr::*;
        match self {
            Addr(_) => 16,
            Port(_) | AddrFamily(_) | TunPort(_) | TunFlags(_) => 2,
            TunType(_) => 1,
            FwdMethod(_) | Weight(_) | UThresh(_) | LThresh(_) | ActiveConns(_) | InactConns(_)
            | PersistConns(_) => 4,
            Stats(v) | Stats64(v) => nested_len(v),
            Other(n) => n.value_len(),
        }
    }
    fn kind(&self) -> u16 {
        use DestAttr::*;
        match self {
            Addr(_) => dest_attr::ADDR,
            Port(_) => dest_attr::PORT,
            FwdMethod(_) => dest_attr::FWD_METHOD,
            Weight(_) => dest_attr::WEIGHT,
            UThresh(_) => dest_attr::U_THRESH,
            LThresh(_) => dest_attr::L_THRESH,
            ActiveConns(_) => dest_attr::ACTIVE_CONNS,
            InactConns(_) => dest_attr::INACT_CONNS,
            PersistConns(_) => dest_attr::PERSIST_CONNS,
            Stats(_) => dest_attr::STATS,
            AddrFamily(_) => dest_attr::ADDR_FAMILY,
            Stats64(_) => dest_attr::STATS64,
            TunType(_) => dest_attr::TUN_TYPE,
            TunPort(_) => dest_attr::TUN_PORT,
            TunFlags(_) => dest_attr::TUN_FLAGS,
            Other(n) => n.kind(),
        }
    }
    fn emit_value(&self, buf: &mut [u8]) {
        use DestAttr::*;
        match self {
            Addr(a) => buf.copy_from_slice(a),
            Port(v) | TunPort(v) => buf.copy_from_slice(&v.to_be_bytes()),
            AddrFamily(v) | TunFlags(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            TunType(v) => buf[0] = *v,
            FwdMethod(v) | Weight(v) | UThresh(v) | LThresh(v) | ActiveConns(v) | InactConns(v)
            | PersistConns(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Stats(v) | Stats64(v) => emit_nested(v, buf),
            Other(n) => n.emit_value(buf),
        }
    }
}

impl Nla for CmdAttr {
    fn value_len(&self) -> usize {
        match self {
            CmdAttr::Service(v) => nested_len(v),
            CmdAttr::Dest(v) => nested_len(v),
            CmdAttr::Other(n) => n.value_len(),
        }
    }
    fn kind(&self) -> u16 {
        match self {
            CmdAttr::Service(_) => cmd_attr::SERVICE,
            CmdAttr::Dest(_) => cmd_attr::DEST,
            CmdAttr::Other(n) => n.kind(),
        }
    }
    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            CmdAttr::Service(v) => emit_nested(v, buf),
            CmdAttr::Dest(v) => emit_nested(v, buf),
            CmdAttr::Other(n) => n.emit_value(buf),
        }
    }
}

fn emit_cstr(s: &str, buf: &mut [u8]) {
    let n = s.len();
    buf[..n].copy_from_slice(s.as_bytes());
    buf[n] = 0;
}

// -- parsing helpers (lengths checked, never panic)

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], DecodeError> {
    v.get(..N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| DecodeError::from(format!("{what}: {} bytes, need {N}", v.len())))
}

fn ne_u16(v: &[u8], what: &str) -> Result<u16, DecodeError> {
    fixed::<2>(v, what).map(u16::from_ne_bytes)
}
fn be_u16(v: &[u8], what: &str) -> Result<u16, DecodeError> {
    fixed::<2>(v, what).map(u16::from_be_bytes)
}
fn ne_u32(v: &[u8], what: &str) -> Result<u32, DecodeError> {
    fixed::<4>(v, what).map(u32::from_ne_bytes)
}
fn cstr(v: &[u8]) -> Result<String, DecodeError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).map_err(DecodeError::from)
}
/// An address attribute: 16 bytes, or 4 for a bare IPv4 address.
fn addr16(v: &[u8], what: &str) -> Result<[u8; 16], DecodeError> {
    let mut out = [0u8; 16];
    match v.len() {
        4 => out[..4].copy_from_slice(v),
        n if n >= 16 => out.copy_from_slice(&v[..16]),
        n => return Err(DecodeError::from(format!("{what}: {n} bytes"))),
    }
    Ok(out)
}

fn parse_nested<T>(
    v: &[u8],
    f: impl Fn(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    NlasIterator::new(v)
        .map(|n| n.and_then(|n| f(&n)))
        .collect()
}

fn parse_stats(v: &[u8]) -> Result<Vec<StatsAttr>, DecodeError> {
    parse_nested(v, |n| {
        let val = n.value();
        Ok(match (n.kind(), val.len()) {
            (stats_attr::PAD, _) | (0, _) | (12.., _) => StatsAttr::Other(DefaultNla::parse(n)?),
            (k, 8) => StatsAttr::Value(k, u64::from_ne_bytes(fixed::<8>(val, "stat")?)),
            (k, 4) => StatsAttr::Value(k, u64::from(ne_u32(val, "stat")?)),
            _ => StatsAttr::Other(DefaultNla::parse(n)?),
        })
    })
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for SvcAttr {
    fn parse(n: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = n.value();
        Ok(match n.kind() {
            svc_attr::AF => SvcAttr::Af(ne_u16(v, "svc af")?),
            svc_attr::PROTOCOL => SvcAttr::Protocol(ne_u16(v, "svc protocol")?),
            svc_attr::ADDR => SvcAttr::Addr(addr16(v, "svc addr")?),
            svc_attr::PORT => SvcAttr::Port(be_u16(v, "svc port")?),
            svc_attr::FWMARK => SvcAttr::Fwmark(ne_u32(v, "svc fwmark")?),
            svc_attr::SCHED_NAME => SvcAttr::SchedName(cstr(v)?),
            svc_attr::FLAGS => {
                let b = fixed::<8>(v, "svc flags")?;
                SvcAttr::Flags {
                    flags: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    mask: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                }
            }
            svc_attr::TIMEOUT => SvcAttr::Timeout(ne_u32(v, "svc timeout")?),
            svc_attr::NETMASK => SvcAttr::Netmask(ne_u32(v, "svc netmask")?),
            svc_attr::STATS => SvcAttr::Stats(parse_stats(v)?),
            svc_attr::PE_NAME => SvcAttr::PeName(cstr(v)?),
            svc_attr::STATS64 => SvcAttr::Stats64(parse_stats(v)?),
            _ => SvcAttr::Other(DefaultNla::parse(n)?),
        })
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(n: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = n.value();
        Ok(match n.kind() {
            dest_attr::ADDR => DestAttr::Addr(addr16(v, "dest addr")?),
            dest_attr::PORT => DestAttr::Port(be_u16(v, "dest port")?),
            dest_attr::FWD_METHOD => DestAttr::FwdMethod(ne_u32(v, "dest fwd")?),
            dest_attr::WEIGHT => DestAttr::Weight(ne_u32(v, "dest weight")?),
            dest_attr::U_THRESH => DestAttr::UThresh(ne_u32(v, "dest u_thresh")?),
            dest_attr::L_THRESH => DestAttr::LThresh(ne_u32(v, "dest l_thresh")?),
            dest_attr::ACTIVE_CONNS => DestAttr::ActiveConns(ne_u32(v, "dest active")?),
            dest_attr::INACT_CONNS => DestAttr::InactConns(ne_u32(v, "dest inactive")?),
            dest_attr::PERSIST_CONNS => DestAttr::PersistConns(ne_u32(v, "dest persist")?),
            dest_attr::STATS => DestAttr::Stats(parse_stats(v)?),
            dest_attr::ADDR_FAMILY => DestAttr::AddrFamily(ne_u16(v, "dest af")?),
            dest_attr::STATS64 => DestAttr::Stats64(parse_stats(v)?),
            dest_attr::TUN_TYPE => DestAttr::TunType(fixed::<1>(v, "dest tun type")?[0]),
            dest_attr::TUN_PORT => DestAttr::TunPort(be_u16(v, "dest tun port")?),
            dest_attr::TUN_FLAGS => DestAttr::TunFlags(ne_u16(v, "dest tun flags")?),
            _ => DestAttr::Other(DefaultNla::parse(n)?),
        })
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for CmdAttr {
    fn parse(n: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        Ok(match n.kind() {
            cmd_attr::SERVICE => CmdAttr::Service(parse_nested(n.value(), |a| SvcAttr::parse(a))?),
            cmd_attr::DEST => CmdAttr::Dest(parse_nested(n.value(), |a| DestAttr::parse(a))?),
            _ => CmdAttr::Other(DefaultNla::parse(n)?),
        })
    }
}

// ---------------------------------------------------------------------------
// Messages

/// One IPVS generic-netlink message: a command and its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: IpvsCmd,
    /// Top-level attributes.
    pub attrs: Vec<CmdAttr>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }
    fn command(&self) -> u8 {
        self.cmd as u8
    }
    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buf: &mut [u8]) {
        self.attrs.as_slice().emit(buf);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Self {
            cmd: IpvsCmd::try_from(header.cmd)?,
            attrs: parse_nested(buf, |a| CmdAttr::parse(a))?,
        })
    }
}

/// A full netlink message carrying an IPVS message.
pub type IpvsNetlinkMessage = NetlinkMessage<GenlMessage<IpvsMessage>>;

/// Frames `msg` as a netlink request to `family_id` with sequence number
/// `seq`: `NLM_F_REQUEST` and `NLM_F_DUMP` for a dump (ended by
/// `NLMSG_DONE`), `NLM_F_REQUEST | NLM_F_ACK` otherwise.
pub fn encode_request(msg: IpvsMessage, family_id: u16, seq: u32, dump: bool) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family_id);
    let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(genl));
    nl.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
    nl.header.sequence_number = seq;
    nl.finalize();
    let mut out = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut out);
    out
}

/// Splits a datagram from the kernel into its netlink messages and parses
/// each (IPVS payloads, errors/acks, done).
///
/// # Errors
/// Malformed framing or attributes.
pub fn decode_datagram(mut buf: &[u8]) -> Result<Vec<IpvsNetlinkMessage>, CodecError> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(fixed::<4>(buf, "nlmsg_len")?) as usize;
        if len < 16 || len > buf.len() {
            return Err(CodecError::Invalid(format!(
                "netlink message length {len} with {} bytes left",
                buf.len()
            )));
        }
        out.push(IpvsNetlinkMessage::deserialize(&buf[..len])?);
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or(&[]);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Typed view

/// How a destination is reached (`IP_VS_CONN_F_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FwdMethod {
    /// NAT (`-m`).
    Masq,
    /// Local node.
    Local,
    /// IPIP tunnel (`-i`).
    Tunnel,
    /// Direct routing (`-g`).
    Route,
    /// Bypass.
    Bypass,
}

impl FwdMethod {
    /// Kernel value.
    pub const fn raw(self) -> u32 {
        match self {
            FwdMethod::Masq => 0,
            FwdMethod::Local => 1,
            FwdMethod::Tunnel => 2,
            FwdMethod::Route => 3,
            FwdMethod::Bypass => 4,
        }
    }

    /// From the kernel value (masked with `IP_VS_CONN_F_FWD_MASK`).
    pub fn from_raw(v: u32) -> Result<Self, CodecError> {
        Ok(match v & 0x7 {
            0 => FwdMethod::Masq,
            1 => FwdMethod::Local,
            2 => FwdMethod::Tunnel,
            3 => FwdMethod::Route,
            4 => FwdMethod::Bypass,
            o => return Err(CodecError::Invalid(format!("forwarding method {o}"))),
        })
    }

    /// The name `ipvsadm -Ln` prints.
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            FwdMethod::Masq => "Masq",
            FwdMethod::Local => "Local",
            FwdMethod::Tunnel => "Tunnel",
            FwdMethod::Route => "Route",
            FwdMethod::Bypass => "Bypass",
        }
    }
}

/// Identity of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ServiceKey {
    /// (protocol, address, port).
    Addr {
        /// IP protocol number.
        protocol: u16,
        /// Address (family implied).
        addr: IpAddr,
        /// Port; 0 = every port (persistent services only).
        port: u16,
    },
    /// Firewall-mark service (never created by lbctl; seen in dumps).
    Fwmark {
        /// Address family.
        af: u16,
        /// Mark.
        mark: u32,
    },
}

impl ServiceKey {
    /// Address family.
    pub fn af(&self) -> u16 {
        match self {
            ServiceKey::Addr { addr, .. } => af_of(*addr),
            ServiceKey::Fwmark { af, .. } => *af,
        }
    }

    /// The identifying attributes.
    pub fn attrs(&self) -> Vec<SvcAttr> {
        match *self {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => vec![
                SvcAttr::Af(af_of(addr)),
                SvcAttr::Protocol(protocol),
                SvcAttr::Addr(inet_addr(addr)),
                SvcAttr::Port(port),
            ],
            ServiceKey::Fwmark { af, mark } => vec![SvcAttr::Af(af), SvcAttr::Fwmark(mark)],
        }
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => {
                let p = match *protocol {
                    6 => "TCP".to_owned(),
                    17 => "UDP".to_owned(),
                    132 => "SCTP".to_owned(),
                    o => o.to_string(),
                };
                match addr {
                    IpAddr::V4(a) => write!(f, "{p} {a}:{port}"),
                    IpAddr::V6(a) => write!(f, "{p} [{a}]:{port}"),
                }
            }
            ServiceKey::Fwmark { mark, .. } => write!(f, "FWM {mark}"),
        }
    }
}

/// Settings of a virtual service.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceConfig {
    /// Scheduler name (`rr`, `wrr`, `sh`, `mh`, ...).
    pub sched_name: String,
    /// `IP_VS_SVC_F_*` flags (without `HASHED`).
    pub flags: u32,
    /// Persistence timeout (s).
    pub timeout: u32,
    /// Persistence netmask: raw be32 for IPv4, prefix length for IPv6.
    pub netmask: u32,
}

/// IPVS counters (from the 64-bit nest when present).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IpvsCounters {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets in.
    pub inpkts: u64,
    /// Packets out.
    pub outpkts: u64,
    /// Bytes in.
    pub inbytes: u64,
    /// Bytes out.
    pub outbytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Packets per second in.
    pub inpps: u64,
    /// Packets per second out.
    pub outpps: u64,
    /// Bytes per second in.
    pub inbps: u64,
    /// Bytes per second out.
    pub outbps: u64,
}

impl IpvsCounters {
    fn from_attrs(v: &[StatsAttr]) -> Self {
        let mut c = Self::default();
        for a in v {
            if let StatsAttr::Value(k, x) = a {
                let slot = match *k {
                    stats_attr::CONNS => &mut c.conns,
                    stats_attr::INPKTS => &mut c.inpkts,
                    stats_attr::OUTPKTS => &mut c.outpkts,
                    stats_attr::INBYTES => &mut c.inbytes,
                    stats_attr::OUTBYTES => &mut c.outbytes,
                    stats_attr::CPS => &mut c.cps,
                    stats_attr::INPPS => &mut c.inpps,
                    stats_attr::OUTPPS => &mut c.outpps,
                    stats_attr::INBPS => &mut c.inbps,
                    stats_attr::OUTBPS => &mut c.outbps,
                    _ => continue,
                };
                *slot = *x;
            }
        }
        c
    }
}

/// A service as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceEntry {
    /// Identity.
    pub key: ServiceKey,
    /// Settings.
    pub config: ServiceConfig,
    /// Persistence engine, if any.
    pub pe_name: Option<String>,
    /// Counters.
    pub stats: IpvsCounters,
}

/// Identity of a destination within its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct DestKey {
    /// Address.
    pub addr: IpAddr,
    /// Port (0 with port-less services).
    pub port: u16,
}

/// Settings of a destination.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DestConfig {
    /// Forwarding method.
    pub fwd: FwdMethod,
    /// Weight (0: no new connections).
    pub weight: u32,
    /// Upper connection threshold (0: none).
    pub u_thresh: u32,
    /// Lower connection threshold (0: none).
    pub l_thresh: u32,
}

/// A destination as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DestEntry {
    /// Identity.
    pub key: DestKey,
    /// Settings.
    pub config: DestConfig,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inact_conns: u32,
    /// Persistent connection templates.
    pub persist_conns: u32,
    /// Counters.
    pub stats: IpvsCounters,
}

/// `AF_*` of an address.
pub fn af_of(addr: IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// An address in `union nf_inet_addr` layout.
pub fn inet_addr(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

fn addr_from(af: u16, raw: [u8; 16]) -> Result<IpAddr, CodecError> {
    match af {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(raw))),
        o => Err(CodecError::Invalid(format!("address family {o}"))),
    }
}

/// The persistence netmask `ipvsadm` uses for a family: /32 or /128.
pub fn default_netmask(af: u16) -> u32 {
    if af == AF_INET6 { 128 } else { u32::MAX }
}

fn service_attrs(key: &ServiceKey, cfg: &ServiceConfig) -> Vec<SvcAttr> {
    let mut a = key.attrs();
    a.extend([
        SvcAttr::SchedName(cfg.sched_name.clone()),
        SvcAttr::Flags {
            flags: cfg.flags,
            mask: u32::MAX,
        },
        SvcAttr::Timeout(cfg.timeout),
        SvcAttr::Netmask(cfg.netmask),
    ]);
    a
}

fn dest_key_attrs(key: &DestKey) -> Vec<DestAttr> {
    vec![
        DestAttr::AddrFamily(af_of(key.addr)),
        DestAttr::Addr(inet_addr(key.addr)),
        DestAttr::Port(key.port),
    ]
}

fn dest_attrs(key: &DestKey, cfg: &DestConfig) -> Vec<DestAttr> {
    let mut a = dest_key_attrs(key);
    a.extend([
        DestAttr::FwdMethod(cfg.fwd.raw()),
        DestAttr::Weight(cfg.weight),
        DestAttr::UThresh(cfg.u_thresh),
        DestAttr::LThresh(cfg.l_thresh),
    ]);
    a
}

fn msg(cmd: IpvsCmd, attrs: Vec<CmdAttr>) -> IpvsMessage {
    IpvsMessage { cmd, attrs }
}

/// `IPVS_CMD_NEW_SERVICE` (all of scheduler, flags, timeout and netmask are
/// required by the kernel).
pub fn new_service(key: &ServiceKey, cfg: &ServiceConfig) -> IpvsMessage {
    msg(
        IpvsCmd::NewService,
        vec![CmdAttr::Service(service_attrs(key, cfg))],
    )
}

/// `IPVS_CMD_SET_SERVICE`.
pub fn set_service(key: &ServiceKey, cfg: &ServiceConfig) -> IpvsMessage {
    msg(
        IpvsCmd::SetService,
        vec![CmdAttr::Service(service_attrs(key, cfg))],
    )
}

/// `IPVS_CMD_DEL_SERVICE`.
pub fn del_service(key: &ServiceKey) -> IpvsMessage {
    msg(IpvsCmd::DelService, vec![CmdAttr::Service(key.attrs())])
}

/// `IPVS_CMD_GET_SERVICE` (send as a dump).
pub fn get_services() -> IpvsMessage {
    msg(IpvsCmd::GetService, vec![])
}

/// `IPVS_CMD_NEW_DEST`.
pub fn new_dest(svc: &ServiceKey, key: &DestKey, cfg: &DestConfig) -> IpvsMessage {
    msg(
        IpvsCmd::NewDest,
        vec![
            CmdAttr::Service(svc.attrs()),
            CmdAttr::Dest(dest_attrs(key, cfg)),
        ],
    )
}

/// `IPVS_CMD_SET_DEST`.
pub fn set_dest(svc: &ServiceKey, key: &DestKey, cfg: &DestConfig) -> IpvsMessage {
    msg(
        IpvsCmd::SetDest,
        vec![
            CmdAttr::Service(svc.attrs()),
            CmdAttr::Dest(dest_attrs(key, cfg)),
        ],
    )
}

/// `IPVS_CMD_DEL_DEST`.
pub fn del_dest(svc: &ServiceKey, key: &DestKey) -> IpvsMessage {
    msg(
        IpvsCmd::DelDest,
        vec![
            CmdAttr::Service(svc.attrs()),
            CmdAttr::Dest(dest_key_attrs(key)),
        ],
    )
}

/// `IPVS_CMD_GET_DEST` for one service (send as a dump).
pub fn get_dests(svc: &ServiceKey) -> IpvsMessage {
    msg(IpvsCmd::GetDest, vec![CmdAttr::Service(svc.attrs())])
}

/// `IPVS_CMD_FLUSH`: deletes every service, lbctl's or not. Not used by the
/// data plane; for tests and tools.
pub fn flush() -> IpvsMessage {
    msg(IpvsCmd::Flush, vec![])
}

fn pick_stats(plain: Option<&Vec<StatsAttr>>, wide: Option<&Vec<StatsAttr>>) -> IpvsCounters {
    wide.or(plain)
        .map(|v| IpvsCounters::from_attrs(v))
        .unwrap_or_default()
}

/// Parses a service from a `GET_SERVICE` reply (`cmd` `NEW_SERVICE`).
///
/// # Errors
/// A missing identity or scheduler attribute, an unknown family.
pub fn parse_service(m: &IpvsMessage) -> Result<ServiceEntry, CodecError> {
    let attrs = m
        .attrs
        .iter()
        .find_map(|a| match a {
            CmdAttr::Service(v) => Some(v),
            _ => None,
        })
        .ok_or(CodecError::Missing("IPVS_CMD_ATTR_SERVICE"))?;
    let (mut af, mut proto, mut addr, mut port, mut mark) = (None, None, None, None, None);
    let (mut sched, mut flags, mut timeout, mut netmask, mut pe) = (None, 0, 0, 0, None);
    let (mut stats, mut stats64) = (None, None);
    for a in attrs {
        match a {
            SvcAttr::Af(v) => af = Some(*v),
            SvcAttr::Protocol(v) => proto = Some(*v),
            SvcAttr::Addr(v) => addr = Some(*v),
            SvcAttr::Port(v) => port = Some(*v),
            SvcAttr::Fwmark(v) => mark = Some(*v),
            SvcAttr::SchedName(v) => sched = Some(v.clone()),
            SvcAttr::Flags { flags: f, .. } => flags = *f & !svc_flags::HASHED,
            SvcAttr::Timeout(v) => timeout = *v,
            SvcAttr::Netmask(v) => netmask = *v,
            SvcAttr::PeName(v) => pe = Some(v.clone()),
            SvcAttr::Stats(v) => stats = Some(v),
            SvcAttr::Stats64(v) => stats64 = Some(v),
            SvcAttr::Other(_) => {}
        }
    }
    let af = af.ok_or(CodecError::Missing("IPVS_SVC_ATTR_AF"))?;
    let key = match (mark, proto, addr, port) {
        (Some(mark), ..) if mark != 0 => ServiceKey::Fwmark { af, mark },
        (_, Some(protocol), Some(addr), Some(port)) => ServiceKey::Addr {
            protocol,
            addr: addr_from(af, addr)?,
            port,
        },
        _ => return Err(CodecError::Missing("IPVS_SVC_ATTR_{PROTOCOL,ADDR,PORT}")),
    };
    Ok(ServiceEntry {
        key,
        config: ServiceConfig {
            sched_name: sched.ok_or(CodecError::Missing("IPVS_SVC_ATTR_SCHED_NAME"))?,
            flags,
            timeout,
            netmask,
        },
        pe_name: pe,
        stats: pick_stats(stats, stats64),
    })
}

/// Parses a destination from a `GET_DEST` reply (`cmd` `NEW_DEST`).
/// `svc_af` is the family of the service, used when the kernel does not
/// name the destination's own.
///
/// # Errors
/// A missing address, port or forwarding method.
pub fn parse_dest(m: &IpvsMessage, svc_af: u16) -> Result<DestEntry, CodecError> {
    let attrs = m
        .attrs
        .iter()
        .find_map(|a| match a {
            CmdAttr::Dest(v) => Some(v),
            _ => None,
        })
        .ok_or(CodecError::Missing("IPVS_CMD_ATTR_DEST"))?;
    let (mut addr, mut port, mut fwd, mut af) = (None, None, None, svc_af);
    let (mut weight, mut u, mut l, mut act, mut inact, mut pers) = (0, 0, 0, 0, 0, 0);
    let (mut stats, mut stats64) = (None, None);
    for a in attrs {
        match a {
            DestAttr::Addr(v) => addr = Some(*v),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => fwd = Some(*v),
            DestAttr::Weight(v) => weight = *v,
            DestAttr::UThresh(v) => u = *v,
            DestAttr::LThresh(v) => l = *v,
            DestAttr::ActiveConns(v) => act = *v,
            DestAttr::InactConns(v) => inact = *v,
            DestAttr::PersistConns(v) => pers = *v,
            DestAttr::AddrFamily(v) => af = *v,
            DestAttr::Stats(v) => stats = Some(v),
            DestAttr::Stats64(v) => stats64 = Some(v),
            DestAttr::TunType(_)
            | DestAttr::TunPort(_)
            | DestAttr::TunFlags(_)
            | DestAttr::Other(_) => {}
        }
    }
    let addr = addr.ok_or(CodecError::Missing("IPVS_DEST_ATTR_ADDR"))?;
    Ok(DestEntry {
        key: DestKey {
            addr: addr_from(af, addr)?,
            port: port.ok_or(CodecError::Missing("IPVS_DEST_ATTR_PORT"))?,
        },
        config: DestConfig {
            fwd: FwdMethod::from_raw(fwd.ok_or(CodecError::Missing("IPVS_DEST_ATTR_FWD_METHOD"))?)?,
            weight,
            u_thresh: u,
            l_thresh: l,
        },
        active_conns: act,
        inact_conns: inact,
        persist_conns: pers,
        stats: pick_stats(stats, stats64),
    })
}
