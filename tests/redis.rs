//! The Redis store end to end: two replicas of the real binary and the CLI share one real
//! `redis-server` (started here on a free port with a temporary directory): one signing key
//! ring, tokens made by the CLI honoured by both, and Redis gone makes `/readyz` 503 naming
//! the store and uncached decisions 503.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::Value;

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
    config_at(dir, &redis.url(1), "", "")
}

/// A configuration on the Redis at `url` in `dir`, with more `store` keys (`store_extra`,
/// each ending in a comma) and more top-level sections (`sections`); the `api_token` and
/// `basic` providers, and `/data` open to anyone with `read:data` (a user holds every scope).
fn config_at(
    dir: &std::path::Path,
    url: &str,
    store_extra: &str,
    sections: &str,
) -> std::path::PathBuf {
    let config = dir.join("authgate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
store: {{ type: redis, url: "{url}", {store_extra} prefix: "e2e:", timeout: 1s }}
server: {{ listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"] }}
admin: {{ listen: "127.0.0.1:0" }}
mint: {{ issuer: "https://authgate.test", audience: api }}
providers:
  - {{ type: api_token }}
  - {{ type: basic, max_failures: 10, failure_window: 10m }}
policy:
  default: deny
  rules:
    - {{ name: data, path: /data, require: {{ scopes: ["read:data"] }} }}
{sections}"#
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

async fn decide_basic(authgate: &Authgate, user: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .header("Host", "api.example.org")
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Users are shared, and so are the Basic brute-force counters: a user removed through the
/// CLI is refused by both replicas at once (the `user` event drops their cached identity,
/// long before `cache.max_ttl`), and 10 wrong passwords spread over two replicas trip the
/// limit of 10 on both (each replica alone saw only 5).
#[tokio::test]
async fn users_and_basic_limits_are_shared() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_at(
        dir.path(),
        &redis.url(1),
        "",
        "cache: { max_ttl: 5m, negative_ttl: 1s }\n",
    );
    let (a, b) = (Authgate::start(&config), Authgate::start(&config));
    add_user(&config, &["bob"], "bob-password");
    add_user(&config, &["alice"], "alice-password");
    for replica in [&a, &b] {
        assert_eq!(decide_basic(replica, "bob", "bob-password").await, 200);
    }
    let remove = cli(&config, &["user", "remove", "bob"], None);
    assert!(remove.status.success(), "{remove:?}");
    let removed = Instant::now();
    for replica in [&a, &b] {
        while decide_basic(replica, "bob", "bob-password").await != 401 {
            assert!(
                removed.elapsed() < Duration::from_secs(2),
                "removed user still cached"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!(
        "user removal seen by both replicas after {:?}",
        removed.elapsed()
    );

    // The removed bob's refusals above were failures from this address: 1 or more per
    // replica. Fill the address's budget of 10 with wrong passwords, alternating replicas.
    let mut failures = 0;
    for i in 0.. {
        let replica = if i % 2 == 0 { &a } else { &b };
        // A new wrong password each time: a repeated one is answered from the negative cache
        // without being checked (and counted) again.
        match decide_basic(replica, "alice", &format!("wrong-{i}")).await {
            401 => failures += 1,
            429 => break,
            other => panic!("wrong password answered {other}"),
        }
        assert!(i < 10, "no limit after {failures} failures");
    }
    assert!(failures <= 8, "bob's refusals counted too: {failures}");
    // Now even the right password waits, on either replica.
    for replica in [&a, &b] {
        let resp = reqwest::Client::new()
            .get(replica.url("/auth"))
            .header("X-Original-URI", "/data")
            .header("X-Original-Method", "GET")
            .header("Host", "api.example.org")
            .basic_auth("alice", Some("alice-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait > 500 && wait <= 600, "Retry-After {wait}");
    }
}

/// With `appendonly yes` (fsync always here, so that a SIGKILL loses nothing), Redis
/// killed and restarted loses no token and forgets no revocation, and the key ring is the
/// one from before.
#[tokio::test]
async fn redis_restarted_with_appendonly_loses_nothing() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let dir = tempfile::tempdir().unwrap();
    let config = redis_config(dir.path(), &redis);
    let a = Authgate::start(&config);
    let kept = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    let revoked = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    assert_eq!(decide(&a, &kept).await, 200);
    assert_eq!(decide(&a, &revoked).await, 200);
    let revoke = cli(
        &config,
        &["token", "revoke", "--secret-stdin"],
        Some(&revoked),
    );
    assert!(revoke.status.success(), "{revoke:?}");
    let before = kids(&a).await;
    redis.restart();
    // The first calls after the restart find their connection broken and are made again on
    // a new one: answered, not 503.
    assert_eq!(decide(&a, &revoked).await, 401);
    assert_eq!(decide(&a, &kept).await, 200);
    let fresh = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    assert_eq!(decide(&a, &fresh).await, 200);
    let b = Authgate::start(&config);
    assert_eq!(
        kids(&b).await,
        before,
        "the same key ring after the restart"
    );
    assert_eq!(decide(&b, &kept).await, 200);
    assert_eq!(decide(&b, &revoked).await, 401);
}

/// A TCP relay to Redis whose connections can be cut without a word: after `cut`, the
/// connections open at that moment stay open but carry nothing more (as when a NAT entry
/// is dropped), while new ones are relayed as before.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let mut watch = watch.clone();
                watch.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = watch.changed() => {
                            // Cut: both sockets stay open and silent until the test ends.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        Self { port, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

/// A replica whose connections to Redis were cut without a word does not keep answering
/// from its cache what was revoked meanwhile: its subscription's PING (every
/// `store.keepalive`) goes unanswered, it subscribes again over a new connection, and
/// clears its cache. Without the keepalive it would hear nothing and answer 200 for the
/// revoked token until `cache.max_ttl` (5 min here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_cut_is_noticed_by_the_keepalive() {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.port).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = "cache: { max_ttl: 5m }\n";
    let direct = config_at(dir.path(), &redis.url(1), "", cache);
    let relayed_dir = tempfile::tempdir().unwrap();
    let relayed = config_at(
        relayed_dir.path(),
        &format!("redis://127.0.0.1:{}/1", relay.port),
        "keepalive: 200ms,",
        cache,
    );
    let b = Authgate::start(&relayed);
    let token = create_token(&direct, &["--user", "alice", "--scopes", "read:data"]);
    assert_eq!(decide(&b, &token).await, 200);
    relay.cut();
    let revoke = cli(
        &direct,
        &["token", "revoke", "--secret-stdin"],
        Some(&token),
    );
    assert!(revoke.status.success(), "{revoke:?}");
    let revoked = Instant::now();
    while decide(&b, &token).await != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(15),
            "the revoked token is still accepted: {}",
            b.logs.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "revocation seen across a silent cut after {:?}",
        revoked.elapsed()
    );
}

/// `store migrate` copies every token (revoked ones stay revoked), user and key from an
/// embedded store into Redis, idempotently; afterwards they all work against Redis.
#[tokio::test]
async fn store_migrate_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = write_config(
        dir.path(),
        r#"server: { listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"] }
admin: { listen: "127.0.0.1:0" }
mint: { issuer: "https://authgate.test", audience: api }
providers:
  - { type: api_token }
  - { type: basic }
policy:
  default: deny
  rules:
    - { name: data, path: /data, require: { scopes: ["read:data"] } }
"#,
    );
    add_user(&sqlite, &["carol", "--roles", "staff"], "carol-password");
    let carols = create_token(&sqlite, &["--user", "carol", "--scopes", "read:data"]);
    let service = create_token(&sqlite, &["--user", "svc-backup", "--scopes", "read:data"]);
    let revoked = create_token(&sqlite, &["--user", "carol", "--scopes", "read:data"]);
    let revoke = cli(
        &sqlite,
        &["token", "revoke", "--secret-stdin"],
        Some(&revoked),
    );
    assert!(revoke.status.success(), "{revoke:?}");
    // A key signing now and its successor: two keys published.
    for args in [&["keys", "rotate", "--now"][..], &["keys", "rotate"]] {
        let rotate = cli(&sqlite, args, None);
        assert!(rotate.status.success(), "{rotate:?}");
    }
    let embedded = Authgate::start(&sqlite);
    let sqlite_kids = kids(&embedded).await;
    assert_eq!(sqlite_kids.len(), 2, "{sqlite_kids:?}");
    drop(embedded);

    let redis = RedisServer::start();
    let redis_dir = tempfile::tempdir().unwrap();
    let config = redis_config(redis_dir.path(), &redis);
    let db = dir.path().join("authgate.db");
    let migrate = |config: &std::path::Path| {
        let out = cli(
            config,
            &[
                "store",
                "migrate",
                "--from",
                db.to_str().unwrap(),
                "--to",
                &redis.url(1),
            ],
            None,
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        migrate(&config),
        "copied 3 tokens, 1 users, 2 signing keys; 0 already in the Redis store\n"
    );
    assert_eq!(
        migrate(&config),
        "copied 0 tokens, 0 users, 0 signing keys; 6 already in the Redis store\n"
    );
    let missing = cli(
        &config,
        &[
            "store",
            "migrate",
            "--from",
            "/nonexistent.db",
            "--to",
            &redis.url(1),
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(66), "{missing:?}");
    let bad = cli(
        &config,
        &[
            "store",
            "migrate",
            "--from",
            db.to_str().unwrap(),
            "--to",
            "http://x",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");

    let a = Authgate::start(&config);
    assert_eq!(kids(&a).await, sqlite_kids, "the same key ring, in order");
    assert_eq!(decide(&a, &carols).await, 200);
    assert_eq!(decide(&a, &service).await, 200);
    assert_eq!(decide(&a, &revoked).await, 401);
    assert_eq!(decide_basic(&a, "carol", "carol-password").await, 200);
    let jwt = {
        let resp = reqwest::Client::new()
            .get(a.url("/auth"))
            .header("X-Original-URI", "/data")
            .header("X-Original-Method", "GET")
            .header("Host", "api.example.org")
            .bearer_auth(&carols)
            .send()
            .await
            .unwrap();
        bearer_jwt(&resp)
    };
    let claims = verify_jwt(&a, &jwt, "api").await;
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["roles"], serde_json::json!([]), "{claims}");
}
