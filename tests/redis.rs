//! The Redis store end to end: two replicas of the real binary and the CLI share one real
//! `redis-server` (started here on a free port with a temporary directory): one signing key
//! ring, tokens made by the CLI honoured by both, and Redis gone makes `/readyz` 503 naming
//! the store and uncached decisions 503.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `redis-server` of the test's own, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(port, dir.path());
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// Kills the server and starts an empty one on the same port (nothing is persisted).
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, self._dir.path());
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn decide(authgate: &Authgate, token: &str) -> u16 {
    reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .header("Host", "api.example.org")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn kids(authgate: &Authgate) -> Vec<String> {
    let jwks: Value = reqwest::get(authgate.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// A configuration on `redis` in `dir`.
fn redis_config(dir: &std::path::Path, redis: &RedisServer) -> std::path::PathBuf {
    let config = dir.join("authgate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
store: {{ type: redis, url: "redis://127.0.0.1:{}/1", prefix: "e2e:", timeout: 1s }}
server: {{ listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"] }}
admin: {{ listen: "127.0.0.1:0" }}
mint: {{ issuer: "https://authgate.test", audience: api }}
providers:
  - {{ type: api_token }}
policy:
  default: deny
  rules:
    - {{ name: data, path: /data, require: {{ scopes: ["read:data"] }} }}
"#,
            redis.port
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn replicas_share_one_redis_store() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = redis_config(dir.path(), &redis);
    let check = cli(&config, &["check-config"], None);
    assert!(check.status.success(), "{check:?}");

    // Started at once, as replicas are: one key ring between them.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Authgate::start(&config));
        let b = s.spawn(|| Authgate::start(&config));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (kids_a, kids_b) = (kids(&a).await, kids(&b).await);
    assert_eq!(kids_a.len(), 1, "{kids_a:?}");
    assert_eq!(kids_a, kids_b);

    let token = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    assert_eq!(decide(&a, &token).await, 200);
    assert_eq!(decide(&b, &token).await, 200);
    let ready = reqwest::get(b.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // Revoked by the CLI while cached by both: each drops it on the published event, long
    // before `cache.max_ttl` (10 s). Polled every 5 ms; the delay is printed.
    let revoke = cli(
        &config,
        &["token", "revoke", "--secret-stdin"],
        Some(&token),
    );
    assert!(revoke.status.success(), "{revoke:?}");
    let revoked = Instant::now();
    for replica in [&a, &b] {
        while decide(replica, &token).await != 401 {
            assert!(revoked.elapsed() < Duration::from_secs(1), "still accepted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!(
        "revocation seen by both replicas after {:?}",
        revoked.elapsed()
    );

    // A rotation: both replicas reload the key ring on the event, not after the 10 s reload.
    let rotate = cli(&config, &["keys", "rotate"], None);
    assert!(rotate.status.success(), "{rotate:?}");
    let rotated = Instant::now();
    for replica in [&a, &b] {
        while kids(replica).await.len() != 2 {
            assert!(
                rotated.elapsed() < Duration::from_secs(2),
                "new key not published"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!(
        "new key published by both replicas after {:?}",
        rotated.elapsed()
    );
    assert_eq!(kids(&a).await, kids(&b).await);

    // Redis gone: /readyz names the store, and a token not in the cache cannot be checked.
    drop(redis);
    let ready = reqwest::get(a.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "unreachable", "{body}");
    let unknown = format!("agt_{}", "A".repeat(43));
    assert_eq!(decide(&a, &unknown).await, 503);
}

/// A replica that lost its subscription (Redis restarted) clears its decision cache once
/// subscribed again: nothing changed during the gap outlives it. Here the restarted Redis
/// is empty, so the token cached before is unknown after.
#[tokio::test]
async fn a_lost_subscription_clears_the_cache() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = redis_config(dir.path(), &redis);
    let a = Authgate::start(&config);
    let token = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    assert_eq!(decide(&a, &token).await, 200);
    redis.restart();
    let restarted = Instant::now();
    while decide(&a, &token).await != 401 {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "cached answer kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("cache cleared {:?} after the restart", restarted.elapsed());
}
