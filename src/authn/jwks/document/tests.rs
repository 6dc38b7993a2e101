use serde_json::json;

use super::*;

fn fixture(name: &str) -> Value {
    let text = match name {
        "rsa-2048" => include_str!("../../../../tests/fixtures/jwks/rsa-2048.jwk.json"),
        "rsa-1024" => include_str!("../../../../tests/fixtures/jwks/rsa-1024.jwk.json"),
        "ec-p256" => include_str!("../../../../tests/fixtures/jwks/ec-p256.jwk.json"),
        "ec-p384" => include_str!("../../../../tests/fixtures/jwks/ec-p384.jwk.json"),
        "ed25519" => include_str!("../../../../tests/fixtures/jwks/ed25519.jwk.json"),
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
            EncodingKey::from_rsa_pem(include_bytes!(
                "../../../../tests/fixtures/jwks/rsa-2048.pem"
            )),
        ),
        (
            "rsa-2048",
            Jwa::PS256,
            EncodingKey::from_rsa_pem(include_bytes!(
                "../../../../tests/fixtures/jwks/rsa-2048.pem"
            )),
        ),
        (
            "ec-p256",
            Jwa::ES256,
            EncodingKey::from_ec_pem(include_bytes!(
                "../../../../tests/fixtures/jwks/ec-p256.pem"
            )),
        ),
        (
            "ec-p384",
            Jwa::ES384,
            EncodingKey::from_ec_pem(include_bytes!(
                "../../../../tests/fixtures/jwks/ec-p384.pem"
            )),
        ),
        (
            "ed25519",
            Jwa::EdDSA,
            EncodingKey::from_ed_pem(include_bytes!(
                "../../../../tests/fixtures/jwks/ed25519.pem"
            )),
        ),
    ];
    for (kid, alg, encoding) in cases {
        let encoding = encoding.expect("fixture private key");
        let token = jsonwebtoken::encode(&Header::new(alg), &json!({"sub": "alice"}), &encoding)
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

#[test]
fn key_families_fit_only_their_algorithms() {
    use Algorithm::*;
    assert!(KeyFamily::Rsa.fits(PS512));
    assert!(!KeyFamily::Rsa.fits(HS256));
    assert!(!KeyFamily::EcP256.fits(ES384));
    assert!(!KeyFamily::Hmac.fits(RS256));
    assert!(KeyFamily::Ed25519.fits(EdDSA));
}
