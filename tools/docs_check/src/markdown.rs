//! The parts of a guide page the check needs: its dependency block and its Rust blocks as
//! rustdoc would compile them.

/// A Rust block of a page.
pub struct Program {
    /// The line of the opening fence.
    pub line: usize,
    /// The block's lines, hidden ones included, as rustdoc compiles them.
    lines: Vec<String>,
}

impl Program {
    /// The block as a program: rustdoc's rules for a doctest, a `main` around a block that has
    /// none (a closure, so that `?` works as in a doctest that ends with `Ok::<_, _>(())`).
    pub fn source(&self) -> String {
        let body = self.lines.join("\n");
        if body.contains("fn main") {
            return format!("{body}\n");
        }
        format!("#![allow(unused)]\nfn main() {{\n    let _ = (|| {{\n{body}\n    }})();\n}}\n")
    }
}

/// What the check takes from a page.
pub struct Page {
    /// The TOML block that holds `[dependencies]` (with any `[dev-dependencies]` beside it, which
    /// become dependencies: the blocks are programs, not tests).
    pub dependencies: Option<String>,
    /// The Rust blocks to build.
    pub programs: Vec<Program>,
}

pub fn parse(text: &str) -> Page {
    let mut page = Page {
        dependencies: None,
        programs: Vec::new(),
    };
    let mut lines = text.lines().enumerate();
    while let Some((at, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let info = info.trim().to_string();
        let mut block = Vec::new();
        for (_, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            block.push(line.to_string());
        }
        let attributes: Vec<&str> = info.split(',').map(str::trim).collect();
        match attributes.first().copied() {
            Some("toml") => {
                let toml = block.join("\n");
                if toml.contains("dependencies]") && page.dependencies.is_none() {
                    page.dependencies = Some(toml.replace("[dev-dependencies]", "[dependencies]"));
                }
            }
            Some("rust") | Some("") if info.is_empty() || info.starts_with("rust") => {
                let skipped = attributes
                    .iter()
                    .any(|a| *a == "ignore" || *a == "compile_fail" || *a == "text");
                if !skipped {
                    page.programs.push(Program {
                        line: at + 1,
                        lines: block.iter().map(|l| unhide(l)).collect(),
                    });
                }
            }
            _ => {}
        }
    }
    page
}

/// Rustdoc's hidden lines: `# code` is code, a lone `#` is an empty line, `##` escapes a `#`.
fn unhide(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    if trimmed == "#" {
        String::new()
    } else if let Some(rest) = trimmed.strip_prefix("##") {
        format!("{indent}#{rest}")
    } else if let Some(rest) = trimmed.strip_prefix("# ") {
        format!("{indent}{rest}")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_gives_its_dependencies_and_its_buildable_blocks() {
        let page = parse(
            "# Title\n```toml\n[dev-dependencies]\nx = \"1\"\n```\n```rust\n# use x;\nlet a = 1;\n```\n```rust,ignore\nnot built\n```\n```text\nno\n```\n",
        );
        assert_eq!(
            page.dependencies.as_deref(),
            Some("[dependencies]\nx = \"1\"")
        );
        assert_eq!(page.programs.len(), 1);
        assert_eq!(page.programs[0].line, 6);
        let source = page.programs[0].source();
        assert!(source.contains("use x;\nlet a = 1;"), "{source}");
        assert!(source.contains("fn main()"), "{source}");
    }

    #[test]
    fn a_block_with_its_own_main_is_left_as_it_is() {
        let page = parse("```rust\n#[tokio::main]\nasync fn main() {}\n```\n");
        assert_eq!(
            page.programs[0].source(),
            "#[tokio::main]\nasync fn main() {}\n"
        );
    }

    #[test]
    fn hidden_lines_follow_rustdoc() {
        assert_eq!(unhide("    # let x = 1;"), "    let x = 1;");
        assert_eq!(unhide("#"), "");
        assert_eq!(unhide("##[derive(Debug)]"), "#[derive(Debug)]");
        assert_eq!(unhide("#[derive(Debug)]"), "#[derive(Debug)]");
    }
}
