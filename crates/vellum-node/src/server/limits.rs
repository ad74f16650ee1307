//! What the listener does to stay up under load it did not ask for: a cap on connections in
//! all and per client address, a share of the cap kept for the other nodes of the service
//! (the node channel shares the port), and warnings an attacker cannot multiply.
//!
//! Timeouts live where they are enforced: the TLS handshake in the accept loop, the request
//! head in hyper (its header-read timer, which also closes idle keep-alive connections), the
//! request body in the API's body middleware (`middleware::admit_body`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::lock;

/// Open connections, in all and by client address.
#[derive(Debug)]
pub(super) struct Connections {
    max: usize,
    per_ip: usize,
    /// Places only connections from the other nodes' addresses may take.
    reserved: usize,
    open: std::sync::Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place; given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    table: Arc<Connections>,
    ip: IpAddr,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The node holds its maximum of connections.
    All(usize),
    /// This address holds its maximum.
    Address(usize),
}

impl Connections {
    /// At most `max` connections, `per_ip` from one address; an eighth of `max` (at least 16,
    /// at most half) is kept for the other nodes.
    pub(super) fn new(max: usize, per_ip: usize) -> Arc<Connections> {
        let max = max.max(1);
        Arc::new(Connections {
            max,
            per_ip: per_ip.max(1),
            reserved: (max / 8).max(16).min(max / 2),
            open: std::sync::Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `ip` (`node`: the address of another node of the
    /// service), if there is one.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr, node: bool) -> Result<Slot, Full> {
        let mut open = lock(&self.open);
        let cap = if node {
            self.max
        } else {
            self.max - self.reserved
        };
        if open.0 >= cap {
            return Err(Full::All(cap));
        }
        let n = open.1.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err(Full::Address(self.per_ip));
        }
        *n += 1;
        open.0 += 1;
        Ok(Slot {
            table: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.open).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.table.open);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// The addresses of the service's nodes (from the Raft membership; addresses given as IP
/// literals), looked up at most once a second: connections from them may take the places kept
/// for nodes.
#[derive(Debug, Default)]
pub(super) struct NodeAddresses {
    cached: std::sync::Mutex<(Option<Instant>, Vec<IpAddr>)>,
}

impl NodeAddresses {
    pub(super) fn contains(&self, ip: IpAddr, node: &crate::LedgerNode) -> bool {
        let mut c = lock(&self.cached);
        if c.0.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            c.1 = node.node_ips();
            c.0 = Some(Instant::now());
        }
        c.1.contains(&ip)
    }
}

/// Lets one warning of a kind through per interval and counts the rest, so that whoever can
/// make the node warn (failed accepts, refused connections, failed requests) cannot fill its
/// disk with logs.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    next: std::sync::Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// At most one warning per `every`.
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            next: std::sync::Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a warning may be logged now, `n` being how many were held back since the
    /// last one; `None` if this one is held back.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut next = lock(&self.next);
        if next.is_some_and(|t| now < t) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *next = Some(now + self.every);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// The most connections a node holds by default: what its file-descriptor limit leaves after
/// a reserve for the ledger, the index and outgoing node-to-node connections, at most 16,384.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    (soft.saturating_sub(FD_RESERVE) as usize).clamp(16, 16_384)
}

/// Raises this process's soft file-descriptor limit to its hard limit (a server's business;
/// `vellum serve` calls it first). Failure is logged and harmless: the default connection cap
/// follows whatever limit holds.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::debug!(error = %e, "could not raise the file-descriptor limit");
        }
    }
}

/// File descriptors kept for everything but client connections.
const FD_RESERVE: u64 = 128;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_address_with_room_for_nodes() {
        // 40 in all, 16 of them kept for nodes, 10 from one address.
        let c = Connections::new(40, 10);
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        let held: Vec<Slot> = (0..10).map(|_| c.admit(ip(1), false).unwrap()).collect();
        assert_eq!(c.admit(ip(1), false).unwrap_err(), Full::Address(10));
        let more: Vec<Slot> = (0..14)
            .map(|i| c.admit(ip(2 + i / 7), false).unwrap())
            .collect();
        assert_eq!(c.admit(ip(9), false).unwrap_err(), Full::All(24));
        // The nodes' share is still there.
        let nodes: Vec<Slot> = (0..16)
            .map(|i| c.admit(ip(100 + i), true).unwrap())
            .collect();
        assert_eq!(c.admit(ip(200), true).unwrap_err(), Full::All(40));
        drop(held);
        assert_eq!(c.open(), 30);
        // Nodes' connections count toward the clients' cap too.
        assert_eq!(c.admit(ip(1), false).unwrap_err(), Full::All(24));
        drop(nodes);
        let _again = c.admit(ip(1), false).unwrap();
        drop(more);
        assert_eq!(c.open(), 1);
    }

    #[test]
    fn a_throttle_counts_what_it_holds_back() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
    }
}
