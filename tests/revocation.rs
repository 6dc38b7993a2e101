//! Revocation through the running agent (issue 12): the revocation file is watched, a
//! revocation written to it refuses a token within the watch interval — tokens already in the
//! verified-token cache included — with 401 `invalid_token` and the audit reason `revoked`; a
//! garbage file keeps the last good list in force and says so in `/status`; `require_sync`
//! holds readiness until the file has loaded once; and `portcullis revoke --file` edits the file
//! atomically, keeping other entries, refusing an unknown issuer.
//!
//! With Redis (a real `redis-server` per test): three agent processes share one Redis;
//! `portcullis revoke --redis` reaches all three, their token caches included; they keep
//! serving and refusing while Redis is down, and pick up a new revocation as soon as it is
//! back; entries disappear when they expire. The HTTP feed: a change of the feed refuses the
//! token within the poll interval; a garbage or failing feed keeps the last good list.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::agent::{
    Addrs, BinaryAgent, CheckClient, EnvoyRequest, InProcessAgent, admin_get, eventually,
    ready_within, replace_config, run_binary, status, wait_generation, wait_ready, write_config,
};
use common::http_server::{HttpServer, JwksServer, Reply};
use common::redis::RedisServer;
use common::tokens::{self, AUDIENCE, ISSUER, TestKey, default_claims, with};
use serde_json::json;

/// Longest wait for a change of the revocation file to take effect (the watcher debounces
/// 200 ms; the issue asks for "within the watch interval").
const WAIT: Duration = Duration::from_secs(5);

const INVALID_TOKEN: &str = r#"Bearer realm="portcullis", error="invalid_token""#;
const UNAUTHENTICATED: i32 = 16;

/// An agent on free ports protecting `GET /documents` with one issuer (keys from `jwks_url`,
/// max token lifetime 1h) and `revocation: {<sources>}`.
fn agent_yaml(jwks_url: &str, sources: &str) -> String {
    format!(
        "server:\n  grpc_listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\nissuers:\n  - \
         name: corp\n    issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    jwks_uri: {jwks_url}\n    \
         algorithms: [RS256]\n    max_lifetime: 1h\nrevocation: {{{sources}}}\n\
         routes:\n  - name: list-documents\n    match: {{methods: [GET], path: /documents}}\n    \
         require: {{scopes: [\"read:documents\"]}}\n"
    )
}

struct Stack {
    _idp: JwksServer,
    agent: InProcessAgent,
    client: CheckClient,
    revoked: PathBuf,
    dir: tempfile::TempDir,
}

impl Stack {
    /// An agent protecting `GET /documents` with one issuer (max token lifetime 1h) and a
    /// revocation file holding `revoked`.
    async fn start(revoked: &str) -> Self {
        Self::start_with(revoked, "file: revoked.yaml").await
    }

    /// As [`Stack::start`], with `sources` (YAML inside `revocation: {...}`).
    async fn start_with(revoked: &str, sources: &str) -> Self {
        let idp = JwksServer::start(&tokens::jwks(&[&TestKey::rsa()])).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let revoked_path = dir.path().join("revoked.yaml");
        std::fs::write(&revoked_path, revoked).expect("write revoked.yaml");
        let config = write_config(
            dir.path(),
            "portcullis.yaml",
            &agent_yaml(&idp.jwks_url(), sources),
        );
        let agent = InProcessAgent::start_file(&config).await;
        let client = agent.client().await;
        Self {
            _idp: idp,
            agent,
            client,
            revoked: revoked_path,
            dir,
        }
    }

    /// As [`Stack::start`], once `/readyz` says the keys and the revocation file are loaded.
    async fn start_ready(revoked: &str) -> Self {
        let stack = Self::start(revoked).await;
        wait_ready(&stack.agent.addrs, WAIT).await;
        stack
    }

    async fn allowed(&mut self, token: &str) -> bool {
        let outcome = self
            .client
            .check(&EnvoyRequest::get("/documents").bearer(token))
            .await;
        if !outcome.allowed() {
            assert_eq!(outcome.status, 401, "{}", outcome.body);
            assert_eq!(outcome.code, UNAUTHENTICATED);
            assert_eq!(outcome.header("www-authenticate"), Some(INVALID_TOKEN));
        }
        outcome.allowed()
    }

    /// Polls until `token` is refused (true) or `WAIT` passes (false).
    async fn refused_within_wait(&mut self, token: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if !self.allowed(token).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Replaces the revocation file the way tools do: write a new file, rename it over.
    fn write_revoked(&self, text: &str) {
        let temp = self.dir.path().join(".revoked.yaml.tmp");
        std::fs::write(&temp, text).expect("write");
        std::fs::rename(&temp, &self.revoked).expect("rename");
    }

    async fn revoked_decisions(&self) -> u64 {
        let (_, _, metrics) = admin_get(&self.agent.addrs, "/metrics").await;
        metrics
            .lines()
            .find(|line| {
                line.starts_with(
                    r#"portcullis_decisions_total{outcome="deny",reason="revoked",route="list-documents"}"#,
                )
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|count| count.parse().ok())
            .unwrap_or(0)
    }
}

fn token_for(sub: &str) -> (String, String) {
    let claims = default_claims(sub, "read:documents");
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    (TestKey::rsa().token(&claims), jti)
}

fn far() -> &'static str {
    "2999-01-01T00:00:00Z"
}

#[tokio::test]
async fn revoking_a_jti_in_the_file_refuses_the_cached_token_and_no_other() {
    let mut stack = Stack::start_ready("").await;
    let (stolen, jti) = token_for("alice");
    let (other, _) = token_for("alice");
    // Verified once, then served from the token cache.
    assert!(stack.allowed(&stolen).await);
    assert!(stack.allowed(&stolen).await);
    assert!(stack.allowed(&other).await);

    stack.write_revoked(&format!("jtis:\n  - {{jti: {jti}, expires: {}}}\n", far()));
    assert!(stack.refused_within_wait(&stolen).await, "never refused");
    assert!(!stack.allowed(&stolen).await, "refused on every request");
    assert!(
        stack.allowed(&other).await,
        "another token of the same user"
    );
    assert!(stack.revoked_decisions().await >= 2);
    let report = status(&stack.agent.addrs).await;
    assert_eq!(report["revocation"]["entries"], 1, "{report}");
    assert_eq!(report["revocation"]["sources"][0]["source"], "file");
    let (_, _, metrics) = admin_get(&stack.agent.addrs, "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_revocation_entries{source="file"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"portcullis_revocation_sync_age_seconds{source="file"}"#));

    // Removing the entry lifts the revocation.
    stack.write_revoked("");
    let deadline = Instant::now() + WAIT;
    while !stack.allowed(&stolen).await {
        assert!(Instant::now() < deadline, "never allowed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.agent.shutdown().await;
}

#[tokio::test]
async fn revoking_a_subject_or_a_key_refuses_their_tokens() {
    let mut stack = Stack::start_ready("").await;
    let (carol, _) = token_for("carol");
    let (dave, _) = token_for("dave");
    assert!(stack.allowed(&carol).await && stack.allowed(&dave).await);

    // Every token of carol issued before now + 1 s (so this one), not dave's.
    let before =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(1));
    stack.write_revoked(&format!(
        "subjects:\n  - {{sub: carol, issuer: '{ISSUER}', revoked_before: {before}}}\n"
    ));
    assert!(stack.refused_within_wait(&carol).await);
    assert!(stack.allowed(&dave).await);
    // A token issued after the cut-off is carol's new session: allowed.
    let fresh = TestKey::rsa().token(&with(
        &default_claims("carol", "read:documents"),
        &json!({"iat": tokens::now() + 2}),
    ));
    assert!(stack.allowed(&fresh).await);

    // The signing key itself: every token it signed.
    let kid = TestKey::rsa().kid().to_owned();
    stack.write_revoked(&format!("keys:\n  - {{issuer: '{ISSUER}', kid: {kid}}}\n"));
    assert!(stack.refused_within_wait(&dave).await);
    assert!(!stack.allowed(&fresh).await);
    stack.agent.shutdown().await;
}

#[tokio::test]
async fn a_garbage_file_keeps_the_last_good_list_and_says_where_it_is_wrong() {
    let (stolen, jti) = token_for("alice");
    let mut stack =
        Stack::start_ready(&format!("jtis:\n  - {{jti: {jti}, expires: {}}}\n", far())).await;
    assert!(!stack.allowed(&stolen).await, "revoked from the start");

    stack.write_revoked("jtis:\n  - {jti: x}\n  - [not, an, entry\n");
    let error = source_error(&stack.agent.addrs, || true).await;
    assert!(error.contains("revoked.yaml:"), "{error}");
    assert!(
        !stack.allowed(&stolen).await,
        "the last good list stays in force"
    );
    let report = status(&stack.agent.addrs).await;
    assert_eq!(report["revocation"]["entries"], 1, "{report}");
    assert_eq!(report["ready"], true, "a pod that synced once stays ready");
    stack.agent.shutdown().await;
}

#[tokio::test]
async fn a_file_that_never_loaded_holds_readiness_until_it_does() {
    let stack = Stack::start("jtis: [{jti: x, expires: nonsense}]\n").await;
    assert!(!ready_within(&stack.agent.addrs, Duration::from_secs(1)).await);
    let (code, _, body) = admin_get(&stack.agent.addrs, "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("revocation"), "{body}");
    stack.write_revoked("");
    wait_ready(&stack.agent.addrs, WAIT).await;
    stack.agent.shutdown().await;
}

fn revoke(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["revoke"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_binary(&all);
    (status.success(), stdout, stderr)
}

fn config_with(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("revoked.yaml"), "").expect("write");
    let jwks = tokens::jwks(&[&TestKey::rsa()]).to_string();
    std::fs::write(dir.join("jwks.json"), jwks).expect("write");
    write_config(
        dir,
        "portcullis.yaml",
        &format!(
            "issuers:\n  - name: corp\n    issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    \
             jwks_file: jwks.json\n    algorithms: [RS256]\n    max_lifetime: 1h\n\
             revocation: {{file: revoked.yaml}}\nroutes: []\n"
        ),
    )
}

/// A base64url `jti` (or a key id, or a subject) may begin with `-`: it is the option's value.
#[test]
fn revoke_takes_an_identifier_that_begins_with_a_dash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("revoked.yaml");
    let path = file.to_str().expect("utf-8 path");
    let (ok, _, stderr) = revoke(&["--file", path, "--jti", "-Xq9_a", "--expires", far()]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = revoke(&["--file", path, "--kid", "-k1", "--issuer", ISSUER]);
    assert!(ok, "{stderr}");
    let written = std::fs::read_to_string(&file).expect("revocation file");
    assert!(
        written.contains("-Xq9_a") && written.contains("-k1"),
        "{written}"
    );
}

#[test]
fn revoke_of_a_whole_api_key_stores_only_its_id() {
    let (status, _, stderr) = run_binary(&["keys", "generate", "--env", "live"]);
    assert!(status.success(), "{stderr}");
    let key = stderr
        .split_whitespace()
        .find(|word| word.starts_with("pk_live_"))
        .unwrap_or_else(|| panic!("no key in {stderr}"))
        .to_owned();
    let id = &key["pk_live_".len().."pk_live_".len() + 12];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("revoked.yaml");
    let path = file.to_str().expect("utf-8 path");
    let (ok, stdout, stderr) = revoke(&["--file", path, "--api-key", &key]);
    assert!(ok, "{stderr}");
    let written = std::fs::read_to_string(&file).expect("revocation file");
    assert!(written.contains(id), "{written}");
    let secret = &key["pk_live_".len() + 13..];
    for text in [&written, &stdout, &stderr] {
        assert!(
            !text.contains(secret),
            "the key's secret was written or printed: {text}"
        );
    }
}

#[test]
fn revoke_edits_the_file_atomically_keeping_other_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("revoked.yaml");
    let path = file.to_str().expect("utf-8 path");
    let (ok, _, stderr) = revoke(&["--file", path, "--jti", "t-1", "--expires", far()]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = revoke(&["--file", path, "--kid", "k1", "--issuer", ISSUER]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = revoke(&["--file", path, "--api-key", "7Hq2xK9mPz4B"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = revoke(&[
        "--file",
        path,
        "--sub",
        "carol",
        "--issuer",
        ISSUER,
        "--before",
        far(),
    ]);
    assert!(ok, "{stderr}");
    let list = portcullis::revocation::file::load(&file).expect("a valid revocation file");
    assert_eq!(list.jtis.len(), 1);
    assert_eq!(list.jtis[0].jti, "t-1");
    assert_eq!(list.keys[0].kid, "k1");
    assert_eq!(list.api_keys[0].id, "7Hq2xK9mPz4B");
    assert_eq!(list.subjects[0].sub, "carol");
    // Only the file: no temporary left behind.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);

    let (ok, stdout, stderr) = revoke(&["--file", path, "--list"]);
    assert!(ok, "{stderr}");
    for needle in ["t-1", "k1", "7Hq2xK9mPz4B", "carol"] {
        assert!(stdout.contains(needle), "{stdout}");
    }
}

#[test]
fn revoke_refuses_bad_input_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(dir.path());
    let config = config.to_str().expect("utf-8 path");
    let file = dir.path().join("revoked.yaml");
    let path = file.to_str().expect("utf-8 path");
    for args in [
        // A jti needs its token's expiry, in RFC 3339.
        vec!["--file", path, "--jti", "t-1"],
        vec!["--file", path, "--jti", "t-1", "--expires", "tomorrow"],
        // An issuer the configuration does not know.
        vec![
            "--config",
            config,
            "--file",
            path,
            "--sub",
            "carol",
            "--issuer",
            "https://unknown.example.com",
        ],
        // No target at all.
        vec!["--file", path],
    ] {
        let (ok, _, stderr) = revoke(&args);
        assert!(!ok, "accepted {args:?}");
        assert!(!stderr.is_empty());
    }
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "");

    // With the configuration, a subject entry gets the issuer's max lifetime as its expiry,
    // and the file defaults to the configured one.
    let (ok, _, stderr) = revoke(&["--config", config, "--sub", "carol", "--issuer", ISSUER]);
    assert!(ok, "{stderr}");
    let list = portcullis::revocation::file::load(&file).expect("valid");
    let entry = &list.subjects[0];
    assert_eq!(
        entry.expires.map(|e| e.0),
        Some(entry.revoked_before.0 + 3600)
    );
}

// ---------------------------------------------------------------------------------------------
// Redis: a fleet of three

struct Fleet {
    _idp: JwksServer,
    redis: RedisServer,
    agents: Vec<BinaryAgent>,
    clients: Vec<CheckClient>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Option<Self> {
        let redis = RedisServer::start()?;
        let idp = JwksServer::start(&tokens::jwks(&[&TestKey::rsa()])).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = format!("redis: {{url: '{}'}}", redis.url());
        let yaml = agent_yaml(&idp.jwks_url(), &sources);
        let config = write_config(dir.path(), "portcullis.yaml", &yaml);
        let agents: Vec<BinaryAgent> = (0..3).map(|_| BinaryAgent::start(&config)).collect();
        let mut clients = Vec::new();
        for agent in &agents {
            wait_ready(&agent.addrs, WAIT).await;
            clients.push(agent.client().await);
        }
        Some(Self {
            _idp: idp,
            redis,
            agents,
            clients,
            _dir: dir,
        })
    }

    /// How many of the three allow `token` now.
    async fn allowing(&mut self, token: &str) -> usize {
        let mut allowing = 0;
        for client in &mut self.clients {
            let outcome = client
                .check(&EnvoyRequest::get("/documents").bearer(token))
                .await;
            if outcome.allowed() {
                allowing += 1;
            } else {
                assert_eq!(outcome.status, 401, "{}", outcome.body);
                assert_eq!(outcome.header("www-authenticate"), Some(INVALID_TOKEN));
            }
        }
        allowing
    }

    /// Waits until `allowing(token)` is `count`; false after `within`.
    async fn until_allowing(&mut self, token: &str, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.allowing(token).await == count {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `portcullis revoke --redis URL args...`; true when it exited 0.
    fn revoke(&self, args: &[&str]) -> bool {
        let url = self.redis.url();
        let mut all = vec!["--redis", url.as_str()];
        all.extend_from_slice(args);
        let (ok, _, stderr) = revoke(&all);
        if !ok {
            eprintln!("revoke {args:?}: {stderr}");
        }
        ok
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_share_revocations_through_redis_and_survive_its_loss() {
    let Some(mut fleet) = Fleet::start().await else {
        return;
    };
    let (stolen, jti) = token_for("alice");
    let (innocent, _) = token_for("alice");
    let (carol, _) = token_for("carol");
    for token in [&stolen, &innocent, &carol] {
        // Twice: the second answer comes from each agent's token cache.
        assert_eq!(fleet.allowing(token).await, 3);
        assert_eq!(fleet.allowing(token).await, 3);
    }

    assert!(fleet.revoke(&["--jti", &jti, "--expires", far()]));
    assert!(
        fleet.until_allowing(&stolen, 0, WAIT).await,
        "a jti revocation"
    );
    assert_eq!(fleet.allowing(&innocent).await, 3);
    assert!(fleet.revoke(&["--sub", "carol", "--issuer", ISSUER]));
    assert!(
        fleet.until_allowing(&carol, 0, WAIT).await,
        "a subject revocation"
    );
    let report = status(&fleet.agents[0].addrs).await;
    assert_eq!(report["revocation"]["entries"], 2, "{report}");
    let (_, _, metrics) = admin_get(&fleet.agents[1].addrs, "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_revocation_entries{source="redis"} 2"#),
        "{metrics}"
    );

    // Redis dies: every agent keeps serving, refusing what it knew and allowing the rest.
    fleet.redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fleet.allowing(&stolen).await, 0);
    assert_eq!(fleet.allowing(&carol).await, 0);
    assert_eq!(fleet.allowing(&innocent).await, 3);
    let report = status(&fleet.agents[2].addrs).await;
    assert!(
        report["revocation"]["sources"][0]["last_error"].is_string(),
        "{report}"
    );
    assert_eq!(report["ready"], true, "a pod that synced once stays ready");

    // Redis comes back empty; a new revocation at once reaches all three within 5 s.
    fleet.redis.restart_empty();
    let started = Instant::now();
    let (next, next_jti) = token_for("bob");
    assert_eq!(fleet.allowing(&next).await, 3);
    while !fleet.revoke(&["--jti", &next_jti, "--expires", far()]) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "revoke never stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = Duration::from_secs(5).saturating_sub(started.elapsed());
    assert!(
        fleet.until_allowing(&next, 0, left).await,
        "not refused within 5 s"
    );
    // What they knew before the loss is still refused (Redis itself forgot it).
    assert_eq!(fleet.allowing(&stolen).await, 0);
    assert_eq!(fleet.allowing(&innocent).await, 3);

    // The signing key: every token it signed, on every agent.
    let kid = TestKey::rsa().kid().to_owned();
    assert!(fleet.revoke(&["--kid", &kid, "--issuer", ISSUER]));
    assert!(
        fleet.until_allowing(&innocent, 0, WAIT).await,
        "a key revocation"
    );
}

/// `make bench-revocation` (issue 12, item 5): the time from `portcullis revoke --redis`
/// starting to the last of three agents refusing the token (from its cache), over 100
/// revocations; prints the median and the maximum. Not a test: no timed assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: make bench-revocation"]
async fn propagation_of_a_revocation_to_three_agents() {
    let Some(mut fleet) = Fleet::start().await else {
        return;
    };
    let url = fleet.redis.url();
    let mut times = Vec::new();
    for _ in 0..100 {
        let (token, jti) = token_for("alice");
        assert_eq!(fleet.allowing(&token).await, 3);
        let started = Instant::now();
        let args = [
            "--redis",
            url.as_str(),
            "--jti",
            jti.as_str(),
            "--expires",
            far(),
        ]
        .map(str::to_owned);
        let cli = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            revoke(&args)
        });
        for client in &mut fleet.clients {
            let request = EnvoyRequest::get("/documents").bearer(&token);
            while client.check(&request).await.allowed() {
                assert!(started.elapsed() < WAIT, "never refused");
            }
        }
        times.push(started.elapsed());
        let (ok, _, stderr) = cli.await.expect("revoke ran");
        assert!(ok, "{stderr}");
    }
    times.sort();
    println!(
        "revocation propagation to 3 agents over {} revocations: median {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_disappear_when_they_expire_and_malformed_ones_are_counted() {
    let Some(mut fleet) = Fleet::start().await else {
        return;
    };
    // A malformed message is logged, counted and skipped; the agents keep following.
    let published = std::process::Command::new("redis-cli")
        .args(["-p", &fleet.redis.port.to_string()])
        .args([
            "PUBLISH",
            "portcullis:revocations",
            r#"{"jtis": [{"jti": "no-expiry"}]}"#,
        ])
        .output()
        .expect("redis-cli runs");
    assert!(published.status.success());
    let addrs = &fleet.agents[0].addrs;
    let counted = eventually(WAIT, || async {
        status(addrs).await["revocation"]["sources"][0]["skipped"] == 1
    })
    .await;
    assert!(counted, "not counted: {}", status(addrs).await);
    let (_, _, metrics) = admin_get(&fleet.agents[0].addrs, "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_revocation_skipped_total{source="redis"} 1"#),
        "{metrics}"
    );

    let (token, jti) = token_for("alice");
    let soon =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3))
            .to_string();
    assert!(fleet.revoke(&["--jti", &jti, "--expires", &soon]));
    assert!(fleet.until_allowing(&token, 0, WAIT).await);
    // After the entry's expiry every agent allows it again, and Redis no longer holds it.
    assert!(
        fleet
            .until_allowing(&token, 3, Duration::from_secs(8))
            .await
    );
    let url = fleet.redis.url();
    let (ok, stdout, stderr) = revoke(&["--redis", &url, "--list"]);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains(&jti), "{stdout}");
}

#[test]
fn revoke_to_redis_refuses_an_entry_already_expired_and_an_unreachable_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let (ok, _, _) = revoke(&[
        "--redis",
        &url,
        "--jti",
        "t",
        "--expires",
        "2000-01-01T00:00:00Z",
    ]);
    assert!(!ok, "an expired entry is refused");
    drop(redis);
    let (ok, _, stderr) = revoke(&["--redis", &url, "--jti", "t", "--expires", far()]);
    assert!(!ok, "nothing stored: exit non-zero");
    assert!(!stderr.is_empty());
}

// ---------------------------------------------------------------------------------------------
// The HTTP feed

#[tokio::test]
async fn the_http_feed_revokes_within_its_interval_and_keeps_the_last_good_list() {
    let feed = HttpServer::start().await;
    feed.serve("/revoked", Reply::json(&json!({})).header("etag", "\"v1\""));
    let sources = format!("http: {{url: '{}', interval: 1s}}", feed.url("/revoked"));
    let mut stack = Stack::start_with("", &sources).await;
    wait_ready(&stack.agent.addrs, WAIT).await;
    let (stolen, jti) = token_for("alice");
    let (other, _) = token_for("alice");
    assert!(stack.allowed(&stolen).await && stack.allowed(&other).await);

    // The feed changes (JSON here; YAML is read too): refused within the poll interval.
    feed.serve(
        "/revoked",
        Reply::json(&json!({"jtis": [{"jti": jti, "expires": far()}]})).header("etag", "\"v2\""),
    );
    assert!(stack.refused_within_wait(&stolen).await, "never refused");
    assert!(stack.allowed(&other).await);
    // The next poll is conditional on the ETag it got.
    let if_none_match = || {
        feed.last_request_headers()
            .and_then(|h| h.get("if-none-match").cloned())
    };
    let conditional = eventually(WAIT, || async {
        if_none_match().is_some_and(|v| v == "\"v2\"")
    })
    .await;
    assert!(conditional, "no If-None-Match: {:?}", if_none_match());

    // A garbage feed, then a failing one: the last good list stays in force.
    let polls = feed.requests("/revoked");
    feed.serve(
        "/revoked",
        Reply::status(http::StatusCode::OK).body("jtis: [{jti: x}"),
    );
    let error = source_error(&stack.agent.addrs, || feed.requests("/revoked") > polls).await;
    assert!(error.contains("/revoked"), "{error}");
    assert!(
        !stack.allowed(&stolen).await,
        "garbage keeps the last good list"
    );
    feed.serve(
        "/revoked",
        Reply::status(http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !stack.allowed(&stolen).await,
        "a failing feed keeps the last good list"
    );
    assert!(stack.allowed(&other).await);
    stack.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_redis_is_reached_with_the_password_file_and_never_logged() {
    const SECRET: &str = "s3cret-revocation-pw";
    let Some(redis) = RedisServer::start_with_password(SECRET) else {
        return;
    };
    let idp = JwksServer::start(&tokens::jwks(&[&TestKey::rsa()])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("redis-password"), format!("{SECRET}\n")).expect("write");
    let sources = format!(
        "redis: {{url: '{}', password_file: redis-password}}",
        redis.url()
    );
    let config = write_config(
        dir.path(),
        "portcullis.yaml",
        &agent_yaml(&idp.jwks_url(), &sources),
    );
    let (agent, mut client, request, jti) = ready_agent_allowing_alice(&config).await;

    // Without the password Redis refuses the CLI: nothing stored, exit non-zero.
    let url = redis.url();
    let (ok, _, _) = revoke(&["--redis", &url, "--jti", &jti, "--expires", far()]);
    assert!(!ok);
    // With the configuration, the CLI uses the same password file.
    let config = config.to_str().expect("utf-8 path");
    let (ok, _, stderr) = revoke(&["--config", config, "--jti", &jti, "--expires", far()]);
    assert!(ok, "{stderr}");
    refused_within_wait(&mut client, &request).await;
    let logs = [agent.stdout(), agent.stderr()].concat().join("\n");
    assert!(!logs.contains(SECRET), "the password reached a log line");
}

/// The first source's `last_error` in `/status`, once it has one and `also()` holds; fails the
/// test after [`WAIT`].
async fn source_error(addrs: &Addrs, also: impl Fn() -> bool) -> String {
    let error = || async {
        status(addrs).await["revocation"]["sources"][0]["last_error"]
            .as_str()
            .map(str::to_owned)
    };
    let found = eventually(WAIT, || async { error().await.is_some() && also() }).await;
    assert!(found, "no error in /status: {}", status(addrs).await);
    error().await.unwrap_or_default()
}

/// The built binary on `config`, ready (its revocation sources synced), with a client and a
/// check of a token for `alice` that it allows; and that token's `jti`.
async fn ready_agent_allowing_alice(
    config: &Path,
) -> (BinaryAgent, CheckClient, EnvoyRequest, String) {
    let agent = BinaryAgent::start(config);
    wait_ready(&agent.addrs, WAIT).await;
    let mut client = agent.client().await;
    let (token, jti) = token_for("alice");
    let request = EnvoyRequest::get("/documents").bearer(&token);
    assert!(client.check(&request).await.allowed());
    (agent, client, request, jti)
}

/// Repeats `request` until it is refused, bounded by [`WAIT`].
async fn refused_within_wait(client: &mut CheckClient, request: &EnvoyRequest) {
    let deadline = Instant::now() + WAIT;
    while client.check(request).await.allowed() {
        assert!(Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `rediss://`: the agent and the CLI reach a TLS-only Redis through its CA; without the CA
/// (the system's roots do not know it) the CLI is refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_is_reached_with_rediss_and_its_ca() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let ca = redis.ca_file().expect("a TLS server has a CA");
    let idp = JwksServer::start(&tokens::jwks(&[&TestKey::rsa()])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = format!("redis: {{url: '{}', ca_file: '{ca}'}}", redis.url());
    let config = write_config(
        dir.path(),
        "portcullis.yaml",
        &agent_yaml(&idp.jwks_url(), &sources),
    );
    // Ready only once the first sync through TLS succeeded (`require_sync`).
    let (_agent, mut client, request, jti) = ready_agent_allowing_alice(&config).await;

    let url = redis.url();
    let (ok, _, _) = revoke(&["--redis", &url, "--jti", &jti, "--expires", far()]);
    assert!(!ok, "a server certificate from an unknown CA was accepted");
    let (ok, _, stderr) = revoke(&[
        "--redis",
        &url,
        "--redis-ca-file",
        &ca,
        "--jti",
        &jti,
        "--expires",
        far(),
    ]);
    assert!(ok, "{stderr}");
    refused_within_wait(&mut client, &request).await;
}

#[tokio::test]
async fn a_reload_that_changes_the_revocation_sources_asks_for_a_restart_and_keeps_them() {
    let (stolen, jti) = token_for("alice");
    let mut stack =
        Stack::start_ready(&format!("jtis:\n  - {{jti: {jti}, expires: {}}}\n", far())).await;
    assert!(!stack.allowed(&stolen).await);
    let config = stack.dir.path().join("portcullis.yaml");
    let yaml = std::fs::read_to_string(&config).expect("read config");
    replace_config(
        &config,
        &yaml.replace("file: revoked.yaml", "file: revoked.yaml, max_entries: 10"),
    );
    wait_generation(&stack.agent.addrs, 2, WAIT).await;
    let report = status(&stack.agent.addrs).await;
    let note = report["config"]["restart_required"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains("revocation"), "{report}");
    // The file the agent started with is still followed and enforced.
    assert!(!stack.allowed(&stolen).await);
    stack.write_revoked("");
    let deadline = Instant::now() + WAIT;
    while !stack.allowed(&stolen).await {
        assert!(Instant::now() < deadline, "the file is no longer followed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.agent.shutdown().await;
}
