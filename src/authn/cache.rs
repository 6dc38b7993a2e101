//! The verified-token cache: identities already verified, keyed by the SHA-256 of the token.
//!
//! Bounded in entries; each entry expires with its token's `exp` (and a hit re-checks `exp`
//! against the wall clock, so even a late eviction never serves an expired token). One cache
//! per `Authenticator`, i.e. per configuration generation; its hit and miss counters
//! ([`CacheCounters`]) live as long as the process and are shared by every generation's cache.
//!
//! The cache must never hold or print a token (only its hash). It is not meant to be the last
//! word: revocation (not implemented yet) must be consulted after it on every request.
//! Only identities traceable to a published key (with a key id) are cached.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use moka::Expiry;

use crate::decision::Identity;

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

/// Evicts each identity when its token expires.
struct UntilTokenExpiry;

impl Expiry<TokenHash, Arc<Identity>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        identity: &Arc<Identity>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // `insert` refuses identities without `exp`, so `None` here cannot happen; expiring at
        // once is the safe answer if it ever did.
        let exp = identity.expires_at.unwrap_or(0);
        let remaining = Duration::from_secs(exp.saturating_sub(unix_now()));
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
                .expire_after(UntilTokenExpiry)
                .build(),
            counters,
        }
    }

    /// The identity verified for this token hash, if it is cached, its token has not expired
    /// at `now` (Unix seconds) and `usable` accepts it (the signing key is still published).
    /// Counts a hit only for an identity it returns, a miss otherwise.
    pub fn get(
        &self,
        hash: &TokenHash,
        now: u64,
        usable: impl FnOnce(&Identity) -> bool,
    ) -> Option<Arc<Identity>> {
        let found = self
            .entries
            .get(hash)
            .filter(|identity| identity.expires_at.is_some_and(|exp| now < exp))
            .filter(|identity| usable(identity));
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches a freshly verified identity, unless its token has no `exp` or has already
    /// expired at `now`.
    pub fn insert(&self, hash: TokenHash, identity: Arc<Identity>, now: u64) {
        if identity.expires_at.is_some_and(|exp| now < exp) {
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

    fn identity(expires_at: Option<u64>) -> Arc<Identity> {
        let mut identity = Identity::anonymous();
        identity.subject = "alice".to_owned();
        identity.expires_at = expires_at;
        Arc::new(identity)
    }

    #[test]
    fn returns_the_same_identity_on_hit_and_counts_it() {
        let cache = TokenCache::new(10);
        let hash = token_hash("a.b.c");
        let now = unix_now();
        let stored = identity(Some(now + 1_000));
        cache.insert(hash, stored.clone(), now);
        let hit = cache.get(&hash, now, |_| true).expect("cached identity");
        assert!(Arc::ptr_eq(&hit, &stored));
        assert!(cache.get(&token_hash("a.b.d"), now, |_| true).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[test]
    fn never_returns_an_identity_past_its_exp() {
        let cache = TokenCache::new(10);
        let hash = token_hash("a.b.c");
        let now = unix_now();
        cache.insert(hash, identity(Some(now + 1_000)), now);
        assert!(cache.get(&hash, now + 999, |_| true).is_some());
        assert!(cache.get(&hash, now + 1_000, |_| true).is_none());
        assert!(cache.get(&hash, now + 5_000, |_| true).is_none());
    }

    #[test]
    fn does_not_cache_expired_or_exp_less_identities() {
        let cache = TokenCache::new(10);
        let now = unix_now();
        cache.insert(token_hash("expired"), identity(Some(now - 1)), now);
        cache.insert(token_hash("no-exp"), identity(None), now);
        assert!(
            cache
                .get(&token_hash("expired"), now - 100, |_| true)
                .is_none()
        );
        assert!(
            cache
                .get(&token_hash("no-exp"), now - 100, |_| true)
                .is_none()
        );
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
