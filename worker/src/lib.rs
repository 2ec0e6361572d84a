//! faena-worker: takes work units from its MQTT jobs topic, runs them through
//! an [`exec::Executor`] per kind, and reports to the master over gRPC.
//!
//! Module map:
//! - [`config`]: flags and environment; [`caps`]: what this machine offers.
//! - [`exec`]: the executor trait and the executors (`noop`, `randomx.hash`,
//!   `randomx.mine`, `ai.query`); a cancelled unit ends with a typed
//!   [`exec::JobFailure::cancelled`], never reported as a failure.
//! - [`randomx`]: the RandomX engine (modes, per-key datasets, all-core init).
//! - [`ai`]: the AI providers (Gemini, OpenAI-compatible) and their streaming.
//! - [`runner`]: slots, running leases, cancellation, result delivery, drain.
//! - [`live`]: the live configuration, checked and applied without a restart.
//!
//! Every reconnect and retry loop (broker, registration, result delivery,
//! AI provider calls) waits by [`faena_common::retry::Policy`].
//! - [`client`]: the gRPC client; [`mqtt`]: topics in, status out;
//!   [`login`]: the broker account the master hands this worker.
//! - [`metrics`]: Prometheus, served with `/healthz`.

pub mod ai;
pub mod caps;
pub mod client;
pub mod config;
pub mod exec;
#[cfg(test)]
mod fake_master;
pub mod live;
pub mod login;
pub mod metrics;
pub mod mqtt;
pub mod randomx;
pub mod results;
pub mod runner;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use faena_common::broker::{BrokerError, BrokerUrl};
use faena_common::logs::LogSink;
use faena_common::secrets::SecretError;
use faena_proto::ai::Provider;
use faena_proto::grpc as pb;
use faena_proto::ids::{InstanceId, WorkerId};
use faena_proto::jobs::JobKind;
use faena_proto::mqtt::WorkerState;
use faena_proto::settings::SignedConfig;
use faena_proto::topics::Topics;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::Code;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Tls(#[from] faena_common::tls::TlsError),
    #[error("AI providers: {0}")]
    Ai(#[from] ai::SetupError),
    #[error("the MQTT connection task died: {0}")]
    BrokerTask(#[source] tokio::task::JoinError),
    #[error("a cluster token is required: set FAENA_CLUSTER_TOKEN or FAENA_CLUSTER_TOKEN_FILE")]
    NoToken,
    #[error("TLS with the master failed: {0} (check FAENA_TLS_CA_FILE and FAENA_MASTER_URL)")]
    MasterTls(String),
    #[error("the master refused this worker: {0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("invalid worker id or topic prefix: {0}")]
    Id(String),
}

/// Where a running worker can be observed.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    pub worker_id: String,
    pub metrics: SocketAddr,
}

/// Host name plus a short random suffix, safe as a topic level.
pub fn default_worker_id() -> String {
    let host: String = caps::hostname()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .take(48)
        .collect();
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

fn capabilities(
    rx: &randomx::RandomX,
    kinds: &[JobKind],
    slots: (u32, u32),
    ai: &[Provider],
    models: Vec<String>,
) -> pb::Capabilities {
    pb::Capabilities {
        cores: caps::cores(),
        memory_bytes: caps::memory_bytes(),
        aes_ni: caps::aes_ni(),
        huge_pages: caps::huge_pages(),
        randomx_modes: vec![rx.mode().as_str().into()],
        ai_providers: ai.iter().map(|p| p.as_str().to_owned()).collect(),
        kinds: kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        slots: slots.0,
        ai_slots: slots.1,
        version: env!("CARGO_PKG_VERSION").into(),
        ai_models: models,
        unit_batches: true,
    }
}

/// Registers until the master answers ([`client::until_answered`]); wrong
/// token or bad capabilities are fatal.
async fn register(
    runner: &runner::Runner,
    session: &client::Session,
    caps: &pb::Capabilities,
    cancel: &CancellationToken,
) -> Result<Option<pb::RegisterResponse>, WorkerError> {
    session.registering();
    let answer = client::until_answered(cancel, || {
        // The leases held now, each try, and the slots live configuration gave.
        let mut caps = caps.clone();
        (caps.slots, caps.ai_slots) = runner.slots();
        let req = pb::RegisterRequest {
            worker_id: runner.worker_id.to_string(),
            instance_id: runner.instance.to_string(),
            capabilities: Some(caps),
            running: runner.leases(),
        };
        let mut client = runner.client();
        async move { client.register(req).await }
    })
    .await?;
    let Some(resp) = answer else { return Ok(None) };
    let resp = resp.into_inner();
    session.set(&resp.session);
    for lease in &resp.revoked {
        runner.revoke(lease);
    }
    tracing::info!(worker = %runner.worker_id, adopted = resp.adopted.len(), revoked = resp.revoked.len(), "registered with the master");
    Ok(Some(resp))
}

/// One heartbeat: the status published again, the leases held told to the
/// master, those it revoked stopped. True when the master does not know
/// this registration (it restarted, or dropped this worker): register again.
async fn beat(runner: &runner::Runner, status: &mqtt::StatusPublisher, rx: &randomx::RandomX) -> bool {
    status.publish(status.current_state());
    let req = pb::HeartbeatRequest {
        worker_id: runner.worker_id.to_string(),
        instance_id: runner.instance.to_string(),
        running: runner.leases(),
        hashrate: rx.hashrate(),
    };
    match runner.client().heartbeat(req).await {
        Ok(resp) => {
            for lease in &resp.into_inner().revoked {
                runner.revoke(lease);
            }
            false
        }
        Err(s) if s.code() == Code::Aborted => true,
        Err(s) => {
            tracing::debug!(code = ?s.code(), error = %s.message(), "heartbeat failed");
            false
        }
    }
}

/// Lets the running units finish ([`runner::Runner::drain`]) while the
/// heartbeats go on: a master that hears none for two heartbeats drops the
/// worker, refuses the results it waits to deliver and runs their jobs
/// again. A master that no longer knows this worker (it restarted) is
/// registered with again, with the leases held, so it takes their results.
async fn drain(
    runner: &runner::Runner,
    (session, caps): (&client::Session, &pb::Capabilities),
    status: &mqtt::StatusPublisher,
    rx: &randomx::RandomX,
    heartbeat: &mut tokio::time::Interval,
    timeout: Duration,
) {
    let drained = runner.drain(timeout);
    tokio::pin!(drained);
    let never = CancellationToken::new();
    loop {
        // A heartbeat to a master that does not answer (up to the call's
        // 30 s) does not hold the end of the drain.
        let again = tokio::select! {
            () = &mut drained => return,
            again = async {
                heartbeat.tick().await;
                beat(runner, status, rx).await
            } => again,
            () = runner.need_register.notified() => true,
        };
        if again {
            // Until answered, or until the drain ends without it.
            let answered = tokio::select! {
                () = &mut drained => return,
                r = register(runner, session, caps, &never) => r,
            };
            if let Err(e) = answered {
                tracing::warn!(error = %e, "registering again while draining failed");
            }
            status.publish(WorkerState::Draining);
        }
    }
}

/// The live configuration in the master's answer to Register (none from an older master).
fn from_master(
    live: &live::Live,
    runner: &Arc<runner::Runner>,
    status: &mqtt::StatusPublisher,
    r: &pb::RegisterResponse,
) {
    use faena_proto::mqtt::Payload;
    match SignedConfig::decode(r.config.as_bytes()) {
        Ok(signed) => on_config(live, runner, status, &signed, true),
        Err(e) if !r.config.is_empty() => tracing::warn!(error = %e, "the master's live configuration is unreadable"),
        Err(_) => {}
    }
}

/// Takes a live configuration (`current`: the master's answer to Register,
/// else the broker's message), then says so in the status and to the master.
fn on_config(
    live: &live::Live,
    runner: &Arc<runner::Runner>,
    status: &mqtt::StatusPublisher,
    signed: &SignedConfig,
    current: bool,
) {
    let taken = live.take(signed, current);
    let applied = match taken {
        Ok(a) => a,
        Err(e @ live::NotTaken::Old { .. }) => return tracing::debug!(reason = %e, "live configuration not taken"),
        Err(e) => {
            runner.metrics.malformed_messages.inc();
            return tracing::warn!(error = %e, "ignored a live configuration this cluster's master did not sign");
        }
    };
    tracing::info!(version = applied.version, refused = applied.refused.len(), "live configuration applied");
    for r in &applied.refused {
        tracing::warn!(key = %r.key, reason = %r.reason, "live setting refused");
    }
    if !applied.overrides.is_empty() {
        let what: Vec<String> = applied.overrides.iter().map(ToString::to_string).collect();
        tracing::info!("live configuration v{} in effect: {}", applied.version, what.join(", "));
    }
    status.publish(status.current_state());
    let (slots, ai_slots) = runner.slots();
    let req = pb::ConfigReport {
        worker_id: runner.worker_id.to_string(),
        instance_id: runner.instance.to_string(),
        version: applied.version,
        slots,
        ai_slots,
        refused: applied.refused.into_iter().map(|r| pb::ConfigRefusal { key: r.key, reason: r.reason }).collect(),
        overrides: applied
            .overrides
            .into_iter()
            .map(|o| pb::ConfigOverride { key: o.key, value_json: o.value.to_string(), own: o.own })
            .collect(),
    };
    let chore = runner.clone();
    runner.spawn_chore(async move {
        let runner = chore;
        match runner.client().report_config(req).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::Aborted => runner.need_register.notify_one(),
            Err(s) => tracing::debug!(code = ?s.code(), error = %s.message(), "config report not delivered"),
        }
    });
}

pub async fn run(
    cfg: Config,
    logs: Option<LogSink>,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), WorkerError> {
    cfg.validate()?;
    let topics = Topics::new(&cfg.topic_prefix).map_err(|e| WorkerError::Id(e.to_string()))?;
    let token = cfg.token.resolve()?.ok_or(WorkerError::NoToken)?;
    let creds = cfg.broker_auth.credentials()?;
    let url: BrokerUrl = cfg.mqtt_url.parse()?;
    let worker_id = WorkerId::parse(&cfg.worker_id.clone().unwrap_or_else(default_worker_id))
        .map_err(|e| WorkerError::Id(e.to_string()))?;
    if worker_id.as_str() == faena_common::broker::MASTER_CLIENT_ID {
        return Err(WorkerError::Id(format!("{worker_id} is the master's MQTT client id")));
    }
    let slots = cfg.slots.unwrap_or_else(caps::cores);

    let machine = randomx::Machine {
        memory_bytes: caps::memory_bytes(),
        huge_pages_free_bytes: caps::huge_pages_free_bytes(),
        cores: caps::cores() as usize,
    };
    let rx = randomx::RandomX::new(cfg.randomx_mode, cfg.randomx_threads, machine).ahead(cfg.randomx_ahead);
    let rx = Arc::new(match &cfg.randomx_share_dir {
        Some(dir) => rx.share(dir),
        None => rx,
    });
    let providers = Arc::new(ai::Providers::from_args(&cfg.ai)?);
    let offered = providers.offered();
    let mut registry = exec::Registry::default()
        .with(JobKind::Noop, Arc::new(exec::noop::Noop))
        .with(JobKind::RandomxHash, Arc::new(exec::randomx::RandomxHash::new(rx.clone())))
        .with(JobKind::RandomxMine, Arc::new(exec::mine::RandomxMine::new(rx.clone())));
    if offered.is_empty() {
        tracing::info!(
            "no AI provider configured (FAENA_LOCAL_MODEL, GEMINI_API_KEY, GEMINI_BASE_URL, OPENAI_BASE_URL, OPENAI_API_KEY): ai.query not offered"
        );
    } else {
        let names: Vec<&str> = offered.iter().map(|p| p.as_str()).collect();
        tracing::info!(providers = ?names, ai_slots = cfg.ai.ai_slots, "ai.query offered");
        registry = registry.with(JobKind::AiQuery, Arc::new(exec::ai::AiQuery::new(providers.clone())));
    }
    let slots = (slots, if offered.is_empty() { 0 } else { cfg.ai.ai_slots });
    let models = offered.iter().filter_map(|p| Some(format!("{p}/{}", providers.default_model(*p)?))).collect();
    let caps = capabilities(&rx, &registry.kinds(), slots, &offered, models);
    let (client, session) = client::connect(&cfg.master_url, &token, &cfg.tls)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let master = (client, session.clone());
    let runner =
        Arc::new(runner::Runner::new(worker_id.clone(), InstanceId::new(), slots, registry, master, metrics.clone()));
    let base = live::Base::new(&cfg, slots, rx.threads(), &providers);
    let live = live::Live::new(token.clone(), base, runner.clone(), rx.clone(), providers.clone());

    let mqtt_cancel = CancellationToken::new();
    // No broker account configured: the master hands this worker its own.
    let (creds, relogin) = match creds {
        Some(c) => (Some(c), None),
        None => match login::fetch(&runner.client(), &worker_id, runner.instance, &shutdown).await? {
            None => return Ok(()),
            Some(login::Login::None) => (None, None),
            Some(login::Login::Account(c)) => {
                let again = login::relogin(runner.client(), worker_id.clone(), runner.instance, mqtt_cancel.clone());
                (Some(c), Some(again))
            }
        },
    };
    let at = faena_common::broker::Endpoint { url: &url, creds: creds.as_ref(), tls: &cfg.tls };
    let mqtt::Connection { status, mut subscribed, mut inbound, driver } =
        mqtt::connect(at, relogin, topics.clone(), runner.clone(), rx.clone(), mqtt_cancel.clone())?;
    let mut driver = tokio::spawn(driver);
    // Ends with the MQTT connection (mqtt_cancel), awaited at the end.
    let forwarding = logs.map(|sink| {
        tokio::spawn(faena_common::logs::forward(sink, status.client().clone(), topics.logs(), mqtt_cancel.clone()))
    });
    let listener = tokio::net::TcpListener::bind(cfg.metrics_addr)
        .await
        .map_err(|source| WorkerError::Io { what: format!("binding metrics on {}", cfg.metrics_addr), source })?;
    let metrics_addr =
        listener.local_addr().map_err(|source| WorkerError::Io { what: "metrics address".into(), source })?;
    let (healthy_tx, healthy) = tokio::sync::watch::channel(false);
    let http_cancel = CancellationToken::new();
    let http = tokio::spawn(serve_metrics(listener, metrics.clone(), healthy, http_cancel.clone()));
    // Whichever way `run` returns, the connection, its log forwarding and
    // the metrics server stop with it.
    let _stop_on_return = (mqtt_cancel.clone().drop_guard(), http_cancel.clone().drop_guard());

    let failed = |r: Result<Result<(), BrokerError>, tokio::task::JoinError>| match r {
        Ok(Err(e)) => WorkerError::Broker(e),
        Ok(Ok(())) => WorkerError::Refused("the MQTT connection loop ended".into()),
        Err(e) => WorkerError::BrokerTask(e),
    };
    tokio::select! {
        r = subscribed.wait_for(|s| *s) => {
            // The sender only goes away when the connection loop ended with an error.
            if r.is_err() {
                return Err(failed(driver.await));
            }
        }
        r = &mut driver => return Err(failed(r)),
        () = shutdown.cancelled() => return Ok(()),
    }
    let Some(mut registration) = register(&runner, &session, &caps, &shutdown).await? else { return Ok(()) };
    from_master(&live, &runner, &status, &registration);
    let _ = healthy_tx.send(true);
    tracing::info!(worker = %worker_id, slots = slots.0, ai_slots = slots.1, metrics = %metrics_addr, "faena-worker ready");
    on_ready(&Ready { worker_id: worker_id.to_string(), metrics: metrics_addr });

    let mut initialising = rx.initialising();
    let mut driver_done = false;
    let mut heartbeat =
        tokio::time::interval(Duration::from_millis(u64::from(registration.heartbeat_interval_ms.max(100))));
    loop {
        let reregister = tokio::select! {
            () = shutdown.cancelled() => break,
            r = &mut driver => {
                driver_done = true;
                if let Ok(Err(e)) = r { tracing::error!(error = %e, "MQTT connection ended"); }
                break;
            }
            Some(msg) = inbound.recv() => match msg {
                mqtt::Inbound::MasterOnline(instance) => instance.to_string() != registration.master_instance,
                mqtt::Inbound::Drain => { tracing::info!("drain requested by the master"); break; }
                mqtt::Inbound::Config(signed) => { on_config(&live, &runner, &status, &signed, false); false }
            },
            () = runner.need_register.notified() => true,
            Ok(()) = initialising.changed() => {
                status.publish(status.current_state());
                false
            }
            _ = heartbeat.tick() => beat(&runner, &status, &rx).await,
        };
        if reregister {
            let _ = healthy_tx.send(false);
            match register(&runner, &session, &caps, &shutdown).await? {
                Some(r) => registration = r,
                None => break,
            }
            from_master(&live, &runner, &status, &registration);
            let _ = healthy_tx.send(true);
        }
    }

    tracing::info!(running = runner.running_count(), "draining: no new work; finishing running units");
    status.publish(WorkerState::Draining);
    drain(&runner, (&session, &caps), &status, &rx, &mut heartbeat, cfg.drain_timeout()).await;
    runner.stop_chores().await;
    // Datasets go now, not with the process: a shared one nobody else maps
    // is removed from its directory (unmapping 2 GiB is quick).
    let _ = tokio::task::spawn_blocking({
        let rx = rx.clone();
        move || rx.release()
    })
    .await;
    status.publish_and_disconnect(WorkerState::Offline).await;
    if !driver_done {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut driver).await;
    }
    mqtt_cancel.cancel();
    http_cancel.cancel();
    let _ = http.await;
    if let Some(forwarding) = forwarding {
        let _ = tokio::time::timeout(Duration::from_secs(2), forwarding).await;
    }
    tracing::info!("faena-worker stopped");
    Ok(())
}

async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<metrics::Metrics>,
    healthy: tokio::sync::watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let app =
        axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let body = metrics.render();
                    async move {
                        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                    }
                }),
            )
            .route(
                "/healthz",
                get(move || {
                    let ok = *healthy.borrow();
                    async move {
                        (
                            if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE },
                            if ok { "ok" } else { "not registered" },
                        )
                            .into_response()
                    }
                }),
            );
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
        tracing::error!(error = %e, "metrics server failed");
    }
}
