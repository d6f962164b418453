//! A blocking generic-netlink socket speaking to the kernel's IPVS family.

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::{
    GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use tracing::debug;

use super::{
    IpvsError,
    codec::{self, CodecError, DestEntry, IPVS_GENL_NAME, IpvsMessage, ServiceEntry, ServiceKey},
};

/// Receive buffer size; the kernel sends dump datagrams of at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// What the data plane needs from the kernel, so its diffing can be tested
/// against a model of the IPVS table.
pub trait IpvsKernel {
    /// Every virtual service.
    ///
    /// # Errors
    /// Netlink or decoding errors.
    fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError>;
    /// The destinations of one service.
    ///
    /// # Errors
    /// Netlink or decoding errors.
    fn dests(&mut self, svc: &ServiceKey) -> Result<Vec<DestEntry>, IpvsError>;
    /// Sends one command and waits for its acknowledgement.
    ///
    /// # Errors
    /// The kernel's refusal, or netlink errors.
    fn execute(&mut self, msg: IpvsMessage) -> Result<(), IpvsError>;
}

/// A connected `NETLINK_GENERIC` socket with the IPVS family id resolved.
pub struct IpvsSocket {
    sock: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for IpvsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsSocket")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl IpvsSocket {
    /// Opens the socket and resolves the `"IPVS"` family.
    ///
    /// # Errors
    /// [`IpvsError::NoFamily`] when the `ip_vs` module is not loaded; socket
    /// errors.
    pub fn open() -> Result<Self, IpvsError> {
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(IpvsError::Socket)?;
        sock.bind_auto().map_err(IpvsError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(IpvsError::Socket)?;
        let mut s = Self {
            sock,
            family: 0,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        };
        s.family = s.resolve_family()?;
        debug!(family_id = s.family, "IPVS generic netlink family resolved");
        Ok(s)
    }

    /// The resolved family id.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&mut self) -> Result<&[u8], IpvsError> {
        self.buf.clear();
        let n = self
            .sock
            .recv(&mut self.buf, libc::MSG_TRUNC)
            .map_err(IpvsError::Socket)?;
        if n > self.buf.len() {
            return Err(IpvsError::Codec(CodecError::Invalid(format!(
                "netlink datagram of {n} bytes truncated to {}",
                self.buf.len()
            ))));
        }
        Ok(&self.buf[..n])
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let seq = self.next_seq();
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned())],
        });
        genl.finalize();
        let mut nl =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(genl));
        nl.header.flags = NLM_F_REQUEST;
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0).map_err(IpvsError::Socket)?;
        loop {
            let data = self.recv()?;
            let mut rest = data;
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < 16 || len > rest.len() {
                    return Err(IpvsError::Codec(CodecError::Invalid(format!(
                        "netlink length {len}"
                    ))));
                }
                let m = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&rest[..len])
                    .map_err(|e| IpvsError::Codec(e.into()))?;
                rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(g) => {
                        for a in &g.payload.nlas {
                            if let GenlCtrlAttrs::FamilyId(id) = a {
                                return Ok(*id);
                            }
                        }
                        return Err(IpvsError::NoFamily(std::io::Error::other(
                            "reply without a family id",
                        )));
                    }
                    NetlinkPayload::Error(e) => {
                        return Err(IpvsError::NoFamily(e.to_io()));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends `msg` and collects the IPVS messages of the reply until the
    /// acknowledgement (or `NLMSG_DONE` for a dump).
    fn transact(&mut self, msg: IpvsMessage, dump: bool) -> Result<Vec<IpvsMessage>, IpvsError> {
        let seq = self.next_seq();
        let cmd = msg.cmd;
        let out = codec::encode_request(msg, self.family, seq, dump);
        self.sock.send(&out, 0).map_err(IpvsError::Socket)?;
        let mut replies = Vec::new();
        loop {
            let msgs = codec::decode_datagram(self.recv()?)?;
            for m in msgs {
                if m.header.sequence_number != seq {
                    debug!(
                        seq = m.header.sequence_number,
                        "ignoring stale netlink message"
                    );
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(g) => replies.push(g.payload),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(IpvsError::Kernel {
                                cmd: format!("{cmd:?}"),
                                source: e.to_io(),
                            }),
                        };
                    }
                    NetlinkPayload::Done(d) => {
                        return if d.code < 0 {
                            Err(IpvsError::Kernel {
                                cmd: format!("{cmd:?}"),
                                source: std::io::Error::from_raw_os_error(-d.code),
                            })
                        } else {
                            Ok(replies)
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

impl IpvsKernel for IpvsSocket {
    fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        self.transact(codec::get_services(), true)?
            .iter()
            .map(|m| codec::parse_service(m).map_err(IpvsError::from))
            .collect()
    }

    fn dests(&mut self, svc: &ServiceKey) -> Result<Vec<DestEntry>, IpvsError> {
        let af = svc.af();
        self.transact(codec::get_dests(svc), true)?
            .iter()
            .map(|m| codec::parse_dest(m, af).map_err(IpvsError::from))
            .collect()
    }

    fn execute(&mut self, msg: IpvsMessage) -> Result<(), IpvsError> {
        self.transact(msg, false).map(drop)
    }
}
