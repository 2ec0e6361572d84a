//! The task that owns the [`Engine`]: adapters (HTTP, gRPC, MQTT) send it
//! commands, it applies them and carries out the resulting effects in order —
//! store writes, MQTT publishes, and notifications. Anything a client is told
//! (a 202, an accepted result, a final event) waits until the store has
//! committed the change behind it.
//!
//! Workers' reports arrive raw. A mining unit's shares are re-hashed off this
//! task ([`reports`]) and come back as a [`Command::Verified`] carrying
//! [`VerifiedShares`](crate::verify::VerifiedShares), the only form the
//! engine takes shares in; the worker's call is answered after that.
//!
//! - [`actor`]: the loop's state and how each command and effect is handled.
//! - [`reports`]: shape checks of unit reports and the verification round trip.
//! - [`pool_link`]: the coordinator as the pool's job engine.

mod actor;
mod continued;
mod outgoing;
mod pool_link;
mod reports;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::api::WorkerView;
use faena_proto::ids::{InstanceId, JobId, WorkerId};
use faena_proto::mqtt::WorkerState;
use faena_proto::secret::Secret;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ai_cache::AiCache;
use crate::engine::groups::{GroupView, Limits};
use crate::engine::schedules::{ScheduleSpec, ScheduleView};
use crate::engine::{Accepted, ActiveView, Engine, LeaseError, LeaseRef, NewJob, Outcome, QueueFull, SubmitError};
use crate::engine::{RegisterOutcome, Registration, Unmovable};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::mqtt::MqttOut;
use crate::store::{CommitFailed, Store};
use crate::verify::Verifier;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    #[error(transparent)]
    Refused(SubmitError),
    #[error(transparent)]
    Schedule(#[from] crate::engine::ScheduleError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Unmovable(#[from] Unmovable),
    /// A worker's report does not match the contract of its job's kind.
    #[error("{0}")]
    Malformed(String),
    #[error("{}", Self::STORE_UNAVAILABLE)]
    Store(#[source] CommitFailed),
    #[error("{}", Self::STOPPED)]
    Stopped,
}

impl CoordError {
    /// What a client is told when the store could not take a change.
    pub const STORE_UNAVAILABLE: &str = "the job store could not record this; try again later";
    /// What a client is told while the master stops.
    pub const STOPPED: &str = "the master is shutting down";
}

/// What became of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    Now,
    NotActive,
}

type Reply<T> = oneshot::Sender<T>;

/// The answer to an outcome: whether it had been taken already.
pub type Completed = Result<bool, CoordError>;

/// Who makes a worker call: its id and the session it presents.
pub type Caller = (WorkerId, Option<Secret>);

enum Command {
    Submit(Vec<NewJob>, HashMap<JobId, faena_store::Outcome>, Reply<Result<Vec<Accepted>, CoordError>>),
    /// Answers once everything before it is durable.
    Flushed(Reply<Result<(), CoordError>>),
    SetGroup(String, Option<Limits>, Reply<Result<(), CoordError>>),
    PutSchedule(String, ScheduleSpec, Reply<Result<ScheduleView, CoordError>>),
    DeleteSchedule(String, Reply<Result<bool, CoordError>>),
    Schedules(Reply<Vec<ScheduleView>>),
    Groups(Reply<Vec<GroupView>>),
    Cancel(JobId, Reply<Result<Cancelled, CoordError>>),
    Reprioritise(JobId, faena_proto::jobs::Priority, Reply<Result<JobId, CoordError>>),
    View(JobId, Reply<Option<ActiveView>>),
    Workers(Reply<Vec<WorkerView>>),
    Register(Registration, Reply<Result<RegisterOutcome, CoordError>>),
    MayClaim {
        worker: WorkerId,
        instance: InstanceId,
        session: Option<Secret>,
        reply: Reply<Result<(), CoordError>>,
    },
    Heartbeat {
        worker: WorkerId,
        session: Option<Secret>,
        instance: InstanceId,
        running: Vec<LeaseRef>,
        hashrate: f64,
        reply: Reply<Result<Vec<LeaseRef>, CoordError>>,
    },
    WorkerConfig {
        worker: WorkerId,
        session: Option<Secret>,
        instance: InstanceId,
        slots: (u32, u32),
        applied: faena_proto::settings::Applied,
        reply: Reply<Result<(), CoordError>>,
    },
    Progress {
        worker: WorkerId,
        session: Option<Secret>,
        lease: LeaseRef,
        data: Value,
        reply: Reply<Result<(), CoordError>>,
    },
    Complete {
        worker: WorkerId,
        session: Option<Secret>,
        lease: LeaseRef,
        outcome: Outcome,
        reply: Reply<Result<bool, CoordError>>,
    },
    /// Several outcomes of one worker's, in one turn: each answered on its own.
    CompleteMany {
        worker: WorkerId,
        session: Option<Secret>,
        results: Vec<(LeaseRef, Outcome, Reply<Completed>)>,
    },
    /// A mining unit's report whose shares were re-hashed off the loop.
    Verified(reports::Verified),
    Secret {
        worker: WorkerId,
        session: Option<Secret>,
        lease: LeaseRef,
        name: String,
        reply: Reply<Result<Option<Secret>, CoordError>>,
    },
    WorkerState {
        worker: WorkerId,
        instance: InstanceId,
        state: WorkerState,
    },
    RefreshGauges(Reply<()>),
    Load(Reply<crate::engine::Load>),
    Retire(Vec<WorkerId>, Duration, Reply<()>),
    /// A mining source moved on: its job takes the new template.
    ReplaceTemplate {
        job: JobId,
        params: Box<faena_proto::mine::MineParams>,
        grace: Duration,
        reply: Reply<Option<usize>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Cheap handle the adapters hold.
#[derive(Debug, Clone)]
pub struct Coordinator {
    tx: mpsc::Sender<Command>,
}

impl Coordinator {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CoordError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| CoordError::Stopped)?;
        rx.await.map_err(|_| CoordError::Stopped)
    }

    pub async fn submit(&self, jobs: Vec<NewJob>) -> Result<Vec<Accepted>, CoordError> {
        self.submit_after(jobs, HashMap::new()).await
    }

    /// Submits jobs some of which run after others; `known` is what the
    /// store says of parents the engine may no longer hold.
    pub async fn submit_after(
        &self,
        jobs: Vec<NewJob>,
        known: HashMap<JobId, faena_store::Outcome>,
    ) -> Result<Vec<Accepted>, CoordError> {
        self.ask(|r| Command::Submit(jobs, known, r)).await?
    }

    /// Sets (none: removes) a group's limits; answers once stored.
    pub async fn set_group(&self, name: String, limits: Option<Limits>) -> Result<(), CoordError> {
        self.ask(|r| Command::SetGroup(name, limits, r)).await?
    }

    /// Makes or replaces a schedule; answers once stored.
    pub async fn put_schedule(&self, name: String, spec: ScheduleSpec) -> Result<ScheduleView, CoordError> {
        self.ask(|r| Command::PutSchedule(name, spec, r)).await?
    }

    /// Removes a schedule; false if there was none.
    pub async fn delete_schedule(&self, name: String) -> Result<bool, CoordError> {
        self.ask(|r| Command::DeleteSchedule(name, r)).await?
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleView>, CoordError> {
        self.ask(Command::Schedules).await
    }

    /// Every group with jobs or limits.
    pub async fn groups(&self) -> Result<Vec<GroupView>, CoordError> {
        self.ask(Command::Groups).await
    }

    /// Waits until everything the engine did so far is stored.
    pub async fn flushed(&self) -> Result<(), CoordError> {
        self.ask(Command::Flushed).await?
    }

    pub async fn cancel(&self, id: JobId) -> Result<Cancelled, CoordError> {
        self.ask(|r| Command::Cancel(id, r)).await?
    }

    /// Moves a waiting job (or a mining job's remaining range) to
    /// `priority`; answers once stored, with the job moved (a unit's job).
    pub async fn reprioritise(&self, id: JobId, priority: faena_proto::jobs::Priority) -> Result<JobId, CoordError> {
        self.ask(|r| Command::Reprioritise(id, priority, r)).await?
    }

    pub async fn view(&self, id: JobId) -> Result<Option<ActiveView>, CoordError> {
        self.ask(|r| Command::View(id, r)).await
    }

    pub async fn workers(&self) -> Result<Vec<WorkerView>, CoordError> {
        self.ask(Command::Workers).await
    }

    pub async fn register(&self, reg: Registration) -> Result<RegisterOutcome, CoordError> {
        self.ask(|r| Command::Register(reg, r)).await?
    }

    /// Whether `caller` (from `instance`) may act as its worker ([`Engine::may_claim`]).
    pub async fn may_claim(&self, (worker, session): Caller, instance: InstanceId) -> Result<(), CoordError> {
        self.ask(|reply| Command::MayClaim { worker, instance, session, reply }).await?
    }

    /// Every call below comes from `caller`: a worker and the session it
    /// presents, which must be the one its registration holds.
    pub async fn heartbeat(
        &self,
        (worker, session): Caller,
        instance: InstanceId,
        running: Vec<LeaseRef>,
        hashrate: f64,
    ) -> Result<Vec<LeaseRef>, CoordError> {
        self.ask(|reply| Command::Heartbeat { worker, session, instance, running, hashrate, reply }).await?
    }

    /// A worker applied a live configuration ([`crate::engine::Engine::worker_config`]).
    pub async fn worker_config(
        &self,
        (worker, session): Caller,
        instance: InstanceId,
        slots: (u32, u32),
        applied: faena_proto::settings::Applied,
    ) -> Result<(), CoordError> {
        self.ask(|reply| Command::WorkerConfig { worker, session, instance, slots, applied, reply }).await?
    }

    /// A worker's progress report, as it came (a mining unit's is verified here).
    pub async fn progress(&self, (worker, session): Caller, lease: LeaseRef, data: Value) -> Result<(), CoordError> {
        self.ask(|reply| Command::Progress { worker, session, lease, data, reply }).await?
    }

    /// An attempt's outcome, as it came (a mining unit's output is verified here).
    pub async fn complete(
        &self,
        (worker, session): Caller,
        lease: LeaseRef,
        outcome: Outcome,
    ) -> Result<bool, CoordError> {
        self.ask(|reply| Command::Complete { worker, session, lease, outcome, reply }).await?
    }

    /// Several attempts' outcomes of one worker, taken in one turn (their
    /// writes share a commit); each answered as [`Coordinator::complete`] would.
    pub async fn complete_many(
        &self,
        (worker, session): Caller,
        results: Vec<(LeaseRef, Outcome)>,
    ) -> Result<Vec<Completed>, CoordError> {
        let mut answers = Vec::with_capacity(results.len());
        let results = results
            .into_iter()
            .map(|(lease, outcome)| {
                let (tx, rx) = oneshot::channel();
                answers.push(rx);
                (lease, outcome, tx)
            })
            .collect();
        self.tx.send(Command::CompleteMany { worker, session, results }).await.map_err(|_| CoordError::Stopped)?;
        let mut out = Vec::with_capacity(answers.len());
        for rx in answers {
            out.push(rx.await.unwrap_or(Err(CoordError::Stopped)));
        }
        Ok(out)
    }

    pub async fn secret(
        &self,
        (worker, session): Caller,
        lease: LeaseRef,
        name: String,
    ) -> Result<Option<Secret>, CoordError> {
        self.ask(|reply| Command::Secret { worker, session, lease, name, reply }).await?
    }

    pub async fn worker_state(&self, worker: WorkerId, instance: InstanceId, state: WorkerState) {
        let _ = self.tx.send(Command::WorkerState { worker, instance, state }).await;
    }

    /// Replaces a mining job's template (its units out are stopped and the
    /// new one is split at once): how many units were retired, None when
    /// the job is not live.
    pub async fn replace_template(
        &self,
        job: JobId,
        params: faena_proto::mine::MineParams,
        grace: Duration,
    ) -> Option<usize> {
        let params = Box::new(params);
        self.ask(|reply| Command::ReplaceTemplate { job, params, grace, reply }).await.ok().flatten()
    }

    /// What waits and what runs now.
    pub async fn load(&self) -> Result<crate::engine::Load, CoordError> {
        self.ask(Command::Load).await
    }

    /// Takes new work away from `workers` for `hold` (the autoscaler removes them next).
    pub async fn retire(&self, workers: Vec<WorkerId>, hold: Duration) -> Result<(), CoordError> {
        self.ask(|r| Command::Retire(workers, hold, r)).await
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
    pub verifier: Arc<Verifier>,
    pub ai_cache: AiCache,
    /// Told of the verified shares of jobs that mine a source.
    pub pool: Option<crate::pool::Pool>,
}

pub fn channel() -> (Coordinator, Inbox) {
    let (tx, rx) = mpsc::channel(65_536);
    let (sent_tx, sent_rx) = mpsc::unbounded_channel();
    (Coordinator { tx: tx.clone() }, Inbox { rx, tx, sent_rx, sent_tx })
}

/// The attempts whose units one commit let out (see `Engine::sent`), and
/// those it did not (`Engine::not_sent`).
#[derive(Debug, Default)]
struct Sent {
    out: Vec<(JobId, u32)>,
    kept: Vec<(JobId, u32)>,
}

#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Command>,
    /// For work done off the loop to come back in.
    tx: mpsc::Sender<Command>,
    /// Told by the store's writer, after a commit, which units went out.
    /// Not bounded by a count, as it must not lose one or block the writer:
    /// one message per commit group that dispatched, each bounded by the
    /// work units that group handed out, and read before anything else.
    sent_rx: mpsc::UnboundedReceiver<Sent>,
    sent_tx: mpsc::UnboundedSender<Sent>,
}

/// Runs until `cancel`, then lets the store flush what it was given.
pub async fn run(engine: Engine, inbox: Inbox, deps: Deps, cancel: CancellationToken) {
    let heartbeat = engine.config().heartbeat;
    let Inbox { mut rx, tx, mut sent_rx, sent_tx } = inbox;
    let mut actor = actor::Actor::new(engine, deps, Coordinator { tx }, sent_tx);
    let period = heartbeat / 4;
    let mut tick = tokio::time::interval(period);
    let mut ticked = Instant::now();
    let mut positions = tokio::time::interval(Duration::from_millis(200));
    // Something due before the next tick (a scheduled job, a timeout)
    // wakes the engine on time: one timer, moved only when that changes.
    let due = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(due);
    let mut armed = None;
    loop {
        let wake = actor.engine.next_wake();
        if wake != armed {
            if let Some(at) = wake {
                due.as_mut().reset(at.into());
            }
            armed = wake;
        }
        // Leases whose units went out start their terms before anything
        // else looks at them.
        while let Ok(sent) = sent_rx.try_recv() {
            actor.sent(&sent);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(sent) = sent_rx.recv() => actor.sent(&sent),
            () = &mut due, if armed.is_some() => {
                armed = None;
                actor.wake();
            }
            cmd = rx.recv() => match cmd {
                Some(cmd) => actor.handle(cmd),
                None => break,
            },
            _ = tick.tick() => {
                let at = Instant::now();
                if let Some(missed) = missed(ticked, at, heartbeat) {
                    tracing::warn!(
                        missed_ms = missed.as_millis() as u64,
                        "the master did not run for a while (stopped, starved or suspended): \
                         workers' silences and leases get that time back"
                    );
                    actor.engine.resumed(missed);
                }
                ticked = at;
                // What waited in the inbox (heartbeats among it) was sent
                // before this sweep for silent workers: it is heard first.
                for _ in 0..rx.len() {
                    let Ok(cmd) = rx.try_recv() else { break };
                    actor.handle(cmd);
                }
                let started = Instant::now();
                actor.tick();
                actor.deps.metrics.tick.observe(started.elapsed().as_secs_f64());
            }
            _ = positions.tick(), if actor.positions_dirty => actor.send_positions(),
        }
        actor.flush();
    }
    actor.stop().await;
}

/// How long the coordinator did not run, when its tick (every `heartbeat /
/// 4`) came more than a whole heartbeat late: the time past one period,
/// which its workers' silences and leases should not be charged.
fn missed(last: Instant, now: Instant, heartbeat: Duration) -> Option<Duration> {
    let gap = now.saturating_duration_since(last);
    (gap > heartbeat).then(|| gap - heartbeat / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_more_than_a_heartbeat_late_gives_back_what_was_missed() {
        let (t0, beat) = (Instant::now(), Duration::from_millis(400));
        assert_eq!(missed(t0, t0 + beat / 4, beat), None, "on time");
        assert_eq!(missed(t0, t0 + beat, beat), None, "late, within a heartbeat");
        assert_eq!(missed(t0, t0 + beat * 5, beat), Some(beat * 5 - beat / 4));
        assert_eq!(missed(t0 + beat, t0, beat), None, "a clock that did not move on");
    }
}
