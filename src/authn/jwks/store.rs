//! One issuer's [`KeyStore`] (current key set, background refresh, kid-miss refetch,
//! stale-if-error) and the app-lifetime [`KeyRegistry`] that keeps stores across reloads. The
//! lifecycle is described in the parent module.
//!
//! This module must never log key material, a shared secret, or a URL's query string or
//! credentials, and never answer with keys it could not parse (fail closed).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use reqwest::Url;
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::document::{JwksError, KeyFamily, KeySet, SkippedKey, VerificationKey, parse_jwks};
use super::schedule::{jitter_unit, refresh_delay, retry_delay};
use crate::authn::{IssuerConfig, IssuerKeyStatus, KeySource, RefreshPolicy};
use crate::error::ErrorChain;
use crate::fetch;
use opentelemetry::context::FutureExt as _;

/// Name of the span of one key fetch (JWKS document, with its discovery step).
pub const JWKS_FETCH_SPAN: &str = "portcullis.jwks.fetch";

/// HS256 needs a key at least as long as its hash output (RFC 7518 §3.2).
const MIN_SHARED_SECRET_BYTES: usize = 32;
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Why a fetch attempt produced no key set. Texts name hosts and paths, never query strings,
/// URL credentials, secrets or key material.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Url(#[from] fetch::UrlError),
    #[error("the HTTP client could not be built")]
    Client(#[source] Arc<reqwest::Error>),
    #[error(transparent)]
    Http(#[from] fetch::FetchError),
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path} timed out after {timeout:?}")]
    FileTimeout { path: String, timeout: Duration },
    #[error("{path}: file larger than {limit} bytes")]
    FileTooLarge { path: String, limit: usize },
    #[error("discovery document at {url}: {reason}")]
    Discovery { url: String, reason: &'static str },
    #[error("discovery document at {url} names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    #[error("{origin}")]
    Jwks {
        origin: String,
        #[source]
        source: JwksError,
    },
    #[error("{origin}: no usable key ({skipped} skipped)")]
    NoUsableKeys { origin: String, skipped: usize },
    #[error("{path}: shared secret shorter than {MIN_SHARED_SECRET_BYTES} bytes")]
    SecretTooShort { path: String },
    #[error("store was created outside a tokio runtime, so it cannot fetch keys")]
    NoRuntime,
    #[error("fetch task ended before finishing")]
    Aborted,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the plain-data state inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why no key could be produced for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The issuer has keys, but none with that `kid` even after a (rate-limited) refetch.
    #[error("unknown key id")]
    UnknownKey,
    /// The issuer has no usable keys at all: fail closed (503).
    #[error("no keys available")]
    NoKeys,
}

/// The registry's shared HTTP client, or why there is none.
#[derive(Debug, Clone)]
enum HttpClient {
    Ready(reqwest::Client),
    /// Building the client failed: every fetch reports this error (fail closed).
    Broken(Arc<reqwest::Error>),
    /// Fixed stores never fetch.
    None,
}

/// Where a store's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Configured(KeySource),
    /// Seeded once (tests, benches, `explain`): never fetches.
    Fixed,
}

/// A fetched and parsed key set, ready to swap in.
struct Loaded {
    set: KeySet,
    max_age: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    /// When the set in use was fetched.
    fetched_at: Option<Instant>,
    last_error: Option<String>,
    fetches_ok: u64,
    fetches_failed: u64,
    consecutive_failures: u32,
    /// End of the last attempt and the delay until the next scheduled one.
    last_attempt_end: Option<Instant>,
    next_delay: Duration,
    in_flight: bool,
    /// Start of the last fetch triggered by an unknown kid (the rate limit's clock).
    last_kid_miss_fetch: Option<Instant>,
    /// `jwks_uri` from the discovery document, and when it was discovered.
    discovered: Option<(Url, Instant)>,
    /// Keys skipped by the last parsed document (already warned about).
    last_skipped: Vec<SkippedKey>,
}

/// Everything a store's tasks share.
struct Inner {
    name: Mutex<String>,
    issuer: String,
    origin: Origin,
    policy: RefreshPolicy,
    client: HttpClient,
    current: ArcSwap<KeySet>,
    state: Mutex<State>,
    /// Number of finished fetch attempts; bumped under the `state` lock.
    attempts: watch::Sender<u64>,
}

/// One issuer's key store: the current snapshot plus its refresh machinery.
///
/// Dropping the store (or retiring it from the registry) stops its background refresh.
pub struct KeyStore {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("name", &*lock(&self.inner.name))
            .field("issuer", &self.inner.issuer)
            .field("keys", &self.inner.current.load().len())
            .finish_non_exhaustive()
    }
}

impl Drop for KeyStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl KeyStore {
    /// A store that serves `keys` and never fetches (tests, benchmarks, offline tools). An
    /// unknown `kid` is answered with [`KeyError::UnknownKey`] at once; an empty set with
    /// [`KeyError::NoKeys`]. Needs no runtime.
    pub fn fixed(name: impl Into<String>, issuer: impl Into<String>, keys: KeySet) -> Self {
        let (attempts, _) = watch::channel(1);
        let state = State {
            fetched_at: Some(Instant::now()),
            ..State::default()
        };
        Self {
            inner: Arc::new(Inner {
                name: Mutex::new(name.into()),
                issuer: issuer.into(),
                origin: Origin::Fixed,
                policy: RefreshPolicy::default(),
                client: HttpClient::None,
                current: ArcSwap::from_pointee(keys),
                state: Mutex::new(state),
                attempts,
            }),
            stop: CancellationToken::new(),
        }
    }

    /// A store for `config` fetching with `client`; its first fetch and its refresh loop start
    /// at once in the background. Must be called inside a tokio runtime: outside one the store
    /// stays empty and reports why in its status.
    fn spawn(config: &IssuerConfig, client: HttpClient) -> Self {
        let (attempts, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            name: Mutex::new(config.name.clone()),
            issuer: config.issuer.clone(),
            origin: Origin::Configured(config.source.clone()),
            policy: config.refresh.clone(),
            client,
            current: ArcSwap::from_pointee(KeySet::default()),
            state: Mutex::new(State::default()),
            attempts,
        });
        let stop = CancellationToken::new();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(refresh_loop(Arc::clone(&inner), stop.clone()));
            }
            Err(_) => {
                lock(&inner.state).in_flight = true;
                inner.finish_attempt(Err(FetchError::NoRuntime));
            }
        }
        Self { inner, stop }
    }

    /// True when the key set in use right now publishes `kid`. Never fetches: the token cache
    /// asks this on every hit, so that a key the IdP has withdrawn stops vouching for the
    /// tokens it signed as soon as the refresh that drops it lands.
    pub fn publishes(&self, kid: &str) -> bool {
        self.inner.current.load().by_kid(kid).is_some()
    }

    /// The current snapshot, refetched first (single-flight, at most once per
    /// `min_refresh_interval`) when `kid` is given and unknown.
    ///
    /// `resolve(None)` never fetches. With a kid, `Ok` means the returned set holds a key with
    /// that kid; callers wait at most `fetch_timeout` for a refetch. A shared secret has no key
    /// id, so for a `SharedSecretFile` issuer the kid is ignored (as with `None`).
    pub async fn resolve(&self, kid: Option<&str>) -> Result<Arc<KeySet>, KeyError> {
        let set = self.inner.current.load_full();
        let kid = kid.filter(|_| {
            !matches!(
                self.inner.origin,
                Origin::Configured(KeySource::SharedSecretFile(_))
            )
        });
        let Some(kid) = kid else {
            return if set.is_empty() {
                Err(KeyError::NoKeys)
            } else {
                Ok(set)
            };
        };
        if set.by_kid(kid).is_some() {
            return Ok(set);
        }
        if let Some(target) = self.inner.start_or_join(Some(kid)) {
            let mut finished = self.inner.attempts.subscribe();
            // A timeout or a closed channel both mean: answer with what we have.
            let _ = tokio::time::timeout(
                self.inner.policy.fetch_timeout,
                finished.wait_for(|n| *n >= target),
            )
            .await;
        }
        let set = self.inner.current.load_full();
        if set.is_empty() {
            Err(KeyError::NoKeys)
        } else if set.by_kid(kid).is_some() {
            Ok(set)
        } else {
            Err(KeyError::UnknownKey)
        }
    }

    pub fn status(&self) -> IssuerKeyStatus {
        let state = lock(&self.inner.state);
        let keys = self.inner.current.load().len();
        IssuerKeyStatus {
            name: lock(&self.inner.name).clone(),
            issuer: self.inner.issuer.clone(),
            keys,
            age: state.fetched_at.filter(|_| keys > 0).map(|at| at.elapsed()),
            last_error: state.last_error.clone(),
            fetches_ok: state.fetches_ok,
            fetches_failed: state.fetches_failed,
        }
    }

    /// True once the first fetch attempt finished, successfully or not.
    fn initial_done(&self) -> bool {
        *self.inner.attempts.borrow() >= 1
    }

    fn matches(&self, config: &IssuerConfig) -> bool {
        self.inner.issuer == config.issuer
            && self.inner.origin == Origin::Configured(config.source.clone())
            && self.inner.policy == config.refresh
    }
}

/// The background refresh of one store: first fetch at once, then on the schedule the last
/// finished attempt set (whoever started it), until the store is dropped or retired.
async fn refresh_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let mut finished = inner.attempts.subscribe();
    loop {
        finished.borrow_and_update();
        let due = {
            let state = lock(&inner.state);
            state
                .last_attempt_end
                .map(|end| end + state.next_delay)
                .unwrap_or_else(Instant::now)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            changed = finished.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(due.into()) => {
                if let Some(target) = inner.start_or_join(None) {
                    let mut done = inner.attempts.subscribe();
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = done.wait_for(|n| *n >= target) => {}
                    }
                }
            }
        }
    }
}

/// Marks the fetch as finished even if its task dies early, so `in_flight` can never stick.
struct AttemptGuard {
    inner: Arc<Inner>,
    finished: bool,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.finish_attempt(Err(FetchError::Aborted));
        }
    }
}

impl Inner {
    fn name(&self) -> String {
        lock(&self.name).clone()
    }

    /// Starts a fetch, or joins the one in flight; returns the attempt count to wait for, or
    /// `None` when there is nothing to wait for. `kid_miss` names the unknown kid that asks for
    /// the fetch: such fetches are rate-limited, and skipped when the kid arrived meanwhile.
    fn start_or_join(self: &Arc<Self>, kid_miss: Option<&str>) -> Option<u64> {
        if self.origin == Origin::Fixed {
            return None;
        }
        let mut state = lock(&self.state);
        let target = *self.attempts.borrow() + 1;
        if state.in_flight {
            return Some(target);
        }
        if let Some(kid) = kid_miss {
            if self.current.load().by_kid(kid).is_some() {
                return None;
            }
            let now = Instant::now();
            let limited = state
                .last_kid_miss_fetch
                .is_some_and(|at| now.duration_since(at) < self.policy.min_refresh_interval);
            if limited {
                return None;
            }
            state.last_kid_miss_fetch = Some(now);
            tracing::debug!(issuer.name = %self.name(), "unknown key id: refetching keys");
        }
        state.in_flight = true;
        drop(state);
        let guard = AttemptGuard {
            inner: Arc::clone(self),
            finished: false,
        };
        // The fetch runs in its own task so that a caller giving up (timeout, cancelled
        // request) does not abort it for everyone else waiting on it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Dropping the guard records the attempt as failed; nothing to wait for.
            return None;
        };
        // A fetch a check asked for (unknown kid, first keys) is a child span of that check.
        let parent = opentelemetry::Context::current();
        runtime.spawn(
            async move {
                let mut guard = guard;
                let issuer = opentelemetry::KeyValue::new("issuer.name", guard.inner.name());
                let result = crate::fetch::in_client_span(
                    JWKS_FETCH_SPAN,
                    vec![issuer],
                    guard.inner.fetch_once(),
                )
                .await;
                guard.inner.finish_attempt(result);
                guard.finished = true;
            }
            .with_context(parent),
        );
        Some(target)
    }

    /// Records the outcome of one attempt: a good set replaces the current one; a failure
    /// leaves it in place (stale-if-error) and schedules a retry.
    fn finish_attempt(&self, result: Result<Loaded, FetchError>) {
        let name = self.name();
        let mut state = lock(&self.state);
        let now = Instant::now();
        match result {
            Ok(loaded) => {
                let keys = loaded.set.len();
                self.current.store(Arc::new(loaded.set));
                if state.consecutive_failures > 0 || state.fetches_ok == 0 {
                    tracing::info!(issuer.name = %name, keys, "issuer keys loaded");
                } else {
                    tracing::debug!(issuer.name = %name, keys, "issuer keys refreshed");
                }
                state.fetched_at = Some(now);
                state.last_error = None;
                state.fetches_ok += 1;
                state.consecutive_failures = 0;
                state.next_delay = refresh_delay(loaded.max_age, &self.policy, jitter_unit());
            }
            Err(error) => {
                let text = ErrorChain(&error).to_string();
                state.fetches_failed += 1;
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.next_delay =
                    retry_delay(state.consecutive_failures, &self.policy, jitter_unit());
                let keys = self.current.load().len();
                if keys == 0 {
                    tracing::warn!(
                        issuer.name = %name, error = %text, retry_in = ?state.next_delay,
                        "cannot fetch issuer keys; tokens of this issuer are refused (503) until a fetch succeeds"
                    );
                } else {
                    tracing::warn!(
                        issuer.name = %name, error = %text, retry_in = ?state.next_delay,
                        keys, age = ?state.fetched_at.map(|at| now.duration_since(at)),
                        "cannot refresh issuer keys; keeping the last good key set"
                    );
                }
                state.last_error = Some(text);
            }
        }
        state.last_attempt_end = Some(now);
        state.in_flight = false;
        self.attempts.send_modify(|n| *n += 1);
    }

    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        match &self.client {
            HttpClient::Ready(client) => Ok(client),
            HttpClient::Broken(error) => Err(FetchError::Client(Arc::clone(error))),
            HttpClient::None => Err(FetchError::Aborted),
        }
    }

    async fn fetch_once(&self) -> Result<Loaded, FetchError> {
        let source = match &self.origin {
            Origin::Configured(source) => source,
            Origin::Fixed => return Err(FetchError::Aborted),
        };
        match source {
            KeySource::JwksUri(raw) => {
                let url = fetch::checked_url(raw, self.policy.allow_insecure_http)?;
                let (body, max_age) = self.get(&url).await?;
                self.load(&body, &fetch::redact(&url), max_age)
            }
            KeySource::Discovery => {
                let url = self.jwks_uri_via_discovery().await?;
                match self.get(&url).await {
                    Ok((body, max_age)) => self.load(&body, &fetch::redact(&url), max_age),
                    Err(error) => {
                        // The IdP may have moved its keys: look again on the next attempt.
                        lock(&self.state).discovered = None;
                        Err(error)
                    }
                }
            }
            KeySource::JwksFile(path) => {
                let body = self.read_file(path).await?;
                self.load(&body, &path.display().to_string(), None)
            }
            KeySource::SharedSecretFile(path) => self.shared_secret(path).await,
        }
    }

    fn load(
        &self,
        body: &[u8],
        origin: &str,
        max_age: Option<Duration>,
    ) -> Result<Loaded, FetchError> {
        let (set, skipped) = parse_jwks(body).map_err(|source| FetchError::Jwks {
            origin: origin.to_owned(),
            source,
        })?;
        // Warn when the skipped keys change, not on every refresh of the same document.
        let repeated = {
            let mut state = lock(&self.state);
            let repeated = state.last_skipped == skipped;
            state.last_skipped.clone_from(&skipped);
            repeated
        };
        let name = self.name();
        for key in &skipped {
            if repeated {
                tracing::debug!(
                    issuer.name = %name, jwks.kid = ?key.kid, reason = %key.reason,
                    "skipping key from JWKS"
                );
            } else {
                tracing::warn!(
                    issuer.name = %name, jwks.kid = ?key.kid, reason = %key.reason,
                    "skipping key from JWKS"
                );
            }
        }
        if set.is_empty() {
            return Err(FetchError::NoUsableKeys {
                origin: origin.to_owned(),
                skipped: skipped.len(),
            });
        }
        Ok(Loaded { set, max_age })
    }

    async fn jwks_uri_via_discovery(&self) -> Result<Url, FetchError> {
        let cached = lock(&self.state).discovered.clone();
        if let Some((url, at)) = cached
            && at.elapsed() < self.policy.max_refresh_interval
        {
            return Ok(url);
        }
        let raw = format!("{}{DISCOVERY_PATH}", self.issuer.trim_end_matches('/'));
        let url = fetch::checked_url(&raw, self.policy.allow_insecure_http)?;
        let shown = fetch::redact(&url);
        let (body, _) = self.get(&url).await?;
        let bad = |reason| FetchError::Discovery {
            url: shown.clone(),
            reason,
        };
        let document: Value = serde_json::from_slice(&body).map_err(|_| bad("not valid JSON"))?;
        let issuer = document
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `issuer` string"))?;
        if issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                url: shown,
                found: issuer.chars().take(200).collect(),
                expected: self.issuer.clone(),
            });
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `jwks_uri` string"))?;
        let jwks_url = fetch::checked_url(jwks_uri, self.policy.allow_insecure_http)?;
        lock(&self.state).discovered = Some((jwks_url.clone(), Instant::now()));
        Ok(jwks_url)
    }

    /// GET with the policy's timeout and size cap (see [`fetch::get`]).
    async fn get(&self, url: &Url) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let limits = fetch::Limits {
            timeout: self.policy.fetch_timeout,
            max_bytes: self.policy.max_document_bytes,
        };
        let fetched = fetch::get(
            self.client()?,
            url,
            "application/jwk-set+json, application/json",
            limits,
        )
        .await?;
        Ok((fetched.body, fetched.max_age))
    }

    /// Reads a whole file, bounded in size and time (a FIFO or a hung network mount must not
    /// stall the store forever).
    async fn read_file(&self, path: &Path) -> Result<Vec<u8>, FetchError> {
        let shown = path.display().to_string();
        let limit = self.policy.max_document_bytes;
        let timeout = self.policy.fetch_timeout;
        let io = |source| FetchError::Io {
            path: shown.clone(),
            source,
        };
        let read = async {
            let file = tokio::fs::File::open(path).await.map_err(io)?;
            let mut body = Vec::new();
            file.take(limit as u64 + 1)
                .read_to_end(&mut body)
                .await
                .map_err(io)?;
            if body.len() > limit {
                return Err(FetchError::FileTooLarge {
                    path: shown.clone(),
                    limit,
                });
            }
            Ok(body)
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| FetchError::FileTimeout {
                path: shown.clone(),
                timeout,
            })?
    }

    async fn shared_secret(&self, path: &Path) -> Result<Loaded, FetchError> {
        let mut secret = self.read_file(path).await?;
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        let result = if secret.len() < MIN_SHARED_SECRET_BYTES {
            Err(FetchError::SecretTooShort {
                path: path.display().to_string(),
            })
        } else {
            // `from_secret` only fails on an empty secret, excluded above.
            match jsonwebtoken::DecodingKey::from_secret(&secret) {
                Ok(decoding) => Ok(Loaded {
                    set: KeySet::new(vec![Arc::new(VerificationKey {
                        kid: None,
                        family: KeyFamily::Hmac,
                        alg: None,
                        decoding,
                    })]),
                    max_age: None,
                }),
                Err(_) => Err(FetchError::SecretTooShort {
                    path: path.display().to_string(),
                }),
            }
        };
        // Don't leave a copy of the secret in freed memory; the DecodingKey zeroizes its own.
        secret.fill(0);
        result
    }
}

/// App-lifetime owner of every issuer's `KeyStore`, shared across config reloads: a reload that
/// keeps an issuer (same issuer, source and refresh policy) keeps its store and keys.
///
/// A store is identified by (issuer, source, refresh policy), not by name: [`store_for`]
/// never drops a store, so a candidate configuration that is later rejected cannot take keys
/// away from the running one. Call [`retain`] with the issuers of the configuration that is in
/// use after every reload attempt (successful or not) to drop stores nobody configures.
///
/// [`store_for`]: KeyRegistry::store_for
/// [`retain`]: KeyRegistry::retain
#[derive(Debug)]
pub struct KeyRegistry {
    client: HttpClient,
    stores: Mutex<Vec<Arc<KeyStore>>>,
}

impl Default for KeyRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyRegistry {
    /// A registry with its own HTTP client (rustls, no redirects). Should the client fail to
    /// build, every store reports that error and has no keys (fail closed).
    pub fn new() -> Self {
        let client = match fetch::client() {
            Ok(client) => HttpClient::Ready(client),
            Err(error) => {
                tracing::error!(error = %error, "cannot build the HTTP client for JWKS fetches");
                HttpClient::Broken(Arc::new(error))
            }
        };
        Self {
            client,
            stores: Mutex::new(Vec::new()),
        }
    }

    /// The store for `issuer`, created (and its first fetch started in the background) if new.
    ///
    /// Returns the existing store when `issuer`, `source` and `refresh` are unchanged (its name
    /// is updated), so a reload keeps the keys and does not refetch. Must be called inside a
    /// tokio runtime; outside one the new store stays empty and says so in its status.
    pub fn store_for(&self, issuer: &IssuerConfig) -> Arc<KeyStore> {
        let mut stores = lock(&self.stores);
        if let Some(store) = stores.iter().find(|s| s.matches(issuer)) {
            let mut name = lock(&store.inner.name);
            if *name != issuer.name {
                name.clone_from(&issuer.name);
            }
            return Arc::clone(store);
        }
        let store = Arc::new(KeyStore::spawn(issuer, self.client.clone()));
        stores.push(Arc::clone(&store));
        store
    }

    /// Drops stores (and stops their refresh tasks) for issuers no longer configured.
    ///
    /// A configuration generation still holding a dropped store keeps its keys, without
    /// background refresh, until it is itself dropped.
    pub fn retain(&self, issuers: &[IssuerConfig]) {
        lock(&self.stores).retain(|store| {
            let keep = issuers.iter().any(|issuer| store.matches(issuer));
            if !keep {
                store.stop.cancel();
            }
            keep
        });
    }

    /// True when every configured issuer has at least one usable key (and when there is none).
    pub fn ready(&self) -> bool {
        lock(&self.stores)
            .iter()
            .all(|store| !store.inner.current.load().is_empty())
    }

    /// Waits (bounded) until every issuer's first fetch has finished, successfully or not.
    pub async fn wait_initial(&self, timeout: Duration) {
        let waits: Vec<_> = lock(&self.stores)
            .iter()
            .filter(|store| !store.initial_done())
            .map(|store| {
                let mut finished = store.inner.attempts.subscribe();
                async move {
                    let _ = finished.wait_for(|n| *n >= 1).await;
                }
            })
            .collect();
        let _ = tokio::time::timeout(timeout, futures::future::join_all(waits)).await;
    }

    pub fn status(&self) -> Vec<IssuerKeyStatus> {
        lock(&self.stores)
            .iter()
            .map(|store| store.status())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same table the configuration check runs (`config`): a URL it refuses is refused by
    /// the fetcher before any request; one it accepts is requested (nothing listens there).
    #[tokio::test]
    async fn fetcher_refuses_exactly_what_the_config_check_refuses() {
        let registry = KeyRegistry::new();
        let stores: Vec<_> = crate::fetch::URL_RULE_CASES
            .iter()
            .map(|&(url, allowed)| {
                let config = IssuerConfig {
                    name: "corp".to_owned(),
                    issuer: "https://idp.example.com".to_owned(),
                    audiences: vec!["api".to_owned()],
                    algorithms: vec![crate::authn::Algorithm::ES256],
                    clock_skew: Duration::from_secs(30),
                    claims: crate::authn::ClaimPaths::default(),
                    allowed_types: None,
                    max_lifetime: None,
                    source: KeySource::JwksUri(url.to_owned()),
                    refresh: RefreshPolicy::default(),
                    claim_headers: Vec::new(),
                    mfa_methods: crate::authn::default_mfa_methods(),
                    scope_wildcards: false,
                };
                (url, allowed, registry.store_for(&config))
            })
            .collect();
        registry.wait_initial(Duration::from_secs(10)).await;
        for (url, allowed, store) in stores {
            let status = store.status();
            let error = status.last_error.expect("nothing serves keys there");
            assert_eq!(status.keys, 0);
            assert_eq!(error.starts_with("GET "), allowed, "{url}: {error}");
            assert!(
                !error.contains("pw") && !error.contains("client=abc"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn fixed_store_answers_without_fetching() {
        let document = format!(
            r#"{{"keys": [{}]}}"#,
            include_str!("../../../tests/fixtures/jwks/ec-p256.jwk.json")
        );
        let (set, _) = parse_jwks(document.as_bytes()).expect("a JWKS document");
        let store = KeyStore::fixed("corp", "https://idp.example.com", set);
        assert_eq!(store.resolve(None).await.map(|s| s.len()), Ok(1));
        assert!(store.resolve(Some("ec-p256")).await.is_ok());
        assert_eq!(
            store.resolve(Some("other")).await.err(),
            Some(KeyError::UnknownKey)
        );
        let status = store.status();
        assert_eq!((status.name.as_str(), status.keys), ("corp", 1));
        let empty = KeyStore::fixed("none", "https://idp.example.com", KeySet::default());
        assert_eq!(empty.resolve(None).await.err(), Some(KeyError::NoKeys));
        assert_eq!(empty.resolve(Some("x")).await.err(), Some(KeyError::NoKeys));
    }
}
