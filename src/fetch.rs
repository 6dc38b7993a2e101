//! Outbound HTTP fetches: the one place that decides which URLs portcullis may fetch from and
//! how (JWKS and OIDC discovery, the revocation feed; token introspection later).
//!
//! The pieces, each reusable on its own:
//! - [`checked_url`], the URL rule: `https`, or plain `http` only to a loopback host (or
//!   anywhere when the operator opted in with `allow_insecure_http`); never credentials
//!   (userinfo) in a URL, since they would be sent to the host and end up in its logs; never a
//!   fragment, which a fetch cannot use and which hides what was meant. The configuration check
//!   and every fetcher call this same function, so a configuration is refused exactly when its
//!   fetch would be.
//! - [`redact`]: a URL as logs may show it (scheme, host, port and path only).
//! - [`client`]: the shared client (rustls, no redirects, no cookies).
//! - [`get`] / [`get_if_changed`]: a GET with a timeout over the whole exchange and a size cap
//!   enforced while the body streams in ([`post_form`]: the same for a form POST, as token
//!   introspection sends); [`max_age`] and [`etag`] read the caching headers.
//! - [`in_client_span`]: a fetch as an OpenTelemetry CLIENT span, child of the current context
//!   (the check that asked for it, if any; a root for background work such as a revocation
//!   sync), with [`in_client_span_with`] adding attributes from the result; a no-op while
//!   tracing is off.
//!
//! This module must never log or return a URL's credentials, query string or fragment, never
//! follow a redirect, and never read more than the cap of a body.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};

use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderValue};

/// Runs `fetch` inside a CLIENT span `name` with `attributes`, a child of the current
/// OpenTelemetry context; a failure becomes the span's error status (its text names hosts and
/// paths only, like every fetch error here). The tracer is the global one: a no-op until
/// tracing starts.
pub async fn in_client_span<T, E: std::fmt::Display>(
    name: &'static str,
    attributes: Vec<KeyValue>,
    fetch: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    in_client_span_with(name, attributes, fetch, |_| Vec::new()).await
}

/// [`in_client_span`] for a fetch whose result says more than its start: `outcome` adds
/// attributes from a success (such as how many entries it loaded), called only when the span
/// is recorded.
pub async fn in_client_span_with<T, E: std::fmt::Display>(
    name: &'static str,
    attributes: Vec<KeyValue>,
    fetch: impl Future<Output = Result<T, E>>,
    outcome: impl FnOnce(&T) -> Vec<KeyValue>,
) -> Result<T, E> {
    let tracer = opentelemetry::global::tracer("portcullis");
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start(&tracer);
    let context = Context::current_with_span(span);
    let result = fetch.with_context(context.clone()).await;
    let span = context.span();
    match &result {
        Ok(value) if span.is_recording() => span.set_attributes(outcome(value)),
        Ok(_) => {}
        Err(error) => span.set_status(Status::error(error.to_string())),
    }
    span.end();
    result
}

/// Why a URL may not be fetched from. Texts name hosts, never credentials or query strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("invalid URL")]
    Parse(#[source] url::ParseError),
    #[error("URL {0} carries credentials: credentials never go in a URL")]
    Credentials(String),
    #[error("URL {0} has a fragment: a fetch URL must not have one")]
    Fragment(String),
    #[error("URL {0} has no host")]
    NoHost(String),
    #[error("unsupported URL scheme `{0}`: only https (or http to a loopback host) is allowed")]
    Scheme(String),
    #[error(
        "refusing plain http:// to non-loopback host {0}: use https, or set allow_insecure_http"
    )]
    InsecureHttp(String),
}

/// Parses `raw` and applies the URL rule: no credentials, no fragment, a host, and `https` or
/// `http` to a loopback host (`http` anywhere when `allow_insecure_http`).
pub fn checked_url(raw: &str, allow_insecure_http: bool) -> Result<Url, UrlError> {
    let url = Url::parse(raw).map_err(UrlError::Parse)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials(redact(&url)));
    }
    if url.fragment().is_some() {
        return Err(UrlError::Fragment(redact(&url)));
    }
    let host = url
        .host_str()
        .ok_or_else(|| UrlError::NoHost(redact(&url)))?
        .to_owned();
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure_http || is_loopback_host(&host) => Ok(url),
        "http" => Err(UrlError::InsecureHttp(host)),
        // A parsed scheme is ASCII alphanumerics, `+`, `-` and `.`: only its length can be odd.
        other if other.len() <= 32 => Err(UrlError::Scheme(format!("`{other}`"))),
        _ => Err(UrlError::Scheme("(not shown)".to_owned())),
    }
}

/// scheme://host[:port]/path: a URL as logs may show it (no credentials, query or fragment).
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// `localhost`, or a loopback address (IPv4, IPv6, or IPv4-mapped IPv6), brackets allowed.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// Builds the HTTP client fetchers share: rustls, no redirects (a redirect could lead to plain
/// HTTP or another host than the one configured), no cookies.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `max-age` of a `Cache-Control` header (RFC 9111 §5.2.2.1); the smallest when repeated.
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .min()
        .map(Duration::from_secs)
}

/// The response's `ETag` (RFC 9110 §8.8.3), kept opaque, to send back in `If-None-Match`.
pub fn etag(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(header::ETAG).cloned()
}

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Over the whole exchange: connect, headers and body.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_bytes: usize,
}

/// A fetched body and the caching headers that came with it.
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// `Cache-Control: max-age`, see [`max_age`].
    pub max_age: Option<Duration>,
    /// `ETag`, see [`etag`].
    pub etag: Option<HeaderValue>,
}

/// Why a GET (or POST) produced no body. Texts carry the method and the redacted URL only.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{method} {url} failed")]
    Request {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url} timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        url: String,
        timeout: Duration,
    },
    #[error("{method} {url} answered HTTP {status}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
    },
    #[error("{url}: document larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// GET `url` (already [`checked_url`]), accepting `accept`, within `limits`; only `200 OK` is
/// a success.
pub async fn get(
    client: &reqwest::Client,
    url: &Url,
    accept: &'static str,
    limits: Limits,
) -> Result<Fetched, FetchError> {
    let fetched = exchange(client, url, accept, limits, Send::Get(None)).await?;
    // Without `If-None-Match` a 304 is no answer we asked for.
    fetched.ok_or_else(|| FetchError::Status {
        method: "GET",
        url: redact(url),
        status: reqwest::StatusCode::NOT_MODIFIED.as_u16(),
    })
}

/// As [`get`], but conditional on `etag` (`If-None-Match`): `Ok(None)` when the server
/// answers `304 Not Modified`, so the copy the caller holds is still current.
pub async fn get_if_changed(
    client: &reqwest::Client,
    url: &Url,
    accept: &'static str,
    limits: Limits,
    etag: &HeaderValue,
) -> Result<Option<Fetched>, FetchError> {
    exchange(client, url, accept, limits, Send::Get(Some(etag))).await
}

/// A form POST (`application/x-www-form-urlencoded`, RFC 6749 §2.3.1 and RFC 7662 §2.1) to
/// `url` (already [`checked_url`]): `form` as the body, HTTP Basic credentials when `basic` is
/// set, within `limits`; only `200 OK` is a success. The body and the credentials are never
/// part of an error.
pub async fn post_form(
    client: &reqwest::Client,
    url: &Url,
    accept: &'static str,
    limits: Limits,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<Fetched, FetchError> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let fetched = exchange(client, url, accept, limits, Send::Form { body, basic }).await?;
    fetched.ok_or_else(|| FetchError::Status {
        method: "POST",
        url: redact(url),
        status: reqwest::StatusCode::NOT_MODIFIED.as_u16(),
    })
}

/// What one exchange sends.
enum Send<'a> {
    /// A GET, conditional on this `ETag` when set.
    Get(Option<&'a HeaderValue>),
    /// A form POST with this encoded body and optional HTTP Basic credentials.
    Form {
        body: String,
        basic: Option<(&'a str, &'a str)>,
    },
}

impl Send<'_> {
    fn method(&self) -> &'static str {
        match self {
            Self::Get(_) => "GET",
            Self::Form { .. } => "POST",
        }
    }
}

/// The timeout covers the whole exchange and the size cap is enforced while the body streams
/// (a missing or lying Content-Length must not let a body through).
async fn exchange(
    client: &reqwest::Client,
    url: &Url,
    accept: &'static str,
    limits: Limits,
    send: Send<'_>,
) -> Result<Option<Fetched>, FetchError> {
    let shown = redact(url);
    let method = send.method();
    let Limits {
        timeout,
        max_bytes: limit,
    } = limits;
    let exchange = async {
        let conditional = matches!(send, Send::Get(Some(_)));
        let mut request = match send {
            Send::Get(if_none_match) => {
                let mut request = client.get(url.clone());
                if let Some(etag) = if_none_match {
                    request = request.header(header::IF_NONE_MATCH, etag.clone());
                }
                request
            }
            Send::Form { body, basic } => {
                let mut request = client
                    .post(url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body);
                if let Some((user, password)) = basic {
                    // RFC 6749 §2.3.1: both parts form-encoded before Base64; reqwest marks
                    // the header sensitive.
                    request = request.basic_auth(form_encoded(user), Some(form_encoded(password)));
                }
                request
            }
        };
        request = request.header(header::ACCEPT, accept).timeout(timeout);
        let mut response = request
            .send()
            .await
            .map_err(|e| request_error(method, &shown, e, timeout))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && conditional {
            return Ok(None);
        }
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::Status {
                method,
                url: shown.clone(),
                status: status.as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(FetchError::TooLarge {
                url: shown.clone(),
                limit,
            });
        }
        let max_age = max_age(response.headers());
        let etag = etag(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| request_error(method, &shown, e, timeout))?
        {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge {
                    url: shown.clone(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(Fetched {
            body,
            max_age,
            etag,
        }))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout {
            method,
            url: shown.clone(),
            timeout,
        })?
}

/// `application/x-www-form-urlencoded` form of one value.
fn form_encoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn request_error(
    method: &'static str,
    url: &str,
    error: reqwest::Error,
    timeout: Duration,
) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout {
            method,
            url: url.to_owned(),
            timeout,
        }
    } else {
        // reqwest puts the full URL (query included) into its message; ours is redacted.
        FetchError::Request {
            method,
            url: url.to_owned(),
            source: error.without_url(),
        }
    }
}

/// The URL rule's cases, run against both the configuration check (`config`) and the fetcher
/// (`authn::jwks`) so the two cannot drift apart: (URL, allowed without `allow_insecure_http`).
/// Every URL is loopback or refused before any connection, and allowed ones name port 1, where
/// nothing listens.
#[cfg(test)]
pub(crate) const URL_RULE_CASES: &[(&str, bool)] = &[
    ("https://127.0.0.1:1/jwks", true),
    ("http://127.0.0.1:1/jwks", true),
    ("http://127.9.9.9:1/jwks", true),
    ("http://localhost:1/jwks", true),
    ("http://[::1]:1/jwks", true),
    ("http://[::ffff:127.0.0.1]:1/jwks", true),
    ("https://127.0.0.1:1/jwks?client=abc", true),
    ("http://192.0.2.1/jwks", false),
    ("http://localhost.example.com/jwks", false),
    ("https://user:pw@127.0.0.1:1/jwks", false),
    ("https://user@127.0.0.1:1/jwks", false),
    ("https://:pw@127.0.0.1:1/jwks", false),
    ("https://127.0.0.1:1/jwks#keys", false),
    ("https://127.0.0.1:1/jwks#", false),
    ("ftp://127.0.0.1:1/jwks", false),
    ("file:///etc/jwks.json", false),
    ("not a url", false),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_rule_table() {
        for &(url, allowed) in URL_RULE_CASES {
            assert_eq!(checked_url(url, false).is_ok(), allowed, "{url}");
        }
    }

    #[test]
    fn requires_https_except_to_loopback() {
        for ok in [
            "https://idp.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://[::1]:99/jwks",
            "http://localhost/jwks",
        ] {
            assert!(checked_url(ok, false).is_ok(), "{ok}");
        }
        for refused in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "http://localhost.example.com/jwks",
            "ftp://idp.example.com/jwks",
            "file:///etc/jwks.json",
            "not a url",
        ] {
            assert!(checked_url(refused, false).is_err(), "{refused}");
        }
        let error = checked_url("http://idp.example.com/jwks?token=x", false)
            .expect_err("plain http refused");
        assert!(matches!(error, UrlError::InsecureHttp(ref host) if host == "idp.example.com"));
        assert!(!error.to_string().contains("token=x"));
        assert!(checked_url("http://idp.example.com/jwks", true).is_ok());
        assert!(checked_url("ftp://idp.example.com/jwks", true).is_err());
    }

    #[test]
    fn refuses_credentials_and_fragments_even_with_insecure_http_allowed() {
        for refused in [
            "https://user:pw@idp.example.com/jwks",
            "http://user:pw@idp.example.com/jwks",
            "https://idp.example.com/jwks#s3cret",
        ] {
            let error = checked_url(refused, true).expect_err(refused);
            assert!(
                matches!(error, UrlError::Credentials(_) | UrlError::Fragment(_)),
                "{refused}: {error}"
            );
            let text = error.to_string();
            assert!(!text.contains("pw") && !text.contains("s3cret"), "{text}");
        }
    }

    #[test]
    fn logged_urls_lose_credentials_and_query() {
        let url = Url::parse("https://user:pw@idp.example.com:8443/keys?api_key=secret#frag")
            .expect("valid URL");
        assert_eq!(redact(&url), "https://idp.example.com:8443/keys");
    }

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name.clone(), value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn reads_max_age_from_cache_control() {
        let cache_control = |values: &[&str]| headers(header::CACHE_CONTROL, values);
        assert_eq!(
            max_age(&cache_control(&["public, max-age=300"])),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            max_age(&cache_control(&["Max-Age=\"60\", must-revalidate"])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            max_age(&cache_control(&["max-age=600", "max-age=120"])),
            Some(Duration::from_secs(120))
        );
        assert_eq!(max_age(&cache_control(&["s-maxage=60, no-cache"])), None);
        assert_eq!(max_age(&cache_control(&["max-age=soon"])), None);
        assert_eq!(max_age(&cache_control(&[])), None);
    }

    #[test]
    fn reads_the_etag_as_is() {
        assert_eq!(
            etag(&headers(header::ETAG, &["W/\"v7\""])),
            Some(HeaderValue::from_static("W/\"v7\""))
        );
        assert_eq!(etag(&HeaderMap::new()), None);
    }

    /// A one-connection-per-request HTTP/1.1 server: 304 when `If-None-Match` carries `"v1"`,
    /// else 200 with that ETag.
    async fn etag_server() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0; 4096];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).to_ascii_lowercase();
                let response = if request.contains("if-none-match: \"v1\"") {
                    "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\nconnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\netag: \"v1\"\r\ncache-control: max-age=60\r\n\
                     content-length: 2\r\nconnection: close\r\n\r\n{}"
                };
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn conditional_get_answers_not_modified_for_the_same_etag() {
        let addr = etag_server().await;
        let client = client().expect("client");
        let url = checked_url(&format!("http://{addr}/doc"), false).expect("loopback");
        let limits = Limits {
            timeout: Duration::from_secs(3),
            max_bytes: 1024,
        };
        let first = get(&client, &url, "application/json", limits)
            .await
            .expect("fetched");
        assert_eq!(first.body, b"{}");
        assert_eq!(first.max_age, Some(Duration::from_secs(60)));
        let tag = first.etag.expect("an etag");
        let again = get_if_changed(&client, &url, "application/json", limits, &tag)
            .await
            .expect("answered");
        assert!(again.is_none(), "304 means the copy held is current");
        let other = HeaderValue::from_static("\"v0\"");
        let changed = get_if_changed(&client, &url, "application/json", limits, &other)
            .await
            .expect("answered");
        assert_eq!(changed.map(|f| f.body), Some(b"{}".to_vec()));
    }

    /// A one-request HTTP/1.1 server answering `{}`; the request it read.
    async fn recording_server() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let addr = listener.local_addr().expect("address");
        let (sent, received) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0; 8192];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let _ = sent.send(String::from_utf8_lossy(&request[..n]).into_owned());
                let response =
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        (addr, received)
    }

    #[tokio::test]
    async fn a_form_post_encodes_the_form_and_the_basic_credentials_and_never_reports_them() {
        let (addr, request) = recording_server().await;
        let client = client().expect("client");
        let url = checked_url(&format!("http://{addr}/introspect"), false).expect("loopback");
        let limits = Limits {
            timeout: Duration::from_secs(3),
            max_bytes: 1024,
        };
        let form = [("token", "a+b/c=="), ("token_type_hint", "access_token")];
        let post = |url, basic| post_form(&client, url, "application/json", limits, &form, basic);
        let fetched = post(&url, Some(("id:1", "s3 cret")))
            .await
            .expect("answered");
        assert_eq!(fetched.body, b"{}");
        let request = request.await.expect("request recorded");
        assert!(
            request.starts_with("POST /introspect HTTP/1.1"),
            "{request}"
        );
        assert!(
            request.contains("content-type: application/x-www-form-urlencoded"),
            "{request}"
        );
        // RFC 6749 §2.3.1: id and secret form-encoded, then Base64 (`id%3A1:s3+cret`).
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode("id%3A1:s3+cret");
        assert!(
            request.contains(&format!("authorization: Basic {basic}")),
            "{request}"
        );
        assert!(
            request.ends_with("token=a%2Bb%2Fc%3D%3D&token_type_hint=access_token"),
            "{request}"
        );

        // Refused connection: the error names the method and the URL, never the form or secret.
        let closed = checked_url("http://127.0.0.1:1/introspect", false).expect("loopback");
        let error = post(&closed, Some(("id", "s3cret")))
            .await
            .expect_err("nothing listens on port 1");
        let text = crate::error::ErrorChain(&error).to_string();
        assert!(
            text.starts_with("POST http://127.0.0.1:1/introspect"),
            "{text}"
        );
        assert!(!text.contains("s3cret") && !text.contains("a+b"), "{text}");
    }
}
