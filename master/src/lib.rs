//! faena-master: takes jobs (REST, Socket.IO), keeps them durable (SQLite),
//! hands them to workers (MQTT) and takes their results (gRPC).
//!
//! Module map:
//! - [`config`]: flags and environment.
//! - [`engine`] (the `faena-engine` crate, with its [`engine::mining`]
//!   sub-machine, [`queue`] and [`scheduler`]): the domain, pure and
//!   unit-tested.
//! - [`coordinator`]: the task that owns the engine and carries out its effects.
//! - [`store`] (the `faena-store` crate): the durable job store behind its
//!   contract, with group commit; [`janitor`]: runs its retention.
//! - [`settings`]: live configuration, versioned, published signed to workers.
//! - [`http`] (with OpenAI's API in [`http::openai`]), [`grpc`], [`mqtt`]:
//!   adapters between the wire and the coordinator.
//! - [`broker`]: the embedded rumqttd broker.
//! - [`hub`]: per-job event fan-out; [`metrics`]: Prometheus.
//! - [`web`]: the page's Socket.IO sessions; [`verify`] (the `faena-verify`
//!   crate): mining share checks (run by the coordinator, off its task);
//!   [`ai_cache`]: answers to repeated AI questions.
//! - [`pool`] (the `faena-pool` crate): mining with the outside world —
//!   monerod and pool sources, the Stratum server for XMRig miners,
//!   participants' accounting; the coordinator is its [`pool::JobEngine`],
//!   [`metrics`] its [`pool::Meter`].
//! - [`leader`], [`standby`] and `startup`: several masters on one store —
//!   the lease, the standby that forwards to the leader, the step-down;
//!   [`forward`]: passing clients on to another master with their signed
//!   address; [`edge`]: `faena-edge`, the public ports in front of them.

pub mod ai_cache;
pub mod broker;
pub mod config;
pub mod coordinator;
pub mod edge;
/// The job engine, its own crate: pure, below everything that does I/O.
pub use faena_engine as engine;
pub use faena_engine::{queue, scheduler};
pub mod forward;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod janitor;
pub mod leader;
pub mod metrics;
pub mod mqtt;
/// The mining pool, its own crate: it reaches the engine and the metrics
/// only through the traits the master implements.
pub use faena_pool as pool;
pub mod scaling;
pub mod settings;
pub mod standby;
mod startup;
/// The job store, its own crate since the store took a contract of its own.
pub use faena_store as store;
/// Share verification, its own crate: the engine takes shares only as it vouches.
pub use faena_verify as verify;
pub mod web;

#[cfg(test)]
mod fuzz_tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faena_common::broker::{BrokerError, BrokerUrl};
use faena_common::logs::LogSink;
use faena_common::secrets::SecretError;
use faena_proto::ids::InstanceId;
use faena_proto::mqtt::MasterState;
use faena_proto::secret::Secret;
use faena_proto::topics::Topics;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_layer::Layer as _;

use startup::{Leading, Listeners, connect_store, take_lead};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    EmbeddedBroker(#[from] broker::EmbeddedBrokerError),
    #[error("job store: {0}")]
    Store(#[from] store::StoreError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("could not reach the MQTT broker at {0} in time")]
    BrokerTimeout(String),
    #[error("the MQTT connection task died: {0}")]
    BrokerTask(#[source] tokio::task::JoinError),
    #[error("invalid topic prefix {0:?}")]
    Topics(String),
    #[error("mining store: {0}")]
    Mining(#[from] rusqlite::Error),
    #[error(transparent)]
    Tls(#[from] faena_common::tls::TlsError),
    #[error("gRPC TLS: {0} (check FAENA_TLS_CERT_FILE and FAENA_TLS_KEY_FILE)")]
    GrpcTls(String),
    #[error(transparent)]
    NotLeading(#[from] leader::NotLeading),
    #[error("could not start again as a standby after losing the lead")]
    StepDown,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MasterError {
    let what = what.into();
    move |source| MasterError::Io { what, source }
}

/// Everything a shutdown waits for, in all: inside the stack's
/// `stop_grace_period` for the master (30 s), so Swarm never kills it
/// mid-flush (a test reads stack.yml to hold this).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(20);

/// Where a running master can be reached.
#[derive(Debug, Clone, Serialize)]
pub struct Addrs {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub mqtt: String,
    /// The Stratum server, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stratum: Option<SocketAddr>,
    /// `leader`, or `standby` while another master leads a shared store
    /// (a standby has no broker address of its own: `mqtt` is empty).
    pub role: &'static str,
}

/// MemAvailable from `/proc/meminfo`, in MiB.
fn available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib / 1024)
}

/// The pool side's settings, with the Stratum password and the cluster
/// token (forwarded miners' prefaces are signed with it).
fn pool_config(cfg: &Config, token: &Secret) -> Result<pool::PoolConfig, MasterError> {
    let mut pool_cfg = cfg.pool();
    pool_cfg.password = faena_common::secrets::resolve_optional(
        "FAENA_STRATUM_PASSWORD",
        cfg.stratum_password.as_deref(),
        cfg.stratum_password_file.as_deref(),
    )?
    .map(Arc::new);
    pool_cfg.forwarders = Some(Arc::new(token.clone()));
    Ok(pool_cfg)
}

/// How this master calls the leader while it stands by: over HTTPS with
/// the cluster's CA when the masters serve their web port over TLS.
fn peer_client(cfg: &Config) -> Result<reqwest::Client, MasterError> {
    let mut b = faena_common::tls::http_client().connect_timeout(Duration::from_secs(5));
    if cfg.web_tls {
        b = b.use_preconfigured_tls((*cfg.tls.client_config()?).clone());
    }
    b.build().map_err(|e| MasterError::Tls(faena_common::tls::TlsError::Config(e.to_string())))
}

fn cluster_token(cfg: &Config) -> Result<Secret, MasterError> {
    if let Some(token) = cfg.token.resolve()? {
        return Ok(token);
    }
    let token = Secret::random();
    let path = cfg.data_dir.join("cluster-token");
    faena_common::secrets::write_private(&path, token.expose()).map_err(io(format!("writing {}", path.display())))?;
    tracing::info!(path = %path.display(), "no cluster token given; generated one for this run (workers: FAENA_CLUSTER_TOKEN_FILE)");
    Ok(token)
}

/// Runs the master until `shutdown` is cancelled; `on_ready` gets the bound
/// addresses once the broker is connected and both servers listen.
pub async fn run(
    cfg: Config,
    logs: Option<LogSink>,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Addrs),
) -> Result<(), MasterError> {
    cfg.validate()?;
    if cfg.autoscale.as_deref().is_some_and(|a| !a.trim().is_empty()) {
        tracing::warn!(
            "FAENA_AUTOSCALE is set on the master, which no longer scales anything: run faena-autoscaler (stack.autoscale.yml does)"
        );
    }
    let topics = Topics::new(&cfg.topic_prefix).map_err(|_| MasterError::Topics(cfg.topic_prefix.clone()))?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(io(format!("creating {}", cfg.data_dir.display())))?;
    let token = cluster_token(&cfg)?;
    let api_token = faena_common::secrets::resolve_optional(
        "FAENA_API_TOKEN",
        cfg.api_token.as_deref(),
        cfg.api_token_file.as_deref(),
    )?
    .map(Arc::new);
    let creds = cfg.broker_auth.credentials()?;

    let store_url = faena_common::secrets::resolve_optional(
        "FAENA_STORE_URL",
        cfg.store_url.as_deref(),
        cfg.store_url_file.as_deref(),
    )?;
    let store = match &store_url {
        Some(url) => {
            tracing::info!(writers = cfg.store_writers, "job store: PostgreSQL (FAENA_STORE_URL)");
            match connect_store(url.expose(), cfg.retention()?, cfg.store_writers.into(), &shutdown).await? {
                Some(store) => store,
                None => return Ok(()),
            }
        }
        None => {
            let shards = cfg.store_shards.map(usize::from);
            let store =
                store::Store::open_sharded(&cfg.data_dir.join("faena.db"), cfg.store_sync, cfg.retention()?, shards)?;
            tracing::info!(shards = store.shards(), "job store: SQLite in the data directory");
            store
        }
    };
    let listeners = Listeners::bind(&cfg)?;
    let mut on_ready = Some(on_ready);
    let mode = cfg.verifier_mode(available_mib());
    tracing::info!(mode = mode.as_str(), threads = cfg.verify_threads, "share verifier");
    let deadline = Duration::from_millis(cfg.verify_deadline_ms.max(100));
    // One verifier for the whole run: a standby's, keeping its keys when it leads.
    let verifier = Arc::new(verify::Verifier::with_mode(cfg.verify_threads, mode).with_deadline(deadline));
    let pool_cfg = pool_config(&cfg, &token)?;
    let follower = startup::Follower { cfg: pool_cfg.clone(), verifier: verifier.clone(), http: peer_client(&cfg)? };
    let leading =
        take_lead(&cfg, &store, Arc::new(token.clone()), &listeners, &shutdown, &mut on_ready, follower).await?;
    if shutdown.is_cancelled() {
        return Ok(());
    }
    let deposed = CancellationToken::new();
    let stop_renewing = CancellationToken::new();
    let mut lead = leader::Lead::alone();
    if let Some(Leading { election, epoch, name }) = &leading {
        let lease = Duration::from_millis(cfg.leader_lease_ms);
        let held = leader::Held::for_lease(lease);
        lead = leader::Lead { held: held.clone(), shared: Some((name.clone(), *epoch)) };
        let renew = leader::keep(election.clone(), *epoch, lease, held.clone(), deposed.clone(), stop_renewing.clone());
        tokio::spawn(renew);
    }
    let mut engine = engine::Engine::new(engine::EngineConfig {
        queue_capacity: cfg.queue_capacity,
        max_attempts: cfg.max_attempts,
        heartbeat: cfg.heartbeat(),
        invalid_share_limit: cfg.invalid_share_limit,
        no_worker_timeout: Duration::from_millis(cfg.no_worker_timeout_ms),
        quarantine: Duration::from_secs(cfg.quarantine_secs),
        max_unique_keys: cfg.max_unique_keys,
        max_groups: cfg.max_groups,
    });
    let restored = store.load_unfinished().await?;
    engine.restore_keys(engine::Now::system(), store.held_keys(faena_proto::mqtt::now_ms()).await?);
    engine.restore_groups(engine::Now::system(), stored_groups(&store).await?);
    let schedules = stored_schedules(&store).await?;
    engine.restore_schedules(engine::Now::system(), schedules, store.firings().await?);
    if !restored.is_empty() {
        let running = restored.iter().filter(|j| j.lease.is_some()).count();
        tracing::info!(jobs = restored.len(), running, "recovered unfinished jobs from the store");
    }
    engine.restore(engine::Now::system(), restored);

    // The master's own connection, and the address workers are told.
    let mut embedded = None;
    let (url, public_mqtt, creds) = match &cfg.mqtt_url {
        Some(url) => {
            let url = url.parse::<BrokerUrl>()?;
            (url.clone(), url.to_string(), creds)
        }
        None => {
            let tls = cfg.tls.server_config()?;
            let secure = tls.is_some();
            let limits = broker::guard::Limits { clients: cfg.mqtt_max_clients, observers: cfg.mqtt_max_observers };
            let b = broker::start(cfg.mqtt_addr, &token, &cfg.topic_prefix, tls, limits).await?;
            tracing::info!(addr = %b.public, tls = secure, "embedded MQTT broker listening (accounts from the cluster token; anyone may read status and logs)");
            let internal = BrokerUrl { host: b.internal.ip().to_string(), port: b.internal.port(), tls: false };
            let public = BrokerUrl { host: b.public.ip().to_string(), port: b.public.port(), tls: secure };
            let login = b.login.clone();
            embedded = Some(b);
            (internal, public.to_string(), Some(login))
        }
    };

    let tracker = TaskTracker::new();
    let mqtt_cancel = CancellationToken::new();
    let instance = InstanceId::new();
    let metrics = Arc::new(metrics::Metrics::default());
    let dynsec = cfg.mqtt_dynsec;
    let at = faena_common::broker::Endpoint { url: &url, creds: creds.as_ref(), tls: &cfg.tls };
    let reach = match &embedded {
        Some(b) => mqtt::Reach::Embedded(b.direct.clone()),
        None => mqtt::Reach::External { dynsec },
    };
    let conn = mqtt::connect(at, topics.clone(), instance, lead, metrics.clone(), reach, mqtt_cancel.clone())?;
    let mqtt::Connection { out, mut connected, mut statuses, driver, dynsec } = conn;
    let logins = match (dynsec, &cfg.mqtt_url) {
        (Some(d), _) => broker::dynsec::WorkerLogins::Dynsec(d),
        (None, Some(_)) => broker::dynsec::WorkerLogins::None,
        (None, None) => broker::dynsec::WorkerLogins::Embedded(token.clone()),
    };
    let mut driver = tokio::spawn(driver);
    let timeout = Duration::from_millis(cfg.mqtt_connect_timeout_ms);
    let failed = |r: Result<Result<(), BrokerError>, tokio::task::JoinError>| match r {
        Ok(Err(e)) => MasterError::Broker(e),
        Ok(Ok(())) => MasterError::BrokerTimeout(url.to_string()),
        Err(e) => MasterError::BrokerTask(e),
    };
    tokio::select! {
        r = connected.wait_for(|c| *c) => {
            // The sender only goes away when the connection loop ended with an error.
            if r.is_err() {
                return Err(failed(driver.await));
            }
        }
        r = &mut driver => return Err(failed(r)),
        () = tokio::time::sleep(timeout) => return Err(MasterError::BrokerTimeout(url.to_string())),
        () = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(broker = %url, "connected to the MQTT broker");
    let settings_db = store::settings::SettingsDb::beside(&store, &cfg.data_dir.join("faena.db"))?;
    let live = settings::LiveConfig::load(settings_db, token.clone(), out.clone()).await?;
    if let Some(sink) = logs {
        tracker.spawn(faena_common::logs::forward(sink, out.client().clone(), topics.logs(), mqtt_cancel.clone()));
    }

    let (coord, inbox) = coordinator::channel();
    let hub = hub::Hub::default();
    let core_cancel = CancellationToken::new();
    let pool_db = pool::db::Db::new(store::mining::MiningDb::beside(&store, &cfg.data_dir.join("mining.db"))?);
    let loaded = pool_db.load().await?;
    let epoch = leading.as_ref().map(|l| l.epoch);
    let jobs = Arc::new(coord.clone());
    let pool = pool::Pool::start(pool_cfg, jobs, verifier.clone(), pool_db, loaded, metrics.clone(), epoch)?;
    let deps = coordinator::Deps {
        store: store.clone(),
        hub: hub.clone(),
        metrics: metrics.clone(),
        mqtt: out.clone(),
        verifier,
        ai_cache: ai_cache::AiCache::new(
            cfg.ai_cache_entries,
            Duration::from_secs(cfg.ai_cache_ttl_secs),
            cfg.ai_cache_shared,
        ),
        pool: Some(pool.clone()),
    };
    let coordinator_done = tracker.spawn(coordinator::run(engine, inbox, deps, core_cancel.clone()));
    tracker.spawn(janitor::run(store.clone(), metrics.clone(), core_cancel.clone()));
    {
        let coord = coord.clone();
        tracker.spawn(async move {
            while let Some(batch) = statuses.next().await {
                for s in batch {
                    coord.worker_state(s.worker_id, s.instance_id, s.state).await;
                }
            }
        });
    }

    let tokio_listener = |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l).map_err(io("listening"));
    let grpc_listener = tokio_listener(listeners.grpc)?;
    let http_listener = tokio_listener(listeners.http)?;
    let stratum_listener = listeners.stratum.map(tokio_listener).transpose()?;
    let addrs = Addrs {
        http: http_listener.local_addr().map_err(io("HTTP address"))?,
        grpc: grpc_listener.local_addr().map_err(io("gRPC address"))?,
        mqtt: public_mqtt,
        stratum: match &stratum_listener {
            Some(l) => Some(l.local_addr().map_err(io("Stratum address"))?),
            None => None,
        },
        role: "leader",
    };

    let servers_cancel = CancellationToken::new();
    let vouching = Arc::new(token.clone());
    let grpc_service =
        grpc::server(coord.clone(), instance, cfg.heartbeat_ms, metrics.clone(), token, logins, live.clone());
    let grpc_incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let mut grpc_builder = tonic::transport::Server::builder();
    if let Some(id) = cfg.tls.identity_pem()? {
        let tls =
            tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(id.cert, id.key));
        grpc_builder = grpc_builder.tls_config(tls).map_err(|e| MasterError::GrpcTls(e.to_string()))?;
        tracing::info!("gRPC served over TLS");
    }
    let stop_grpc = servers_cancel.clone();
    let grpc_task = tracker.spawn(async move {
        let served = grpc_builder
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(grpc_incoming, stop_grpc.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    let accepting = Arc::new(AtomicBool::new(true));
    let state: http::AppState = http::AppParts {
        coord: coord.clone(),
        store: store.clone(),
        hub,
        metrics: metrics.clone(),
        accepting: accepting.clone(),
        broker_connected: connected.clone(),
        max_body_bytes: cfg.max_body_bytes,
        api_token: api_token.clone(),
        pool: pool.clone(),
        retrying: Default::default(),
        live,
        autoscaler: scaling::Reports::default(),
        epoch: leading.as_ref().map(|l| l.epoch),
        stratum_port: addrs.stratum.map(|a| a.port()),
        ai: http::openai::Gateway::new(
            http::openai::keys::Keys::load(store.clone()).await?,
            std::time::Duration::from_millis(cfg.ai_queue_wait_ms),
        ),
    }
    .into();
    let miners = TaskTracker::new();
    if let Some(listener) = stratum_listener {
        tracker.spawn(pool::stratum::serve(listener, pool.clone(), miners.clone(), servers_cancel.clone()));
    }
    let feed = web::ops::Feed { coord: coord.clone(), metrics: metrics.clone(), autoscaler: state.autoscaler.clone() };
    let (sio_layer, io) = web::socket_io(web::WebParts {
        coord: coord.clone(),
        hub: state.hub.clone(),
        api_token,
        metrics: metrics.clone(),
        limits: cfg.web_limits(),
        feed: feed.clone(),
        tasks: tracker.clone(),
        stop: servers_cancel.clone(),
    });
    tracker.spawn(web::ops::broadcast(io.clone(), feed, servers_cancel.clone()));
    tracker.spawn(web::broadcast_workers(io, coord.clone(), servers_cancel.clone()));
    // socketioxide wraps the finished router once (a per-route layer breaks long-polling).
    // In front of it all: a forwarder's client, host names (DNS rebinding), the page's origin.
    let origins = cfg.allowed_origins()?;
    let door = http::origin::FrontDoor::new(vouching.clone(), cfg.allowed_hosts()?, origins);
    let public = axum::Router::new()
        .fallback_service(sio_layer.layer(http::app(state, &cfg.web_dir)))
        .layer(axum::middleware::from_fn_with_state(Arc::new(door), http::origin::front_door));
    // The other masters' routes: by address (no host names), with the peer key.
    let app = http::replicas::routes(pool.clone(), vouching, servers_cancel.clone()).fallback_service(public);
    let stop_http = servers_cancel.clone();
    // The client's address bounds what it may do through the page (web::limits).
    let app = app.into_make_service_with_connect_info::<http::listen::PeerAddr>();
    let listener = match cfg.web_tls {
        true => {
            // validate() made sure the certificate is given: never plain by mistake.
            let tls = cfg.tls.server_config()?.ok_or(faena_common::tls::TlsError::HalfIdentity)?;
            tracing::info!("the web port is served over HTTPS");
            let tls = http::listen::TlsListener::new(http_listener, &tls, &tracker, servers_cancel.clone());
            http::listen::WebListener::Tls(tls)
        }
        false => http::listen::WebListener::Plain(http_listener),
    };
    let http_task = tracker.spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop_http.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "web server failed");
        }
    });

    tracing::info!(http = %addrs.http, grpc = %addrs.grpc, mqtt = %addrs.mqtt, stratum = ?addrs.stratum, "faena-master ready");
    if let Some(ready) = on_ready.take() {
        ready(&addrs);
    }
    let mut driver_done = false;
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = deposed.cancelled() => {
            // Nothing more of this master's may reach the store or the
            // workers: no drain, no goodbye. Its writes are fenced already.
            let mut again = vec![("FAENA_HTTP_ADDR", addrs.http.to_string()), ("FAENA_GRPC_ADDR", addrs.grpc.to_string())];
            again.extend(addrs.stratum.map(|s| ("FAENA_STRATUM_ADDR", s.to_string())));
            again.extend(embedded.as_ref().map(|b| ("FAENA_MQTT_ADDR", b.public.to_string())));
            leader::step_down(again);
            return Err(MasterError::StepDown);
        }
        r = &mut driver => {
            driver_done = true;
            match r {
                Ok(Err(e)) => tracing::error!(error = %e, "lost the MQTT broker for good"),
                Err(e) => tracing::error!(error = %e, "the MQTT connection task died"),
                Ok(Ok(())) => {}
            }
        }
    }

    // Stop taking jobs, let in-flight requests finish, flush the store, say
    // goodbye — all within one budget, well inside the stack's grace period.
    tracing::info!("shutting down: no new jobs; flushing the store");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
    accepting.store(false, Ordering::Relaxed);
    out.announce(MasterState::Draining).await;
    servers_cancel.cancel();
    // Open event streams would hold a graceful shutdown forever: bound the wait.
    let servers = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
    let _ = tokio::time::timeout_at(servers, async { tokio::join!(grpc_task, http_task) }).await;
    miners.close();
    let _ = tokio::time::timeout_at(servers, miners.wait()).await;
    pool.stop().await;
    core_cancel.cancel();
    let _ = tokio::time::timeout_at(deadline, coordinator_done).await;
    out.announce(MasterState::Offline).await;
    let _ = out.client().disconnect().await;
    // The disconnect ends the MQTT loop, which closes the status feed; then
    // nothing is left for the tracked tasks to wait on.
    if !driver_done {
        let _ = tokio::time::timeout_at(deadline, driver).await;
    }
    mqtt_cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout_at(deadline, tracker.wait()).await;
    if let Some(b) = embedded {
        b.stop(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    }
    stop_renewing.cancel();
    if let Some(Leading { election, epoch, .. }) = leading {
        // A standby takes over now rather than when the lease runs out.
        match tokio::time::timeout(Duration::from_secs(2), election.resign(epoch)).await {
            Ok(Ok(())) => tracing::info!(epoch, "gave up the lead"),
            _ => tracing::warn!(epoch, "could not give up the lead; a standby takes over when the lease runs out"),
        }
    }
    tracing::info!("faena-master stopped");
    Ok(())
}

/// Recurring schedules as stored (one that no longer parses is left out, logged).
async fn stored_schedules(
    store: &store::Store,
) -> Result<Vec<(String, engine::schedules::ScheduleSpec)>, store::StoreError> {
    let mut out = Vec::new();
    for (name, doc) in store.named(store::NamedKind::Schedule).await? {
        match serde_json::from_str(&doc) {
            Ok(spec) => out.push((name, spec)),
            Err(e) => tracing::error!(schedule = %name, error = %e, "a stored schedule does not parse; left out"),
        }
    }
    Ok(out)
}

/// Groups' limits as stored (one that no longer parses is left out, logged).
async fn stored_groups(store: &store::Store) -> Result<Vec<(String, engine::groups::Limits)>, store::StoreError> {
    let mut out = Vec::new();
    for (name, doc) in store.named(store::NamedKind::Group).await? {
        match serde_json::from_str::<engine::groups::Limits>(&doc) {
            Ok(limits) if limits.check().is_ok() => out.push((name, limits)),
            _ => tracing::error!(group = %name, "a group's stored limits do not parse; left out"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// The master's `stop_grace_period` in a stack file, in seconds.
    fn master_grace(file: &str) -> Option<u64> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
        let text = std::fs::read_to_string(path).ok()?;
        let block = text.split("\n  master:\n").nth(1)?;
        let block = block.split("\n  ").take_while(|l| l.starts_with(' ')).collect::<Vec<_>>().join("\n");
        let value = block.lines().find_map(|l| l.trim().strip_prefix("stop_grace_period:"))?.trim();
        value.strip_suffix('s')?.parse().ok()
    }

    #[test]
    fn a_shutdown_fits_the_stacks_grace_period() {
        for file in ["stack.yml", "docker-compose.yml"] {
            let grace = master_grace(file).unwrap_or_else(|| panic!("{file} gives the master a stop_grace_period"));
            // The store's last flush and the goodbye come after the budget: leave room.
            assert!(
                super::SHUTDOWN_BUDGET.as_secs() + 5 <= grace,
                "{file}: {grace} s for a {:?} shutdown",
                super::SHUTDOWN_BUDGET
            );
        }
    }
}
