//! A source's life: its state, its work moving on (miners told at once, the
//! workers' job given the new template in place), the workers' job started
//! or adopted, and the verifier prepared for a new key.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use faena_proto::ids::JobId;
use faena_proto::mining::{BlockView, SourceShares, SourceSpec, SourceState, SourceView};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::limits::{self, Take};
use super::{Backend, Pool, Template, Work, follower};

#[derive(Debug)]
pub(super) struct Source {
    pub(super) spec: SourceSpec,
    pub(super) state: SourceState,
    pub(super) reason: Option<String>,
    pub(super) shares: SourceShares,
    pub(super) blocks: Vec<BlockView>,
    pub(super) work: watch::Sender<Option<Arc<Work>>>,
    /// The work it replaced, and until when its shares count as stale.
    pub(super) previous: Option<(Arc<Work>, Instant)>,
    /// The Faena workers' shares taken, by template: each counts once.
    pub(super) worker_nonces: HashSet<(u64, u32)>,
    /// Taken miner slots: (group, top nonce byte).
    pub(super) slots: BTreeSet<(u32, u8)>,
    /// The leader's: slots its followers' miners hold, by follower.
    pub(super) remote: HashMap<(u32, u8), String>,
    /// A follower's: its miners' slots, each cancelled when the leader
    /// gave it to another while the feed was away.
    pub(super) seated: HashMap<(u32, u8), CancellationToken>,
    /// A follower's: the shares counted when it last reported them.
    pub(super) reported: SourceShares,
    /// The engine job the Faena workers mine it through.
    pub(super) job: Option<JobId>,
    /// What it may cost, and the templates waiting their turn.
    pub(super) limits: limits::SourceLimits,
    pub(super) deferred: Option<Vec<Template>>,
    /// Templates it has had, and the workers' units retired by a new one.
    pub(super) templates: u64,
    pub(super) retired_units: u64,
    pub(super) backend: Backend,
    pub(super) cancel: CancellationToken,
}

impl Source {
    pub(super) fn new(
        spec: SourceSpec,
        work: watch::Sender<Option<Arc<Work>>>,
        backend: Backend,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            spec,
            state: SourceState::Connecting,
            reason: None,
            shares: SourceShares::default(),
            blocks: Vec::new(),
            work,
            previous: None,
            worker_nonces: HashSet::new(),
            slots: BTreeSet::new(),
            remote: HashMap::new(),
            seated: HashMap::new(),
            reported: SourceShares::default(),
            job: None,
            limits: limits::SourceLimits::new(Instant::now()),
            deferred: None,
            templates: 0,
            retired_units: 0,
            backend,
            cancel,
        }
    }

    /// Frees the slots `replica`'s miners held.
    pub(super) fn free_remote(&mut self, replica: &str) {
        let slots = &mut self.slots;
        self.remote.retain(|key, r| {
            let keep = r != replica;
            if !keep {
                slots.remove(key);
            }
            keep
        });
    }

    pub(super) fn held_by(&self, replica: &str) -> usize {
        self.remote.values().filter(|r| *r == replica).count()
    }

    /// The shares counted since the last call, when there are any.
    pub(super) fn unreported(&mut self) -> Option<SourceShares> {
        let d = follower::delta(&self.shares, &self.reported);
        self.reported = self.shares.clone();
        (d.valid + d.invalid + d.stale > 0).then_some(d)
    }

    pub(super) fn view(&self, id: &str) -> SourceView {
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
    pub(super) fn template(&self, seq: u64, now: Instant) -> Option<(Arc<Template>, bool)> {
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

impl Pool {
    pub(super) fn set_state(&self, id: &str, state: SourceState, reason: Option<String>) {
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
    pub(super) fn groups_wanted(&self, id: &str) -> u32 {
        let st = self.inner.state.lock();
        st.sources.get(id).map_or(1, |s| s.slots.iter().next_back().map_or(0, |(g, _)| *g) + 1)
    }

    /// A source moved on: miners get the new work at once, the old one is
    /// stale for the grace period, and the workers' job takes the new template.
    pub(super) async fn install(&self, id: &str, templates: Vec<Template>) {
        if let Some(templates) = self.pace(id, templates, Instant::now()) {
            self.take(id, templates).await;
        }
    }

    /// The templates to take now, within the source's limits: none when
    /// they wait their turn (a task takes the latest then) or bring a new
    /// seed too soon.
    fn pace(&self, id: &str, templates: Vec<Template>, now: Instant) -> Option<Vec<Template>> {
        let key = templates.first()?.key.clone();
        let mut st = self.inner.state.lock();
        let s = st.sources.get_mut(id)?;
        match s.limits.template(&key, now) {
            Take::Now => Some(templates),
            Take::SeedTooSoon => {
                drop(st);
                let cooldown = limits::SEED_COOLDOWN.as_secs();
                let reason = format!("the source changed its seed again within {cooldown} s; its job was refused");
                self.set_state(id, SourceState::Mining, Some(reason));
                None
            }
            // Waiting its turn, replacing any that waited (whose turn is coming).
            Take::At(when) => {
                if s.deferred.replace(templates).is_none() {
                    let (pool, id) = (self.clone(), id.to_owned());
                    self.inner.tasks.spawn(async move {
                        tokio::time::sleep_until(when.into()).await;
                        let deferred = pool.inner.state.lock().sources.get_mut(&id).and_then(|s| s.deferred.take());
                        if let Some(t) = deferred.and_then(|t| pool.pace(&id, t, Instant::now())) {
                            pool.take(&id, t).await;
                        }
                    });
                }
                None
            }
        }
    }

    /// Installs a source's new templates (after [`Pool::install`]'s limits).
    async fn take(&self, id: &str, templates: Vec<Template>) {
        let work = Arc::new(Work { templates: templates.into_iter().map(Arc::new).collect() });
        let grace = self.inner.cfg.stale_grace;
        let job = {
            let mut st = self.inner.state.lock();
            let Some(s) = st.sources.get_mut(id) else { return };
            if let Some(old) = s.work.borrow().clone() {
                // Only the template just replaced can still take (stale) shares.
                s.worker_nonces.retain(|(seq, _)| old.templates.iter().any(|t| t.seq == *seq));
                s.previous = Some((old, Instant::now() + grace));
            }
            s.work.send_replace(Some(work.clone()));
            s.templates += 1;
            s.job
        };
        self.feed_changed();
        self.set_state(id, SourceState::Mining, None);
        let Some(main) = work.main() else { return };
        self.pin_keys(Some(&main.key));
        let params = main.worker_params(self.worker_difficulty(main).await);
        if let Some(job) = job
            && let Some(engine) = &self.inner.engine
            && let Some(retired) = engine.replace_template(job, params.clone(), grace).await
        {
            if let Some(s) = self.inner.state.lock().sources.get_mut(id) {
                s.retired_units += retired as u64;
            }
            return;
        }
        self.submit_job(id, params).await;
    }

    /// Pins the live sources' keys in the verifier (`first`, the key just
    /// installed, leads), then the keys their nodes say come next: a new
    /// key's light material is built at once and, in fast mode, its dataset
    /// in the background, so shares verify from the first one — a next key's
    /// before the switch. Keys no source uses any more are let go.
    pub(super) fn pin_keys(&self, first: Option<&[u8]>) {
        let keys = {
            let st = self.inner.state.lock();
            let mut keys: Vec<Vec<u8>> = first.map(<[u8]>::to_vec).into_iter().collect();
            let mains: Vec<_> =
                st.sources.values().filter_map(|s| s.work.borrow().as_ref().and_then(|w| w.main().cloned())).collect();
            let next = mains.iter().filter_map(|m| m.next_key.clone());
            for key in mains.iter().map(|m| m.key.clone()).chain(next) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            keys
        };
        let verifier = self.inner.verifier.clone();
        let generation = {
            let mut pinned = self.inner.prepared.lock();
            if *pinned == keys {
                return;
            }
            *pinned = keys.clone();
            // Ordered under the same lock as the keys it pins.
            verifier.next_pin()
        };
        self.inner.tasks.spawn(async move {
            match verifier.pin(generation, keys).await {
                Ok(capacity) => tracing::info!(
                    capacity = format!("{capacity:.0} shares/s"),
                    fast = verifier.fast_ready(),
                    "verifier ready for the sources' keys"
                ),
                Err(e) => tracing::error!(error = %e, "the verifier could not measure itself on the new key"),
            }
        });
    }

    /// The templates a source has now (a daemon adds groups to them).
    pub(super) fn current(&self, id: &str) -> Vec<Template> {
        let st = self.inner.state.lock();
        let work = st.sources.get(id).and_then(|s| s.work.borrow().clone());
        work.map(|w| w.templates.iter().map(|t| (**t).clone()).collect()).unwrap_or_default()
    }

    /// More blobs for a source's new miner groups: the templates there are
    /// stay current (same sequence numbers); miners already seated keep their jobs.
    pub(super) fn add_groups(&self, id: &str, templates: Vec<Template>) {
        let work = Arc::new(Work { templates: templates.into_iter().map(Arc::new).collect() });
        if let Some(s) = self.inner.state.lock().sources.get_mut(id) {
            s.work.send_replace(Some(work));
        }
        self.feed_changed();
    }

    /// Starts the workers' job on a source when it has none (or it ended).
    pub(super) async fn ensure_job(&self, id: &str) {
        let (job, main) = {
            let st = self.inner.state.lock();
            let Some(s) = st.sources.get(id) else { return };
            (s.job, s.work.borrow().as_ref().and_then(|w| w.main().cloned()))
        };
        let Some(main) = main else { return };
        let Some(engine) = &self.inner.engine else { return };
        if let Some(job) = job
            && engine.is_active(job).await
        {
            return;
        }
        let params = main.worker_params(self.worker_difficulty(&main).await);
        self.submit_job(id, params).await;
    }

    pub(super) async fn submit_job(&self, id: &str, params: faena_proto::mine::MineParams) {
        let Some(engine) = &self.inner.engine else { return };
        // Only when a worker can mine: a job nobody takes would fail as unrunnable.
        if engine.mining_workers().await.is_empty() {
            return;
        }
        let job = JobId::new();
        match engine.start_mining(job, params).await {
            Ok(()) => {
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
    pub(super) async fn worker_difficulty(&self, t: &Template) -> u64 {
        if t.upstream.is_some() {
            return t.upstream_difficulty();
        }
        if self.inner.cfg.worker_difficulty > 0 {
            return self.inner.cfg.worker_difficulty;
        }
        let Some(engine) = &self.inner.engine else { return self.inner.cfg.start_difficulty };
        let rates: Vec<f64> = engine.mining_workers().await.into_iter().filter(|h| *h > 0.0).collect();
        if rates.is_empty() {
            return self.inner.cfg.start_difficulty;
        }
        let avg = rates.iter().sum::<f64>() / rates.len() as f64;
        ((avg * self.inner.cfg.share_interval.as_secs_f64()) as u64).max(self.inner.cfg.min_difficulty)
    }
}
