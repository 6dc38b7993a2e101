//! The admin HTTP server (`server.admin_listen`): `GET /healthz` (liveness), `GET /readyz`
//! (readiness: configuration loaded and, unless `readiness.require_keys` is off, keys for every
//! issuer), `GET /status` (JSON: build, configuration generation and last reload, key sets, the
//! API keys file and each key's last use) and
//! `GET /metrics` (Prometheus text format).
//!
//! It reports state and changes nothing. It must never show a secret: no token, no key
//! material, no header value — only names, counts, times and error texts that carry none.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;

use crate::app::state::AppState;
use crate::revocation::Timestamp;
use crate::telemetry::metrics;

/// The admin application.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Liveness: answers while the process serves, draining included (restarting a draining agent
/// would cut the checks it is finishing).
async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({"status": "ok"})),
    )
}

#[derive(Debug, Serialize)]
struct ReadyBody {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let reason = state.readiness().not_ready_reason();
    let status = match reason {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = ReadyBody {
        ready: reason.is_none(),
        reason,
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub version: &'static str,
    pub commit: &'static str,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<String>,
    pub config: ConfigStatus,
    pub issuers: Vec<IssuerStatus>,
    /// The API keys file; absent without `api_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeysStatus>,
    /// Absent without `revocation:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationStatus>,
}

/// The keys file in use: never a hash or a key.
#[derive(Debug, Serialize)]
pub struct ApiKeysStatus {
    pub file: String,
    pub keys: usize,
    /// The located problems of the last version of the file that was refused (the keys in use
    /// are the last good ones); `null` once a good version loads.
    pub last_error: Option<Vec<String>>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Per key id: subject, last accepted use and checks by outcome (`unknown` counts the
    /// attempts that named no key of the file).
    pub keys_by_id: Vec<KeyUseStatus>,
}

#[derive(Debug, Serialize)]
pub struct KeyUseStatus {
    pub id: String,
    pub subject: String,
    /// RFC 3339, UTC; `null` when never used.
    pub last_used: Option<String>,
    pub last_used_unix: Option<u64>,
    pub checks: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct RevocationStatus {
    /// Entries in force (all sources merged).
    pub entries: usize,
    /// Entries NOT enforced because the sources name more than `max_entries`.
    pub dropped: usize,
    pub sources: Vec<RevocationSourceStatus>,
}

#[derive(Debug, Serialize)]
pub struct RevocationSourceStatus {
    pub source: &'static str,
    /// Entries of the source's last good list.
    pub entries: usize,
    /// Seconds since the source was last read successfully; absent before the first success.
    pub sync_age_seconds: Option<u64>,
    /// The last failure to read it (the last good list stays in force); cleared on success.
    pub last_error: Option<String>,
    /// Entries or messages refused since start (malformed, or over the source's ceiling).
    pub skipped: u64,
}

#[derive(Debug, Serialize)]
pub struct ConfigStatus {
    pub path: Option<String>,
    pub generation: u64,
    /// Set when a reload changed listeners or TLS, which only a restart applies.
    pub restart_required: Option<String>,
    pub last_reload: Option<ReloadStatus>,
}

#[derive(Debug, Serialize)]
pub struct ReloadStatus {
    /// RFC 3339, UTC.
    pub at: String,
    pub at_unix: u64,
    /// `success` or `failure`.
    pub result: &'static str,
    /// The configuration problems of a failed reload, one located line each.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct IssuerStatus {
    pub name: String,
    pub issuer: String,
    pub keys: usize,
    /// Seconds since the key set in use was fetched; absent when there never was one.
    pub key_age_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
}

impl StatusReport {
    pub fn collect(state: &AppState) -> Self {
        let not_ready_reason = state.readiness().not_ready_reason();
        let ready = not_ready_reason.is_none();
        let last_reload = state.last_reload().map(|record| ReloadStatus {
            at: humantime::format_rfc3339_seconds(record.at).to_string(),
            at_unix: record
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            result: record.result.as_str(),
            errors: record.errors,
        });
        let issuers = state
            .registry()
            .status()
            .into_iter()
            .map(|s| IssuerStatus {
                name: s.name,
                issuer: s.issuer,
                keys: s.keys,
                key_age_seconds: s.age.map(|a| (a.as_secs_f64() * 1000.0).round() / 1000.0),
                last_error: s.last_error,
                fetches_ok: s.fetches_ok,
                fetches_failed: s.fetches_failed,
            })
            .collect();
        let revocations = state.revocations();
        let sources = revocations.status();
        let revocation = (!sources.is_empty()).then(|| {
            let now = Timestamp::now().0;
            let set = revocations.snapshot();
            RevocationStatus {
                entries: set.len(),
                dropped: set.dropped(),
                sources: sources
                    .into_iter()
                    .map(|s| RevocationSourceStatus {
                        source: s.source.as_str(),
                        entries: s.entries,
                        sync_age_seconds: s.synced_at.map(|at| now.saturating_sub(at)),
                        last_error: s.error,
                        skipped: s.skipped,
                    })
                    .collect(),
            }
        });
        Self {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("PORTCULLIS_GIT_SHA"),
            ready,
            not_ready_reason,
            config: ConfigStatus {
                path: state.config_path().map(|p| p.display().to_string()),
                generation: state.generation(),
                restart_required: state.restart_required(),
                last_reload,
            },
            issuers,
            api_keys: state.api_keys().map(|status| ApiKeysStatus {
                file: status.file.display().to_string(),
                keys: status.keys,
                last_error: status.last_error,
                reloads_ok: status.reloads_ok,
                reloads_failed: status.reloads_failed,
                keys_by_id: status
                    .per_key
                    .into_iter()
                    .map(|key| KeyUseStatus {
                        last_used: key.last_used.map(|at| {
                            humantime::format_rfc3339_seconds(
                                UNIX_EPOCH + std::time::Duration::from_secs(at),
                            )
                            .to_string()
                        }),
                        last_used_unix: key.last_used,
                        checks: key
                            .counts
                            .into_iter()
                            .map(|(outcome, count)| (outcome.as_str(), count))
                            .collect(),
                        id: key.id,
                        subject: key.subject,
                    })
                    .collect(),
            }),
            revocation,
        }
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(StatusReport::collect(&state)),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.telemetry().metrics().encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => {
            tracing::error!("cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::minimal_config;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn get_path(app: Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = app
            .oneshot(
                axum::http::Request::get(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 1024 * 1024)
            .await
            .expect("body");
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn endpoints_answer_on_a_running_agent() {
        let mut config = minimal_config();
        config.readiness.require_keys = false;
        let app = crate::app::start(config, None).await.expect("starts");
        let router = router(app.state().clone());

        let (status, _, _) = get_path(router.clone(), "/healthz").await;
        assert_eq!(status, StatusCode::OK);

        let (status, _, body) = get_path(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let (status, content_type, body) = get_path(router.clone(), "/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let report: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(report["commit"], env!("PORTCULLIS_GIT_SHA"));
        assert_eq!(report["config"]["generation"], 1);
        assert!(report["config"]["last_reload"].is_null());

        let (status, content_type, body) = get_path(router.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(metrics::CONTENT_TYPE));
        assert!(body.contains("portcullis_config_generation 1"), "{body}");

        app.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn readyz_is_503_with_a_reason_while_draining() {
        let mut config = minimal_config();
        config.readiness.require_keys = false;
        let app = crate::app::start(config, None).await.expect("starts");
        let state = app.state().clone();
        app.shutdown().await.expect("clean shutdown");
        let (status, _, body) = get_path(router(state), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["ready"], false);
        assert_eq!(body["reason"], "shutting down");
    }
}
