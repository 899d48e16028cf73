//! A real OpenID provider (npm `oidc-provider`, `tests/peers/oidc/provider.mjs`) on a free
//! loopback port; its packages are installed by scripts/test.sh (`npm ci`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Oidc {
    child: Child,
    pub issuer: String,
    pub keys: PathBuf,
}

pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc")
}

impl Oidc {
    /// Starts the provider on `port` with the signing keys in `keys` (made when missing).
    pub fn start(port: u16, keys: &Path) -> Self {
        assert!(
            peer_dir().join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run scripts/test.sh (npm ci in tests/peers/oidc)"
        );
        let mut child = Command::new("node")
            .arg(peer_dir().join("provider.mjs"))
            .arg(port.to_string())
            .arg(keys)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = tx.send(issuer.to_owned());
                }
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("oidc-provider did not start");
        Self {
            child,
            issuer,
            keys: keys.to_owned(),
        }
    }

    /// A client_credentials access token for `resource` with `scope`.
    pub async fn client_token(&self, resource: &str, scope: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth("machine", Some("machine-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `claims` signed with the provider's own key.
    pub fn sign(&self, claims: &Value) -> String {
        let out = Command::new("node")
            .arg(peer_dir().join("sign.mjs"))
            .arg(&self.keys)
            .arg(claims.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        self.stop();
    }
}
