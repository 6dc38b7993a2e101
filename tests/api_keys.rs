//! API keys proven through a real Envoy (the committed `deploy/envoy/envoy.yaml`, ports
//! changed), portcullis as the built binary with a watched keys file, and an echoing
//! application that shows what arrives upstream: a valid key reaches the application with its
//! identity and without the key; every kind of bad key is a 401 with the standard body; a key
//! rotation under load drops no request of the new key; a keys file replaced by garbage keeps
//! the last good keys and says why in `/status`.
//!
//! Without Envoy installed these tests skip loudly; under `CI=true` they fail.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::agent::{
    Addrs, BinaryAgent, admin_get, assert_eventually, eventually, replace_config,
    status as admin_status, write_config,
};
use common::envoy::{
    Envoy, SidecarMode, SidecarPorts, free_port, render_sidecar, splice_filter,
    standard_denial_headers,
};
use common::upstream::{Echo, Upstream};
use portcullis::authn::api_keys::{self, GeneratedKey, KeyEntry, KeyEnv};
use portcullis::config::keys_file;

/// Longest wait for a keys file change to be picked up.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A key made for the test, and the entry the keys file holds for it.
struct TestKey {
    key: String,
    entry: KeyEntry,
}

impl TestKey {
    fn new(env: KeyEnv, subject: &str) -> Self {
        let GeneratedKey { key, id, hash } = api_keys::generate(env).expect("random");
        Self {
            key,
            entry: KeyEntry {
                id,
                hash,
                subject: subject.to_owned(),
                scopes: vec!["read:documents".to_owned()],
                roles: vec!["user".to_owned()],
                env,
                not_before: None,
                not_after: None,
                description: Some("made by tests/api_keys.rs".to_owned()),
            },
        }
    }

    fn id(&self) -> &str {
        &self.entry.id
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The keys file holding `keys`' entries, as `portcullis keys generate` prints them.
fn keys_yaml(keys: &[&TestKey]) -> String {
    let mut yaml = String::from("keys:\n");
    for key in keys {
        yaml.push_str(&keys_file::render_entry(&key.entry).expect("entry yaml"));
    }
    if keys.is_empty() {
        yaml = "keys: []\n".to_owned();
    }
    yaml
}

/// An echo application, portcullis (binary) with `keys` in its keys file, and Envoy with the
/// committed gRPC sidecar configuration in front.
struct Stack {
    upstream: Upstream,
    agent: BinaryAgent,
    envoy: Envoy,
    keys_file: PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// `None` when Envoy is not installed (skip; a failure under CI).
    async fn start(keys: &[&TestKey]) -> Option<Self> {
        Self::start_in(SidecarMode::Grpc, keys).await
    }

    /// In Envoy's HTTP mode the sidecar's `ext_authz` filter is what `portcullis envoy-filter
    /// --mode http` prints for this configuration (it lists the key header).
    async fn start_in(mode: SidecarMode, keys: &[&TestKey]) -> Option<Self> {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let keys_file = write_config(dir.path(), "api-keys.yaml", &keys_yaml(keys));
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let config = write_config(
            dir.path(),
            "portcullis.yaml",
            &format!(
                "server: {{grpc_listen: 127.0.0.1:{grpc}, http_listen: 127.0.0.1:{http}, \
                 admin_listen: 127.0.0.1:{admin}}}\n\
                 api_keys: {{file: api-keys.yaml, header: x-api-key, env: live, \
                 authorization_scheme: ApiKey}}\n\
                 routes:\n  \
                 - {{name: health, match: {{path: /healthz}}, allow: anonymous}}\n  \
                 - name: documents\n    match: {{path_prefix: /documents}}\n    \
                 require: {{scopes: [read:documents]}}\n"
            ),
        );
        let mut rendered = render_sidecar(
            mode,
            SidecarPorts {
                app: upstream.port(),
                portcullis_grpc: grpc,
                portcullis_http: http,
            },
        );
        if mode == SidecarMode::Http {
            let path = config.to_str().expect("utf-8 path");
            let (code, filter, stderr) =
                common::agent::run_binary(&["envoy-filter", "--config", path, "--mode", "http"]);
            assert!(code.success(), "envoy-filter failed: {stderr}");
            rendered = splice_filter(&rendered, &filter);
        }
        let agent = tokio::task::spawn_blocking(move || BinaryAgent::start(&config))
            .await
            .expect("portcullis start-up task");
        let envoy = Envoy::start(&rendered).await?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        let stack = Self {
            upstream,
            agent,
            envoy,
            keys_file,
            client,
            _dir: dir,
        };
        // Envoy connected to portcullis and to the application.
        assert_eventually(
            "the anonymous route never answered 200",
            || async { stack.get("/healthz", &[]).await.0 == 200 },
            || stack.logs(),
        )
        .await;
        Some(stack)
    }

    fn addrs(&self) -> Addrs {
        self.agent.addrs
    }

    /// `GET path` through Envoy with `headers`: status, body, `x-request-id` sent.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let request_id = format!("req-{}", free_port());
        let mut request = self
            .client
            .get(self.envoy.url(path))
            .header("x-request-id", &request_id);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request through envoy failed: {e}"));
        let status = response.status().as_u16();
        let denial_headers_ok = status == 200 || standard_denial_headers(response.headers());
        assert!(
            denial_headers_ok,
            "denial without the standard headers: {response:?}"
        );
        (
            status,
            response.text().await.unwrap_or_default(),
            request_id,
        )
    }

    async fn with_key(&self, key: &str) -> (u16, String, String) {
        self.get("/documents/1", &[("x-api-key", key)]).await
    }

    fn logs(&self) -> String {
        format!(
            "--- portcullis:\n{}\n--- envoy:\n{}",
            [self.agent.stdout(), self.agent.stderr()]
                .concat()
                .join("\n"),
            self.envoy.logs()
        )
    }
}

/// A 401 with the standard body: error code, generic message, the request id.
fn assert_standard_401(reply: &(u16, String, String), what: &str) {
    let (status, body, request_id) = reply;
    assert_eq!(*status, 401, "{what}: {body}");
    let body: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: body not JSON ({e})"));
    assert_eq!(body["error"], "unauthorized", "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{what}: {body}");
}

/// `key` with one character of its secret changed and its checksum made right again: the
/// right id, a wrong secret.
fn with_wrong_secret(key: &str) -> String {
    let body = &key[..key.len() - api_keys::CHECKSUM_LEN];
    let mut bytes = body.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
    let body = String::from_utf8(bytes).expect("ascii");
    let sum = api_keys::checksum(&body);
    format!("{body}{}", std::str::from_utf8(&sum).expect("ascii"))
}

/// Sends `key` in its header: allowed, the application sees the key's identity (`subject`,
/// `read:documents`, role `user`) and never the key.
async fn assert_reaches_the_app_without_the_key(stack: &Stack, key: &TestKey) {
    let (status, body, _) = stack.with_key(&key.key).await;
    assert_eq!(status, 200, "{body}\n{}", stack.logs());
    let echo: Echo = serde_json::from_str(&body).expect("upstream echo");
    assert_eq!(echo.header("x-auth-method"), Some("api_key"));
    assert_eq!(
        echo.header("x-auth-subject"),
        Some(key.entry.subject.as_str())
    );
    assert_eq!(echo.header("x-auth-scopes"), Some("read:documents"));
    assert_eq!(echo.header("x-auth-roles"), Some("user"));
    assert_eq!(
        echo.header("x-api-key"),
        None,
        "the key reached the app: {echo:?}"
    );
    assert!(!body.contains(&key.key), "the key reached the app: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_key_reaches_the_app_with_its_identity_and_without_the_key() {
    let key = TestKey::new(KeyEnv::Live, "billing-batch");
    let Some(stack) = Stack::start(&[&key]).await else {
        return;
    };
    assert_reaches_the_app_without_the_key(&stack, &key).await;

    // `Authorization: ApiKey <key>` (configured) works the same, and is stripped too.
    let scheme = format!("ApiKey {}", key.key);
    let (status, body, _) = stack
        .get("/documents/1", &[("authorization", &scheme)])
        .await;
    assert_eq!(status, 200, "{body}");
    let echo: Echo = serde_json::from_str(&body).expect("upstream echo");
    assert_eq!(echo.header("x-auth-subject"), Some("billing-batch"));
    assert_eq!(echo.header("authorization"), None, "{echo:?}");

    // Per-key visibility: the metric by key id, the last use in /status, never the key.
    let (_, _, metrics) = admin_get(&stack.addrs(), "/metrics").await;
    let series = format!(
        "portcullis_api_key_requests_total{{key_id=\"{}\",outcome=\"valid\"}} 2",
        key.id()
    );
    assert!(metrics.contains(&series), "{series} not in:\n{metrics}");
    let report = admin_status(&stack.addrs()).await;
    let keys = &report["api_keys"];
    assert_eq!(keys["keys"], 1, "{report}");
    assert_eq!(keys["keys_by_id"][0]["id"], key.id(), "{report}");
    let last_used = keys["keys_by_id"][0]["last_used_unix"]
        .as_u64()
        .unwrap_or_else(|| panic!("no last use: {report}"));
    assert!(last_used.abs_diff(unix_now()) < 60, "{report}");
    let logs = stack.logs();
    assert!(!logs.contains(&key.key), "the key was logged:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_a_valid_key_reaches_the_app_without_the_key_and_a_bad_one_is_401() {
    let key = TestKey::new(KeyEnv::Live, "billing-batch");
    let Some(stack) = Stack::start_in(SidecarMode::Http, &[&key]).await else {
        return;
    };
    assert_reaches_the_app_without_the_key(&stack, &key).await;
    assert_standard_401(
        &stack.with_key(&with_wrong_secret(&key.key)).await,
        "wrong secret",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_key_is_a_401_with_the_standard_body() {
    let valid = TestKey::new(KeyEnv::Live, "billing");
    let mut expired = TestKey::new(KeyEnv::Live, "old-client");
    expired.entry.not_after = Some(unix_now() - 3600);
    let mut early = TestKey::new(KeyEnv::Live, "future-client");
    early.entry.not_before = Some(unix_now() + 3600);
    let other_env = TestKey::new(KeyEnv::Test, "staging-client");
    let unknown = TestKey::new(KeyEnv::Live, "not-in-the-file");
    let Some(stack) = Stack::start(&[&valid, &expired, &early, &other_env]).await else {
        return;
    };
    let hits_before = stack.upstream.hits();

    let mut bad_checksum = valid.key.clone();
    let end = bad_checksum.len() - 1;
    bad_checksum.replace_range(end.., if valid.key.ends_with('0') { "1" } else { "0" });
    let two_keys = format!("{},{}", valid.key, valid.key);
    let too_long = format!("{}{}", valid.key, "A".repeat(256));
    let cases = [
        ("wrong checksum", bad_checksum),
        ("unknown id", unknown.key.clone()),
        ("wrong secret", with_wrong_secret(&valid.key)),
        ("other environment", other_env.key.clone()),
        ("expired", expired.key.clone()),
        ("not yet valid", early.key.clone()),
        ("two keys in one header", two_keys),
        ("longer than 256 bytes", too_long),
        ("not a key at all", "hunter2".to_owned()),
    ];
    for (what, key) in &cases {
        assert_standard_401(&stack.with_key(key).await, what);
    }
    // The same header twice: two credentials, refused.
    let twice = stack
        .get(
            "/documents/1",
            &[("x-api-key", &valid.key), ("x-api-key", &valid.key)],
        )
        .await;
    assert_standard_401(&twice, "the key header twice");
    assert_eq!(
        stack.upstream.hits(),
        hits_before,
        "a refused request reached the app"
    );

    // A key in the URL query is a 400, like a token.
    let (status, body, _) = stack
        .get(&format!("/documents/1?api_key={}", valid.key), &[])
        .await;
    assert_eq!(status, 400, "{body}");

    // The valid key still works, and no key was logged.
    assert_eq!(stack.with_key(&valid.key).await.0, 200);
    let logs = stack.logs();
    for (what, key) in &cases {
        assert!(!logs.contains(key.as_str()), "{what} key logged:\n{logs}");
    }
    // Each refusal counted under the key's id (or `unknown`), bounded by the file.
    let (_, _, metrics) = admin_get(&stack.addrs(), "/metrics").await;
    for (id, outcome) in [
        (expired.id(), "expired"),
        (early.id(), "not_yet_valid"),
        (other_env.id(), "wrong_environment"),
        (valid.id(), "wrong_secret"),
        ("unknown", "unknown_id"),
        ("unknown", "bad_checksum"),
    ] {
        let series =
            format!("portcullis_api_key_requests_total{{key_id=\"{id}\",outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&series), "{series} not in:\n{metrics}");
    }
    assert!(
        !metrics.contains(unknown.id()),
        "an unknown id became a label"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_key_under_load_fails_no_request_of_the_new_key() {
    let old = TestKey::new(KeyEnv::Live, "billing");
    let new = TestKey::new(KeyEnv::Live, "billing");
    let Some(stack) = Stack::start(&[&old, &new]).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            let (client, url) = (stack.client.clone(), stack.envoy.url("/documents/1"));
            let key = new.key.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let status = client
                        .get(&url)
                        .header("x-api-key", &key)
                        .send()
                        .await
                        .map_or(0, |response| response.status().as_u16());
                    sent.fetch_add(1, Ordering::SeqCst);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Both keys valid at once (overlap), then the old one leaves the file while the new one is
    // in use.
    assert_eq!(stack.with_key(&old.key).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace_config(&stack.keys_file, &keys_yaml(&[&new]));
    let retired = eventually(RELOAD_TIMEOUT, || async {
        stack.with_key(&old.key).await.0 == 401
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("load task");
    }
    assert!(
        retired,
        "the removed key was never refused\n{}",
        stack.logs()
    );
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        sent > 20,
        "too little load to prove anything: {sent} requests"
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests with the new key failed during the rotation ({sent} sent)"
    );
    let report = admin_status(&stack.addrs()).await;
    assert_eq!(report["api_keys"]["keys"], 1, "{report}");
    assert!(report["api_keys"]["last_error"].is_null(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_file_replaced_by_garbage_keeps_the_last_good_keys_and_says_why() {
    let key = TestKey::new(KeyEnv::Live, "billing");
    let Some(stack) = Stack::start(&[&key]).await else {
        return;
    };
    assert_eq!(stack.with_key(&key.key).await.0, 200);
    // Garbage, then a plain-text key where a hash belongs: both refused, located.
    for (garbage, expected) in [
        ("keys: [\n  {id: oops\n".to_owned(), "api-keys.yaml:"),
        (
            format!(
                "keys:\n  - id: {}\n    hash: {}\n    subject: billing\n    env: live\n",
                key.id(),
                key.key
            ),
            "keys[0].hash: this is a plain-text API key",
        ),
    ] {
        let failed_before = admin_status(&stack.addrs()).await["api_keys"]["reloads_failed"]
            .as_u64()
            .unwrap_or(0);
        replace_config(&stack.keys_file, &garbage);
        let refused = eventually(RELOAD_TIMEOUT, || async {
            admin_status(&stack.addrs()).await["api_keys"]["reloads_failed"]
                .as_u64()
                .unwrap_or(0)
                > failed_before
        })
        .await;
        let report = admin_status(&stack.addrs()).await;
        assert!(refused, "the bad keys file was never reported: {report}");
        let errors = report["api_keys"]["last_error"].to_string();
        assert!(errors.contains(expected), "{expected} not in {errors}");
        assert!(
            !errors.contains(&key.key),
            "the key is in /status: {errors}"
        );
        assert_eq!(report["api_keys"]["keys"], 1, "{report}");
        assert_eq!(
            stack.with_key(&key.key).await.0,
            200,
            "the last good keys must stay in use"
        );
    }
    let logs = stack.logs();
    assert!(!logs.contains(&key.key), "the key was logged:\n{logs}");
    // A good file again clears the error.
    replace_config(&stack.keys_file, &keys_yaml(&[&key]));
    let cleared = eventually(RELOAD_TIMEOUT, || async {
        admin_status(&stack.addrs()).await["api_keys"]["last_error"].is_null()
    })
    .await;
    assert!(cleared, "{}", admin_status(&stack.addrs()).await);
}

/// The gRPC Check contract for API keys, as Envoy's `ext_authz` filter calls it (no Envoy
/// needed): the identity set upstream, the key header removed, the dynamic metadata's method;
/// a bad key is UNAUTHENTICATED with the 401 body; a reload that removes `api_keys` stops
/// accepting keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_api_answers_api_keys_like_envoy_expects() {
    use common::agent::{EnvoyRequest, InProcessAgent, wait_generation};

    let key = TestKey::new(KeyEnv::Live, "billing");
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path(), "api-keys.yaml", &keys_yaml(&[&key]));
    let routes = "routes:\n  - name: documents\n    match: {path_prefix: /documents}\n    \
                  require: {scopes: [read:documents]}\n";
    let server = "server: {grpc_listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0}\n";
    let config = write_config(
        dir.path(),
        "portcullis.yaml",
        &format!("{server}api_keys: {{file: api-keys.yaml, env: live}}\n{routes}"),
    );
    let agent = InProcessAgent::start_file(&config).await;
    let mut client = agent.client().await;

    let allowed = client
        .check(&EnvoyRequest::get("/documents/1").header("x-api-key", &key.key))
        .await;
    assert!(allowed.allowed(), "{allowed:?}");
    assert_eq!(allowed.upstream("x-auth-method"), Some("api_key"));
    assert_eq!(allowed.upstream("x-auth-subject"), Some("billing"));
    assert!(allowed.removes("x-api-key"), "{allowed:?}");
    assert_eq!(
        allowed.metadata["portcullis"]["method"], "api_key",
        "{allowed:?}"
    );

    let refused = client
        .check(
            &EnvoyRequest::get("/documents/1")
                .header("x-api-key", &with_wrong_secret(&key.key))
                .request_id("r-1"),
        )
        .await;
    assert_eq!((refused.code, refused.status), (16, 401), "{refused:?}");
    assert_eq!(refused.body_json()["error"], "unauthorized");
    assert!(!refused.body.contains(&key.key));

    // Without `api_keys`, the key header is no credential at all.
    let jwk: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/jwks/rsa-2048.jwk.json")).expect("fixture jwk");
    write_config(
        dir.path(),
        "jwks.json",
        &serde_json::json!({"keys": [jwk]}).to_string(),
    );
    let issuer = "issuers:\n  - {name: t, issuer: https://idp.test, audiences: [a], \
                  jwks_file: jwks.json, algorithms: [RS256]}\n";
    replace_config(&config, &format!("{server}{issuer}{routes}"));
    wait_generation(&agent.addrs, 2, RELOAD_TIMEOUT).await;
    let without = client
        .check(&EnvoyRequest::get("/documents/1").header("x-api-key", &key.key))
        .await;
    assert_eq!(without.status, 401, "{without:?}");
    assert!(
        admin_status(&agent.addrs).await.get("api_keys").is_none(),
        "the keys store outlived its configuration"
    );
    agent.shutdown().await;
}

/// `portcullis keys generate | hash | check`, as an operator runs them.
#[test]
fn the_keys_commands_make_and_check_entries() {
    use common::agent::run_binary;

    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stdout, stderr) = run_binary(&[
        "keys",
        "generate",
        "--env",
        "live",
        "--subject",
        "billing",
        "--scopes",
        "read:documents,write:documents",
        "--expires",
        "90d",
    ]);
    assert!(code.success(), "{stderr}");
    let key = stderr
        .split_whitespace()
        .find(|word| word.starts_with("pk_live_"))
        .unwrap_or_else(|| panic!("no key printed: {stderr}"))
        .to_owned();
    assert!(
        !stdout.contains(&key),
        "the key must not go to the entry output: {stdout}"
    );
    let parts = api_keys::parse(&key).expect("a valid key");
    assert!(stdout.contains(&format!("id: {}", parts.id)), "{stdout}");

    // The entry as printed makes a valid keys file.
    let file = write_config(dir.path(), "keys.yaml", &format!("keys:\n{stdout}"));
    let (code, out, err) = run_binary(&["keys", "check", file.to_str().expect("utf-8")]);
    assert!(code.success(), "{out}{err}");
    assert!(out.contains("ok: 1 keys, 0 warnings"), "{out}{err}");
    let entries = keys_file::load(&file).expect("valid");
    assert!(entries[0].hash.matches(parts.secret()));
    assert_eq!(entries[0].scopes, ["read:documents", "write:documents"]);

    // `keys hash` prints the same id and hash for the key.
    let (code, hashed, err) = run_binary(&["keys", "hash", &key, "--subject", "billing"]);
    assert!(code.success(), "{err}");
    let hash_line = |text: &str| {
        text.lines()
            .find(|line| line.trim_start().starts_with("hash:"))
            .map(str::to_owned)
    };
    assert_eq!(hash_line(&hashed), hash_line(&stdout));
    let (code, _, err) = run_binary(&["keys", "hash", "pk_live_mistyped"]);
    assert!(!code.success());
    assert!(err.contains("not a valid API key"), "{err}");
    assert!(!err.contains("pk_live_mistyped"), "{err}");

    // A bad file: located problems, exit 1.
    let bad = write_config(
        dir.path(),
        "bad.yaml",
        &format!(
            "keys:\n  - id: {}\n    hash: {key}\n    subject: a\n    env: live\n",
            parts.id
        ),
    );
    let (code, _, err) = run_binary(&["keys", "check", bad.to_str().expect("utf-8")]);
    assert!(!code.success());
    assert!(
        err.contains("bad.yaml:3:11: keys[0].hash: this is a plain-text API key"),
        "{err}"
    );
    assert!(!err.contains(&key), "{err}");
}
