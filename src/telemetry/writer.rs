//! The log writer: standard output behind an in-process buffer, so the audit event of every
//! decision costs an append to memory instead of a `write` syscall (and, when the output is a
//! file, an inotify event for every watcher of its directory).
//!
//! Lines are never split or dropped: a whole formatted line is appended under one lock, the
//! buffer is written out when it reaches [`FLUSH_BYTES`], by a background thread every
//! [`FLUSH_INTERVAL`], at once for warnings and errors (after everything buffered before them,
//! so the order holds), and by [`flush`] before the process exits. What it must never do: hold
//! more than about [`FLUSH_BYTES`] plus one line, or reorder lines.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Buffered bytes that trigger a write: a few hundred audit lines per syscall.
pub const FLUSH_BYTES: usize = 32 * 1024;

/// Longest time a line waits in the buffer when traffic is low.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Buffered standard output, shared by every clone.
#[derive(Debug, Clone)]
pub struct BufferedStdout {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl Default for BufferedStdout {
    fn default() -> Self {
        Self::new()
    }
}

impl BufferedStdout {
    pub fn new() -> Self {
        Self {
            buffer: Arc::new(Mutex::new(Vec::with_capacity(FLUSH_BYTES * 2))),
        }
    }

    /// Starts the thread that writes out what low traffic leaves in the buffer. It holds only a
    /// weak reference: it ends once every writer is gone.
    pub fn spawn_flusher(&self) -> io::Result<()> {
        let buffer = Arc::downgrade(&self.buffer);
        std::thread::Builder::new()
            .name("portcullis-log-flush".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    let Some(buffer) = buffer.upgrade() else {
                        return;
                    };
                    let mut guard = lock(&buffer);
                    if !guard.is_empty() {
                        write_out(&mut guard);
                    }
                }
            })
            .map(drop)
    }

    /// Writes out everything buffered.
    pub fn flush(&self) {
        write_out(&mut lock(&self.buffer));
    }
}

fn lock(buffer: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the buffer to standard output and empties it. A failed write (a closed stdout) drops
/// the buffered lines: logging must never stop the checks.
fn write_out(buffer: &mut Vec<u8>) {
    let _ = io::stdout().lock().write_all(buffer);
    buffer.clear();
}

/// One line's writer: appends to the shared buffer.
#[derive(Debug)]
pub struct LineWriter<'a> {
    buffer: &'a Mutex<Vec<u8>>,
    immediate: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = lock(self.buffer);
        guard.extend_from_slice(buf);
        if self.immediate || guard.len() >= FLUSH_BYTES {
            write_out(&mut guard);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.line_writer(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.line_writer(*meta.level())
    }
}

impl BufferedStdout {
    fn line_writer(&self, level: Level) -> LineWriter<'_> {
        LineWriter {
            buffer: &self.buffer,
            // Warnings and errors are what an operator watches for (and may precede an exit).
            immediate: level <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered(writer: &BufferedStdout) -> Vec<u8> {
        lock(&writer.buffer).clone()
    }

    #[test]
    fn lines_are_buffered_until_flushed() {
        let writer = BufferedStdout::new();
        writer
            .make_writer()
            .write_all(b"{\"message\":\"decision\"}\n")
            .expect("buffered write");
        assert_eq!(buffered(&writer), b"{\"message\":\"decision\"}\n");
        writer.flush();
        assert!(buffered(&writer).is_empty());
    }

    #[test]
    fn buffer_is_written_out_when_full() {
        let writer = BufferedStdout::new();
        let line = [b'x'; 1024];
        for _ in 0..(FLUSH_BYTES / line.len()) {
            writer
                .make_writer()
                .write_all(&line)
                .expect("buffered write");
        }
        assert!(
            buffered(&writer).is_empty(),
            "a full buffer must be written"
        );
    }

    #[test]
    fn warnings_are_written_at_once_after_what_was_buffered() {
        let writer = BufferedStdout::new();
        writer
            .make_writer()
            .write_all(b"info line\n")
            .expect("buffered write");
        writer
            .line_writer(Level::WARN)
            .write_all(b"warn line\n")
            .expect("write");
        assert!(buffered(&writer).is_empty());
    }
}
