//! The core's modules form layers, and every internal dependency (imports of every form, paths
//! written inline, `super::` paths) points to a lower layer or the same one, never up, and no
//! layer has a circle: the crate reads bottom-up, and nothing low can reach the facade.
//! ARCHITECTURE.md shows the layers; `tools/layering/check.rs` is the check.

use std::collections::BTreeMap;
use std::path::Path;

/// The layer of each module, bottom first.
fn layers() -> BTreeMap<&'static str, u8> {
    let mut l = BTreeMap::new();
    for m in ["ids", "ballot", "quorum", "clock", "logging", "errors"] {
        l.insert(m, 0); // leaves
    }
    for m in [
        "config",
        "storage",
        "storage::shared",
        "read_state",
        "errors::propose",
        "util",
        "messages",
        "messages::ballot_leader_election",
        "messages::sequence_paxos",
        "reconfiguration",
        "utils",
        "utils::ui",
    ] {
        l.insert(m, 1); // data
    }
    l.insert("storage::internal_storage", 2); // state
    for m in [
        "ballot_leader_election",
        "sequence_paxos",
        "sequence_paxos::compaction",
        "sequence_paxos::follower",
        "sequence_paxos::forwarding",
        "sequence_paxos::leader",
        "sequence_paxos::reads",
        "sequence_paxos::read_index",
        "sequence_paxos::lease",
    ] {
        l.insert(m, 3); // engines
    }
    l.insert("omni_paxos", 4); // facade
    l.insert("build", 4);
    for m in [
        "simulation",
        "simulation::config",
        "simulation::faults",
        "simulation::invariants",
        "simulation::reads",
        "simulation::network",
        "simulation::rng",
        "simulation::storage",
    ] {
        l.insert(m, 5); // tools on top of the facade
    }
    l
}

#[path = "../../tools/layering/check.rs"]
mod check;

#[test]
fn every_dependency_points_down_and_no_layer_has_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layers();
    assert!(check::modules(&src).len() >= 30, "too few modules found");
    check::assert_layered(&src, &layers);
}

#[test]
fn the_check_finds_every_form_of_dependency() {
    check::self_test();
}
