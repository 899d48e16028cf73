//! Where the Redis server is: one address, the master that Redis Sentinel names, or a
//! Redis Cluster.
//!
//! With `sentinels`, the URL's host is the name of the master Sentinel watches (`redis://
//! :password@mymaster/0`); its user, password, database and TLS apply to the master. The
//! master's address is asked of the Sentinels whenever a connection is made, so after a
//! failover the next connection goes to the new master; the store makes one whenever a
//! call found its connection broken, timed out or was refused by a demoted master
//! (`READONLY`).
//!
//! With `cluster: true`, the URL names one node of the cluster (the client learns the others
//! from it), and the prefix must hold a hash tag (`{authgate}:`) so that every key authgate
//! writes lies in one slot: the store's Lua scripts read and write several keys, which
//! Cluster allows only within one slot. Events are subscribed to on the URL's node (plain
//! pub/sub messages reach every node of a cluster).

use std::path::Path;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, ConnectionInfo, RedisResult, TlsCertificates, TlsMode};

use crate::store::StoreError;

/// How to reach the Redis server.
pub(super) enum Target {
    /// Always this server.
    Fixed(Client),
    /// The current master of a Sentinel-watched group.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster, and its node in the URL (for the event subscription).
    Cluster {
        /// The cluster (boxed: the largest variant by far, made once).
        cluster: Box<ClusterClient>,
        /// The URL's node.
        seed: Client,
    },
}

impl Target {
    /// For the server at `info`, or (with `sentinels`) the master `info`'s host names.
    pub(super) fn new(
        info: ConnectionInfo,
        ca_file: Option<&Path>,
        sentinels: &[String],
        cluster: bool,
        timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let open = |e: redis::RedisError| StoreError::RedisOpen(e.to_string());
        let certificates = ca_file
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    StoreError::RedisOpen(format!("cannot read '{}': {e}", path.display()))
                })
            })
            .transpose()?
            .map(|pem| TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            });
        if sentinels.is_empty() {
            let client = match certificates.clone() {
                None => Client::open(info.clone()),
                Some(certificates) => Client::build_with_tls(info.clone(), certificates),
            }
            .map_err(open)?;
            if !cluster {
                return Ok(Self::Fixed(client));
            }
            let mut builder = ClusterClientBuilder::new([info])
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            let cluster = builder.build().map_err(open)?;
            return Ok(Self::Cluster {
                cluster: Box::new(cluster),
                seed: client,
            });
        }
        let (master, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, _) => (host.clone(), false),
            ConnectionAddr::TcpTls { host, .. } => (host.clone(), true),
            other => {
                return Err(StoreError::RedisOpen(format!(
                    "with sentinels, the url's host names the master, not {other}"
                )));
            }
        };
        let nodes = sentinels
            .iter()
            .map(|node| sentinel_addr(node))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = info.redis_settings();
        let mut builder = SentinelClientBuilder::new(nodes, master, SentinelServerType::Master)
            .map_err(open)?
            .set_client_to_redis_db(settings.db());
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if tls {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        }
        if let Some(certificates) = certificates {
            builder = builder.set_client_to_redis_certificates(certificates);
        }
        let client = builder.build().map_err(open)?;
        Ok(Self::Sentinel(tokio::sync::Mutex::new(client)))
    }

    /// A client for the server to talk to now (asking the Sentinels which it is).
    pub(super) async fn client(&self) -> RedisResult<Client> {
        match self {
            Self::Fixed(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
            Self::Cluster { seed, .. } => Ok(seed.clone()),
        }
    }

    /// The cluster, when it is one.
    pub(super) fn cluster(&self) -> Option<&ClusterClient> {
        match self {
            Self::Cluster { cluster, .. } => Some(cluster),
            _ => None,
        }
    }
}

/// `host:port` of a Sentinel (port 26379 when absent).
pub(in crate::store) fn sentinel_addr(node: &str) -> Result<ConnectionAddr, StoreError> {
    let bad = || {
        StoreError::RedisOpen(format!(
            "sentinel '{node}' is not host:port (e.g. 10.0.0.5:26379)"
        ))
    };
    let (host, port) = match node.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.starts_with('[') => {
            (host, port.parse::<u16>().map_err(|_| bad())?)
        }
        _ if !node.contains(':') => (node, 26379),
        _ => return Err(bad()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) || port == 0 {
        return Err(bad());
    }
    Ok(ConnectionAddr::Tcp(host.to_owned(), port))
}
