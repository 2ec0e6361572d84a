//! Fan-out of job events to whoever watches a job (SSE streams today,
//! Socket.IO rooms later). Events for unwatched jobs cost one map lookup.
//!
//! A streamed answer is also kept while its job runs ([`Hub::publish_kept`]),
//! so a watcher that arrives late — a page reloaded mid-answer, or a client
//! that subscribes just after submitting — first gets what was written so
//! far, then the rest live, with nothing missed or repeated: the replay and
//! the subscription are taken under one lock.

use std::collections::HashMap;
use std::sync::Arc;

use faena_proto::api::JobEvent;
use faena_proto::ids::JobId;
use parking_lot::Mutex;
use tokio::sync::broadcast;

const PER_JOB_BUFFER: usize = 256;
/// Most events kept for replay per job (a long answer in small pieces).
const MAX_KEPT: usize = 16_384;

#[derive(Debug, Default)]
struct Entry {
    tx: Option<broadcast::Sender<JobEvent>>,
    kept: Vec<JobEvent>,
}

#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HashMap<JobId, Entry>>>,
}

impl Hub {
    /// What was kept for `job` so far, and the events from now on.
    pub fn subscribe(&self, job: JobId) -> (Vec<JobEvent>, broadcast::Receiver<JobEvent>) {
        let mut map = self.inner.lock();
        let entry = map.entry(job).or_default();
        let rx = entry.tx.get_or_insert_with(|| broadcast::channel(PER_JOB_BUFFER).0).subscribe();
        (entry.kept.clone(), rx)
    }

    pub fn publish(&self, job: JobId, event: JobEvent) {
        let mut map = self.inner.lock();
        let Some(entry) = map.get_mut(&job) else { return };
        let last = event.is_final();
        let gone = entry.tx.as_ref().is_some_and(|tx| tx.send(event).is_err());
        if last || (gone && entry.kept.is_empty()) {
            map.remove(&job);
        } else if gone {
            entry.tx = None;
        }
    }

    /// Publishes and keeps `event` for watchers still to come, until the
    /// job's final event.
    pub fn publish_kept(&self, job: JobId, event: JobEvent) {
        let mut map = self.inner.lock();
        let entry = map.entry(job).or_default();
        if entry.kept.len() < MAX_KEPT {
            entry.kept.push(event.clone());
        }
        if let Some(tx) = &entry.tx
            && tx.send(event).is_err()
        {
            entry.tx = None;
        }
    }

    /// Forgets what was kept for a job (its stream starts again).
    pub fn reset_kept(&self, job: &JobId) {
        if let Some(entry) = self.inner.lock().get_mut(job) {
            entry.kept.clear();
        }
    }

    /// Jobs someone is watching right now.
    pub fn watched(&self) -> Vec<JobId> {
        let mut map = self.inner.lock();
        map.retain(|_, e| e.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0) || !e.kept.is_empty());
        map.iter().filter(|(_, e)| e.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0)).map(|(id, _)| *id).collect()
    }

    pub fn is_watched(&self, job: &JobId) -> bool {
        self.inner.lock().get(job).is_some_and(|e| e.tx.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delivers_to_watchers_and_forgets_finished_jobs() {
        let hub = Hub::default();
        let job = JobId::new();
        hub.publish(job, JobEvent::Queued { position: 1 });
        let (kept, mut rx) = hub.subscribe(job);
        assert!(kept.is_empty());
        hub.publish(job, JobEvent::Queued { position: 0 });
        hub.publish(job, JobEvent::Cancelled);
        assert_eq!(rx.try_recv().ok(), Some(JobEvent::Queued { position: 0 }));
        assert_eq!(rx.try_recv().ok(), Some(JobEvent::Cancelled));
        assert!(!hub.is_watched(&job));
        let other = JobId::new();
        drop(hub.subscribe(other));
        assert!(hub.watched().is_empty());
    }

    #[test]
    fn late_watchers_get_the_stream_so_far_then_the_rest() {
        let hub = Hub::default();
        let job = JobId::new();
        let chunk = |n| JobEvent::Progress { worker: "w".into(), attempt: 1, data: json!({"seq": n}) };
        hub.publish_kept(job, chunk(0));
        hub.publish_kept(job, chunk(1));
        let (kept, mut rx) = hub.subscribe(job);
        assert_eq!(kept, vec![chunk(0), chunk(1)]);
        hub.publish_kept(job, chunk(2));
        assert_eq!(rx.try_recv().ok(), Some(chunk(2)));
        hub.reset_kept(&job);
        assert!(hub.subscribe(job).0.is_empty());
        hub.publish(job, JobEvent::Cancelled);
        assert!(hub.subscribe(job).0.is_empty(), "forgotten with the final event");
    }
}
