//! The verified-token cache: identities already verified, keyed by the SHA-256 of the token.
//!
//! Bounded in entries. What is stored, and for how long, is the identity's own
//! [`CachePolicy`](crate::identity::CachePolicy) (`Identity::cached_until`): a key-bound JWT
//! until its `exp` and while its issuer publishes the key, an `Until` identity until that
//! instant (never past its token's expiry), an uncacheable one never. Each entry expires at that
//! deadline, and a hit re-checks it against the wall clock, so even a late eviction never
//! serves an expired token. One cache per `Authenticator`, i.e. per configuration generation;
//! its hit and miss counters ([`CacheCounters`]) live as long as the process and are shared by
//! every generation's cache.
//!
//! The cache must never hold or print a token (only its hash). It is not meant to be the last
//! word: revocation (not implemented yet) must be consulted after it on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use moka::Expiry;

use crate::identity::Identity;

/// SHA-256 of a token: what the cache is keyed by, so the token itself is never stored.
pub type TokenHash = [u8; 32];

/// Hashes `token` for the cache.
pub fn token_hash(token: &str) -> TokenHash {
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Current Unix time in seconds (0 for a clock set before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Longest time an entry stays cached even when its token lives longer: bounds the work a
/// far-future `exp` can pin in memory (and keeps moka's deadline arithmetic far from overflow).
pub const MAX_ENTRY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Hit and miss counts of a cache's counters, plus its current size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Approximate number of entries (moka counts lazily).
    pub entries: u64,
}

/// Verified-token cache hits and misses since the process started. Created once by the app
/// and handed to every generation's cache, so the counts survive reloads (and never go down)
/// and metrics read them without knowing the engine.
#[derive(Debug, Default)]
pub struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCounters {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// Evicts each identity at the deadline of its cache policy.
struct UntilPolicyDeadline;

impl Expiry<TokenHash, Arc<Identity>> for UntilPolicyDeadline {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        identity: &Arc<Identity>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // `insert` refuses identities without a deadline, so `None` here cannot happen;
        // expiring at once is the safe answer if it ever did.
        let until = identity.cached_until().unwrap_or(0);
        let remaining = Duration::from_secs(until.saturating_sub(unix_now()));
        Some(remaining.min(MAX_ENTRY_LIFETIME))
    }
}

/// Verified identities by token hash.
pub struct TokenCache {
    entries: moka::sync::Cache<TokenHash, Arc<Identity>>,
    counters: Arc<CacheCounters>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print cached identities (claims) in a debug dump.
        f.debug_struct("TokenCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache holding at most `capacity` identities (0 disables caching), with counters of
    /// its own.
    pub fn new(capacity: u64) -> Self {
        Self::with_counters(capacity, Arc::default())
    }

    /// A cache holding at most `capacity` identities that counts its hits and misses in
    /// `counters` (the process-lifetime ones, shared with the caches of other generations).
    pub fn with_counters(capacity: u64, counters: Arc<CacheCounters>) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilPolicyDeadline)
                .build(),
            counters,
        }
    }

    /// The identity verified for this token hash, if it is cached and its policy still lets it
    /// be served at `now` (Unix seconds): before its deadline and, for a key-bound identity,
    /// while `key_published(issuer, kid)` says the issuer still publishes the signing key.
    /// Counts a hit only for an identity it returns, a miss otherwise.
    pub fn get(
        &self,
        hash: &TokenHash,
        now: u64,
        key_published: impl FnOnce(&str, &str) -> bool,
    ) -> Option<Arc<Identity>> {
        let found = self
            .entries
            .get(hash)
            .filter(|identity| identity.cached_until().is_some_and(|until| now < until))
            .filter(|identity| {
                identity
                    .bound_key()
                    .is_none_or(|kid| key_published(&identity.issuer, kid))
            });
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches a freshly verified identity as its policy says: not at all when it is
    /// uncacheable, has no deadline (a key-bound token without `exp`) or is past it at `now`.
    pub fn insert(&self, hash: TokenHash, identity: Arc<Identity>, now: u64) {
        if identity.cached_until().is_some_and(|until| now < until) {
            self.entries.insert(hash, identity);
        }
    }

    /// Hits and misses of its counters (shared by every generation when they are the
    /// process-lifetime ones), and its own size.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits(),
            misses: self.counters.misses(),
            entries: self.entries.entry_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::identity::CachePolicy;

    /// A JWT's identity, bound to the key `k1`.
    fn identity(expires_at: Option<u64>) -> Arc<Identity> {
        with_policy(CachePolicy::KeyBound("k1".to_owned()), expires_at)
    }

    fn with_policy(cache_policy: CachePolicy, expires_at: Option<u64>) -> Arc<Identity> {
        let mut identity = Identity::anonymous();
        identity.subject = "alice".to_owned();
        identity.expires_at = expires_at;
        identity.cache_policy = cache_policy;
        Arc::new(identity)
    }

    #[test]
    fn returns_the_same_identity_on_hit_and_counts_it() {
        let cache = TokenCache::new(10);
        let hash = token_hash("a.b.c");
        let now = unix_now();
        let stored = identity(Some(now + 1_000));
        cache.insert(hash, stored.clone(), now);
        let hit = cache.get(&hash, now, |_, _| true).expect("cached identity");
        assert!(Arc::ptr_eq(&hit, &stored));
        assert!(cache.get(&token_hash("a.b.d"), now, |_, _| true).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[test]
    fn never_returns_an_identity_past_its_exp() {
        let cache = TokenCache::new(10);
        let hash = token_hash("a.b.c");
        let now = unix_now();
        cache.insert(hash, identity(Some(now + 1_000)), now);
        assert!(cache.get(&hash, now + 999, |_, _| true).is_some());
        assert!(cache.get(&hash, now + 1_000, |_, _| true).is_none());
        assert!(cache.get(&hash, now + 5_000, |_, _| true).is_none());
    }

    #[test]
    fn does_not_cache_expired_or_exp_less_identities() {
        let cache = TokenCache::new(10);
        let now = unix_now();
        cache.insert(token_hash("expired"), identity(Some(now - 1)), now);
        cache.insert(token_hash("no-exp"), identity(None), now);
        assert!(
            cache
                .get(&token_hash("expired"), now - 100, |_, _| true)
                .is_none()
        );
        assert!(
            cache
                .get(&token_hash("no-exp"), now - 100, |_, _| true)
                .is_none()
        );
    }

    #[test]
    fn serves_a_key_bound_identity_only_while_its_issuer_publishes_the_key() {
        let (cache, now, hash) = (TokenCache::new(10), unix_now(), token_hash("key.bound"));
        cache.insert(hash, identity(Some(now + 1_000)), now);
        // Asked for the identity's issuer and kid (`identity()` binds it to `k1`).
        let published = |issuer: &str, kid: &str| issuer.is_empty() && kid == "k1";
        assert!(cache.get(&hash, now, published).is_some());
        assert!(cache.get(&hash, now, |_, _| false).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[test]
    fn serves_an_until_identity_until_that_instant_but_never_past_its_token_expiry() {
        let cache = TokenCache::new(10);
        let now = unix_now();
        let (early, late) = (token_hash("until-early"), token_hash("until-late"));
        cache.insert(
            early,
            with_policy(CachePolicy::Until(now + 10), Some(now + 1_000)),
            now,
        );
        cache.insert(
            late,
            with_policy(CachePolicy::Until(now + 5_000), Some(now + 1_000)),
            now,
        );
        // No key to follow: the key check is never asked.
        let unasked = |_: &str, _: &str| -> bool { panic!("an Until identity has no key") };
        assert!(cache.get(&early, now + 9, unasked).is_some());
        assert!(cache.get(&early, now + 10, unasked).is_none());
        assert!(cache.get(&late, now + 999, unasked).is_some());
        assert!(cache.get(&late, now + 1_000, unasked).is_none());
        // Already past its instant: not stored at all.
        let stale = token_hash("until-stale");
        cache.insert(
            stale,
            with_policy(CachePolicy::Until(now), Some(now + 1_000)),
            now,
        );
        assert!(cache.get(&stale, now - 100, unasked).is_none());
    }

    #[test]
    fn never_caches_an_uncacheable_identity() {
        let cache = TokenCache::new(10);
        let now = unix_now();
        let hash = token_hash("no.kid.token");
        cache.insert(
            hash,
            with_policy(CachePolicy::Uncacheable, Some(now + 1_000)),
            now,
        );
        cache.entries.run_pending_tasks();
        assert!(!cache.entries.contains_key(&hash));
        assert!(cache.get(&hash, now, |_, _| true).is_none());
    }

    #[test]
    fn evicts_entries_when_their_token_expires() {
        let cache = TokenCache::new(10);
        let hash = token_hash("short.lived.token");
        let now = unix_now();
        cache.insert(hash, identity(Some(now + 1)), now);
        std::thread::sleep(Duration::from_millis(2_100));
        cache.entries.run_pending_tasks();
        assert!(!cache.entries.contains_key(&hash));
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = TokenCache::new(5);
        for i in 0..50 {
            cache.insert(token_hash(&format!("t{i}")), identity(Some(u64::MAX)), 0);
        }
        cache.entries.run_pending_tasks();
        assert!(cache.stats().entries <= 5);
    }
}
