//! File change notifications that survive Kubernetes ConfigMap and Secret updates.
//!
//! A mounted ConfigMap is a symlink (`tollgate.toml` → `..data/tollgate.toml`) whose `..data`
//! link is swapped atomically; the file itself is never written. So the *directory* is
//! watched, any event in it that can change a watched file wakes the caller, and the caller
//! decides by content whether anything changed.
//!
//! Reading a file is not such an event. inotify reports opens and closes-after-read, and
//! tollgate reads the file on every wake-up: woken by its own reads, it would re-read the
//! file forever (it did, every 100 ms, until issue 12).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long a burst of events is gathered before the caller is woken once. Editors and
/// `kubectl` write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the directories holding some files.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
    events: mpsc::Receiver<()>,
}

impl FileWatch {
    /// Starts watching the parent directory of each file.
    pub fn new(files: &[&Path]) -> notify::Result<Self> {
        let (tx, events) = mpsc::channel(1);
        let names: Vec<OsString> = files
            .iter()
            .filter_map(|f| f.file_name().map(OsStr::to_owned))
            .collect();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| {
                    can_change(&e.kind) && e.paths.iter().any(|p| concerns(p, &names))
                }) {
                    // A full channel already holds a wake-up: nothing is lost by dropping this one.
                    let _ = tx.try_send(());
                }
            })?;
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .map(|f| match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(FileWatch {
            _watcher: watcher,
            events,
        })
    }

    /// Waits for the next burst of changes. Returns false if the watcher stopped.
    pub async fn changed(&mut self) -> bool {
        if self.events.recv().await.is_none() {
            return false;
        }
        tokio::time::sleep(DEBOUNCE).await;
        while self.events.try_recv().is_ok() {}
        true
    }
}

/// Whether an event of this kind can change a file's content or what a name points to: not
/// an open, a read or a close after reading. A close after writing does count: it is the
/// last event of an in-place write, which may come after the debounce of its first.
fn can_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether an event on `path` can change one of the watched files: the file itself (written,
/// or renamed into place by an editor), or one of the kubelet's `..data` / `..<timestamp>`
/// entries behind a ConfigMap or Secret mount. Other files in the directory (a log written
/// next to the configuration, say) do not wake anyone.
fn concerns(path: &Path, names: &[OsString]) -> bool {
    path.file_name().is_some_and(|name| {
        names.iter().any(|n| n == name) || name.as_encoded_bytes().starts_with(b"..")
    })
}

/// The [`digest`] of a file's content; `None` if it cannot be read.
pub fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|bytes| digest(&bytes))
}

/// A digest of a file's bytes, to tell a real change from a touch.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a test watches for wake-ups that should not come: ten debounce windows.
    const QUIET: Duration = Duration::from_millis(1_000);

    /// The wake-ups within `QUIET` of now, reading `file` after each as the reloader does.
    async fn wakes(watch: &mut FileWatch, file: &Path) -> usize {
        let mut n = 0;
        let deadline = tokio::time::Instant::now() + QUIET;
        while let Ok(true) = tokio::time::timeout_at(deadline, watch.changed()).await {
            n += 1;
            read_many(file);
        }
        n
    }

    /// A plain file in a temporary directory, watched, and read the way the reloader reads it.
    fn plain() -> (tempfile::TempDir, PathBuf, FileWatch) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tollgate.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let watch = FileWatch::new(&[&file]).unwrap();
        (dir, file, watch)
    }

    fn read_many(file: &Path) {
        for _ in 0..20 {
            assert!(file_digest(file).is_some());
        }
    }

    #[tokio::test]
    async fn reading_the_file_wakes_no_one() {
        let (_dir, file, mut watch) = plain();
        read_many(&file);
        assert_eq!(wakes(&mut watch, &file).await, 0);
    }

    #[tokio::test]
    async fn a_write_in_place_wakes_once() {
        let (_dir, file, mut watch) = plain();
        std::fs::write(&file, "a = 2\n").unwrap();
        assert_eq!(wakes(&mut watch, &file).await, 1);
    }

    #[tokio::test]
    async fn an_atomic_rename_wakes_once() {
        let (dir, file, mut watch) = plain();
        let tmp = dir.path().join(".tollgate.toml.tmp");
        std::fs::write(&tmp, "a = 2\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(wakes(&mut watch, &file).await, 1);
    }

    #[tokio::test]
    async fn a_touch_wakes_once() {
        let (_dir, file, mut watch) = plain();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        assert_eq!(wakes(&mut watch, &file).await, 1);
    }

    #[tokio::test]
    async fn a_configmap_swap_wakes_once() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/tollgate.toml"), "a = 1\n").unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/tollgate.toml", root.join("tollgate.toml")).unwrap();
        let file = root.join("tollgate.toml");
        let mut watch = FileWatch::new(&[&file]).unwrap();

        std::fs::create_dir(root.join("..v2")).unwrap();
        std::fs::write(root.join("..v2/tollgate.toml"), "a = 2\n").unwrap();
        symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join("..v1")).unwrap();
        assert_eq!(wakes(&mut watch, &file).await, 1);
    }

    #[test]
    fn only_the_watched_files_and_kubelet_entries_concern_us() {
        let names = vec![OsString::from("tollgate.toml")];
        for (path, relevant) in [
            ("/etc/tollgate/tollgate.toml", true),
            ("/etc/tollgate/..data", true),
            ("/etc/tollgate/..2026_11_22_10_00_00.123", true),
            ("/etc/tollgate/..data_tmp", true),
            ("/etc/tollgate/access.log", false),
            ("/etc/tollgate/.tollgate.toml.swp", false),
        ] {
            assert_eq!(concerns(Path::new(path), &names), relevant, "{path}");
        }
    }
}
