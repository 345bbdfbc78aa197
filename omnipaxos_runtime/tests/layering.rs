//! The runtime's modules form layers, as the core's do (`omnipaxos/tests/layering.rs`, the same
//! check in `tools/layering/check.rs`): every dependency points to a lower layer or the same one,
//! never up, no layer has a circle, and nothing imports through the crate root's re-exports.

use std::collections::BTreeMap;
use std::path::Path;

#[path = "../../tools/layering/check.rs"]
mod check;

/// The layer of each module, bottom first.
fn layers() -> BTreeMap<&'static str, u8> {
    let mut l = BTreeMap::new();
    for m in ["wire", "errors", "status", "config"] {
        l.insert(m, 0); // what crosses the wire and the API: values only
    }
    for m in [
        "prometheus",
        "transport",
        "transport::parts",
        "transport::memory",
        "transport::tcp",
        "transport::tls",
    ] {
        l.insert(m, 1); // metrics and moving bytes
    }
    for m in [
        "engine",
        "engine::appends",
        "engine::appends_tests",
        "engine::clock",
        "engine::ended",
        "engine::reads",
        "engine::reads_tests",
        "engine::reconfigure",
        "engine::reconfigure_tests",
        "engine::subscribers",
        "engine::subscribers_tests",
    ] {
        l.insert(m, 2); // the protocol above the core, without I/O
    }
    for m in [
        "actor",
        "actor::appends",
        "actor::reads",
        "actor::reconfigure",
        "actor::report",
        "actor::subscribers",
    ] {
        l.insert(m, 3); // the node's task: drives the engine and the core
    }
    for m in ["handle", "directory", "simulation"] {
        l.insert(m, 4); // what users hold and plug in
    }
    l
}

#[test]
fn every_dependency_points_down_and_no_layer_has_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    check::assert_layered(&src, &layers());
}

#[test]
fn the_check_finds_every_form_of_dependency() {
    check::self_test();
}
