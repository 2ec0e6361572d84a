//! Deadlines kept in time order, so expiry costs what expires — not a scan
//! of everything that could: lease expiry and silent workers are found by
//! popping the front of an ordered set. Setting a key again moves it.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Deadlines<K> {
    order: BTreeSet<(Instant, K)>,
    at: HashMap<K, Instant>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self { order: BTreeSet::new(), at: HashMap::new() }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Sets (or moves) `key`'s deadline.
    pub fn set(&mut self, key: K, when: Instant) {
        if let Some(old) = self.at.insert(key.clone(), when) {
            self.order.remove(&(old, key.clone()));
        }
        self.order.insert((when, key));
    }

    pub fn remove(&mut self, key: &K) -> Option<Instant> {
        let when = self.at.remove(key)?;
        self.order.remove(&(when, key.clone()));
        Some(when)
    }

    pub fn get(&self, key: &K) -> Option<Instant> {
        self.at.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.order.first().map(|(when, _)| *when)
    }

    /// Moves every deadline `by` later, keeping their order.
    pub fn postpone(&mut self, by: Duration) {
        for when in self.at.values_mut() {
            *when += by;
        }
        self.order = self.order.iter().map(|(when, key)| (*when + by, key.clone())).collect();
    }

    /// Removes and returns every key whose deadline is at or before `now`,
    /// earliest first.
    pub fn expired(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some((when, _)) = self.order.first() {
            if *when > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.at.remove(&key);
                out.push(key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_only_what_expired_in_order_and_moves_on_set() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut d = Deadlines::default();
        d.set("a", s(3));
        d.set("b", s(1));
        d.set("c", s(2));
        d.set("a", s(10));
        assert_eq!(d.expired(s(0)), Vec::<&str>::new());
        assert_eq!(d.expired(s(2)), vec!["b", "c"]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.get(&"a"), Some(s(10)));
        assert_eq!(d.remove(&"a"), Some(s(10)));
        assert!(d.is_empty());
        assert!(d.expired(s(100)).is_empty());
    }

    #[test]
    fn postponing_moves_every_deadline_and_keeps_their_order() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut d = Deadlines::default();
        d.set("a", s(1));
        d.set("b", s(2));
        d.postpone(Duration::from_secs(10));
        assert_eq!((d.get(&"a"), d.get(&"b")), (Some(s(11)), Some(s(12))));
        assert!(d.expired(s(10)).is_empty());
        assert_eq!(d.expired(s(11)), vec!["a"]);
        assert_eq!(d.remove(&"b"), Some(s(12)));
        assert!(d.is_empty());
    }
}
