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

    fn start_with(password: Option<String>) -> Option<Self> {
        binary()?;
        let mut server = Self {
            child: None,
            port: free_port(),
            password,
        };
        server.spawn();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
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
