//! When a node's core starts to count time. Until the transport reaches a majority of the
//! configuration, the core's clock does not run: heartbeats sent before the connections are up
//! would be lost, leave the first rounds without replies, and cause a needless re-election once
//! they are up (a node that never reaches a majority could not take part in any decision
//! anyway). With a majority connected, it waits one election round more for the rest: a
//! restarted follower whose first round ended before its connection to the leader was up (the
//! majority being itself and another follower) found the leader missing and stood against it.
//! Waiting costs at most one round when a peer really is down. Once started, it never stops.

use crate::wire::NodeId;

/// Whether the core's clock runs, and how long a majority has waited for the rest.
#[derive(Debug, Default)]
pub(crate) struct ClockStart {
    ticking: bool,
    /// Ticks since a majority was first connected, while waiting for the rest.
    waited_for_all: u64,
}

impl ClockStart {
    /// A tick of the node: whether the core ticks with it. `nodes` is the configuration,
    /// `connected` says whether the transport reaches a peer now, `election_ticks` is the
    /// length of an election round.
    pub(crate) fn tick(
        &mut self,
        me: NodeId,
        nodes: &[NodeId],
        connected: impl Fn(NodeId) -> bool,
        election_ticks: u64,
    ) -> bool {
        if self.ticking {
            return true;
        }
        let reachable = nodes
            .iter()
            .filter(|&&pid| pid == me || connected(pid))
            .count();
        if reachable == nodes.len() {
            self.ticking = true;
        } else if reachable * 2 > nodes.len() {
            self.waited_for_all += 1;
            self.ticking = self.waited_for_all > election_ticks;
        }
        self.ticking
    }
}

#[cfg(test)]
mod tests {
    use super::ClockStart;

    const NODES: [u64; 3] = [1, 2, 3];

    #[test]
    fn the_clock_starts_at_once_when_every_peer_is_connected() {
        let mut clock = ClockStart::default();
        assert!(clock.tick(1, &NODES, |_| true, 5));
    }

    #[test]
    fn without_a_majority_the_clock_waits_however_long() {
        let mut clock = ClockStart::default();
        for _ in 0..100 {
            assert!(!clock.tick(1, &NODES, |_| false, 5));
        }
    }

    #[test]
    fn a_majority_waits_one_election_round_for_the_rest() {
        let mut clock = ClockStart::default();
        let only_2 = |pid| pid == 2;
        for _ in 0..5 {
            assert!(!clock.tick(1, &NODES, only_2, 5));
        }
        assert!(clock.tick(1, &NODES, only_2, 5), "one round waited");
    }

    #[test]
    fn the_rest_arriving_within_the_round_starts_the_clock_then() {
        let mut clock = ClockStart::default();
        assert!(!clock.tick(1, &NODES, |pid| pid == 2, 5));
        assert!(clock.tick(1, &NODES, |_| true, 5));
    }

    #[test]
    fn once_started_the_clock_runs_whatever_the_links() {
        let mut clock = ClockStart::default();
        assert!(clock.tick(1, &NODES, |_| true, 5));
        assert!(clock.tick(1, &NODES, |_| false, 5));
    }
}
