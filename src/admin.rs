//! The admin listener: `/metrics` (Prometheus text), `/livez`, `/readyz` (the store answers
//! and a signing key is loaded).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::server::{App, Body, json_response};

/// How long `/readyz` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers one admin request.
pub async fn handle<B>(app: &App, req: &Request<B>) -> Response<Body> {
    match req.uri().path() {
        "/metrics" => {
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
        "/readyz" => {
            let store = tokio::time::timeout(READY_TIMEOUT, app.store.ping()).await;
            let store_ok = matches!(store, Ok(Ok(())));
            if !store_ok {
                app.metrics.store_error();
            }
            let keys = app.minter.ring().published.len();
            let ready = store_ok && keys > 0;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(
                status,
                json!({"status": if ready { "ready" } else { "not ready" },
                       "store": if store_ok { "ok" } else { "unreachable" },
                       "signing_keys": keys}),
            )
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
    }
}
