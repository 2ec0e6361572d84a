//! Hashes done across threads, reported about once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Counts hashes done across threads and reports the total about once a second.
pub struct Progress<'a> {
    done: AtomicU64,
    last_report: Mutex<Instant>,
    report: &'a (dyn Fn(u64) + Sync),
}

impl std::fmt::Debug for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("done", &self.done).finish_non_exhaustive()
    }
}

impl<'a> Progress<'a> {
    pub fn new(report: &'a (dyn Fn(u64) + Sync)) -> Self {
        Self { done: AtomicU64::new(0), last_report: Mutex::new(Instant::now()), report }
    }

    /// Counts `n` more hashes; reports the total if a second has passed.
    /// A thread that finds another reporting just carries on.
    pub fn add(&self, n: u64) {
        let total = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(mut last) = self.last_report.try_lock()
            && last.elapsed() >= Duration::from_secs(1)
        {
            *last = Instant::now();
            (self.report)(total);
        }
    }

    pub fn total(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}
