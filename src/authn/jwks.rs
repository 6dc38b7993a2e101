//! Issuer key sets: parse JWKS documents into ready-to-use verification keys (built once per
//! key set, never per request), fetch them (`jwks_uri`, OIDC discovery, file), refresh them in
//! the background, refetch on an unknown `kid` (single-flight, rate-limited), and keep the last
//! good set when the IdP fails (stale-if-error).
//!
//! (Skeleton: the JWKS helper owns this file and implements the bodies; the public API below is
//! the contract `jwt.rs`, `Authenticator` and the app rely on.)

use std::sync::Arc;
use std::time::Duration;

use super::{Algorithm, IssuerConfig, IssuerKeyStatus};

/// Which algorithms a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// `kty: RSA`, at least 2048 bits: RS256/384/512, PS256/384/512.
    Rsa,
    /// `kty: EC`, `crv: P-256`: ES256.
    EcP256,
    /// `kty: EC`, `crv: P-384`: ES384.
    EcP384,
    /// `kty: OKP`, `crv: Ed25519`: EdDSA.
    Ed25519,
    /// A configured shared secret: HS256/384/512. Never from a JWKS document.
    Hmac,
}

impl KeyFamily {
    /// True when `alg` may be verified with a key of this family.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::EcP256 => alg == ES256,
            Self::EcP384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
            Self::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

/// One usable key.
pub struct VerificationKey {
    pub kid: Option<String>,
    pub family: KeyFamily,
    /// The JWK's own `alg`, when it names one: the token's `alg` must then equal it.
    pub alg: Option<Algorithm>,
    pub decoding: jsonwebtoken::DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// An immutable snapshot of an issuer's usable keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerificationKey>>,
}

impl KeySet {
    pub fn new(keys: Vec<Arc<VerificationKey>>) -> Self {
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<VerificationKey>> {
        self.keys.iter()
    }

    /// The key with this `kid`.
    pub fn by_kid(&self, kid: &str) -> Option<&Arc<VerificationKey>> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// A JWK that was not taken into the set, and why (logged as a warning, never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub kid: Option<String>,
    pub reason: String,
}

/// Parses a JWKS document. Keys with `use: enc`, unsupported `kty`/`crv`, RSA under 2048 bits or
/// unparseable material are skipped, not fatal. Errors only when the document is not a JWKS.
pub fn parse_jwks(_document: &[u8]) -> Result<(KeySet, Vec<SkippedKey>), JwksError> {
    Err(JwksError::Invalid("not implemented".to_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("invalid JWKS document: {0}")]
    Invalid(String),
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

/// One issuer's key store: the current snapshot plus its refresh machinery.
#[derive(Debug)]
pub struct KeyStore {
    current: arc_swap::ArcSwap<KeySet>,
}

impl KeyStore {
    /// The current snapshot, refetched first (single-flight, at most once per
    /// `min_refresh_interval`) when `kid` is given and unknown.
    pub async fn resolve(&self, _kid: Option<&str>) -> Result<Arc<KeySet>, KeyError> {
        let set = self.current.load_full();
        if set.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(set)
    }

    pub fn status(&self) -> IssuerKeyStatus {
        IssuerKeyStatus {
            name: String::new(),
            issuer: String::new(),
            keys: self.current.load().len(),
            age: None,
            last_error: None,
            fetches_ok: 0,
            fetches_failed: 0,
        }
    }
}

/// App-lifetime owner of every issuer's `KeyStore`, shared across config reloads: a reload that
/// keeps an issuer (same issuer, source and refresh policy) keeps its store and keys.
#[derive(Debug, Default)]
pub struct KeyRegistry {}

impl KeyRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The store for `issuer`, created (and its first fetch started in the background) if new.
    pub fn store_for(&self, _issuer: &IssuerConfig) -> Arc<KeyStore> {
        Arc::new(KeyStore {
            current: arc_swap::ArcSwap::from_pointee(KeySet::default()),
        })
    }

    /// Drops stores (and stops their refresh tasks) for issuers no longer configured.
    pub fn retain(&self, _issuers: &[IssuerConfig]) {}

    /// True when every configured issuer has at least one usable key.
    pub fn ready(&self) -> bool {
        false
    }

    /// Waits (bounded) until every issuer's first fetch has finished, successfully or not.
    pub async fn wait_initial(&self, _timeout: Duration) {}

    pub fn status(&self) -> Vec<IssuerKeyStatus> {
        Vec::new()
    }
}
