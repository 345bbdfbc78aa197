//! Shared by the storage tests: the conformance suite's entry type (with a snapshot) and its
//! picture of a store's state.
#![allow(dead_code, unused_imports)]

pub use omnipaxos_storage::conformance::{entries as es, state_of, State, Sum, TestEntry as E};
