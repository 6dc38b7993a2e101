//! Finding the credential in a request: the `Authorization: Bearer` header only. A credential
//! in the URL query is refused outright (it ends up in logs, history and Referer headers).

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

/// The bytes of an RFC 6750 b64token (`ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`, then
/// `"="` padding), as a table: every request's token is checked byte by byte.
static B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        b += 1;
    }
    table
};

/// A credential as presented, not yet verified; `Authenticator::authenticate` dispatches on its
/// kind. An API key (read from its own configured header) will be a variant of its own; an
/// opaque token for introspection comes as a `Bearer` too, told apart when it is verified.
/// Its `Debug` names the kind and length only, so a stray `{:?}` cannot log the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// `Authorization: Bearer`: a JWT (the only kind verified today).
    Bearer(&'a str),
}

impl<'a> Presented<'a> {
    /// The secret bytes as sent: what the size cap measures and the token cache keys by (as a
    /// hash). Never log it.
    pub fn secret(self) -> &'a str {
        match self {
            Self::Bearer(token) => token,
        }
    }
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(token) => write!(f, "Bearer(<redacted, {} bytes>)", token.len()),
        }
    }
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
    if token.is_empty() || !token.bytes().all(|b| B64TOKEN[usize::from(b)]) {
        return Extraction::Malformed;
    }
    Extraction::Found(Presented::Bearer(token))
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
