//! Helpers shared by the test binaries (each uses part of them).
#![allow(dead_code)]

pub mod link;
pub mod metrics;
