//! authgate: an authentication gateway beside a reverse proxy.
//!
//! The request path, module by module (see DESIGN.md): [`forward`] reads the original
//! request from the proxy's headers, [`credential`] extracts the credential, [`cache`]
//! remembers answers, [`providers`] decide who the credential belongs to, [`policy`] decides
//! whether that identity may pass, [`mint`] signs the JWT the upstream receives, and
//! [`server`] turns all of it into an HTTP answer.
#![forbid(unsafe_code)]

pub mod admin;
pub mod astakos_api;
pub mod cache;
pub mod cli;
pub mod config;
pub mod credential;
pub mod forward;
pub mod identity;
pub mod metrics;
pub mod mint;
pub mod policy;
pub mod providers;
pub mod secret;
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
