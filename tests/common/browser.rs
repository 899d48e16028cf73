//! A real browser: Debian's chromium driven by npm `playwright-core` (tests/peers/browser,
//! installed by scripts/test.sh). Each scenario is a script there that takes its arguments as
//! JSON and prints `result <json>`; the test asserts on that result.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/browser")
}

/// Where browser tests save their screenshots: `target/test-artifacts/<test>/`.
pub fn artifacts(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts")
        .join(test);
    std::fs::create_dir_all(&dir).expect("make the artifacts directory");
    dir
}

/// Runs `tests/peers/browser/<script>` with `args`; panics with the script's stderr when it
/// fails (a failed expectation in the script included) and returns its result.
pub async fn run(script: &str, args: &Value) -> Value {
    assert!(
        peer_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/test.sh (npm ci in tests/peers/browser)"
    );
    // coreutils' timeout bounds a hung browser; the blocking wait runs off the runtime's
    // workers so that the authgate and peers the scenario talks to keep being served.
    let mut command = Command::new("timeout");
    command
        .args(["--kill-after=5", "120", "node"])
        .arg(peer_dir().join(script))
        .arg(args.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join the browser scenario")
        .expect("start node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser scenario {script} failed:\n{stderr}\n{stdout}"
    );
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or_else(|| panic!("browser scenario {script} printed no result:\n{stdout}"));
    serde_json::from_str(line).expect("the scenario's result is JSON")
}
