//! Recurring schedules: `POST /api/schedules` `{name, cron, timezone?,
//! job: {kind, params, priority?, group?, timeout_ms?, retry?}, overlap?,
//! catch_up?}`, `GET /api/schedules` (each with its next firing),
//! `GET/PATCH/DELETE /api/schedules/{name}`. Each firing is an ordinary
//! job: `GET /api/jobs?schedule={name}` lists them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppError, AppState, check_accepting, parse_body};
use crate::engine::schedules::ScheduleSpec;

fn bad(message: impl Into<String>) -> AppError {
    AppError::bad_request("bad_schedule", message)
}

fn check_name(name: &str) -> Result<(), AppError> {
    faena_proto::options::check_name("schedule", name).map_err(|e| bad(e.to_string()))
}

fn not_found(name: &str) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no schedule {name}"))
}

fn spec(doc: Value) -> Result<ScheduleSpec, AppError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        bad(if path == "." { e.into_inner().to_string() } else { format!("{path}: {}", e.into_inner()) })
    })
}

pub(super) async fn list(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(Json(json!({"schedules": state.coord.schedules().await?})).into_response())
}

pub(super) async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    check_name(&name)?;
    let found = state.coord.schedules().await?.into_iter().find(|s| s.name == name);
    Ok(Json(found.ok_or_else(|| not_found(&name))?).into_response())
}

/// `POST /api/schedules`: a new schedule (`409 exists` if the name is taken).
pub(super) async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    check_accepting(&state)?;
    let mut doc: Value = parse_body(body)?;
    let name = match doc.as_object_mut().and_then(|o| o.remove("name")) {
        Some(Value::String(n)) => n,
        _ => return Err(bad("name: a schedule needs a name (1..=64 of A-Z a-z 0-9 . _ : @ -)")),
    };
    check_name(&name)?;
    let spec = spec(doc)?;
    if state.coord.schedules().await?.iter().any(|s| s.name == name) {
        let m = format!("schedule {name} exists: PATCH it, or DELETE it first");
        return Err(AppError::new(StatusCode::CONFLICT, "exists", m));
    }
    let view = state.coord.put_schedule(name, spec).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `PATCH /api/schedules/{name}`: the fields given replace the schedule's
/// (`job` whole); its firings go on from its last.
pub(super) async fn patch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    check_accepting(&state)?;
    check_name(&name)?;
    let change: serde_json::Map<String, Value> = parse_body(body)?;
    let current =
        state.coord.schedules().await?.into_iter().find(|s| s.name == name).ok_or_else(|| not_found(&name))?;
    let mut doc = serde_json::to_value(&current.spec).map_err(|e| bad(e.to_string()))?;
    if let Some(o) = doc.as_object_mut() {
        o.extend(change);
    }
    let view = state.coord.put_schedule(name, spec(doc)?).await?;
    Ok(Json(view).into_response())
}

pub(super) async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    check_accepting(&state)?;
    check_name(&name)?;
    match state.coord.delete_schedule(name.clone()).await? {
        true => Ok(Json(json!({"name": name, "deleted": true})).into_response()),
        false => Err(not_found(&name)),
    }
}
