//! `/api/mining/*`: sources (add, list, show, stop), participants and the
//! verifier's capacity. Behind the API token like the rest of `/api`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use faena_proto::mining::{SourceList, SourceSpec};

use super::{AppError, AppState, parse_body};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/mining/sources", get(list).post(add))
        .route("/api/mining/sources/{id}", get(show).delete(remove))
        .route("/api/mining/participants", get(participants))
        .route("/api/mining/verifier", get(verifier))
}

fn not_found(id: &str) -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no mining source {id}"))
}

async fn add(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let spec: SourceSpec = parse_body(body)?;
    let view = state.pool.add_source(spec).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list(State(state): State<AppState>) -> Json<SourceList> {
    Json(SourceList { sources: state.pool.sources() })
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, AppError> {
    let view = state.pool.source(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(view).into_response())
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, AppError> {
    match state.pool.remove_source(&id).await? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(not_found(&id)),
    }
}

async fn participants(State(state): State<AppState>) -> Response {
    Json(state.pool.participants()).into_response()
}

async fn verifier(State(state): State<AppState>) -> Response {
    Json(state.pool.verifier_view()).into_response()
}
