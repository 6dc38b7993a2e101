//! An HTTP server under the test's control, for everything portcullis fetches: JWKS and OIDC
//! discovery today ([`JwksServer`], below), token introspection and the revocation feed next.
//!
//! [`HttpServer`] binds `127.0.0.1:0` and answers over plain HTTP/1.1 with the [`Reply`] set
//! for the request's path (an exact path, or a path prefix so several clients can share one
//! server and still be counted apart); any other path is a 404. The test can change a reply at
//! any time, send bodies chunked (no `Content-Length`), delay answers, make the server fail
//! with a status, hang (accept, read the request, never answer), or go down (stop listening and
//! drop every connection, kept-alive ones included) and come back on the same port. Every
//! request is counted per path before it is answered, and the last request's headers are kept.
//! Dropping the server stops it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How the server answers, whatever the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The reply set for the path.
    Serve,
    /// This status, with a short plain-text body, to every request.
    Fail(StatusCode),
    /// Accepts, reads the request, never answers.
    Hang,
}

/// One answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// `status` with an empty body and no headers.
    pub fn status(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// 200 with `body` and `Content-Type: application/json`.
    pub fn json_bytes(body: impl Into<Bytes>) -> Self {
        Self::status(StatusCode::OK)
            .body(body)
            .header(header::CONTENT_TYPE, "application/json")
    }

    /// 200 with `document` serialized and `Content-Type: application/json`.
    pub fn json(document: &Value) -> Self {
        Self::json_bytes(serde_json::to_vec(document).expect("serializable JSON"))
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a header (a second call with the same name adds a second value).
    pub fn header<N>(mut self, name: N, value: &str) -> Self
    where
        N: TryInto<HeaderName>,
        N::Error: std::fmt::Debug,
    {
        self.headers.append(
            name.try_into().expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

#[derive(Debug)]
struct Behaviour {
    /// First match wins.
    replies: Vec<(PathMatch, Reply)>,
    chunked: bool,
    delay: Duration,
    mode: Mode,
}

#[derive(Debug, Default)]
struct Seen {
    counts: HashMap<String, usize>,
    last_headers: Option<HeaderMap>,
}

#[derive(Debug)]
struct Shared {
    behaviour: Mutex<Behaviour>,
    seen: Mutex<Seen>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl HttpServer {
    /// Starts a server with no replies set (every path is a 404).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour {
                replies: Vec::new(),
                chunked: false,
                delay: Duration::ZERO,
                mode: Mode::Serve,
            }),
            seen: Mutex::new(Seen::default()),
        });
        let serving = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            serving: Mutex::new(Some(serving)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Answer `path` (exactly; the query is not part of it) with `reply`.
    pub fn serve(&self, path: &str, reply: Reply) {
        self.set_reply(PathMatch::Exact(path.to_owned()), reply);
    }

    /// Answer every path starting with `prefix` with `reply`.
    pub fn serve_prefix(&self, prefix: &str, reply: Reply) {
        self.set_reply(PathMatch::Prefix(prefix.to_owned()), reply);
    }

    fn set_reply(&self, matcher: PathMatch, reply: Reply) {
        let replies = &mut lock(&self.shared.behaviour).replies;
        match replies.iter_mut().find(|(m, _)| *m == matcher) {
            Some((_, slot)) => *slot = reply,
            None => replies.push((matcher, reply)),
        }
    }

    /// Send bodies chunked, without `Content-Length`.
    pub fn set_chunked(&self, chunked: bool) {
        lock(&self.shared.behaviour).chunked = chunked;
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.behaviour).delay = delay;
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared.behaviour).mode = mode;
    }

    /// 500 to every request.
    pub fn fail(&self) {
        self.fail_with(StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// `status` to every request.
    pub fn fail_with(&self, status: StatusCode) {
        self.set_mode(Mode::Fail(status));
    }

    pub fn hang(&self) {
        self.set_mode(Mode::Hang);
    }

    /// Back to answering normally (after `fail` or `hang`).
    pub fn recover(&self) {
        self.set_mode(Mode::Serve);
    }

    /// Stops listening and drops every open connection; returns once the port is closed.
    pub async fn go_down(&self) {
        let serving = lock(&self.serving).take();
        if let Some(serving) = serving {
            serving.abort();
            // The task's drop closes the listener and aborts the connection tasks.
            let _ = serving.await;
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&self) {
        if lock(&self.serving).is_some() {
            return;
        }
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("cannot rebind {}: {error}", self.addr),
            }
        };
        let serving = tokio::spawn(serve(listener, Arc::clone(&self.shared)));
        *lock(&self.serving) = Some(serving);
    }

    /// Requests received for exactly this path (query excluded).
    pub fn requests(&self, path: &str) -> usize {
        lock(&self.shared.seen)
            .counts
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received, all paths together.
    pub fn total_requests(&self) -> usize {
        lock(&self.shared.seen).counts.values().sum()
    }

    /// The headers of the last request received (any path); `None` before the first.
    pub fn last_request_headers(&self) -> Option<HeaderMap> {
        lock(&self.shared.seen).last_headers.clone()
    }

    pub fn reset_counts(&self) {
        lock(&self.shared.seen).counts.clear();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(serving) = lock(&self.serving).take() {
            serving.abort();
        }
    }
}

/// Accept loop. Connections live in a `JoinSet` owned by this task, so aborting it closes the
/// listener and every connection at once.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(answer(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    {
        let mut seen = lock(&shared.seen);
        *seen.counts.entry(path.clone()).or_default() += 1;
        seen.last_headers = Some(request.headers().clone());
    }
    let (mode, delay) = {
        let behaviour = lock(&shared.behaviour);
        (behaviour.mode, behaviour.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match mode {
        Mode::Serve => {}
        Mode::Fail(status) => return plain(status, "failing on purpose"),
        Mode::Hang => std::future::pending::<()>().await,
    }
    let behaviour = lock(&shared.behaviour);
    let Some((_, reply)) = behaviour.replies.iter().find(|(m, _)| m.matches(&path)) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let mut response = Response::builder().status(reply.status);
    if let Some(headers) = response.headers_mut() {
        headers.extend(reply.headers.clone());
    }
    let body = if behaviour.chunked {
        // A stream of unknown length goes out chunked: no Content-Length to trust.
        let chunks: Vec<Result<Bytes, Infallible>> = reply
            .body
            .chunks(1024)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(reply.body.clone())
    };
    response.body(body).expect("valid response")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

// ---- JWKS and OIDC discovery --------------------------------------------------------------

pub const JWKS_PATH: &str = "/jwks";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// `{"keys": [...]}`.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

/// An [`HttpServer`] serving:
/// - the JWKS document at `/jwks` and at any path starting with `/jwks` (`/jwks-a`, `/jwks?x=1`),
///   so several stores can share one server and still be counted apart;
/// - `/.well-known/openid-configuration` with `issuer` = the server's base URL (overridable)
///   and `jwks_uri` = `{base}/jwks`, or a document the test sets.
///
/// Everything else (fail, hang, delay, chunked, go down, counts) is the [`HttpServer`]'s.
#[derive(Debug)]
pub struct JwksServer {
    http: HttpServer,
    content: Mutex<JwksContent>,
}

#[derive(Debug)]
struct JwksContent {
    jwks: Bytes,
    cache_control: Option<String>,
    discovery: Option<Value>,
    discovery_issuer: Option<String>,
}

impl std::ops::Deref for JwksServer {
    type Target = HttpServer;

    fn deref(&self) -> &HttpServer {
        &self.http
    }
}

impl JwksServer {
    /// Starts serving `document` as the JWKS.
    pub async fn start(document: &Value) -> Self {
        let server = Self {
            http: HttpServer::start().await,
            content: Mutex::new(JwksContent {
                jwks: Bytes::from(serde_json::to_vec(document).expect("serializable JWKS")),
                cache_control: None,
                discovery: None,
                discovery_issuer: None,
            }),
        };
        server.publish_jwks();
        server.publish_discovery();
        server
    }

    /// The HTTP server underneath.
    pub fn http(&self) -> &HttpServer {
        &self.http
    }

    pub fn jwks_url(&self) -> String {
        self.url(JWKS_PATH)
    }

    pub fn set_jwks(&self, document: &Value) {
        self.set_jwks_bytes(serde_json::to_vec(document).expect("serializable JWKS"));
    }

    pub fn set_jwks_bytes(&self, body: impl Into<Bytes>) {
        lock(&self.content).jwks = body.into();
        self.publish_jwks();
    }

    /// The `issuer` the discovery document names (`None`: the base URL).
    pub fn set_discovery_issuer(&self, issuer: Option<&str>) {
        lock(&self.content).discovery_issuer = issuer.map(str::to_owned);
        self.publish_discovery();
    }

    /// Serve exactly this discovery document (`None`: the generated one).
    pub fn set_discovery(&self, document: Option<Value>) {
        lock(&self.content).discovery = document;
        self.publish_discovery();
    }

    /// The `Cache-Control` header of JWKS answers (`None`: no header).
    pub fn set_cache_control(&self, value: Option<&str>) {
        lock(&self.content).cache_control = value.map(str::to_owned);
        self.publish_jwks();
    }

    pub fn jwks_requests(&self) -> usize {
        self.requests(JWKS_PATH)
    }

    pub fn discovery_requests(&self) -> usize {
        self.requests(DISCOVERY_PATH)
    }

    fn publish_jwks(&self) {
        let content = lock(&self.content);
        let mut reply = Reply::json_bytes(content.jwks.clone());
        if let Some(value) = &content.cache_control {
            reply = reply.header(header::CACHE_CONTROL, value);
        }
        self.http.serve_prefix(JWKS_PATH, reply);
    }

    fn publish_discovery(&self) {
        let content = lock(&self.content);
        let base_url = self.base_url();
        let document = content.discovery.clone().unwrap_or_else(|| {
            json!({
                "issuer": content.discovery_issuer.clone().unwrap_or_else(|| base_url.clone()),
                "jwks_uri": format!("{base_url}{JWKS_PATH}"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            })
        });
        self.http.serve(DISCOVERY_PATH, Reply::json(&document));
    }
}
