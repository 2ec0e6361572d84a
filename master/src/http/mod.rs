//! The REST API over axum, with the web page's files at every other path.
//! Handlers only translate: validation lives in `faena_proto::jobs`,
//! decisions in the engine. Every error is `{"error": {"code", "message"}}`
//! with a fitting status; [`openai`] serves OpenAI's API (`/v1`) beside it,
//! in OpenAI's error format.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use faena_proto::api::{JobEvent, JobView};
use faena_proto::ids::JobId;
use faena_proto::jobs::JobState;
use faena_proto::secret::Secret;
use futures::Stream;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use crate::coordinator::{Cancelled, Coordinator};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Store, rfc3339};

mod config;
mod error;
mod groups;
mod jobs;
pub mod listen;
mod mining;
pub mod openai;
pub mod origin;
pub mod replicas;
mod scaling;
mod schedules;
mod submit;

pub use error::AppError;
pub(crate) use error::parse_body;
pub(crate) use submit::submit_jobs;

/// Most jobs in one batch submission.
pub const MAX_BATCH: usize = 10_000;

/// What every request reads, behind one reference count: axum clones the
/// state for each middleware and handler a request passes, which cloned
/// every part's own counts (about twenty) each time.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppParts>);

impl From<AppParts> for AppState {
    fn from(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

#[derive(Debug)]
pub struct AppParts {
    pub coord: Coordinator,
    pub store: Store,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub accepting: Arc<AtomicBool>,
    pub broker_connected: watch::Receiver<bool>,
    pub max_body_bytes: usize,
    /// What `/api/*` requires as `Authorization: Bearer`, when set.
    pub api_token: Option<Arc<Secret>>,
    /// Mining sources, the Stratum server's miners, participants.
    pub pool: crate::pool::Pool,
    /// Held while a retry checks its job and submits the new one, so a job
    /// is retried once however many ask at the same moment.
    pub retrying: Arc<tokio::sync::Mutex<()>>,
    /// The live configuration (`/api/config`).
    pub live: crate::settings::LiveConfig,
    /// What the autoscaler last reported (`/api/autoscaler`).
    pub autoscaler: crate::scaling::Reports,
    /// The epoch of the lease this master leads a shared store with
    /// (none: it owns its store alone).
    pub epoch: Option<i64>,
    /// The OpenAI endpoints' keys and settings.
    pub ai: openai::Gateway,
    /// The port miners connect to here, when Stratum is on (`/healthz`
    /// says it: the edge spreads miners over the masters by it).
    pub stratum_port: Option<u16>,
}

/// The REST API, with the web page's files (from `web_dir`) at every other path.
pub fn app(state: AppState, web_dir: &std::path::Path) -> Router {
    let limit = state.max_body_bytes;
    let client = web_dir.join("node_modules/socket.io-client/dist/socket.io.min.js");
    let uplot = web_dir.join("node_modules/uplot/dist");
    let file = tower_http::services::ServeFile::new;
    let pages = Router::new()
        .route_service("/vendor/socket.io.min.js", file(client))
        .route_service("/vendor/uPlot.iife.min.js", file(uplot.join("uPlot.iife.min.js")))
        .route_service("/vendor/uPlot.min.css", file(uplot.join("uPlot.min.css")))
        .route_service("/dashboard", file(web_dir.join("dashboard.html")))
        .fallback_service(tower_http::services::ServeDir::new(web_dir));
    let api = Router::new()
        .route("/api/jobs", post(submit::submit).get(jobs::list))
        .route("/api/jobs/batch", post(submit::submit_batch))
        .route("/api/jobs/{id}", get(get_job).delete(cancel_job).patch(jobs::reprioritise))
        .route("/api/jobs/{id}/retry", post(jobs::retry))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/history", get(job_history))
        .route("/api/schedules", post(schedules::create).get(schedules::list))
        .route("/api/schedules/{name}", get(schedules::get).patch(schedules::patch).delete(schedules::delete))
        .route("/api/groups", get(groups::list))
        .route("/api/groups/{name}", get(groups::get).put(groups::put).delete(groups::delete))
        .route("/api/workers", get(workers))
        .route("/api/workers/draining", put(scaling::drain))
        .route("/api/load", get(scaling::load))
        .route("/api/autoscaler", get(scaling::show).put(scaling::report))
        .route("/api/config", get(config::get).put(config::put))
        .merge(mining::routes())
        .merge(openai::admin_routes())
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async { AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") }),
        );
    let api = api.route_layer(axum::middleware::from_fn_with_state(state.api_token.clone(), origin::api_gate));
    let openai = openai::routes().route_layer(axum::middleware::from_fn_with_state(None, origin::api_gate));
    api.merge(openai)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
        .fallback_service(pages)
}

fn parse_id(id: &str) -> Result<JobId, AppError> {
    id.parse().map_err(|e: faena_proto::WireError| AppError::bad_request("bad_id", e.to_string()))
}

pub(crate) fn check_accepting(state: &AppState) -> Result<(), AppError> {
    if !state.accepting.load(Ordering::Relaxed) {
        return Err(AppError::shutting_down());
    }
    if !state.store.is_healthy() {
        return Err(AppError::store_unavailable());
    }
    Ok(())
}

async fn stored(state: &AppState, id: JobId) -> Result<Option<JobView>, AppError> {
    Ok(state.store.get(id).await?)
}

fn not_found(id: JobId) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no job {id}"))
}

/// Why an action on job `id` does nothing: the job ended, or never was.
async fn not_active(state: &AppState, id: JobId) -> AppError {
    match stored(state, id).await {
        Ok(Some(v)) => {
            AppError::new(StatusCode::CONFLICT, "already_finished", format!("job {id} already {}", v.state.as_str()))
        }
        Ok(None) => not_found(id),
        Err(e) => e,
    }
}

async fn find(state: &AppState, id: JobId) -> Result<JobView, AppError> {
    if let Some(v) = state.coord.view(id).await? {
        return Ok(JobView {
            id,
            kind: v.kind.as_str().into(),
            state: v.state,
            priority: v.priority,
            position: v.position,
            worker: v.worker,
            attempts: v.attempts,
            result: None,
            error: None,
            created_at: rfc3339(v.created_at_ms),
            finished_at: None,
            progress: v.progress.and_then(|p| serde_json::to_value(p).ok()),
            parent: v.parent,
            waiting: v.waiting,
            retry_of: v.retry_of,
            retried_as: None,
            run_at: v.run_at_ms.map(rfc3339),
            error_code: None,
            options: v.opts.as_deref().cloned(),
        });
    }
    stored(state, id).await?.ok_or_else(|| not_found(id))
}

async fn get_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobView>, AppError> {
    Ok(Json(find(&state, parse_id(&id)?).await?))
}

async fn cancel_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    match state.coord.cancel(id).await? {
        Cancelled::Now => Ok(Json(json!({"id": id, "state": "cancelled"})).into_response()),
        Cancelled::NotActive => Err(not_active(&state, id).await),
    }
}

async fn job_history(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let history = state.store.history(id).await?;
    if history.is_empty() {
        return Err(not_found(id));
    }
    Ok(Json(json!({"id": id, "transitions": history})).into_response())
}

/// The event a snapshot of the job stands for, so a late subscriber starts
/// from the present.
fn snapshot_event(v: &JobView) -> JobEvent {
    match v.state {
        JobState::Queued => JobEvent::Queued { position: v.position.unwrap_or(0) },
        JobState::Running => JobEvent::Running { worker: v.worker.clone().unwrap_or_default(), attempt: v.attempts },
        JobState::Succeeded => JobEvent::Succeeded {
            result: v.result.clone().unwrap_or_default(),
            worker: v.worker.clone().unwrap_or_default(),
            attempt: v.attempts,
        },
        JobState::Failed => JobEvent::Failed { error: v.error.clone().unwrap_or_default(), code: v.error_code.clone() },
        JobState::Cancelled => JobEvent::Cancelled,
        JobState::Scheduled => JobEvent::Scheduled { run_at: v.run_at.clone().unwrap_or_default() },
        JobState::Waiting => JobEvent::Queued { position: 0 },
    }
}

async fn job_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let id = parse_id(&id)?;
    // An unknown job gets its 404 before anything is set up for it.
    let first = snapshot_event(&find(&state, id).await?);
    let (first, kept, rx) = if first.is_final() {
        (first, Vec::new(), None)
    } else {
        // Subscribe, then read the snapshot again, so nothing falls in between.
        let (kept, rx) = state.hub.subscribe(id);
        (snapshot_event(&find(&state, id).await?), kept, Some(rx))
    };
    let done = first.is_final();
    // The snapshot, then (unless it is final) the stream written so far.
    let mut backlog: std::collections::VecDeque<JobEvent> = std::iter::once(first).collect();
    if !done {
        backlog.extend(kept);
    }
    // State: events still to send first, the subscription, the last position sent, done.
    let start = (backlog, rx, None::<u64>, done);
    let stream = futures::stream::unfold(start, |(mut backlog, rx, last_position, done)| async move {
        if let Some(ev) = backlog.pop_front() {
            let fin = ev.is_final();
            let position = if let JobEvent::Queued { position } = ev { Some(position) } else { last_position };
            return Some((ev, (backlog, if fin { None } else { rx }, position, fin)));
        }
        if done {
            return None;
        }
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                // A position update that changes nothing is not news.
                Ok(JobEvent::Queued { position }) if Some(position) == last_position => continue,
                Ok(ev) => {
                    let fin = ev.is_final();
                    let position = if let JobEvent::Queued { position } = ev { Some(position) } else { last_position };
                    return Some((ev, (backlog, Some(rx), position, fin)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::StreamExt::map(stream, |ev| {
        Ok(Event::default().event(ev.name()).json_data(&ev).unwrap_or_else(|_| Event::default().comment("unencodable")))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn workers(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(Json(json!({"workers": state.coord.workers().await?})).into_response())
}

async fn healthz(State(state): State<AppState>) -> Response {
    let broker = *state.broker_connected.borrow();
    let store = state.store.is_healthy();
    let accepting = state.accepting.load(Ordering::Relaxed);
    let ok = broker && store && accepting;
    let status = if ok { "ok" } else { "degraded" };
    let body = json!({"status": status, "role": "leader", "epoch": state.epoch, "broker": broker, "store": store, "accepting": accepting, "stratum_port": state.stratum_port});
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.coord.refresh_gauges().await;
    let broker = *state.broker_connected.borrow();
    state.metrics.set_health(state.store.is_healthy(), broker);
    let sources = state.pool.sources().into_iter();
    state.metrics.set_sources(sources.map(|s| (s.id, s.state == faena_proto::mining::SourceState::Error)));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}
