//! The master's cache of `ai.query` answers: the same question (provider,
//! model, system instruction, history, prompt and sampling parameters) asked
//! again within the TTL is answered from here, without a worker, and the
//! answer says `"cached": true`. Bounded by entries (least recently used
//! go first) and by age. Memory only.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::Value;

#[derive(Debug)]
pub struct AiCache {
    entries: Option<LruCache<String, (Instant, Value)>>,
    ttl: Duration,
}

impl AiCache {
    /// `capacity` 0 turns the cache off.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { entries: NonZeroUsize::new(capacity).map(LruCache::new), ttl }
    }

    /// The cached answer for `key`, marked as cached, if it is fresh.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Value> {
        let entries = self.entries.as_mut()?;
        match entries.get(key) {
            Some((at, answer)) if now.saturating_duration_since(*at) < self.ttl => {
                let mut answer = answer.clone();
                answer["cached"] = Value::Bool(true);
                Some(answer)
            }
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Keeps a complete answer (one the provider did not flag).
    pub fn put(&mut self, key: String, answer: &Value, now: Instant) {
        let complete = answer.is_object() && answer.get("flagged").is_none_or(Value::is_null);
        if let Some(entries) = self.entries.as_mut()
            && complete
        {
            entries.put(key, (now, answer.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_fresh_entries_marked_cached_and_forgets_old_and_flagged_ones() {
        let t0 = Instant::now();
        let mut c = AiCache::new(2, Duration::from_secs(60));
        c.put("a".into(), &json!({"text": "A", "cached": false}), t0);
        c.put("flagged".into(), &json!({"text": "F", "flagged": "MAX_TOKENS"}), t0);
        assert_eq!(c.get("a", t0), Some(json!({"text": "A", "cached": true})));
        assert_eq!(c.get("flagged", t0), None);
        assert_eq!(c.get("a", t0 + Duration::from_secs(61)), None, "expired");
        c.put("b".into(), &json!({}), t0);
        c.put("c".into(), &json!({}), t0);
        c.put("d".into(), &json!({}), t0);
        assert_eq!(c.get("b", t0), None, "least recently used went first");
        let mut off = AiCache::new(0, Duration::from_secs(60));
        off.put("a".into(), &json!({}), t0);
        assert_eq!(off.get("a", t0), None);
    }
}
