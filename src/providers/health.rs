//! How a provider's service has been answering: each provider that calls out records the
//! outcome of its calls in a [`Health`], and `/readyz` answers from it. A call that failed
//! (could not ask: [`AuthError::Unavailable`]) makes the provider unhealthy until a call or
//! a probe succeeds; otherwise, and once a failure is older than [`FAILURE_HOLD`], a cheap
//! probe of the service answers (so that a gateway taken out of rotation, which gets no
//! traffic, still notices that its service is back).

use std::future::Future;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use super::{AuthError, Unhealthy};

/// How long a failed call stands for the provider's health without a probe: `/readyz` is
/// polled every few seconds, and a probe may pass while real calls fail (a POST-only
/// endpoint answering a GET, a client secret the probe does not send).
pub const FAILURE_HOLD: Duration = Duration::from_secs(30);

/// The recent outcomes of one provider's outbound calls.
#[derive(Default)]
pub struct Health {
    state: Mutex<State>,
    /// `authgate_provider_up` of this provider, once the app hands it over.
    gauge: OnceLock<Gauge>,
}

#[derive(Default)]
struct State {
    last_success: Option<Instant>,
    /// When the last failure happened and why.
    last_failure: Option<(Instant, String)>,
    consecutive_failures: u32,
}

impl Health {
    /// Keeps `gauge` at 1 while the provider is healthy, 0 while it fails.
    pub fn report_to(&self, gauge: Gauge) {
        let up = self.lock().failing().is_none();
        gauge.set(i64::from(up));
        let _ = self.gauge.set(gauge);
    }

    /// Records a call's outcome: only "could not ask" is a failure; any answer (a valid or
    /// an invalid credential) shows that the service works.
    pub fn record<T>(&self, outcome: &Result<T, AuthError>) {
        match outcome {
            Err(AuthError::Unavailable(why)) => self.failure(why),
            _ => self.success(),
        }
    }

    /// Records a call or probe that the service answered.
    pub(super) fn success(&self) {
        let mut state = self.lock();
        state.last_success = Some(Instant::now());
        state.consecutive_failures = 0;
        drop(state);
        self.set_gauge(true);
    }

    /// Records a call or probe that failed, and why.
    pub(super) fn failure(&self, why: &str) {
        let mut state = self.lock();
        state.last_failure = Some((Instant::now(), why.to_owned()));
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        drop(state);
        self.set_gauge(false);
    }

    /// The provider's health: the last failure while it is recent and no success came
    /// after it; otherwise what `probe` finds now (recorded too).
    pub async fn check(
        &self,
        probe: impl Future<Output = Result<(), Unhealthy>>,
    ) -> Result<(), Unhealthy> {
        let held = self
            .lock()
            .failing()
            .filter(|(at, _)| at.elapsed() < FAILURE_HOLD)
            .map(|(_, why)| why);
        if let Some(why) = held {
            return Err(Unhealthy(why));
        }
        let found = probe.await;
        match &found {
            Ok(()) => self.success(),
            Err(e) => self.failure(&e.0),
        }
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_gauge(&self, up: bool) {
        if let Some(g) = self.gauge.get() {
            g.set(i64::from(up));
        }
    }
}

impl State {
    /// When the provider started failing and the reason to report, while the last outcome
    /// is a failure.
    fn failing(&self) -> Option<(Instant, String)> {
        let (at, why) = self.last_failure.as_ref()?;
        if self.last_success.is_some_and(|s| s > *at) {
            return None;
        }
        let reason = match self.consecutive_failures {
            0 | 1 => why.clone(),
            n => format!("{why} ({n} failures in a row)"),
        };
        Some((*at, reason))
    }
}

/// Whether the service behind `request` answers at all (any status below 500); `what`
/// names it in the reason.
pub async fn probe(request: reqwest::RequestBuilder, what: &str) -> Result<(), Unhealthy> {
    match request.send().await {
        Ok(r) if r.status().is_server_error() => {
            Err(Unhealthy(format!("{what} answered {}", r.status())))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(Unhealthy(format!("{what} unreachable: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_stand_until_a_success() {
        let health = Health::default();
        let gauge = Gauge::default();
        health.report_to(gauge.clone());
        assert_eq!(gauge.get(), 1);
        // No call yet: the probe answers.
        let failing_probe = async { Err(Unhealthy("probe failed".into())) };
        assert_eq!(
            health.check(failing_probe).await,
            Err(Unhealthy("probe failed".into()))
        );
        assert_eq!(gauge.get(), 0);
        health.record::<()>(&Ok(()));
        assert_eq!(gauge.get(), 1);
        assert_eq!(health.check(async { Ok(()) }).await, Ok(()));
        // A failed call stands while it is recent, whatever a probe would say.
        health.record::<()>(&Err(AuthError::Unavailable("answered 500".into())));
        health.record::<()>(&Err(AuthError::Unavailable("answered 502".into())));
        assert_eq!(gauge.get(), 0);
        assert_eq!(
            health.check(async { Ok(()) }).await,
            Err(Unhealthy("answered 502 (2 failures in a row)".into()))
        );
        // An invalid credential is an answer: the service works.
        health.record::<()>(&Err(AuthError::Invalid("token is not active")));
        assert_eq!(gauge.get(), 1);
        assert_eq!(health.check(async { Ok(()) }).await, Ok(()));
    }
}
