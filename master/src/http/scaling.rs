//! What the autoscaler (its own service, `faena-autoscaler`) uses of the
//! API: the load it scales on (`GET /api/load`), the workers it drains
//! before a scale-down (`PUT /api/workers/draining`) and its state for the
//! dashboard and metrics (`PUT /api/autoscaler`, `GET` to read it back).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use faena_proto::ids::WorkerId;
use faena_proto::scaling::{AutoscalerView, DrainRequest, KindLoad, LoadView};

use super::{AppError, AppState, parse_body};

pub(super) async fn load(State(state): State<AppState>) -> Result<Response, AppError> {
    let load = state.coord.load().await?;
    let kinds = load
        .kinds
        .iter()
        .map(|k| KindLoad { kind: k.kind.as_str().to_owned(), queued: k.queued, oldest_wait_ms: k.oldest_wait_ms })
        .collect();
    let view = LoadView {
        depth: load.depth,
        queued: load.queued,
        running: load.running,
        scheduled: load.scheduled,
        waiting: load.waiting,
        kinds,
    };
    Ok(Json(view).into_response())
}

pub(super) async fn drain(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let req: DrainRequest = parse_body(body)?;
    req.check().map_err(|e| AppError::bad_request("invalid_drain", e.to_string()))?;
    let workers = req
        .workers
        .iter()
        .map(|w| WorkerId::parse(w).map_err(|e| AppError::bad_request("bad_worker", e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    state.coord.retire(workers, Duration::from_millis(req.for_ms)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn report(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let view: AutoscalerView = parse_body(body)?;
    view.check().map_err(|e| AppError::bad_request("invalid_report", e.to_string()))?;
    state.autoscaler.report(view, &state.metrics);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn show(State(state): State<AppState>) -> Response {
    Json(state.autoscaler.view()).into_response()
}
