//! API keys: the key format, the hashed entries of the keys file, and the check of a presented
//! key against them.
//!
//! A key reads `pk_<env>_<id>_<secret><checksum>` (docs/decisions.md): `env` is `live` or
//! `test`, `id` 12 and `secret` 32 base62 characters, `checksum` the CRC-32 of everything
//! before it as 6 base62 digits. The check runs in this order, each step refusing before the
//! next: size and character set, checksum (a mistyped key never reaches a lookup), the id (one
//! hash-map lookup), the environment (the key's, the entry's and the deployment's must agree),
//! the SHA-256 of the secret compared with the entry's in constant time (`subtle`), then the
//! entry's validity window. An accepted
//! key's identity was built when the file was loaded, so a check allocates nothing.
//!
//! The keys file holds the SHA-256 of each secret, never a key; its parsing (with file:line
//! errors) lives in `config::keys_file`, and [`ApiKeyStore`] keeps the last good set when an
//! edit is refused. This module must never log, store or print a presented key or a secret.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::decision::TokenProblem;
use crate::identity::{AuthMethod, CachePolicy, Identity};
use crate::watch::FileWatcher;

/// The first part of every key; secret scanners match on `pk_live_` and `pk_test_`.
pub const PREFIX: &str = "pk";
/// Base62 characters of the key id.
pub const ID_LEN: usize = 12;
/// Base62 characters of the secret (about 190 bits).
pub const SECRET_LEN: usize = 32;
/// Base62 digits of the CRC-32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// A presented value longer than this is refused before anything else is looked at.
pub const MAX_KEY_BYTES: usize = 256;
/// How the keys file writes a hash: `sha256:` and 64 lower-case hex digits.
pub const HASH_PREFIX: &str = "sha256:";
/// The `x-auth-issuer` of an identity proven by an API key.
pub const ISSUER: &str = "api_keys";
/// The `key_id` label of attempts that name no key of the file (malformed, bad checksum,
/// unknown id): never the presented id, so the label set stays bounded by the file.
pub const UNMATCHED_KEY_ID: &str = "unknown";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The environment a key belongs to; a deployment accepts the keys of its own only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEnv {
    Live,
    Test,
}

impl KeyEnv {
    pub const ALL: [Self; 2] = [Self::Live, Self::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|env| env.as_str() == name)
    }
}

/// The parts of a well-formed key whose checksum matched. Its `Debug` never shows the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub env: KeyEnv,
    pub id: &'a str,
    secret: &'a str,
}

impl<'a> KeyParts<'a> {
    /// The secret part, to hash. Never log it.
    pub fn secret(&self) -> &'a str {
        self.secret
    }
}

impl std::fmt::Debug for KeyParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyParts")
            .field("env", &self.env)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn is_base62(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The 6-digit base62 CRC-32 of `body` (the key up to its checksum), most significant first.
pub fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
}

/// Reads a presented key: its shape, then its checksum. No lookup, no hashing.
pub fn parse(key: &str) -> Result<KeyParts<'_>, TokenProblem> {
    if key.len() > MAX_KEY_BYTES {
        return Err(TokenProblem::TooLarge);
    }
    // Non-ASCII, a space or a comma (two keys in one header) fail the shape below.
    let malformed = TokenProblem::Malformed;
    let rest = key
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(malformed)?;
    let (env, rest) = rest.split_once('_').ok_or(malformed)?;
    let env = KeyEnv::from_name(env).ok_or(malformed)?;
    if rest.len() != ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN || !rest.is_ascii() {
        return Err(malformed);
    }
    let (id, rest) = rest.split_at(ID_LEN);
    let tail = rest.strip_prefix('_').ok_or(malformed)?;
    let (secret, sum) = tail.split_at(SECRET_LEN);
    if !(is_base62(id) && is_base62(secret) && is_base62(sum)) {
        return Err(malformed);
    }
    let body = &key[..key.len() - CHECKSUM_LEN];
    if checksum(body).as_slice() != sum.as_bytes() {
        return Err(TokenProblem::BadChecksum);
    }
    Ok(KeyParts { env, id, secret })
}

/// True when `text` has the shape of a key id (12 base62 characters).
pub fn is_key_id(text: &str) -> bool {
    text.len() == ID_LEN && is_base62(text)
}

/// The SHA-256 of a key's secret, as the keys file stores it. Compared only in constant time
/// ([`SecretHash::matches`]); there is deliberately no `PartialEq`.
#[derive(Clone, Copy)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Hashes a secret.
    pub fn of(secret: &str) -> Self {
        let digest = digest::digest(&digest::SHA256, secret.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Self(hash)
    }

    /// True when `secret` hashes to this, compared in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        bool::from(Self::of(secret).0.ct_eq(&self.0))
    }

    /// Reads `sha256:<64 lower-case hex digits>`. A plain-text key is refused as such, without
    /// repeating it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("pk_") {
            return Err(
                "this is a plain-text API key, not a hash: never store keys in the file; \
                 put the `hash` that `portcullis keys hash` prints here, and rotate the key \
                 (it must be treated as leaked)"
                    .to_owned(),
            );
        }
        let hex = text.strip_prefix(HASH_PREFIX).ok_or_else(|| {
            format!("must be `{HASH_PREFIX}` followed by 64 lower-case hex digits")
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "must be `{HASH_PREFIX}` followed by 64 lower-case hex digits"
            ));
        }
        let mut hash = [0u8; 32];
        for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let digit = |b: u8| match b {
                b'0'..=b'9' => b - b'0',
                _ => b - b'a' + 10,
            };
            *byte = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Ok(Self(hash))
    }
}

impl std::fmt::Display for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HASH_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A new key: shown to the operator once, then only its hash is kept.
pub struct GeneratedKey {
    pub key: String,
    pub id: String,
    pub hash: SecretHash,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The system's random source failed: no key was made.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `len` base62 characters from the system's CSPRNG, without modulo bias (bytes ≥ 248 are
/// drawn again).
fn random_base62(len: usize) -> Result<String, RandomError> {
    let mut out = String::with_capacity(len);
    let mut buffer = [0u8; 64];
    while out.len() < len {
        aws_lc_rs::rand::fill(&mut buffer).map_err(|_| RandomError)?;
        for &byte in &buffer {
            if out.len() == len {
                break;
            }
            if byte < 248 {
                out.push(char::from(BASE62[usize::from(byte % 62)]));
            }
        }
    }
    Ok(out)
}

/// Makes a new key for `env`: random id and secret, checksum appended.
pub fn generate(env: KeyEnv) -> Result<GeneratedKey, RandomError> {
    let id = random_base62(ID_LEN)?;
    let secret = random_base62(SECRET_LEN)?;
    let body = format!("{PREFIX}_{}_{id}_{secret}", env.as_str());
    let sum = checksum(&body);
    let mut key = body;
    key.extend(sum.iter().map(|&b| char::from(b)));
    Ok(GeneratedKey {
        key,
        id,
        hash: SecretHash::of(&secret),
    })
}

/// One entry of the keys file, as checked by `config::keys_file`.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub id: String,
    pub hash: SecretHash,
    pub subject: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub env: KeyEnv,
    /// Unix seconds; the key is refused before this instant.
    pub not_before: Option<u64>,
    /// Unix seconds; the key is refused from this instant on.
    pub not_after: Option<u64>,
    pub description: Option<String>,
}

/// How one key check ended, for `portcullis_api_key_requests_total{key_id,outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    Valid,
    WrongSecret,
    WrongEnvironment,
    Expired,
    NotYetValid,
    /// Not a key of the file: malformed, bad checksum, or an unknown id (key id `unknown`).
    Malformed,
    BadChecksum,
    UnknownId,
}

impl KeyOutcome {
    pub const ALL: [Self; 8] = [
        Self::Valid,
        Self::WrongSecret,
        Self::WrongEnvironment,
        Self::Expired,
        Self::NotYetValid,
        Self::Malformed,
        Self::BadChecksum,
        Self::UnknownId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::WrongSecret => "wrong_secret",
            Self::WrongEnvironment => "wrong_environment",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Malformed => "malformed",
            Self::BadChecksum => "bad_checksum",
            Self::UnknownId => "unknown_id",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Per-key counters, carried over to the next set when a reload keeps the id.
#[derive(Debug, Default)]
struct KeyUsage {
    counts: [AtomicU64; KeyOutcome::ALL.len()],
    /// Unix seconds of the last accepted use; 0 for never.
    last_used: AtomicU64,
}

impl KeyUsage {
    fn count(&self, outcome: KeyOutcome) {
        self.counts[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Known {
    entry: KeyEntry,
    /// Built once at load: an accepted check hands out a clone of this `Arc`.
    identity: Arc<Identity>,
    usage: Arc<KeyUsage>,
}

/// The keys of one version of the file, by id.
#[derive(Debug, Default)]
pub struct KeySet {
    by_id: HashMap<String, Known>,
}

impl KeySet {
    /// The set of `entries` (the first of a repeated id wins; the file check refuses repeats).
    pub fn new(entries: &[KeyEntry]) -> Self {
        let mut by_id = HashMap::with_capacity(entries.len());
        for entry in entries {
            by_id.entry(entry.id.clone()).or_insert_with(|| Known {
                identity: Arc::new(identity_of(entry)),
                entry: entry.clone(),
                usage: Arc::default(),
            });
        }
        Self { by_id }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Keeps the counters of every id `old` has too.
    fn adopt_usage(&mut self, old: &KeySet) {
        for (id, known) in &mut self.by_id {
            if let Some(previous) = old.by_id.get(id) {
                known.usage = previous.usage.clone();
            }
        }
    }
}

fn identity_of(entry: &KeyEntry) -> Identity {
    Identity {
        method: AuthMethod::ApiKey,
        subject: entry.subject.clone(),
        issuer: ISSUER.to_owned(),
        scopes: entry.scopes.clone(),
        roles: entry.roles.clone(),
        token_id: None,
        issued_at: None,
        expires_at: entry.not_after,
        key_id: Some(entry.id.clone()),
        // Never put in the token cache: the check is as cheap as a cache look-up.
        cache_policy: CachePolicy::Uncacheable,
        ..Identity::anonymous()
    }
}

/// Where a deployment reads API keys and which it accepts (the `api_keys:` section).
#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    /// The keys file (watched).
    pub file: PathBuf,
    /// The request header that carries a key (lower case).
    pub header: String,
    /// The only environment accepted.
    pub env: KeyEnv,
    /// `Authorization: <scheme> <key>` is accepted too when set (compared case-insensitively).
    pub authorization_scheme: Option<String>,
    /// The file's entries as checked when the configuration was loaded.
    pub entries: Arc<Vec<KeyEntry>>,
}

/// Reads and checks a keys file: the entries, or the file's problems one located line each.
pub type Loader = fn(&Path) -> Result<Vec<KeyEntry>, Vec<String>>;

/// What `/status` shows of the keys file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyStatus {
    pub file: PathBuf,
    pub keys: usize,
    /// Problems of the last load when it was refused (the previous set stays in use).
    pub last_error: Option<Vec<String>>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub per_key: Vec<KeyUse>,
}

/// One key's use, for `/status` and the metrics. Never the hash or the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub id: String,
    pub subject: String,
    /// Unix seconds of the last accepted request; `None` when never used.
    pub last_used: Option<u64>,
    /// Checks by outcome, non-zero ones only.
    pub counts: Vec<(KeyOutcome, u64)>,
}

#[derive(Debug, Default)]
struct LoadRecord {
    last_error: Option<Vec<String>>,
    reloads_ok: u64,
    reloads_failed: u64,
}

/// The keys of one keys file: the current set, swapped whole when the file changes; a refused
/// edit keeps the last good set and records why.
#[derive(Debug)]
pub struct ApiKeyStore {
    file: PathBuf,
    current: ArcSwap<KeySet>,
    record: Mutex<LoadRecord>,
    /// Checks that named no key of the file, by outcome.
    unmatched: KeyUsage,
    stop: CancellationToken,
}

impl Drop for ApiKeyStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ApiKeyStore {
    pub fn new(file: PathBuf, entries: &[KeyEntry]) -> Self {
        Self {
            file,
            current: ArcSwap::from_pointee(KeySet::new(entries)),
            record: Mutex::default(),
            unmatched: KeyUsage::default(),
            stop: CancellationToken::new(),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Replaces the set with `entries` (counters of kept ids carry over) and clears the error.
    pub fn replace(&self, entries: &[KeyEntry]) {
        let mut set = KeySet::new(entries);
        set.adopt_usage(&self.current.load());
        self.current.store(Arc::new(set));
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.last_error = None;
        record.reloads_ok += 1;
    }

    /// Records a refused version of the file; the set in use stays.
    pub fn reject(&self, errors: Vec<String>) {
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.last_error = Some(errors);
        record.reloads_failed += 1;
    }

    /// Checks a presented key for a deployment of `env` at `now` (Unix seconds): the entry's
    /// identity, or why not.
    pub fn check(&self, key: &str, env: KeyEnv, now: u64) -> Result<Arc<Identity>, TokenProblem> {
        let parts = match parse(key) {
            Ok(parts) => parts,
            Err(problem) => {
                self.unmatched.count(match problem {
                    TokenProblem::BadChecksum => KeyOutcome::BadChecksum,
                    _ => KeyOutcome::Malformed,
                });
                return Err(problem);
            }
        };
        let set = self.current.load();
        let Some(known) = set.by_id.get(parts.id) else {
            // Another environment's key is refused as such only for ids we know, so the answer
            // never tells an unknown id apart (both are 401 anyway).
            self.unmatched.count(KeyOutcome::UnknownId);
            return Err(TokenProblem::UnknownApiKey);
        };
        let outcome = if parts.env != env || known.entry.env != parts.env {
            KeyOutcome::WrongEnvironment
        } else if !known.entry.hash.matches(parts.secret) {
            KeyOutcome::WrongSecret
        } else if known.entry.not_before.is_some_and(|nbf| now < nbf) {
            KeyOutcome::NotYetValid
        } else if known.entry.not_after.is_some_and(|naf| now >= naf) {
            KeyOutcome::Expired
        } else {
            KeyOutcome::Valid
        };
        known.usage.count(outcome);
        match outcome {
            KeyOutcome::Valid => {
                known.usage.last_used.store(now, Ordering::Relaxed);
                Ok(known.identity.clone())
            }
            KeyOutcome::WrongEnvironment => Err(TokenProblem::WrongEnvironment),
            KeyOutcome::NotYetValid => Err(TokenProblem::NotYetValid),
            KeyOutcome::Expired => Err(TokenProblem::Expired),
            _ => Err(TokenProblem::WrongSecret),
        }
    }

    pub fn status(&self) -> ApiKeyStatus {
        let set = self.current.load();
        let counts = |usage: &KeyUsage| {
            KeyOutcome::ALL
                .into_iter()
                .map(|outcome| {
                    (
                        outcome,
                        usage.counts[outcome.index()].load(Ordering::Relaxed),
                    )
                })
                .filter(|(_, count)| *count > 0)
                .collect()
        };
        let mut per_key: Vec<KeyUse> = set
            .by_id
            .values()
            .map(|known| KeyUse {
                id: known.entry.id.clone(),
                subject: known.entry.subject.clone(),
                last_used: Some(known.usage.last_used.load(Ordering::Relaxed)).filter(|&at| at > 0),
                counts: counts(&known.usage),
            })
            .collect();
        per_key.sort_by(|a, b| a.id.cmp(&b.id));
        let unmatched = counts(&self.unmatched);
        if !unmatched.is_empty() {
            per_key.push(KeyUse {
                id: UNMATCHED_KEY_ID.to_owned(),
                subject: String::new(),
                last_used: None,
                counts: unmatched,
            });
        }
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        ApiKeyStatus {
            file: self.file.clone(),
            keys: set.len(),
            last_error: record.last_error.clone(),
            reloads_ok: record.reloads_ok,
            reloads_failed: record.reloads_failed,
            per_key,
        }
    }
}

/// Quiet time after the last change to the keys file before it is read again.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// The app-lifetime home of the keys store: a reload that keeps the same file keeps the store
/// (its counters and its watcher); a new file gets a new store.
#[derive(Debug, Default)]
pub struct ApiKeyRegistry {
    store: Mutex<Option<Arc<ApiKeyStore>>>,
}

impl ApiKeyRegistry {
    /// The store for `settings`: the existing one when the file is the same (its set replaced
    /// by the entries the configuration load just checked), else a new one whose file is
    /// watched (inside a tokio runtime) and read again with `load` on every change.
    pub fn store_for(&self, settings: &ApiKeySettings, load: Loader) -> Arc<ApiKeyStore> {
        let mut slot = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = slot.as_ref().filter(|s| s.file == settings.file) {
            store.replace(&settings.entries);
            return store.clone();
        }
        let store = Arc::new(ApiKeyStore::new(settings.file.clone(), &settings.entries));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch_file(
                Arc::downgrade(&store),
                settings.file.clone(),
                load,
                store.stop.clone(),
            ));
        }
        *slot = Some(store.clone());
        store
    }

    /// Drops the store (and stops its watcher) unless `settings` still names its file.
    pub fn retain(&self, settings: Option<&ApiKeySettings>) {
        let mut slot = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if slot
            .as_ref()
            .is_some_and(|store| settings.is_none_or(|s| s.file != store.file))
            && let Some(store) = slot.take()
        {
            store.stop.cancel();
        }
    }

    /// The current store's status; `None` without `api_keys`.
    pub fn status(&self) -> Option<ApiKeyStatus> {
        let store = self
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        store.map(|store| store.status())
    }
}

/// Reads the keys file again on every change until stopped or the store is gone. A refused
/// version is logged once (its located problems carry no key material) and kept in the status.
async fn watch_file(
    store: Weak<ApiKeyStore>,
    path: PathBuf,
    load: Loader,
    stop: CancellationToken,
) {
    let mut watcher = match FileWatcher::watch(&path, RELOAD_DEBOUNCE, "keys file") {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the API keys file; changes need a configuration reload");
            return;
        }
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = watcher.changed() => {
                if changed.is_none() {
                    tracing::warn!("API keys file watcher stopped; changes need a configuration reload");
                    return;
                }
                let file = path.clone();
                let loaded = tokio::task::spawn_blocking(move || load(&file)).await;
                let Some(store) = store.upgrade() else { return };
                match loaded {
                    Ok(Ok(entries)) => {
                        store.replace(&entries);
                        tracing::info!(keys = entries.len(), "API keys file reloaded");
                    }
                    Ok(Err(errors)) => {
                        tracing::warn!(
                            "API keys file refused, keeping the last good keys:\n{}",
                            errors.join("\n")
                        );
                        store.reject(errors);
                    }
                    Err(error) => {
                        tracing::error!(%error, "API keys file loading task failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn entry(id: &str, secret: &str) -> KeyEntry {
        KeyEntry {
            id: id.to_owned(),
            hash: SecretHash::of(secret),
            subject: "billing".to_owned(),
            scopes: vec!["read:documents".to_owned()],
            roles: vec!["user".to_owned()],
            env: KeyEnv::Live,
            not_before: None,
            not_after: None,
            description: None,
        }
    }

    /// A well-formed key with a correct checksum.
    fn key(env: &str, id: &str, secret: &str) -> String {
        let body = format!("pk_{env}_{id}_{secret}");
        let sum = checksum(&body);
        format!("{body}{}", std::str::from_utf8(&sum).expect("ascii"))
    }

    const ID: &str = "AbCdEf012345";
    const SECRET: &str = "s3cr3tS3cr3tS3cr3tS3cr3tS3cr3tAB";

    fn store_with(entries: &[KeyEntry]) -> ApiKeyStore {
        ApiKeyStore::new("keys.yaml".into(), entries)
    }

    #[test]
    fn generated_keys_have_the_documented_format_and_verify() {
        let generated = generate(KeyEnv::Test).expect("random");
        assert_eq!(generated.key.len(), 59, "{}", generated.key.len());
        assert!(generated.key.starts_with("pk_test_"));
        let parts = parse(&generated.key).expect("a generated key parses");
        assert_eq!(parts.env, KeyEnv::Test);
        assert_eq!(parts.id, generated.id);
        assert!(generated.hash.matches(parts.secret()));
        let other = generate(KeyEnv::Test).expect("random");
        assert_ne!(other.key, generated.key);
    }

    #[test]
    fn a_mistyped_key_fails_its_checksum() {
        let good = key("live", ID, SECRET);
        assert!(parse(&good).is_ok());
        // One character changed in the secret, then in the checksum itself.
        let mut typo = good.clone().into_bytes();
        typo[30] = if typo[30] == b'x' { b'y' } else { b'x' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert_eq!(parse(&typo), Err(TokenProblem::BadChecksum));
        let mut last = good.into_bytes();
        let end = last.len() - 1;
        last[end] = if last[end] == b'0' { b'1' } else { b'0' };
        let last = String::from_utf8(last).expect("ascii");
        assert_eq!(parse(&last), Err(TokenProblem::BadChecksum));
    }

    #[test]
    fn refuses_bad_shapes_before_the_checksum() {
        let good = key("live", ID, SECRET);
        for bad in [
            String::new(),
            "pk_live_".to_owned(),
            format!("{good},{good}"),
            format!("{good} {good}"),
            good.replace("pk_live", "pk_prod"),
            good.replace("pk_", "sk_"),
            format!("{good}x"),
            good.replacen('A', "é", 1),
            key("live", "AbCdEf01234-", SECRET),
        ] {
            assert_eq!(parse(&bad), Err(TokenProblem::Malformed), "{bad:?}");
        }
        assert_eq!(parse(&"a".repeat(257)), Err(TokenProblem::TooLarge));
    }

    #[test]
    fn hashes_parse_print_and_refuse_plain_keys() {
        let hash = SecretHash::of(SECRET);
        let text = hash.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71, "{text}");
        assert!(
            SecretHash::parse(&text)
                .expect("round trip")
                .matches(SECRET)
        );
        let plain = key("live", ID, SECRET);
        let error = SecretHash::parse(&plain).expect_err("plain key");
        assert!(error.contains("plain-text API key"), "{error}");
        assert!(!error.contains(SECRET), "{error}");
        for bad in ["sha256:abc", "md5:00", &text.to_uppercase(), &text[7..]] {
            assert!(SecretHash::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{hash:?}"), "SecretHash(..)");
    }

    #[test]
    fn accepts_a_valid_key_with_the_entrys_identity() {
        let store = store_with(&[entry(ID, SECRET)]);
        let identity = store
            .check(&key("live", ID, SECRET), KeyEnv::Live, NOW)
            .expect("valid key");
        assert_eq!(identity.method, AuthMethod::ApiKey);
        assert_eq!(identity.subject, "billing");
        assert_eq!(identity.scopes, ["read:documents"]);
        assert_eq!(identity.roles, ["user"]);
        assert_eq!(identity.key_id.as_deref(), Some(ID));
        let status = store.status();
        assert_eq!(status.per_key[0].last_used, Some(NOW));
        assert_eq!(status.per_key[0].counts, [(KeyOutcome::Valid, 1)]);
    }

    #[test]
    fn refuses_wrong_secret_unknown_id_and_other_environment() {
        let store = store_with(&[entry(ID, SECRET)]);
        let other_secret = SECRET.replace('s', "t");
        assert_eq!(
            store.check(&key("live", ID, &other_secret), KeyEnv::Live, NOW),
            Err(TokenProblem::WrongSecret)
        );
        assert_eq!(
            store.check(&key("live", "ZZZZZZZZZZZZ", SECRET), KeyEnv::Live, NOW),
            Err(TokenProblem::UnknownApiKey)
        );
        // A test key on a live deployment, even with the right id and secret.
        assert_eq!(
            store.check(&key("test", ID, SECRET), KeyEnv::Live, NOW),
            Err(TokenProblem::WrongEnvironment)
        );
        // A live key on a test deployment.
        assert_eq!(
            store.check(&key("live", ID, SECRET), KeyEnv::Test, NOW),
            Err(TokenProblem::WrongEnvironment)
        );
        let status = store.status();
        assert_eq!(status.per_key[0].last_used, None);
        assert_eq!(
            status.per_key[1].id, UNMATCHED_KEY_ID,
            "unknown ids are counted without their id"
        );
    }

    #[test]
    fn refuses_keys_outside_their_validity_window() {
        let mut early = entry(ID, SECRET);
        early.not_before = Some(NOW + 60);
        let store = store_with(&[early]);
        assert_eq!(
            store.check(&key("live", ID, SECRET), KeyEnv::Live, NOW),
            Err(TokenProblem::NotYetValid)
        );
        let mut late = entry(ID, SECRET);
        late.not_after = Some(NOW);
        store.replace(&[late]);
        assert_eq!(
            store.check(&key("live", ID, SECRET), KeyEnv::Live, NOW),
            Err(TokenProblem::Expired)
        );
        assert!(
            store
                .check(&key("live", ID, SECRET), KeyEnv::Live, NOW - 1)
                .is_ok()
        );
    }

    #[test]
    fn several_keys_of_one_subject_are_valid_at_once_and_a_reload_keeps_counters() {
        let second_id = "ZyXwVu987654";
        let second_secret = "0therSecret0therSecret0therSecre";
        let store = store_with(&[entry(ID, SECRET), entry(second_id, second_secret)]);
        for (id, secret) in [(ID, SECRET), (second_id, second_secret)] {
            let identity = store
                .check(&key("live", id, secret), KeyEnv::Live, NOW)
                .expect("both keys valid");
            assert_eq!(identity.subject, "billing");
        }
        // The old key is removed from the file: refused, and the new one keeps its counts.
        store.replace(&[entry(second_id, second_secret)]);
        assert_eq!(
            store.check(&key("live", ID, SECRET), KeyEnv::Live, NOW),
            Err(TokenProblem::UnknownApiKey)
        );
        let status = store.status();
        assert_eq!(status.keys, 1);
        assert_eq!(status.per_key[0].id, second_id);
        assert_eq!(status.per_key[0].counts, [(KeyOutcome::Valid, 1)]);
    }

    #[test]
    fn a_refused_edit_keeps_the_last_good_set() {
        let store = store_with(&[entry(ID, SECRET)]);
        store.reject(vec!["keys.yaml:3:5: keys[0].hash: bad".to_owned()]);
        assert!(
            store
                .check(&key("live", ID, SECRET), KeyEnv::Live, NOW)
                .is_ok()
        );
        let status = store.status();
        assert_eq!(status.reloads_failed, 1);
        assert!(status.last_error.is_some());
        store.replace(&[entry(ID, SECRET)]);
        assert_eq!(store.status().last_error, None);
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let k = key("live", ID, SECRET);
        let parts = parse(&k).expect("valid");
        let generated = generate(KeyEnv::Live).expect("random");
        let shown = format!("{parts:?} {generated:?} {:?}", entry(ID, SECRET));
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&generated.key), "{shown}");
    }
}
