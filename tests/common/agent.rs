//! portcullis under test: started in-process (`app::start`, port 0) or as the built binary
//! (killed on drop), and clients that talk to it the way Envoy does — a gRPC `Check` client
//! building `CheckRequest`s as Envoy's `ext_authz` filter fills them, an HTTP client for the
//! `http_service` mode, and admin endpoint helpers. Every wait is bounded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis::app::{self, RunningApp, StartOptions};
use portcullis::config::{self, Config};
use portcullis::proto::envoy::config::core::v3 as core;
use portcullis::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::proto::envoy::service::auth::v3::check_response::HttpResponse;
use portcullis::proto::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Longest wait for an agent to start or stop.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a running agent listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub http: Option<SocketAddr>,
}

impl Addrs {
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
}

// ---------------------------------------------------------------------------------------------
// In-process agent

/// portcullis running inside the test process. Shut down on drop.
#[derive(Debug)]
pub struct InProcessAgent {
    pub app: RunningApp,
    pub addrs: Addrs,
}

impl InProcessAgent {
    /// Starts `config` (its listeners should use port 0) without a configuration file.
    pub async fn start(config: Config) -> Self {
        Self::start_with(config, None, StartOptions::default()).await
    }

    /// Loads and starts `path`; the file is watched and reloadable.
    pub async fn start_file(path: &Path) -> Self {
        let config =
            config::load(path).unwrap_or_else(|e| panic!("fixture config is invalid:\n{e}"));
        Self::start_with(config, Some(path.to_owned()), StartOptions::default()).await
    }

    pub async fn start_with(config: Config, path: Option<PathBuf>, options: StartOptions) -> Self {
        let app = app::start_with(config, path, options)
            .await
            .unwrap_or_else(|e| panic!("agent does not start: {e}"));
        let addrs = Addrs {
            grpc: app.grpc_addr(),
            admin: app.admin_addr(),
            http: app.http_addr(),
        };
        Self { app, addrs }
    }

    pub async fn client(&self) -> CheckClient {
        CheckClient::connect(self.addrs.grpc).await
    }

    pub async fn shutdown(self) {
        tokio::time::timeout(START_TIMEOUT, self.app.shutdown())
            .await
            .expect("agent stops in time")
            .expect("agent stops cleanly");
    }
}

// ---------------------------------------------------------------------------------------------
// Binary agent

/// The built `portcullis` binary, killed (and reaped) on drop. Its standard output and error
/// are collected line by line for assertions on logs.
#[derive(Debug)]
pub struct BinaryAgent {
    child: Child,
    pub addrs: Addrs,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Runs the binary to completion with `args` (bounded); returns status, stdout, stderr.
pub fn run_binary(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("PORTCULLIS_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portcullis {args:?} did not finish in {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl BinaryAgent {
    /// `portcullis serve --config <path>`, waiting for the ready line.
    pub fn start(config: &Path) -> Self {
        let config = config.to_str().expect("utf-8 path");
        Self::spawn(&["serve", "--config", config], &[])
    }

    /// Starts the binary with `args` and extra environment, and waits (bounded) for the
    /// `portcullis ready` log line, from which the bound addresses are read.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_under(&[], args, env)
    }

    /// Like [`Self::spawn`], run through `wrapper` (a program and its arguments, e.g.
    /// `["prlimit", "--nofile=64:64", "--"]`), which must exec the binary in its own process.
    pub fn spawn_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        command
            .args(args)
            .env_remove("PORTCULLIS_CONFIG")
            .env("PORTCULLIS_LOG_FORMAT", "json")
            .env("PORTCULLIS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let stdout = collect_lines(child.stdout.take().expect("stdout piped"));
        let stderr = collect_lines(child.stderr.take().expect("stderr piped"));
        let deadline = Instant::now() + START_TIMEOUT;
        let addrs = loop {
            if let Some(addrs) = stdout
                .lock()
                .expect("lock")
                .iter()
                .find_map(|line| ready_addrs(line))
            {
                break addrs;
            }
            if let Some(status) = child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "portcullis exited with {status} before it was ready\nstdout:\n{}\nstderr:\n{}",
                    stdout.lock().expect("lock").join("\n"),
                    stderr.lock().expect("lock").join("\n"),
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "portcullis not ready within {START_TIMEOUT:?}\nstdout:\n{}",
                    stdout.lock().expect("lock").join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            addrs,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines (stdout) so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits (bounded) until a stdout line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(line) = self
                .stdout
                .lock()
                .expect("lock")
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(line.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `signal` (e.g. `TERM`, `HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(START_TIMEOUT).unwrap_or_else(|| {
            panic!("portcullis did not exit within {START_TIMEOUT:?} of SIGTERM")
        })
    }

    /// `Some(status)` once the process has exited (does not wait).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub async fn client(&self) -> CheckClient {
        CheckClient::connect(self.addrs.grpc).await
    }
}

impl Drop for BinaryAgent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut lines) = sink.lock() {
                lines.push(line);
            }
        }
    });
    lines
}

/// The addresses of a `portcullis ready` JSON log line.
fn ready_addrs(line: &str) -> Option<Addrs> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if !event["message"].as_str()?.starts_with("portcullis ready") {
        return None;
    }
    let addr = |field: &str| event[field].as_str().and_then(|a| a.parse().ok());
    Some(Addrs {
        grpc: addr("grpc")?,
        admin: addr("admin")?,
        http: addr("http"),
    })
}

// ---------------------------------------------------------------------------------------------
// Requests as Envoy builds them

/// One downstream request, as Envoy's `ext_authz` filter would describe it.
#[derive(Debug, Clone)]
pub struct EnvoyRequest {
    pub method: String,
    pub host: String,
    /// `:path`: path and query.
    pub path: String,
    /// Regular (non-pseudo) headers, lower-case names.
    pub headers: Vec<(String, String)>,
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

impl EnvoyRequest {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            host: "api.example.com".to_owned(),
            path: path.to_owned(),
            headers: vec![("x-request-id".to_owned(), "test-request-1".to_owned())],
            source: "192.0.2.10:40000".parse().expect("addr"),
            destination: "10.0.0.1:8080".parse().expect("addr"),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// Adds (or replaces) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn request_id(self, id: &str) -> Self {
        self.header("x-request-id", id)
    }

    pub fn source(mut self, addr: SocketAddr) -> Self {
        self.source = addr;
        self
    }

    /// The `CheckRequest` Envoy sends: `headers` holds the pseudo-headers too, as in Envoy's
    /// `CheckRequestUtils::setHttpRequest`.
    pub fn to_check_request(&self) -> CheckRequest {
        let mut headers: HashMap<String, String> = self.headers.iter().cloned().collect();
        headers.insert(":authority".into(), self.host.clone());
        headers.insert(":method".into(), self.method.clone());
        headers.insert(":path".into(), self.path.clone());
        headers.insert(":scheme".into(), "http".into());
        CheckRequest {
            attributes: Some(Box::new(AttributeContext {
                source: Some(peer(self.source)),
                destination: Some(peer(self.destination)),
                request: Some(attribute_context::Request {
                    time: None,
                    http: Some(attribute_context::HttpRequest {
                        id: "1234567890".into(),
                        method: self.method.clone(),
                        headers,
                        path: self.path.clone(),
                        host: self.host.clone(),
                        scheme: "http".into(),
                        // Envoy leaves `query` empty: the query string travels in `path`.
                        protocol: "HTTP/1.1".into(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            })),
        }
    }
}

fn peer(addr: SocketAddr) -> attribute_context::Peer {
    attribute_context::Peer {
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// What Envoy does with a decision, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// `CheckResponse.status.code` (google.rpc), 0 when allowed.
    pub code: i32,
    /// The HTTP status the client gets on a denial; 200 when allowed.
    pub status: u16,
    /// Denial response headers (to the client).
    pub headers: Vec<(String, String)>,
    /// Denial body.
    pub body: String,
    /// Headers set on the upstream request when allowed.
    pub upstream_set: Vec<(String, String)>,
    /// Headers removed from the upstream request when allowed.
    pub upstream_removed: Vec<String>,
    /// `dynamic_metadata` as JSON.
    pub metadata: serde_json::Value,
}

impl CheckOutcome {
    pub fn allowed(&self) -> bool {
        self.code == 0 && self.status == 200
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    pub fn upstream(&self, name: &str) -> Option<&str> {
        find(&self.upstream_set, name)
    }

    pub fn removes(&self, name: &str) -> bool {
        self.upstream_removed
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("denial body is not JSON ({e}): {:?}", self.body))
    }

    pub fn from_response(response: CheckResponse) -> Self {
        let code = response.status.as_ref().map_or(0, |s| s.code);
        let metadata = response
            .dynamic_metadata
            .as_ref()
            .map_or(serde_json::Value::Null, struct_to_json);
        let mut outcome = Self {
            code,
            status: 200,
            headers: Vec::new(),
            body: String::new(),
            upstream_set: Vec::new(),
            upstream_removed: Vec::new(),
            metadata,
        };
        let pairs = |options: &[core::HeaderValueOption]| -> Vec<(String, String)> {
            options
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|h| {
                    let value = if h.raw_value.is_empty() {
                        h.value.clone()
                    } else {
                        String::from_utf8_lossy(&h.raw_value).into_owned()
                    };
                    (h.key.to_ascii_lowercase(), value)
                })
                .collect()
        };
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                outcome.upstream_set = pairs(&ok.headers);
                outcome.upstream_removed = ok.headers_to_remove;
            }
            Some(HttpResponse::DeniedResponse(denied)) => {
                // Envoy answers 403 when the denial carries no status.
                outcome.status = denied
                    .status
                    .map_or(403, |s| u16::try_from(s.code).unwrap_or(403));
                outcome.headers = pairs(&denied.headers);
                outcome.body = denied.body;
            }
            Some(HttpResponse::ErrorResponse(error)) => {
                outcome.status = error
                    .status
                    .map_or(403, |s| u16::try_from(s.code).unwrap_or(403));
                outcome.headers = pairs(&error.headers);
                outcome.body = error.body;
            }
            None if code != 0 => outcome.status = 403,
            None => {}
        }
        outcome
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => l.values.iter().map(value_to_json).collect(),
        Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A gRPC `Check` client on one HTTP/2 connection, as Envoy keeps one.
#[derive(Debug, Clone)]
pub struct CheckClient {
    inner: AuthorizationClient<Channel>,
    channel: Channel,
}

impl CheckClient {
    /// Plain-text connection (retried for up to [`START_TIMEOUT`]).
    pub async fn connect(addr: SocketAddr) -> Self {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match endpoint.connect().await {
                Ok(channel) => return Self::from_channel(channel),
                Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// TLS connection trusting `ca_pem`, presenting `identity` (cert and key PEM) when given,
    /// with `localhost` as the server name. Errors are returned: refusing clients is tested.
    pub async fn connect_tls(
        addr: SocketAddr,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Self, tonic::transport::Error> {
        app::install_crypto_providers().expect("crypto providers");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(Self::from_channel(channel))
    }

    fn from_channel(channel: Channel) -> Self {
        Self {
            inner: AuthorizationClient::new(channel.clone()),
            channel,
        }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Sends the request's `CheckRequest`; an RPC error is returned as is.
    pub async fn try_check(
        &mut self,
        request: &EnvoyRequest,
    ) -> Result<CheckOutcome, tonic::Status> {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            self.inner.check(request.to_check_request()),
        )
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("check took more than 10 s"))??;
        Ok(CheckOutcome::from_response(response.into_inner()))
    }

    /// Like [`Self::try_check`], panicking on an RPC error (a denial is never one).
    pub async fn check(&mut self, request: &EnvoyRequest) -> CheckOutcome {
        self.try_check(request)
            .await
            .unwrap_or_else(|status| panic!("Check RPC failed: {status:?}"))
    }

    /// `grpc.health.v1.Health/Check` for `service` ("" = the whole server).
    pub async fn health(&self, service: &str) -> Result<i32, tonic::Status> {
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let response = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok(response.into_inner().status)
    }
}

/// `grpc.health.v1` SERVING.
pub const HEALTH_SERVING: i32 =
    tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

/// Sends `request` to the HTTP ext_authz listener as Envoy's `http_service` does (method,
/// `:authority`, `path_prefix` + `:path`, the allowed headers) and decodes the answer the way
/// Envoy does: only 200 allows.
pub async fn http_check(
    addr: SocketAddr,
    path_prefix: &str,
    request: &EnvoyRequest,
) -> CheckOutcome {
    app::install_crypto_providers().expect("crypto providers");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("method");
    let mut builder = client
        .request(
            method,
            format!("http://{addr}{path_prefix}{}", request.path),
        )
        .header("host", &request.host)
        .header("content-length", "0");
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.expect("HTTP ext_authz answers");
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.text().await.expect("body");
    if status == 200 {
        let removed = find(&headers, "x-envoy-auth-headers-to-remove")
            .map(|v| {
                v.split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        CheckOutcome {
            code: 0,
            status,
            headers: Vec::new(),
            body: String::new(),
            upstream_set: headers
                .into_iter()
                .filter(|(n, _)| n.starts_with("x-auth-"))
                .collect(),
            upstream_removed: removed,
            metadata: serde_json::Value::Null,
        }
    } else {
        CheckOutcome {
            code: -1,
            status,
            headers,
            body,
            upstream_set: Vec::new(),
            upstream_removed: Vec::new(),
            metadata: serde_json::Value::Null,
        }
    }
}

/// `GET http://{admin}{path}`: status, content type and body.
pub async fn admin_get(addrs: &Addrs, path: &str) -> (u16, String, String) {
    app::install_crypto_providers().expect("crypto providers");
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(addrs.admin_url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

/// `GET /status` as JSON.
pub async fn status(addrs: &Addrs) -> serde_json::Value {
    let (code, _, body) = admin_get(addrs, "/status").await;
    assert_eq!(code, 200, "/status: {body}");
    serde_json::from_str(&body).expect("/status is JSON")
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `condition` like [`eventually`] for up to [`START_TIMEOUT`]; panics with `what` and
/// `logs()` when it never holds (a stack that never came up).
pub async fn assert_eventually<F, Fut>(what: &str, condition: F, logs: impl FnOnce() -> String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !eventually(START_TIMEOUT, condition).await {
        panic!("{what}\n{}", logs());
    }
}

/// Polls `/readyz` until it answers 200 or `timeout` passes; returns whether it did.
pub async fn ready_within(addrs: &Addrs, timeout: Duration) -> bool {
    eventually(timeout, || async {
        admin_get(addrs, "/readyz").await.0 == 200
    })
    .await
}

/// Waits (bounded) until `/readyz` answers 200; fails the test with `/status` otherwise.
pub async fn wait_ready(addrs: &Addrs, timeout: Duration) {
    assert!(
        ready_within(addrs, timeout).await,
        "never ready within {timeout:?}: {}",
        status(addrs).await
    );
}

/// Waits (bounded) until `/status` shows configuration generation `generation`.
pub async fn wait_generation(addrs: &Addrs, generation: u64, timeout: Duration) {
    let reloaded = eventually(timeout, || async {
        status(addrs).await["config"]["generation"] == generation
    })
    .await;
    assert!(
        reloaded,
        "never reached generation {generation} within {timeout:?}: {}",
        status(addrs).await
    );
}

/// Waits (bounded) until `grpc.health.v1` says SERVING for the whole server.
pub async fn wait_serving(client: &CheckClient, timeout: Duration) {
    let serving = eventually(timeout, || {
        let client = client.clone();
        async move { client.health("").await.ok() == Some(HEALTH_SERVING) }
    })
    .await;
    assert!(
        serving,
        "grpc.health.v1 never said SERVING within {timeout:?}"
    );
}

/// Writes `yaml` to `dir/name` and returns the path.
pub fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("config written");
    path
}

/// Replaces `path` atomically (write aside, rename), as config management tools do.
pub fn replace_config(path: &Path, yaml: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, yaml).expect("config written");
    std::fs::rename(&aside, path).expect("config renamed");
}
