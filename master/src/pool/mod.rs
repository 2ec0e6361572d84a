//! Mining with the outside world: sources of work (monerod's JSON-RPC for
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
//! - [`shares`]: what a verified share does (tallies, blocks, upstream).
//! - [`accounts`]: per-participant tallies and hashrates; [`db`]: what survives restarts.
//! - [`http`]: the REST endpoints.

pub mod accounts;
mod daemon;
pub mod db;
pub mod http;
mod shares;
pub mod stratum;
pub mod template;
mod upstream;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faena_proto::ids::JobId;
use faena_proto::jobs::{JobSpec, Priority};
use faena_proto::mining::{BlockView, Participants, SourceShares, SourceSpec, SourceState, SourceView, VerifierView};
use faena_proto::secret::Secret;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::coordinator::Coordinator;
use crate::engine::NewJob;
use crate::metrics::Metrics;
use crate::verify::Verifier;
use accounts::Accounts;
use db::Db;
pub use template::{Template, Work};

/// How the pool side is tuned (flags of the master).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The interval between a miner's shares vardiff aims at.
    pub share_interval: Duration,
    pub start_difficulty: u64,
    pub min_difficulty: u64,
    /// Difficulty of the Faena workers' shares on a daemon source; 0 sizes
    /// it from their measured speed (one share per interval each).
    pub worker_difficulty: u64,
    /// How long shares for a replaced template still count (as stale).
    pub stale_grace: Duration,
    /// Invalid shares before a miner's address is banned.
    pub invalid_limit: u32,
    pub ban: Duration,
    pub max_line: usize,
    /// Requests per second a connection may make (and its burst).
    pub rate: f64,
    pub burst: f64,
    /// A connection silent this long is dropped.
    pub idle: Duration,
    /// A connection has this long to log in.
    pub login_timeout: Duration,
    /// How often a daemon source asks monerod for a new block.
    pub poll: Duration,
    /// Share of the verifier's measured capacity Stratum miners may use.
    pub budget_share: f64,
    /// Miners must log in with this password, when set.
    pub password: Option<Arc<Secret>>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            share_interval: Duration::from_secs(30),
            start_difficulty: 10_000,
            min_difficulty: 100,
            worker_difficulty: 0,
            stale_grace: Duration::from_secs(10),
            invalid_limit: 10,
            ban: Duration::from_secs(600),
            max_line: 16 * 1024,
            rate: 10.0,
            burst: 40.0,
            idle: Duration::from_secs(600),
            login_timeout: Duration::from_secs(15),
            poll: Duration::from_millis(500),
            budget_share: 0.8,
            password: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    Invalid(String),
    #[error("could not record the source: {0}")]
    Store(String),
}

/// How a source's shares reach the world.
#[derive(Debug, Clone)]
enum Backend {
    Daemon { rpc: daemon::Rpc, wake: Arc<Notify> },
    Pool { submit: mpsc::Sender<upstream::Submit> },
}

#[derive(Debug)]
struct Source {
    spec: SourceSpec,
    state: SourceState,
    reason: Option<String>,
    shares: SourceShares,
    blocks: Vec<BlockView>,
    work: watch::Sender<Option<Arc<Work>>>,
    /// The work it replaced, and until when its shares count as stale.
    previous: Option<(Arc<Work>, Instant)>,
    /// Taken miner slots: (group, top nonce byte).
    slots: BTreeSet<(u32, u8)>,
    /// The engine job the Faena workers mine it through.
    job: Option<JobId>,
    /// Templates it has had, and the workers' units retired by a new one.
    templates: u64,
    retired_units: u64,
    backend: Backend,
    cancel: CancellationToken,
}

impl Source {
    fn view(&self, id: &str) -> SourceView {
        let work = self.work.borrow().clone();
        let main = work.as_ref().and_then(|w| w.main().cloned());
        let (url, wallet, user) = match &self.spec {
            SourceSpec::Daemon { url, wallet } => (url.clone(), Some(wallet.clone()), None),
            SourceSpec::Pool { url, user, .. } => (url.list().join(","), None, Some(user.clone())),
        };
        SourceView {
            id: id.to_owned(),
            kind: match self.spec {
                SourceSpec::Daemon { .. } => "daemon".into(),
                SourceSpec::Pool { .. } => "pool".into(),
            },
            url,
            state: self.state,
            reason: self.reason.clone(),
            wallet,
            user,
            height: main.as_ref().and_then(|t| t.height),
            difficulty: main.as_ref().map(|t| t.upstream_difficulty()),
            job_id: self.job.map(|j| j.to_string()),
            miners: self.slots.len() as u32,
            templates: self.templates,
            retired_units: self.retired_units,
            shares: self.shares.clone(),
            blocks: self.blocks.clone(),
        }
    }

    /// The template with sequence `seq`: current, or replaced within the grace period.
    fn template(&self, seq: u64, now: Instant) -> Option<(Arc<Template>, bool)> {
        let find = |w: &Work| w.templates.iter().find(|t| t.seq == seq).cloned();
        if let Some(t) = self.work.borrow().as_ref().and_then(|w| find(w)) {
            return Some((t, true));
        }
        match &self.previous {
            Some((w, until)) if now < *until => find(w).map(|t| (t, false)),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    sources: BTreeMap<String, Source>,
    accounts: Accounts,
    by_job: HashMap<JobId, String>,
}

/// Shares per second Stratum miners may send: a token bucket refilled at the
/// budget (a share of the verifier's measured capacity).
#[derive(Debug)]
struct Budget {
    tokens: f64,
    at: Instant,
    over: u64,
}

#[derive(Debug)]
struct Inner {
    cfg: PoolConfig,
    coord: Coordinator,
    verifier: Arc<Verifier>,
    db: Db,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    state: Mutex<State>,
    budget: Mutex<Budget>,
    bans: Mutex<HashMap<IpAddr, Instant>>,
    miners: AtomicU64,
    seq: AtomicU64,
    /// The key the verifier was last prepared for.
    prepared: Mutex<Option<Vec<u8>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// The handle everyone holds (HTTP, the Stratum server, the coordinator).
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
                upstream::Endpoint::parse(u).map_err(PoolError::Invalid)?;
            }
            if user.is_empty() || user.len() > 512 || pass.as_ref().is_some_and(|p| p.len() > 512) {
                return bad("user must be 1..=512 characters, pass at most 512".into());
            }
        }
    }
    Ok(())
}

impl Pool {
    /// Reads back what the last run recorded and starts its sources.
    pub fn start(
        cfg: PoolConfig,
        coord: Coordinator,
        verifier: Arc<Verifier>,
        db: Db,
        metrics: Arc<Metrics>,
    ) -> Result<Self, rusqlite::Error> {
        let loaded = db.load()?;
        let pool = Self {
            inner: Arc::new(Inner {
                cfg,
                coord,
                verifier,
                db,
                metrics,
                http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
                state: Mutex::default(),
                budget: Mutex::new(Budget { tokens: 0.0, at: Instant::now(), over: 0 }),
                bans: Mutex::default(),
                miners: AtomicU64::new(0),
                seq: AtomicU64::new(1),
                prepared: Mutex::new(None),
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        };
        let now = Instant::now();
        {
            let mut st = pool.inner.state.lock();
            for (who, record) in loaded.participants {
                st.accounts.restore(who, record, now);
            }
        }
        for (id, spec, job) in loaded.sources {
            pool.launch(id.clone(), spec);
            // The engine restored that job from its store: the source adopts
            // it, and its first template replaces the one it was left with.
            if let Some(job) = job {
                let mut st = pool.inner.state.lock();
                st.by_job.insert(job, id.clone());
                if let Some(s) = st.sources.get_mut(&id) {
                    s.job = Some(job);
                }
            }
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
        loop {
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                _ = every.tick() => self.flush().await,
            }
        }
    }

    async fn flush(&self) {
        let rows = self.inner.state.lock().accounts.take_dirty();
        if let Err(e) = self.inner.db.save_tallies(rows).await {
            tracing::error!(error = %e, "could not save mining tallies");
        }
    }

    /// Records a source and starts mining it.
    pub async fn add_source(&self, spec: SourceSpec) -> Result<SourceView, PoolError> {
        validate(&spec)?;
        let id = uuid::Uuid::now_v7().to_string();
        self.inner.db.add_source(id.clone(), &spec, faena_proto::mqtt::now_ms()).await.map_err(PoolError::Store)?;
        self.launch(id.clone(), spec);
        tracing::info!(source = %id, "mining source added");
        self.source(&id).ok_or_else(|| PoolError::Store("the source vanished".into()))
    }

    fn launch(&self, id: String, spec: SourceSpec) {
        let cancel = self.inner.cancel.child_token();
        let (work, _) = watch::channel(None);
        let backend = match &spec {
            SourceSpec::Daemon { url, wallet } => {
                let rpc = daemon::Rpc::new(self.inner.http.clone(), url);
                let wake = Arc::new(Notify::new());
                let run =
                    daemon::run(self.clone(), id.clone(), rpc.clone(), wallet.clone(), wake.clone(), cancel.clone());
                self.inner.tasks.spawn(run);
                Backend::Daemon { rpc, wake }
            }
            SourceSpec::Pool { url, user, pass } => {
                let (tx, rx) = mpsc::channel(1024);
                let endpoints = url.list().iter().filter_map(|u| upstream::Endpoint::parse(u).ok()).collect();
                let login = upstream::Login { user: user.clone(), pass: Secret::new(pass.clone().unwrap_or_default()) };
                let run = upstream::run(self.clone(), id.clone(), endpoints, login, rx, cancel.clone());
                self.inner.tasks.spawn(run);
                Backend::Pool { submit: tx }
            }
        };
        let source = Source {
            spec,
            state: SourceState::Connecting,
            reason: None,
            shares: SourceShares::default(),
            blocks: Vec::new(),
            work,
            previous: None,
            slots: BTreeSet::new(),
            job: None,
            templates: 0,
            retired_units: 0,
            backend,
            cancel,
        };
        self.inner.state.lock().sources.insert(id, source);
    }

    /// Stops a source: its task ends, its workers' job is cancelled and its
    /// miners are disconnected (they log in again onto another source).
    pub async fn remove_source(&self, id: &str) -> Result<bool, PoolError> {
        let Some(source) = self.inner.state.lock().sources.remove(id) else { return Ok(false) };
        source.cancel.cancel();
        if let Some(job) = source.job {
            self.inner.state.lock().by_job.remove(&job);
            let _ = self.inner.coord.cancel(job).await;
        }
        self.inner.db.remove_source(id.to_owned()).await.map_err(PoolError::Store)?;
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

    /// Takes one share from the budget; false (and counted) when it is spent.
    pub fn take_budget(&self) -> bool {
        let rate = self.budget_rate();
        let mut b = self.inner.budget.lock();
        let now = Instant::now();
        let burst = rate * 2.0;
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            b.over += 1;
            false
        }
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let mut bans = self.inner.bans.lock();
        match bans.get(&ip) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                bans.remove(&ip);
                false
            }
            None => false,
        }
    }

    pub fn ban(&self, ip: IpAddr) {
        self.inner.bans.lock().insert(ip, Instant::now() + self.inner.cfg.ban);
    }

    fn set_state(&self, id: &str, state: SourceState, reason: Option<String>) {
        if let Some(s) = self.inner.state.lock().sources.get_mut(id) {
            if s.state != state || s.reason != reason {
                match &reason {
                    Some(r) => tracing::warn!(source = %id, state = ?state, reason = %r, "mining source state"),
                    None => tracing::info!(source = %id, state = ?state, "mining source state"),
                }
            }
            s.state = state;
            s.reason = reason;
        }
    }

    /// Miner groups a source must have templates for (daemon: one blob per 255 miners).
    fn groups_wanted(&self, id: &str) -> u32 {
        let st = self.inner.state.lock();
        st.sources.get(id).map_or(1, |s| s.slots.iter().next_back().map_or(0, |(g, _)| *g) + 1)
    }

    /// A source moved on: miners get the new work at once, the old one is
    /// stale for the grace period, and the workers' job takes the new template.
    async fn install(&self, id: &str, templates: Vec<Template>) {
        let work = Arc::new(Work { templates: templates.into_iter().map(Arc::new).collect() });
        let grace = self.inner.cfg.stale_grace;
        let job = {
            let mut st = self.inner.state.lock();
            let Some(s) = st.sources.get_mut(id) else { return };
            if let Some(old) = s.work.borrow().clone() {
                s.previous = Some((old, Instant::now() + grace));
            }
            s.work.send_replace(Some(work.clone()));
            s.templates += 1;
            s.job
        };
        self.set_state(id, SourceState::Mining, None);
        let Some(main) = work.main() else { return };
        self.prepare_verifier(&main.key);
        let params = main.worker_params(self.worker_difficulty(main).await);
        if let Some(job) = job
            && let Some(retired) = self.inner.coord.replace_template(job, params.clone(), grace).await
        {
            if let Some(s) = self.inner.state.lock().sources.get_mut(id) {
                s.retired_units += retired as u64;
            }
            return;
        }
        self.submit_job(id, params).await;
    }

    /// Builds the verifier's material for a new key in the background (a
    /// fast-mode dataset takes half a minute on 2 cores), so it is ready —
    /// and its capacity measured — before the first share needs it.
    fn prepare_verifier(&self, key: &[u8]) {
        {
            let mut prepared = self.inner.prepared.lock();
            if prepared.as_deref() == Some(key) {
                return;
            }
            *prepared = Some(key.to_vec());
        }
        let (verifier, key) = (self.inner.verifier.clone(), key.to_vec());
        self.inner.tasks.spawn(async move {
            match verifier.prepare(key).await {
                Ok(capacity) => tracing::info!(
                    capacity = format!("{capacity:.0} shares/s"),
                    mode = verifier.mode().as_str(),
                    "verifier ready for the new key"
                ),
                Err(e) => tracing::error!(error = %e, "the verifier could not prepare the new key"),
            }
        });
    }

    /// The templates a source has now (a daemon adds groups to them).
    fn current(&self, id: &str) -> Vec<Template> {
        let st = self.inner.state.lock();
        let work = st.sources.get(id).and_then(|s| s.work.borrow().clone());
        work.map(|w| w.templates.iter().map(|t| (**t).clone()).collect()).unwrap_or_default()
    }

    /// More blobs for a source's new miner groups: the templates there are
    /// stay current (same sequence numbers); miners already seated keep their jobs.
    fn add_groups(&self, id: &str, templates: Vec<Template>) {
        let work = Arc::new(Work { templates: templates.into_iter().map(Arc::new).collect() });
        if let Some(s) = self.inner.state.lock().sources.get_mut(id) {
            s.work.send_replace(Some(work));
        }
    }

    /// Starts the workers' job on a source when it has none (or it ended).
    async fn ensure_job(&self, id: &str) {
        let (job, main) = {
            let st = self.inner.state.lock();
            let Some(s) = st.sources.get(id) else { return };
            (s.job, s.work.borrow().as_ref().and_then(|w| w.main().cloned()))
        };
        let Some(main) = main else { return };
        if let Some(job) = job
            && matches!(self.inner.coord.view(job).await, Ok(Some(_)))
        {
            return;
        }
        let params = main.worker_params(self.worker_difficulty(&main).await);
        self.submit_job(id, params).await;
    }

    async fn submit_job(&self, id: &str, params: faena_proto::mine::MineParams) {
        // Only when a worker can mine: a job nobody takes would fail as unrunnable.
        let miners = self.inner.coord.workers().await.unwrap_or_default();
        if !miners.iter().any(|w| w.kinds.iter().any(|k| k == "randomx.mine")) {
            return;
        }
        let job = JobId::new();
        let submitted = self.inner.coord.submit(vec![NewJob::new(job, JobSpec::RandomxMine(params), Priority::Normal)]);
        match submitted.await {
            Ok(_) => {
                {
                    let mut st = self.inner.state.lock();
                    let Some(s) = st.sources.get_mut(id) else { return };
                    if let Some(old) = s.job.replace(job) {
                        st.by_job.remove(&old);
                    }
                    st.by_job.insert(job, id.to_owned());
                }
                tracing::info!(source = %id, job = %job, "Faena workers mine the source through this job");
                if let Err(e) = self.inner.db.set_job(id.to_owned(), job).await {
                    tracing::error!(source = %id, error = %e, "could not record the source's job");
                }
            }
            Err(e) => tracing::warn!(source = %id, error = %e, "could not start the workers' job"),
        }
    }

    /// The difficulty the workers' shares are set to: configured, or one
    /// share per interval from each worker at its measured speed.
    async fn worker_difficulty(&self, t: &Template) -> u64 {
        if t.upstream.is_some() {
            return t.upstream_difficulty();
        }
        if self.inner.cfg.worker_difficulty > 0 {
            return self.inner.cfg.worker_difficulty;
        }
        let workers = self.inner.coord.workers().await.unwrap_or_default();
        let rates: Vec<f64> = workers.iter().map(|w| w.hashrate).filter(|h| *h > 0.0).collect();
        if rates.is_empty() {
            return self.inner.cfg.start_difficulty;
        }
        let avg = rates.iter().sum::<f64>() / rates.len() as f64;
        ((avg * self.inner.cfg.share_interval.as_secs_f64()) as u64).max(self.inner.cfg.min_difficulty)
    }
}

/// A miner's place on a source: a slot of one of its blobs. Freed when dropped.
#[derive(Debug)]
pub struct Seat {
    pool: Pool,
    pub source: String,
    pub group: u32,
    pub slot: u8,
    pub work: watch::Receiver<Option<Arc<Work>>>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.pool.inner.miners.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = self.pool.inner.state.lock().sources.get_mut(&self.source) {
            s.slots.remove(&(self.group, self.slot));
        }
    }
}

impl Pool {
    /// Seats a miner on the source with the fewest miners that has slots to
    /// give (a pool that fixes the nonce byte has none).
    pub fn join(&self) -> Result<Seat, String> {
        let mut st = self.inner.state.lock();
        let mut best: Option<(&String, &mut Source)> = None;
        for (id, s) in st.sources.iter_mut() {
            // Only a source with work now: the login answer carries a job.
            let open = s.work.borrow().as_ref().and_then(|w| w.main().map(|t| t.has_miner_slots())).unwrap_or(false);
            let daemon = matches!(s.backend, Backend::Daemon { .. });
            let full = !daemon && s.slots.len() >= template::MINER_SLOTS as usize;
            if !open || full {
                continue;
            }
            if best.as_ref().is_none_or(|(_, b)| s.slots.len() < b.slots.len()) {
                best = Some((id, s));
            }
        }
        let Some((id, s)) = best else {
            return Err("no mining source has work for miners right now; try again shortly".into());
        };
        let n = s.slots.len() as u32;
        let free = (0..=n).map(|i| (i / template::MINER_SLOTS, (i % template::MINER_SLOTS + 1) as u8));
        let Some((group, slot)) = free.into_iter().find(|k| !s.slots.contains(k)) else {
            return Err("no free slot".into());
        };
        s.slots.insert((group, slot));
        let work = s.work.subscribe();
        let wake = match &s.backend {
            Backend::Daemon { wake, .. } => Some(wake.clone()),
            Backend::Pool { .. } => None,
        };
        let seat = Seat { pool: self.clone(), source: id.clone(), group, slot, work };
        self.inner.miners.fetch_add(1, Ordering::Relaxed);
        drop(st);
        // A new group needs its own blob: ask the daemon for it now.
        if let Some(wake) = wake {
            wake.notify_one();
        }
        Ok(seat)
    }
}
