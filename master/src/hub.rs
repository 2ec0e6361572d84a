//! Fan-out of job events to whoever watches a job: SSE streams and the
//! page's Socket.IO sessions. A job has a channel only while someone
//! watches it (or its streamed answer is being kept): a [`Watch`] frees the
//! channel when the last one is dropped, and events for unwatched jobs cost
//! one map lookup.
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

impl Entry {
    fn watchers(&self) -> usize {
        self.tx.as_ref().map_or(0, broadcast::Sender::receiver_count)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HashMap<JobId, Entry>>>,
}

/// One watcher of one job; dropping it frees the job's channel if it was the last.
#[derive(Debug)]
pub struct Watch {
    job: JobId,
    hub: Hub,
    rx: Option<broadcast::Receiver<JobEvent>>,
}

impl Watch {
    /// The next event; `Lagged` when this watcher fell behind, `Closed` when the job's stream ended.
    pub async fn recv(&mut self) -> Result<JobEvent, broadcast::error::RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut map = self.hub.inner.lock();
        if let Some(entry) = map.get_mut(&self.job)
            && entry.watchers() == 0
        {
            if entry.kept.is_empty() {
                map.remove(&self.job);
            } else {
                entry.tx = None;
            }
        }
    }
}

impl Hub {
    /// What was kept for `job` so far, and the events from now on.
    pub fn subscribe(&self, job: JobId) -> (Vec<JobEvent>, Watch) {
        let mut map = self.inner.lock();
        let entry = map.entry(job).or_default();
        let rx = entry.tx.get_or_insert_with(|| broadcast::channel(PER_JOB_BUFFER).0).subscribe();
        (entry.kept.clone(), Watch { job, hub: self.clone(), rx: Some(rx) })
    }

    pub fn publish(&self, job: JobId, event: JobEvent) {
        let mut map = self.inner.lock();
        let Some(entry) = map.get_mut(&job) else { return };
        let last = event.is_final();
        if let Some(tx) = &entry.tx {
            let _ = tx.send(event);
        }
        if last {
            map.remove(&job);
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
        if let Some(tx) = &entry.tx {
            let _ = tx.send(event);
        }
    }

    /// What is kept for `job` now (its streamed answer so far).
    pub fn kept(&self, job: &JobId) -> Vec<JobEvent> {
        self.inner.lock().get(job).map(|e| e.kept.clone()).unwrap_or_default()
    }

    /// Forgets what was kept for a job (its stream starts again).
    pub fn reset_kept(&self, job: &JobId) {
        let mut map = self.inner.lock();
        if let Some(entry) = map.get_mut(job) {
            entry.kept.clear();
            if entry.watchers() == 0 {
                map.remove(job);
            }
        }
    }

    /// Jobs someone is watching right now.
    pub fn watched(&self) -> std::collections::HashSet<JobId> {
        self.inner.lock().iter().filter(|(_, e)| e.watchers() > 0).map(|(id, _)| *id).collect()
    }

    pub fn is_watched(&self, job: &JobId) -> bool {
        self.inner.lock().get(job).is_some_and(|e| e.watchers() > 0)
    }

    /// No job has a channel or a kept stream (the hub holds no memory).
    pub fn is_empty(&self) -> bool {
        self.inner.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
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
        assert_eq!(rx.recv().now_or_never().and_then(Result::ok), Some(JobEvent::Queued { position: 0 }));
        assert_eq!(rx.recv().now_or_never().and_then(Result::ok), Some(JobEvent::Cancelled));
        assert!(!hub.is_watched(&job));
        let other = JobId::new();
        drop(hub.subscribe(other));
        assert!(hub.watched().is_empty());
        assert!(hub.is_empty(), "the last watcher leaving frees the channel");
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
        assert_eq!(rx.recv().now_or_never().and_then(Result::ok), Some(chunk(2)));
        hub.reset_kept(&job);
        assert!(hub.subscribe(job).0.is_empty());
        hub.publish(job, JobEvent::Cancelled);
        assert!(hub.subscribe(job).0.is_empty(), "forgotten with the final event");
    }
}
