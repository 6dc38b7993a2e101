//! The agent's decisions over gRPC, exactly as Envoy's `ext_authz` filter asks for them: every
//! row of design.md's response table, the hostile-token list (in-process and as the built
//! binary), key rotation, an IdP that goes down after the first fetch or is down from the
//! start, hot reload of the policy, a flood of unknown key ids, and the per-source limit on
//! failed attempts (429).
//!
//! Each test runs portcullis against a JWKS server under its control, with refresh intervals
//! of a second or two so that key-lifecycle tests finish within seconds. Process concerns (CLI,
//! TLS, admin, shutdown, reload mechanics) are in `tests/app.rs`; the key store's behaviour at
//! the library level is in `tests/jwks.rs`.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::agent::{
    Addrs, BinaryAgent, CheckClient, CheckOutcome, EnvoyRequest, InProcessAgent, admin_get,
    eventually, replace_config, status, wait_generation, wait_ready, write_config,
};
use common::http_server::JwksServer;
use common::tokens::{self, AUDIENCE, ISSUER, TestKey, claims, now, raw, with};
use serde_json::{Value, json};

/// Longest wait for anything that should happen within a second or two.
const WAIT: Duration = Duration::from_secs(10);

/// Fast key lifecycle: refetch at most once a second, refresh every two, give up after one.
const FAST_REFRESH: &str = "{min_interval: 1s, max_interval: 2s, timeout: 1s}";

/// For tests that send many bad tokens from one source on purpose. The failed-attempt limit is
/// off by default; saying so here keeps these tests independent of that default.
const NO_ATTEMPT_LIMIT: &str = "limits: {failed_attempts: off}";

/// Key ids of the keys the test IdP serves.
const RSA_KID: &str = "rsa-2048-a";
const EC_KID: &str = "ec-p256";

/// google.rpc codes in `CheckResponse.status` (design.md, "Response contract").
const OK: i32 = 0;
const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

const CHALLENGE: &str = r#"Bearer realm="portcullis""#;
const INVALID_TOKEN: &str = r#"Bearer realm="portcullis", error="invalid_token""#;

/// Words that would tell a client which check failed; a denial body never contains them.
const TELLTALES: &[&str] = &[
    "expired",
    "signature",
    "kid",
    "key",
    "issuer",
    "audience",
    "alg",
    "scope",
    "token",
    "malformed",
    "base64",
    "claim",
    "jwk",
    "jwks",
    "nbf",
    "iat",
];

// ---------------------------------------------------------------------------------------------
// Fixture: an IdP serving three keys, and portcullis protecting a small document API

fn rsa() -> TestKey {
    TestKey::rsa()
}

fn ec() -> TestKey {
    TestKey::ec_p256()
}

fn ed() -> TestKey {
    TestKey::ed25519()
}

/// The configuration every test starts from: one issuer (`corp`) whose keys come from
/// `jwks_uri`, refreshed per `refresh`; `extra` is appended at the top level (e.g. `response:`).
///
/// The listeners on free ports and the `corp` issuer up to its `algorithms` line.
fn server_and_issuer(jwks_uri: &str, algorithms: &str) -> String {
    format!(
        "server:\n  grpc_listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\nissuers:\n  - name: \
         corp\n    issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    jwks_uri: {jwks_uri}\n    \
         algorithms: {algorithms}"
    )
}

/// Routes: `/healthz` anonymous; `GET /documents` needs `read:documents`; `POST /documents`
/// needs `read:documents write:documents`; `GET /documents/{id}` needs `read:documents` and
/// answers denials with 404; `/api/...` needs any valid token.
fn config_yaml(jwks_uri: &str, refresh: &str, extra: &str) -> String {
    format!(
        r#"{prelude}
    clock_skew: 30s
    refresh: {refresh}
    claim_headers:
      email: x-auth-email
      tenant.id: x-tenant
{extra}
routes:
  - name: health
    match: {{path: /healthz}}
    allow: anonymous
  - name: list-documents
    match: {{methods: [GET], path: /documents}}
    require: {{scopes: ["read:documents"]}}
  - name: write-documents
    match: {{methods: [POST], path: /documents}}
    require: {{scopes: ["read:documents", "write:documents"]}}
  - name: get-document
    match: {{methods: [GET], path: "/documents/{{doc_id}}"}}
    require: {{scopes: ["read:documents"]}}
    on_deny: not_found
  - name: api
    match: {{path_prefix: /api}}
    allow: authenticated
"#,
        prelude = server_and_issuer(jwks_uri, "[RS256, ES256, EdDSA]"),
    )
}

/// The IdP, portcullis in-process with a watched configuration file, and a client.
struct Stack {
    idp: JwksServer,
    agent: InProcessAgent,
    client: CheckClient,
    config: PathBuf,
    /// Keeps the configuration directory alive.
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Serves RSA, P-256 and Ed25519 keys and waits until portcullis has them (`/readyz`).
    async fn start(refresh: &str, extra: &str) -> Self {
        Self::start_serving(&tokens::jwks(&[&rsa(), &ec(), &ed()]), refresh, extra).await
    }

    async fn start_serving(jwks: &Value, refresh: &str, extra: &str) -> Self {
        let idp = JwksServer::start(jwks).await;
        let stack = Self::start_with_idp(idp, refresh, extra).await;
        wait_ready(&stack.agent.addrs, WAIT).await;
        stack
    }

    /// Starts portcullis against `idp` without waiting for keys.
    async fn start_with_idp(idp: JwksServer, refresh: &str, extra: &str) -> Self {
        let yaml = config_yaml(&idp.jwks_url(), refresh, extra);
        Self::start_with_yaml(idp, &yaml).await
    }

    /// Starts portcullis on `yaml`, written to a file it watches, without waiting for keys.
    async fn start_with_yaml(idp: JwksServer, yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), "portcullis.yaml", yaml);
        let agent = InProcessAgent::start_file(&config).await;
        let client = agent.client().await;
        Self {
            idp,
            agent,
            client,
            config,
            _dir: dir,
        }
    }

    async fn check(&mut self, request: &EnvoyRequest) -> CheckOutcome {
        self.client.check(request).await
    }

    /// As [`Stack::start`], with `routes` (YAML list items) listed before the others.
    async fn start_with_routes(routes: &str) -> Self {
        let idp = JwksServer::start(&tokens::jwks(&[&rsa(), &ec(), &ed()])).await;
        let yaml = config_yaml(&idp.jwks_url(), FAST_REFRESH, "").replacen(
            "routes:\n",
            &format!("routes:\n{routes}"),
            1,
        );
        let stack = Self::start_with_yaml(idp, &yaml).await;
        wait_ready(&stack.agent.addrs, WAIT).await;
        stack
    }

    fn addrs(&self) -> Addrs {
        self.agent.addrs
    }

    async fn stop(self) {
        self.agent.shutdown().await;
    }
}

/// A fresh token (its own `jti`, so never a token-cache hit) for `alice` with `scope`.
fn token(key: &TestKey, scope: &str) -> String {
    key.token(&claims(ISSUER, AUDIENCE, "alice", scope, 300))
}

fn get(path: &str, token: &str) -> EnvoyRequest {
    EnvoyRequest::get(path).bearer(token)
}

/// A request id unique to this process, so denials can be matched to their request.
fn request_id(label: &str) -> String {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    format!("rid-{label}-{}", SERIAL.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Assertions on what Envoy and the client see

/// What a denial must look like to the client.
struct Expected<'a> {
    rpc_code: i32,
    http_status: u16,
    /// The body's generic `error`.
    error: &'a str,
    /// The exact `WWW-Authenticate`, or `None` when there must be none.
    challenge: Option<&'a str>,
}

const BAD_REQUEST: Expected<'static> = Expected {
    rpc_code: INVALID_ARGUMENT,
    http_status: 400,
    error: "bad_request",
    challenge: None,
};

const UNAUTHORIZED: Expected<'static> = Expected {
    rpc_code: UNAUTHENTICATED,
    http_status: 401,
    error: "unauthorized",
    challenge: Some(INVALID_TOKEN),
};

/// No credential at all: 401 with the bare challenge (no `error`).
const NO_CREDENTIAL: Expected<'static> = Expected {
    challenge: Some(CHALLENGE),
    ..UNAUTHORIZED
};

/// No route (or a hidden one, `on_deny: not_found`).
const NOT_FOUND_ANSWER: Expected<'static> = Expected {
    rpc_code: NOT_FOUND,
    http_status: 404,
    error: "not_found",
    challenge: None,
};

/// Checks a denial: the RPC succeeded and carries the matching code, the HTTP status, the
/// headers (`content-type`, `cache-control: no-store`, `WWW-Authenticate` or none), a body of
/// exactly `error`, `message` and the echoed `request_id`, which names no failed check, and
/// nothing for the upstream. Returns the problems found (empty: as expected).
fn denial_problems(outcome: &CheckOutcome, expected: &Expected<'_>, rid: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    expect(!outcome.allowed(), "allowed".to_owned());
    expect(
        outcome.code == expected.rpc_code,
        format!("rpc code {} (want {})", outcome.code, expected.rpc_code),
    );
    expect(
        outcome.status == expected.http_status,
        format!("HTTP {} (want {})", outcome.status, expected.http_status),
    );
    expect(
        outcome.header("www-authenticate") == expected.challenge,
        format!(
            "WWW-Authenticate {:?} (want {:?})",
            outcome.header("www-authenticate"),
            expected.challenge
        ),
    );
    expect(
        outcome.header("content-type") == Some("application/json"),
        format!("content-type {:?}", outcome.header("content-type")),
    );
    expect(
        outcome.header("cache-control") == Some("no-store"),
        format!("cache-control {:?}", outcome.header("cache-control")),
    );
    expect(
        outcome.upstream_set.is_empty() && outcome.upstream_removed.is_empty(),
        "upstream headers on a denial".to_owned(),
    );
    expect(
        outcome.metadata.is_null(),
        format!("dynamic metadata on a denial: {}", outcome.metadata),
    );
    match serde_json::from_str::<Value>(&outcome.body) {
        Ok(Value::Object(body)) => {
            let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
            keys.sort_unstable();
            expect(
                keys == ["error", "message", "request_id"],
                format!("body fields {keys:?}"),
            );
            expect(
                body["error"] == expected.error,
                format!("body error {} (want {:?})", body["error"], expected.error),
            );
            expect(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                format!("body message {}", body["message"]),
            );
            expect(
                body["request_id"] == rid,
                format!("body request_id {} (want {rid:?})", body["request_id"]),
            );
            let generic = format!("{} {}", body["error"], body["message"]).to_ascii_lowercase();
            for word in TELLTALES {
                expect(
                    !generic.contains(word),
                    format!("body names the failed check ({word:?})"),
                );
            }
        }
        _ => expect(
            false,
            format!("body is not a JSON object: {:?}", outcome.body),
        ),
    }
    problems
}

#[track_caller]
fn assert_denied(outcome: &CheckOutcome, expected: &Expected<'_>, rid: &str) {
    let problems = denial_problems(outcome, expected, rid);
    assert!(
        problems.is_empty(),
        "{}\noutcome: {outcome:#?}",
        problems.join("; ")
    );
}

/// A 403 `insufficient_scope` denial whose challenge names exactly `scope` (space separated).
#[track_caller]
fn assert_insufficient_scope(outcome: &CheckOutcome, scope: &str, rid: &str) {
    let challenge =
        format!(r#"Bearer realm="portcullis", error="insufficient_scope", scope="{scope}""#);
    assert_denied(
        outcome,
        &Expected {
            rpc_code: PERMISSION_DENIED,
            http_status: 403,
            error: "forbidden",
            challenge: Some(&challenge),
        },
        rid,
    );
}

#[track_caller]
fn assert_allowed(outcome: &CheckOutcome, context: &str) {
    assert!(
        outcome.allowed() && outcome.code == OK,
        "{context}: expected allow, got {outcome:#?}"
    );
}

/// The value of the Prometheus sample `series` (name and labels, exactly), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// `/metrics` counts exactly `count` denials for `reason` on `route`.
async fn assert_denials(stack: &Stack, reason: &str, route: &str, count: f64) {
    let metrics = admin_get(&stack.addrs(), "/metrics").await.2;
    let series = format!(
        r#"portcullis_decisions_total{{outcome="deny",reason="{reason}",route="{route}"}}"#
    );
    assert_eq!(
        sample(&metrics, &series),
        Some(count),
        "{reason}:\n{metrics}"
    );
}

/// Sends what `request` makes for the hidden route (`/documents/7`, `on_deny: not_found`) and
/// for a path with no route, with the same request id: the hidden route answers 404, exactly
/// as no route does (code, status, headers and body).
async fn assert_hidden_like_no_route(
    stack: &mut Stack,
    request: impl Fn(&str, &str) -> EnvoyRequest,
    context: &str,
) {
    let rid = request_id("hidden");
    let hidden = stack.check(&request("/documents/7", &rid)).await;
    assert_denied(&hidden, &NOT_FOUND_ANSWER, &rid);
    let absent = stack.check(&request("/nothing-here", &rid)).await;
    assert_eq!(
        (hidden.code, hidden.status, &hidden.headers, &hidden.body),
        (absent.code, absent.status, &absent.headers, &absent.body),
        "{context}: a hidden route can be told apart from a missing one"
    );
}

// ---------------------------------------------------------------------------------------------
// Response table: allowed

#[tokio::test]
async fn allowed_request_gets_identity_headers_metadata_and_loses_its_credential() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let alice = with(
        &claims(ISSUER, AUDIENCE, "alice", "read:documents openid", 300),
        &json!({
            "roles": ["reader", "auditor"],
            "email": "alice@example.com",
            "tenant": {"id": "acme"},
        }),
    );
    let token = rsa().token(&alice);
    let outcome = stack
        .check(&get("/documents", &token).request_id("rid-allow"))
        .await;
    assert_allowed(&outcome, "valid RS256 token with the scope");
    for (name, value) in [
        ("x-auth-subject", "alice"),
        ("x-auth-issuer", ISSUER),
        ("x-auth-method", "jwt"),
        ("x-auth-scopes", "read:documents openid"),
        ("x-auth-roles", "reader,auditor"),
        ("x-auth-email", "alice@example.com"),
        ("x-tenant", "acme"),
    ] {
        assert_eq!(outcome.upstream(name), Some(value), "{name}: {outcome:#?}");
    }
    assert_eq!(
        outcome.upstream_removed,
        vec!["authorization".to_owned()],
        "the credential, and only it, is removed"
    );
    assert_eq!(
        outcome.metadata,
        json!({"portcullis": {"subject": "alice", "method": "jwt", "route": "list-documents"}})
    );

    // Scopes as an `scp` array (Entra, Okta) count the same, and every key type the issuer
    // allows verifies.
    for key in [ec(), ed()] {
        let bob = with(
            &claims(ISSUER, AUDIENCE, "bob", "", 300),
            &json!({"scp": ["read:documents", "write:documents"]}),
        );
        let outcome = stack
            .check(&EnvoyRequest::new("POST", "/documents").bearer(&key.token(&bob)))
            .await;
        assert_allowed(&outcome, &format!("{} token with scp", key.alg_name()));
        assert_eq!(
            outcome.upstream("x-auth-scopes"),
            Some("read:documents write:documents")
        );
        assert_eq!(outcome.upstream("x-auth-subject"), Some("bob"));
        assert_eq!(outcome.metadata["portcullis"]["route"], "write-documents");
    }
    stack.stop().await;
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let forged = |request: EnvoyRequest| {
        request
            .header("x-auth-subject", "mallory")
            .header("x-auth-roles", "admin")
            .header("x-auth-admin", "true")
            .header("x-auth-email", "boss@example.com")
            .header("x-tenant", "other-tenant")
    };

    // Protected route: ours overwrite the forged values, the rest are removed. Envoy applies
    // removals after sets, so a header we set must not be in the removal list.
    let outcome = stack
        .check(&forged(get("/documents", &token(&rsa(), "read:documents"))))
        .await;
    assert_allowed(&outcome, "forged headers on a protected route");
    assert_eq!(outcome.upstream("x-auth-subject"), Some("alice"));
    assert!(
        outcome
            .upstream("x-auth-roles")
            .map_or(outcome.removes("x-auth-roles"), str::is_empty),
        "forged roles survive: {outcome:#?}"
    );
    for removed in ["x-auth-admin", "x-auth-email", "x-tenant", "authorization"] {
        assert!(outcome.removes(removed), "{removed} kept: {outcome:#?}");
    }
    for set in &outcome.upstream_set {
        assert!(
            !outcome.removes(&set.0),
            "{} is set and removed, so Envoy would drop it",
            set.0
        );
    }

    // Anonymous route: only `x-auth-method: anonymous`; every client identity header removed;
    // the credential was not used here, so it is left alone.
    let outcome = stack
        .check(&forged(
            EnvoyRequest::get("/healthz").bearer("whatever-the-client-sends"),
        ))
        .await;
    assert_allowed(&outcome, "forged headers on an anonymous route");
    assert_eq!(
        outcome.upstream_set,
        vec![("x-auth-method".to_owned(), "anonymous".to_owned())]
    );
    for removed in [
        "x-auth-subject",
        "x-auth-roles",
        "x-auth-admin",
        "x-auth-email",
        "x-tenant",
    ] {
        assert!(outcome.removes(removed), "{removed} kept: {outcome:#?}");
    }
    assert!(!outcome.removes("authorization"));
    assert_eq!(
        outcome.metadata,
        json!({"portcullis": {"subject": "", "method": "anonymous", "route": "health"}})
    );
    stack.stop().await;
}

#[tokio::test]
async fn underscore_spellings_of_identity_headers_are_named_for_removal() {
    // Envoy's default lets `x_auth_subject` through, and WSGI/CGI applications read it as
    // `x-auth-subject`: portcullis must remove every such spelling itself.
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let spellings = [
        "x_auth_subject",
        "X_AUTH_ROLES",
        "x-auth_subject",
        "x_auth_email",
        "x_tenant",
        "X-Tenant",
    ];
    let forged = |mut request: EnvoyRequest| {
        for name in spellings {
            request = request.header(name, "forged");
        }
        request
    };
    for (label, request) in [
        (
            "protected",
            get("/documents", &token(&rsa(), "read:documents")),
        ),
        ("anonymous", EnvoyRequest::get("/healthz")),
    ] {
        let outcome = stack.check(&forged(request)).await;
        assert_allowed(&outcome, label);
        for name in spellings {
            assert!(
                outcome.removes(&name.to_ascii_lowercase()),
                "{label}: {name} kept: {outcome:#?}"
            );
        }
        for set in &outcome.upstream_set {
            assert!(
                !outcome.removes(&set.0),
                "{label}: {} set and removed",
                set.0
            );
        }
    }
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Response table: 401

#[tokio::test]
async fn missing_credential_is_401_with_a_challenge_without_error() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    // `/documents/7` hides itself (`on_deny: not_found`): it answers like no route.
    for path in ["/documents", "/api/me"] {
        let rid = request_id("missing");
        let outcome = stack.check(&EnvoyRequest::get(path).request_id(&rid)).await;
        assert_denied(&outcome, &NO_CREDENTIAL, &rid);
    }
    stack.stop().await;
}

#[tokio::test]
async fn invalid_credentials_are_401_invalid_token_with_one_generic_answer() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let valid = claims(ISSUER, AUDIENCE, "alice", "read:documents", 300);
    let cases = [
        ("not a bearer token", None, Some("Basic YWxpY2U6c2VjcmV0")),
        ("malformed token", Some("not-a-jwt".to_owned()), None),
        (
            "bad signature",
            Some(TestKey::rsa_b().with_kid(RSA_KID).token(&valid)),
            None,
        ),
        (
            "expired",
            Some(rsa().token(&claims(ISSUER, AUDIENCE, "alice", "read:documents", -600))),
            None,
        ),
        (
            "wrong issuer",
            Some(rsa().token(&with(&valid, &json!({"iss": "https://evil.example.com"})))),
            None,
        ),
        (
            "wrong audience",
            Some(rsa().token(&with(&valid, &json!({"aud": "billing-api"})))),
            None,
        ),
    ];
    let mut answers = Vec::new();
    for (case, token, authorization) in cases {
        let mut request = EnvoyRequest::get("/documents").request_id("rid-invalid");
        if let Some(token) = &token {
            request = request.bearer(token);
        }
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let outcome = stack.check(&request).await;
        let problems = denial_problems(&outcome, &UNAUTHORIZED, "rid-invalid");
        assert!(problems.is_empty(), "{case}: {}", problems.join("; "));
        answers.push((case, outcome));
    }
    // Whatever failed, the client sees the same answer: only the audit log says which check.
    let (first_case, first) = &answers[0];
    for (case, outcome) in &answers[1..] {
        assert_eq!(
            (&outcome.body, &outcome.headers),
            (&first.body, &first.headers),
            "{case} is answered differently from {first_case}"
        );
    }
    // The same token is still fine: none of this hurt the agent.
    assert_allowed(
        &stack.check(&get("/documents", &rsa().token(&valid))).await,
        "valid token after the refusals",
    );
    stack.stop().await;
}

/// issue 8, item 9: a subject of `" admin "` was logged as such while the application, after
/// its HTTP parser trimmed the header, read `admin`. A claim that is copied into a header
/// (subject, scope, role, claim header) with surrounding whitespace or a control character
/// makes the token invalid — every time, since a refused token is never cached.
#[tokio::test]
async fn a_token_whose_header_claims_would_be_trimmed_is_401() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let valid = claims(ISSUER, AUDIENCE, "alice", "read:documents", 300);
    for (case, changes) in [
        ("subject", json!({"sub": " admin "})),
        ("subject", json!({"sub": "admin\u{0}"})),
        ("scope", json!({"scope": "read:documents admin\t"})),
        (
            "scp",
            json!({"scope": null, "scp": ["read:documents", " admin"]}),
        ),
        ("role", json!({"roles": ["reader", "admin "]})),
        ("claim header", json!({"email": "boss@example.com\r\n"})),
        ("claim header", json!({"tenant": {"id": "\u{a0}acme"}})),
    ] {
        let token = rsa().token(&with(&valid, &changes));
        for _ in 0..2 {
            let rid = request_id("trimmed");
            let outcome = stack
                .check(&get("/documents", &token).request_id(&rid))
                .await;
            let problems = denial_problems(&outcome, &UNAUTHORIZED, &rid);
            assert!(
                problems.is_empty(),
                "{case} {changes}: {}",
                problems.join("; ")
            );
        }
    }
    assert_denials(&stack, "unsafe_claim", "list-documents", 14.0).await;
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Response table: 403, on_deny, 400, 404

#[tokio::test]
async fn lacking_a_scope_is_403_insufficient_scope_naming_every_needed_scope() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let rid = request_id("scope");
    let outcome = stack
        .check(&get("/documents", &token(&rsa(), "write:documents openid")).request_id(&rid))
        .await;
    assert_insufficient_scope(&outcome, "read:documents", &rid);

    // All required scopes are named, even when some are granted.
    let rid = request_id("scope");
    let outcome = stack
        .check(
            &EnvoyRequest::new("POST", "/documents")
                .bearer(&token(&ec(), "read:documents"))
                .request_id(&rid),
        )
        .await;
    assert_insufficient_scope(&outcome, "read:documents write:documents", &rid);
    stack.stop().await;
}

/// issue 8, item 9: `on_deny: not_found` answered 401 to a request without a credential while
/// an unknown path answered 404, so the route's existence leaked. A caller without a valid
/// credential now gets exactly what a path with no route gets — code, status, headers and body,
/// compared whole with the same request id — while the metrics keep the real reason.
#[tokio::test]
async fn not_found_route_answers_callers_without_a_valid_credential_like_no_route() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let expired = rsa().token(&claims(ISSUER, AUDIENCE, "alice", "read:documents", -600));
    let forged = TestKey::rsa_b().with_kid(RSA_KID).token(&claims(
        ISSUER,
        AUDIENCE,
        "alice",
        "read:documents",
        300,
    ));
    let cases = [
        ("missing_credential", None),
        ("malformed", Some("Basic YWxpY2U6c2VjcmV0".to_owned())),
        ("expired", Some(format!("Bearer {expired}"))),
        ("bad_signature", Some(format!("Bearer {forged}"))),
    ];
    for (reason, authorization) in &cases {
        let request = |path: &str, rid: &str| {
            let request = EnvoyRequest::get(path).request_id(rid);
            match authorization {
                Some(value) => request.header("authorization", value),
                None => request,
            }
        };
        assert_hidden_like_no_route(&mut stack, request, reason).await;
    }
    for (reason, _) in &cases {
        assert_denials(&stack, reason, "get-document", 1.0).await;
    }
    assert_allowed(
        &stack
            .check(&get("/documents/7", &token(&rsa(), "read:documents")))
            .await,
        "caller with the scope",
    );
    stack.stop().await;
}

/// docs/configuration.md: `on_deny` is "how a denial of an authenticated caller on this route
/// is answered: 403, or 404 so that existence cannot be probed", and its example puts
/// `on_deny: not_found` on a route whose only requirement is a scope ("404 instead of 403").
/// The answer must then be indistinguishable from a path that has no route at all.
#[tokio::test]
async fn not_found_route_answers_an_authenticated_caller_without_the_scope_like_no_route() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let caller = token(&rsa(), "write:documents");
    let request = |path: &str, rid: &str| get(path, &caller).request_id(rid);
    assert_hidden_like_no_route(&mut stack, request, "without the scope").await;
    // The answer hides the reason; the metrics keep it.
    assert_denials(&stack, "insufficient_scope", "get-document", 1.0).await;
    stack.stop().await;
}

#[tokio::test]
async fn credential_in_the_query_is_400_even_with_a_valid_token() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let valid = token(&rsa(), "read:documents");
    for path in [
        format!("/documents?access_token={valid}"),
        "/documents?page=2&ACCESS_TOKEN=abc".to_owned(),
        "/documents?api_key=pk_live_123".to_owned(),
        // Anonymous routes too: the credential is already in logs and Referer headers.
        "/healthz?access_token=abc".to_owned(),
    ] {
        let rid = request_id("query");
        let outcome = stack.check(&get(&path, &valid).request_id(&rid)).await;
        let problems = denial_problems(&outcome, &BAD_REQUEST, &rid);
        assert!(problems.is_empty(), "{path}: {}", problems.join("; "));
    }
    // A query without credentials does not disturb matching.
    assert_allowed(
        &stack.check(&get("/documents?page=2", &valid)).await,
        "query without a credential",
    );
    stack.stop().await;
}

#[tokio::test]
async fn paths_that_cannot_be_normalized_are_400_and_never_reach_a_route() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let valid = token(&rsa(), "read:documents");
    for path in [
        "/a/../b",
        "/documents/../healthz",
        "/documents/%2e%2e/healthz",
        "/documents/%2f7",
        "/documents/7%2F..",
        "/documents%5c7",
        "//documents",
        "/documents//7",
        "/documents/./7",
        "/documents/%00",
        "/documents/%zz",
        "documents",
    ] {
        let rid = request_id("path");
        let outcome = stack.check(&get(path, &valid).request_id(&rid)).await;
        let problems = denial_problems(&outcome, &BAD_REQUEST, &rid);
        assert!(problems.is_empty(), "{path}: {}", problems.join("; "));
    }
    // An escaped unreserved character is just that character.
    let outcome = stack.check(&get("/%64ocuments", &valid)).await;
    assert_allowed(&outcome, "/%64ocuments is /documents");
    assert_eq!(outcome.metadata["portcullis"]["route"], "list-documents");
    stack.stop().await;
}

#[tokio::test]
async fn no_matching_route_is_404_or_the_configured_403() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let valid = token(&rsa(), "read:documents");
    for request in [
        EnvoyRequest::get("/nowhere"),
        get("/nowhere", &valid),
        // Methods take part in matching: no route for DELETE /documents.
        EnvoyRequest::new("DELETE", "/documents").bearer(&valid),
        // Prefixes match on segment boundaries.
        get("/apiary", &valid),
    ] {
        let rid = request_id("noroute");
        let outcome = stack.check(&request.clone().request_id(&rid)).await;
        let problems = denial_problems(&outcome, &NOT_FOUND_ANSWER, &rid);
        assert!(
            problems.is_empty(),
            "{} {}: {}",
            request.method,
            request.path,
            problems.join("; ")
        );
    }
    stack.stop().await;

    let mut stack = Stack::start(FAST_REFRESH, "response: {no_route_status: 403}").await;
    let rid = request_id("noroute");
    let outcome = stack.check(&get("/nowhere", &valid).request_id(&rid)).await;
    assert_denied(
        &outcome,
        &Expected {
            rpc_code: PERMISSION_DENIED,
            http_status: 403,
            error: "forbidden",
            challenge: None,
        },
        &rid,
    );
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The IdP down from the start (response table: 503), and after the first fetch

#[tokio::test]
async fn idp_down_from_the_start_fails_closed_and_recovers_within_seconds() {
    let idp = JwksServer::start(&tokens::jwks(&[&rsa(), &ec(), &ed()])).await;
    idp.go_down().await;
    let mut stack = Stack::start_with_idp(idp, FAST_REFRESH, "").await;
    let addrs = stack.addrs();

    // Every well-formed token is refused with 503 while there are no keys: never an allow.
    for key in [rsa(), ec(), ed()] {
        let rid = request_id("nokeys");
        let outcome = stack
            .check(&get("/documents", &token(&key, "read:documents")).request_id(&rid))
            .await;
        assert_denied(
            &outcome,
            &Expected {
                rpc_code: UNAVAILABLE,
                http_status: 503,
                error: "unavailable",
                challenge: None,
            },
            &rid,
        );
    }
    let (code, _, body) = admin_get(&addrs, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    // Anonymous routes do not depend on the IdP.
    assert_allowed(
        &stack.check(&EnvoyRequest::get("/healthz")).await,
        "anonymous route while the IdP is down",
    );

    // No 20-minute empty cache (istio/istio#37456): keys arrive within seconds of the IdP.
    stack.idp.come_back().await;
    let mut client = stack.client.clone();
    let allowed = eventually(Duration::from_secs(5), || {
        let mut client = client.clone();
        async move {
            client
                .check(&get("/documents", &token(&rsa(), "read:documents")))
                .await
                .allowed()
        }
    })
    .await;
    assert!(
        allowed,
        "tokens still refused 5 s after the IdP came back: {}",
        status(&addrs).await
    );
    // Allowing, so /readyz must say ready (almost) at once.
    wait_ready(&addrs, Duration::from_secs(2)).await;
    assert_allowed(
        &client
            .check(&get("/documents", &token(&ed(), "read:documents")))
            .await,
        "EdDSA token after recovery",
    );
    stack.stop().await;
}

#[tokio::test]
async fn idp_down_after_the_first_fetch_keeps_the_last_good_keys() {
    let stack = Stack::start(FAST_REFRESH, "").await;
    let addrs = stack.addrs();
    let before = status(&addrs).await;
    assert_eq!(before["issuers"][0]["keys"], 3, "{before}");
    assert!(before["issuers"][0]["last_error"].is_null(), "{before}");
    let age_before = before["issuers"][0]["key_age_seconds"]
        .as_f64()
        .expect("a key age once keys are fetched");

    stack.idp.go_down().await;
    // Several refresh attempts fail (the first is due 2 s after the fetch, retries follow
    // within a second); fresh tokens, never cache hits, are allowed all along.
    let mut checks = 0;
    let failed_enough = eventually(WAIT, || {
        let mut client = stack.client.clone();
        checks += 1;
        let key = [rsa(), ec(), ed()][checks % 3].clone();
        async move {
            let outcome = client
                .check(&get("/documents", &token(&key, "read:documents")))
                .await;
            assert_allowed(&outcome, "fresh token while the IdP is down");
            let report = status(&addrs).await;
            report["issuers"][0]["fetches_failed"]
                .as_u64()
                .is_some_and(|n| n >= 3)
        }
    })
    .await;
    let report = status(&addrs).await;
    assert!(
        failed_enough,
        "refreshes never failed three times: {report}"
    );
    let issuer = &report["issuers"][0];
    assert_eq!(issuer["keys"], 3, "the last good keys stay: {report}");
    assert!(
        issuer["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "/status shows no error: {report}"
    );
    let age = issuer["key_age_seconds"].as_f64().expect("key age");
    assert!(
        age > age_before + 2.0,
        "key age did not grow: {age_before} → {age}"
    );
    let (_, _, metrics) = admin_get(&addrs, "/metrics").await;
    let metric_age = sample(
        &metrics,
        r#"portcullis_jwks_key_age_seconds{issuer="corp"}"#,
    )
    .unwrap_or_else(|| panic!("no key age metric:\n{metrics}"));
    assert!(metric_age >= 2.0, "key age metric {metric_age}");
    assert!(
        sample(
            &metrics,
            r#"portcullis_jwks_fetches_total{issuer="corp",result="failure"}"#
        )
        .is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    let (code, _, body) = admin_get(&addrs, "/readyz").await;
    assert_eq!(code, 200, "stale keys are still keys: {body}");
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Key rotation

#[tokio::test]
async fn rotated_keys_are_picked_up_without_a_restart_and_retired_keys_refused() {
    let key_a = rsa();
    let key_b = TestKey::rsa_b();
    // The next background refresh is 4 s away, so the first fetches here are kid misses.
    let refresh = "{min_interval: 1s, max_interval: 4s, timeout: 1s}";
    let mut stack = Stack::start_serving(&tokens::jwks(&[&key_a]), refresh, "").await;
    assert_allowed(
        &stack
            .check(&get("/documents", &token(&key_a, "read:documents")))
            .await,
        "token of key A",
    );

    // The IdP publishes B next to A and starts signing with it: the first token of B is
    // allowed at once (one refetch on the unknown kid), not after the next refresh.
    let fetches = stack.idp.jwks_requests();
    stack.idp.set_jwks(&tokens::jwks(&[&key_a, &key_b]));
    let outcome = stack
        .check(&get("/documents", &token(&key_b, "read:documents")))
        .await;
    assert_allowed(&outcome, "first token of the new key B");
    assert_eq!(outcome.upstream("x-auth-subject"), Some("alice"));
    assert_eq!(
        stack.idp.jwks_requests(),
        fetches + 1,
        "one refetch for the new kid"
    );
    assert_allowed(
        &stack
            .check(&get("/documents", &token(&key_a, "read:documents")))
            .await,
        "key A during the overlap",
    );

    // The IdP retires A. After the next refresh a fresh token of A (a new jti: a token
    // verified earlier stays in the verified-token cache until its `exp`) is refused.
    stack.idp.set_jwks(&tokens::jwks(&[&key_b]));
    let mut client = stack.client.clone();
    let retired = eventually(WAIT, || {
        let mut client = client.clone();
        let key_a = key_a.clone();
        async move {
            let outcome = client
                .check(&get("/documents", &token(&key_a, "read:documents")))
                .await;
            !outcome.allowed()
        }
    })
    .await;
    assert!(
        retired,
        "key A still accepted: {}",
        status(&stack.addrs()).await
    );
    let rid = request_id("retired");
    let outcome = client
        .check(&get("/documents", &token(&key_a, "read:documents")).request_id(&rid))
        .await;
    assert_denied(&outcome, &UNAUTHORIZED, &rid);
    assert_allowed(
        &client
            .check(&get("/documents", &token(&key_b, "read:documents")))
            .await,
        "key B after A was retired",
    );
    assert_eq!(status(&stack.addrs()).await["issuers"][0]["keys"], 1);
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Unknown-kid flood

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_is_refused_with_at_most_a_couple_of_fetches() {
    // A long refresh period, so any fetch during the flood is one the flood caused.
    let mut stack = Stack::start(
        "{min_interval: 5s, max_interval: 60s, timeout: 2s}",
        NO_ATTEMPT_LIMIT,
    )
    .await;
    stack.idp.reset_counts();
    let unique = now();
    let floods: Vec<_> = (0..200)
        .map(|i| {
            let key = ec().with_kid(&format!("random-{unique}-{i}"));
            let token = token(&key, "read:documents");
            let mut client = stack.client.clone();
            tokio::spawn(async move {
                let rid = format!("rid-flood-{i}");
                let outcome = client
                    .check(&get("/documents", &token).request_id(&rid))
                    .await;
                (rid, outcome)
            })
        })
        .collect();
    for flood in floods {
        let (rid, outcome) = flood.await.expect("check task");
        assert_denied(&outcome, &UNAUTHORIZED, &rid);
    }
    let fetches = stack.idp.jwks_requests();
    assert!(
        (1..=2).contains(&fetches),
        "200 unknown kids caused {fetches} JWKS fetches"
    );
    assert_allowed(
        &stack
            .check(&get("/documents", &token(&ec(), "read:documents")))
            .await,
        "valid token after the flood",
    );
    assert_eq!(
        stack.idp.jwks_requests(),
        fetches,
        "a known kid needs no fetch"
    );
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hot reload: decisions follow the file (reload mechanics are in tests/app.rs)

#[tokio::test]
async fn reload_that_adds_a_scope_requirement_is_enforced_on_the_next_check() {
    // Background refreshes far apart, so the reload is the only thing that could fetch.
    let refresh = "{min_interval: 1s, max_interval: 60s, timeout: 1s}";
    let mut stack = Stack::start(refresh, "").await;
    let addrs = stack.addrs();
    let reader = token(&rsa(), "read:documents");
    let admin = token(&rsa(), "read:documents admin");
    assert_allowed(
        &stack.check(&get("/api/orders", &reader)).await,
        "any valid token on /api",
    );

    // The IdP goes down first: a reload that keeps the issuer must keep its keys (the new
    // engine would answer 503 if it started with an empty key store).
    stack.idp.go_down().await;
    let yaml = config_yaml(&stack.idp.jwks_url(), refresh, "").replace(
        "    match: {path_prefix: /api}\n    allow: authenticated\n",
        "    match: {path_prefix: /api}\n    require: {scopes: [admin]}\n",
    );
    assert!(yaml.contains("scopes: [admin]"), "fixture edit applies");
    replace_config(&stack.config, &yaml);
    wait_generation(&addrs, 2, WAIT).await;

    // The same token, verified and cached under the old policy, meets the new one.
    let rid = request_id("reload");
    let outcome = stack
        .check(&get("/api/orders", &reader).request_id(&rid))
        .await;
    assert_insufficient_scope(&outcome, "admin", &rid);
    let outcome = stack.check(&get("/api/orders", &admin)).await;
    assert_allowed(
        &outcome,
        "token with the new scope, keys kept across the reload",
    );
    assert_eq!(outcome.metadata["portcullis"]["route"], "api");
    stack.stop().await;
}

#[tokio::test]
async fn reload_that_drops_an_audience_refuses_tokens_verified_before() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let addrs = stack.addrs();
    let cached = token(&rsa(), "read:documents");
    assert_allowed(&stack.check(&get("/documents", &cached)).await, "first use");
    assert_allowed(&stack.check(&get("/documents", &cached)).await, "cache hit");

    let yaml = config_yaml(&stack.idp.jwks_url(), FAST_REFRESH, "").replace(
        &format!("audiences: [{AUDIENCE}]"),
        "audiences: [billing-api]",
    );
    replace_config(&stack.config, &yaml);
    wait_generation(&addrs, 2, WAIT).await;
    let rid = request_id("audience");
    let outcome = stack
        .check(&get("/documents", &cached).request_id(&rid))
        .await;
    assert_denied(&outcome, &UNAUTHORIZED, &rid);
    stack.stop().await;
}

#[tokio::test]
async fn reload_of_a_broken_file_keeps_enforcing_the_old_policy() {
    let extra_route =
        "  - name: reports\n    match: {path: /reports}\n    require: {scopes: [reports]}\n";
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let addrs = stack.addrs();
    let url = stack.idp.jwks_url();
    replace_config(
        &stack.config,
        &(config_yaml(&url, FAST_REFRESH, "") + extra_route),
    );
    wait_generation(&addrs, 2, WAIT).await;
    let reader = token(&ec(), "read:documents");
    let rid = request_id("broken");
    let outcome = stack
        .check(&get("/reports", &reader).request_id(&rid))
        .await;
    assert_eq!((outcome.code, outcome.status), (PERMISSION_DENIED, 403));

    // The broken file would loosen the policy (any token on /reports, no scope for
    // /documents); a reload that half-applied it would show up as an allow.
    let loosened = (config_yaml(&url, FAST_REFRESH, "") + extra_route)
        .replace("require: {scopes: [reports]}", "allow: authenticated")
        .replace(
            "require: {scopes: [\"read:documents\"]}",
            "allow: authenticated",
        )
        + "colour: blue\n";
    let errors = reload_refused(&stack, &loosened, "broken").await;
    assert!(errors.contains("colour"), "{errors}");

    let rid = request_id("broken");
    let outcome = stack
        .check(&get("/documents", &token(&ec(), "openid")).request_id(&rid))
        .await;
    assert_eq!(
        (outcome.code, outcome.status),
        (PERMISSION_DENIED, 403),
        "{outcome:#?}"
    );
    assert_reports_still_needs_its_scope(&mut stack, &reader, "broken").await;
    stack.stop().await;
}

/// Writes `text` as the configuration file and waits (bounded) until portcullis reports that
/// the reload failed and it still runs generation 2. Returns the errors it reported.
async fn reload_refused(stack: &Stack, text: &str, what: &str) -> String {
    let addrs = stack.addrs();
    replace_config(&stack.config, text);
    let failed = eventually(WAIT, || async {
        status(&addrs).await["config"]["last_reload"]["result"] == "failure"
    })
    .await;
    let report = status(&addrs).await;
    assert!(failed, "the {what} file was never refused: {report}");
    assert_eq!(report["config"]["generation"], 2, "{report}");
    report["config"]["last_reload"]["errors"].to_string()
}

/// The `/reports` route the test added still needs its scope: `reader` is refused with 403
/// naming `reports`, a token with `reports` is allowed.
async fn assert_reports_still_needs_its_scope(stack: &mut Stack, reader: &str, label: &str) {
    let rid = request_id(label);
    let outcome = stack.check(&get("/reports", reader).request_id(&rid)).await;
    assert_insufficient_scope(&outcome, "reports", &rid);
    assert_allowed(
        &stack
            .check(&get("/reports", &token(&ec(), "reports")))
            .await,
        "the old policy's allow",
    );
}

/// issue 8, item 7: a configuration file cut off after `scopes:` loaded as "any valid token"
/// and a hot reload applied it. It is refused at the key, and the last good policy stays.
#[tokio::test]
async fn reload_of_a_file_cut_off_after_scopes_keeps_enforcing_the_old_policy() {
    let mut stack = Stack::start(FAST_REFRESH, "").await;
    let addrs = stack.addrs();
    let reader = token(&ec(), "read:documents");
    let whole = config_yaml(&stack.idp.jwks_url(), FAST_REFRESH, "")
        + "  - name: reports\n    match: {path: /reports}\n    require:\n      scopes: [reports]\n";
    replace_config(&stack.config, &whole);
    wait_generation(&addrs, 2, WAIT).await;
    let rid = request_id("truncated");
    let outcome = stack
        .check(&get("/reports", &reader).request_id(&rid))
        .await;
    assert_insufficient_scope(&outcome, "reports", &rid);

    // The same file, written only up to the end of `scopes:`.
    let cut = &whole[..whole.rfind("scopes:").expect("fixture has scopes") + "scopes:".len()];
    let errors = reload_refused(&stack, cut, "cut-off").await;
    assert!(
        errors.contains("routes[5].require.scopes: null is not allowed"),
        "{errors}"
    );
    assert_reports_still_needs_its_scope(&mut stack, &reader, "truncated").await;
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile tokens

/// Tokens that must each be refused with 401 `invalid_token`, by name. `evil_jwks` is the URL
/// of an attacker's JWKS server (serving the attacker's key under the trusted kid): a token may
/// point at it, and it must never be fetched.
fn bad_tokens(evil_jwks: &str) -> Vec<(String, String)> {
    let rsa = rsa();
    let ec = ec();
    let valid = || claims(ISSUER, AUDIENCE, "alice", "read:documents", 300);
    let now = now();
    let header = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid});
    // The attacker's own key, presented under the trusted kid.
    let attacker = TestKey::rsa_b().with_kid(RSA_KID);
    let good = rsa.token(&valid());
    let (good_signing_input, good_signature) = good.rsplit_once('.').expect("compact JWS");
    let (_, good_payload) = good_signing_input.split_once('.').expect("compact JWS");

    let mut cases: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| cases.push((name.to_owned(), token));

    for spelling in ["none", "None", "NONE", "nOnE"] {
        add(
            &format!("alg {spelling}, no signature"),
            raw::unsigned(&header(spelling, RSA_KID), &valid()),
        );
    }
    add(
        "alg none with a real signature kept",
        format!(
            "{}.{good_payload}.{good_signature}",
            tokens::b64url(header("none", RSA_KID).to_string())
        ),
    );
    add(
        "HS256 with the RSA public key PEM as the secret",
        raw::hs256(
            rsa.public_pem.as_bytes(),
            &header("HS256", RSA_KID),
            &valid(),
        ),
    );
    add(
        "HS256 with the RSA public key PEM as the secret, no kid",
        raw::hs256(
            rsa.public_pem.as_bytes(),
            &json!({"alg": "HS256", "typ": "JWT"}),
            &valid(),
        ),
    );
    add(
        "unknown kid",
        rsa.clone().with_kid("no-such-kid").token(&valid()),
    );
    add(
        "embedded jwk (attacker's key)",
        attacker.sign(&json!({"jwk": attacker.jwk()}), &valid()),
    );
    add(
        "jku to the attacker's JWKS",
        attacker.sign(&json!({"jku": evil_jwks}), &valid()),
    );
    add(
        "x5u to the attacker's server",
        attacker.sign(&json!({"x5u": format!("{evil_jwks}/cert.pem")}), &valid()),
    );
    add(
        "unknown crit extension",
        rsa.sign(&json!({"crit": ["exp-v2"], "exp-v2": true}), &valid()),
    );
    add(
        "ES256 with r = s = 0",
        raw::es256_zero_signature(&header("ES256", EC_KID), &valid()),
    );
    add("stripped signature", raw::strip_signature(&good));
    add(
        "ES256 header on the RSA key",
        rsa.sign(&json!({"alg": "ES256"}), &valid()),
    );
    add(
        "RS256 header on the EC key",
        ec.sign(&json!({"alg": "RS256"}), &valid()),
    );
    add(
        "PS256, outside the issuer's algorithms",
        rsa.sign(&json!({"alg": "PS256"}), &valid()),
    );
    add(
        "expired",
        rsa.token(&claims(ISSUER, AUDIENCE, "alice", "read:documents", -600)),
    );
    add(
        "nbf in the future",
        rsa.token(&with(&valid(), &json!({"nbf": now + 600}))),
    );
    add(
        "iat in the future",
        rsa.token(&with(
            &valid(),
            &json!({"iat": now + 600, "exp": now + 900}),
        )),
    );
    add(
        "wrong iss",
        rsa.token(&with(&valid(), &json!({"iss": "https://evil.example.com"}))),
    );
    add(
        "iss with a trailing slash",
        rsa.token(&with(&valid(), &json!({"iss": format!("{ISSUER}/")}))),
    );
    add(
        "wrong aud",
        rsa.token(&with(&valid(), &json!({"aud": "billing-api"}))),
    );
    add(
        "aud list without ours",
        rsa.token(&with(&valid(), &json!({"aud": ["billing-api", "orders"]}))),
    );
    add(
        "missing exp",
        rsa.token(&with(&valid(), &json!({"exp": null}))),
    );
    add("two segments", good_signing_input.to_owned());
    add("four segments", format!("{good}.e30"));
    add("one segment", good_payload.to_owned());
    add("empty segments", "..".to_owned());
    add("invalid base64 characters", "***.***.***".to_owned());
    add(
        "invalid base64 length",
        format!(
            "{}.a.{good_signature}",
            tokens::b64url(header("RS256", RSA_KID).to_string())
        ),
    );
    add(
        "standard base64 alphabet with padding",
        format!("{good_signing_input}+/==.{good_signature}"),
    );
    add("JSON array as payload", rsa.token(&json!([valid()])));
    add(
        "payload that is not JSON",
        raw::signed(
            &header("RS256", RSA_KID),
            &json!("just a string"),
            &rsa.encoding_key(),
            jsonwebtoken::Algorithm::RS256,
        ),
    );
    let huge = rsa.token(&with(&valid(), &json!({"pad": "x".repeat(49_000)})));
    assert!(
        huge.len() >= 64 * 1024,
        "the huge token is {} bytes",
        huge.len()
    );
    add("64 KiB token, validly signed", huge);
    add(
        "deeply nested JSON (under the size cap)",
        raw::with_payload_text(
            &header("RS256", RSA_KID),
            &raw::nested_claims_json(ISSUER, AUDIENCE, now + 300, 2_000),
        ),
    );
    add(
        "deeply nested JSON (100,000 levels)",
        raw::with_payload_text(
            &header("RS256", RSA_KID),
            &raw::nested_claims_json(ISSUER, AUDIENCE, now + 300, 100_000),
        ),
    );
    cases
}

/// Sends every bad token, each followed by a fresh valid token, and fails naming each case
/// that was not refused with 401 `invalid_token` or that left the agent unable to allow.
/// Returns the tokens sent.
async fn assert_refuses_bad_tokens(client: &mut CheckClient, evil_jwks: &str) -> Vec<String> {
    let cases = bad_tokens(evil_jwks);
    let keys = [rsa(), ec(), ed()];
    let mut failures = Vec::new();
    for (i, (case, bad)) in cases.iter().enumerate() {
        let rid = format!("rid-bad-{i}");
        match client
            .try_check(&get("/documents", bad).request_id(&rid))
            .await
        {
            Ok(outcome) => {
                let problems = denial_problems(&outcome, &UNAUTHORIZED, &rid);
                if !problems.is_empty() {
                    failures.push(format!("{case}: {}", problems.join("; ")));
                }
            }
            Err(status) => failures.push(format!("{case}: the Check RPC failed: {status:?}")),
        }
        let key = &keys[i % keys.len()];
        match client
            .try_check(&get("/documents", &token(key, "read:documents")))
            .await
        {
            Ok(outcome) if outcome.allowed() => {}
            other => failures.push(format!(
                "{case}: a valid {} token afterwards was not allowed: {other:?}",
                key.alg_name()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad tokens mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.into_iter().map(|(_, token)| token).collect()
}

/// The attacker's JWKS: their key under the trusted kid.
async fn evil_idp() -> JwksServer {
    JwksServer::start(&tokens::jwks(&[&TestKey::rsa_b().with_kid(RSA_KID)])).await
}

#[tokio::test]
async fn bad_tokens_are_refused_and_the_in_process_agent_keeps_serving() {
    let evil = evil_idp().await;
    let mut stack = Stack::start(FAST_REFRESH, NO_ATTEMPT_LIMIT).await;
    assert_refuses_bad_tokens(&mut stack.client, &evil.jwks_url()).await;
    assert_eq!(evil.jwks_requests(), 0, "a token's jku was fetched");
    assert_eq!(
        evil.requests("/jwks/cert.pem"),
        0,
        "a token's x5u was fetched"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_and_the_binary_keeps_serving() {
    let evil = evil_idp().await;
    let idp = JwksServer::start(&tokens::jwks(&[&rsa(), &ec(), &ed()])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "portcullis.yaml",
        &config_yaml(&idp.jwks_url(), FAST_REFRESH, NO_ATTEMPT_LIMIT),
    );
    let agent = tokio::task::spawn_blocking(move || BinaryAgent::start(&config))
        .await
        .expect("binary start");
    wait_ready(&agent.addrs, WAIT).await;
    let mut client = agent.client().await;
    let tokens = assert_refuses_bad_tokens(&mut client, &evil.jwks_url()).await;
    assert_eq!(evil.jwks_requests(), 0, "a token's jku was fetched");
    assert_eq!(
        evil.requests("/jwks/cert.pem"),
        0,
        "a token's x5u was fetched"
    );

    // No token, whole or as its signature, ever reaches the logs.
    let logs = agent.stdout().join("\n") + &agent.stderr().join("\n");
    for token in tokens.iter().filter(|t| t.len() > 24) {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!logs.contains(token.as_str()), "a token is in the logs");
        assert!(
            signature.len() < 24 || !logs.contains(signature),
            "a token's signature is in the logs"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Too many failed attempts from one source

#[tokio::test]
async fn a_source_that_keeps_failing_gets_429_with_retry_after_even_for_a_valid_token() {
    let mut stack = Stack::start(
        FAST_REFRESH,
        "limits: {failed_attempts: {per_source: 3, per: 1m}}",
    )
    .await;
    let attacker: std::net::SocketAddr = "198.51.100.7:40000".parse().expect("addr");
    for i in 0..3 {
        let rid = request_id("failing");
        let forged = token(&TestKey::rsa_b().with_kid(RSA_KID), "read:documents");
        let outcome = stack
            .check(&get("/documents", &forged).source(attacker).request_id(&rid))
            .await;
        assert_eq!(outcome.status, 401, "failure {i}: {outcome:#?}");
    }

    let rid = request_id("limited");
    let valid = token(&rsa(), "read:documents");
    let outcome = stack
        .check(&get("/documents", &valid).source(attacker).request_id(&rid))
        .await;
    let too_many = Expected {
        rpc_code: RESOURCE_EXHAUSTED,
        http_status: 429,
        error: "too_many_requests",
        challenge: None,
    };
    assert_denied(&outcome, &too_many, &rid);
    // 3 a minute: one failure is forgiven every 20 s.
    let retry_after: u64 = outcome
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After: {outcome:#?}"));
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");

    // Another client is unaffected, and the 429s are counted under their own reason.
    assert_allowed(
        &stack
            .check(&get("/documents", &valid).source("198.51.100.8:40000".parse().expect("addr")))
            .await,
        "another source",
    );
    assert_denials(&stack, "too_many_attempts", "list-documents", 1.0).await;
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// A role or permission the caller lacks: 403 `forbidden`, no challenge (there is nothing a
/// client can ask its authorization server for).
const FORBIDDEN: Expected<'static> = Expected {
    rpc_code: PERMISSION_DENIED,
    http_status: 403,
    error: "forbidden",
    challenge: None,
};

/// The classic three roles over a document API, with roles in Keycloak's
/// `realm_access.roles`: GET needs `read`, POST/PUT/PATCH `write`, DELETE `delete`; `/admin`
/// needs the `admin` role and hides itself.
fn rbac_config_yaml(jwks_uri: &str) -> String {
    format!(
        r#"{prelude}
    refresh: {FAST_REFRESH}
    claims: {{roles: realm_access.roles}}
roles:
  admin: {{permissions: [delete, admin], includes: [user]}}
  user: {{permissions: [write], includes: [viewer]}}
  viewer: [read]
routes:
  - name: read-documents
    match: {{methods: [GET], path_prefix: /documents}}
    require: {{permissions: [read]}}
  - name: write-documents
    match: {{methods: [POST, PUT, PATCH], path_prefix: /documents}}
    require: {{permissions: [write]}}
  - name: delete-documents
    match: {{methods: [DELETE], path_prefix: /documents}}
    require: {{permissions: [delete]}}
  - name: admin
    match: {{path_prefix: /admin}}
    require: {{roles: [admin]}}
    on_deny: not_found
"#,
        prelude = server_and_issuer(jwks_uri, "[RS256]"),
    )
}

#[tokio::test]
async fn roles_from_the_token_grant_permissions_per_method_and_hide_the_admin_route() {
    let idp = JwksServer::start(&tokens::jwks(&[&rsa()])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "portcullis.yaml",
        &rbac_config_yaml(&idp.jwks_url()),
    );
    let agent = InProcessAgent::start_file(&config).await;
    wait_ready(&agent.addrs, WAIT).await;
    let mut client = agent.client().await;
    let token_for = |roles: Value| {
        rsa().token(&with(
            &claims(ISSUER, AUDIENCE, "alice", "", 300),
            &json!({ "realm_access": { "roles": roles } }),
        ))
    };
    // (method, path, roles, allowed)
    let cases = [
        ("GET", "/documents/7", json!(["viewer"]), true),
        ("PUT", "/documents/7", json!(["viewer"]), false),
        ("PATCH", "/documents/7", json!(["user"]), true),
        ("DELETE", "/documents/7", json!(["user"]), false),
        ("DELETE", "/documents/7", json!(["admin"]), true),
        ("GET", "/documents", json!(42), false),
        ("GET", "/admin/users", json!(["admin"]), true),
        ("GET", "/admin/users", json!(["user", "viewer"]), false),
    ];
    for (method, path, roles, allowed) in cases {
        let context = format!("{method} {path} as {roles}");
        let rid = request_id("rbac");
        let outcome = client
            .check(
                &EnvoyRequest::new(method, path)
                    .bearer(&token_for(roles.clone()))
                    .request_id(&rid),
            )
            .await;
        if allowed {
            assert_allowed(&outcome, &context);
            let joined = roles
                .as_array()
                .map(|roles| {
                    roles
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            assert_eq!(outcome.upstream("x-auth-roles"), Some(joined.as_str()));
        } else if path.starts_with("/admin") {
            assert_denied(&outcome, &NOT_FOUND_ANSWER, &rid);
        } else {
            assert_denied(&outcome, &FORBIDDEN, &rid);
        }
    }
    let metrics = admin_get(&agent.addrs, "/metrics").await.2;
    assert_eq!(
        sample(
            &metrics,
            r#"portcullis_decisions_total{outcome="deny",reason="forbidden",route="admin"}"#
        ),
        Some(1.0),
        "the hidden route still records the real reason:\n{metrics}"
    );
    agent.shutdown().await;
}

// Step-up (RFC 9470) and request rules (issue 10, items 4 and 6)

/// issue 10, item 4: a route that needs MFA, an `acr` and a recent login answers a token
/// without them 401 with the RFC 9470 challenge (`acr_values`, quoted `max_age`), and allows
/// the token once the user stepped up.
#[tokio::test]
async fn a_step_up_route_answers_401_with_the_rfc9470_challenge_until_the_user_steps_up() {
    let mut stack = Stack::start_with_routes(
        "  - name: transfer\n    match: {path: /transfer}\n    require: {scopes: \
         [\"read:documents\"], mfa: true, acr: [phrh, phr], max_auth_age: 5m}\n",
    )
    .await;
    let base = claims(ISSUER, AUDIENCE, "alice", "read:documents", 300);
    let weak = rsa().token(&with(
        &base,
        &json!({"amr": ["pwd"], "acr": "phr", "auth_time": now() - 60}),
    ));
    let rid = request_id("step-up");
    let outcome = stack.check(&get("/transfer", &weak).request_id(&rid)).await;
    assert_denied(
        &outcome,
        &Expected {
            rpc_code: UNAUTHENTICATED,
            http_status: 401,
            error: "unauthorized",
            challenge: Some(
                r#"Bearer realm="portcullis", error="insufficient_user_authentication", acr_values="phrh phr", max_age="300""#,
            ),
        },
        &rid,
    );
    assert_denials(&stack, "step_up_required", "transfer", 1.0).await;

    let stepped_up = rsa().token(&with(
        &base,
        &json!({"amr": ["pwd", "otp"], "acr": "phrh", "auth_time": now() - 10}),
    ));
    let outcome = stack.check(&get("/transfer", &stepped_up)).await;
    assert_allowed(&outcome, "after step-up");
    stack.stop().await;
}

/// issue 10, item 6: a body in a media type the route does not accept is 415 with the
/// standard body (gRPC INVALID_ARGUMENT); a POST without `Idempotency-Key` is 400.
#[tokio::test]
async fn a_body_in_an_unlisted_media_type_is_415_and_a_post_without_idempotency_key_400() {
    let mut stack = Stack::start_with_routes(
        "  - name: upload\n    match: {methods: [POST], path: /upload}\n    require: {scopes: \
         [\"read:documents\"], content_types: [application/json], idempotency_key: true}\n",
    )
    .await;
    let token = token(&rsa(), "read:documents");
    let post = |content_type: &str, rid: &str| {
        EnvoyRequest::new("POST", "/upload")
            .bearer(&token)
            .header("content-type", content_type)
            .request_id(rid)
    };
    let rid = request_id("media-type");
    let outcome = stack.check(&post("text/xml", &rid)).await;
    assert_denied(
        &outcome,
        &Expected {
            rpc_code: INVALID_ARGUMENT,
            http_status: 415,
            error: "unsupported_media_type",
            challenge: None,
        },
        &rid,
    );
    assert_denials(&stack, "unsupported_media_type", "upload", 1.0).await;

    let rid = request_id("idempotency");
    let outcome = stack
        .check(&post("application/json; charset=utf-8", &rid))
        .await;
    assert_denied(&outcome, &BAD_REQUEST, &rid);
    assert_denials(&stack, "missing_idempotency_key", "upload", 1.0).await;

    let outcome = stack
        .check(&post("Application/JSON", "rid-ok").header("idempotency-key", "k-1"))
        .await;
    assert_allowed(&outcome, "json with an idempotency key");
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Shadow mode

/// A shadow route (`mode: shadow`) lets through what its policy refuses, with the identity
/// headers of any allowed request, and counts and audits it as `shadow_deny`; authentication
/// is still enforced. Run as the built binary, whose audit lines are read from its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_route_allows_a_refused_request_and_counts_and_audits_it() {
    let idp = JwksServer::start(&tokens::jwks(&[&rsa(), &ec(), &ed()])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shadow = "routes:\n  - name: reports\n    match: {path_prefix: /reports}\n    require: {scopes: [\"read:reports\"]}\n    mode: shadow\n";
    let yaml = config_yaml(&idp.jwks_url(), FAST_REFRESH, NO_ATTEMPT_LIMIT).replacen(
        "routes:\n",
        shadow,
        1,
    );
    let config = write_config(dir.path(), "portcullis.yaml", &yaml);
    let agent = tokio::task::spawn_blocking(move || BinaryAgent::start(&config))
        .await
        .expect("binary start");
    wait_ready(&agent.addrs, WAIT).await;
    let mut client = agent.client().await;

    // Lacks read:reports: an enforcing route would answer 403; this one allows.
    let rid = request_id("shadow");
    let outcome = client
        .check(&get("/reports/7", &token(&rsa(), "read:documents")).request_id(&rid))
        .await;
    assert_allowed(&outcome, "shadowed refusal");
    assert_eq!(outcome.upstream("x-auth-subject"), Some("alice"));
    assert!(outcome.removes("authorization"), "{outcome:#?}");
    // A caller the policy accepts is a plain allow.
    let granted = client
        .check(&get("/reports/7", &token(&rsa(), "read:reports")))
        .await;
    assert_allowed(&granted, "granted");

    // Authentication is never shadowed.
    let anonymous_rid = request_id("shadow-anonymous");
    let anonymous = client
        .check(&EnvoyRequest::get("/reports/7").request_id(&anonymous_rid))
        .await;
    assert_denied(&anonymous, &NO_CREDENTIAL, &anonymous_rid);
    let expired = rsa().token(&with(
        &claims(ISSUER, AUDIENCE, "alice", "read:reports", 300),
        &json!({"exp": now() - 3600, "iat": now() - 7200}),
    ));
    let expired_rid = request_id("shadow-expired");
    let refused = client
        .check(&get("/reports/7", &expired).request_id(&expired_rid))
        .await;
    assert_denied(&refused, &UNAUTHORIZED, &expired_rid);

    let metrics = admin_get(&agent.addrs, "/metrics").await.2;
    for (outcome, reason, count) in [
        ("shadow_deny", "insufficient_scope", 1.0),
        ("allow", "allowed", 1.0),
        ("deny", "missing_credential", 1.0),
        ("deny", "expired", 1.0),
    ] {
        let series = format!(
            r#"portcullis_decisions_total{{outcome="{outcome}",reason="{reason}",route="reports"}}"#
        );
        assert_eq!(
            sample(&metrics, &series),
            Some(count),
            "{series}:\n{metrics}"
        );
    }

    let line = agent
        .wait_for_log(&rid, WAIT)
        .unwrap_or_else(|| panic!("no audit line for {rid}: {:?}", agent.stdout()));
    let event: Value = serde_json::from_str(&line).expect("JSON audit line");
    assert_eq!(event["authz.outcome"], "shadow_deny", "{line}");
    assert_eq!(event["authz.would_deny"], true, "{line}");
    assert_eq!(event["authz.reason"], "insufficient_scope", "{line}");
    assert_eq!(event["http.status"], 200, "{line}");
    assert_eq!(event["route.name"], "reports", "{line}");
    assert_eq!(event["auth.subject"], "alice", "{line}");
}
