//! An echoing application for end-to-end tests: it answers every request with a JSON of the
//! method, the path (with query) and every header it received, so a test asserts what the
//! application behind Envoy really sees (identity headers set, credential gone, no forged
//! `x-auth-*`). It also counts requests, so a test can prove a denied request never arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Request, State};

/// What the application received, as echoed back in the response body.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Echo {
    pub method: String,
    /// Path and query as received.
    pub path: String,
    /// Every header in arrival order; names lower-case, repeated names kept apart.
    pub headers: Vec<(String, String)>,
}

impl Echo {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A running echo server on `127.0.0.1:0`, stopped on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let hits = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new()
            .fallback(echo)
            .with_state(Arc::clone(&hits));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, hits, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(State(hits): State<Arc<AtomicU64>>, request: Request) -> Json<Echo> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Json(Echo {
        method: request.method().as_str().to_owned(),
        path,
        headers,
    })
}
