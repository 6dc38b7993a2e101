//! Request-target and authority normalization: the one canonical form every route is matched
//! against.
//!
//! [`normalize`] turns the `:path` Envoy sends into a normalized path and its query, or refuses
//! it (answered with 400); [`normalize_authority`] does the same for the `:authority`. The
//! rules exist so that the path and host portcullis authorizes are the ones the upstream
//! serves: a request that an upstream might resolve differently (`..`, `//`, `%2F`, a
//! backslash, `host:80:80`) is refused rather than guessed at.
//!
//! This module must never decode an escape that could change how the path splits into
//! segments, never name the offending path or host in an error, and never do I/O.

/// Longest path (without the query string) accepted by [`normalize`].
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Why a request target cannot be normalized (answered with 400).
///
/// Messages name the rule only, never the offending path: they may reach logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("request target contains a fragment (`#`)")]
    Fragment,
    #[error("path contains a `.` or `..` segment")]
    DotSegment,
    #[error("path contains an empty segment (`//`)")]
    EmptySegment,
    #[error("path contains an encoded `/` or `\\` (`%2F`, `%5C`)")]
    EncodedSeparator,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a NUL or control character")]
    ControlCharacter,
    #[error("path contains an invalid percent escape")]
    InvalidEscape,
}

/// A request target split and normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    pub path: String,
    /// The raw query string (without `?`), never used for matching.
    pub query: Option<&'a str>,
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Splits off the query and normalizes the path (design.md "Path templates").
///
/// - the query (after the first `?`) is returned untouched and never matched;
/// - percent-escapes of unreserved characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`) are
///   decoded, every other escape is kept with upper-case hex (RFC 3986 §6.2.2.1), and bytes
///   that may not appear raw in a path (space, non-ASCII, ...) are percent-encoded;
/// - refused: a target not starting with `/`, a fragment, `.`/`..` segments (also encoded,
///   and also before a `;` path parameter: `/..;/admin`),
///   empty segments, encoded `/` or `\`, a raw backslash, NUL and control characters (raw or
///   encoded), malformed escapes, and paths over [`MAX_PATH_BYTES`].
///
/// A single trailing `/` is kept: `/a/` and `/a` are different paths.
pub fn normalize(target: &str) -> Result<NormalizedPath<'_>, PathError> {
    // A fragment never belongs in a request target (RFC 9112 §3.2); a client that sends one is
    // either broken or probing how the parts are split.
    if target.contains('#') {
        return Err(PathError::Fragment);
    }
    let (raw_path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if raw_path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !raw_path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }

    let bytes = raw_path.as_bytes();
    let mut path = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let decoded = match (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(high), Some(low)) => (high << 4) | low,
                _ => return Err(PathError::InvalidEscape),
            };
            // An encoded separator would be one segment to us and two to an upstream that
            // decodes before routing: refuse instead of choosing.
            if decoded == b'/' || decoded == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            if is_control(decoded) {
                return Err(PathError::ControlCharacter);
            }
            if is_unreserved(decoded) {
                path.push(char::from(decoded));
            } else {
                push_escaped(&mut path, decoded);
            }
            i += 3;
            continue;
        }
        if byte == b'\\' {
            // Some servers treat `\` as `/` (IIS, some frameworks): refuse the ambiguity.
            return Err(PathError::Backslash);
        }
        if is_control(byte) {
            return Err(PathError::ControlCharacter);
        }
        if is_path_char(byte) {
            path.push(char::from(byte));
        } else {
            push_escaped(&mut path, byte);
        }
        i += 1;
    }

    let body = &path[1..];
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if segment.is_empty() && !is_last {
            return Err(PathError::EmptySegment);
        }
        // Servlet containers (Tomcat, Jetty, Spring) strip `;` path parameters before resolving
        // dot segments, so `..;x` is `..` to them; `%3B` is refused the same way in case a
        // framework decodes before splitting.
        let name = segment
            .split(';')
            .next()
            .and_then(|name| name.split("%3B").next())
            .unwrap_or(segment);
        if name == "." || name == ".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(NormalizedPath { path, query })
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(byte & 0x0F)]));
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7F
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Characters allowed raw in a path (RFC 3986 §3.3 `pchar` plus `/`), except `%`.
fn is_path_char(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Longest `:authority` accepted by [`normalize_authority`]: a 253-byte DNS name with a port,
/// or the longest bracketed IPv6 literal, with room to spare.
pub const MAX_AUTHORITY_BYTES: usize = 320;

/// Why a request's `:authority` / `Host` cannot be used (answered with 400).
///
/// Messages name the rule only, never the authority: they may reach logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the request has no host")]
    Empty,
    #[error("the authority is longer than {MAX_AUTHORITY_BYTES} bytes")]
    TooLong,
    #[error("the host is not a DNS name, an IPv4 address or a bracketed IPv6 address")]
    InvalidHost,
    #[error("the port is not 1 to 5 digits of at most 65535")]
    InvalidPort,
}

/// The host of a request's `:authority` in the one form routes are matched against: lower
/// case, without port and without a trailing dot; IPv4 in dotted-quad form, IPv6 bracketed in
/// its RFC 5952 form. Anything else is refused, so that no authority can miss a host-scoped
/// route while an upstream still reads it as that host (`internal.example:abc`,
/// `internal.example:80:80`, `Internal.Example.`).
///
/// Accepted hosts are a strict subset of RFC 3986's: DNS-style names (letters, digits, `-`,
/// `_`, `~`, dot-separated non-empty labels), IPv4, and `[IPv6]` without zone. Refused on
/// purpose: percent-escapes and sub-delimiters (`,` `;` `!` ...), which no real host uses and
/// which some frameworks split on, userinfo (`user@host`), and all-numeric names that are not
/// a canonical dotted quad (`2130706433`, `127.1`, `0x7f.0.0.1`: other spellings of an IPv4
/// address for some resolvers). The port, when present, is 1 to 5 digits and at most 65535.
pub fn normalize_authority(authority: &str) -> Result<std::borrow::Cow<'_, str>, AuthorityError> {
    use std::borrow::Cow;

    if authority.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if authority.len() > MAX_AUTHORITY_BYTES {
        return Err(AuthorityError::TooLong);
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(AuthorityError::InvalidHost)?;
        let (host, rest) = authority.split_at(end + 1);
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port),
            None if rest.is_empty() => None,
            None => return Err(AuthorityError::InvalidPort),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        let digits_ok = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok || port.parse::<u32>().map_or(true, |p| p > 65_535) {
            return Err(AuthorityError::InvalidPort);
        }
    }

    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let address: std::net::Ipv6Addr = inner.parse().map_err(|_| AuthorityError::InvalidHost)?;
        let canonical = format!("[{address}]");
        return Ok(if canonical == host {
            Cow::Borrowed(host)
        } else {
            Cow::Owned(canonical)
        });
    }

    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~'))
        });
    if !labels_ok {
        return Err(AuthorityError::InvalidHost);
    }
    // A DNS top-level label is never numeric: a name ending in one is an IPv4 address, and only
    // its canonical dotted-quad spelling is accepted.
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
    if numeric {
        let canonical = name
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| AuthorityError::InvalidHost)?;
        if canonical.to_string() != name {
            return Err(AuthorityError::InvalidHost);
        }
    }
    Ok(if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(target: &str) -> Result<String, PathError> {
        normalize(target).map(|n| n.path)
    }

    // ---- normalization ----

    #[test]
    fn keeps_a_plain_path_unchanged() {
        assert_eq!(norm("/documents/42").as_deref(), Ok("/documents/42"));
        assert_eq!(norm("/").as_deref(), Ok("/"));
    }

    #[test]
    fn splits_off_the_query_string_untouched() {
        let n = normalize("/search?q=%2F..%2F&x").expect("valid");
        assert_eq!(n.path, "/search");
        assert_eq!(n.query, Some("q=%2F..%2F&x"));
        assert_eq!(normalize("/a").expect("valid").query, None);
        assert_eq!(normalize("/a?").expect("valid").query, Some(""));
    }

    #[test]
    fn decodes_percent_encoded_unreserved_characters() {
        assert_eq!(norm("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/%41%5a%30%2D%2e%5F%7E").as_deref(), Ok("/AZ0-._~"));
    }

    #[test]
    fn keeps_reserved_escapes_with_uppercase_hex() {
        assert_eq!(norm("/a%3ab").as_deref(), Ok("/a%3Ab"));
        assert_eq!(norm("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(norm("/a%20b").as_deref(), Ok("/a%20b"));
    }

    #[test]
    fn encodes_raw_characters_not_allowed_in_a_path() {
        assert_eq!(norm("/caf\u{e9}").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(norm("/a b").as_deref(), Ok("/a%20b"));
        assert_eq!(norm("/a:b@c;d=e").as_deref(), Ok("/a:b@c;d=e"));
    }

    #[test]
    fn keeps_a_trailing_slash() {
        assert_eq!(norm("/documents/").as_deref(), Ok("/documents/"));
    }

    #[test]
    fn rejects_a_relative_target() {
        assert_eq!(norm("documents"), Err(PathError::NotAbsolute));
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
        assert_eq!(norm("?q=1"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn rejects_dot_segments() {
        for target in ["/a/../b", "/..", "/a/.", "/./a", "/a/..?x=1"] {
            assert_eq!(norm(target), Err(PathError::DotSegment), "{target}");
        }
    }

    #[test]
    fn rejects_encoded_dot_segments() {
        for target in ["/a/%2e%2e/b", "/a/%2E%2E", "/a/.%2e/b", "/%2e/a"] {
            assert_eq!(norm(target), Err(PathError::DotSegment), "{target}");
        }
    }

    #[test]
    fn rejects_dot_segments_hidden_behind_path_parameters() {
        // Tomcat and Spring resolve `/public/..;/admin` to `/admin`.
        for target in [
            "/public/..;/admin",
            "/public/%2e%2e;/admin",
            "/public/%2E%2E;jsessionid=1/admin",
            "/public/.;/admin",
            "/public/..%3b/admin",
            "/public/..%3B/admin",
            "/..;",
        ] {
            assert_eq!(norm(target), Err(PathError::DotSegment), "{target}");
        }
        assert_eq!(norm("/a/b;v=1").as_deref(), Ok("/a/b;v=1"));
        assert_eq!(norm("/a/...;x").as_deref(), Ok("/a/...;x"));
        assert_eq!(
            norm("/shop/;jsessionid=1").as_deref(),
            Ok("/shop/;jsessionid=1")
        );
    }

    #[test]
    fn allows_dots_inside_a_segment() {
        assert_eq!(norm("/a/..b/c.json").as_deref(), Ok("/a/..b/c.json"));
    }

    #[test]
    fn rejects_empty_segments() {
        for target in ["//", "//a", "/a//b", "/a/b//"] {
            assert_eq!(norm(target), Err(PathError::EmptySegment), "{target}");
        }
    }

    #[test]
    fn rejects_encoded_slash_and_backslash() {
        for target in ["/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb"] {
            assert_eq!(norm(target), Err(PathError::EncodedSeparator), "{target}");
        }
    }

    #[test]
    fn rejects_a_literal_backslash() {
        assert_eq!(norm("/a\\b"), Err(PathError::Backslash));
        assert_eq!(norm("/a\\..\\b"), Err(PathError::Backslash));
    }

    #[test]
    fn rejects_nul_and_control_characters_raw_or_encoded() {
        for target in [
            "/a\0b", "/a\nb", "/a\tb", "/a\u{7f}", "/a%00", "/a%0d%0a", "/a%7F",
        ] {
            assert_eq!(norm(target), Err(PathError::ControlCharacter), "{target:?}");
        }
    }

    #[test]
    fn rejects_invalid_escapes() {
        for target in ["/a%zz", "/a%4", "/a%", "/a%g1", "/%%41"] {
            assert_eq!(norm(target), Err(PathError::InvalidEscape), "{target}");
        }
    }

    #[test]
    fn rejects_a_fragment() {
        assert_eq!(norm("/a#b"), Err(PathError::Fragment));
        assert_eq!(norm("/a?x=1#b"), Err(PathError::Fragment));
    }

    #[test]
    fn rejects_an_absurdly_long_path() {
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(norm(&long), Err(PathError::TooLong));
        let just_fits = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert!(norm(&just_fits).is_ok());
    }

    #[test]
    fn a_long_query_does_not_count_against_the_path_limit() {
        let target = format!("/a?{}", "q".repeat(MAX_PATH_BYTES * 2));
        assert_eq!(norm(&target).as_deref(), Ok("/a"));
    }

    // ---- templates ----

    #[test]
    fn authority_is_lower_cased_without_port_or_trailing_dot() {
        for (authority, host) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.COM:8443", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com.:443", "api.example.com"),
            ("localhost:1", "localhost"),
            ("under_score.internal", "under_score.internal"),
            ("10.0.0.1:65535", "10.0.0.1"),
            ("[::1]:9191", "[::1]"),
            ("[0:0:0:0:0:0:0:1]", "[::1]"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
        ] {
            assert_eq!(
                normalize_authority(authority).as_deref(),
                Ok(host),
                "{authority}"
            );
        }
    }

    #[test]
    fn rejects_malformed_ports() {
        for authority in [
            "internal.example:abc",
            "internal.example:80:80",
            "internal.example:80x",
            "internal.example:+80",
            "internal.example:-80",
            "internal.example:",
            "internal.example:123456",
            "internal.example:65536",
            "internal.example: 80",
            "[::1]:x",
            "[::1]80",
            "[::1]:",
        ] {
            assert_eq!(
                normalize_authority(authority),
                Err(AuthorityError::InvalidPort),
                "{authority}"
            );
        }
    }

    #[test]
    fn rejects_hosts_that_are_not_names_or_addresses() {
        for authority in [
            "user@internal.example",
            "internal.example,evil",
            "internal.example;x",
            "internal%2Eexample",
            "internal..example",
            ".internal.example",
            "internal.example..",
            ".",
            "inter nal.example",
            "internal.example\t",
            "[::1",
            "[not-v6]",
            "[fe80::1%25eth0]",
            "2130706433",
            "127.1",
            "127.000.000.001",
            "0x7f.0.0.1",
            "256.0.0.1",
            "a.b.c.1",
        ] {
            assert_eq!(
                normalize_authority(authority),
                Err(AuthorityError::InvalidHost),
                "{authority}"
            );
        }
        assert_eq!(normalize_authority(""), Err(AuthorityError::Empty));
        assert_eq!(
            normalize_authority(&"a".repeat(MAX_AUTHORITY_BYTES + 1)),
            Err(AuthorityError::TooLong)
        );
    }

    // ---- properties (proptest) ----

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::authz::routes::{self, PathMatch, RouteTable};

        /// How a lenient upstream (an Express or WSGI app doing virtual hosting) reads the
        /// host: lower case, everything after the first `:` dropped, one trailing dot dropped.
        fn upstream_host(authority: &str) -> String {
            let host = if authority.starts_with('[') {
                authority.split_inclusive(']').next().unwrap_or(authority)
            } else {
                authority.split(':').next().unwrap_or(authority)
            };
            host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
        }

        /// How a lenient upstream (a servlet container) reads a path: every escape decoded,
        /// `;` parameters dropped from each segment.
        fn upstream_segments(path: &str) -> Vec<String> {
            let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
            decoded
                .split('/')
                .map(|segment| segment.split(';').next().unwrap_or("").to_owned())
                .collect()
        }

        fn spell_case(text: &str, mask: &[bool]) -> String {
            text.chars()
                .zip(mask.iter().cycle())
                .map(|(c, upper)| if *upper { c.to_ascii_uppercase() } else { c })
                .collect()
        }

        /// An unreserved character's escape, with either hex case.
        fn escape(c: char, upper: bool) -> String {
            let escaped = format!("%{:02X}", u32::from(c));
            if upper {
                escaped
            } else {
                escaped.to_ascii_lowercase()
            }
        }

        proptest! {
            // No regression files written into the tree: a failure prints its minimal input,
            // which then becomes an example test above.
            #![proptest_config(ProptestConfig {
                cases: 2000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn authority_is_refused_or_canonical(
                authority in "[a-zA-Z0-9.:\\[\\]_~%@,;+ -]{0,24}"
            ) {
                if let Ok(host) = normalize_authority(&authority) {
                    let again = normalize_authority(&host).map(|h| h.into_owned());
                    prop_assert_eq!(again.as_deref(), Ok(&*host));
                    prop_assert!(!host.bytes().any(|b| b.is_ascii_uppercase()));
                    // What we match on is what a lenient upstream serves; IPv6 is compared
                    // after canonicalization, so leave its spelling aside.
                    if !authority.starts_with('[') {
                        prop_assert_eq!(upstream_host(&authority), host.into_owned());
                    }
                }
            }

            #[test]
            fn every_spelling_of_a_host_matches_the_same_route(
                labels in prop::collection::vec("[a-z][a-z0-9-]{0,8}", 1..4),
                mask in prop::collection::vec(any::<bool>(), 1..8),
                trailing_dot in any::<bool>(),
                port in prop::option::of(1u32..=65_535),
            ) {
                let host = labels.join(".");
                let table = RouteTable::new(vec![
                    routes::tests::route("scoped", None, Some(&host), PathMatch::Any),
                    routes::tests::route("fallback", None, None, PathMatch::Any),
                ]);
                let mut authority = spell_case(&host, &mask);
                if trailing_dot {
                    authority.push('.');
                }
                if let Some(port) = port {
                    authority.push_str(&format!(":{port}"));
                }
                let normalized = normalize_authority(&authority);
                prop_assert_eq!(normalized.as_deref(), Ok(host.as_str()));
                let normalized = normalized.map(|h| h.into_owned()).unwrap_or_default();
                let route = table.find("GET", &normalized, "/");
                prop_assert_eq!(route.map(|(r, _)| &*r.name), Some("scoped"));
            }

            #[test]
            fn malformed_ports_never_reach_the_route_table(
                host in "[a-z]{1,8}\\.example",
                port in "[0-9a-z:+ -]{0,7}",
            ) {
                let authority = format!("{host}:{port}");
                let valid_port = !port.is_empty()
                    && port.len() <= 5
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u32>().is_ok_and(|p| p <= 65_535);
                match normalize_authority(&authority) {
                    Ok(normalized) => {
                        prop_assert!(valid_port, "{authority} accepted");
                        prop_assert_eq!(normalized.as_ref(), host.as_str());
                    }
                    Err(error) => {
                        prop_assert!(!valid_port, "{authority} refused");
                        prop_assert_eq!(error, AuthorityError::InvalidPort);
                    }
                }
            }

            #[test]
            fn path_is_refused_or_canonical(
                target in "(/[a-zA-Z0-9.;=%~_-]{0,6}){1,5}"
            ) {
                if let Ok(normalized) = normalize(&target) {
                    let again = normalize(&normalized.path).map(|n| n.path);
                    prop_assert_eq!(again.as_deref(), Ok(normalized.path.as_str()));
                    // No segment an upstream resolves as `.` or `..`, and the upstream reads the
                    // same segments from what we matched as from what the client sent.
                    let segments = upstream_segments(&target);
                    prop_assert!(!segments.iter().any(|s| s == "." || s == ".."), "{target}");
                    prop_assert_eq!(segments, upstream_segments(&normalized.path));
                }
            }

            #[test]
            fn every_spelling_of_a_path_matches_the_same_route(
                segments in prop::collection::vec("[a-zA-Z0-9._~-]{1,6}", 1..4),
                encode in prop::collection::vec(any::<bool>(), 1..8),
                upper in prop::collection::vec(any::<bool>(), 1..8),
            ) {
                prop_assume!(segments.iter().all(|s| s != "." && s != ".."));
                let path = format!("/{}", segments.join("/"));
                let table = RouteTable::new(vec![
                    routes::tests::route("exact", None, None, PathMatch::Exact(path.clone())),
                    routes::tests::route("fallback", None, None, PathMatch::Any),
                ]);
                let spelled: String = path
                    .chars()
                    .zip(encode.iter().cycle().zip(upper.iter().cycle()))
                    .map(|(c, (enc, up))| {
                        if *enc && c != '/' { escape(c, *up) } else { c.to_string() }
                    })
                    .collect();
                let normalized = normalize(&spelled).map(|n| n.path);
                prop_assert_eq!(normalized.as_deref(), Ok(path.as_str()));
                let normalized = normalized.unwrap_or_default();
                let route = table.find("GET", "api", &normalized);
                prop_assert_eq!(route.map(|(r, _)| &*r.name), Some("exact"));
            }
        }
    }
}
