//! Telemetry: Prometheus metrics (`metrics`), one JSON audit event per decision (`audit`),
//! OpenTelemetry traces (`otel`, only when configured), and the process's logging setup. Labels
//! stay bounded (route, reason); tokens, header values and keys are never recorded, in metrics,
//! audit events, spans or log lines.

pub mod audit;
pub mod json;
pub mod metrics;
pub mod otel;
pub mod writer;

use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::decision::Decision;
use crate::input::CheckInput;

pub use crate::error::ErrorChain;
pub use metrics::Metrics;
pub use otel::Tracing;

/// Switches of the telemetry of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryOptions {
    /// Audit allowed requests at info (default); when off they are audited at debug only.
    pub audit_allows: bool,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        Self { audit_allows: true }
    }
}

/// Everything a decision is reported to.
#[derive(Debug, Default)]
pub struct Telemetry {
    options: TelemetryOptions,
    metrics: Metrics,
    /// `None` when tracing is off: then no span is built.
    tracing: Option<Tracing>,
}

impl Telemetry {
    /// Telemetry with the default options (allows audited at info).
    pub fn new() -> Self {
        Self::with_options(TelemetryOptions::default())
    }

    pub fn with_options(options: TelemetryOptions) -> Self {
        Self {
            options,
            metrics: Metrics::new(),
            tracing: None,
        }
    }

    /// Starts tracing as `config` and the `OTEL_*` environment say (see [`otel::start`]);
    /// dropped spans are counted in this telemetry's metrics.
    pub fn start_tracing(&mut self, config: &crate::config::TracingConfig) {
        self.tracing = otel::start(config, self.metrics.trace_spans_dropped());
    }

    /// Traces into `tracing` (tests).
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        self.tracing = Some(tracing);
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The tracer, when tracing is on.
    pub fn tracing(&self) -> Option<&Tracing> {
        self.tracing.as_ref()
    }

    /// Records one decision: metrics and the audit event.
    pub fn decision(&self, input: &CheckInput, decision: &Decision, elapsed: Duration) {
        self.decision_in_trace(input, decision, elapsed, None);
    }

    /// [`decision`](Self::decision) for a check traced in `trace` (the context
    /// [`Tracing::start_check`] returned): also ends its span, and the audit event carries the
    /// trace id when the span is sampled.
    pub fn decision_in_trace(
        &self,
        input: &CheckInput,
        decision: &Decision,
        elapsed: Duration,
        trace: Option<&opentelemetry::Context>,
    ) {
        self.metrics.decision(decision, elapsed);
        let trace_id = match (trace, &self.tracing) {
            (Some(context), Some(tracing)) => tracing.end_check(context, decision),
            _ => None,
        };
        audit::record(
            input,
            decision,
            elapsed,
            self.options.audit_allows,
            trace_id,
        );
    }

    /// Exports the spans still queued and stops tracing (graceful shutdown).
    pub async fn shutdown_tracing(&self) {
        if let Some(tracing) = &self.tracing {
            tracing.shutdown().await;
        }
    }
}

/// Environment variable holding the log filter (`RUST_LOG` syntax, default `info`).
pub const LOG_FILTER_ENV: &str = "PORTCULLIS_LOG";
/// Environment variable choosing the log format: `json` (default) or `text`.
pub const LOG_FORMAT_ENV: &str = "PORTCULLIS_LOG_FORMAT";

/// How log lines are written (to standard output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, event fields at the top level (what log pipelines ingest).
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `RUST_LOG`-style directives, e.g. `info,portcullis::audit=warn`.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{LOG_FILTER_ENV} is not a valid log filter")]
    Filter(#[source] tracing_subscriber::filter::ParseError),
    #[error("{LOG_FORMAT_ENV} must be `json` or `text`, not `{0}`")]
    Format(String),
    #[error("cannot start the log flushing thread")]
    Flusher(#[source] std::io::Error),
    #[error("a global logger is already installed")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

impl LogSettings {
    /// Reads [`LOG_FILTER_ENV`] and [`LOG_FORMAT_ENV`].
    pub fn from_env() -> Result<Self, LoggingError> {
        let mut settings = Self::default();
        if let Ok(filter) = std::env::var(LOG_FILTER_ENV)
            && !filter.trim().is_empty()
        {
            settings.filter = filter;
        }
        if let Ok(format) = std::env::var(LOG_FORMAT_ENV) {
            settings.format = format.parse()?;
        }
        Ok(settings)
    }
}

impl std::str::FromStr for LogFormat {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(LoggingError::Format(other.to_owned())),
        }
    }
}

/// The global logger's output, for [`flush_logs`].
static LOG_OUTPUT: OnceLock<writer::BufferedStdout> = OnceLock::new();

/// Writes out log lines still buffered; call it before the process exits.
pub fn flush_logs() {
    if let Some(output) = LOG_OUTPUT.get() {
        output.flush();
    }
}

/// Installs the global logger, writing to standard output through a buffer ([`writer`]).
pub fn init_logging(settings: &LogSettings) -> Result<(), LoggingError> {
    let output = LOG_OUTPUT.get_or_init(writer::BufferedStdout::new).clone();
    let filter = EnvFilter::builder()
        .parse(&settings.filter)
        .map_err(LoggingError::Filter)?;
    let json =
        (settings.format == LogFormat::Json).then(|| json::JsonLines::new(output.clone()).boxed());
    let text = (settings.format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(output.clone())
            .boxed()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .try_init()
        .map_err(LoggingError::AlreadyInstalled)?;
    // Without the flusher, lines would wait for the next full buffer: start it, or say why not.
    output.spawn_flusher().map_err(LoggingError::Flusher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DenyReason, TokenProblem};
    use crate::input::Headers;
    use std::sync::Arc;

    fn input_with_secrets() -> CheckInput {
        CheckInput {
            method: "POST".into(),
            host: "api.example.com".into(),
            path: "/orders?access_token=query-secret".into(),
            headers: Headers::new([
                ("x-request-id".to_owned(), "req-42".to_owned()),
                (
                    "authorization".to_owned(),
                    "Bearer eyJhbGciOiJSUzI1NiJ9.header-secret.sig".to_owned(),
                ),
                ("cookie".to_owned(), "session=cookie-secret".to_owned()),
            ]),
            source: Some("192.0.2.1:1234".parse().expect("addr")),
            peer_certificate: None,
            source_principal: None,
        }
    }

    #[test]
    fn denial_is_one_json_audit_event_without_secrets() {
        let telemetry = Telemetry::new();
        let input = input_with_secrets();
        let decision = Decision::deny(
            Some(Arc::from("orders")),
            DenyReason::InvalidToken(TokenProblem::Expired),
        );
        let logs = json::tests::capture(|| {
            telemetry.decision(&input, &decision, Duration::from_micros(9))
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "{logs}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).expect("json line");
        assert_eq!(event["target"], audit::TARGET);
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["request.id"], "req-42");
        assert_eq!(event["authz.reason"], "expired");
        assert_eq!(event["authz.outcome"], "deny");
        assert_eq!(event["http.status"], 401);
        assert_eq!(event["http.path"], "/orders");
        assert_eq!(event["client.ip"], "192.0.2.1");
        assert_eq!(event["duration_us"], 9);
        for secret in ["header-secret", "query-secret", "cookie-secret", "eyJ"] {
            assert!(!logs.contains(secret), "{secret} leaked: {logs}");
        }
    }

    /// The documented field list is what an event carries, in that order, and nothing else.
    #[test]
    fn audit_event_fields_are_the_documented_ones_in_order() {
        let decision = Decision::deny(Some(Arc::from("orders")), DenyReason::Forbidden);
        let logs = json::tests::capture(|| {
            Telemetry::new().decision(&input_with_secrets(), &decision, Duration::ZERO)
        });
        let keys: Vec<&str> = ["timestamp", "level", "message"]
            .into_iter()
            .chain(audit::FIELDS)
            .chain(["target"])
            .collect();
        let expected = keys
            .iter()
            .map(|key| format!("\"{key}\":"))
            .collect::<Vec<_>>();
        let positions: Vec<usize> = expected
            .iter()
            .map(|key| logs.find(key.as_str()).unwrap_or(usize::MAX))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{logs}");
        let event: serde_json::Value = serde_json::from_str(logs.trim_end()).expect("json");
        let mut logged: Vec<&str> = event
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        logged.sort_unstable();
        let mut documented = keys.clone();
        documented.sort_unstable();
        assert_eq!(logged, documented);
    }

    /// A sampled check's audit event ends with its trace id; an untraced one has none.
    #[test]
    fn audit_event_of_a_sampled_check_carries_its_trace_id_last() {
        let telemetry = Telemetry::new().with_tracing(otel::tests::always_on_tracing());
        let tracing = telemetry.tracing().expect("tracing on");
        let input = input_with_secrets();
        let decision = Decision::deny(Some(Arc::from("orders")), DenyReason::Forbidden);
        let trace = tracing.start_check(None, &input);
        let trace_id = {
            use opentelemetry::trace::TraceContextExt as _;
            trace.span().span_context().trace_id().to_string()
        };
        let logs = json::tests::capture(|| {
            telemetry.decision_in_trace(&input, &decision, Duration::ZERO, Some(&trace))
        });
        let event: serde_json::Value = serde_json::from_str(logs.trim_end()).expect("json");
        assert_eq!(event[audit::TRACE_ID_FIELD], trace_id.as_str());
        assert_eq!(trace_id.len(), 32);
        assert!(
            logs.find("\"duration_us\":") < logs.find("\"trace_id\":"),
            "{logs}"
        );
        let untraced =
            json::tests::capture(|| telemetry.decision(&input, &decision, Duration::ZERO));
        assert!(!untraced.contains("trace_id"), "{untraced}");
    }

    #[test]
    fn allows_are_audited_at_debug_when_allow_auditing_is_off() {
        let telemetry = Telemetry::with_options(TelemetryOptions {
            audit_allows: false,
        });
        let decision = Decision::Allow(crate::decision::Permit {
            route: Arc::from("health"),
            identity: Arc::new(crate::decision::Identity::anonymous()),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            dynamic_metadata: true,
            would_deny: None,
        });
        let logs = json::tests::capture(|| {
            telemetry.decision(&input_with_secrets(), &decision, Duration::ZERO)
        });
        let event: serde_json::Value =
            serde_json::from_str(logs.lines().next().expect("one event")).expect("json");
        assert_eq!(event["level"], "DEBUG");
        assert_eq!(event["authz.outcome"], "allow");
    }

    #[test]
    fn decisions_are_counted() {
        let telemetry = Telemetry::new();
        let decision = Decision::deny(None, DenyReason::MissingCredential);
        json::tests::capture(|| {
            telemetry.decision(&input_with_secrets(), &decision, Duration::ZERO)
        });
        let text = telemetry.metrics().encode().expect("encodes");
        assert!(text.contains(
            r#"portcullis_decisions_total{outcome="deny",reason="missing_credential",route="none"} 1"#
        ));
    }

    #[test]
    fn log_format_is_json_unless_text_is_asked_for() {
        assert_eq!("".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>().ok(), Some(LogFormat::Text));
        assert!(matches!(
            "yaml".parse::<LogFormat>(),
            Err(LoggingError::Format(f)) if f == "yaml"
        ));
    }
}
