//! The layering check shared by the crates' `tests/layering.rs` (included with `#[path]`): a
//! crate's modules form layers, and every dependency of a module points to a lower layer or to
//! the same one, without circles inside a layer. A dependency is any path that names another
//! module: `use crate::..`, `pub use crate::..`, `pub(crate) use ..`, grouped imports, paths
//! written inline in code (`crate::a::b::f()`), and `super::..` paths (resolved against the
//! module). A module's own children are not dependencies. A path through the crate root (a
//! re-export in `lib.rs`) is refused: import from the defining module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Fails with every layering problem of the crate whose sources are in `src`.
pub fn assert_layered(src: &Path, layers: &BTreeMap<&'static str, u8>) {
    let found = violations(src, layers);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

/// Every layering problem in the crate whose sources are in `src`, with `layers` giving each
/// module's layer (bottom first). Empty when the crate is layered.
pub fn violations(src: &Path, layers: &BTreeMap<&'static str, u8>) -> Vec<String> {
    let mut found = Vec::new();
    let mut same_layer: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in modules(src) {
        let Some(&layer) = layers.get(module.as_str()) else {
            found.push(format!("{module} has no layer"));
            continue;
        };
        let text = std::fs::read_to_string(file_of(src, &module)).unwrap_or_default();
        for path in dependencies(&module, &code_of(&text)) {
            let Some(to) = known_prefix(&path, layers) else {
                found.push(format!(
                    "{module}: `{path}` goes through the crate root or names no module: import \
                     from the defining module"
                ));
                continue;
            };
            if to == module || to.starts_with(&format!("{module}::")) {
                continue; // itself or its own child
            }
            let to_layer = layers[to.as_str()];
            if to_layer > layer {
                found.push(format!(
                    "{module} (layer {layer}) depends on {to} (layer {to_layer}): `{path}`"
                ));
            } else if to_layer == layer {
                same_layer.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    found.extend(circles(&same_layer));
    found
}

/// Every module of the crate, from its files (`lib.rs` excluded).
pub fn modules(src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(src).unwrap_or(&path).with_extension("");
                let module = rel
                    .to_string_lossy()
                    .trim_end_matches("/mod")
                    .replace('/', "::");
                if module != "lib" {
                    out.push(module);
                }
            }
        }
    }
    out.sort();
    out
}

fn file_of(src: &Path, module: &str) -> PathBuf {
    let rel = module.replace("::", "/");
    let flat = src.join(format!("{rel}.rs"));
    if flat.exists() {
        flat
    } else {
        src.join(rel).join("mod.rs")
    }
}

/// The file's code: without comments and string literals, and without its `#[cfg(test)]` tail
/// (inline test modules, where `super` means the file's own module).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The crate-relative paths `code` (of `module`) names through `crate::` and `super::`.
fn dependencies(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("crate::") {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b == b'$' || b.is_ascii_alphanumeric() || b == b'_') {
            continue; // `$crate` in a macro, or part of a longer name
        }
        expand("", &code[at + "crate::".len()..], &mut out);
    }
    for (at, _) in code.match_indices("super::") {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b == b':' || b.is_ascii_alphanumeric() || b == b'_') {
            continue; // counted with the `super::` that starts the path
        }
        let mut rest = &code[at..];
        let mut base: Vec<&str> = module.split("::").collect();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let prefix = base.join("::");
        expand(&prefix, rest, &mut out);
    }
    out
}

/// Adds the paths of `rest` (what follows `prefix::`): one path, or a `{..}` group of them.
fn expand(prefix: &str, rest: &str, out: &mut Vec<String>) {
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let head = rest[..end].trim_end_matches(':');
    let path = match (prefix.is_empty(), head.is_empty()) {
        (true, _) => head.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}::{head}"),
    };
    let Some(group) = rest[end..].strip_prefix('{') else {
        if !path.is_empty() {
            out.push(path);
        }
        return;
    };
    let mut depth = 1;
    let mut item_start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                push_item(&path, &group[item_start..i], out);
                item_start = i + 1;
                if c == '}' {
                    return;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
}

fn push_item(prefix: &str, item: &str, out: &mut Vec<String>) {
    let item = item.trim();
    let item = item.split(" as ").next().unwrap_or(item).trim();
    if item.is_empty() || item == "self" || item == "*" {
        out.push(prefix.to_string());
    } else {
        expand(prefix, item, out);
    }
}

/// The longest prefix of `path` that is a module with a layer.
fn known_prefix(path: &str, layers: &BTreeMap<&'static str, u8>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|k| parts[..k].join("::"))
        .find(|cand| layers.contains_key(cand.as_str()))
}

/// Every circle among the same-layer dependencies, once each.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut circle = trail.clone();
                    // One rotation per circle: start it at its smallest module.
                    let min = circle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, m)| *m)
                        .map(|(i, _)| i);
                    circle.rotate_left(min.unwrap_or(0));
                    found.insert(circle);
                } else if !trail.contains(next) && trail.len() < 16 {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|c| format!("circle within a layer: {} -> {}", c.join(" -> "), c[0]))
        .collect()
}

/// The checker's own cases, run by each crate's layering test.
pub fn self_test() {
    let deps = |module: &str, code: &str| {
        let mut d = dependencies(module, &code_of(code));
        d.sort();
        d
    };
    assert_eq!(deps("a::b", "use super::c::X;"), ["a::c::X"]);
    assert_eq!(deps("a::b", "use super::super::d;"), ["d"]);
    assert_eq!(deps("a", "pub use crate::e::F;"), ["e::F"]);
    assert_eq!(deps("a", "let x = crate::f::g::h(1);"), ["f::g::h"]);
    assert_eq!(
        deps("a", "use crate::m::{n::{O, P}, q, self};"),
        ["m", "m::n::O", "m::n::P", "m::q"]
    );
    assert_eq!(deps("a", "use crate::{x::Y, z};"), ["x::Y", "z"]);
    assert!(deps("a", "// crate::x in a comment\n\"crate::y\"; $crate::z").is_empty());
    assert!(deps("a", "#[cfg(test)]\nmod tests { use super::*; }").is_empty());
    let mut edges = BTreeMap::new();
    edges.insert("p".to_string(), BTreeSet::from(["q".to_string()]));
    edges.insert("q".to_string(), BTreeSet::from(["p".to_string()]));
    assert_eq!(circles(&edges), ["circle within a layer: p -> q -> p"]);
}
