//! `store`: the configuration of where state lives.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::setting::ConfigError;

/// `store`: where state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// One SQLite file (WAL mode); nothing to install.
    Embedded {
        /// Path of the database file; its directory is created when missing.
        #[serde(default = "default_store_path")]
        path: PathBuf,
    },
    /// A Redis server shared by every replica.
    Redis {
        /// `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS. A secret
        /// when it holds a password.
        url: Secret,
        /// A file holding the password (instead of one in `url`).
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// PEM file of the CA certificates to trust for `rediss://` instead of the system's.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Prefix of every key authgate writes.
        #[serde(default = "default_redis_prefix")]
        prefix: String,
        /// Limit of every Redis call (connecting included).
        #[serde(default = "default_redis_timeout", with = "humantime_serde")]
        timeout: Duration,
        /// How often the event subscription's connection is checked with a PING (answered
        /// within `timeout`): a connection cut without a word (a dropped NAT entry, a
        /// half-open TCP connection) is noticed within `keepalive` + `timeout`, then the
        /// replica subscribes again and clears its decision cache.
        #[serde(default = "default_redis_keepalive", with = "humantime_serde")]
        keepalive: Duration,
        /// Redis Sentinel nodes (`host:port`): the URL's host then names the master they
        /// watch, and authgate follows a failover to the new master.
        #[serde(default)]
        sentinels: Vec<String>,
        /// A Redis Cluster: `url` names one of its nodes, and `prefix` must hold a hash tag
        /// (`{authgate}:`) so that all keys lie in one slot.
        #[serde(default)]
        cluster: bool,
    },
}

fn default_store_path() -> PathBuf {
    PathBuf::from("authgate.db")
}

fn default_redis_prefix() -> String {
    "authgate:".into()
}

fn default_redis_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_redis_keepalive() -> Duration {
    Duration::from_secs(5)
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Embedded {
            path: default_store_path(),
        }
    }
}

impl StoreConfig {
    /// A Redis store at `url` with every other setting as configured in `self` when it is a
    /// Redis one, else the defaults.
    pub fn redis_at(&self, url: Secret) -> Self {
        match self.clone() {
            Self::Redis {
                password_file,
                ca_file,
                prefix,
                timeout,
                keepalive,
                sentinels,
                cluster,
                ..
            } => Self::Redis {
                url,
                password_file,
                ca_file,
                prefix,
                timeout,
                keepalive,
                sentinels,
                cluster,
            },
            Self::Embedded { .. } => Self::Redis {
                url,
                password_file: None,
                ca_file: None,
                prefix: default_redis_prefix(),
                timeout: default_redis_timeout(),
                keepalive: default_redis_keepalive(),
                sentinels: Vec::new(),
                cluster: false,
            },
        }
    }

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Embedded { path } => {
                if path.as_os_str().is_empty() {
                    return Err(ConfigError::invalid("store.path", "must not be empty"));
                }
            }
            Self::Redis {
                url,
                password_file,
                ca_file,
                timeout,
                keepalive,
                sentinels,
                cluster,
                prefix,
                ..
            } => {
                if *cluster && !sentinels.is_empty() {
                    return Err(ConfigError::invalid(
                        "store.cluster",
                        "a Redis Cluster has no sentinels: give one or the other",
                    ));
                }
                if *cluster && !has_hash_tag(prefix) {
                    return Err(ConfigError::invalid(
                        "store.prefix",
                        "with cluster: true, must hold a hash tag, e.g. \"{authgate}:\", so that \
                         every key lies in one slot",
                    ));
                }
                for node in sentinels {
                    super::redis::sentinel_addr(node)
                        .map_err(|e| ConfigError::invalid("store.sentinels", e.to_string()))?;
                }
                // Parsed only: checking a configuration never connects.
                super::redis::parse_url(url.expose())
                    .map_err(|reason| ConfigError::invalid("store.url", reason))?;
                for (key, file) in [
                    ("store.password_file", password_file),
                    ("store.ca_file", ca_file),
                ] {
                    if file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                        return Err(ConfigError::invalid(key, "must not be empty"));
                    }
                }
                if ca_file.is_some() && !url.expose().starts_with("rediss://") {
                    return Err(ConfigError::invalid(
                        "store.ca_file",
                        "needs a rediss:// url (TLS)",
                    ));
                }
                if timeout.is_zero() {
                    return Err(ConfigError::invalid("store.timeout", "must be above zero"));
                }
                if keepalive.is_zero() {
                    return Err(ConfigError::invalid(
                        "store.keepalive",
                        "must be above zero",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether Redis Cluster hashes keys starting with `prefix` by a tag in it (the first
/// `{...}` with something inside): then they all lie in one slot.
fn has_hash_tag(prefix: &str) -> bool {
    prefix
        .split_once('{')
        .and_then(|(_, rest)| rest.find('}'))
        .is_some_and(|end| end > 0)
}
