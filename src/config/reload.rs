//! Watching the configuration file for changes, the way Kubernetes and editors change it.
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
//! The caller runs the loop (`changed()` → `config::load` → build → swap, or keep the old
//! configuration and record the error). This module must never load or parse the
//! configuration itself, and never decide whether a change is acceptable.

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
    /// The configuration path, absolute but with symlinks unresolved.
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
                tracing::warn!(%error, "configuration watcher error; treating as a change");
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
                "the configuration directory was removed; no further changes will be seen"
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

/// Watches one configuration file; see the module docs for what counts as a change.
///
/// Create it before the first `config::load`, so that a change made while loading is not
/// missed (it shows up as an immediate first notification).
pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    shared: Arc<Shared>,
    events: watch::Receiver<u64>,
    debounce: Duration,
    /// The symlink target's directory, when it is not the watched directory.
    target_dir: Option<PathBuf>,
    /// A change was seen and its notification not yet delivered.
    pending: bool,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("path", &self.shared.path)
            .field("debounce", &self.debounce)
            .field("target_dir", &self.target_dir)
            .finish_non_exhaustive()
    }
}

impl ConfigWatcher {
    /// Starts watching `path`'s parent directory. `debounce` is the quiet time that must pass
    /// after the last event before [`changed`](Self::changed) resolves (e.g. 500 ms).
    pub fn watch(path: &Path, debounce: Duration) -> Result<ConfigWatcher, WatchError> {
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
        let mut this = ConfigWatcher {
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

    /// The watched configuration path (absolute, symlinks unresolved).
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
                    "cannot watch the configuration's symlink target directory"
                ),
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(150);
    /// Generous bound for a notification that must come (slow CI, busy machine).
    const MUST_ARRIVE: Duration = Duration::from_secs(10);
    /// How long we wait to be confident a notification does not come.
    const MUST_NOT_ARRIVE: Duration = Duration::from_millis(600);

    async fn expect_change(watcher: &mut ConfigWatcher) {
        let got = tokio::time::timeout(MUST_ARRIVE, watcher.changed())
            .await
            .expect("a change notification within the timeout");
        assert_eq!(got, Some(()));
    }

    async fn expect_quiet(watcher: &mut ConfigWatcher) {
        let got = tokio::time::timeout(MUST_NOT_ARRIVE, watcher.changed()).await;
        assert!(got.is_err(), "unexpected notification: {got:?}");
    }

    #[tokio::test]
    async fn notifies_once_after_a_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        fs::write(&file, "a: 2\n").expect("write");
        expect_change(&mut watcher).await;
        expect_quiet(&mut watcher).await;
    }

    #[tokio::test]
    async fn notifies_on_an_atomic_rename_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        let tmp = dir.path().join(".portcullis.yaml.tmp");
        fs::write(&tmp, "a: 2\n").expect("write tmp");
        fs::rename(&tmp, &file).expect("rename over");
        expect_change(&mut watcher).await;
        assert_eq!(fs::read_to_string(&file).expect("read"), "a: 2\n");
    }

    #[tokio::test]
    async fn notifies_when_the_file_is_removed_and_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        fs::remove_file(&file).expect("remove");
        expect_change(&mut watcher).await;
        fs::write(&file, "a: 2\n").expect("recreate");
        expect_change(&mut watcher).await;
    }

    /// The layout kubelet writes for a ConfigMap volume, and its update: a new timestamped
    /// directory, then an atomic rename of the `..data` symlink. The file's own name is never
    /// touched.
    #[tokio::test]
    async fn notifies_on_a_configmap_data_symlink_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir(root.join("..2024_01_01_00_00_00.1")).expect("mkdir");
        fs::write(
            root.join("..2024_01_01_00_00_00.1/portcullis.yaml"),
            "a: 1\n",
        )
        .expect("write");
        symlink("..2024_01_01_00_00_00.1", root.join("..data")).expect("..data");
        symlink("..data/portcullis.yaml", root.join("portcullis.yaml")).expect("link");
        let file = root.join("portcullis.yaml");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");

        fs::create_dir(root.join("..2024_01_02_00_00_00.2")).expect("mkdir");
        fs::write(
            root.join("..2024_01_02_00_00_00.2/portcullis.yaml"),
            "a: 2\n",
        )
        .expect("write");
        symlink("..2024_01_02_00_00_00.2", root.join("..data_tmp")).expect("..data_tmp");
        fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        fs::remove_dir_all(root.join("..2024_01_01_00_00_00.1")).expect("remove old");

        expect_change(&mut watcher).await;
        assert_eq!(fs::read_to_string(&file).expect("read"), "a: 2\n");
        expect_quiet(&mut watcher).await;
    }

    #[tokio::test]
    async fn debounces_a_burst_of_writes_into_one_notification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 0\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        for i in 1..=10 {
            fs::write(&file, format!("a: {i}\n")).expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last_write = Instant::now();
        expect_change(&mut watcher).await;
        assert!(
            last_write.elapsed() >= DEBOUNCE / 2,
            "notified before the burst went quiet"
        );
        expect_quiet(&mut watcher).await;
    }

    #[tokio::test]
    async fn reading_the_file_is_not_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        for _ in 0..3 {
            assert_eq!(fs::read_to_string(&file).expect("read"), "a: 1\n");
        }
        expect_quiet(&mut watcher).await;
    }

    #[tokio::test]
    async fn ignores_other_files_in_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        fs::write(dir.path().join("other.yaml"), "b: 1\n").expect("write other");
        expect_quiet(&mut watcher).await;
    }

    #[tokio::test]
    async fn follows_a_symlink_into_another_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("real")).expect("mkdir");
        fs::create_dir(dir.path().join("etc")).expect("mkdir");
        let target = dir.path().join("real/portcullis.yaml");
        fs::write(&target, "a: 1\n").expect("write");
        let file = dir.path().join("etc/portcullis.yaml");
        symlink(&target, &file).expect("symlink");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        fs::write(&target, "a: 2\n").expect("edit target in place");
        expect_change(&mut watcher).await;
    }

    #[tokio::test]
    async fn a_change_made_between_notifications_is_not_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        // Nobody is waiting in `changed()` while this happens (the app is busy reloading).
        fs::write(&file, "a: 2\n").expect("write");
        tokio::time::sleep(DEBOUNCE * 2).await;
        expect_change(&mut watcher).await;
    }

    #[tokio::test]
    async fn a_cancelled_wait_does_not_lose_the_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        // A debounce far longer than the first wait, so that wait is cancelled mid-debounce.
        let mut watcher = ConfigWatcher::watch(&file, Duration::from_millis(400)).expect("watch");
        fs::write(&file, "a: 2\n").expect("write");
        let first = tokio::time::timeout(Duration::from_millis(200), watcher.changed()).await;
        assert!(first.is_err(), "cancelled before the debounce ended");
        expect_change(&mut watcher).await;
    }

    #[tokio::test]
    async fn reports_none_when_the_directory_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("conf");
        fs::create_dir(&conf).expect("mkdir");
        let file = conf.join("portcullis.yaml");
        fs::write(&file, "a: 1\n").expect("write");
        let mut watcher = ConfigWatcher::watch(&file, DEBOUNCE).expect("watch");
        fs::remove_dir_all(&conf).expect("remove dir");
        let mut outcome = Some(());
        // The file's removal may be reported first; the directory's removal ends the watch.
        for _ in 0..3 {
            outcome = tokio::time::timeout(MUST_ARRIVE, watcher.changed())
                .await
                .expect("a notification within the timeout");
            if outcome.is_none() {
                break;
            }
        }
        assert_eq!(outcome, None);
    }

    #[test]
    fn refuses_to_watch_in_a_missing_directory() {
        let error = ConfigWatcher::watch(Path::new("/nonexistent-dir/portcullis.yaml"), DEBOUNCE)
            .expect_err("no such directory");
        assert!(matches!(error, WatchError::Notify { .. }), "{error}");
    }
}
