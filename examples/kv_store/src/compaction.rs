//! When a node compacts its log into a snapshot. Taking one serialises and stores the whole map
//! on the node's own thread, which stalls that node: 8-40 ms for 10,000 entries with 10,000
//! keys, about a second for 1,000,000. Under a steady write load those stalls were the whole
//! tail of the PUT latency (p99 at 64 connections: 5-6 ms without snapshots, 23-72 ms with one
//! every 10,000 entries, 1 s when a long-deferred one came due). So:
//!
//! - a snapshot waits for a **quiet moment**: no decided entry for `QUIET` (200 ms), once at
//!   least a period (10,000 entries) has been applied since the last one;
//! - under a load that never pauses, a node snapshots anyway once twenty periods have passed,
//!   the leader (which every write waits for) only after a hundred, and sooner as soon as it
//!   stops leading; the nodes are staggered by pid, so at most one node of a majority stalls
//!   at a time.
//!
//! The price: under a load without pauses the log grows to twenty (on the leader a hundred)
//! periods, and the stall, when it comes, is longer. Issue 15 ("Large state") moves snapshots
//! off the node's thread altogether.

/// Entries a node applies before a snapshot is worth taking.
pub const SNAPSHOT_EVERY: usize = 10_000;
/// Periods after which a follower snapshots without waiting for a quiet moment.
const FORCED_AFTER: usize = 20;
/// The same for the leader.
const LEADER_FORCED_AFTER: usize = 100;

/// One node's snapshot schedule within one configuration's log.
#[derive(Clone, Debug)]
pub struct SnapshotPolicy {
    every: usize,
    /// Staggers the nodes' forced snapshots (a fraction of a period, by pid).
    offset: usize,
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
            offset: (pid % 3) as usize * every / 3,
            last: 0,
        }
    }

    /// Whether to snapshot up to `applied` (entries of the current log) now; `quiet` says that
    /// no entry was decided for a while.
    pub fn due(&self, applied: usize, leading: bool, quiet: bool) -> bool {
        let since = applied.saturating_sub(self.last);
        if quiet {
            return since >= self.every;
        }
        let forced = if leading {
            LEADER_FORCED_AFTER
        } else {
            FORCED_AFTER
        };
        since >= forced * self.every + self.offset
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

    fn first_due(policy: &SnapshotPolicy, leading: bool, quiet: bool) -> usize {
        (1..).find(|i| policy.due(*i, leading, quiet)).unwrap()
    }

    #[test]
    fn a_quiet_moment_after_a_period_is_when_a_snapshot_is_taken() {
        let mut p = SnapshotPolicy::with_period(1, 300);
        assert_eq!(first_due(&p, false, true), 300);
        assert_eq!(first_due(&p, true, true), 300, "the leader too");
        p.taken(450);
        assert!(!p.due(749, false, true) && p.due(750, false, true));
    }

    #[test]
    fn under_load_nodes_snapshot_late_and_staggered_and_the_leader_last() {
        let forced: Vec<usize> = (1..=3)
            .map(|pid| first_due(&SnapshotPolicy::with_period(pid, 300), false, false))
            .collect();
        assert_eq!(forced, vec![6100, 6200, 6000]);
        let p = SnapshotPolicy::with_period(3, 300);
        assert_eq!(first_due(&p, true, false), 30_000);
        assert!(p.due(6000, false, false), "due once it stops leading");
    }

    #[test]
    fn a_new_log_starts_a_new_schedule() {
        let mut p = SnapshotPolicy::with_period(3, 300);
        p.taken(900);
        p.new_log();
        assert_eq!(first_due(&p, false, true), 300);
    }
}
