//! OpenTelemetry traces over OTLP: one `portcullis.check` span (kind SERVER) per check, joined to
//! the trace of the request it decides, exported in batches to a collector.
//!
//! - **Settings** ([`resolve`]): `telemetry.tracing` first, then the standard `OTEL_*`
//!   environment variables, then the defaults. With no endpoint in either, tracing is off and
//!   costs the hot path nothing: [`crate::telemetry::Telemetry::tracing`] is `None`, no span,
//!   no context, no allocation.
//! - **Parent** ([`Tracing::start_check`]): the W3C `traceparent`/`tracestate` of the gRPC
//!   call's metadata (Envoy's span for the `ext_authz` call), else those of the HTTP request
//!   inside the `CheckRequest` (in the HTTP `ext_authz` mode: the authorization request's own
//!   headers), else a new root. A malformed `traceparent` (unknown or `ff` version, all-zero
//!   ids, bad hex) is ignored; a `tracestate` longer than [`MAX_TRACESTATE_BYTES`] is dropped
//!   (the parent is kept, as W3C Trace Context allows). Neither ever fails or delays a check.
//! - **Export**: the SDK's `BatchSpanProcessor` (its own thread) behind [`BoundedProcessor`],
//!   which admits at most [`MAX_QUEUED_SPANS`] spans not yet exported and counts every span
//!   refused or lost in a failed export in `portcullis_trace_spans_dropped_total`. A slow or
//!   dead collector therefore never blocks a check and never grows memory.
//!
//! This module must never put a token, a header value or (unless `include_subject`) the
//! subject on a span.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue, StringValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;

use crate::config::{OtlpProtocol, SamplerKind, TracingConfig};
use crate::decision::Decision;
use crate::input::{CheckInput, Headers};

/// Name of the span of one check.
pub const CHECK_SPAN: &str = "portcullis.check";
/// Spans finished but not yet exported, at most; more are dropped and counted. About 3 MiB
/// when a dead collector lets the queue fill.
pub const MAX_QUEUED_SPANS: usize = 4096;
/// Spans per export unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says otherwise: twice the SDK's
/// 512, because each export has a fixed cost (one OTLP request, two thread wake-ups) that at
/// 100 % sampling showed in the cost per check (`make bench-grpc PAIRS=…`, 2026-12-02: 64 spans
/// per export cost more than 512, 512 more than 2048). A quarter of the queue, so checks keep
/// finding room while a batch is out.
pub const EXPORT_BATCH: usize = MAX_QUEUED_SPANS / 4;
/// Longest `tracestate` taken over from a caller: the 512 characters W3C Trace Context asks
/// every vendor to propagate. A longer one is dropped (the parent itself is kept).
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// Longest wait at shutdown for the last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// `service.name` unless `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` or the configuration
/// says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "portcullis";

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

// ---------------------------------------------------------------------------------------------
// Settings

/// `telemetry.tracing` merged with the environment: what [`start`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The full export URL (`/v1/traces` included for `http/protobuf`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sampler: SamplerKind,
    pub ratio: f64,
    /// The configuration's attributes (they override the environment's).
    pub resource_attributes: Vec<(String, String)>,
    pub include_subject: bool,
}

/// Reads one environment variable; empty values count as unset (as the specification says).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Merges `config` with the `OTEL_*` variables of `env`: the configuration file wins, then the
/// signal-specific variable (`OTEL_EXPORTER_OTLP_TRACES_*`), then the generic one, then the
/// default. `None` when tracing is off (no endpoint anywhere, `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`). Invalid environment values are reported in the returned notes
/// and replaced by the default, as the specification asks (a configuration file error, in
/// contrast, stops the load).
pub fn resolve(config: &TracingConfig, env: Env<'_>) -> (Option<TracingSettings>, Vec<String>) {
    let get = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut notes = Vec::new();
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return (
            None,
            vec!["OTEL_SDK_DISABLED=true: tracing is off".to_owned()],
        );
    }
    match get("OTEL_TRACES_EXPORTER").as_deref() {
        Some("none") => {
            return (
                None,
                vec!["OTEL_TRACES_EXPORTER=none: tracing is off".to_owned()],
            );
        }
        None | Some("otlp") => {}
        Some(other) => notes.push(format!(
            "OTEL_TRACES_EXPORTER={other} is not supported; exporting over OTLP"
        )),
    }

    let protocol = config.protocol.or_else(|| {
        [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| {
            let value = get(name)?;
            let protocol = OtlpProtocol::from_name(&value);
            if protocol.is_none() {
                notes.push(format!(
                    "{name}={value} is not supported (grpc or http/protobuf); using the default"
                ));
            }
            protocol
        })
    });
    // The specification's default transport.
    let protocol = protocol.unwrap_or(OtlpProtocol::HttpProtobuf);

    let endpoint = match (&config.endpoint, get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        (Some(base), _) => signal_url(base, protocol),
        // The signal-specific variable is the full URL, used as it is.
        (None, Some(url)) => url,
        (None, None) => match get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(base) => signal_url(&base, protocol),
            None => return (None, notes),
        },
    };

    let sampler = config.sampler.or_else(|| {
        let value = get("OTEL_TRACES_SAMPLER")?;
        let sampler = SamplerKind::from_name(&value);
        if sampler.is_none() {
            notes.push(format!(
                "OTEL_TRACES_SAMPLER={value} is not supported; using parentbased_traceidratio"
            ));
        }
        sampler
    });
    let ratio = config.ratio.or_else(|| {
        let value = get("OTEL_TRACES_SAMPLER_ARG")?;
        let ratio = value
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r));
        if ratio.is_none() {
            notes.push(format!(
                "OTEL_TRACES_SAMPLER_ARG={value} is not a ratio between 0 and 1; using 1.0"
            ));
        }
        ratio
    });
    let settings = TracingSettings {
        endpoint,
        protocol,
        sampler: sampler.unwrap_or(SamplerKind::ParentBasedTraceIdRatio),
        ratio: ratio.unwrap_or(1.0),
        resource_attributes: config.resource_attributes.clone(),
        include_subject: config.include_subject,
    };
    (Some(settings), notes)
}

/// The trace export URL for a base endpoint: OTLP/HTTP appends `v1/traces` to the base path (as
/// for `OTEL_EXPORTER_OTLP_ENDPOINT`) unless the URL already names it; OTLP/gRPC takes the
/// URL as it is.
fn signal_url(base: &str, protocol: OtlpProtocol) -> String {
    match protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf if base.trim_end_matches('/').ends_with("/v1/traces") => {
            base.to_owned()
        }
        OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
    }
}

/// The endpoint without credentials, path or query, for log lines.
fn loggable_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(url) => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(invalid URL)".to_owned(),
    }
}

fn sampler(kind: SamplerKind, ratio: f64) -> Sampler {
    match kind {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentBasedTraceIdRatio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

/// `service.name` = portcullis and `service.version`, overridden by `OTEL_RESOURCE_ATTRIBUTES`,
/// then by `OTEL_SERVICE_NAME`, then by the configuration's `resource_attributes`.
fn resource(settings: &TracingSettings, env: Env<'_>) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", DEFAULT_SERVICE_NAME),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = env("OTEL_SERVICE_NAME").filter(|n| !n.trim().is_empty()) {
        builder = builder.with_service_name(name);
    }
    builder
        .with_attributes(
            settings
                .resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .build()
}

// ---------------------------------------------------------------------------------------------
// Start and stop

/// Why tracing could not start (the agent then serves without it).
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("cannot build the OTLP exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Starts tracing for `config` and the process environment, or returns `None` (off, or it
/// could not start: logged). Must run inside the tokio runtime (the gRPC exporter's channel
/// lives there). Installs the provider globally too, for the spans of the key fetches.
pub fn start(config: &TracingConfig, dropped: Counter) -> Option<Tracing> {
    let (settings, notes) = resolve(config, &process_env);
    for note in notes {
        tracing::warn!("{note}");
    }
    let settings = settings?;
    let endpoint = loggable_endpoint(&settings.endpoint);
    match Tracing::start(&settings, &process_env, dropped) {
        Ok(tracing) => {
            opentelemetry::global::set_tracer_provider(tracing.provider.clone());
            tracing::info!(
                endpoint = %endpoint,
                protocol = ?settings.protocol,
                sampler = settings.sampler.name(),
                ratio = settings.ratio,
                "tracing on: exporting spans over OTLP"
            );
            Some(tracing)
        }
        Err(error) => {
            tracing::warn!(
                endpoint = %endpoint,
                error = %crate::error::ErrorChain(&error),
                "cannot start tracing; serving without it"
            );
            None
        }
    }
}

/// The tracer of the checks, and the provider that exports its spans.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    include_subject: bool,
}

impl Tracing {
    fn start(
        settings: &TracingSettings,
        env: Env<'_>,
        dropped: Counter,
    ) -> Result<Self, TracingError> {
        let exporter = match settings.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .build()?,
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(settings.endpoint.clone())
                .build()?,
        };
        Ok(Self::with_exporter(exporter, settings, env, dropped))
    }

    /// Tracing that hands its batches to `exporter` (tests use an in-memory one).
    pub fn with_exporter<E: SpanExporter + 'static>(
        exporter: E,
        settings: &TracingSettings,
        env: Env<'_>,
        dropped: Counter,
    ) -> Self {
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = CountingExporter {
            inner: exporter,
            queued: queued.clone(),
            dropped: dropped.clone(),
        };
        // The builder's defaults honour the `OTEL_BSP_*` variables; a value set here wins over
        // them, so the batch size is set only when the variable is not.
        let mut config = BatchConfigBuilder::default().with_max_queue_size(MAX_QUEUED_SPANS);
        if env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
            config = config.with_max_export_batch_size(EXPORT_BATCH);
        }
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(config.build())
            .build();
        let processor = BoundedProcessor {
            inner: batch,
            queued,
            capacity: MAX_QUEUED_SPANS,
            dropped,
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(settings.sampler, settings.ratio))
            .with_resource(resource(settings, env))
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer_with_scope(
            &provider,
            InstrumentationScope::builder("portcullis")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            include_subject: settings.include_subject,
        }
    }

    /// Starts the span of one check under its parent: `metadata` (the gRPC call's), else the
    /// request's headers, else none (a new root). The returned context carries the span; run
    /// the check inside it and hand it to [`end_check`](Self::end_check).
    pub fn start_check(
        &self,
        metadata: Option<&(dyn Extractor + Sync)>,
        input: &CheckInput,
    ) -> Context {
        let parent = metadata
            .and_then(|carrier| self.remote_parent(carrier))
            .or_else(|| self.remote_parent(&HeaderCarrier(&input.headers)))
            .unwrap_or_default();
        let span = self
            .tracer
            .span_builder(CHECK_SPAN)
            .with_kind(SpanKind::Server)
            .with_attributes(Vec::with_capacity(CHECK_ATTRIBUTES))
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// The caller's span context, if `carrier` holds a valid one.
    fn remote_parent(&self, carrier: &dyn Extractor) -> Option<Context> {
        carrier.get(TRACEPARENT)?;
        let context = self.propagator.extract(&BoundedCarrier(carrier));
        context.span().span_context().is_valid().then_some(context)
    }

    /// Records the decision on the check span of `context` and ends it; returns the trace id
    /// when the span is sampled (it then goes into the audit event).
    pub fn end_check(&self, context: &Context, decision: &Decision) -> Option<TraceId> {
        let span = context.span();
        if span.is_recording() {
            span.set_attributes(check_attributes(decision, self.include_subject));
            if let Decision::Deny(denial) = decision
                && denial.http_status() >= 500
            {
                // portcullis could not decide (keys unreachable, an internal failure): an
                // error of this service. A denial is a correct answer, not an error.
                span.set_status(Status::error(decision.reason()));
            }
        }
        span.end();
        let span_context = span.span_context();
        span_context.is_sampled().then(|| span_context.trace_id())
    }

    /// Exports what is queued and stops the exporter, waiting at most [`SHUTDOWN_TIMEOUT`]. The
    /// SDK blocks while it flushes: this runs it on a blocking thread, so a single-threaded
    /// runtime can still drive the exporter's connection meanwhile.
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let result =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match result {
            Ok(Ok(())) => tracing::debug!("tracing stopped; queued spans exported"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "tracing stopped without exporting every span")
            }
            Err(error) => tracing::warn!(%error, "tracing shutdown task failed"),
        }
    }
}

/// The most attributes a check span gets (see [`check_attributes`]): the span's attribute list
/// is allocated this large when the span starts, so recording them never grows it.
const CHECK_ATTRIBUTES: usize = 6;

/// The check span's attributes, named as the audit event's fields are. An iterator, not a
/// `Vec`: they go straight into the span's own list. The route name is shared, not copied.
fn check_attributes(decision: &Decision, include_subject: bool) -> impl Iterator<Item = KeyValue> {
    let route = decision
        .route_name()
        .map(|route| KeyValue::new("route.name", StringValue::from(Arc::clone(route))));
    let (method, status, subject) = match decision {
        Decision::Allow(permit) => (
            Some(KeyValue::new(
                "auth.method",
                permit.identity.method.as_str(),
            )),
            200_i64,
            include_subject.then(|| KeyValue::new("auth.subject", permit.identity.subject.clone())),
        ),
        Decision::Deny(denial) => (None, i64::from(denial.http_status()), None),
    };
    let attributes: [Option<KeyValue>; CHECK_ATTRIBUTES] = [
        route,
        Some(KeyValue::new("authz.outcome", decision.outcome())),
        Some(KeyValue::new("authz.reason", decision.reason())),
        method,
        Some(KeyValue::new("http.response.status_code", status)),
        subject,
    ];
    attributes.into_iter().flatten()
}

/// A check's headers as a trace-context carrier.
struct HeaderCarrier<'a>(&'a Headers);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name).collect()
    }
}

/// Hides a `tracestate` longer than [`MAX_TRACESTATE_BYTES`] from the propagator.
struct BoundedCarrier<'a>(&'a dyn Extractor);

impl Extractor for BoundedCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        (key != TRACESTATE || value.len() <= MAX_TRACESTATE_BYTES).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys()
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded, counted export

/// Admits a finished span to the batch processor only while fewer than `capacity` spans wait
/// for export; counts the others as dropped. The batch processor's own queue (as large) can
/// then never overflow, so every lost span is counted here or in [`CountingExporter`].
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: Counter,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter behind the batch processor: releases the exported spans' places in the queue,
/// and counts the spans of a failed (or abandoned) export as dropped.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    dropped: Counter,
}

/// Settles one export's spans even if the export future is dropped unfinished.
struct ExportGuard<'a> {
    spans: usize,
    queued: &'a AtomicUsize,
    dropped: &'a Counter,
    exported: bool,
}

impl Drop for ExportGuard<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(self.spans, Ordering::AcqRel);
        if !self.exported {
            self.dropped.inc_by(self.spans as u64);
        }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let guard = ExportGuard {
            spans: batch.len(),
            queued: &self.queued,
            dropped: &self.dropped,
            exported: false,
        };
        let export = self.inner.export(batch);
        async move {
            let mut guard = guard;
            let result = export.await;
            guard.exported = result.is_ok();
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decision::{AuthMethod, DenyReason, Identity, Permit, Unavailable};
    use opentelemetry::trace::{Span as _, SpanId, Status};
    use opentelemetry_sdk::error::OTelSdkError;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn resolved(config: &TracingConfig, env: &[(&str, &str)]) -> Option<TracingSettings> {
        resolve(config, &env_of(env)).0
    }

    #[test]
    fn tracing_is_off_without_an_endpoint_anywhere() {
        assert_eq!(resolved(&TracingConfig::default(), &[]), None);
        let sampler_only = [
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_SERVICE_NAME", "x"),
        ];
        assert_eq!(resolved(&TracingConfig::default(), &sampler_only), None);
    }

    #[test]
    fn configuration_wins_over_the_environment_which_wins_over_defaults() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env-collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ];
        let from_env = resolved(&TracingConfig::default(), &env).expect("on");
        assert_eq!(from_env.endpoint, "http://env-collector:4318/v1/traces");
        assert_eq!(from_env.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(from_env.sampler, SamplerKind::TraceIdRatio);
        assert_eq!(from_env.ratio, 0.25);

        let config = TracingConfig {
            endpoint: Some("http://file-collector:4317".into()),
            protocol: Some(OtlpProtocol::Grpc),
            sampler: Some(SamplerKind::ParentBasedTraceIdRatio),
            ratio: Some(0.01),
            ..TracingConfig::default()
        };
        let from_file = resolved(&config, &env).expect("on");
        assert_eq!(from_file.endpoint, "http://file-collector:4317");
        assert_eq!(from_file.protocol, OtlpProtocol::Grpc);
        assert_eq!(from_file.sampler, SamplerKind::ParentBasedTraceIdRatio);
        assert_eq!(from_file.ratio, 0.01);

        let defaults = resolved(
            &TracingConfig {
                endpoint: Some("http://c:4318".into()),
                ..TracingConfig::default()
            },
            &[],
        )
        .expect("on");
        assert_eq!(defaults.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(defaults.endpoint, "http://c:4318/v1/traces");
        assert_eq!(defaults.sampler, SamplerKind::ParentBasedTraceIdRatio);
        assert_eq!(defaults.ratio, 1.0);
    }

    #[test]
    fn the_signal_specific_endpoint_is_used_as_it_is_and_wins_over_the_generic_one() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ];
        let settings = resolved(&TracingConfig::default(), &env).expect("on");
        assert_eq!(settings.endpoint, "http://traces:4318/custom");
        assert_eq!(settings.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn sdk_disabled_or_no_exporter_turns_tracing_off_even_with_an_endpoint() {
        let config = TracingConfig {
            endpoint: Some("http://c:4317".into()),
            ..TracingConfig::default()
        };
        assert_eq!(resolved(&config, &[("OTEL_SDK_DISABLED", "TRUE")]), None);
        assert_eq!(resolved(&config, &[("OTEL_TRACES_EXPORTER", "none")]), None);
        assert!(resolved(&config, &[("OTEL_SDK_DISABLED", "false")]).is_some());
    }

    #[test]
    fn invalid_environment_values_fall_back_to_defaults_with_a_note() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ];
        let (settings, notes) = resolve(&TracingConfig::default(), &env_of(&env));
        let settings = settings.expect("still on");
        assert_eq!(settings.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(settings.sampler, SamplerKind::ParentBasedTraceIdRatio);
        assert_eq!(settings.ratio, 1.0);
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn resource_has_a_default_name_overridden_by_env_then_by_the_configuration() {
        let settings = |attributes: Vec<(String, String)>| TracingSettings {
            endpoint: "http://c:4317".into(),
            protocol: OtlpProtocol::Grpc,
            sampler: SamplerKind::AlwaysOn,
            ratio: 1.0,
            resource_attributes: attributes,
            include_subject: false,
        };
        let name = |resource: &Resource| {
            resource
                .get(&opentelemetry::Key::new("service.name"))
                .map(|v| v.to_string())
        };
        let plain = resource(&settings(Vec::new()), &env_of(&[]));
        assert_eq!(name(&plain).as_deref(), Some(DEFAULT_SERVICE_NAME));
        let named = resource(
            &settings(Vec::new()),
            &env_of(&[("OTEL_SERVICE_NAME", "authz")]),
        );
        assert_eq!(name(&named).as_deref(), Some("authz"));
        let configured = resource(
            &settings(vec![("service.name".into(), "from-file".into())]),
            &env_of(&[("OTEL_SERVICE_NAME", "authz")]),
        );
        assert_eq!(name(&configured).as_deref(), Some("from-file"));
    }

    // -----------------------------------------------------------------------------------------
    // Spans

    /// Collects exported spans, or fails every export.
    #[derive(Debug, Clone, Default)]
    struct TestExporter {
        spans: Arc<Mutex<Vec<SpanData>>>,
        /// The size of each export.
        batches: Arc<Mutex<Vec<usize>>>,
        fail: bool,
    }

    impl SpanExporter for TestExporter {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.fail {
                return Err(OTelSdkError::InternalFailure("collector down".into()));
            }
            self.batches.lock().expect("lock").push(batch.len());
            self.spans.lock().expect("lock").extend(batch);
            Ok(())
        }
    }

    fn settings(sampler: SamplerKind, include_subject: bool) -> TracingSettings {
        TracingSettings {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: OtlpProtocol::Grpc,
            sampler,
            ratio: 1.0,
            resource_attributes: Vec::new(),
            include_subject,
        }
    }

    /// Tracing that samples everything into the returned list (for other modules' tests);
    /// call [`flushed`] to see what has ended.
    pub(crate) fn collecting_tracing() -> (Tracing, Arc<Mutex<Vec<SpanData>>>) {
        let exporter = TestExporter::default();
        let (tracing, _) = tracing_into(&exporter, SamplerKind::ParentBasedAlwaysOn);
        (tracing, exporter.spans)
    }

    /// Exports what has ended so far.
    pub(crate) fn flushed(tracing: &Tracing) {
        tracing.provider.force_flush().expect("flush");
    }

    /// Tracing that samples everything and exports nowhere (for other modules' tests).
    pub(crate) fn always_on_tracing() -> Tracing {
        let (tracing, _) = tracing_into(&TestExporter::default(), SamplerKind::AlwaysOn);
        tracing
    }

    fn tracing_into(exporter: &TestExporter, sampler: SamplerKind) -> (Tracing, Counter) {
        let dropped = Counter::default();
        let tracing = Tracing::with_exporter(
            exporter.clone(),
            &settings(sampler, false),
            &env_of(&[]),
            dropped.clone(),
        );
        (tracing, dropped)
    }

    fn finished(tracing: &Tracing, exporter: &TestExporter) -> Vec<SpanData> {
        tracing.provider.force_flush().expect("flush");
        exporter.spans.lock().expect("lock").clone()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    fn traceparent(trace: &str, span: &str) -> String {
        format!("00-{trace}-{span}-01")
    }

    fn input(headers: &[(&str, &str)]) -> CheckInput {
        CheckInput {
            method: "GET".into(),
            path: "/orders".into(),
            headers: Headers::new(
                headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            ),
            ..CheckInput::default()
        }
    }

    struct Metadata(HashMap<&'static str, String>);

    impl Extractor for Metadata {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().copied().collect()
        }
    }

    fn parent_of(
        tracing: &Tracing,
        metadata: Option<&Metadata>,
        input: &CheckInput,
    ) -> SpanContext {
        let context = tracing.start_check(metadata.map(|m| m as &(dyn Extractor + Sync)), input);
        let span = context.span();
        let parent = span.span_context().clone();
        span.end();
        parent
    }

    use opentelemetry::trace::SpanContext;

    #[test]
    fn parent_comes_from_grpc_metadata_before_the_request_headers() {
        let exporter = TestExporter::default();
        let (tracing, _) = tracing_into(&exporter, SamplerKind::ParentBasedAlwaysOn);
        let other_trace = "0af7651916cd43dd8448eb211c80319c";
        let metadata = Metadata(HashMap::from([("traceparent", traceparent(TRACE, PARENT))]));
        let request = input(&[("traceparent", &traceparent(other_trace, "b7ad6b7169203331"))]);

        let joined = parent_of(&tracing, Some(&metadata), &request);
        assert_eq!(joined.trace_id(), TraceId::from_hex(TRACE).expect("hex"));
        let from_headers = parent_of(&tracing, None, &request);
        assert_eq!(
            from_headers.trace_id(),
            TraceId::from_hex(other_trace).expect("hex")
        );

        let spans = finished(&tracing, &exporter);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, CHECK_SPAN);
        assert_eq!(spans[0].span_kind, SpanKind::Server);
        assert_eq!(
            spans[0].parent_span_id,
            SpanId::from_hex(PARENT).expect("hex")
        );
        assert_eq!(
            spans[1].parent_span_id,
            SpanId::from_hex("b7ad6b7169203331").expect("hex")
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored_and_the_check_span_is_a_new_root() {
        let exporter = TestExporter::default();
        let (tracing, _) = tracing_into(&exporter, SamplerKind::ParentBasedAlwaysOn);
        let zero_trace = "00000000000000000000000000000000";
        for bad in [
            format!("ff-{TRACE}-{PARENT}-01"),
            traceparent(zero_trace, PARENT),
            traceparent(TRACE, "0000000000000000"),
            format!("00-{TRACE}-{PARENT}-01-extra"),
            "00-not-hex-01".to_owned(),
            String::new(),
        ] {
            let metadata = Metadata(HashMap::from([("traceparent", bad.clone())]));
            let span = parent_of(&tracing, Some(&metadata), &input(&[("traceparent", &bad)]));
            assert!(span.is_valid(), "{bad}");
            assert_ne!(
                span.trace_id(),
                TraceId::from_hex(TRACE).expect("hex"),
                "{bad}"
            );
        }
        let spans = finished(&tracing, &exporter);
        assert_eq!(spans.len(), 6);
        assert!(spans.iter().all(|s| s.parent_span_id == SpanId::INVALID));
    }

    #[test]
    fn an_oversized_tracestate_is_dropped_and_the_parent_kept() {
        let exporter = TestExporter::default();
        let (tracing, _) = tracing_into(&exporter, SamplerKind::ParentBasedAlwaysOn);
        let small = Metadata(HashMap::from([
            ("traceparent", traceparent(TRACE, PARENT)),
            ("tracestate", "vendor=abc".to_owned()),
        ]));
        let kept = parent_of(&tracing, Some(&small), &input(&[]));
        assert_eq!(kept.trace_state().get("vendor"), Some("abc"));
        let huge = Metadata(HashMap::from([
            ("traceparent", traceparent(TRACE, PARENT)),
            (
                "tracestate",
                format!("vendor={}", "a".repeat(MAX_TRACESTATE_BYTES)),
            ),
        ]));
        let dropped = parent_of(&tracing, Some(&huge), &input(&[]));
        assert_eq!(dropped.trace_id(), TraceId::from_hex(TRACE).expect("hex"));
        assert_eq!(dropped.trace_state().get("vendor"), None);
    }

    fn permit(subject: &str) -> Decision {
        Decision::Allow(Permit {
            route: Arc::from("orders"),
            identity: Arc::new(Identity {
                subject: subject.into(),
                method: AuthMethod::Jwt,
                ..Identity::anonymous()
            }),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            dynamic_metadata: true,
            would_deny: None,
        })
    }

    fn attribute(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn check_span_carries_the_decision_and_the_subject_only_when_configured() {
        for include_subject in [false, true] {
            let exporter = TestExporter::default();
            let tracing = Tracing::with_exporter(
                exporter.clone(),
                &settings(SamplerKind::AlwaysOn, include_subject),
                &env_of(&[]),
                Counter::default(),
            );
            let request = input(&[]);
            let allowed = tracing.start_check(None, &request);
            let trace_id = tracing.end_check(&allowed, &permit("alice"));
            assert_eq!(trace_id, Some(allowed.span().span_context().trace_id()));
            let denied = tracing.start_check(None, &request);
            let denial = Decision::deny(Some(Arc::from("orders")), DenyReason::Forbidden);
            tracing.end_check(&denied, &denial);
            let failed = tracing.start_check(None, &request);
            let unavailable = Decision::deny(None, DenyReason::Unavailable(Unavailable::Internal));
            tracing.end_check(&failed, &unavailable);

            let spans = finished(&tracing, &exporter);
            assert_eq!(spans.len(), 3);
            let (allow, deny, error) = (&spans[0], &spans[1], &spans[2]);
            assert_eq!(attribute(allow, "route.name").as_deref(), Some("orders"));
            assert_eq!(attribute(allow, "authz.outcome").as_deref(), Some("allow"));
            assert_eq!(attribute(allow, "auth.method").as_deref(), Some("jwt"));
            assert_eq!(
                attribute(allow, "http.response.status_code").as_deref(),
                Some("200")
            );
            assert_eq!(
                attribute(allow, "auth.subject").as_deref(),
                include_subject.then_some("alice")
            );
            assert_eq!(
                attribute(deny, "authz.reason").as_deref(),
                Some("forbidden")
            );
            assert_eq!(
                attribute(deny, "http.response.status_code").as_deref(),
                Some("403")
            );
            assert_eq!(deny.status, Status::Unset);
            assert_eq!(
                attribute(error, "authz.reason").as_deref(),
                Some("internal")
            );
            assert!(
                matches!(error.status, Status::Error { .. }),
                "{:?}",
                error.status
            );
        }
    }

    #[test]
    fn an_unsampled_check_has_no_trace_id_and_exports_nothing() {
        let exporter = TestExporter::default();
        let (tracing, _) = tracing_into(&exporter, SamplerKind::AlwaysOff);
        let context = tracing.start_check(None, &input(&[]));
        assert_eq!(tracing.end_check(&context, &permit("alice")), None);
        assert!(finished(&tracing, &exporter).is_empty());
    }

    #[test]
    fn spans_of_failed_exports_are_counted_as_dropped() {
        let exporter = TestExporter {
            fail: true,
            ..TestExporter::default()
        };
        let (tracing, dropped) = tracing_into(&exporter, SamplerKind::AlwaysOn);
        for _ in 0..3 {
            let context = tracing.start_check(None, &input(&[]));
            tracing.end_check(&context, &permit("alice"));
        }
        let _ = tracing.provider.force_flush();
        assert_eq!(dropped.get(), 3);
    }

    #[test]
    fn spans_beyond_the_queue_bound_are_dropped_without_blocking_and_counted() {
        let dropped = Counter::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = TestExporter::default();
        let processor = BoundedProcessor {
            inner: BatchSpanProcessor::builder(CountingExporter {
                inner: exporter.clone(),
                queued: queued.clone(),
                dropped: dropped.clone(),
            })
            .build(),
            queued: queued.clone(),
            capacity: 2,
            dropped: dropped.clone(),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "test");
        for _ in 0..5 {
            tracer.start("work").end();
        }
        assert_eq!(dropped.get(), 3);
        assert_eq!(queued.load(Ordering::Acquire), 2);
        provider.force_flush().expect("flush");
        assert_eq!(queued.load(Ordering::Acquire), 0);
        assert_eq!(exporter.spans.lock().expect("lock").len(), 2);
        // Room again once exported.
        tracer.start("work").end();
        assert_eq!(dropped.get(), 3);
    }

    fn largest_export(env: &[(&str, &str)], spans: usize) -> usize {
        let exporter = TestExporter::default();
        let tracing = Tracing::with_exporter(
            exporter.clone(),
            &settings(SamplerKind::AlwaysOn, false),
            &env_of(env),
            Counter::default(),
        );
        for _ in 0..spans {
            tracing.tracer.start("work").end();
        }
        assert_eq!(finished(&tracing, &exporter).len(), spans);
        let batches = exporter.batches.lock().expect("lock");
        batches.iter().copied().max().unwrap_or(0)
    }

    #[test]
    fn exports_go_out_in_batches_of_export_batch_unless_the_environment_sets_a_size() {
        // Fewer spans than the queue holds, more than one batch: nothing dropped.
        assert_eq!(largest_export(&[], EXPORT_BATCH + 10), EXPORT_BATCH);
        // With the variable set, portcullis leaves the size to the SDK, which reads the
        // variable itself (here the process has none: the SDK's default, 512).
        assert_eq!(
            largest_export(
                &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100")],
                EXPORT_BATCH + 10
            ),
            512
        );
    }
}
