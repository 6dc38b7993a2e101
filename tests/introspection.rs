//! OAuth 2.0 token introspection (RFC 7662) against the real provider (`tests/idp`,
//! oidc-provider, whose `portcullis-opaque` client gets opaque access tokens), through a real
//! Envoy (the committed `deploy/envoy/envoy.yaml`, ports changed) in front of an echoing
//! application, with portcullis as the built binary: an opaque token is allowed with its scopes
//! and identity; a token revoked at the provider is refused once the positive cache TTL has
//! passed; with the provider stopped, opaque tokens get 503 while JWTs keep working; 1,000
//! concurrent checks of one new token make one introspection call; an endpoint answering
//! garbage is a 503 with the reason in the audit log, and the token is never logged; and
//! `client_secret_post` with the secret from the environment and the endpoint from discovery.
//!
//! Without Envoy, Node.js or the provider's packages these tests skip loudly; under `CI=true`
//! they fail.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::agent::{
    BinaryAgent, CheckClient, EnvoyRequest, assert_eventually, eventually, write_config,
};
use common::envoy::{
    Envoy, SidecarMode, SidecarPorts, free_port, render_sidecar, standard_denial_headers,
};
use common::idp::{INTROSPECTOR_CLIENT, INTROSPECTOR_POST_CLIENT, Idp, OPAQUE_CLIENT};
use common::upstream::{Echo, Upstream};

/// The API's audience: the `resource` tokens are requested for.
const AUDIENCE: &str = "https://documents.example";
/// The positive cache TTL the stacks configure: how long a revoked token may still pass.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Longest wait for something that should happen at once.
const WAIT: Duration = Duration::from_secs(10);

/// How portcullis authenticates to the introspection endpoint in a stack.
#[derive(Clone, Copy)]
enum ClientAuth {
    /// `client_secret_basic`, secret from a file.
    BasicFromFile,
    /// `client_secret_post`, secret from an environment variable, endpoint from the
    /// provider's discovery document.
    PostFromEnv,
}

/// portcullis's configuration: the provider as issuer (JWTs by its JWKS) with an
/// introspection entry; `/documents` takes any token with `read:documents`, `/payments` also
/// asks the provider whether the token is still active.
fn config_yaml(idp: &Idp, ports: (u16, u16, u16), auth: ClientAuth) -> String {
    let (grpc, http, admin) = ports;
    let (client_id, secret_source, method, endpoint) = match auth {
        ClientAuth::BasicFromFile => (
            INTROSPECTOR_CLIENT.0,
            "client_secret_file: introspection-secret.txt",
            "client_secret_basic",
            format!("endpoint: {}", idp.introspection_url()),
        ),
        ClientAuth::PostFromEnv => (
            INTROSPECTOR_POST_CLIENT.0,
            "client_secret_env: PORTCULLIS_TEST_INTROSPECTION_SECRET",
            "client_secret_post",
            "discovery: true".to_owned(),
        ),
    };
    format!(
        "server: {{grpc_listen: 127.0.0.1:{grpc}, http_listen: 127.0.0.1:{http}, \
         admin_listen: 127.0.0.1:{admin}}}\n\
         issuers:\n  \
         - name: test-idp\n    \
           issuer: {issuer}\n    \
           audiences: [{AUDIENCE}]\n    \
           jwks_uri: {jwks}\n    \
           algorithms: [RS256, ES256]\n\
         introspection:\n  \
         - issuer: test-idp\n    \
           {endpoint}\n    \
           client_id: {client_id}\n    \
           {secret_source}\n    \
           auth_method: {method}\n    \
           subject: client_id\n    \
           cache_ttl: {ttl}s\n    \
           negative_cache_ttl: 1s\n    \
           timeout: 400ms\n\
         routes:\n  \
         - {{name: health, match: {{path: /healthz}}, allow: anonymous}}\n  \
         - name: payments\n    match: {{path_prefix: /payments}}\n    \
           require: {{scopes: [read:documents], introspect: true}}\n  \
         - name: write-documents\n    match: {{methods: [POST], path_prefix: /documents}}\n    \
           require: {{scopes: [write:documents, delete:documents]}}\n  \
         - name: documents\n    match: {{path_prefix: /documents}}\n    \
           require: {{scopes: [read:documents]}}\n",
        issuer = idp.issuer(),
        jwks = idp.jwks_uri(),
        ttl = CACHE_TTL.as_secs(),
    )
}

/// The provider, an echo application, portcullis (binary) and Envoy with the committed gRPC
/// sidecar configuration in front.
struct Stack {
    idp: Option<Idp>,
    _upstream: Upstream,
    agent: BinaryAgent,
    envoy: Envoy,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A reply through Envoy: status, body and the request id sent.
struct Reply {
    status: u16,
    body: String,
    request_id: String,
}

impl Reply {
    fn echo(&self) -> Echo {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not the upstream echo ({e}): {}", self.body))
    }

    fn error_code(&self) -> String {
        let body: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("denial body not JSON ({e}): {}", self.body));
        body["error"].as_str().unwrap_or_default().to_owned()
    }
}

impl Stack {
    /// `None` when Envoy or the provider is not installed (skip; a failure under CI).
    async fn start() -> Option<Self> {
        let idp = Idp::start().await?;
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        write_config(
            dir.path(),
            "introspection-secret.txt",
            &format!("{}\n", INTROSPECTOR_CLIENT.1),
        );
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let config = write_config(
            dir.path(),
            "portcullis.yaml",
            &config_yaml(&idp, (grpc, http, admin), ClientAuth::BasicFromFile),
        );
        let rendered = render_sidecar(
            SidecarMode::Grpc,
            SidecarPorts {
                app: upstream.port(),
                portcullis_grpc: grpc,
                portcullis_http: http,
            },
        );
        let agent = tokio::task::spawn_blocking(move || BinaryAgent::start(&config))
            .await
            .expect("portcullis start-up task");
        let envoy = Envoy::start(&rendered).await?;
        let stack = Self {
            idp: Some(idp),
            _upstream: upstream,
            agent,
            envoy,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("reqwest client"),
            _dir: dir,
        };
        assert_eventually(
            "the anonymous route never answered 200",
            || async { stack.get("/healthz", None).await.status == 200 },
            || stack.logs(),
        )
        .await;
        Some(stack)
    }

    /// A started stack and a new opaque token with `read:documents`.
    async fn with_reader_token() -> Option<(Self, String)> {
        let stack = Self::start().await?;
        let token = stack.opaque_token(&["read:documents"]).await;
        Some((stack, token))
    }

    fn idp(&self) -> &Idp {
        self.idp.as_ref().expect("the provider is running")
    }

    /// A new opaque access token with `scopes`, for the API's audience.
    async fn opaque_token(&self, scopes: &[&str]) -> String {
        let token = self.idp().token_as(OPAQUE_CLIENT, scopes, AUDIENCE).await;
        assert!(
            !token.contains('.'),
            "the provider must issue an opaque token, got a JWT-like one"
        );
        token
    }

    /// `GET path` with `token` through Envoy, which must be allowed.
    async fn allowed(&self, path: &str, token: &str) -> Reply {
        let reply = self.get(path, Some(token)).await;
        assert_eq!(reply.status, 200, "{path}: {}\n{}", reply.body, self.logs());
        reply
    }

    /// `GET path` through Envoy, with `token` as the bearer token when given.
    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", path, token).await
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        let request_id = format!("req-{}", free_port());
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .client
            .request(method, self.envoy.url(path))
            .header("x-request-id", &request_id);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request through envoy failed: {e}"));
        let status = response.status().as_u16();
        assert!(
            status == 200 || standard_denial_headers(response.headers()),
            "denial without the standard headers: {response:?}"
        );
        Reply {
            status,
            body: response.text().await.unwrap_or_default(),
            request_id,
        }
    }

    /// The audit event of the request with `request_id`.
    fn audit(&self, request_id: &str) -> serde_json::Value {
        let line = self
            .agent
            .wait_for_log(request_id, WAIT)
            .unwrap_or_else(|| panic!("no audit line for {request_id}\n{}", self.logs()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("audit line not JSON ({e}): {line}"))
    }

    async fn introspection_calls(&self) -> u64 {
        self.idp().state().await.introspection_requests
    }

    fn logs(&self) -> String {
        format!(
            "--- portcullis:\n{}\n--- envoy:\n{}\n--- idp:\n{}",
            [self.agent.stdout(), self.agent.stderr()]
                .concat()
                .join("\n"),
            self.envoy.logs(),
            self.idp.as_ref().map(Idp::logs).unwrap_or_default()
        )
    }

    /// Panics when any log line holds `token`.
    fn assert_never_logged(&self, token: &str) {
        let logs = [self.agent.stdout(), self.agent.stderr()]
            .concat()
            .join("\n");
        assert!(!logs.contains(token), "a token was logged:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_token_is_allowed_with_its_scopes_and_identity_through_envoy() {
    let Some((stack, token)) = Stack::with_reader_token().await else {
        return;
    };

    let echo = stack.allowed("/documents/7", &token).await.echo();
    assert_eq!(
        echo.header("x-auth-method"),
        Some("introspection"),
        "{echo:?}"
    );
    assert_eq!(
        echo.header("x-auth-subject"),
        Some(OPAQUE_CLIENT.0),
        "{echo:?}"
    );
    assert_eq!(echo.header("x-auth-issuer"), Some(stack.idp().issuer()));
    assert_eq!(
        echo.header("x-auth-scopes"),
        Some("read:documents"),
        "{echo:?}"
    );
    assert_eq!(echo.header("x-auth-roles"), Some("user"), "{echo:?}");
    assert_eq!(
        echo.header("authorization"),
        None,
        "the token reached the app"
    );

    // Its scopes are the granted ones: not enough for a route that needs more.
    let refused = stack.send("POST", "/documents/7", Some(&token)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // A made-up opaque token is inactive at the provider: 401 with the standard body.
    let made_up = "not-a-token-the-provider-ever-issued";
    let refused = stack.get("/documents/7", Some(made_up)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.error_code(), "unauthorized");
    assert_eq!(stack.audit(&refused.request_id)["authz.reason"], "inactive");

    stack.assert_never_logged(&token);
    stack.assert_never_logged(made_up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_the_provider_is_refused_within_the_positive_cache_ttl() {
    let Some((stack, token)) = Stack::with_reader_token().await else {
        return;
    };
    stack.allowed("/payments/1", &token).await;
    // Answered from the cache now.
    let calls = stack.introspection_calls().await;
    assert_eq!(stack.get("/payments/1", Some(&token)).await.status, 200);
    assert_eq!(
        stack.introspection_calls().await,
        calls,
        "a cache hit asked again"
    );

    stack.idp().revoke(OPAQUE_CLIENT, &token).await;
    let revoked_at = Instant::now();
    let mut last = 200;
    while revoked_at.elapsed() < CACHE_TTL + WAIT {
        last = stack.get("/payments/1", Some(&token)).await.status;
        if last != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = revoked_at.elapsed();
    assert_eq!(
        last,
        401,
        "the revoked token was never refused\n{}",
        stack.logs()
    );
    // The cached answer lives at most CACHE_TTL (whole seconds, so up to one more second of
    // rounding); a poll interval on top.
    assert!(
        took <= CACHE_TTL + Duration::from_millis(1500),
        "refused only after {took:?} (positive cache TTL {CACHE_TTL:?})"
    );
    eprintln!("introspection: a revoked token was refused {took:?} after its revocation");
    let refused = stack.get("/payments/1", Some(&token)).await;
    assert_eq!(refused.status, 401);
    assert_eq!(stack.audit(&refused.request_id)["authz.reason"], "inactive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_provider_stopped_opaque_tokens_get_503_while_jwts_keep_working() {
    let Some(mut stack) = Stack::start().await else {
        return;
    };
    let jwt = stack.idp().token(&["read:documents"], AUDIENCE).await;
    let opaque = stack.opaque_token(&["read:documents"]).await;
    assert_eq!(stack.get("/documents/1", Some(&jwt)).await.status, 200);

    // The provider goes away (killed on drop): its keys stay cached, introspection cannot work.
    drop(stack.idp.take());
    for path in ["/payments/1", "/documents/1"] {
        let started = Instant::now();
        let reply = stack.get(path, Some(&opaque)).await;
        assert_eq!(
            reply.status,
            503,
            "{path}: {}\n{}",
            reply.body,
            stack.logs()
        );
        assert_eq!(reply.error_code(), "unavailable", "{}", reply.body);
        // portcullis's own answer (within Envoy's 0.5 s ext_authz timeout), with its reason.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            stack.audit(&reply.request_id)["authz.reason"],
            "introspection_unreachable",
            "{path}"
        );
    }
    let reply = stack.get("/documents/1", Some(&jwt)).await;
    assert_eq!(
        reply.status,
        200,
        "JWT route: {}\n{}",
        reply.body,
        stack.logs()
    );
    assert_eq!(reply.echo().header("x-auth-method"), Some("jwt"));
    stack.assert_never_logged(&opaque);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_checks_of_one_new_token_make_one_introspection_call() {
    let Some((stack, token)) = Stack::with_reader_token().await else {
        return;
    };
    let before = stack.introspection_calls().await;

    // Ten connections of 100 concurrent checks each, as ten Envoy workers would send them.
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(CheckClient::connect(stack.agent.addrs.grpc).await);
    }
    let request = EnvoyRequest::get("/documents/1").bearer(&token);
    let mut checks = tokio::task::JoinSet::new();
    for index in 0..1000 {
        let mut client = clients[index % clients.len()].clone();
        let request = request.clone();
        checks.spawn(async move { client.check(&request).await.allowed() });
    }
    let mut allowed = 0;
    while let Some(result) = checks.join_next().await {
        if result.expect("check task") {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 1000, "every check of the valid token is allowed");
    assert_eq!(
        stack.introspection_calls().await - before,
        1,
        "concurrent checks of one token share one call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_garbage_or_too_slowly_is_503_with_the_reason_audited() {
    let Some(stack) = Stack::start().await else {
        return;
    };
    for (mode, reason) in [
        ("not-json", "introspection_bad_response"),
        ("no-active", "introspection_bad_response"),
        ("slow", "introspection_unreachable"),
    ] {
        let token = stack.opaque_token(&["read:documents"]).await;
        stack.idp().set_introspection_mode(mode).await;
        let started = Instant::now();
        let reply = stack.get("/documents/1", Some(&token)).await;
        assert_eq!(
            reply.status,
            503,
            "{mode}: {}\n{}",
            reply.body,
            stack.logs()
        );
        assert_eq!(reply.error_code(), "unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            stack.audit(&reply.request_id)["authz.reason"],
            reason,
            "{mode}"
        );
        // A failure is not cached: once the endpoint answers properly, the token passes.
        stack.idp().set_introspection_mode("normal").await;
        let reply = stack.get("/documents/1", Some(&token)).await;
        assert_eq!(reply.status, 200, "{mode} then normal: {}", reply.body);
        stack.assert_never_logged(&token);
    }
    let logs = stack.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        !logs.contains(INTROSPECTOR_CLIENT.1),
        "the client secret was logged:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_with_the_secret_from_the_environment_and_discovery_works_over_grpc() {
    let Some(idp) = Idp::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config: PathBuf = write_config(
        dir.path(),
        "portcullis.yaml",
        &config_yaml(&idp, (0, 0, 0), ClientAuth::PostFromEnv)
            .replace("http_listen: 127.0.0.1:0, ", ""),
    );
    let path = config.to_str().expect("utf-8 path").to_owned();
    let agent = tokio::task::spawn_blocking(move || {
        BinaryAgent::spawn(
            &["serve", "--config", &path],
            &[(
                "PORTCULLIS_TEST_INTROSPECTION_SECRET",
                INTROSPECTOR_POST_CLIENT.1,
            )],
        )
    })
    .await
    .expect("portcullis start-up task");
    let mut client = agent.client().await;
    let token = idp
        .token_for(
            OPAQUE_CLIENT.0,
            OPAQUE_CLIENT.1,
            &["read:documents"],
            Some(AUDIENCE),
        )
        .await
        .expect("opaque token");
    let outcome = client
        .check(&EnvoyRequest::get("/payments/1").bearer(&token))
        .await;
    assert!(outcome.allowed(), "{outcome:?}\n{:?}", agent.stderr());
    assert_eq!(outcome.upstream("x-auth-method"), Some("introspection"));
    // Inactive once revoked and out of the cache.
    idp.revoke(OPAQUE_CLIENT, &token).await;
    let refused = eventually(CACHE_TTL + WAIT, || {
        let mut client = client.clone();
        let request = EnvoyRequest::get("/payments/1").bearer(&token);
        async move { client.check(&request).await.status == 401 }
    })
    .await;
    assert!(refused, "the revoked token was never refused");
}
