//! The master's cache of `ai.query` answers: the same question (provider,
//! model, system instruction, history, prompt and sampling parameters) asked
//! again within the TTL is answered from here, without a worker, and the
//! answer says `"cached": true`. Bounded by entries (least recently used
//! go first) and by age. Memory only.
//!
//! Answers are kept per submitter (a web session; REST and CLI callers,
//! who share the API token, are one): another submitter's question is not
//! theirs to read back. `FAENA_AI_CACHE_SHARED` shares them across
//! submitters — except answers made with a submitter's own API key, which
//! are never cached (their owner pays for each, and they are nobody else's).

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::Value;

use crate::engine::Submitter;

#[derive(Debug)]
pub struct AiCache {
    entries: Option<LruCache<String, (Instant, Value)>>,
    ttl: Duration,
    shared: bool,
}

impl AiCache {
    /// `capacity` 0 turns the cache off; `shared` answers one submitter
    /// from another's questions.
    pub fn new(capacity: usize, ttl: Duration, shared: bool) -> Self {
        Self { entries: NonZeroUsize::new(capacity).map(LruCache::new), ttl, shared }
    }

    /// The cache key of `question` (`AiParams::cache_key`) asked by `who`;
    /// None when its answer must not be cached (made with the submitter's
    /// own key, or asked by the master).
    pub fn key(&self, who: &Submitter, own_key: bool, question: &str) -> Option<String> {
        let scope = match who {
            _ if own_key => return None,
            Submitter::Master => return None,
            _ if self.shared => "shared",
            Submitter::Api => "api",
            Submitter::Session(id) => id.as_str(),
        };
        Some(format!("{scope}\n{question}"))
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
        let mut c = AiCache::new(2, Duration::from_secs(60), false);
        c.put("a".into(), &json!({"text": "A", "cached": false}), t0);
        c.put("flagged".into(), &json!({"text": "F", "flagged": "MAX_TOKENS"}), t0);
        assert_eq!(c.get("a", t0), Some(json!({"text": "A", "cached": true})));
        assert_eq!(c.get("flagged", t0), None);
        assert_eq!(c.get("a", t0 + Duration::from_secs(61)), None, "expired");
        c.put("b".into(), &json!({}), t0);
        c.put("c".into(), &json!({}), t0);
        c.put("d".into(), &json!({}), t0);
        assert_eq!(c.get("b", t0), None, "least recently used went first");
        let mut off = AiCache::new(0, Duration::from_secs(60), false);
        off.put("a".into(), &json!({}), t0);
        assert_eq!(off.get("a", t0), None);
    }

    #[test]
    fn answers_are_kept_per_submitter_and_never_those_made_with_an_own_key() {
        let c = AiCache::new(10, Duration::from_secs(60), false);
        let (a, b) = (Submitter::Session("a".into()), Submitter::Session("b".into()));
        assert_ne!(c.key(&a, false, "q"), c.key(&b, false, "q"), "two sessions do not share");
        assert_ne!(c.key(&a, false, "q"), c.key(&Submitter::Api, false, "q"));
        assert_eq!(c.key(&a, false, "q"), c.key(&a, false, "q"));
        assert_eq!(c.key(&a, true, "q"), None, "own key: never cached");
        assert_eq!(c.key(&Submitter::Master, false, "q"), None);
        let shared = AiCache::new(10, Duration::from_secs(60), true);
        assert_eq!(shared.key(&a, false, "q"), shared.key(&b, false, "q"), "shared when asked to");
        assert_eq!(shared.key(&a, true, "q"), None, "but an own key's answers still are not");
    }
}
