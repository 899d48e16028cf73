//! The store suite against a real `redis-server` (started here on a free port with a
//! temporary directory; scripts/test.sh installs it), and what is Redis's own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::secret::Secret;
use crate::store::suite;

mod cluster;
mod sentinel;
use ::redis::ConnectionAddr;

/// A `redis-server` of the test's own, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        server.wait_for_ping();
        server
    }

    fn wait_for_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut answer = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok() {
                    let n = s.read(&mut answer).unwrap_or(0);
                    // `-NOAUTH` also means it is up.
                    if n > 0 {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config(&self, password_file: Option<std::path::PathBuf>) -> StoreConfig {
        StoreConfig::Redis {
            url: Secret::new(format!("redis://127.0.0.1:{}/3", self.port)),
            password_file,
            ca_file: None,
            prefix: "t:".into(),
            timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(5),
            sentinels: Vec::new(),
            cluster: false,
        }
    }

    fn store(&self) -> RedisStore {
        RedisStore::open(&self.config(None)).unwrap()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tokens_users_and_keys_round_trip() {
    let server = RedisServer::start(&[]);
    suite::tokens_users_and_keys_round_trip(&server.store()).await;
}

#[tokio::test]
async fn sessions() {
    let server = RedisServer::start(&[]);
    suite::sessions(&server.store()).await;
}

#[tokio::test]
async fn subjects_are_users_and_owners_of_live_tokens() {
    let server = RedisServer::start(&[]);
    suite::subjects_are_users_and_owners_of_live_tokens(&server.store()).await;
}

#[tokio::test]
async fn users_and_optional_fields_round_trip() {
    let server = RedisServer::start(&[]);
    suite::users_and_optional_fields_round_trip(&server.store()).await;
}

#[tokio::test]
async fn last_uses_in_large_batches() {
    let server = RedisServer::start(&[]);
    suite::last_uses_in_large_batches(&server.store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_make_one_key_ring() {
    let server = RedisServer::start(&[]);
    let stores: Vec<Arc<RedisStore>> = (0..8).map(|_| Arc::new(server.store())).collect();
    let key = |kid: String| KeyRecord {
        kid,
        algorithm: "ES256".into(),
        private_pkcs8: vec![1],
        created_at: 100,
        activates_at: 100,
        retired_at: None,
        publish_until: None,
    };
    // Started together, as replicas are: each on its own task and connection.
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, key) = (s.clone(), key(format!("k{i}")));
            tokio::spawn(async move { s.add_key(&key, 100, 0, true).await.unwrap() })
        })
        .collect();
    let mut added = Vec::new();
    for t in tasks {
        added.push(t.await.unwrap());
    }
    assert_eq!(added.iter().filter(|a| **a).count(), 1, "{added:?}");
    assert_eq!(stores[3].keys(100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_password_file_is_used_and_a_wrong_password_fails_ping() {
    let server = RedisServer::start(&["--requirepass", "s3cret"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let store = RedisStore::open(&server.config(Some(file.clone()))).unwrap();
    store.ping().await.unwrap();
    std::fs::write(&file, "wrong\n").unwrap();
    let store = RedisStore::open(&server.config(Some(file))).unwrap();
    assert!(matches!(store.ping().await, Err(StoreError::Query(_))));
}

#[tokio::test]
async fn an_unreachable_redis_fails_ping_within_the_timeout() {
    let port = free_port();
    let store = RedisStore::open(&StoreConfig::Redis {
        url: Secret::new(format!("redis://127.0.0.1:{port}")),
        password_file: None,
        ca_file: None,
        prefix: "t:".into(),
        timeout: Duration::from_millis(300),
        keepalive: Duration::from_secs(5),
        sentinels: Vec::new(),
        cluster: false,
    })
    .unwrap();
    let started = Instant::now();
    assert!(store.ping().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(store.lookup_token(&[0; 32]).await.is_err());
}

#[test]
fn redis_configs_are_validated_without_connecting() {
    use figment::providers::Format;
    let parse = |yaml: &str| -> Result<StoreConfig, String> {
        let config: StoreConfig = figment::Figment::from(figment::providers::Yaml::string(yaml))
            .extract()
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    };
    let config = parse("type: redis\nurl: rediss://u:pw@redis.invalid:6380/2\n").unwrap();
    let StoreConfig::Redis {
        prefix,
        timeout,
        keepalive,
        ..
    } = &config
    else {
        panic!("{config:?}")
    };
    assert_eq!(
        (prefix.as_str(), *timeout, *keepalive),
        ("authgate:", Duration::from_secs(2), Duration::from_secs(5))
    );
    assert!(!format!("{config:?}").contains("pw"), "the URL is redacted");
    let err = parse("type: redis\nurl: http://x\n").unwrap_err();
    assert!(err.contains("store.url"), "{err}");
    let err = parse("type: redis\nurl: redis://x\ntimeout: 0s\n").unwrap_err();
    assert!(err.contains("store.timeout"), "{err}");
    let err = parse("type: redis\nurl: redis://x\nsentinels: [\"a b:1\"]\n").unwrap_err();
    assert!(err.contains("store.sentinels"), "{err}");
    let err = parse("type: redis\nurl: redis://x\nkeepalive: 0s\n").unwrap_err();
    assert!(err.contains("store.keepalive"), "{err}");
    let err = parse("type: redis\nurl: redis://x\nca_file: ca.pem\n").unwrap_err();
    assert!(err.contains("store.ca_file"), "{err}");
    let err = parse("type: redis\nurl: redis://x\nport: 1\n").unwrap_err();
    assert!(err.contains("port"), "{err}");
}

#[tokio::test]
async fn the_store_reconnects_to_a_restarted_redis() {
    let server = RedisServer::start(&[]);
    let port = server.port;
    let store = server.store();
    store.insert_user(&user_named("ann")).await.unwrap();
    drop(server);
    assert!(store.ping().await.is_err(), "Redis is down");
    let _server = RedisServer::start_on(port, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new, empty server (no persistence): answers come from it.
    assert!(store.get_user("ann").await.unwrap().is_none());
    store.insert_user(&user_named("ann")).await.unwrap();
}

fn user_named(name: &str) -> UserRecord {
    UserRecord {
        username: name.into(),
        password_hash: "$argon2id$x".into(),
        email: None,
        roles: Default::default(),
        attributes: Default::default(),
        created_at: 1,
    }
}

#[tokio::test]
async fn rediss_is_tls_verified_against_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ca_key = path("ca.key");
    let csr = path("leaf.csr");
    let ext = path("leaf.ext");
    openssl(
        &[
            &["req", "-x509", "-days", "1", "-subj", "/CN=test CA"][..],
            &ec,
            &["-keyout", &ca_key, "-out", &ca],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=localhost"][..],
            &ec,
            &["-keyout", &key, "-out", &csr],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    let tls_port = free_port();
    let (cert_s, key_s) = (cert.as_str(), key.as_str());
    let port = tls_port.to_string();
    let _server = RedisServer::start_on(
        free_port(),
        &[
            "--tls-port",
            &port,
            "--tls-cert-file",
            cert_s,
            "--tls-key-file",
            key_s,
        ]
        .into_iter()
        .chain(["--tls-auth-clients", "no"])
        .collect::<Vec<_>>(),
    );
    let config = |ca_file: Option<std::path::PathBuf>| StoreConfig::Redis {
        url: Secret::new(format!("rediss://localhost:{tls_port}")),
        password_file: None,
        ca_file,
        prefix: "t:".into(),
        timeout: Duration::from_secs(2),
        keepalive: Duration::from_secs(5),
        sentinels: Vec::new(),
        cluster: false,
    };
    let store = RedisStore::open(&config(Some(ca.into()))).unwrap();
    store.ping().await.unwrap();
    store.insert_user(&user_named("ann")).await.unwrap();
    assert!(store.get_user("ann").await.unwrap().is_some());
    // Without the CA file, the system's roots do not know this certificate.
    let untrusted = RedisStore::open(&config(None)).unwrap();
    assert!(untrusted.ping().await.is_err());
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed (scripts/test.sh installs it)");
    assert!(status.success(), "openssl {args:?}");
}

#[tokio::test]
async fn an_acl_user_and_password_in_the_url_and_a_database_number() {
    let server = RedisServer::start(&[
        "--user", "default", "off", "--user", "gate", "on", ">pw", "~*", "&*", "+@all",
    ]);
    let config = |url: String| StoreConfig::Redis {
        url: Secret::new(url),
        password_file: None,
        ca_file: None,
        prefix: "t:".into(),
        timeout: Duration::from_secs(2),
        keepalive: Duration::from_secs(5),
        sentinels: Vec::new(),
        cluster: false,
    };
    let port = server.port;
    let store = RedisStore::open(&config(format!("redis://gate:pw@127.0.0.1:{port}/5"))).unwrap();
    store.insert_user(&user_named("ann")).await.unwrap();
    let other_db =
        RedisStore::open(&config(format!("redis://gate:pw@127.0.0.1:{port}/6"))).unwrap();
    assert!(other_db.get_user("ann").await.unwrap().is_none());
    let same_db = RedisStore::open(&config(format!("redis://gate:pw@127.0.0.1:{port}/5"))).unwrap();
    assert!(same_db.get_user("ann").await.unwrap().is_some());
    let wrong = RedisStore::open(&config(format!("redis://gate:no@127.0.0.1:{port}/5"))).unwrap();
    let err = wrong.ping().await.unwrap_err().to_string();
    assert!(!err.contains("no@"), "{err}");
}

/// Shared attempt counters: admitted until a counter is full, refused with the time left
/// in its window, taken back by `forgive`, all counters or none.
#[tokio::test]
async fn attempt_counters_are_shared_and_all_or_nothing() {
    let server = RedisServer::start(&[]);
    let (a, b) = (server.store(), server.store());
    let window = Duration::from_secs(60);
    let counters = |names: &[(&str, u32)]| -> Vec<(String, u32)> {
        names.iter().map(|(n, l)| ((*n).to_owned(), *l)).collect()
    };
    let both = counters(&[("u:x", 3), ("ip:y", 2)]);
    assert_eq!(
        a.reserve_attempt(&both, window).await.unwrap(),
        Attempt::Admitted
    );
    assert_eq!(
        b.reserve_attempt(&both, window).await.unwrap(),
        Attempt::Admitted
    );
    // ip:y is full (2 of 2): refused, with about the window left, and u:x not counted.
    let Attempt::Refused(wait) = a.reserve_attempt(&both, window).await.unwrap() else {
        panic!("a full counter must refuse");
    };
    assert!(wait > Duration::from_secs(50) && wait <= window, "{wait:?}");
    let only_user = counters(&[("u:x", 3)]);
    assert_eq!(
        b.reserve_attempt(&only_user, window).await.unwrap(),
        Attempt::Admitted
    );
    assert!(matches!(
        a.reserve_attempt(&only_user, window).await.unwrap(),
        Attempt::Refused(_)
    ));
    // A success taken back frees one place, on every replica.
    b.forgive_attempt(&["u:x".to_owned(), "ip:y".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        a.reserve_attempt(&both, window).await.unwrap(),
        Attempt::Admitted
    );
    // Counters of a short window end by themselves.
    let short = counters(&[("u:z", 1)]);
    let ms = Duration::from_millis(200);
    assert_eq!(
        a.reserve_attempt(&short, ms).await.unwrap(),
        Attempt::Admitted
    );
    assert!(matches!(
        a.reserve_attempt(&short, ms).await.unwrap(),
        Attempt::Refused(_)
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.reserve_attempt(&short, ms).await.unwrap() != Attempt::Admitted {
        assert!(Instant::now() < deadline, "the window did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Forgiving a counter that is gone creates nothing.
    a.forgive_attempt(&["u:never".to_owned()]).await.unwrap();
    let exists: i64 = a
        .call(|mut con| async move {
            ::redis::cmd("EXISTS")
                .arg("t:fail:u:never")
                .query_async(&mut con)
                .await
        })
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

/// Ending a session tells every subscriber (the other replicas) at once: one
/// `SessionEnded` per session, for sign-out and for back-channel logout alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_are_published() {
    let server = RedisServer::start(&[]);
    let store = server.store();
    let mut events = store.events().unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert_eq!(first, Some(StoreEvent::Resubscribed));
    let now = crate::unix_now();
    let a = suite::session(1, "main", "alice", Some("sid-a"), now);
    let b = suite::session(2, "main", "bob", Some("sid-b"), now);
    store.insert_session(&a).await.unwrap();
    store.insert_session(&b).await.unwrap();
    assert!(store.delete_session(&a.hash).await.unwrap());
    let ended = store
        .end_sessions(crate::store::SessionMatch {
            issuer: "main",
            subject: None,
            sid: Some("sid-b"),
        })
        .await
        .unwrap();
    assert_eq!(ended, vec![b.hash]);
    for want in [a.hash, b.hash] {
        let got = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(StoreEvent::SessionEnded(want)));
    }
}
