//! Authentication: turns a presented credential into a verified `Identity`, or says why not.
//!
//! `credentials` finds the credential in the request (header, never the URL); `cache` keeps
//! verified tokens by hash; `jwt` verifies a JWT against an issuer's policy and keys; `jwks`
//! owns each issuer's key set (fetch, refresh, kid-miss refetch, stale-if-error).
//! This module must never log a token, and never import tonic or the generated protos.

pub mod cache;
pub mod credentials;
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
}

/// Limits and switches of the authentication stage as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnSettings {
    /// Tokens longer than this are refused before any decoding.
    pub max_token_bytes: usize,
    /// Verified-token cache capacity (entries).
    pub token_cache_entries: u64,
}

impl Default for AuthnSettings {
    fn default() -> Self {
        Self {
            max_token_bytes: 8 * 1024,
            token_cache_entries: 100_000,
        }
    }
}

// ---- Skeleton API (the authn helper replaces the bodies; signatures are the contract) ----

use std::sync::Arc;

use crate::decision::Identity;
pub use jwks::KeyRegistry;

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

/// Verifies bearer tokens for one configuration generation. Owns its verified-token cache, so
/// a reload (new issuers, audiences, algorithms) can never serve an identity verified under
/// the old rules.
#[derive(Debug)]
pub struct Authenticator {
    settings: AuthnSettings,
}

impl Authenticator {
    pub fn new(
        _issuers: &[IssuerConfig],
        _registry: &KeyRegistry,
        settings: AuthnSettings,
    ) -> Self {
        Self { settings }
    }

    /// Verifies `token` (cache first), or says why it is not acceptable.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, AuthnError> {
        if token.len() > self.settings.max_token_bytes {
            return Err(AuthnError::Invalid(TokenProblem::TooLarge));
        }
        Err(AuthnError::Unavailable(Unavailable::NoKeys))
    }
}
