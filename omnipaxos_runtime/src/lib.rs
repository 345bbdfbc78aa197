//! # omnipaxos_runtime
//!
//! Runs an [`OmniPaxos`](omnipaxos::OmniPaxos) instance as a node on Tokio: one call
//! ([`spawn_actor`]) moves the sans-IO instance onto a thread of its own and returns a cloneable
//! [`OmniPaxosHandle`]; a [`Transport`](transport::Transport) carries messages between nodes
//! ([`TcpTransport`](transport::tcp::TcpTransport) with optional mutual TLS, or the in-process
//! [`MemoryNetwork`](transport::memory::MemoryNetwork) for tests).
//!
//! What it does that a hand-written loop usually does not:
//! - **Exact outcomes.** [`OmniPaxosHandle::append_notify`] resolves with the index the entry
//!   really has in the decided log, also when it was appended on a follower; an error says
//!   whether the entry may still be decided ([`AppendError`]).
//! - **Batching.** Each pass of the node takes every input that is ready before it writes and
//!   sends, so one storage write (one fsync) and one message per peer serve everything that
//!   arrived together.
//! - **Bounded everything.** Every queue has a capacity; a full one answers
//!   `TooManyOutstanding` to the caller (requests) or drops (messages, which the protocol
//!   resends).
//! - **Liveness of the network.** A connection that carries nothing for `peer_timeout`
//!   (keepalives flow every quarter of it) is replaced, and what was queued on it dropped rather
//!   than delivered late.
//! - **Reconfiguration.** A node started with [`spawn_reconfigurable`] moves to the next
//!   configuration by itself, keeps the ended one running for laggards, and a joining node
//!   fetches its handover itself.
//!
//! The guide: `docs/runtime.md`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod actor;
pub mod config;
#[cfg(feature = "persistent_storage")]
pub mod directory;
mod engine;
pub mod errors;
mod handle;
pub mod prometheus;
#[cfg(feature = "simulation")]
pub mod simulation;
pub mod status;
pub mod transport;
pub mod wire;

/// The guide's page on the runtime (`docs/runtime.md`); its examples are compiled and run as
/// doctests.
#[doc = include_str!("../../docs/runtime.md")]
pub mod guide {}

/// The guide's page on runtime nodes on the simulator (`docs/runtime_simulation.md`); its
/// examples are compiled and run as doctests.
#[cfg(feature = "simulation")]
#[doc = include_str!("../../docs/runtime_simulation.md")]
pub mod simulation_guide {}

/// The guide's page on metrics and the dashboard (`docs/observability.md`); its examples are
/// compiled as doctests.
#[doc = include_str!("../../docs/observability.md")]
pub mod observability_guide {}

pub use actor::{ReadPoint, StorageFactory};
pub use config::{NetworkConfig, NodeConfig, RuntimeConfig};
pub use engine::subscribers::DecidedEntry;
pub use errors::{
    AppendError, CompactError, ReadError, ReconfigureError, RuntimeError, RuntimeProposeErr,
};
pub use handle::{spawn_actor, spawn_reconfigurable, DecidedStream, OmniPaxosHandle};
/// The `prometheus-client` crate the metrics are built on (its `Registry` and text encoder).
pub use prometheus_client;
pub use status::{Metrics, OmniPaxosEvent, PeerMetrics, Role};
pub use wire::{NodeId, RuntimeEntry};
