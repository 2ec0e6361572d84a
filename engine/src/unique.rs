//! Unique keys: which job holds each `unique_key`, and until when. A key
//! given for a time (`unique_for`) holds from submission until then,
//! whatever becomes of its job; one given without holds while its job is
//! not finished. The store keeps the same rows (`unique_keys`, one per key)
//! and gives them back at start-up, so a key holds across restarts and
//! takeovers; only the leader takes keys, so the engine's answer is the
//! store's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use faena_proto::ids::JobId;

use super::Now;
use super::deadlines::Deadlines;

#[derive(Debug)]
struct Holder {
    job: JobId,
    /// Wall-clock ms the key holds until; none: while the job is not finished.
    until_ms: Option<u64>,
}

#[derive(Debug)]
pub struct UniqueKeys {
    held: HashMap<String, Holder>,
    /// Keys held for a time, by when they lapse.
    lapse: Deadlines<String>,
    capacity: usize,
}

/// Every key is held: no new one can be taken until some lapse or their
/// jobs finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{capacity} unique keys are held, the most this master keeps; retry once some lapse or their jobs finish")]
pub struct KeysFull {
    pub capacity: usize,
}

impl UniqueKeys {
    pub fn new(capacity: usize) -> Self {
        Self { held: HashMap::new(), lapse: Deadlines::default(), capacity }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The job holding `key` now, if any.
    pub fn holder(&self, key: &str, now: Now) -> Option<JobId> {
        self.held.get(key).filter(|h| h.until_ms.is_none_or(|u| u > now.wall_ms)).map(|h| h.job)
    }

    /// Whether `more` new keys fit.
    pub fn check_room(&self, more: usize) -> Result<(), KeysFull> {
        match self.held.len() + more > self.capacity {
            true => Err(KeysFull { capacity: self.capacity }),
            false => Ok(()),
        }
    }

    /// `job` holds `key` for `for_s` seconds from now (none: until it finishes).
    pub fn take(&mut self, key: String, job: JobId, for_s: Option<u64>, now: Now) {
        let until_ms = for_s.map(|s| now.wall_ms.saturating_add(s.saturating_mul(1000)));
        self.hold(key, job, until_ms, now);
    }

    /// A key read back from the store.
    pub fn restore(&mut self, key: String, job: JobId, until_ms: Option<u64>, now: Now) {
        if until_ms.is_none_or(|u| u > now.wall_ms) {
            self.hold(key, job, until_ms, now);
        }
    }

    fn hold(&mut self, key: String, job: JobId, until_ms: Option<u64>, now: Now) {
        match until_ms {
            Some(u) => self.lapse.set(key.clone(), now.mono + Duration::from_millis(u.saturating_sub(now.wall_ms))),
            None => {
                self.lapse.remove(&key);
            }
        }
        self.held.insert(key, Holder { job, until_ms });
    }

    /// `job` finished: a key it held while unfinished is free; true if so.
    pub fn finished(&mut self, key: &str, job: JobId) -> bool {
        match self.held.get(key) {
            Some(h) if h.job == job && h.until_ms.is_none() => {
                self.held.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Forgets the keys whose time ran out.
    pub fn expire(&mut self, now: Instant) {
        for key in self.lapse.expired(now) {
            self.held.remove(&key);
        }
    }

    /// When the next key lapses.
    pub fn next_lapse(&self) -> Option<Instant> {
        self.lapse.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, wall0: u64, s: u64) -> Now {
        Now { mono: t0 + Duration::from_secs(s), wall_ms: wall0 + s * 1000 }
    }

    #[test]
    fn a_timed_key_lapses_and_an_open_one_holds_until_its_job_finishes() {
        let (t0, wall0) = (Instant::now(), 1_000_000);
        let mut keys = UniqueKeys::new(2);
        let (a, b) = (JobId::new(), JobId::new());
        keys.take("timed".into(), a, Some(10), at(t0, wall0, 0));
        keys.take("open".into(), b, None, at(t0, wall0, 0));
        assert_eq!(keys.check_room(1), Err(KeysFull { capacity: 2 }), "the bound holds");
        assert_eq!(keys.holder("timed", at(t0, wall0, 9)), Some(a));
        assert!(!keys.finished("timed", a), "a timed key outlives its job");
        assert_eq!(keys.holder("timed", at(t0, wall0, 10)), None, "lapsed, even before it is expired");
        keys.expire(at(t0, wall0, 10).mono);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.holder("open", at(t0, wall0, 1_000)), Some(b));
        assert!(!keys.finished("open", a), "only its own job frees it");
        assert!(keys.finished("open", b));
        assert_eq!(keys.holder("open", at(t0, wall0, 1_000)), None);
        keys.restore("old".into(), a, Some(wall0 - 1), at(t0, wall0, 0));
        assert_eq!(keys.len(), 0, "a key that lapsed while the master was down is not restored");
    }
}
