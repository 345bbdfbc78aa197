//! Leader leases (opt-in, [`ReadLease`]): a leader whose leadership a write quorum confirmed
//! less than `duration_ticks` of its ticks ago answers reads at once, with no round trip.
//!
//! Why it is safe, and the one assumption it needs: every server that confirms a leader with a
//! `ReadConfirmed` (only those count for a lease) then *holds*: it promises no other ballot, and
//! does not take over itself, for `hold_ticks` of its own ticks, and so does the leader until its
//! lease ends. A server that had to refuse another ballot because of a hold stops confirming
//! until it promised again, so a deposed leader that still reaches it cannot keep it holding. A new leader needs a read quorum of promises, which
//! intersects every write quorum that confirmed the lease, so it cannot complete its Prepare
//! before the lease ended, provided that `hold_ticks` of any server last at least as long as
//! `duration_ticks` of the leader. `hold_ticks = duration_ticks * (100 + d) / (100 - d) + 1`
//! guarantees that if no server's tick rate differs from any other's by more than `d` percent
//! (`max_drift_percent`). A server that restarts holds for `hold_ticks` from its start, as it may
//! have confirmed just before it crashed. Every server of the configuration must use the same
//! lease settings.

use super::SequencePaxos;
use crate::ballot::Ballot;
use crate::storage::{Entry, Storage};

/// Leader lease settings (see [`crate::OmniPaxos::set_read_lease`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadLease {
    /// How long, in the leader's ticks from the start of a confirmation round, a confirmed
    /// leader answers reads without asking again.
    pub duration_ticks: u64,
    /// The largest difference between any two servers' tick rates, in percent (below 100). The
    /// lease is safe only if this bound holds.
    pub max_drift_percent: u64,
}

impl ReadLease {
    /// How long a server that confirmed a leader promises nobody else, in its own ticks.
    pub(crate) fn hold_ticks(&self) -> u64 {
        let d = self.max_drift_percent.min(99);
        (self.duration_ticks.saturating_mul(100 + d)).div_ceil(100 - d) + 1
    }
}

/// The lease state of one server.
#[derive(Default)]
pub(super) struct LeaseState {
    pub(super) config: Option<ReadLease>,
    /// Leader: reads are answered at once until this tick (exclusive).
    pub(super) valid_until: u64,
    /// Any server: no other ballot is promised before this tick.
    pub(super) hold_until: u64,
    /// The ballot held.
    pub(super) held: Ballot,
    /// A hold refused another ballot: no more confirmations until this server promises again.
    pub(super) takeover_waiting: bool,
}

impl<T: Entry, B: Storage<T>> SequencePaxos<T, B> {
    /// Turns leases on (or off with `None`). A server that `recovered` from storage holds for
    /// one hold period first: it may have confirmed a leader just before it stopped.
    pub(crate) fn set_read_lease(&mut self, lease: Option<ReadLease>, recovered: bool) {
        self.lease.config = lease;
        self.lease.valid_until = 0;
        self.lease.held = self.promise();
        self.lease.hold_until = match lease {
            Some(l) if recovered => self.reads.now().saturating_add(l.hold_ticks()),
            _ => 0,
        };
    }

    /// This server confirms the ballot it follows with a `ReadConfirmed`: with leases on, it
    /// holds that ballot for a hold period. Returns false, without holding, while another
    /// ballot waits for the hold to end (the confirmation is then not sent).
    pub(super) fn lease_granted(&mut self) -> bool {
        let Some(lease) = self.lease.config else {
            return true;
        };
        if self.lease.takeover_waiting && self.reads.now() < self.lease.hold_until {
            return false;
        }
        // The hold ended (the waiting ballot could have been promised meanwhile): confirm again.
        self.lease.takeover_waiting = false;
        self.lease.held = self.promise();
        self.lease.hold_until = self.reads.now().saturating_add(lease.hold_ticks());
        true
    }

    /// Whether this server must not promise `n` now, as it holds another ballot; if so, it stops
    /// confirming until it promised again.
    pub(super) fn lease_blocks(&mut self, n: Ballot) -> bool {
        let blocks = self.lease.config.is_some()
            && n != self.lease.held
            && self.reads.now() < self.lease.hold_until;
        self.lease.takeover_waiting = blocks;
        blocks
    }

    /// A confirmation round that started at `started` was confirmed by a write quorum.
    pub(super) fn lease_confirmed(&mut self, started: u64) {
        if let Some(lease) = self.lease.config {
            let until = started.saturating_add(lease.duration_ticks);
            self.lease.valid_until = self.lease.valid_until.max(until);
            // The leader's own vote counts in every quorum too: it holds its ballot as long.
            self.lease.held = self.promise();
            self.lease.hold_until = self.lease.hold_until.max(until);
        }
    }

    /// Whether this leader may answer a read at once.
    pub(super) fn lease_valid(&self) -> bool {
        self.lease.config.is_some()
            && self.is_accepting_leader()
            && self.reads.now() < self.lease.valid_until
    }

    pub(super) fn lease_lost(&mut self) {
        self.lease.valid_until = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::ReadLease;

    #[test]
    fn hold_covers_the_lease_at_the_stated_drift() {
        let l = ReadLease {
            duration_ticks: 100,
            max_drift_percent: 10,
        };
        // 100 leader ticks at a rate 10% below a follower's last as long as 100 / 0.9 = 111.1
        // of the follower's; the hold must be at least that.
        assert!(l.hold_ticks() as f64 >= 100.0 * 1.1 / 0.9);
        let none = ReadLease {
            duration_ticks: 100,
            max_drift_percent: 0,
        };
        assert_eq!(none.hold_ticks(), 101);
    }
}
