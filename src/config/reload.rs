//! Watching the configuration file for changes: the ConfigMap-safe, debounced watcher of
//! [`crate::watch`] (parent directory watched, a `..data` symlink swap caught by comparing
//! canonical paths, bursts debounced into one notification), naming the configuration in its
//! log lines.
//!
//! The caller runs the loop (`changed()` → `config::load` → build → swap, or keep the old
//! configuration and record the error). This module must never load or parse the
//! configuration itself, and never decide whether a change is acceptable.

use std::path::Path;
use std::time::Duration;

#[cfg(test)]
use tokio::time::Instant;

use crate::watch::FileWatcher;
pub use crate::watch::WatchError;

/// Watches the configuration file: a [`FileWatcher`] (see [`crate::watch`] for what counts as
/// a change) whose log lines name the configuration.
///
/// Create it before the first `config::load`, so that a change made while loading is not
/// missed (it shows up as an immediate first notification).
#[derive(Debug)]
pub struct ConfigWatcher(FileWatcher);

impl ConfigWatcher {
    /// Starts watching `path`'s parent directory. `debounce` is the quiet time that must pass
    /// after the last event before [`changed`](Self::changed) resolves (e.g. 500 ms).
    pub fn watch(path: &Path, debounce: Duration) -> Result<ConfigWatcher, WatchError> {
        FileWatcher::watch(path, debounce, "configuration").map(ConfigWatcher)
    }

    /// The watched configuration path (absolute, symlinks unresolved).
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Resolves once the file has changed and the directory has then been quiet for the
    /// debounce period; `None` when no further change can be observed (the watched directory
    /// was removed). Cancel-safe.
    pub async fn changed(&mut self) -> Option<()> {
        self.0.changed().await
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
