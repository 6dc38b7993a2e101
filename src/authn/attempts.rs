//! Per-source limit on failed authentications (design.md: "too many failed attempts from one
//! source" → 429 with `Retry-After`). Opt-in (`limits.failed_attempts`): it is only safe where
//! the address it keys on is the real client's, and off by default, because behind a gateway,
//! a NAT or a mesh every client shares one address and one stranger's failures would refuse
//! everyone's new logins.
//!
//! Every failed authentication (an invalid or malformed credential) from a source uses one cell
//! of that source's quota. Once the quota is used up, a request from that source whose
//! credential still needs verifying is refused with 429 *before* the token is parsed or its
//! signature checked, which also caps the CPU one source can make us spend on forged tokens.
//! The limiter only refuses new, unverified work: a credential already proven valid (a
//! verified-token cache hit) is served without consulting it, so an attacker sharing a
//! client's address cannot lock that client out (design.md, "Safety of defaults"). A missing
//! credential costs nothing (it is what every browser's first request looks like and costs us
//! no work), nor do 400/403/404/503 outcomes. A successful authentication does not give cells
//! back: a client that keeps failing while also succeeding is still failing.
//!
//! The source is the client address Envoy established ([`ClientAddressHeader::source`]): the
//! transport's own address (`CheckRequest.attributes.source.address` in gRPC mode), or, only
//! when the configuration names a header and how many proxies appended to it, the address
//! that many hops from its right. A header the client can write is never read otherwise.
//!
//! The rate limiting itself is `governor`'s GCRA, keyed by source. governor has no read-only
//! check, so the state store is wrapped ([`Sources`]) to offer one: a *probe* runs the same
//! GCRA test without moving the state or creating an entry, so sources that never fail are
//! never tracked.
//!
//! Sources: IPv4 addresses as they are; IPv6 by their /64 prefix, because anyone with an IPv6
//! address usually controls the whole /64 (RFC 6177); IPv4-mapped IPv6 as IPv4. A request
//! without a source address is never limited: there is no one to attribute it to.
//!
//! Memory is bounded: every [`HOUSEKEEPING_EVERY`] calls, states that are back to fresh are
//! dropped; if more than `max_sources` remain after that, all of them are forgotten. Clearing
//! lets a flood of failures from more sources than that reset everyone's count; that is the
//! price of a hard memory bound (an attacker with that many addresses is beyond what a
//! per-source limit can stop anyway).
//!
//! This module must never see or keep a token: it knows source addresses only.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU8, NonZeroU32};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};

use crate::input::Headers;

/// How many failed authentications one source may make, and how fast they are forgiven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptQuota {
    /// Failures a source may make in a burst; one more is forgiven every `per / per_source`.
    pub per_source: NonZeroU32,
    /// The period over which `per_source` failures are forgiven.
    pub per: Duration,
}

impl Default for AttemptQuota {
    fn default() -> Self {
        Self {
            per_source: NonZeroU32::MIN.saturating_add(19),
            per: Duration::from_secs(60),
        }
    }
}

impl AttemptQuota {
    fn governor_quota(self) -> Quota {
        let cell = self.per / self.per_source.get();
        Quota::with_period(cell)
            .unwrap_or_else(|| Quota::per_second(self.per_source))
            .allow_burst(self.per_source)
    }
}

/// `limits.failed_attempts` when it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSettings {
    pub quota: AttemptQuota,
    /// Where the client address is read when the transport's own address is not the client's;
    /// `None`: the address Envoy reports for the connection.
    pub client_address: Option<ClientAddressHeader>,
}

/// Most proxies `trusted_hops` may name.
pub const MAX_TRUSTED_HOPS: u8 = 16;

/// A header listing client addresses, each proxy appending the address it received the request
/// from (`x-forwarded-for`), and how many of those proxies are trusted, counting the Envoy
/// beside portcullis: the client is the `trusted_hops`-th address from the right. Everything
/// left of it was written by someone we do not trust, the client included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddressHeader {
    /// Lower-case header name.
    pub name: String,
    pub trusted_hops: NonZeroU8,
}

impl ClientAddressHeader {
    /// The source to charge: the `trusted_hops`-th address from the right of this header (all
    /// its lines read as one list, RFC 9110 §5.3); `peer` (the address Envoy established for
    /// the connection) when the header is missing, has fewer entries, or that entry is not an
    /// address. Falling back to the peer rather than to any other entry is what keeps a client
    /// from choosing its own bucket: every entry left of the trusted ones is the client's to
    /// write, and a short header means the request did not come through the trusted proxies.
    pub fn source(&self, headers: &Headers, peer: Option<IpAddr>) -> Option<IpAddr> {
        let mut hops = usize::from(self.trusted_hops.get());
        let lines: Vec<&str> = headers
            .iter()
            .filter(|(name, _)| *name == self.name)
            .map(|(_, value)| value)
            .collect();
        for line in lines.iter().rev() {
            for entry in line.rsplit(',') {
                hops -= 1;
                if hops == 0 {
                    return parse_address(entry.trim()).or(peer);
                }
            }
        }
        peer
    }
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1` or `[2001:db8::1]:443`, as proxies write them.
fn parse_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

/// Housekeeping (dropping fresh states, enforcing the source cap) runs once per this many calls.
pub const HOUSEKEEPING_EVERY: u64 = 4096;

/// Most sources tracked after housekeeping; beyond it the whole table is forgotten.
pub const MAX_TRACKED_SOURCES: usize = 100_000;

/// A source refused for having failed too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Whole seconds (at least one) until the source may present a credential again.
    pub retry_after: Duration,
}

/// Who a failure is charged to: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SourceKey(IpAddr);

impl SourceKey {
    fn of(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                const PREFIX_64: u128 = !0 << 64;
                Self(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & PREFIX_64)))
            }
        }
    }
}

/// A look-up in [`Sources`]: `consume` spends a cell, otherwise it is a read-only probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Probe {
    source: SourceKey,
    consume: bool,
}

/// governor's keyed in-memory store, plus the read-only probe governor itself lacks.
#[derive(Debug, Default, Clone)]
struct Sources(Arc<DashMapStateStore<SourceKey>>);

impl StateStore for Sources {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, key: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if key.consume {
            return self.0.measure_and_replace(&key.source, f);
        }
        // A probe must not create an entry: sources that never fail stay untracked.
        if !self.0.contains_key(&key.source) {
            return f(None).map(|(result, _)| result);
        }
        // Writing back what was read leaves the state as it was.
        self.0.measure_and_replace(&key.source, |previous| {
            let (result, _) = f(previous)?;
            Ok((result, previous.unwrap_or(Nanos::new(0))))
        })
    }
}

impl ShrinkableKeyedStateStore<Probe> for Sources {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The failed-authentication limiter of one engine generation.
pub struct AttemptLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<Probe, Sources, C, NoOpMiddleware<C::Instant>>,
    sources: Sources,
    quota: AttemptQuota,
    client_address: Option<ClientAddressHeader>,
    calls: AtomicU64,
    housekeeping_every: u64,
    max_sources: usize,
}

impl<C: Clock> fmt::Debug for AttemptLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptLimiter")
            .field("quota", &self.quota)
            .field("client_address", &self.client_address)
            .field("tracked_sources", &self.tracked_sources())
            .finish_non_exhaustive()
    }
}

impl AttemptLimiter {
    pub fn new(settings: &AttemptSettings) -> Self {
        let mut limiter = Self::with_clock(
            settings.quota,
            DefaultClock::default(),
            HOUSEKEEPING_EVERY,
            MAX_TRACKED_SOURCES,
        );
        limiter.client_address = settings.client_address.clone();
        limiter
    }
}

impl<C: Clock> AttemptLimiter<C> {
    fn with_clock(
        quota: AttemptQuota,
        clock: C,
        housekeeping_every: u64,
        max_sources: usize,
    ) -> Self {
        let sources = Sources::default();
        Self {
            limiter: RateLimiter::new(quota.governor_quota(), sources.clone(), clock),
            sources,
            quota,
            client_address: None,
            calls: AtomicU64::new(0),
            housekeeping_every: housekeeping_every.max(1),
            max_sources,
        }
    }

    /// The source a request is charged to: `peer` (the client address Envoy established for
    /// the connection), or the configured header's trusted entry ([`ClientAddressHeader`]).
    /// No other header is ever read: a client-sent `x-forwarded-for` or
    /// `x-envoy-external-address` cannot move a request to another bucket.
    pub fn source(&self, headers: &Headers, peer: Option<IpAddr>) -> Option<IpAddr> {
        match &self.client_address {
            None => peer,
            Some(header) => header.source(headers, peer),
        }
    }

    /// Whether `source` may have a credential verified now. Spends nothing.
    pub fn check(&self, source: Option<IpAddr>) -> Result<(), Limited> {
        self.housekeeping();
        let Some(source) = source else {
            return Ok(());
        };
        let probe = Probe {
            source: SourceKey::of(source),
            consume: false,
        };
        self.limiter.check_key(&probe).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            // Retry-After is in whole seconds (RFC 9110 §10.2.3): round up, never 0.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Limited {
                retry_after: Duration::from_secs(seconds.max(1)),
            }
        })
    }

    /// Charges one failed authentication to `source` (nothing when it is unknown).
    pub fn record_failure(&self, source: Option<IpAddr>) {
        self.housekeeping();
        let Some(source) = source else {
            return;
        };
        let probe = Probe {
            source: SourceKey::of(source),
            consume: true,
        };
        // Already over quota (a concurrent failure got there first): nothing more to charge.
        let _ = self.limiter.check_key(&probe);
    }

    /// Sources currently tracked (each has failed recently).
    pub fn tracked_sources(&self) -> usize {
        self.sources.0.len()
    }

    fn housekeeping(&self) {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed);
        if calls % self.housekeeping_every != self.housekeeping_every - 1 {
            return;
        }
        self.limiter.retain_recent();
        if self.sources.0.len() > self.max_sources {
            self.sources.0.clear();
        }
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn quota(per_source: u32, per: Duration) -> AttemptQuota {
        AttemptQuota {
            per_source: NonZeroU32::new(per_source).expect("non-zero"),
            per,
        }
    }

    fn limiter(per_source: u32) -> (AttemptLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limiter = AttemptLimiter::with_clock(
            quota(per_source, Duration::from_secs(60)),
            clock.clone(),
            HOUSEKEEPING_EVERY,
            MAX_TRACKED_SOURCES,
        );
        (limiter, clock)
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("test address"))
    }

    #[test]
    fn source_is_limited_once_its_failures_use_up_the_quota() {
        let (limiter, _) = limiter(3);
        let attacker = ip("198.51.100.7");
        for _ in 0..3 {
            assert_eq!(limiter.check(attacker), Ok(()));
            limiter.record_failure(attacker);
        }
        let limited = limiter.check(attacker).expect_err("quota used up");
        // 3 per minute: one failure is forgiven every 20 s.
        assert_eq!(limited.retry_after, Duration::from_secs(20));
    }

    #[test]
    fn checking_spends_nothing() {
        let (limiter, _) = limiter(2);
        let client = ip("198.51.100.8");
        for _ in 0..100 {
            assert_eq!(limiter.check(client), Ok(()));
        }
        assert_eq!(
            limiter.tracked_sources(),
            0,
            "a probe never creates an entry"
        );
        limiter.record_failure(client);
        for _ in 0..100 {
            assert_eq!(limiter.check(client), Ok(()));
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one_and_the_source_recovers() {
        let (limiter, clock) = limiter(3);
        let attacker = ip("198.51.100.7");
        for _ in 0..3 {
            limiter.record_failure(attacker);
        }
        clock.advance(Duration::from_millis(19_500));
        let limited = limiter.check(attacker).expect_err("not yet forgiven");
        assert_eq!(limited.retry_after, Duration::from_secs(1));
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(attacker), Ok(()));
        limiter.record_failure(attacker);
        assert!(limiter.check(attacker).is_err(), "one cell was forgiven");
    }

    #[test]
    fn other_sources_are_unaffected() {
        let (limiter, _) = limiter(2);
        let attacker = ip("198.51.100.7");
        for _ in 0..5 {
            limiter.record_failure(attacker);
        }
        assert!(limiter.check(attacker).is_err());
        assert_eq!(limiter.check(ip("198.51.100.8")), Ok(()));
        assert_eq!(limiter.check(ip("2001:db8:1:2::7")), Ok(()));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_64_prefix() {
        let (limiter, _) = limiter(2);
        limiter.record_failure(ip("2001:db8:1:2::1"));
        limiter.record_failure(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"));
        assert!(limiter.check(ip("2001:db8:1:2::99")).is_err());
        assert_eq!(limiter.check(ip("2001:db8:1:3::1")), Ok(()));
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        let (limiter, _) = limiter(2);
        limiter.record_failure(ip("::ffff:198.51.100.7"));
        limiter.record_failure(ip("198.51.100.7"));
        assert!(limiter.check(ip("198.51.100.7")).is_err());
        assert!(limiter.check(ip("::ffff:198.51.100.7")).is_err());
        assert_eq!(limiter.check(ip("::ffff:198.51.100.8")), Ok(()));
    }

    #[test]
    fn requests_without_a_source_are_never_limited() {
        let (limiter, _) = limiter(1);
        for _ in 0..10 {
            limiter.record_failure(None);
        }
        assert_eq!(limiter.check(None), Ok(()));
        assert_eq!(limiter.tracked_sources(), 0);
    }

    #[test]
    fn forgiven_sources_are_dropped_by_housekeeping() {
        let clock = FakeRelativeClock::default();
        let limiter = AttemptLimiter::with_clock(
            quota(3, Duration::from_secs(60)),
            clock.clone(),
            16,
            MAX_TRACKED_SOURCES,
        );
        for last in 1..=10u8 {
            limiter.record_failure(Some(IpAddr::from([198, 51, 100, last])));
        }
        assert_eq!(limiter.tracked_sources(), 10);
        clock.advance(Duration::from_secs(120));
        for _ in 0..16 {
            let _ = limiter.check(None);
        }
        assert_eq!(limiter.tracked_sources(), 0);
    }

    #[test]
    fn tracked_sources_stay_bounded_under_a_flood_of_addresses() {
        let limiter = AttemptLimiter::with_clock(
            quota(3, Duration::from_secs(60)),
            FakeRelativeClock::default(),
            64,
            1000,
        );
        let mut most = 0;
        for n in 0..20_000u32 {
            limiter.record_failure(Some(IpAddr::from(n.to_be_bytes())));
            most = most.max(limiter.tracked_sources());
        }
        assert!(most <= 1000 + 64, "tracked {most} sources");
    }

    #[test]
    fn default_quota_is_twenty_failures_a_minute() {
        let quota = AttemptQuota::default();
        assert_eq!(quota.per_source.get(), 20);
        assert_eq!(quota.per, Duration::from_secs(60));
    }

    use crate::testing::headers;

    fn xff(trusted_hops: u8) -> ClientAddressHeader {
        ClientAddressHeader {
            name: "x-forwarded-for".to_owned(),
            trusted_hops: NonZeroU8::new(trusted_hops).expect("non-zero"),
        }
    }

    fn ip_addr(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn without_a_configured_header_the_source_is_the_peer_whatever_the_client_sends() {
        let limiter = AttemptLimiter::new(&AttemptSettings {
            quota: AttemptQuota::default(),
            client_address: None,
        });
        let peer = ip("192.0.2.10");
        let forged = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-envoy-external-address", "203.0.113.2"),
            ("x-real-ip", "203.0.113.3"),
            ("forwarded", "for=203.0.113.4"),
        ]);
        assert_eq!(limiter.source(&forged, peer), peer);
        assert_eq!(limiter.source(&forged, None), None);
    }

    #[test]
    fn the_client_is_the_trusted_hops_th_address_from_the_right() {
        // client-written, gateway-appended, sidecar-appended.
        let chain = headers(&[("x-forwarded-for", "203.0.113.66, 198.51.100.7,10.0.0.5")]);
        let peer = ip("10.0.0.9");
        assert_eq!(xff(1).source(&chain, peer), ip("10.0.0.5"));
        assert_eq!(xff(2).source(&chain, peer), ip("198.51.100.7"));
        assert_eq!(xff(3).source(&chain, peer), ip("203.0.113.66"));
    }

    #[test]
    fn rotating_the_client_written_part_does_not_change_the_source() {
        let trusted = xff(2);
        let peer = ip("10.0.0.9");
        for forged in ["203.0.113.1", "203.0.113.2, 203.0.113.3", "garbage", ""] {
            let chain = format!("{forged}, 198.51.100.7, 10.0.0.5");
            assert_eq!(
                trusted.source(&headers(&[("x-forwarded-for", &chain)]), peer),
                ip("198.51.100.7"),
                "{chain}"
            );
        }
    }

    #[test]
    fn a_missing_or_short_header_or_a_bad_entry_falls_back_to_the_peer() {
        let trusted = xff(2);
        let peer = ip("10.0.0.9");
        assert_eq!(trusted.source(&headers(&[]), peer), peer);
        assert_eq!(
            trusted.source(&headers(&[("x-forwarded-for", "10.0.0.5")]), peer),
            peer,
            "one entry: the request did not come through the gateway"
        );
        for chain in [
            "unknown, 10.0.0.5",
            "203.0.113.1,, 10.0.0.5",
            "_hidden, 10.0.0.5",
        ] {
            assert_eq!(
                trusted.source(&headers(&[("x-forwarded-for", chain)]), peer),
                peer,
                "{chain}"
            );
        }
        assert_eq!(trusted.source(&headers(&[]), None), None);
    }

    #[test]
    fn header_lines_are_one_list_and_ports_and_ipv6_are_understood() {
        let lines = headers(&[
            ("x-forwarded-for", "203.0.113.1, 198.51.100.7:4711"),
            ("x-forwarded-for", "[2001:db8::5]:443"),
        ]);
        let peer = ip("10.0.0.9");
        assert_eq!(xff(1).source(&lines, peer), ip("2001:db8::5"));
        assert_eq!(xff(2).source(&lines, peer), ip("198.51.100.7"));
        assert_eq!(xff(3).source(&lines, peer), ip("203.0.113.1"));
        assert_eq!(
            xff(1).source(&headers(&[("x-forwarded-for", "2001:db8::7")]), peer),
            Some(ip_addr("2001:db8::7"))
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let limiter = AttemptLimiter::new(&AttemptSettings {
            quota: AttemptQuota::default(),
            client_address: Some(ClientAddressHeader {
                name: "x-envoy-external-address".to_owned(),
                trusted_hops: NonZeroU8::MIN,
            }),
        });
        let peer = ip("10.0.0.9");
        let sent = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-envoy-external-address", "198.51.100.7"),
        ]);
        assert_eq!(limiter.source(&sent, peer), ip("198.51.100.7"));
        assert_eq!(
            limiter.source(&headers(&[("x-forwarded-for", "203.0.113.1")]), peer),
            peer
        );
    }
}
