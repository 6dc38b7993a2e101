//! Per-source limit on failed authentications (design.md: "too many failed attempts from one
//! source" → 429 with `Retry-After`).
//!
//! Every failed authentication (an invalid or malformed credential) from a source address uses
//! one cell of that source's quota. Once the quota is used up, every request from that source
//! that presents a credential is refused with 429 *before* the token is parsed or its signature
//! checked, which also caps the CPU one source can make us spend on forged tokens. A missing
//! credential costs nothing (it is what every browser's first request looks like and costs us
//! no work), nor do 400/403/404/503 outcomes. A successful authentication does not give cells
//! back: a client that keeps failing while also succeeding is still failing.
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
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};

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
    calls: AtomicU64,
    housekeeping_every: u64,
    max_sources: usize,
}

impl<C: Clock> fmt::Debug for AttemptLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptLimiter")
            .field("quota", &self.quota)
            .field("tracked_sources", &self.tracked_sources())
            .finish_non_exhaustive()
    }
}

impl AttemptLimiter {
    pub fn new(quota: AttemptQuota) -> Self {
        Self::with_clock(
            quota,
            DefaultClock::default(),
            HOUSEKEEPING_EVERY,
            MAX_TRACKED_SOURCES,
        )
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
            calls: AtomicU64::new(0),
            housekeeping_every: housekeeping_every.max(1),
            max_sources,
        }
    }

    /// Whether `source` may present a credential now. Spends nothing.
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
}
