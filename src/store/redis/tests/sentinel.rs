//! The Redis store behind Redis Sentinel: real redis-servers as master, replica and
//! Sentinel.

use super::*;

/// A Sentinel-watched group: a master, a replica and one Sentinel (quorum 1), each a real
/// redis-server of the test's own on a free port.
struct SentinelGroup {
    master: RedisServer,
    _replica: RedisServer,
    sentinel: Child,
    sentinel_port: u16,
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    fn start() -> Self {
        let master = RedisServer::start(&[]);
        let replicaof = format!("127.0.0.1 {}", master.port);
        let replica = RedisServer::start(&["--replicaof", &replicaof]);
        let dir = tempfile::tempdir().unwrap();
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 500\n\
                 sentinel failover-timeout mymaster 2000\n",
                dir.path().display(),
                master.port
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let group = Self {
            master,
            _replica: replica,
            sentinel,
            sentinel_port,
            _dir: dir,
        };
        // The Sentinel knows the master and its replica.
        let deadline = Instant::now() + Duration::from_secs(20);
        while group.sentinel_info().find("slaves=1").is_none() {
            assert!(
                Instant::now() < deadline,
                "the sentinel did not see the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        group
    }

    /// The Sentinel's `INFO sentinel` text (empty while it does not answer).
    fn sentinel_info(&self) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.sentinel_port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"INFO sentinel\r\n").is_err() {
            return String::new();
        }
        let mut answer = [0u8; 4096];
        let n = s.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    fn store(&self) -> RedisStore {
        RedisStore::open(&StoreConfig::Redis {
            url: Secret::new("redis://mymaster/3"),
            password_file: None,
            ca_file: None,
            prefix: "t:".into(),
            timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(1),
            sentinels: vec![format!("127.0.0.1:{}", self.sentinel_port)],
            cluster: false,
        })
        .unwrap()
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// Through Sentinel: the store finds the master by name, and after the master dies and the
/// Sentinel promotes the replica, reads and writes go on against the new master, with
/// what was written before the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed() {
    let mut group = SentinelGroup::start();
    let store = group.store();
    store.insert_user(&user_named("before")).await.unwrap();
    // Written to the replica too before the master goes: WAIT for 1 replica (0.9 s at a
    // time, while the replica may still be in its first sync).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replicated: i64 = store
            .call(|mut con| async move {
                ::redis::cmd("WAIT")
                    .arg(1)
                    .arg(900)
                    .query_async(&mut con)
                    .await
            })
            .await
            .unwrap();
        if replicated == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not catch up");
    }
    let _ = group.master.child.kill();
    let _ = group.master.child.wait();
    let died = Instant::now();
    loop {
        match store.insert_user(&user_named("after")).await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    died.elapsed() < Duration::from_secs(30),
                    "no failover followed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    println!("writes resumed {:?} after the master died", died.elapsed());
    assert!(store.get_user("before").await.unwrap().is_some());
    assert!(store.get_user("after").await.unwrap().is_some());
}

#[test]
fn sentinel_addresses() {
    assert_eq!(
        sentinel_addr("10.0.0.5:26380").unwrap(),
        ConnectionAddr::Tcp("10.0.0.5".into(), 26380)
    );
    assert_eq!(
        sentinel_addr("sentinel-0.redis").unwrap(),
        ConnectionAddr::Tcp("sentinel-0.redis".into(), 26379)
    );
    assert_eq!(
        sentinel_addr("[::1]:26379").unwrap(),
        ConnectionAddr::Tcp("::1".into(), 26379)
    );
    for bad in ["", ":26379", "host:", "host:0", "host:x", "a b:1", "::1:2"] {
        assert!(sentinel_addr(bad).is_err(), "{bad:?}");
    }
}
