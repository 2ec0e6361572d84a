//! `/internal/pool/*`: what the other masters' follower pools ask of the
//! leader ([`crate::pool::replicas`]) — the work feed, miners' seats,
//! shares for upstream and reports of what they counted. Only for the
//! cluster's masters: each request carries the peer key the cluster token
//! derives ([`PEER_HEADER`]); anyone else gets 401 and nothing else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use faena_proto::secret::Secret;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AppError, parse_body};
use crate::pool::Pool;
use crate::pool::follower::PEER_HEADER;
use crate::pool::replicas::{FeedLine, Found, Hello, Refused, Report, SeatAt};

/// How often the feed says the leader is there when nothing changes
/// (well inside [`crate::pool::follower::FEED_SILENCE`]).
const ALIVE_EVERY: Duration = Duration::from_secs(5);

/// Most bytes in a request: a report of a busy follower's miners.
const MAX_BODY: usize = 16 << 20;

/// Longest name a follower may give itself (its advertised web address).
const MAX_NAME: usize = 256;

#[derive(Debug, Clone)]
struct Leader {
    pool: Pool,
    /// The web server stopping: open feeds end with it.
    stop: CancellationToken,
}

/// The routes, behind the peer key `token` derives.
pub fn routes(pool: Pool, token: Arc<Secret>, stop: CancellationToken) -> Router {
    Router::new()
        .route("/internal/pool/feed", post(feed))
        .route("/internal/pool/seats", post(seat))
        .route("/internal/pool/seats/release", post(release))
        .route("/internal/pool/found", post(found))
        .route("/internal/pool/report", post(report))
        .route_layer(axum::middleware::from_fn_with_state(token, require_peer))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Leader { pool, stop })
}

async fn require_peer(State(token): State<Arc<Secret>>, req: Request, next: Next) -> Response {
    let given = req.headers().get(PEER_HEADER).and_then(|v| v.to_str().ok());
    match given {
        Some(key) if faena_common::signing::is_peer_key(&token, key) => next.run(req).await,
        _ => AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", "only the cluster's masters call these")
            .into_response(),
    }
}

impl From<Refused> for AppError {
    fn from(e: Refused) -> Self {
        let (status, code) = match &e {
            Refused::TooMany => (StatusCode::SERVICE_UNAVAILABLE, "too_many_replicas"),
            Refused::NoFeed => (StatusCode::CONFLICT, "no_feed"),
            Refused::NoSeat(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_seat"),
            Refused::NoTemplate { .. } => (StatusCode::NOT_FOUND, "no_template"),
            Refused::NotUpstream => (StatusCode::BAD_REQUEST, "not_upstream"),
        };
        AppError::new(status, code, e.to_string())
    }
}

fn named(replica: &str) -> Result<(), AppError> {
    if replica.is_empty() || replica.len() > MAX_NAME {
        return Err(AppError::bad_request("bad_replica", format!("a master's name is 1..={MAX_NAME} bytes")));
    }
    Ok(())
}

/// Frees a follower's seats when its feed closes.
struct Leave {
    pool: Pool,
    replica: String,
    generation: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.pool.replica_left(&self.replica, self.generation);
        tracing::info!(replica = %self.replica, "a master stopped following the pool");
    }
}

fn line(l: &FeedLine) -> Bytes {
    let mut out = serde_json::to_vec(l).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// The feed: the seats the follower lost, then every source's work now
/// and each time it changes, newline-delimited JSON, for as long as the
/// follower reads.
async fn feed(State(leader): State<Leader>, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let hello: Hello = parse_body(body)?;
    named(&hello.replica)?;
    let (generation, refused) = leader.pool.replica_joined(&hello)?;
    tracing::info!(replica = %hello.replica, lost = refused.len(), "a master follows the pool");
    let leave = Leave { pool: leader.pool.clone(), replica: hello.replica, generation };
    let first = Some(line(&FeedLine::Refused { seats: refused }));
    let mut fed = leader.pool.fed();
    fed.mark_changed();
    let state = (leave, fed, leader.stop, first);
    let lines = futures::stream::unfold(state, |(leave, mut fed, stop, first)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (leave, fed, stop, None)));
        }
        let next = tokio::select! {
            () = stop.cancelled() => return None,
            changed = fed.changed() => match changed {
                Ok(()) => line(&FeedLine::Work { sources: work(&leave.pool, &mut fed) }),
                Err(_) => return None,
            },
            () = tokio::time::sleep(ALIVE_EVERY) => line(&FeedLine::Alive),
        };
        Some((Ok(next), (leave, fed, stop, None)))
    });
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(lines))
        .map_err(|e| {
            AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "could not open the feed").caused_by(e)
        })?;
    Ok(resp)
}

fn work(pool: &Pool, fed: &mut watch::Receiver<u64>) -> Vec<crate::pool::replicas::Mirror> {
    fed.borrow_and_update();
    pool.mirrors()
}

async fn seat(State(leader): State<Leader>, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let hello: Hello = parse_body(body)?;
    named(&hello.replica)?;
    Ok(Json(leader.pool.replica_seat(&hello.replica)?).into_response())
}

#[derive(Debug, Deserialize)]
struct Release {
    replica: String,
    seat: SeatAt,
}

async fn release(State(leader): State<Leader>, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let r: Release = parse_body(body)?;
    leader.pool.replica_release(&r.replica, &r.seat);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn found(State(leader): State<Leader>, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let f: Found = parse_body(body)?;
    leader.pool.found(&f)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn report(State(leader): State<Leader>, body: Result<Bytes, BytesRejection>) -> Result<Response, AppError> {
    let r: Report = parse_body(body)?;
    named(&r.replica)?;
    leader.pool.merge(&r);
    Ok(StatusCode::NO_CONTENT.into_response())
}
