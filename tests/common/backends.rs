//! Backends' own JWT libraries as long-running peers (`tests/peers/backends`): PyJWT
//! (`PyJWKClient`) and node `jose` (`createRemoteJWKSet`), each keeping its JWKS cache for
//! its life, and `oauth4webapi` as a strict discovery client. scripts/test.sh installs them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

/// The peers' directory.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/backends")
}

/// Which library a [`Verifier`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Library {
    /// PyJWT with `PyJWKClient` (`verify.py`).
    PyJwt,
    /// node `jose` with `createRemoteJWKSet` + `jwtVerify` (`verify.mjs`).
    Jose,
}

/// A running verifier: one JWKS client for its life, one verdict per request.
pub struct Verifier {
    pub library: Library,
    child: Child,
    stdin: ChildStdin,
    verdicts: Receiver<String>,
}

impl Verifier {
    /// Starts `library`'s verifier against `jwks_url` and `issuer`; `cache` is its JWKS
    /// cache lifetime (the library's default when `None`: PyJWT 300 s, jose 600 s).
    pub fn start(library: Library, jwks_url: &str, issuer: &str, cache: Option<u64>) -> Self {
        let dir = peer_dir();
        let mut command = match library {
            Library::PyJwt => {
                let python = dir.join(".venv/bin/python");
                assert!(
                    python.exists(),
                    "PyJWT is not installed: run scripts/test.sh (a venv in tests/peers/backends)"
                );
                let mut c = Command::new(python);
                c.arg(dir.join("verify.py"));
                c
            }
            Library::Jose => {
                assert!(
                    dir.join("node_modules/jose").exists(),
                    "jose is not installed: run scripts/test.sh (npm ci in tests/peers/backends)"
                );
                let mut c = Command::new("node");
                c.arg(dir.join("verify.mjs"));
                c
            }
        };
        command.args([jwks_url, issuer]);
        if let Some(seconds) = cache {
            command.arg(seconds.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a verifier");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, verdicts) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = verdicts.recv_timeout(Duration::from_secs(30));
        assert_eq!(ready.as_deref(), Ok("ready"), "{library:?} did not start");
        Self {
            library,
            child,
            stdin,
            verdicts,
        }
    }

    /// The verdict on `jwt` for `audience`, accepting `algorithms` (`None`: the library's
    /// default), requiring `typ` (`None`: not checked) and the claims in `require`.
    pub fn verify(
        &mut self,
        jwt: &str,
        audience: &str,
        algorithms: Option<&[&str]>,
        typ: Option<&str>,
        require: &[&str],
    ) -> Value {
        let request = json!({
            "jwt": jwt, "audience": audience, "algorithms": algorithms, "typ": typ,
            "require": require,
        });
        writeln!(self.stdin, "{request}").expect("write to the verifier");
        self.stdin.flush().unwrap();
        let line = self
            .verdicts
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{:?} gave no verdict", self.library));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// The claims of `jwt`, which must verify with `alg` and `audience`.
    pub fn claims(&mut self, jwt: &str, audience: &str, alg: &str) -> Value {
        let verdict = self.verify(jwt, audience, Some(&[alg]), None, &[]);
        assert_eq!(verdict["ok"], true, "{:?}: {verdict}", self.library);
        verdict["claims"].clone()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `oauth4webapi` makes of authgate at `issuer`: `{"oidc": ..., "oauth2": ...}`, each
/// discovery and then `validateJwtAccessToken` of `jwt` for `audience` (see `discover.mjs`).
pub fn strict_discovery(issuer: &str, audience: &str, jwt: &str) -> Value {
    let dir = peer_dir();
    assert!(
        dir.join("node_modules/oauth4webapi").exists(),
        "oauth4webapi is not installed: run scripts/test.sh (npm ci in tests/peers/backends)"
    );
    let out = Command::new("node")
        .arg(dir.join("discover.mjs"))
        .args([issuer, audience, jwt])
        .stderr(Stdio::inherit())
        .output()
        .expect("run node");
    assert!(out.status.success(), "discover.mjs failed");
    serde_json::from_slice(&out.stdout).unwrap()
}
