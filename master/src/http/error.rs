//! What a REST client is told when a request fails: `{"error": {"code",
//! "message"}}` with a fitting status. An [`AppError`] keeps the typed cause
//! of a server-side failure for the operator; turning it into a response has
//! no side effects, and [`log_failure`] (in the front door) logs the cause of every
//! 5xx once, never shown to the client.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use faena_proto::api::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;

use crate::coordinator::CoordError;
use crate::engine::SubmitError;
use crate::engine::Unmovable;
use crate::pool::PoolError;
use crate::settings::ChangeError;
use crate::store::StoreError;

/// Why a request failed on the server's side: kept for the log, never sent.
type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Carried in a failed response's extensions to the logging layer.
#[derive(Debug, Clone)]
struct FailureCause(Cause);

#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    cause: Option<Cause>,
}

impl AppError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), cause: None }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Keeps what went wrong for the operator's log.
    pub(crate) fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// This error's response with another body (the OpenAI API's error
    /// format), its cause still logged.
    pub(crate) fn respond_with(self, body: serde_json::Value) -> Response {
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(cause) = self.cause {
            resp.extensions_mut().insert(FailureCause(cause));
        }
        resp
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `prefix` before its message (`jobs[3]: …`).
    pub(crate) fn prefixed(self, prefix: &str) -> Self {
        Self { message: format!("{prefix}: {}", self.message), ..self }
    }

    /// The store cannot take the change: 503, try again later.
    pub(crate) fn store_unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", CoordError::STORE_UNAVAILABLE)
    }

    pub(crate) fn shutting_down() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", CoordError::STOPPED)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(cause) = self.cause {
            resp.extensions_mut().insert(FailureCause(cause));
        }
        resp
    }
}

/// Logs the cause of a server-side failure, once, where it is known: the
/// web port's front door calls it on every response (`origin.rs`).
pub(crate) fn log_failure(method: &Method, path: &str, resp: &Response) {
    if let Some(FailureCause(cause)) = resp.extensions().get::<FailureCause>() {
        tracing::error!(%method, %path, status = resp.status().as_u16(), error = %cause, "request failed");
    }
}

impl From<CoordError> for AppError {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::QueueFull(full) => Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", full.to_string()),
            CoordError::Refused(e @ SubmitError::Full(_)) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
            }
            CoordError::Refused(e @ SubmitError::Keys(_)) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "unique_keys_full", e.to_string())
            }
            CoordError::Refused(e @ SubmitError::Groups(_)) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "groups_full", e.to_string())
            }
            CoordError::Refused(e @ SubmitError::Settling(_)) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "parent_settling", e.to_string())
            }
            CoordError::Refused(e) => Self::bad_request("invalid_option", e.to_string()),
            CoordError::Schedule(e @ crate::engine::ScheduleError::Full) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "schedules_full", e.to_string())
            }
            CoordError::Schedule(e) => Self::bad_request("bad_schedule", e.to_string()),
            CoordError::Store(cause) => Self::store_unavailable().caused_by(cause),
            CoordError::Malformed(m) => Self::bad_request("bad_report", m),
            CoordError::Stopped => Self::shutting_down(),
            CoordError::Lease(l) => Self::new(StatusCode::CONFLICT, "conflict", l.to_string()),
            CoordError::Unmovable(u @ Unmovable::Running(_)) => {
                Self::new(StatusCode::CONFLICT, "running", u.to_string())
            }
            CoordError::Unmovable(u @ Unmovable::NotActive(_)) => {
                Self::new(StatusCode::CONFLICT, "already_finished", u.to_string())
            }
            CoordError::Unmovable(u @ Unmovable::TooManyChanges(_)) => {
                Self::new(StatusCode::CONFLICT, "too_many_changes", u.to_string())
            }
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the job store cannot be read right now")
            .caused_by(e)
    }
}

impl From<PoolError> for AppError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Invalid(m) => Self::bad_request("bad_source", m),
            e @ PoolError::Vanished => Self::new(StatusCode::CONFLICT, "source_removed", e.to_string()),
            e @ PoolError::Store(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "could not record this; try again later",
            )
            .caused_by(e),
        }
    }
}

impl From<ChangeError> for AppError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Invalid(_) => Self::bad_request("invalid_setting", e.to_string()),
            ChangeError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "version_conflict", e.to_string()),
            ChangeError::Store(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the configuration cannot be stored right now",
            )
            .caused_by(e),
        }
    }
}

/// A JSON body, or a 400 that says where it went wrong.
pub(crate) fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AppError> {
    let bytes = body.map_err(|e| AppError::new(e.status(), "bad_body", e.body_text()))?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!(" at {path}") };
        AppError::bad_request("bad_json", format!("request body{at}: {}", e.into_inner()))
    })
}
