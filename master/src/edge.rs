//! The edge (`faena-edge`): the public web and Stratum ports of a cluster
//! of masters. Swarm publishes a port on a node once, in host mode (so
//! the client's address is seen); several masters, and a rolling update
//! that starts the new one first, cannot all hold it. The edge does, and
//! passes each client on to a master ([`crate::forward`]) with its address
//! signed by the cluster token, so the per-address limits and bans of the
//! web and Stratum count the client, not the edge.
//!
//! It asks every master's `/healthz` who leads, every
//! `FAENA_EDGE_CHECK_MS`: requests go to the leader (saving a standby's
//! hop), or, while none leads, to a master that answers (which says to try
//! again in a moment); miners are dealt out over every master's Stratum
//! port in turn (each master verifies its own miners' shares). A name in
//! `FAENA_EDGE_MASTERS` that resolves to several addresses (a Swarm
//! service with `endpoint_mode: dnsrr`) names each of them. The edge keeps
//! no state: any number can run (one per node), and one restarted loses
//! only the connections it carried.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use faena_common::args::ClusterToken;

use crate::forward::{self, Forward, MAX_FORWARDED, Nowhere, Pipe, Target};
use crate::http::listen::{PeerAddr, TlsListener, WebListener};

/// The most master addresses the edge keeps track of (what its names
/// resolve to, all together).
pub const MAX_MASTERS: usize = 64;

/// How long a master has to answer `/healthz`.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Parser)]
#[command(
    name = "faena-edge",
    version,
    about = "Faena's edge: the public web and Stratum ports of a cluster of masters, passed on to them"
)]
pub struct EdgeConfig {
    /// Where the web (REST, the page, Socket.IO) is served.
    #[arg(long, env = "FAENA_HTTP_ADDR", default_value = "127.0.0.1:8888")]
    pub http_addr: SocketAddr,
    /// Serve the web over HTTPS/WSS with FAENA_TLS_CERT_FILE and
    /// FAENA_TLS_KEY_FILE; the masters behind serve plain HTTP.
    #[arg(long, env = "FAENA_WEB_TLS", default_value_t = false)]
    pub web_tls: bool,
    /// Where miners connect, when the masters run Stratum.
    #[arg(long, env = "FAENA_STRATUM_ADDR")]
    pub stratum_addr: Option<SocketAddr>,
    /// The masters' web addresses, `host:port`, comma-separated; a name
    /// that resolves to several addresses names them all.
    #[arg(long, env = "FAENA_EDGE_MASTERS", value_delimiter = ',', default_value = "master:8888")]
    pub masters: Vec<String>,
    /// How often the masters are asked who leads.
    #[arg(long, env = "FAENA_EDGE_CHECK_MS", default_value_t = 500)]
    pub check_ms: u64,
    /// Signs each client's address for the masters (required).
    #[command(flatten)]
    pub token: ClusterToken,
    #[command(flatten)]
    pub tls: faena_common::tls::TlsArgs,
    /// Log JSON lines on stderr instead of text.
    #[arg(long, env = "FAENA_LOG_JSON")]
    pub log_json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Secret(#[from] faena_common::secrets::SecretError),
    #[error(transparent)]
    Tls(#[from] faena_common::tls::TlsError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Where the edge serves, said on its ready line.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeAddrs {
    pub http: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stratum: Option<SocketAddr>,
    pub role: &'static str,
}

/// One master as its `/healthz` last described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub web: SocketAddr,
    pub leader: bool,
    pub stratum: Option<SocketAddr>,
}

/// The masters that answered the last round, leader first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masters(pub Vec<Seen>);

impl Masters {
    /// Where a request goes: the leader, else any master that answers.
    pub fn web(&self) -> Option<SocketAddr> {
        self.0.first().map(|m| m.web)
    }

    /// Where a miner from `client` goes: each master verifies its own
    /// miners' shares, so miners are spread over every master with a
    /// Stratum port — by their address, so that one address's
    /// connections, and the caps, bans and budget that count them, stay on
    /// one master (the same one from every edge).
    pub fn stratum(&self, client: IpAddr) -> Option<SocketAddr> {
        let mut ports: Vec<SocketAddr> = self.0.iter().filter_map(|m| m.stratum).collect();
        ports.sort_unstable();
        let spread = match client {
            IpAddr::V4(ip) => u64::from(ip.to_bits()),
            IpAddr::V6(ip) => (ip.to_bits() >> 64) as u64 ^ ip.to_bits() as u64,
        };
        ports.get((spread.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % ports.len().max(1)).copied()
    }

    fn leader(&self) -> Option<SocketAddr> {
        self.0.first().filter(|m| m.leader).map(|m| m.web)
    }
}

/// Reads what a master's `/healthz` says of it (its status code aside: a
/// degraded leader still leads).
pub fn describe(web: SocketAddr, body: &serde_json::Value) -> Option<Seen> {
    let leader = match body.get("role")?.as_str()? {
        "leader" => true,
        "standby" => false,
        _ => return None,
    };
    let port = body.get("stratum_port").and_then(serde_json::Value::as_u64).and_then(|p| u16::try_from(p).ok());
    Some(Seen { web, leader, stratum: port.map(|p| SocketAddr::new(web.ip(), p)) })
}

/// Serves until `shutdown`; `on_ready` once its ports are bound and the
/// masters were asked a first time.
pub async fn run(
    cfg: EdgeConfig,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&EdgeAddrs),
) -> Result<(), EdgeError> {
    let token = cfg.token.resolve()?.ok_or_else(|| {
        EdgeError::Config("the edge signs clients' addresses for the masters: give FAENA_CLUSTER_TOKEN(_FILE)".into())
    })?;
    let token = Arc::new(token);
    if cfg.masters.is_empty() {
        return Err(EdgeError::Config("FAENA_EDGE_MASTERS names no master".into()));
    }
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| EdgeError::Io { what: format!("binding {addr}"), source })
    };
    let http = bind(cfg.http_addr).await?;
    let stratum = match cfg.stratum_addr {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let local =
        |l: &TcpListener| l.local_addr().map_err(|source| EdgeError::Io { what: "local address".into(), source });
    let addrs = EdgeAddrs { http: local(&http)?, stratum: stratum.as_ref().map(local).transpose()?, role: "edge" };
    let tls = if cfg.web_tls {
        Some(cfg.tls.server_config()?.ok_or(faena_common::tls::TlsError::HalfIdentity)?)
    } else {
        None
    };

    let tasks = TaskTracker::new();
    let (tx, masters) = watch::channel(Masters::default());
    let every = Duration::from_millis(cfg.check_ms.clamp(50, 60_000));
    let check = Check { names: cfg.masters.clone(), client: health_client(), tx };
    check.round().await;
    tasks.spawn(check.run(every, shutdown.clone()));

    let source = masters.clone();
    let to = move |pick: fn(&Masters) -> Option<SocketAddr>| -> Target {
        let masters = source.clone();
        Arc::new(move |_| pick(&masters.borrow()).map(|a| a.to_string()))
    };
    if let Some(stratum) = stratum {
        let masters = masters.clone();
        let target: Target = Arc::new(move |client| masters.borrow().stratum(client).map(|a| a.to_string()));
        let to = Pipe { target, limit: MAX_FORWARDED, preface: Some(token.clone()) };
        tasks.spawn(forward::pipe(stratum, to, shutdown.clone(), tasks.clone()));
    }
    let nowhere =
        Nowhere { code: "no_master", message: "no master answers (are they starting?); try again in a moment" };
    let state = Forward::new(to(Masters::web), nowhere, token, CancellationToken::new());
    let watching = masters.clone();
    let app = axum::Router::new()
        .route("/healthz/edge", get(move || healthz(watching.clone())))
        .fallback(forward::forward)
        .with_state(state)
        .into_make_service_with_connect_info::<PeerAddr>();
    let listener = match tls {
        Some(tls) => WebListener::Tls(TlsListener::new(http, &tls, &tasks, shutdown.clone())),
        None => WebListener::Plain(http),
    };
    tracing::info!(http = %addrs.http, stratum = ?addrs.stratum, masters = ?cfg.masters, "faena-edge ready");
    on_ready(&addrs);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    served.map_err(|source| EdgeError::Io { what: "serving the web".into(), source })
}

/// The edge is healthy while it serves: it says which masters answer and
/// which leads.
async fn healthz(masters: watch::Receiver<Masters>) -> Response {
    let m = masters.borrow().clone();
    let status = if m.leader().is_some() { "ok" } else { "no_leader" };
    let body = json!({"status": status, "role": "edge", "leader": m.leader(), "masters": m.0});
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn health_client() -> reqwest::Client {
    faena_common::tls::http_client().timeout(ASK_TIMEOUT).no_proxy().build().unwrap_or_default()
}

/// Asking the masters who leads.
struct Check {
    names: Vec<String>,
    client: reqwest::Client,
    tx: watch::Sender<Masters>,
}

impl Check {
    async fn run(self, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => self.round().await,
            }
        }
    }

    /// Resolves the names, asks each address, and publishes who answered.
    async fn round(&self) {
        let mut addrs = Vec::new();
        for name in &self.names {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(e) => tracing::debug!(master = %name, error = %e, "a master's name does not resolve (yet)"),
            }
        }
        addrs.sort();
        addrs.dedup();
        addrs.truncate(MAX_MASTERS);
        let asked = addrs.into_iter().map(|web| async move {
            let body = self.client.get(format!("http://{web}/healthz")).send().await.ok()?.json().await.ok()?;
            describe(web, &body)
        });
        let mut seen: Vec<Seen> = futures::future::join_all(asked).await.into_iter().flatten().collect();
        seen.sort_by_key(|m| (!m.leader, m.web));
        let now = Masters(seen);
        let before = self.tx.borrow().clone();
        if before.leader() != now.leader() || before.0.len() != now.0.len() {
            let standbys = now.0.iter().filter(|m| !m.leader).count();
            tracing::info!(leader = ?now.leader(), standbys, "the edge's masters changed");
        }
        self.tx.send_if_modified(|m| {
            let changed = *m != now;
            *m = now;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_masters_health_says_its_part_and_its_miners_port() {
        let web = at("10.0.0.5:8888");
        let leader = json!({"status": "degraded", "role": "leader", "epoch": 3, "stratum_port": 3333});
        assert_eq!(describe(web, &leader), Some(Seen { web, leader: true, stratum: Some(at("10.0.0.5:3333")) }));
        let standby = json!({"status": "ok", "role": "standby", "leader": null, "stratum_port": null});
        assert_eq!(describe(web, &standby), Some(Seen { web, leader: false, stratum: None }));
        assert_eq!(describe(web, &json!({"role": "edge"})), None);
        assert_eq!(describe(web, &json!({"status": "ok"})), None);
        assert_eq!(describe(web, &json!({"role": "leader", "stratum_port": 70_000})).and_then(|s| s.stratum), None);
    }

    #[test]
    fn requests_go_to_the_leader_else_to_any_master_and_miners_by_their_address() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap_or_else(|_| unreachable!()) };
        let (a, b) = (at("10.0.0.5:8888"), at("10.0.0.6:8888"));
        let none = Masters::default();
        assert_eq!((none.web(), none.stratum(ip("127.0.0.2")), none.leader()), (None, None, None));
        let standbys = Masters(vec![
            Seen { web: a, leader: false, stratum: None },
            Seen { web: b, leader: false, stratum: Some(at("10.0.0.6:3333")) },
        ]);
        assert_eq!((standbys.web(), standbys.leader()), (Some(a), None));
        assert_eq!(standbys.stratum(ip("127.0.0.2")), Some(at("10.0.0.6:3333")));
        let led = Masters(vec![
            Seen { web: b, leader: true, stratum: Some(at("10.0.0.6:3333")) },
            Seen { web: a, leader: false, stratum: Some(at("10.0.0.5:3333")) },
        ]);
        assert_eq!((led.web(), led.leader()), (Some(b), Some(b)));
        // One address always to the same master, whoever leads; many
        // addresses over both.
        let swapped = Masters(vec![led.0[1].clone(), led.0[0].clone()]);
        let mut counts = std::collections::HashMap::new();
        for n in 0..=255u8 {
            for client in [IpAddr::from([127, 0, 0, n]), IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n)])] {
                let to = led.stratum(client);
                assert_eq!(to, swapped.stratum(client), "{client}");
                *counts.entry(to).or_insert(0) += 1;
            }
        }
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.values().all(|n| *n > 128), "spread over both: {counts:?}");
    }
}
