//! Issuer key sets: parse JWKS documents into ready-to-use verification keys (built once per
//! key set, never per request), fetch them (`jwks_uri`, OIDC discovery, file, shared secret),
//! refresh them in the background, refetch on an unknown `kid` (single-flight, rate-limited),
//! and keep the last good set when the IdP fails (stale-if-error).
//!
//! The lifecycle, and why:
//! - **First fetch** starts in the background when a store is created. If it fails the store has
//!   no keys, [`KeyStore::resolve`] answers [`KeyError::NoKeys`] (503, fail closed), and the
//!   store retries within about a second, backing off to `min_refresh_interval` — never the
//!   20-minute empty cache Istio users report (istio/istio#37456).
//! - **Refresh period** is the JWKS response's `Cache-Control: max-age`, clamped to
//!   [`min_refresh_interval`, `max_refresh_interval`]; without a `max-age` (and for files) it is
//!   `max_refresh_interval`. Periods get up to 10 % of jitter so a fleet of pods does not fetch
//!   in lockstep.
//! - **Failure** (network, HTTP status, oversized or invalid document, or a document with no
//!   usable key) never replaces a good set: the last good set stays in use and its age keeps
//!   growing in [`IssuerKeyStatus::age`]. Retries back off from 1 s (or `min_refresh_interval`
//!   when that is shorter), doubling up to `min_refresh_interval`, with jitter.
//! - **Unknown `kid`**: one refetch, shared by every concurrent caller (single-flight), and at
//!   most one such refetch per issuer per `min_refresh_interval`, so random kids cannot make us
//!   hammer the IdP (oathkeeper#203). Callers wait at most `fetch_timeout` for it; the fetch
//!   itself runs in its own task, so a cancelled request does not abort it for the others.
//!   Any completed attempt reschedules the background refresh from that moment.
//! - **Discovery**: `{issuer}/.well-known/openid-configuration` (trailing `/` of the issuer
//!   removed, OpenID Connect Discovery 1.0 §4); its `issuer` must equal ours exactly (§4.3). The
//!   `jwks_uri` found there is cached and re-discovered after any failed JWKS fetch and at
//!   least every `max_refresh_interval`.
//! - **Transport**: one shared `reqwest` client (rustls), no redirects (a redirect could move
//!   us to plain HTTP or another host), HTTPS only except to loopback or when
//!   `allow_insecure_http` is set, a `fetch_timeout` on every request, and a size cap enforced
//!   while the body streams in.
//!
//! This module must never log or print key material or a shared secret, never log a URL's
//! query string or credentials, never take a symmetric key from a JWKS document, and never
//! answer with keys it could not parse (fail closed).

use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use reqwest::Url;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Algorithm, IssuerConfig, IssuerKeyStatus, KeySource, RefreshPolicy};
use crate::error::ErrorChain;
use crate::fetch;

/// RSA keys below this are refused: NIST SP 800-131A disallows them for signatures.
const MIN_RSA_BITS: usize = 2048;
/// aws-lc verifies RSA signatures up to this size; larger keys could never verify anything.
const MAX_RSA_BITS: usize = 8192;
/// HS256 needs a key at least as long as its hash output (RFC 7518 §3.2).
const MIN_SHARED_SECRET_BYTES: usize = 32;
/// Key ids longer than this are not plausible and would bloat logs and status pages.
const MAX_KID_BYTES: usize = 256;
/// First retry after a failed fetch (shortened to `min_refresh_interval` when that is smaller).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// No schedule ever spins faster than this, whatever the configuration says.
const MIN_DELAY: Duration = Duration::from_millis(50);
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The text never quotes the document: a JSON error message can echo values, and a value
    /// in a JWKS may be key material.
    #[error("invalid JWKS document: {0}")]
    Invalid(String),
}

/// Parses a JWKS document. Keys with `use: enc`, unsupported `kty`/`crv`, RSA under 2048 bits or
/// unparseable material are skipped, not fatal. Errors only when the document is not a JWKS.
///
/// `oct` keys are always skipped: an HMAC secret published in a JWKS is known to everyone who
/// can read the document. A JWK carrying private members (`d`, …) is skipped too: a document
/// that leaks a private key cannot be trusted to sign anything. With duplicate `kid`s the first
/// usable key wins. The document size must be capped by the caller before parsing.
pub fn parse_jwks(document: &[u8]) -> Result<(KeySet, Vec<SkippedKey>), JwksError> {
    let root: Value = serde_json::from_slice(document).map_err(|e| {
        JwksError::Invalid(format!(
            "not valid JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(root) = root else {
        return Err(JwksError::Invalid("not a JSON object".to_owned()));
    };
    let Some(Value::Array(jwks)) = root.get("keys") else {
        return Err(JwksError::Invalid("no `keys` array".to_owned()));
    };

    let mut keys: Vec<Arc<VerificationKey>> = Vec::with_capacity(jwks.len());
    let mut skipped = Vec::new();
    for jwk in jwks {
        let kid = match jwk.get("kid") {
            Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES => Some(kid.clone()),
            _ => None,
        };
        match parse_jwk(jwk) {
            Ok(key) => {
                let duplicate = key
                    .kid
                    .as_deref()
                    .is_some_and(|kid| keys.iter().any(|known| known.kid.as_deref() == Some(kid)));
                if duplicate {
                    skipped.push(SkippedKey {
                        kid,
                        reason: Reject::DuplicateKid.to_string(),
                    });
                } else {
                    keys.push(Arc::new(key));
                }
            }
            Err(reason) => skipped.push(SkippedKey {
                kid,
                reason: reason.to_string(),
            }),
        }
    }
    Ok((KeySet::new(keys), skipped))
}

/// Why one JWK was not taken. Messages name members and identifiers, never values that could
/// be key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Reject {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("`kid` is not a string of at most {MAX_KID_BYTES} bytes")]
    BadKid,
    #[error("`use` is {0}, not `sig`")]
    NotForSignatures(String),
    #[error("`key_ops` does not allow `verify`")]
    NoVerifyOp,
    #[error("symmetric (`oct`) keys are never taken from a JWKS")]
    Symmetric,
    #[error("contains private key members; refusing a JWKS that leaks private keys")]
    PrivateMaterial,
    #[error("unsupported `kty` {0}")]
    UnsupportedKty(String),
    #[error("unsupported `crv` {0}")]
    UnsupportedCurve(String),
    #[error("unsupported `alg` {0}")]
    UnsupportedAlg(String),
    #[error("`alg` {0} does not fit the key type")]
    AlgMismatch(String),
    #[error("missing or non-string member `{0}`")]
    Missing(&'static str),
    #[error("member `{0}` is not valid base64url")]
    BadBase64(&'static str),
    #[error("RSA modulus of {0} bits is below the minimum of {MIN_RSA_BITS}")]
    RsaTooSmall(usize),
    #[error("RSA modulus of {0} bits is above the maximum of {MAX_RSA_BITS}")]
    RsaTooLarge(usize),
    #[error("RSA public exponent is not a valid odd integer")]
    RsaBadExponent,
    #[error("not a valid {0} public key")]
    BadPublicKey(&'static str),
    #[error("duplicate `kid`; the first usable key with this kid is used")]
    DuplicateKid,
}

/// Private members of RSA, EC and OKP JWKs (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

fn parse_jwk(jwk: &Value) -> Result<VerificationKey, Reject> {
    let Value::Object(jwk) = jwk else {
        return Err(Reject::NotAnObject);
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES => Some(kid.clone()),
        Some(_) => return Err(Reject::BadKid),
    };
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(other) => return Err(Reject::NotForSignatures(identifier(other))),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err(Reject::NoVerifyOp);
        }
    }
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
    if kty == "oct" {
        return Err(Reject::Symmetric);
    }
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(Reject::PrivateMaterial);
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(
            algorithm_from_jwk(name).ok_or_else(|| Reject::UnsupportedAlg(identifier_str(name)))?,
        ),
        Some(other) => return Err(Reject::UnsupportedAlg(identifier(other))),
    };

    let (family, decoding) = match kty {
        "RSA" => (KeyFamily::Rsa, rsa_key(jwk)?),
        "EC" => ec_key(jwk)?,
        "OKP" => (KeyFamily::Ed25519, okp_key(jwk)?),
        "" => return Err(Reject::Missing("kty")),
        other => return Err(Reject::UnsupportedKty(identifier_str(other))),
    };
    if let Some(alg) = alg
        && !family.fits(alg)
    {
        return Err(Reject::AlgMismatch(format!("{alg:?}")));
    }
    Ok(VerificationKey {
        kid,
        family,
        alg,
        decoding,
    })
}

/// A JWK's `alg`: a JWS algorithm name, or `Ed25519`, the fully specified name of RFC 9864 for
/// the same algorithm as `EdDSA` over an Ed25519 key.
fn algorithm_from_jwk(name: &str) -> Option<Algorithm> {
    Algorithm::from_name(name).or((name == "Ed25519").then_some(Algorithm::EdDSA))
}

/// base64url as JWKs use it (RFC 7515 §2: no padding), tolerating padding some IdPs add.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn member_bytes(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, Reject> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(Reject::Missing(name))?;
    B64URL.decode(text).map_err(|_| Reject::BadBase64(name))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn rsa_key(jwk: &Map<String, Value>) -> Result<jsonwebtoken::DecodingKey, Reject> {
    let n = member_bytes(jwk, "n")?;
    let e = member_bytes(jwk, "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = match n.first() {
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err(Reject::RsaTooSmall(bits));
    }
    if bits > MAX_RSA_BITS {
        return Err(Reject::RsaTooLarge(bits));
    }
    // e must be an odd integer > 1; anything over 64 bits is not a real RSA key.
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if !odd || e.len() > 8 || e == [1u8] {
        return Err(Reject::RsaBadExponent);
    }
    Ok(jsonwebtoken::DecodingKey::from_rsa_raw_components(n, e))
}

fn ec_key(jwk: &Map<String, Value>) -> Result<(KeyFamily, jsonwebtoken::DecodingKey), Reject> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED};
    let crv = jwk
        .get("crv")
        .and_then(Value::as_str)
        .ok_or(Reject::Missing("crv"))?;
    let (family, size, alg, label): (
        _,
        _,
        &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm,
        _,
    ) = match crv {
        "P-256" => (KeyFamily::EcP256, 32, &ECDSA_P256_SHA256_FIXED, "P-256"),
        "P-384" => (KeyFamily::EcP384, 48, &ECDSA_P384_SHA384_FIXED, "P-384"),
        other => return Err(Reject::UnsupportedCurve(identifier_str(other))),
    };
    let x = member_bytes(jwk, "x")?;
    let y = member_bytes(jwk, "y")?;
    // RFC 7518 §6.2.1.2: coordinates are the full field size, so a length check is exact.
    if x.len() != size || y.len() != size {
        return Err(Reject::BadPublicKey(label));
    }
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    // A point off the curve would only ever fail verification; reject it now, with a reason.
    aws_lc_rs::signature::ParsedPublicKey::new(alg, &point)
        .map_err(|_| Reject::BadPublicKey(label))?;
    Ok((family, jsonwebtoken::DecodingKey::from_ec_der(&point)))
}

fn okp_key(jwk: &Map<String, Value>) -> Result<jsonwebtoken::DecodingKey, Reject> {
    let crv = jwk
        .get("crv")
        .and_then(Value::as_str)
        .ok_or(Reject::Missing("crv"))?;
    if crv != "Ed25519" {
        return Err(Reject::UnsupportedCurve(identifier_str(crv)));
    }
    let x = member_bytes(jwk, "x")?;
    aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ED25519, &x)
        .map_err(|_| Reject::BadPublicKey("Ed25519"))?;
    Ok(jsonwebtoken::DecodingKey::from_ed_der(&x))
}

/// A short identifier (`kty`, `crv`, `alg`, `use` value) quoted for a skip reason; anything
/// longer or odd-looking is not echoed.
fn identifier_str(value: &str) -> String {
    let plausible = value.len() <= 32
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'));
    if plausible {
        format!("`{value}`")
    } else {
        "(not shown)".to_owned()
    }
}

fn identifier(value: &Value) -> String {
    match value {
        Value::String(s) => identifier_str(s),
        _ => "not a string".to_owned(),
    }
}

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

fn ordered_bounds(policy: &RefreshPolicy) -> (Duration, Duration) {
    let lo = policy.min_refresh_interval.max(MIN_DELAY);
    let hi = policy.max_refresh_interval.max(lo);
    (lo, hi)
}

/// A uniform value in [0, 1) for jitter. Not for anything secret.
fn jitter_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Next refresh after a successful fetch: `max-age` clamped, minus up to 10 % jitter.
fn refresh_delay(max_age: Option<Duration>, policy: &RefreshPolicy, jitter: f64) -> Duration {
    let (lo, hi) = ordered_bounds(policy);
    let period = max_age.unwrap_or(hi).clamp(lo, hi);
    period.mul_f64(1.0 - 0.1 * jitter).max(lo)
}

/// Next attempt after `failures` consecutive failures: 1 s doubling up to
/// `min_refresh_interval`, with "equal jitter" (half fixed, half random).
fn retry_delay(failures: u32, policy: &RefreshPolicy, jitter: f64) -> Duration {
    let cap = policy.min_refresh_interval.max(MIN_DELAY);
    let base = FIRST_RETRY.min(cap);
    let doublings = failures.saturating_sub(1).min(16);
    let delay = base.saturating_mul(1u32 << doublings).min(cap);
    delay.mul_f64(0.5 + 0.5 * jitter).max(MIN_DELAY)
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
        runtime.spawn(async move {
            let mut guard = guard;
            let result = guard.inner.fetch_once().await;
            guard.inner.finish_attempt(result);
            guard.finished = true;
        });
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
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let text = match name {
            "rsa-2048" => include_str!("../../tests/fixtures/jwks/rsa-2048.jwk.json"),
            "rsa-1024" => include_str!("../../tests/fixtures/jwks/rsa-1024.jwk.json"),
            "ec-p256" => include_str!("../../tests/fixtures/jwks/ec-p256.jwk.json"),
            "ec-p384" => include_str!("../../tests/fixtures/jwks/ec-p384.jwk.json"),
            "ed25519" => include_str!("../../tests/fixtures/jwks/ed25519.jwk.json"),
            other => panic!("no fixture {other}"),
        };
        serde_json::from_str(text).expect("fixture is JSON")
    }

    fn with(mut jwk: Value, changes: Value) -> Value {
        let (Value::Object(jwk_map), Value::Object(changes)) = (&mut jwk, changes) else {
            panic!("objects expected");
        };
        for (name, value) in changes {
            if value.is_null() {
                jwk_map.remove(&name);
            } else {
                jwk_map.insert(name, value);
            }
        }
        jwk
    }

    fn parse(keys: Vec<Value>) -> (KeySet, Vec<SkippedKey>) {
        let document = serde_json::to_vec(&json!({ "keys": keys })).expect("serializable");
        parse_jwks(&document).expect("a JWKS document")
    }

    fn skipped_reason(jwk: Value) -> String {
        let (set, skipped) = parse(vec![jwk]);
        assert!(set.is_empty(), "key should have been skipped");
        assert_eq!(skipped.len(), 1);
        skipped[0].reason.clone()
    }

    #[test]
    fn parses_rsa_ec_and_okp_keys() {
        let (set, skipped) = parse(vec![
            fixture("rsa-2048"),
            fixture("ec-p256"),
            fixture("ec-p384"),
            fixture("ed25519"),
        ]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.len(), 4);
        let family = |kid| set.by_kid(kid).map(|k| (k.family, k.alg));
        assert_eq!(
            family("rsa-2048"),
            Some((KeyFamily::Rsa, Some(Algorithm::RS256)))
        );
        assert_eq!(
            family("ec-p256"),
            Some((KeyFamily::EcP256, Some(Algorithm::ES256)))
        );
        assert_eq!(
            family("ec-p384"),
            Some((KeyFamily::EcP384, Some(Algorithm::ES384)))
        );
        assert_eq!(
            family("ed25519"),
            Some((KeyFamily::Ed25519, Some(Algorithm::EdDSA)))
        );
    }

    #[test]
    fn parsed_keys_verify_tokens_signed_by_their_private_keys() {
        use jsonwebtoken::{Algorithm as Jwa, EncodingKey, Header, Validation};
        let (set, _) = parse(vec![
            fixture("rsa-2048"),
            fixture("ec-p256"),
            fixture("ec-p384"),
            fixture("ed25519"),
        ]);
        let cases = [
            (
                "rsa-2048",
                Jwa::RS256,
                EncodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/jwks/rsa-2048.pem")),
            ),
            (
                "rsa-2048",
                Jwa::PS256,
                EncodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/jwks/rsa-2048.pem")),
            ),
            (
                "ec-p256",
                Jwa::ES256,
                EncodingKey::from_ec_pem(include_bytes!("../../tests/fixtures/jwks/ec-p256.pem")),
            ),
            (
                "ec-p384",
                Jwa::ES384,
                EncodingKey::from_ec_pem(include_bytes!("../../tests/fixtures/jwks/ec-p384.pem")),
            ),
            (
                "ed25519",
                Jwa::EdDSA,
                EncodingKey::from_ed_pem(include_bytes!("../../tests/fixtures/jwks/ed25519.pem")),
            ),
        ];
        for (kid, alg, encoding) in cases {
            let encoding = encoding.expect("fixture private key");
            let token =
                jsonwebtoken::encode(&Header::new(alg), &json!({"sub": "alice"}), &encoding)
                    .expect("signing works");
            let mut validation = Validation::new(alg);
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            let key = set.by_kid(kid).expect("key parsed");
            let data = jsonwebtoken::decode::<Value>(&token, &key.decoding, &validation)
                .unwrap_or_else(|e| panic!("{kid} {alg:?} verifies: {e}"));
            assert_eq!(data.claims["sub"], "alice");
            // The same key must refuse a token signed by another key.
            let other = if kid == "ec-p256" {
                "ec-p384"
            } else {
                "ec-p256"
            };
            let wrong = set.by_kid(other).expect("other key parsed");
            assert!(jsonwebtoken::decode::<Value>(&token, &wrong.decoding, &validation).is_err());
        }
    }

    #[test]
    fn skips_encryption_keys() {
        let reason = skipped_reason(with(fixture("rsa-2048"), json!({"use": "enc"})));
        assert!(reason.contains("`use`"), "{reason}");
    }

    #[test]
    fn accepts_keys_without_use() {
        let (set, skipped) = parse(vec![with(
            fixture("ec-p256"),
            json!({"use": null, "alg": null}),
        )]);
        assert!(skipped.is_empty());
        assert_eq!(set.by_kid("ec-p256").map(|k| k.alg), Some(None));
    }

    #[test]
    fn skips_keys_whose_key_ops_do_not_allow_verify() {
        skipped_reason(with(fixture("ec-p256"), json!({"key_ops": ["encrypt"]})));
        let (set, _) = parse(vec![with(
            fixture("ec-p256"),
            json!({"key_ops": ["verify"]}),
        )]);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn skips_rsa_keys_under_2048_bits() {
        let reason = skipped_reason(fixture("rsa-1024"));
        assert!(reason.contains("1024 bits"), "{reason}");
    }

    #[test]
    fn skips_rsa_keys_with_an_even_exponent() {
        skipped_reason(with(fixture("rsa-2048"), json!({"e": "AQAA"})));
    }

    #[test]
    fn never_takes_symmetric_keys_from_a_jwks() {
        let reason = skipped_reason(json!({
            "kty": "oct", "kid": "hmac", "alg": "HS256",
            "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQ"
        }));
        assert!(reason.contains("oct"), "{reason}");
    }

    #[test]
    fn skips_unsupported_key_types_and_curves() {
        skipped_reason(json!({"kty": "foo", "kid": "x"}));
        skipped_reason(json!({"kid": "no-kty", "n": "AQAB", "e": "AQAB"}));
        skipped_reason(with(
            fixture("ec-p256"),
            json!({"crv": "P-521", "alg": null}),
        ));
        skipped_reason(with(
            fixture("ed25519"),
            json!({"crv": "X25519", "alg": null}),
        ));
        skipped_reason(with(
            fixture("ed25519"),
            json!({"crv": "Ed448", "alg": null}),
        ));
    }

    #[test]
    fn skips_keys_with_unknown_or_unfitting_alg() {
        skipped_reason(with(fixture("rsa-2048"), json!({"alg": "RS1"})));
        skipped_reason(with(fixture("rsa-2048"), json!({"alg": "none"})));
        skipped_reason(with(fixture("rsa-2048"), json!({"alg": "HS256"})));
        skipped_reason(with(fixture("ec-p256"), json!({"alg": "ES384"})));
        skipped_reason(with(fixture("ed25519"), json!({"alg": "RS256"})));
    }

    #[test]
    fn accepts_the_fully_specified_ed25519_alg() {
        let (set, _) = parse(vec![with(fixture("ed25519"), json!({"alg": "Ed25519"}))]);
        assert_eq!(
            set.by_kid("ed25519").and_then(|k| k.alg),
            Some(Algorithm::EdDSA)
        );
    }

    #[test]
    fn keeps_the_first_key_of_a_duplicate_kid() {
        let (set, skipped) = parse(vec![
            with(fixture("ec-p256"), json!({"kid": "same"})),
            with(fixture("rsa-2048"), json!({"kid": "same"})),
        ]);
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.by_kid("same").map(|k| k.family),
            Some(KeyFamily::EcP256)
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].kid.as_deref(), Some("same"));
    }

    #[test]
    fn an_unusable_first_key_does_not_shadow_a_usable_one_with_the_same_kid() {
        let (set, _) = parse(vec![
            with(fixture("rsa-2048"), json!({"kid": "same", "use": "enc"})),
            with(fixture("ec-p256"), json!({"kid": "same"})),
        ]);
        assert_eq!(
            set.by_kid("same").map(|k| k.family),
            Some(KeyFamily::EcP256)
        );
    }

    #[test]
    fn skips_keys_that_carry_private_members() {
        let reason = skipped_reason(with(fixture("ec-p256"), json!({"d": "AAAA"})));
        assert!(reason.contains("private"), "{reason}");
    }

    #[test]
    fn skips_points_that_are_not_on_the_curve() {
        let jwk = fixture("ec-p256");
        let x = jwk["x"].as_str().expect("x").to_owned();
        // x reused as y: (x, x) is not on P-256 for this key.
        skipped_reason(with(jwk, json!({"y": x})));
        skipped_reason(with(fixture("ec-p256"), json!({"x": "AQAB"})));
        skipped_reason(with(fixture("ed25519"), json!({"x": "AQAB"})));
    }

    #[test]
    fn skip_reasons_never_quote_key_material() {
        let rsa = fixture("rsa-1024");
        let n = rsa["n"].as_str().expect("n").to_owned();
        let (_, skipped) = parse(vec![
            rsa,
            with(fixture("rsa-2048"), json!({"kty": n.clone()})),
            with(fixture("rsa-2048"), json!({"use": n.clone()})),
            with(fixture("rsa-2048"), json!({"alg": n.clone()})),
        ]);
        assert_eq!(skipped.len(), 4);
        for key in skipped {
            assert!(!key.reason.contains(&n[..16]), "{}", key.reason);
        }
    }

    #[test]
    fn refuses_documents_that_are_not_a_jwks() {
        for document in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"keys\": {}}",
            b"{\"keys\": \"AQAB-secret\"}",
        ] {
            let error = parse_jwks(document).expect_err("not a JWKS");
            assert!(!error.to_string().contains("AQAB-secret"), "{error}");
        }
    }

    #[test]
    fn an_empty_key_list_parses_to_an_empty_set() {
        let (set, skipped) = parse_jwks(br#"{"keys": []}"#).expect("valid JWKS");
        assert!(set.is_empty() && skipped.is_empty());
    }

    fn policy(min_ms: u64, max_ms: u64) -> RefreshPolicy {
        RefreshPolicy {
            min_refresh_interval: Duration::from_millis(min_ms),
            max_refresh_interval: Duration::from_millis(max_ms),
            ..RefreshPolicy::default()
        }
    }

    #[test]
    fn refresh_period_is_max_age_clamped_to_the_configured_bounds() {
        let p = policy(30_000, 3_600_000);
        let secs = Duration::from_secs;
        assert_eq!(refresh_delay(Some(secs(600)), &p, 0.0), secs(600));
        assert_eq!(refresh_delay(Some(secs(5)), &p, 0.0), secs(30));
        assert_eq!(
            refresh_delay(Some(secs(7 * 24 * 3600)), &p, 0.0),
            secs(3600)
        );
        assert_eq!(refresh_delay(None, &p, 0.0), secs(3600));
        // Jitter only ever shortens the period, by at most 10 %, never below the minimum.
        assert_eq!(refresh_delay(Some(secs(600)), &p, 0.999_999).as_secs(), 540);
        assert_eq!(refresh_delay(Some(secs(5)), &p, 0.999_999), secs(30));
    }

    #[test]
    fn inverted_bounds_never_panic() {
        let p = policy(10_000, 1_000);
        assert_eq!(refresh_delay(None, &p, 0.0), Duration::from_secs(10));
        let zero = policy(0, 0);
        assert!(refresh_delay(None, &zero, 0.0) >= MIN_DELAY);
        assert!(retry_delay(1, &zero, 0.0) >= MIN_DELAY);
    }

    #[test]
    fn retries_start_within_a_second_and_back_off_to_the_minimum_interval() {
        let p = policy(30_000, 3_600_000);
        assert_eq!(retry_delay(1, &p, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(1, &p, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(2, &p, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(5, &p, 1.0), Duration::from_secs(16));
        assert_eq!(retry_delay(6, &p, 1.0), Duration::from_secs(30));
        assert_eq!(retry_delay(u32::MAX, &p, 1.0), Duration::from_secs(30));
        let fast = policy(200, 2_000);
        assert_eq!(retry_delay(1, &fast, 1.0), Duration::from_millis(200));
    }

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
                    algorithms: vec![Algorithm::ES256],
                    clock_skew: Duration::from_secs(30),
                    claims: crate::authn::ClaimPaths::default(),
                    allowed_types: None,
                    max_lifetime: None,
                    source: KeySource::JwksUri(url.to_owned()),
                    refresh: RefreshPolicy::default(),
                    claim_headers: Vec::new(),
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
        let (set, _) = parse(vec![fixture("ec-p256")]);
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

    #[test]
    fn key_families_fit_only_their_algorithms() {
        use Algorithm::*;
        assert!(KeyFamily::Rsa.fits(PS512));
        assert!(!KeyFamily::Rsa.fits(HS256));
        assert!(!KeyFamily::EcP256.fits(ES384));
        assert!(!KeyFamily::Hmac.fits(RS256));
        assert!(KeyFamily::Ed25519.fits(EdDSA));
    }
}
