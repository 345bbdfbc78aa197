//! `cargo run -p docs_check`: the guide compiles as pasted. For every page of `docs/` with Rust
//! blocks, a fresh crate outside the workspace gets the page's `[dependencies]` (and
//! `[dev-dependencies]`) block, with its `../omnipaxos-rs/` paths pointed at this checkout, and
//! every Rust block as an example program, built as rustdoc would build it (hidden `# ` lines
//! kept, a `main` added where the block has none). A page whose blocks need a crate its block
//! does not list fails here, as it would for a reader. Blocks marked `ignore` or `compile_fail`
//! are skipped. The crates live under `target/docs_check/` and share one target directory.

#![forbid(unsafe_code)]

mod markdown;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The prefix the pages use for this repository's crates (a checkout next to the reader's).
const CHECKOUT_PREFIX: &str = "../omnipaxos-rs/";

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = match root.canonicalize() {
        Ok(root) => root,
        Err(e) => {
            eprintln!("docs_check: cannot find the checkout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let only: Vec<String> = std::env::args().skip(1).collect();
    match run(&root, &only) {
        Ok(checked) => {
            println!("docs_check: {checked} blocks built as pasted");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docs_check: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(root: &Path, only: &[String]) -> Result<usize, String> {
    let work = root.join("target/docs_check");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map_err(|e| format!("docs/: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    let mut checked = 0;
    let mut failures = Vec::new();
    for page in pages {
        let name = page
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("page")
            .to_string();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&page).map_err(|e| format!("{page:?}: {e}"))?;
        let parsed = markdown::parse(&text);
        if parsed.programs.is_empty() {
            continue;
        }
        let Some(dependencies) = parsed.dependencies else {
            failures.push(format!(
                "docs/{name}.md has Rust blocks but no [dependencies] block"
            ));
            continue;
        };
        let dependencies = dependencies.replace(CHECKOUT_PREFIX, &format!("{}/", root.display()));
        if dependencies.contains("version = \"0.2.4\"") {
            failures.push(format!(
                "docs/{name}.md depends on version 0.2.4, which is upstream's crate on crates.io"
            ));
            continue;
        }
        let krate = work.join(&name);
        write_crate(&krate, &name, &dependencies, &parsed.programs, root)?;
        println!(
            "docs_check: docs/{name}.md: building {} blocks",
            parsed.programs.len()
        );
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--examples"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", work.join("target"))
            .status()
            .map_err(|e| format!("cargo: {e}"))?;
        if status.success() {
            checked += parsed.programs.len();
        } else {
            failures.push(format!(
                "docs/{name}.md does not build as pasted (crate in {})",
                krate.display()
            ));
        }
    }
    if failures.is_empty() {
        Ok(checked)
    } else {
        Err(failures.join("\n"))
    }
}

/// A crate of its own workspace (so the checkout's workspace does not claim it), with the
/// checkout's lock file so that it builds with the versions the project is tested with.
fn write_crate(
    dir: &Path,
    name: &str,
    dependencies: &str,
    programs: &[markdown::Program],
    root: &Path,
) -> Result<(), String> {
    let examples = dir.join("examples");
    let _ = std::fs::remove_dir_all(&examples);
    std::fs::create_dir_all(&examples).map_err(|e| format!("{examples:?}: {e}"))?;
    std::fs::create_dir_all(dir.join("src")).map_err(|e| format!("{dir:?}: {e}"))?;
    let manifest = format!(
        "[package]\nname = \"docs-{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n\n{dependencies}\n"
    );
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|e| format!("{path:?}: {e}"))
    };
    write(dir.join("Cargo.toml"), &manifest)?;
    write(dir.join("src/lib.rs"), "")?;
    if let Ok(lock) = std::fs::read_to_string(root.join("Cargo.lock")) {
        write(dir.join("Cargo.lock"), &lock)?;
    }
    for (i, program) in programs.iter().enumerate() {
        let source = format!(
            "// docs/{name}.md, line {}\n{}",
            program.line,
            program.source()
        );
        write(examples.join(format!("block_{:02}.rs", i + 1)), &source)?;
    }
    Ok(())
}
