//! Log capture for this test binary: one global subscriber, installed before any tollgate code
//! runs (every test that starts tollgate goes through [`init`]), writing each line to the
//! buffer of the thread that emitted it. A current-thread test runs all its tasks on its own
//! thread, so its buffer holds exactly its lines.
//!
//! A thread-local `set_default` is not enough: another test thread registering a callsite at
//! the same moment can cache "never interested" for it, and the line is lost.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

thread_local! {
    static BUFFER: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// Installs the subscriber once: `tollgate` at debug, or `RUST_LOG` when set (then lines of
/// threads that do not capture go to the test output).
pub fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "tollgate=debug".into());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(PerThread)
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Starts capturing this thread's lines; read them with [`Captured::text`].
pub fn start() -> Captured {
    init();
    let buffer = Arc::new(Mutex::new(Vec::new()));
    BUFFER.with(|b| *b.borrow_mut() = Some(buffer.clone()));
    Captured(buffer)
}

/// The lines captured on one thread.
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        BUFFER.with(|b| *b.borrow_mut() = None);
    }
}

struct PerThread;

enum Sink {
    Buffer(Arc<Mutex<Vec<u8>>>),
    Test(tracing_subscriber::fmt::TestWriter),
    Nowhere,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Buffer(b) => b.lock().extend_from_slice(buf),
            Sink::Test(w) => return w.write(buf),
            Sink::Nowhere => {}
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for PerThread {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        match BUFFER.with(|b| b.borrow().clone()) {
            Some(buffer) => Sink::Buffer(buffer),
            None if std::env::var_os("RUST_LOG").is_some() => {
                Sink::Test(tracing_subscriber::fmt::TestWriter::new())
            }
            None => Sink::Nowhere,
        }
    }
}
