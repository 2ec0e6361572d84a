//! The store's one writer: a thread that owns the write connection and
//! commits what it is given in groups.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use faena_common::retry::Policy;
use rusqlite::{Connection, params};

use super::generations::{Gen, Hints, Layout};
use super::{Callback, Cmd, CommitFailed, MAX_GROUP, Retention, StoreError, StoreOp, retention};

type PruneReply = tokio::sync::oneshot::Sender<Result<usize, StoreError>>;

/// What arrived since the last commit.
#[derive(Default)]
struct Group {
    ops: Vec<StoreOp>,
    callbacks: Vec<Callback>,
    prunes: Vec<PruneReply>,
}

impl Group {
    fn take(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Op(op) => self.ops.push(op),
            Cmd::AfterCommit(cb) => self.callbacks.push(cb),
            Cmd::Prune(reply) => self.prunes.push(reply),
        }
    }

    fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.callbacks.is_empty() && self.prunes.is_empty()
    }
}

/// Commits what it is given, in order, in groups. A group that fails (disk
/// full, I/O error) is kept and tried again, with whatever arrived since,
/// until it commits (waits from [`Policy::DELIVERY`]: 50 ms growing to
/// 2 s): nothing queued is dropped and no callback runs before the changes
/// ahead of it are stored. The store reads as unhealthy meanwhile, so the
/// master takes no new jobs and hands out no work.
pub(super) fn run(
    mut conn: Connection,
    mut layout: Layout,
    retention: Retention,
    rx: mpsc::Receiver<Cmd>,
    healthy: Arc<AtomicBool>,
) {
    // Jobs' `created_at` never goes down in the order they are stored (a
    // clock stepped back does not break it): listing by `since` relies on it.
    let mut created: i64 = layout
        .gens
        .iter()
        .filter_map(|g| {
            conn.query_row(&format!("SELECT max(created_at) FROM {}", g.jobs), [], |r| r.get::<_, Option<i64>>(0))
                .ok()
                .flatten()
        })
        .max()
        .unwrap_or(0);
    let mut hints = Hints::default();
    let mut group = Group::default();
    let mut backoff = Policy::DELIVERY.start();
    let mut failed_at: Option<Instant> = None;
    loop {
        if group.is_empty() {
            match rx.recv() {
                Ok(cmd) => group.take(cmd),
                Err(_) => return,
            }
        }
        let mut closed = false;
        while group.ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => group.take(cmd),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut next = layout.clone();
        match apply(&mut conn, &mut next, &mut hints, &retention, &group.ops, &mut created, group.prunes.len()) {
            Ok(pruned) => {
                layout = next;
                if let Some(since) = failed_at.take() {
                    healthy.store(true, Ordering::Relaxed);
                    tracing::info!(
                        after_ms = since.elapsed().as_millis() as u64,
                        changes = group.ops.len(),
                        "the store commits again; the master resumes"
                    );
                }
                backoff.reset();
                group.ops.clear();
                for cb in group.callbacks.drain(..) {
                    cb(Ok(()));
                }
                for (reply, n) in group.prunes.drain(..).zip(pruned) {
                    let _ = reply.send(n);
                }
            }
            Err(e) if closed => {
                tracing::error!(error = %e, changes = group.ops.len(), "the store could not commit before the master stopped; these changes are lost and their jobs run again after a restart");
                let failed = CommitFailed(Arc::new(e));
                for cb in group.callbacks.drain(..) {
                    cb(Err(failed.clone()));
                }
                return;
            }
            Err(e) => {
                if failed_at.is_none() {
                    failed_at = Some(Instant::now());
                    healthy.store(false, Ordering::Relaxed);
                    tracing::error!(error = %e, changes = group.ops.len(), "store write failed; the master takes no new jobs and hands out no work until it commits again (retrying)");
                }
                std::thread::sleep(backoff.wait());
            }
        }
    }
}

/// Commits `ops` in one transaction, then `prunes` steps of retention.
/// `created` is the newest job's `created_at` so far: a job is never
/// stored as created before it.
fn apply(
    conn: &mut Connection,
    layout: &mut Layout,
    hints: &mut Hints,
    retention: &Retention,
    ops: &[StoreOp],
    created: &mut i64,
    prunes: usize,
) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
    let mut newest = *created;
    let tx = conn.transaction()?;
    for op in ops {
        apply_one(&tx, layout, hints, retention, op, &mut newest)?;
    }
    // Retention rides in the same transaction, each step in a savepoint.
    let now = faena_proto::mqtt::now_ms() as i64;
    let mut pruned = Vec::with_capacity(prunes);
    let mut tx = tx;
    for _ in 0..prunes {
        let before = layout.clone();
        let sp = tx.savepoint()?;
        pruned.push(match retention::prune(&sp, layout, *retention, now) {
            Ok(n) => sp.commit().map(|()| n).map_err(StoreError::from),
            Err(e) => Err(e),
        });
        if pruned.last().is_some_and(Result::is_err) {
            *layout = before;
        }
    }
    tx.commit()?;
    *created = newest;
    Ok(pruned)
}

/// Stores one change: a new job in the newest generation, a change to a
/// job where it is (with its history row beside it).
fn apply_one(
    tx: &Connection,
    layout: &mut Layout,
    hints: &mut Hints,
    retention: &Retention,
    op: &StoreOp,
    newest: &mut i64,
) -> Result<(), StoreError> {
    let record = |g: &Gen, id: &str, at: i64, state: &str, attempt: u32, worker: Option<&str>, detail: Option<&str>| {
        tx.prepare_cached(&g.record)?.execute(params![id, at, state, attempt, worker, detail]).map(drop)
    };
    match op {
        StoreOp::Insert { id, spec, priority, seq, at_ms, parent, retry_of } => {
            *newest = (*newest).max(*at_ms as i64);
            layout.before_insert(tx, retention, *newest)?;
            let (g, row) = (layout.newest().clone(), layout.next_row);
            layout.next_row += 1;
            hints.stored(*id, g.id);
            let id = id.to_string();
            tx.prepare_cached(&g.insert)?.execute(params![
                row,
                id,
                spec.kind().as_str(),
                spec.params_json().to_string(),
                priority.as_str(),
                *seq as i64,
                *newest,
                parent.map(|p| p.to_string()),
                retry_of.map(|r| r.to_string())
            ])?;
            let detail = match (parent, retry_of) {
                (Some(p), _) => Some(format!("unit of job {p}")),
                (None, Some(r)) => Some(format!("retry of job {r}")),
                (None, None) => None,
            };
            record(&g, &id, *newest, "queued", 0, None, detail.as_deref())?;
        }
        StoreOp::Reprioritised { id: job, priority, was, state, attempts, at_ms } => {
            let id = job.to_string();
            if let Some(g) = layout.touch(tx, hints, *job, |g| &g.reprioritise, params![id, priority.as_str()])? {
                let detail = format!("priority {} (was {})", priority.as_str(), was.as_str());
                record(g, &id, *at_ms as i64, state.as_str(), *attempts, None, Some(&detail))?;
            }
        }
        StoreOp::Started { id: job, worker, at_ms } => {
            let id = job.to_string();
            if let Some(g) = layout.touch(tx, hints, *job, |g| &g.started, params![id, worker])? {
                record(g, &id, *at_ms as i64, "running", 1, Some(worker), Some("split into units"))?;
            }
        }
        StoreOp::Dispatched { id: job, attempt, worker, token, at_ms } => {
            let id = job.to_string();
            let args =
                params![id, "running", attempt, worker, token.as_str(), None::<String>, None::<String>, None::<i64>];
            if let Some(g) = layout.touch(tx, hints, *job, |g| &g.update, args)? {
                record(g, &id, *at_ms as i64, "running", *attempt, Some(worker), None)?;
            }
        }
        StoreOp::Requeued { id: job, attempts, reason, at_ms } => {
            let id = job.to_string();
            let none = None::<String>;
            let args = params![id, "queued", attempts, none, none, none, none, None::<i64>];
            if let Some(g) = layout.touch(tx, hints, *job, |g| &g.update, args)? {
                record(g, &id, *at_ms as i64, "queued", *attempts, None, Some(reason))?;
            }
        }
        StoreOp::Finished { id: job, state, attempts, worker, result, error, at_ms } => {
            hints.finished(*job);
            let id = job.to_string();
            let result = result.as_ref().map(|r| r.to_string());
            let at = *at_ms as i64;
            let args = params![id, state.as_str(), attempts, worker, None::<String>, result, error, at];
            if let Some(g) = layout.touch(tx, hints, *job, |g| &g.update, args)? {
                record(g, &id, at, state.as_str(), *attempts, worker.as_deref(), error.as_deref())?;
            }
        }
    }
    Ok(())
}
