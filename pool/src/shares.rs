//! What a verified share does: it is tallied for its participant and its
//! source; if it meets the network's target it becomes a block submitted to
//! monerod, if it meets a pool's it goes upstream. A share for the template
//! just replaced counts as stale within the grace period, and for nothing
//! after it.

use std::sync::Arc;
use std::time::Instant;

use faena_proto::ids::JobId;
use faena_proto::jobs::encode_hex;
use faena_proto::mine::{Share, parse_target};
use faena_proto::mining::BlockView;
use faena_proto::stratum::difficulty_of;
use faena_randomx::mine::meets;

use super::accounts::Participant;
use super::{Backend, Pool, Template, limits, upstream};
use faena_verify::parse_hash;

/// How a share was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Valid,
    /// For the template just replaced, within the grace period.
    Stale,
    /// For a template too old (or a source gone): not counted.
    Expired,
}

impl Pool {
    /// A share the verifier found valid for template `seq` of `source`.
    pub fn take_share(
        &self,
        source: &str,
        seq: u64,
        who: &Participant,
        difficulty: u64,
        nonce: u32,
        hash: &[u8; 32],
    ) -> Taken {
        let now = Instant::now();
        let (template, backend) = {
            let mut st = self.inner.state.lock();
            let Some(s) = st.sources.get_mut(source) else { return Taken::Expired };
            let Some((template, current)) = s.template(seq, now) else { return Taken::Expired };
            if !current {
                s.shares.stale += 1;
                st.accounts.stale(who, source, 1, now);
                self.inner.metrics.pool_shares("stale", 1);
                return Taken::Stale;
            }
            s.shares.valid += 1;
            let backend = s.backend.clone();
            st.accounts.valid(who, source, difficulty, now);
            (template, backend)
        };
        self.inner.metrics.pool_shares("valid", 1);
        if meets(hash, template.upstream_target()) {
            self.upstream(source, &template, backend, who, nonce, hash);
        }
        Taken::Valid
    }

    /// Shares sent for `source` that were rejected; on `who`'s record when
    /// it is known to be theirs (a worker, or a Stratum connection that has
    /// had shares accepted).
    pub fn invalid_shares(&self, source: &str, who: Option<&Participant>, n: u64) {
        if n == 0 {
            return;
        }
        let mut st = self.inner.state.lock();
        if let Some(s) = st.sources.get_mut(source) {
            s.shares.invalid += n;
        }
        if let Some(who) = who {
            st.accounts.invalid(who, source, n, Instant::now());
        }
        self.inner.metrics.pool_shares("invalid", n);
    }

    /// A Faena worker's verified report on a unit of `job`, mined from
    /// `params_blob`: `accepted` when the engine took it (else the unit was
    /// retired — its shares are stale if the template was just replaced).
    pub fn worker_report(
        &self,
        job: JobId,
        unit_blob: &str,
        target: &str,
        worker: &str,
        valid: &[Share],
        invalid: u64,
    ) {
        let Some((source, seq)) = self.worker_template(job, unit_blob) else { return };
        let who = Participant::worker(worker);
        self.invalid_shares(&source, Some(&who), invalid);
        let difficulty = parse_target(target).map(difficulty_of).unwrap_or(1);
        for share in valid {
            let Some(hash) = parse_hash(&share.hash) else { continue };
            // A nonce sent again (two reports verified side by side) counts once.
            let fresh = self
                .inner
                .state
                .lock()
                .sources
                .get_mut(&source)
                .is_some_and(|s| s.worker_nonces.insert((seq, share.nonce)));
            if fresh {
                self.take_share(&source, seq, &who, difficulty, share.nonce, &hash);
            }
        }
    }

    /// Which source and template a workers' unit was cut from.
    fn worker_template(&self, job: JobId, unit_blob: &str) -> Option<(String, u64)> {
        let st = self.inner.state.lock();
        let id = st.by_job.get(&job)?;
        let s = st.sources.get(id)?;
        let same = |t: &Arc<Template>| encode_hex(&t.blob_for((t.worker_range().0 >> 24) as u8)) == unit_blob;
        let current = s.work.borrow().as_ref().and_then(|w| w.main().filter(|t| same(t)).map(|t| t.seq));
        let seq =
            current.or_else(|| s.previous.as_ref().and_then(|(w, _)| w.main().filter(|t| same(t)).map(|t| t.seq)))?;
        Some((id.clone(), seq))
    }

    /// A share good enough for upstream: a block for monerod, a share for the pool.
    pub(super) fn upstream(
        &self,
        source: &str,
        t: &Arc<Template>,
        backend: Backend,
        who: &Participant,
        nonce: u32,
        hash: &[u8; 32],
    ) {
        match backend {
            Backend::Daemon { rpc, wake } => {
                let Some(block) = t.block_with(nonce) else { return };
                let allowed =
                    self.inner.state.lock().sources.get_mut(source).is_some_and(|s| s.limits.block(Instant::now()));
                if !allowed {
                    // A difficulty that makes every share a block: not a node to flood.
                    self.inner.metrics.pool_shares("block_throttled", 1);
                    tracing::warn!(source = %source, "a block was not submitted: over the source's block rate (is its difficulty sane?)");
                    return;
                }
                let (pool, source, who, height) = (self.clone(), source.to_owned(), who.clone(), t.height.unwrap_or(0));
                let pow = encode_hex(hash);
                self.inner.tasks.spawn(async move {
                    let (mut accepted, mut reason, mut hash) = match rpc.submit_block(&encode_hex(&block)).await {
                        Ok(()) => (true, None, pow),
                        Err(e) => (false, Some(e.to_string()), pow),
                    };
                    // The node names blocks by id, and takes a block that lost
                    // its height to another as an alternative: ask which won.
                    if accepted && let Some((id, winner)) = rpc.block_at(height).await {
                        if winner == nonce {
                            hash = id;
                        } else {
                            accepted = false;
                            reason = Some(format!("orphaned: block {id} took height {height} first"));
                        }
                    }
                    let view = BlockView {
                        height,
                        hash,
                        participant: who.name.clone(),
                        accepted,
                        reason,
                        at_ms: faena_proto::mqtt::now_ms(),
                    };
                    pool.record_block(&source, &who, view).await;
                    wake.notify_one();
                });
            }
            Backend::Leader => self.found_remote(t, &who.name, nonce, hash, source),
            Backend::Pool { submit } => {
                let Some(up) = &t.upstream else { return };
                let s = upstream::Submit { job_id: up.job_id.clone(), nonce, hash: *hash };
                if submit.try_send(s).is_err() {
                    tracing::warn!(source = %source, "the pool connection is backed up; a share was not sent upstream");
                    self.upstream_verdict(source, false);
                }
            }
        }
    }

    async fn record_block(&self, source: &str, who: &Participant, view: BlockView) {
        match &view.reason {
            None => {
                tracing::info!(source = %source, height = view.height, hash = %view.hash, participant = %who.name, "block accepted by the node")
            }
            Some(r) => {
                tracing::warn!(source = %source, height = view.height, participant = %who.name, reason = %r, "block refused by the node")
            }
        }
        self.inner.metrics.block(view.accepted);
        {
            let mut st = self.inner.state.lock();
            if view.accepted {
                st.accounts.block(who, source, Instant::now());
            }
            if let Some(s) = st.sources.get_mut(source) {
                s.blocks.push(view.clone());
                let over = s.blocks.len().saturating_sub(limits::BLOCKS_KEPT);
                s.blocks.drain(..over);
            }
        }
        if let Err(e) = self.inner.db.add_block(source.to_owned(), view).await {
            tracing::error!(source = %source, error = %e, "could not record a block");
        }
    }

    /// The pool's answer to a share sent upstream.
    pub(super) fn upstream_verdict(&self, source: &str, accepted: bool) {
        self.inner.metrics.upstream(accepted);
        if let Some(s) = self.inner.state.lock().sources.get_mut(source) {
            match accepted {
                true => s.shares.upstream_accepted += 1,
                false => s.shares.upstream_rejected += 1,
            }
        }
    }
}
