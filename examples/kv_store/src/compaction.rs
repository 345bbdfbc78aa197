//! When a node compacts its log into a snapshot. Taking one serialises and stores the whole map
//! on the node's own thread, which stalls that node (8-40 ms for a period of 10,000 entries with
//! 10,000 keys; 40-90 ms for 50,000 entries). So that a stall never holds a write up:
//!
//! - nodes take theirs at different points of the log (staggered by pid), so at most one node
//!   of a majority stalls at a time and the leader always hears from another;
//! - the leader, which every write waits for, defers its own to a hundred periods (1,000,000
//!   entries, about 100 MB of log with small values), and takes it as soon as it stops leading.
//!   With twenty periods its snapshots (100-200 ms) put the p99 of PUTs at 64 connections at
//!   66-206 ms; a stall that long can also cost it the leadership.
//!
//! The price is a longer log on the leader, and a longer stall when it does snapshot; issue 15
//! ("Large state") moves snapshots off the node's thread altogether.

/// Entries between two snapshots of a follower.
pub const SNAPSHOT_EVERY: usize = 10_000;
/// A leader snapshots only after this many periods.
const LEADER_DEFERS: usize = 100;

/// One node's snapshot schedule within one configuration's log.
#[derive(Clone, Debug)]
pub struct SnapshotPolicy {
    every: usize,
    /// Where the first snapshot of a log is due.
    first: usize,
    /// Where the last one was taken (0: none yet).
    last: usize,
}

impl SnapshotPolicy {
    /// The schedule of node `pid`.
    pub fn new(pid: u64) -> Self {
        Self::with_period(pid, SNAPSHOT_EVERY)
    }

    fn with_period(pid: u64, every: usize) -> Self {
        Self {
            every,
            first: every + (pid % 3) as usize * every / 3,
            last: 0,
        }
    }

    /// Whether a snapshot up to `applied` (entries of the current log) is due now.
    pub fn due(&self, applied: usize, leading: bool) -> bool {
        let period = if leading {
            LEADER_DEFERS * self.every
        } else {
            self.every
        };
        match self.last {
            0 => applied >= self.first.max(if leading { period } else { 0 }),
            last => applied >= last + period,
        }
    }

    /// A snapshot up to `applied` was taken.
    pub fn taken(&mut self, applied: usize) {
        self.last = applied;
    }

    /// A new configuration's log starts.
    pub fn new_log(&mut self) {
        self.last = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_due(policy: &SnapshotPolicy, leading: bool) -> usize {
        (1..).find(|i| policy.due(*i, leading)).unwrap()
    }

    #[test]
    fn the_nodes_of_a_cluster_snapshot_at_different_points() {
        let points: Vec<usize> = (1..=3)
            .map(|pid| first_due(&SnapshotPolicy::with_period(pid, 300), false))
            .collect();
        assert_eq!(points, vec![400, 500, 300]);
        let mut p = SnapshotPolicy::with_period(1, 300);
        p.taken(400);
        assert!(!p.due(699, false) && p.due(700, false), "then every period");
    }

    #[test]
    fn a_leader_defers_its_snapshot() {
        let mut p = SnapshotPolicy::with_period(1, 300);
        assert!(!p.due(29_999, true) && p.due(30_000, true));
        p.taken(30_000);
        assert!(!p.due(30_300, true), "a leader waits a hundred periods");
        assert!(p.due(30_300, false), "due at once when it stops leading");
        p.new_log();
        assert_eq!(first_due(&p, false), 400);
    }
}
