//! The HTTP feed: the revocation document (design.md's form, as YAML or JSON) polled from a
//! URL every `interval`, through [`crate::fetch`] (HTTPS except loopback, no redirects, a
//! timeout over the whole exchange, a size cap enforced while the body streams). `ETag` and
//! `If-None-Match` spare re-reading an unchanged feed; a feed that cannot be fetched or parsed
//! keeps the last good list in force, with the error in `/status`.
//!
//! This module must never log a URL's credentials or query (only [`fetch::redact`]ed URLs).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use reqwest::Url;
use reqwest::header::HeaderValue;

use super::{Revocations, Source};
use crate::fetch::{self, Limits};

/// `revocation.http`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Already checked with [`fetch::checked_url`].
    pub url: Url,
    pub interval: Duration,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Largest feed accepted (a few hundred thousand entries); a bigger body is refused whole.
pub const MAX_FEED_BYTES: usize = 64 * 1024 * 1024;
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT: &str = "application/yaml, application/json;q=0.9, */*;q=0.1";

/// Polls the feed for as long as the returned future runs.
pub async fn follow(config: FeedConfig, revocations: Arc<Revocations>) {
    let client = match fetch::client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client; the revocation feed is not polled");
            revocations.failed(
                Source::Http,
                format!("cannot build the HTTP client: {error}"),
            );
            return;
        }
    };
    let limits = Limits {
        timeout: config.interval.min(MAX_TIMEOUT),
        max_bytes: MAX_FEED_BYTES,
    };
    let mut etag: Option<HeaderValue> = None;
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        etag = poll(&client, &config.url, limits, etag, &revocations).await;
    }
}

/// One poll, as a sync span; returns the `ETag` to send next time (none after a failure, so
/// the next poll reads the whole feed again).
async fn poll(
    client: &reqwest::Client,
    url: &Url,
    limits: Limits,
    etag: Option<HeaderValue>,
    revocations: &Revocations,
) -> Option<HeaderValue> {
    let read = super::in_sync_span(
        Source::Http,
        read(client, url, limits, etag.as_ref()),
        |read| match read {
            Read::Unchanged => vec![KeyValue::new("revocation.unchanged", true)],
            Read::Loaded { list, .. } => {
                let mut attributes = super::entries_loaded(list.len());
                attributes.push(KeyValue::new("revocation.unchanged", false));
                attributes
            }
        },
    )
    .await;
    match read {
        Ok(Read::Unchanged) => {
            revocations.confirm(Source::Http);
            etag
        }
        Ok(Read::Loaded { list, etag }) => {
            let shown = fetch::redact(url);
            tracing::info!(url = %shown, entries = list.len(), "revocation feed loaded");
            revocations.replace(Source::Http, list);
            etag
        }
        Err(ReadError::Fetch(error)) => {
            tracing::warn!(%error, "revocation feed not read; the last good list stays in force");
            revocations.failed(Source::Http, error);
            None
        }
        Err(ReadError::Refused(error)) => {
            tracing::error!(%error, "revocation feed refused; the last good list stays in force");
            revocations.failed(Source::Http, error);
            None
        }
    }
}

/// What one poll found.
enum Read {
    /// `304 Not Modified`: the list held is current.
    Unchanged,
    /// A feed read whole, and its `ETag`.
    Loaded {
        list: super::RevocationList,
        etag: Option<HeaderValue>,
    },
}

/// Why a poll found nothing; each text names the redacted URL, never its query.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// No feed (unreachable, timeout, a status other than 200, too large), with its causes.
    #[error("{0}")]
    Fetch(String),
    /// A feed that is not a revocation document: `url[:line:column]: message`.
    #[error("{0}")]
    Refused(String),
}

/// GETs the feed (conditional on `etag`) and parses it.
async fn read(
    client: &reqwest::Client,
    url: &Url,
    limits: Limits,
    etag: Option<&HeaderValue>,
) -> Result<Read, ReadError> {
    let fetched = match etag {
        Some(etag) => fetch::get_if_changed(client, url, ACCEPT, limits, etag).await,
        None => fetch::get(client, url, ACCEPT, limits).await.map(Some),
    };
    let fetched = match fetched {
        Ok(Some(fetched)) => fetched,
        Ok(None) => return Ok(Read::Unchanged),
        Err(error) => {
            return Err(ReadError::Fetch(
                crate::error::ErrorChain(&error).to_string(),
            ));
        }
    };
    let parsed = std::str::from_utf8(&fetched.body)
        .map_err(|_| (None, "the feed is not UTF-8".to_owned()))
        .and_then(super::parse_list);
    match parsed {
        Ok(list) => Ok(Read::Loaded {
            list,
            etag: fetched.etag,
        }),
        Err((location, message)) => {
            let at = location.map_or(String::new(), |(line, column)| format!(":{line}:{column}"));
            let shown = fetch::redact(url);
            Err(ReadError::Refused(format!("{shown}{at}: {message}")))
        }
    }
}
