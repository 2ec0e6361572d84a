//! A job's events, turned into its session's Socket.IO events.

use faena_proto::api::JobEvent;
use faena_proto::ids::JobId;
use faena_proto::jobs::JobState;
use faena_proto::sio::{self, to_client};
use serde_json::{Value, json};
use socketioxide::SocketIo;

use super::Web;

/// Turns a job's events into the session's Socket.IO events until it ends.
pub(super) async fn forward(web: Web, io: SocketIo, session: String, job: JobId, mut events: crate::hub::Watch) {
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let room = io.to(session.clone());
        let update = |state, position, worker, attempt, reason| sio::JobUpdate {
            job,
            state,
            position,
            worker,
            attempt,
            reason,
            continues: false,
        };
        let sent = match &event {
            JobEvent::Queued { position } => {
                room.emit(to_client::JOB, &update(JobState::Queued, Some(*position), None, None, None)).await
            }
            JobEvent::Scheduled { run_at } => {
                web.note(&session, job, |e| e.state = JobState::Scheduled);
                let reason = Some(format!("next attempt at {run_at}"));
                room.emit(to_client::JOB, &update(JobState::Scheduled, None, None, None, reason)).await
            }
            JobEvent::Running { worker, attempt } => {
                web.note(&session, job, |e| e.state = JobState::Running);
                room.emit(to_client::JOB, &update(JobState::Running, None, Some(worker.clone()), Some(*attempt), None))
                    .await
            }
            JobEvent::Requeued { reason, continues } => {
                web.note(&session, job, |e| {
                    e.state = JobState::Queued;
                    if !continues {
                        e.answer.clear();
                    }
                });
                let u = sio::JobUpdate {
                    continues: *continues,
                    ..update(JobState::Queued, None, None, None, Some(reason.clone()))
                };
                room.emit(to_client::JOB, &u).await
            }
            JobEvent::Progress { data, .. } => {
                match (data.get("seq").and_then(Value::as_u64), data.get("text").and_then(Value::as_str)) {
                    (Some(seq), Some(text)) => {
                        web.note(&session, job, |e| e.answer.push_str(text));
                        room.emit(to_client::CHUNK, &sio::Chunk { job, seq, text: text.to_owned() }).await
                    }
                    _ => room.emit(to_client::PROGRESS, &sio::Progress { job, data: data.clone() }).await,
                }
            }
            JobEvent::Succeeded { result, worker, attempt } => {
                web.note(&session, job, |e| {
                    e.state = JobState::Succeeded;
                    if let Some(text) = result.get("text").and_then(Value::as_str) {
                        e.answer = text.to_owned();
                    }
                    let mut meta = result.clone();
                    if let Some(m) = meta.as_object_mut() {
                        m.remove("text");
                        m.insert("worker".into(), json!(worker));
                        m.insert("attempt".into(), json!(attempt));
                    }
                    e.meta = Some(meta);
                });
                let done = sio::Done {
                    job,
                    state: JobState::Succeeded,
                    result: Some(result.clone()),
                    error: None,
                    worker: Some(worker.clone()),
                    attempt: Some(*attempt),
                };
                room.emit(to_client::DONE, &done).await
            }
            JobEvent::Failed { error, .. } => {
                web.note(&session, job, |e| {
                    e.state = JobState::Failed;
                    e.meta = Some(json!({"error": error}));
                });
                room.emit(
                    to_client::DONE,
                    &sio::Done {
                        job,
                        state: JobState::Failed,
                        result: None,
                        error: Some(error.clone()),
                        worker: None,
                        attempt: None,
                    },
                )
                .await
            }
            JobEvent::Cancelled => {
                web.note(&session, job, |e| e.state = JobState::Cancelled);
                room.emit(
                    to_client::DONE,
                    &sio::Done {
                        job,
                        state: JobState::Cancelled,
                        result: None,
                        error: None,
                        worker: None,
                        attempt: None,
                    },
                )
                .await
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "socket.io broadcast failed");
        }
        if event.is_final() {
            if let Some(s) = web.sessions.lock().by_id.get_mut(&session) {
                s.jobs.remove(&job);
            }
            return;
        }
    }
}
