//! The task that owns the [`Engine`]: adapters (HTTP, gRPC, MQTT) send it
//! commands, it applies them and carries out the resulting effects in order —
//! store writes, MQTT publishes, and notifications. Anything a client is told
//! (a 202, an accepted result, a final event) waits until the store has
//! committed the change behind it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use faena_proto::ai::API_KEY_SECRET;
use faena_proto::api::{JobEvent, WorkerView};
use faena_proto::ids::{InstanceId, JobId, WorkerId};
use faena_proto::jobs::JobSpec;
use faena_proto::mqtt::WorkerState;
use faena_proto::secret::Secret;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ai_cache::AiCache;
use crate::engine::{
    ActiveView, Effect, Engine, LeaseError, LeaseRef, NewJob, Now, Outcome, QueueFull, RegisterOutcome, Registration,
    StoreOp,
};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::mqtt::MqttOut;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("the job store could not record this; try again later")]
    Store,
    #[error("the master is shutting down")]
    Stopped,
}

/// What became of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    Now,
    NotActive,
}

type Reply<T> = oneshot::Sender<T>;

/// A mining unit's parameters and the nonces of its job's accepted shares.
pub type UnitWork = (faena_proto::mine::MineParams, std::collections::HashSet<u32>);

enum Command {
    Submit(Vec<NewJob>, Reply<Result<Vec<(JobId, u64)>, CoordError>>),
    Cancel(JobId, Reply<Result<Cancelled, CoordError>>),
    View(JobId, Reply<Option<ActiveView>>),
    Workers(Reply<Vec<WorkerView>>),
    Register(Registration, Reply<RegisterOutcome>),
    Heartbeat {
        worker: WorkerId,
        instance: InstanceId,
        running: Vec<LeaseRef>,
        hashrate: f64,
        reply: Reply<Result<Vec<LeaseRef>, CoordError>>,
    },
    Progress {
        worker: WorkerId,
        lease: LeaseRef,
        data: Value,
        reply: Reply<Result<(), CoordError>>,
    },
    Complete {
        worker: WorkerId,
        lease: LeaseRef,
        outcome: Outcome,
        reply: Reply<Result<bool, CoordError>>,
    },
    Secret {
        worker: WorkerId,
        lease: LeaseRef,
        name: String,
        reply: Reply<Result<Option<Secret>, CoordError>>,
    },
    WorkerState {
        worker: WorkerId,
        instance: InstanceId,
        state: WorkerState,
    },
    UnitWork {
        worker: WorkerId,
        lease: LeaseRef,
        reply: Reply<Result<Option<UnitWork>, CoordError>>,
    },
    InvalidShares {
        worker: WorkerId,
        unit: JobId,
        count: u32,
    },
    RefreshGauges(Reply<()>),
}

/// Cheap handle the adapters hold.
#[derive(Debug, Clone)]
pub struct Coordinator {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Coordinator {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CoordError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| CoordError::Stopped)?;
        rx.await.map_err(|_| CoordError::Stopped)
    }

    pub async fn submit(&self, jobs: Vec<NewJob>) -> Result<Vec<(JobId, u64)>, CoordError> {
        self.ask(|r| Command::Submit(jobs, r)).await?
    }

    pub async fn cancel(&self, id: JobId) -> Result<Cancelled, CoordError> {
        self.ask(|r| Command::Cancel(id, r)).await?
    }

    pub async fn view(&self, id: JobId) -> Result<Option<ActiveView>, CoordError> {
        self.ask(|r| Command::View(id, r)).await
    }

    pub async fn workers(&self) -> Result<Vec<WorkerView>, CoordError> {
        self.ask(Command::Workers).await
    }

    pub async fn register(&self, reg: Registration) -> Result<RegisterOutcome, CoordError> {
        self.ask(|r| Command::Register(reg, r)).await
    }

    pub async fn heartbeat(
        &self,
        worker: WorkerId,
        instance: InstanceId,
        running: Vec<LeaseRef>,
        hashrate: f64,
    ) -> Result<Vec<LeaseRef>, CoordError> {
        self.ask(|reply| Command::Heartbeat { worker, instance, running, hashrate, reply }).await?
    }

    pub async fn progress(&self, worker: WorkerId, lease: LeaseRef, data: Value) -> Result<(), CoordError> {
        self.ask(|reply| Command::Progress { worker, lease, data, reply }).await?
    }

    pub async fn complete(&self, worker: WorkerId, lease: LeaseRef, outcome: Outcome) -> Result<bool, CoordError> {
        self.ask(|reply| Command::Complete { worker, lease, outcome, reply }).await?
    }

    pub async fn secret(&self, worker: WorkerId, lease: LeaseRef, name: String) -> Result<Option<Secret>, CoordError> {
        self.ask(|reply| Command::Secret { worker, lease, name, reply }).await?
    }

    pub async fn worker_state(&self, worker: WorkerId, instance: InstanceId, state: WorkerState) {
        let _ = self.tx.send(Command::WorkerState { worker, instance, state }).await;
    }

    /// The mining unit behind `lease`, if it is one, for checking shares.
    pub async fn unit_work(&self, worker: WorkerId, lease: LeaseRef) -> Result<Option<UnitWork>, CoordError> {
        self.ask(|reply| Command::UnitWork { worker, lease, reply }).await?
    }

    pub async fn invalid_shares(&self, worker: WorkerId, unit: JobId, count: u32) {
        let _ = self.tx.send(Command::InvalidShares { worker, unit, count }).await;
    }

    pub async fn refresh_gauges(&self) {
        let _ = self.ask(Command::RefreshGauges).await;
    }
}

/// What the coordinator works with.
#[derive(Debug)]
pub struct Deps {
    pub store: Store,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub mqtt: MqttOut,
}

pub fn channel() -> (Coordinator, Inbox) {
    let (tx, rx) = mpsc::channel(65_536);
    (Coordinator { tx }, Inbox { rx })
}

#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Command>,
}

struct Actor {
    engine: Engine,
    deps: Deps,
    /// Per-job secrets (e.g. a user's own API key): memory only, never stored.
    secrets: HashMap<JobId, HashMap<String, Secret>>,
    ai_cache: AiCache,
    /// Cache keys of `ai.query` jobs whose answers may be cached.
    cache_pending: HashMap<JobId, String>,
    positions_dirty: bool,
    sent_positions: HashMap<JobId, u64>,
}

/// Runs until `cancel`, then lets the store flush what it was given.
pub async fn run(engine: Engine, inbox: Inbox, deps: Deps, ai_cache: AiCache, cancel: CancellationToken) {
    let heartbeat = engine.config().heartbeat;
    let mut actor = Actor {
        engine,
        deps,
        secrets: HashMap::new(),
        ai_cache,
        cache_pending: HashMap::new(),
        positions_dirty: false,
        sent_positions: HashMap::new(),
    };
    let mut rx = inbox.rx;
    let mut tick = tokio::time::interval(heartbeat / 4);
    let mut positions = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(cmd) => actor.handle(cmd),
                None => break,
            },
            _ = tick.tick() => {
                actor.engine.tick(Now::system());
                actor.apply();
            }
            _ = positions.tick(), if actor.positions_dirty => actor.send_positions(),
        }
    }
    let (tx, rx) = oneshot::channel();
    actor.deps.store.after_commit(move |_| {
        let _ = tx.send(());
    });
    let _ = rx.await;
}

impl Actor {
    fn handle(&mut self, cmd: Command) {
        let now = Now::system();
        match cmd {
            Command::Submit(mut jobs, reply) => {
                let mut keys = Vec::new();
                let mut cacheable = Vec::new();
                for j in &mut jobs {
                    if let Some(key) = j.api_key.take() {
                        keys.push((j.id, key));
                    }
                    if let JobSpec::AiQuery(p) = &j.spec
                        && p.cacheable()
                    {
                        let key = p.cache_key();
                        match self.ai_cache.get(&key, now.mono) {
                            Some(answer) => j.answer = Some(answer),
                            None => cacheable.push((j.id, key)),
                        }
                    }
                }
                match self.engine.submit(now, jobs) {
                    Ok(accepted) => {
                        for (id, key) in keys {
                            self.secrets.entry(id).or_default().insert(API_KEY_SECRET.into(), key);
                        }
                        self.cache_pending.extend(cacheable);
                        self.apply();
                        self.after_commit(reply, Ok(accepted));
                    }
                    Err(full) => {
                        let _ = reply.send(Err(full.into()));
                    }
                }
            }
            Command::Cancel(id, reply) => {
                if self.engine.cancel(now, id) {
                    self.apply();
                    self.after_commit(reply, Ok(Cancelled::Now));
                } else {
                    let _ = reply.send(Ok(Cancelled::NotActive));
                }
            }
            Command::View(id, reply) => {
                let _ = reply.send(self.engine.view(&id));
            }
            Command::Workers(reply) => {
                let _ = reply.send(self.worker_views(now));
            }
            Command::Register(reg, reply) => {
                let out = self.engine.register(now, reg);
                self.apply();
                let _ = reply.send(out);
            }
            Command::Heartbeat { worker, instance, running, hashrate, reply } => {
                let out = self.engine.heartbeat(now, &worker, instance, &running, hashrate);
                self.apply();
                let _ = reply.send(out.map_err(Into::into));
            }
            Command::Progress { worker, lease, data, reply } => {
                let out = self.engine.progress(now, &worker, &lease, data);
                self.apply();
                let _ = reply.send(out.map_err(Into::into));
            }
            Command::Complete { worker, lease, outcome, reply } => {
                match self.engine.complete(now, &worker, &lease, outcome) {
                    Ok(duplicate) => {
                        self.apply();
                        self.after_commit(reply, Ok(duplicate));
                    }
                    Err(e) => {
                        self.deps.metrics.rejected_callbacks.inc();
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Secret { worker, lease, name, reply } => {
                let out = self
                    .engine
                    .check_lease(&worker, &lease)
                    .map(|()| self.secrets.get(&lease.job_id).and_then(|s| s.get(&name)).cloned());
                let _ = reply.send(out.map_err(Into::into));
            }
            Command::WorkerState { worker, instance, state } => {
                self.engine.worker_state(now, &worker, instance, state);
                self.apply();
            }
            Command::UnitWork { worker, lease, reply } => {
                let out = self.engine.unit_work(&worker, &lease);
                if out.is_err() {
                    self.deps.metrics.rejected_callbacks.inc();
                }
                let _ = reply.send(out.map_err(Into::into));
            }
            Command::InvalidShares { worker, unit, count } => {
                if self.engine.invalid_shares(&worker, &unit, count) {
                    tracing::warn!(
                        worker = %worker,
                        limit = self.engine.config().invalid_share_limit,
                        "worker quarantined: too many invalid shares; it gets no work until it registers again"
                    );
                }
            }
            Command::RefreshGauges(reply) => {
                let q = self.engine.queue();
                self.deps.metrics.set_gauges(
                    q.depth_by_priority(),
                    q.len(),
                    self.engine.running(),
                    self.engine.workers().len(),
                );
                let _ = reply.send(());
            }
        }
    }

    /// Replies once everything this command changed is durable.
    fn after_commit<T: Send + 'static>(&self, reply: Reply<Result<T, CoordError>>, value: Result<T, CoordError>) {
        self.deps.store.after_commit(move |committed| {
            let _ = reply.send(committed.map_err(|()| CoordError::Store).and(value));
        });
    }

    fn apply(&mut self) {
        for effect in self.engine.take_effects() {
            match effect {
                Effect::Store(op) => {
                    match &op {
                        StoreOp::Insert { .. } => self.deps.metrics.entered(faena_proto::jobs::JobState::Queued),
                        StoreOp::Dispatched { .. } | StoreOp::Started { .. } => {
                            self.deps.metrics.entered(faena_proto::jobs::JobState::Running)
                        }
                        StoreOp::Requeued { .. } => {
                            self.deps.metrics.redeliveries.inc();
                        }
                        StoreOp::Finished { state, .. } => self.deps.metrics.entered(*state),
                    }
                    self.positions_dirty = true;
                    self.deps.store.write(op);
                }
                Effect::Dispatch { worker, mut unit, waited } => {
                    if let Some(s) = self.secrets.get(&unit.job_id) {
                        unit.secrets = s.keys().cloned().collect();
                    } else if unit.params.get("own_key") == Some(&Value::Bool(true)) {
                        // Its key was lost with a restart: the worker is told
                        // to fetch it, finds it gone, and fails the job
                        // rather than run it with another key.
                        unit.secrets = vec![API_KEY_SECRET.into()];
                    }
                    self.deps.metrics.dispatch_latency.observe(waited.as_secs_f64());
                    self.deps.mqtt.dispatch(&worker, &unit);
                }
                Effect::Control { worker, control } => self.deps.mqtt.control(&worker, &control),
                Effect::Notify { job, event } => self.notify(job, event),
                Effect::RangeReturned { .. } => {
                    self.deps.metrics.redeliveries.inc();
                }
            }
        }
    }

    fn notify(&mut self, job: JobId, event: JobEvent) {
        if event.is_final() {
            // Every way a job ends passes here: its secrets go with it.
            self.secrets.remove(&job);
            if let Some(key) = self.cache_pending.remove(&job)
                && let JobEvent::Succeeded { result, .. } = &event
            {
                self.ai_cache.put(key, result, std::time::Instant::now());
            }
            // Always scheduled: a watcher may subscribe between now and the commit,
            // and it reads the store, which shows the outcome only after it.
            self.sent_positions.remove(&job);
            let hub = self.deps.hub.clone();
            self.deps.store.after_commit(move |_| hub.publish(job, event));
        } else if matches!(event, JobEvent::Progress { .. })
            && self.engine.kind(&job) == Some(faena_proto::jobs::JobKind::AiQuery)
        {
            // A streamed answer: kept for watchers that arrive mid-answer.
            self.deps.hub.publish_kept(job, event);
        } else {
            if matches!(event, JobEvent::Requeued { .. }) {
                // The answer will start again from its first piece.
                self.deps.hub.reset_kept(&job);
            }
            if self.deps.hub.is_watched(&job) {
                self.deps.hub.publish(job, event);
            }
        }
    }

    fn send_positions(&mut self) {
        self.positions_dirty = false;
        let watched = self.deps.hub.watched();
        self.sent_positions.retain(|id, _| watched.contains(id));
        for id in watched {
            let Some(position) = self.engine.queue().position(&id) else { continue };
            if self.sent_positions.insert(id, position) != Some(position) {
                self.deps.hub.publish(id, JobEvent::Queued { position });
            }
        }
    }

    fn worker_views(&self, now: Now) -> Vec<WorkerView> {
        self.engine
            .workers()
            .iter()
            .map(|w| {
                let mut kinds: Vec<String> = w.caps.kinds.iter().map(|k| k.as_str().to_owned()).collect();
                kinds.sort();
                WorkerView {
                    id: w.id.to_string(),
                    state: w.availability.as_str().into(),
                    slots: w.caps.slots,
                    running: w.running.len() as u32,
                    kinds,
                    cores: w.caps.cores,
                    memory_bytes: w.caps.memory_bytes,
                    aes_ni: w.caps.aes_ni,
                    huge_pages: w.caps.huge_pages,
                    randomx_modes: w.caps.randomx_modes.clone(),
                    hashrate: w.hashrate,
                    ai_providers: w.caps.ai_providers.clone(),
                    ai_slots: w.caps.ai_slots,
                    invalid_shares: w.invalid_shares,
                    version: w.caps.version.clone(),
                    last_seen_ms: now.mono.saturating_duration_since(w.last_seen).as_millis() as u64,
                }
            })
            .collect()
    }
}
