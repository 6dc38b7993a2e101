//! Wiring: the process-lifetime pieces (key registry, token-cache counters, telemetry, the
//! current engine), the configuration reload task, and [`RunningApp`]. The listeners, their
//! servers (gRPC `ext_authz` + `grpc.health.v1`, admin HTTP, optional HTTP `ext_authz`) and the
//! ordered shutdown are `servers`. What the servers, the reload task and the admin endpoints
//! share is [`state::AppState`]: `admin` imports that, never this module.
//!
//! [`start`] binds every listener (port 0 allowed: the real ports are reported) and returns a
//! [`RunningApp`]; [`run`] is what the binary calls: load, start, wait for a signal, drain.
//! Nothing here exits the process or decides a request; a failure is an [`AppError`] for `main`.

mod servers;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::reload::ConfigWatcher;
use crate::config::{self, Config, ConfigError};
use crate::engine::{Engine, Shared, SharedEngine};
use crate::http::HttpAuthzOptions;
use crate::revocation::{self, Revocations, Source};
use crate::service::CheckService;
use crate::telemetry::{Telemetry, TelemetryOptions};
use servers::{Listeners, stopped};
pub use state::{AppState, Readiness, ReloadError, ReloadRecord};

/// Quiet time after the last change to the configuration file before it is reloaded, so an
/// editor's or `kubectl`'s series of writes becomes one reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);

/// Why the agent cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({listener})")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read TLS file {}", path.display())]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration rejected (certificate, key or client CA)")]
    Tls(#[source] tonic::transport::Error),
    #[error("cannot install the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
    #[error("a server task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot select the JWT crypto provider")]
    CryptoProvider(#[from] crate::authn::jwt::CryptoProviderConflict),
}

/// Options of [`start_with`] that are not (yet) part of the configuration file.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub telemetry: TelemetryOptions,
    pub http: HttpAuthzOptions,
    /// Watch the configuration file and reload on change (when a path is given).
    pub watch_config: bool,
    /// Longest wait for in-flight checks at shutdown before connections are cut.
    pub drain_timeout: Duration,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            telemetry: TelemetryOptions::default(),
            http: HttpAuthzOptions::default(),
            watch_config: true,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// A started agent. Dropping it asks it to stop; [`RunningApp::shutdown`] also waits.
#[derive(Debug)]
pub struct RunningApp {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    /// Set to `true` to ask the agent to stop (idempotent).
    shutdown: watch::Sender<bool>,
    supervisor: Option<JoinHandle<Result<(), AppError>>>,
}

impl RunningApp {
    /// The bound gRPC address (the real port when the configuration said 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Reloads the configuration file now (as a file change or SIGHUP does).
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        self.state.reload().await
    }

    /// Waits until the agent has stopped: after a shutdown request, or when a server failed
    /// (its error is returned). Returns `Ok(())` when called again after that.
    pub async fn wait(&mut self) -> Result<(), AppError> {
        match self.supervisor.as_mut() {
            None => Ok(()),
            Some(task) => {
                let result = task.await;
                self.supervisor = None;
                result.map_err(AppError::Task)?
            }
        }
    }

    /// Stops accepting, drains in-flight checks (bounded), stops the admin server.
    pub async fn shutdown(mut self) -> Result<(), AppError> {
        self.shutdown.send_replace(true);
        self.wait().await
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Installs the process-wide crypto providers, before anything builds a TLS configuration or
/// verifies a token: rustls' aws-lc-rs provider (the TLS listener, the JWKS fetches) and
/// jsonwebtoken's aws-lc-rs provider. Safe to call again.
pub fn install_crypto_providers() -> Result<(), AppError> {
    // Err only means a provider is already installed. Chosen explicitly so the backend never
    // depends on which rustls features other crates happen to enable.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    crate::authn::jwt::install_crypto_provider()?;
    Ok(())
}

/// The binary's entry: load `config_path`, start, serve until SIGTERM/SIGINT, drain, return.
/// SIGHUP reloads the configuration.
pub async fn run(config_path: PathBuf) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};

    let config = config::load(&config_path)?;
    let signal_error = |signal| move |source| AppError::Signal { signal, source };
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error("SIGTERM"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error("SIGINT"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error("SIGHUP"))?;

    let mut app = start(config, Some(config_path)).await?;
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM received, draining");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received, draining");
                break;
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received, reloading the configuration");
                // Failures are logged, counted and shown in /status by `reload` itself.
                let _ = app.reload().await;
            }
            stopped = app.wait() => return stopped,
        }
    }
    app.shutdown().await
}

/// Starts the agent for `config` with the default [`StartOptions`]. `config_path` is the file
/// reloads read (and watch); `None` disables reloading.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<RunningApp, AppError> {
    start_with(config, config_path, StartOptions::default()).await
}

/// Binds every listener, starts the servers and background tasks, and returns once the agent
/// accepts connections.
pub async fn start_with(
    config: Config,
    config_path: Option<PathBuf>,
    options: StartOptions,
) -> Result<RunningApp, AppError> {
    install_crypto_providers()?;

    // Everything that can fail on bad input (listeners, TLS files) before any task starts.
    let listeners = Listeners::bind(&config.server).await?;
    let (grpc_addr, admin_addr, http_addr) = (
        listeners.grpc_addr,
        listeners.admin_addr,
        listeners.http_addr,
    );

    // Tracing first: the key stores' first fetches start with the engine, and are traced.
    let mut telemetry = Telemetry::with_options(options.telemetry.clone());
    telemetry.start_tracing(&config.telemetry.tracing);
    let telemetry = Arc::new(telemetry);
    let shared = Shared {
        revocations: Arc::new(revocation_store(&config)),
        ..Shared::default()
    };
    let engine: SharedEngine = Arc::new(ArcSwap::from_pointee(Engine::new(&config, &shared)));
    telemetry.metrics().observe_keys(shared.keys.clone());
    telemetry
        .metrics()
        .observe_token_cache(shared.cache_counters.clone());
    telemetry
        .metrics()
        .observe_api_keys(shared.api_keys.clone());
    if config.revocation.is_some() {
        telemetry
            .metrics()
            .observe_revocations(shared.revocations.clone());
    }
    // Watched first and read once before the first check is served, so a revocation on disk is
    // never missed at start, nor one written while it is read; a bad file is reported and the
    // agent stays not ready (`require_sync`).
    let revocation_file = config.revocation.as_ref().and_then(|r| r.file.clone());
    let revocation_watcher = revocation_file.as_deref().map(|file| {
        let watcher = revocation::file::watch(file);
        let _ = revocation::file::refresh(file, &shared.revocations);
        watcher
    });
    let revocations = shared.revocations.clone();
    telemetry.metrics().set_generation(1);

    let state = Arc::new(AppState::new(
        &config,
        config_path,
        engine.clone(),
        shared,
        telemetry.clone(),
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let check_service = CheckService::new(engine, telemetry);
    let mut servers = servers::start(
        listeners,
        &state,
        check_service,
        &options,
        shutdown_rx.clone(),
    )
    .await?;
    if let (Some(path), true) = (state.config_path(), options.watch_config) {
        servers.stop_with(tokio::spawn(reload_on_change(
            state.clone(),
            path.to_owned(),
            shutdown_rx.clone(),
        )));
    }
    if let (Some(file), Some(watcher)) = (revocation_file, revocation_watcher) {
        servers.stop_with(tokio::spawn(revocation::file::follow(
            file,
            revocations.clone(),
            watcher,
        )));
    }
    if let Some(feed) = config.revocation.as_ref().and_then(|r| r.http.clone()) {
        servers.stop_with(tokio::spawn(revocation::http::follow(
            feed,
            revocations.clone(),
        )));
    }
    if let Some(redis) = config.revocation.as_ref().and_then(|r| r.redis.clone()) {
        servers.stop_with(tokio::spawn(revocation::redis::follow(redis, revocations)));
    }
    let supervisor =
        tokio::spawn(servers.supervise(state.clone(), shutdown_rx, options.drain_timeout));

    tracing::info!(
        grpc = %grpc_addr,
        admin = %admin_addr,
        http = http_addr.map(tracing::field::display),
        tls = state.bound_server().tls.is_some(),
        mtls = state.bound_server().tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        generation = 1,
        "portcullis ready grpc={grpc_addr} admin={admin_addr}{}",
        http_addr.map(|a| format!(" http={a}")).unwrap_or_default()
    );

    Ok(RunningApp {
        grpc_addr,
        admin_addr,
        http_addr,
        state,
        shutdown: shutdown_tx,
        supervisor: Some(supervisor),
    })
}

/// The revocation store for `config`: its sources, the issuers' longest token lifetimes (for
/// subject entries without `expires`), the cap. Empty and never consulted without
/// `revocation:`.
fn revocation_store(config: &Config) -> Revocations {
    let Some(settings) = &config.revocation else {
        return Revocations::default();
    };
    let sources: Vec<Source> = [
        settings.file.as_ref().map(|_| Source::File),
        settings.http.as_ref().map(|_| Source::Http),
        settings.redis.as_ref().map(|_| Source::Redis),
    ]
    .into_iter()
    .flatten()
    .collect();
    let lifetimes = config
        .issuers
        .iter()
        .filter_map(|issuer| Some((issuer.issuer.clone(), issuer.max_lifetime?.as_secs())))
        .collect();
    Revocations::new(
        &sources,
        lifetimes,
        settings.max_entries,
        settings.require_sync,
    )
}

/// Reloads the configuration whenever its file changes.
async fn reload_on_change(state: Arc<AppState>, path: PathBuf, shutdown: watch::Receiver<bool>) {
    let mut watcher = match ConfigWatcher::watch(&path, RELOAD_DEBOUNCE) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %error,
                "cannot watch the configuration file; hot reload is off (SIGHUP still reloads)"
            );
            return;
        }
    };
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            changed = watcher.changed() => {
                if changed.is_none() {
                    tracing::warn!("configuration file watcher stopped; hot reload is off");
                    return;
                }
                // Failures are logged, counted and shown in /status by `reload` itself.
                let _ = state.reload().await;
            }
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;
    use crate::error::ErrorChain;
    use crate::testing::*;

    #[tokio::test]
    async fn reports_the_real_ports_of_port_zero_listeners() {
        let mut config = minimal_config();
        config.server.http_listen = Some("127.0.0.1:0".parse().expect("addr"));
        let app = start(config, None).await.expect("starts");
        assert_ne!(app.grpc_addr().port(), 0);
        assert_ne!(app.admin_addr().port(), 0);
        assert!(app.http_addr().is_some_and(|a| a.port() != 0));
        app.shutdown().await.expect("clean shutdown");
    }

    #[test]
    fn error_chain_shows_every_cause_once() {
        let error = AppError::Bind {
            listener: "gRPC",
            addr: "127.0.0.1:9191".parse().expect("addr"),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(
            ErrorChain(&error).to_string(),
            "cannot listen on 127.0.0.1:9191 (gRPC): address in use"
        );
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let mut config = minimal_config();
        config.server.admin_listen = addr;
        let error = start(config, None).await.expect_err("port in use");
        assert!(matches!(
            error,
            AppError::Bind {
                listener: "admin",
                ..
            }
        ));
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }

    #[tokio::test]
    async fn missing_tls_file_is_a_startup_error_naming_it() {
        let mut config = minimal_config();
        config.server.tls = Some(TlsConfig {
            cert_file: "/nonexistent/portcullis/cert.pem".into(),
            key_file: "/nonexistent/portcullis/key.pem".into(),
            client_ca_file: None,
        });
        let error = start(config, None).await.expect_err("no cert");
        assert!(
            error
                .to_string()
                .contains("/nonexistent/portcullis/cert.pem"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn ready_without_keys_when_keys_are_not_required() {
        let mut config = minimal_config();
        config.readiness.require_keys = false;
        let app = start(config, None).await.expect("starts");
        assert_eq!(app.state().readiness(), Readiness::Ready);
        app.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn reload_without_a_file_is_refused() {
        let app = start(minimal_config(), None).await.expect("starts");
        assert!(matches!(app.reload().await, Err(ReloadError::NoConfigFile)));
        assert_eq!(app.state().generation(), 1);
    }

    #[tokio::test]
    async fn shutdown_marks_not_ready_and_stops_listening() {
        let app = start(minimal_config(), None).await.expect("starts");
        let state = app.state().clone();
        let grpc = app.grpc_addr();
        app.shutdown().await.expect("clean shutdown");
        assert!(state.is_shutting_down());
        assert!(matches!(state.readiness(), Readiness::NotReady(_)));
        assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_an_idle_envoy_connection() {
        use crate::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
        use crate::proto::envoy::service::auth::v3::{
            AttributeContext, CheckRequest, attribute_context,
        };

        let options = StartOptions {
            drain_timeout: Duration::from_secs(20),
            ..StartOptions::default()
        };
        let app = start_with(minimal_config(), None, options)
            .await
            .expect("starts");
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr()))
                .expect("endpoint")
                .connect()
                .await
                .expect("connects");
        // Envoy keeps its connection open between checks.
        let mut client = AuthorizationClient::new(channel);
        let request = CheckRequest {
            attributes: Some(Box::new(AttributeContext {
                request: Some(attribute_context::Request {
                    time: None,
                    http: Some(attribute_context::HttpRequest {
                        method: "GET".into(),
                        host: "api.test".into(),
                        path: "/healthz".into(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            })),
        };
        let response = client.check(request).await.expect("check answered");
        assert_eq!(response.into_inner().status.map(|s| s.code), Some(0));

        let started = std::time::Instant::now();
        app.shutdown().await.expect("clean shutdown");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "shutdown waited {:?} for an idle connection",
            started.elapsed()
        );
        drop(client);
    }
}
