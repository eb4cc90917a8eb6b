//! Bounds on the connections one listener keeps open, so that unauthenticated clients cannot
//! exhaust the agent's file descriptors and lock the operator out.
//!
//! A connection is *pending* from `accept` until it has proven who it is (TLS: the mutual-TLS
//! handshake finished; plain HTTP: its first request arrived), then *established*. Pending
//! connections cost nothing to make and prove nothing, so they are the ones closed ("shed")
//! to make room: a new connection never waits for a descriptor, it takes the slot of the
//! oldest pending connection of the address holding the most pending connections. Established
//! connections are never shed; they only count towards the total.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Limits and timeouts of one listener (the control API and the data port each get their own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnLimits {
    /// Open connections, pending and established together. At the limit a new connection
    /// sheds a pending one, or is closed at once when every open connection is established.
    pub max_connections: usize,
    /// Pending (not yet authenticated) connections.
    pub max_pending: usize,
    /// Pending connections from one IP address.
    pub max_pending_per_peer: usize,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Request headers must arrive within this; hyper also applies it to an idle keep-alive
    /// connection waiting for its next request.
    pub header_timeout: Duration,
    /// A request body must arrive within this (the whole body, not each read: a client
    /// trickling one byte a second must not hold the connection).
    pub body_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            max_pending: 64,
            max_pending_per_peer: 16,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnLimits {
    /// Makes the limits consistent (pending ≤ total, every limit ≥ 1).
    pub fn normalized(mut self) -> Self {
        self.max_connections = self.max_connections.max(1);
        self.max_pending = self.max_pending.clamp(1, self.max_connections);
        self.max_pending_per_peer = self.max_pending_per_peer.clamp(1, self.max_pending);
        self
    }
}

/// What `admit` did, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnCounts {
    pub pending: usize,
    pub established: usize,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Pending connections by id; ids grow, so the first entry of a peer's set is its oldest.
    pending: BTreeMap<u64, Pending>,
    pending_by_peer: HashMap<IpAddr, BTreeSet<u64>>,
    /// (pending count, peer), to find the heaviest peer in O(log n).
    peers_by_load: BTreeSet<(usize, IpAddr)>,
    established: usize,
}

struct Pending {
    peer: IpAddr,
    shed: oneshot::Sender<()>,
}

impl Inner {
    fn peer_load(&self, peer: &IpAddr) -> usize {
        self.pending_by_peer.get(peer).map_or(0, BTreeSet::len)
    }

    fn set_load(&mut self, peer: IpAddr, old: usize, new: usize) {
        if old > 0 {
            self.peers_by_load.remove(&(old, peer));
        }
        if new > 0 {
            self.peers_by_load.insert((new, peer));
        }
    }

    fn insert_pending(&mut self, peer: IpAddr, shed: oneshot::Sender<()>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let old = self.peer_load(&peer);
        self.pending.insert(id, Pending { peer, shed });
        self.pending_by_peer.entry(peer).or_default().insert(id);
        self.set_load(peer, old, old + 1);
        id
    }

    /// Removes a pending connection; its shed sender is handed back (dropping it tells the
    /// connection nothing, sending on it closes the connection).
    fn remove_pending(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        let old = self.peer_load(&p.peer);
        if let Some(set) = self.pending_by_peer.get_mut(&p.peer) {
            set.remove(&id);
            if set.is_empty() {
                self.pending_by_peer.remove(&p.peer);
            }
        }
        self.set_load(p.peer, old, old.saturating_sub(1));
        Some(p)
    }

    fn oldest_of(&self, peer: &IpAddr) -> Option<u64> {
        self.pending_by_peer
            .get(peer)
            .and_then(|s| s.first().copied())
    }

    /// The oldest pending connection of the peer holding the most pending connections: a
    /// flood is shed before the one handshake of a legitimate client from another address.
    fn victim(&self) -> Option<u64> {
        let (_, peer) = self.peers_by_load.last()?;
        self.oldest_of(peer)
    }
}

/// Tracks the connections of one listener and applies its [`ConnLimits`].
pub struct ConnTracker {
    limits: ConnLimits,
    inner: Mutex<Inner>,
    shed: AtomicU64,
    refused: AtomicU64,
}

impl ConnTracker {
    pub fn new(limits: ConnLimits) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            limits: limits.normalized(),
            inner: Mutex::new(Inner::default()),
            shed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn shed_one(&self, inner: &mut Inner, id: u64) {
        if let Some(p) = inner.remove_pending(id) {
            // The receiver may be gone already (the connection ended on its own): fine.
            let _ = p.shed.send(());
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Registers a new connection from `peer` as pending, shedding older pending ones as the
    /// limits require. `None`: every open connection is established and the total is reached,
    /// so the new one must be closed. The receiver fires when the connection is shed.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<(Arc<ConnSlot>, oneshot::Receiver<()>)> {
        let mut inner = self.lock();
        while inner.peer_load(&peer) >= self.limits.max_pending_per_peer {
            match inner.oldest_of(&peer) {
                Some(id) => self.shed_one(&mut inner, id),
                None => break,
            }
        }
        while inner.pending.len() >= self.limits.max_pending {
            match inner.victim() {
                Some(id) => self.shed_one(&mut inner, id),
                None => break,
            }
        }
        while inner.pending.len() + inner.established >= self.limits.max_connections {
            match inner.victim() {
                Some(id) => self.shed_one(&mut inner, id),
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = inner.insert_pending(peer, tx);
        drop(inner);
        let slot = Arc::new(ConnSlot {
            tracker: self.clone(),
            id,
            established: AtomicBool::new(false),
        });
        Some((slot, rx))
    }

    /// Frees a descriptor when `accept` reports none left (EMFILE/ENFILE), even if the
    /// configured limits were not reached. Returns whether a connection was shed.
    pub fn shed_for_descriptor(&self) -> bool {
        let mut inner = self.lock();
        match inner.victim() {
            Some(id) => {
                self.shed_one(&mut inner, id);
                true
            }
            None => false,
        }
    }

    pub fn counts(&self) -> ConnCounts {
        let inner = self.lock();
        ConnCounts {
            pending: inner.pending.len(),
            established: inner.established,
        }
    }

    /// Connections admitted since the start.
    pub fn admitted(&self) -> u64 {
        self.lock().next_id
    }

    /// Connections shed and refused since the start.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.shed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// One open connection's place in its tracker; dropping it frees the place.
pub struct ConnSlot {
    tracker: Arc<ConnTracker>,
    id: u64,
    established: AtomicBool,
}

impl ConnSlot {
    /// Moves the connection from pending to established; from then on it is never shed.
    /// `false` when it was shed meanwhile (the caller closes it).
    pub fn establish(&self) -> bool {
        if self.established.load(Ordering::Acquire) {
            return true;
        }
        let mut inner = self.tracker.lock();
        match inner.remove_pending(self.id) {
            Some(p) => {
                // Dropping the sender disables the connection's shed branch.
                drop(p.shed);
                inner.established += 1;
                self.established.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    pub fn is_established(&self) -> bool {
        self.established.load(Ordering::Acquire)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut inner = self.tracker.lock();
        if self.established.load(Ordering::Acquire) {
            inner.established = inner.established.saturating_sub(1);
        } else {
            inner.remove_pending(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits(total: usize, pending: usize, per_peer: usize) -> ConnLimits {
        ConnLimits {
            max_connections: total,
            max_pending: pending,
            max_pending_per_peer: per_peer,
            ..ConnLimits::default()
        }
    }

    /// Shed: the signal arrived now or earlier (a taken value reads as closed later); a
    /// closed channel of an established slot is its disabled shed branch.
    fn is_shed(slot: &ConnSlot, rx: &mut oneshot::Receiver<()>) -> bool {
        match rx.try_recv() {
            Ok(()) => true,
            Err(oneshot::error::TryRecvError::Empty) => false,
            Err(oneshot::error::TryRecvError::Closed) => !slot.is_established(),
        }
    }

    #[test]
    fn a_flooding_peer_sheds_its_own_oldest_connections() {
        let t = ConnTracker::new(limits(100, 50, 3));
        let mut flood: Vec<_> = (0..10).filter_map(|_| t.admit(ip(2))).collect();
        assert_eq!(t.counts().pending, 3);
        // Oldest first: the first seven were shed, in order; the last three are open.
        for (i, (slot, rx)) in flood.iter_mut().enumerate() {
            assert_eq!(is_shed(slot, rx), i < 7, "connection {i}");
        }
        assert_eq!(t.totals(), (7, 0));
    }

    #[test]
    fn the_heaviest_peer_pays_when_pending_is_full() {
        let t = ConnTracker::new(limits(100, 6, 5));
        let mut flood: Vec<_> = (0..5).filter_map(|_| t.admit(ip(2))).collect();
        let (op, mut op_rx) = t.admit(ip(1)).expect("operator admitted");
        // Pending is full (6); more flood from another address sheds the flood, not the
        // operator's single pending handshake.
        let mut more: Vec<_> = (0..20).filter_map(|_| t.admit(ip(3))).collect();
        assert!(
            !is_shed(&op, &mut op_rx),
            "the operator's handshake was shed"
        );
        assert_eq!(t.counts().pending, 6);
        let open = |v: &mut Vec<(Arc<ConnSlot>, oneshot::Receiver<()>)>| {
            let mut n = 0;
            for (slot, rx) in v.iter_mut() {
                n += usize::from(!is_shed(slot, rx));
            }
            n
        };
        // The two flooding addresses share the other five places, oldest shed first.
        assert_eq!(open(&mut flood) + open(&mut more), 5);
        let (slot, rx) = &mut flood[0];
        assert!(is_shed(slot, rx));
        let (slot, rx) = &mut more[19];
        assert!(!is_shed(slot, rx));
    }

    #[test]
    fn established_connections_are_never_shed_and_count_towards_the_total() {
        let t = ConnTracker::new(limits(4, 4, 4));
        let mut ops: Vec<_> = (0..3).filter_map(|_| t.admit(ip(1))).collect();
        for (slot, _) in &ops {
            assert!(slot.establish());
        }
        let flood: Vec<_> = (0..50).filter_map(|_| t.admit(ip(2))).collect();
        assert_eq!(
            flood.len(),
            50,
            "pending ones are admitted by shedding older ones"
        );
        assert_eq!(
            t.counts(),
            ConnCounts {
                pending: 1,
                established: 3
            }
        );
        for (slot, rx) in ops.iter_mut() {
            assert!(!is_shed(slot, rx), "an established connection was shed");
        }
        // All four established: a fifth connection is refused, nothing is shed.
        let (last, _) = t.admit(ip(3)).expect("admitted");
        assert!(last.establish());
        assert_eq!(t.counts().pending, 0);
        assert!(t.admit(ip(2)).is_none());
        assert_eq!(t.totals().1, 1);
        // Closing one frees its place.
        drop(ops.pop());
        assert!(t.admit(ip(2)).is_some());
    }

    #[test]
    fn a_shed_connection_cannot_become_established_and_drops_cleanly() {
        let t = ConnTracker::new(limits(10, 1, 1));
        let (a, mut a_rx) = t.admit(ip(1)).expect("admitted");
        let (b, _) = t.admit(ip(1)).expect("admitted");
        assert!(is_shed(&a, &mut a_rx));
        assert!(!a.establish());
        drop(a);
        assert!(b.establish());
        drop(b);
        assert_eq!(t.counts(), ConnCounts::default());
        assert!(!t.shed_for_descriptor());
        let (c, mut c_rx) = t.admit(ip(4)).expect("admitted");
        assert!(t.shed_for_descriptor());
        assert!(is_shed(&c, &mut c_rx));
    }
}
