//! JWT verification: one compact JWS, checked against one issuer's policy and key set, turned
//! into an [`Identity`].
//!
//! The work is split in three typed steps so that nothing from an unverified token can reach an
//! `Identity` by accident:
//! 1. [`parse`] bounds the size, splits and strictly decodes the three segments once, refuses
//!    `none`, key-carrying headers (`jwk`, `jku`, `x5u`, `x5c`) and unknown `crit` extensions,
//!    and exposes only `iss` and `kid`, to choose the issuer and the key;
//! 2. [`Unverified::check`] applies the issuer's policy: algorithm allow-list, `typ` allow-list,
//!    time claims, `iss`, `aud`, maximum lifetime (cheap checks first, so a garbage token never
//!    costs a key-set refetch or a signature verification);
//! 3. [`Checked::verify`] picks the key, verifies the signature with jsonwebtoken's crypto
//!    provider (aws-lc-rs) and only then maps the claims to an `Identity`.
//!
//! This module must never fetch anything a token points at, never log or echo a token, a claim
//! value or a key, and never panic on hostile input.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::{KeySet, VerificationKey};
use super::{Algorithm, IssuerConfig, KeySource};
use crate::decision::TokenProblem;
use crate::identity::{AuthMethod, CachePolicy, Identity, UserAuthentication};

/// Largest accepted encoded JOSE header. Real headers are well under 300 bytes; the bound keeps
/// a hostile header from costing more than a glance.
pub const MAX_HEADER_BYTES: usize = 2048;

/// Largest claim value copied into a configured header; longer values are dropped.
pub const MAX_CLAIM_HEADER_BYTES: usize = 4096;

/// Another JWT crypto provider was installed in this process before ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a different jsonwebtoken crypto provider is already installed in this process")]
pub struct CryptoProviderConflict;

/// Installs jsonwebtoken's aws-lc-rs crypto provider as the process default. Idempotent: calling
/// it again (or after jsonwebtoken picked the same provider itself) is `Ok`. The app calls it
/// once at start, tests call it freely.
pub fn install_crypto_provider() -> Result<(), CryptoProviderConflict> {
    let ours = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    if CryptoProvider::install_default(ours).is_ok() {
        return Ok(());
    }
    match CryptoProvider::try_get_default() {
        Some(installed) if std::ptr::eq(installed, ours) => Ok(()),
        _ => Err(CryptoProviderConflict),
    }
}

fn jsonwebtoken_algorithm(alg: Algorithm) -> jsonwebtoken::Algorithm {
    use jsonwebtoken::Algorithm as J;
    match alg {
        Algorithm::HS256 => J::HS256,
        Algorithm::HS384 => J::HS384,
        Algorithm::HS512 => J::HS512,
        Algorithm::RS256 => J::RS256,
        Algorithm::RS384 => J::RS384,
        Algorithm::RS512 => J::RS512,
        Algorithm::PS256 => J::PS256,
        Algorithm::PS384 => J::PS384,
        Algorithm::PS512 => J::PS512,
        Algorithm::ES256 => J::ES256,
        Algorithm::ES384 => J::ES384,
        Algorithm::EdDSA => J::EdDSA,
    }
}

/// The JOSE header fields we act on. Unknown fields are ignored (RFC 7515 §4), except the
/// key-carrying ones, which are refused outright, and `crit` (§4.1.11).
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow)]
    crit: Option<Vec<Cow<'a, str>>>,
    // A token must never choose its own key (RFC 8725 §3.10): present at all means refused,
    // whatever the value, so these only record presence.
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// Strict base64url without padding (RFC 7515 §2): no `+`, `/`, `=`, no non-zero trailing bits.
fn b64(segment: &str) -> Result<Vec<u8>, TokenProblem> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenProblem::Malformed)
}

/// True when the JSON text is an object (a JSON array must not pass as a header or claim set).
fn starts_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A token that decoded cleanly and passed the issuer-independent header checks. Nothing in it
/// is trusted: only [`Unverified::issuer`] and [`Unverified::kid`] may be read, to choose what
/// to verify it with.
pub struct Unverified<'t> {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
    /// `header.payload`, the JWS signing input.
    signing_input: &'t str,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

impl std::fmt::Debug for Unverified<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print claims, the signing input or the signature.
        f.debug_struct("Unverified")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Decodes `token` once: size bound, three segments, strict base64url, bounded JSON objects.
/// Refuses `none`, embedded or referenced keys and unknown critical extensions.
pub fn parse(token: &str, max_token_bytes: usize) -> Result<Unverified<'_>, TokenProblem> {
    if token.len() > max_token_bytes {
        return Err(TokenProblem::TooLarge);
    }
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenProblem::Malformed);
    };
    if header_b64.len() > MAX_HEADER_BYTES {
        return Err(TokenProblem::TooLarge);
    }
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];

    let header_json = b64(header_b64)?;
    if !starts_object(&header_json) {
        return Err(TokenProblem::Malformed);
    }
    let header: RawHeader<'_> =
        serde_json::from_slice(&header_json).map_err(|_| TokenProblem::Malformed)?;
    if header.jwk || header.jku || header.x5u || header.x5c {
        return Err(TokenProblem::ForbiddenHeader);
    }
    if let Some(crit) = &header.crit {
        // RFC 7515 §4.1.11: an empty list is invalid; we implement no extension, so any name
        // listed is one we would have to understand and do not.
        return Err(if crit.is_empty() {
            TokenProblem::Malformed
        } else {
            TokenProblem::ForbiddenHeader
        });
    }
    let Some(alg_name) = header.alg.as_deref() else {
        return Err(TokenProblem::Malformed);
    };
    let alg = Algorithm::from_name(alg_name).ok_or(TokenProblem::UnsupportedAlgorithm)?;

    let payload_json = b64(payload_b64)?;
    if !starts_object(&payload_json) {
        return Err(TokenProblem::Malformed);
    }
    // serde_json's recursion limit (128) turns absurd nesting into an error here, not a stack
    // overflow.
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload_json).map_err(|_| TokenProblem::Malformed)?;
    let signature = b64(signature_b64)?;

    Ok(Unverified {
        alg,
        kid: header.kid.map(Cow::into_owned),
        typ: header.typ.map(Cow::into_owned),
        signing_input,
        signature,
        claims,
    })
}

/// Whether `token` has the shape of a JWS compact serialization: three dot-separated parts,
/// the first a base64url JSON object. A bearer token of any other shape is opaque and, when an
/// `introspection` entry takes opaque tokens, is sent there instead of being parsed.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    b64(header).is_ok_and(|json| starts_object(&json))
}

impl<'t> Unverified<'t> {
    /// The unverified `iss`, only to choose the issuer to verify with.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The unverified `kid`, only to choose the key to verify with.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Applies `issuer`'s policy at `now` (Unix seconds): algorithm and `typ` allow-lists, then
    /// the registered claims. A rejection here trusts nothing; an acceptance still needs
    /// [`Checked::verify`].
    pub fn check<'i>(
        self,
        issuer: &'i IssuerConfig,
        now: u64,
    ) -> Result<Checked<'t, 'i>, TokenProblem> {
        check_algorithm(self.alg, issuer)?;
        check_type(self.typ.as_deref(), issuer)?;
        check_claims(&self.claims, issuer, now)?;
        Ok(Checked {
            token: self,
            issuer,
        })
    }
}

fn check_algorithm(alg: Algorithm, issuer: &IssuerConfig) -> Result<(), TokenProblem> {
    if !issuer.algorithms.contains(&alg) {
        return Err(TokenProblem::UnsupportedAlgorithm);
    }
    // HS* with a key published in a JWKS is the classic key-confusion attack (the public key
    // used as an HMAC secret): only a configured shared secret may verify HMAC tokens.
    if alg.is_hmac() && !matches!(issuer.source, KeySource::SharedSecretFile(_)) {
        return Err(TokenProblem::UnsupportedAlgorithm);
    }
    Ok(())
}

/// RFC 8725 §3.11 / RFC 9068 §2.1: `typ` compared case-insensitively, `application/` optional.
fn check_type(typ: Option<&str>, issuer: &IssuerConfig) -> Result<(), TokenProblem> {
    let Some(allowed) = &issuer.allowed_types else {
        return Ok(());
    };
    let Some(typ) = typ else {
        return Err(TokenProblem::WrongType);
    };
    let typ = media_subtype(typ);
    if allowed
        .iter()
        .any(|a| media_subtype(a).eq_ignore_ascii_case(typ))
    {
        Ok(())
    } else {
        Err(TokenProblem::WrongType)
    }
}

fn media_subtype(typ: &str) -> &str {
    const PREFIX: &str = "application/";
    match typ.get(..PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(PREFIX) => &typ[PREFIX.len()..],
        _ => typ,
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative JSON number, fractions truncated.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

/// Reads an optional NumericDate claim: absent (or null) is `None`, anything but a date is
/// malformed.
fn date_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenProblem> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => numeric_date(value).map(Some).ok_or(TokenProblem::Malformed),
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    issuer: &IssuerConfig,
    now: u64,
) -> Result<(), TokenProblem> {
    let skew = issuer.clock_skew.as_secs();
    let exp = date_claim(claims, "exp")?.ok_or(TokenProblem::MissingClaim)?;
    if exp.saturating_add(skew) <= now {
        return Err(TokenProblem::Expired);
    }
    if let Some(nbf) = date_claim(claims, "nbf")?
        && nbf > now.saturating_add(skew)
    {
        return Err(TokenProblem::NotYetValid);
    }
    let iat = date_claim(claims, "iat")?;
    if let Some(iat) = iat
        && iat > now.saturating_add(skew)
    {
        return Err(TokenProblem::IssuedInFuture);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
        return Err(TokenProblem::UnknownIssuer);
    }
    check_audience(claims.get("aud"), &issuer.audiences)?;
    if let Some(max) = issuer.max_lifetime {
        let start = iat.unwrap_or(now);
        if exp.saturating_sub(start) > max.as_secs() {
            return Err(TokenProblem::LifetimeTooLong);
        }
    }
    Ok(())
}

/// RFC 7519 §4.1.3: `aud` is a string or an array of strings; one of them must be ours.
pub(crate) fn check_audience(
    aud: Option<&Value>,
    audiences: &[String],
) -> Result<(), TokenProblem> {
    let ours = |candidate: &str| audiences.iter().any(|a| a == candidate);
    let matched = match aud {
        None | Some(Value::Null) => return Err(TokenProblem::MissingClaim),
        Some(Value::String(single)) => ours(single),
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).any(ours),
        Some(_) => return Err(TokenProblem::Malformed),
    };
    if matched {
        Ok(())
    } else {
        Err(TokenProblem::WrongAudience)
    }
}

/// A token whose header and claims satisfy the issuer's policy, signature not yet verified.
#[derive(Debug)]
pub struct Checked<'t, 'i> {
    token: Unverified<'t>,
    issuer: &'i IssuerConfig,
}

impl Checked<'_, '_> {
    /// The identity the claims map to, WITHOUT verifying the signature: only for the offline
    /// tools (`portcullis explain --token`), which say so in their output. Never for a request.
    pub fn identity_unverified(self) -> Result<Identity, TokenProblem> {
        build_identity(self.token.claims, self.issuer, None)
    }

    /// The unverified `kid`, to resolve the key set with (a kid miss may refetch).
    pub fn kid(&self) -> Option<&str> {
        self.token.kid()
    }

    /// Verifies the signature with the key named by `kid` (or, without `kid`, with each key of
    /// the fitting family in turn), then maps the claims to an `Identity`.
    pub fn verify(self, keys: &KeySet) -> Result<Identity, TokenProblem> {
        let token = self.token;
        let alg = token.alg;
        // A shared secret has no key id, so a kid in an HMAC token names nothing we hold.
        let shared_secret = matches!(self.issuer.source, KeySource::SharedSecretFile(_));
        let kid = token.kid.as_deref().filter(|_| !shared_secret);
        let key_id = match kid {
            Some(kid) => {
                let key = keys.by_kid(kid).ok_or(TokenProblem::UnknownKey)?;
                if !key_fits(key, alg) {
                    return Err(TokenProblem::KeyMismatch);
                }
                if !signature_valid(key, &token) {
                    return Err(TokenProblem::BadSignature);
                }
                Some(kid.to_owned())
            }
            None => {
                // RFC 7515 §4.1.4 makes `kid` optional; a single-key issuer often omits it. The
                // set is bounded, and only keys that could verify this alg are tried.
                let mut candidates = keys.iter().filter(|k| key_fits(k, alg)).peekable();
                if candidates.peek().is_none() {
                    // Keys exist (the store said so), but none could verify this algorithm.
                    return Err(TokenProblem::KeyMismatch);
                }
                let key = candidates
                    .find(|k| signature_valid(k, &token))
                    .ok_or(TokenProblem::BadSignature)?;
                key.kid.clone()
            }
        };
        build_identity(token.claims, self.issuer, key_id)
    }
}

/// The key's family must fit the alg, and a JWK that names its own `alg` is bound to it
/// (RFC 7517 §4.4).
fn key_fits(key: &VerificationKey, alg: Algorithm) -> bool {
    key.family.fits(alg) && key.alg.is_none_or(|own| own == alg)
}

fn signature_valid(key: &VerificationKey, token: &Unverified<'_>) -> bool {
    // A stripped signature (`header.payload.`) is never valid, whatever the backend thinks.
    if token.signature.is_empty() {
        return false;
    }
    let Some(provider) = CryptoProvider::try_get_default() else {
        return false;
    };
    let alg = jsonwebtoken_algorithm(token.alg);
    let Ok(verifier) = (provider.verifier_factory)(&alg, &key.decoding) else {
        return false;
    };
    verifier
        .verify(token.signing_input.as_bytes(), &token.signature)
        .is_ok()
}

/// Walks a dotted claim path (`realm_access.roles`). A top-level claim whose name itself holds
/// dots (namespaced claims like `https://example.com/roles`) is found first. `null` is absent.
pub fn lookup<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    let found = match claims.get(path) {
        Some(value) => value,
        None => {
            let mut parts = path.split('.');
            let mut current = claims.get(parts.next()?)?;
            for part in parts {
                current = current.as_object()?.get(part)?;
            }
            current
        }
    };
    (!found.is_null()).then_some(found)
}

/// A claim value that reaches the application exactly as portcullis read it (subject, scope,
/// role, claim header): no control characters (CR, LF, NUL... could inject a header or split a
/// request) and no leading or trailing whitespace, which HTTP parsers strip from header values
/// (RFC 9110 §5.5) — the audit log would say ` admin ` while the application reads `admin`.
/// U+FEFF counts as whitespace here: JavaScript's `trim` removes it.
fn header_exact(value: &str) -> bool {
    let trimmed = |c: char| c.is_whitespace() || c == '\u{feff}';
    !value.chars().any(char::is_control) && value.trim_matches(trimmed) == value
}

/// `Err(UnsafeClaim)` unless `value` is [`header_exact`]: such a token is refused whole, never
/// repaired, so the audit log and the application can never disagree about who or what it is.
fn exact(value: &str) -> Result<&str, TokenProblem> {
    if header_exact(value) {
        Ok(value)
    } else {
        Err(TokenProblem::UnsafeClaim)
    }
}

/// Scopes from a claim: a string is split on spaces (RFC 6749 §3.3), an array is taken element
/// by element. A value or element that is not [`header_exact`] refuses the token; an element
/// that would smuggle a separator (a space inside one `scp` item) is dropped, which narrows.
fn scope_list(value: Option<&Value>) -> Result<Vec<String>, TokenProblem> {
    let one_scope = |s: &&str| !s.is_empty() && !s.contains(char::is_whitespace);
    Ok(match value {
        Some(Value::String(s)) => exact(s)?
            .split(' ')
            .filter(one_scope)
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => {
            let mut scopes = Vec::with_capacity(items.len());
            for item in items.iter().filter_map(Value::as_str) {
                if one_scope(&exact(item)?) {
                    scopes.push(item.to_owned());
                }
            }
            scopes
        }
        _ => Vec::new(),
    })
}

/// Roles from a claim: one string, or an array of strings. Roles travel comma-separated in
/// `x-auth-roles`, so a role holding a comma is dropped (which narrows); a role that is not
/// [`header_exact`] refuses the token.
fn roles_list(value: Option<&Value>) -> Result<Vec<String>, TokenProblem> {
    let one_role = |s: &str| !s.is_empty() && !s.contains(',');
    let strings: Vec<&str> = match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut roles = Vec::with_capacity(strings.len());
    for role in strings {
        if one_role(exact(role)?) {
            roles.push(role.to_owned());
        }
    }
    Ok(roles)
}

fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// The header value for a claim: scalars as text, arrays of scalars joined with `,`; anything
/// else (objects, nested arrays) and empty or oversized values are skipped. A scalar that is not
/// [`header_exact`] refuses the token.
fn claim_header_value(value: &Value) -> Result<Option<String>, TokenProblem> {
    let text = match value {
        Value::Array(items) => {
            let parts: Vec<Cow<'_, str>> = items.iter().filter_map(scalar_text).collect();
            for part in &parts {
                exact(part)?;
            }
            parts.join(",")
        }
        other => match scalar_text(other) {
            Some(text) => exact(&text)?.to_owned(),
            None => return Ok(None),
        },
    };
    Ok((!text.is_empty() && text.len() <= MAX_CLAIM_HEADER_BYTES).then_some(text))
}

fn build_identity(
    claims: Map<String, Value>,
    issuer: &IssuerConfig,
    key_id: Option<String>,
) -> Result<Identity, TokenProblem> {
    // Every value copied into a header is checked here, at verification, so a refused token is
    // never cached and the audit log shows what the application reads.
    let subject = match lookup(&claims, &issuer.claims.subject) {
        None => return Err(TokenProblem::MissingClaim),
        Some(Value::String(s)) if !s.is_empty() => exact(s)?.to_owned(),
        Some(_) => return Err(TokenProblem::Malformed),
    };
    let scopes = match &issuer.claims.scopes {
        Some(path) => scope_list(lookup(&claims, path))?,
        // Both conventions are common: `scope` (RFC 8693/9068, space separated) and `scp`
        // (Entra, Okta: an array).
        None => match lookup(&claims, "scope") {
            Some(scope) => scope_list(Some(scope))?,
            None => scope_list(lookup(&claims, "scp"))?,
        },
    };
    let roles = match issuer.claims.roles.as_deref() {
        Some(path) => roles_list(lookup(&claims, path))?,
        None => Vec::new(),
    };
    let mut claim_headers = Vec::with_capacity(issuer.claim_headers.len());
    for (path, header) in &issuer.claim_headers {
        if let Some(value) = lookup(&claims, path)
            && let Some(value) = claim_header_value(value)?
        {
            claim_headers.push((header.clone(), value));
        }
    }
    let token_id = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
    let issued_at = claims.get("iat").and_then(numeric_date);
    let expires_at = claims.get("exp").and_then(numeric_date);
    // Only a token traceable to a published key can be served from the cache, and only while
    // the key stays published; without a kid (or with a shared secret) it is verified afresh.
    let cache_policy = key_id
        .clone()
        .map_or(CachePolicy::Uncacheable, CachePolicy::KeyBound);
    let user_authentication = user_authentication(&claims, issuer);
    Ok(Identity {
        method: AuthMethod::Jwt,
        subject,
        issuer: issuer.issuer.clone(),
        scopes,
        roles,
        token_id,
        issued_at,
        expires_at,
        key_id,
        cache_policy,
        claim_headers,
        claims: Arc::new(claims),
        user_authentication,
        scope_wildcards: issuer.scope_wildcards,
    })
}

/// `amr`, `acr` and `auth_time` for step-up checks. A claim of the wrong type (`amr` as a
/// string, `auth_time` as text) is treated as absent: the token stays valid, and a route that
/// needs the claim refuses it with a step-up challenge.
fn user_authentication(claims: &Map<String, Value>, issuer: &IssuerConfig) -> UserAuthentication {
    let amr: Vec<String> = match claims.get("amr") {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let mfa = amr
        .iter()
        .any(|method| issuer.mfa_methods.iter().any(|m| m == method));
    UserAuthentication {
        mfa,
        amr,
        acr: claims.get("acr").and_then(Value::as_str).map(str::to_owned),
        auth_time: claims.get("auth_time").and_then(numeric_date),
        clock_skew: issuer.clock_skew.as_secs(),
    }
}

/// The identity `claims` map to under `issuer`'s claim mapping (subject, scopes, roles, claim
/// headers, `amr`/`acr`/`auth_time`), as verification maps a token's: for the offline tools
/// (`portcullis explain --claims`, `portcullis test`), which take the claims as given.
pub fn identity_from_claims(
    claims: Map<String, Value>,
    issuer: &IssuerConfig,
) -> Result<Identity, TokenProblem> {
    build_identity(claims, issuer, None)
}

/// Parses, checks and verifies `token` for one known issuer in one go (no kid-miss refetch):
/// what [`super::Authenticator`] does after choosing the issuer, for tools and tests.
pub fn verify(
    token: &str,
    issuer: &IssuerConfig,
    keys: &KeySet,
    max_token_bytes: usize,
    now: u64,
) -> Result<Identity, TokenProblem> {
    let unverified = parse(token, max_token_bytes)?;
    if unverified.issuer().is_none() {
        return Err(TokenProblem::MissingClaim);
    }
    unverified.check(issuer, now)?.verify(keys)
}

/// Key fixtures and raw token builders shared by the authn unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm as J, DecodingKey, EncodingKey};
    use serde_json::{Value, json};

    use crate::authn::jwks::{KeyFamily, KeySet, VerificationKey};
    use crate::authn::{Algorithm, ClaimPaths, IssuerConfig, KeySource, RefreshPolicy};

    macro_rules! key_file {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/keys/", $name))
        };
    }
    pub const RSA_PRIVATE: &str = key_file!("rsa-2048-a.pem");
    pub const RSA_PUBLIC: &str = key_file!("rsa-2048-a.pub.pem");
    pub const RSA_B_PRIVATE: &str = key_file!("rsa-2048-b.pem");
    pub const RSA_1024_PUBLIC: &str = key_file!("rsa-1024.pub.pem");
    pub const EC256_PRIVATE: &str = key_file!("ec-p256.pem");
    pub const EC256_PUBLIC: &str = key_file!("ec-p256.pub.pem");
    pub const EC384_PRIVATE: &str = key_file!("ec-p384.pem");
    pub const EC384_PUBLIC: &str = key_file!("ec-p384.pub.pem");
    pub const ED_PRIVATE: &str = key_file!("ed25519.pem");
    pub const ED_PUBLIC: &str = key_file!("ed25519.pub.pem");

    pub const ISSUER: &str = "https://idp.example.com";
    pub const AUDIENCE: &str = "orders-api";
    /// A fixed "now" (Unix seconds) for claim checks.
    pub const NOW: u64 = 1_700_000_000;

    pub fn rsa_signer() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("RSA fixture")
    }
    pub fn rsa_b_signer() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_B_PRIVATE.as_bytes()).expect("RSA fixture")
    }
    pub fn ec256_signer() -> EncodingKey {
        EncodingKey::from_ec_pem(EC256_PRIVATE.as_bytes()).expect("P-256 fixture")
    }
    pub fn ec384_signer() -> EncodingKey {
        EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()).expect("P-384 fixture")
    }
    pub fn ed_signer() -> EncodingKey {
        EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).expect("Ed25519 fixture")
    }

    fn key(
        kid: &str,
        family: KeyFamily,
        alg: Option<Algorithm>,
        decoding: DecodingKey,
    ) -> Arc<VerificationKey> {
        Arc::new(VerificationKey {
            kid: Some(kid.to_owned()),
            family,
            alg,
            decoding,
        })
    }

    /// Kids: `rsa`, `rsa-rs256-only` (JWK `alg: RS256`), `rsa-1024`, `ec256`, `ec384`, `ed`.
    pub fn key_set() -> KeySet {
        let rsa = || DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).expect("RSA public");
        KeySet::new(vec![
            key("rsa", KeyFamily::Rsa, None, rsa()),
            key(
                "rsa-rs256-only",
                KeyFamily::Rsa,
                Some(Algorithm::RS256),
                rsa(),
            ),
            key(
                "rsa-1024",
                KeyFamily::Rsa,
                None,
                DecodingKey::from_rsa_pem(RSA_1024_PUBLIC.as_bytes()).expect("RSA 1024 public"),
            ),
            key(
                "ec256",
                KeyFamily::EcP256,
                None,
                DecodingKey::from_ec_pem(EC256_PUBLIC.as_bytes()).expect("P-256 public"),
            ),
            key(
                "ec384",
                KeyFamily::EcP384,
                None,
                DecodingKey::from_ec_pem(EC384_PUBLIC.as_bytes()).expect("P-384 public"),
            ),
            key(
                "ed",
                KeyFamily::Ed25519,
                None,
                DecodingKey::from_ed_pem(ED_PUBLIC.as_bytes()).expect("Ed25519 public"),
            ),
        ])
    }

    pub fn issuer() -> IssuerConfig {
        use Algorithm::*;
        IssuerConfig {
            name: "corp".to_owned(),
            issuer: ISSUER.to_owned(),
            audiences: vec![AUDIENCE.to_owned(), "other-api".to_owned()],
            algorithms: vec![
                RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
            ],
            clock_skew: Duration::from_secs(30),
            claims: ClaimPaths::default(),
            allowed_types: None,
            max_lifetime: None,
            source: KeySource::JwksUri("https://idp.example.com/jwks".to_owned()),
            refresh: RefreshPolicy::default(),
            claim_headers: Vec::new(),
            mfa_methods: crate::authn::default_mfa_methods(),
            scope_wildcards: false,
        }
    }

    /// Valid claims at [`NOW`]: issued a minute ago, valid for an hour.
    pub fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "scope": "read:documents write:documents",
            "roles": ["user"],
            "jti": "token-1",
            "iat": NOW - 60,
            "exp": NOW + 3600,
        })
    }

    pub fn b64url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `header.payload.signature` from raw parts, nothing checked.
    pub fn raw(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes()),
            b64url(signature)
        )
    }

    /// A properly signed token with exactly this header (its `alg` is not consulted).
    pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: J) -> String {
        let message = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
        format!("{message}.{signature}")
    }

    /// A properly signed token with header `{alg, typ: JWT, kid}`.
    pub fn sign(alg: J, kid: &str, key: &EncodingKey, claims: &Value) -> String {
        let alg_name = serde_json::to_value(alg).expect("alg name");
        let header = json!({"alg": alg_name, "typ": "JWT", "kid": kid});
        sign_raw(&header, claims, key, alg)
    }

    pub fn rs256(claims: &Value) -> String {
        sign(J::RS256, "rsa", &rsa_signer(), claims)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{Algorithm as J, EncodingKey};
    use serde_json::{Value, json};

    use super::testing::*;
    use super::*;
    use crate::authn::ClaimPaths;

    fn verify_at(token: &str, issuer: &IssuerConfig, now: u64) -> Result<Identity, TokenProblem> {
        install_crypto_provider().expect("aws-lc-rs provider");
        verify(token, issuer, &key_set(), 8 * 1024, now)
    }

    fn check(token: &str) -> Result<Identity, TokenProblem> {
        verify_at(token, &issuer(), NOW)
    }

    fn denied(token: &str) -> TokenProblem {
        check(token).expect_err("token must be denied")
    }

    fn with(claims: Value, changes: Value) -> Value {
        let mut claims = claims;
        for (name, value) in changes.as_object().expect("object").clone() {
            if value.is_null() {
                claims.as_object_mut().expect("object").remove(&name);
            } else {
                claims[name] = value;
            }
        }
        claims
    }

    #[test]
    fn installing_the_crypto_provider_is_idempotent() {
        assert_eq!(install_crypto_provider(), Ok(()));
        assert_eq!(install_crypto_provider(), Ok(()));
    }

    #[test]
    fn accepts_valid_tokens_of_every_asymmetric_algorithm() {
        let cases = [
            (J::RS256, "rsa", rsa_signer()),
            (J::RS384, "rsa", rsa_signer()),
            (J::RS512, "rsa", rsa_signer()),
            (J::PS256, "rsa", rsa_signer()),
            (J::PS384, "rsa", rsa_signer()),
            (J::PS512, "rsa", rsa_signer()),
            (J::ES256, "ec256", ec256_signer()),
            (J::ES384, "ec384", ec384_signer()),
            (J::EdDSA, "ed", ed_signer()),
        ];
        for (alg, kid, key) in cases {
            let identity = check(&sign(alg, kid, &key, &claims()))
                .unwrap_or_else(|problem| panic!("{alg:?} denied: {problem:?}"));
            assert_eq!(identity.subject, "alice");
            assert_eq!(identity.issuer, ISSUER);
            assert_eq!(identity.method, AuthMethod::Jwt);
            assert_eq!(identity.key_id.as_deref(), Some(kid));
            assert_eq!(identity.cache_policy, CachePolicy::KeyBound(kid.to_owned()));
            assert_eq!(identity.token_id.as_deref(), Some("token-1"));
            assert_eq!(identity.issued_at, Some(NOW - 60));
            assert_eq!(identity.expires_at, Some(NOW + 3600));
            assert_eq!(identity.roles, ["user"]);
            assert_eq!(identity.claims.get("sub"), Some(&json!("alice")));
        }
    }

    #[test]
    fn accepts_a_token_without_kid_with_the_fitting_key() {
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let token = sign_raw(&header, &claims(), &ec256_signer(), J::ES256);
        let identity = check(&token).expect("kid-less ES256 token");
        assert_eq!(identity.key_id.as_deref(), Some("ec256"));
    }

    #[test]
    fn denies_a_token_without_kid_signed_by_a_stranger() {
        let header = json!({"alg": "RS256"});
        let token = sign_raw(&header, &claims(), &rsa_b_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::BadSignature);
    }

    #[test]
    fn denies_alg_none_in_any_letter_case() {
        for none in ["none", "None", "NONE", "nOnE"] {
            let header = json!({"alg": none, "kid": "rsa"});
            for signature in [&b""[..], b"signature"] {
                let token = raw(&header, &claims(), signature);
                assert_eq!(denied(&token), TokenProblem::UnsupportedAlgorithm, "{none}");
            }
        }
    }

    #[test]
    fn denies_algorithm_names_in_the_wrong_case() {
        let header = json!({"alg": "rs256", "kid": "rsa"});
        let token = sign_raw(&header, &claims(), &rsa_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::UnsupportedAlgorithm);
    }

    #[test]
    fn denies_hs256_signed_with_the_rsa_public_key_as_secret() {
        let secret = EncodingKey::from_secret(RSA_PUBLIC.as_bytes()).expect("secret");
        let token = sign(J::HS256, "rsa", &secret, &claims());
        assert_eq!(denied(&token), TokenProblem::UnsupportedAlgorithm);

        // Even a misconfigured issuer that lists HS256 next to a JWKS source refuses it.
        let mut careless = issuer();
        careless.algorithms.push(Algorithm::HS256);
        assert_eq!(
            verify_at(&token, &careless, NOW).expect_err("HS256 with JWKS keys"),
            TokenProblem::UnsupportedAlgorithm
        );

        // And with a shared-secret issuer (the kid is then ignored), an RSA key never verifies
        // HMAC.
        careless.source = KeySource::SharedSecretFile("/etc/portcullis/secret".into());
        assert_eq!(
            verify_at(&token, &careless, NOW).expect_err("HS256 against an RSA key"),
            TokenProblem::KeyMismatch
        );
    }

    #[test]
    fn accepts_hs256_only_with_a_shared_secret_key() {
        let secret = b"a-long-shared-secret-of-at-least-32-bytes";
        let mut shared = issuer();
        shared.algorithms = vec![Algorithm::HS256];
        shared.source = KeySource::SharedSecretFile("/etc/portcullis/secret".into());
        let keys = KeySet::new(vec![Arc::new(VerificationKey {
            kid: None,
            family: super::super::jwks::KeyFamily::Hmac,
            alg: None,
            decoding: jsonwebtoken::DecodingKey::from_secret(secret).expect("secret"),
        })]);
        install_crypto_provider().expect("provider");
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let signer = EncodingKey::from_secret(secret).expect("secret");
        let token = sign_raw(&header, &claims(), &signer, J::HS256);
        assert!(verify(&token, &shared, &keys, 8192, NOW).is_ok());
        // A kid means nothing to a shared secret (it has none): ignored, not a key miss. With
        // no published key to follow, the identity is never cached.
        let with_kid = json!({"alg": "HS256", "kid": "v1"});
        let token = sign_raw(&with_kid, &claims(), &signer, J::HS256);
        let identity = verify(&token, &shared, &keys, 8192, NOW).expect("kid ignored");
        assert_eq!(identity.cache_policy, CachePolicy::Uncacheable);

        let wrong = EncodingKey::from_secret(b"another-secret-of-sufficient-size!!").expect("s");
        let forged = sign_raw(&header, &claims(), &wrong, J::HS256);
        assert_eq!(
            verify(&forged, &shared, &keys, 8192, NOW).expect_err("wrong secret"),
            TokenProblem::BadSignature
        );
    }

    #[test]
    fn denies_algorithms_the_issuer_does_not_allow() {
        let mut rsa_only = issuer();
        rsa_only.algorithms = vec![Algorithm::RS256];
        let token = sign(J::ES256, "ec256", &ec256_signer(), &claims());
        assert_eq!(
            verify_at(&token, &rsa_only, NOW).expect_err("ES256 not allowed"),
            TokenProblem::UnsupportedAlgorithm
        );
    }

    #[test]
    fn denies_unknown_kid() {
        let token = sign(J::RS256, "rotated-away", &rsa_signer(), &claims());
        assert_eq!(denied(&token), TokenProblem::UnknownKey);
    }

    #[test]
    fn denies_embedded_or_referenced_keys_in_the_header() {
        let jwk = json!({"kty": "oct", "k": "c2VjcmV0"});
        for (name, value) in [
            ("jwk", jwk),
            ("jku", json!("https://attacker.example/jwks")),
            ("x5u", json!("https://attacker.example/cert.pem")),
            ("x5c", json!(["MIIB"])),
            ("jwk", Value::Null),
        ] {
            let mut header = json!({"alg": "RS256", "kid": "rsa"});
            header[name] = value;
            let token = sign_raw(&header, &claims(), &rsa_signer(), J::RS256);
            assert_eq!(denied(&token), TokenProblem::ForbiddenHeader, "{name}");
        }
    }

    #[test]
    fn denies_critical_extensions_we_do_not_implement() {
        let header = json!({"alg": "RS256", "kid": "rsa", "crit": ["b64"], "b64": false});
        let token = sign_raw(&header, &claims(), &rsa_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::ForbiddenHeader);

        let header = json!({"alg": "RS256", "kid": "rsa", "crit": []});
        let token = sign_raw(&header, &claims(), &rsa_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::Malformed);
    }

    #[test]
    fn denies_es256_with_zero_r_and_s() {
        let header = json!({"alg": "ES256", "kid": "ec256"});
        let token = raw(&header, &claims(), &[0u8; 64]);
        assert_eq!(denied(&token), TokenProblem::BadSignature);
    }

    #[test]
    fn denies_a_stripped_signature() {
        for (alg, kid, key) in [
            (J::RS256, "rsa", rsa_signer()),
            (J::ES256, "ec256", ec256_signer()),
            (J::EdDSA, "ed", ed_signer()),
        ] {
            let token = sign(alg, kid, &key, &claims());
            let stripped = &token[..=token.rfind('.').expect("dot")];
            assert_eq!(denied(stripped), TokenProblem::BadSignature, "{alg:?}");
        }
    }

    #[test]
    fn denies_a_tampered_payload() {
        let token = rs256(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = with(claims(), json!({"sub": "admin"}));
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64url(forged_claims.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(denied(&forged), TokenProblem::BadSignature);
    }

    #[test]
    fn denies_an_algorithm_that_does_not_fit_the_key() {
        // RS256 against an EC key.
        let token = sign(J::RS256, "ec256", &rsa_signer(), &claims());
        assert_eq!(denied(&token), TokenProblem::KeyMismatch);
        // ES384 against a P-256 key.
        let token = sign(J::ES384, "ec256", &ec384_signer(), &claims());
        assert_eq!(denied(&token), TokenProblem::KeyMismatch);
        // PS256 against a JWK that says `alg: RS256`.
        let token = sign(J::PS256, "rsa-rs256-only", &rsa_signer(), &claims());
        assert_eq!(denied(&token), TokenProblem::KeyMismatch);
        // The same key accepts what it names.
        assert!(check(&sign(J::RS256, "rsa-rs256-only", &rsa_signer(), &claims())).is_ok());
    }

    #[test]
    fn denies_tokens_signed_with_rsa_keys_under_2048_bits() {
        // Signed by OpenSSL (aws-lc-rs will not sign with a 1024-bit key); valid but for its size.
        let token = include_str!("../../tests/fixtures/keys/rsa-1024.rs256.jwt").trim();
        assert_eq!(denied(token), TokenProblem::BadSignature);
    }

    #[test]
    fn denies_expired_token() {
        let expired = with(claims(), json!({"iat": NOW - 7200, "exp": NOW - 31}));
        assert_eq!(denied(&rs256(&expired)), TokenProblem::Expired);
    }

    #[test]
    fn tolerates_expiry_within_clock_skew() {
        let recent = with(claims(), json!({"iat": NOW - 7200, "exp": NOW - 29}));
        assert!(check(&rs256(&recent)).is_ok());
    }

    #[test]
    fn denies_not_yet_valid_token() {
        let early = with(claims(), json!({"nbf": NOW + 31}));
        assert_eq!(denied(&rs256(&early)), TokenProblem::NotYetValid);
        let nearly = with(claims(), json!({"nbf": NOW + 29}));
        assert!(check(&rs256(&nearly)).is_ok());
    }

    #[test]
    fn denies_token_issued_in_the_future() {
        let future = with(claims(), json!({"iat": NOW + 31}));
        assert_eq!(denied(&rs256(&future)), TokenProblem::IssuedInFuture);
    }

    #[test]
    fn denies_wrong_issuer() {
        let foreign = with(claims(), json!({"iss": "https://evil.example.com"}));
        assert_eq!(denied(&rs256(&foreign)), TokenProblem::UnknownIssuer);
        let missing = with(claims(), json!({"iss": null}));
        assert_eq!(denied(&rs256(&missing)), TokenProblem::MissingClaim);
    }

    #[test]
    fn denies_wrong_audience() {
        let other = with(claims(), json!({"aud": "billing-api"}));
        assert_eq!(denied(&rs256(&other)), TokenProblem::WrongAudience);
        let others = with(claims(), json!({"aud": ["billing-api", "ORDERS-API"]}));
        assert_eq!(denied(&rs256(&others)), TokenProblem::WrongAudience);
        let missing = with(claims(), json!({"aud": null}));
        assert_eq!(denied(&rs256(&missing)), TokenProblem::MissingClaim);
    }

    #[test]
    fn accepts_an_audience_array_containing_ours() {
        let many = with(claims(), json!({"aud": ["billing-api", "other-api"]}));
        assert!(check(&rs256(&many)).is_ok());
    }

    #[test]
    fn denies_missing_or_non_numeric_exp() {
        let missing = with(claims(), json!({"exp": null}));
        assert_eq!(denied(&rs256(&missing)), TokenProblem::MissingClaim);
        let text = with(claims(), json!({"exp": "tomorrow"}));
        assert_eq!(denied(&rs256(&text)), TokenProblem::Malformed);
    }

    #[test]
    fn accepts_fractional_numeric_dates() {
        let fractional = with(claims(), json!({"exp": (NOW + 60) as f64 + 0.5}));
        assert!(check(&rs256(&fractional)).is_ok());
    }

    #[test]
    fn denies_lifetime_longer_than_configured() {
        let mut strict = issuer();
        strict.max_lifetime = Some(Duration::from_secs(3600));
        let long = with(claims(), json!({"iat": NOW, "exp": NOW + 3601}));
        assert_eq!(
            verify_at(&rs256(&long), &strict, NOW).expect_err("lifetime"),
            TokenProblem::LifetimeTooLong
        );
        let no_iat = with(claims(), json!({"iat": null, "exp": NOW + 7200}));
        assert_eq!(
            verify_at(&rs256(&no_iat), &strict, NOW).expect_err("lifetime from now"),
            TokenProblem::LifetimeTooLong
        );
        let fine = with(claims(), json!({"iat": NOW, "exp": NOW + 3600}));
        assert!(verify_at(&rs256(&fine), &strict, NOW).is_ok());
    }

    #[test]
    fn enforces_the_typ_allow_list_case_insensitively() {
        let mut at_jwt = issuer();
        at_jwt.allowed_types = Some(vec!["at+jwt".to_owned()]);
        let token_with = |typ: Value| {
            let header = json!({"alg": "RS256", "kid": "rsa", "typ": typ});
            sign_raw(&header, &claims(), &rsa_signer(), J::RS256)
        };
        for accepted in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(
                verify_at(&token_with(json!(accepted)), &at_jwt, NOW).is_ok(),
                "{accepted}"
            );
        }
        for refused in [json!("JWT"), json!("application/jwt"), Value::Null] {
            let token = if refused.is_null() {
                let header = json!({"alg": "RS256", "kid": "rsa"});
                sign_raw(&header, &claims(), &rsa_signer(), J::RS256)
            } else {
                token_with(refused.clone())
            };
            assert_eq!(
                verify_at(&token, &at_jwt, NOW).expect_err("typ"),
                TokenProblem::WrongType,
                "{refused}"
            );
        }
    }

    #[test]
    fn denies_wrong_number_of_segments() {
        let token = rs256(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(denied(&parts[..2].join(".")), TokenProblem::Malformed);
        assert_eq!(
            denied(&format!("{token}.{}", parts[2])),
            TokenProblem::Malformed
        );
        assert_eq!(denied(""), TokenProblem::Malformed);
        assert_eq!(denied("...."), TokenProblem::Malformed);
    }

    #[test]
    fn denies_invalid_base64url() {
        let token = rs256(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let padded_header = format!("{}=", parts[0]);
        let standard_alphabet = parts[2].replace('-', "+").replace('_', "/");
        for bad in [
            format!("{}.{}.{}", padded_header, parts[1], parts[2]),
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}*", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], parts[1], standard_alphabet),
        ] {
            assert_eq!(denied(&bad), TokenProblem::Malformed);
        }
    }

    #[test]
    fn denies_a_json_array_as_payload_or_header() {
        let header = json!({"alg": "RS256", "kid": "rsa"});
        let payload = json!([claims()]);
        let token = sign_raw(&header, &payload, &rsa_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::Malformed);

        let header = json!(["RS256", "rsa"]);
        let token = sign_raw(&header, &claims(), &rsa_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::Malformed);
    }

    #[test]
    fn denies_non_json_and_non_string_header_fields() {
        let header = b64url(b"not json");
        let token = format!("{header}.{}.{}", b64url(b"{}"), b64url(b"sig"));
        assert_eq!(denied(&token), TokenProblem::Malformed);
        let header = json!({"alg": "RS256", "kid": 7});
        let token = sign_raw(&header, &claims(), &rsa_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::Malformed);
        let header = json!({"kid": "rsa"});
        let token = sign_raw(&header, &claims(), &rsa_signer(), J::RS256);
        assert_eq!(denied(&token), TokenProblem::Malformed);
    }

    #[test]
    fn denies_a_64_kib_token_before_decoding() {
        let huge = "a".repeat(64 * 1024);
        assert_eq!(denied(&huge), TokenProblem::TooLarge);
        let padded = with(claims(), json!({"padding": "x".repeat(64 * 1024)}));
        assert_eq!(denied(&rs256(&padded)), TokenProblem::TooLarge);
    }

    #[test]
    fn denies_deeply_nested_json_without_panicking() {
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let payload = format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","exp":{},"deep":{nested}}}"#,
            NOW + 3600
        );
        let header = b64url(br#"{"alg":"RS256","kid":"rsa"}"#);
        let token = format!("{header}.{}.{}", b64url(payload.as_bytes()), b64url(b"sig"));
        // With the default 8 KiB cap the size bound answers first...
        assert_eq!(denied(&token), TokenProblem::TooLarge);
        // ...and with a generous cap, serde_json's recursion limit does.
        let generous = verify(&token, &issuer(), &key_set(), 64 * 1024, NOW);
        assert_eq!(generous.expect_err("nested"), TokenProblem::Malformed);

        // In the (2 KiB-bounded) header, unknown fields are skipped without recursion, so nesting
        // there costs nothing and the forged token still fails on its signature.
        let nested_header = format!(
            r#"{{"alg":"RS256","kid":"rsa","x":{}{}}}"#,
            "[".repeat(700),
            "]".repeat(700)
        );
        let token = format!(
            "{}.{}.{}",
            b64url(nested_header.as_bytes()),
            b64url(claims().to_string().as_bytes()),
            b64url(b"sig")
        );
        assert_eq!(denied(&token), TokenProblem::BadSignature);
        // A nested value in a header field we read is refused as malformed.
        let nested_kid = format!(
            r#"{{"alg":"RS256","kid":{}{}}}"#,
            "[".repeat(700),
            "]".repeat(700)
        );
        let token = format!(
            "{}.{}.{}",
            b64url(nested_kid.as_bytes()),
            b64url(claims().to_string().as_bytes()),
            b64url(b"sig")
        );
        assert_eq!(denied(&token), TokenProblem::Malformed);
    }

    #[test]
    fn reads_scopes_from_scope_string_or_scp_array() {
        let identity = check(&rs256(&claims())).expect("scope string");
        assert_eq!(identity.scopes, ["read:documents", "write:documents"]);

        let scp = with(
            claims(),
            json!({"scope": null, "scp": ["read:documents", "admin"]}),
        );
        let identity = check(&rs256(&scp)).expect("scp array");
        assert_eq!(identity.scopes, ["read:documents", "admin"]);

        let scp_string = with(claims(), json!({"scope": null, "scp": "a b"}));
        assert_eq!(check(&rs256(&scp_string)).expect("scp").scopes, ["a", "b"]);

        let none = with(claims(), json!({"scope": null}));
        assert!(check(&rs256(&none)).expect("no scopes").scopes.is_empty());
    }

    #[test]
    fn drops_scope_and_role_items_that_could_forge_separators() {
        let odd = with(
            claims(),
            json!({"scope": null, "scp": ["ok", "read write", "read\u{a0}admin", ""],
                   "roles": ["user", "admin,owner", ""]}),
        );
        let identity = check(&rs256(&odd)).expect("odd items");
        assert_eq!(identity.scopes, ["ok"]);
        assert_eq!(identity.roles, ["user"]);
        // Inside a `scope` string, only a space separates: a no-break space does not split.
        let nbsp = with(claims(), json!({"scope": "ok read\u{a0}admin"}));
        assert_eq!(check(&rs256(&nbsp)).expect("nbsp").scopes, ["ok"]);
    }

    /// Values with control characters, or with whitespace an HTTP parser would trim, in every
    /// claim that is copied into a header.
    const UNSAFE_VALUES: &[&str] = &[
        " admin",
        "admin ",
        " admin ",
        "\tadmin",
        "admin\n",
        "ad\rmin",
        "ad\u{0}min",
        "ad\u{7f}min",
        "ad\u{85}min",
        "\u{a0}admin",
        "admin\u{3000}",
        "\u{feff}admin",
    ];

    /// Where a test puts an unsafe value: a label, and the claim changes for the value.
    type Placement = (&'static str, fn(&str) -> Value);

    /// Every [`UNSAFE_VALUES`] item, put into the claims by each of `placements`, makes the
    /// token invalid for `issuer`.
    fn assert_unsafe_values_denied(issuer: &IssuerConfig, placements: &[Placement]) {
        for value in UNSAFE_VALUES {
            for (label, changes) in placements {
                let token = rs256(&with(claims(), changes(value)));
                assert_eq!(
                    verify_at(&token, issuer, NOW).map(|_| ()),
                    Err(TokenProblem::UnsafeClaim),
                    "{label} {value:?}"
                );
            }
        }
    }

    /// issue 8, item 9: the audit log showed `" admin "` while the application read `admin`.
    #[test]
    fn denies_a_subject_with_surrounding_whitespace_or_control_characters() {
        assert_unsafe_values_denied(&issuer(), &[("sub", |value| json!({ "sub": value }))]);
        // Inner spaces are part of the value, exactly as the application sees it.
        let spaced = with(claims(), json!({"sub": "Alice Example"}));
        assert_eq!(
            check(&rs256(&spaced)).expect("inner space").subject,
            "Alice Example"
        );
    }

    #[test]
    fn denies_a_scope_with_surrounding_whitespace_or_control_characters() {
        assert_unsafe_values_denied(
            &issuer(),
            &[
                ("scope", |value| json!({ "scope": value })),
                (
                    "scp",
                    |value| json!({"scope": null, "scp": ["read:documents", value]}),
                ),
            ],
        );
    }

    #[test]
    fn denies_a_role_with_surrounding_whitespace_or_control_characters() {
        assert_unsafe_values_denied(
            &issuer(),
            &[
                ("role", |value| json!({ "roles": value })),
                ("roles", |value| json!({"roles": ["user", value]})),
            ],
        );
        let spaced = with(claims(), json!({"roles": ["Domain Admins"]}));
        assert_eq!(
            check(&rs256(&spaced)).expect("inner space").roles,
            ["Domain Admins"]
        );
    }

    #[test]
    fn denies_a_claim_header_value_with_surrounding_whitespace_or_control_characters() {
        let mut mapped = issuer();
        mapped.claim_headers = vec![("email".to_owned(), "x-user-email".to_owned())];
        assert_unsafe_values_denied(
            &mapped,
            &[
                ("email", |value| json!({ "email": value })),
                (
                    "email list",
                    |value| json!({"email": ["a@example.com", value]}),
                ),
            ],
        );
        // A claim that is not mapped to a header is not checked: it never reaches a header.
        let unmapped = rs256(&with(claims(), json!({"nickname": " bob "})));
        verify_at(&unmapped, &mapped, NOW).expect("unmapped claims are not headers");
    }

    #[test]
    fn reads_amr_acr_and_auth_time_and_marks_mfa_by_the_issuers_methods() {
        let token = rs256(&with(
            claims(),
            json!({"amr": ["pwd", "otp"], "acr": "phrh", "auth_time": NOW - 60}),
        ));
        let identity = verify_at(&token, &issuer(), NOW).expect("valid");
        let user = &identity.user_authentication;
        assert_eq!(user.amr, ["pwd", "otp"]);
        assert!(user.mfa);
        assert_eq!(user.acr.as_deref(), Some("phrh"));
        assert_eq!(user.auth_time, Some(NOW - 60));
        assert_eq!(user.clock_skew, 30);

        assert!(!identity.scope_wildcards);

        let mut strict = issuer();
        strict.mfa_methods = vec!["hwk".to_owned()];
        strict.scope_wildcards = true;
        let identity = verify_at(&token, &strict, NOW).expect("valid");
        assert!(!identity.user_authentication.mfa);
        assert!(
            identity.scope_wildcards,
            "the issuer's switch travels on the identity"
        );
    }

    #[test]
    fn step_up_claims_of_the_wrong_type_are_absent_and_the_token_stays_valid() {
        let token = rs256(&with(
            claims(),
            json!({"amr": "otp", "acr": 2, "auth_time": "yesterday"}),
        ));
        let identity = verify_at(&token, &issuer(), NOW).expect("still a valid token");
        assert_eq!(identity.user_authentication.amr, Vec::<String>::new());
        assert!(!identity.user_authentication.mfa);
        assert_eq!(identity.user_authentication.acr, None);
        assert_eq!(identity.user_authentication.auth_time, None);

        let mixed = rs256(&with(claims(), json!({"amr": ["otp", 7]})));
        let identity = verify_at(&mixed, &issuer(), NOW).expect("still a valid token");
        assert!(!identity.user_authentication.mfa);
    }

    #[test]
    fn reads_identity_from_configured_dotted_claim_paths() {
        let mut keycloak = issuer();
        keycloak.claims = ClaimPaths {
            subject: "preferred_username".to_owned(),
            scopes: Some("authz.permissions".to_owned()),
            roles: Some("realm_access.roles".to_owned()),
        };
        let token = rs256(&with(
            claims(),
            json!({"preferred_username": "bob",
                   "authz": {"permissions": "read:documents"},
                   "realm_access": {"roles": ["admin", "user"]}}),
        ));
        let identity = verify_at(&token, &keycloak, NOW).expect("dotted paths");
        assert_eq!(identity.subject, "bob");
        assert_eq!(identity.scopes, ["read:documents"]);
        assert_eq!(identity.roles, ["admin", "user"]);

        keycloak.claims.roles = Some("https://example.com/roles".to_owned());
        let namespaced = rs256(&with(
            claims(),
            json!({"preferred_username": "bob", "https://example.com/roles": "admin"}),
        ));
        let identity = verify_at(&namespaced, &keycloak, NOW).expect("namespaced");
        assert_eq!(identity.roles, ["admin"]);
    }

    #[test]
    fn denies_tokens_without_a_usable_subject() {
        let missing = with(claims(), json!({"sub": null}));
        assert_eq!(denied(&rs256(&missing)), TokenProblem::MissingClaim);
        let injected = with(claims(), json!({"sub": "alice\r\nx-auth-roles: admin"}));
        assert_eq!(denied(&rs256(&injected)), TokenProblem::UnsafeClaim);
        let number = with(claims(), json!({"sub": 42}));
        assert_eq!(denied(&rs256(&number)), TokenProblem::Malformed);
    }

    #[test]
    fn maps_claims_to_headers_and_refuses_injection_attempts() {
        let mut mapped = issuer();
        mapped.claim_headers = [
            ("email", "x-user-email"),
            ("groups", "x-user-groups"),
            ("tenant.id", "x-tenant"),
            ("email_verified", "x-email-verified"),
            ("tenant", "x-tenant-object"),
            ("absent", "x-absent"),
        ]
        .iter()
        .map(|(claim, header)| ((*claim).to_owned(), (*header).to_owned()))
        .collect();
        let token = rs256(&with(
            claims(),
            json!({"email": "alice@example.com",
                   "groups": ["eng", "ops", 7, {"skip": true}],
                   "tenant": {"id": 42},
                   "email_verified": true}),
        ));
        let identity = verify_at(&token, &mapped, NOW).expect("claim headers");
        let headers: Vec<(&str, &str)> = identity
            .claim_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-user-email", "alice@example.com"),
                ("x-user-groups", "eng,ops,7"),
                ("x-tenant", "42"),
                ("x-email-verified", "true"),
            ]
        );
        mapped
            .claim_headers
            .push(("evil".to_owned(), "x-evil".to_owned()));
        for evil in ["x\r\nx-auth-subject: admin", "a\u{0}b"] {
            let token = rs256(&with(claims(), json!({ "evil": evil })));
            assert_eq!(
                verify_at(&token, &mapped, NOW).map(|_| ()),
                Err(TokenProblem::UnsafeClaim),
                "{evil:?}"
            );
        }
    }

    #[test]
    fn never_prints_claims_in_debug_output() {
        let token = rs256(&claims());
        let unverified = parse(&token, 8192).expect("parses");
        let debug = format!("{unverified:?}");
        assert!(!debug.contains("alice"), "{debug}");
    }
}
