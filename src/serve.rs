//! Running authgate: build the app from the configuration, bind both listeners, spawn the
//! background work (key reloads, last-use flushes), answer until SIGTERM or SIGINT, then
//! drain in-flight requests within `server.shutdown_timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::mint::KEY_RELOAD_INTERVAL;
use crate::server::{App, BuildError};
use crate::telemetry::AccessLog;

/// How often token last-use times are written to the store.
const LAST_USED_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Why authgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The app could not be built (store, keys, providers).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The config key.
        key: &'static str,
        /// Why.
        reason: std::io::Error,
    },
}

/// Binds a listener, naming the config key when it fails.
async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|reason| StartError::Bind { addr, key, reason })
}

/// Runs authgate until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn serve(config: Config, access: AccessLog) -> Result<(), StartError> {
    let app = App::build(&config.server_settings(), access).await?;
    let data = bind(config.server.listen, "server.listen").await?;
    let admin = bind(config.admin.listen, "admin.listen").await?;
    for (name, l) in [("data", &data), ("admin", &admin)] {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(listener = name, %addr, "listening");
        }
    }
    let background = spawn_background(app.clone());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size((config.server.max_header_bytes * 4).max(16 * 1024));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, admin_side) = tokio::select! {
            accepted = data.accept() => match accepted {
                Ok((s, p)) => (s, p, false),
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            accepted = admin.accept() => match accepted {
                Ok((s, p)) => (s, p, true),
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move {
                let response = if admin_side {
                    crate::admin::handle(&app.admin_view(), &req).await
                } else {
                    app.clone().handle(req, peer).await
                };
                Ok::<_, Infallible>(response)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    drop(data);
    drop(admin);
    if tokio::time::timeout(config.server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining connections");
    }
    background.abort();
    app.cache.flush_last_used(app.store.as_ref()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Key reloads (rotations by the CLI or other replicas) and token last-use flushes.
fn spawn_background(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut keys = tokio::time::interval(KEY_RELOAD_INTERVAL);
        let mut uses = tokio::time::interval(LAST_USED_FLUSH_INTERVAL);
        keys.tick().await;
        uses.tick().await;
        loop {
            tokio::select! {
                _ = keys.tick() => {
                    if let Err(e) = app.minter.reload(app.store.as_ref()).await {
                        app.metrics.store_error();
                        tracing::warn!(error = %e, "could not reload signing keys; keeping the current ones");
                    }
                }
                _ = uses.tick() => app.cache.flush_last_used(app.store.as_ref()).await,
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
