//! What the servers, the reload task and the admin endpoints share: the current engine, the
//! key registry, telemetry, readiness, and the reload of the configuration file (a new engine
//! replaces the old one whole; a failed reload keeps the running one).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::authn::KeyRegistry;
use crate::authn::api_keys::ApiKeyStatus;
use crate::config::{self, Config, ConfigError, ServerConfig, TelemetryConfig};
use crate::engine::{Engine, Shared, SharedEngine};
use crate::revocation::{RevocationConfig, Revocations};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::ReloadResult;

/// Why a reload did not replace the running configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the agent was started without a configuration file")]
    NoConfigFile,
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("configuration loading task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The outcome of the last reload attempt, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    pub at: SystemTime,
    pub result: ReloadResult,
    /// One line per configuration problem (`file:line:column: path: message`).
    pub errors: Vec<String>,
}

/// State shared by the servers, the reload task and the admin endpoints.
#[derive(Debug)]
pub struct AppState {
    engine: SharedEngine,
    /// The key registry and token-cache counters every engine generation is built on.
    shared: Shared,
    telemetry: Arc<Telemetry>,
    /// `readiness.require_keys` of the configuration in use (the rest lives in the engine).
    require_keys: AtomicBool,
    config_path: Option<PathBuf>,
    /// Listeners and TLS as bound at start: they are not hot-reloadable.
    bound_server: ServerConfig,
    /// `telemetry:` as started (tracing is not hot-reloadable).
    bound_telemetry: TelemetryConfig,
    /// `revocation:` as started: its sources are not hot-reloadable either.
    bound_revocation: Option<RevocationConfig>,
    generation: AtomicU64,
    last_reload: Mutex<Option<ReloadRecord>>,
    restart_required: Mutex<Option<String>>,
    shutting_down: AtomicBool,
    /// One reload at a time (file watcher, SIGHUP, tests).
    reload_lock: tokio::sync::Mutex<()>,
}

/// Whether the agent should receive traffic now, and if not why (what `/readyz` and the gRPC
/// health service report). What it waits for is set by [`crate::config::ReadinessConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

impl Readiness {
    /// Why the agent is not ready; `None` when it is.
    pub fn not_ready_reason(self) -> Option<String> {
        match self {
            Self::Ready => None,
            Self::NotReady(reason) => Some(reason),
        }
    }
}

impl AppState {
    /// The state of an agent started with `config` (generation 1). `engine` was built on
    /// `shared`; each reloaded engine is too.
    pub(super) fn new(
        config: &Config,
        config_path: Option<PathBuf>,
        engine: SharedEngine,
        shared: Shared,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            engine,
            shared,
            telemetry,
            bound_server: config.server.clone(),
            bound_telemetry: config.telemetry.clone(),
            bound_revocation: config.revocation.clone(),
            require_keys: AtomicBool::new(config.readiness.require_keys),
            config_path,
            generation: AtomicU64::new(1),
            last_reload: Mutex::new(None),
            restart_required: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Listeners and TLS as bound at start.
    pub fn bound_server(&self) -> &ServerConfig {
        &self.bound_server
    }

    /// From now on the agent reports not ready (draining).
    pub(super) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn registry(&self) -> &Arc<KeyRegistry> {
        &self.shared.keys
    }

    /// The API keys store's status; `None` without `api_keys`.
    pub fn api_keys(&self) -> Option<ApiKeyStatus> {
        self.shared.api_keys.status()
    }

    /// The revocation store (empty, with no source, without `revocation:`).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.shared.revocations
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// 1 for the configuration the agent started with, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.last_reload.lock().ok().and_then(|r| r.clone())
    }

    /// Set when a reloaded configuration changes listeners or TLS, which only a restart applies.
    pub fn restart_required(&self) -> Option<String> {
        self.restart_required.lock().ok().and_then(|r| r.clone())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Ready when not draining and, unless `readiness.require_keys` is off, every issuer has
    /// keys (fail closed: without keys every token would be refused with 503).
    pub fn readiness(&self) -> Readiness {
        if self.is_shutting_down() {
            return Readiness::NotReady("shutting down".to_owned());
        }
        if self.require_keys.load(Ordering::SeqCst) && !self.shared.keys.ready() {
            let waiting: Vec<String> = self
                .shared
                .keys
                .status()
                .into_iter()
                .filter(|s| s.keys == 0)
                .map(|s| s.name)
                .collect();
            return Readiness::NotReady(if waiting.is_empty() {
                "issuer keys not loaded yet".to_owned()
            } else {
                format!("no keys yet for issuer(s): {}", waiting.join(", "))
            });
        }
        // `revocation.require_sync`: a pod that never loaded its revocations may not serve.
        let unsynced = self.shared.revocations.waiting_for();
        if !unsynced.is_empty() {
            let names: Vec<&str> = unsynced.iter().map(|source| source.as_str()).collect();
            return Readiness::NotReady(format!(
                "revocation source(s) not loaded yet: {}",
                names.join(", ")
            ));
        }
        Readiness::Ready
    }

    /// Reloads the configuration file: on success a new engine replaces the old one whole; on
    /// failure the running configuration stays, and the errors are logged once, counted and
    /// shown in `/status`.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let path = self.config_path.clone().ok_or(ReloadError::NoConfigFile)?;
        let _one_at_a_time = self.reload_lock.lock().await;
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(ReloadError::Task)?;
        match loaded {
            Ok(config) => Ok(self.apply(config)),
            Err(error) => {
                let generation = self.generation();
                tracing::warn!(
                    generation,
                    errors = error.errors.len(),
                    "configuration reload failed, keeping the running configuration:\n{error}"
                );
                self.telemetry.metrics().reload(ReloadResult::Failure);
                self.record_reload(
                    ReloadResult::Failure,
                    error.errors.iter().map(|e| e.to_string()).collect(),
                );
                Err(ReloadError::Config(error))
            }
        }
    }

    fn apply(&self, config: Config) -> u64 {
        let engine = Engine::new(&config, &self.shared);
        self.engine.store(Arc::new(engine));
        // After the swap: stores of removed issuers stop refreshing; in-flight checks on the
        // old engine keep their own handles until they finish.
        self.shared.keys.retain(&config.issuers);
        self.shared.api_keys.retain(config.api_keys.as_ref());

        let mut changed = server_changes(&self.bound_server, &config.server);
        if config.telemetry.tracing != self.bound_telemetry.tracing {
            changed.push("telemetry.tracing");
        }
        if config.revocation.is_some() && config.revocation != self.bound_revocation {
            changed.push("revocation");
        }
        let restart = (!changed.is_empty()).then(|| {
            format!(
                "{} changed; listeners, TLS, tracing and revocation sources are not \
                 hot-reloadable: still serving with the settings of the start, restart to apply",
                changed.join(", ")
            )
        });
        if let Some(note) = &restart {
            tracing::warn!("{note}");
        }
        if let Ok(mut slot) = self.restart_required.lock() {
            *slot = restart;
        }
        self.require_keys
            .store(config.readiness.require_keys, Ordering::SeqCst);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.telemetry.metrics().set_generation(generation);
        self.telemetry.metrics().reload(ReloadResult::Success);
        self.record_reload(ReloadResult::Success, Vec::new());
        tracing::info!(generation, "configuration reloaded");
        generation
    }

    fn record_reload(&self, result: ReloadResult, errors: Vec<String>) {
        if let Ok(mut slot) = self.last_reload.lock() {
            *slot = Some(ReloadRecord {
                at: SystemTime::now(),
                result,
                errors,
            });
        }
    }
}

/// Which non-reloadable server settings differ.
fn server_changes(bound: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let ServerConfig {
        grpc_listen,
        http_listen,
        admin_listen,
        tls,
        connections,
    } = new;
    let mut changed = Vec::new();
    if *grpc_listen != bound.grpc_listen {
        changed.push("server.grpc_listen");
    }
    if *http_listen != bound.http_listen {
        changed.push("server.http_listen");
    }
    if *admin_listen != bound.admin_listen {
        changed.push("server.admin_listen");
    }
    if *tls != bound.tls {
        changed.push("server.tls");
    }
    if *connections != bound.connections {
        changed.push("server.connections");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;
    use crate::testing::minimal_config;

    #[test]
    fn listener_and_tls_changes_are_reported_as_needing_a_restart() {
        let bound = minimal_config().server;
        let mut new = bound.clone();
        assert!(server_changes(&bound, &new).is_empty());
        new.grpc_listen = "127.0.0.1:9191".parse().expect("addr");
        new.tls = Some(TlsConfig {
            cert_file: "c".into(),
            key_file: "k".into(),
            client_ca_file: None,
        });
        assert_eq!(
            server_changes(&bound, &new),
            vec!["server.grpc_listen", "server.tls"]
        );
    }
}
