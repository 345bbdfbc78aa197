//! The core's modules form layers, and every internal `use crate::...` points to a lower layer
//! (or the same one, for the data types that build on each other), never up: the crate reads
//! bottom-up, and nothing low can reach the facade. ARCHITECTURE.md shows the layers. Re-exports
//! of a module's own children (`pub use` of published paths) are not dependencies.

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

/// The modules a `use crate::a::b::...` path names, longest known prefix first.
fn target<'a>(path: &str, layers: &'a BTreeMap<&'static str, u8>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find_map(|cand| layers.keys().find(|m| **m == cand).copied())
}

#[test]
fn every_internal_import_points_down() {
    let layers = layers();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut seen = 0;
    for (module, layer) in &layers {
        let rel = module.replace("::", "/");
        let file = [src.join(format!("{rel}.rs")), src.join(rel).join("mod.rs")]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no source file for module {module}"));
        seen += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().map(str::trim) {
            let Some(path) = line
                .strip_prefix("use crate::")
                .or_else(|| line.strip_prefix("pub(crate) use crate::"))
            else {
                continue;
            };
            assert!(
                !path.starts_with('{'),
                "{module}: import from the defining module, not the crate root: {line}"
            );
            let Some(to) = target(path, &layers) else {
                violations.push(format!("{module}: unknown module in {line}"));
                continue;
            };
            if to.starts_with(&format!("{module}::")) {
                continue; // its own child
            }
            if layers[to] > *layer {
                violations.push(format!(
                    "{module} (layer {layer}) imports {to} (layer {}): {line}",
                    layers[to]
                ));
            }
        }
    }
    assert!(seen >= 30, "only {seen} modules checked");
    assert!(
        violations.is_empty(),
        "imports pointing up:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_source_file_has_a_layer() {
    let layers = layers();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let module = rel
                .to_string_lossy()
                .trim_end_matches("/mod")
                .replace('/', "::");
            if module == "lib" {
                continue;
            }
            assert!(
                layers.contains_key(module.as_str()),
                "{module} has no layer"
            );
        }
    }
}
