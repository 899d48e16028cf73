//! The Redis store on a real Redis Cluster: three redis-servers in cluster mode, joined by
//! `redis-cli --cluster create` (Debian's redis-tools, installed with redis-server).

use super::*;

/// A three-master Redis Cluster of the test's own.
struct Cluster {
    nodes: Vec<RedisServer>,
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on(cluster_port(), &["--cluster-enabled", "yes"]))
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (Debian's redis-tools, with redis-server)");
        assert!(out.status.success(), "{out:?}");
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.nodes.iter().all(|n| cluster_ok(n.port)) {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn config(&self, prefix: &str) -> StoreConfig {
        StoreConfig::Redis {
            url: Secret::new(format!("redis://127.0.0.1:{}", self.nodes[1].port)),
            password_file: None,
            ca_file: None,
            prefix: prefix.into(),
            timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(5),
            sentinels: Vec::new(),
            cluster: true,
        }
    }

    /// A store under its own prefix (so its own slot): each suite expects an empty store.
    fn store(&self, prefix: &str) -> RedisStore {
        let config = self.config(prefix);
        config.validate().unwrap();
        RedisStore::open(&config).unwrap()
    }
}

fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}

/// The whole store suite, last uses, attempt counters and events, on a cluster whose slots
/// are spread over three nodes (the keys' slot lives on one of them; the URL names another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_on_a_redis_cluster() {
    let cluster = Cluster::start();
    suite::tokens_users_and_keys_round_trip(&cluster.store("{t1}:")).await;
    suite::subjects_are_users_and_owners_of_live_tokens(&cluster.store("{t2}:")).await;
    suite::users_and_optional_fields_round_trip(&cluster.store("{t3}:")).await;
    suite::last_uses_in_large_batches(&cluster.store("{t4}:")).await;
    let store = cluster.store("{t5}:");
    let counters = vec![("u:x".to_owned(), 1)];
    let window = Duration::from_secs(60);
    assert_eq!(
        store.reserve_attempt(&counters, window).await.unwrap(),
        Attempt::Admitted
    );
    assert!(matches!(
        cluster
            .store("{t5}:")
            .reserve_attempt(&counters, window)
            .await
            .unwrap(),
        Attempt::Refused(_)
    ));
    // Events published by a script on the slot's node reach a subscriber on the URL's.
    let listener = cluster.store("{t5}:");
    let mut events = listener.events().unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(first.unwrap(), Some(StoreEvent::Resubscribed));
    store.insert_user(&user_named("ev")).await.unwrap();
    assert!(store.remove_user("ev", 1).await.unwrap());
    let heard = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(heard.unwrap(), Some(StoreEvent::UserChanged("ev".into())));
}

#[test]
fn a_cluster_needs_a_hash_tag_in_the_prefix() {
    let config = |prefix: &str| StoreConfig::Redis {
        url: Secret::new("redis://127.0.0.1:7000"),
        password_file: None,
        ca_file: None,
        prefix: prefix.into(),
        timeout: Duration::from_secs(2),
        keepalive: Duration::from_secs(5),
        sentinels: Vec::new(),
        cluster: true,
    };
    for good in ["{authgate}:", "app:{ag}:", "{a}"] {
        assert!(config(good).validate().is_ok(), "{good}");
    }
    for bad in ["authgate:", "{}:", "{authgate:", "}x{"] {
        let err = config(bad).validate().unwrap_err().to_string();
        assert!(err.contains("store.prefix"), "{bad}: {err}");
    }
}
