//! `GET /v1/models`: what the online workers offer, as `provider/model`
//! (the model each provider answers with when a request names none), in
//! OpenAI's list format; a key limited to some models sees only those.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The offered models as of at most [`Offered::FRESH`] ago, for the
/// chat endpoint: asking the coordinator for every worker on each request
/// costs a request about 50 µs. A model not among them is looked for again
/// at once ([`Offered::refresh`]), so a worker that just came is not missed;
/// one that just left is found out as a job that waits for no worker.
#[derive(Debug, Clone, Default)]
pub(super) struct Offered(Arc<Mutex<Option<Held>>>);

/// When the models were asked for, and what they were.
type Held = (Instant, Arc<Vec<String>>);

impl Offered {
    const FRESH: Duration = Duration::from_secs(1);

    pub(super) async fn get(&self, state: &AppState) -> Result<Arc<Vec<String>>, OaiError> {
        let now = Instant::now();
        if let Ok(held) = self.0.lock()
            && let Some((at, models)) = held.as_ref()
            && now.duration_since(*at) < Self::FRESH
        {
            return Ok(models.clone());
        }
        self.refresh(state).await
    }

    pub(super) async fn refresh(&self, state: &AppState) -> Result<Arc<Vec<String>>, OaiError> {
        let asked = Instant::now();
        let models = Arc::new(offered(state).await?);
        if let Ok(mut held) = self.0.lock() {
            *held = Some((asked, models.clone()));
        }
        Ok(models)
    }
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
