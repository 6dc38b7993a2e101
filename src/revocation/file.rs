//! The revocation file (design.md, "Revocation"): reading it with located errors, following
//! it (watched like the configuration: the last good list stays in force when a new version
//! cannot be read), and writing it atomically for `portcullis revoke --file`.
//!
//! Every entry is checked while parsing (unknown keys, a missing expiry, a time that is not
//! RFC 3339), so a bad file is refused whole with `file:line:column` and never half-applied.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{RevocationList, Revocations, Source};
use crate::watch::FileWatcher;

/// Largest revocation file read (a few million entries); a bigger one is refused rather than
/// allowed to exhaust memory.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Quiet time after the last change before the file is read again.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often expired entries are dropped from the merged set, and a watched file with no
/// change is confirmed current (its sync age restarts).
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Why a revocation file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        message: String,
    },
}

/// Parses the document form of design.md. An empty document is an empty list.
pub fn parse_list(text: &str) -> Result<RevocationList, (Option<(usize, usize)>, String)> {
    if text.trim().is_empty() {
        return Ok(RevocationList::default());
    }
    serde_yaml_ng::from_str::<Option<RevocationList>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|error| {
            let location = error.location().map(|l| (l.line(), l.column()));
            // The message already says where; the location is reported once, in front.
            let message = error.to_string();
            let message = message
                .split_once(" at line ")
                .map_or(message.as_str(), |(head, _)| head)
                .to_owned();
            (location, message)
        })
}

/// Reads and parses the revocation file at `path`.
pub fn load(path: &Path) -> Result<RevocationList, FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_list(&text).map_err(|(location, message)| FileError::Invalid {
        path: path.to_owned(),
        location,
        message,
    })
}

/// Replaces the file at `path` with `list` atomically: a temporary file in the same directory,
/// flushed to disk, renamed over it. A reader sees the old file or the new one, never a part.
pub fn store(path: &Path, list: &RevocationList) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let text = serde_yaml_ng::to_string(list).map_err(|error| FileError::Invalid {
        path: path.to_owned(),
        location: None,
        message: error.to_string(),
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    temp.write_all(text.as_bytes()).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    // Keep the mode of the file it replaces (a revocation file may be group-readable only).
    if let Ok(metadata) = std::fs::metadata(path) {
        std::fs::set_permissions(temp.path(), metadata.permissions()).map_err(io)?;
    }
    temp.persist(path).map_err(|error| io(error.error))?;
    Ok(())
}

/// Loads the file once into `revocations` (the error, if any, recorded and returned).
pub fn refresh(path: &Path, revocations: &Revocations) -> Result<(), FileError> {
    match load(path) {
        Ok(list) => {
            tracing::info!(
                path = %path.display(),
                entries = list.len(),
                "revocation file loaded"
            );
            revocations.replace(Source::File, list);
            Ok(())
        }
        Err(error) => {
            tracing::error!(%error, "revocation file not loaded; the last good list stays in force");
            revocations.failed(Source::File, error.to_string());
            Err(error)
        }
    }
}

/// Starts watching the file. Call it before the first [`refresh`], so that a change made while
/// that read runs is not missed; `None` (logged) when the file cannot be watched, and then
/// [`follow`] re-reads it every 30 s instead.
pub fn watch(path: &Path) -> Option<FileWatcher> {
    match FileWatcher::watch(path, DEBOUNCE, "revocation file") {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::error!(%error, "cannot watch the revocation file; it is re-read every 30 s");
            None
        }
    }
}

/// Follows the file for as long as the returned future runs, after the caller's first read: reads
/// it again after every change `watcher` (from [`watch`]) reports, and drops expired entries every
/// 30 s.
pub async fn follow(
    path: PathBuf,
    revocations: Arc<Revocations>,
    mut watcher: Option<FileWatcher>,
) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.tick().await;
    loop {
        let changed = async {
            match watcher.as_mut() {
                Some(watcher) => watcher.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changed => {
                if changed.is_none() {
                    tracing::error!("revocation file watcher stopped; the file is re-read every 30 s");
                    watcher = None;
                    continue;
                }
                let _ = read_blocking(&path, &revocations).await;
            }
            _ = prune.tick() => {
                if watcher.is_none() {
                    let _ = read_blocking(&path, &revocations).await;
                } else {
                    revocations.prune();
                    revocations.confirm(Source::File);
                }
            }
        }
    }
}

async fn read_blocking(path: &Path, revocations: &Arc<Revocations>) -> Result<(), ()> {
    let (path, revocations) = (path.to_owned(), revocations.clone());
    match tokio::task::spawn_blocking(move || refresh(&path, &revocations)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(error) => {
            tracing::error!(%error, "revocation file task failed");
            Err(())
        }
    }
}
