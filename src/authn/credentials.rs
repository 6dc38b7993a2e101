//! Finding the credential in a request: the `Authorization: Bearer` header, and with
//! `api_keys` configured its key header (or `Authorization: <scheme> <key>`). A credential in
//! the URL query is refused outright (it ends up in logs, history and Referer headers).

use crate::input::Headers;

/// Query parameters that carry credentials (RFC 6750 §2.3 and common API-key names).
const QUERY_CREDENTIAL_NAMES: &[&str] = &[
    "access_token",
    "id_token",
    "token",
    "api_key",
    "apikey",
    "key",
];

/// Whether `c` may appear in an RFC 6750 b64token (`ALPHA / DIGIT / "-" / "." / "_" / "~" / "+"
/// / "/"`, then `"="` padding). Comparisons only, no branch, no table: see [`all_b64token`].
#[inline(always)]
fn b64token_byte(c: u8) -> bool {
    // `| 0x20` folds A-Z onto a-z; bytes outside land outside `a..=z` (`@`, `[` and non-ASCII
    // included).
    ((c | 0x20).wrapping_sub(b'a') < 26)
        | (c.wrapping_sub(b'0') < 10)
        | (c == b'-')
        | (c == b'.')
        | (c == b'_')
        | (c == b'~')
        | (c == b'+')
        | (c == b'/')
        | (c == b'=')
}

/// Whether every byte of a token is a b64token byte. Every request's token is checked (a JWT
/// is ~800 bytes): a fold with no early exit, which the compiler vectorizes, where a table
/// looked up byte by byte cost ~4 instructions per byte.
fn all_b64token(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &c| ok & b64token_byte(c))
}

/// A credential as presented, not yet verified; `Authenticator::authenticate` dispatches on its
/// kind. An opaque token for introspection comes as a `Bearer` too, told apart when it is
/// verified. Its `Debug` names the kind and length only, so a stray `{:?}` cannot log the
/// secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// `Authorization: Bearer`: a JWT (the only bearer kind verified today).
    Bearer(&'a str),
    /// An API key, from the configured header or `Authorization: <scheme> <key>`, as sent
    /// (trimmed); its shape is checked when it is verified.
    ApiKey(&'a str),
}

impl<'a> Presented<'a> {
    /// The secret bytes as sent: what the size cap measures and the token cache keys by (as a
    /// hash). Never log it.
    pub fn secret(self) -> &'a str {
        match self {
            Self::Bearer(token) | Self::ApiKey(token) => token,
        }
    }
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(token) => write!(f, "Bearer(<redacted, {} bytes>)", token.len()),
            Self::ApiKey(key) => write!(f, "ApiKey(<redacted, {} bytes>)", key.len()),
        }
    }
}

/// Where API keys are read from (`api_keys.header` and `api_keys.authorization_scheme`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySource {
    /// Lower case.
    pub header: String,
    pub scheme: Option<String>,
}

/// Why the credential could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extraction<'a> {
    Found(Presented<'a>),
    /// No credential at all.
    Missing,
    /// An `Authorization` header that is not a usable bearer token.
    Malformed,
}

/// Reads the bearer token. The scheme is case-insensitive (RFC 7235); the token must be one
/// b64token (RFC 6750 §2.1): no spaces, no commas.
pub fn extract(headers: &Headers) -> Extraction<'_> {
    let Some(value) = headers.get("authorization") else {
        return Extraction::Missing;
    };
    let value = value.trim();
    let Some((scheme, token)) = value.split_once(' ') else {
        return Extraction::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Extraction::Malformed;
    }
    let token = token.trim_start();
    // Bytes, not chars: a non-ASCII character's bytes are all ≥ 0x80 and fail the same test.
    if token.is_empty() || !all_b64token(token.as_bytes()) {
        return Extraction::Malformed;
    }
    Extraction::Found(Presented::Bearer(token))
}

/// Reads the credential when API keys may be presented too: the key header, or
/// `Authorization: <scheme> <key>` when a scheme is configured, or else a bearer token as
/// [`extract`] reads it. A request that carries both a key header and an `Authorization`
/// header, or the key header twice, is malformed: which credential would be the caller's is
/// not ours to guess.
pub fn extract_with<'a>(headers: &'a Headers, api_keys: Option<&ApiKeySource>) -> Extraction<'a> {
    let Some(source) = api_keys else {
        return extract(headers);
    };
    let authorization = headers.get("authorization");
    let Some(key) = headers.get(&source.header) else {
        if let (Some(scheme), Some(value)) = (&source.scheme, authorization)
            && let Some((sent, key)) = value.trim().split_once(' ')
            && sent.eq_ignore_ascii_case(scheme)
        {
            let key = key.trim();
            return if key.is_empty() {
                Extraction::Malformed
            } else {
                Extraction::Found(Presented::ApiKey(key))
            };
        }
        return extract(headers);
    };
    let key = key.trim();
    let repeated = headers
        .iter()
        .filter(|(name, _)| *name == source.header)
        .nth(1)
        .is_some();
    if authorization.is_some() || repeated || key.is_empty() {
        return Extraction::Malformed;
    }
    Extraction::Found(Presented::ApiKey(key))
}

/// True when the query string carries something that looks like a credential.
///
/// Names are compared the way applications read them, not as sent: percent-decoded
/// (`access%5Ftoken`), with `+` as a space, an array or map suffix dropped (`access_token[]`,
/// `token[0]`), and `.`, space and an unmatched `[` read as `_` (PHP's rule for parameter
/// names), case-insensitively.
pub fn query_has_credential(query: &str) -> bool {
    query
        .split(['&', ';'])
        .any(|pair| is_credential_name(pair.split_once('=').map_or(pair, |(n, _)| n)))
}

/// True when a path segment carries a credential as a `;name=value` path parameter
/// (`/documents;access_token=...`): servlet containers hand those to the application too.
/// `path` is the normalized path.
pub fn path_has_credential(path: &str) -> bool {
    path.contains(';')
        && path.split('/').any(|segment| {
            segment
                .split(';')
                .skip(1)
                .any(|param| is_credential_name(param.split_once('=').map_or(param, |(n, _)| n)))
        })
}

fn is_credential_name(raw: &str) -> bool {
    // The longest credential name is short: anything much longer is not one, whatever it
    // decodes to, and need not be decoded.
    if raw.is_empty() || raw.len() > 64 {
        return false;
    }
    let decoded = percent_encoding::percent_decode(raw.as_bytes()).collect::<Vec<u8>>();
    let mut name: Vec<u8> = decoded
        .iter()
        .map(|&b| match b {
            b'+' | b' ' | b'.' => b'_',
            other => other.to_ascii_lowercase(),
        })
        .collect();
    if let Some(open) = name.iter().position(|&b| b == b'[') {
        if name[open..].contains(&b']') {
            name.truncate(open);
        } else {
            name[open] = b'_';
        }
    }
    QUERY_CREDENTIAL_NAMES
        .iter()
        .any(|candidate| candidate.as_bytes() == name.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_bytes_are_exactly_those_of_rfc_6750() {
        for c in 0..=u8::MAX {
            let rfc = c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
            assert_eq!(b64token_byte(c), rfc, "byte {c:#04x}");
            assert_eq!(
                all_b64token(&[b'a', c, b'b']),
                rfc,
                "byte {c:#04x} inside a token"
            );
        }
        assert!(all_b64token(b""));
    }

    use crate::testing::headers;

    #[test]
    fn reads_bearer_token_with_any_scheme_case() {
        let h = headers(&[("authorization", "bEaReR abc.def.ghi")]);
        assert_eq!(
            extract(&h),
            Extraction::Found(Presented::Bearer("abc.def.ghi"))
        );
    }

    #[test]
    fn missing_header_is_missing_credential() {
        assert_eq!(extract(&headers(&[])), Extraction::Missing);
    }

    #[test]
    fn a_token_may_use_exactly_the_b64token_alphabet() {
        const ALPHABET: &str =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=";
        for byte in 0u8..=127 {
            let c = char::from(byte);
            let value = format!("Bearer ab{c}cd");
            let request = headers(&[("authorization", &value)]);
            let found = extract(&request);
            if ALPHABET.contains(c) {
                assert_eq!(
                    found,
                    Extraction::Found(Presented::Bearer(&value[7..])),
                    "{byte}"
                );
            } else {
                assert_eq!(found, Extraction::Malformed, "byte {byte}");
            }
        }
    }

    #[test]
    fn basic_auth_and_garbage_are_malformed() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer a b",
            "Bearer a,b",
            "Bearer abc.déf.ghi",
            "Bearer abc.d\u{2024}f.ghi",
            "token",
        ] {
            assert_eq!(
                extract(&headers(&[("authorization", value)])),
                Extraction::Malformed,
                "{value}"
            );
        }
    }

    fn api_key_source(scheme: Option<&str>) -> ApiKeySource {
        ApiKeySource {
            header: "x-api-key".to_owned(),
            scheme: scheme.map(str::to_owned),
        }
    }

    #[test]
    fn reads_an_api_key_from_its_header_or_the_configured_scheme() {
        let source = api_key_source(Some("ApiKey"));
        let h = headers(&[("x-api-key", " pk_live_abc ")]);
        assert_eq!(
            extract_with(&h, Some(&source)),
            Extraction::Found(Presented::ApiKey("pk_live_abc"))
        );
        let h = headers(&[("authorization", "apikey pk_live_abc")]);
        assert_eq!(
            extract_with(&h, Some(&source)),
            Extraction::Found(Presented::ApiKey("pk_live_abc"))
        );
        // Without a scheme configured, `Authorization: ApiKey` is just not a bearer token.
        assert_eq!(
            extract_with(&h, Some(&api_key_source(None))),
            Extraction::Malformed
        );
        // Bearer tokens still work beside API keys; no API keys configured reads as before.
        let h = headers(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(
            extract_with(&h, Some(&source)),
            Extraction::Found(Presented::Bearer("a.b.c"))
        );
        let h = headers(&[("x-api-key", "pk_live_abc")]);
        assert_eq!(extract_with(&h, None), Extraction::Missing);
        assert_eq!(
            extract_with(&headers(&[]), Some(&source)),
            Extraction::Missing
        );
    }

    #[test]
    fn two_credentials_in_one_request_are_malformed() {
        let source = api_key_source(None);
        for pairs in [
            &[("x-api-key", "pk_a"), ("x-api-key", "pk_b")][..],
            &[("x-api-key", "pk_a"), ("authorization", "Bearer a.b.c")][..],
            &[("x-api-key", "  ")][..],
        ] {
            assert_eq!(
                extract_with(&headers(pairs), Some(&source)),
                Extraction::Malformed,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn detects_access_token_in_query() {
        assert!(query_has_credential("page=2&access_token=abc"));
        assert!(query_has_credential("API_KEY=x"));
        assert!(!query_has_credential("page=2&sort=name"));
    }

    #[test]
    fn detects_encoded_and_bracketed_credential_names_in_query() {
        for query in [
            "access%5Ftoken=abc",
            "access%5ftoken=abc",
            "%61ccess_token=abc",
            "access_token[]=abc",
            "access_token[0]=abc",
            "token[x]=abc",
            "access%5Btoken=abc",
            "access.token=abc",
            "access+token=abc",
            "x=1;access_token=abc",
            "ACCESS_TOKEN=abc",
            "api_key",
        ] {
            assert!(query_has_credential(query), "{query}");
        }
        for query in [
            "access_tokens=1",
            "tokenize=1",
            "page[token]=1",
            "a=access_token",
        ] {
            assert!(!query_has_credential(query), "{query}");
        }
    }

    #[test]
    fn debug_never_prints_the_credential() {
        let presented = Presented::Bearer("eyJhbGciOiJSUzI1NiJ9.secret.signature");
        let shown = format!("{presented:?} {:?}", Extraction::Found(presented));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("Bearer(<redacted, 37 bytes>)"), "{shown}");
    }

    #[test]
    fn detects_credentials_in_path_parameters() {
        assert!(path_has_credential("/documents;access_token=abc"));
        assert!(path_has_credential("/a;x=1;API_KEY=abc/b"));
        assert!(path_has_credential("/a/b;token"));
        assert!(!path_has_credential("/a;jsessionid=1/b"));
        assert!(!path_has_credential("/access_token/b"));
    }
}
