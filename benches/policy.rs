//! Authorization policy costs (issue 10, item 11): a compiled CEL condition evaluated alone,
//! and a whole allowed engine decision on a cached token for a route with RBAC and a CEL
//! condition (beside the same route with RBAC only, for the condition's share).
//!
//! Targets: a condition ≤ 2 µs; the RBAC + CEL decision ≤ 3 µs (a plain cache hit is ~1.2 µs).
//! Run: `cargo bench --bench policy` (under a minute).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use portcullis::authz::Resource;
use portcullis::authz::condition::Condition;
use portcullis::authz::routes::Params;
use portcullis::engine::{Engine, Shared};
use portcullis::identity::{AuthMethod, Identity};
use portcullis::input::{CheckInput, Headers};

#[allow(dead_code)]
#[path = "../tests/common/tokens.rs"]
mod tokens;

use tokens::{AUDIENCE, ISSUER, TestKey};

const OWNER_CHECK: &str = "resource.owner_id == subject.sub || 'admin' in subject.roles";

/// A token's worth of claims, as an identity carries them.
fn identity() -> Identity {
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "openid documents:read",
        "roles": ["user"], "email": "alice@example.com", "managed_teams": ["blue", "green"],
        "iat": 1_700_000_000, "exp": 1_700_003_600, "jti": "b1c0f5e2",
    });
    Identity {
        method: AuthMethod::Jwt,
        subject: "alice".to_owned(),
        issuer: ISSUER.to_owned(),
        scopes: vec!["openid".to_owned(), "documents:read".to_owned()],
        roles: vec!["user".to_owned()],
        claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
        ..Identity::anonymous()
    }
}

/// `GET /users/alice/documents/7` with the token.
fn input(token: &str) -> CheckInput {
    let authorization = ("authorization".to_owned(), format!("Bearer {token}"));
    CheckInput {
        method: "GET".to_owned(),
        host: "api.example.com".to_owned(),
        path: "/users/alice/documents/7".to_owned(),
        headers: Headers::new([authorization]),
        ..CheckInput::default()
    }
}

fn bench(c: &mut Criterion) {
    tokens::install_crypto_provider();
    let mut group = c.benchmark_group("policy");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let condition = Condition::compile(OWNER_CHECK).expect("the condition compiles");
    let identity = identity();
    let headers = Headers::default();
    let resource = Resource {
        route: "read-own-document",
        method: "GET",
        host: "api.example.com",
        path: "/users/alice/documents/7",
        params: Params(vec![("owner_id", "alice"), ("doc_id", "7")]),
        now: 1_700_000_100,
        headers: &headers,
        query: None,
        source: None,
        principal: None,
    };
    assert_eq!(condition.evaluate(&identity, &resource), Ok(true));
    group.bench_function("condition/evaluate", |b| {
        b.iter(|| black_box(condition.evaluate(black_box(&identity), black_box(&resource))));
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let key = TestKey::rsa();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("jwks.json"),
        tokens::jwks(&[&key]).to_string(),
    )
    .expect("write JWKS");
    let _runtime_context = runtime.enter();
    let claims = tokens::with(
        &tokens::claims(ISSUER, AUDIENCE, "alice", "documents:read", 3600),
        &json!({"roles": ["user"]}),
    );
    let hit = input(&key.token(&claims));
    for (name, require) in [
        (
            "engine/cache_hit_rbac",
            "{roles: [user], permissions: [read]}",
        ),
        (
            "engine/cache_hit_rbac_cel",
            "{roles: [user], permissions: [read], when: \"resource.owner_id == subject.sub\"}",
        ),
    ] {
        let yaml = format!(
            "issuers:\n  - name: bench\n    issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    \
             jwks_file: jwks.json\n    algorithms: [RS256]\n\
             roles:\n  admin: [read, write, delete]\n  user: [read, write]\n\
             routes:\n  - name: read-own-document\n    match: {{methods: [GET], path: \
             \"/users/{{owner_id}}/documents/{{doc_id}}\"}}\n    require: {require}\n"
        );
        let config = portcullis::config::load_str(&yaml, &dir.path().join("portcullis.yaml"))
            .unwrap_or_else(|e| panic!("bench config: {e}"));
        let shared = Shared::default();
        let engine = Engine::new(&config, &shared);
        runtime.block_on(shared.keys.wait_initial(Duration::from_secs(5)));
        let first = runtime.block_on(engine.check(&hit));
        assert!(first.is_allow(), "{}", first.reason());
        group.bench_function(name, |b| {
            b.iter(|| black_box(runtime.block_on(engine.check(black_box(&hit)))));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
