//! The OpenAI API, served from Faena's queue: `POST /v1/chat/completions`
//! (streamed or not) and `GET /v1/models`, with OpenAI's error format, for
//! any OpenAI client. Each request is an `ai.query` job in the group of the
//! key that sent it, so keys share the AI slots fairly; a request waits in
//! the queue while every slot is busy, at most the queue wait, instead of
//! being refused. Keys are made, listed and revoked on `/api/keys`.

mod chat;
pub mod keys;
mod models;
mod relay;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

use crate::http::{AppError, AppState, parse_body};
use keys::{KeyError, KeyRecord, Keys, NewKey};

/// What the OpenAI endpoints share.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub keys: Keys,
    /// Longest a request waits for an AI slot before an honest 429.
    pub queue_wait: Duration,
    /// How long answers took lately (ms, a moving average): what a 429's
    /// `Retry-After` says.
    answer_ms: Arc<AtomicU64>,
    /// The models offered lately (see [`models::Offered`]).
    offered: models::Offered,
}

impl Gateway {
    pub fn new(keys: Keys, queue_wait: Duration) -> Self {
        Self { keys, queue_wait, answer_ms: Arc::new(AtomicU64::new(1_000)), offered: Default::default() }
    }

    fn answered_in(&self, ms: u64) {
        let old = self.answer_ms.load(Ordering::Relaxed);
        self.answer_ms.store((old * 7 + ms) / 8, Ordering::Relaxed);
    }

    /// Seconds to wait before asking again: about one answer's time.
    fn retry_after_s(&self) -> u64 {
        self.answer_ms.load(Ordering::Relaxed).div_ceil(1000).clamp(1, 60)
    }
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Tenant {
    /// A client key, with its limits.
    Key(KeyRecord),
    /// The cluster's API token, or anyone when the master has none (as on
    /// `/api`): no limits, one group.
    Operator,
}

impl Tenant {
    fn group(&self) -> String {
        match self {
            Tenant::Key(k) => k.group(),
            Tenant::Operator => "ai".into(),
        }
    }
}

/// An error in the OpenAI API's format: `{"error": {"message", "type",
/// "param", "code"}}`, with `Retry-After` on a 429 that has one.
#[derive(Debug)]
pub struct OaiError {
    app: AppError,
    retry_after_s: Option<u64>,
}

impl OaiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { app: AppError::new(status, code, message), retry_after_s: None }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn retry_after(mut self, s: u64) -> Self {
        self.retry_after_s = Some(s);
        self
    }

    fn kind(&self) -> &'static str {
        match (self.app.status().as_u16(), self.app.code()) {
            (429, "insufficient_quota") => "insufficient_quota",
            (429, _) => "requests",
            (401, _) => "authentication_error",
            (403, _) => "permission_error",
            (s, _) if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl OaiError {
    /// `{"error": {"message", "type", "param", "code"}}`, as a response's
    /// body or a stream's last event.
    pub(super) fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.app.message(), "type": self.kind(), "param": null, "code": self.app.code()}})
    }
}

impl From<AppError> for OaiError {
    fn from(app: AppError) -> Self {
        Self { app, retry_after_s: None }
    }
}

impl From<crate::coordinator::CoordError> for OaiError {
    fn from(e: crate::coordinator::CoordError) -> Self {
        AppError::from(e).into()
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = self.app.respond_with(body);
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Who a request is from: `Authorization: Bearer` with a client key
/// (`fk-…`) or the cluster's API token; with no API token set, anyone
/// without a client key is the operator (as on `/api`).
fn tenant(state: &AppState, headers: &HeaderMap) -> Result<Tenant, OaiError> {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let unauthorized = |m: &str| OaiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", m);
    match given {
        Some(k) if k.starts_with(keys::KEY_PREFIX) => state
            .ai
            .keys
            .find(k)
            .map(Tenant::Key)
            .ok_or_else(|| unauthorized("Incorrect API key provided: no Faena key in force is this one (revoked?)")),
        Some(t) if state.api_token.as_ref().is_some_and(|token| token.constant_time_eq(t)) => Ok(Tenant::Operator),
        _ if state.api_token.is_none() => Ok(Tenant::Operator),
        Some(_) => {
            Err(unauthorized("Incorrect API key provided: use a Faena key (faena keys create) or the API token"))
        }
        None => Err(unauthorized("this API needs a key: Authorization: Bearer <key> (faena keys create)")),
    }
}

/// `/v1/*`, each with its own authentication (client keys).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat::completions)).route("/v1/models", get(models::list)).route(
        "/v1/{*rest}",
        axum::routing::any(|| async {
            OaiError::new(StatusCode::NOT_FOUND, "unknown_url", "Faena serves /v1/chat/completions and /v1/models")
        }),
    )
}

/// `/api/keys`, behind the API token like the rest of `/api`.
pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/api/keys", post(create_key).get(list_keys)).route("/api/keys/{name}", delete(revoke_key))
}

impl From<KeyError> for AppError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Exists(_) => AppError::new(StatusCode::CONFLICT, "key_exists", e.to_string()),
            KeyError::Unknown(_) => AppError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            KeyError::Full => AppError::new(StatusCode::TOO_MANY_REQUESTS, "keys_full", e.to_string()),
            KeyError::Store(s) => s.into(),
        }
    }
}

/// `POST /api/keys` `{name, tokens_per_day?, max_concurrent?, models?}`:
/// the key, shown this once.
async fn create_key(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let new: NewKey = parse_body(body)?;
    new.check().map_err(|m| AppError::bad_request("bad_key", m))?;
    let (record, secret) = state.ai.keys.create(new).await?;
    // Requests at once: its group's max_running.
    let limits =
        record.max_concurrent.map(|n| crate::engine::groups::Limits { max_running: Some(n), ..Default::default() });
    state.coord.set_group(record.group(), limits).await?;
    let mut body = serde_json::to_value(&record).unwrap_or_default();
    body["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/keys`: every key (never the key itself), with today's usage.
async fn list_keys(State(state): State<AppState>) -> Response {
    let keys: Vec<_> = state
        .ai
        .keys
        .list()
        .into_iter()
        .map(|(k, used)| {
            let mut v = serde_json::to_value(&k).unwrap_or_default();
            v["today"] = serde_json::to_value(used).unwrap_or_default();
            v
        })
        .collect();
    Json(json!({"keys": keys})).into_response()
}

/// `DELETE /api/keys/{name}`: revoked at once; kept in the list.
async fn revoke_key(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    let record = state.ai.keys.revoke(&name).await?;
    state.coord.set_group(record.group(), None).await?;
    Ok(Json(record).into_response())
}
