//! The revocation store: which verified credentials must be refused although their signature,
//! issuer and expiry are fine (a stolen token, a leaked key, an account shut down).
//!
//! Entries (design.md, "Revocation"): a token's `jti`; a subject of an issuer with
//! `revoked_before` (every token of that `sub` with an earlier `iat`, and every token without
//! `iat`); a signing key of an issuer (`kid`); an API key id. Each entry has the instant it
//! stops mattering (its `expires`), so the set stays bounded.
//!
//! Each source (the watched file, the HTTP feed, Redis) hands over its whole list; the lists of all sources
//! are merged into one [`RevocationSet`] that is built whole and swapped in atomically, so a
//! check takes no lock and sees either the old or the new set, never half of one. A check is
//! a few hash look-ups by borrowed strings: no allocation, no lock, no `Arc` clone.
//!
//! The set is bounded by `max_entries`. Over the cap the entries that expire last are kept and
//! the others are dropped, and that is never silent: the overflow is counted, logged and shown
//! in `/status`.
//!
//! This module must never read the network, never decide anything but "revoked or not", and
//! never log a token.

pub mod file;
pub mod http;
pub mod redis;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::identity::{AuthMethod, Identity};

pub use file::{FileError, parse_list};

/// Default cap on the merged set (`revocation.max_entries`).
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

/// An entry that never expires by itself (kept while its source names it).
pub const NEVER: u64 = u64::MAX;

/// Where a list of revocations comes from; also the `source` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    File,
    Http,
    Redis,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Http => "http",
            Self::Redis => "redis",
        }
    }
}

/// Name of the CLIENT span of one sync with a remote source: a Redis (re)connection (subscribe
/// and load the full set) or an HTTP feed poll.
pub const SYNC_SPAN: &str = "portcullis.revocation.sync";

/// Runs `sync` as a [`SYNC_SPAN`] with `revocation.source`, plus what `outcome` says of a
/// success; a failure is its error status. Syncs are background work: the span is a root.
async fn in_sync_span<T, E: std::fmt::Display>(
    source: Source,
    sync: impl Future<Output = Result<T, E>>,
    outcome: impl FnOnce(&T) -> Vec<opentelemetry::KeyValue>,
) -> Result<T, E> {
    let attributes = vec![opentelemetry::KeyValue::new(
        "revocation.source",
        source.as_str(),
    )];
    crate::fetch::in_client_span_with(SYNC_SPAN, attributes, sync, outcome).await
}

/// `revocation.entries`: how many entries a sync loaded.
fn entries_loaded(entries: usize) -> Vec<opentelemetry::KeyValue> {
    vec![opentelemetry::KeyValue::new(
        "revocation.entries",
        i64::try_from(entries).unwrap_or(i64::MAX),
    )]
}

/// The `revocation:` settings, compiled from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationConfig {
    /// The watched revocation file (`revocation.file`), resolved against the configuration's
    /// directory.
    pub file: Option<std::path::PathBuf>,
    /// The polled feed (`revocation.http`).
    pub http: Option<http::FeedConfig>,
    /// The fleet's shared store (`revocation.redis`).
    pub redis: Option<redis::RedisConfig>,
    /// Most entries kept in the merged set (`revocation.max_entries`).
    pub max_entries: usize,
    /// `/readyz` fails until every source has loaded once (`revocation.require_sync`).
    pub require_sync: bool,
}

/// A point in time, Unix seconds, written in RFC 3339 (UTC, `Z`) in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Self {
        Self(unix_seconds(SystemTime::now()))
    }

    /// Parses RFC 3339 in UTC (`2030-01-01T00:00:00Z`, fractions of a second allowed).
    pub fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_rfc3339(text)
            .map(|time| Self(unix_seconds(time)))
            .map_err(|error| {
                format!("`{text}` is not an RFC 3339 UTC time like 2030-01-01T00:00:00Z ({error})")
            })
    }

    pub fn to_rfc3339(self) -> String {
        let time = UNIX_EPOCH + Duration::from_secs(self.0.min(253_402_300_799));
        humantime::format_rfc3339_seconds(time).to_string()
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// One token, by its `jti`, until the token's own expiry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JtiEntry {
    pub jti: String,
    pub expires: Timestamp,
}

/// Every token of `sub` from `issuer` issued before `revoked_before` (or without `iat`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectEntry {
    pub sub: String,
    pub issuer: String,
    pub revoked_before: Timestamp,
    /// Default: `revoked_before` plus the issuer's `max_lifetime`; never, when the issuer has
    /// none (the entry then lasts as long as its source names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
}

/// Every token signed with the key `kid` of `issuer`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub issuer: String,
    pub kid: String,
    /// Default: never (the entry lasts as long as its source names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
}

/// An API key, by its id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub id: String,
    /// Default: never (the entry lasts as long as its source names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
}

/// One source's revocations, in the document form of design.md (the revocation file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jtis: Vec<JtiEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<SubjectEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeyEntry>,
}

/// One revocation, as `portcullis revoke` adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    Jti(JtiEntry),
    Subject(SubjectEntry),
    Key(KeyEntry),
    ApiKey(ApiKeyEntry),
}

impl RevocationList {
    /// Adds `revocation`, replacing an entry for the same token, subject, key or API key (so
    /// running the same command twice leaves one entry). Every other entry is kept.
    pub fn add(&mut self, revocation: Revocation) {
        match revocation {
            Revocation::Jti(entry) => {
                self.jtis.retain(|e| e.jti != entry.jti);
                self.jtis.push(entry);
            }
            Revocation::Subject(entry) => {
                self.subjects
                    .retain(|e| (&e.issuer, &e.sub) != (&entry.issuer, &entry.sub));
                self.subjects.push(entry);
            }
            Revocation::Key(entry) => {
                self.keys
                    .retain(|e| (&e.issuer, &e.kid) != (&entry.issuer, &entry.kid));
                self.keys.push(entry);
            }
            Revocation::ApiKey(entry) => {
                self.api_keys.retain(|e| e.id != entry.id);
                self.api_keys.push(entry);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.jtis.len() + self.subjects.len() + self.keys.len() + self.api_keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A subject revocation as the set keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubjectRevocation {
    revoked_before: u64,
    expires: u64,
}

/// The merged revocations of every source at one moment, immutable once built. Look-ups go
/// by borrowed `&str` into maps keyed by issuer first, so no key is ever built per request.
#[derive(Debug, Default)]
pub struct RevocationSet {
    jtis: HashMap<Box<str>, u64>,
    /// issuer → sub → revocation.
    subjects: HashMap<Box<str>, HashMap<Box<str>, SubjectRevocation>>,
    /// issuer → kid → expires.
    keys: HashMap<Box<str>, HashMap<Box<str>, u64>>,
    api_keys: HashMap<Box<str>, u64>,
    len: usize,
    /// Entries left out because the set was over its cap.
    dropped: usize,
}

/// One entry on its way into a set, with the instant it stops mattering.
enum Pending<'a> {
    Jti(&'a str),
    Subject(&'a str, &'a str, u64),
    Key(&'a str, &'a str),
    ApiKey(&'a str),
}

impl RevocationSet {
    /// Merges `lists` into one set. Entries already expired at `now` are left out; over
    /// `max_entries`, the entries that expire last are kept. `lifetimes` maps an issuer
    /// (`iss`) to its maximum token lifetime in seconds, for subject entries without `expires`.
    pub fn build<'a>(
        lists: impl IntoIterator<Item = &'a RevocationList>,
        lifetimes: &HashMap<String, u64>,
        max_entries: usize,
        now: u64,
    ) -> Self {
        let mut pending: Vec<(u64, Pending<'a>)> = Vec::new();
        for list in lists {
            pending.extend(
                list.jtis
                    .iter()
                    .map(|e| (e.expires.0, Pending::Jti(&e.jti))),
            );
            pending.extend(list.subjects.iter().map(|e| {
                let expires = e.expires.map_or_else(
                    || {
                        lifetimes
                            .get(&e.issuer)
                            .map_or(NEVER, |life| e.revoked_before.0.saturating_add(*life))
                    },
                    |t| t.0,
                );
                (
                    expires,
                    Pending::Subject(&e.issuer, &e.sub, e.revoked_before.0),
                )
            }));
            pending.extend(list.keys.iter().map(|e| {
                (
                    e.expires.map_or(NEVER, |t| t.0),
                    Pending::Key(&e.issuer, &e.kid),
                )
            }));
            pending.extend(
                list.api_keys
                    .iter()
                    .map(|e| (e.expires.map_or(NEVER, |t| t.0), Pending::ApiKey(&e.id))),
            );
        }
        pending.retain(|(expires, _)| *expires > now);
        let mut dropped = 0;
        if pending.len() > max_entries {
            // Keep the entries that matter longest: an entry that expires soon covers tokens
            // that die soon anyway.
            if max_entries > 0 {
                pending.select_nth_unstable_by_key(max_entries - 1, |e| std::cmp::Reverse(e.0));
            }
            dropped = pending.len() - max_entries;
            pending.truncate(max_entries);
        }
        let mut set = Self {
            dropped,
            ..Self::default()
        };
        for (expires, entry) in pending {
            match entry {
                Pending::Jti(jti) => {
                    let slot = set.jtis.entry(jti.into()).or_insert(0);
                    *slot = (*slot).max(expires);
                }
                Pending::Subject(issuer, sub, revoked_before) => {
                    let slot = set
                        .subjects
                        .entry(issuer.into())
                        .or_default()
                        .entry(sub.into())
                        .or_insert(SubjectRevocation {
                            revoked_before: 0,
                            expires: 0,
                        });
                    slot.revoked_before = slot.revoked_before.max(revoked_before);
                    slot.expires = slot.expires.max(expires);
                }
                Pending::Key(issuer, kid) => {
                    let slot = set
                        .keys
                        .entry(issuer.into())
                        .or_default()
                        .entry(kid.into())
                        .or_insert(0);
                    *slot = (*slot).max(expires);
                }
                Pending::ApiKey(id) => {
                    let slot = set.api_keys.entry(id.into()).or_insert(0);
                    *slot = (*slot).max(expires);
                }
            }
        }
        set.len = set.jtis.len()
            + set.subjects.values().map(HashMap::len).sum::<usize>()
            + set.keys.values().map(HashMap::len).sum::<usize>()
            + set.api_keys.len();
        set
    }

    /// Whether `identity` is revoked at `now` (Unix seconds).
    pub fn is_revoked(&self, identity: &Identity, now: u64) -> bool {
        if identity.method == AuthMethod::ApiKey {
            // An API key's identity carries the key's id (the 12-character id part of
            // `pk_<env>_<id>_...`) in `key_id`.
            return identity
                .key_id
                .as_deref()
                .is_some_and(|id| self.api_key_revoked(id, now));
        }
        if let Some(jti) = identity.token_id.as_deref()
            && self.jtis.get(jti).is_some_and(|expires| now < *expires)
        {
            return true;
        }
        if let Some(entry) = self
            .subjects
            .get(identity.issuer.as_str())
            .and_then(|subjects| subjects.get(identity.subject.as_str()))
            && now < entry.expires
            // A token without `iat` cannot show it was issued after the revocation.
            && identity.issued_at.is_none_or(|iat| iat < entry.revoked_before)
        {
            return true;
        }
        identity.key_id.as_deref().is_some_and(|kid| {
            self.keys
                .get(identity.issuer.as_str())
                .and_then(|keys| keys.get(kid))
                .is_some_and(|expires| now < *expires)
        })
    }

    /// Whether the API key with this id is revoked at `now`.
    pub fn api_key_revoked(&self, id: &str, now: u64) -> bool {
        self.api_keys.get(id).is_some_and(|expires| now < *expires)
    }

    /// Entries in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries left out because the sources named more than `max_entries`.
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

/// The state of one source, for `/status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    pub source: Source,
    /// Entries of the source's last good list.
    pub entries: usize,
    /// When the last good list was taken in (Unix seconds); `None` before the first.
    pub synced_at: Option<u64>,
    /// The last failure to read the source, kept until the next success.
    pub error: Option<String>,
    /// Entries or messages refused since start (malformed, or over the source's ceiling).
    pub skipped: u64,
}

#[derive(Debug, Default)]
struct SourceState {
    list: Option<Arc<RevocationList>>,
    synced_at: Option<u64>,
    error: Option<String>,
    skipped: u64,
}

/// The app-lifetime revocation store: the last good list of every source and the merged set
/// requests check against.
#[derive(Debug)]
pub struct Revocations {
    current: ArcSwap<RevocationSet>,
    sources: Mutex<BTreeMap<Source, SourceState>>,
    lifetimes: HashMap<String, u64>,
    max_entries: usize,
    /// Sources that must have loaded once before the agent is ready.
    required: Vec<Source>,
}

impl Default for Revocations {
    /// An empty store with no source (a test, or an agent without `revocation:`).
    fn default() -> Self {
        Self::new(&[], HashMap::new(), DEFAULT_MAX_ENTRIES, false)
    }
}

impl Revocations {
    /// An empty store expecting `sources`. `lifetimes` maps an issuer (`iss`) to its maximum
    /// token lifetime in seconds.
    pub fn new(
        sources: &[Source],
        lifetimes: HashMap<String, u64>,
        max_entries: usize,
        require_sync: bool,
    ) -> Self {
        Self {
            current: ArcSwap::from_pointee(RevocationSet::default()),
            sources: Mutex::new(
                sources
                    .iter()
                    .map(|source| (*source, SourceState::default()))
                    .collect(),
            ),
            lifetimes,
            max_entries,
            required: if require_sync {
                sources.to_vec()
            } else {
                Vec::new()
            },
        }
    }

    /// Whether `identity` is revoked now. Lock-free: one snapshot load, hash look-ups.
    pub fn is_revoked(&self, identity: &Identity, now: u64) -> bool {
        self.current.load().is_revoked(identity, now)
    }

    /// The merged set in force.
    pub fn snapshot(&self) -> Arc<RevocationSet> {
        self.current.load_full()
    }

    /// `source` now says exactly `list`: the merged set is rebuilt and swapped in.
    pub fn replace(&self, source: Source, list: RevocationList) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Timestamp::now().0;
        let state = sources.entry(source).or_default();
        state.list = Some(Arc::new(list));
        state.synced_at = Some(now);
        state.error = None;
        self.rebuild(&sources, now);
    }

    /// Drops expired entries (the merged set is rebuilt from the sources' lists).
    pub fn prune(&self) {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        self.rebuild(&sources, Timestamp::now().0);
    }

    fn rebuild(&self, sources: &BTreeMap<Source, SourceState>, now: u64) {
        let set = RevocationSet::build(
            sources.values().filter_map(|state| state.list.as_deref()),
            &self.lifetimes,
            self.max_entries,
            now,
        );
        if set.dropped() > 0 {
            tracing::error!(
                dropped = set.dropped(),
                max_entries = self.max_entries,
                "more revocations than revocation.max_entries: the entries that expire first \
                 were left out and are NOT enforced; raise max_entries"
            );
        }
        self.current.store(Arc::new(set));
    }

    /// `source` is known to be current although nothing changed (a watched file with no
    /// change since its last good read): its sync age restarts. Not after a failed read, so
    /// the age of a source in error keeps growing.
    pub fn confirm(&self, source: Source) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = sources.get_mut(&source)
            && state.list.is_some()
            && state.error.is_none()
        {
            state.synced_at = Some(Timestamp::now().0);
        }
    }

    /// `count` entries or messages of `source` were refused (logged by the caller).
    pub fn skipped(&self, source: Source, count: u64) {
        if count > 0 {
            let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            sources.entry(source).or_default().skipped += count;
        }
    }

    /// The cap on the merged set (`revocation.max_entries`).
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Reading `source` failed: its last good list stays in force, the error is shown.
    pub fn failed(&self, source: Source, error: String) {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources.entry(source).or_default().error = Some(error);
    }

    pub fn status(&self) -> Vec<SourceStatus> {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        sources
            .iter()
            .map(|(source, state)| SourceStatus {
                source: *source,
                entries: state.list.as_deref().map_or(0, RevocationList::len),
                synced_at: state.synced_at,
                error: state.error.clone(),
                skipped: state.skipped,
            })
            .collect()
    }

    /// The required sources that have not loaded a list yet (readiness).
    pub fn waiting_for(&self) -> Vec<Source> {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        self.required
            .iter()
            .copied()
            .filter(|source| sources.get(source).is_none_or(|s| s.list.is_none()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
