//! Wiring: the process-lifetime pieces (key registry, token-cache counters, telemetry, the
//! current engine), the servers (gRPC `ext_authz` + `grpc.health.v1`, admin HTTP, optional HTTP
//! `ext_authz`), the configuration reload task and graceful shutdown. What the servers, the
//! reload task and the admin endpoints share is [`state::AppState`]: `admin` imports that,
//! never this module.
//!
//! [`start`] binds every listener (port 0 allowed: the real ports are reported) and returns a
//! [`RunningApp`]; [`run`] is what the binary calls: load, start, wait for a signal, drain.
//! Nothing here exits the process or decides a request; a failure is an [`AppError`] for `main`.

pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::authn::{CacheCounters, KeyRegistry};
use crate::config::reload::ConfigWatcher;
use crate::config::{self, Config, ConfigError, TlsConfig};
use crate::engine::{Engine, SharedEngine};
use crate::grpc::AuthorizationService;
use crate::grpc::dispatch::Dispatch;
use crate::grpc::io::Coalescing;
use crate::http::HttpAuthzOptions;
use crate::listener::{Acceptor, grpc_incoming, serve_http};
use crate::proto::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use crate::service::CheckService;
use crate::telemetry::{ErrorChain, Telemetry, TelemetryOptions};
pub use state::{AppState, Readiness, ReloadError, ReloadRecord};

/// Quiet time after the last change to the configuration file before it is reloaded, so an
/// editor's or `kubectl`'s series of writes becomes one reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);

/// How often readiness is re-evaluated for the gRPC health service.
const HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// Envoy keeps one long-lived HTTP/2 connection per worker: ping it so a dead peer is noticed
/// (and a NAT or load balancer in between does not drop an idle connection), and allow far more
/// concurrent checks per connection than the HTTP/2 default of 100–200, so a burst does not
/// queue behind the stream limit.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the `ext_authz` service in `grpc.health.v1` (what Envoy's gRPC health check asks for
/// when `service_name` is set); the empty name is the whole server.
const AUTHORIZATION_SERVICE: &str =
    <AuthorizationServer<AuthorizationService> as tonic::server::NamedService>::NAME;

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
    let grpc_listener = bind("gRPC", config.server.grpc_listen).await?;
    let admin_listener = bind("admin", config.server.admin_listen).await?;
    let http_listener = match config.server.http_listen {
        Some(addr) => Some(bind("HTTP ext_authz", addr).await?),
        None => None,
    };
    let tls = config.server.tls.as_ref().map(server_tls).transpose()?;
    if let (Some(_), Some(addr)) = (&config.server.tls, config.server.http_listen)
        && !addr.ip().is_loopback()
    {
        // `server.tls` covers the gRPC listener only.
        tracing::warn!(
            http = %addr,
            "the HTTP ext_authz listener is plain text; keep it on loopback or a trusted network"
        );
    }
    let grpc_addr = local_addr("gRPC", &grpc_listener, config.server.grpc_listen)?;
    let admin_addr = local_addr("admin", &admin_listener, config.server.admin_listen)?;
    let http_addr = match (&http_listener, config.server.http_listen) {
        (Some(listener), Some(addr)) => Some(local_addr("HTTP ext_authz", listener, addr)?),
        _ => None,
    };

    let registry = Arc::new(KeyRegistry::new());
    let cache_counters = Arc::new(CacheCounters::default());
    let engine: SharedEngine = Arc::new(ArcSwap::from_pointee(Engine::with_cache_counters(
        &config,
        &registry,
        cache_counters.clone(),
    )));
    let telemetry = Arc::new(Telemetry::with_options(options.telemetry.clone()));
    telemetry.metrics().observe_keys(registry.clone());
    telemetry
        .metrics()
        .observe_token_cache(cache_counters.clone());
    telemetry.metrics().set_generation(1);

    let state = Arc::new(AppState::new(
        &config,
        config_path,
        engine.clone(),
        registry,
        cache_counters,
        telemetry.clone(),
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Check servers stop first (drain), the admin server last (so /readyz answers 503 and
    // /metrics stays scrapeable while draining).
    let (serving_tx, serving_rx) = watch::channel(false);
    let (admin_tx, admin_rx) = watch::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, false).await;
    let check_service = CheckService::new(engine, telemetry.clone());

    let mut grpc_server = Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        grpc_server = grpc_server.tls_config(tls).map_err(AppError::Tls)?;
    }
    // Our own accept loop (connection limit, back-off on accept errors: `listener`), and
    // Coalescing: the answers to the checks read in one go leave in one write (grpc::io).
    let limits = config.server.connections;
    let acceptor = |listener, name| {
        Acceptor::new(
            listener,
            name,
            limits.max_per_listener,
            telemetry.metrics().listener(name),
        )
    };
    let incoming = grpc_incoming(
        acceptor(grpc_listener, "grpc"),
        limits.header_read_timeout,
        TCP_KEEPALIVE,
    )
    .map(|conn| conn.map(Coalescing::new));
    let grpc_task = tokio::spawn({
        let dispatch = Dispatch::new(
            health_service,
            AuthorizationService::new(check_service.clone()).into_server(),
        );
        let stop = stopped(serving_rx.clone());
        async move {
            grpc_server
                .serve_with_incoming_shutdown(dispatch, incoming, stop)
                .await
                .map_err(AppError::Grpc)
        }
    });

    let http_task = http_listener.map(|listener| {
        let app = crate::http::router(check_service, options.http.clone());
        let serve = serve_http(
            acceptor(listener, "http"),
            app,
            limits,
            stopped(serving_rx.clone()),
        );
        tokio::spawn(async move {
            serve.await;
            Ok(())
        })
    });

    let admin_task = tokio::spawn({
        let app = crate::admin::router(state.clone());
        let serve = serve_http(
            acceptor(admin_listener, "admin"),
            app,
            limits,
            stopped(admin_rx),
        );
        async move {
            serve.await;
            Ok(())
        }
    });

    let health_task = tokio::spawn(track_health(
        state.clone(),
        health.clone(),
        shutdown_rx.clone(),
    ));
    let reload_task = match (state.config_path(), options.watch_config) {
        (Some(path), true) => Some(tokio::spawn(reload_on_change(
            state.clone(),
            path.to_owned(),
            shutdown_rx.clone(),
        ))),
        _ => None,
    };

    let servers = Servers {
        grpc: grpc_task,
        http: http_task,
        admin: admin_task,
        background: [Some(health_task), reload_task]
            .into_iter()
            .flatten()
            .collect(),
    };
    let supervisor = tokio::spawn(supervise(
        state.clone(),
        health,
        servers,
        shutdown_rx,
        serving_tx,
        admin_tx,
        options.drain_timeout,
    ));

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

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(
    listener: &'static str,
    socket: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, AppError> {
    socket.local_addr().map_err(|source| AppError::Bind {
        listener,
        addr,
        source,
    })
}

fn server_tls(tls: &TlsConfig) -> Result<ServerTlsConfig, AppError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| AppError::TlsFile {
            path: path.to_owned(),
            source,
        })
    };
    let identity = Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &tls.client_ca_file {
        // With a client CA, a client certificate signed by it is required (not optional).
        config = config
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(false);
    }
    Ok(config)
}

/// Resolves once `rx` says stop (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn set_health(health: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(AUTHORIZATION_SERVICE, status)
        .await;
}

/// Mirrors [`AppState::readiness`] into `grpc.health.v1`, for Envoy's gRPC health checks.
async fn track_health(
    state: Arc<AppState>,
    health: HealthReporter,
    shutdown: watch::Receiver<bool>,
) {
    let mut serving = false;
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let ready = state.readiness() == Readiness::Ready;
        if ready != serving {
            serving = ready;
            set_health(&health, serving).await;
            tracing::info!(serving, "gRPC health status changed");
        }
    }
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

struct Servers {
    grpc: JoinHandle<Result<(), AppError>>,
    http: Option<JoinHandle<Result<(), AppError>>>,
    admin: JoinHandle<Result<(), AppError>>,
    background: Vec<JoinHandle<()>>,
}

/// Waits for a shutdown request (or a server failing), then shuts down in order: health
/// NOT_SERVING and `/readyz` 503, check servers stop accepting and drain (bounded), admin last.
async fn supervise(
    state: Arc<AppState>,
    health: HealthReporter,
    mut servers: Servers,
    shutdown: watch::Receiver<bool>,
    serving: watch::Sender<bool>,
    admin: watch::Sender<bool>,
    drain_timeout: Duration,
) -> Result<(), AppError> {
    let mut failure: Option<AppError> = None;
    {
        let http_done = async {
            match servers.http.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped(shutdown) => {}
            result = &mut servers.grpc => failure = server_failure(result),
            result = http_done => failure = server_failure(result),
            result = &mut servers.admin => failure = server_failure(result),
        }
    }
    if let Some(error) = &failure {
        tracing::error!(error = %ErrorChain(error), "a server stopped; shutting down");
    }

    state.begin_shutdown();
    set_health(&health, false).await;
    serving.send_replace(true);
    let drain = async {
        if !servers.grpc.is_finished() {
            keep_first(&mut failure, server_failure((&mut servers.grpc).await));
        }
        if let Some(task) = servers.http.as_mut()
            && !task.is_finished()
        {
            keep_first(&mut failure, server_failure(task.await));
        }
    };
    if tokio::time::timeout(drain_timeout, drain).await.is_err() {
        tracing::warn!(
            timeout = ?drain_timeout,
            "in-flight checks did not finish in time; closing their connections"
        );
        servers.grpc.abort();
        if let Some(task) = &servers.http {
            task.abort();
        }
    }

    admin.send_replace(true);
    if !servers.admin.is_finished()
        && let Ok(result) = tokio::time::timeout(Duration::from_secs(2), &mut servers.admin).await
    {
        keep_first(&mut failure, server_failure(result));
    }
    servers.admin.abort();
    for task in servers.background {
        task.abort();
    }
    // Stops the key stores' background refresh tasks.
    state.registry().retain(&[]);
    tracing::info!("portcullis stopped");
    failure.map_or(Ok(()), Err)
}

fn server_failure(
    result: Result<Result<(), AppError>, tokio::task::JoinError>,
) -> Option<AppError> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error),
        Err(join) if join.is_cancelled() => None,
        Err(join) => Some(AppError::Task(join)),
    }
}

fn keep_first(slot: &mut Option<AppError>, error: Option<AppError>) {
    if slot.is_none() {
        *slot = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            attributes: Some(AttributeContext {
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
            }),
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
