//! A standby master: while another master leads the shared store, this
//! one answers `/healthz` itself (`role: standby`) and forwards everything
//! else to the leader — REST, the page and Socket.IO (WebSocket upgrades
//! included) request by request, gRPC and Stratum connection by
//! connection — so no client needs to know which master leads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use faena_proto::secret::Secret;

use crate::http::AppError;
use crate::http::listen::PeerAddr;

/// The header in which a standby tells the leader whose request it
/// forwards (`faena_common::signing::vouch`); the leader believes it only
/// with the cluster's signature, and drops it from every request.
pub const CLIENT_HEADER: &str = "x-faena-client";

/// What a leader says of itself in the store's lease: where the other
/// masters forward to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Where it serves the web; also its name ([`Holder::name`]).
    pub http: String,
    pub grpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratum: Option<String>,
    /// Its web port speaks HTTPS: forwarded connection by connection.
    #[serde(default)]
    pub web_tls: bool,
}

impl Holder {
    /// Its name in logs, `/healthz` and the lease: the address it serves
    /// the web on, which no other live master can have. A master started
    /// again on the same address takes its own lease back at once.
    pub fn name(&self) -> &str {
        &self.http
    }

    /// The lease's `holder` column as written by [`Holder::to_string`];
    /// none for anything else (no master led yet).
    pub fn parse(column: Option<&str>) -> Option<Self> {
        serde_json::from_str(column?).ok()
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// Connections a standby forwards at once on each port; beyond, new ones
/// are closed as they come (the leader's own limits still apply to all).
pub const MAX_FORWARDED: usize = 4_096;

/// How long a standby waits for the leader to take a forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The ports a standby forwards, and where to.
#[derive(Debug)]
pub struct Ports {
    pub http: TcpListener,
    pub grpc: TcpListener,
    pub stratum: Option<TcpListener>,
}

/// Serves as a standby on `ports` until `stop`: `leader` says where the
/// current leader is (none while nobody leads).
pub fn serve(
    ports: Ports,
    leader: watch::Receiver<Option<Holder>>,
    token: Arc<Secret>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) {
    let source = leader.clone();
    let to = move |pick: fn(&Holder) -> Option<String>| {
        let leader = source.clone();
        move || leader.borrow().as_ref().and_then(pick)
    };
    let pipe_to = |target| Pipe { target, limit: MAX_FORWARDED };
    tasks.spawn(pipe(ports.grpc, pipe_to(to(|h| Some(h.grpc.clone()))), stop.clone(), tasks.clone()));
    if let Some(stratum) = ports.stratum {
        tasks.spawn(pipe(stratum, pipe_to(to(|h| h.stratum.clone())), stop.clone(), tasks.clone()));
    }
    let state = Forward {
        leader: leader.clone(),
        client: Client::builder(TokioExecutor::new()).build(connector()),
        busy: Arc::new(Semaphore::new(MAX_FORWARDED)),
        stop: stop.clone(),
        token,
    };
    let app = axum::Router::new().route("/healthz", get(healthz)).fallback(forward).with_state(state);
    let http = ports.http;
    let tls_leader = to(|h| h.web_tls.then(|| h.http.clone()));
    let plain = stop.clone();
    let pipes = tasks.clone();
    tasks.spawn(async move {
        // A leader that serves HTTPS is reached connection by connection:
        // its certificate answers the client, not this standby.
        if tls_leader().is_some() {
            return pipe(http, Pipe { target: to(|h| Some(h.http.clone())), limit: MAX_FORWARDED }, plain, pipes).await;
        }
        use axum::serve::ListenerExt;
        let http = http.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(http, app).with_graceful_shutdown(plain.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the standby's web port failed");
        }
    });
}

/// The connector to the leader: no Nagle (an event stream's small writes
/// would otherwise wait for the delayed ACK, 40 ms a step).
fn connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(CONNECT_TIMEOUT));
    c
}

/// The way to a leader, connection by connection: where to, and how many
/// at once (beyond, new connections are closed as they come).
struct Pipe<F> {
    target: F,
    limit: usize,
}

/// Forwards each connection `listener` takes to `target()`, byte for byte.
async fn pipe(
    listener: TcpListener,
    to: Pipe<impl Fn() -> Option<String>>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let Pipe { target, limit } = to;
    let busy = Arc::new(Semaphore::new(limit));
    loop {
        let (mut inbound, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let (Some(to), Ok(permit)) = (target(), busy.clone().try_acquire_owned()) else { continue };
        let stop = stop.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let Ok(Ok(mut up)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&to)).await else { return };
            let _ = (inbound.set_nodelay(true), up.set_nodelay(true));
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut up) => {}
            }
        });
    }
}

#[derive(Clone)]
struct Forward {
    leader: watch::Receiver<Option<Holder>>,
    client: Client<HttpConnector, Body>,
    busy: Arc<Semaphore>,
    /// Cancelled when this master takes the lead: what it still forwards
    /// would go to a leader that is gone.
    stop: CancellationToken,
    /// Signs the client's address for the leader.
    token: Arc<Secret>,
}

/// `503` with `Retry-After: 1`: a takeover is under way or to come, and
/// asked again in a moment the client reaches the next leader.
fn try_again(code: &'static str, message: &'static str) -> Response {
    let mut resp = AppError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The answer to a request caught by a takeover: the client asks again,
/// on a new connection, and reaches the new leader.
fn moved() -> Response {
    let mut resp = try_again("leader_changed", "the lead moved to another master; try again");
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A standby is healthy while it stands by: it says so, and who leads.
async fn healthz(State(s): State<Forward>) -> Response {
    let leader = s.leader.borrow().as_ref().map(|h| h.name().to_owned());
    (StatusCode::OK, axum::Json(json!({"status": "ok", "role": "standby", "leader": leader}))).into_response()
}

/// Sends the request on to the leader and its answer back; an upgrade
/// (Socket.IO's WebSocket) is joined end to end once both sides switch.
async fn forward(State(s): State<Forward>, ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request) -> Response {
    if s.stop.is_cancelled() {
        return moved();
    }
    let Some(leader) = s.leader.borrow().clone() else {
        return try_again("no_leader", "no master leads yet (a takeover is under way); try again in a moment");
    };
    let Ok(permit) = s.busy.clone().try_acquire_owned() else {
        return AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "this master forwards too many requests at once",
        )
        .into_response();
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{}{path}", leader.http).parse::<Uri>() else {
        return AppError::new(StatusCode::BAD_REQUEST, "bad_request", "the request's path cannot be forwarded")
            .into_response();
    };
    let upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
    *req.uri_mut() = uri;
    let vouched = HeaderValue::from_str(&faena_common::signing::vouch(&s.token, peer.ip()));
    req.headers_mut().remove(CLIENT_HEADER);
    if let Ok(v) = vouched {
        req.headers_mut().insert(CLIENT_HEADER, v);
    }
    let answer = tokio::select! {
        answer = s.client.request(req) => answer,
        () = s.stop.cancelled() => return moved(),
    };
    match answer {
        Ok(mut resp) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client) = upgrade
            {
                let upstream = hyper::upgrade::on(&mut resp);
                let stop = s.stop.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let (Ok(a), Ok(b)) = (client.await, upstream.await) {
                        let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                        tokio::select! {
                            () = stop.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        }
                    }
                });
            }
            resp.map(Body::new)
        }
        Err(e) => {
            tracing::warn!(leader = %leader.name(), error = %e, "could not forward a request to the leader");
            // The leader gone is a takeover to come (as with `no_leader`).
            try_again(
                "leader_unreachable",
                "the leading master did not answer (a takeover may be under way); try again in a moment",
            )
        }
    }
}

/// On the leader: a request a standby forwarded carries its client's
/// address, signed ([`CLIENT_HEADER`]); the per-address limits (the page's
/// Socket.IO) then count that client. The header is dropped from every
/// request, signed or not: a client cannot claim an address.
pub async fn vouched_client(
    State(token): State<Arc<Secret>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(header) = req.headers_mut().remove(CLIENT_HEADER) {
        let client = header.to_str().ok().and_then(|h| faena_common::signing::vouched(&token, h));
        if let Some(ip) = client {
            req.extensions_mut().insert(ConnectInfo(PeerAddr(SocketAddr::new(ip, 0))));
        }
    }
    next.run(req).await
}

/// The address other masters reach this one's `port` at: `advertise`
/// when given, the bound IP when it is a specific one, else this
/// machine's name as it resolves here (a Swarm task's own address).
pub fn advertised(advertise: Option<&str>, bound: SocketAddr) -> String {
    let host = match advertise {
        Some(h) => h.to_owned(),
        None if !bound.ip().is_unspecified() => bound.ip().to_string(),
        None => own_address().unwrap_or_else(|| "127.0.0.1".to_owned()),
    };
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", bound.port()),
        _ => format!("{host}:{}", bound.port()),
    }
}

fn own_address() -> Option<String> {
    use std::net::ToSocketAddrs;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let addr = (name.trim(), 0).to_socket_addrs().ok()?.find(|a| !a.ip().is_loopback())?;
    Some(addr.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_reads_back_what_it_wrote_and_nothing_else() {
        let h = Holder { http: "10.0.0.5:8888".into(), grpc: "10.0.0.5:50051".into(), stratum: None, web_tls: false };
        assert_eq!(Holder::parse(Some(&h.to_string())), Some(h));
        assert_eq!(Holder::parse(None), None);
        assert_eq!(Holder::parse(Some("a master of an older build")), None);
    }

    /// With no leader, or one that does not answer, a standby says to ask
    /// again in a moment (`503`, `Retry-After: 1`): a takeover is coming.
    #[tokio::test]
    async fn a_standby_without_a_reachable_leader_says_to_try_again() {
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let http = gone.local_addr().unwrap_or_else(|e| panic!("addr: {e}")).to_string();
        drop(gone);
        let holder = Holder { http, grpc: "127.0.0.1:1".into(), stratum: None, web_tls: false };
        let (tx, rx) = watch::channel(None);
        let state = Forward {
            leader: rx,
            client: Client::builder(TokioExecutor::new()).build(connector()),
            busy: Arc::new(Semaphore::new(1)),
            stop: CancellationToken::new(),
            token: Arc::new(Secret::new("t")),
        };
        let peer: SocketAddr = "127.0.0.5:4000".parse().unwrap_or_else(|_| unreachable!());
        let ask = || async {
            let req = Request::builder().uri("/api/jobs").body(Body::empty()).unwrap_or_else(|_| unreachable!());
            let resp = forward(State(state.clone()), ConnectInfo(peer), req).await;
            let retry = resp.headers().get(header::RETRY_AFTER).cloned();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap_or_default();
            let code = serde_json::from_slice::<serde_json::Value>(&body).ok().map(|v| v["error"]["code"].clone());
            (retry, code)
        };
        let one = Some(HeaderValue::from_static("1"));
        assert_eq!(ask().await, (one.clone(), Some(json!("no_leader"))));
        tx.send_replace(Some(holder));
        assert_eq!(ask().await, (one, Some(json!("leader_unreachable"))));
    }

    /// A standby forwards at most its limit of connections at once; one
    /// more is closed as it comes, and is taken again once one ends.
    #[tokio::test]
    async fn a_standby_forwards_no_more_connections_than_its_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let leader = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let to = leader.local_addr().unwrap_or_else(|e| panic!("addr: {e}")).to_string();
        // The leader echoes one byte on each connection and holds it open.
        tokio::spawn(async move {
            while let Ok((mut c, _)) = leader.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while c.read_exact(&mut b).await.is_ok() && c.write_all(&b).await.is_ok() {}
                });
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let at = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let target = move || Some(to.clone());
        tokio::spawn(pipe(listener, Pipe { target, limit: 1 }, stop.clone(), tasks.clone()));
        let echo = |mut c: TcpStream| async move {
            let mut b = [0u8; 1];
            let ok = c.write_all(b"x").await.is_ok() && matches!(c.read(&mut b).await, Ok(1));
            (ok, c)
        };
        let connect = || async { TcpStream::connect(at).await.unwrap_or_else(|e| panic!("connect: {e}")) };
        let (ok, first) = echo(connect().await).await;
        assert!(ok, "the first connection reaches the leader");
        let (ok, _second) = echo(connect().await).await;
        assert!(!ok, "a second one, over the limit, is closed");
        drop(first);
        // Its slot is free once the standby sees the first one end.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if echo(connect().await).await.0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the slot never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
    }

    /// The leader counts a forwarded client by the address its standby
    /// vouched for, and a client that claims one itself by its own.
    #[tokio::test]
    async fn a_forwarded_client_is_known_by_the_address_its_standby_signed() {
        let token = Arc::new(Secret::new("cluster-token"));
        let seen = |ConnectInfo(PeerAddr(addr)): ConnectInfo<PeerAddr>, headers: axum::http::HeaderMap| async move {
            format!("{} {}", addr.ip(), headers.contains_key(CLIENT_HEADER))
        };
        let app = axum::Router::new()
            .route("/", get(seen))
            .layer(axum::middleware::from_fn_with_state(token.clone(), vouched_client))
            .into_make_service_with_connect_info::<PeerAddr>();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
        let listener = crate::http::listen::WebListener::Plain(listener);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let ask = |header: Option<String>| async move {
            let mut req = reqwest::Client::new().get(format!("http://{addr}/"));
            if let Some(h) = header {
                req = req.header(CLIENT_HEADER, h);
            }
            req.send().await.unwrap_or_else(|e| panic!("GET: {e}")).text().await.unwrap_or_default()
        };
        let client: std::net::IpAddr = "127.0.0.9".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(ask(None).await, "127.0.0.1 false");
        assert_eq!(ask(Some(faena_common::signing::vouch(&token, client))).await, "127.0.0.9 false");
        let forged = faena_common::signing::vouch(&Secret::new("another"), client);
        assert_eq!(ask(Some(forged)).await, "127.0.0.1 false");
        assert_eq!(ask(Some("127.0.0.9".into())).await, "127.0.0.1 false");
    }

    #[test]
    fn the_advertised_address_is_the_given_host_or_the_bound_ip() {
        let bound: SocketAddr = "127.0.0.3:8888".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(advertised(None, bound), "127.0.0.3:8888");
        assert_eq!(advertised(Some("master-2"), bound), "master-2:8888");
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap_or_else(|_| unreachable!());
        assert!(advertised(None, any).ends_with(":50051"));
    }
}
