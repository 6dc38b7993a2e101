//! When a store fetches next: the refresh period after a success (`Cache-Control: max-age`
//! clamped to the configured bounds, with jitter) and the back-off after failures.
//!
//! Nothing here may ever produce a delay shorter than [`MIN_DELAY`], whatever the configuration.

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::authn::RefreshPolicy;

/// First retry after a failed fetch (shortened to `min_refresh_interval` when that is smaller).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// No schedule ever spins faster than this, whatever the configuration says.
const MIN_DELAY: Duration = Duration::from_millis(50);

fn ordered_bounds(policy: &RefreshPolicy) -> (Duration, Duration) {
    let lo = policy.min_refresh_interval.max(MIN_DELAY);
    let hi = policy.max_refresh_interval.max(lo);
    (lo, hi)
}

/// A uniform value in [0, 1) for jitter. Not for anything secret.
pub(super) fn jitter_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Next refresh after a successful fetch: `max-age` clamped, minus up to 10 % jitter.
pub(super) fn refresh_delay(
    max_age: Option<Duration>,
    policy: &RefreshPolicy,
    jitter: f64,
) -> Duration {
    let (lo, hi) = ordered_bounds(policy);
    let period = max_age.unwrap_or(hi).clamp(lo, hi);
    period.mul_f64(1.0 - 0.1 * jitter).max(lo)
}

/// Next attempt after `failures` consecutive failures: 1 s doubling up to
/// `min_refresh_interval`, with "equal jitter" (half fixed, half random).
pub(super) fn retry_delay(failures: u32, policy: &RefreshPolicy, jitter: f64) -> Duration {
    let cap = policy.min_refresh_interval.max(MIN_DELAY);
    let base = FIRST_RETRY.min(cap);
    let doublings = failures.saturating_sub(1).min(16);
    let delay = base.saturating_mul(1u32 << doublings).min(cap);
    delay.mul_f64(0.5 + 0.5 * jitter).max(MIN_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_ms: u64, max_ms: u64) -> RefreshPolicy {
        RefreshPolicy {
            min_refresh_interval: Duration::from_millis(min_ms),
            max_refresh_interval: Duration::from_millis(max_ms),
            ..RefreshPolicy::default()
        }
    }

    #[test]
    fn refresh_period_is_max_age_clamped_to_the_configured_bounds() {
        let p = policy(30_000, 3_600_000);
        let secs = Duration::from_secs;
        assert_eq!(refresh_delay(Some(secs(600)), &p, 0.0), secs(600));
        assert_eq!(refresh_delay(Some(secs(5)), &p, 0.0), secs(30));
        assert_eq!(
            refresh_delay(Some(secs(7 * 24 * 3600)), &p, 0.0),
            secs(3600)
        );
        assert_eq!(refresh_delay(None, &p, 0.0), secs(3600));
        // Jitter only ever shortens the period, by at most 10 %, never below the minimum.
        assert_eq!(refresh_delay(Some(secs(600)), &p, 0.999_999).as_secs(), 540);
        assert_eq!(refresh_delay(Some(secs(5)), &p, 0.999_999), secs(30));
    }

    #[test]
    fn inverted_bounds_never_panic() {
        let p = policy(10_000, 1_000);
        assert_eq!(refresh_delay(None, &p, 0.0), Duration::from_secs(10));
        let zero = policy(0, 0);
        assert!(refresh_delay(None, &zero, 0.0) >= MIN_DELAY);
        assert!(retry_delay(1, &zero, 0.0) >= MIN_DELAY);
    }

    #[test]
    fn retries_start_within_a_second_and_back_off_to_the_minimum_interval() {
        let p = policy(30_000, 3_600_000);
        assert_eq!(retry_delay(1, &p, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(1, &p, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(2, &p, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(5, &p, 1.0), Duration::from_secs(16));
        assert_eq!(retry_delay(6, &p, 1.0), Duration::from_secs(30));
        assert_eq!(retry_delay(u32::MAX, &p, 1.0), Duration::from_secs(30));
        let fast = policy(200, 2_000);
        assert_eq!(retry_delay(1, &fast, 1.0), Duration::from_millis(200));
    }
}
