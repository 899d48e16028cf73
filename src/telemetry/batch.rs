//! The log writer: lines are appended to one shared buffer, and a thread of its own writes
//! whatever has gathered in one `write` after at most [`LINGER`]. Under load that is one
//! system call and one thread wake-up per few hundred lines, where a queue of lines
//! (tracing-appender's) woke its thread and wrote once per line: 12% of the process's CPU
//! in a cached decision (bench (a), `perf`).
//!
//! Nothing is lost: when [`LIMIT`] bytes wait because the output is slow, writers wait too.
//! Dropping the [`FlushGuard`] writes what is left and stops the thread; lines written after
//! that are dropped.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread lets lines gather after the first one, before it writes them.
pub const LINGER: Duration = Duration::from_millis(10);

/// Bytes waiting before writers wait for the output.
pub const LIMIT: usize = 1 << 20;

/// Appends whole lines (each `write` call is kept whole); cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer thread waits on it for a first line.
    line_queued: Condvar,
    /// Writers wait on it while the buffer is at its limit.
    room_made: Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer thread waits for a line (only then is it worth a wake-up).
    thread_idle: bool,
    /// Writers waiting for room.
    waiting: usize,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BatchWriter {
    /// Starts the writer thread, named `name`, writing to `out`.
    pub fn spawn<W: Write + Send + 'static>(name: &str, out: W) -> (Self, FlushGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            line_queued: Condvar::new(),
            room_made: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || write_batches(&shared, out))
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Nothing would ever write the lines: drop them rather than let requests
                // wait for a writer that does not exist.
                eprintln!("authgate: cannot start the log writer ({e}): logging is off");
                shared.lock().closed = true;
                None
            }
        };
        let guard = FlushGuard {
            shared: shared.clone(),
            thread,
        };
        (Self { shared }, guard)
    }

    fn append(&self, data: &[u8]) {
        let mut s = self.shared.lock();
        loop {
            if s.closed {
                return; // no writer any more (or never one)
            }
            if s.buf.len() < LIMIT {
                break;
            }
            s.waiting += 1;
            s = self
                .shared
                .room_made
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
            s.waiting -= 1;
        }
        s.buf.extend_from_slice(data);
        let wake = std::mem::take(&mut s.thread_idle);
        drop(s);
        if wake {
            self.shared.line_queued.notify_one();
        }
    }
}

impl Write for &BatchWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.append(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = &'a BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut s = shared.lock();
        while s.buf.is_empty() && !s.closed {
            s.thread_idle = true;
            s = shared
                .line_queued
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
        s.thread_idle = false;
        if s.buf.is_empty() {
            return; // closed, and everything written
        }
        if !s.closed {
            drop(s);
            std::thread::sleep(LINGER);
            s = shared.lock();
        }
        std::mem::swap(&mut s.buf, &mut batch);
        let waiting = s.waiting > 0;
        drop(s);
        if waiting {
            shared.room_made.notify_all();
        }
        // An output that fails (a closed stderr) loses its lines; nothing else can be done.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > LIMIT {
            batch.shrink_to(LIMIT);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.line_queued.notify_one();
        self.shared.room_made.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An output that hands each write to the test.
    struct Sink(mpsc::Sender<Vec<u8>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_by_the_guard() {
        let (tx, rx) = mpsc::channel();
        let (writer, guard) = BatchWriter::spawn("test-log", Sink(tx));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let line = format!("thread={t} line={i}\n");
                        (&writer).write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let writes: Vec<Vec<u8>> = rx.try_iter().collect();
        let text = String::from_utf8(writes.concat()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let (t, i) = line
                .strip_prefix("thread=")
                .and_then(|l| l.split_once(" line="))
                .unwrap_or_else(|| panic!("a torn line: {line:?}"));
            let t: usize = t.parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[t],
                "thread {t} out of order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4], "every line written once");
        assert!(
            writes.len() < 20_000,
            "{} writes for 20 000 lines",
            writes.len()
        );
    }

    #[test]
    fn lines_after_the_guard_are_dropped_without_waiting() {
        let (tx, rx) = mpsc::channel();
        let (writer, guard) = BatchWriter::spawn("test-log", Sink(tx));
        (&writer).write_all(b"before\n").unwrap();
        drop(guard);
        // More than the limit: a writer that waited for room would never return.
        for _ in 0..3 * LIMIT / 1024 {
            (&writer).write_all(&[b'x'; 1024]).unwrap();
        }
        assert!(
            writer.shared.lock().buf.is_empty(),
            "lines kept with no writer"
        );
        let written: Vec<u8> = rx.try_iter().flatten().collect();
        assert_eq!(written, b"before\n");
    }

    #[test]
    fn a_slow_output_makes_writers_wait_and_loses_nothing() {
        /// An output that takes one write only when the test lets it.
        struct Gate(mpsc::Receiver<()>, mpsc::Sender<usize>);
        impl Write for Gate {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                let _ = self.0.recv();
                let _ = self.1.send(data.len());
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (open, gate) = mpsc::channel();
        let (wrote, written) = mpsc::channel();
        let (writer, guard) = BatchWriter::spawn("test-log", Gate(gate, wrote));
        let line = [b'x'; 1024];
        // Three times the limit: the first batch is held by the gate, the rest fills the buffer.
        let producer = std::thread::spawn(move || {
            for _ in 0..(3 * LIMIT / line.len()) {
                (&writer).write_all(&line).unwrap();
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = guard.shared.lock();
            if s.waiting == 1 && s.buf.len() >= LIMIT {
                break;
            }
            drop(s);
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(open); // the gate lets every write through from now on
        producer.join().unwrap();
        drop(guard);
        let total: usize = written.try_iter().sum();
        assert_eq!(total, 3 * LIMIT, "every byte written");
    }
}
