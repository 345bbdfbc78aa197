//! A replicated log: Ballot Leader Election + Sequence Paxos (OmniPaxos, EuroSys'23), sans-IO.
//!
//! Each server owns an [`OmniPaxos`] value. The application proposes entries with
//! [`OmniPaxos::append`], reads the decided log with [`OmniPaxos::read_decided_suffix`], and
//! moves messages between servers itself: [`OmniPaxos::take_outgoing_messages`] on the sender,
//! [`OmniPaxos::handle_incoming`] on the receiver. Time is [`OmniPaxos::tick`]. The core never
//! sleeps, reads a clock, spawns a thread or touches a socket, so it runs on any runtime and is
//! tested deterministically (feature `simulation`).
//!
//! Leader election keeps working under partial connectivity: only servers that hear from a
//! quorum stand for election, and heartbeats carry each server's own ballot, so a server cut off
//! from a quorum cannot disturb the others (the quorum-loss, constrained-election and chained
//! scenarios of the paper).
//!
//! The user guide is in [`docs`]: getting started, when an appended entry can be lost,
//! reconfiguration, log compaction, flexible quorums, storage, linearizable reads, and testing
//! your application on the simulator.
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `macros` (default) | `#[derive(Entry)]` as [`macros::Entry`] |
//! | `serde` | serde derives on messages, ballots and configs |
//! | `toml_config` | [`OmniPaxosConfig::with_toml`] |
//! | `logging` | protocol events through `tracing`, tagged with the node id |
//! | `simulation` | [`simulation`]: a deterministic cluster simulator for tests |
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// `ProposeErr` hands the rejected proposal back, with the shape fixed by the published API.
#![allow(clippy::result_large_err)]

mod ballot;
pub mod ballot_leader_election;
mod build;
mod clock;
mod config;
pub mod errors;
mod ids;
mod logging;
pub mod messages;
mod omni_paxos;
mod quorum;
pub mod read_state;
pub mod reconfiguration;
mod sequence_paxos;
#[cfg(feature = "simulation")]
pub mod simulation;
pub mod storage;
pub mod util;
pub mod utils;

pub use config::{ClusterConfig, OmniPaxosConfig, ServerConfig};
pub use errors::{CompactionErr, ProposeErr, ReadErr};
pub use omni_paxos::OmniPaxos;
pub use read_state::{ReadFailure, ReadState};
pub use sequence_paxos::ReadLease;

/// `#[derive(Entry)]` (feature `macros`).
#[cfg(feature = "macros")]
pub mod macros {
    pub use omnipaxos_macros::Entry;
}

/// The user guide. Every code block here is compiled and run as a doctest.
pub mod docs {
    #[doc = include_str!("../../docs/getting_started.md")]
    pub mod getting_started {}
    #[doc = include_str!("../../docs/lost_appends.md")]
    pub mod lost_appends {}
    #[doc = include_str!("../../docs/reconfiguration.md")]
    pub mod reconfiguration {}
    #[doc = include_str!("../../docs/compaction.md")]
    pub mod compaction {}
    #[doc = include_str!("../../docs/flexible_quorums.md")]
    pub mod flexible_quorums {}
    #[doc = include_str!("../../docs/storage.md")]
    pub mod storage {}
    #[doc = include_str!("../../docs/reads.md")]
    pub mod reads {}
    #[doc = include_str!("../../docs/performance.md")]
    pub mod performance {}
    #[doc = include_str!("../../docs/large_state.md")]
    pub mod large_state {}
    #[cfg(feature = "simulation")]
    #[doc = include_str!("../../docs/simulation.md")]
    pub mod simulation {}
}
