//! The admin listener: `/metrics` (Prometheus text), `/livez`, `/readyz` (the store answers
//! from the file at its path, a signing key is loaded, and every provider's service answers:
//! no recent failed call, its probe passes, its discovery done; `authgate_provider_up`
//! follows).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::json;

use crate::augment::Augmenters;
use crate::cache::DecisionCache;
use crate::metrics::Metrics;
use crate::mint::Minter;
use crate::providers::Chain;
use crate::reply::{Body, json_response};
use crate::store::{Store, StoreError};

/// `admin`: the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (`/metrics`, `/livez`, `/readyz`).
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// How long `/readyz` waits for the store and for each provider.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the admin listener reports on: the parts of the running app it reads.
pub struct AdminView<'a> {
    /// Counters and histograms.
    pub metrics: &'a Metrics,
    /// The decision cache (its size).
    pub cache: &'a DecisionCache,
    /// The store (reachable?).
    pub store: &'a dyn Store,
    /// The providers (their services reachable?).
    pub chain: &'a Chain,
    /// The augmenters (their directories reachable?).
    pub augmenters: &'a Augmenters,
    /// The signing keys (loaded?).
    pub minter: &'a Minter,
    /// Shutting down: `/readyz` answers 503 so that load balancers stop sending.
    pub draining: bool,
}

/// Answers one admin request.
pub async fn handle<B>(app: &AdminView<'_>, req: &Request<B>) -> Response<Body> {
    match req.uri().path() {
        "/metrics" => {
            app.metrics
                .cache_size(app.cache.len(), app.cache.reuse_bytes());
            let mut r = Response::new(Full::new(Bytes::from(app.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/livez" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/readyz" if app.draining => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "draining"}),
        ),
        "/readyz" => {
            let (store, mut providers, augmenters) = tokio::join!(
                tokio::time::timeout(READY_TIMEOUT, app.store.ping()),
                app.chain.check(READY_TIMEOUT),
                app.augmenters.check(READY_TIMEOUT)
            );
            providers.extend(augmenters);
            let store_state = match store {
                Ok(Ok(())) => "ok",
                Ok(Err(StoreError::Gone { .. })) => "store file is gone",
                _ => "unreachable",
            };
            let store_ok = store_state == "ok";
            if !store_ok {
                app.metrics.store_error();
            }
            let keys = app.minter.ring().keys().len();
            for (name, r) in &providers {
                app.metrics.provider_up(name).set(i64::from(r.is_ok()));
            }
            let providers_ok = providers.iter().all(|(_, r)| r.is_ok());
            let ready = store_ok && keys > 0 && providers_ok;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let providers: serde_json::Map<String, serde_json::Value> = providers
                .into_iter()
                .map(|(name, r)| (name, json!(r.map_or_else(|e| e.0, |()| "ok".to_owned()))))
                .collect();
            json_response(
                status,
                json!({"status": if ready { "ready" } else { "not ready" },
                       "store": store_state,
                       "signing_keys": keys,
                       "providers": providers}),
            )
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}
