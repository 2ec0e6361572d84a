//! Groups: `GET /api/groups` (every group with jobs or limits: its jobs,
//! queued and running counts, limits, whether it is held back now),
//! `GET/PUT/DELETE /api/groups/{name}` (one group; its limits set or
//! removed, stored, in force at once).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppError, AppState, check_accepting, parse_body};
use crate::engine::groups::{GroupView, Limits};

fn check_name(name: &str) -> Result<(), AppError> {
    faena_proto::options::check_name("group", name).map_err(|e| AppError::bad_request("bad_group", e.to_string()))
}

async fn find(state: &AppState, name: &str) -> Result<Option<GroupView>, AppError> {
    Ok(state.coord.groups().await?.into_iter().find(|g| g.name == name))
}

pub(super) async fn list(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(Json(json!({"groups": state.coord.groups().await?})).into_response())
}

pub(super) async fn get(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    check_name(&name)?;
    match find(&state, &name).await? {
        Some(g) => Ok(Json(g).into_response()),
        None => {
            Err(AppError::new(StatusCode::NOT_FOUND, "not_found", format!("group {name} has no jobs and no limits")))
        }
    }
}

/// `PUT /api/groups/{name}` `{max_running?, rate?, weight?}`: the group's
/// limits from now on (a field left out is no limit); answers the group.
pub(super) async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    check_accepting(&state)?;
    check_name(&name)?;
    let limits: Limits = parse_body(body)?;
    limits.check().map_err(|m| AppError::bad_request("bad_group", m))?;
    state.coord.set_group(name.clone(), Some(limits)).await?;
    let view = find(&state, &name).await?;
    Ok(Json(view).into_response())
}

/// `DELETE /api/groups/{name}`: the group's limits go (its jobs stay, dispatched fairly).
pub(super) async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    check_accepting(&state)?;
    check_name(&name)?;
    state.coord.set_group(name.clone(), None).await?;
    Ok(Json(json!({"name": name, "limits": null})).into_response())
}
