//! The Redis source, for fleets: every entry lives in Redis under `key_prefix` with its own
//! TTL (Redis forgets it when the tokens it covers have expired), and every new entry is
//! published on `channel` so that every pod applies it at once.
//!
//! On connect and on every reconnect the agent subscribes **first** and then loads the full
//! set, so a revocation published between the snapshot and the subscription is not lost (it
//! arrives as a message and is applied after the snapshot; applying an entry twice is
//! harmless). The snapshot is added to what the agent already knew, never put in its place: a
//! Redis restarted empty does not make the fleet forget a revocation before it expires. While Redis is unreachable the last good list stays in force, the error is shown
//! in `/status`, and the agent reconnects with backoff.
//!
//! This module must never log the Redis URL (it may hold a password).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;

use super::{Revocation, RevocationList, Revocations, Source, Timestamp};

/// Where and how the fleet shares revocations (`revocation.redis`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS; never logged.
    pub url: String,
    /// With `rediss://`: the CA certificates (PEM) the server's certificate must chain to;
    /// `None` trusts the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// A file holding the password (read at every connection, so a rotated secret is used
    /// on the next reconnect); overrides a password in `url`.
    pub password_file: Option<std::path::PathBuf>,
    pub channel: String,
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("channel", &self.channel)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

pub const DEFAULT_CHANNEL: &str = "portcullis:revocations";
pub const DEFAULT_KEY_PREFIX: &str = "portcullis:revoked:";

/// Longest wait for a connection or a command before Redis counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the connection is probed (and the sync age restarted) and expired entries dropped.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Most messages applied in one rebuild of the merged set.
const MAX_BATCH: usize = 10_000;

/// Why Redis could not be used. The message never holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {TIMEOUT:?}")]
    Timeout,
    #[error("redis: the subscription ended (connection lost)")]
    Disconnected,
    #[error("redis: the entry already expired")]
    Expired,
    #[error("redis: cannot read the CA file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("redis: cannot read the password file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A client for `config`, with the password from its file when it has one.
pub fn client(config: &RedisConfig) -> Result<redis::Client, RedisError> {
    let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())?;
    let info = match &config.password_file {
        None => info,
        Some(path) => {
            let password =
                std::fs::read_to_string(path).map_err(|source| RedisError::PasswordFile {
                    path: path.clone(),
                    source,
                })?;
            // A trailing newline is how secrets are usually written to files.
            let password = password.trim_end_matches(['\r', '\n']);
            let settings = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(settings)
        }
    };
    // `rediss://` is TLS (rustls, with the process's aws-lc provider): to the system's roots,
    // or to the configured CA. A `redis://` URL with a CA file is refused by the configuration.
    match &config.ca_file {
        None => Ok(redis::Client::open(info)?),
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|source| RedisError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            Ok(redis::Client::build_with_tls(info, certificates)?)
        }
    }
}

async fn timed<T>(
    future: impl Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisError::Timeout),
    }
}

/// The Redis key of one entry: the prefix, the kind, and what identifies it.
pub fn entry_key(prefix: &str, revocation: &Revocation) -> String {
    let id = match revocation {
        Revocation::Jti(e) => format!("jti:{}", e.jti),
        Revocation::Subject(e) => format!("sub:{}", serde_json::json!([e.issuer, e.sub])),
        Revocation::Key(e) => format!("kid:{}", serde_json::json!([e.issuer, e.kid])),
        Revocation::ApiKey(e) => format!("api_key:{}", e.id),
    };
    format!("{prefix}{id}")
}

/// The value stored and published for one entry: a one-entry revocation list, as JSON.
pub fn entry_value(revocation: &Revocation) -> String {
    let mut list = RevocationList::default();
    list.add(revocation.clone());
    serde_json::to_string(&list).unwrap_or_default()
}

/// When the entry stops mattering (Unix seconds), `None` for never.
fn entry_expiry(revocation: &Revocation) -> Option<u64> {
    match revocation {
        Revocation::Jti(e) => Some(e.expires.0),
        Revocation::Subject(e) => e.expires.map(|t| t.0),
        Revocation::Key(e) => e.expires.map(|t| t.0),
        Revocation::ApiKey(e) => e.expires.map(|t| t.0),
    }
}

/// Stores `revocation` with its TTL and publishes it: what `portcullis revoke --redis` does.
/// Returns how many agents received the message.
pub async fn publish(config: &RedisConfig, revocation: &Revocation) -> Result<u64, RedisError> {
    let client = client(config)?;
    let mut con = timed(client.get_multiplexed_async_connection()).await?;
    let key = entry_key(&config.key_prefix, revocation);
    let value = entry_value(revocation);
    let mut set = redis::cmd("SET");
    set.arg(&key).arg(&value);
    if let Some(expires) = entry_expiry(revocation) {
        if expires <= Timestamp::now().0 {
            return Err(RedisError::Expired);
        }
        set.arg("EXAT").arg(expires);
    }
    timed(set.query_async::<()>(&mut con)).await?;
    timed(con.publish::<_, _, u64>(&config.channel, &value)).await
}

/// What is in force in Redis (`portcullis revoke --redis URL --list`).
pub async fn list(config: &RedisConfig) -> Result<RevocationList, RedisError> {
    let client = client(config)?;
    let mut con = timed(client.get_multiplexed_async_connection()).await?;
    Ok(load_all(&mut con, &config.key_prefix, usize::MAX).await?.0)
}

/// Every entry stored under the prefix (SCAN, then MGET per batch). Entries that cannot be
/// read are logged, counted and skipped.
pub async fn load_all(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    ceiling: usize,
) -> Result<(RevocationList, u64), RedisError> {
    let pattern = format!("{}*", escape_glob(prefix));
    let mut list = RevocationList::default();
    let mut skipped = 0;
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = timed(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(con),
        )
        .await?;
        if !keys.is_empty() {
            let values: Vec<Option<Vec<u8>>> =
                timed(redis::cmd("MGET").arg(&keys).query_async(con)).await?;
            for value in values.into_iter().flatten() {
                skipped += u64::from(!merge_message(&mut list, &value, ceiling));
            }
        }
        if next == 0 {
            return Ok((list, skipped));
        }
        cursor = next;
    }
}

/// Adds the entries of one stored value or message to `list`; false (logged) when it is not a
/// revocation list, or when `list` already holds `ceiling` entries (a flood must not exhaust
/// memory; the merged set's cap reports what it leaves out).
fn merge_message(list: &mut RevocationList, payload: &[u8], ceiling: usize) -> bool {
    if list.len() >= ceiling {
        return false;
    }
    match serde_json::from_slice::<RevocationList>(payload) {
        Ok(entries) => {
            merge_list(list, entries);
            true
        }
        Err(error) => {
            tracing::warn!(%error, bytes = payload.len(), "malformed revocation from redis skipped");
            false
        }
    }
}

/// Adds every entry of `entries` to `list`.
fn merge_list(list: &mut RevocationList, entries: RevocationList) {
    let RevocationList {
        jtis,
        subjects,
        keys,
        api_keys,
    } = entries;
    jtis.into_iter()
        .map(Revocation::Jti)
        .chain(subjects.into_iter().map(Revocation::Subject))
        .chain(keys.into_iter().map(Revocation::Key))
        .chain(api_keys.into_iter().map(Revocation::ApiKey))
        .for_each(|entry| list.add(entry));
}

fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Follows Redis for as long as the returned future runs: connect, subscribe, load, apply
/// messages; on any failure keep the last good list and reconnect with backoff.
pub async fn follow(config: RedisConfig, revocations: Arc<Revocations>) {
    let mut list = RevocationList::default();
    let mut backoff = BACKOFF_FIRST;
    // Twice the cap: the merged set keeps `max_entries` of them and reports the rest.
    let ceiling = revocations.max_entries().saturating_mul(2);
    loop {
        // Each (re)connection is one sync span; the messages that follow are not traced (one
        // span per revocation on every pod would say nothing a metric does not).
        let synced = super::in_sync_span(Source::Redis, sync(&config, ceiling), |synced| {
            super::entries_loaded(synced.snapshot.len())
        })
        .await;
        let error = match synced {
            Ok(synced) => session(synced, &revocations, &mut list, ceiling, &mut backoff).await,
            Err(error) => error,
        };
        tracing::warn!(
            %error,
            retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "revocation source redis unreachable; the revocations already known stay in force"
        );
        revocations.failed(Source::Redis, error.to_string());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A connection subscribed to the channel, and the full set loaded after subscribing.
struct Synced {
    pubsub: redis::aio::PubSub,
    con: redis::aio::MultiplexedConnection,
    snapshot: RevocationList,
    skipped: u64,
}

/// Connects, subscribes **first**, then loads every entry (see the module docs).
async fn sync(config: &RedisConfig, ceiling: usize) -> Result<Synced, RedisError> {
    let client = client(config)?;
    let mut pubsub = timed(client.get_async_pubsub()).await?;
    timed(pubsub.subscribe(&config.channel)).await?;
    let mut con = timed(client.get_multiplexed_async_connection()).await?;
    let (snapshot, skipped) = load_all(&mut con, &config.key_prefix, ceiling).await?;
    Ok(Synced {
        pubsub,
        con,
        snapshot,
        skipped,
    })
}

/// One connection's life after its sync; returns why it ended.
async fn session(
    synced: Synced,
    revocations: &Revocations,
    list: &mut RevocationList,
    ceiling: usize,
    backoff: &mut Duration,
) -> RedisError {
    let Synced {
        pubsub,
        mut con,
        snapshot,
        skipped,
    } = synced;
    revocations.skipped(Source::Redis, skipped);
    tracing::info!(
        entries = snapshot.len(),
        skipped,
        "revocation source redis loaded and subscribed"
    );
    // A union, not a replacement: a Redis that comes back empty (restarted without
    // persistence) must not make the fleet forget what it had revoked. Entries leave
    // only when they expire.
    merge_list(list, snapshot);
    revocations.replace(Source::Redis, list.clone());
    *backoff = BACKOFF_FIRST;
    let mut messages = pubsub.into_on_message();
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return RedisError::Disconnected };
                let mut skipped = u64::from(!merge_message(list, message.get_payload_bytes(), ceiling));
                // A burst is applied with one rebuild of the merged set.
                let mut batch = 1;
                while batch < MAX_BATCH {
                    match futures::FutureExt::now_or_never(messages.next()) {
                        Some(Some(message)) => {
                            skipped += u64::from(!merge_message(list, message.get_payload_bytes(), ceiling));
                            batch += 1;
                        }
                        Some(None) => return RedisError::Disconnected,
                        None => break,
                    }
                }
                if skipped > 0 {
                    tracing::error!(
                        skipped,
                        entries = list.len(),
                        "revocations from redis skipped (malformed, or over twice revocation.max_entries)"
                    );
                    revocations.skipped(Source::Redis, skipped);
                }
                revocations.replace(Source::Redis, list.clone());
            }
            _ = probe.tick() => {
                if let Err(error) = timed(redis::cmd("PING").query_async::<()>(&mut con)).await {
                    return error;
                }
                let before = list.len();
                prune(list);
                if list.len() == before {
                    revocations.confirm(Source::Redis);
                } else {
                    revocations.replace(Source::Redis, list.clone());
                }
            }
        }
    }
}

/// Drops the entries of `list` that have expired (Redis has dropped them too).
fn prune(list: &mut RevocationList) {
    let now = Timestamp::now().0;
    list.jtis.retain(|e| e.expires.0 > now);
    list.subjects
        .retain(|e| e.expires.is_none_or(|t| t.0 > now));
    list.keys.retain(|e| e.expires.is_none_or(|t| t.0 > now));
    list.api_keys
        .retain(|e| e.expires.is_none_or(|t| t.0 > now));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::JtiEntry;

    #[test]
    fn keys_name_the_kind_and_values_are_one_entry_lists() {
        let jti = Revocation::Jti(JtiEntry {
            jti: "t-1".to_owned(),
            expires: Timestamp(2_000_000_000),
        });
        assert_eq!(entry_key("p:", &jti), "p:jti:t-1");
        let mut list = RevocationList::default();
        assert!(merge_message(&mut list, entry_value(&jti).as_bytes(), 10));
        assert_eq!(list.jtis.len(), 1);
        assert!(!merge_message(&mut list, b"{\"jtis\": [{\"jti\": 1}]}", 10));
        // At the ceiling nothing more is taken in.
        assert!(!merge_message(&mut list, entry_value(&jti).as_bytes(), 1));
        assert_eq!(escape_glob("a*b[c]"), "a\\*b\\[c\\]");
    }
}
