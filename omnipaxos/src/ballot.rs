//! Ballots: the round numbers of leader election and Sequence Paxos.

use crate::ids::{ConfigurationId, NodeId};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// A ballot. Ordered by `(n, priority, pid)`; `config_id` does not take part in the order.
/// `Ballot::default()` (all zero) means "no ballot".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Ballot {
    /// The configuration the ballot belongs to.
    pub config_id: ConfigurationId,
    /// The round number; a takeover picks a higher one.
    pub n: u32,
    /// Breaks ties between equal `n`: higher priority wins.
    pub priority: u32,
    /// The server that owns the ballot; breaks remaining ties.
    pub pid: NodeId,
}

impl Ballot {
    /// Rounds at or above this are refused wherever they arrive from the network (dropped and
    /// logged, never promised). A correct server's round grows by one per election it stands
    /// in, so it never gets near; a forged ballot with a round at the top of the range would
    /// otherwise be promised by every follower and could never be outbid.
    pub const ROUND_LIMIT: u32 = 1 << 31;

    /// Creates a ballot.
    pub fn with(config_id: ConfigurationId, n: u32, priority: u32, pid: NodeId) -> Ballot {
        Ballot {
            config_id,
            n,
            priority,
            pid,
        }
    }
}

impl Ballot {
    /// Whether a correct server can have produced this ballot's round (see
    /// [`ROUND_LIMIT`](Self::ROUND_LIMIT)).
    pub(crate) fn is_plausible(&self) -> bool {
        self.n < Self::ROUND_LIMIT
    }
}

impl Ord for Ballot {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.n, self.priority, self.pid).cmp(&(other.n, other.priority, other.pid))
    }
}

impl PartialOrd for Ballot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Ballot {
    /// `n.pid` (with `/priority` when non-zero), e.g. `3.1` or `3.1/2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.n, self.pid)?;
        if self.priority != 0 {
            write!(f, "/{}", self.priority)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ignores_config_id() {
        let a = Ballot::with(1, 2, 0, 1);
        let b = Ballot::with(9, 2, 0, 1);
        assert_eq!(a.cmp(&b), Ordering::Equal);
        assert_ne!(a, b, "equality still compares all four fields");
    }

    #[test]
    fn order_is_n_then_priority_then_pid() {
        assert!(Ballot::with(0, 2, 0, 1) > Ballot::with(0, 1, 9, 9));
        assert!(Ballot::with(0, 1, 2, 1) > Ballot::with(0, 1, 1, 9));
        assert!(Ballot::with(0, 1, 1, 2) > Ballot::with(0, 1, 1, 1));
        assert!(Ballot::default() < Ballot::with(0, 0, 0, 1));
    }
}
