//! Following one `/v1` request's job: its answer's pieces in order, once
//! each, whatever the hub's buffer dropped, then its outcome; and the job
//! cancelled if the request goes away first.

use faena_proto::ai::{AiChunk, AiOutput};
use faena_proto::api::JobEvent;
use faena_proto::ids::JobId;
use tokio::sync::broadcast::error::RecvError;

use crate::coordinator::Coordinator;
use crate::hub::{Hub, Watch};

/// Cancels the job when the request goes away before its answer ended.
pub(super) struct CancelOnDrop {
    pub(super) coord: Coordinator,
    pub(super) id: JobId,
    pub(super) armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let (coord, id) = (self.coord.clone(), self.id);
            tokio::spawn(async move {
                let _ = coord.cancel(id).await;
            });
        }
    }
}

/// What the relay hands on.
pub(super) enum Piece {
    Text(String),
    Done(AiOutput),
    Failed(String),
}

/// Follows one job's events: the answer's pieces in order, once each,
/// whatever the hub's buffer dropped (they are read back from what it
/// keeps), then the outcome.
pub(super) struct Relay {
    pub(super) hub: Hub,
    pub(super) id: JobId,
    pub(super) watch: Watch,
    /// Pieces read from the hub's replay, not yet handed on.
    pub(super) backlog: std::collections::VecDeque<JobEvent>,
    pub(super) next_seq: u64,
    pub(super) sent: String,
    pub(super) guard: CancelOnDrop,
    /// The outcome, once the rest of its text has been handed on.
    pub(super) done: Option<AiOutput>,
}

impl Relay {
    async fn event(&mut self) -> Option<JobEvent> {
        if let Some(ev) = self.backlog.pop_front() {
            return Some(ev);
        }
        loop {
            match self.watch.recv().await {
                Ok(ev) => return Some(ev),
                Err(RecvError::Lagged(_)) => {
                    // Read what was written again; pieces already sent are skipped.
                    let (kept, watch) = self.hub.subscribe(self.id);
                    self.watch = watch;
                    self.backlog.extend(kept);
                    if let Some(ev) = self.backlog.pop_front() {
                        return Some(ev);
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Waits until the job runs (true), or ends first (false).
    pub(super) async fn started(&mut self) -> bool {
        while let Some(ev) = self.event().await {
            match ev {
                JobEvent::Running { .. } | JobEvent::Progress { .. } => {
                    self.backlog.push_front(ev);
                    return true;
                }
                e if e.is_final() => {
                    self.backlog.push_front(e);
                    return true;
                }
                _ => {}
            }
        }
        false
    }

    pub(super) async fn next(&mut self) -> Option<Piece> {
        if let Some(out) = self.done.take() {
            return Some(Piece::Done(out));
        }
        loop {
            match self.event().await? {
                JobEvent::Progress { data, .. } => {
                    let Ok(chunk) = serde_json::from_value::<AiChunk>(data) else { continue };
                    if chunk.seq < self.next_seq {
                        continue;
                    }
                    self.next_seq = chunk.seq + 1;
                    self.sent.push_str(&chunk.text);
                    return Some(Piece::Text(chunk.text));
                }
                JobEvent::Succeeded { result, .. } => {
                    self.guard.armed = false;
                    let out: AiOutput = match serde_json::from_value(result) {
                        Ok(o) => o,
                        Err(e) => return Some(Piece::Failed(format!("the worker's answer does not read: {e}"))),
                    };
                    // Whatever did not come as a piece comes now, then the end.
                    let Some(rest) = out.text.strip_prefix(self.sent.as_str()).map(str::to_owned) else {
                        // A piece went missing on its way here, and the
                        // client cannot take back what it got: logged.
                        tracing::warn!(job = %self.id, sent = self.sent.len(), answer = out.text.len(),
                            "a streamed answer's pieces differ from its final text");
                        return Some(Piece::Done(out));
                    };
                    if rest.is_empty() {
                        return Some(Piece::Done(out));
                    }
                    self.sent.push_str(&rest);
                    self.done = Some(out);
                    return Some(Piece::Text(rest));
                }
                JobEvent::Failed { error, .. } => {
                    self.guard.armed = false;
                    return Some(Piece::Failed(error));
                }
                JobEvent::Cancelled => {
                    self.guard.armed = false;
                    return Some(Piece::Failed("the job was cancelled".into()));
                }
                _ => {}
            }
        }
    }
}
