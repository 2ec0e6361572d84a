//! The coordinator loop's state: the engine, per-job secrets (memory only),
//! the AI answer cache, and what queue positions watchers were last told.
//! Each command is applied to the engine, then its effects are carried out.

use std::collections::HashMap;
use std::sync::Arc;

use faena_proto::ai::API_KEY_SECRET;
use faena_proto::api::{JobEvent, WorkerView};
use faena_proto::ids::{JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState};
use faena_proto::secret::Secret;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::outgoing::{self, Outgoing};
use super::{Cancelled, Command, CoordError, Coordinator, Deps, Reply};
use crate::engine::{Effect, Engine, Now, StoreOp, SubmitError};
use crate::store::{CommitFailed, StoreError};

/// How long stopping waits for the store to commit what it was given.
const STORE_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) struct Actor {
    pub(super) engine: Engine,
    pub(super) deps: Deps,
    /// Its own inbox, for verifications to come back in.
    pub(super) inbox: Coordinator,
    /// Verifications running off the loop.
    pub(super) tasks: TaskTracker,
    /// Per-job secrets (e.g. a user's own API key): memory only, never stored.
    secrets: HashMap<JobId, HashMap<String, Secret>>,
    /// Cache keys of `ai.query` jobs whose answers may be cached.
    cache_pending: HashMap<JobId, String>,
    pub(super) positions_dirty: bool,
    sent_positions: HashMap<JobId, u64>,
    /// AI answers a lost attempt cut off, continued by the next.
    continued: super::continued::Continued,
    /// What this turn gave the store (changes, then what waits on them),
    /// handed over whole at its end ([`Actor::flush`]): a job stored and
    /// dispatched in one turn is one commit group.
    batch: faena_store::Batch,
    /// Where a commit says which units it let out.
    sent: tokio::sync::mpsc::UnboundedSender<super::Sent>,
    /// What this turn sends to workers once its changes are stored.
    outgoing: Vec<Outgoing>,
}

impl Actor {
    pub(super) fn new(
        engine: Engine,
        deps: Deps,
        inbox: Coordinator,
        sent: tokio::sync::mpsc::UnboundedSender<super::Sent>,
    ) -> Self {
        Self {
            engine,
            deps,
            inbox,
            tasks: TaskTracker::new(),
            secrets: HashMap::new(),
            cache_pending: HashMap::new(),
            positions_dirty: false,
            sent_positions: HashMap::new(),
            continued: Default::default(),
            batch: Default::default(),
            sent,
            outgoing: Vec::new(),
        }
    }

    /// These units went out, and their leases' terms start; those that
    /// did not go back to the queue.
    pub(super) fn sent(&mut self, sent: &super::Sent) {
        let now = Now::system();
        self.engine.sent(now, &sent.out);
        if !sent.kept.is_empty() {
            self.engine.not_sent(now, &sent.kept);
            self.apply();
        }
    }

    /// Gives the store what this turn gathered, with what goes to workers
    /// once it is stored last: the units of one turn (a call's results
    /// free slots one by one) go out together, several in one message to a
    /// worker that reads them so.
    pub(super) fn flush(&mut self) {
        if !self.outgoing.is_empty() {
            let outgoing = std::mem::take(&mut self.outgoing);
            let mqtt = self.deps.mqtt.clone();
            let sent = self.sent.clone();
            self.batch.after_commit(move |committed| {
                let stored = committed.is_ok();
                if !stored {
                    tracing::warn!(
                        messages = outgoing.len(),
                        "not sent to workers: the changes behind them were not stored"
                    );
                }
                // The engine hears which units went out (their leases'
                // terms start) and which did not (their jobs go back).
                let units = outgoing::send(&outgoing, &mqtt, stored);
                if !units.out.is_empty() || !units.kept.is_empty() {
                    let _ = sent.send(units);
                }
            });
        }
        self.deps.store.send(&mut self.batch);
    }

    /// Something the engine was waiting for is due (see `Engine::next_wake`).
    pub(super) fn wake(&mut self) {
        self.engine.wake(Now::system());
        self.apply();
    }

    pub(super) fn tick(&mut self) {
        let now = Now::system();
        // Nothing is handed out that could not be stored or sent: units go
        // to workers only while this master holds the lead.
        self.engine.pause_dispatch(now, !self.deps.store.is_healthy() || !self.deps.mqtt.leads());
        self.engine.tick(now);
        self.apply();
    }

    /// Ends verifications still waiting (their shares come back unverified),
    /// waits for running ones (bounded), then for the store to flush.
    pub(super) async fn stop(mut self) {
        self.flush();
        self.deps.verifier.close();
        self.tasks.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.tasks.wait()).await;
        let (tx, rx) = oneshot::channel();
        self.deps.store.after_commit(move |_| {
            let _ = tx.send(());
        });
        // A store that cannot commit retries until the last handle goes:
        // stopping does not wait on it for ever.
        if tokio::time::timeout(STORE_FLUSH, rx).await.is_err() {
            tracing::error!("the store did not flush within {} s; stopping without it", STORE_FLUSH.as_secs());
        }
    }

    pub(super) fn handle(&mut self, cmd: Command) {
        let now = Now::system();
        match cmd {
            Command::Submit(jobs, known, reply) => self.submit(now, jobs, known, reply),
            Command::Flushed(reply) => self.after_commit(reply, Ok(())),
            Command::SetGroup(name, limits, reply) => match self.engine.set_group(now, &name, limits) {
                Ok(()) => {
                    self.apply();
                    self.after_commit(reply, Ok(()));
                }
                Err(full) => {
                    let _ = reply.send(Err(CoordError::Refused(SubmitError::Groups(full))));
                }
            },
            Command::PutSchedule(name, spec, reply) => match self.engine.put_schedule(now, &name, spec) {
                Ok(view) => {
                    self.apply();
                    self.after_commit(reply, Ok(view));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::DeleteSchedule(name, reply) => {
                let gone = self.engine.delete_schedule(&name);
                self.apply();
                self.after_commit(reply, Ok(gone));
            }
            Command::Schedules(reply) => {
                let _ = reply.send(self.engine.schedules());
            }
            Command::Groups(reply) => {
                let _ = reply.send(self.engine.groups());
            }
            Command::Cancel(id, reply) => {
                if self.engine.cancel(now, id) {
                    self.apply();
                    self.after_commit(reply, Ok(Cancelled::Now));
                } else {
                    let _ = reply.send(Ok(Cancelled::NotActive));
                }
            }
            Command::Reprioritise(id, priority, reply) => match self.engine.reprioritise(now, id, priority) {
                Ok(moved) => {
                    self.apply();
                    self.after_commit(reply, Ok(moved));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::View(id, reply) => {
                let _ = reply.send(self.engine.view(&id));
            }
            Command::Workers(reply) => {
                let _ = reply.send(self.worker_views(now));
            }
            Command::Register(reg, reply) => {
                let out = self.engine.register(now, reg);
                self.apply();
                let _ = reply.send(out.map_err(Into::into));
            }
            Command::MayClaim { worker, instance, session, reply } => {
                let _ = reply.send(self.engine.may_claim(&worker, instance, session.as_ref()).map_err(Into::into));
            }
            Command::Heartbeat { worker, session, instance, running, hashrate, reply } => {
                let Some(reply) = self.admit(&worker, session, reply) else { return };
                let out = self.engine.heartbeat(now, &worker, instance, &running, hashrate);
                self.apply();
                let _ = reply.send(out.map_err(Into::into));
            }
            Command::WorkerConfig { worker, session, instance, slots, applied, reply } => {
                let Some(reply) = self.admit(&worker, session, reply) else { return };
                let out = self.engine.worker_config(now, &worker, instance, slots, applied);
                self.apply();
                let _ = reply.send(out.map_err(Into::into));
            }
            Command::Progress { worker, session, lease, data, reply } => {
                let Some(reply) = self.admit(&worker, session, reply) else { return };
                self.progress(now, worker, lease, data, reply);
            }
            Command::Complete { worker, session, lease, outcome, reply } => {
                let Some(reply) = self.admit(&worker, session, reply) else { return };
                self.complete(now, worker, lease, outcome, reply);
            }
            Command::CompleteMany { worker, session, results } => match self.session(&worker, session) {
                Ok(()) => {
                    for (lease, outcome, reply) in results {
                        self.complete(now, worker.clone(), lease, outcome, reply);
                    }
                }
                Err(e) => {
                    for (_, _, reply) in results {
                        let _ = reply.send(Err(e.clone().into()));
                    }
                }
            },
            Command::Verified(v) => self.verified(now, v),
            Command::Secret { worker, session, lease, name, reply } => {
                let Some(reply) = self.admit(&worker, session, reply) else { return };
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
            Command::ReplaceTemplate { job, params, grace, reply } => {
                let replaced = self.engine.replace_template(now, job, *params, grace);
                self.apply();
                let _ = reply.send(replaced);
            }
            Command::Retire(workers, hold, reply) => {
                self.engine.retire_workers(now, workers, hold);
                self.apply();
                let _ = reply.send(());
            }
            Command::Load(reply) => {
                let _ = reply.send(self.engine.load(now));
            }
            Command::RefreshGauges(reply) => {
                let q = self.engine.queue();
                self.deps.metrics.set_gauges(
                    q.depth_by_priority(),
                    q.len(),
                    self.engine.running(),
                    self.engine.workers().len(),
                );
                let mut states = [("online", 0), ("draining", 0), ("quarantined", 0)];
                for w in self.engine.workers().iter() {
                    let shown = self.engine.workers().shown_state(w);
                    if let Some(s) = states.iter_mut().find(|(name, _)| *name == shown) {
                        s.1 += 1;
                    }
                }
                self.deps.metrics.set_load(&states, &self.engine.load(now));
                self.deps.metrics.set_groups(self.engine.group_counts());
                let _ = reply.send(());
            }
        }
    }

    /// Lets a worker call through only with its registration's session (a
    /// lease read off the wire is not enough to act on it): the reply back
    /// to answer it with, or None when the call was refused (and answered).
    fn admit<T>(
        &self,
        worker: &WorkerId,
        session: Option<Secret>,
        reply: Reply<Result<T, CoordError>>,
    ) -> Option<Reply<Result<T, CoordError>>> {
        match self.session(worker, session) {
            Ok(()) => Some(reply),
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                None
            }
        }
    }

    /// Whether `session` is `worker`'s current one; a call without it is counted and logged.
    fn session(&self, worker: &WorkerId, session: Option<Secret>) -> Result<(), crate::engine::LeaseError> {
        let checked = self.engine.check_session(worker, session.as_ref().map(Secret::expose));
        if let Err(crate::engine::LeaseError::Session(_)) = checked {
            self.deps.metrics.rejected_callbacks.inc();
            tracing::warn!(worker = %worker, "worker call without the worker's current session refused");
        }
        checked
    }

    fn submit(
        &mut self,
        now: Now,
        mut jobs: Vec<crate::engine::NewJob>,
        known: HashMap<JobId, faena_store::Outcome>,
        reply: Reply<Result<Vec<crate::engine::Accepted>, CoordError>>,
    ) {
        if !self.deps.store.is_healthy() {
            let _ = reply.send(Err(CoordError::Store(CommitFailed(Arc::new(StoreError::Unavailable)))));
            return;
        }
        let mut keys = Vec::new();
        let mut cacheable = Vec::new();
        for j in &mut jobs {
            if let Some(key) = j.api_key.take() {
                keys.push((j.id, key));
            }
            if let JobSpec::AiQuery(p) = &j.spec
                && p.cacheable()
                && let Some(key) = self.deps.ai_cache.key(&j.submitter, p.own_key, &p.cache_key())
            {
                match self.deps.ai_cache.get(&key, now.mono) {
                    Some(answer) => j.answer = Some(answer),
                    None => cacheable.push((j.id, key)),
                }
            }
        }
        match self.engine.submit_after(now, jobs, &known) {
            Ok(accepted) => {
                for (id, key) in keys {
                    self.secrets.entry(id).or_default().insert(API_KEY_SECRET.into(), key);
                }
                self.cache_pending.extend(cacheable);
                self.apply();
                self.after_commit(reply, Ok(accepted));
            }
            Err(SubmitError::Full(full)) => {
                let _ = reply.send(Err(full.into()));
            }
            Err(refused) => {
                let _ = reply.send(Err(CoordError::Refused(refused)));
            }
        }
    }

    /// Replies once everything this command changed is durable.
    pub(super) fn after_commit<T: Send + 'static>(
        &mut self,
        reply: Reply<Result<T, CoordError>>,
        value: Result<T, CoordError>,
    ) {
        self.batch.after_commit(move |committed| {
            let _ = reply.send(committed.map_err(CoordError::Store).and(value));
        });
    }

    /// Carries out the engine's effects in order. What goes to workers
    /// (units, controls) is published only once the store has committed
    /// every change before it: a master that dies first has published
    /// nothing its successor does not know of.
    pub(super) fn apply(&mut self) {
        for effect in self.engine.take_effects() {
            match effect {
                Effect::Store(op) => {
                    match &op {
                        StoreOp::Insert { state, .. } => self.deps.metrics.entered(*state),
                        StoreOp::Dispatched { .. } | StoreOp::Started { .. } => {
                            self.deps.metrics.entered(JobState::Running)
                        }
                        StoreOp::Requeued { .. } => {
                            self.deps.metrics.redeliveries.inc();
                        }
                        StoreOp::Finished { state, .. } => self.deps.metrics.entered(*state),
                        StoreOp::Released { state, .. } => self.deps.metrics.entered(*state),
                        StoreOp::Reprioritised { .. } | StoreOp::Named { .. } | StoreOp::Fired { .. } => {}
                    }
                    self.positions_dirty = true;
                    self.batch.write(op);
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
                    self.continued.dispatching(&mut unit);
                    self.deps.metrics.waited(waited.as_secs_f64());
                    let batches = self.engine.workers().get(&worker).is_some_and(|w| w.caps.unit_batches);
                    self.outgoing.push(Outgoing::Unit(worker, unit, batches));
                }
                Effect::Control { worker, control } => self.outgoing.push(Outgoing::Control(worker, control)),
                Effect::Notify { job, event } => self.notify(job, event),
                Effect::RangeReturned { .. } => {
                    self.deps.metrics.redeliveries.inc();
                }
            }
        }
    }

    fn notify(&mut self, job: JobId, event: JobEvent) {
        count_ai(&self.deps.metrics, &event);
        if event.is_final() {
            // Every way a job ends passes here: its secrets go with it.
            self.secrets.remove(&job);
            self.continued.ended(&job);
            if let Some(key) = self.cache_pending.remove(&job)
                && let JobEvent::Succeeded { result, .. } = &event
            {
                self.deps.ai_cache.put(key, result, std::time::Instant::now());
            }
            // Always scheduled: a watcher may subscribe between now and the commit,
            // and it reads the store, which shows the outcome only after it.
            self.sent_positions.remove(&job);
            // Told only once stored: no watcher hears of an outcome a
            // restart would not know.
            let hub = self.deps.hub.clone();
            self.batch.after_commit(move |committed| {
                if committed.is_ok() {
                    hub.publish(job, event);
                }
            });
        } else if matches!(event, JobEvent::Progress { .. }) && self.engine.kind(&job) == Some(JobKind::AiQuery) {
            // A streamed answer: kept for watchers that arrive mid-answer.
            let event = self.continued.renumber(job, event);
            self.deps.hub.publish_kept(job, event);
        } else {
            let mut event = event;
            if let JobEvent::Requeued { continues, .. } = &mut event {
                // Part of an answer was written: the next attempt continues
                // it (watchers are told). Else it starts again from its
                // first piece.
                let ai = self.engine.kind(&job) == Some(JobKind::AiQuery);
                *continues = ai && self.continued.lost(job, &self.deps.hub.kept(&job));
                if !*continues {
                    self.deps.hub.reset_kept(&job);
                }
            }
            self.deps.hub.publish(job, event);
        }
    }

    /// Tells watchers of queued jobs where their job stands now, when it
    /// moved: O(log n) per watched job.
    pub(super) fn send_positions(&mut self) {
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
                    state: self.engine.workers().shown_state(w).into(),
                    slots: w.caps.slots,
                    running: w.running.len() as u32,
                    kinds,
                    cores: w.caps.cores,
                    memory_bytes: w.caps.memory_bytes,
                    aes_ni: w.caps.aes_ni,
                    huge_pages: w.caps.huge_pages,
                    randomx_modes: w.caps.randomx_modes.iter().map(|m| m.as_str().to_owned()).collect(),
                    hashrate: w.hashrate,
                    ai_providers: w.caps.ai_providers.iter().map(|p| p.as_str().to_owned()).collect(),
                    ai_slots: w.caps.ai_slots,
                    ai_models: w.caps.ai_models.iter().map(|(p, m)| format!("{p}/{m}")).collect(),
                    invalid_shares: w.invalid_shares,
                    version: w.caps.version.clone(),
                    config: w.config.clone(),
                    last_seen_ms: now.mono.saturating_duration_since(w.last_seen).as_millis() as u64,
                }
            })
            .collect()
    }
}

/// Counts what AI providers did: output tokens of a generated answer (not
/// one from the result cache), and each time one could not answer and the
/// worker said so (a retry or a hand-over; see `AiStatus`).
fn count_ai(metrics: &crate::metrics::Metrics, event: &JobEvent) {
    match event {
        JobEvent::Succeeded { result, .. } if result.get("finish_reason").is_some() => {
            if let Ok(out) = <faena_proto::ai::AiOutput as serde::Deserialize>::deserialize(result)
                && !out.cached
            {
                metrics.ai_tokens(out.provider, out.usage.map_or(0, |u| u.output_tokens));
            }
        }
        JobEvent::Progress { data, .. } if data.get("status").is_some() => {
            if let Ok(status) = <faena_proto::ai::AiStatus as serde::Deserialize>::deserialize(data) {
                metrics.ai_error(status.provider);
            }
        }
        _ => {}
    }
}
