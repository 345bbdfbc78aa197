//! `kv_store`: a replicated key-value service on OmniPaxos, over TCP between nodes and HTTP for
//! clients. The binary (`main.rs`) is a thin CLI over these modules; the tests drive the same
//! code.

pub mod client;
pub mod config;
pub mod demo;
pub mod entry;
pub mod history;
pub mod http;
pub mod net;
pub mod node;
pub mod serve;
