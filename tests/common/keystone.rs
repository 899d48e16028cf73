//! A real OpenStack Keystone (PyPI `keystone`, SQLite, fernet, gunicorn) on a free loopback
//! port, provisioned by `tests/peers/keystone/serve.py`; installed by scripts/test.sh.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Keystone {
    child: Child,
    gunicorn_pid: u32,
    pub url: String,
}

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/keystone")
}

impl Keystone {
    /// Starts Keystone with tokens that live `token_expiration` seconds.
    pub fn start(workdir: &Path, token_expiration: u32) -> Self {
        let venv = peer_dir().join(".venv");
        assert!(
            venv.join("bin/keystone-manage").exists(),
            "Keystone is not installed: run scripts/test.sh, which installs it into {}",
            venv.display()
        );
        let port = super::free_port();
        let mut child = Command::new("python3")
            .arg(peer_dir().join("serve.py"))
            .arg(&venv)
            .arg(workdir)
            .arg(port.to_string())
            .env("KEYSTONE_TOKEN_EXPIRATION", token_expiration.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keystone");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(pid) = line.strip_prefix("ready ") {
                    let _ = tx.send(pid.trim().parse::<u32>().unwrap());
                }
            }
        });
        let started = Instant::now();
        let gunicorn_pid = rx
            .recv_timeout(Duration::from_secs(240))
            .unwrap_or_else(|_| {
                panic!(
                    "Keystone did not start; see {}/keystone.log",
                    workdir.display()
                )
            });
        eprintln!("keystone ready in {:?}", started.elapsed());
        Self {
            child,
            gunicorn_pid,
            url: format!("http://127.0.0.1:{port}/v3"),
        }
    }

    /// A token for `user` with `scope` (`{"project": ...}`, `{"system": ...}` or null).
    pub async fn token(&self, user: &str, password: &str, scope: Value) -> String {
        let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}}});
        if !scope.is_null() {
            auth["scope"] = scope;
        }
        let resp = reqwest::Client::new()
            .post(format!("{}/auth/tokens", self.url))
            .json(&json!({"auth": auth}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "token for {user}");
        resp.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    pub fn project(name: &str) -> Value {
        json!({"project": {"name": name, "domain": {"id": "default"}}})
    }

    /// What Keystone says of `token` (validated with an admin token).
    pub async fn validate(&self, token: &str) -> Value {
        let admin = self
            .token("admin", "admin-password", Self::project("admin"))
            .await;
        reqwest::Client::new()
            .get(format!("{}/auth/tokens?nocatalog", self.url))
            .header("X-Auth-Token", admin)
            .header("X-Subject-Token", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn revoke(&self, token: &str) {
        let admin = self
            .token("admin", "admin-password", Self::project("admin"))
            .await;
        let resp = reqwest::Client::new()
            .delete(format!("{}/auth/tokens", self.url))
            .header("X-Auth-Token", admin)
            .header("X-Subject-Token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }

    /// Enables or disables a user (disabling revokes its tokens).
    pub async fn set_enabled(&self, user: &str, enabled: bool) {
        let admin = self
            .token("admin", "admin-password", Self::project("admin"))
            .await;
        let http = reqwest::Client::new();
        let users: Value = http
            .get(format!("{}/users?name={user}", self.url))
            .header("X-Auth-Token", &admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = users["users"][0]["id"].as_str().unwrap().to_owned();
        let resp = http
            .patch(format!("{}/users/{id}", self.url))
            .header("X-Auth-Token", &admin)
            .json(&json!({"user": {"enabled": enabled}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// Stops gunicorn and the launcher.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.gunicorn_pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.gunicorn_pid.to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
