//! The module layering of `src/lib.rs` holds: no module imports one above it, every module
//! is in the list, and no source file holds more than ~500 lines of non-test code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MAX_CODE_LINES: usize = 500;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layer list between the `<!-- layers -->` markers of lib.rs, top first.
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let start = lib
        .find("<!-- layers -->")
        .expect("lib.rs names the layers");
    let end = lib
        .find("<!-- /layers -->")
        .expect("lib.rs ends the layer list");
    lib[start..end]
        .lines()
        .filter_map(|l| l.trim_start_matches("//!").trim().strip_prefix("- `"))
        .map(|l| l.split('`').next().unwrap().to_owned())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`src/server/decide.rs` -> `server`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module or root item a file names through `crate::` (or `authgate::` in
/// the binary), including the items of `use crate::{a, b::c}`.
fn imports(text: &str, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    let prefix = format!("{root}::");
    let mut rest = text;
    while let Some(at) = rest.find(&prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Items at the group's own depth: `policy::{Rule, Target}` is one item.
            let mut items = vec![String::new()];
            let mut depth = 0;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(String::new()),
                    c if depth == 0 => items.last_mut().unwrap().push(c),
                    _ => {}
                }
            }
            for item in &items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

/// A file that holds only tests (declared `#[cfg(test)] mod props;` by its parent).
fn is_test_file(text: &str) -> bool {
    text.contains("proptest!") && !text.contains("\n#[cfg(test)]\nmod tests")
}

/// The code of a file before its `#[cfg(test)] mod tests`.
fn non_test_code(text: &str) -> &str {
    text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("")
}

/// Items of lib.rs itself that every module may use.
const ROOT_ITEMS: &[&str] = &["unix_now"];

#[test]
fn modules_import_only_downward() {
    let order = layers();
    assert!(order.len() >= 15, "layer list too short: {order:?}");
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" {
            continue;
        }
        let Some(&own) = rank.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` is not in lib.rs's layer list",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        if is_test_file(&text) {
            continue;
        }
        // Unit tests may build their input from any module (a config from YAML, say).
        let code = non_test_code(&text);
        let root = if module == "main" {
            "authgate"
        } else {
            "crate"
        };
        for used in imports(code, root) {
            if used == module || ROOT_ITEMS.contains(&used.as_str()) {
                continue;
            }
            match rank.get(used.as_str()) {
                Some(&other) if other > own => {}
                Some(_) => problems.push(format!(
                    "{}: `{module}` imports `{used}`, which is above it (or level with it)",
                    file.display()
                )),
                None => problems.push(format!(
                    "{}: `{module}` imports `{root}::{used}`, which is not a module in the layer list",
                    file.display()
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_file_holds_more_than_500_lines_of_code() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut too_long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if is_test_file(&text) {
            continue;
        }
        let lines = non_test_code(&text).lines().count();
        if lines > MAX_CODE_LINES {
            too_long.push(format!("{}: {lines} lines", file.display()));
        }
    }
    assert!(
        too_long.is_empty(),
        "split these files:\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_checker_sees_imports() {
    let text = "use crate::{cache::X, forward, policy::{Rule, Target}};\nlet x = crate::store::open();\nfoo_crate::bar;";
    let got = imports(text, "crate");
    assert_eq!(got, vec!["cache", "forward", "policy", "store"]);
}
