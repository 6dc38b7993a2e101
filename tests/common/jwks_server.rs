//! A JWKS and OIDC discovery server under the test's control.
//!
//! Binds `127.0.0.1:0` and serves, over plain HTTP/1.1:
//! - the JWKS document at `/jwks` and at any path starting with `/jwks` (`/jwks-a`, `/jwks?x=1`),
//!   so several stores can share one server and still be counted apart;
//! - `/.well-known/openid-configuration` with `issuer` = the server's base URL (overridable)
//!   and `jwks_uri` = `{base}/jwks`, or a document the test sets.
//!
//! The test can swap the content at any time, set `Cache-Control` and chunked transfer (no
//! `Content-Length`), delay answers, make the server fail (500), hang (accept and never
//! answer), or go down (stop listening and drop every connection, kept-alive ones included)
//! and come back on the same port. Every request is counted per path before it is answered.
//! Dropping the server stops it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub const JWKS_PATH: &str = "/jwks";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// 500 to every request.
    Fail,
    /// Accepts, reads the request, never answers.
    Hang,
}

#[derive(Debug)]
struct Content {
    base_url: String,
    jwks: Bytes,
    discovery: Option<Value>,
    discovery_issuer: Option<String>,
    cache_control: Option<String>,
    chunked: bool,
    delay: Duration,
    mode: Mode,
}

#[derive(Debug)]
struct Shared {
    content: Mutex<Content>,
    counts: Mutex<HashMap<String, usize>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `{"keys": [...]}`.
pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

#[derive(Debug)]
pub struct JwksServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl JwksServer {
    /// Starts serving `document` as the JWKS.
    pub async fn start(document: &Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            content: Mutex::new(Content {
                base_url: format!("http://{addr}"),
                jwks: Bytes::from(serde_json::to_vec(document).expect("serializable JWKS")),
                discovery: None,
                discovery_issuer: None,
                cache_control: None,
                chunked: false,
                delay: Duration::ZERO,
                mode: Mode::Serve,
            }),
            counts: Mutex::new(HashMap::new()),
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

    /// `http://127.0.0.1:PORT`, also the default discovery `issuer`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base_url())
    }

    /// `{base}{path}`; any path starting with `/jwks` serves the JWKS.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn set_jwks(&self, document: &Value) {
        self.set_jwks_bytes(serde_json::to_vec(document).expect("serializable JWKS"));
    }

    pub fn set_jwks_bytes(&self, body: impl Into<Bytes>) {
        lock(&self.shared.content).jwks = body.into();
    }

    /// The `issuer` the discovery document names (`None`: the base URL).
    pub fn set_discovery_issuer(&self, issuer: Option<&str>) {
        lock(&self.shared.content).discovery_issuer = issuer.map(str::to_owned);
    }

    /// Serve exactly this discovery document (`None`: the generated one).
    pub fn set_discovery(&self, document: Option<Value>) {
        lock(&self.shared.content).discovery = document;
    }

    /// The `Cache-Control` header of JWKS answers (`None`: no header).
    pub fn set_cache_control(&self, value: Option<&str>) {
        lock(&self.shared.content).cache_control = value.map(str::to_owned);
    }

    /// Send bodies chunked, without `Content-Length`.
    pub fn set_chunked(&self, chunked: bool) {
        lock(&self.shared.content).chunked = chunked;
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.content).delay = delay;
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared.content).mode = mode;
    }

    pub fn fail(&self) {
        self.set_mode(Mode::Fail);
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
        lock(&self.shared.counts).get(path).copied().unwrap_or(0)
    }

    pub fn jwks_requests(&self) -> usize {
        self.requests(JWKS_PATH)
    }

    pub fn discovery_requests(&self) -> usize {
        self.requests(DISCOVERY_PATH)
    }

    pub fn reset_counts(&self) {
        lock(&self.shared.counts).clear();
    }
}

impl Drop for JwksServer {
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
    *lock(&shared.counts).entry(path.clone()).or_default() += 1;
    let (mode, delay) = {
        let content = lock(&shared.content);
        (content.mode, content.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match mode {
        Mode::Serve => {}
        Mode::Fail => return plain(StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose"),
        Mode::Hang => std::future::pending::<()>().await,
    }
    let content = lock(&shared.content);
    let (body, cache_control) = if path == DISCOVERY_PATH {
        let document = content.discovery.clone().unwrap_or_else(|| {
            json!({
                "issuer": content.discovery_issuer.clone().unwrap_or_else(|| content.base_url.clone()),
                "jwks_uri": format!("{}{JWKS_PATH}", content.base_url),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            })
        });
        (
            Bytes::from(serde_json::to_vec(&document).expect("serializable discovery document")),
            None,
        )
    } else if path.starts_with(JWKS_PATH) {
        (content.jwks.clone(), content.cache_control.clone())
    } else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = cache_control {
        response = response.header(header::CACHE_CONTROL, value);
    }
    let body = if content.chunked {
        // A stream of unknown length goes out chunked: no Content-Length to trust.
        let chunks: Vec<Result<Bytes, Infallible>> = body
            .chunks(1024)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(body)
    };
    response.body(body).expect("valid response")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}
