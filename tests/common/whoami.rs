//! The who-am-i service of tests/peers/whoami/server.py (Python's standard library, a real
//! HTTP server in its own process) on a free loopback port: tokens are set per test, every
//! request it received can be read back, and it can be stopped (connections refused).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct WhoAmI {
    child: Child,
    pub addr: SocketAddr,
    tls: bool,
}

impl WhoAmI {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Over TLS with `cert` and `key` (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        let mut s = Self::start_with(&[cert, key]);
        s.tls = true;
        s
    }

    fn start_with(tls: &[&Path]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/whoami/server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("0")
            .args(tls)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 tests/peers/whoami/server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("who-am-i service did not start: {line:?}"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: false,
        }
    }

    /// The who-am-i endpoint.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/who-am-i", self.addr)
    }

    /// A client for its test endpoints (trusting any certificate: test set-up only).
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
    }

    fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Adds tokens: token -> {"status", "body", "delay"}.
    pub async fn set(&self, tokens: Value) {
        let r = Self::client()
            .post(format!("{}/_tokens", self.base()))
            .json(&tokens)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Every request `/who-am-i` received, in order.
    pub async fn requests(&self) -> Vec<Value> {
        Self::client()
            .get(format!("{}/_requests", self.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Stops the service: calls are refused.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        self.stop();
    }
}
