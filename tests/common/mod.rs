//! Test harness: the real `authgate` binary on free loopback ports with a temporary store,
//! real nginx, and a small upstream that echoes the headers it received.
#![allow(dead_code)]

pub mod astakos;
pub mod backends;
pub mod browser;
pub mod caddy;
pub mod deploy;
pub mod keystone;
pub mod ldap;
pub mod oidc;
pub mod redis;
pub mod whoami;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// A running authgate.
pub struct Authgate {
    pub child: Child,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The thread reading the process's stderr into `logs` (done at its end of file).
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The config every test starts from; `extra` is appended (later keys win in YAML only
/// when they are distinct sections, so tests pass whole sections).
pub fn write_config(dir: &Path, sections: &str) -> PathBuf {
    let path = dir.join("authgate.yaml");
    // The embedded store in `dir`, unless the sections name a store of their own.
    let mut text = if sections.lines().any(|l| l.starts_with("store:")) {
        String::new()
    } else {
        format!(
            "store: {{ type: embedded, path: \"{}\" }}\n",
            dir.join("authgate.db").display()
        )
    };
    text.push_str(sections);
    if !sections.contains("server:") {
        text.push_str(
            "\nserver: { listen: \"127.0.0.1:0\", trusted_proxies: [\"127.0.0.1/32\"] }\n",
        );
    }
    if !sections.contains("admin:") {
        text.push_str("\nadmin: { listen: \"127.0.0.1:0\" }\n");
    }
    if !sections.contains("mint:") {
        text.push_str("\nmint: { issuer: \"https://authgate.test\", audience: api }\n");
    }
    std::fs::write(&path, text).unwrap();
    path
}

impl Authgate {
    /// Starts `authgate serve` with the config at `config` and waits for both listeners.
    pub fn start(config: &Path) -> Self {
        let mut command = Command::new(BIN);
        command.args(["serve", "--config"]).arg(config);
        Self::start_command(command, config)
    }

    /// Starts `command` (which runs `authgate serve` with `config`, perhaps through a shell
    /// that sets limits first) and waits for both listeners.
    pub fn start_command(mut command: Command, config: &Path) -> Self {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start authgate");
        let stderr = child.stderr.take().unwrap();
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel::<(String, SocketAddr)>();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                    && let (Some(l), Some(a)) = (v["listener"].as_str(), v["addr"].as_str())
                {
                    let _ = tx.send((l.to_owned(), a.parse().unwrap()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (mut data, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while data.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((l, a)) if l == "data" => data = Some(a),
                Ok((_, a)) => admin = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "authgate did not start; logs:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            }
        }
        Self {
            child,
            data: data.unwrap(),
            admin: admin.unwrap(),
            config: config.to_owned(),
            logs,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Runs a CLI command against the same config.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli(&self.config, args, stdin)
    }

    /// Sends SIGTERM and waits; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        self.terminate()
    }

    /// Stops authgate and returns every line it logged: its log writer writes each line
    /// before the process exits, and the reader has read to the end of its output. So a
    /// check that no secret reached the log misses none, where `log_text` may be read
    /// while the last lines are still being gathered (up to 10 ms). A second SIGTERM, once
    /// the first one's drain delay has begun, ends that delay.
    pub async fn stop_and_log_text(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let draining = eventually(Duration::from_secs(10), async || {
            self.log_text().contains("shutting down")
        })
        .await;
        assert!(draining, "no shutdown after SIGTERM:\n{}", self.log_text());
        assert_eq!(self.terminate(), Some(0), "{}", self.log_text());
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log_text()
    }

    /// Sends SIGTERM (again, if already sent) and waits; returns the exit status code.
    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The value of the unlabelled metric `name` on the admin listener's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }
}

impl Drop for Authgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `authgate <args> --config <config>`, feeding `stdin`.
pub fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run authgate");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// `authgate token create ...` and the secret it printed.
pub fn create_token(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = cli(config, &all, None);
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("agt_") && secret.len() == 47, "{secret}");
    secret
}

/// Adds a local user with `password`.
pub fn add_user(config: &Path, args: &[&str], password: &str) {
    let mut all = vec!["user", "add"];
    all.extend_from_slice(args);
    let out = cli(config, &all, Some(&format!("{password}\n")));
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The claims of `jwt` after verifying it against authgate's JWKS, `iss` and `aud`.
pub async fn verify_jwt(authgate: &Authgate, jwt: &str, audience: &str) -> Value {
    let jwks: JwkSet = reqwest::get(authgate.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    verify_with(&jwks, jwt, audience)
}

/// Verifies `jwt` against `jwks` (ES256), issuer `https://authgate.test` and `audience`.
pub fn verify_with(jwks: &JwkSet, jwt: &str, audience: &str) -> Value {
    verify_with_alg(jwks, jwt, audience, jsonwebtoken::Algorithm::ES256)
}

/// Verifies `jwt` against `jwks` with algorithm `alg`, issuer `https://authgate.test`.
pub fn verify_with_alg(
    jwks: &JwkSet,
    jwt: &str,
    audience: &str,
    alg: jsonwebtoken::Algorithm,
) -> Value {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, alg);
    let kid = header.kid.expect("kid");
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} not in the JWKS"));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["https://authgate.test"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .unwrap_or_else(|e| panic!("JWT does not verify: {e}"))
        .claims
}

/// The JWT of a 200 from authgate (`Authorization: Bearer <jwt>`).
pub fn bearer_jwt(resp: &reqwest::Response) -> String {
    let value = resp.headers()["authorization"].to_str().unwrap();
    value
        .strip_prefix("Bearer ")
        .expect("a Bearer JWT")
        .to_owned()
}

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 200 ms until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, f: impl AsyncFnMut() -> bool) -> bool {
    eventually_every(Duration::from_millis(200), timeout, f).await
}

/// Polls `f` every `interval` until it returns true or `timeout` passes; for conditions
/// whose every check costs a peer real work (a password login, say).
pub async fn eventually_every(
    interval: Duration,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(interval).await;
    }
    false
}

/// Sends raw bytes as one HTTP/1.1 request and returns (status, head, body).
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// An upstream that answers every request with the request's headers as JSON
/// (`{"name": ["value", ...]}`), plus `:path` and `:method`, and records what it served.
pub struct Echo {
    pub addr: SocketAddr,
    /// (method, raw request target) of every request served, in order.
    pub served: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub async fn start() -> Self {
        use http_body_util::Full;
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = served.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let mut map = serde_json::Map::new();
                            for (k, v) in req.headers() {
                                let entry = map
                                    .entry(k.as_str().to_owned())
                                    .or_insert_with(|| Value::Array(vec![]));
                                if let Value::Array(a) = entry {
                                    a.push(Value::String(
                                        String::from_utf8_lossy(v.as_bytes()).into(),
                                    ));
                                }
                            }
                            let target = req.uri().to_string();
                            log.lock()
                                .unwrap()
                                .push((req.method().to_string(), target.clone()));
                            map.insert(":path".into(), Value::String(target));
                            map.insert(":method".into(), Value::String(req.method().to_string()));
                            let body = Value::Object(map).to_string();
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from(body),
                            )))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, served, task }
    }

    /// How many requests the upstream has served.
    pub fn served_count(&self) -> usize {
        self.served.lock().unwrap().len()
    }

    /// The last request the upstream served.
    pub fn last_served(&self) -> Option<(String, String)> {
        self.served.lock().unwrap().last().cloned()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Path of the nginx binary, or a panic that names the install step.
pub fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("nginx is not installed: run scripts/test.sh, which installs the Debian package nginx");
}

/// A real nginx running `deploy/nginx/authgate.conf`, pointed at `authgate` and `upstream`.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Nginx {
    pub fn start(dir: &Path, site_conf: &str, authgate: SocketAddr, upstream: SocketAddr) -> Self {
        Self::start_at(dir, site_conf, authgate, upstream, None)
    }

    /// As [`Nginx::start`], listening on `port` (chosen before authgate's config, which
    /// names the site's URL).
    pub fn start_on(
        dir: &Path,
        site_conf: &str,
        authgate: SocketAddr,
        upstream: SocketAddr,
        port: u16,
    ) -> Self {
        Self::start_at(dir, site_conf, authgate, upstream, Some(port))
    }

    fn start_at(
        dir: &Path,
        site_conf: &str,
        authgate: SocketAddr,
        upstream: SocketAddr,
        fixed_port: Option<u16>,
    ) -> Self {
        let nginx = nginx_binary();
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let site =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(site_conf)).unwrap();
        for attempt in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let site = site
                .replace("server 127.0.0.1:8080;", &format!("server {authgate};"))
                .replace("server 127.0.0.1:3000;", &format!("server {upstream};"))
                .replace("listen 80", &format!("listen 127.0.0.1:{port}"));
            let d = dir.display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log info;\nevents {{ worker_connections 512; }}\n\
                 http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/tmp/body;\n\
                 proxy_temp_path {d}/tmp/proxy;\n fastcgi_temp_path {d}/tmp/fastcgi;\n\
                 uwsgi_temp_path {d}/tmp/uwsgi;\n scgi_temp_path {d}/tmp/scgi;\n{site}\n}}\n"
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new(&nginx)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nginx");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Self { child, addr, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            eprintln!(
                "nginx attempt {attempt} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!(
            "nginx did not start; see {}",
            dir.join("error.log").display()
        );
    }

    /// A URL on the example's site (`api.example.org`), for a client from [`Nginx::client`].
    pub fn url(&self, path: &str) -> String {
        format!("http://api.example.org:{}{path}", self.addr.port())
    }

    /// A client that reaches `api.example.org` (and the other given names) at this nginx.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve("api.example.org", self.addr)
            .resolve("compute.example.org", self.addr)
            .resolve("www.example.org", self.addr)
            .build()
            .unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
