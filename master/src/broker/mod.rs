//! The embedded MQTT broker (rumqttd) used when no `--mqtt-url` is given.
//!
//! rumqttd listens on an internal loopback port that takes one account,
//! known only to this process; clients come in through the [`guard`] on the
//! configured address, which checks who they are and what each may read and
//! write ([`acl`]): the master's and workers' accounts have passwords
//! derived from the cluster token, and a client without an account (say
//! `mosquitto_sub -h 127.0.0.1 -t 'faena/#' -v`) may read status and logs
//! only. rumqttd has no shutdown API: it lives as long as the process.

pub mod acl;
pub mod dynsec;
pub mod guard;
pub mod link;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use faena_common::broker::{Credentials, MAX_PACKET_BYTES};
use faena_proto::secret::Secret;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedBrokerError {
    #[error(
        "cannot listen for MQTT on {addr}: {source} (set FAENA_MQTT_ADDR, or FAENA_MQTT_URL for an external broker)"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the embedded broker's thread: {0}")]
    Start(#[source] std::io::Error),
    #[error("the embedded broker refused the master's own link: {0}")]
    Link(String),
}

/// The running embedded broker.
#[derive(Debug)]
pub struct Embedded {
    /// Where clients connect (through the guard).
    pub public: SocketAddr,
    /// rumqttd itself, and the one account it takes: the master's own way in.
    pub internal: SocketAddr,
    pub login: Credentials,
    /// The master's in-process way to publish to workers (see [`link`]).
    pub direct: Arc<link::Direct>,
    /// The guard and its connections (rumqttd itself has no way to stop:
    /// it ends with the process).
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Embedded {
    /// Stops the guard: no new clients, every connection closed.
    pub async fn stop(&self, within: std::time::Duration) {
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(within, self.tasks.wait()).await;
    }
}

/// Starts the broker and its guard on `addr` (port 0 picks one), serving
/// mqtts when `tls` is given.
pub async fn start(
    addr: SocketAddr,
    cluster_token: &Secret,
    prefix: &str,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    limits: guard::Limits,
) -> Result<Embedded, EmbeddedBrokerError> {
    let public =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| EmbeddedBrokerError::Bind { addr, source })?;
    let public_addr = public.local_addr().map_err(|source| EmbeddedBrokerError::Bind { addr, source })?;
    let login = Credentials {
        username: format!("faena-internal-{}", uuid::Uuid::new_v4().simple()),
        password: Secret::new(uuid::Uuid::new_v4().simple().to_string()),
    };
    let (internal, link) = start_rumqttd((Ipv4Addr::LOCALHOST, 0).into(), &login)?;
    let guard = guard::Guard::new(
        internal,
        (login.username.clone(), login.password.clone()),
        cluster_token.clone(),
        acl::Acl::new(prefix),
        limits,
    );
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    tasks.spawn(guard::serve(public, Arc::new(guard), tls, tasks.clone(), cancel.clone()));
    let direct = Arc::new(link::Direct::new(link));
    Ok(Embedded { public: public_addr, internal, login, direct, tasks, cancel })
}

/// Starts rumqttd on `addr`, taking only `login`; returns where it listens
/// and the master's local link to its router.
fn start_rumqttd(
    addr: SocketAddr,
    login: &Credentials,
) -> Result<(SocketAddr, (rumqttd::local::LinkTx, rumqttd::local::LinkRx)), EmbeddedBrokerError> {
    // Binding first resolves port 0; rumqttd re-binds the same address
    // right after (it sets SO_REUSEADDR).
    let probe = std::net::TcpListener::bind(addr).map_err(|source| EmbeddedBrokerError::Bind { addr, source })?;
    let addr = probe.local_addr().map_err(|source| EmbeddedBrokerError::Bind { addr, source })?;
    drop(probe);

    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 1000,
        auth: Some(HashMap::from([(login.username.clone(), login.password.expose().to_owned())])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server =
        ServerSettings { name: "faena-v4".into(), listen: addr, tls: None, next_connection_delay_ms: 0, connections };
    let router = RouterConfig {
        max_connections: 10_000,
        max_outgoing_packet_count: 1000,
        max_segment_size: 64 * 1024 * 1024,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = Broker::new(config);
    // The router runs from `new`: this waits for its answer only.
    // A client id no worker can have (no worker id has a `:`): none can
    // take the link's session over.
    let link = broker.link("faena:master-link").map_err(|e| EmbeddedBrokerError::Link(e.to_string()))?;
    std::thread::Builder::new()
        .name("faena-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(EmbeddedBrokerError::Start)?;
    Ok((addr, link))
}
