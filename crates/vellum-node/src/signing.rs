//! The signature policy: when the primary signs. One owner for the rule, which has two
//! triggers: `interval` transactions unsigned (sign at once), or a transaction unsigned and
//! `delay` passed since the last signature was proposed (at once after an idle spell). The log
//! store reports every append ([`SignaturePolicy::appended`]); the signer thread
//! ([`SignaturePolicy::run`]) waits for either trigger and proposes a signature transaction.
//!
//! Under load clients phase-lock to the signer's period. With everything signed it parks until
//! the next append rings (an idle node does not wake a thousand times a second); a slow look
//! covers leadership changes. A thread, not a task: tokio's timer has a resolution of one
//! millisecond, and a signature up to a millisecond late is up to a millisecond added to every
//! commit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lock;
use crate::raft::ledger::Ledger;

/// The default signature delay of a node alone: a signature costs it two ECDSA signatures and
/// a sync, and under load clients wait about one delay for their commit.
pub const ALONE_SIGNATURE_DELAY: Duration = Duration::from_millis(1);

/// The default signature delay with backups: each backup also verifies both signatures of
/// every signature transaction, so signing less often buys throughput, and longer delays make
/// clients wait (`docs/benchmarks.md` has the measurements behind 4 ms).
pub const CLUSTER_SIGNATURE_DELAY: Duration = Duration::from_millis(4);

/// How often a signer with nothing to sign looks again without being woken (a new primary
/// may hold unsigned transactions appended while it was a backup).
const IDLE_SIGNER_TICK: Duration = Duration::from_millis(100);

/// Wakes the signer thread.
#[derive(Default)]
struct Bell {
    state: Mutex<Rung>,
    wake: Condvar,
}

#[derive(Default)]
struct Rung {
    /// Rung since the signer last looked.
    rung: bool,
    /// `interval` transactions are unsigned: sign without waiting for the delay.
    now: bool,
    stop: bool,
}

/// What woke the signer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The deadline passed, or an append rang.
    Look,
    /// Enough transactions are unsigned to sign at once.
    SignNow,
    /// The node is stopping.
    Stop,
}

impl Bell {
    fn ring(&self, now: bool) {
        let mut b = lock(&self.state);
        b.rung = true;
        b.now |= now;
        drop(b);
        self.wake.notify_one();
    }

    fn stop(&self) {
        lock(&self.state).stop = true;
        self.wake.notify_one();
    }

    /// Waits until `deadline` or a ring, whichever comes first (a ring before this call
    /// counts).
    fn wait_until(&self, deadline: Instant) -> Woken {
        let mut b = lock(&self.state);
        loop {
            if b.stop {
                return Woken::Stop;
            }
            if std::mem::take(&mut b.now) {
                b.rung = false;
                return Woken::SignNow;
            }
            let now = Instant::now();
            if std::mem::take(&mut b.rung) || now >= deadline {
                return Woken::Look;
            }
            b = self
                .wake
                .wait_timeout(b, deadline - now)
                .map(|(b, _)| b)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// What the signer needs of Raft: kept abstract so that the policy names no openraft type.
pub(crate) trait Proposer {
    /// Whether this node is the primary.
    fn is_primary(&self) -> bool;
    /// How many voters the service has.
    fn voters(&self) -> usize;
    /// Proposes a signature transaction; false once Raft has stopped.
    fn propose_signature(&self) -> bool;
    /// Whether the node is going away (the signer then returns).
    fn stopped(&self) -> bool;
}

/// When to sign: see the module documentation.
pub(crate) struct SignaturePolicy {
    interval: u64,
    /// `None`: [`ALONE_SIGNATURE_DELAY`] or [`CLUSTER_SIGNATURE_DELAY`] by the voter count.
    delay: Option<Duration>,
    bell: Bell,
    /// A signature has been proposed and not yet appended.
    pending: AtomicBool,
    /// Application writes received and not yet given a transaction id.
    arriving: AtomicU64,
    /// The signer waits for `arriving` to reach zero (the write that takes it there rings).
    quiet_wanted: AtomicBool,
}

impl SignaturePolicy {
    /// A policy signing after `interval` transactions or `delay` (a validated
    /// [`crate::NodeConfig`]'s).
    pub(crate) fn new(interval: u64, delay: Option<Duration>) -> SignaturePolicy {
        SignaturePolicy {
            interval,
            delay,
            bell: Bell::default(),
            pending: AtomicBool::new(false),
            arriving: AtomicU64::new(0),
            quiet_wanted: AtomicBool::new(false),
        }
    }

    /// The log store appended `seqno` with `unsigned` transactions now after the last
    /// signature (0: it was a signature). The one place that decides when a signature is due.
    pub(crate) fn appended(&self, unsigned: u64) {
        if unsigned == 0 {
            self.pending.store(false, Ordering::Release);
        } else if unsigned == 1 || unsigned >= self.interval {
            self.bell.ring(unsigned >= self.interval);
        }
    }

    /// Marks a signature proposed (by the signer, or by a primary signing before it stops).
    pub(crate) fn proposing(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// A write on the primary between its arrival and the assignment of its transaction id:
    /// the signer waits for arriving writes, so that a burst is signed whole.
    pub(crate) fn arriving(&self) -> Arriving<'_> {
        self.arriving.fetch_add(1, Ordering::AcqRel);
        Arriving(self)
    }

    /// Stops the signer thread.
    pub(crate) fn stop(&self) {
        self.bell.stop();
    }

    /// Waits as the signer does, up to `d` (tests of what rings it).
    #[cfg(test)]
    pub(crate) fn wait_for(&self, d: Duration) -> Woken {
        self.bell.wait_until(Instant::now() + d)
    }

    /// The signer thread: proposes signatures on the primary while `ledger` holds unsigned
    /// transactions, as the policy says, until [`SignaturePolicy::stop`].
    pub(crate) fn run(&self, ledger: &Ledger, raft: &impl Proposer) {
        // The first signature is due at once, whatever the delay.
        let mut last_proposed = Instant::now()
            .checked_sub(self.delay.unwrap_or_default().max(CLUSTER_SIGNATURE_DELAY))
            .unwrap_or_else(Instant::now);
        loop {
            if raft.stopped() {
                return;
            }
            let delay = self.delay.unwrap_or_else(|| {
                if raft.voters() > 1 {
                    CLUSTER_SIGNATURE_DELAY
                } else {
                    ALONE_SIGNATURE_DELAY
                }
            });
            let busy = || ledger.unsigned() > 0;
            let woken = if busy() {
                self.bell.wait_until(last_proposed + delay)
            } else {
                self.bell.wait_until(Instant::now() + IDLE_SIGNER_TICK)
            };
            match woken {
                Woken::Stop => return,
                Woken::Look if Instant::now() < last_proposed + delay => continue,
                Woken::Look => {
                    // Writes still on their way to the log: wait for them (the last to arrive
                    // rings), up to a second delay, so that a burst is signed whole.
                    if self.arriving.load(Ordering::Acquire) > 0
                        && Instant::now() < last_proposed + 2 * delay
                    {
                        self.quiet_wanted.store(true, Ordering::Release);
                        if self.arriving.load(Ordering::Acquire) > 0 {
                            let _ = self.bell.wait_until(last_proposed + 2 * delay);
                        }
                        self.quiet_wanted.store(false, Ordering::Release);
                    }
                }
                Woken::SignNow => {}
            }
            if !busy() {
                continue;
            }
            let proposed_recently = last_proposed.elapsed() < Duration::from_secs(1);
            if self.pending.load(Ordering::Acquire) && proposed_recently {
                // Not appended yet: look again a delay later (the deadline has passed).
                let _ = self.bell.wait_until(Instant::now() + delay);
                continue;
            }
            if !raft.is_primary() {
                let _ = self.bell.wait_until(Instant::now() + IDLE_SIGNER_TICK);
                continue;
            }
            self.proposing();
            last_proposed = Instant::now();
            if !raft.propose_signature() {
                return;
            }
        }
    }
}

/// A write on the primary between its arrival and the assignment of its transaction id.
pub(crate) struct Arriving<'a>(&'a SignaturePolicy);

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        let p = self.0;
        if p.arriving.fetch_sub(1, Ordering::AcqRel) == 1 && p.quiet_wanted.load(Ordering::Acquire)
        {
            p.bell.ring(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What woke a wait of up to a minute (a ring before the wait counts).
    fn woken(p: &SignaturePolicy) -> Woken {
        p.bell.wait_until(Instant::now() + Duration::from_secs(60))
    }

    /// Nothing rang: a short wait runs to its deadline.
    fn times_out(p: &SignaturePolicy) -> bool {
        let start = Instant::now();
        let w = p.bell.wait_until(start + Duration::from_millis(5));
        w == Woken::Look && start.elapsed() >= Duration::from_millis(5)
    }

    #[test]
    fn appends_ring_the_signer_as_the_policy_says() {
        let p = SignaturePolicy::new(3, None);
        assert!(times_out(&p));
        // The first unsigned write rings once, the next do not, and the third (the
        // interval) asks for a signature at once.
        p.appended(1);
        assert_eq!(woken(&p), Woken::Look);
        p.appended(2);
        assert!(times_out(&p));
        p.appended(3);
        assert_eq!(woken(&p), Woken::SignNow);
        // A signature clears the pending proposal; the next write rings as the first again.
        p.proposing();
        p.appended(0);
        assert!(!p.pending.load(Ordering::Acquire));
        p.appended(1);
        assert_eq!(woken(&p), Woken::Look);
        p.stop();
        assert_eq!(woken(&p), Woken::Stop);
    }

    #[test]
    fn the_last_arriving_write_rings_a_waiting_signer() {
        let p = SignaturePolicy::new(1000, None);
        let a = p.arriving();
        let b = p.arriving();
        p.quiet_wanted.store(true, Ordering::Release);
        drop(a);
        assert!(times_out(&p));
        drop(b);
        assert_eq!(woken(&p), Woken::Look);
    }
}
