//! Helpers around the core: state snapshots for dashboards.

pub mod ui;
