//! The layers run one way. Each top-level module of the crate may import only the modules
//! below it; this test reads every source file and fails on an import against the rules, so a
//! back door is caught when it is written, not when the next engineer trips on it.
//!
//! ```text
//! path, header_names                  leaves: the vocabulary, usable by all, importing none
//! config                              data: schema, validation, expansion
//! filewatch, telemetry, jose          mechanisms that know only the data
//! proxy, fetch                        HTTP machinery
//! credential                          tokens and client assertions (egress, sign-in)
//! inbound, egress                     the two request paths; siblings, each owns its state
//! app                                 state, snapshot building, reload, admin, listeners
//! dev                                 local stand-ins (issuer, identity endpoint, echo)
//! cli                                 subcommands
//! ```
//!
//! Test code (`tests.rs` files and `#[cfg(test)]` modules) may use anything: tests of the
//! inbound path mint tokens with the development issuer.

use std::collections::BTreeMap;
use std::path::Path;

/// The vocabulary: modules that import nothing from the crate and that any module may use.
const LEAVES: &[&str] = &["path", "header_names"];

/// Each other module and the modules it may import, besides itself and the leaves.
const RULES: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("filewatch", &[]),
    ("telemetry", &["config"]),
    ("jose", &["config"]),
    ("proxy", &["config", "telemetry"]),
    ("fetch", &["config", "proxy"]),
    (
        "credential",
        &["config", "telemetry", "jose", "proxy", "fetch"],
    ),
    (
        "inbound",
        &[
            "config",
            "telemetry",
            "jose",
            "proxy",
            "fetch",
            "credential",
        ],
    ),
    (
        "egress",
        &[
            "config",
            "telemetry",
            "jose",
            "proxy",
            "fetch",
            "credential",
        ],
    ),
    (
        "app",
        &[
            "config",
            "filewatch",
            "telemetry",
            "proxy",
            "fetch",
            "credential",
            "inbound",
            "egress",
        ],
    ),
    (
        "dev",
        &[
            "config",
            "telemetry",
            "jose",
            "proxy",
            "fetch",
            "credential",
            "inbound",
            "egress",
        ],
    ),
    (
        "cli",
        &[
            "config",
            "filewatch",
            "telemetry",
            "proxy",
            "fetch",
            "credential",
            "inbound",
            "egress",
            "app",
            "dev",
        ],
    ),
];

/// `crate::NAME` in the non-test code of `text`, with its line: `use crate::{a::{b}, c}` (over
/// any number of lines) gives `a` and `c`.
fn imports(text: &str) -> Vec<(usize, String)> {
    // Code only: up to an inline test module (by convention the last item of a file),
    // without comment lines; a `#[cfg(test)] mod tests;` declaration is skipped.
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if line.starts_with("#[cfg(test)]") {
            if lines
                .get(i + 1)
                .is_some_and(|next| next.trim_end().ends_with(';'))
            {
                kept.extend(["", ""]);
                i += 2;
                continue;
            }
            break;
        }
        kept.push(if line.starts_with("//") { "" } else { lines[i] });
        i += 1;
    }
    let code = kept.join("\n");
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = code[at..].find("crate::") {
        let start = at + found + "crate::".len();
        let line = code[..start].matches('\n').count() + 1;
        let rest = &code[start..];
        match rest.strip_prefix('{') {
            Some(inner) => out.extend(brace_heads(inner).into_iter().map(|n| (line, n))),
            None => out.push((line, ident(rest))),
        }
        at = start;
    }
    out.retain(|(_, n)| !n.is_empty());
    out
}

/// The identifier at the start of `text`.
fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first name of each part of a brace list, at its outer level: `a::{b, c}, d }` gives
/// `a` and `d`.
fn brace_heads(text: &str) -> Vec<String> {
    let mut heads = vec![String::new()];
    let mut depth = 0usize;
    let mut taking = true;
    for c in text.chars() {
        match c {
            '}' if depth == 0 => break,
            '{' => {
                depth += 1;
                taking = false;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(String::new());
                taking = true;
            }
            c if taking && (c.is_ascii_alphanumeric() || c == '_') => {
                heads.last_mut().expect("one head at least").push(c);
            }
            c if taking && !c.is_whitespace() => taking = false,
            _ => {}
        }
    }
    heads
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    for leaf in LEAVES {
        rules.insert(leaf, &[]);
    }
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut broken = Vec::new();
    let mut seen = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if matches!(top.as_str(), "lib" | "main") || rel.ends_with("tests.rs") {
            continue;
        }
        let Some(allowed) = rules.get(top.as_str()) else {
            broken.push(format!(
                "{}: module {top} has no layer in RULES",
                rel.display()
            ));
            continue;
        };
        seen += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, name) in imports(&text) {
            let leaf = LEAVES.contains(&name.as_str());
            if name != top && !leaf && !allowed.contains(&name.as_str()) {
                broken.push(format!(
                    "{}:{line}: {top} imports crate::{name}",
                    rel.display()
                ));
            }
        }
    }
    assert!(seen > 50, "only {seen} files read");
    assert!(
        broken.is_empty(),
        "imports against the layers:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_reader_sees_through_braces_and_stops_at_tests() {
    let text = "use crate::{\n    config::{X, Y},\n    proxy,\n};\nfn f() { crate::app::g(); }\n// crate::cli\n#[cfg(test)]\nuse crate::dev;\n";
    let found = imports(text);
    assert_eq!(
        found,
        [
            (1, "config".to_owned()),
            (1, "proxy".to_owned()),
            (5, "app".to_owned())
        ]
    );
}
