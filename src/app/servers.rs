//! The listeners and their servers: the gRPC listener (`ext_authz` and `grpc.health.v1`), the
//! optional HTTP `ext_authz` listener and the admin listener; the task that mirrors readiness
//! into `grpc.health.v1`; and the ordered shutdown ([`Servers::supervise`]).
//!
//! [`Listeners::bind`] does everything that can fail on bad input (ports, TLS files) before any
//! task starts; [`start`] spawns the servers over them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::state::{AppState, Readiness};
use super::{AppError, StartOptions};
use crate::config::{ConnectionLimits, ServerConfig, TlsConfig};
use crate::error::ErrorChain;
use crate::grpc::AuthorizationService;
use crate::grpc::dispatch::Dispatch;
use crate::grpc::io::Coalescing;
use crate::listener::{Acceptor, grpc_incoming, serve_http};
use crate::proto::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use crate::service::CheckService;

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

/// The bound listeners (port 0 resolved to the real port) and the gRPC listener's TLS.
pub(super) struct Listeners {
    grpc: TcpListener,
    admin: TcpListener,
    http: Option<TcpListener>,
    tls: Option<ServerTlsConfig>,
    limits: ConnectionLimits,
    pub(super) grpc_addr: SocketAddr,
    pub(super) admin_addr: SocketAddr,
    pub(super) http_addr: Option<SocketAddr>,
}

impl Listeners {
    /// Binds every listener of `server` and reads its TLS files.
    pub(super) async fn bind(server: &ServerConfig) -> Result<Self, AppError> {
        let grpc_listener = bind("gRPC", server.grpc_listen).await?;
        let admin_listener = bind("admin", server.admin_listen).await?;
        let http_listener = match server.http_listen {
            Some(addr) => Some(bind("HTTP ext_authz", addr).await?),
            None => None,
        };
        let tls = server.tls.as_ref().map(server_tls).transpose()?;
        if let (Some(_), Some(addr)) = (&server.tls, server.http_listen)
            && !addr.ip().is_loopback()
        {
            // `server.tls` covers the gRPC listener only.
            tracing::warn!(
                http = %addr,
                "the HTTP ext_authz listener is plain text; keep it on loopback or a trusted network"
            );
        }
        let grpc_addr = local_addr("gRPC", &grpc_listener, server.grpc_listen)?;
        let admin_addr = local_addr("admin", &admin_listener, server.admin_listen)?;
        let http_addr = match (&http_listener, server.http_listen) {
            (Some(listener), Some(addr)) => Some(local_addr("HTTP ext_authz", listener, addr)?),
            _ => None,
        };
        Ok(Self {
            grpc: grpc_listener,
            admin: admin_listener,
            http: http_listener,
            tls,
            limits: server.connections,
            grpc_addr,
            admin_addr,
            http_addr,
        })
    }
}

/// The running servers and what stops them, for [`Servers::supervise`].
pub(super) struct Servers {
    grpc: JoinHandle<Result<(), AppError>>,
    http: Option<JoinHandle<Result<(), AppError>>>,
    admin: JoinHandle<Result<(), AppError>>,
    health: HealthReporter,
    /// Set to `true` to stop the check servers (gRPC, HTTP `ext_authz`).
    serving: watch::Sender<bool>,
    /// Set to `true` to stop the admin server (last).
    admin_stop: watch::Sender<bool>,
    /// Tasks aborted at the end of the shutdown.
    background: Vec<JoinHandle<()>>,
}

/// Starts the gRPC, HTTP `ext_authz` (when bound) and admin servers over `listeners`, and the
/// task that mirrors readiness into `grpc.health.v1` until `shutdown`.
pub(super) async fn start(
    listeners: Listeners,
    state: &Arc<AppState>,
    check_service: CheckService,
    options: &StartOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<Servers, AppError> {
    let telemetry = state.telemetry();
    // Check servers stop first (drain), the admin server last (so /readyz answers 503 and
    // /metrics stays scrapeable while draining).
    let (serving_tx, serving_rx) = watch::channel(false);
    let (admin_tx, admin_rx) = watch::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, false).await;

    let mut grpc_server = Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .tcp_nodelay(true);
    if let Some(tls) = listeners.tls {
        grpc_server = grpc_server.tls_config(tls).map_err(AppError::Tls)?;
    }
    // Our own accept loop (connection limit, back-off on accept errors: `listener`), and
    // Coalescing: the answers to the checks read in one go leave in one write (grpc::io).
    let limits = listeners.limits;
    let acceptor = |listener, name| {
        Acceptor::new(
            listener,
            name,
            limits.max_per_listener,
            telemetry.metrics().listener(name),
        )
    };
    let incoming = grpc_incoming(
        acceptor(listeners.grpc, "grpc"),
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

    let http_task = listeners.http.map(|listener| {
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
            acceptor(listeners.admin, "admin"),
            app,
            limits,
            stopped(admin_rx),
        );
        async move {
            serve.await;
            Ok(())
        }
    });

    let health_task = tokio::spawn(track_health(state.clone(), health.clone(), shutdown));

    Ok(Servers {
        grpc: grpc_task,
        http: http_task,
        admin: admin_task,
        health,
        serving: serving_tx,
        admin_stop: admin_tx,
        background: vec![health_task],
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
pub(super) async fn stopped(mut rx: watch::Receiver<bool>) {
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

impl Servers {
    /// `task` is aborted when the servers have stopped.
    pub(super) fn stop_with(&mut self, task: JoinHandle<()>) {
        self.background.push(task);
    }

    /// Waits for a shutdown request (or a server failing), then shuts down in order: health
    /// NOT_SERVING and `/readyz` 503, check servers stop accepting and drain (bounded), admin
    /// last.
    pub(super) async fn supervise(
        mut self,
        state: Arc<AppState>,
        shutdown: watch::Receiver<bool>,
        drain_timeout: Duration,
    ) -> Result<(), AppError> {
        let mut failure: Option<AppError> = None;
        {
            let http_done = async {
                match self.http.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped(shutdown) => {}
                result = &mut self.grpc => failure = server_failure(result),
                result = http_done => failure = server_failure(result),
                result = &mut self.admin => failure = server_failure(result),
            }
        }
        if let Some(error) = &failure {
            tracing::error!(error = %ErrorChain(error), "a server stopped; shutting down");
        }

        state.begin_shutdown();
        set_health(&self.health, false).await;
        self.serving.send_replace(true);
        let drain = async {
            if !self.grpc.is_finished() {
                keep_first(&mut failure, server_failure((&mut self.grpc).await));
            }
            if let Some(task) = self.http.as_mut()
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
            self.grpc.abort();
            if let Some(task) = &self.http {
                task.abort();
            }
        }

        self.admin_stop.send_replace(true);
        if !self.admin.is_finished()
            && let Ok(result) = tokio::time::timeout(Duration::from_secs(2), &mut self.admin).await
        {
            keep_first(&mut failure, server_failure(result));
        }
        self.admin.abort();
        for task in self.background {
            task.abort();
        }
        // Stops the key stores' background refresh tasks.
        state.registry().retain(&[]);
        // The spans of the last checks, exported before the process ends (bounded wait).
        state.telemetry().shutdown_tracing().await;
        tracing::info!("portcullis stopped");
        failure.map_or(Ok(()), Err)
    }
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
