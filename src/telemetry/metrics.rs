//! Prometheus metrics: every name and help text is declared here once, and call sites use typed
//! methods (`decision`, `reload`, `set_generation`). Labels stay bounded: route names and deny
//! reasons come from the configuration and the code, never from the request (no subject, no
//! token, no path).
//!
//! Key-set and token-cache figures are not pushed by the stages that own them: a collector reads
//! them at scrape time from the `KeyRegistry` and the process-lifetime `CacheCounters`, so a
//! scrape always shows the state of that moment and the hot path pays nothing for them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::authn::api_keys::ApiKeyRegistry;
use crate::authn::{CacheCounters, KeyRegistry};
use crate::decision::Decision;
use crate::revocation::Revocations;

/// `Content-Type` of [`Metrics::encode`]'s output: the Prometheus text format 0.0.4, which every
/// Prometheus version and `promtool check metrics` read.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of `portcullis_check_duration_seconds`, 50 µs to 1 s: a cache hit lands in the
/// first buckets, a signature verification around 100 µs, a key fetch on an unknown `kid` in the
/// last ones.
const CHECK_DURATION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Route label of decisions taken before any route matched.
const NO_ROUTE: &str = "none";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    reason: &'static str,
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    listener: &'static str,
    reason: &'static str,
}

/// The connection metrics of one listener, as handles the accept loop and its connections
/// update without a label lookup.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    /// `portcullis_accept_errors_total{listener}`.
    pub accept_errors: Counter,
    /// `portcullis_connection_limit_waits_total{listener}`.
    pub limit_waits: Counter,
    /// `portcullis_open_connections{listener}`.
    pub open_connections: Gauge,
    /// `portcullis_connection_timeouts_total{listener, reason="header_read"}`.
    pub header_read_timeouts: Counter,
    /// `portcullis_connection_timeouts_total{listener, reason="idle"}`.
    pub idle_timeouts: Counter,
}

/// How a configuration reload ended, for `portcullis_config_reloads_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// The metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    check_duration: Histogram,
    config_reloads: Family<ReloadLabels, Counter>,
    config_generation: Gauge,
    accept_errors: Family<ListenerLabels, Counter>,
    limit_waits: Family<ListenerLabels, Counter>,
    open_connections: Family<ListenerLabels, Gauge>,
    connection_timeouts: Family<TimeoutLabels, Counter>,
    trace_spans_dropped: Counter,
    no_route: Arc<str>,
    scraped: Arc<ScrapeSources>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "portcullis_decisions",
            "Check decisions by outcome, reason and route",
            decisions.clone(),
        );
        let check_duration = Histogram::new(CHECK_DURATION_BUCKETS);
        registry.register(
            "portcullis_check_duration_seconds",
            "Time to decide one check, from translated request to decision",
            check_duration.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "portcullis_config_reloads",
            "Configuration reloads by result; a failed reload keeps the running configuration",
            config_reloads.clone(),
        );
        // Both results exist from the start, so `increase(...{result="failure"}[5m])` works
        // before the first failure.
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            let _ = config_reloads.get_or_create(&ReloadLabels {
                result: result.as_str(),
            });
        }
        let config_generation = Gauge::default();
        registry.register(
            "portcullis_config_generation",
            "Generation of the configuration in use, 1 at start, +1 per successful reload",
            config_generation.clone(),
        );
        registry.register(
            "portcullis_build",
            "Version and git commit of this build",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("PORTCULLIS_GIT_SHA")),
            ]),
        );
        let accept_errors = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "portcullis_accept_errors",
            "Failed accepts by listener (e.g. out of file descriptors); accepting backs off",
            accept_errors.clone(),
        );
        let limit_waits = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "portcullis_connection_limit_waits",
            "Times a listener reached server.connections.max_per_listener and stopped accepting \
             until a connection closed",
            limit_waits.clone(),
        );
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "portcullis_open_connections",
            "Connections open by listener",
            open_connections.clone(),
        );
        let connection_timeouts = Family::<TimeoutLabels, Counter>::default();
        registry.register(
            "portcullis_connection_timeouts",
            "Connections closed by the server for a timeout, by listener and reason \
             (header_read, idle)",
            connection_timeouts.clone(),
        );
        let trace_spans_dropped = Counter::default();
        registry.register(
            "portcullis_trace_spans_dropped",
            "Finished spans never exported: the export queue was full (a slow or dead \
             collector) or the export failed",
            trace_spans_dropped.clone(),
        );
        let scraped = Arc::new(ScrapeSources::default());
        registry.register_collector(Box::new(scraped.clone()));
        Self {
            registry,
            decisions,
            check_duration,
            config_reloads,
            config_generation,
            accept_errors,
            limit_waits,
            open_connections,
            connection_timeouts,
            trace_spans_dropped,
            no_route: Arc::from(NO_ROUTE),
            scraped,
        }
    }

    /// Counts one decision and its duration.
    pub fn decision(&self, decision: &Decision, elapsed: Duration) {
        let route = match decision {
            Decision::Allow(permit) => permit.route.clone(),
            Decision::Deny(denial) => denial
                .route
                .clone()
                .unwrap_or_else(|| self.no_route.clone()),
        };
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: decision.outcome(),
                reason: decision.reason(),
                route,
            })
            .inc();
        self.check_duration.observe(elapsed.as_secs_f64());
    }

    pub fn reload(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&ReloadLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn set_generation(&self, generation: u64) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// The handles of `listener` (`grpc`, `http`, `admin`); its series exist from this call on.
    pub fn listener(&self, listener: &'static str) -> ListenerMetrics {
        let labels = ListenerLabels { listener };
        let timeouts = |reason| {
            self.connection_timeouts
                .get_or_create(&TimeoutLabels { listener, reason })
                .clone()
        };
        ListenerMetrics {
            accept_errors: self.accept_errors.get_or_create(&labels).clone(),
            limit_waits: self.limit_waits.get_or_create(&labels).clone(),
            open_connections: self.open_connections.get_or_create(&labels).clone(),
            header_read_timeouts: timeouts("header_read"),
            idle_timeouts: timeouts("idle"),
        }
    }

    /// The handle of `portcullis_trace_spans_dropped_total`, for the span exporter.
    pub fn trace_spans_dropped(&self) -> Counter {
        self.trace_spans_dropped.clone()
    }

    /// Reads JWKS figures from `registry` at every scrape. Only the first call takes effect.
    pub fn observe_keys(&self, registry: Arc<KeyRegistry>) {
        let _ = self.scraped.keys.set(registry);
    }

    /// Reads the process-lifetime token-cache `counters` (shared by every engine generation,
    /// so they never go down across reloads) at every scrape. Only the first call takes effect.
    pub fn observe_token_cache(&self, counters: Arc<CacheCounters>) {
        let _ = self.scraped.token_cache.set(counters);
    }

    /// Reads the API keys store's per-key counters at every scrape. Only the first call takes
    /// effect.
    pub fn observe_api_keys(&self, registry: Arc<ApiKeyRegistry>) {
        let _ = self.scraped.api_keys.set(registry);
    }

    /// Reads the revocation store at every scrape (entries by source, sync age, entries left
    /// out over the cap). Only the first call takes effect; not called without `revocation:`.
    pub fn observe_revocations(&self, revocations: Arc<Revocations>) {
        let _ = self.scraped.revocations.set(revocations);
    }

    /// The exposition, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// State read at scrape time, attached after construction (the registry and the counters are
/// handed over after the telemetry is built).
#[derive(Debug, Default)]
struct ScrapeSources {
    keys: OnceLock<Arc<KeyRegistry>>,
    token_cache: OnceLock<Arc<CacheCounters>>,
    api_keys: OnceLock<Arc<ApiKeyRegistry>>,
    revocations: OnceLock<Arc<Revocations>>,
}

impl Collector for ScrapeSources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(registry) = self.keys.get() {
            encode_key_status(&mut encoder, registry)?;
        }
        if let Some(counters) = self.token_cache.get() {
            let hits = ConstCounter::new(counters.hits());
            hits.encode(encoder.encode_descriptor(
                "portcullis_token_cache_hits",
                "Checks answered from the verified-token cache",
                None,
                hits.metric_type(),
            )?)?;
            let misses = ConstCounter::new(counters.misses());
            misses.encode(encoder.encode_descriptor(
                "portcullis_token_cache_misses",
                "Checks that had to verify the token",
                None,
                misses.metric_type(),
            )?)?;
        }
        if let Some(status) = self.api_keys.get().and_then(|registry| registry.status()) {
            // Labels from the keys file only (ids, plus `unknown` for attempts that named no
            // key of it): bounded by the file, never by what clients send.
            let mut family = encoder.encode_descriptor(
                "portcullis_api_key_requests",
                "API key checks by key id and outcome (valid, wrong_secret, wrong_environment, \
                 expired, not_yet_valid; malformed, bad_checksum, unknown_id under key_id=unknown)",
                None,
                MetricType::Counter,
            )?;
            for key in &status.per_key {
                for (outcome, count) in &key.counts {
                    let labels = [("key_id", key.id.as_str()), ("outcome", outcome.as_str())];
                    ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        if let Some(revocations) = self.revocations.get() {
            encode_revocations(&mut encoder, revocations)?;
        }
        Ok(())
    }
}

fn encode_revocations(
    encoder: &mut DescriptorEncoder,
    revocations: &Revocations,
) -> Result<(), std::fmt::Error> {
    let statuses = revocations.status();
    let now = crate::revocation::Timestamp::now().0;
    {
        let mut family = encoder.encode_descriptor(
            "portcullis_revocation_entries",
            "Revocation entries in the last good list of each source",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            let entries = i64::try_from(status.entries).unwrap_or(i64::MAX);
            ConstGauge::new(entries)
                .encode(family.encode_family(&[("source", status.source.as_str())])?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "portcullis_revocation_sync_age_seconds",
            "Seconds since each revocation source was last read successfully; absent before \
             the first success",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            if let Some(at) = status.synced_at {
                let age = i64::try_from(now.saturating_sub(at)).unwrap_or(i64::MAX);
                ConstGauge::new(age)
                    .encode(family.encode_family(&[("source", status.source.as_str())])?)?;
            }
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "portcullis_revocation_skipped",
            "Revocation entries or messages refused (malformed, or over the source's ceiling)",
            None,
            MetricType::Counter,
        )?;
        for status in &statuses {
            ConstCounter::new(status.skipped)
                .encode(family.encode_family(&[("source", status.source.as_str())])?)?;
        }
    }
    let dropped =
        ConstGauge::new(i64::try_from(revocations.snapshot().dropped()).unwrap_or(i64::MAX));
    dropped.encode(encoder.encode_descriptor(
        "portcullis_revocation_dropped_entries",
        "Revocations NOT enforced because the sources name more than revocation.max_entries",
        None,
        dropped.metric_type(),
    )?)?;
    Ok(())
}

fn encode_key_status(
    encoder: &mut DescriptorEncoder,
    registry: &KeyRegistry,
) -> Result<(), std::fmt::Error> {
    let statuses = registry.status();
    {
        let mut family = encoder.encode_descriptor(
            "portcullis_jwks_fetches",
            "JWKS and discovery fetches by issuer and result",
            None,
            MetricType::Counter,
        )?;
        for status in &statuses {
            for (result, count) in [
                ("success", status.fetches_ok),
                ("failure", status.fetches_failed),
            ] {
                let labels = [("issuer", status.name.as_str()), ("result", result)];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "portcullis_jwks_keys",
            "Usable verification keys per issuer",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            let labels = [("issuer", status.name.as_str())];
            let keys = i64::try_from(status.keys).unwrap_or(i64::MAX);
            ConstGauge::new(keys).encode(family.encode_family(&labels)?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "portcullis_jwks_key_age_seconds",
            "Age of the key set in use per issuer; grows while the IdP cannot be reached",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            // An issuer that never had keys has no age; `portcullis_jwks_keys` says it is 0.
            if let Some(age) = status.age {
                let labels = [("issuer", status.name.as_str())];
                ConstGauge::new(age.as_secs_f64()).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DenyReason, TokenProblem};

    fn sample_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|line| line.starts_with(prefix))
    }

    #[test]
    fn counts_decisions_by_outcome_reason_and_route() {
        let metrics = Metrics::new();
        let denial = Decision::deny(
            Some(Arc::from("orders")),
            DenyReason::InvalidToken(TokenProblem::Expired),
        );
        metrics.decision(&denial, Duration::from_micros(80));
        metrics.decision(&denial, Duration::from_micros(80));
        metrics.decision(
            &Decision::deny(None, DenyReason::NoRoute { status: 404 }),
            Duration::from_micros(10),
        );
        let text = metrics.encode().expect("encodes");
        assert_eq!(
            sample_line(
                &text,
                r#"portcullis_decisions_total{outcome="deny",reason="expired",route="orders"}"#
            ),
            Some(r#"portcullis_decisions_total{outcome="deny",reason="expired",route="orders"} 2"#)
        );
        assert!(
            text.contains(
                r#"portcullis_decisions_total{outcome="deny",reason="no_route",route="none"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("portcullis_check_duration_seconds_count 3"),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_check_duration_seconds_bucket{le="5e-05"} 1"#),
            "first bucket holds the 10 µs check: {text}"
        );
    }

    #[test]
    fn exposition_declares_each_family_with_the_name_its_samples_use() {
        // Prometheus' text parser (and promtool) ties samples to the `# TYPE` line by name.
        let metrics = Metrics::new();
        metrics.decision(
            &Decision::deny(None, DenyReason::MissingCredential),
            Duration::ZERO,
        );
        metrics.reload(ReloadResult::Failure);
        metrics.set_generation(3);
        let text = metrics.encode().expect("encodes");
        for expected in [
            "# TYPE portcullis_decisions_total counter",
            "# TYPE portcullis_config_reloads_total counter",
            r#"portcullis_config_reloads_total{result="failure"} 1"#,
            r#"portcullis_config_reloads_total{result="success"} 0"#,
            "# TYPE portcullis_config_generation gauge",
            "portcullis_config_generation 3",
            "# TYPE portcullis_check_duration_seconds histogram",
            "# TYPE portcullis_build_info gauge",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            !text.contains("# EOF"),
            "OpenMetrics terminator in a 0.0.4 exposition"
        );
        let build = sample_line(&text, "portcullis_build_info{").expect("build info sample");
        assert!(build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))));
        assert!(build.contains(&format!(r#"commit="{}""#, env!("PORTCULLIS_GIT_SHA"))));
    }

    #[test]
    fn token_cache_counters_never_go_down_across_engine_swaps() {
        use crate::authn::cache::{TokenCache, token_hash, unix_now};
        use crate::decision::Identity;
        use crate::identity::CachePolicy;

        // Each generation's authenticator has its own cache counting into the app's counters.
        let counters = Arc::new(CacheCounters::default());
        let metrics = Metrics::new();
        metrics.observe_token_cache(counters.clone());
        let now = unix_now();
        let mut identity = Identity::anonymous();
        identity.expires_at = Some(now + 600);
        identity.cache_policy = CachePolicy::KeyBound("k1".to_owned());
        let identity = Arc::new(identity);
        let hit_times = |cache: &TokenCache, times: usize| {
            cache.insert(token_hash("a.b.c"), identity.clone(), now);
            for _ in 0..times {
                assert!(cache.get(&token_hash("a.b.c"), now, |_, _| true).is_some());
            }
        };

        let old = TokenCache::with_counters(10, counters.clone());
        hit_times(&old, 5);
        assert!(
            metrics
                .encode()
                .expect("encodes")
                .contains("portcullis_token_cache_hits_total 5")
        );

        // Reload: the new generation's cache starts empty, and the old one's 5 hits are kept.
        let new = TokenCache::with_counters(10, counters.clone());
        drop(old);
        assert!(
            metrics
                .encode()
                .expect("encodes")
                .contains("portcullis_token_cache_hits_total 5")
        );
        hit_times(&new, 2);
        assert!(
            metrics
                .encode()
                .expect("encodes")
                .contains("portcullis_token_cache_hits_total 7")
        );
    }
}
