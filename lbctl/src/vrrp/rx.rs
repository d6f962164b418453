//! One receive socket per (interface, family), shared by the instances on
//! it and dispatched by VRID, as keepalived does.
//!
//! A raw socket of protocol 112 gets a copy of every VRRP packet on its
//! interface, whatever the VRID. With one socket per instance every
//! instance would see (and reject) the packets of the others. Instead,
//! [`Receivers::subscribe`] hands each instance a [`Subscription`] on the
//! shared [`RxSocket`] of its (interface, family); one task per socket reads
//! packets and routes each to the instance owning its VRID (the second byte
//! of the VRRP message, at the same place in v2 and v3). A packet whose
//! VRID no instance on the socket owns is counted once, per socket, in
//! [`ReceiverStats::unknown_vrid`]; a packet too short to carry a VRID in
//! [`ReceiverStats::too_short`]. Every other check (version, checksum, TTL,
//! …) is the instance's, with its own options.
//!
//! The socket and its task live while at least one subscription does: the
//! last [`Subscription`] dropped closes them. Sockets are keyed by the
//! interface index too: an interface deleted and re-created under the same
//! name has a new index, and an instance that subscribes for it gets a new
//! socket bound to it, even while instances not yet restarted still hold
//! the old one (which receives nothing any more and closes with them). Dispatch never blocks: each
//! instance has a bounded queue and a full queue drops the packet (counted
//! in [`ReceiverStats::queue_full`]).
//!
//! A [`Receivers`] registry is per network namespace in practice (the
//! sockets are opened in the namespace of the thread that subscribes);
//! [`super::run_instances`] makes one for all the instances it starts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Family;
use super::codec::RxMeta;
use super::socket::{RECV_BUF, RxSocket, SocketError};

/// Packets queued per instance before the dispatcher drops.
pub const QUEUE: usize = 64;

/// A packet for one instance: IP facts and the VRRP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxPacket {
    /// Source, destination, TTL / hop limit.
    pub meta: RxMeta,
    /// The VRRP message (after the IPv4 header).
    pub payload: Vec<u8>,
}

/// Counters of one shared receive socket.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Packets whose VRID no instance on this socket owns.
    pub unknown_vrid: AtomicU64,
    /// Packets too short to carry a VRID.
    pub too_short: AtomicU64,
    /// Packets with an unusable IP header or missing ancillary data.
    pub bad_ip_header: AtomicU64,
    /// Receive errors from the socket.
    pub recv_errors: AtomicU64,
    /// Packets dropped because the owning instance's queue was full.
    pub queue_full: AtomicU64,
    /// Packets handed to an instance.
    pub dispatched: AtomicU64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent across a panic (single inserts and
    // removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Interface name, index, family.
type Key = (String, u32, Family);

/// One shared socket, its routes and counters.
#[derive(Debug)]
struct Receiver {
    socket: RxSocket,
    routes: Mutex<HashMap<u8, mpsc::Sender<RxPacket>>>,
    stats: Arc<ReceiverStats>,
    cancel: CancellationToken,
}

/// Registry of the shared receive sockets. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    inner: Arc<Mutex<HashMap<Key, Arc<Receiver>>>>,
}

/// One instance's share of a receive socket: its packets, in order.
/// Dropping it unregisters the VRID (and closes the socket when it was the
/// last one).
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<RxPacket>,
    receiver: Arc<Receiver>,
    registry: Receivers,
    key: Key,
    vrid: u8,
}

impl Subscription {
    /// The next packet for this VRID; `None` once the socket's task ended.
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<RxPacket> {
        self.rx.recv().await
    }

    /// The counters of the shared socket.
    pub fn stats(&self) -> Arc<ReceiverStats> {
        Arc::clone(&self.receiver.stats)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut reg = lock(&self.registry.inner);
        let empty = {
            let mut routes = lock(&self.receiver.routes);
            routes.remove(&self.vrid);
            routes.is_empty()
        };
        if empty {
            self.receiver.cancel.cancel();
            // Only remove the entry if it is still ours.
            if reg
                .get(&self.key)
                .is_some_and(|r| Arc::ptr_eq(r, &self.receiver))
            {
                reg.remove(&self.key);
            }
        }
    }
}

impl Receivers {
    /// A new, empty registry.
    pub fn new() -> Receivers {
        Receivers::default()
    }

    /// Number of open sockets (for tests and status).
    pub fn sockets(&self) -> usize {
        lock(&self.inner).len()
    }

    /// Subscribe `vrid` on (`ifname`, `ifindex`, `family`), opening the
    /// socket (and its task) if this is the first subscription; join the
    /// VRRP group if `multicast`. Must be called inside a tokio runtime.
    pub fn subscribe(
        &self,
        ifname: &str,
        ifindex: u32,
        family: Family,
        vrid: u8,
        multicast: bool,
    ) -> Result<Subscription, SocketError> {
        let key = (ifname.to_owned(), ifindex, family);
        let mut reg = lock(&self.inner);
        let receiver = match reg.get(&key) {
            Some(r) => Arc::clone(r),
            None => {
                let r = Arc::new(Receiver {
                    socket: RxSocket::open(ifname, ifindex, family)?,
                    routes: Mutex::new(HashMap::new()),
                    stats: Arc::new(ReceiverStats::default()),
                    cancel: CancellationToken::new(),
                });
                tokio::spawn(dispatch(Arc::clone(&r), ifname.to_owned()));
                reg.insert(key.clone(), Arc::clone(&r));
                r
            }
        };
        if multicast {
            receiver.socket.join_multicast()?;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        {
            let mut routes = lock(&receiver.routes);
            if routes.get(&vrid).is_some_and(|t| !t.is_closed()) {
                return Err(SocketError::VridTaken {
                    interface: ifname.to_owned(),
                    vrid,
                });
            }
            routes.insert(vrid, tx);
        }
        drop(reg);
        Ok(Subscription {
            rx,
            receiver,
            registry: self.clone(),
            key,
            vrid,
        })
    }
}

/// The VRID of a VRRP message (byte 1 in v2 and v3), if it has one.
pub fn vrid_of(payload: &[u8]) -> Option<u8> {
    payload.get(1).copied()
}

/// Route one received packet; `dst`/`src` are only used for logs.
fn route(r: &Receiver, meta: RxMeta, payload: &[u8], ifname: &str) {
    let Some(vrid) = vrid_of(payload) else {
        bump(&r.stats.too_short);
        tracing::debug!(interface = %ifname, src = %meta.src, "VRRP packet too short for a VRID");
        return;
    };
    let tx = lock(&r.routes).get(&vrid).cloned();
    let Some(tx) = tx else {
        bump(&r.stats.unknown_vrid);
        tracing::debug!(interface = %ifname, src = %meta.src, vrid, "advertisement for a VRID not configured here");
        return;
    };
    let pkt = RxPacket {
        meta,
        payload: payload.to_vec(),
    };
    match tx.try_send(pkt) {
        Ok(()) => bump(&r.stats.dispatched),
        Err(mpsc::error::TrySendError::Full(_)) => {
            bump(&r.stats.queue_full);
            tracing::debug!(interface = %ifname, vrid, "instance queue full; packet dropped");
        }
        // The instance is going away (its subscription is being dropped).
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// The socket's task: read, route, until cancelled.
async fn dispatch(r: Arc<Receiver>, ifname: String) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let res = tokio::select! {
            biased;
            _ = r.cancel.cancelled() => break,
            res = r.socket.recv(&mut buf) => res,
        };
        match res {
            Ok(Some(rx)) => {
                let payload = buf.get(rx.payload.clone()).unwrap_or(&[]);
                route(&r, rx.meta, payload, &ifname);
            }
            Ok(None) => {
                bump(&r.stats.bad_ip_header);
                tracing::debug!(interface = %ifname, "packet with unusable IP header or ancillary data dropped");
            }
            Err(error) => {
                bump(&r.stats.recv_errors);
                tracing::debug!(interface = %ifname, %error, "receive error");
                // Do not spin on a persistent error.
                tokio::select! {
                    _ = r.cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        }
    }
    tracing::debug!(interface = %ifname, "VRRP receive socket closed");
}

/// Whether `src` may send us adverts: any source in multicast mode (no
/// peers), otherwise only a configured unicast peer (addresses compared
/// without scope).
pub fn source_allowed(peers: &[IpAddr], src: &IpAddr) -> bool {
    peers.is_empty() || peers.contains(src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn receiver() -> Receiver {
        // A socket is needed for the struct; tests of `route` never read it.
        // Opening a raw socket needs CAP_NET_RAW: skip when not available.
        Receiver {
            socket: RxSocket::open("lo", 1, Family::V4).expect("raw socket on lo (needs root)"),
            routes: Mutex::new(HashMap::new()),
            stats: Arc::new(ReceiverStats::default()),
            cancel: CancellationToken::new(),
        }
    }

    fn meta() -> RxMeta {
        RxMeta {
            src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            dst: IpAddr::V4(super::super::MCAST_GROUP_V4),
            ttl: 255,
        }
    }

    #[test]
    fn vrid_is_second_byte() {
        assert_eq!(vrid_of(&[0x31, 7, 100, 1]), Some(7));
        assert_eq!(vrid_of(&[0x31]), None);
        assert_eq!(vrid_of(&[]), None);
    }

    #[test]
    fn unicast_sources() {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
        assert!(source_allowed(&[], &other), "multicast: any source");
        assert!(source_allowed(&[peer], &peer));
        assert!(!source_allowed(&[peer], &other));
    }

    #[tokio::test]
    async fn routes_by_vrid_and_counts_unknown_once() {
        let r = receiver();
        let (tx1, mut rx1) = mpsc::channel(QUEUE);
        let (tx2, mut rx2) = mpsc::channel(QUEUE);
        lock(&r.routes).insert(1, tx1);
        lock(&r.routes).insert(2, tx2);
        route(&r, meta(), &[0x31, 1, 100, 1], "t");
        route(&r, meta(), &[0x31, 2, 100, 1], "t");
        route(&r, meta(), &[0x31, 2, 50, 1], "t");
        route(&r, meta(), &[0x31, 9, 100, 1], "t");
        route(&r, meta(), &[0x31], "t");
        assert_eq!(rx1.try_recv().map(|p| p.payload[1]), Ok(1));
        assert!(rx1.try_recv().is_err(), "VRID 1 got only its packet");
        assert_eq!(rx2.try_recv().map(|p| p.payload[2]), Ok(100));
        assert_eq!(rx2.try_recv().map(|p| p.payload[2]), Ok(50));
        assert!(rx2.try_recv().is_err());
        let s = &r.stats;
        assert_eq!(s.unknown_vrid.load(Ordering::Relaxed), 1);
        assert_eq!(s.too_short.load(Ordering::Relaxed), 1);
        assert_eq!(s.dispatched.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn full_queue_drops_without_blocking() {
        let r = receiver();
        let (tx, _rx) = mpsc::channel(1);
        lock(&r.routes).insert(1, tx);
        route(&r, meta(), &[0x31, 1], "t");
        route(&r, meta(), &[0x31, 1], "t");
        assert_eq!(r.stats.queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(r.stats.dispatched.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn one_socket_per_interface_and_family() {
        let reg = Receivers::new();
        let s1 = reg.subscribe("lo", 1, Family::V4, 1, true).expect("sub 1");
        let s2 = reg.subscribe("lo", 1, Family::V4, 2, false).expect("sub 2");
        assert_eq!(reg.sockets(), 1, "shared by both VRIDs");
        assert!(matches!(
            reg.subscribe("lo", 1, Family::V4, 2, true),
            Err(SocketError::VridTaken { vrid: 2, .. })
        ));
        let s6 = reg.subscribe("lo", 1, Family::V6, 1, true).expect("v6");
        assert_eq!(reg.sockets(), 2, "one per family");
        assert!(Arc::ptr_eq(&s1.stats(), &s2.stats()));
        drop(s1);
        assert_eq!(reg.sockets(), 2, "still used by VRID 2");
        drop(s2);
        drop(s6);
        assert_eq!(reg.sockets(), 0, "closed with the last subscription");
        // A VRID can be taken again after its subscription went away.
        let _again = reg.subscribe("lo", 1, Family::V4, 1, true).expect("again");
        assert_eq!(reg.sockets(), 1);
    }

    // An interface re-created under the same name has a new index: the
    // instance restarted for it gets its own socket, not the old one that
    // an instance not yet restarted still holds.
    #[tokio::test]
    async fn new_ifindex_gets_a_new_socket() {
        let reg = Receivers::new();
        // Socket binding goes by name; the index only keys the registry
        // here (no multicast join, which would need a real index).
        let old = reg.subscribe("lo", 1, Family::V4, 1, false).expect("old");
        let new = reg.subscribe("lo", 2, Family::V4, 1, false).expect("new");
        assert_eq!(reg.sockets(), 2, "one per ifindex");
        assert!(!Arc::ptr_eq(&old.stats(), &new.stats()));
        let other = reg.subscribe("lo", 2, Family::V4, 2, false).expect("other");
        assert!(
            Arc::ptr_eq(&new.stats(), &other.stats()),
            "same ifindex shares"
        );
        drop(old);
        assert_eq!(
            reg.sockets(),
            1,
            "the old one closed with its last subscriber"
        );
        drop(new);
        drop(other);
        assert_eq!(reg.sockets(), 0);
    }
}
