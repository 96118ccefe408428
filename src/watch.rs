//! File change notifications that survive Kubernetes ConfigMap and Secret updates.
//!
//! A mounted ConfigMap is a symlink (`tollgate.toml` → `..data/tollgate.toml`) whose `..data`
//! link is swapped atomically; the file itself is never written. So the *directory* is
//! watched, any event in it wakes the caller, and the caller decides by content whether
//! anything changed.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
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
                if event.is_ok_and(|e| e.paths.iter().any(|p| concerns(p, &names))) {
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

/// Whether an event on `path` can change one of the watched files: the file itself (written,
/// or renamed into place by an editor), or one of the kubelet's `..data` / `..<timestamp>`
/// entries behind a ConfigMap or Secret mount. Other files in the directory (a log written
/// next to the configuration, say) do not wake anyone.
fn concerns(path: &Path, names: &[OsString]) -> bool {
    path.file_name().is_some_and(|name| {
        names.iter().any(|n| n == name) || name.as_encoded_bytes().starts_with(b"..")
    })
}

/// A digest of a file's bytes, to tell a real change from a touch. `None` if unreadable.
pub fn digest(path: &Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(path).ok()?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    d.as_ref().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
