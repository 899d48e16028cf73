//! The Python tools of the deployment tests, in the virtualenv `scripts/test.sh` makes in
//! `tests/peers/chart/.venv`: Helm's engine (helm-python-sdk), kubernetes-validate,
//! PyYAML and hadolint.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A program of the virtualenv, or a panic that names the install step.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo().join("tests/peers/chart/.venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/peers/chart/requirements.txt",
        path.display()
    );
    path
}

/// Runs a script of `tests/peers/chart` with `args` and parses what it prints as JSON.
pub fn run_script(script: &str, args: &[&str]) -> Value {
    let out = Command::new(venv_bin("python"))
        .arg(repo().join("tests/peers/chart").join(script))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The YAML documents of `file` (relative to the repository) as JSON values.
pub fn yaml_docs(file: &str) -> Vec<Value> {
    let path = repo().join(file);
    match run_script("yaml_docs.py", &[path.to_str().unwrap()]) {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
    }
}
