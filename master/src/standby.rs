//! A standby master: while another master leads the shared store, this
//! one answers `/healthz` itself (`role: standby`) and serves its own
//! Stratum miners with a follower pool ([`crate::pool::follower`]); it
//! forwards everything else to the leader ([`crate::forward`]) — REST, the
//! page and Socket.IO request by request, gRPC connection by connection —
//! so no client needs to know which master leads.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use faena_proto::lease::Holder;
use faena_proto::secret::Secret;

use crate::forward::{self, Forward, MAX_FORWARDED, Nowhere, Pipe, Target};
use crate::http::listen::{PeerAddr, WebListener};

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
    pool: Option<crate::pool::Pool>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) {
    let source = leader.clone();
    let to = move |pick: fn(&Holder) -> Option<String>| -> Target {
        let leader = source.clone();
        Arc::new(move |_| leader.borrow().as_ref().and_then(pick))
    };
    let grpc = Pipe { target: to(|h| Some(h.grpc.clone())), limit: MAX_FORWARDED, preface: None };
    tasks.spawn(forward::pipe(ports.grpc, grpc, stop.clone(), tasks.clone()));
    let stratum_port = ports.stratum.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
    if let (Some(stratum), Some(pool)) = (ports.stratum, pool) {
        tasks.spawn(crate::pool::stratum::serve(stratum, pool, tasks.clone(), stop.clone()));
    }
    let nowhere =
        Nowhere { code: "no_leader", message: "no master leads yet (a takeover is under way); try again in a moment" };
    let state = Forward::new(to(|h| Some(h.http.clone())), nowhere, token, stop.clone());
    let watching = leader.clone();
    let health = get(move || healthz(watching.clone(), stratum_port));
    let app = axum::Router::new().route("/healthz", health).fallback(forward::forward).with_state(state);
    let http = ports.http;
    let tls_leader = to(|h| h.web_tls.then(|| h.http.clone()));
    let pipes = tasks.clone();
    tasks.spawn(async move {
        // A leader that serves HTTPS is reached connection by connection:
        // its certificate answers the client, not this standby.
        if tls_leader(std::net::Ipv4Addr::UNSPECIFIED.into()).is_some() {
            let to = Pipe { target: to(|h| Some(h.http.clone())), limit: MAX_FORWARDED, preface: None };
            return forward::pipe(http, to, stop, pipes).await;
        }
        let app = app.into_make_service_with_connect_info::<PeerAddr>();
        let served = axum::serve(WebListener::Plain(http), app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the standby's web port failed");
        }
    });
}

/// A standby is healthy while it stands by: it says so, who leads, and
/// where its miners connect (the edge spreads them over the masters).
async fn healthz(leader: watch::Receiver<Option<Holder>>, stratum_port: Option<u16>) -> Response {
    let leader = leader.borrow().as_ref().map(|h| h.name().to_owned());
    let body = json!({"status": "ok", "role": "standby", "leader": leader, "stratum_port": stratum_port});
    (StatusCode::OK, axum::Json(body)).into_response()
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
    fn the_advertised_address_is_the_given_host_or_the_bound_ip() {
        let bound: SocketAddr = "127.0.0.3:8888".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(advertised(None, bound), "127.0.0.3:8888");
        assert_eq!(advertised(Some("master-2"), bound), "master-2:8888");
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap_or_else(|_| unreachable!());
        assert!(advertised(None, any).ends_with(":50051"));
    }
}
