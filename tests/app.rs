//! The process around the engine: the CLI (`--version`, `check-config`), the gRPC server with
//! health, TLS and mTLS, the admin endpoints, graceful shutdown, hot reload, the HTTP ext_authz
//! mode and the audit log — with portcullis in-process and as the built binary.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent::{
    Addrs, BinaryAgent, CheckClient, EnvoyRequest, HEALTH_SERVING, InProcessAgent, admin_get,
    eventually, http_check, replace_config, run_binary, status, wait_generation, wait_ready,
    wait_serving, write_config,
};
use common::envoy::missing_tool;

const WAIT: Duration = Duration::from_secs(30);

const GRPC_ANY: &str = "127.0.0.1:0";
const ADMIN_ANY: &str = "127.0.0.2:0";
const HTTP_ANY: &str = "127.0.0.3:0";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/app")
        .join(name)
}

/// `yaml` written to `portcullis.yaml` in a fresh temporary directory, which is deleted when
/// the returned guard drops: bind it for the whole test (`let (_dir, config)`), never to `_`.
fn config_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "portcullis.yaml", yaml);
    (dir, config)
}

/// A configuration on loopback port 0 with anonymous routes `routes` (name, exact path), no
/// issuers, and extra top-level YAML. Each listener has its own loopback address so the
/// configuration never names one address twice, port 0 or not.
fn anonymous_config(routes: &[(&str, &str)], extra: &str) -> String {
    let mut yaml = format!(
        "server:\n  grpc_listen: {GRPC_ANY}\n  admin_listen: {ADMIN_ANY}\n  http_listen: {HTTP_ANY}\n",
    );
    yaml.push_str(extra);
    yaml.push_str("routes:\n");
    for (name, path) in routes {
        yaml.push_str(&format!(
            "  - name: {name}\n    match: {{path: {path}}}\n    allow: anonymous\n"
        ));
    }
    yaml
}

/// [`anonymous_config`] with the route `/public` and `server.connections` set to `connections`
/// (a YAML flow mapping).
fn connections_config(connections: &str) -> String {
    anonymous_config(
        &[("public", "/public")],
        &format!("  connections: {connections}\n"),
    )
}

/// An in-process agent serving [`connections_config`]; keep the directory for the whole test.
async fn connections_agent(connections: &str) -> (tempfile::TempDir, InProcessAgent) {
    let (dir, config) = config_file(&connections_config(connections));
    (dir, InProcessAgent::start_file(&config).await)
}

/// Asserts that the counter `series` (a metric name and its labels) on `/metrics` is at least 1.
async fn assert_counted(addrs: &Addrs, series: &str) {
    let (_, _, metrics) = admin_get(addrs, "/metrics").await;
    let value: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series}:\n{metrics}"));
    assert!(value >= 1, "{metrics}");
}

// ---------------------------------------------------------------------------------------------
// CLI

#[test]
fn version_shows_the_crate_version_and_git_commit() {
    let (status, stdout, _) = run_binary(&["--version"]);
    assert!(status.success());
    let sha = env!("PORTCULLIS_GIT_SHA");
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")) && stdout.contains(sha),
        "{stdout}"
    );
    assert!(
        sha == "unknown" || (sha.len() == 12 && sha.chars().all(|c| c.is_ascii_hexdigit())),
        "commit {sha:?} is not a short git sha"
    );
}

#[test]
fn check_config_accepts_a_valid_file() {
    let (status, stdout, stderr) = run_binary(&[
        "check-config",
        fixture("good.yaml").to_str().expect("utf-8"),
    ]);
    assert!(status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn check_config_rejects_a_broken_file_with_every_error_located() {
    let path = fixture("broken.yaml");
    let (status, stdout, stderr) = run_binary(&["check-config", path.to_str().expect("utf-8")]);
    assert_eq!(status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let located: Vec<&str> = stderr
        .lines()
        .filter(|line| {
            // file:line:column: path: message
            let Some(rest) = line.strip_prefix(path.to_str().expect("utf-8")) else {
                return false;
            };
            let mut parts = rest.splitn(4, ':');
            parts.next() == Some("")
                && parts.next().is_some_and(|l| l.parse::<usize>().is_ok())
                && parts.next().is_some_and(|c| c.parse::<usize>().is_ok())
        })
        .collect();
    assert!(
        located.len() >= 3,
        "expected the three problems located:\n{stderr}"
    );
    assert!(stderr.contains("grpc_lisen"), "{stderr}");
    assert!(stderr.contains("issuers[0].clock_skew"), "{stderr}");
    assert!(stderr.contains("routes[1]"), "{stderr}");
}

#[test]
fn serve_without_a_configuration_file_fails_with_a_hint() {
    let (status, _, stderr) = run_binary(&["serve"]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("--config"), "{stderr}");
}

#[test]
fn serve_reports_a_busy_port_by_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let yaml = anonymous_config(&[("health", "/healthz")], "").replace(
        &format!("grpc_listen: {GRPC_ANY}"),
        &format!("grpc_listen: {addr}"),
    );
    let (_dir, config) = config_file(&yaml);
    let (status, _, stderr) = run_binary(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// gRPC, health, admin

#[tokio::test]
async fn grpc_health_is_serving_and_checks_are_answered() {
    let (_dir, config) = config_file(&anonymous_config(&[("public", "/public")], ""));
    let agent = InProcessAgent::start_file(&config).await;
    let mut client = agent.client().await;

    wait_serving(&client, WAIT).await;
    assert_eq!(
        client
            .health("envoy.service.auth.v3.Authorization")
            .await
            .expect("health of the ext_authz service"),
        HEALTH_SERVING
    );

    let allowed = client
        .check(&EnvoyRequest::get("/public").header("x-auth-subject", "forged"))
        .await;
    assert!(allowed.allowed(), "{allowed:?}");
    assert_eq!(allowed.upstream("x-auth-method"), Some("anonymous"));
    assert!(allowed.removes("x-auth-subject"), "{allowed:?}");

    let denied = client
        .check(&EnvoyRequest::get("/private").request_id("rid-404"))
        .await;
    assert_eq!((denied.code, denied.status), (5, 404));
    assert_eq!(denied.body_json()["request_id"], "rid-404");
    agent.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_report_health_status_and_metrics() {
    let (_dir, config) = config_file(&anonymous_config(&[("public", "/public")], ""));
    let agent = BinaryAgent::start(&config);
    let mut client = agent.client().await;
    client.check(&EnvoyRequest::get("/public")).await;
    client.check(&EnvoyRequest::get("/nowhere")).await;

    let (code, _, _) = admin_get(&agent.addrs, "/healthz").await;
    assert_eq!(code, 200);
    let (code, _, body) = admin_get(&agent.addrs, "/readyz").await;
    assert_eq!(code, 200, "no issuer, nothing to wait for: {body}");

    let report = status(&agent.addrs).await;
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["commit"], env!("PORTCULLIS_GIT_SHA"));
    assert_eq!(report["config"]["generation"], 1);
    assert_eq!(report["config"]["path"], config.display().to_string());

    let (code, content_type, metrics) = admin_get(&agent.addrs, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    for expected in [
        r#"portcullis_decisions_total{outcome="allow",reason="allowed",route="public"} 1"#,
        r#"portcullis_decisions_total{outcome="deny",reason="no_route",route="none"} 1"#,
        "portcullis_check_duration_seconds_count 2",
        "portcullis_config_generation 1",
        r#"portcullis_config_reloads_total{result="failure"} 0"#,
        &format!(
            r#"portcullis_build_info{{version="{}",commit="{}"}} 1"#,
            env!("CARGO_PKG_VERSION"),
            env!("PORTCULLIS_GIT_SHA")
        ),
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
    promtool_accepts(&metrics);
}

/// `promtool check metrics` (Prometheus' own linter) accepts the exposition, when installed.
fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        // `make test` installs it; only a bare `cargo test` outside CI may go without.
        let _: Option<()> = missing_tool(
            "promtool (the exposition is not linted)",
            "`make deps` (Debian package prometheus)",
        );
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Readiness follows the issuers' keys

#[tokio::test]
async fn readyz_is_503_until_every_issuer_has_keys() {
    use common::http_server::JwksServer;
    use common::tokens::{self, TestKey};

    let jwks = JwksServer::start(&tokens::jwks(&[&TestKey::ec_p256()])).await;
    jwks.fail();
    let issuers = format!(
        "issuers:\n  - name: corp\n    issuer: https://idp.example.com\n    audiences: [orders-api]\n    \
         jwks_uri: {}\n    algorithms: [ES256]\n    refresh: {{min_interval: 1s}}\n",
        jwks.jwks_url()
    );
    let (_dir, config) = config_file(&anonymous_config(&[("public", "/public")], &issuers));
    let agent = InProcessAgent::start_file(&config).await;
    let addrs = agent.addrs;

    let (code, _, body) = admin_get(&addrs, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    let reason: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reason["ready"], false);
    let client = agent.client().await;
    assert_ne!(client.health("").await.ok(), Some(HEALTH_SERVING));
    let failing = eventually(WAIT, || async {
        let report = status(&addrs).await;
        report["issuers"][0]["keys"] == 0 && report["issuers"][0]["last_error"].is_string()
    })
    .await;
    assert!(
        failing,
        "/status never showed the failed fetch: {}",
        status(&addrs).await
    );

    jwks.recover();
    wait_ready(&addrs, WAIT).await;
    let report = status(&addrs).await;
    assert_eq!(report["issuers"][0]["name"], "corp");
    assert_eq!(report["issuers"][0]["keys"], 1);
    wait_serving(&client, WAIT).await;

    let (_, _, metrics) = admin_get(&addrs, "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_jwks_keys{issuer="corp"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"portcullis_jwks_fetches_total{issuer="corp",result="failure"}"#));
    assert!(metrics.contains(r#"portcullis_jwks_key_age_seconds{issuer="corp"}"#));
    promtool_accepts(&metrics);
    agent.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// TLS and mTLS

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    /// A client certificate from a CA the server does not trust.
    rogue_cert: String,
    rogue_key: String,
}

fn pki() -> Pki {
    use common::pki::ca;
    use rcgen::{CertifiedIssuer, ExtendedKeyUsagePurpose, KeyPair};
    let leaf = |issuer: &CertifiedIssuer<'_, KeyPair>, name: &str, usage| {
        common::pki::leaf(issuer, name, vec![usage])
    };
    let trusted = ca("portcullis test CA");
    let rogue = ca("rogue CA");
    let (server_cert, server_key) =
        leaf(&trusted, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(&trusted, "envoy", ExtendedKeyUsagePurpose::ClientAuth);
    let (rogue_cert, rogue_key) = leaf(&rogue, "envoy", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: trusted.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
    }
}

fn tls_config(dir: &Path, pki: &Pki, client_ca: bool) -> PathBuf {
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("pem written");
        path.display().to_string()
    };
    let cert = write("server.pem", &pki.server_cert);
    let key = write("server-key.pem", &pki.server_key);
    let ca = write("ca.pem", &pki.ca);
    let mut tls = format!("  tls:\n    cert_file: {cert}\n    key_file: {key}\n");
    if client_ca {
        tls.push_str(&format!("    client_ca_file: {ca}\n"));
    }
    let yaml = anonymous_config(&[("public", "/public")], "").replace(
        &format!("  http_listen: {HTTP_ANY}\n"),
        &format!("  http_listen: {HTTP_ANY}\n{tls}"),
    );
    write_config(dir, "portcullis.yaml", &yaml)
}

#[tokio::test]
async fn tls_listener_serves_checks_to_clients_trusting_its_ca() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = InProcessAgent::start_file(&tls_config(dir.path(), &pki, false)).await;
    let mut client = CheckClient::connect_tls(agent.addrs.grpc, &pki.ca, None)
        .await
        .expect("TLS connection");
    assert!(client.check(&EnvoyRequest::get("/public")).await.allowed());

    // A plain-text client gets no answer from the TLS listener.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", agent.addrs.grpc))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut raw = portcullis::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(channel);
        assert!(
            raw.check(EnvoyRequest::get("/public").to_check_request())
                .await
                .is_err()
        );
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_from_the_ca() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = InProcessAgent::start_file(&tls_config(dir.path(), &pki, true)).await;
    let request = EnvoyRequest::get("/public");

    let mut trusted = CheckClient::connect_tls(
        agent.addrs.grpc,
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .await
    .expect("mTLS connection with a CA-signed certificate");
    assert!(trusted.check(&request).await.allowed());

    // TLS 1.3 may report the refused client certificate only on first use.
    let refused = |client: Result<CheckClient, tonic::transport::Error>| async {
        match client {
            Err(_) => true,
            Ok(mut client) => client.try_check(&request).await.is_err(),
        }
    };
    assert!(
        refused(CheckClient::connect_tls(agent.addrs.grpc, &pki.ca, None).await).await,
        "a client without a certificate was served"
    );
    assert!(
        refused(
            CheckClient::connect_tls(
                agent.addrs.grpc,
                &pki.ca,
                Some((&pki.rogue_cert, &pki.rogue_key))
            )
            .await
        )
        .await,
        "a client with a certificate from another CA was served"
    );
    // The refusals did not hurt the server.
    assert!(trusted.check(&request).await.allowed());
    agent.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn sigterm_stops_the_binary_with_status_zero() {
    let (_dir, config) = config_file(&anonymous_config(&[("public", "/public")], ""));
    let mut agent = BinaryAgent::start(&config);
    // Like Envoy, the client keeps its HTTP/2 connection open (and its runtime running, so it
    // answers the server's GOAWAY) while the agent drains.
    let mut client = agent.client().await;
    assert!(client.check(&EnvoyRequest::get("/public")).await.allowed());
    let started = std::time::Instant::now();
    let (agent, status) = tokio::task::spawn_blocking(move || {
        let status = agent.terminate();
        (agent, status)
    })
    .await
    .expect("terminate");
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "draining an idle connection took {:?}",
        started.elapsed()
    );
    drop(client);
    assert!(
        agent
            .wait_for_log("portcullis stopped", Duration::from_secs(1))
            .is_some()
    );
    assert!(
        tokio::net::TcpStream::connect(agent.addrs.grpc)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_finishes_an_in_flight_check_before_stopping() {
    use common::http_server::JwksServer;
    use common::tokens::{self, TestKey};

    tokens::install_crypto_provider();
    let old_key = TestKey::ec_p256().with_kid("old");
    let new_key = TestKey::ec_p256().with_kid("new");
    let idp = JwksServer::start(&tokens::jwks(&[&old_key])).await;
    let yaml = format!(
        "server:\n  grpc_listen: {GRPC_ANY}\n  admin_listen: {ADMIN_ANY}\n\
         issuers:\n  - name: corp\n    issuer: {}\n    audiences: [{}]\n    jwks_uri: {}\n    \
         algorithms: [ES256]\n    refresh: {{min_interval: 1s, timeout: 10s}}\n\
         routes:\n  - name: orders\n    match: {{path: /orders}}\n    require: {{scopes: [read]}}\n",
        tokens::ISSUER,
        tokens::AUDIENCE,
        idp.jwks_url()
    );
    let (_dir, config) = config_file(&yaml);
    let options = portcullis::app::StartOptions {
        drain_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let cfg = portcullis::config::load(&config).expect("valid config");
    let agent = InProcessAgent::start_with(cfg, Some(config.clone()), options).await;
    let addrs = agent.addrs;
    wait_ready(&addrs, WAIT).await;

    // Warm-up: the same token twice is one verification and one cache hit.
    let known = old_key.token(&tokens::default_claims("alice", "read"));
    let mut warm = agent.client().await;
    for _ in 0..2 {
        let outcome = warm
            .check(&EnvoyRequest::get("/orders").bearer(&known))
            .await;
        assert!(outcome.allowed(), "{outcome:?}");
    }
    let (_, _, metrics) = admin_get(&addrs, "/metrics").await;
    assert!(
        metrics.contains("portcullis_token_cache_hits_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_token_cache_misses_total 1"),
        "{metrics}"
    );

    // The IdP rotates to a key portcullis has not seen yet, and answers slowly: a check with a
    // token of the new key waits for the (rate-limited) refetch.
    idp.set_jwks(&tokens::jwks(&[&old_key, &new_key]));
    idp.set_delay(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let token = new_key.token(&tokens::default_claims("alice", "read"));
    let mut client = agent.client().await;
    let in_flight = tokio::spawn(async move {
        client
            .check(&EnvoyRequest::get("/orders").bearer(&token))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !in_flight.is_finished(),
        "the check should be waiting for the IdP"
    );

    let started = std::time::Instant::now();
    agent.shutdown().await;
    let outcome = tokio::time::timeout(Duration::from_secs(1), in_flight)
        .await
        .expect("answered by the time shutdown returned")
        .expect("check task");
    assert!(
        outcome.allowed(),
        "the drained check was decided normally: {outcome:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "shutdown returned before the in-flight check finished"
    );
}

// ---------------------------------------------------------------------------------------------
// Hot reload

#[tokio::test]
async fn reload_of_a_good_file_serves_its_new_routes() {
    let (_dir, config) = config_file(&anonymous_config(&[("a", "/a")], ""));
    let agent = InProcessAgent::start_file(&config).await;
    let mut client = agent.client().await;
    assert_eq!(client.check(&EnvoyRequest::get("/b")).await.status, 404);

    replace_config(&config, &anonymous_config(&[("a", "/a"), ("b", "/b")], ""));
    let reloaded = eventually(WAIT, || {
        let mut client = client.clone();
        async move { client.check(&EnvoyRequest::get("/b")).await.allowed() }
    })
    .await;
    assert!(reloaded, "the new route never took effect");
    let report = status(&agent.addrs).await;
    assert_eq!(report["config"]["generation"], 2);
    assert_eq!(report["config"]["last_reload"]["result"], "success");
    let (_, _, metrics) = admin_get(&agent.addrs, "/metrics").await;
    assert!(metrics.contains(r#"portcullis_config_reloads_total{result="success"} 1"#));
    assert!(metrics.contains("portcullis_config_generation 2"));
    agent.shutdown().await;
}

#[tokio::test]
async fn reload_of_a_broken_file_keeps_serving_the_old_configuration() {
    let (_dir, config) = config_file(&anonymous_config(&[("a", "/a")], ""));
    let agent = InProcessAgent::start_file(&config).await;
    let mut client = agent.client().await;

    replace_config(
        &config,
        &format!("{}bogus_key: 1\n", anonymous_config(&[("b", "/b")], "")),
    );
    let failed = eventually(WAIT, || async {
        status(&agent.addrs).await["config"]["last_reload"]["result"] == "failure"
    })
    .await;
    assert!(failed, "the broken file was never reported");
    let report = status(&agent.addrs).await;
    assert_eq!(report["config"]["generation"], 1);
    let errors = report["config"]["last_reload"]["errors"].to_string();
    assert!(errors.contains("bogus_key"), "{errors}");
    assert!(client.check(&EnvoyRequest::get("/a")).await.allowed());
    assert_eq!(client.check(&EnvoyRequest::get("/b")).await.status, 404);
    let (_, _, metrics) = admin_get(&agent.addrs, "/metrics").await;
    assert!(metrics.contains(r#"portcullis_config_reloads_total{result="failure"} 1"#));
    agent.shutdown().await;
}

#[tokio::test]
async fn reload_that_moves_a_listener_keeps_the_old_one_and_says_so() {
    let (_dir, config) = config_file(&anonymous_config(&[("a", "/a")], ""));
    let agent = InProcessAgent::start_file(&config).await;
    let generation = agent.app.reload().await.expect("same file reloads");
    assert_eq!(generation, 2);
    assert!(status(&agent.addrs).await["config"]["restart_required"].is_null());

    std::fs::write(
        &config,
        anonymous_config(&[("a", "/a")], "").replace(
            &format!("admin_listen: {ADMIN_ANY}"),
            "admin_listen: 127.0.0.2:1",
        ),
    )
    .expect("write");
    agent.app.reload().await.expect("valid file reloads");
    let report = status(&agent.addrs).await;
    let note = report["config"]["restart_required"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains("server.admin_listen"), "{report}");
    agent.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let (_dir, config) = config_file(&anonymous_config(&[("a", "/a")], ""));
    let agent = BinaryAgent::start(&config);
    agent.signal("HUP");
    wait_generation(&agent.addrs, 2, WAIT).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP ext_authz mode

#[tokio::test]
async fn http_mode_gives_the_same_decisions_as_grpc() {
    let (_dir, config) = config_file(&anonymous_config(&[("public", "/public")], ""));
    let agent = BinaryAgent::start(&config);
    let http = agent.addrs.http.expect("http_listen is set");

    let allowed = http_check(
        http,
        "",
        &EnvoyRequest::get("/public").header("x-auth-roles", "admin"),
    )
    .await;
    assert!(allowed.allowed(), "{allowed:?}");
    assert_eq!(allowed.upstream("x-auth-method"), Some("anonymous"));
    assert!(allowed.removes("x-auth-roles"));

    let denied = http_check(http, "", &EnvoyRequest::get("/secret").request_id("rid-9")).await;
    assert_eq!(denied.status, 404);
    assert_eq!(denied.header("cache-control"), Some("no-store"));
    assert_eq!(denied.body_json()["request_id"], "rid-9");

    let mut grpc = agent.client().await;
    assert_eq!(grpc.check(&EnvoyRequest::get("/secret")).await.status, 404);
}

// ---------------------------------------------------------------------------------------------
// Audit log

#[tokio::test]
async fn audit_events_name_the_decision_and_never_the_credentials() {
    let (_dir, config) = config_file(&anonymous_config(&[("public", "/public")], ""));
    let agent = BinaryAgent::start(&config);
    let mut client = agent.client().await;
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtc3ViamVjdCJ9.c2lnbmF0dXJlLXNlY3JldA";
    client
        .check(
            &EnvoyRequest::get("/private?access_token=query-secret")
                .bearer(token)
                .header("cookie", "session=cookie-secret")
                .request_id("rid-audit-1"),
        )
        .await;
    client
        .check(
            &EnvoyRequest::get("/public")
                .bearer(token)
                .request_id("rid-audit-2"),
        )
        .await;
    let line = agent
        .wait_for_log("rid-audit-2", Duration::from_secs(10))
        .expect("allow audited");
    let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(event["target"], "portcullis::audit");
    assert_eq!(event["authz.outcome"], "allow");
    assert_eq!(event["route.name"], "public");
    let denial = agent
        .wait_for_log("rid-audit-1", Duration::from_secs(10))
        .expect("denial audited");
    let event: serde_json::Value = serde_json::from_str(&denial).expect("JSON log line");
    assert_eq!(event["authz.outcome"], "deny");
    assert_eq!(event["http.path"], "/private");
    assert_eq!(event["client.ip"], "192.0.2.10");

    let logs = agent.stdout().join("\n") + &agent.stderr().join("\n");
    for secret in [
        token,
        "query-secret",
        "cookie-secret",
        "c2lnbmF0dXJlLXNlY3JldA",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} appears in the logs:\n{logs}"
        );
    }
}

/// The harness itself: the ready line gives every bound address.
#[tokio::test]
async fn binary_ready_line_reports_every_bound_address() {
    let (_dir, config) = config_file(&anonymous_config(&[("public", "/public")], ""));
    let agent = BinaryAgent::start(&config);
    let Addrs { grpc, admin, http } = agent.addrs;
    assert!(grpc.port() != 0 && admin.port() != 0 && http.is_some_and(|h| h.port() != 0));
    assert_eq!(admin_get(&agent.addrs, "/healthz").await.0, 200);
}

// ---------------------------------------------------------------------------------------------
// Connection exhaustion (issue 8, item 6)

/// Log lines (JSON) whose message starts with `prefix`.
fn log_events(agent: &BinaryAgent, prefix: &str) -> Vec<serde_json::Value> {
    agent
        .stdout()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix))
        })
        .collect()
}

/// CPU time (user + system) the process has used, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) in parentheses: utime and stime are
    // fields 14 and 15 of the line, 12 and 13 after the `)`.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    let per_second: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK");
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The descriptor limit is reached by a flood of TCP connections to the gRPC port: accepting
/// backs off instead of spinning, says so once per interval, the Envoy connection already open
/// keeps getting answers, and once the flood is gone the agent accepts again and says so.
#[tokio::test]
async fn out_of_descriptors_the_agent_backs_off_keeps_answering_and_recovers() {
    const NOFILE: &str = "--nofile=64:64";
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        missing_tool::<()>("prlimit", "apt-get install util-linux");
        return;
    }
    // Flood connections send nothing: keep them open (not closed by the header-read timeout)
    // for as long as the test holds them.
    let (_dir, config) = config_file(&connections_config("{header_read_timeout: 5m}"));
    let config = config.to_str().expect("utf-8 path");
    let agent = BinaryAgent::spawn_under(
        &["prlimit", NOFILE, "--"],
        &["serve", "--config", config],
        &[],
    );
    let limit = log_events(&agent, "open-file limit");
    assert_eq!(limit.len(), 1, "{:?}", agent.stdout());
    assert_eq!(limit[0]["soft"], 64, "{}", limit[0]);

    // Envoy's connection, open before the flood.
    let mut envoy = agent.client().await;
    assert!(envoy.check(&EnvoyRequest::get("/public")).await.allowed());

    let mut flood = Vec::new();
    for _ in 0..150 {
        let connect = tokio::net::TcpStream::connect(agent.addrs.grpc);
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(stream)) => flood.push(stream),
            _ => break,
        }
    }
    assert!(flood.len() > 64, "only {} connections", flood.len());
    let exhausted = agent
        .wait_for_log("cannot accept connections", WAIT)
        .unwrap_or_else(|| panic!("no accept error logged: {:?}", agent.stdout()));
    let event: serde_json::Value = serde_json::from_str(&exhausted).expect("JSON log line");
    assert_eq!(event["listener"], "grpc", "{event}");
    assert_eq!(event["level"], "ERROR", "{event}");
    assert!(
        event["error"]
            .as_str()
            .is_some_and(|e| e.contains("Too many open files")),
        "{event}"
    );
    let exhausted_at = std::time::Instant::now();

    // Out of descriptors, the open connection still gets answers, and the agent does not
    // spin: well under a core over 2 s (a spinning accept loop takes a whole one).
    let before = cpu_time(agent.pid());
    let measured = std::time::Instant::now();
    for _ in 0..4 {
        assert!(envoy.check(&EnvoyRequest::get("/public")).await.allowed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let used = cpu_time(agent.pid()) - before;
    let wall = measured.elapsed();
    assert!(
        used.as_secs_f64() < 0.5 * wall.as_secs_f64(),
        "used {used:?} of CPU in {wall:?} while out of descriptors"
    );
    assert!(
        envoy.health("").await.is_ok_and(|s| s == HEALTH_SERVING),
        "gRPC health on the open connection"
    );

    drop(flood);
    let recovered = agent
        .wait_for_log("accepting connections again", WAIT)
        .unwrap_or_else(|| panic!("recovery not logged: {:?}", agent.stdout()));
    let event: serde_json::Value = serde_json::from_str(&recovered).expect("JSON log line");
    assert_eq!(event["listener"], "grpc", "{event}");
    assert!(event["errors"].as_u64().is_some_and(|n| n >= 1), "{event}");
    let failing_for = exhausted_at.elapsed();

    assert!(
        eventually(WAIT, || async {
            admin_get(&agent.addrs, "/healthz").await.0 == 200
        })
        .await,
        "/healthz never answered after the flood"
    );
    let mut fresh = agent.client().await;
    assert!(fresh.check(&EnvoyRequest::get("/public")).await.allowed());

    // One error line per 10 s interval, not one per failed accept.
    let lines = log_events(&agent, "cannot accept connections").len();
    let intervals = failing_for.as_secs() / 10 + 2;
    assert!(
        (1..=intervals as usize).contains(&lines),
        "{lines} error lines in {failing_for:?}"
    );
    assert_counted(
        &agent.addrs,
        r#"portcullis_accept_errors_total{listener="grpc"}"#,
    )
    .await;
}

/// Reads from `stream` until the server closes it (EOF or reset), writing one more byte of
/// `trickle` every 200 ms (a slowloris client) if given. Returns when it closed, or `None`
/// when it was still open after `limit`.
async fn closed_by_server(
    stream: &mut tokio::net::TcpStream,
    trickle: &[u8],
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut pending = trickle.iter();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => {
                if let Some(byte) = pending.next()
                    && stream.write_all(&[*byte]).await.is_err()
                {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

/// A client that starts a request head and never finishes it — all at once or one byte at a
/// time — is cut off after `header_read_timeout` on the admin and HTTP ext_authz ports; on the
/// gRPC port a connection that sends nothing is. An idle keep-alive connection may wait longer
/// than that between requests, up to `idle_timeout`.
#[tokio::test]
async fn half_open_and_slow_connections_are_closed_after_the_timeouts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let (_dir, agent) = connections_agent("{header_read_timeout: 1s, idle_timeout: 3s}").await;
    let http = agent.addrs.http.expect("HTTP ext_authz listener");
    let head = b"GET /healthz HTTP/1.1\r\nHost: portcullis\r\nX-Slow: ";
    let limit = Duration::from_secs(15);

    for addr in [agent.addrs.admin, http] {
        let mut partial = TcpStream::connect(addr).await.expect("connect");
        partial.write_all(head).await.expect("partial head");
        let closed = closed_by_server(&mut partial, b"", limit).await;
        assert!(
            closed.is_some_and(|after| after >= Duration::from_millis(800)),
            "{addr}: partial head closed after {closed:?}"
        );

        let mut slowloris = TcpStream::connect(addr).await.expect("connect");
        let trickle = head.repeat(10);
        let closed = closed_by_server(&mut slowloris, &trickle, limit).await;
        assert!(
            closed.is_some_and(|after| after >= Duration::from_millis(800)),
            "{addr}: byte-by-byte head closed after {closed:?}"
        );
    }

    // gRPC: a connection that never sends the HTTP/2 preface.
    let mut silent = TcpStream::connect(agent.addrs.grpc).await.expect("connect");
    let closed = closed_by_server(&mut silent, b"", limit).await;
    assert!(
        closed.is_some_and(|after| after >= Duration::from_millis(800)),
        "gRPC: silent connection closed after {closed:?}"
    );

    // Keep-alive: quiet for longer than the header-read timeout, then a second request on the
    // same connection is answered; quiet for the idle timeout, it is closed.
    let mut keep_alive = TcpStream::connect(agent.addrs.admin)
        .await
        .expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: portcullis\r\n\r\n";
    let mut buf = [0u8; 4096];
    for _ in 0..2 {
        keep_alive.write_all(request).await.expect("request");
        let mut answer = Vec::new();
        while !answer.ends_with(br#"{"status":"ok"}"#) {
            let n = tokio::time::timeout(Duration::from_secs(5), keep_alive.read(&mut buf))
                .await
                .expect("answered")
                .expect("read");
            assert_ne!(n, 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let closed = closed_by_server(&mut keep_alive, b"", limit).await;
    assert!(closed.is_some(), "idle keep-alive connection never closed");

    let (_, _, metrics) = admin_get(&agent.addrs, "/metrics").await;
    for expected in [
        r#"portcullis_connection_timeouts_total{listener="admin",reason="header_read"} 2"#,
        r#"portcullis_connection_timeouts_total{listener="http",reason="header_read"} 2"#,
        r#"portcullis_connection_timeouts_total{listener="grpc",reason="header_read"} 1"#,
        r#"portcullis_connection_timeouts_total{listener="admin",reason="idle"} 1"#,
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
    agent.shutdown().await;
}

/// A full listener leaves new clients waiting (not refused) and serves them once a connection
/// closes.
#[tokio::test]
async fn a_full_listener_serves_waiting_clients_when_a_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let (_dir, agent) = connections_agent("{max_per_listener: 2, header_read_timeout: 1m}").await;
    let admin = agent.addrs.admin;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(admin).await.expect("connect"));
    }
    let mut waiting = TcpStream::connect(admin)
        .await
        .expect("queued in the backlog");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: portcullis\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(500), waiting.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "answered beyond the limit: {answer:?}");

    drop(held.pop());
    tokio::time::timeout(WAIT, waiting.read_to_end(&mut answer))
        .await
        .expect("answered once a connection closed")
        .expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

    drop(held);
    assert_counted(
        &agent.addrs,
        r#"portcullis_connection_limit_waits_total{listener="admin"}"#,
    )
    .await;
    agent.shutdown().await;
}
