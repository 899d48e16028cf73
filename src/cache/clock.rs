//! The cache's clock, passed in at construction: the real clocks in production, a clock the
//! tests move forward (so they advance time instead of sleeping).

use std::time::Instant;

/// The times the cache reads.
pub trait Clock: Send + Sync {
    /// Milliseconds since the clock started, never going back: entries' expiry counts on it.
    fn now_ms(&self) -> u64;
    /// Seconds since the Unix epoch: credentials' expiry and their last uses are in it.
    fn unix_now(&self) -> i64;
}

/// The process's monotonic clock (from construction) and the system's wall clock.
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn unix_now(&self) -> i64 {
        crate::unix_now()
    }
}

/// A clock that moves only when told to.
#[cfg(test)]
pub(crate) struct ManualClock {
    ms: std::sync::atomic::AtomicU64,
    unix_start: i64,
}

#[cfg(test)]
impl ManualClock {
    /// A clock at 0 ms, and at `unix_start` on the wall clock.
    pub(crate) fn new(unix_start: i64) -> Self {
        Self {
            ms: Default::default(),
            unix_start,
        }
    }

    /// Moves both clocks forward by `by`.
    pub(crate) fn advance(&self, by: std::time::Duration) {
        self.ms
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn unix_now(&self) -> i64 {
        self.unix_start + (self.now_ms() / 1000) as i64
    }
}
