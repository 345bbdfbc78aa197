//! The outcomes of linearizable reads (`OmniPaxos::read_index`).

use crate::errors::ReadErr;

/// A read that may be served: once this server's decided index, and the state your application
/// built from the decided log, reach `index`, the state answers the read identified by `ctx`
/// linearizably (it reflects every write decided before the read was requested).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The number you gave the read.
    pub ctx: u64,
    /// The read index.
    pub index: usize,
}

/// A read that will not be served: retry it, or report the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    /// The number you gave the read.
    pub ctx: u64,
    /// Why it failed.
    pub reason: ReadErr,
}
