//! Hashes done across threads, reported about once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub(crate) struct Progress<'a> {
    done: AtomicU64,
    last_report: Mutex<Instant>,
    report: &'a (dyn Fn(u64) + Sync),
}

impl<'a> Progress<'a> {
    pub(crate) fn new(report: &'a (dyn Fn(u64) + Sync)) -> Self {
        Self { done: AtomicU64::new(0), last_report: Mutex::new(Instant::now()), report }
    }

    /// Counts `n` more hashes; reports the total if a second has passed.
    /// A thread that finds another reporting just carries on.
    pub(crate) fn add(&self, n: u64) {
        let total = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(mut last) = self.last_report.try_lock()
            && last.elapsed() >= Duration::from_secs(1)
        {
            *last = Instant::now();
            (self.report)(total);
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}
