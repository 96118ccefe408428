//! Logs and metrics: the tracing subscriber, the metric families, and redaction.
//!
//! [`init`] installs the process-wide subscriber once, from `[log] format` and `RUST_LOG`.
//! [`metrics::Metrics`] is created by the application and passed down as `Arc<Metrics>`.
//! [`redact`] keeps secrets out of both.

pub(crate) mod json;
pub mod metrics;
pub mod redact;
pub mod writer;

use tracing_subscriber::EnvFilter;

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
        .with_writer(writer);
    let installed = match format {
        // The lines of `.json().flatten_event(true).with_current_span(false)`, written by a
        // formatter several times cheaper (see `json`).
        LogFormat::Json => builder
            .json()
            .event_format(json::JsonLines::default())
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    installed.ok().map(|()| LogGuard(guard))
}
