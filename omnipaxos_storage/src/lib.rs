//! Storage implementations for [`omnipaxos`]:
//! - [`memory_storage::MemoryStorage`] keeps everything in memory (tests, caches, or servers
//!   that recover from their peers);
//! - `persistent_storage::PersistentStorage` (feature `persistent_storage`, on by default)
//!   keeps it in a sled database on disk, for fail-recovery;
//! - `journal_storage::JournalStorage` (feature `persistent_storage`) keeps it in memory and
//!   makes it durable with a journal of its writes, for servers that keep their log short;
//! - `files` (feature `persistent_storage`): checksummed records, atomic files, directory
//!   identities and a simulated file system with power cuts, shared by the stores;
//! - `conformance` (feature `conformance`) checks that a `Storage` does what the core relies on.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "persistent_storage")]
pub mod files;
#[cfg(feature = "persistent_storage")]
pub mod journal_storage;
pub mod memory_storage;
#[cfg(feature = "persistent_storage")]
pub mod persistent_storage;
