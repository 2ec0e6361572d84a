//! The SQLite backend's side of the writer: a group in one transaction.

use std::sync::Arc;

use faena_proto::ids::JobId;

use rusqlite::{CachedStatement, Connection, params};

use super::created::newest_created;
use super::generations::{FastMap, Gen, Hints, Layout};
use super::history::{IdText, Trail};
use super::retention;
use crate::contract::{fired_by, held_key, inserted_detail, opts_column, priority_detail, requeued_state};

/// A schedule's last firing (and the job it made).
const FIRED: &str = "INSERT OR REPLACE INTO schedule_firings (name, at_ms, job) VALUES (?1, ?2, ?3)";
use crate::writer::{Apply, Stamp};
use crate::{Retention, StoreError, StoreOp};

/// The write connection and what the writer knows of the store.
#[derive(Debug)]
pub(crate) struct Writer {
    conn: Connection,
    layout: Layout,
    hints: Hints,
    retention: Retention,
    /// The newest job's `created_at`: jobs' `created_at` never goes down in
    /// the order they are stored (a clock stepped back does not break it),
    /// which listing by `since` relies on.
    created: i64,
    /// The store's lock (`lock.rs`), shared by its shards' writers: let go
    /// when the last of them has committed its last group.
    lock: Option<std::sync::Arc<super::lock::Held>>,
}

impl Writer {
    pub(crate) fn new(conn: Connection, layout: Layout, retention: Retention) -> Self {
        let created =
            layout.gens.iter().filter_map(|g| newest_created(&conn, &g.jobs).ok().flatten()).max().unwrap_or(0);
        Self { conn, layout, hints: Hints::default(), retention, created, lock: None }
    }

    /// Holds the store's lock for as long as this writer runs.
    pub(crate) fn hold(&mut self, lock: std::sync::Arc<super::lock::Held>) {
        self.lock = Some(lock);
    }
}

impl Writer {
    /// The newest job's `created_at` in this file.
    pub(crate) fn newest_created(&self) -> i64 {
        self.created
    }
}

impl Apply for Writer {
    fn apply(
        &mut self,
        ops: &[StoreOp],
        stamps: &[Stamp],
        prunes: usize,
    ) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
        // The layout changes only if the group commits.
        let mut layout = self.layout.clone();
        let group = Group { ops, stamps, prunes };
        let pruned = apply(&mut self.conn, &mut layout, &mut self.hints, &self.retention, group, &mut self.created)?;
        self.layout = layout;
        Ok(pruned)
    }
}

/// A commit group: its changes, the row ids stamped on its new jobs (none:
/// the layout numbers them), and how many steps of retention ride on it.
struct Group<'a> {
    ops: &'a [StoreOp],
    stamps: &'a [Stamp],
    prunes: usize,
}

/// Commits a group's changes in one transaction, then its steps of
/// retention. `created` is the newest job's `created_at` so far: a job is
/// never stored as created before it.
fn apply(
    conn: &mut Connection,
    layout: &mut Layout,
    hints: &mut Hints,
    retention: &Retention,
    Group { ops, stamps, prunes }: Group<'_>,
    created: &mut i64,
) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
    let mut new = NewJobs { stamps: stamps.iter(), newest: *created };
    let tx = conn.transaction()?;
    {
        let mut held = Held::new(&tx);
        let mut arrivals = Arrivals::of(ops);
        for op in ops.iter().enumerate() {
            apply_one(&mut held, &mut arrivals, layout, hints, retention, op, &mut new)?;
        }
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
    *created = new.newest;
    Ok(pruned)
}

/// Jobs dispatched in the group that stores them, with nothing else done
/// to them between: a job placed the moment it arrives, as every job is
/// while workers have free slots. Such a job's row is inserted already
/// dispatched, where an insert and then an update would rewrite its
/// `state` and `worker` index entries; its trail has both changes.
#[derive(Default)]
struct Arrivals<'a> {
    /// An `Insert`'s place in the group → its job's `Dispatched` (place, op).
    pairs: FastMap<usize, (usize, &'a StoreOp)>,
    /// A `Dispatched` already written by its job's insert → the generation.
    written: FastMap<usize, Arc<Gen>>,
}

impl<'a> Arrivals<'a> {
    fn of(ops: &'a [StoreOp]) -> Self {
        let inserts = ops.iter().filter(|op| matches!(op, StoreOp::Insert { .. })).count();
        if inserts == 0 {
            return Self::default();
        }
        let mut stored: FastMap<JobId, usize> = FastMap::with_capacity_and_hasher(inserts, Default::default());
        let mut pairs = FastMap::default();
        for (i, op) in ops.iter().enumerate() {
            match op {
                StoreOp::Insert { id, .. } => {
                    stored.insert(*id, i);
                }
                StoreOp::Dispatched { id, .. } => {
                    if let Some(at) = stored.remove(id) {
                        pairs.insert(at, (i, op));
                    }
                }
                StoreOp::Released { id, .. }
                | StoreOp::Reprioritised { id, .. }
                | StoreOp::Started { id, .. }
                | StoreOp::Requeued { id, .. }
                | StoreOp::Finished { id, .. } => {
                    stored.remove(id);
                }
                StoreOp::Fired { .. } | StoreOp::Named { .. } => {}
            }
        }
        Self { pairs, written: FastMap::default() }
    }
}

/// What the group's new jobs are numbered and timed by: the stamps given
/// them, in order (else the layout's row ids and their own times), and the
/// newest `created_at` so far.
struct NewJobs<'a> {
    stamps: std::slice::Iter<'a, Stamp>,
    newest: i64,
}

/// Stores one change, the `i`th of its group: a new job in the newest
/// generation, a change to a job where it is (its trail, `history.rs`,
/// taking the change in the same statement).
fn apply_one<'a>(
    held: &mut Held<'_>,
    arrivals: &mut Arrivals<'a>,
    layout: &mut Layout,
    hints: &mut Hints,
    retention: &Retention,
    (i, op): (usize, &'a StoreOp),
    new: &mut NewJobs<'_>,
) -> Result<(), StoreError> {
    let newest = &mut new.newest;
    let tx = held.conn;
    match op {
        StoreOp::Insert { id, spec, priority, seq, at_ms, parent, retry_of, state, opts, run_at_ms } => {
            let stamp = new.stamps.next().copied();
            *newest = (*newest).max(stamp.map_or(*at_ms as i64, |s| s.created));
            layout.before_insert(tx, retention, *newest)?;
            let row = stamp.map_or_else(|| layout.row_ids.take(), |s| s.row);
            let g = layout.newest().clone();
            hints.stored(*id, g.id, row);
            let id = IdText::from(*id);
            let detail = inserted_detail(*parent, *retry_of, *run_at_ms);
            let trail = Trail::default().step(*newest, state.as_str(), 0, None, detail.as_deref());
            // A job dispatched in this group is stored as the update of its
            // `Dispatched` would leave it, with the three columns more.
            let (row_state, run_at, attempts, worker, token, sql, n, trail) = match arrivals.pairs.get(&i) {
                Some(&(d, StoreOp::Dispatched { attempt, worker, token, at_ms, .. })) => {
                    arrivals.written.insert(d, g.clone());
                    let trail = trail.step(*at_ms as i64, "running", *attempt, Some(worker), None);
                    let (worker, token) = (Some(worker.as_str()), Some(token.as_str()));
                    ("running", None, *attempt, worker, token, &g.insert_dispatched, 17, trail)
                }
                _ => (state.as_str(), run_at_ms.map(|r| r as i64), 0, None, None, &g.insert, 14, trail),
            };
            let args = params![
                row,
                id,
                spec.kind().as_str(),
                spec.params_text(),
                priority.as_str(),
                *seq as i64,
                row_state,
                *newest,
                parent.map(IdText::from),
                retry_of.map(IdText::from),
                opts_column(opts),
                run_at,
                opts.as_ref().and_then(|o| o.schedule.clone()),
                trail,
                attempts,
                worker,
                token,
            ];
            held.get(sql)?.execute(&args[..n])?;
            if let Some((schedule, at)) = fired_by(opts) {
                tx.prepare_cached(FIRED)?.execute(params![schedule, at, id])?;
            }
            if let Some((key, until)) = held_key(opts, *newest) {
                tx.prepare_cached("DELETE FROM unique_keys WHERE until_ms < ?1")?.execute([*newest])?;
                tx.prepare_cached("INSERT OR REPLACE INTO unique_keys (key, job, until_ms) VALUES (?1, ?2, ?3)")?
                    .execute(params![key, id, until])?;
            }
        }
        StoreOp::Released { id: job, state, run_at_ms, attempts, detail, at_ms } => {
            let trail = Trail::default().step(*at_ms as i64, state.as_str(), *attempts, None, Some(detail));
            let args = params![IdText::from(*job), state.as_str(), run_at_ms.map(|r| r as i64), trail];
            layout.touch(held, hints, *job, |g| &g.released, args)?;
        }
        StoreOp::Reprioritised { id: job, priority, was, state, attempts, at_ms } => {
            let detail = priority_detail(*priority, *was);
            let trail = Trail::default().step(*at_ms as i64, state.as_str(), *attempts, None, Some(&detail));
            let args = params![IdText::from(*job), priority.as_str(), trail];
            layout.touch(held, hints, *job, |g| &g.reprioritise, args)?;
        }
        StoreOp::Started { id: job, worker, at_ms } => {
            let trail = Trail::default().step(*at_ms as i64, "running", 1, Some(worker), Some("split into units"));
            layout.touch(held, hints, *job, |g| &g.started, params![IdText::from(*job), worker, trail])?;
        }
        StoreOp::Dispatched { id: job, attempt, worker, token, at_ms } => {
            // Stored with its insert, trail and all, where it arrived in this group.
            if arrivals.written.remove(&i).is_none() {
                let (id, none) = (IdText::from(*job), None::<String>);
                let trail = Trail::default().step(*at_ms as i64, "running", *attempt, Some(worker), None);
                let args = params![
                    id,
                    "running",
                    attempt,
                    worker,
                    token.as_str(),
                    none,
                    none,
                    None::<i64>,
                    None::<i64>,
                    trail
                ];
                layout.touch(held, hints, *job, |g| &g.update, args)?;
            }
        }
        StoreOp::Requeued { id: job, attempts, reason, at_ms, run_at_ms } => {
            let (id, none) = (IdText::from(*job), None::<String>);
            let state = requeued_state(*run_at_ms);
            let trail = Trail::default().step(*at_ms as i64, state, *attempts, None, Some(reason));
            let run_at = run_at_ms.map(|r| r as i64);
            let args = params![id, state, attempts, none, none, none, none, None::<i64>, run_at, trail];
            layout.touch(held, hints, *job, |g| &g.update, args)?;
        }
        StoreOp::Finished { id: job, state, attempts, worker, result, error, at_ms, release_key } => {
            let id = IdText::from(*job);
            let result = result.as_ref().map(|r| r.to_string());
            let at = *at_ms as i64;
            if let Some(key) = release_key {
                tx.prepare_cached("DELETE FROM unique_keys WHERE key = ?1 AND job = ?2")?.execute(params![key, id])?;
            }
            let trail = Trail::default().step(at, state.as_str(), *attempts, worker.as_deref(), error.as_deref());
            let args =
                params![id, state.as_str(), attempts, worker, None::<String>, result, error, at, None::<i64>, trail];
            // SQLite rewrites the entries of every index whose column an
            // update sets, changed or not: a job nearly always ends on the
            // worker it ran on, and then its `worker` entry stays as it is.
            if layout.touch(held, hints, *job, |g| &g.finish, args)?.is_none() {
                layout.touch(held, hints, *job, |g| &g.update, args)?;
            }
            hints.finished(*job);
        }
        StoreOp::Fired { schedule, at_ms } => {
            tx.prepare_cached(FIRED)?.execute(params![schedule, *at_ms as i64, None::<String>])?;
        }
        StoreOp::Named { kind, name, doc: Some(doc) } => {
            tx.prepare_cached("INSERT OR REPLACE INTO named (kind, name, doc) VALUES (?1, ?2, ?3)")?
                .execute(params![kind.as_str(), name, doc])?;
        }
        StoreOp::Named { kind, name, doc: None } => {
            tx.prepare_cached("DELETE FROM named WHERE kind = ?1 AND name = ?2")?
                .execute(params![kind.as_str(), name])?;
        }
    }
    Ok(())
}

/// The statements of one commit group, each taken from rusqlite's cache
/// once a group instead of once a statement run: a cache look-up hashes the
/// statement's text and moves it out of the cache and back, six times a job.
pub(crate) struct Held<'c> {
    pub conn: &'c Connection,
    stmts: Vec<(String, CachedStatement<'c>)>,
}

impl<'c> Held<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self { conn, stmts: Vec::new() }
    }

    /// The statement of `sql`, prepared (or taken from the cache) on its
    /// first use in the group.
    pub(crate) fn get(&mut self, sql: &str) -> Result<&mut CachedStatement<'c>, StoreError> {
        let i = match self.stmts.iter().position(|(s, _)| s == sql) {
            Some(i) => i,
            None => {
                self.stmts.push((sql.to_owned(), self.conn.prepare_cached(sql)?));
                self.stmts.len() - 1
            }
        };
        Ok(&mut self.stmts[i].1)
    }
}

#[cfg(test)]
mod tests {
    use faena_proto::ids::FencingToken;
    use faena_proto::jobs::{JobSpec, JobState, Priority};
    use serde_json::json;

    use super::*;
    use crate::sqlite::generations::JOB_COLUMNS;

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().expect("in memory");
        let layout = Layout::open(&conn, 0).expect("layout");
        Writer::new(conn, layout, Retention::OFF)
    }

    fn insert(id: JobId, seq: u64, run_at_ms: Option<u64>) -> StoreOp {
        StoreOp::Insert {
            id,
            spec: Arc::new(JobSpec::parse("noop", json!({"payload": seq})).expect("valid")),
            priority: Priority::Normal,
            seq,
            at_ms: 1_000 + seq,
            parent: None,
            retry_of: None,
            state: JobState::Queued,
            opts: None,
            run_at_ms,
        }
    }

    fn dispatched(id: JobId, worker: &str) -> StoreOp {
        let token = FencingToken::parse(&format!("t-{worker}")).expect("token");
        StoreOp::Dispatched { id, attempt: 1, worker: worker.into(), token, at_ms: 2_000 }
    }

    /// Every column of every job (its trail too), in row order, and the
    /// changes in the trails.
    fn rows(w: &Writer) -> (Vec<Vec<String>>, Vec<crate::Transition>) {
        let read = |sql: String| -> Vec<Vec<String>> {
            let mut stmt = w.conn.prepare(&sql).expect("reads");
            let n = stmt.column_count();
            stmt.query_map([], |r| {
                (0..n).map(|i| r.get_ref(i).map(|v| format!("{v:?}"))).collect::<Result<Vec<_>, _>>()
            })
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
        };
        let jobs = read(format!("SELECT rowid, {JOB_COLUMNS} FROM jobs ORDER BY rowid"));
        let trails: Vec<String> = w
            .conn
            .prepare("SELECT trail FROM jobs ORDER BY rowid")
            .expect("reads")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("trails");
        (jobs, trails.iter().flat_map(|t| crate::sqlite::steps(t).expect("parses")).collect())
    }

    #[test]
    fn a_job_dispatched_in_the_group_that_stores_it_is_stored_as_if_apart() {
        let [a, b, c, d] = [JobId::new(), JobId::new(), JobId::new(), JobId::new()];
        let reprioritised = StoreOp::Reprioritised {
            id: c,
            priority: Priority::High,
            was: Priority::Normal,
            state: JobState::Queued,
            attempts: 0,
            at_ms: 1_500,
        };
        // a: dispatched as it arrives, other jobs' changes between; b: not
        // dispatched; c: changed before its dispatch; d: a delayed job
        // whose time had come, dispatched in the same group.
        let stored = [insert(a, 0, None), insert(b, 1, None), insert(c, 2, None), insert(d, 3, Some(900))];
        let later = [reprioritised, dispatched(c, "w2"), dispatched(a, "w1"), dispatched(d, "w3")];
        let together: Vec<StoreOp> = stored.iter().chain(&later).cloned().collect();
        let pairs: Vec<_> = {
            let arrivals = Arrivals::of(&together);
            let mut p: Vec<_> = arrivals.pairs.iter().map(|(i, (d, _))| (*i, *d)).collect();
            p.sort();
            p
        };
        assert_eq!(pairs, vec![(0, 6), (3, 7)], "a and d are written with their inserts; c is not");

        let mut one = writer();
        one.apply(&together, &[], 0).expect("one group");
        let mut two = writer();
        two.apply(&stored, &[], 0).expect("first group");
        two.apply(&later, &[], 0).expect("second group");
        let (jobs, history) = rows(&one);
        assert_eq!((jobs.len(), history.len()), (4, 8));
        assert_eq!(rows(&one), rows(&two), "the same rows, column for column, either way");
    }

    /// A job stored before trails keeps the rows it has in the history
    /// table; its later changes go to its trail, and its history reads
    /// both, the rows first.
    #[test]
    fn a_job_stored_before_trails_reads_its_rows_then_its_trail() {
        let mut w = writer();
        let id = JobId::new();
        w.apply(&[insert(id, 0, None)], &[], 0).expect("stored");
        // As a store written before trails left it.
        w.conn
            .execute_batch(&format!(
                "UPDATE jobs SET trail = NULL;
                 INSERT INTO transitions (job_id, at, state, attempt) VALUES ('{id}', 1000, 'queued', 0);"
            ))
            .expect("old rows");
        w.apply(&[dispatched(id, "w1")], &[], 0).expect("dispatched");
        let said: Vec<_> = super::super::read::history(&w.conn, id)
            .expect("reads")
            .into_iter()
            .map(|t| (t.at_ms, t.state, t.worker))
            .collect();
        assert_eq!(said, [(1000, "queued".into(), None), (2000, "running".into(), Some("w1".into()))]);
        // A restart counts its priority changes in both.
        w.conn
            .execute(&format!("INSERT INTO transitions (job_id, at, state, attempt, detail) VALUES ('{id}', 1500, 'queued', 0, ?1)"), [crate::contract::priority_detail(Priority::High, Priority::Normal)])
            .expect("an old change");
        let at_ms = 3000;
        let state = JobState::Running;
        w.apply(
            &[StoreOp::Reprioritised { id, priority: Priority::Low, was: Priority::High, state, attempts: 1, at_ms }],
            &[],
            0,
        )
        .expect("a change in the trail");
        let restored = super::super::read::load_unfinished(&w.conn).expect("loads");
        assert_eq!(restored.iter().map(|j| (j.id, j.priority_changes)).collect::<Vec<_>>(), [(id, 2)]);
    }
}
