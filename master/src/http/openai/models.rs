//! `GET /v1/models`: what the online workers offer, as `provider/model`
//! (the model each provider answers with when a request names none), in
//! OpenAI's list format; a key limited to some models sees only those.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{OaiError, Tenant, tenant};
use crate::http::AppState;

/// Every `provider/model` some online worker offers, sorted, once each.
pub(super) async fn offered(state: &AppState) -> Result<Vec<String>, OaiError> {
    let mut models: Vec<String> =
        state.coord.workers().await?.into_iter().filter(|w| w.state != "offline").flat_map(|w| w.ai_models).collect();
    models.sort();
    models.dedup();
    Ok(models)
}

pub(super) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, OaiError> {
    let who = tenant(&state, &headers)?;
    let data: Vec<_> = offered(&state)
        .await?
        .into_iter()
        .filter(|m| {
            let (p, name) = m.split_once('/').unwrap_or((m, ""));
            match &who {
                Tenant::Key(k) => k.allows(Some(p), Some(name)),
                Tenant::Operator => true,
            }
        })
        .map(|m| {
            let owner = m.split_once('/').map_or("faena", |(p, _)| p).to_owned();
            json!({"id": m, "object": "model", "created": 0, "owned_by": owner})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}
