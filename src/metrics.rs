//! Prometheus metrics: decisions by outcome and provider, decision latency, cache hits and
//! misses, cache size, store errors. Served on the admin listener at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `authgate_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow`, `deny`, `unauthenticated`, ...
    pub outcome: &'static str,
    /// The provider that answered, or `none`.
    pub provider: &'static str,
}

/// Labels of `authgate_provider_unavailable_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// The provider's type.
    pub provider: &'static str,
}

/// Labels of `authgate_provider_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderNameLabels {
    /// The provider's name as `/readyz` shows it (type, and issuer or URL).
    pub provider: String,
}

/// Every metric authgate exports.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_entries: Gauge,
    cache_reuse_bytes: Gauge,
    store_errors: Counter,
    provider_unavailable: Family<ProviderLabels, Counter>,
    provider_up: Family<ProviderNameLabels, Gauge>,
    accept_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions by outcome and provider",
            decisions.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.000_025, 2.0, 18));
        registry.register(
            "decision_duration_seconds",
            "Time to answer a decision request",
            latency.clone(),
        );
        let cache_hits = Counter::default();
        registry.register("cache_hits", "Decision cache hits", cache_hits.clone());
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Decision cache misses",
            cache_misses.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Entries in the decision cache (expired ones count until swept, within 5 s)",
            cache_entries.clone(),
        );
        let cache_reuse_bytes = Gauge::default();
        registry.register(
            "cache_reuse_bytes",
            "Bytes of minted JWTs and headers kept for reuse (bounded by cache.reuse_memory_mib)",
            cache_reuse_bytes.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Failed store operations",
            store_errors.clone(),
        );
        let provider_unavailable = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_unavailable",
            "Decisions answered 503 because a provider (or the store behind it) could not answer",
            provider_unavailable.clone(),
        );
        let provider_up = Family::<ProviderNameLabels, Gauge>::default();
        registry.register(
            "provider_up",
            "Whether a provider's service answers (1) or its recent calls fail (0), as /readyz says",
            provider_up.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Connections that could not be accepted (out of files or memory: see the log)",
            accept_errors.clone(),
        );
        Self {
            registry,
            provider_unavailable,
            provider_up,
            accept_errors,
            decisions,
            latency,
            cache_hits,
            cache_misses,
            cache_entries,
            cache_reuse_bytes,
            store_errors,
        }
    }

    /// Counts one decision and its latency.
    pub fn decision(&self, outcome: &'static str, provider: &'static str, seconds: f64) {
        self.decisions
            .get_or_create(&DecisionLabels { outcome, provider })
            .inc();
        self.latency.observe(seconds);
    }

    /// Counts a cache lookup.
    pub fn cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    /// Records the decision cache's size and the bytes its entries keep for reuse (set
    /// when the metrics are read).
    pub fn cache_size(&self, entries: usize, reuse_bytes: usize) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_reuse_bytes
            .set(i64::try_from(reuse_bytes).unwrap_or(i64::MAX));
    }

    /// Counts a decision that failed because `provider` could not answer; for the providers
    /// backed by the store (`api_token`, `basic`) also a store error.
    pub fn provider_unavailable(&self, provider: &'static str) {
        self.provider_unavailable
            .get_or_create(&ProviderLabels { provider })
            .inc();
        if matches!(provider, "api_token" | "basic") {
            self.store_errors.inc();
        }
    }

    /// The `authgate_provider_up` gauge of the provider named `provider` (shared: setting
    /// the returned gauge sets the exported one).
    pub fn provider_up(&self, provider: &str) -> Gauge {
        self.provider_up
            .get_or_create(&ProviderNameLabels {
                provider: provider.to_owned(),
            })
            .clone()
    }

    /// Counts a connection that could not be accepted.
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// Counts a failed store operation.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let m = Metrics::new();
        m.decision("allow", "api_token", 0.001);
        m.cache(true);
        m.store_error();
        m.cache_size(42, 4096);
        m.provider_up("jwt https://idp.example.org").set(1);
        m.provider_up("astakos").set(0);
        let text = m.encode();
        assert!(
            text.contains("authgate_provider_up{provider=\"jwt https://idp.example.org\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("authgate_provider_up{provider=\"astakos\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("authgate_decisions_total{outcome=\"allow\",provider=\"api_token\"} 1"),
            "{text}"
        );
        assert!(text.contains("authgate_cache_hits_total 1"), "{text}");
        assert!(text.contains("authgate_store_errors_total 1"), "{text}");
        assert!(text.contains("authgate_cache_entries 42"), "{text}");
        assert!(text.contains("authgate_cache_reuse_bytes 4096"), "{text}");
        assert!(
            text.contains("authgate_decision_duration_seconds_count 1"),
            "{text}"
        );
    }
}
