//! rtnetlink glue for the VRRP shell: interface lookup, the primary
//! address, adding/removing virtual addresses, and link-state events.
//!
//! Every call works in the network namespace of the thread that opened
//! the netlink socket ([`Netlink::connect`]), which is what lets tests run
//! a node inside a namespace thread.

use std::net::IpAddr;

use futures_util::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::task::AbortOnDropHandle;

/// Errors of netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// No interface of that name.
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    /// A request failed.
    #[error("netlink {what}: {source}")]
    Request {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
}

/// What the shell needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Ethernet address, when the link has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// Administratively up and running (`IFF_UP && IFF_RUNNING`), the test
    /// keepalived uses for tracked interfaces.
    pub up: bool,
}

impl LinkInfo {
    fn from_message(m: &LinkMessage) -> Option<LinkInfo> {
        let mut name = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
                _ => {}
            }
        }
        let flags = m.header.flags;
        Some(LinkInfo {
            index: m.header.index,
            name: name?,
            mac,
            up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        })
    }
}

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Link scope (IPv6 `fe80::/10`).
    pub link_local: bool,
    /// IPv6 duplicate address detection still running (or failed): the
    /// address cannot be bound yet.
    pub tentative: bool,
    /// Added by lbctl ([`VIP_ADDRESS_PROTO`] as its `IFA_PROTO`): a VIP,
    /// perhaps left behind by a run that was killed.
    pub added_by_lbctl: bool,
}

/// The address protocol (`IFA_PROTO`, Linux 6.1+; older kernels ignore it)
/// lbctl marks the VIPs it adds with, so a later run tells them from the
/// interface's own addresses.
pub const VIP_ADDRESS_PROTO: u8 = 0x6c;

/// A netlink route socket whose connection task runs on the current tokio
/// runtime. Dropping it stops the task.
#[derive(Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    _task: AbortOnDropHandle<()>,
}

fn request_error(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// The errno of a netlink error answer, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

impl Netlink {
    /// Open a route netlink socket in the calling thread's network namespace.
    /// Must be called inside a tokio runtime.
    pub fn connect() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        let task = AbortOnDropHandle::new(tokio::spawn(conn));
        Ok(Netlink {
            handle,
            _task: task,
        })
    }

    /// The interface named `name`.
    pub async fn link(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.next().await {
            Some(Ok(m)) => {
                LinkInfo::from_message(&m).ok_or_else(|| NetlinkError::NoSuchInterface(name.into()))
            }
            Some(Err(e)) if errno(&e) == Some(libc::ENODEV) => {
                Err(NetlinkError::NoSuchInterface(name.into()))
            }
            Some(Err(e)) => Err(request_error(format!("get link {name}"))(e)),
            None => Err(NetlinkError::NoSuchInterface(name.into())),
        }
    }

    /// Addresses of interface `index`, in the kernel's order (the primary
    /// IPv4 address first).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IfAddr>, NetlinkError> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = s.next().await {
            let m = m.map_err(request_error(format!("get addresses of ifindex {index}")))?;
            if let Some(a) = if_addr(&m) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Add `address/prefix_len` to interface `index` (IPv6 with `nodad`, so it
    /// is usable at once, as keepalived does). Already present is success.
    pub async fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut req = self.handle.address().add(index, address, prefix_len);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                VIP_ADDRESS_PROTO,
            )));
        if address.is_ipv6() {
            let m = req.message_mut();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(request_error(format!("add {address}/{prefix_len}"))(e)),
        }
    }

    /// Remove `address` from interface `index`. Absent is success.
    pub async fn del_address(&self, index: u32, address: IpAddr) -> Result<(), NetlinkError> {
        let mut found = Vec::new();
        {
            let mut s = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(address)
                .execute();
            while let Some(m) = s.next().await {
                match m {
                    Ok(m) => found.push(m),
                    Err(e) => return Err(request_error(format!("get {address}"))(e)),
                }
            }
        }
        for m in found {
            match self.handle.address().del(m).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => {}
                Err(e) => return Err(request_error(format!("delete {address}"))(e)),
            }
        }
        Ok(())
    }
}

fn if_addr(m: &AddressMessage) -> Option<IfAddr> {
    let mut address = None;
    let mut local = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
    let mut added_by_lbctl = false;
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(x) => address = Some(*x),
            AddressAttribute::Local(x) => local = Some(*x),
            AddressAttribute::Flags(f) => flags = *f,
            AddressAttribute::Protocol(p) => {
                added_by_lbctl = u8::from(*p) == VIP_ADDRESS_PROTO;
            }
            _ => {}
        }
    }
    // IPv4: IFA_LOCAL is the interface's address (IFA_ADDRESS is the peer
    // on point-to-point links); IPv6 only has IFA_ADDRESS.
    let address = local.or(address)?;
    Some(IfAddr {
        address,
        prefix_len: m.header.prefix_len,
        link_local: m.header.scope == AddressScope::Link,
        tentative: flags.contains(AddressFlags::Tentative)
            || flags.contains(AddressFlags::Dadfailed),
        added_by_lbctl,
    })
}

/// A link-state change seen on the netlink link multicast group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// Interface name.
    pub name: String,
    /// Interface index: a deleted and re-created interface keeps its name
    /// but gets a new index.
    pub index: u32,
    /// Up and running (`false` too when the link was deleted).
    pub up: bool,
    /// The link was deleted (`RTM_DELLINK`).
    pub deleted: bool,
}

/// Watch link state changes (`ip monitor link`). Events are sent on the
/// returned channel until the receiver is dropped; the watcher task ends
/// with it (or when the returned handle is aborted, which also closes the
/// netlink socket).
pub fn watch_links() -> Result<(mpsc::Receiver<LinkEvent>, JoinHandle<()>), NetlinkError> {
    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .map_err(NetlinkError::Connect)?;
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        // The connection task owns the socket: it must not outlive this
        // task, however this one ends.
        let _conn = AbortOnDropHandle::new(tokio::spawn(conn));
        while let Some((msg, _)) = messages.next().await {
            if let Some(ev) = link_event(msg)
                && tx.send(ev).await.is_err()
            {
                break;
            }
        }
    });
    Ok((rx, task))
}

fn link_event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkEvent> {
    let (m, deleted) = match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => (m, false),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => (m, true),
        _ => return None,
    };
    LinkInfo::from_message(&m).map(|l| LinkEvent {
        name: l.name,
        index: l.index,
        up: l.up && !deleted,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkHeader;

    fn link_msg(index: u32, name: &str, up: bool) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up | LinkFlags::Running;
        }
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m
    }

    fn wrap(m: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(m))
    }

    // New and deleted links carry their index; a deleted link is down,
    // whatever flags the kernel's last message had.
    #[test]
    fn link_events_carry_index_and_deletion() {
        let ev = link_event(wrap(RouteNetlinkMessage::NewLink(link_msg(7, "re0", true))));
        assert_eq!(
            ev,
            Some(LinkEvent {
                name: "re0".into(),
                index: 7,
                up: true,
                deleted: false
            })
        );
        let ev = link_event(wrap(RouteNetlinkMessage::DelLink(link_msg(7, "re0", true))));
        assert_eq!(
            ev,
            Some(LinkEvent {
                name: "re0".into(),
                index: 7,
                up: false,
                deleted: true
            })
        );
        // No name: not an event the shell can use.
        let mut nameless = link_msg(7, "x", true);
        nameless.attributes.clear();
        assert_eq!(
            link_event(wrap(RouteNetlinkMessage::NewLink(nameless))),
            None
        );
    }
}
