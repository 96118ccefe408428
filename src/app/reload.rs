//! Hot reload: on a file change (including a ConfigMap symlink swap) or SIGHUP, read, validate
//! and build a whole new snapshot, then swap it in. An invalid file changes nothing; it is
//! logged with every error, counted as `tollgate_config_reloads_total{result="error"}` and
//! shown as `tollgate_config_last_reload_successful 0` until a reload succeeds.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::{BuildContext, BuildError, Live, Snapshot};
use crate::config::{self, Config, ConfigError, SharedEnv};
use crate::filewatch::{self, FileWatch};
use crate::telemetry::metrics::Metrics;

/// Why a reload was refused. The running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file is valid but could not be put into effect.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Reloads one configuration file into a [`Live`] snapshot.
pub struct Reloader {
    path: PathBuf,
    env: SharedEnv,
    live: Live,
    metrics: Arc<Metrics>,
    /// Where new issuers' key refresh tasks run.
    tasks: (TaskTracker, CancellationToken),
    /// Digest of the content last read, applied or refused: a wake-up that finds the same
    /// bytes (a touch, an event that changed nothing) does nothing, and an invalid file is
    /// reported once, not again on every event in its directory.
    seen: Mutex<Option<[u8; 32]>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// A new snapshot is in effect.
    Applied,
    /// The file is the same as the one in effect.
    Unchanged,
}

impl Reloader {
    /// A reloader for `path`, whose current content is what `live` was built from.
    pub fn new(
        path: PathBuf,
        env: SharedEnv,
        live: Live,
        metrics: Arc<Metrics>,
        tasks: (TaskTracker, CancellationToken),
    ) -> Self {
        let seen = Mutex::new(std::fs::read(&path).ok().map(|b| filewatch::digest(&b)));
        Reloader {
            path,
            env,
            live,
            metrics,
            tasks,
            seen,
        }
    }

    /// Reloads the file. Unless `force`d (SIGHUP), content already read (applied or refused)
    /// is left alone. Concurrent calls are serialised, so two snapshots are never built at once.
    pub fn reload(&self, force: bool) -> Result<Reloaded, ReloadError> {
        let mut seen = self.seen.lock();
        // One read: the digest is of the bytes that are parsed, even if the file changes again.
        let bytes = std::fs::read(&self.path);
        let digest = bytes.as_deref().ok().map(filewatch::digest);
        if !force && digest.is_some() && digest == *seen {
            return Ok(Reloaded::Unchanged);
        }
        *seen = digest;
        let result = self.apply(bytes);
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        self.metrics
            .config_last_reload_successful
            .set(i64::from(result.is_ok()));
        match &result {
            Ok(()) => tracing::info!(file = %self.path.display(), "configuration reloaded"),
            Err(error) => {
                tracing::error!(file = %self.path.display(), %error, "configuration reload refused; the running configuration stays");
            }
        }
        result.map(|()| Reloaded::Applied)
    }

    fn apply(&self, bytes: std::io::Result<Vec<u8>>) -> Result<(), ReloadError> {
        let loaded = config::load_bytes(bytes, &self.path, &*self.env)?;
        for warning in &loaded.warnings {
            tracing::warn!(%warning, "configuration warning");
        }
        let current = self.live.load();
        for setting in restart_only_changes(&current.config, &loaded.config) {
            tracing::warn!(setting, "changed setting takes effect on restart");
        }
        let cx = BuildContext {
            metrics: &self.metrics,
            tasks: Some((&self.tasks.0, &self.tasks.1)),
            env: &*self.env,
            // The token cache passes from the current snapshot.
            tokens: None,
        };
        let snapshot = Snapshot::build(loaded.config, Some(&current), &cx)?;
        self.live.store(snapshot);
        Ok(())
    }
}

/// Settings read once at start: listeners stay bound across reloads.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let server = |c: &Config| {
        c.server.as_ref().map(|s| {
            (
                s.listen,
                s.tls.clone(),
                s.max_connections,
                s.header_read_timeout,
                s.max_header_bytes,
                s.worker_threads,
                s.shutdown_grace,
            )
        })
    };
    if server(old) != server(new) {
        changed.push("[server] listen, tls, connection limits, worker_threads or shutdown_grace");
    }
    if old.admin != new.admin {
        changed.push("admin.listen");
    }
    if old.egress.as_ref().map(|e| e.listen) != new.egress.as_ref().map(|e| e.listen) {
        changed.push("egress.listen");
    }
    if old.log != new.log {
        changed.push("log.format");
    }
    changed
}

/// Starts watching the configuration file and SIGHUP now (so no change made after this call
/// is missed), and returns the task that reloads on them until `shutdown`.
pub fn on_changes(
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let watch = match FileWatch::new(&[&reloader.path]) {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::warn!(%error, file = %reloader.path.display(), "cannot watch the configuration file; reload with SIGHUP");
            None
        }
    };
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
        .ok();
    run(reloader, watch, hangup, shutdown)
}

async fn run(
    reloader: Arc<Reloader>,
    mut watch: Option<FileWatch>,
    mut hangup: Option<tokio::signal::unix::Signal>,
    shutdown: CancellationToken,
) {
    loop {
        let force = tokio::select! {
            changed = async { watch.as_mut()?.changed().await.then_some(()) }, if watch.is_some() => {
                if changed.is_none() { watch = None; }
                false
            }
            Some(()) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => true,
            () = shutdown.cancelled() => return,
        };
        // Errors are logged and counted inside; the running configuration stays.
        let _ = reloader.reload(force);
    }
}
