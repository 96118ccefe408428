//! The background log writer. A request thread appends its line to a shared buffer (a lock
//! and a copy); one thread writes the buffer to standard output when it has gathered lines
//! for [`FLUSH_INTERVAL`], or sooner once [`FLUSH_AT`] bytes are waiting. This is nginx's
//! `access_log ... buffer= flush=`: under load a line costs no `write(2)` and no thread
//! wake-up of its own (a channel to a writer thread cost both, per line).
//!
//! Lines are never written in part or out of order. When standard output does not keep up
//! and [`MAX_BUFFERED`] bytes are waiting, further lines are dropped, counted, and the count
//! is logged once there is room again. Dropping the [`WriterGuard`] writes what is left.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Waiting bytes that make the writer write at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// Waiting bytes beyond which lines are dropped.
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    closed: bool,
}

/// Where the subscriber writes lines (`MakeWriter`); cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written every buffered line.
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread, writing to `out`.
    pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(BatchWriter, WriterGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, out)
            })?;
        Ok((
            BatchWriter {
                shared: shared.clone(),
            },
            WriterGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.shared)
    }
}

/// One line's way into the buffer: the formatter writes each line with one `write_all`.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = self.0.state.lock();
        let before = state.lines.len();
        if before + line.len() > MAX_BUFFERED {
            state.dropped += 1;
        } else {
            state.lines.extend_from_slice(line);
            // The writer sleeps while the buffer is empty, and gathers for a while once it
            // is not: wake it for the first line, and when enough has gathered.
            if before == 0 || (before < FLUSH_AT && state.lines.len() >= FLUSH_AT) {
                self.0.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let (closed, dropped) = {
            let mut state = shared.state.lock();
            while state.lines.is_empty() && !state.closed {
                shared.wake.wait(&mut state);
            }
            if !state.closed && state.lines.len() < FLUSH_AT {
                shared.wake.wait_for(&mut state, FLUSH_INTERVAL);
            }
            std::mem::swap(&mut state.lines, &mut batch);
            (state.closed, std::mem::take(&mut state.dropped))
        };
        // Nowhere to report a failure to write the logs: the next batch tries again.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "log lines dropped: standard output did not keep up"
            );
        }
        if closed && shared.state.lock().lines.is_empty() {
            return;
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read, and block.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        blocked: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _wait = self.blocked.lock();
            self.bytes.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn write_line(writer: &BatchWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_whole_in_order_within_the_flush_interval() {
        let sink = Sink::default();
        let (writer, _guard) = BatchWriter::spawn(sink.clone()).unwrap();
        for i in 0..1000 {
            write_line(&writer, &format!("line {i}\n"));
        }
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        // Written within a few flush intervals (the guard, still alive, does not force it).
        for _ in 0..100 {
            if sink.bytes.lock().len() >= expected.len() {
                break;
            }
            std::thread::sleep(FLUSH_INTERVAL / 10);
        }
        let written = String::from_utf8(sink.bytes.lock().clone()).unwrap();
        assert_eq!(written, expected);
    }

    #[test]
    fn dropping_the_guard_writes_everything_left() {
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::spawn(sink.clone()).unwrap();
        write_line(&writer, "first\n");
        write_line(&writer, "last\n");
        drop(guard);
        assert_eq!(&sink.bytes.lock()[..], b"first\nlast\n");
    }

    #[test]
    fn a_blocked_output_costs_lines_not_memory() {
        let sink = Sink::default();
        let blocked = sink.blocked.lock();
        let (writer, guard) = BatchWriter::spawn(sink.clone()).unwrap();
        write_line(&writer, "taken by the writer, which then blocks\n");
        // Let the writer take the first line and block on the output.
        while !writer.shared.state.lock().lines.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let line = "x".repeat(1023) + "\n";
        for _ in 0..(MAX_BUFFERED / line.len() + 100) {
            write_line(&writer, &line);
        }
        let state = writer.shared.state.lock();
        assert!(state.lines.len() <= MAX_BUFFERED);
        assert_eq!(state.dropped, 100);
        drop(state);
        drop(blocked);
        drop(guard);
        assert_eq!(
            sink.bytes.lock().len(),
            39 + MAX_BUFFERED / line.len() * line.len()
        );
    }
}
