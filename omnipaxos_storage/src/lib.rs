//! Storage implementations for [`omnipaxos`]: [`memory_storage::MemoryStorage`] keeps
//! everything in memory (tests, caches, or servers that recover from peers).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod memory_storage;
