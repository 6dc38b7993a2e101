//! Every listener's accept loop, and the connections of the admin and HTTP `ext_authz` servers.
//!
//! - **Accept errors back off.** When the process runs out of file descriptors (`EMFILE`,
//!   `ENFILE`) `accept` fails at once every time it is called; a loop that retries at once spins
//!   a core and starves the connections already open. [`Acceptor`] sleeps instead (5 ms,
//!   doubling up to 1 s), logs one line per [`LOG_INTERVAL`] (with the number of errors since
//!   the last line), counts every error in `portcullis_accept_errors_total{listener}` and logs
//!   when it accepts again. Clients meanwhile wait in the kernel's listen backlog. tonic's own
//!   incoming stream and `axum::serve` retry at once or hide the errors, so every listener is
//!   served from an [`Acceptor`].
//! - **A connection limit.** At `server.connections.max_per_listener` open connections a
//!   listener stops accepting until one closes: further clients wait in the listen backlog
//!   (no descriptor is spent on them) and are served in turn, or time out on their side.
//! - **Timeouts** (admin and HTTP `ext_authz`, [`serve_http`]): a request head (HTTP/1) must be
//!   complete within `header_read_timeout` of its first byte (for the first request, of the
//!   connection's opening); a connection with no request in flight for `idle_timeout` is
//!   closed. On the gRPC listener a connection must send its first bytes within
//!   `header_read_timeout` ([`Conn::first_bytes`]); after that HTTP/2 pings find dead peers
//!   and idle connections stay, since Envoy keeps them between checks.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower_service::Service;

use crate::config::ConnectionLimits;
use crate::telemetry::metrics::ListenerMetrics;

/// First sleep after a failed accept; doubled after each further failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per listener and interval about failing accepts or a full listener.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// HTTP/2 pings on admin and HTTP `ext_authz` connections, to find dead peers.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a rate-limited log line may be written now.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// True at most once per [`LOG_INTERVAL`]; the first call is always true.
    pub fn ready(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// What to do after a failed accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Sleep this long before the next accept.
    pub after: Duration,
    /// Log now, reporting this many errors (this one included) since the last line.
    pub log: Option<u64>,
}

/// The end of a series of failed accepts that was logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Failed accepts in the series.
    pub errors: u64,
    /// From the first failure to the accept that succeeded.
    pub failing_for: Duration,
}

/// Back-off and log throttling of one listener's accept loop (the decisions only; the loop
/// sleeps and logs).
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Sleep after the next failure; zero while accepting works.
    next: Duration,
    failing_since: Option<Instant>,
    errors: u64,
    unlogged: u64,
    /// A line was logged about the current series, so its end is logged too.
    reported: bool,
    throttle: Throttle,
}

impl AcceptBackoff {
    pub fn failed(&mut self, now: Instant) -> Retry {
        self.failing_since.get_or_insert(now);
        self.errors += 1;
        self.unlogged += 1;
        let after = if self.next.is_zero() {
            FIRST_BACKOFF
        } else {
            self.next
        };
        self.next = (after * 2).min(MAX_BACKOFF);
        let log = self.throttle.ready(now).then(|| {
            self.reported = true;
            std::mem::take(&mut self.unlogged)
        });
        Retry { after, log }
    }

    /// A connection was accepted: the back-off starts over. `Some` when the series of failures
    /// that just ended was logged (so its end is logged too).
    pub fn accepted(&mut self, now: Instant) -> Option<Recovered> {
        let since = self.failing_since.take()?;
        self.next = Duration::ZERO;
        let recovered = Recovered {
            errors: std::mem::take(&mut self.errors),
            failing_for: now.saturating_duration_since(since),
        };
        // Errors not logged yet are reported with the next failure's line.
        std::mem::take(&mut self.reported).then_some(recovered)
    }
}

/// Errors about one connection that the peer abandoned before it was accepted: the listener
/// itself is fine and the next accept is tried at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// One place in a listener's connection limit, counted in `portcullis_open_connections`;
/// released when the connection is dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: ListenerMetrics,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
    }
}

/// An accepted connection and its place in the limit.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: Slot,
}

/// A listener's accept loop: the connection limit, and back-off on errors.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    slots: Arc<Semaphore>,
    max: usize,
    metrics: ListenerMetrics,
    backoff: AcceptBackoff,
    /// No accept before this after a failure. Kept here rather than in a sleep so that a
    /// caller dropping [`Acceptor::accept`] (`serve_http` does when a connection ends) does
    /// not skip the back-off.
    retry_at: Option<Instant>,
    full: Throttle,
}

impl Acceptor {
    /// `name` labels the metrics and log lines (`grpc`, `http`, `admin`).
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        max_connections: usize,
        metrics: ListenerMetrics,
    ) -> Self {
        Self {
            listener,
            name,
            slots: Arc::new(Semaphore::new(max_connections)),
            max: max_connections,
            metrics,
            backoff: AcceptBackoff::default(),
            retry_at: None,
            full: Throttle::default(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Waits while the listener is full; never fails (errors are backed
    /// off, logged and counted here). Cancel-safe.
    pub async fn accept(&mut self) -> Accepted {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics.limit_waits.inc();
                if self.full.ready(Instant::now()) {
                    tracing::warn!(
                        listener = self.name,
                        max_per_listener = self.max,
                        "connection limit reached; new connections wait in the listen backlog \
                         until one closes"
                    );
                }
                match self.slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.retry_at = None;
                    if let Some(recovered) = self.backoff.accepted(Instant::now()) {
                        tracing::info!(
                            listener = self.name,
                            errors = recovered.errors,
                            failing_for = ?recovered.failing_for,
                            "accepting connections again"
                        );
                    }
                    self.metrics.open_connections.inc();
                    let slot = Slot {
                        _permit: permit,
                        metrics: self.metrics.clone(),
                    };
                    return Accepted { stream, peer, slot };
                }
                Err(error) => {
                    self.metrics.accept_errors.inc();
                    if is_connection_error(&error) {
                        tracing::debug!(listener = self.name, %error, "connection lost before accept");
                        continue;
                    }
                    let retry = self.backoff.failed(Instant::now());
                    if let Some(errors) = retry.log {
                        tracing::error!(
                            listener = self.name,
                            kind = ?error.kind(),
                            os_error = error.raw_os_error(),
                            %error,
                            errors,
                            retry_in = ?retry.after,
                            "cannot accept connections (errors since the last report: {errors}); \
                             backing off, new clients wait in the listen backlog"
                        );
                    }
                    self.retry_at = Some(Instant::now() + retry.after);
                }
            }
        }
    }
}

/// The gRPC listener's connections: one [`Conn::first_bytes`] per accepted socket, for tonic's
/// `serve_with_incoming_shutdown`. The stream never ends and never yields an error.
pub fn grpc_incoming(
    acceptor: Acceptor,
    first_bytes_timeout: Duration,
    tcp_keepalive: Duration,
) -> impl futures::Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    futures::stream::unfold(acceptor, move |mut acceptor| async move {
        let Accepted { stream, slot, .. } = acceptor.accept().await;
        if let Err(error) = configure(&stream, Some(tcp_keepalive)) {
            tracing::debug!(%error, "cannot set TCP options on a gRPC connection");
        }
        let conn = Conn::first_bytes(stream, slot, first_bytes_timeout);
        Some((Ok(conn), acceptor))
    })
}

fn configure(stream: &TcpStream, keepalive: Option<Duration>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(time) = keepalive {
        socket2::SockRef::from(stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(time))?;
    }
    Ok(())
}

/// An accepted connection holding its [`Slot`]; its reads drive its timeouts.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    watch: Watch,
    slot: Slot,
}

#[derive(Debug)]
enum Watch {
    /// gRPC: the first bytes must arrive by this deadline (else reads fail with `TimedOut` and
    /// the server drops the connection); `None` once they have.
    FirstBytes(Option<Pin<Box<Sleep>>>),
    /// Admin and HTTP `ext_authz`: [`serve_connection`] checks the timeouts against what was read.
    Activity(Arc<Activity>),
}

impl Conn {
    /// A gRPC connection that must send its first bytes within `timeout`.
    pub fn first_bytes(io: TcpStream, slot: Slot, timeout: Duration) -> Self {
        let deadline = Box::pin(tokio::time::sleep(timeout));
        Self {
            io,
            watch: Watch::FirstBytes(Some(deadline)),
            slot,
        }
    }

    fn watched(io: TcpStream, slot: Slot, activity: Arc<Activity>) -> Self {
        Self {
            io,
            watch: Watch::Activity(activity),
            slot,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        match &mut this.watch {
            Watch::Activity(activity) => {
                if let Poll::Ready(Ok(())) = polled {
                    let now = Instant::now();
                    if activity.with(|state| state.read(read, now)) == Some(true) {
                        activity.head_began.notify_one();
                    }
                }
                polled
            }
            Watch::FirstBytes(deadline) => {
                let Some(sleep) = deadline else {
                    return polled;
                };
                match polled {
                    Poll::Pending if sleep.as_mut().poll(cx).is_ready() => {
                        *deadline = None;
                        this.slot.metrics.header_read_timeouts.inc();
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no data within server.connections.header_read_timeout",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                    // End of stream is no first bytes: the deadline stands.
                    Poll::Ready(Ok(())) if read.is_empty() => Poll::Ready(Ok(())),
                    ready => {
                        *deadline = None;
                        ready
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A request head (or a new connection's first request) took longer than
    /// `header_read_timeout`.
    HeaderRead,
    /// No request in flight for `idle_timeout`.
    Idle,
}

/// What an admin or HTTP `ext_authz` connection has been doing, for its timeouts.
#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// When the last request ended (or the connection opened).
    idle_since: Instant,
    /// When the request head being read began: the connection's opening, then the first byte
    /// read after a request ended. `None` while a request is in flight or the connection waits
    /// idle between requests.
    head_started: Option<Instant>,
    /// Not yet known whether the client speaks HTTP/2 (decided by its first bytes).
    sniffed: bool,
    /// HTTP/2: frames arrive between requests (pings, window updates), so only the idle
    /// timeout applies once the connection is open.
    http2: bool,
}

impl ActivityState {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            idle_since: now,
            head_started: Some(now),
            sniffed: false,
            http2: false,
        }
    }

    /// True when `bytes` begin a request head, whose deadline may come before the next check.
    fn read(&mut self, bytes: &[u8], now: Instant) -> bool {
        if bytes.is_empty() {
            return false;
        }
        if !self.sniffed {
            self.sniffed = true;
            // The HTTP/2 connection preface starts with `PRI * HTTP/2.0`.
            self.http2 = bytes.starts_with(b"PRI ");
        }
        let begins_head = self.in_flight == 0 && self.head_started.is_none();
        if begins_head {
            self.head_started = Some(now);
        }
        begins_head && !self.http2
    }

    fn request_started(&mut self) {
        self.in_flight += 1;
        self.head_started = None;
    }

    fn request_ended(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.idle_since = now;
        }
    }

    /// `Ok(when to look again)`, or why the connection must be closed now.
    fn check(&self, now: Instant, limits: &ConnectionLimits) -> Result<Instant, Expired> {
        if self.in_flight > 0 {
            return Ok(now + limits.idle_timeout);
        }
        let idle = self.idle_since + limits.idle_timeout;
        let head = self
            .head_started
            .filter(|_| !self.http2)
            .map(|started| started + limits.header_read_timeout);
        if head.is_some_and(|head| now >= head) {
            return Err(Expired::HeaderRead);
        }
        if now >= idle {
            return Err(Expired::Idle);
        }
        Ok(head.map_or(idle, |head| head.min(idle)))
    }
}

#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the connection's timer when a request head begins on a connection that was idle
    /// (its check may be as far as the idle timeout away): once per head, not per read.
    head_began: Notify,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(ActivityState::new(now)),
            head_began: Notify::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ActivityState) -> R) -> Option<R> {
        self.state.lock().ok().map(|mut state| f(&mut state))
    }
}

/// Ends a request's in-flight period when dropped (the handler finished or was cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.with(|state| state.request_ended(now));
    }
}

/// Serves `router` (HTTP/1.1 and HTTP/2) on `acceptor`'s connections with `limits`' timeouts
/// until `stop` resolves; then stops accepting, asks every connection to finish (idle ones
/// close at once) and returns when all have. Dropping the future closes them all.
pub async fn serve_http(
    mut acceptor: Acceptor,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header-read and idle timeouts are applied per connection below (hyper's HTTP/1 header
    // timer would also cut idle keep-alive connections at the header-read timeout).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    let builder = Arc::new(builder);
    let name = acceptor.name;
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = acceptor.accept() => {
                connections.spawn(serve_connection(
                    builder.clone(),
                    accepted,
                    router.clone(),
                    limits,
                    name,
                    draining.clone(),
                ));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Closes the listening socket: new clients are refused rather than left waiting.
    drop(acceptor);
    drain.send_replace(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    accepted: Accepted,
    router: Router,
    limits: ConnectionLimits,
    listener: &'static str,
    mut draining: watch::Receiver<bool>,
) {
    let Accepted { stream, peer, slot } = accepted;
    if let Err(error) = configure(&stream, None) {
        tracing::debug!(%error, "cannot set TCP options on a connection");
    }
    let metrics = slot.metrics.clone();
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(Conn::watched(stream, slot, activity.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            activity.with(ActivityState::request_started);
            let in_flight = InFlight(activity.clone());
            let mut router = router.clone();
            async move {
                let response = router.call(request).await;
                drop(in_flight);
                response
            }
        })
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut check_at = Instant::now() + limits.header_read_timeout.min(limits.idle_timeout);
    let mut drain_requested = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                let verdict = activity
                    .with(|state| state.check(now, &limits))
                    .unwrap_or(Err(Expired::Idle));
                match verdict {
                    Ok(next) => check_at = next,
                    Err(expired) => {
                        let reason = match expired {
                            Expired::HeaderRead => {
                                metrics.header_read_timeouts.inc();
                                "header_read"
                            }
                            Expired::Idle => {
                                metrics.idle_timeouts.inc();
                                "idle"
                            }
                        };
                        tracing::debug!(listener, %peer, reason, "closing a connection: timeout");
                        // Dropping the connection closes the socket.
                        return;
                    }
                }
            }
            () = activity.head_began.notified() => check_at = Instant::now(),
            _ = draining.wait_for(|drain| *drain), if !drain_requested => {
                drain_requested = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits of 10 s (header read) and 60 s (idle), and a connection opened now.
    fn opened() -> (ConnectionLimits, Instant, ActivityState) {
        let limits = ConnectionLimits {
            max_per_listener: 4,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        };
        let open = Instant::now();
        (limits, open, ActivityState::new(open))
    }

    #[test]
    fn backoff_grows_to_one_second_and_starts_over_after_an_accept() {
        let mut backoff = AcceptBackoff::default();
        let now = Instant::now();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.failed(now).after).collect();
        assert_eq!(delays[0], FIRST_BACKOFF);
        assert_eq!(delays[1], FIRST_BACKOFF * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays[11], MAX_BACKOFF);
        assert!(backoff.accepted(now).is_some());
        assert_eq!(backoff.failed(now).after, FIRST_BACKOFF);
    }

    #[test]
    fn failures_are_logged_once_per_interval_with_the_count_since_the_last_line() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        assert_eq!(backoff.failed(start).log, Some(1));
        let mut at = start;
        for _ in 0..9 {
            at += Duration::from_secs(1);
            assert_eq!(backoff.failed(at).log, None);
        }
        // 10 s after the first line: one line for the 10 errors since it.
        assert_eq!(backoff.failed(start + LOG_INTERVAL).log, Some(10));
        assert_eq!(backoff.failed(start + LOG_INTERVAL).log, None);
    }

    #[test]
    fn the_end_of_a_logged_series_is_reported_with_its_length() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        assert_eq!(backoff.accepted(start), None, "nothing failed");
        for i in 0..3 {
            let _ = backoff.failed(start + Duration::from_secs(i));
        }
        assert_eq!(
            backoff.accepted(start + Duration::from_secs(5)),
            Some(Recovered {
                errors: 3,
                failing_for: Duration::from_secs(5),
            })
        );
        assert_eq!(backoff.accepted(start + Duration::from_secs(6)), None);
    }

    #[test]
    fn flapping_accepts_log_at_most_once_per_interval() {
        let mut backoff = AcceptBackoff::default();
        let start = Instant::now();
        let mut lines = 0;
        // One failure and one accept every 100 ms for 25 s.
        for i in 0..250 {
            let at = start + Duration::from_millis(100 * i);
            if backoff.failed(at).log.is_some() {
                lines += 1;
            }
            if backoff.accepted(at).is_some() {
                lines += 1;
            }
        }
        // 3 failure lines (0 s, 10 s, 20 s) and the 3 recoveries that follow them.
        assert_eq!(lines, 6);
    }

    #[test]
    fn a_partial_request_head_expires_after_the_header_read_timeout() {
        let (limits, open, mut state) = opened();
        assert_eq!(
            state.check(open, &limits),
            Ok(open + limits.header_read_timeout)
        );
        state.read(
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            open + Duration::from_secs(1),
        );
        assert_eq!(
            state.check(open + limits.header_read_timeout, &limits),
            Err(Expired::HeaderRead)
        );
    }

    #[test]
    fn a_keep_alive_connection_may_wait_for_the_idle_timeout_then_has_the_header_timeout() {
        let (limits, open, mut state) = opened();
        state.read(b"GET / HTTP/1.1\r\n\r\n", open);
        state.request_started();
        // A slow answer is not a timeout.
        let later = open + Duration::from_secs(600);
        assert_eq!(state.check(later, &limits), Ok(later + limits.idle_timeout));
        state.request_ended(later);
        // Idle between requests: the idle timeout, not the header-read one.
        let quiet = later + Duration::from_secs(30);
        assert_eq!(state.check(quiet, &limits), Ok(later + limits.idle_timeout));
        assert!(
            state.read(b"GET", quiet),
            "a head begins: the timer is woken"
        );
        assert_eq!(
            state.check(quiet, &limits),
            Ok(quiet + limits.header_read_timeout)
        );
        assert_eq!(
            state.check(quiet + limits.header_read_timeout, &limits),
            Err(Expired::HeaderRead)
        );
    }

    #[test]
    fn an_idle_connection_expires_even_if_it_keeps_sending_http2_frames() {
        let (limits, open, mut state) = opened();
        state.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", open);
        let mut at = open;
        while at < open + limits.idle_timeout {
            // A ping every 5 s is no request: only the idle timeout applies.
            assert!(state.check(at, &limits).is_ok());
            assert!(!state.read(b"\0\0\x08\x06", at), "a ping wakes no timer");
            at += Duration::from_secs(5);
        }
        assert_eq!(state.check(at, &limits), Err(Expired::Idle));
    }

    #[test]
    fn a_connection_that_sends_nothing_expires_after_the_header_read_timeout() {
        let (limits, open, state) = opened();
        assert_eq!(
            state.check(open + limits.header_read_timeout, &limits),
            Err(Expired::HeaderRead)
        );
    }

    #[tokio::test]
    async fn a_full_listener_leaves_new_clients_waiting_until_a_connection_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = ListenerMetrics::default();
        let mut acceptor = Acceptor::new(listener, "test", 1, metrics.clone());
        let _first = TcpStream::connect(addr).await.expect("connect");
        let held = acceptor.accept().await;
        assert_eq!(metrics.open_connections.get(), 1);
        let _second = TcpStream::connect(addr)
            .await
            .expect("queued in the backlog");
        let waiting = tokio::time::timeout(Duration::from_millis(300), acceptor.accept()).await;
        assert!(waiting.is_err(), "accepted beyond the limit");
        assert_eq!(metrics.limit_waits.get(), 1);
        drop(held);
        let next = tokio::time::timeout(Duration::from_secs(5), acceptor.accept())
            .await
            .expect("accepted once a place is free");
        assert_eq!(metrics.open_connections.get(), 1);
        drop(next);
        assert_eq!(metrics.open_connections.get(), 0);
    }

    #[tokio::test]
    async fn a_grpc_connection_that_sends_nothing_is_dropped_after_the_timeout() {
        use tokio::io::AsyncReadExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = ListenerMetrics::default();
        let mut acceptor = Acceptor::new(listener, "test", 4, metrics.clone());
        let _client = TcpStream::connect(addr).await.expect("connect");
        let Accepted { stream, slot, .. } = acceptor.accept().await;
        let mut conn = Conn::first_bytes(stream, slot, Duration::from_millis(200));
        let mut buf = [0u8; 8];
        let error = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("the deadline ends the read")
            .expect_err("timed out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(metrics.header_read_timeouts.get(), 1);
    }

    #[tokio::test]
    async fn a_request_head_begun_on_a_keep_alive_connection_expires_after_the_header_read_timeout()
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = ListenerMetrics::default();
        let acceptor = Acceptor::new(listener, "test", 4, metrics.clone());
        let limits = ConnectionLimits {
            max_per_listener: 4,
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(30),
        };
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve_http(acceptor, router, limits, std::future::pending()));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("request");
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // Quiet for longer than the header-read timeout: idle, which is allowed.
        tokio::time::sleep(Duration::from_millis(600)).await;
        client.write_all(b"GET / HT").await.expect("partial head");
        // Closed at the header-read timeout, long before the idle one.
        let closed = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("closed before the idle timeout");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        assert_eq!(metrics.header_read_timeouts.get(), 1);
        assert_eq!(metrics.idle_timeouts.get(), 0);
        server.abort();
    }
}
