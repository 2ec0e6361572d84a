//! faena-pool: mining with the outside world — sources of work (monerod's JSON-RPC for
//! solo mining, a Stratum pool), a Stratum server for XMRig miners, and the
//! accounting of everyone who mines.
//!
//! Each active source has a current [`Work`] (its templates). The Faena
//! workers mine it as a `randomx.mine` job of the engine — slot 0 of the
//! nonce space, split by speed — whose template is replaced in place when
//! the source moves on; Stratum miners each get a slot (the top nonce byte)
//! of one of its blobs. Every share, from either, is re-hashed by the
//! master's [`Verifier`] before it counts; a verified share that meets the
//! network's target becomes a block (`submit_block`), one that meets a
//! pool's goes upstream. Shares for the template just replaced are taken as
//! stale for a grace period.
//!
//! - [`template`]: templates, slots and the parameters mined from them.
//! - [`daemon`]: the monerod source; [`upstream`]: the pool source.
//! - [`stratum`]: the Stratum server, one task per miner connection.
//! - [`sources`]: a source's work moving on, the workers' job; [`seats`]: miners' slots.
//! - [`shares`]: what a verified share does (tallies, blocks, upstream).
//! - [`accounts`]: per-participant tallies and hashrates; [`db`]: what survives restarts.
//! - [`limits`]: what a source may cost (template pace, seed changes, blocks).
//! - [`engine`]: what the pool asks of the job engine, and [`meter`]: what it
//!   counts (the master implements both: the pool sits below it).
//! - [`replicas`]: the leader's side of Stratum on every master, and the wire;
//!   [`follower`]: a standby's pool, mirroring the leader's sources.

pub mod accounts;
mod budget;
mod config;
mod daemon;
pub mod db;
mod engine;
pub mod follower;
mod limits;
mod meter;
pub mod replicas;
mod seats;
mod shares;
mod sources;
pub mod stratum;
pub mod template;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faena_proto::ids::JobId;
use faena_proto::mining::{Participants, SourceSpec, SourceView, VerifierKey, VerifierView};
use faena_proto::secret::Secret;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use accounts::Accounts;
use budget::Budget;
pub use config::PoolConfig;
use db::Db;
pub use engine::{JobEngine, NotStarted};
use faena_verify::Verifier;
pub use meter::Meter;
pub use seats::Seat;
use sources::Source;
use stratum::Addresses;
pub use template::{Template, Work};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    Invalid(String),
    #[error("could not record the source")]
    Store(#[from] faena_store::StoreError),
    #[error("the source was removed while it was being added")]
    Vanished,
}

/// Template numbers of a leader start at its epoch shifted this far.
const EPOCH_SHIFT: u32 = 40;

/// How often the mining store's retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long an accepted share waits for its count to be in the store
/// before the miner is told the store is not answering.
const SAVE_WAIT: Duration = Duration::from_secs(5);

/// Counts asked to be in the store, and in it: a miner is told a share is
/// accepted once its count is saved, so a master killed the next moment
/// loses no share it accepted. Shares that arrive together share a write.
#[derive(Debug)]
struct Saving {
    /// Tickets given out: each after its share was counted in memory.
    asked: AtomicU64,
    /// The last ticket whose count is in the store.
    saved: watch::Sender<u64>,
    wake: Notify,
}

/// How a source's shares reach the world.
#[derive(Debug, Clone)]
enum Backend {
    Daemon {
        rpc: daemon::Rpc,
        wake: Arc<Notify>,
    },
    Pool {
        submit: mpsc::Sender<upstream::Submit>,
    },
    /// A follower's mirror of the leader's source: the leader submits.
    Leader,
}

#[derive(Debug, Default)]
struct State {
    sources: BTreeMap<String, Source>,
    accounts: Accounts,
    by_job: HashMap<JobId, String>,
}

#[derive(Debug, Default)]
struct Replicas {
    live: HashMap<String, u64>,
    generation: u64,
}

#[derive(Debug)]
struct Inner {
    cfg: PoolConfig,
    /// The leader's; a follower runs no jobs.
    engine: Option<Arc<dyn JobEngine>>,
    verifier: Arc<Verifier>,
    db: Db,
    metrics: Arc<dyn Meter>,
    http: reqwest::Client,
    state: Mutex<State>,
    budget: Mutex<Budget>,
    addresses: Mutex<Addresses>,
    miners: AtomicU64,
    seq: AtomicU64,
    /// The keys the verifier was last pinned to (the live sources').
    prepared: Mutex<Vec<Vec<u8>>>,
    saving: Saving,
    /// The leader's: the masters following it, by name, with their feed's
    /// generation; and a count that moves with every change of work.
    replicas: Mutex<Replicas>,
    fed: watch::Sender<u64>,
    /// A follower's: the leader it follows.
    link: Option<Arc<follower::Link>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// The handle everyone holds (HTTP, the Stratum server, the coordinator).
/// It reaches the engine only through [`JobEngine`].
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// Checks a source before it is recorded.
fn validate(spec: &SourceSpec) -> Result<(), PoolError> {
    let bad = |m: String| Err(PoolError::Invalid(m));
    match spec {
        SourceSpec::Daemon { url, wallet } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 512 {
                return bad(format!("a daemon's url is monerod's RPC address, http://host:port (got {url:?})"));
            }
            if !(90..=110).contains(&wallet.len()) || !wallet.chars().all(|c| c.is_ascii_alphanumeric()) {
                return bad("wallet must be a Monero address (95 or 106 base58 characters)".into());
            }
        }
        SourceSpec::Pool { url, user, pass } => {
            let urls = url.list();
            if urls.is_empty() || urls.len() > 16 {
                return bad("a pool needs 1 to 16 urls".into());
            }
            for u in &urls {
                upstream::Endpoint::parse(u).map_err(|e| PoolError::Invalid(e.to_string()))?;
            }
            if user.is_empty() || user.len() > 512 || pass.as_ref().is_some_and(|p| p.len() > 512) {
                return bad("user must be 1..=512 characters, pass at most 512".into());
            }
        }
    }
    Ok(())
}

impl Pool {
    fn new(
        cfg: PoolConfig,
        engine: Option<Arc<dyn JobEngine>>,
        verifier: Arc<Verifier>,
        db: Db,
        metrics: Arc<dyn Meter>,
        link: Option<Arc<follower::Link>>,
        first_seq: u64,
    ) -> Self {
        let rules = stratum::AddressRules {
            max_connections: cfg.max_connections,
            max_per_address: cfg.max_per_address,
            invalid_limit: cfg.invalid_limit,
            ban: cfg.ban,
            budget_share: cfg.address_share,
        };
        Self {
            inner: Arc::new(Inner {
                cfg,
                engine,
                verifier,
                db,
                metrics,
                http: faena_common::tls::http_client().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
                state: Mutex::default(),
                budget: Mutex::new(Budget::new(Instant::now())),
                addresses: Mutex::new(Addresses::new(rules)),
                miners: AtomicU64::new(0),
                seq: AtomicU64::new(first_seq),
                prepared: Mutex::default(),
                saving: Saving { asked: AtomicU64::new(0), saved: watch::channel(0).0, wake: Notify::new() },
                replicas: Mutex::default(),
                fed: watch::channel(0).0,
                link,
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        }
    }

    /// Reads back what the last run recorded and starts its sources. On a
    /// shared store, `epoch` is the lease's: template numbers start in its
    /// own range, so none is taken for another leader's by a follower.
    pub fn start(
        cfg: PoolConfig,
        engine: Arc<dyn JobEngine>,
        verifier: Arc<Verifier>,
        db: Db,
        loaded: db::Loaded,
        metrics: Arc<dyn Meter>,
        epoch: Option<i64>,
    ) -> Result<Self, faena_store::StoreError> {
        let first_seq = (epoch.unwrap_or(0).max(0) as u64).wrapping_shl(EPOCH_SHIFT) + 1;
        let pool = Self::new(cfg, Some(engine), verifier, db, metrics, None, first_seq);
        let now = Instant::now();
        {
            let mut st = pool.inner.state.lock();
            for (who, record) in loaded.participants {
                st.accounts.restore(who, record, now);
            }
        }
        for (id, spec, job) in loaded.sources {
            // The engine restored that job from its store: the source adopts
            // it, and its first template replaces the one it was left with.
            pool.launch(id, spec, job);
        }
        {
            let mut st = pool.inner.state.lock();
            for (source, block) in loaded.blocks {
                if let Some(s) = st.sources.get_mut(&source) {
                    s.blocks.push(block);
                }
            }
        }
        let p = pool.clone();
        pool.inner.tasks.spawn(async move { p.flush_loop().await });
        Ok(pool)
    }

    /// The pool of a master that stands by ([`follower`]): it mirrors the
    /// leader's sources through `link` and serves its own miners.
    pub fn follow_leader(
        cfg: PoolConfig,
        verifier: Arc<Verifier>,
        db: Db,
        metrics: Arc<dyn Meter>,
        link: follower::Link,
    ) -> Self {
        let link = Arc::new(link);
        let pool = Self::new(cfg, None, verifier, db, metrics, Some(link.clone()), 1);
        let p = pool.clone();
        pool.inner.tasks.spawn(async move { p.follow(link).await });
        let p = pool.clone();
        pool.inner.tasks.spawn(async move { p.flush_loop().await });
        pool
    }

    /// Stops every source and writes the tallies a last time.
    pub async fn stop(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await;
        self.flush().await;
    }

    pub fn config(&self) -> &PoolConfig {
        &self.inner.cfg
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.inner.verifier
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    async fn flush_loop(&self) {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                _ = every.tick() => {}
                () = self.inner.saving.wake.notified() => {}
            }
            if !self.flush().await {
                // The store is away: the counts wait, and so does the next try.
                tokio::select! {
                    () = self.inner.cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned = Some(std::time::Instant::now());
                self.prune().await;
            }
        }
    }

    /// The mining store's retention (`FAENA_MINING_RETENTION`).
    async fn prune(&self) {
        let Some(age) = self.inner.cfg.mining_retention else { return };
        match self.inner.db.prune(age, limits::BLOCKS_KEPT, faena_proto::mqtt::now_ms()).await {
            Ok((0, 0)) => {}
            Ok((blocks, participants)) => {
                tracing::info!(blocks, participants, "mining store: old blocks and quiet tallies deleted");
            }
            Err(e) => tracing::warn!(error = %e, "mining store: the retention could not delete; retrying later"),
        }
    }

    /// Adds what was counted since the last time to the store; false when
    /// the store did not take it (it is tried again with the next).
    async fn flush(&self) -> bool {
        self.inner.metrics.verifier_keys(&self.inner.verifier.key_states());
        let ticket = self.inner.saving.asked.load(Ordering::Acquire);
        let rows = self.inner.state.lock().accounts.take_unsaved();
        if let Err(e) = self.inner.db.add_tallies(rows.clone()).await {
            tracing::error!(error = %e, "could not save mining tallies; trying again");
            self.inner.state.lock().accounts.unsave(rows);
            return false;
        }
        match self.link() {
            Some(_) => self.report(&rows),
            // Only a follower reports its miners' work.
            None => drop(self.inner.state.lock().accounts.take_work()),
        }
        self.inner.saving.saved.send_if_modified(|saved| {
            let moved = ticket > *saved;
            *saved = (*saved).max(ticket);
            moved
        });
        true
    }

    /// Waits until what was counted so far is in the store (at most
    /// [`SAVE_WAIT`]); false when the store did not take it in time (it
    /// will, with a later write: nothing counted is dropped).
    pub async fn saved(&self) -> bool {
        let s = &self.inner.saving;
        let ticket = s.asked.fetch_add(1, Ordering::AcqRel) + 1;
        s.wake.notify_one();
        let mut saved = s.saved.subscribe();
        matches!(tokio::time::timeout(SAVE_WAIT, saved.wait_for(|at| *at >= ticket)).await, Ok(Ok(_)))
    }

    /// Records a source and starts mining it.
    pub async fn add_source(&self, spec: SourceSpec) -> Result<SourceView, PoolError> {
        validate(&spec)?;
        let id = uuid::Uuid::now_v7().to_string();
        self.inner.db.add_source(id.clone(), &spec, faena_proto::mqtt::now_ms()).await?;
        self.launch(id.clone(), spec, None);
        tracing::info!(source = %id, "mining source added");
        self.source(&id).ok_or(PoolError::Vanished)
    }

    fn launch(&self, id: String, spec: SourceSpec, job: Option<JobId>) {
        let cancel = self.inner.cancel.child_token();
        let (work, _) = watch::channel(None);
        let (backend, run): (Backend, BoxFuture<'static, ()>) = match &spec {
            SourceSpec::Daemon { url, wallet } => {
                let rpc = daemon::Rpc::new(self.inner.http.clone(), url);
                let wake = Arc::new(Notify::new());
                let run =
                    daemon::run(self.clone(), id.clone(), rpc.clone(), wallet.clone(), wake.clone(), cancel.clone());
                (Backend::Daemon { rpc, wake }, Box::pin(run))
            }
            SourceSpec::Pool { url, user, pass } => {
                let (tx, rx) = mpsc::channel(1024);
                let endpoints = url.list().iter().filter_map(|u| upstream::Endpoint::parse(u).ok()).collect();
                let login = upstream::Login { user: user.clone(), pass: Secret::new(pass.clone().unwrap_or_default()) };
                let run = upstream::run(self.clone(), id.clone(), endpoints, login, rx, cancel.clone());
                (Backend::Pool { submit: tx }, Box::pin(run))
            }
        };
        let mut source = Source::new(spec, work, backend, cancel);
        source.job = job;
        // Recorded, with the job it restored, before its task starts: work
        // the task fetches at once (a restored source's first template) must
        // find the source there, or it is dropped until the next refresh —
        // and must replace the restored job's template, or that job's units
        // go on mining a template no source knows, their shares uncounted.
        let mut st = self.inner.state.lock();
        if let Some(job) = job {
            st.by_job.insert(job, id.clone());
        }
        st.sources.insert(id, source);
        drop(st);
        self.feed_changed();
        self.inner.tasks.spawn(run);
    }

    /// Stops a source: its task ends, its workers' job is cancelled and its
    /// miners are disconnected (they log in again onto another source).
    pub async fn remove_source(&self, id: &str) -> Result<bool, PoolError> {
        let Some(source) = self.inner.state.lock().sources.remove(id) else { return Ok(false) };
        source.cancel.cancel();
        if let Some(job) = source.job {
            self.inner.state.lock().by_job.remove(&job);
            if let Some(engine) = &self.inner.engine {
                engine.stop(job).await;
            }
        }
        self.feed_changed();
        self.inner.db.remove_source(id.to_owned()).await?;
        self.pin_keys(None);
        tracing::info!(source = %id, "mining source removed");
        Ok(true)
    }

    pub fn sources(&self) -> Vec<SourceView> {
        self.inner.state.lock().sources.iter().map(|(id, s)| s.view(id)).collect()
    }

    pub fn source(&self, id: &str) -> Option<SourceView> {
        self.inner.state.lock().sources.get(id).map(|s| s.view(id))
    }

    pub fn participants(&self) -> Participants {
        Participants { participants: self.inner.state.lock().accounts.view(Instant::now()) }
    }

    pub fn verifier_view(&self) -> VerifierView {
        let v = &self.inner.verifier;
        let budget = self.budget_rate();
        VerifierView {
            mode: v.mode().as_str().to_owned(),
            threads: v.threads() as u32,
            capacity: v.capacity(),
            budget,
            over_budget: self.inner.budget.lock().over,
            share_interval_secs: self.share_interval().as_secs_f64(),
            miners: self.inner.miners.load(Ordering::Relaxed) as u32,
            keys: v
                .key_states()
                .into_iter()
                .map(|k| VerifierKey {
                    key: k.key,
                    hashing: k.hashing.into(),
                    dataset: k.dataset.into(),
                    building_secs: k.building_secs,
                    error: k.error,
                })
                .collect(),
        }
    }

    /// Shares per second Stratum miners may send. Before the verifier has
    /// measured itself, a light-mode thread's conservative 20/s.
    fn budget_rate(&self) -> f64 {
        let v = &self.inner.verifier;
        let capacity = v.capacity().unwrap_or(20.0 * v.threads() as f64);
        (capacity * self.inner.cfg.budget_share).max(1.0)
    }

    /// The interval vardiff aims at: the configured one, stretched so that
    /// all miners together stay inside the verification budget.
    pub fn share_interval(&self) -> Duration {
        let miners = self.inner.miners.load(Ordering::Relaxed) as f64;
        let floor = miners / self.budget_rate();
        self.inner.cfg.share_interval.max(Duration::from_secs_f64(floor.min(3600.0)))
    }

    /// Takes one share of `ip`'s from its address's part of the budget, from
    /// the unproven connections' part unless `proven` (the connection has
    /// had a share accepted), and from the whole; false (and counted) when
    /// any is spent. A share refused by the whole is not charged to the
    /// address or to the unproven part: a flood that spends the whole
    /// leaves the others' parts where they were.
    pub fn take_budget(&self, ip: IpAddr, proven: bool) -> bool {
        let rate = self.budget_rate();
        let now = Instant::now();
        let mut taken = self.inner.addresses.lock().take_quota(ip, rate, now);
        if taken {
            taken = self.inner.budget.lock().take(rate, proven, now);
            if !taken {
                self.inner.addresses.lock().give_back_quota(ip);
            }
        }
        if !taken {
            self.inner.budget.lock().over += 1;
            self.inner.metrics.pool_shares("over_budget", 1);
        }
        taken
    }

    /// A miner connects from `ip`: refused when banned or over the caps.
    pub fn connect(&self, ip: IpAddr) -> Result<(), stratum::Refusal> {
        self.inner.addresses.lock().connect(ip, Instant::now())
    }

    pub fn disconnect(&self, ip: IpAddr) {
        self.inner.addresses.lock().disconnect(ip, Instant::now());
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.inner.addresses.lock().is_banned(ip, Instant::now())
    }

    pub fn ban(&self, ip: IpAddr) {
        self.inner.addresses.lock().ban(ip, Instant::now());
    }

    /// Counts a verdict on one of `ip`'s shares; true when it bans the address.
    pub fn share_verdict(&self, ip: IpAddr, valid: bool) -> bool {
        self.inner.addresses.lock().verdict(ip, valid, Instant::now())
    }
}
