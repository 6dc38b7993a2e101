//! Authentication: turns a presented credential into a verified `Identity`, or says why not.
//! [`Authenticator::authenticate`] takes a [`Presented`] credential and dispatches on its kind
//! (a bearer JWT, an opaque bearer token for introspection, or an API key).
//!
//! `introspection` asks an issuer's RFC 7662 endpoint about opaque tokens (and, for routes
//! that require it, about JWTs), with a bounded single-flight answer cache; `api_keys` checks API keys (format, checksum, O(1) lookup, constant-time hash compare)
//! against the watched keys file;
//! `credentials` finds the credential in the request (header, never the URL); `cache` keeps
//! verified identities by token hash, each for as long as its `CachePolicy` says; `jwt`
//! verifies a JWT against an issuer's policy and keys; `jwks` owns each issuer's key set
//! (fetch, refresh, kid-miss refetch, stale-if-error); `attempts` limits failed
//! authentications per source address (opt-in; it gates only tokens the cache does not vouch
//! for, see [`Authenticator::lookup`]).
//! This module must never log a token, and never import tonic or the generated protos.

pub mod api_keys;
pub mod attempts;
pub mod cache;
pub mod credentials;
pub mod introspection;
pub mod jwks;
pub mod jwt;

use std::path::PathBuf;
use std::time::Duration;

use crate::decision::{TokenProblem, Unavailable};

/// Why authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("invalid credential: {}", .0.as_str())]
    Invalid(TokenProblem),
    #[error("cannot authenticate: {0:?}")]
    Unavailable(Unavailable),
}

/// JWS algorithms portcullis can verify. `none` does not exist here on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order error messages list them.
    pub const ALL: [Self; 12] = [
        Self::HS256,
        Self::HS384,
        Self::HS512,
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The JWS `alg` name (RFC 7518 §3.1, RFC 8037 §3.1).
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Parses a JWS `alg` name. Case-sensitive, as RFC 7515 §4.1.1 says; `none` (in any case)
    /// does not parse, so it can never be allowed.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// HS256/384/512: verified with a shared secret, never with a published key.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS document at this URL.
    JwksUri(String),
    /// `{issuer}/.well-known/openid-configuration`, whose `issuer` must equal ours, gives `jwks_uri`.
    Discovery,
    /// A JWKS document on disk (re-read on refresh).
    JwksFile(PathBuf),
    /// A shared HMAC secret (HS* only), read from this file.
    SharedSecretFile(PathBuf),
}

/// How keys are fetched and refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Lower clamp for `Cache-Control: max-age`, and the minimum spacing of kid-miss refetches.
    pub min_refresh_interval: Duration,
    /// Upper clamp for `max-age`; also the refresh period when the IdP sends no max-age.
    pub max_refresh_interval: Duration,
    /// Per-request timeout for discovery and JWKS fetches.
    pub fetch_timeout: Duration,
    /// Largest JWKS or discovery document accepted.
    pub max_document_bytes: usize,
    /// Allow plain `http://` to a non-loopback host (off by default).
    pub allow_insecure_http: bool,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(30),
            max_refresh_interval: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
            max_document_bytes: 512 * 1024,
            allow_insecure_http: false,
        }
    }
}

/// Where to read identity facts in the claims. Dotted paths (`realm_access.roles`) walk objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPaths {
    pub subject: String,
    /// When `None`, `scope` (space separated) then `scp` (array or string) are read.
    pub scopes: Option<String>,
    pub roles: Option<String>,
}

impl Default for ClaimPaths {
    fn default() -> Self {
        Self {
            subject: "sub".to_owned(),
            scopes: None,
            roles: Some("roles".to_owned()),
        }
    }
}

/// One trusted JWT issuer, validated and ready to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    pub name: String,
    /// Exact match on `iss`.
    pub issuer: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    pub claims: ClaimPaths,
    /// Accepted `typ` header values (e.g. `at+jwt`); `None` accepts any or none.
    pub allowed_types: Option<Vec<String>>,
    /// Longest accepted `exp - iat`.
    pub max_lifetime: Option<Duration>,
    pub source: KeySource,
    pub refresh: RefreshPolicy,
    /// Claim-to-header mappings: (dotted claim path, header name).
    pub claim_headers: Vec<(String, String)>,
    /// `amr` values that count as multi-factor authentication for `require.mfa`.
    pub mfa_methods: Vec<String>,
    /// Whether a granted `prefix:*` scope satisfies any required `prefix:...` scope.
    pub scope_wildcards: bool,
}

/// The `amr` values (RFC 8176) that show more than one factor, when the issuer names none.
pub const DEFAULT_MFA_METHODS: [&str; 5] = ["mfa", "otp", "hwk", "sms", "swk"];

/// [`DEFAULT_MFA_METHODS`] as the issuer's owned list.
pub fn default_mfa_methods() -> Vec<String> {
    DEFAULT_MFA_METHODS
        .iter()
        .map(|m| (*m).to_owned())
        .collect()
}

/// Limits and switches of the authentication stage as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnSettings {
    /// Tokens longer than this are refused before any decoding.
    pub max_token_bytes: usize,
    /// Verified-token cache capacity (entries).
    pub token_cache_entries: u64,
    /// The failed-attempt limiter (429 for a source that keeps failing); `None`, the default,
    /// turns it off (it is only safe where the source address is the real client's).
    pub failed_attempts: Option<attempts::AttemptSettings>,
}

impl Default for AuthnSettings {
    fn default() -> Self {
        Self {
            max_token_bytes: 8 * 1024,
            token_cache_entries: 100_000,
            failed_attempts: None,
        }
    }
}

use std::collections::HashMap;
use std::sync::Arc;

use crate::identity::Identity;
pub use cache::{CacheCounters, CacheStats, TokenCache};
pub use credentials::Presented;
pub use jwks::KeyRegistry;
use jwks::{KeyError, KeyStore};
pub use jwt::{CryptoProviderConflict, install_crypto_provider};

/// Per-issuer key-set state for `/status`, `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKeyStatus {
    pub name: String,
    pub issuer: String,
    pub keys: usize,
    /// Time since the key set in use was fetched; `None` when there never was one.
    pub age: Option<Duration>,
    /// The last fetch error, if the last fetch failed.
    pub last_error: Option<String>,
    /// Fetch attempts so far, by result (for `portcullis_jwks_fetches_total`).
    pub fetches_ok: u64,
    pub fetches_failed: u64,
}

/// Verifies presented credentials for one configuration generation. Owns its verified-token
/// cache, so a reload (new issuers, audiences, algorithms) can never serve an identity verified
/// under the old rules; only the cache's hit and miss counters are the app's, shared across
/// generations.
///
/// Revocation (not implemented yet) is deliberately not consulted here: it belongs in the
/// engine after `authenticate`, on every request, cache hits included, using the identity's
/// `token_id`, `subject`, `issued_at` and `key_id`.
#[derive(Debug)]
pub struct Authenticator {
    settings: AuthnSettings,
    /// In configuration order, for `issuers()` and status.
    issuers: Vec<IssuerEntry>,
    /// `iss` → index into `issuers`.
    by_iss: HashMap<String, usize>,
    cache: TokenCache,
    /// The keys store and the accepted environment, when `api_keys` is configured.
    api_keys: Option<(Arc<api_keys::ApiKeyStore>, api_keys::KeyEnv)>,
    /// One per `introspection` entry (empty without one).
    introspectors: Vec<introspection::Introspector>,
    /// Index into `introspectors` of the entry that takes opaque bearer tokens.
    opaque: Option<usize>,
}

#[derive(Debug)]
struct IssuerEntry {
    config: IssuerConfig,
    keys: Arc<KeyStore>,
}

/// What the verified-token cache knows of a presented credential ([`Authenticator::lookup`]).
pub enum Lookup<'a> {
    /// Verified before, and still good (not expired, its key still published), or an API key
    /// proven on the spot (its check costs less than a cache look-up): no work left.
    Cached(Arc<Identity>),
    /// Not proven valid yet: [`Pending::verify`] does the parsing and signature work.
    Unverified(Pending<'a>),
}

/// A credential the cache does not vouch for, waiting to be verified.
#[must_use = "a pending credential is neither accepted nor refused until it is verified"]
pub struct Pending<'a> {
    authn: &'a Authenticator,
    credential: Presented<'a>,
    work: Work,
    now: u64,
}

/// What verifying a pending credential takes.
enum Work {
    /// Verification under this cache key.
    Verify(cache::TokenHash),
    /// Over the size cap: refused without being hashed.
    TooLarge,
    /// Already refused by a check that needs no further work (an API key).
    Refused(AuthnError),
}

impl std::fmt::Debug for Lookup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a cached identity's claims, as `TokenCache` does not.
        f.write_str(match self {
            Self::Cached(_) => "Lookup::Cached",
            Self::Unverified(_) => "Lookup::Unverified",
        })
    }
}

impl std::fmt::Debug for Pending<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Pending<'_> {
    /// Verifies the credential by its kind (and caches the identity as its policy allows), or
    /// says why not.
    pub async fn verify(self) -> Result<Arc<Identity>, AuthnError> {
        let hash = match self.work {
            Work::Verify(hash) => hash,
            Work::TooLarge => return Err(AuthnError::Invalid(TokenProblem::TooLarge)),
            Work::Refused(error) => return Err(error),
        };
        match self.credential {
            // A bearer token that is not JWT-shaped goes to the introspection entry that takes
            // opaque tokens; without one it fails to parse as a JWT (malformed), as before.
            Presented::Bearer(token) => match self.authn.opaque_introspector(token) {
                Some(introspector) => {
                    let identity = introspector.introspect(token, hash).await?;
                    // Served from the token cache until `CachePolicy::Until` (the earlier of
                    // `exp` and the entry's `cache_ttl`).
                    self.authn.cache.insert(hash, identity.clone(), self.now);
                    Ok(identity)
                }
                None => self.authn.verify_jwt(token, hash, self.now).await,
            },
            // Checked in `lookup` already: never pending with work left.
            Presented::ApiKey(_) => Err(AuthnError::Invalid(TokenProblem::Malformed)),
        }
    }
}

impl Authenticator {
    /// Builds the authenticator for one configuration generation. Key stores come from the
    /// app-lifetime `registry` (a reload keeps the keys of the issuers it keeps); the token
    /// cache is new, counting into the app-lifetime `counters`. When two issuers share one
    /// `iss`, the first wins (config validation refuses that case).
    pub fn new(
        issuers: &[IssuerConfig],
        registry: &KeyRegistry,
        settings: AuthnSettings,
        counters: Arc<CacheCounters>,
    ) -> Self {
        Self::build(
            issuers
                .iter()
                .map(|issuer| IssuerEntry {
                    config: issuer.clone(),
                    keys: registry.store_for(issuer),
                })
                .collect(),
            settings,
            counters,
        )
    }

    fn build(
        issuers: Vec<IssuerEntry>,
        settings: AuthnSettings,
        counters: Arc<CacheCounters>,
    ) -> Self {
        let mut by_iss = HashMap::with_capacity(issuers.len());
        for (index, entry) in issuers.iter().enumerate() {
            by_iss.entry(entry.config.issuer.clone()).or_insert(index);
        }
        Self {
            cache: TokenCache::with_counters(settings.token_cache_entries, counters),
            settings,
            issuers,
            by_iss,
            api_keys: None,
            introspectors: Vec::new(),
            opaque: None,
        }
    }

    /// Introspects tokens as `configs` say: each entry answers for the issuer it names (an
    /// entry naming no issuer of this generation is skipped; config validation refuses it).
    pub fn accept_introspection(&mut self, configs: &[introspection::IntrospectionConfig]) {
        for config in configs {
            let Some(entry) = self
                .issuers
                .iter()
                .find(|entry| entry.config.name == config.issuer)
            else {
                continue;
            };
            let introspector = introspection::Introspector::new(
                config.clone(),
                &entry.config,
                self.settings.token_cache_entries,
            );
            if introspector.takes_opaque_tokens() && self.opaque.is_none() {
                self.opaque = Some(self.introspectors.len());
            }
            self.introspectors.push(introspector);
        }
    }

    /// The introspector an opaque `token` goes to; `None` for a JWT-shaped token or without
    /// an entry that takes opaque tokens.
    fn opaque_introspector(&self, token: &str) -> Option<&introspection::Introspector> {
        let introspector = self
            .opaque
            .and_then(|index| self.introspectors.get(index))?;
        (!jwt::looks_like_jwt(token)).then_some(introspector)
    }

    /// For a route with `require.introspect`: asks the issuer's introspection endpoint whether
    /// the `credential` that authenticated as `identity` is still active (a token revoked at the
    /// provider is refused once the cached answer expires). An identity that came from
    /// introspection already passed; an API key, or a JWT of an issuer without an
    /// `introspection` entry, cannot be introspected and is refused.
    pub async fn introspect(
        &self,
        credential: Presented<'_>,
        identity: &Identity,
    ) -> Result<(), AuthnError> {
        if identity.method == crate::identity::AuthMethod::Introspection {
            return Ok(());
        }
        let not_introspectable = AuthnError::Invalid(TokenProblem::NotIntrospectable);
        let Presented::Bearer(token) = credential else {
            return Err(not_introspectable);
        };
        let introspector = self
            .introspectors
            .iter()
            .find(|introspector| introspector.issuer() == identity.issuer)
            .ok_or(not_introspectable)?;
        introspector
            .introspect(token, cache::token_hash(token))
            .await
            .map(|_| ())
    }

    /// Accepts API keys of `env` from `store` as well.
    pub fn accept_api_keys(&mut self, store: Arc<api_keys::ApiKeyStore>, env: api_keys::KeyEnv) {
        self.api_keys = Some((store, env));
    }

    /// Verifies `credential` (cache first), or says why it is not acceptable. Size cap →
    /// cache → verification by kind; for a bearer JWT: parse → issuer by `iss` → policy and
    /// claims → key (kid-miss refetch) → signature.
    pub async fn authenticate(
        &self,
        credential: Presented<'_>,
    ) -> Result<Arc<Identity>, AuthnError> {
        match self.lookup(credential) {
            Lookup::Cached(identity) => Ok(identity),
            Lookup::Unverified(pending) => pending.verify().await,
        }
    }

    /// The first half of [`authenticate`](Self::authenticate): the identity already verified
    /// for `credential` when the cache holds it, else the verification still to do. Callers
    /// that gate verification work (the failed-attempt limiter) look here first, so a
    /// credential already proven valid is served without passing the gate; the cache is looked
    /// up once. An oversized credential is never looked up: its verification refuses it at
    /// once.
    pub fn lookup<'a>(&'a self, credential: Presented<'a>) -> Lookup<'a> {
        let secret = credential.secret();
        let now = cache::unix_now();
        let unverified = |work| {
            Lookup::Unverified(Pending {
                authn: self,
                credential,
                work,
                now,
            })
        };
        if let Presented::ApiKey(key) = credential {
            // Format, checksum, O(1) lookup and one SHA-256: cheaper than hashing for the
            // cache, so API keys never enter it (docs/decisions.md).
            let checked = match &self.api_keys {
                Some((store, env)) => store.check(key, *env, now),
                None => Err(TokenProblem::Malformed),
            };
            return match checked {
                Ok(identity) => Lookup::Cached(identity),
                Err(problem) => unverified(Work::Refused(AuthnError::Invalid(problem))),
            };
        }
        // The cache is keyed by the credential's bytes.
        if secret.len() > self.settings.max_token_bytes {
            return unverified(Work::TooLarge);
        }
        let hash = cache::token_hash(secret);
        match self.cache.get(&hash, now, |issuer, kid| {
            self.key_still_published(issuer, kid)
        }) {
            Some(identity) => Lookup::Cached(identity),
            None => unverified(Work::Verify(hash)),
        }
    }

    /// Parse → issuer by `iss` → policy and claims → key (kid-miss refetch) → signature; a
    /// verified identity is cached under `hash` as its policy allows.
    async fn verify_jwt(
        &self,
        token: &str,
        hash: cache::TokenHash,
        now: u64,
    ) -> Result<Arc<Identity>, AuthnError> {
        let unverified =
            jwt::parse(token, self.settings.max_token_bytes).map_err(AuthnError::Invalid)?;
        let iss = unverified
            .issuer()
            .ok_or(AuthnError::Invalid(TokenProblem::MissingClaim))?;
        let entry = self
            .by_iss
            .get(iss)
            .and_then(|&index| self.issuers.get(index))
            .ok_or(AuthnError::Invalid(TokenProblem::UnknownIssuer))?;
        let checked = unverified
            .check(&entry.config, now)
            .map_err(AuthnError::Invalid)?;
        let keys = entry
            .keys
            .resolve(checked.kid())
            .await
            .map_err(|error| match error {
                KeyError::NoKeys => AuthnError::Unavailable(Unavailable::NoKeys),
                KeyError::UnknownKey => AuthnError::Invalid(TokenProblem::UnknownKey),
            })?;
        let identity = Arc::new(checked.verify(&keys).map_err(AuthnError::Invalid)?);
        // Key-bound when the token names a published key, uncacheable otherwise (no kid, a
        // shared secret): the cache keeps only what it can serve.
        self.cache.insert(hash, identity.clone(), now);
        Ok(identity)
    }

    /// A key-bound cached identity stays good only while its issuer publishes the key that
    /// signed its token: after a rotation retires a key, its tokens are verified afresh (and
    /// refused).
    fn key_still_published(&self, issuer: &str, kid: &str) -> bool {
        self.by_iss
            .get(issuer)
            .and_then(|&index| self.issuers.get(index))
            .is_some_and(|entry| entry.keys.publishes(kid))
    }

    /// Verified-token cache hits and misses of its counters (the process-lifetime ones the app
    /// hands to every generation), and the size of this generation's cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The issuers of this generation, in configuration order.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.issuers.iter().map(|entry| &entry.config)
    }

    /// True when every issuer has at least one usable key (vacuously true with no issuers).
    pub fn ready(&self) -> bool {
        self.issuers
            .iter()
            .all(|entry| entry.keys.status().keys > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jsonwebtoken::Algorithm as J;
    use serde_json::json;

    use super::jwt::testing::*;
    use super::*;

    impl Authenticator {
        /// An authenticator over fixed key sets (no registry, no fetching).
        fn with_fixed_keys(
            issuers: Vec<(IssuerConfig, jwks::KeySet)>,
            settings: AuthnSettings,
        ) -> Self {
            Self::build(
                issuers
                    .into_iter()
                    .map(|(config, set)| IssuerEntry {
                        keys: Arc::new(KeyStore::fixed(&config.name, &config.issuer, set)),
                        config,
                    })
                    .collect(),
                settings,
                Arc::default(),
            )
        }
    }

    fn authenticator() -> Authenticator {
        install_crypto_provider().expect("aws-lc-rs provider");
        Authenticator::with_fixed_keys(vec![(issuer(), key_set())], AuthnSettings::default())
    }

    /// Valid claims at the real current time.
    fn live_claims() -> serde_json::Value {
        let now = cache::unix_now();
        let mut claims = claims();
        claims["iat"] = json!(now - 10);
        claims["exp"] = json!(now + 600);
        claims
    }

    #[tokio::test]
    async fn authenticates_a_valid_token() {
        let identity = authenticator()
            .authenticate(Presented::Bearer(&rs256(&live_claims())))
            .await
            .expect("valid token");
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.scopes, ["read:documents", "write:documents"]);
    }

    #[tokio::test]
    async fn cached_token_is_refused_once_its_key_is_withdrawn() {
        install_crypto_provider().expect("aws-lc-rs provider");
        let dir = tempfile::tempdir().expect("tempdir");
        let jwks_path = dir.path().join("jwks.json");
        let jwk: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/jwks/rsa-2048.jwk.json"))
                .expect("fixture jwk");
        std::fs::write(&jwks_path, json!({"keys": [jwk]}).to_string()).expect("write jwks");
        let mut config = issuer();
        config.source = KeySource::JwksFile(jwks_path.clone());
        config.refresh.min_refresh_interval = std::time::Duration::from_millis(50);
        config.refresh.max_refresh_interval = std::time::Duration::from_millis(100);
        let registry = KeyRegistry::new();
        let authn = Authenticator::new(
            &[config],
            &registry,
            AuthnSettings::default(),
            Arc::default(),
        );
        registry
            .wait_initial(std::time::Duration::from_secs(5))
            .await;

        let signer = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
            "../../tests/fixtures/jwks/rsa-2048.pem"
        ))
        .expect("fixture key");
        let token = sign(J::RS256, "rsa-2048", &signer, &live_claims());
        authn
            .authenticate(Presented::Bearer(&token))
            .await
            .expect("valid while published");
        authn
            .authenticate(Presented::Bearer(&token))
            .await
            .expect("cache hit");
        assert_eq!(authn.cache_stats().hits, 1);

        // The IdP withdraws the key (another key stays, so the set is not empty).
        let other: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/jwks/ec-p256.jwk.json"))
                .expect("fixture jwk");
        std::fs::write(&jwks_path, json!({"keys": [other]}).to_string()).expect("rewrite jwks");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match authn.authenticate(Presented::Bearer(&token)).await {
                Err(AuthnError::Invalid(TokenProblem::UnknownKey)) => break,
                Ok(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => panic!("a withdrawn key's token must be refused, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn cache_hit_returns_the_same_identity_without_reverifying() {
        let authn = authenticator();
        let token = sign(J::ES256, "ec256", &ec256_signer(), &live_claims());
        let first = authn
            .authenticate(Presented::Bearer(&token))
            .await
            .expect("first");
        let second = authn
            .authenticate(Presented::Bearer(&token))
            .await
            .expect("second");
        // A re-verification would build a new identity; the cache hands back the same one.
        assert!(Arc::ptr_eq(&first, &second));
        let stats = authn.cache_stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[tokio::test]
    async fn lookup_serves_a_verified_token_from_the_cache_and_defers_the_rest() {
        let authn = authenticator();
        let token = rs256(&live_claims());
        // Not verified yet: a pending verification, after exactly one cache look-up.
        let Lookup::Unverified(pending) = authn.lookup(Presented::Bearer(&token)) else {
            panic!("a token never verified cannot be cached");
        };
        assert_eq!(authn.cache_stats().misses, 1);
        // Dropping it unverified (a limited source) verifies and caches nothing.
        drop(pending);
        let Lookup::Unverified(pending) = authn.lookup(Presented::Bearer(&token)) else {
            panic!("an unverified token was cached");
        };
        let verified = pending.verify().await.expect("valid token");
        let Lookup::Cached(cached) = authn.lookup(Presented::Bearer(&token)) else {
            panic!("a verified token is served from the cache");
        };
        assert!(Arc::ptr_eq(&verified, &cached));
        let stats = authn.cache_stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));

        // An oversized token is refused by its verification without touching the cache.
        let huge = "a".repeat(64 * 1024);
        let Lookup::Unverified(pending) = authn.lookup(Presented::Bearer(&huge)) else {
            panic!("oversized");
        };
        assert_eq!(
            pending.verify().await.expect_err("size"),
            AuthnError::Invalid(TokenProblem::TooLarge)
        );
        let after = authn.cache_stats();
        assert_eq!((after.hits, after.misses), (stats.hits, stats.misses));
    }

    #[tokio::test]
    async fn verifies_a_token_without_a_published_key_afresh_every_time() {
        install_crypto_provider().expect("provider");
        let secret = b"a-long-shared-secret-of-at-least-32-bytes";
        let mut shared = issuer();
        shared.algorithms = vec![Algorithm::HS256];
        shared.source = KeySource::SharedSecretFile("/etc/portcullis/secret".into());
        let keys = jwks::KeySet::new(vec![Arc::new(jwks::VerificationKey {
            kid: None,
            family: jwks::KeyFamily::Hmac,
            alg: None,
            decoding: jsonwebtoken::DecodingKey::from_secret(secret).expect("secret"),
        })]);
        let authn = Authenticator::with_fixed_keys(vec![(shared, keys)], AuthnSettings::default());
        let signer = jsonwebtoken::EncodingKey::from_secret(secret).expect("secret");
        let token = sign_raw(&json!({"alg": "HS256"}), &live_claims(), &signer, J::HS256);
        let first = authn.authenticate(Presented::Bearer(&token)).await;
        let second = authn.authenticate(Presented::Bearer(&token)).await;
        let (first, second) = (first.expect("valid"), second.expect("valid"));
        // No kid, a shared secret: no key to follow, so uncacheable and verified (and built)
        // afresh each time.
        assert_eq!(
            first.cache_policy,
            crate::identity::CachePolicy::Uncacheable
        );
        assert!(!Arc::ptr_eq(&first, &second));
        let stats = authn.cache_stats();
        assert_eq!((stats.hits, stats.misses), (0, 2));
    }

    #[tokio::test]
    async fn never_caches_a_denied_token() {
        let authn = authenticator();
        let mut expired = live_claims();
        expired["exp"] = json!(cache::unix_now() - 3600);
        let token = rs256(&expired);
        for _ in 0..2 {
            assert_eq!(
                authn
                    .authenticate(Presented::Bearer(&token))
                    .await
                    .expect_err("expired"),
                AuthnError::Invalid(TokenProblem::Expired)
            );
        }
        assert_eq!(authn.cache_stats().hits, 0);
    }

    #[tokio::test]
    async fn denies_unknown_issuer() {
        let mut foreign = live_claims();
        foreign["iss"] = json!("https://evil.example.com");
        assert_eq!(
            authenticator()
                .authenticate(Presented::Bearer(&rs256(&foreign)))
                .await
                .expect_err("iss"),
            AuthnError::Invalid(TokenProblem::UnknownIssuer)
        );
    }

    #[tokio::test]
    async fn picks_the_issuer_by_iss() {
        install_crypto_provider().expect("provider");
        let mut second = issuer();
        second.name = "partner".to_owned();
        second.issuer = "https://partner.example.com".to_owned();
        second.audiences = vec!["partner-api".to_owned()];
        let authn = Authenticator::with_fixed_keys(
            vec![(issuer(), jwks::KeySet::default()), (second, key_set())],
            AuthnSettings::default(),
        );
        let mut claims = live_claims();
        claims["iss"] = json!("https://partner.example.com");
        claims["aud"] = json!("partner-api");
        let identity = authn
            .authenticate(Presented::Bearer(&rs256(&claims)))
            .await
            .expect("partner");
        assert_eq!(identity.issuer, "https://partner.example.com");
        assert_eq!(authn.issuers().count(), 2);
        assert!(!authn.ready(), "the first issuer has no keys");
    }

    #[tokio::test]
    async fn fails_closed_when_the_issuer_has_no_keys() {
        install_crypto_provider().expect("provider");
        let authn = Authenticator::with_fixed_keys(
            vec![(issuer(), jwks::KeySet::default())],
            AuthnSettings::default(),
        );
        assert_eq!(
            authn
                .authenticate(Presented::Bearer(&rs256(&live_claims())))
                .await
                .expect_err("no keys"),
            AuthnError::Unavailable(Unavailable::NoKeys)
        );
    }

    #[tokio::test]
    async fn refuses_oversized_tokens_before_anything_else() {
        let authn = authenticator();
        let huge = "a".repeat(64 * 1024);
        assert_eq!(
            authn
                .authenticate(Presented::Bearer(&huge))
                .await
                .expect_err("size"),
            AuthnError::Invalid(TokenProblem::TooLarge)
        );
        assert_eq!(
            authn.cache_stats(),
            CacheStats::default(),
            "cache not consulted"
        );
    }

    #[tokio::test]
    async fn each_generation_has_its_own_cache() {
        let old = authenticator();
        let token = rs256(&live_claims());
        old.authenticate(Presented::Bearer(&token))
            .await
            .expect("old generation");
        // The new rules no longer accept this audience: the old cache must not answer.
        let mut stricter = issuer();
        stricter.audiences = vec!["billing-api".to_owned()];
        let new =
            Authenticator::with_fixed_keys(vec![(stricter, key_set())], AuthnSettings::default());
        assert_eq!(
            new.authenticate(Presented::Bearer(&token))
                .await
                .expect_err("new rules"),
            AuthnError::Invalid(TokenProblem::WrongAudience)
        );
    }

    #[tokio::test]
    async fn survives_every_bad_token_without_panicking() {
        let authn = authenticator();
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let bad = [
            String::new(),
            ".".to_owned(),
            "..".to_owned(),
            "a.b.c".to_owned(),
            raw(&json!({"alg": "none"}), &live_claims(), b""),
            raw(&json!({"alg": "RS256"}), &json!([1, 2]), b"x"),
            format!("e30.{}.e30", b64url(nested.as_bytes())),
            "\u{0}\u{1}.\u{2}.\u{3}".to_owned(),
            "é.é.é".to_owned(),
        ];
        for token in bad {
            assert!(authn.authenticate(Presented::Bearer(&token)).await.is_err());
        }
    }
}
