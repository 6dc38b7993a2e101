//! JWK and JWKS documents → verification keys: which members a usable key must have, which key
//! families verify which algorithms, and why a key is skipped.
//!
//! This module must never echo key material (a skip reason names members and identifiers only),
//! never take a symmetric key from a JWKS document, and never keep a key it could not parse.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::authn::Algorithm;

/// RSA keys below this are refused: NIST SP 800-131A disallows them for signatures.
const MIN_RSA_BITS: usize = 2048;
/// aws-lc verifies RSA signatures up to this size; larger keys could never verify anything.
const MAX_RSA_BITS: usize = 8192;
/// Key ids longer than this are not plausible and would bloat logs and status pages.
const MAX_KID_BYTES: usize = 256;

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

#[cfg(test)]
mod tests;
