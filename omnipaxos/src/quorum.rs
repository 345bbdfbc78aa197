//! Quorum sizes. A majority by default; with a [`FlexibleQuorum`] the read quorum (promises
//! needed to lead, and connectivity needed to stand for election) and the write quorum (accepts
//! needed to decide) may differ as long as every read quorum meets every write quorum.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Custom quorum sizes for a cluster; `read_quorum_size + write_quorum_size` must exceed the
/// number of nodes so that every read quorum intersects every write quorum.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct FlexibleQuorum {
    /// Servers (leader included) whose promises a new leader needs.
    pub read_quorum_size: usize,
    /// Servers (leader included) that must accept an entry before it is decided.
    pub write_quorum_size: usize,
}

/// The quorum sizes in force for one configuration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Quorum {
    pub(crate) read: usize,
    pub(crate) write: usize,
}

impl Quorum {
    pub(crate) fn new(num_nodes: usize, flexible: Option<FlexibleQuorum>) -> Self {
        match flexible {
            Some(fq) => Self {
                read: fq.read_quorum_size,
                write: fq.write_quorum_size,
            },
            None => {
                let majority = num_nodes / 2 + 1;
                Self {
                    read: majority,
                    write: majority,
                }
            }
        }
    }

    pub(crate) fn is_read_quorum(&self, count: usize) -> bool {
        count >= self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_by_default() {
        assert_eq!(Quorum::new(1, None), Quorum { read: 1, write: 1 });
        assert_eq!(Quorum::new(4, None), Quorum { read: 3, write: 3 });
        assert_eq!(Quorum::new(5, None), Quorum { read: 3, write: 3 });
    }

    #[test]
    fn flexible_sizes_are_used_verbatim() {
        let fq = FlexibleQuorum {
            read_quorum_size: 5,
            write_quorum_size: 3,
        };
        let q = Quorum::new(7, Some(fq));
        assert!(q.is_read_quorum(5) && !q.is_read_quorum(4));
        assert_eq!(q.write, 3);
    }
}
