//! authgate: an authentication gateway beside a reverse proxy.
//!
//! The request path, module by module (see DESIGN.md): [`forward`] reads the original
//! request from the proxy's headers, [`credential`] extracts the credential, [`cache`]
//! remembers answers, [`providers`] decide who the credential belongs to, [`policy`] decides
//! whether that identity may pass, [`mint`] signs the JWT the upstream receives, and
//! [`server`] turns all of it into an HTTP answer; [`serve`] runs the listeners.
//!
//! # Layers
//!
//! A module uses only modules below it in this list (top to bottom); `tests/layers.rs`
//! fails the build's tests when one imports upward. Each module owns its configuration type;
//! [`config`] only aggregates them.
//!
//! <!-- layers -->
//! - `main`: the binary, calls `cli`
//! - `cli`: command line: serve, check-config, tokens, users, keys, policy check
//! - `serve`: listeners, background work, signals, drain
//! - `config`: the aggregate configuration, loading, checks across sections
//! - `server`: the data plane: routes, one decision, the one error-to-answer map
//! - `portal`: the self-service token portal (`/portal`) and token API (`/api/tokens`)
//! - `admin`: `/metrics`, `/livez`, `/readyz`
//! - `astakos_api`: Astakos-compatible endpoints: token validation, user catalogs
//! - `login`: browser sign-in: the OIDC code flow, session cookies, sign-out, back-channel logout
//! - `cache`: the decision cache, interned identities, reuse budget, last uses
//! - `augment`: roles and attributes added after any provider (static rules, LDAP)
//! - `providers`: who a credential belongs to (api_token, basic, jwt, ...)
//! - `mint`: signing keys and minted JWTs
//! - `policy`: route rules and the decision
//! - `store`: the `Store` trait, the embedded SQLite store and the Redis store
//! - `telemetry`: logging and the access log
//! - `metrics`: Prometheus counters
//! - `credential`: the credential of a request
//! - `forward`: the original request from the proxy's headers
//! - `identity`: who a caller is
//! - `reply`: HTTP answer shapes
//! - `setting`: `ConfigError`, secrets from value or file
//! - `secret`: secret values, hashing, randomness
//! <!-- /layers -->
#![forbid(unsafe_code)]

pub mod admin;
pub mod astakos_api;
pub mod augment;
pub mod cache;
pub mod cli;
pub mod config;
pub mod credential;
pub mod forward;
pub mod identity;
pub mod login;
pub mod metrics;
pub mod mint;
pub mod policy;
pub mod portal;
pub mod providers;
pub mod reply;
pub mod secret;
pub mod serve;
pub mod server;
pub mod setting;
pub mod store;
pub mod telemetry;

/// Seconds since the Unix epoch: the unit of every timestamp authgate stores or signs.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
