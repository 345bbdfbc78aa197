//! `kv_store`: a replicated key-value service on OmniPaxos, run by `omnipaxos_runtime` (TCP
//! between nodes, durable storage, reconfiguration) with an HTTP API for clients. The binary
//! (`main.rs`) is a thin CLI over these modules; the tests drive the same code.

pub mod auth;
pub mod bench;
pub mod certs;
pub mod client;
pub mod compaction;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod divergence;
pub mod entry;
pub mod health;
pub mod history;
pub mod http;
pub mod http_auth;
pub mod http_guard;
pub mod http_server;
pub mod large_state;
pub mod machine;
pub mod node;
pub mod serve;
pub mod state_store;
pub mod telemetry;
pub mod transfer;
