//! Watching one file for changes, the way Kubernetes and editors change it: the configuration
//! today, the keys and revocation files later.
//!
//! The file's parent directory is watched (non-recursively), not the file: editors and
//! deployment tools replace files by renaming a new one over them, and a Kubernetes ConfigMap
//! update swaps the `..data` symlink without ever touching the file's own name. An event is
//! relevant when it names the file, names the file's current target, or when the file's
//! canonical path has changed since the last event (the ConfigMap case). When the file is a
//! symlink into another directory, that directory is watched too, so an in-place edit of the
//! target is seen. Bursts of events (an editor saving in several writes) are debounced into one
//! notification.
//!
//! The caller runs the loop (`changed()` → read → check → swap, or keep the old contents and
//! record the error). This module must never read or parse the file itself, and never decide
//! whether a change is acceptable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;
use tokio::time::Instant;

/// However busy the directory, a notification is delivered at most this many debounce
/// periods after the first event of a burst (a file rewritten continuously still reloads).
const MAX_DEBOUNCE_PERIODS: u32 = 20;

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot resolve `{path}`: {source}")]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` has no parent directory to watch")]
    NoParent { path: PathBuf },
    #[error("cannot watch `{path}`: {source}")]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// State shared with notify's event thread.
struct Shared {
    /// What is watched, for log lines (`configuration`, `keys file`).
    what: &'static str,
    /// The watched path, absolute but with symlinks unresolved.
    path: PathBuf,
    /// The directory watched for it.
    dir: PathBuf,
    /// Where `path` pointed at the last event (`None` while it does not exist).
    canonical: Mutex<Option<PathBuf>>,
    /// Bumped on every relevant event; `changed()` debounces on it.
    events: watch::Sender<u64>,
    /// The watched directory itself went away: no further event can arrive.
    dead: AtomicBool,
}

impl Shared {
    fn on_event(&self, result: notify::Result<Event>) {
        let event = match result {
            Ok(event) => event,
            Err(error) => {
                // Lost events cannot be told apart from relevant ones: reload (harmless when
                // nothing changed) rather than miss an update.
                tracing::warn!(%error, "{} watcher error; treating as a change", self.what);
                self.notify();
                return;
            }
        };
        // Opening and reading the file (our own `load` does) must never count as a change,
        // or every reload would trigger the next one.
        if let EventKind::Access(access) = event.kind
            && access != AccessKind::Close(AccessMode::Write)
        {
            return;
        }
        if matches!(event.kind, EventKind::Remove(_)) && event.paths.contains(&self.dir) {
            tracing::warn!(
                dir = %self.dir.display(),
                "the {} directory was removed; no further changes will be seen",
                self.what
            );
            self.dead.store(true, Ordering::SeqCst);
            self.notify();
            return;
        }
        // Writes to other files of the directory (a log file next to the configuration gets one
        // per line) cannot move the file: skip them before the `canonicalize` syscalls, which
        // would otherwise run once per log line.
        if is_content_change(&event.kind) && !event.need_rescan() && !self.names_the_file(&event) {
            return;
        }
        let now = std::fs::canonicalize(&self.path).ok();
        let mut canonical = self
            .canonical
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let names_the_file = event.paths.iter().any(|p| {
            *p == self.path || canonical.as_deref() == Some(p) || now.as_deref() == Some(p)
        });
        let target_moved = now != *canonical;
        *canonical = now;
        drop(canonical);
        if names_the_file || target_moved || event.need_rescan() {
            self.notify();
        }
    }

    /// The event names the file or its last known target.
    fn names_the_file(&self, event: &Event) -> bool {
        let canonical = self
            .canonical
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        event
            .paths
            .iter()
            .any(|p| *p == self.path || canonical.as_deref() == Some(p))
    }

    fn notify(&self) {
        self.events
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn canonical(&self) -> Option<PathBuf> {
        self.canonical
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A change to the content or metadata of an existing name: it never moves a symlink (a
/// ConfigMap swap or a rename shows up as create, rename or remove events).
fn is_content_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Watches one file; see the module docs for what counts as a change.
///
/// Create it before the first read of the file, so that a change made while reading is not
/// missed (it shows up as an immediate first notification).
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    shared: Arc<Shared>,
    events: watch::Receiver<u64>,
    debounce: Duration,
    /// The symlink target's directory, when it is not the watched directory.
    target_dir: Option<PathBuf>,
    /// A change was seen and its notification not yet delivered.
    pending: bool,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("what", &self.shared.what)
            .field("path", &self.shared.path)
            .field("debounce", &self.debounce)
            .field("target_dir", &self.target_dir)
            .finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// Starts watching `path`'s parent directory. `debounce` is the quiet time that must pass
    /// after the last event before [`changed`](Self::changed) resolves (e.g. 500 ms). `what`
    /// names the file in log lines (`configuration`, `keys file`).
    pub fn watch(
        path: &Path,
        debounce: Duration,
        what: &'static str,
    ) -> Result<FileWatcher, WatchError> {
        let path = std::path::absolute(path).map_err(|source| WatchError::Resolve {
            path: path.to_owned(),
            source,
        })?;
        let dir = match path.parent() {
            Some(dir) if path.file_name().is_some() => dir.to_owned(),
            _ => return Err(WatchError::NoParent { path }),
        };
        let (events, receiver) = watch::channel(0_u64);
        let shared = Arc::new(Shared {
            what,
            canonical: Mutex::new(std::fs::canonicalize(&path).ok()),
            path,
            dir: dir.clone(),
            events,
            dead: AtomicBool::new(false),
        });
        let handler = {
            let shared = Arc::clone(&shared);
            move |result: notify::Result<Event>| shared.on_event(result)
        };
        let mut watcher =
            notify::recommended_watcher(handler).map_err(|source| WatchError::Notify {
                path: dir.clone(),
                source,
            })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Notify {
                path: dir.clone(),
                source,
            })?;
        let mut this = FileWatcher {
            watcher,
            shared,
            events: receiver,
            debounce,
            target_dir: None,
            pending: false,
        };
        this.watch_target_dir();
        Ok(this)
    }

    /// The watched path (absolute, symlinks unresolved).
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Resolves once the file has changed and the directory has then been quiet for the
    /// debounce period; `None` when no further change can be observed (the watched
    /// directory was removed). Cancel-safe: a change seen by a dropped call is delivered by
    /// the next one.
    pub async fn changed(&mut self) -> Option<()> {
        if self.shared.dead.load(Ordering::SeqCst) {
            return None;
        }
        if !self.pending {
            self.events.changed().await.ok()?;
            // Remembered across cancellation: a dropped `changed()` resumes debouncing.
            self.pending = true;
        }
        let deadline = Instant::now() + self.debounce * MAX_DEBOUNCE_PERIODS;
        loop {
            match tokio::time::timeout(self.debounce, self.events.changed()).await {
                Ok(Ok(())) if Instant::now() < deadline => continue,
                Ok(Ok(())) | Err(_) => break,
                Ok(Err(_)) => return None,
            }
        }
        self.events.borrow_and_update();
        self.pending = false;
        if self.shared.dead.load(Ordering::SeqCst) {
            return None;
        }
        self.watch_target_dir();
        Some(())
    }

    /// Follows the symlink target's directory when it lies outside the watched directory
    /// (re-done after each change: the target may have moved).
    fn watch_target_dir(&mut self) {
        let wanted = self
            .shared
            .canonical()
            .and_then(|target| target.parent().map(Path::to_owned))
            .filter(|target_dir| {
                std::fs::canonicalize(&self.shared.dir).ok().as_ref() != Some(target_dir)
            });
        if wanted == self.target_dir {
            return;
        }
        if let Some(old) = self.target_dir.take() {
            // The old directory may be gone already (a ConfigMap's previous `..<timestamp>`).
            let _ = self.watcher.unwatch(&old);
        }
        if let Some(dir) = wanted {
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.target_dir = Some(dir),
                Err(error) => tracing::warn!(
                    %error,
                    dir = %dir.display(),
                    "cannot watch the {}'s symlink target directory",
                    self.shared.what
                ),
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::fs;

    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(150);

    /// A keys file next to the configuration (one ConfigMap holding both): each watcher hears
    /// about its own file only.
    #[tokio::test]
    async fn two_files_in_one_directory_are_watched_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("portcullis.yaml");
        let keys = dir.path().join("keys.json");
        fs::write(&config, "a: 1\n").expect("write");
        fs::write(&keys, "{}").expect("write");
        let mut config_watcher =
            FileWatcher::watch(&config, DEBOUNCE, "configuration").expect("watch");
        let mut keys_watcher = FileWatcher::watch(&keys, DEBOUNCE, "keys file").expect("watch");
        assert_eq!(keys_watcher.path(), keys.as_path());

        fs::write(&keys, "{\"keys\": []}").expect("write");
        let got = tokio::time::timeout(Duration::from_secs(10), keys_watcher.changed()).await;
        assert_eq!(got.ok(), Some(Some(())), "the keys watcher sees its file");
        let quiet =
            tokio::time::timeout(Duration::from_millis(600), config_watcher.changed()).await;
        assert!(
            quiet.is_err(),
            "the configuration watcher must not fire: {quiet:?}"
        );
    }
}
