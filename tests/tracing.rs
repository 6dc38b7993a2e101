//! OpenTelemetry traces end to end: the real Envoy 1.40 with the committed
//! `deploy/envoy/envoy-tracing.yaml` (its OpenTelemetry tracer exporting OTLP/gRPC), the
//! portcullis binary exporting to the same test collector (`common::otlp`, the real OTLP
//! service), and an echoing application. What a user relies on: a request through Envoy is
//! one trace in which `portcullis.check` is the child of Envoy's `ext_authz` span, with the
//! decision on it; a denial's span says why; the audit line leads to the trace; a dead
//! collector changes nothing for the checks and its lost spans are counted. The work a check
//! waits for (a key fetch, an introspection call) is a child span of its check; background
//! syncs (key refreshes, each Redis (re)connection, each poll of the revocation feed) are root
//! spans that say what they loaded, or why they failed.

mod common;

use std::time::Duration;

use common::agent::{
    Addrs, BinaryAgent, EnvoyRequest, admin_get, eventually, replace_config, run_binary, status,
    wait_generation, write_config,
};
use common::envoy::{Envoy, free_port, repo_root};
use common::http_server::{HttpServer, JwksServer, Reply};
use common::otlp::{Collector, Received};
use common::redis::RedisServer;
use common::tokens::{self, TestKey};
use common::upstream::Upstream;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// Longest wait for spans to reach the collector (Envoy flushes on a timer).
const SPAN_WAIT: Duration = Duration::from_secs(30);

/// Envoy's span for the `ext_authz` gRPC call (its async client names it after the method).
const EXT_AUTHZ_SPAN: &str = "async envoy.service.auth.v3.Authorization.Check egress";

fn committed_tracing_config() -> String {
    let path = repo_root().join("deploy/envoy/envoy-tracing.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The committed tracing sidecar with test ports: client listener and admin on port 0, the
/// application, portcullis and the collector where the test runs them. Each default port must
/// be found exactly once, so an edit of the committed file cannot leave the test elsewhere.
fn render_tracing_sidecar(app: u16, portcullis: u16, collector: u16) -> String {
    let mut config = committed_tracing_config();
    for (from, to) in [
        ("{address: 0.0.0.0, port_value: 10000}", 0),
        ("{address: 127.0.0.1, port_value: 15000}", 0),
        ("{address: 127.0.0.1, port_value: 8080}", app),
        ("{address: 127.0.0.1, port_value: 9191}", portcullis),
        ("{address: 127.0.0.1, port_value: 4317}", collector),
    ] {
        assert_eq!(
            config.matches(from).count(),
            1,
            "{from} in envoy-tracing.yaml"
        );
        config = config.replace(from, &format!("{{address: 127.0.0.1, port_value: {to}}}"));
    }
    // Envoy's tracer flushes every 5 s by default; a test does not need to wait that long.
    config.push_str(
        "\nlayered_runtime:\n  layers:\n    - name: test\n      static_layer:\n        \
         tracing.opentelemetry.flush_interval_ms: 200\n        \
         tracing.opentelemetry.min_flush_spans: 1\n",
    );
    config
}

fn portcullis_config(collector: &Collector) -> String {
    format!(
        "server:\n  grpc_listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n\
         telemetry:\n  tracing:\n    endpoint: {}\n    protocol: grpc\n    \
         sampler: parentbased_always_on\n\
         routes:\n  - name: public\n    match: {{path_prefix: /public}}\n    allow: anonymous\n",
        collector.endpoint()
    )
}

/// portcullis with tracing to `collector`, exporting batches every 100 ms and giving up on an
/// export after 1 s (the standard OTEL_* variables).
fn start_portcullis(dir: &std::path::Path, collector: &Collector) -> BinaryAgent {
    let path = write_config(dir, "portcullis.yaml", &portcullis_config(collector));
    let path = path.to_str().expect("utf-8 path");
    BinaryAgent::spawn(
        &["serve", "--config", path],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_SERVICE_NAME", "portcullis-test"),
        ],
    )
}

async fn get(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

fn check_span(spans: &[Received], pick: impl Fn(&Received) -> bool) -> Option<Received> {
    spans
        .iter()
        .find(|s| s.service == "portcullis-test" && s.span.name == "portcullis.check" && pick(s))
        .cloned()
}

/// The first `portcullis.check` span whose `authz.outcome` is `outcome`, once it has arrived.
async fn check_span_with_outcome(collector: &Collector, outcome: &str) -> Received {
    collector
        .wait_for(SPAN_WAIT, |spans| {
            check_span(spans, |s| {
                s.attribute("authz.outcome").as_deref() == Some(outcome)
            })
        })
        .await
        .unwrap_or_else(|| panic!("no {outcome} span; spans: {:#?}", collector.spans()))
}

/// The span `child` names as its parent, once it has arrived.
async fn parent_of(collector: &Collector, child: &Received) -> Received {
    let parent_id = child.parent_span_id();
    collector
        .wait_for(SPAN_WAIT, |spans| {
            spans.iter().find(|s| s.span_id() == parent_id).cloned()
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the parent {parent_id} of {} never arrived; spans: {:#?}",
                child.span.name,
                collector.spans()
            )
        })
}

/// The `portcullis.check` span of `trace` and its CLIENT child span `child`, once both have
/// arrived; fails unless `child` is a CLIENT span whose parent is the check.
async fn check_with_child(collector: &Collector, trace: &str, child: &str) -> (Received, Received) {
    let (check, call) = collector
        .wait_for(SPAN_WAIT, |spans| {
            let in_trace = |name: &str| {
                spans
                    .iter()
                    .find(|s| s.trace_id() == trace && s.span.name == name)
                    .cloned()
            };
            Some((in_trace("portcullis.check")?, in_trace(child)?))
        })
        .await
        .unwrap_or_else(|| panic!("spans of the check: {:#?}", collector.spans()));
    assert_eq!(
        call.parent_span_id(),
        check.span_id(),
        "{child} under the check"
    );
    assert_eq!(call.span.kind, SpanKind::Client as i32, "{call:?}");
    (check, call)
}

async fn dropped_spans(addrs: &Addrs) -> u64 {
    let (_, _, body) = admin_get(addrs, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix("portcullis_trace_spans_dropped_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no portcullis_trace_spans_dropped_total in:\n{body}"))
}

#[test]
fn committed_tracing_sidecar_passes_envoy_validate() {
    for config in [
        committed_tracing_config(),
        render_tracing_sidecar(18080, 19191, 14317),
    ] {
        let Some(result) = Envoy::validate(&config) else {
            return;
        };
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_through_envoy_is_one_trace_with_the_check_under_the_ext_authz_span() {
    let mut collector = Collector::start().await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = start_portcullis(dir.path(), &collector);
    let config = render_tracing_sidecar(
        upstream.port(),
        agent.addrs.grpc.port(),
        collector.addr.port(),
    );
    let Some(envoy) = Envoy::start(&config).await else {
        return;
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // Allowed.
    assert_eq!(get(&client, &envoy.url("/public/orders")).await, 200);
    let allowed = check_span_with_outcome(&collector, "allow").await;
    assert_eq!(
        allowed.span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    for (key, value) in [
        ("route.name", "public"),
        ("authz.reason", "allowed"),
        ("auth.method", "anonymous"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(allowed.attribute(key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(allowed.attribute("auth.subject"), None, "subject is opt-in");

    let ext_authz = parent_of(&collector, &allowed).await;
    assert_eq!(ext_authz.service, "envoy-sidecar");
    assert_eq!(ext_authz.span.name, EXT_AUTHZ_SPAN);
    assert_eq!(ext_authz.trace_id(), allowed.trace_id());
    // One trace: Envoy's ingress span above the ext_authz span, the root of it all.
    let ingress = parent_of(&collector, &ext_authz).await;
    assert_eq!(ingress.service, "envoy-sidecar");
    assert_eq!(ingress.trace_id(), allowed.trace_id());
    assert!(
        ingress.span.parent_span_id.iter().all(|b| *b == 0),
        "the ingress span is the root: {ingress:?}"
    );

    // The audit line leads to the trace.
    let trace_id = allowed.trace_id();
    let audit = agent
        .wait_for_log(
            &format!("\"trace_id\":\"{trace_id}\""),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("no audit event with trace_id {trace_id}"));
    assert!(audit.contains("\"authz.outcome\":\"allow\""), "{audit}");

    // Denied: the span says why, still under Envoy's ext_authz span.
    assert_eq!(get(&client, &envoy.url("/secret")).await, 404);
    let denied = check_span_with_outcome(&collector, "deny").await;
    assert_eq!(
        denied.attribute("authz.reason").as_deref(),
        Some("no_route")
    );
    assert_eq!(
        denied.attribute("http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(
        parent_of(&collector, &denied).await.span.name,
        EXT_AUTHZ_SPAN
    );
    assert_ne!(denied.trace_id(), allowed.trace_id());
    assert_eq!(dropped_spans(&agent.addrs).await, 0);

    // A dead collector: every check is still answered, and the lost spans are counted.
    collector.stop().await;
    for _ in 0..20 {
        assert_eq!(get(&client, &envoy.url("/public/orders")).await, 200);
        assert_eq!(get(&client, &envoy.url("/secret")).await, 404);
    }
    assert_eq!(upstream.hits(), 21);
    let counted = eventually(Duration::from_secs(30), || async {
        dropped_spans(&agent.addrs).await > 0
    })
    .await;
    assert!(
        counted,
        "portcullis_trace_spans_dropped_total stayed 0 with the collector down"
    );
    drop(envoy);
}

/// A key fetch a check has to wait for (a token signed with a key the cached set lacks) is a
/// `portcullis.jwks.fetch` span under that check's span; the background first fetch is a root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_fetch_inside_a_check_is_a_child_span_of_the_check() {
    tokens::install_crypto_provider();
    let collector = Collector::start().await;
    let old = TestKey::rsa().with_kid("old");
    let new = TestKey::rsa_b().with_kid("new");
    let jwks = JwksServer::start(&tokens::jwks(&[&old])).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = start_with_issuer(dir.path(), &collector, &jwks.jwks_url(), "", &[]);
    let first = collector
        .wait_for(SPAN_WAIT, |spans| {
            spans
                .iter()
                .find(|s| s.span.name == "portcullis.jwks.fetch")
                .cloned()
        })
        .await
        .expect("the first key fetch is traced");
    assert!(
        first.span.parent_span_id.iter().all(|b| *b == 0),
        "{first:?}"
    );
    assert_eq!(first.attribute("issuer.name").as_deref(), Some("corp"));

    jwks.set_jwks(&tokens::jwks(&[&old, &new]));
    let token = new.token(&tokens::default_claims("alice", ""));
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut client = agent.client().await;
    let outcome = client
        .check(
            &EnvoyRequest::get("/api/orders")
                .bearer(&token)
                .header("traceparent", parent),
        )
        .await;
    assert!(outcome.allowed(), "{outcome:?}");

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (check, _fetch) = check_with_child(&collector, trace, "portcullis.jwks.fetch").await;
    assert_eq!(check.parent_span_id(), "00f067aa0ba902b7");
    assert_eq!(check.attribute("auth.method").as_deref(), Some("jwt"));
}

/// With only the standard environment variables (no `telemetry:` in the file) portcullis
/// exports over OTLP/HTTP, the specification's default protocol, to `<endpoint>/v1/traces`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_environment_alone_turns_tracing_on_over_otlp_http() {
    let collector = HttpServer::start().await;
    collector.serve(
        "/v1/traces",
        Reply::status(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = "server:\n  grpc_listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n\
                routes:\n  - name: public\n    match: {path_prefix: /public}\n    allow: anonymous\n";
    let path = write_config(dir.path(), "portcullis.yaml", yaml);
    let agent = serving_one_anonymous_check(
        &path,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base_url().as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let exported = eventually(SPAN_WAIT, || async { collector.requests("/v1/traces") > 0 }).await;
    assert!(
        exported,
        "no OTLP/HTTP export reached {}",
        collector.base_url()
    );
    let headers = collector.last_request_headers().expect("a request");
    assert_eq!(
        headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/x-protobuf"[..])
    );
    assert_eq!(dropped_spans(&agent.addrs).await, 0);
}

/// One check of `/public/a`, allowed.
async fn assert_allows_public(agent: &BinaryAgent) {
    let mut client = agent.client().await;
    assert!(
        client
            .check(&EnvoyRequest::get("/public/a"))
            .await
            .allowed()
    );
}

/// The built binary on `config` with `env`, after one allowed check of `/public/a`.
async fn serving_one_anonymous_check(
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> BinaryAgent {
    let agent = BinaryAgent::spawn(
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        env,
    );
    assert_allows_public(&agent).await;
    agent
}

/// A graceful stop exports the spans still queued: with batches due only every minute, the
/// span of the last check reaches the collector because of SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_are_exported_on_graceful_stop() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        dir.path(),
        "portcullis.yaml",
        &portcullis_config(&collector),
    );
    let mut agent = serving_one_anonymous_check(
        &path,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
            ("OTEL_SERVICE_NAME", "portcullis-test"),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        check_span(&collector.spans(), |_| true).is_none(),
        "exported before the stop: the test would prove nothing"
    );
    let status = tokio::task::spawn_blocking(move || agent.terminate())
        .await
        .expect("join");
    assert!(status.success(), "{status}");
    assert!(
        check_span(&collector.spans(), |_| true).is_some(),
        "the queued span was lost at shutdown: {:#?}",
        collector.spans()
    );
}

/// Tracing is set up at start: a reload that changes `telemetry.tracing` applies the rest, keeps
/// the running tracing, and says in `/status` that a restart is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_tracing_asks_for_a_restart() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = portcullis_config(&collector);
    let path = write_config(dir.path(), "portcullis.yaml", &yaml);
    let agent = BinaryAgent::spawn(
        &["serve", "--config", path.to_str().expect("utf-8 path")],
        &[],
    );
    replace_config(
        &path,
        &yaml.replace("sampler: parentbased_always_on", "sampler: always_off"),
    );
    agent.signal("HUP");
    wait_generation(&agent.addrs, 2, SPAN_WAIT).await;
    let report = status(&agent.addrs).await;
    let note = report["config"]["restart_required"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains("telemetry.tracing"), "{report}");
}

/// Name of a revocation sync's span.
const SYNC_SPAN: &str = "portcullis.revocation.sync";

/// The first span named `name` that `pick` accepts, once it has arrived.
async fn span_named(
    collector: &Collector,
    name: &str,
    pick: impl Fn(&Received) -> bool,
) -> Received {
    collector
        .wait_for(SPAN_WAIT, |spans| {
            spans
                .iter()
                .find(|s| s.span.name == name && pick(s))
                .cloned()
        })
        .await
        .unwrap_or_else(|| panic!("no such {name} span; spans: {:#?}", collector.spans()))
}

fn failed(span: &Received) -> bool {
    span.span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
}

fn error_text(span: &Received) -> String {
    span.span
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default()
}

/// A root CLIENT span of a revocation sync from `source`.
fn assert_sync_span(span: &Received, source: &str) {
    assert_eq!(span.service, "portcullis-test");
    assert_eq!(span.attribute("revocation.source").as_deref(), Some(source));
    assert_eq!(span.span.kind, SpanKind::Client as i32, "{span:?}");
    assert!(
        span.span.parent_span_id.iter().all(|b| *b == 0),
        "a sync is background work, a root span: {span:?}"
    );
}

/// portcullis with tracing to `collector` and `revocation: {<sources>}`.
fn start_with_revocation(
    dir: &std::path::Path,
    collector: &Collector,
    sources: &str,
) -> BinaryAgent {
    let yaml = format!(
        "{}revocation: {{{sources}}}\n",
        portcullis_config(collector)
    );
    spawn_traced(&write_config(dir, "portcullis.yaml", &yaml), &[])
}

/// The binary on `config`, exporting batches every 100 ms as `portcullis-test`, with `env`.
fn spawn_traced(config: &std::path::Path, env: &[(&str, &str)]) -> BinaryAgent {
    let mut all = vec![
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "portcullis-test"),
    ];
    all.extend_from_slice(env);
    BinaryAgent::spawn(
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        &all,
    )
}

/// portcullis with tracing to `collector`, issuer `corp` (keys at `jwks_url`), `extra` YAML,
/// and the route `api` (`/api`, any authenticated caller) after `public`.
fn start_with_issuer(
    dir: &std::path::Path,
    collector: &Collector,
    jwks_url: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> BinaryAgent {
    let yaml = format!(
        "issuers:\n  - name: corp\n    issuer: {}\n    audiences: [{}]\n    jwks_uri: {jwks_url}\n    \
         algorithms: [RS256]\n{extra}{}  - name: api\n    match: {{path_prefix: /api}}\n    \
         allow: authenticated\n",
        tokens::ISSUER,
        tokens::AUDIENCE,
        portcullis_config(collector)
    );
    spawn_traced(&write_config(dir, "portcullis.yaml", &yaml), env)
}

/// Each (re)connection to Redis is a `portcullis.revocation.sync` span with the number of
/// entries it loaded; while Redis is down each attempt is a span with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_redis_sync_is_a_span_with_the_entries_it_loaded_or_its_error() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    for jti in ["stolen-1", "stolen-2"] {
        let (status, _, stderr) = run_binary(&[
            "revoke",
            "--redis",
            &url,
            "--jti",
            jti,
            "--expires",
            "2099-01-01T00:00:00Z",
        ]);
        assert!(status.success(), "{stderr}");
    }
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let _agent = start_with_revocation(dir.path(), &collector, &format!("redis: {{url: '{url}'}}"));

    let first = span_named(&collector, SYNC_SPAN, |_| true).await;
    assert_sync_span(&first, "redis");
    assert!(!failed(&first), "{first:?}");
    assert_eq!(first.attribute("revocation.entries").as_deref(), Some("2"));

    // Redis dies: each reconnection attempt is a failed sync, with the reason.
    redis.kill();
    let down = span_named(&collector, SYNC_SPAN, failed).await;
    assert_sync_span(&down, "redis");
    let error = error_text(&down);
    assert!(error.starts_with("redis: "), "{error}");
    assert_eq!(down.attribute("revocation.entries"), None);

    // Back, empty: the reconnection's sync loaded nothing.
    redis.restart_empty();
    let again = span_named(&collector, SYNC_SPAN, |s| {
        !failed(s) && s.attribute("revocation.entries").as_deref() == Some("0")
    })
    .await;
    assert_sync_span(&again, "redis");
    assert_ne!(
        again.trace_id(),
        first.trace_id(),
        "each sync is a trace of its own"
    );
}

/// A Redis unreachable from the start: the failed sync is a span whose error never shows the
/// password of the URL, and checks are answered all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_failed_sync_span_and_checks_go_on() {
    const SECRET: &str = "s3cret-redis-pw";
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("redis://:{SECRET}@127.0.0.1:{}/0", free_port());
    let agent = start_with_revocation(dir.path(), &collector, &format!("redis: {{url: '{url}'}}"));

    let down = span_named(&collector, SYNC_SPAN, failed).await;
    assert_sync_span(&down, "redis");
    let error = error_text(&down);
    assert!(error.starts_with("redis: "), "{error}");
    assert!(
        !error.contains(SECRET),
        "the password reached a span: {error}"
    );
    assert!(
        !error.contains("redis://"),
        "the URL reached a span: {error}"
    );

    assert_allows_public(&agent).await;
}

/// Each poll of the revocation feed is a sync span: the entries read, `304 Not Modified` as
/// unchanged, a failing feed as an error that names the feed without its query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_poll_of_the_revocation_feed_is_a_span_with_what_it_found() {
    const SECRET: &str = "s3cret-feed-key";
    let feed = HttpServer::start().await;
    let document = serde_json::json!({"jtis": [
        {"jti": "stolen-1", "expires": "2099-01-01T00:00:00Z"},
        {"jti": "stolen-2", "expires": "2099-01-01T00:00:00Z"},
        {"jti": "stolen-3", "expires": "2099-01-01T00:00:00Z"},
    ]});
    feed.serve("/revoked", Reply::json(&document).header("etag", "\"v1\""));
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("{}?key={SECRET}", feed.url("/revoked"));
    let _agent = start_with_revocation(
        dir.path(),
        &collector,
        &format!("http: {{url: '{url}', interval: 1s}}"),
    );

    let loaded = span_named(&collector, SYNC_SPAN, |_| true).await;
    assert_sync_span(&loaded, "http");
    assert!(!failed(&loaded), "{loaded:?}");
    assert_eq!(loaded.attribute("revocation.entries").as_deref(), Some("3"));
    assert_eq!(
        loaded.attribute("revocation.unchanged").as_deref(),
        Some("false")
    );

    // The feed answers the ETag it was sent with 304: unchanged, nothing loaded.
    feed.serve(
        "/revoked",
        Reply::status(http::StatusCode::NOT_MODIFIED).header("etag", "\"v1\""),
    );
    let unchanged = span_named(&collector, SYNC_SPAN, |s| {
        s.attribute("revocation.unchanged").as_deref() == Some("true")
    })
    .await;
    assert_sync_span(&unchanged, "http");
    assert!(!failed(&unchanged), "{unchanged:?}");
    assert_eq!(unchanged.attribute("revocation.entries"), None);

    feed.serve(
        "/revoked",
        Reply::status(http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    let down = span_named(&collector, SYNC_SPAN, failed).await;
    assert_sync_span(&down, "http");
    let error = error_text(&down);
    assert!(error.contains(&feed.url("/revoked")), "{error}");
    assert!(error.contains("500"), "{error}");
    assert!(
        !error.contains(SECRET),
        "the feed's query reached a span: {error}"
    );
}

/// An introspection call a check waits for is a `portcullis.introspection` CLIENT span under
/// that check's span, in the trace the request came with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_introspection_call_is_a_child_span_of_its_check() {
    tokens::install_crypto_provider();
    let collector = Collector::start().await;
    let idp = JwksServer::start(&tokens::jwks(&[&TestKey::rsa()])).await;
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    idp.http().serve(
        "/introspect",
        Reply::json(&serde_json::json!({
            "active": true,
            "iss": tokens::ISSUER,
            "aud": tokens::AUDIENCE,
            "sub": "alice",
            "scope": "read",
            "exp": expires,
        })),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let introspection = format!(
        "introspection:\n  - issuer: corp\n    endpoint: {}\n    client_id: portcullis\n    \
         client_secret_env: PORTCULLIS_TEST_INTROSPECTION_SECRET\n",
        idp.http().url("/introspect"),
    );
    let agent = start_with_issuer(
        dir.path(),
        &collector,
        &idp.jwks_url(),
        &introspection,
        &[(
            "PORTCULLIS_TEST_INTROSPECTION_SECRET",
            "introspection-secret",
        )],
    );

    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut client = agent.client().await;
    let outcome = client
        .check(
            &EnvoyRequest::get("/api/orders")
                .bearer("an-opaque-access-token-1234")
                .header("traceparent", parent),
        )
        .await;
    assert!(outcome.allowed(), "{outcome:?}");
    assert_eq!(idp.requests("/introspect"), 1);

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let (check, call) = check_with_child(&collector, trace, "portcullis.introspection").await;
    assert_eq!(check.parent_span_id(), "b7ad6b7169203331");
    assert_eq!(call.attribute("issuer.name").as_deref(), Some("corp"));
    assert!(!failed(&call), "{call:?}");
    assert_eq!(
        check.attribute("auth.method").as_deref(),
        Some("introspection")
    );
}
