//! Running authgate: build the app from the configuration, bind both listeners, spawn the
//! background work (key reloads, last-use flushes), answer until SIGTERM or SIGINT, then
//! drain in-flight requests within `server.shutdown_timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Runs authgate until SIGTERM or SIGINT; then `/readyz` answers 503 for
/// `server.drain_delay` while both listeners keep serving (so that load balancers stop
/// sending first), the listeners close, and in-flight requests finish within
/// `server.shutdown_timeout`. A second signal ends the delay at once. SIGHUP is ignored (a
/// configuration is read only at start).
pub async fn serve(config: Config, access: AccessLog) -> Result<(), StartError> {
    raise_open_file_limit();
    let app = App::build(&config.server_settings(), access).await?;
    let data = bind(config.server.listen, "server.listen").await?;
    let admin = bind(config.admin.listen, "admin.listen").await?;
    for (name, l) in [("data", &data), ("admin", &admin)] {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(listener = name, %addr, "listening");
        }
    }
    let background = spawn_background(app.clone());
    let events = spawn_store_events(app.clone());
    let hangups = tokio::spawn(ignore_hangups());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size((config.server.max_header_bytes * 4).max(16 * 1024));
    let draining = Arc::new(AtomicBool::new(false));
    let mut accept_errors = AcceptErrors::default();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    loop {
        let accepted = tokio::select! {
            accepted = data.accept() => accepted.map(|(s, p)| (s, p, false)),
            accepted = admin.accept() => accepted.map(|(s, p)| (s, p, true)),
            () = &mut stop => {
                if draining.swap(true, Ordering::AcqRel) {
                    tracing::info!("second signal: ending the drain delay");
                    break;
                }
                tracing::info!(
                    delay = ?config.server.drain_delay,
                    "shutting down: /readyz answers 503 during the drain delay"
                );
                drain.as_mut().reset(tokio::time::Instant::now() + config.server.drain_delay);
                stop.set(shutdown_signal());
                continue;
            }
            () = &mut drain => break,
        };
        let (stream, peer, admin_side) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_errors.note(&e, &app.metrics).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let draining = draining.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            let draining = draining.load(Ordering::Acquire);
            async move {
                let response = if admin_side {
                    let mut view = app.admin_view();
                    view.draining = draining;
                    crate::admin::handle(&view, &req).await
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
    tracing::info!("closing the listeners: draining in-flight requests");
    drop(data);
    drop(admin);
    if tokio::time::timeout(config.server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining connections");
    }
    background.abort();
    if let Some(events) = events {
        events.abort();
    }
    hangups.abort();
    app.cache.flush_last_used(app.store.as_ref()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: every connection is a file, and a
/// gateway holds many (proxies keep connections alive). The limit reached is logged.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open file limit");
        }
    }
    match getrlimit(Resource::Nofile).current {
        Some(n) => tracing::info!(open_files = n, "open file limit"),
        None => tracing::info!(open_files = "unlimited", "open file limit"),
    }
}

/// Failed accepts: counted, logged at most once a second, and when the process is out of
/// files or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) followed by a pause that doubles up to
/// one second, so that the accept loop waits for connections to close instead of spinning.
#[derive(Default)]
struct AcceptErrors {
    since_log: u64,
    last_log: Option<std::time::Instant>,
    pause: Duration,
}

impl AcceptErrors {
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const FIRST_PAUSE: Duration = Duration::from_millis(10);

    async fn note(&mut self, error: &std::io::Error, metrics: &crate::metrics::Metrics) {
        use rustix::io::Errno;
        metrics.accept_error();
        self.since_log += 1;
        let now = std::time::Instant::now();
        if self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(error = %error, failures = self.since_log, "accept failed");
            self.since_log = 0;
            self.last_log = Some(now);
        }
        let exhausted = Errno::from_io_error(error).is_some_and(|e| {
            matches!(
                e,
                Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM
            )
        });
        if exhausted {
            self.pause = (self.pause * 2).clamp(Self::FIRST_PAUSE, Self::MAX_PAUSE);
            tokio::time::sleep(self.pause).await;
        } else {
            self.pause = Duration::ZERO;
        }
    }
}

/// SIGHUP would end the process by default; authgate reads its configuration only at start,
/// so a hangup is logged and otherwise ignored.
async fn ignore_hangups() {
    #[cfg(unix)]
    if let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    {
        while hangups.recv().await.is_some() {
            tracing::warn!("SIGHUP ignored: restart authgate to load a new configuration");
        }
    }
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

/// For a store shared between processes: acts on changes made elsewhere as soon as they are
/// heard (revoked tokens and changed users leave the decision cache, a rotation reloads the
/// keys); after a lost subscription, the whole cache goes, since what changed meanwhile was
/// not heard.
fn spawn_store_events(app: Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    use crate::store::StoreEvent;
    let mut events = app.store.events()?;
    Some(tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let removed = match &event {
                StoreEvent::TokenRevoked(id) => app.cache.invalidate_credential_id(id),
                StoreEvent::UserChanged(name) => app.cache.invalidate_subject(name),
                StoreEvent::Resubscribed => app.cache.clear(),
                StoreEvent::SessionEnded(hash) => app.cache.invalidate_key(*hash),
                StoreEvent::KeysChanged => {
                    if let Err(e) = app.minter.reload(app.store.as_ref()).await {
                        app.metrics.store_error();
                        tracing::warn!(error = %e, "could not reload signing keys; keeping the current ones");
                    }
                    0
                }
            };
            tracing::debug!(?event, removed, "store event");
        }
    }))
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
