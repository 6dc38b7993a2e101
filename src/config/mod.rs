//! Configuration: one YAML file (`portcullis.yaml`) → a checked [`Config`], or every problem
//! in it, each located (file:line:column) with its path (`routes[2].require.scopes`).
//!
//! Pipeline: [`load`] reads at most [`MAX_CONFIG_BYTES`]; `source` pre-scans the text (nesting
//! depth, alias expansion budget, repeated keys, and the path → position index);
//! `serde_yaml_ng` parses it into a tree; `raw` deserializes each section and list item on its
//! own (unknown keys rejected) so one mistake does not hide the next; `compile` applies
//! defaults, bounds and cross-field rules. `reload` watches the file for changes.
//!
//! A configuration that fails here must never replace a running one; this module must never
//! read secret file contents or put them in an error.

pub mod compile;
pub mod keys_file;
pub mod raw;
pub mod reload;
pub(crate) mod source;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::authn::api_keys::ApiKeySettings;
use crate::authn::introspection::{ClientSecret, IntrospectionConfig, SecretSource};
use crate::authn::{AuthnSettings, IssuerConfig};
use crate::authz::Route;
pub use crate::decision::ResponseSettings;
use crate::revocation::RevocationConfig;
use source::{Anchor, YamlPath};

/// A validated configuration, ready to build an `Engine` from.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub issuers: Vec<IssuerConfig>,
    pub authn: AuthnSettings,
    pub routes: Vec<Route>,
    pub response: ResponseSettings,
    pub readiness: ReadinessConfig,
    /// `api_keys:`, with the keys file's entries as checked at load; `None` when absent.
    pub api_keys: Option<ApiKeySettings>,
    /// `introspection:`, one entry per issuer, client secrets read at load.
    pub introspection: Vec<IntrospectionConfig>,
    pub telemetry: TelemetryConfig,
    /// `revocation:`; `None` when absent, and then no request is checked against revocations.
    pub revocation: Option<RevocationConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub grpc_listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub admin_listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub connections: ConnectionLimits,
}

/// Bounds on the connections of every listener (`server.connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once on one listener; further clients wait in the kernel's
    /// listen backlog until one closes.
    pub max_per_listener: usize,
    /// Time a client has to send a complete HTTP/1 request head once it has sent its first
    /// byte, and to send its first bytes at all on a new connection (every listener).
    pub header_read_timeout: Duration,
    /// An admin or HTTP `ext_authz` connection with no request in flight for this long is
    /// closed. Not applied to gRPC: Envoy keeps those connections open between checks.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// As many connections per listener as Envoy's default circuit breaker opens to one
    /// cluster.
    pub const DEFAULT_MAX_PER_LISTENER: usize = 1024;
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_per_listener: Self::DEFAULT_MAX_PER_LISTENER,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// The `readiness:` settings: what `/readyz` waits for. (Whether the agent is ready now is
/// `app::state::Readiness`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessConfig {
    /// `/readyz` fails until every issuer has keys (default on).
    pub require_keys: bool,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        Self { require_keys: true }
    }
}

/// The `telemetry:` settings. Read once at start: a reload that changes them asks for a
/// restart (like the listeners).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    pub tracing: TracingConfig,
}

/// `telemetry.tracing`, as written. `None` leaves the choice to the standard `OTEL_*`
/// environment variable, then to the default (`telemetry::otel` resolves them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingConfig {
    /// The OTLP collector; with none here and none in `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`,
    /// tracing is off.
    pub endpoint: Option<String>,
    pub protocol: Option<OtlpProtocol>,
    pub sampler: Option<SamplerKind>,
    /// The ratio of the `*traceidratio` samplers.
    pub ratio: Option<f64>,
    /// Added to (and overriding) the resource attributes of `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
    /// Put the verified subject on the check span (personal data: off by default).
    pub include_subject: bool,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol of `OTEL_EXPORTER_OTLP_PROTOCOL` spelling `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// The samplers of the OpenTelemetry specification (`OTEL_TRACES_SAMPLER` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio,
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio,
}

impl SamplerKind {
    pub const ALL: [Self; 6] = [
        Self::AlwaysOn,
        Self::AlwaysOff,
        Self::TraceIdRatio,
        Self::ParentBasedAlwaysOn,
        Self::ParentBasedAlwaysOff,
        Self::ParentBasedTraceIdRatio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AlwaysOn => "always_on",
            Self::AlwaysOff => "always_off",
            Self::TraceIdRatio => "traceidratio",
            Self::ParentBasedAlwaysOn => "parentbased_always_on",
            Self::ParentBasedAlwaysOff => "parentbased_always_off",
            Self::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Every problem found in a configuration file, each located (file:line:column) with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_errors(.errors))]
pub struct ConfigError {
    pub errors: Vec<LocatedError>,
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    pub file: PathBuf,
    /// 1-based; `None` when the problem has no position (unreadable file).
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Like `routes[2].require.scopes`; empty for the whole document.
    pub path: String,
    pub message: String,
}

impl LocatedError {
    /// A problem of the whole file (no position, no path).
    fn whole_file(file: &Path, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            column: None,
            path: String::new(),
            message,
        }
    }
}

impl std::fmt::Display for LocatedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

fn display_errors(errors: &[LocatedError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Largest configuration file accepted.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// One problem found after the text parsed as YAML, located by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub path: YamlPath,
    pub anchor: Anchor,
    pub message: String,
}

impl Problem {
    pub(crate) fn value(path: YamlPath, message: String) -> Self {
        Self {
            path,
            anchor: Anchor::Value,
            message,
        }
    }

    /// Whether `other` is only a consequence of this problem: at or below its path, or at the
    /// mapping or list that holds it (never the document root).
    fn explains(&self, other: &Problem) -> bool {
        other.path.starts_with(&self.path)
            || (!other.path.0.is_empty() && self.path.parent().as_ref() == Some(&other.path))
    }

    pub(crate) fn key(path: YamlPath, message: String) -> Self {
        Self {
            path,
            anchor: Anchor::Key,
            message,
        }
    }
}

/// Reads, parses and validates the configuration file at `path`.
///
/// Relative file paths inside it (`jwks_file`, TLS files, `shared_secret_file`) resolve
/// against the directory of `path` as given (not of a symlink's target, so a Kubernetes
/// ConfigMap mount behaves like a plain directory).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text =
        read_capped(path, MAX_CONFIG_BYTES, "configuration").map_err(|message| ConfigError {
            errors: vec![LocatedError::whole_file(path, message)],
        })?;
    load_str(&text, path)
}

/// Parses and validates `text` as if read from `path` (used in messages and to resolve
/// relative file paths; the file itself is not read).
pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let whole = |message: String| LocatedError::whole_file(path, message);
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError {
            errors: vec![whole(too_large_message(MAX_CONFIG_BYTES, "configuration"))],
        });
    }
    let (scan, root) = parse_tree(text, path)?;

    let nulls = raw::null_values(&root);
    let mut problems = Vec::new();
    let raw = raw::RawConfig::from_value(root, &mut problems);
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut compiled = compile::compile(raw, base_dir, &mut problems);
    if !nulls.is_empty() {
        // The null already says what is wrong there; what serde and the checks made of it (an
        // empty list, a missing value, a mapping without the key) would only repeat it in other
        // words, at its path or at the mapping that holds it.
        problems.retain(|problem| !nulls.iter().any(|null| null.explains(problem)));
        problems.extend(nulls);
    }
    if let Some(config) = compiled.as_mut()
        && problems.is_empty()
    {
        read_client_secrets(config, &mut problems);
    }
    match compiled {
        Some(mut config) if problems.is_empty() => {
            // The keys file is part of the configuration: a bad one fails the load with its
            // own located problems.
            if let Some(api_keys) = &mut config.api_keys {
                api_keys.entries = std::sync::Arc::new(keys_file::load(&api_keys.file)?);
            }
            Ok(config)
        }
        _ => {
            let mut errors = locate(problems, &scan.index, path);
            if errors.is_empty() {
                errors.push(whole("the configuration is invalid".to_owned()));
            }
            Err(ConfigError { errors })
        }
    }
}

/// Largest client secret file read.
const MAX_SECRET_BYTES: usize = 4096;

/// Reads each `introspection` entry's client secret from its file or environment variable;
/// a missing, empty or unreadable one is a problem at the key that names it. Messages name the
/// file or variable, never the secret.
fn read_client_secrets(config: &mut Config, problems: &mut Vec<Problem>) {
    for (index, entry) in config.introspection.iter_mut().enumerate() {
        let path = YamlPath::root().key("introspection").index(index);
        let read = match &entry.secret_source {
            SecretSource::File(file) => (
                path.key("client_secret_file"),
                read_capped(file, MAX_SECRET_BYTES, "client secret")
                    .map(|text| text.trim().to_owned()),
            ),
            SecretSource::Env(name) => (
                path.key("client_secret_env"),
                std::env::var(name).map_err(|_| {
                    format!("the environment variable `{name}` is not set (or not UTF-8)")
                }),
            ),
        };
        match read {
            (at, Err(message)) => problems.push(Problem::value(at, message)),
            (at, Ok(secret)) if secret.is_empty() => {
                problems.push(Problem::value(at, "the client secret is empty".to_owned()));
            }
            (_, Ok(secret)) => entry.client_secret = ClientSecret::new(secret),
        }
    }
}

/// The pre-scan and the YAML tree of `text` (read from `path`), or its source-level problems:
/// hostile structure, repeated keys, a syntax error.
fn parse_tree(
    text: &str,
    path: &Path,
) -> Result<(source::Scan, serde_yaml_ng::Value), ConfigError> {
    let scan = source::scan(text);
    if !scan.problems.is_empty() {
        return Err(ConfigError {
            errors: scan
                .problems
                .into_iter()
                .map(|problem| LocatedError {
                    file: path.to_owned(),
                    line: Some(problem.mark.line),
                    column: Some(problem.mark.column),
                    path: problem.path,
                    message: problem.message,
                })
                .collect(),
        });
    }
    if let Some((mark, message)) = scan.syntax_error {
        // The pre-scan did not see the whole text, so its depth and alias checks did not
        // either: never build a tree from it. Prefer libyaml's wording when it agrees.
        let error = match serde_yaml_ng::from_str::<serde::de::IgnoredAny>(text) {
            Err(error) => yaml_error(path, &error),
            Ok(_) => LocatedError {
                file: path.to_owned(),
                line: Some(mark.line),
                column: Some(mark.column),
                path: String::new(),
                message: format!("invalid YAML: {message}"),
            },
        };
        return Err(ConfigError {
            errors: vec![error],
        });
    }

    let root: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|error| ConfigError {
            errors: vec![yaml_error(path, &error)],
        })?;
    Ok((scan, root))
}

/// Problems found after parsing, located in `path` by the scan's `index` and sorted by
/// position (stable: problems at the same place keep the order they were found in).
fn locate(problems: Vec<Problem>, index: &source::PositionIndex, path: &Path) -> Vec<LocatedError> {
    let mut errors: Vec<LocatedError> = problems
        .into_iter()
        .map(|problem| {
            let mark = index.locate(&problem.path, problem.anchor);
            LocatedError {
                file: path.to_owned(),
                line: mark.map(|m| m.line),
                column: mark.map(|m| m.column),
                path: problem.path.to_string(),
                message: problem.message,
            }
        })
        .collect();
    errors.sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
    errors
}

fn too_large_message(max: usize, what: &str) -> String {
    format!("the {what} is larger than {max} bytes")
}

/// Reads at most `max` bytes (plus one, to notice more) of `path` as UTF-8; `what` names the
/// file in the message when it is larger.
fn read_capped(path: &Path, max: usize, what: &str) -> Result<String, String> {
    use std::io::Read as _;

    let file = std::fs::File::open(path).map_err(|error| format!("cannot open: {error}"))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read: {error}"))?;
    if bytes.len() > max {
        return Err(too_large_message(max, what));
    }
    String::from_utf8(bytes).map_err(|error| format!("not valid UTF-8: {error}"))
}

/// A `serde_yaml_ng` parse error with its position moved from the message into the fields.
fn yaml_error(path: &Path, error: &serde_yaml_ng::Error) -> LocatedError {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(location) = &location {
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        if let Some(start) = message.find(&suffix) {
            message.replace_range(start..start + suffix.len(), "");
        }
    }
    LocatedError {
        file: path.to_owned(),
        line: location.as_ref().map(serde_yaml_ng::Location::line),
        column: location.as_ref().map(serde_yaml_ng::Location::column),
        path: String::new(),
        message: format!("invalid YAML: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::authn::{Algorithm, KeySource};
    use crate::authz::routes::PathMatch;
    use crate::authz::{OnDeny, Policy, Requirements};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
    }

    /// As if the text were `tests/fixtures/config/test.yaml`, so relative files resolve there.
    fn load_text(text: &str) -> Result<Config, ConfigError> {
        load_str(text, &fixtures().join("test.yaml"))
    }

    fn errors(text: &str) -> Vec<LocatedError> {
        match load_text(text) {
            Ok(_) => panic!("expected errors, the configuration loaded"),
            Err(error) => error.errors,
        }
    }

    fn errors_text(text: &str) -> String {
        match load_text(text) {
            Ok(_) => panic!("expected errors, the configuration loaded"),
            Err(error) => error.to_string(),
        }
    }

    /// `(line, column, path)` of each error, plus the messages for content checks.
    fn located(text: &str) -> Vec<(usize, usize, String, String)> {
        errors(text)
            .into_iter()
            .map(|e| {
                (
                    e.line.expect("has a line"),
                    e.column.expect("has a column"),
                    e.path,
                    e.message,
                )
            })
            .collect()
    }

    const ISSUER: &str = "\
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [api]
    jwks_uri: https://idp.example.com/jwks
    algorithms: [RS256]
";

    fn with_issuer(rest: &str) -> String {
        format!("{ISSUER}{rest}")
    }

    #[test]
    fn dynamic_metadata_is_on_unless_turned_off() {
        let routes = "routes:\n  - {name: all, match: {}, allow: anonymous}\n";
        let on = load_text(routes).unwrap_or_else(|e| panic!("{e}"));
        assert!(on.response.dynamic_metadata);
        let off = load_text(&format!("response: {{dynamic_metadata: false}}\n{routes}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!off.response.dynamic_metadata);
    }

    #[test]
    fn connection_limits_have_defaults_bounds_and_no_unknown_keys() {
        let routes = "routes:\n  - {name: all, match: {}, allow: anonymous}\n";
        let defaults = load_text(routes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(defaults.server.connections, ConnectionLimits::default());
        let set = load_text(&format!(
            "server:\n  connections: {{max_per_listener: 50, header_read_timeout: 2s, \
             idle_timeout: 5m}}\n{routes}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            set.server.connections,
            ConnectionLimits {
                max_per_listener: 50,
                header_read_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(300),
            }
        );
        let bad = located(&format!(
            "server:\n  connections: {{max_per_listener: 0, header_read_timeout: 1ms, \
             idle_timeout: soon}}\n{routes}"
        ));
        let paths: Vec<&str> = bad.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.connections.max_per_listener",
                "server.connections.header_read_timeout",
                "server.connections.idle_timeout"
            ],
            "{bad:?}"
        );
        let unknown = errors(&format!(
            "server:\n  connections: {{max_connections: 10}}\n{routes}"
        ));
        assert!(
            unknown[0]
                .message
                .contains("unknown field `max_connections`"),
            "{unknown:?}"
        );
    }

    #[test]
    fn tracing_is_unset_unless_written_and_keeps_what_is_written() {
        let routes = "routes:\n  - {name: all, match: {}, allow: anonymous}\n";
        let unset = load_text(routes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unset.telemetry.tracing, TracingConfig::default());
        let set = load_text(&format!(
            "telemetry:\n  tracing:\n    endpoint: http://otel-collector:4317\n    \
             protocol: grpc\n    sampler: parentbased_traceidratio\n    ratio: 0.01\n    \
             resource_attributes: {{deployment.environment: prod}}\n    \
             include_subject: true\n{routes}"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            set.telemetry.tracing,
            TracingConfig {
                endpoint: Some("http://otel-collector:4317".to_owned()),
                protocol: Some(OtlpProtocol::Grpc),
                sampler: Some(SamplerKind::ParentBasedTraceIdRatio),
                ratio: Some(0.01),
                resource_attributes: vec![("deployment.environment".into(), "prod".into())],
                include_subject: true,
            }
        );
        let whole_ratio = load_text(&format!("telemetry: {{tracing: {{ratio: 1}}}}\n{routes}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(whole_ratio.telemetry.tracing.ratio, Some(1.0));
    }

    #[test]
    fn bad_tracing_values_are_errors_at_their_place() {
        let routes = "routes:\n  - {name: all, match: {}, allow: anonymous}\n";
        let bad = located(&format!(
            "telemetry:\n  tracing:\n    endpoint: otel-collector:4317\n    \
             protocol: http/json\n    sampler: sometimes\n    ratio: 1.5\n{routes}"
        ));
        let places: Vec<(usize, &str)> = bad.iter().map(|e| (e.0, e.2.as_str())).collect();
        assert_eq!(
            places,
            [
                (3, "telemetry.tracing.endpoint"),
                (4, "telemetry.tracing.protocol"),
                (5, "telemetry.tracing.sampler"),
                (6, "telemetry.tracing.ratio"),
            ],
            "{bad:?}"
        );
        assert!(bad[0].3.contains("unsupported scheme"), "{bad:?}");
        assert!(bad[1].3.contains("`grpc` or `http/protobuf`"), "{bad:?}");
        assert!(bad[2].3.contains("parentbased_traceidratio"), "{bad:?}");
        assert!(bad[3].3.contains("between 0.0 and 1.0"), "{bad:?}");
        for (endpoint, message) in [
            ("http://user:secret@collector:4318", "credentials"),
            ("http://collector:4318/?token=x", "query"),
            ("not a url", "invalid URL"),
        ] {
            let errors = located(&format!(
                "telemetry: {{tracing: {{endpoint: \"{endpoint}\"}}}}\n{routes}"
            ));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].2, "telemetry.tracing.endpoint");
            assert!(errors[0].3.contains(message), "{errors:?}");
            assert!(!errors[0].3.contains("secret"), "{errors:?}");
        }
        let unknown = located(&format!(
            "telemetry: {{tracing: {{sample: 0.1}}}}\n{routes}"
        ));
        assert_eq!(unknown[0].2, "telemetry.tracing.sample", "{unknown:?}");
    }

    #[test]
    fn listeners_may_share_port_zero_but_not_a_real_port() {
        let routes = "routes:\n  - {name: all, match: {}, allow: anonymous}\n";
        let zero = format!(
            "server: {{grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0}}\n{routes}"
        );
        load_text(&zero).unwrap_or_else(|e| panic!("port 0 is always free: {e}"));
        let clash = format!(
            "server: {{grpc_listen: 127.0.0.1:9191, admin_listen: 127.0.0.1:9191}}\n{routes}"
        );
        assert_eq!(errors(&clash)[0].path, "server.admin_listen");
    }

    #[test]
    fn loads_the_example_file() {
        let config = load(&fixtures().join("example.yaml")).expect("example.yaml is valid");
        assert_eq!(config.issuers.len(), 4);
        assert_eq!(config.issuers[0].source, KeySource::Discovery);
        assert_eq!(
            config.issuers[0].algorithms,
            [Algorithm::RS256, Algorithm::ES256]
        );
        assert_eq!(
            config.issuers[0].claim_headers,
            [
                ("email".to_owned(), "x-auth-email".to_owned()),
                ("tenant.id".to_owned(), "x-auth-tenant".to_owned())
            ]
        );
        assert_eq!(
            config.issuers[2].source,
            KeySource::JwksFile(fixtures().join("jwks.json"))
        );
        assert_eq!(
            config.issuers[3].source,
            KeySource::SharedSecretFile(fixtures().join("hmac-secret.txt"))
        );
        let names: Vec<&str> = config.routes.iter().map(|r| &*r.name).collect();
        assert_eq!(
            names,
            [
                "health",
                "list-documents",
                "get-document",
                "files",
                "admin",
                "signed-in"
            ]
        );
        assert_eq!(config.routes[0].policy, Policy::Anonymous);
        assert_eq!(config.routes[2].on_deny, OnDeny::NotFound);
        assert_eq!(config.routes[2].mode, crate::authz::Mode::Enforce);
        assert_eq!(config.routes[3].mode, crate::authz::Mode::Shadow);
        assert_eq!(
            config.routes[5].policy,
            Policy::Require(Requirements::default())
        );
        assert!(matches!(
            config.routes[2].matcher.path,
            PathMatch::Template(_)
        ));
        let Policy::Require(files) = &config.routes[3].policy else {
            panic!("files requires");
        };
        assert_eq!(
            files.when.as_ref().map(|when| when.source()),
            Some("!resource.path.startsWith('private/')")
        );
        assert_eq!(
            config.server.http_listen,
            Some("127.0.0.1:9192".parse().expect("addr"))
        );
    }

    #[test]
    fn applies_defaults_to_a_minimal_file() {
        let config = load_text(&with_issuer(
            "routes:\n  - {name: all, match: {}, allow: authenticated}\n",
        ))
        .expect("valid");
        assert_eq!(
            config.server.grpc_listen,
            "127.0.0.1:9191".parse().expect("addr")
        );
        assert_eq!(
            config.server.admin_listen,
            "127.0.0.1:9901".parse().expect("addr")
        );
        assert_eq!(config.server.http_listen, None);
        assert_eq!(config.server.tls, None);
        assert_eq!(config.authn, AuthnSettings::default());
        assert_eq!(config.response, ResponseSettings::default());
        assert_eq!(config.readiness, ReadinessConfig::default());
        let issuer = &config.issuers[0];
        assert_eq!(issuer.clock_skew, Duration::from_secs(30));
        assert_eq!(issuer.claims, crate::authn::ClaimPaths::default());
        assert_eq!(issuer.refresh, crate::authn::RefreshPolicy::default());
        assert_eq!(issuer.allowed_types, None);
        assert_eq!(issuer.max_lifetime, None);
        assert_eq!(config.routes[0].matcher.path, PathMatch::Any);
        assert_eq!(config.routes[0].on_deny, OnDeny::Forbidden);
        assert_eq!(
            config.routes[0].policy,
            Policy::Require(crate::authz::Requirements::default())
        );
    }

    #[test]
    fn mode_is_enforce_unless_the_route_or_the_file_says_shadow() {
        use crate::authz::Mode;
        let routes = "routes:\n  - {name: a, match: {path: /a}, allow: authenticated}\n  - {name: b, match: {path: /b}, allow: authenticated, mode: shadow}\n  - {name: c, match: {path: /c}, allow: authenticated, mode: enforce}\n";
        let modes = |text: &str| -> Vec<Mode> {
            load_text(text)
                .unwrap_or_else(|e| panic!("{e}"))
                .routes
                .iter()
                .map(|route| route.mode)
                .collect()
        };
        assert_eq!(
            modes(&with_issuer(routes)),
            [Mode::Enforce, Mode::Shadow, Mode::Enforce]
        );
        assert_eq!(
            modes(&with_issuer(&format!("mode: shadow\n{routes}"))),
            [Mode::Shadow, Mode::Shadow, Mode::Enforce]
        );
    }

    #[test]
    fn on_deny_on_an_anonymous_route_and_step_up_without_token_issuers_are_errors() {
        let keys_only = "api_keys: {file: keys.yaml, env: live}\nroutes:\n  - name: pay\n    \
                         match: {path: /pay}\n    require: {scopes: [pay], mfa: true, \
                         max_auth_age: 5m}\n";
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keys.yaml"), "keys: []\n").expect("write keys");
        let config = dir.path().join("portcullis.yaml");
        std::fs::write(&config, keys_only).expect("write config");
        let error = load(&config).expect_err("step-up with API keys alone");
        let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["routes[0].require.mfa", "routes[0].require.max_auth_age"],
            "{error}"
        );
        assert!(
            error.errors[0]
                .message
                .contains("no caller could ever pass")
        );

        let text = with_issuer(
            "routes:\n  - {name: a, match: {path: /a}, allow: anonymous, on_deny: not_found}\n",
        );
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].path, "routes[0].on_deny", "{errors:#?}");
        assert!(errors[0].message.contains("refuses nothing"), "{errors:#?}");
        assert!(errors[0].line.is_some() && errors[0].column.is_some());
    }

    #[test]
    fn a_bad_mode_is_reported_where_it_is_written() {
        let cases = [
            (
                with_issuer(
                    "mode: audit\nroutes:\n  - {name: a, match: {}, allow: authenticated}\n",
                ),
                "mode",
                "unknown variant `audit`",
            ),
            (
                with_issuer(
                    "routes:\n  - {name: a, match: {}, allow: authenticated, mode: Shadow}\n",
                ),
                "routes[0].mode",
                "unknown variant `Shadow`",
            ),
            (
                with_issuer("routes:\n  - {name: a, match: {}, allow: anonymous, mode: shadow}\n"),
                "routes[0].mode",
                "refuses nothing",
            ),
        ];
        for (text, path, message) in cases {
            let errors = errors(&text);
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert_eq!(errors[0].path, path, "{errors:#?}");
            assert!(errors[0].message.contains(message), "{errors:#?}");
            assert!(errors[0].line.is_some() && errors[0].column.is_some());
        }
    }

    #[test]
    fn unknown_key_is_reported_at_the_key() {
        let text = with_issuer(
            "routes:\n  - name: a\n    match: {pathprefix: /a}\n    allow: anonymous\n",
        );
        let errors = located(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (line, column, path, message) = &errors[0];
        assert_eq!((*line, *column), (9, 13));
        assert_eq!(path, "routes[0].match.pathprefix");
        assert!(
            message.starts_with("unknown field `pathprefix`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_top_level_key_is_an_error() {
        let errors = located("server: {}\nroutez: []\n");
        assert_eq!(errors[0].0, 2);
        assert_eq!(errors[0].2, "routez");
        assert!(errors[0].3.contains("unknown field `routez`"));
    }

    fn when_route(when: &str) -> String {
        with_issuer(&format!(
            "routes:\n  - name: doc\n    match: {{path: \"/users/{{owner_id}}\"}}\n    require:\n      when: {when}\n"
        ))
    }

    #[test]
    fn a_when_condition_compiles_into_the_routes_requirements() {
        let config = load_text(&when_route("\"resource.owner_id == subject.sub\""))
            .unwrap_or_else(|e| panic!("{e}"));
        let Policy::Require(requirements) = &config.routes[0].policy else {
            panic!("a require route");
        };
        let when = requirements.when.as_ref().expect("a condition");
        assert_eq!(when.source(), "resource.owner_id == subject.sub");
        assert!(requirements.scopes.is_empty());
    }

    #[test]
    fn a_when_that_does_not_compile_is_reported_at_its_value_with_the_expressions_column() {
        for (when, says) in [
            (
                "\"subject.sub == \"",
                "(CEL, line 1, column 16 of the expression)",
            ),
            ("\"user.admin\"", "unknown variable `user`"),
            (
                "\"request.methd == 'GET'\"",
                "`request` has no field `methd`",
            ),
            ("\"1 + 'a' == 2\"", "always fails"),
            ("request.path", "must give a bool"),
            ("42", "a CEL expression"),
            ("\"\"", "empty"),
        ] {
            let errors = located(&when_route(when));
            assert_eq!(errors.len(), 1, "{when}: {errors:?}");
            let (line, column, path, message) = &errors[0];
            assert_eq!((*line, *column), (11, 13), "{when}");
            assert_eq!(path, "routes[0].require.when", "{when}");
            assert!(message.contains(says), "{when}: {message}");
        }
    }

    const CLASSIC_ROLES: &str = "\
roles:
  admin: {permissions: [delete, admin], includes: [user]}
  user: {permissions: [write], includes: [viewer]}
  viewer: [read]
";

    fn rbac_route(require: &str) -> String {
        with_issuer(&format!(
            "{CLASSIC_ROLES}routes:\n  - name: docs\n    match: {{path: /docs}}\n    require: {require}\n"
        ))
    }

    #[test]
    fn roles_resolve_includes_into_each_roles_permissions() {
        let config = load_text(&rbac_route(
            "{roles: [admin, user], permissions: [read, write]}",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let Policy::Require(requirements) = &config.routes[0].policy else {
            panic!("a require route");
        };
        assert_eq!(requirements.roles, ["admin", "user"]);
        assert_eq!(requirements.permissions, ["read", "write"]);
        let grants = &requirements.grants;
        let held = |role: &str| vec![role.to_owned()];
        let everything: Vec<String> = ["read", "write", "delete", "admin"]
            .map(str::to_owned)
            .into();
        assert!(grants.missing(&everything, &held("admin")).is_empty());
        assert_eq!(
            grants.missing(&everything, &held("user")),
            ["delete", "admin"]
        );
        assert_eq!(
            grants.missing(&everything, &held("viewer")),
            ["write", "delete", "admin"]
        );
    }

    #[test]
    fn a_role_cycle_is_an_error_naming_its_path_at_the_include_that_closes_it() {
        let errors = located(&with_issuer(
            "roles:\n  admin: {permissions: [admin], includes: [ops]}\n  ops: {includes: [admin]}\n",
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0],
            (
                9,
                20,
                "roles.ops.includes[0]".to_owned(),
                "roles include each other in a cycle: admin → ops → admin".to_owned()
            )
        );
    }

    #[test]
    fn a_role_including_an_undefined_role_is_an_error() {
        let errors = located(&with_issuer(
            "roles:\n  viewer: [read]\n  admin: {includes: [viewer, ghost]}\n",
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].2, "roles.admin.includes[1]");
        assert_eq!(errors[0].3, "role `ghost` is not defined in `roles`");
        assert_eq!((errors[0].0, errors[0].1), (9, 30));
    }

    #[test]
    fn an_undefined_required_role_is_an_error_at_its_place() {
        let errors = located(&rbac_route("{roles: [admin, superuser]}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].2, "routes[0].require.roles[1]");
        assert_eq!(errors[0].3, "role `superuser` is not defined in `roles`");
        assert_eq!((errors[0].0, errors[0].1), (14, 30));
    }

    #[test]
    fn a_required_permission_that_no_role_grants_is_an_error() {
        let errors = located(&rbac_route("{permissions: [read, publish]}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].2, "routes[0].require.permissions[1]");
        assert_eq!(
            errors[0].3,
            "no role in `roles` grants the permission `publish`"
        );
        assert_eq!((errors[0].0, errors[0].1), (14, 35));
    }

    #[test]
    fn required_roles_without_a_roles_section_are_undefined() {
        let errors = located(&with_issuer(
            "routes:\n  - name: docs\n    match: {path: /docs}\n    require: {roles: [admin]}\n",
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].2, "routes[0].require.roles[0]");
    }

    #[test]
    fn empty_role_and_permission_lists_are_refused() {
        for (require, path) in [
            ("{roles: []}", "routes[0].require.roles"),
            ("{permissions: []}", "routes[0].require.permissions"),
        ] {
            let errors = located(&rbac_route(require));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].2, path);
        }
    }

    #[test]
    fn unknown_keys_and_bad_names_in_roles_are_errors_at_their_place() {
        let errors = located(&with_issuer(
            "roles:\n  admin: {permissions: [read], inclues: [user]}\n  \"a,b\": [read]\n  viewer: [\"read all\"]\n  user: 3\n",
        ));
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            [
                "roles.admin.inclues",
                "roles.a,b",
                "roles.viewer[0]",
                "roles.user"
            ],
            "{errors:?}"
        );
        assert!(
            errors[0].3.contains("unknown field `inclues`"),
            "{errors:?}"
        );
        assert_eq!((errors[0].0, errors[0].1), (8, 32));
        assert_eq!((errors[2].0, errors[2].1), (10, 12));
    }

    const INTROSPECTION: &str = "\
introspection:
  - issuer: corp
    endpoint: https://idp.example.com/token/introspection
    client_id: portcullis
    client_secret_file: hmac-secret.txt
";

    #[test]
    fn introspection_loads_with_defaults_and_reads_the_secret_from_its_file() {
        let text = with_issuer(&format!(
            "{INTROSPECTION}routes:\n  - {{name: a, match: {{path: /a}}, require: {{introspect: true}}}}\n"
        ));
        let config = load_text(&text).expect("valid");
        let entry = &config.introspection[0];
        assert_eq!(entry.issuer, "corp");
        assert_eq!(
            entry.endpoint,
            crate::authn::introspection::Endpoint::Url(
                "https://idp.example.com/token/introspection".to_owned()
            )
        );
        assert_eq!(
            entry.auth_method,
            crate::authn::introspection::ClientAuth::ClientSecretBasic
        );
        assert_eq!(entry.cache_ttl, Duration::from_secs(60));
        assert_eq!(entry.negative_cache_ttl, Duration::from_secs(10));
        assert_eq!(entry.timeout, Duration::from_millis(400));
        assert_eq!(entry.max_response_bytes, 64 * 1024);
        assert_eq!(entry.subject, "sub");
        assert!(entry.opaque_tokens);
        let secret = std::fs::read_to_string(fixtures().join("hmac-secret.txt")).expect("fixture");
        assert_ne!(entry.client_secret, ClientSecret::default());
        assert_eq!(
            entry.client_secret,
            ClientSecret::new(secret.trim().to_owned())
        );
        // Never shown, whatever prints the configuration.
        assert!(!format!("{config:?}").contains(secret.trim()));
        let Some(Route {
            policy: crate::authz::Policy::Require(requirements),
            ..
        }) = config.routes.first()
        else {
            panic!("a require route");
        };
        assert!(requirements.introspect);
    }

    #[test]
    fn introspection_mistakes_are_located() {
        let entry = |extra: &str| with_issuer(&format!("{INTROSPECTION}{extra}"));
        let cases = [
            (
                with_issuer(&INTROSPECTION.replace("issuer: corp", "issuer: other")),
                "introspection[0].issuer",
                "no entry of `issuers` is named `other`",
            ),
            (
                entry("    client_secret: hunter2\n"),
                "introspection[0].client_secret",
                "never written into the configuration",
            ),
            (
                entry("    client_secret_env: SECRET\n"),
                "introspection[0].client_secret_env",
                "both set",
            ),
            (
                with_issuer(&INTROSPECTION.replace(
                    "client_secret_file: hmac-secret.txt",
                    "client_secret_env: PORTCULLIS_TEST_UNSET_SECRET_VARIABLE",
                )),
                "introspection[0].client_secret_env",
                "is not set",
            ),
            (
                with_issuer(&INTROSPECTION.replace("https://idp", "http://idp")),
                "introspection[0].endpoint",
                "plain http",
            ),
            (
                entry("    discovery: true\n"),
                "introspection[0].discovery",
                "both set",
            ),
            (
                entry("    auth_method: private_key_jwt\n"),
                "introspection[0].auth_method",
                "client_secret_basic",
            ),
            (
                entry("    cache_ttl: 0s\n"),
                "introspection[0].cache_ttl",
                "outside the allowed range",
            ),
            (
                entry("    max_response_bytes: 10\n"),
                "introspection[0].max_response_bytes",
                "outside the allowed range",
            ),
            (
                entry(
                    "  - issuer: corp\n    discovery: true\n    client_id: b\n    client_secret_file: hmac-secret.txt\n",
                ),
                "introspection[1].issuer",
                "already has an introspection entry",
            ),
            (
                with_issuer(
                    "routes:\n  - {name: a, match: {path: /a}, require: {scopes: [x], introspect: true}}\n",
                ),
                "routes[0].require.introspect",
                "needs an `introspection` entry",
            ),
        ];
        for (text, path, message) in cases {
            let errors = located(&text);
            assert!(
                errors.iter().any(|e| e.2 == path && e.3.contains(message)),
                "{path}: {errors:#?}"
            );
            assert!(
                !errors.iter().any(|e| e.3.contains("hunter2")),
                "{errors:#?}"
            );
        }
    }

    #[test]
    fn revocation_takes_a_file_resolved_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("portcullis.yaml");
        let text = "revocation:\n  file: revoked.yaml\n  max_entries: 10\n";
        let error = load_str(text, &config_path).expect_err("no revoked.yaml");
        assert_eq!(error.errors[0].path, "revocation.file", "{error}");
        assert_eq!(error.errors[0].line, Some(2), "{error}");
        std::fs::write(dir.path().join("revoked.yaml"), "").expect("write");
        let config = load_str(text, &config_path).expect("valid");
        let revocation = config.revocation.expect("revocation");
        assert_eq!(revocation.file, Some(dir.path().join("revoked.yaml")));
        assert_eq!(revocation.max_entries, 10);
        assert!(revocation.require_sync);
        let none = load_str("revocation: {max_entries: 0}\n", &config_path).expect_err("no source");
        let paths: Vec<_> = none.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["revocation", "revocation.max_entries"], "{none}");
        assert_eq!(load_text("{}\n").ok().and_then(|c| c.revocation), None);
    }

    #[test]
    fn revocation_http_takes_an_https_or_loopback_url_and_an_interval() {
        let config = load_text("revocation: {http: {url: 'https://feed.example/revoked'}}\n")
            .expect("valid");
        let feed = config.revocation.and_then(|r| r.http).expect("http");
        assert_eq!(feed.interval, Duration::from_secs(30));
        let paths =
            |text: &str| -> Vec<String> { errors(text).into_iter().map(|e| e.path).collect() };
        assert_eq!(
            paths("revocation: {http: {url: 'http://feed.example/r'}}\n"),
            ["revocation.http.url"]
        );
        assert_eq!(
            paths("revocation: {http: {url: 'https://f.example/r', interval: 100ms}}\n"),
            ["revocation.http.interval"]
        );
        load_text("revocation: {http: {url: 'http://127.0.0.1:8080/r', interval: 1s}}\n")
            .expect("plain http to loopback");
    }

    #[test]
    fn revocation_redis_takes_a_redis_url_and_never_echoes_it() {
        let config = load_text("revocation: {redis: {url: 'redis://:s3cret@127.0.0.1:6379/0'}}\n")
            .expect("valid");
        let redis = config.revocation.and_then(|r| r.redis).expect("redis");
        assert_eq!(redis.channel, "portcullis:revocations");
        assert_eq!(redis.key_prefix, "portcullis:revoked:");
        assert!(!format!("{redis:?}").contains("s3cret"));
        for url in ["http://:s3cret@x", "rediss://:s3cret@", "not a url s3cret"] {
            let errors = errors(&format!("revocation: {{redis: {{url: '{url}'}}}}\n"));
            assert_eq!(errors[0].path, "revocation.redis.url", "{url}");
            assert!(!errors[0].to_string().contains("s3cret"), "{}", errors[0]);
        }
        // TLS: rediss://, with the CA file only there.
        let tls = load_text("revocation: {redis: {url: 'rediss://:s3cret@redis.internal:6380'}}\n")
            .expect("rediss is TLS");
        let tls = tls.revocation.and_then(|r| r.redis).expect("redis");
        assert_eq!(tls.ca_file, None);
        let errors = errors(
            "revocation: {redis: {url: 'redis://127.0.0.1:6379', ca_file: /etc/ssl/ca.pem}}\n",
        );
        assert_eq!(errors[0].path, "revocation.redis.ca_file");
        assert!(errors[0].message.contains("rediss://"), "{}", errors[0]);
    }

    #[test]
    fn collects_errors_from_every_item() {
        let text = "\
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [api]
    jwks_uri: https://idp.example.com/jwks
    algorithms: [RS265]
  - name: other
    issuer: https://other.example.com
    audiences: [api]
    jwks_uri: https://other.example.com/jwks
    algorithms: [ES256]
    clock_skew: soon
routes:
  - name: a
    match: {path: /a}
  - name: b
    match: {path: \"/b/{id\"}
    allow: anonymous
  - name: c
    match: {path: /c}
    require: {scopes: [\"two words\"]}
";
        let errors = located(text);
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            [
                "issuers[0].algorithms[0]",
                "issuers[1].clock_skew",
                "routes[0]",
                "routes[1].match.path",
                "routes[2].require.scopes[0]"
            ],
            "{errors:#?}"
        );
        assert_eq!((errors[0].0, errors[0].1), (6, 18));
        assert_eq!((errors[1].0, errors[1].1), (12, 17));
        assert_eq!(errors[2].0, 14);
        assert_eq!(errors[3].0, 17);
        assert_eq!(errors[4].0, 21);
    }

    #[test]
    fn collects_several_errors_within_one_item() {
        let text = with_issuer(
            "routes:\n  - name: a\n    match: {path: /a, method: [GET]}\n    allow: anonymous\n    on_deny: nope\n    colour: blue\n",
        );
        let errors = located(&text);
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].match.method",
                "routes[0].on_deny",
                "routes[0].colour"
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn a_removed_required_key_is_not_reported_as_missing() {
        let text =
            with_issuer("routes:\n  - name: 'has space'\n    match: {}\n    allow: anonymous\n");
        let errors = located(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].2, "routes[0].name");
    }

    #[test]
    fn missing_required_field_points_at_the_item() {
        let errors = located(
            "issuers:\n  - name: corp\n    audiences: [api]\n    jwks_uri: https://x.example/jwks\n    algorithms: [RS256]\n",
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!((errors[0].0, errors[0].1), (2, 5));
        assert_eq!(errors[0].2, "issuers[0]");
        assert_eq!(errors[0].3, "missing field `issuer`");
    }

    #[test]
    fn display_prints_file_line_column_path_message() {
        let error = load_str(
            "server: {grpc_listen: nowhere}\n",
            Path::new("/etc/portcullis.yaml"),
        )
        .expect_err("invalid address");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "/etc/portcullis.yaml:1:23: server.grpc_listen: invalid listen address `nowhere`"
            ),
            "{text}"
        );
    }

    #[test]
    fn route_without_allow_or_require_is_an_error() {
        let errors = located(&with_issuer(
            "routes:\n  - name: a\n    match: {path: /a}\n",
        ));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].2, "routes[0]");
        assert!(errors[0].3.contains("no implicit allow"), "{}", errors[0].3);
    }

    #[test]
    fn route_with_both_allow_and_require_is_an_error() {
        let errors = located(&with_issuer(
            "routes:\n  - {name: a, match: {}, allow: anonymous, require: {scopes: [a]}}\n",
        ));
        assert!(errors[0].3.contains("not both"));
    }

    #[test]
    fn duplicate_route_names_point_at_the_second() {
        let errors = located(&with_issuer(
            "routes:\n  - {name: a, match: {path: /a}, allow: anonymous}\n  - {name: a, match: {path: /b}, allow: anonymous}\n",
        ));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!((errors[0].0, errors[0].1), (9, 12));
        assert_eq!(errors[0].2, "routes[1].name");
        assert!(errors[0].3.contains("already used by routes[0]"));
    }

    #[test]
    fn duplicate_issuer_names_and_iss_values_are_errors() {
        let text = format!(
            "{ISSUER}  - name: corp\n    issuer: https://idp.example.com\n    audiences: [api]\n    jwks_uri: https://idp.example.com/jwks\n    algorithms: [RS256]\n"
        );
        let errors = located(&text);
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(paths, ["issuers[1].name", "issuers[1].issuer"]);
    }

    #[test]
    fn algorithm_none_is_rejected_in_any_case() {
        for none in ["none", "None", "NONE"] {
            let text = ISSUER.replace("[RS256]", &format!("[{none}]"));
            let errors = located(&text);
            assert!(errors[0].3.contains("`none` is never accepted"), "{none}");
            assert_eq!(errors[0].2, "issuers[0].algorithms[0]");
        }
    }

    #[test]
    fn algorithm_names_are_case_sensitive_with_a_hint() {
        let errors = located(&ISSUER.replace("[RS256]", "[rs256]"));
        assert!(errors[0].3.contains("write `RS256`"), "{}", errors[0].3);
    }

    #[test]
    fn hmac_algorithms_need_a_shared_secret() {
        let errors = located(&ISSUER.replace("[RS256]", "[RS256, HS256]"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].2, "issuers[0].algorithms[1]");
        assert!(
            errors[0]
                .3
                .contains("only allowed with `shared_secret_file`")
        );
    }

    #[test]
    fn shared_secret_only_with_hmac_algorithms() {
        let text = "issuers:\n  - name: s\n    issuer: internal\n    audiences: [api]\n    shared_secret_file: hmac-secret.txt\n    algorithms: [HS256, RS256]\n";
        let errors = located(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].2, "issuers[0].algorithms[1]");
        assert!(errors[0].3.contains("needs a public key"));
    }

    #[test]
    fn issuer_needs_exactly_one_key_source() {
        let none = ISSUER.replace("    jwks_uri: https://idp.example.com/jwks\n", "");
        assert!(located(&none)[0].3.contains("no key source"));
        let two = ISSUER.replace(
            "    jwks_uri: https://idp.example.com/jwks\n",
            "    jwks_uri: https://idp.example.com/jwks\n    discovery: true\n",
        );
        let errors = located(&two);
        assert_eq!(errors[0].2, "issuers[0]");
        assert!(
            errors[0].3.contains("`jwks_uri` and `discovery`"),
            "{}",
            errors[0].3
        );
        let off = ISSUER.replace(
            "    jwks_uri: https://idp.example.com/jwks\n",
            "    discovery: false\n",
        );
        assert!(located(&off)[0].3.contains("no key source"));
    }

    #[test]
    fn plain_http_key_urls_only_for_loopback_or_when_allowed() {
        let remote = ISSUER.replace(
            "https://idp.example.com/jwks",
            "http://idp.example.com/jwks",
        );
        let errors = located(&remote);
        assert_eq!(errors[0].2, "issuers[0].jwks_uri");
        assert!(errors[0].3.contains("allow_insecure_http"));
        for loopback in [
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]/jwks",
        ] {
            let text = ISSUER.replace("https://idp.example.com/jwks", loopback);
            assert!(load_text(&text).is_ok(), "{loopback}");
        }
        let allowed = format!("{remote}    allow_insecure_http: true\n");
        assert!(load_text(&allowed).is_ok());
    }

    /// The same table the fetcher runs (`authn::jwks`): the check refuses exactly what a fetch
    /// would refuse.
    #[test]
    fn key_urls_follow_the_fetchers_url_rule() {
        for &(url, allowed) in crate::fetch::URL_RULE_CASES {
            let text = ISSUER.replace("https://idp.example.com/jwks", url);
            match load_text(&text) {
                Ok(_) => assert!(allowed, "{url} should have been refused"),
                Err(error) => {
                    assert!(!allowed, "{url} should have loaded: {error}");
                    let errors = &error.errors;
                    assert_eq!(errors[0].path, "issuers[0].jwks_uri", "{url}");
                    assert!(!errors[0].message.contains("pw"), "{}", errors[0].message);
                }
            }
        }
    }

    #[test]
    fn discovery_needs_an_issuer_url() {
        let text = ISSUER
            .replace("https://idp.example.com\n", "corp-idp\n")
            .replace(
                "    jwks_uri: https://idp.example.com/jwks\n",
                "    discovery: true\n",
            );
        let errors = located(&text);
        assert_eq!(errors[0].2, "issuers[0].issuer");
    }

    #[test]
    fn key_urls_must_not_carry_credentials() {
        let text = ISSUER.replace(
            "https://idp.example.com/jwks",
            "https://user:pw@idp.example.com/jwks",
        );
        let errors = located(&text);
        assert!(errors[0].3.contains("credentials"));
        assert!(
            !errors[0].3.contains("pw"),
            "the password must not be echoed"
        );
    }

    #[test]
    fn clock_skew_is_bounded() {
        let errors = located(&format!("{ISSUER}    clock_skew: 10m\n"));
        assert_eq!(errors[0].2, "issuers[0].clock_skew");
        assert!(errors[0].3.contains("maximum"));
        assert!(load_text(&format!("{ISSUER}    clock_skew: 5m\n")).is_ok());
    }

    #[test]
    fn durations_must_be_strings_with_units() {
        let errors = located(&format!("{ISSUER}    clock_skew: 30\n"));
        assert!(
            errors[0].3.contains("expected a duration such as `30s`"),
            "{}",
            errors[0].3
        );
        let errors = located(&format!("{ISSUER}    clock_skew: 30 seconds please\n"));
        assert!(errors[0].3.contains("invalid duration"));
    }

    #[test]
    fn refresh_bounds_are_checked() {
        let text = format!(
            "{ISSUER}    refresh: {{min_interval: 10m, max_interval: 1m, timeout: 0s, max_document_bytes: 10}}\n"
        );
        let errors = located(&text);
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            [
                "issuers[0].refresh.max_interval",
                "issuers[0].refresh.timeout",
                "issuers[0].refresh.max_document_bytes"
            ]
        );
    }

    #[test]
    fn claim_headers_must_be_valid_and_unreserved() {
        for (header, expect) in [
            ("X-Email", "lower case"),
            ("x-auth-subject", "reserved"),
            ("authorization", "reserved"),
            ("connection", "reserved"),
            ("x-envoy-original-path", "reserved"),
            ("':path'", "pseudo-header"),
            ("'x email'", "invalid header name"),
        ] {
            let text = format!("{ISSUER}    claim_headers: {{email: {header}}}\n");
            let errors = located(&text);
            assert_eq!(errors[0].2, "issuers[0].claim_headers.email", "{header}");
            assert!(errors[0].3.contains(expect), "{header}: {}", errors[0].3);
        }
    }

    #[test]
    fn two_claims_cannot_set_the_same_header() {
        let text = format!("{ISSUER}    claim_headers: {{email: x-user, mail: x-user}}\n");
        let errors = located(&text);
        assert_eq!(errors[0].2, "issuers[0].claim_headers.mail");
    }

    #[test]
    fn claim_paths_are_dotted_names() {
        let errors = located(&format!(
            "{ISSUER}    claims: {{roles: realm_access..roles}}\n"
        ));
        assert_eq!(errors[0].2, "issuers[0].claims.roles");
    }

    #[test]
    fn invalid_templates_are_located_config_errors() {
        for (template, expect) in [
            ("/a/{id", "unbalanced"),
            ("/a/{id}/{id}", "bound twice"),
            ("/a/{}", "empty parameter name"),
            ("/a/{rest...}/b", "must be the last segment"),
        ] {
            let text = with_issuer(&format!(
                "routes:\n  - name: r\n    match:\n      path: \"{template}\"\n    allow: anonymous\n"
            ));
            let errors = located(&text);
            assert_eq!(errors.len(), 1, "{template}");
            assert_eq!((errors[0].0, errors[0].1), (10, 13), "{template}");
            assert_eq!(errors[0].2, "routes[0].match.path");
            assert!(errors[0].3.contains(expect), "{template}: {}", errors[0].3);
        }
    }

    #[test]
    fn route_paths_must_be_normalized() {
        for (path, expect) in [
            ("/%61dmin", "write `/admin`"),
            ("/a/../b", "`.` or `..`"),
            ("/a//b", "empty segment"),
            ("/a?x=1", "query strings never take part"),
            ("admin", "not absolute"),
        ] {
            let text = with_issuer(&format!(
                "routes:\n  - {{name: r, match: {{path_prefix: \"{path}\"}}, allow: anonymous}}\n"
            ));
            let errors = located(&text);
            assert_eq!(errors[0].2, "routes[0].match.path_prefix", "{path}");
            assert!(errors[0].3.contains(expect), "{path}: {}", errors[0].3);
        }
    }

    #[test]
    fn path_and_path_prefix_are_exclusive() {
        let errors = located(&with_issuer(
            "routes:\n  - {name: r, match: {path: /a, path_prefix: /a}, allow: anonymous}\n",
        ));
        assert_eq!(errors[0].2, "routes[0].match");
    }

    #[test]
    fn methods_are_upper_case() {
        let errors = located(&with_issuer(
            "routes:\n  - {name: r, match: {methods: [get]}, allow: anonymous}\n",
        ));
        assert_eq!(errors[0].2, "routes[0].match.methods[0]");
        assert!(errors[0].3.contains("write `GET`"));
    }

    #[test]
    fn host_is_lower_cased_and_has_no_port() {
        let config = load_text(&with_issuer(
            "routes:\n  - {name: r, match: {host: API.Example.com}, allow: anonymous}\n",
        ))
        .expect("valid");
        assert_eq!(
            config.routes[0].matcher.host.as_deref(),
            Some("api.example.com")
        );
        let errors = located(&with_issuer(
            "routes:\n  - {name: r, match: {host: \"api.example.com:443\"}, allow: anonymous}\n",
        ));
        assert!(errors[0].3.contains("without a port"));
    }

    #[test]
    fn shadowed_routes_are_errors() {
        let errors = located(&with_issuer(
            "routes:\n  - {name: all, match: {path_prefix: /}, allow: anonymous}\n  - {name: admin, match: {path_prefix: /admin}, require: {scopes: [admin]}}\n",
        ));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].2, "routes[1].match");
        assert!(errors[0].3.contains("can never match"));
        let ok = load_text(&with_issuer(
            "routes:\n  - {name: admin, match: {path_prefix: /admin}, require: {scopes: [admin]}}\n  - {name: all, match: {path_prefix: /}, allow: anonymous}\n",
        ));
        assert!(ok.is_ok());
        let narrower_methods = load_text(&with_issuer(
            "routes:\n  - {name: get, match: {methods: [GET], path_prefix: /}, allow: anonymous}\n  - {name: all, match: {path: /a}, allow: authenticated}\n",
        ));
        assert!(narrower_methods.is_ok());
    }

    #[test]
    fn routes_that_require_tokens_need_issuers() {
        let errors = located("routes:\n  - {name: r, match: {}, require: {scopes: [read]}}\n");
        assert_eq!(errors[0].2, "routes[0].require");
        assert!(errors[0].3.contains("no `issuers`"));
        let errors = located("routes:\n  - {name: r, match: {}, allow: authenticated}\n");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].2, "routes[0].allow");
        assert!(errors[0].3.contains("no `issuers`"));
    }

    #[test]
    fn allow_authenticated_accepts_any_valid_token() {
        let config = load_text(&with_issuer(
            "routes:\n  - {name: me, match: {path: /me}, allow: authenticated}\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.routes[0].policy,
            Policy::Require(Requirements::default())
        );
    }

    /// `require: {}` and `require: {scopes: []}` read as restrictions but demand nothing, and
    /// are what a file cut short leaves behind: refused, pointing at `allow: authenticated`.
    #[test]
    fn require_that_demands_nothing_is_an_error() {
        for (route, path) in [
            ("{name: r, match: {}, require: {}}", "routes[0].require"),
            (
                "{name: r, match: {}, require: {scopes: []}}",
                "routes[0].require.scopes",
            ),
        ] {
            let errors = located(&with_issuer(&format!("routes:\n  - {route}\n")));
            assert_eq!(errors.len(), 1, "{route}: {errors:#?}");
            assert_eq!(errors[0].2, path, "{route}");
            assert!(
                errors[0].3.contains("write `allow: authenticated`"),
                "{route}: {}",
                errors[0].3
            );
        }
    }

    /// issue 8, item 7: a file cut off after `scopes:` loaded as "any valid token".
    #[test]
    fn a_file_cut_off_after_scopes_is_refused_at_the_key() {
        let text = with_issuer(
            "routes:\n  - name: reports\n    match: {path: /reports}\n    require:\n      scopes:\n",
        );
        let errors = located(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let (line, column, path, message) = &errors[0];
        assert_eq!((*line, *column), (11, 7), "{message}");
        assert_eq!(path, "routes[0].require.scopes");
        assert!(message.starts_with("null is not allowed"), "{message}");
        assert!(message.contains("`allow: authenticated`"), "{message}");
        let display = errors_text(&text);
        assert!(
            display.contains("test.yaml:11:7: routes[0].require.scopes: null is not allowed"),
            "{display}"
        );
    }

    /// A null never means "absent", "empty" or "default", whatever the key: each one is an
    /// error at its own path, and the only error there.
    #[test]
    fn null_is_an_error_for_every_key() {
        let route = "  - {name: r, match: {path: /r}, allow: anonymous}\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("server:\nroutes:\n{route}"), "server"),
            ("routes:\n".to_owned(), "routes"),
            (
                format!("server: {{http_listen: ~}}\nroutes:\n{route}"),
                "server.http_listen",
            ),
            (
                format!("server: {{tls: null}}\nroutes:\n{route}"),
                "server.tls",
            ),
            (
                format!("limits: {{failed_attempts: ~}}\nroutes:\n{route}"),
                "limits.failed_attempts",
            ),
            (
                format!("limits: {{max_token_bytes: ~}}\nroutes:\n{route}"),
                "limits.max_token_bytes",
            ),
            (
                format!("response: {{strip_credentials: ~}}\nroutes:\n{route}"),
                "response.strip_credentials",
            ),
            (
                format!("readiness: {{require_keys: ~}}\nroutes:\n{route}"),
                "readiness.require_keys",
            ),
            (
                with_issuer(&format!("    audiences: ~\nroutes:\n{route}"))
                    .replace("    audiences: [api]\n", ""),
                "issuers[0].audiences",
            ),
            (
                with_issuer(&format!("    claims: {{roles: ~}}\nroutes:\n{route}")),
                "issuers[0].claims.roles",
            ),
            (
                with_issuer(&format!(
                    "    claim_headers: {{email: ~}}\nroutes:\n{route}"
                )),
                "issuers[0].claim_headers.email",
            ),
            (
                with_issuer(&format!("    types: [at+jwt, ~]\nroutes:\n{route}")),
                "issuers[0].types[1]",
            ),
            (with_issuer("routes:\n  -\n"), "routes[0]"),
            (
                with_issuer("routes:\n  - {name: r, match: ~, allow: anonymous}\n"),
                "routes[0].match",
            ),
            (
                with_issuer("routes:\n  - {name: r, match: {methods: ~}, allow: anonymous}\n"),
                "routes[0].match.methods",
            ),
            (
                with_issuer("routes:\n  - {name: r, match: {path: ~}, allow: anonymous}\n"),
                "routes[0].match.path",
            ),
            (
                with_issuer("routes:\n  - {name: ~, match: {}, allow: anonymous}\n"),
                "routes[0].name",
            ),
            (
                with_issuer("routes:\n  - {name: r, match: {}, allow: ~}\n"),
                "routes[0].allow",
            ),
            (
                with_issuer("routes:\n  - {name: r, match: {}, require: ~}\n"),
                "routes[0].require",
            ),
            (
                with_issuer("routes:\n  - {name: r, match: {}, require: {scopes: null}}\n"),
                "routes[0].require.scopes",
            ),
            (
                with_issuer("routes:\n  - {name: r, match: {}, require: {scopes: [a, ~]}}\n"),
                "routes[0].require.scopes[1]",
            ),
            (
                with_issuer("routes:\n  - {name: r, match: {}, allow: anonymous, on_deny: ~}\n"),
                "routes[0].on_deny",
            ),
        ];
        for (text, path) in cases {
            let errors = errors(&text);
            let nulls: Vec<&LocatedError> = errors
                .iter()
                .filter(|e| e.message.starts_with("null is not allowed"))
                .collect();
            assert_eq!(nulls.len(), 1, "{path}: {errors:#?}");
            assert_eq!(nulls[0].path, path, "{errors:#?}");
            assert!(
                nulls[0].line.is_some() && nulls[0].column.is_some(),
                "{path}: no location"
            );
            assert!(
                !errors
                    .iter()
                    .any(|e| e.path.starts_with(path) && !e.message.starts_with("null")),
                "{path}: the null is reported twice: {errors:#?}"
            );
        }
    }

    #[test]
    fn no_route_status_is_404_or_403() {
        let config = load_text(&with_issuer("response: {no_route_status: 403}\n")).expect("valid");
        assert_eq!(config.response.no_route_status, 403);
        let errors = located(&with_issuer("response: {no_route_status: 401}\n"));
        assert_eq!(errors[0].2, "response.no_route_status");
    }

    #[test]
    fn limits_are_bounded() {
        let errors = located(&with_issuer(
            "limits: {max_token_bytes: 10, token_cache_entries: 100000000}\n",
        ));
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            ["limits.max_token_bytes", "limits.token_cache_entries"]
        );
    }

    #[test]
    fn failed_attempts_are_off_unless_configured() {
        use crate::authn::attempts::AttemptQuota;

        // Off by default (issue 8): keyed on a shared address, the limiter let one stranger's
        // failures refuse every client behind the same gateway.
        let config = load_text(&with_issuer("limits: {max_token_bytes: 8192}\n")).expect("valid");
        assert_eq!(config.authn.failed_attempts, None);
        let config = load_text(&with_issuer("limits: {failed_attempts: off}\n")).expect("valid");
        assert_eq!(config.authn.failed_attempts, None);
        let config = load_text(&with_issuer("limits: {failed_attempts: {}}\n")).expect("valid");
        let on = config.authn.failed_attempts.expect("on");
        assert_eq!(on.quota, AttemptQuota::default());
        assert_eq!(on.client_address, None, "keyed on the peer address");
        let config = load_text(&with_issuer(
            "limits:\n  failed_attempts: {per_source: 5, per: 10m}\n",
        ))
        .expect("valid");
        let quota = config.authn.failed_attempts.expect("on").quota;
        assert_eq!(quota.per_source.get(), 5);
        assert_eq!(quota.per, Duration::from_secs(600));
        let config =
            load_text(&with_issuer("limits: {failed_attempts: {per: 30s}}\n")).expect("valid");
        let quota = config.authn.failed_attempts.expect("on").quota;
        assert_eq!(quota.per_source, AttemptQuota::default().per_source);
        assert_eq!(quota.per, Duration::from_secs(30));
    }

    #[test]
    fn failed_attempts_read_a_client_address_header_only_with_its_trusted_hops() {
        let config = load_text(&with_issuer(
            "limits:\n  failed_attempts:\n    client_address: {header: x-forwarded-for, trusted_hops: 2}\n",
        ))
        .expect("valid");
        let header = config
            .authn
            .failed_attempts
            .and_then(|on| on.client_address)
            .expect("configured");
        assert_eq!(header.name, "x-forwarded-for");
        assert_eq!(header.trusted_hops.get(), 2);

        // Both keys are required: a header without its hops would trust what clients write.
        let errors = located(&with_issuer(
            "limits:\n  failed_attempts:\n    client_address: {header: x-forwarded-for}\n",
        ));
        assert_eq!(errors[0].2, "limits.failed_attempts.client_address");
        assert!(errors[0].3.contains("trusted_hops"), "{}", errors[0].3);

        for (client_address, path, expect) in [
            (
                "{header: X-Forwarded-For, trusted_hops: 1}",
                "header",
                "lower case",
            ),
            (
                "{header: authorization, trusted_hops: 1}",
                "header",
                "credentials",
            ),
            (
                "{header: ':authority', trusted_hops: 1}",
                "header",
                "pseudo-header",
            ),
            (
                "{header: 'x forwarded', trusted_hops: 1}",
                "header",
                "invalid header name",
            ),
            (
                "{header: x-forwarded-for, trusted_hops: 0}",
                "trusted_hops",
                "between 1 and 16",
            ),
            (
                "{header: x-forwarded-for, trusted_hops: 17}",
                "trusted_hops",
                "between 1 and 16",
            ),
        ] {
            let errors = located(&with_issuer(&format!(
                "limits:\n  failed_attempts:\n    client_address: {client_address}\n"
            )));
            assert_eq!(
                (errors[0].0, errors[0].2.as_str()),
                (
                    9,
                    format!("limits.failed_attempts.client_address.{path}").as_str()
                ),
                "{client_address}"
            );
            assert!(
                errors[0].3.contains(expect),
                "{client_address}: {}",
                errors[0].3
            );
        }
        let errors = located(&with_issuer(
            "limits:\n  failed_attempts:\n    client_address: {header: x-forwarded-for, trusted_hops: 1, trust_all: true}\n",
        ));
        assert_eq!(
            errors[0].2,
            "limits.failed_attempts.client_address.trust_all"
        );
    }

    #[test]
    fn failed_attempts_mistakes_are_located() {
        let errors = located(&with_issuer(
            "limits:\n  failed_attempts: {per_source: 0, per: 2d}\n",
        ));
        let places: Vec<(usize, &str)> = errors.iter().map(|e| (e.0, e.2.as_str())).collect();
        assert_eq!(
            places,
            [
                (8, "limits.failed_attempts.per_source"),
                (8, "limits.failed_attempts.per")
            ]
        );
        let errors = located(&with_issuer(
            "limits:\n  failed_attempts: {per_source: 5, burst: 9, per: soon}\n",
        ));
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            ["limits.failed_attempts.burst", "limits.failed_attempts.per"]
        );
        let errors = located(&with_issuer("limits: {failed_attempts: false}\n"));
        assert_eq!(errors[0].2, "limits.failed_attempts");
        assert!(errors[0].3.contains("`off`"), "{}", errors[0].3);
        let errors = located(&with_issuer("limits: {failed_attempts: none}\n"));
        assert_eq!(errors[0].2, "limits.failed_attempts");
    }

    #[test]
    fn listeners_need_distinct_addresses() {
        let errors =
            located("server: {grpc_listen: 127.0.0.1:9000, admin_listen: 127.0.0.1:9000}\n");
        assert_eq!(errors[0].2, "server.admin_listen");
    }

    #[test]
    fn relative_files_resolve_against_the_config_directory() {
        let text = "issuers:\n  - {name: f, issuer: f, audiences: [a], jwks_file: jwks.json, algorithms: [ES256]}\n";
        let config = load_text(text).expect("jwks.json exists next to test.yaml");
        assert_eq!(
            config.issuers[0].source,
            KeySource::JwksFile(fixtures().join("jwks.json"))
        );
        let errors = located(&text.replace("jwks.json", "missing.json"));
        assert_eq!(errors[0].2, "issuers[0].jwks_file");
        assert!(errors[0].3.contains("does not exist"));
    }

    #[test]
    fn tls_files_are_resolved_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        let text =
            "server:\n  tls: {cert_file: cert.pem, key_file: key.pem, client_ca_file: ca.pem}\n";
        let error = load_str(text, &dir.path().join("portcullis.yaml")).expect_err("no ca.pem");
        assert_eq!(error.errors.len(), 1, "{error}");
        assert_eq!(error.errors[0].path, "server.tls.client_ca_file");
        std::fs::write(dir.path().join("ca.pem"), "x").expect("write");
        let config = load_str(text, &dir.path().join("portcullis.yaml")).expect("valid");
        let tls = config.server.tls.expect("tls");
        assert_eq!(tls.cert_file, dir.path().join("cert.pem"));
        assert_eq!(tls.client_ca_file, Some(dir.path().join("ca.pem")));
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(errors("")[0].message.contains("empty"));
        assert!(errors("# only a comment\n")[0].message.contains("empty"));
    }

    #[test]
    fn non_mapping_root_is_an_error() {
        assert!(
            errors("- a\n- b\n")[0]
                .message
                .contains("must be a mapping")
        );
    }

    #[test]
    fn yaml_syntax_errors_are_located() {
        let errors = located("server:\n  grpc_listen: [unclosed\nroutes: []\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].3.starts_with("invalid YAML"), "{}", errors[0].3);
        assert!(errors[0].0 >= 2);
    }

    #[test]
    fn repeated_keys_are_all_reported() {
        let errors = located("server: {}\nserver: {}\nroutes: []\nroutes: []\n");
        let lines: Vec<usize> = errors.iter().map(|e| e.0).collect();
        assert_eq!(lines, [2, 4]);
        assert!(errors[0].3.contains("repeated"));
    }

    #[test]
    fn more_than_one_document_is_an_error() {
        assert!(!errors("server: {}\n---\nserver: {}\n").is_empty());
    }

    #[test]
    fn aliases_within_budget_work() {
        let text = "issuers:\n  - name: a\n    issuer: https://a.example.com\n    audiences: &aud [api]\n    jwks_uri: https://a.example.com/jwks\n    algorithms: &algs [RS256]\n  - name: b\n    issuer: https://b.example.com\n    audiences: *aud\n    jwks_uri: https://b.example.com/jwks\n    algorithms: *algs\n";
        let config = load_text(text).expect("aliases are fine");
        assert_eq!(config.issuers[1].audiences, ["api"]);
    }

    #[test]
    fn errors_inside_an_alias_point_at_the_alias() {
        let text = "issuers:\n  - name: a\n    issuer: https://a.example.com\n    audiences: [api]\n    jwks_uri: https://a.example.com/jwks\n    algorithms: &algs [RS256, rs256]\n  - name: b\n    issuer: https://b.example.com\n    audiences: [api]\n    jwks_uri: https://b.example.com/jwks\n    algorithms: *algs\n";
        let errors = located(text);
        let places: Vec<(usize, usize, &str)> =
            errors.iter().map(|e| (e.0, e.1, e.2.as_str())).collect();
        assert_eq!(
            places,
            [
                (6, 31, "issuers[0].algorithms[1]"),
                (11, 17, "issuers[1].algorithms[1]")
            ]
        );
    }

    // ---- hostile input: each must fail fast with a clear error ----

    fn assert_refused_fast(text: &str, expect: &str) {
        let start = Instant::now();
        let result = load_text(text);
        let elapsed = start.elapsed();
        let error = result.expect_err("hostile input must be refused");
        assert!(
            error.to_string().contains(expect),
            "expected `{expect}` in: {error}"
        );
        // Not a speed target: a guard against the input being expanded or walked before it is
        // refused (an alias bomb would take minutes). 500 ms failed on a loaded 2-core machine
        // with a debug build while the refusal itself takes a few ms.
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    }

    #[test]
    fn refuses_a_billion_laughs_alias_bomb() {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for level in 1..10 {
            let prev = level - 1;
            text.push_str(&format!(
                "a{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert_refused_fast(&text, "alias");
    }

    #[test]
    fn refuses_a_quadratic_alias_blowup() {
        // One big anchor referenced many times: no nesting, still millions of nodes.
        let mut text = String::from("big: &big [");
        text.push_str(&"x,".repeat(20_000));
        text.push_str("x]\nrefs: [");
        text.push_str(&"*big,".repeat(20_000));
        text.push_str("*big]\n");
        assert_refused_fast(&text, "alias");
    }

    #[test]
    fn refuses_a_document_with_too_many_nodes() {
        let text = format!("a: [{}x]\n", "x,".repeat(150_000));
        assert!(text.len() < MAX_CONFIG_BYTES);
        assert_refused_fast(&text, "nodes");
    }

    #[test]
    fn refuses_absurd_flow_nesting() {
        let depth = 100_000;
        let text = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert_refused_fast(&text, "nesting is deeper than");
    }

    #[test]
    fn refuses_absurd_block_nesting() {
        let mut text = String::new();
        for level in 0..200 {
            text.push_str(&" ".repeat(level));
            text.push_str("k:\n");
        }
        assert_refused_fast(&text, "nesting is deeper than");
    }

    #[test]
    fn refuses_a_file_over_the_size_cap() {
        let text = format!("# {}\nserver: {{}}\n", "x".repeat(MAX_CONFIG_BYTES));
        assert_refused_fast(&text, "larger than");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("big.yaml");
        std::fs::write(&file, &text).expect("write");
        let error = load(&file).expect_err("too large");
        assert!(error.to_string().contains("larger than"));
    }

    #[test]
    fn unreadable_file_is_an_error_without_position() {
        let error = load(Path::new("/nonexistent/portcullis.yaml")).expect_err("missing");
        assert_eq!(error.errors[0].line, None);
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/portcullis.yaml: cannot open")
        );
    }

    #[test]
    fn reports_every_mistake_in_the_broken_fixture() {
        let file = fixtures().join("broken.yaml");
        let text = std::fs::read_to_string(&file).expect("fixture");
        let marked: std::collections::BTreeSet<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| line.contains("# <-"))
            .map(|(index, _)| index + 1)
            .collect();
        let error = load(&file).expect_err("broken.yaml is broken");
        let reported: std::collections::BTreeSet<usize> = error
            .errors
            .iter()
            .map(|e| e.line.expect("located"))
            .collect();
        assert_eq!(reported, marked, "{error}");
        // Line 11 has two mistakes (HS256 without a secret, and `none`).
        assert_eq!(error.errors.len(), marked.len() + 1, "{error}");
    }

    #[test]
    fn the_documented_example_is_the_tested_fixture() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let docs = std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs");
        let (_, example) = docs
            .split_once("## Complete example")
            .expect("example section");
        let (_, block) = example.split_once("```yaml\n").expect("yaml block");
        let (block, _) = block.split_once("```").expect("block end");
        let fixture = std::fs::read_to_string(fixtures().join("example.yaml")).expect("fixture");
        let body: String = fixture
            .lines()
            .skip_while(|line| line.starts_with('#') || line.is_empty())
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(block, body, "docs/configuration.md and example.yaml differ");
    }

    const STEP_UP_ROUTE: &str = "routes:\n  - name: transfer\n    match: {path: /transfer}\n";

    #[test]
    fn step_up_requirements_compile_with_their_challenge() {
        let config = load_text(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{mfa: true, acr: [phrh, phr], max_auth_age: 5m}}\n"
        )))
        .unwrap_or_else(|e| panic!("{e}"));
        let Policy::Require(requirements) = &config.routes[0].policy else {
            panic!("a requiring route");
        };
        let step_up = &requirements.step_up;
        assert!(step_up.mfa);
        assert_eq!(step_up.acr, ["phrh", "phr"]);
        assert_eq!(step_up.acr_values.as_deref(), Some("phrh phr"));
        assert_eq!(step_up.max_auth_age, Some(300));
        assert!(requirements.scopes.is_empty());
        assert_eq!(
            config.issuers[0].mfa_methods,
            ["mfa", "otp", "hwk", "sms", "swk"]
        );
    }

    #[test]
    fn step_up_values_are_checked_where_they_are_written() {
        let errors = located(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{mfa: false, acr: [\"a b\"], max_auth_age: soon}}\n"
        )));
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].require.mfa",
                "routes[0].require.acr[0]",
                "routes[0].require.max_auth_age"
            ]
        );
        assert_eq!(errors[2].0, 10);
        assert!(errors[2].3.contains("invalid duration"));
    }

    #[test]
    fn an_empty_acr_list_or_mfa_methods_list_is_an_error() {
        let errors = located(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{acr: []}}\n"
        )));
        assert_eq!(errors[0].2, "routes[0].require.acr");
        let errors = located(&format!(
            "{ISSUER}    mfa_methods: []\n{STEP_UP_ROUTE}    require: {{mfa: true}}\n"
        ));
        assert_eq!(errors[0].2, "issuers[0].mfa_methods");
    }

    #[test]
    fn an_issuer_names_its_own_mfa_methods() {
        let config = load_text(&format!(
            "{ISSUER}    mfa_methods: [hwk, face]\n{STEP_UP_ROUTE}    require: {{mfa: true}}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.issuers[0].mfa_methods, ["hwk", "face"]);
    }

    #[test]
    fn any_scopes_compiles_and_an_empty_one_is_an_error() {
        let config = load_text(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{any_scopes: [\"documents:read\", admin]}}\n"
        )))
        .unwrap_or_else(|e| panic!("{e}"));
        let Policy::Require(requirements) = &config.routes[0].policy else {
            panic!("a requiring route");
        };
        assert_eq!(requirements.any_scopes, ["documents:read", "admin"]);
        assert!(!config.issuers[0].scope_wildcards);

        let errors = located(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{any_scopes: []}}\n"
        )));
        assert_eq!(errors[0].2, "routes[0].require.any_scopes");
        // An empty `scopes` stays an error beside other requirements.
        let errors = located(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{scopes: [], mfa: true}}\n"
        )));
        assert_eq!(errors[0].2, "routes[0].require.scopes");
        let errors = located(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{any_scopes: [\"a b\"]}}\n"
        )));
        assert_eq!(errors[0].2, "routes[0].require.any_scopes[0]");
    }

    #[test]
    fn scope_wildcards_is_an_issuer_switch() {
        let config = load_text(&format!(
            "{ISSUER}    scope_wildcards: true\n{STEP_UP_ROUTE}    require: {{scopes: [a]}}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.issuers[0].scope_wildcards);
        let errors = located(&format!(
            "{ISSUER}    scope_wildcards: yes please\n{STEP_UP_ROUTE}    require: {{scopes: [a]}}\n"
        ));
        assert_eq!(errors[0].2, "issuers[0].scope_wildcards");
    }

    #[test]
    fn request_hygiene_compiles_lower_cased_and_bad_media_types_are_located() {
        let config = load_text(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{scopes: [a], content_types: [Application/JSON, \
             application/merge-patch+json], idempotency_key: true}}\n"
        )))
        .unwrap_or_else(|e| panic!("{e}"));
        let Policy::Require(requirements) = &config.routes[0].policy else {
            panic!("a requiring route");
        };
        assert_eq!(
            requirements.hygiene.content_types,
            ["application/json", "application/merge-patch+json"]
        );
        assert!(requirements.hygiene.idempotency_key);

        let errors = located(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{scopes: [a], content_types: [json, \"application/*\", \
             \"text/plain; charset=utf-8\"], idempotency_key: false}}\n"
        )));
        let paths: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].require.content_types[0]",
                "routes[0].require.content_types[1]",
                "routes[0].require.content_types[2]",
                "routes[0].require.idempotency_key"
            ]
        );
        assert_eq!(errors[0].0, 10);
        assert!(errors[0].3.contains("invalid media type `json`"));
        let errors = located(&with_issuer(&format!(
            "{STEP_UP_ROUTE}    require: {{scopes: [a], content_types: []}}\n"
        )));
        assert_eq!(errors[0].2, "routes[0].require.content_types");
    }
}
