//! How a group's operations become rows: folded per job (a job stored and
//! finished in the same group is stored finished), then written as one
//! multi-row statement each for new jobs, changed jobs and history rows.

use std::collections::{BTreeMap, HashMap};

use faena_proto::ids::JobId;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::side::KeyChange;
use crate::contract::{fired_by, held_key, inserted_detail, opts_column, requeued_state};
use crate::writer::Stamp;
use crate::{StoreError, StoreOp, UNFENCED};

/// attempts, token, result, error, finished_at: what a dispatch, requeue
/// or finish sets together.
type Rest = (i32, Option<String>, Option<String>, Option<String>, Option<i64>);

/// One history row: job, at, state, attempt, worker, detail.
type HistoryRow = (Uuid, i64, String, i32, Option<String>, Option<String>);

/// What a group changes in one job that was stored before it.
#[derive(Debug, Default)]
struct Patch {
    priority: Option<String>,
    state: Option<String>,
    worker: Option<Option<String>>,
    rest: Option<Rest>,
    run_at: Option<Option<i64>>,
}

/// A job stored by this group, as it stands at its end.
#[derive(Debug)]
struct New {
    row: i64,
    id: Uuid,
    kind: String,
    params: String,
    priority: String,
    seq: i64,
    created_at: i64,
    parent: Option<Uuid>,
    retry_of: Option<Uuid>,
    state: &'static str,
    opts: Option<String>,
    run_at: Option<i64>,
    schedule: Option<String>,
    patch: Patch,
}

/// A group folded per job: new jobs, changes to older ones, history rows
/// in order.
#[derive(Debug, Default)]
pub(super) struct Group {
    new: Vec<New>,
    new_at: HashMap<JobId, usize>,
    changed: Vec<(Uuid, Patch)>,
    changed_at: HashMap<JobId, usize>,
    history: Vec<HistoryRow>,
    /// By key: each writer locks the keys it takes in the same order.
    pub(super) keys: BTreeMap<String, KeyChange>,
    /// Each named document's last write in the group (none: removed).
    pub(super) named: HashMap<(&'static str, String), Option<String>>,
    /// Each schedule's last firing in the group.
    pub(super) fired: HashMap<String, (i64, Option<Uuid>)>,
}

impl Group {
    /// Folds `ops`, numbering new jobs by their `stamps` where given, else
    /// from `next_row` and `created`.
    pub(super) fn fold(ops: &[StoreOp], stamps: &[Stamp], next_row: &mut i64, created: &mut i64) -> Self {
        let mut g = Self::default();
        let mut stamps = stamps.iter();
        for op in ops {
            match op {
                StoreOp::Insert { id, spec, priority, seq, at_ms, parent, retry_of, state, opts, run_at_ms } => {
                    let (row, at) = match stamps.next() {
                        Some(s) => (s.row, s.created),
                        None => {
                            *next_row += 1;
                            (*next_row - 1, (*created).max(*at_ms as i64))
                        }
                    };
                    *created = (*created).max(at);
                    if let Some((key, until)) = held_key(opts, at) {
                        g.keys.insert(key, KeyChange::Take(id.0, until));
                    }
                    if let Some((schedule, fired_at)) = fired_by(opts) {
                        g.fired.insert(schedule, (fired_at, Some(id.0)));
                    }
                    g.new_at.insert(*id, g.new.len());
                    g.new.push(New {
                        row,
                        id: id.0,
                        kind: spec.kind().as_str().to_owned(),
                        params: spec.params_text(),
                        priority: priority.as_str().to_owned(),
                        seq: *seq as i64,
                        created_at: at,
                        parent: parent.map(|p| p.0),
                        retry_of: retry_of.map(|r| r.0),
                        state: state.as_str(),
                        opts: opts_column(opts),
                        run_at: run_at_ms.map(|r| r as i64),
                        schedule: opts.as_ref().and_then(|o| o.schedule.clone()),
                        patch: Patch::default(),
                    });
                    let detail = inserted_detail(*parent, *retry_of, *run_at_ms);
                    g.history.push((id.0, at, state.as_str().into(), 0, None, detail));
                }
                StoreOp::Fired { schedule, at_ms } => {
                    g.fired.insert(schedule.clone(), (*at_ms as i64, None));
                }
                StoreOp::Named { kind, name, doc } => {
                    g.named.insert((kind.as_str(), name.clone()), doc.clone());
                }
                StoreOp::Released { id, state, run_at_ms, attempts, detail, at_ms } => {
                    let p = g.patch(*id);
                    p.state = Some(state.as_str().into());
                    p.run_at = Some(run_at_ms.map(|r| r as i64));
                    let row =
                        (id.0, *at_ms as i64, state.as_str().into(), *attempts as i32, None, Some(detail.clone()));
                    g.history.push(row);
                }
                StoreOp::Reprioritised { id, priority, was, state, attempts, at_ms } => {
                    g.patch(*id).priority = Some(priority.as_str().to_owned());
                    let detail = crate::contract::priority_detail(*priority, *was);
                    g.history.push((id.0, *at_ms as i64, state.as_str().into(), *attempts as i32, None, Some(detail)));
                }
                StoreOp::Started { id, worker, at_ms } => {
                    let p = g.patch(*id);
                    p.state = Some("running".into());
                    p.worker = Some(Some(worker.clone()));
                    let detail = Some("split into units".to_owned());
                    g.history.push((id.0, *at_ms as i64, "running".into(), 1, Some(worker.clone()), detail));
                }
                StoreOp::Dispatched { id, attempt, worker, token, at_ms } => {
                    let p = g.patch(*id);
                    p.state = Some("running".into());
                    p.worker = Some(Some(worker.clone()));
                    p.rest = Some((*attempt as i32, Some(token.as_str().to_owned()), None, None, None));
                    p.run_at = Some(None);
                    g.history.push((
                        id.0,
                        *at_ms as i64,
                        "running".into(),
                        *attempt as i32,
                        Some(worker.clone()),
                        None,
                    ));
                }
                StoreOp::Requeued { id, attempts, reason, at_ms, run_at_ms } => {
                    let p = g.patch(*id);
                    let state = requeued_state(*run_at_ms);
                    p.state = Some(state.into());
                    p.worker = Some(None);
                    p.rest = Some((*attempts as i32, None, None, None, None));
                    p.run_at = Some(run_at_ms.map(|r| r as i64));
                    g.history.push((id.0, *at_ms as i64, state.into(), *attempts as i32, None, Some(reason.clone())));
                }
                StoreOp::Finished { id, state, attempts, worker, result, error, at_ms, release_key } => {
                    if let Some(key) = release_key {
                        g.keys.insert(key.clone(), KeyChange::Free(id.0));
                    }
                    let p = g.patch(*id);
                    p.run_at = Some(None);
                    p.state = Some(state.as_str().into());
                    p.worker = Some(worker.clone());
                    let result = result.as_ref().map(|r| r.to_string());
                    p.rest = Some((*attempts as i32, None, result, error.clone(), Some(*at_ms as i64)));
                    let (w, e) = (worker.clone(), error.clone());
                    g.history.push((id.0, *at_ms as i64, state.as_str().into(), *attempts as i32, w, e));
                }
            }
        }
        g
    }

    /// The changes to job `id`: on its new row if this group stored it.
    fn patch(&mut self, id: JobId) -> &mut Patch {
        if let Some(&i) = self.new_at.get(&id) {
            return &mut self.new[i].patch;
        }
        let i = *self.changed_at.entry(id).or_insert_with(|| {
            self.changed.push((id.0, Patch::default()));
            self.changed.len() - 1
        });
        &mut self.changed[i].1
    }

    pub(super) async fn insert(&self, tx: &Client, stmt: &Statement) -> Result<(), StoreError> {
        if self.new.is_empty() {
            return Ok(());
        }
        let n = &self.new;
        let col = |f: fn(&New) -> Option<String>| n.iter().map(f).collect::<Vec<_>>();
        let rest = |j: &New| j.patch.rest.clone().unwrap_or((0, None, None, None, None));
        let (rows, ids): (Vec<i64>, Vec<Uuid>) = (n.iter().map(|j| j.row).collect(), n.iter().map(|j| j.id).collect());
        let kinds: Vec<&str> = n.iter().map(|j| j.kind.as_str()).collect();
        let params: Vec<&str> = n.iter().map(|j| j.params.as_str()).collect();
        let priorities: Vec<&str> = n.iter().map(|j| j.patch.priority.as_deref().unwrap_or(&j.priority)).collect();
        let seqs: Vec<i64> = n.iter().map(|j| j.seq).collect();
        let states: Vec<&str> = n.iter().map(|j| j.patch.state.as_deref().unwrap_or(j.state)).collect();
        let attempts: Vec<i32> = n.iter().map(|j| rest(j).0).collect();
        let workers = col(|j| j.patch.worker.clone().flatten());
        let tokens = col(|j| j.patch.rest.as_ref().and_then(|r| r.1.clone()));
        let results = col(|j| j.patch.rest.as_ref().and_then(|r| r.2.clone()));
        let errors = col(|j| j.patch.rest.as_ref().and_then(|r| r.3.clone()));
        let created: Vec<i64> = n.iter().map(|j| j.created_at).collect();
        let finished: Vec<Option<i64>> = n.iter().map(|j| j.patch.rest.as_ref().and_then(|r| r.4)).collect();
        let parents: Vec<Option<Uuid>> = n.iter().map(|j| j.parent).collect();
        let retries: Vec<Option<Uuid>> = n.iter().map(|j| j.retry_of).collect();
        let opts = col(|j| j.opts.clone());
        let run_at: Vec<Option<i64>> = n.iter().map(|j| j.patch.run_at.unwrap_or(j.run_at)).collect();
        let schedules = col(|j| j.schedule.clone());
        tx.execute(
            stmt,
            &[
                &rows,
                &ids,
                &kinds,
                &params,
                &priorities,
                &seqs,
                &states,
                &attempts,
                &workers,
                &tokens,
                &results,
                &errors,
                &created,
                &finished,
                &parents,
                &retries,
                &opts,
                &run_at,
                &schedules,
            ],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn update(&self, tx: &Client, stmt: &Statement) -> Result<(), StoreError> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let c = &self.changed;
        let ids: Vec<Uuid> = c.iter().map(|(id, _)| *id).collect();
        let priorities: Vec<Option<&str>> = c.iter().map(|(_, p)| p.priority.as_deref()).collect();
        let states: Vec<Option<&str>> = c.iter().map(|(_, p)| p.state.as_deref()).collect();
        let set_worker: Vec<bool> = c.iter().map(|(_, p)| p.worker.is_some()).collect();
        let workers: Vec<Option<&str>> = c.iter().map(|(_, p)| p.worker.as_ref().and_then(|w| w.as_deref())).collect();
        let set_rest: Vec<bool> = c.iter().map(|(_, p)| p.rest.is_some()).collect();
        let rest = |p: &Patch| p.rest.clone().unwrap_or((0, None, None, None, None));
        let attempts: Vec<i32> = c.iter().map(|(_, p)| rest(p).0).collect();
        let tokens: Vec<Option<String>> = c.iter().map(|(_, p)| rest(p).1).collect();
        let results: Vec<Option<String>> = c.iter().map(|(_, p)| rest(p).2).collect();
        let errors: Vec<Option<String>> = c.iter().map(|(_, p)| rest(p).3).collect();
        let finished: Vec<Option<i64>> = c.iter().map(|(_, p)| rest(p).4).collect();
        let set_run_at: Vec<bool> = c.iter().map(|(_, p)| p.run_at.is_some()).collect();
        let run_at: Vec<Option<i64>> = c.iter().map(|(_, p)| p.run_at.flatten()).collect();
        tx.execute(
            stmt,
            &[
                &ids,
                &priorities,
                &states,
                &set_worker,
                &workers,
                &set_rest,
                &attempts,
                &tokens,
                &results,
                &errors,
                &finished,
                &set_run_at,
                &run_at,
            ],
        )
        .await?;
        Ok(())
    }

    /// The group's history rows, each naming `epoch` (none when unfenced).
    pub(super) async fn record(&self, tx: &Client, stmt: &Statement, epoch: i64) -> Result<(), StoreError> {
        if self.history.is_empty() {
            return Ok(());
        }
        let h = &self.history;
        let ids: Vec<Uuid> = h.iter().map(|r| r.0).collect();
        let at: Vec<i64> = h.iter().map(|r| r.1).collect();
        let states: Vec<&str> = h.iter().map(|r| r.2.as_str()).collect();
        let attempts: Vec<i32> = h.iter().map(|r| r.3).collect();
        let workers: Vec<Option<&str>> = h.iter().map(|r| r.4.as_deref()).collect();
        let details: Vec<Option<&str>> = h.iter().map(|r| r.5.as_deref()).collect();
        let epoch = (epoch != UNFENCED).then_some(epoch);
        tx.execute(stmt, &[&ids, &at, &states, &attempts, &workers, &details, &epoch]).await?;
        Ok(())
    }
}
