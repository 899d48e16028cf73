//! An issuer's OpenID discovery document (`<issuer>/.well-known/openid-configuration`),
//! fetched on first use and kept. One fetch at a time, shared by every request that needs
//! the document meanwhile (each waits at most `timeout`, so that a hanging IdP makes
//! concurrent first requests fail together, not one after another); after a failed fetch,
//! requests get its error until `retry_after` has passed, then one of them fetches again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::AuthError;
use super::oidc::get_json;

/// Least time between a failed discovery fetch and the next, for the providers without a
/// `refetch_interval` of their own.
pub(super) const DISCOVERY_RETRY: Duration = Duration::from_secs(10);

/// An in-flight fetch's outcome, once there is one.
type Outcome = Option<Result<Arc<Value>, AuthError>>;

/// See the module documentation.
pub(super) struct Discovery {
    issuer: String,
    client: reqwest::Client,
    timeout: Duration,
    retry_after: Duration,
    state: Arc<Mutex<Fetch>>,
}

/// Where the document stands.
enum Fetch {
    /// Not fetched yet.
    Never,
    /// A fetch runs; its outcome arrives on the channel.
    Running(watch::Receiver<Outcome>),
    /// Fetched: kept for good.
    Got(Arc<Value>),
    /// The last fetch failed at `at`.
    Failed { at: Instant, error: AuthError },
}

impl Discovery {
    /// `timeout` bounds one fetch and each request's wait; `retry_after` is the least time
    /// between a failed fetch and the next.
    pub(super) fn new(
        issuer: &str,
        client: reqwest::Client,
        timeout: Duration,
        retry_after: Duration,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client,
            timeout,
            retry_after,
            state: Arc::new(Mutex::new(Fetch::Never)),
        }
    }

    /// The discovery document's URL.
    pub(super) fn url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }

    /// `configured`, or the endpoint `name` (e.g. `jwks_uri`) of the discovery document.
    pub(super) async fn endpoint(
        &self,
        name: &str,
        configured: Option<&str>,
    ) -> Result<String, AuthError> {
        if let Some(url) = configured {
            return Ok(url.to_owned());
        }
        self.document().await?[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| AuthError::Unavailable(format!("discovery has no {name}")))
    }

    /// The document: kept, being fetched (joined), or fetched now.
    async fn document(&self) -> Result<Arc<Value>, AuthError> {
        let mut outcome = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &*state {
                Fetch::Got(doc) => return Ok(doc.clone()),
                Fetch::Failed { at, error } if at.elapsed() < self.retry_after => {
                    return Err(error.clone());
                }
                // A fetch whose task is gone (the runtime shutting down) is started anew.
                Fetch::Running(rx) if rx.has_changed().is_ok() => rx.clone(),
                _ => {
                    let rx = self.start();
                    *state = Fetch::Running(rx.clone());
                    rx
                }
            }
        };
        let waited = tokio::time::timeout(self.timeout, outcome.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(done)) => match &*done {
                Some(result) => result.clone(),
                None => Err(AuthError::Unavailable("discovery fetch lost".into())),
            },
            Ok(Err(_)) => Err(AuthError::Unavailable(
                "discovery fetch ended without an answer".into(),
            )),
            Err(_) => Err(AuthError::Unavailable(format!(
                "identity provider unreachable: no discovery document from {} within {} ms",
                self.url(),
                self.timeout.as_millis()
            ))),
        }
    }

    /// Spawns one fetch: it runs to its end even when every waiter has gone, so that its
    /// outcome is kept for the next ones.
    fn start(&self) -> watch::Receiver<Outcome> {
        let (tx, rx) = watch::channel(None);
        let (client, url, issuer) = (self.client.clone(), self.url(), self.issuer.clone());
        let (timeout, state) = (self.timeout, self.state.clone());
        tokio::spawn(async move {
            let result = fetch(&client, &url, &issuer, timeout).await;
            if let Err(e) = &result {
                tracing::warn!(%issuer, error = %e, "OpenID discovery failed");
            }
            *state.lock().unwrap_or_else(PoisonError::into_inner) = match &result {
                Ok(doc) => Fetch::Got(doc.clone()),
                Err(error) => Fetch::Failed {
                    at: Instant::now(),
                    error: error.clone(),
                },
            };
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// Whether the next request fetches anew after a failure (for tests).
    #[cfg(test)]
    pub(super) fn retry_due(&self) -> bool {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            Fetch::Failed { at, .. } => at.elapsed() >= self.retry_after,
            _ => false,
        }
    }
}

/// One fetch of the document at `url`, which must name `issuer`.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    issuer: &str,
    timeout: Duration,
) -> Result<Arc<Value>, AuthError> {
    let (doc, _) = get_json(client, url, timeout).await?;
    if doc["issuer"].as_str() != Some(issuer) {
        return Err(AuthError::Unavailable(format!(
            "discovery at {url} names another issuer"
        )));
    }
    Ok(Arc::new(doc))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::providers::fake_idp::FakeIdp;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hanging_discovery_is_fetched_once_for_all_waiters() {
        let idp = FakeIdp::start(200, String::new()).await;
        let doc = json!({"issuer": idp.base, "jwks_uri": format!("{}/jwks", idp.base)});
        idp.set_body(doc.to_string());
        idp.hang.store(true, Ordering::SeqCst);
        let timeout = Duration::from_millis(500);
        let d = Arc::new(Discovery::new(
            &idp.base,
            reqwest::Client::new(),
            timeout,
            Duration::from_millis(300),
        ));
        let started = Instant::now();
        let waiters: Vec<_> = (0..12)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move {
                    let r = d.endpoint("jwks_uri", None).await;
                    (r, started.elapsed())
                })
            })
            .collect();
        for w in waiters {
            let (r, took) = w.await.unwrap();
            assert!(matches!(r, Err(AuthError::Unavailable(_))), "{r:?}");
            // Together, not one after another (12 x 500 ms).
            assert!(took < timeout * 2, "{took:?}");
        }
        assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
        // Within retry_after: the failure stands, no new fetch.
        assert!(d.endpoint("jwks_uri", None).await.is_err());
        assert_eq!(idp.hits.load(Ordering::SeqCst), 1);

        // The IdP answers again: once retry_after has passed, one fetch for all.
        idp.hang.store(false, Ordering::SeqCst);
        while !d.retry_due() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waiters: Vec<_> = (0..12)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move { d.endpoint("jwks_uri", None).await })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(format!("{}/jwks", idp.base)));
        }
        assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
        // Kept for good.
        assert!(d.endpoint("jwks_uri", None).await.is_ok());
        assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_discovery_is_retried_once_per_interval() {
        let idp = FakeIdp::start(500, "{}".into()).await;
        let d = Discovery::new(
            &idp.base,
            reqwest::Client::new(),
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
        for _ in 0..5 {
            assert!(matches!(
                d.endpoint("token_endpoint", None).await,
                Err(AuthError::Unavailable(_))
            ));
        }
        assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
        // A configured endpoint needs no discovery.
        assert_eq!(
            d.endpoint("token_endpoint", Some("https://t")).await,
            Ok("https://t".to_owned())
        );
    }
}
