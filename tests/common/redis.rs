//! A real `redis-server` (the Debian package; `make deps` installs it) on a free loopback port,
//! without persistence, owned by one test: started, killed (SIGKILL), restarted empty on the
//! same port, and stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::envoy::free_port;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// `requirepass`, when set.
    password: Option<String>,
    /// TLS only (`--tls-port`), when set.
    tls: Option<Tls>,
}

/// A fresh CA and a certificate it signed for `127.0.0.1`, as files for `redis-server`.
struct Tls {
    dir: tempfile::TempDir,
}

impl Tls {
    fn new() -> Self {
        let ca = super::pki::ca("redis test CA");
        let (cert, key) = super::pki::leaf(&ca, "127.0.0.1", Vec::new());
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, pem) in [("ca.pem", ca.pem()), ("cert.pem", cert), ("key.pem", key)] {
            std::fs::write(dir.path().join(name), pem).expect("write PEM");
        }
        Self { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The `redis-server` binary, or `None` (the test skips; under `CI=true` it fails).
fn binary() -> Option<&'static str> {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "redis-server is not installed (make deps installs it)"
        );
        eprintln!("SKIPPED: redis-server is not installed (make deps installs it)");
        return None;
    }
    Some("redis-server")
}

impl RedisServer {
    /// `None` when `redis-server` is not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// A server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Option<Self> {
        Self::start_with(Some(password.to_owned()))
    }

    /// A server that speaks only TLS, with a certificate from a fresh CA ([`Self::ca_file`]).
    pub fn start_tls() -> Option<Self> {
        binary()?;
        let mut server = Self {
            child: None,
            port: free_port(),
            password: None,
            tls: Some(Tls::new()),
        };
        server.spawn();
        Some(server)
    }

    fn start_with(password: Option<String>) -> Option<Self> {
        binary()?;
        let mut server = Self {
            child: None,
            port: free_port(),
            password,
            tls: None,
        };
        server.spawn();
        Some(server)
    }

    /// `redis://`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The CA certificate (PEM) of a TLS server.
    pub fn ca_file(&self) -> Option<String> {
        self.tls.as_ref().map(|tls| tls.file("ca.pem"))
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(tls) => command.args(["--port", "0", "--tls-port", &port]).args([
                "--tls-cert-file",
                &tls.file("cert.pem"),
                "--tls-key-file",
                &tls.file("key.pem"),
                "--tls-ca-cert-file",
                &tls.file("ca.pem"),
                "--tls-auth-clients",
                "no",
            ]),
        };
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "yes"]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to the clients, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new, empty server on the same port.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
