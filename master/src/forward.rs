//! Passing clients on to another master: a standby to its leader, the
//! edge to a master. REST, the page and Socket.IO go request by request
//! ([`Forward`]; WebSocket upgrades joined end to end), gRPC and Stratum
//! connection by connection ([`Pipe`]). The client's address goes with
//! them, signed with the cluster token: in a header on requests
//! ([`CLIENT_HEADER`]), in a first line on Stratum connections
//! ([`FORWARDED_PREFACE`]); the master that serves the client believes it
//! only with the cluster's signature.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use faena_common::signing::{vouch, vouched};
use faena_proto::api::CLIENT_HEADER;
use faena_proto::secret::Secret;
use faena_proto::stratum::FORWARDED_PREFACE;

use crate::http::AppError;
use crate::http::listen::PeerAddr;

/// Connections a forwarder passes on at once on each port; beyond, new
/// ones are closed as they come (the serving master's own limits still
/// apply to all).
pub const MAX_FORWARDED: usize = 4_096;

/// How long a forwarder waits for the master to take a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a forwarder sends what it takes now from a client at the given
/// address (`host:port`); none while there is nowhere to send it.
pub(crate) type Target = Arc<dyn Fn(IpAddr) -> Option<String> + Send + Sync>;

/// The address a request comes from: the one a forwarder before this one
/// vouched for, else the peer's own.
pub fn client_of(token: &Secret, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    headers.get(CLIENT_HEADER).and_then(|h| h.to_str().ok()).and_then(|h| vouched(token, h)).unwrap_or(peer)
}

/// The Stratum preface line for `client`.
pub fn stratum_preface(token: &Secret, client: IpAddr) -> String {
    format!("{FORWARDED_PREFACE}{}\n", vouch(token, client))
}

/// The way to a master, connection by connection: where to, how many at
/// once (beyond, new connections are closed as they come), and, for
/// Stratum, the token that signs each client's address in a preface.
pub(crate) struct Pipe {
    pub target: Target,
    pub limit: usize,
    pub preface: Option<Arc<Secret>>,
}

/// Forwards each connection `listener` takes to `target(client)`, byte for byte.
pub(crate) async fn pipe(listener: TcpListener, to: Pipe, stop: CancellationToken, tasks: TaskTracker) {
    let Pipe { target, limit, preface } = to;
    let busy = Arc::new(Semaphore::new(limit));
    loop {
        let (mut inbound, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let (Some(to), Ok(permit)) = (target(peer.ip()), busy.clone().try_acquire_owned()) else { continue };
        let stop = stop.clone();
        let first = preface.as_ref().map(|token| stratum_preface(token, peer.ip()));
        tasks.spawn(async move {
            let _permit = permit;
            let Ok(Ok(mut up)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&to)).await else { return };
            let _ = (inbound.set_nodelay(true), up.set_nodelay(true));
            if let Some(line) = first
                && up.write_all(line.as_bytes()).await.is_err()
            {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut up) => {}
            }
        });
    }
}

/// The connector to a master: no Nagle (an event stream's small writes
/// would otherwise wait for the delayed ACK, 40 ms a step).
fn connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(CONNECT_TIMEOUT));
    c
}

/// What a forwarder answers while it has nowhere to send a request.
#[derive(Debug, Clone, Copy)]
pub struct Nowhere {
    pub code: &'static str,
    pub message: &'static str,
}

/// Request-by-request forwarding to `target(client)` (plain HTTP).
#[derive(Clone)]
pub(crate) struct Forward {
    target: Target,
    nowhere: Nowhere,
    client: Client<HttpConnector, Body>,
    busy: Arc<Semaphore>,
    /// Cancelled when what is forwarded would go to a master that is gone
    /// (a standby that takes the lead).
    stop: CancellationToken,
    /// Signs the client's address for the master that serves it.
    token: Arc<Secret>,
}

impl Forward {
    pub(crate) fn new(target: Target, nowhere: Nowhere, token: Arc<Secret>, stop: CancellationToken) -> Self {
        let client = Client::builder(TokioExecutor::new()).build(connector());
        Self { target, nowhere, client, busy: Arc::new(Semaphore::new(MAX_FORWARDED)), stop, token }
    }
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

/// Sends the request on to the target and its answer back; an upgrade
/// (Socket.IO's WebSocket) is joined end to end once both sides switch.
pub(crate) async fn forward(
    State(s): State<Forward>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    mut req: Request,
) -> Response {
    if s.stop.is_cancelled() {
        return moved();
    }
    let client = client_of(&s.token, req.headers(), peer.0.ip());
    let Some(to) = (s.target)(client) else {
        return try_again(s.nowhere.code, s.nowhere.message);
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
    let Ok(uri) = format!("http://{to}{path}").parse::<Uri>() else {
        return AppError::new(StatusCode::BAD_REQUEST, "bad_request", "the request's path cannot be forwarded")
            .into_response();
    };
    let upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
    *req.uri_mut() = uri;
    req.headers_mut().remove(CLIENT_HEADER);
    if let Ok(v) = HeaderValue::from_str(&vouch(&s.token, client)) {
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
        Err(e) if e.is_connect() => {
            tracing::warn!(master = %to, error = %e, "could not reach the master to forward a request to");
            // Nothing was sent: asked again in a moment, it reaches the
            // next leader (a takeover is coming, as with no leader).
            try_again(
                "leader_unreachable",
                "the leading master did not answer (a takeover may be under way); try again in a moment",
            )
        }
        Err(e) => {
            tracing::warn!(master = %to, error = %e, "the master went away while it handled a forwarded request");
            // Sent, and perhaps done: the client looks before asking again.
            try_again("leader_lost", "the leading master went away while it handled the request; it may have been done")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::SocketAddr;
    use tokio::io::AsyncReadExt;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    async fn bound() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let at = l.local_addr().unwrap_or_else(|e| panic!("addr: {e}")).to_string();
        (l, at)
    }

    const NO_LEADER: Nowhere = Nowhere { code: "no_leader", message: "no master leads yet" };

    /// With nowhere to go, or a master that does not answer, a forwarder
    /// says to ask again in a moment (`503`, `Retry-After: 1`).
    #[tokio::test]
    async fn a_forwarder_without_a_reachable_master_says_to_try_again() {
        let (gone, http) = bound().await;
        drop(gone);
        let (tx, rx) = tokio::sync::watch::channel(None::<String>);
        let target: Target = Arc::new(move |_| rx.borrow().clone());
        let state = Forward::new(target, NO_LEADER, Arc::new(Secret::new("t")), CancellationToken::new());
        let peer = PeerAddr("127.0.0.5:4000".parse().unwrap_or_else(|_| unreachable!()));
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
        tx.send_replace(Some(http));
        assert_eq!(ask().await, (one, Some(json!("leader_unreachable"))));
    }

    /// A forwarder passes on at most its limit of connections at once; one
    /// more is closed as it comes, and is taken again once one ends.
    #[tokio::test]
    async fn a_forwarder_passes_on_no_more_connections_than_its_limit() {
        let (leader, to) = bound().await;
        // The master echoes one byte on each connection and holds it open.
        tokio::spawn(async move {
            while let Ok((mut c, _)) = leader.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while c.read_exact(&mut b).await.is_ok() && c.write_all(&b).await.is_ok() {}
                });
            }
        });
        let (listener, at) = bound().await;
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let target: Target = Arc::new(move |_| Some(to.clone()));
        tokio::spawn(pipe(listener, Pipe { target, limit: 1, preface: None }, stop.clone(), tasks.clone()));
        let echo = |mut c: TcpStream| async move {
            let mut b = [0u8; 1];
            let ok = c.write_all(b"x").await.is_ok() && matches!(c.read(&mut b).await, Ok(1));
            (ok, c)
        };
        let connect = || async { TcpStream::connect(&at).await.unwrap_or_else(|e| panic!("connect: {e}")) };
        let (ok, first) = echo(connect().await).await;
        assert!(ok, "the first connection reaches the master");
        let (ok, _second) = echo(connect().await).await;
        assert!(!ok, "a second one, over the limit, is closed");
        drop(first);
        // Its slot is free once the forwarder sees the first one end.
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

    /// A Stratum connection passed on starts with its client's signed
    /// address; then the miner's own bytes, untouched.
    #[tokio::test]
    async fn a_stratum_connection_passed_on_starts_with_its_clients_address() {
        let token = Arc::new(Secret::new("cluster-token"));
        let (master, to) = bound().await;
        let (listener, at) = bound().await;
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let target: Target = Arc::new(move |_| Some(to.clone()));
        let to = Pipe { target, limit: 4, preface: Some(token.clone()) };
        tokio::spawn(pipe(listener, to, stop.clone(), tasks.clone()));
        let miner = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
        miner.bind("127.0.0.7:0".parse().unwrap_or_else(|_| unreachable!())).unwrap_or_else(|e| panic!("bind: {e}"));
        let at: SocketAddr = at.parse().unwrap_or_else(|_| unreachable!());
        let mut miner = miner.connect(at).await.unwrap_or_else(|e| panic!("connect: {e}"));
        miner.write_all(b"{\"method\":\"login\"}\n").await.unwrap_or_else(|e| panic!("write: {e}"));
        let (mut seen, _) = master.accept().await.unwrap_or_else(|e| panic!("accept: {e}"));
        let want = format!("{}{{\"method\":\"login\"}}\n", stratum_preface(&token, ip("127.0.0.7")));
        let mut got = vec![0u8; want.len()];
        seen.read_exact(&mut got).await.unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), want);
        let signed = want.strip_prefix(FORWARDED_PREFACE).and_then(|l| l.lines().next()).unwrap_or_default();
        assert_eq!(vouched(&token, signed), Some(ip("127.0.0.7")));
        stop.cancel();
    }

    /// The address a forwarder signs is its client's: the peer's own, or the
    /// one an earlier forwarder (the edge before a standby) signed.
    #[test]
    fn a_chain_of_forwarders_keeps_the_first_ones_client() {
        let token = Secret::new("cluster-token");
        let mut headers = HeaderMap::new();
        let edge = ip("127.0.0.2");
        assert_eq!(client_of(&token, &headers, edge), edge);
        let signed = HeaderValue::from_str(&vouch(&token, ip("127.0.0.9"))).unwrap_or_else(|_| unreachable!());
        headers.insert(CLIENT_HEADER, signed);
        assert_eq!(client_of(&token, &headers, edge), ip("127.0.0.9"));
        let forged = vouch(&Secret::new("another"), ip("127.0.0.9"));
        headers.insert(CLIENT_HEADER, HeaderValue::from_str(&forged).unwrap_or_else(|_| unreachable!()));
        assert_eq!(client_of(&token, &headers, edge), edge);
    }

    /// The master counts a forwarded client by the address its forwarder
    /// vouched for, and a client that claims one itself by its own.
    #[tokio::test]
    async fn a_forwarded_client_is_known_by_the_address_its_forwarder_signed() {
        let token = Arc::new(Secret::new("cluster-token"));
        let seen = |ConnectInfo(PeerAddr(addr)): ConnectInfo<PeerAddr>, headers: HeaderMap| async move {
            format!("{} {}", addr.ip(), headers.contains_key(CLIENT_HEADER))
        };
        let app = axum::Router::new()
            .route("/", axum::routing::get(seen))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(crate::http::origin::FrontDoor::new(token.clone(), Default::default(), Default::default())),
                crate::http::origin::front_door,
            ))
            .into_make_service_with_connect_info::<PeerAddr>();
        let (listener, addr) = bound().await;
        let listener = crate::http::listen::WebListener::Plain(listener);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let ask = |header: Option<String>| {
            let addr = addr.clone();
            async move {
                let mut req = faena_common::tls::http_client().build().expect("client").get(format!("http://{addr}/"));
                if let Some(h) = header {
                    req = req.header(CLIENT_HEADER, h);
                }
                req.send().await.unwrap_or_else(|e| panic!("GET: {e}")).text().await.unwrap_or_default()
            }
        };
        let client = ip("127.0.0.9");
        assert_eq!(ask(None).await, "127.0.0.1 false");
        assert_eq!(ask(Some(vouch(&token, client))).await, "127.0.0.9 false");
        let forged = vouch(&Secret::new("another"), client);
        assert_eq!(ask(Some(forged)).await, "127.0.0.1 false");
        assert_eq!(ask(Some("127.0.0.9".into())).await, "127.0.0.1 false");
    }
}
