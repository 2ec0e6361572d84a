//! Workers' reports on the coordinator: a plain job's go to the engine as
//! they are; a mining unit's are checked against the contract (shape first,
//! so a malformed report costs no hashing), their shares re-hashed by the
//! [`Verifier`](crate::verify::Verifier) on a task of their own, and the
//! report re-enters the loop as [`Verified`]. Rejected shares are logged,
//! counted and held against the worker before the report is applied; shares
//! the master could not check are logged and counted apart.

use faena_proto::ids::WorkerId;
use faena_proto::mine::{Share, UnitOutput, UnitProgress};
use serde::de::IgnoredAny;
use serde_json::Value;

use super::actor::Actor;
use super::{Command, CoordError, Reply};
use crate::engine::mining::MinedUnit;
use crate::engine::{LeaseError, LeaseRef, MinedProgress, Now, Outcome, UnitWork};
use crate::verify::Checked;

/// A mining unit's report waiting for its shares to be checked.
#[derive(Debug)]
pub(super) enum Pending {
    Progress {
        hashes: u64,
        hashrate: f64,
        reply: Reply<Result<(), CoordError>>,
    },
    Output {
        hashes: u64,
        hashrate: f64,
        elapsed_ms: u64,
        reply: Reply<Result<bool, CoordError>>,
    },
    /// A report for a unit retired with its template: its shares count as
    /// stale (the worker was answered at once).
    Late,
}

/// A mining unit's report back from verification.
#[derive(Debug)]
pub(crate) struct Verified {
    worker: WorkerId,
    lease: LeaseRef,
    work: UnitWork,
    checked: Checked,
    pending: Pending,
}

/// Takes the raw `shares` out of a unit's report and checks the rest
/// against `T` (its progress or output contract).
fn split_shares<T: serde::de::DeserializeOwned>(mut data: Value, what: &str) -> Result<(T, Vec<Share>), CoordError> {
    if !data.is_object() {
        return Err(CoordError::Malformed(format!("mining unit {what} must be a JSON object")));
    }
    let raw = data.get_mut("shares").map(Value::take).unwrap_or(Value::Array(vec![]));
    let shares: Vec<Share> =
        serde_json::from_value(raw).map_err(|e| CoordError::Malformed(format!("mining unit {what}: shares: {e}")))?;
    data["shares"] = Value::Array(vec![]);
    let report = serde_json::from_value(data)
        .map_err(|e| CoordError::Malformed(format!("mining unit {what} does not match the contract: {e}")))?;
    Ok((report, shares))
}

impl Actor {
    pub(super) fn progress(
        &mut self,
        now: Now,
        worker: WorkerId,
        lease: LeaseRef,
        data: Value,
        reply: Reply<Result<(), CoordError>>,
    ) {
        if let Some(work) = self.engine.late_unit(now, &worker, &lease) {
            return self.late(now, worker, lease, work, data, reply);
        }
        // Only a mining unit's report has shares to check; the engine checks the lease.
        let work = match self.engine.is_mining_unit(&lease.job_id) {
            true => self.engine.unit_work(&worker, &lease),
            false => Ok(None),
        };
        let work = match work {
            Ok(Some(work)) => work,
            Ok(None) => {
                let out = self.engine.progress(now, &worker, &lease, data);
                self.apply();
                return self.answer(reply, out.map_err(Into::into));
            }
            Err(e) => return self.answer(reply, Err(e.into())),
        };
        match split_shares::<UnitProgress>(data, "progress") {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok((p, shares)) => {
                let pending = Pending::Progress { hashes: p.hashes, hashrate: p.hashrate, reply };
                self.verify(now, worker, lease, work, shares, pending);
            }
        }
    }

    pub(super) fn complete(
        &mut self,
        now: Now,
        worker: WorkerId,
        lease: LeaseRef,
        outcome: Outcome,
        reply: Reply<Result<bool, CoordError>>,
    ) {
        if let Outcome::Success(data) = &outcome
            && let Some(work) = self.engine.late_unit(now, &worker, &lease)
        {
            return self.late(now, worker, lease, work, data.clone(), reply);
        }
        // Only a mining unit's output needs checking; anything else, and a
        // stale or repeated call, goes straight to the engine, which knows a
        // duplicate.
        let work = match &outcome {
            Outcome::Success(_) if self.engine.is_mining_unit(&lease.job_id) => {
                self.engine.unit_work(&worker, &lease).ok().flatten()
            }
            _ => None,
        };
        match (work, outcome) {
            (Some(work), Outcome::Success(data)) => match split_shares::<UnitOutput>(data, "output") {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok((o, shares)) => {
                    let pending =
                        Pending::Output { hashes: o.hashes, hashrate: o.hashrate, elapsed_ms: o.elapsed_ms, reply };
                    self.verify(now, worker, lease, work, shares, pending);
                }
            },
            (_, outcome) => self.apply_outcome(now, &worker, &lease, outcome, reply),
        }
    }

    /// A report (progress or output) for a unit its template's replacement
    /// retired: refused at once — the unit is over — while its shares are
    /// verified and counted stale within the grace period.
    fn late<T>(
        &mut self,
        now: Now,
        worker: WorkerId,
        lease: LeaseRef,
        work: UnitWork,
        data: Value,
        reply: Reply<Result<T, CoordError>>,
    ) {
        let refused = LeaseError::Stale {
            job: lease.job_id,
            attempt: lease.attempt,
            reason: "the unit was retired with its template; its shares count as stale".into(),
        };
        match split_shares::<IgnoredAny>(data, "report") {
            Ok((_, shares)) => self.verify(now, worker, lease, work, shares, Pending::Late),
            Err(e) => return self.answer(reply, Err(e)),
        }
        self.answer(reply, Err(refused.into()));
    }

    /// Replies; a call the engine refused counts as a rejected callback.
    fn answer<T>(&self, reply: Reply<Result<T, CoordError>>, out: Result<T, CoordError>) {
        if out.is_err() {
            self.deps.metrics.rejected_callbacks.inc();
        }
        let _ = reply.send(out);
    }

    fn apply_outcome(
        &mut self,
        now: Now,
        worker: &WorkerId,
        lease: &LeaseRef,
        outcome: Outcome,
        reply: Reply<Result<bool, CoordError>>,
    ) {
        match self.engine.complete(now, worker, lease, outcome) {
            Ok(duplicate) => {
                self.apply();
                self.after_commit(reply, Ok(duplicate));
            }
            Err(e) => self.answer(reply, Err(e.into())),
        }
    }

    /// Re-hashes `shares` off the loop, then re-enters as [`Command::Verified`].
    fn verify(
        &mut self,
        now: Now,
        worker: WorkerId,
        lease: LeaseRef,
        work: UnitWork,
        shares: Vec<Share>,
        pending: Pending,
    ) {
        if shares.is_empty() {
            let checked = Checked::default();
            return self.verified(now, Verified { worker, lease, work, checked, pending });
        }
        let (verifier, inbox) = (self.deps.verifier.clone(), self.inbox.clone());
        self.tasks.spawn(async move {
            let checked = verifier.check(&work.params, &work.known, shares).await;
            let v = Verified { worker, lease, work, checked, pending };
            // If the loop is gone, so is everyone waiting on the reply.
            let _ = inbox.tx.send(Command::Verified(v)).await;
        });
    }

    pub(super) fn verified(&mut self, now: Now, v: Verified) {
        let Verified { worker, lease, work, checked, pending } = v;
        let Checked { valid, invalid, unverified } = checked;
        // A job that mines a source: the pool tallies its shares and sends
        // on those good enough for a block or the pool (stale ones, whose
        // unit the engine retired with its template, are still counted there).
        if let Some(pool) = &self.deps.pool {
            let target = work.params.target.as_deref().unwrap_or_default();
            pool.worker_report(
                work.job,
                &work.params.blob,
                target,
                worker.as_str(),
                valid.as_slice(),
                invalid.len() as u64,
            );
        }
        self.deps.metrics.shares_checked(valid.len(), invalid.len(), unverified.len());
        for (share, reason) in &invalid {
            tracing::warn!(worker = %worker, unit = %lease.job_id, nonce = share.nonce, reason = %reason, "invalid share rejected");
        }
        for (share, reason) in &unverified {
            tracing::error!(worker = %worker, unit = %lease.job_id, nonce = share.nonce, reason = %reason, "share could not be verified; not counted");
        }
        if self.engine.invalid_shares(now, &worker, &lease.job_id, invalid.len() as u32) {
            tracing::warn!(
                worker = %worker,
                limit = self.engine.config().invalid_share_limit,
                "worker quarantined: too many invalid shares; its id gets no work for the quarantine time"
            );
        }
        match pending {
            Pending::Progress { hashes, hashrate, reply } => {
                let report = MinedProgress { hashes, hashrate, shares: valid };
                let out = self.engine.unit_progress(now, &worker, &lease, report);
                self.apply();
                let _ = reply.send(out.map_err(Into::into));
            }
            Pending::Output { hashes, hashrate, elapsed_ms, reply } => {
                let out = MinedUnit { hashes, hashrate, elapsed_ms, shares: valid };
                self.apply_outcome(now, &worker, &lease, Outcome::Mined(out), reply);
            }
            Pending::Late if !valid.is_empty() => {
                let late = self.engine.late_shares(now, &lease.job_id, &valid);
                tracing::debug!(worker = %worker, unit = %lease.job_id, shares = valid.len(), ?late, "shares for a retired template");
            }
            Pending::Late => {}
        }
    }
}
