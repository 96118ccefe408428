//! `tollgate run`: load the configuration, serve until SIGTERM or SIGINT, drain, exit 0.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::app::{App, StartOptions};
use crate::config::{self, ConfigError};

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path, &config::process_env) {
        Ok(loaded) => loaded,
        Err(ConfigError::Invalid(list)) => {
            for d in &list {
                eprintln!("{d}");
            }
            eprintln!(
                "tollgate: {} has {} error(s); not starting",
                path.display(),
                list.len()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let _log = crate::telemetry::init(loaded.config.log.format);
    let runtime = runtime(loaded.config.server.as_ref().and_then(|s| s.worker_threads))?;
    runtime.block_on(async {
        let options = StartOptions {
            config_path: path.to_path_buf(),
            env: super::process_env(),
            watch_config: true,
        };
        let app = App::start(loaded, options)
            .await
            .context("starting tollgate")?;
        wait_for_stop_signal().await?;
        app.shutdown().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// A multi-threaded runtime with `threads` workers (default: one per CPU), or for one thread
/// the single-threaded runtime: the same single core without hand-offs between the main
/// thread and a worker (~250 fewer instructions per proxied request, callgrind).
pub(super) fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().thread_name("tollgate");
    if let Some(n) = threads.filter(|&n| n > 1) {
        builder.worker_threads(n);
    }
    builder.build().context("starting the async runtime")
}

/// Waits for SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub(super) async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
