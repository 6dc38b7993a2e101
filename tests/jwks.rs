//! The JWKS lifecycle against a server under the test's control: sources, transport rules,
//! refresh schedule, kid-miss refetch (single-flight, rate-limited), stale-if-error, recovery,
//! and the registry across reloads. Intervals are short so every test stays within seconds.

#[path = "common/http_server.rs"]
mod http_server;

use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_server::{JwksServer, jwks};
use portcullis::authn::jwks::{KeyError, KeyFamily, KeyRegistry, KeyStore};
use portcullis::authn::{Algorithm, ClaimPaths, IssuerConfig, KeySource, RefreshPolicy};
use serde_json::{Value, json};

const EC_P256: &str = include_str!("fixtures/jwks/ec-p256.jwk.json");
const RSA_2048: &str = include_str!("fixtures/jwks/rsa-2048.jwk.json");

/// The P-256 fixture under another kid: cheap distinct keys for rotation tests.
fn key(kid: &str) -> Value {
    let mut jwk: Value = serde_json::from_str(EC_P256).expect("fixture is JSON");
    jwk["kid"] = json!(kid);
    jwk
}

fn policy(min: Duration, max: Duration) -> RefreshPolicy {
    RefreshPolicy {
        min_refresh_interval: min,
        max_refresh_interval: max,
        fetch_timeout: Duration::from_millis(1500),
        max_document_bytes: 64 * 1024,
        allow_insecure_http: false,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn issuer(name: &str, issuer: &str, source: KeySource, refresh: RefreshPolicy) -> IssuerConfig {
    IssuerConfig {
        name: name.to_owned(),
        issuer: issuer.to_owned(),
        audiences: vec!["orders-api".to_owned()],
        algorithms: vec![Algorithm::ES256, Algorithm::RS256],
        clock_skew: Duration::from_secs(30),
        claims: ClaimPaths::default(),
        allowed_types: None,
        max_lifetime: None,
        source,
        refresh,
        claim_headers: Vec::new(),
        mfa_methods: portcullis::authn::default_mfa_methods(),
        scope_wildcards: false,
    }
}

fn uri_issuer(server: &JwksServer, refresh: RefreshPolicy) -> IssuerConfig {
    issuer(
        "corp",
        &server.base_url(),
        KeySource::JwksUri(server.jwks_url()),
        refresh,
    )
}

/// `corp` at `issuer_url`, keys found by OIDC discovery, the usual test refresh.
fn discovery_issuer(issuer_url: &str) -> IssuerConfig {
    issuer(
        "corp",
        issuer_url,
        KeySource::Discovery,
        policy(ms(200), ms(5000)),
    )
}

/// `hmac`, its shared secret read from a temporary file holding exactly `contents`. The file
/// is deleted when the returned guard drops: bind it (`let (_file, config)`), never to `_`.
fn secret_file_issuer(
    contents: &str,
    refresh: RefreshPolicy,
) -> (tempfile::NamedTempFile, IssuerConfig) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(contents.as_bytes()).expect("written");
    let config = issuer(
        "hmac",
        "https://idp.example.com",
        KeySource::SharedSecretFile(file.path().to_owned()),
        refresh,
    );
    (file, config)
}

/// Polls `condition` every 20 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(ms(20)).await;
    }
}

async fn bounded<T>(within: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, future)
        .await
        .expect("finished in time")
}

/// A registry with one store whose first fetch has finished.
async fn loaded(config: &IssuerConfig) -> (KeyRegistry, Arc<KeyStore>) {
    let registry = KeyRegistry::new();
    let store = registry.store_for(config);
    registry.wait_initial(Duration::from_secs(3)).await;
    (registry, store)
}

#[tokio::test]
async fn fetches_keys_from_a_jwks_uri() {
    let server = JwksServer::start(&jwks(&[
        key("k1"),
        serde_json::from_str(RSA_2048).expect("fixture"),
    ]))
    .await;
    let (registry, store) = loaded(&uri_issuer(&server, policy(ms(200), ms(5000)))).await;

    let set = store.resolve(Some("k1")).await.expect("k1 resolves");
    assert_eq!(set.len(), 2);
    assert_eq!(
        set.by_kid("rsa-2048").map(|k| k.family),
        Some(KeyFamily::Rsa)
    );
    assert!(registry.ready());
    let status = store.status();
    assert_eq!((status.name.as_str(), status.keys), ("corp", 2));
    assert_eq!((status.fetches_ok, status.fetches_failed), (1, 0));
    assert_eq!(status.last_error, None);
    assert!(status.age.expect("has an age") < Duration::from_secs(2));
    let listed = registry.status();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].keys), ("corp", 2));
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test]
async fn discovers_the_jwks_uri_from_the_issuer() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let config = discovery_issuer(&server.base_url());
    let (_registry, store) = loaded(&config).await;

    assert!(store.resolve(Some("k1")).await.is_ok());
    assert_eq!(server.discovery_requests(), 1);
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test]
async fn discovery_drops_a_trailing_slash_of_the_issuer_but_compares_it_exactly() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let with_slash = format!("{}/", server.base_url());
    server.set_discovery_issuer(Some(&with_slash));
    let config = discovery_issuer(&with_slash);
    let (_registry, store) = loaded(&config).await;

    assert!(store.resolve(Some("k1")).await.is_ok());
    assert_eq!(server.discovery_requests(), 1);
}

#[tokio::test]
async fn refuses_a_discovery_document_for_another_issuer() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    server.set_discovery_issuer(Some("https://evil.example.com"));
    let config = discovery_issuer(&server.base_url());
    let (registry, store) = loaded(&config).await;

    assert_eq!(store.resolve(None).await.err(), Some(KeyError::NoKeys));
    assert_eq!(
        store.resolve(Some("k1")).await.err(),
        Some(KeyError::NoKeys)
    );
    let error = store.status().last_error.expect("an error is reported");
    assert!(error.contains("names issuer"), "{error}");
    assert_eq!(
        server.jwks_requests(),
        0,
        "keys of a mismatched issuer are never fetched"
    );
    assert!(!registry.ready());
}

#[tokio::test]
async fn refuses_plain_http_to_a_non_loopback_host() {
    let config = issuer(
        "corp",
        "https://idp.example.com",
        KeySource::JwksUri("http://idp.example.com/jwks?client=abc".to_owned()),
        policy(ms(200), ms(5000)),
    );
    let (registry, store) = loaded(&config).await;

    assert_eq!(store.resolve(None).await.err(), Some(KeyError::NoKeys));
    let error = store.status().last_error.expect("an error is reported");
    assert!(
        error.contains("plain http://") && error.contains("allow_insecure_http"),
        "{error}"
    );
    assert!(
        !error.contains("client=abc"),
        "no query strings in errors: {error}"
    );
    assert!(!registry.ready());
}

#[tokio::test]
async fn refuses_discovery_pointing_to_plain_http_elsewhere() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    server.set_discovery(Some(json!({
        "issuer": server.base_url(),
        "jwks_uri": "http://keys.example.com/jwks",
    })));
    let config = discovery_issuer(&server.base_url());
    let (_registry, store) = loaded(&config).await;

    let error = store.status().last_error.expect("an error is reported");
    assert!(error.contains("plain http://"), "{error}");
    assert_eq!(store.status().keys, 0);
}

/// The configuration refuses such key URLs; a `jwks_uri` found by discovery is held to the same
/// rule (it used to be fetched, credentials sent along as Basic authentication).
#[tokio::test]
async fn refuses_discovery_pointing_to_a_url_with_credentials_or_a_fragment() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let addr = server.base_url().replacen("http://", "", 1);
    for jwks_uri in [
        format!("http://user:pw@{addr}/jwks"),
        format!("http://{addr}/jwks#keys"),
    ] {
        server.set_discovery(Some(json!({
            "issuer": server.base_url(),
            "jwks_uri": jwks_uri,
        })));
        let config = discovery_issuer(&server.base_url());
        let (_registry, store) = loaded(&config).await;

        let error = store.status().last_error.expect("an error is reported");
        assert!(
            error.contains("credentials") || error.contains("fragment"),
            "{jwks_uri}: {error}"
        );
        assert!(
            !error.contains("pw"),
            "credentials are never shown: {error}"
        );
        assert_eq!(store.status().keys, 0);
        assert_eq!(server.jwks_requests(), 0, "{jwks_uri} was fetched");
    }
}

#[tokio::test]
async fn refuses_oversized_documents_with_or_without_content_length() {
    let mut document = jwks(&[key("k1")]);
    document["padding"] = json!("x".repeat(4096));
    let server = JwksServer::start(&document).await;
    let mut refresh = policy(ms(200), ms(5000));
    refresh.max_document_bytes = 2048;

    for chunked in [false, true] {
        server.set_chunked(chunked);
        let (_registry, store) = loaded(&uri_issuer(&server, refresh.clone())).await;
        assert_eq!(store.resolve(None).await.err(), Some(KeyError::NoKeys));
        let error = store.status().last_error.expect("an error is reported");
        assert!(
            error.contains("larger than 2048 bytes"),
            "chunked={chunked}: {error}"
        );
    }
}

#[tokio::test]
async fn honours_max_age_within_the_configured_bounds() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let fetches_in = |window: Duration, cache_control: Option<&'static str>| {
        let server = &server;
        async move {
            server.set_cache_control(cache_control);
            let config = uri_issuer(server, policy(ms(200), ms(600)));
            let (_registry, _store) = loaded(&config).await;
            server.reset_counts();
            tokio::time::sleep(window).await;
            server.jwks_requests()
        }
    };

    // Windows end between scheduled fetches, so the counts are exact up to scheduling noise.
    let clamped_down = fetches_in(ms(1100), Some("public, max-age=0")).await;
    assert!(
        (4..=6).contains(&clamped_down),
        "max-age below the minimum → every 0.2 s: {clamped_down}"
    );
    let clamped_up = fetches_in(ms(1400), Some("max-age=86400")).await;
    assert!(
        (2..=3).contains(&clamped_up),
        "max-age above the maximum → every 0.6 s: {clamped_up}"
    );
    let absent = fetches_in(ms(1400), None).await;
    assert!(
        (2..=3).contains(&absent),
        "no max-age → the maximum: {absent}"
    );
}

#[tokio::test]
async fn honours_a_max_age_between_the_bounds() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    server.set_cache_control(Some("max-age=1"));
    let (_registry, _store) = loaded(&uri_issuer(&server, policy(ms(200), ms(10_000)))).await;
    server.reset_counts();
    // Fetches at about 0.9–1.0 s and 1.8–2.0 s.
    tokio::time::sleep(ms(2300)).await;
    let fetches = server.jwks_requests();
    assert!(
        (2..=3).contains(&fetches),
        "max-age=1 → about one fetch per second: {fetches}"
    );
}

#[tokio::test]
async fn picks_up_a_rotated_key_on_a_kid_miss_without_waiting_for_the_refresh() {
    let server = JwksServer::start(&jwks(&[key("old")])).await;
    let (_registry, store) = loaded(&uri_issuer(
        &server,
        policy(ms(200), Duration::from_secs(60)),
    ))
    .await;
    assert!(store.resolve(Some("old")).await.is_ok());

    server.set_jwks(&jwks(&[key("old"), key("new")]));
    let set = bounded(Duration::from_secs(2), store.resolve(Some("new")))
        .await
        .expect("the new key is fetched on demand");
    assert!(set.by_kid("new").is_some() && set.by_kid("old").is_some());
    assert_eq!(server.jwks_requests(), 2);
    // Known kids never fetch.
    store.resolve(Some("new")).await.expect("known");
    store.resolve(None).await.expect("keys");
    assert_eq!(server.jwks_requests(), 2);
}

#[tokio::test]
async fn serves_the_last_good_keys_while_the_idp_is_down_and_recovers() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let (registry, store) = loaded(&uri_issuer(&server, policy(ms(200), ms(400)))).await;
    let fresh_age = store.status().age.expect("fetched");

    server.fail();
    assert!(
        eventually(Duration::from_secs(3), || store.status().fetches_failed
            >= 2)
        .await,
        "refreshes keep failing"
    );
    let failing = store.status();
    assert!(
        failing
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{failing:?}"
    );
    assert_eq!(failing.keys, 1);

    server.go_down().await;
    let failed_before = store.status().fetches_failed;
    let age_before = store.status().age.expect("stale set still has an age");
    tokio::time::sleep(ms(500)).await;
    let down = store.status();
    assert!(
        down.fetches_failed > failed_before + 1,
        "retries continue: {down:?}"
    );
    let age = down.age.expect("stale set still has an age");
    assert!(
        age >= age_before + ms(500) && age > fresh_age,
        "the age keeps growing: {down:?}"
    );
    assert!(down.last_error.is_some());
    assert!(store.resolve(Some("k1")).await.is_ok(), "stale-if-error");
    assert!(store.resolve(None).await.is_ok());
    assert!(registry.ready(), "a stale set still counts as keys");

    server.recover();
    server.come_back().await;
    let ok_before = store.status().fetches_ok;
    assert!(
        eventually(Duration::from_secs(3), || {
            let status = store.status();
            status.fetches_ok > ok_before && status.last_error.is_none()
        })
        .await,
        "recovers once the IdP is back"
    );
    assert!(store.status().age.expect("fetched") < ms(600));
}

#[tokio::test]
async fn an_empty_or_unusable_document_never_replaces_a_good_set() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let (_registry, store) = loaded(&uri_issuer(&server, policy(ms(200), ms(400)))).await;

    for bad in [
        jwks(&[]),
        jwks(&[json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"})]),
        json!({"not": "a jwks"}),
    ] {
        server.set_jwks(&bad);
        let failed_before = store.status().fetches_failed;
        assert!(
            eventually(Duration::from_secs(3), || store.status().fetches_failed
                > failed_before)
            .await
        );
        assert!(store.resolve(Some("k1")).await.is_ok(), "{bad}");
    }
    let error = store.status().last_error.expect("reported");
    assert!(error.contains("invalid JWKS"), "{error}");
}

#[tokio::test]
async fn recovers_within_seconds_when_the_idp_was_down_from_the_start() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    server.go_down().await;
    // A realistic minimum interval: first retries still come within about a second.
    let (registry, store) = loaded(&uri_issuer(
        &server,
        policy(Duration::from_secs(2), Duration::from_secs(60)),
    ))
    .await;

    assert_eq!(store.resolve(None).await.err(), Some(KeyError::NoKeys));
    assert_eq!(
        store.resolve(Some("k1")).await.err(),
        Some(KeyError::NoKeys)
    );
    let status = store.status();
    assert_eq!((status.keys, status.age, status.fetches_ok), (0, None, 0));
    assert!(status.fetches_failed >= 1 && status.last_error.is_some());
    assert!(!registry.ready());

    server.come_back().await;
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(4), || registry.ready()).await,
        "keys within seconds of the IdP coming back"
    );
    assert!(back.elapsed() < Duration::from_secs(4));
    assert!(store.resolve(Some("k1")).await.is_ok());
}

#[tokio::test]
async fn a_hanging_idp_is_bounded_by_the_fetch_timeout() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    server.hang();
    let mut refresh = policy(Duration::from_secs(10), Duration::from_secs(60));
    refresh.fetch_timeout = ms(300);
    let config = uri_issuer(&server, refresh);

    let registry = KeyRegistry::new();
    let store = registry.store_for(&config);
    let started = Instant::now();
    registry.wait_initial(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "first attempt ends at the timeout"
    );
    let error = store.status().last_error.expect("reported");
    assert!(error.contains("timed out"), "{error}");

    let started = Instant::now();
    assert_eq!(
        store.resolve(Some("k1")).await.err(),
        Some(KeyError::NoKeys)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "callers wait at most the fetch timeout"
    );

    // With keys in hand, a kid miss against a hanging IdP is bounded the same way.
    server.recover();
    let store = registry.store_for(&uri_issuer(
        &server,
        policy(ms(200), Duration::from_secs(60)),
    ));
    registry.wait_initial(Duration::from_secs(3)).await;
    server.hang();
    let started = Instant::now();
    assert_eq!(
        store.resolve(Some("unknown")).await.err(),
        Some(KeyError::UnknownKey)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn concurrent_misses_on_the_same_kid_share_one_fetch() {
    let server = JwksServer::start(&jwks(&[key("old")])).await;
    let (_registry, store) = loaded(&uri_issuer(
        &server,
        policy(ms(200), Duration::from_secs(60)),
    ))
    .await;
    server.set_jwks(&jwks(&[key("old"), key("rotated")]));
    // Slow answer: every caller arrives while the one fetch is in flight.
    server.set_delay(ms(300));
    server.reset_counts();

    let calls = (0..1000).map(|_| store.resolve(Some("rotated")));
    let results = bounded(Duration::from_secs(5), futures::future::join_all(calls)).await;

    assert!(
        results.iter().all(Result::is_ok),
        "every caller sees the fetched key"
    );
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test]
async fn random_unknown_kids_cause_at_most_a_handful_of_fetches() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let (_registry, store) = loaded(&uri_issuer(
        &server,
        policy(Duration::from_secs(10), Duration::from_secs(60)),
    ))
    .await;
    server.reset_counts();

    let concurrent = (0..200).map(|i| {
        let store = &store;
        async move { store.resolve(Some(&format!("random-{i}"))).await }
    });
    let results = bounded(
        Duration::from_secs(5),
        futures::future::join_all(concurrent),
    )
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err() == Some(&KeyError::UnknownKey))
    );

    for i in 0..200 {
        let kid = format!("sequential-{i}");
        assert_eq!(
            store.resolve(Some(&kid)).await.err(),
            Some(KeyError::UnknownKey)
        );
    }
    let fetches = server.jwks_requests();
    assert!(
        (1..=2).contains(&fetches),
        "{fetches} fetches for 400 random kids"
    );
    assert!(store.resolve(Some("k1")).await.is_ok());
}

#[tokio::test]
async fn registry_keeps_a_store_for_an_unchanged_issuer_and_replaces_a_changed_one() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let refresh = policy(ms(200), ms(300));
    let first = issuer(
        "corp",
        &server.base_url(),
        KeySource::JwksUri(server.url("/jwks-a")),
        refresh.clone(),
    );
    let registry = KeyRegistry::new();
    let store = registry.store_for(&first);
    registry.wait_initial(Duration::from_secs(3)).await;

    // A reload with the same issuer, source and refresh (even another name or audience).
    let mut renamed = first.clone();
    renamed.name = "corporate".to_owned();
    renamed.audiences = vec!["billing".to_owned()];
    let again = registry.store_for(&renamed);
    assert!(
        Arc::ptr_eq(&store, &again),
        "unchanged issuer keeps its store and keys"
    );
    assert_eq!(again.status().keys, 1);
    assert_eq!(again.status().name, "corporate");

    let changed = issuer(
        "corp",
        &server.base_url(),
        KeySource::JwksUri(server.url("/jwks-b")),
        refresh.clone(),
    );
    let replacement = registry.store_for(&changed);
    assert!(!Arc::ptr_eq(&store, &replacement));
    assert_eq!(
        registry.status().len(),
        2,
        "the running store stays until retain"
    );

    registry.retain(std::slice::from_ref(&changed));
    registry.wait_initial(Duration::from_secs(3)).await;
    assert_eq!(registry.status().len(), 1);
    assert!(registry.ready());

    // The retired store stops refreshing even while someone still holds it.
    tokio::time::sleep(ms(100)).await;
    let retired = server.requests("/jwks-a");
    tokio::time::sleep(ms(900)).await;
    assert_eq!(
        server.requests("/jwks-a"),
        retired,
        "retired store no longer fetches"
    );
    assert!(
        server.requests("/jwks-b") >= 2,
        "the live store keeps refreshing"
    );
    assert!(
        store.resolve(Some("k1")).await.is_ok(),
        "its keys still serve the old generation"
    );

    // Dropping the registry and every handle stops the last task.
    drop((registry, store, again, replacement));
    tokio::time::sleep(ms(100)).await;
    let stopped = server.requests("/jwks-b");
    tokio::time::sleep(ms(800)).await;
    assert_eq!(
        server.requests("/jwks-b"),
        stopped,
        "no task outlives its store"
    );
}

#[tokio::test]
async fn a_changed_refresh_policy_gets_a_new_store() {
    let server = JwksServer::start(&jwks(&[key("k1")])).await;
    let registry = KeyRegistry::new();
    let first = registry.store_for(&uri_issuer(&server, policy(ms(200), ms(5000))));
    let second = registry.store_for(&uri_issuer(&server, policy(ms(300), ms(5000))));
    assert!(!Arc::ptr_eq(&first, &second));
    let mut moved = uri_issuer(&server, policy(ms(200), ms(5000)));
    moved.issuer = "https://other.example.com".to_owned();
    assert!(!Arc::ptr_eq(&first, &registry.store_for(&moved)));
}

#[tokio::test]
async fn ready_needs_keys_for_every_issuer() {
    let good = JwksServer::start(&jwks(&[key("k1")])).await;
    let bad = JwksServer::start(&jwks(&[key("k1")])).await;
    bad.fail();
    let registry = KeyRegistry::new();
    assert!(registry.ready(), "nothing configured, nothing to wait for");
    registry.store_for(&uri_issuer(&good, policy(ms(200), ms(5000))));
    let mut failing = uri_issuer(&bad, policy(ms(200), ms(5000)));
    failing.name = "broken".to_owned();
    registry.store_for(&failing);
    registry.wait_initial(Duration::from_secs(3)).await;

    assert!(!registry.ready());
    let status = registry.status();
    assert_eq!(status.len(), 2);
    assert_eq!(status[1].name, "broken");
    assert_eq!(status[1].keys, 0);

    bad.recover();
    assert!(eventually(Duration::from_secs(3), || registry.ready()).await);
}

#[tokio::test]
async fn reads_keys_from_a_file_and_rereads_it_on_a_kid_miss() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(jwks(&[key("k1")]).to_string().as_bytes())
        .expect("written");
    let config = issuer(
        "files",
        "https://idp.example.com",
        KeySource::JwksFile(file.path().to_owned()),
        policy(ms(200), Duration::from_secs(60)),
    );
    let (_registry, store) = loaded(&config).await;
    assert!(store.resolve(Some("k1")).await.is_ok());

    std::fs::write(file.path(), jwks(&[key("k1"), key("k2")]).to_string()).expect("rewritten");
    assert!(store.resolve(Some("k2")).await.is_ok());
}

#[tokio::test]
async fn loads_a_shared_secret_and_refuses_a_short_one() {
    let secret = "0123456789abcdef0123456789abcdef-long-enough";
    let (_file, config) = secret_file_issuer(
        &format!("{secret}\n"),
        policy(ms(200), Duration::from_secs(60)),
    );
    let (_registry, store) = loaded(&config).await;
    let set = store.resolve(None).await.expect("a key");
    let only: Vec<_> = set.iter().collect();
    assert_eq!(only.len(), 1);
    assert_eq!(
        (only[0].family, only[0].kid.as_deref()),
        (KeyFamily::Hmac, None)
    );
    // A shared secret has no key id: a token's kid neither misses nor refetches.
    assert!(store.resolve(Some("any-kid")).await.is_ok());

    // The trailing newline is not part of the secret: a token signed with the secret verifies.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "svc"}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key"),
    )
    .expect("signed");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    assert!(jsonwebtoken::decode::<Value>(&token, &only[0].decoding, &validation).is_ok());

    let short = "too-short-secret";
    let (_file, config) = secret_file_issuer(
        &format!("{short}\n"),
        policy(ms(200), Duration::from_secs(60)),
    );
    let (_registry, store) = loaded(&config).await;
    assert_eq!(store.resolve(None).await.err(), Some(KeyError::NoKeys));
    let error = store.status().last_error.expect("reported");
    assert!(error.contains("shorter than 32 bytes"), "{error}");
    assert!(!error.contains(short));
}

/// Collects everything logged on this thread (the test runs on one thread, so the stores'
/// tasks log here too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_show_key_material_secrets_or_query_strings() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let small_rsa: Value =
        serde_json::from_str(include_str!("fixtures/jwks/rsa-1024.jwk.json")).expect("fixture");
    let modulus = small_rsa["n"].as_str().expect("n").to_owned();
    let hmac = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
    let server = JwksServer::start(&jwks(&[
        key("k1"),
        small_rsa,
        json!({"kty": "oct", "kid": "h", "k": hmac}),
    ]))
    .await;
    let config = issuer(
        "corp",
        &server.base_url(),
        KeySource::JwksUri(format!("{}?api_key=query-secret", server.jwks_url())),
        policy(ms(200), ms(400)),
    );
    let (_registry, store) = loaded(&config).await;
    assert!(store.resolve(Some("k1")).await.is_ok());
    server.fail();
    let failed = store.status().fetches_failed;
    assert!(
        eventually(Duration::from_secs(3), || store.status().fetches_failed
            > failed)
        .await
    );

    let secret = "0123456789abcdef0123456789abcdef-shared";
    // No trailing newline this time.
    let (_file, hmac_issuer) = secret_file_issuer(secret, policy(ms(200), ms(400)));
    let (_hmac_registry, hmac_store) = loaded(&hmac_issuer).await;
    assert_eq!(hmac_store.status().keys, 1);
    let status_text = format!("{:?} {:?}", store.status(), hmac_store.status());

    let logs = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8");
    assert!(
        logs.contains("skipping key from JWKS"),
        "skips are logged: {logs}"
    );
    assert!(
        logs.contains("keeping the last good key set"),
        "failures are logged: {logs}"
    );
    for forbidden in [&modulus[..24], hmac, secret, "query-secret", "api_key"] {
        assert!(
            !logs.contains(forbidden),
            "{forbidden} leaked into logs: {logs}"
        );
        assert!(
            !status_text.contains(forbidden),
            "{forbidden} leaked into status"
        );
    }
}
