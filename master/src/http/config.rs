//! `GET /api/config` and `PUT /api/config`: the live configuration
//! ([`crate::settings`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use faena_proto::settings::{ConfigUpdate, ConfigView};

use super::{AppError, AppState, parse_body};

async fn view(state: &AppState) -> Result<ConfigView, AppError> {
    let workers = state.coord.workers().await?;
    // Workers that never reported a configuration do not take one.
    let reported = workers.into_iter().filter_map(|w| Some((w.id, w.config?))).collect();
    Ok(ConfigView { config: state.live.current(), reported })
}

pub(super) async fn get(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(Json(view(&state).await?).into_response())
}

pub(super) async fn put(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let update: ConfigUpdate = parse_body(body)?;
    state.live.change(update).await?;
    Ok(Json(view(&state).await?).into_response())
}
