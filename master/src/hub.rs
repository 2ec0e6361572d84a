//! Fan-out of job events to whoever watches a job (SSE streams today,
//! Socket.IO rooms later). Events for unwatched jobs cost one map lookup.

use std::collections::HashMap;
use std::sync::Arc;

use faena_proto::api::JobEvent;
use faena_proto::ids::JobId;
use parking_lot::Mutex;
use tokio::sync::broadcast;

const PER_JOB_BUFFER: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HashMap<JobId, broadcast::Sender<JobEvent>>>>,
}

impl Hub {
    pub fn subscribe(&self, job: JobId) -> broadcast::Receiver<JobEvent> {
        self.inner.lock().entry(job).or_insert_with(|| broadcast::channel(PER_JOB_BUFFER).0).subscribe()
    }

    pub fn publish(&self, job: JobId, event: JobEvent) {
        let mut map = self.inner.lock();
        let Some(tx) = map.get(&job) else { return };
        let last = event.is_final();
        if tx.send(event).is_err() || last {
            map.remove(&job);
        }
    }

    /// Jobs someone is watching right now.
    pub fn watched(&self) -> Vec<JobId> {
        let mut map = self.inner.lock();
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.keys().copied().collect()
    }

    pub fn is_watched(&self, job: &JobId) -> bool {
        self.inner.lock().contains_key(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_to_watchers_and_forgets_finished_jobs() {
        let hub = Hub::default();
        let job = JobId::new();
        hub.publish(job, JobEvent::Queued { position: 1 });
        let mut rx = hub.subscribe(job);
        hub.publish(job, JobEvent::Queued { position: 0 });
        hub.publish(job, JobEvent::Cancelled);
        assert_eq!(rx.try_recv().ok(), Some(JobEvent::Queued { position: 0 }));
        assert_eq!(rx.try_recv().ok(), Some(JobEvent::Cancelled));
        assert!(!hub.is_watched(&job));
        let other = JobId::new();
        drop(hub.subscribe(other));
        assert!(hub.watched().is_empty());
    }
}
