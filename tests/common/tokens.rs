//! Test keys and token minting for integration tests (owner: authn).
//!
//! The keys are the committed, test-only PEM files in `tests/fixtures/keys/` (see its README).
//!
//! ```ignore
//! let key = TestKey::rsa();                       // kid "rsa-2048-a", RS256
//! let jwks = jwks(&[&key, &TestKey::ec_p256()]);  // {"keys": [...]} to serve
//! let token = key.sign(&json!({}), &claims(ISSUER, AUDIENCE, "alice", "read:documents", 300));
//! let forged = key.sign(&json!({"jku": "https://evil.example/jwks"}), &claims(..));
//! let none = raw::unsigned(&json!({"alg": "none"}), &claims(..));
//! ```
//!
//! Header overrides are merged over the default header `{alg, typ: "JWT", kid}`; an override
//! with value `null` removes that field. The signature is made with the `alg` of the final
//! header when it is one the key can sign, else with the key's default algorithm, so an
//! `alg` override like `"none"` or `"rs256"` still yields a token (which must be refused).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/",
            $name
        ))
    };
}

/// Default issuer and audience most tests use.
pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "orders-api";

/// Which kind of key a [`TestKey`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    Ed25519,
}

/// A committed test key pair with a `kid`.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub kind: KeyKind,
    /// The algorithm tokens are signed with unless the header says otherwise.
    pub alg: Algorithm,
    pub private_pem: &'static str,
    pub public_pem: &'static str,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    fn new(
        kid: &str,
        kind: KeyKind,
        alg: Algorithm,
        private: &'static str,
        public: &'static str,
    ) -> Self {
        install_crypto_provider();
        Self {
            kid: kid.to_owned(),
            kind,
            alg,
            private_pem: private,
            public_pem: public,
        }
    }

    /// RSA 2048, kid `rsa-2048-a`, RS256.
    pub fn rsa() -> Self {
        Self::new(
            "rsa-2048-a",
            KeyKind::Rsa,
            Algorithm::RS256,
            fixture!("rsa-2048-a.pem"),
            fixture!("rsa-2048-a.pub.pem"),
        )
    }

    /// A second RSA 2048 key, kid `rsa-2048-b`, RS256: the "new key" in rotation tests.
    pub fn rsa_b() -> Self {
        Self::new(
            "rsa-2048-b",
            KeyKind::Rsa,
            Algorithm::RS256,
            fixture!("rsa-2048-b.pem"),
            fixture!("rsa-2048-b.pub.pem"),
        )
    }

    /// EC P-256, kid `ec-p256`, ES256.
    pub fn ec_p256() -> Self {
        Self::new(
            "ec-p256",
            KeyKind::EcP256,
            Algorithm::ES256,
            fixture!("ec-p256.pem"),
            fixture!("ec-p256.pub.pem"),
        )
    }

    /// Ed25519, kid `ed25519`, EdDSA.
    pub fn ed25519() -> Self {
        Self::new(
            "ed25519",
            KeyKind::Ed25519,
            Algorithm::EdDSA,
            fixture!("ed25519.pem"),
            fixture!("ed25519.pub.pem"),
        )
    }

    /// The same key under another `kid`.
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.kid = kid.to_owned();
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS name of the default algorithm (`RS256`, `ES256`, `EdDSA`...).
    pub fn alg_name(&self) -> String {
        alg_name(self.alg)
    }

    pub fn encoding_key(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        match self.kind {
            KeyKind::Rsa => EncodingKey::from_rsa_pem(pem),
            KeyKind::EcP256 => EncodingKey::from_ec_pem(pem),
            KeyKind::Ed25519 => EncodingKey::from_ed_pem(pem),
        }
        .expect("committed fixture key parses")
    }

    pub fn decoding_key(&self) -> DecodingKey {
        let pem = self.public_pem.as_bytes();
        match self.kind {
            KeyKind::Rsa => DecodingKey::from_rsa_pem(pem),
            KeyKind::EcP256 => DecodingKey::from_ec_pem(pem),
            KeyKind::Ed25519 => DecodingKey::from_ed_pem(pem),
        }
        .expect("committed fixture key parses")
    }

    /// The public JWK: `kty`, `kid`, `use: sig`, `alg` and the key parameters.
    pub fn jwk(&self) -> Value {
        let decoding = self.decoding_key();
        let der = decoding.try_get_as_bytes().expect("PEM keys are DER bytes");
        let mut jwk = match self.kind {
            KeyKind::Rsa => {
                let (n, e) = rsa_public_components(der);
                json!({"kty": "RSA", "n": b64url(n), "e": b64url(e)})
            }
            KeyKind::EcP256 => {
                // SEC1 uncompressed point: 0x04 || x || y.
                let (crv, size) = ("P-256", 32);
                assert_eq!(der.len(), 1 + 2 * size, "uncompressed EC point");
                json!({"kty": "EC", "crv": crv,
                       "x": b64url(&der[1..=size]), "y": b64url(&der[1 + size..])})
            }
            KeyKind::Ed25519 => json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(der)}),
        };
        jwk["kid"] = json!(self.kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(self.alg_name());
        jwk
    }

    /// The default header `{alg, typ: "JWT", kid}` with `overrides` merged in.
    pub fn header(&self, overrides: &Value) -> Value {
        let mut header = json!({"alg": self.alg_name(), "typ": "JWT", "kid": self.kid});
        merge(&mut header, overrides);
        header
    }

    /// A signed compact JWS: default header merged with `header_overrides`, `claims` as the
    /// payload (any JSON, even an array), signed per the module docs.
    pub fn sign(&self, header_overrides: &Value, claims: &Value) -> String {
        let header = self.header(header_overrides);
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(alg_from_name)
            .filter(|alg| self.can_sign(*alg))
            .unwrap_or(self.alg);
        raw::signed(&header, claims, &self.encoding_key(), alg)
    }

    /// Shorthand: default header, these claims.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(&json!({}), claims)
    }

    fn can_sign(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self.kind {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// `{"keys": [...]}` with the public JWKs of `keys`.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// Installs jsonwebtoken's aws-lc-rs provider (idempotent; minting needs it).
pub fn install_crypto_provider() {
    portcullis::authn::install_crypto_provider().expect("aws-lc-rs jsonwebtoken provider");
}

/// Current Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Typical access-token claims: `iss`, `aud`, `sub`, `scope` (space separated; omitted when
/// empty), `iat` now, `exp` now + `ttl_secs` (negative: already expired), a unique `jti`.
pub fn claims(iss: &str, aud: &str, sub: &str, scope: &str, ttl_secs: i64) -> Value {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let now = now();
    let exp = now.saturating_add_signed(ttl_secs);
    let mut claims = json!({
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": now,
        "exp": exp,
        "jti": format!("jti-{}-{}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed)),
    });
    if !scope.is_empty() {
        claims["scope"] = json!(scope);
    }
    claims
}

/// [`claims`] for the default issuer and audience, valid for five minutes.
pub fn default_claims(sub: &str, scope: &str) -> Value {
    claims(ISSUER, AUDIENCE, sub, scope, 300)
}

/// `claims` with `changes` merged in (`null` removes a claim).
pub fn with(claims: &Value, changes: &Value) -> Value {
    let mut claims = claims.clone();
    merge(&mut claims, changes);
    claims
}

fn merge(target: &mut Value, overrides: &Value) {
    let (Some(target), Some(overrides)) = (target.as_object_mut(), overrides.as_object()) else {
        return;
    };
    for (name, value) in overrides {
        if value.is_null() {
            target.remove(name);
        } else {
            target.insert(name.clone(), value.clone());
        }
    }
}

pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWS name of `alg` (`RS256`, `EdDSA`...).
pub fn alg_name(alg: Algorithm) -> String {
    match serde_json::to_value(alg).expect("algorithms serialize") {
        Value::String(name) => name,
        other => panic!("unexpected algorithm encoding {other}"),
    }
}

fn alg_from_name(name: &str) -> Option<Algorithm> {
    serde_json::from_value(json!(name)).ok()
}

/// `n` and `e` of a PKCS#1 `RSAPublicKey` (SEQUENCE { INTEGER n, INTEGER e }), minimal DER.
fn rsa_public_components(der: &[u8]) -> (&[u8], &[u8]) {
    fn tlv(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(input[0], tag, "DER tag");
        let (len, header) = match input[1] {
            short if short < 0x80 => (usize::from(short), 2),
            long => {
                let count = usize::from(long & 0x7f);
                let len = input[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, 2 + count)
            }
        };
        (&input[header..header + len], &input[header + len..])
    }
    let (sequence, _) = tlv(der, 0x30);
    let (n, rest) = tlv(sequence, 0x02);
    let (e, _) = tlv(rest, 0x02);
    let strip = |int: &[u8]| -> usize { int.iter().take_while(|b| **b == 0).count() };
    (&n[strip(n)..], &e[strip(e)..])
}

/// Builders for malformed and hostile tokens.
pub mod raw {
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::Value;

    use super::b64url;

    /// `b64(header).b64(payload).b64(signature)` with nothing checked.
    pub fn token(header: &Value, payload: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.to_string()),
            b64url(payload.to_string()),
            b64url(signature)
        )
    }

    /// `header.payload.` with an empty signature (`alg: none` style).
    pub fn unsigned(header: &Value, payload: &Value) -> String {
        token(header, payload, b"")
    }

    /// Signs exactly `header` and `payload` with `key` using `alg`, whatever the header says.
    pub fn signed(header: &Value, payload: &Value, key: &EncodingKey, alg: Algorithm) -> String {
        super::install_crypto_provider();
        let message = format!(
            "{}.{}",
            b64url(header.to_string()),
            b64url(payload.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("test key signs");
        format!("{message}.{signature}")
    }

    /// An HS256 token with `secret` as the HMAC key (e.g. the RSA public key PEM, for the
    /// key-confusion attack).
    pub fn hs256(secret: &[u8], header: &Value, payload: &Value) -> String {
        let key = EncodingKey::from_secret(secret).expect("non-empty secret");
        signed(header, payload, &key, Algorithm::HS256)
    }

    /// A token whose payload is raw JSON text (e.g. 10,000 nested arrays), header as given,
    /// with a junk signature.
    pub fn with_payload_text(header: &Value, payload_json: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.to_string()),
            b64url(payload_json),
            b64url(b"junk-signature")
        )
    }

    /// Removes the signature, keeping the trailing dot: `header.payload.`.
    pub fn strip_signature(token: &str) -> String {
        let end = token.rfind('.').expect("a compact JWS");
        token[..=end].to_owned()
    }

    /// An ES256 signature with r = s = 0 (the "psychic signatures" CVE-2022-21449 shape).
    pub fn es256_zero_signature(header: &Value, payload: &Value) -> String {
        token(header, payload, &[0u8; 64])
    }

    /// A claim set nested `depth` arrays deep in claim `deep`, otherwise valid-looking.
    pub fn nested_claims_json(iss: &str, aud: &str, exp: u64, depth: usize) -> String {
        format!(
            r#"{{"iss":"{iss}","aud":"{aud}","sub":"alice","exp":{exp},"deep":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }
}
