//! What operators look at, checked against the real parts: the Grafana dashboard
//! (`deploy/grafana/portcullis.json`) and the alert rules (`deploy/prometheus/`) query only
//! metrics a running portcullis exports (or families listed in [`EXPECTED_LATER`]), every
//! PromQL expression parses and the rules pass their unit tests under `promtool`, and a real
//! `prometheus` server scraping the admin port reads back exactly the checks that were sent.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`make deps`); without
//! them these tests skip loudly, except under `CI=true`, where they fail.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::agent::{BinaryAgent, CheckClient, EnvoyRequest, admin_get, wait_ready, write_config};
use common::envoy::{free_port, missing_tool, repo_root};
use common::http_server::JwksServer;
use common::tokens::{self, AUDIENCE, ISSUER, TestKey, claims};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

const DASHBOARD: &str = "deploy/grafana/portcullis.json";
const RULES: &str = "deploy/prometheus/portcullis-rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/portcullis-rules.test.yaml";

/// Families the dashboard and the rules already query but portcullis does not export yet,
/// with the work that brings each; their panels show "no data" until then. Remove a line when
/// its family lands: from then on the test requires it in `/metrics`.
const EXPECTED_LATER: &[(&str, &str)] = &[];

/// What the issue asks the dashboard to show, by the family each panel must query.
const DASHBOARD_MUST_SHOW: &[&str] = &[
    "portcullis_decisions_total",
    "portcullis_check_duration_seconds_bucket",
    "portcullis_token_cache_hits_total",
    "portcullis_token_cache_misses_total",
    "portcullis_jwks_key_age_seconds",
    "portcullis_jwks_fetches_total",
    "portcullis_config_reloads_total",
    "portcullis_revocation_sync_age_seconds",
    "portcullis_api_key_requests_total",
];

// ---------------------------------------------------------------------------------------------
// The dashboard and the rules as data

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

fn yaml(relative: &str) -> Value {
    serde_yaml_ng::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// One PromQL expression and where it comes from (a panel or an alert).
struct Query {
    origin: String,
    expr: String,
}

/// The panels, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            panel["targets"].as_array().into_iter().flatten().map(|t| {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panel_error(panel, "no expr"));
                Query {
                    origin: format!("panel {:?} ({})", panel["title"], t["refId"]),
                    expr: expr.to_owned(),
                }
            })
        })
        .collect()
}

/// The `label_values(selector, label)` queries of the dashboard's variables, as (variable,
/// selector, label).
fn variable_queries(dashboard: &Value) -> Vec<(String, String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter(|variable| variable["type"] == "query")
        .map(|variable| {
            let query = variable["query"].as_str().expect("a label_values query");
            let (selector, label) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| panic!("not label_values(selector, label): {query}"));
            (
                variable["name"].as_str().expect("name").to_owned(),
                selector.trim().to_owned(),
                label.trim().to_owned(),
            )
        })
        .collect()
}

fn panel_error(panel: &Value, problem: &str) -> ! {
    panic!("panel {:?}: {problem}", panel["title"])
}

fn alert_rules(rules: &Value) -> Vec<&Value> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules"))
        .collect()
}

fn rule_queries(rules: &Value) -> Vec<Query> {
    alert_rules(rules)
        .into_iter()
        .map(|rule| Query {
            origin: format!("alert {}", rule["alert"]),
            expr: rule["expr"].as_str().expect("expr").to_owned(),
        })
        .collect()
}

/// A panel query as Prometheus takes it: Grafana's variables replaced by what "All" and a
/// dashboard refresh put there (`$__range` is the time range the panel shows).
fn as_promql(expr: &str, rate_interval: &str, range: &str) -> String {
    let promql = expr
        .replace("$__rate_interval", rate_interval)
        .replace("$__range", range)
        .replace("$namespace", ".*")
        .replace("$pod", ".*");
    assert!(
        !promql.contains('$'),
        "a variable left unreplaced: {promql}"
    );
    promql
}

/// The `portcullis_*` metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("portcullis_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names of a text exposition (`portcullis_decisions_total`,
/// `portcullis_check_duration_seconds_bucket`, ...).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn expected_later(name: &str) -> bool {
    EXPECTED_LATER.iter().any(|(family, _)| *family == name)
}

// ---------------------------------------------------------------------------------------------
// portcullis with an issuer and known traffic

/// The built binary with one issuer (`corp`, keys from a JWKS server under the test's control),
/// an empty revocation file, and two routes: `/healthz` anonymous, `/api/...` for any valid
/// token.
struct Stack {
    _idp: JwksServer,
    agent: BinaryAgent,
    client: CheckClient,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Self {
        let idp = JwksServer::start(&tokens::jwks(&[&TestKey::ec_p256()])).await;
        let yaml = format!(
            "server:\n  grpc_listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\nissuers:\n  - name: \
             corp\n    issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    jwks_uri: {}\n    \
             algorithms: [ES256]\nroutes:\n  - name: health\n    match: {{path: /healthz}}\n    \
             allow: anonymous\n  - name: api\n    match: {{path_prefix: /api}}\n    allow: \
             authenticated\napi_keys: {{file: keys.yaml, env: live}}\nrevocation: {{file: revoked.yaml}}\n",
            idp.jwks_url()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        // No key is valid; a key presented anyway is counted under `key_id="unknown"`.
        write_config(dir.path(), "keys.yaml", "keys: []\n");
        std::fs::write(dir.path().join("revoked.yaml"), "").expect("write revoked.yaml");
        let config = write_config(dir.path(), "portcullis.yaml", &yaml);
        let agent = BinaryAgent::start(&config);
        wait_ready(&agent.addrs, WAIT).await;
        let client = agent.client().await;
        Self {
            _idp: idp,
            agent,
            client,
            _dir: dir,
        }
    }

    /// One check with an API key that no entry knows (401, counted as `key_id="unknown"`).
    async fn send_unknown_api_key(&mut self) {
        let outcome = self
            .client
            .check(&EnvoyRequest::get("/api/orders").header("x-api-key", "pk_live_not-a-key"))
            .await;
        assert_eq!(outcome.status, 401, "{outcome:?}");
    }

    /// `allowed` checks with one valid token (one cache miss, then hits), then
    /// `missing_credential` checks on `/api` without a token and `no_route` checks.
    async fn send(&mut self, allowed: usize, missing_credential: usize, no_route: usize) {
        let token = TestKey::ec_p256().token(&claims(ISSUER, AUDIENCE, "alice", "read", 300));
        for _ in 0..allowed {
            let outcome = self
                .client
                .check(&EnvoyRequest::get("/api/orders").bearer(&token))
                .await;
            assert!(outcome.allowed(), "{outcome:?}");
        }
        for _ in 0..missing_credential {
            let outcome = self.client.check(&EnvoyRequest::get("/api/orders")).await;
            assert_eq!(outcome.status, 401, "{outcome:?}");
        }
        for _ in 0..no_route {
            let outcome = self.client.check(&EnvoyRequest::get("/elsewhere")).await;
            assert_eq!(outcome.status, 404, "{outcome:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every metric queried exists

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_only_metrics_portcullis_exports() {
    let mut stack = Stack::start().await;
    stack.send(2, 1, 1).await;
    stack.send_unknown_api_key().await;
    let (code, _, exposition) = admin_get(&stack.agent.addrs, "/metrics").await;
    assert_eq!(code, 200);
    let exposed = exposed_names(&exposition);

    let dashboard = dashboard();
    let variables = variable_queries(&dashboard)
        .into_iter()
        .map(|(name, selector, _)| Query {
            origin: format!("variable ${name}"),
            expr: selector,
        });
    let queries: Vec<Query> = dashboard_queries(&dashboard)
        .into_iter()
        .chain(variables)
        .chain(rule_queries(&yaml(RULES)))
        .collect();
    let mut queried = BTreeSet::new();
    let mut unknown = Vec::new();
    for query in &queries {
        let names = metric_names(&query.expr);
        assert!(
            !names.is_empty(),
            "{} reads no metric: {}",
            query.origin,
            query.expr
        );
        for name in names {
            if !exposed.contains(&name) && !expected_later(&name) {
                unknown.push(format!("{}: {name}", query.origin));
            }
            queried.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "queried but not in /metrics:\n{}\n\n/metrics:\n{exposition}",
        unknown.join("\n")
    );
    for (family, comes_with) in EXPECTED_LATER {
        assert!(
            queried.contains(*family),
            "{family} ({comes_with}) is listed as expected later but nothing queries it"
        );
    }
}

#[test]
fn dashboard_shows_what_operators_need_filtered_by_namespace_and_pod() {
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    let queried: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(&q.expr)).collect();
    for family in DASHBOARD_MUST_SHOW {
        assert!(queried.contains(*family), "no panel queries {family}");
    }
    for query in &queries {
        assert!(
            query.expr.contains(r#"namespace=~"$namespace""#)
                && query.expr.contains(r#"pod=~"$pod""#),
            "{} ignores the namespace and pod variables: {}",
            query.origin,
            query.expr
        );
    }

    // The data source is a variable, so the dashboard imports into any Grafana.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["namespace", "pod"] {
        assert_eq!(variable(name)["type"], "query");
        assert_eq!(variable(name)["datasource"]["uid"], "${datasource}");
    }
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {} says nothing of what it means",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39));
}

// ---------------------------------------------------------------------------------------------
// promtool: every expression parses, every rule passes its unit tests

/// `promtool` with `args`, or `None` (a loud skip) when it is not installed.
fn promtool(args: &[&str]) -> Option<Output> {
    match Command::new("promtool").args(args).output() {
        Ok(output) => Some(output),
        Err(_) => missing_tool("promtool", "`make deps` (Debian package prometheus)"),
    }
}

fn assert_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let queries = dashboard_queries(&dashboard());
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, query)| {
            json!({
                "record": format!("dashboard:query_{i}"),
                "expr": as_promql(&query.expr, "1m", "1h"),
            })
        })
        .collect();
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&file).expect("yaml")).expect("write");

    let Some(output) = promtool(&["check", "rules", path.to_str().expect("utf-8")]) else {
        return;
    };
    assert_succeeded("promtool check rules on the dashboard's queries", &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{stdout}"
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = repo_root().join(RULES);
    let Some(check) = promtool(&["check", "rules", rules.to_str().expect("utf-8")]) else {
        return;
    };
    assert_succeeded("promtool check rules", &check);
    let tests = repo_root().join(RULE_TESTS);
    let Some(test) = promtool(&["test", "rules", tests.to_str().expect("utf-8")]) else {
        return;
    };
    assert_succeeded("promtool test rules", &test);
}

#[test]
fn every_alert_has_a_runbook_and_cases_that_fire_and_that_do_not() {
    let rules = yaml(RULES);
    let tests = yaml(RULE_TESTS);
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    let alerts = alert_rules(&rules);
    assert!(alerts.len() >= 7, "the seven alerts of issue 13");
    for rule in alerts {
        let name = rule["alert"].as_str().expect("only alerting rules");
        for annotation in ["summary", "runbook"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| !text.trim().is_empty()),
                "{name} has no {annotation} annotation"
            );
        }
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name} has no severity"
        );
        let fired = |expected: bool| {
            cases.iter().any(|case| {
                case["alertname"] == name
                    && case["exp_alerts"]
                        .as_array()
                        .is_some_and(|alerts| alerts.is_empty() != expected)
            })
        };
        assert!(fired(true), "no unit test where {name} fires");
        assert!(fired(false), "no unit test where {name} stays silent");
    }
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus server scrapes portcullis

/// `prometheus` on a free loopback port with its storage in a temporary directory, scraping
/// `target` every second with the alert rules loaded. Killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// `None` (a loud skip) when `prometheus` is not installed.
    fn start(target: std::net::SocketAddr) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [repo_root().join(RULES)],
            "scrape_configs": [{
                "job_name": "portcullis",
                "static_configs": [{
                    "targets": [target.to_string()],
                    "labels": {"namespace": "observability-test", "pod": "portcullis-0"},
                }],
            }],
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(
            &config_path,
            serde_yaml_ng::to_string(&config).expect("yaml"),
        )
        .expect("write");
        let port = free_port();
        let log = File::create(dir.path().join("prometheus.log")).expect("log file");
        let spawned = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let Ok(child) = spawned else {
            return missing_tool("prometheus", "`make deps` (Debian package prometheus)");
        };
        portcullis::app::install_crypto_providers().expect("crypto providers");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        Some(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http,
            dir,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Option<Value> {
        let url =
            url::Url::parse_with_params(&format!("{}{path}", self.base), params).expect("url");
        let response = self.http.get(url).send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits (bounded) until the server answers `/-/ready`.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = self
                .http
                .get(format!("{}/-/ready", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The instant vector `promql` evaluates to now; panics on an error answer.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let answer = self
            .get("/api/v1/query", &[("query", promql)])
            .await
            .unwrap_or_else(|| panic!("no answer to {promql}:\n{}", self.log()));
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of a query that yields one sample, if it does.
    async fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).await.as_slice() {
            [sample] => sample["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits (bounded) until `promql` reads `expected`; panics with the last value read.
    async fn wait_value(&self, promql: &str, expected: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.value(promql).await;
            if value == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} reads {value:?} through Prometheus, portcullis counted {expected}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_back_the_checks_portcullis_answered() {
    let mut stack = Stack::start().await;
    let Some(mut prometheus) = Prometheus::start(stack.agent.addrs.admin) else {
        return;
    };
    prometheus.wait_ready().await;

    // 7 allowed (one token: 1 cache miss, 6 hits), 6 denied (3 without a token, 2 unrouted,
    // 1 with an unknown API key).
    stack.send(7, 3, 2).await;
    stack.send_unknown_api_key().await;
    let job = r#"job="portcullis", namespace="observability-test", pod="portcullis-0""#;
    for (promql, expected) in [
        (
            format!(r#"sum(portcullis_decisions_total{{{job}, outcome="allow"}})"#),
            7.0,
        ),
        (
            format!(r#"sum(portcullis_decisions_total{{{job}, outcome="deny"}})"#),
            6.0,
        ),
        (
            format!(
                r#"portcullis_decisions_total{{{job}, outcome="deny", reason="missing_credential", route="api"}}"#
            ),
            3.0,
        ),
        (
            format!(r#"portcullis_decisions_total{{{job}, reason="no_route", route="none"}}"#),
            2.0,
        ),
        (
            format!("portcullis_check_duration_seconds_count{{{job}}}"),
            13.0,
        ),
        (
            format!(r#"sum(portcullis_api_key_requests_total{{{job}, key_id="unknown"}})"#),
            1.0,
        ),
        (format!("portcullis_token_cache_misses_total{{{job}}}"), 1.0),
        (format!("portcullis_token_cache_hits_total{{{job}}}"), 6.0),
        (
            format!(r#"portcullis_jwks_keys{{{job}, issuer="corp"}}"#),
            1.0,
        ),
    ] {
        prometheus.wait_value(&promql, expected).await;
    }

    // Every panel answers through the real server, with data for the families that exist
    // today (so a label or value the dashboard filters on is one portcullis writes).
    for query in dashboard_queries(&dashboard()) {
        let promql = as_promql(&query.expr, "1m", "5m");
        let later = metric_names(&query.expr).iter().any(|n| expected_later(n));
        let deadline = Instant::now() + WAIT;
        loop {
            let result = prometheus.query(&promql).await;
            if later || !result.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} has no data after known traffic: {promql}",
                query.origin
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The variables' `label_values` find the scrape's namespace and pod.
    for (name, selector, label) in variable_queries(&dashboard()) {
        let selector = as_promql(&selector, "1m", "5m");
        let answer = prometheus
            .get("/api/v1/series", &[("match[]", selector.as_str())])
            .await
            .unwrap_or_default();
        let values: BTreeSet<&str> = answer["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|series| series[label.as_str()].as_str())
            .collect();
        let expected = match label.as_str() {
            "namespace" => "observability-test",
            "pod" => "portcullis-0",
            other => panic!("${name} reads {other}, a label this scrape does not set"),
        };
        assert!(
            values.contains(expected),
            "${name} ({selector}, {label}) finds {values:?}: {answer}"
        );
    }

    // The alert rules load into the server and evaluate without error.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = prometheus
            .get("/api/v1/rules", &[])
            .await
            .unwrap_or_default();
        let rules: Vec<&Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .collect();
        let loaded = rules.len() == alert_rules(&yaml(RULES)).len();
        if loaded && rules.iter().all(|rule| rule["health"] == "ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all loaded and healthy: {answer}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
