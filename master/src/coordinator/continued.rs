//! An answer cut off by a lost worker goes on where it stopped. When an
//! `ai.query` attempt that had streamed part of its answer is requeued (its
//! worker died, its lease ran out), the next attempt's unit carries the text
//! so far as `prefix`, so the provider continues it; the new attempt's
//! pieces are numbered on from the last one watchers got, so an OpenAI
//! client's stream (or an SSE watcher's) goes on as one answer.

use std::collections::HashMap;

use faena_proto::ai::AiChunk;
use faena_proto::api::JobEvent;
use faena_proto::ids::JobId;
use faena_proto::mqtt::WorkUnit;
use serde_json::{Value, json};

/// What each continued job had written when its attempt was lost.
#[derive(Debug, Default)]
pub(super) struct Continued {
    jobs: HashMap<JobId, Written>,
}

#[derive(Debug)]
struct Written {
    text: String,
    /// The next piece's number.
    seq: u64,
}

/// The answer streamed so far among `kept` events, and the next piece's number.
pub(super) fn so_far(kept: &[JobEvent]) -> Option<(String, u64)> {
    let mut text = String::new();
    let mut next = None;
    for ev in kept {
        if let JobEvent::Progress { data, .. } = ev
            && let Ok(c) = serde_json::from_value::<AiChunk>(data.clone())
        {
            text.push_str(&c.text);
            next = Some(c.seq + 1);
        }
    }
    next.map(|n| (text, n))
}

impl Continued {
    /// Job `id` lost its attempt with `kept` streamed: the next continues.
    pub(super) fn lost(&mut self, id: JobId, kept: &[JobEvent]) -> bool {
        match so_far(kept) {
            Some((text, seq)) => {
                self.jobs.insert(id, Written { text, seq });
                true
            }
            None => false,
        }
    }

    /// The unit of a continued job asks for the rest of its answer.
    pub(super) fn dispatching(&self, unit: &mut WorkUnit) {
        let Some(w) = self.jobs.get(&unit.job_id) else { return };
        if let Some(params) = unit.params.as_object_mut() {
            let before = params.get("prefix").and_then(Value::as_str).unwrap_or("").to_owned();
            params.insert("prefix".into(), json!(before + &w.text));
        }
    }

    /// A piece of a continued job's answer, numbered on.
    pub(super) fn renumber(&self, id: JobId, event: JobEvent) -> JobEvent {
        let Some(w) = self.jobs.get(&id) else { return event };
        match event {
            JobEvent::Progress { worker, attempt, data } => {
                let data = match serde_json::from_value::<AiChunk>(data.clone()) {
                    Ok(c) => json!(AiChunk { seq: c.seq + w.seq, text: c.text }),
                    Err(_) => data,
                };
                JobEvent::Progress { worker, attempt, data }
            }
            other => other,
        }
    }

    pub(super) fn ended(&mut self, id: &JobId) {
        self.jobs.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(seq: u64, text: &str) -> JobEvent {
        JobEvent::Progress { worker: "w".into(), attempt: 1, data: json!({"seq": seq, "text": text}) }
    }

    #[test]
    fn a_lost_attempt_is_continued_and_its_pieces_numbered_on() {
        let id = JobId::new();
        let mut c = Continued::default();
        let status = JobEvent::Progress { worker: "w".into(), attempt: 1, data: json!({"status": "retrying"}) };
        assert!(!c.lost(id, std::slice::from_ref(&status)), "nothing written: it starts again");
        assert!(c.lost(id, &[piece(0, "Once "), status, piece(1, "upon")]));
        let token = faena_proto::ids::FencingToken::new();
        let mut unit = WorkUnit::new(id, 2, token, faena_proto::jobs::JobKind::AiQuery, json!({"prompt": "tell"}));
        c.dispatching(&mut unit);
        assert_eq!(unit.params["prefix"], "Once upon");
        assert_eq!(c.renumber(id, piece(0, " a time")), piece(2, " a time"));
        c.ended(&id);
        assert_eq!(c.renumber(id, piece(0, "x")), piece(0, "x"));
    }
}
