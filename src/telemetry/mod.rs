//! Logs and metrics: the tracing subscriber, the metric families, and redaction.
//!
//! [`init`] installs the process-wide subscriber once, from `[log] format` and `RUST_LOG`.
//! [`metrics::Metrics`] is created by the application and passed down as `Arc<Metrics>`.
//! [`redact`] keeps secrets out of both. [`access_log`] writes the JSON lines, the access line
//! of every request first of all, and [`writer`] hands them to standard output in batches.

pub mod access_log;
pub mod metrics;
pub mod redact;
pub mod writer;

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter as _;

use crate::config::LogFormat;

/// Keeps the background log writer alive; dropping it writes what is buffered.
pub struct LogGuard(#[allow(dead_code)] writer::WriterGuard);

/// Installs the global subscriber: `format` decides JSON or text, `RUST_LOG` the level
/// (default `info`). Lines go to standard output through a background writer
/// ([`writer`]: written in batches at least every 100 ms), so a request never waits on the
/// terminal or the pipe. Calling it again does nothing.
pub fn init(format: LogFormat) -> Option<LogGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = writer::BatchWriter::spawn(std::io::stdout()).ok()?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone());
    let installed = match format {
        // The lines of `.json().flatten_event(true).with_current_span(false)`, written by a
        // formatter several times cheaper (see `access_log`).
        LogFormat::Json => builder
            .json()
            .event_format(access_log::JsonLines::default())
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    installed.ok()?;
    // `RUST_LOG` is read once, above, so whether access lines are wanted is settled now
    // rather than asked per request. Set once per process, like the subscriber.
    if format == LogFormat::Json
        && tracing::enabled!(target: "tollgate::access", tracing::Level::INFO)
    {
        let _ = DIRECT_JSON.set(writer);
    }
    Some(LogGuard(guard))
}

/// Where access lines go when they are written directly ([`access`]): the JSON subscriber's
/// own writer, set by [`init`] when `RUST_LOG` lets access lines through.
static DIRECT_JSON: OnceLock<writer::BatchWriter> = OnceLock::new();

thread_local! {
    /// The line being built, kept for its allocation.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// Logs one access line (target `tollgate::access`, level `INFO`, so `RUST_LOG` filters it
/// like any event). With the JSON format installed by [`init`] the line is written straight
/// to the subscriber's writer, the same bytes `access_log::JsonLines` writes for the event, without
/// tracing's dispatch; otherwise it goes through tracing.
pub fn access(line: &access_log::Access<'_>) {
    let Some(out) = DIRECT_JSON.get() else {
        tracing::info!(
            target: "tollgate::access",
            method = line.method,
            path = line.path,
            route = line.route,
            status = line.status,
            decision = line.decision,
            duration_ms = line.duration_ms,
            upstream_status = line.upstream_status,
            issuer = line.issuer,
            error = line.error,
        );
        return;
    };
    LINE.with_borrow_mut(|text| {
        text.clear();
        line.push_json(text, std::time::SystemTime::now());
        // The batch writer takes every line; nothing to report if it could not.
        let _ = out.make_writer().write_all(text.as_bytes());
    });
}
