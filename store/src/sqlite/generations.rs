//! Jobs are stored in generations: a pair of tables (jobs and their
//! history) per span of submissions, listed in `generations`. New jobs go
//! to the newest; once it holds a quarter of the jobs the retention keeps
//! (or a sixteenth of its age has passed since its first job), the next
//! job opens a new one. Retention then drops the oldest generation whole,
//! once every job in it is out of retention, after moving the few it must
//! keep (unfinished jobs, the units of a mining job still running) into
//! the newest. Dropping a table frees its pages in one go, where deleting
//! its rows one by one costs about what storing them did (every index
//! entry of every row). PostgreSQL's partitions are the same idea.
//!
//! Row ids are unique across generations (the writer hands them out, and
//! a moved job keeps its own), and `created_at` never goes down as they
//! grow, so a listing merges the generations' pages by row id. The first
//! generation keeps the tables' old names (`jobs`, `transitions`): a store
//! made before generations is its generation 0, unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use faena_proto::ids::JobId;
use rusqlite::{Connection, OptionalExtension, ToSql};

use crate::{Retention, StoreError};

/// The columns of a job row, in the order of the table.
pub(crate) const JOB_COLUMNS: &str = "id, kind, params, priority, seq, state, attempts, worker, token, result, error, created_at, finished_at, parent, retry_of, opts, run_at, schedule, trail";
/// What a change's statement sets to append to the job's trail (its
/// history, `history.rs`), less the parameter's number.
const TRAIL: &str = "trail = coalesce(trail, '') || ?";
/// The columns of a history row.
pub(crate) const HISTORY_COLUMNS: &str = "job_id, at, state, attempt, worker, detail";

/// Most generations at once: past it the newest grows instead of a new one
/// opening (a very long retention at a high rate makes fewer, larger ones).
pub(crate) const MAX_GENERATIONS: usize = 256;
/// Fewest jobs in a generation closed for its size.
const MIN_ROWS: u64 = 16;
/// Most jobs in a generation closed for its size when the retention keeps
/// any number (by age only): dropping one stays a short pause.
const MAX_ROWS: u64 = 1_000_000;

/// The names of generation `g`'s tables: jobs, history.
pub(crate) fn tables(g: i64) -> (String, String) {
    if g == 0 { ("jobs".into(), "transitions".into()) } else { (format!("jobs_{g}"), format!("transitions_{g}")) }
}

/// Creates generation `g`'s tables and indexes (those missing: a store
/// made by an older build gets the columns and indexes it lacks).
fn create(conn: &Connection, g: i64) -> Result<(), StoreError> {
    let (j, t) = tables(g);
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {j} (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            params TEXT NOT NULL,
            priority TEXT NOT NULL,
            seq INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            worker TEXT,
            token TEXT,
            result TEXT,
            error TEXT,
            created_at INTEGER NOT NULL,
            finished_at INTEGER,
            parent TEXT,
            retry_of TEXT,
            opts TEXT,
            run_at INTEGER,
            schedule TEXT
        );
        CREATE TABLE IF NOT EXISTS {t} (
            job_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            worker TEXT,
            detail TEXT
        );"
    ))?;
    let added = [
        ("parent", "TEXT"),
        ("retry_of", "TEXT"),
        ("opts", "TEXT"),
        ("run_at", "INTEGER"),
        ("schedule", "TEXT"),
        ("trail", "TEXT"),
    ];
    for (column, kind) in added {
        let has: bool =
            conn.query_row(&format!("SELECT COUNT(*) FROM pragma_table_info('{j}') WHERE name = ?1"), [column], |r| {
                r.get(0)
            })?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE {j} ADD COLUMN {column} {kind}"))?;
        }
    }
    // One column each for the listing's filters: an index's entries for one
    // value are in row-id order, so a page is read newest first off it.
    // Unfinished jobs are found through `state` (SQLite takes its ORs as one
    // search of that index per state), and jobs by `created_at` through
    // their row ids, which grow with it (`created.rs`): indexes of their
    // own for those cost the writer about an eighth of its work, an
    // entry placed, or moved, on every insert, dispatch and end.
    // Kind, worker and priority serve the listing alone, which leaves a
    // mining job's units out: their indexes hold top-level jobs only, so
    // a unit writes no entry in them and a kind's page does not walk its
    // units (`kind=randomx.mine&state=failed`: 7 ms to 1 ms on a million
    // jobs). A store made before has them whole: they are made again.
    for column in ["kind", "worker", "priority"] {
        let index = format!("{j}_{column}");
        let made: Option<String> = conn
            .query_row("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1", [&index], |r| r.get(0))
            .optional()?;
        if made.is_some_and(|sql| !sql.contains("parent IS NULL")) {
            conn.execute_batch(&format!("DROP INDEX {index}"))?;
        }
    }
    conn.execute_batch(&format!(
        "DROP INDEX IF EXISTS {j}_unfinished;
        DROP INDEX IF EXISTS {j}_open;
        DROP INDEX IF EXISTS {j}_created;
        CREATE INDEX IF NOT EXISTS {j}_schedule ON {j}(schedule) WHERE schedule IS NOT NULL;
        CREATE INDEX IF NOT EXISTS {j}_parent ON {j}(parent) WHERE parent IS NOT NULL;
        CREATE INDEX IF NOT EXISTS {j}_retry_of ON {j}(retry_of) WHERE retry_of IS NOT NULL;
        CREATE INDEX IF NOT EXISTS {j}_state ON {j}(state);
        CREATE INDEX IF NOT EXISTS {j}_kind ON {j}(kind) WHERE parent IS NULL;
        CREATE INDEX IF NOT EXISTS {j}_worker ON {j}(worker) WHERE worker IS NOT NULL AND parent IS NULL;
        CREATE INDEX IF NOT EXISTS {j}_priority ON {j}(priority) WHERE parent IS NULL;
        CREATE INDEX IF NOT EXISTS {t}_job ON {t}(job_id);"
    ))?;
    Ok(())
}

/// The generations' tables as a reader sees them (in its transaction),
/// newest first.
pub(crate) fn listed(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    listed_in(conn, "main")
}

/// The same in the database `schema`: `main`, or an attached one (a
/// store's other shards, attached for a copy), its names qualified with it.
pub(crate) fn listed_in(conn: &Connection, schema: &str) -> Result<Vec<(String, String)>, StoreError> {
    let prefix = if schema == "main" { String::new() } else { format!("{schema}.") };
    let mut stmt = conn.prepare_cached(&format!("SELECT gen FROM {prefix}generations ORDER BY gen DESC"))?;
    let gens = stmt.query_map([], |r| r.get::<_, i64>(0))?;
    let mut out = Vec::new();
    for g in gens {
        let (j, t) = tables(g?);
        out.push((format!("{prefix}{j}"), format!("{prefix}{t}")));
    }
    Ok(out)
}

/// One generation's tables and the writer's statements on them.
#[derive(Debug)]
pub(crate) struct Gen {
    pub id: i64,
    pub jobs: String,
    pub history: String,
    /// A new job's row.
    pub insert: String,
    /// A new job's row, dispatched already (`attempts`, `worker`, `token`
    /// set): a job dispatched in the group that stores it (`write::Arrivals`).
    pub insert_dispatched: String,
    pub reprioritise: OnJob,
    pub started: OnJob,
    pub update: OnJob,
    /// `update` for a job ended by the worker its row names: `worker` is
    /// not set, so SQLite leaves its index entry alone.
    pub finish: OnJob,
    pub released: OnJob,
}

impl Gen {
    fn new(id: i64) -> Self {
        let (jobs, history) = tables(id);
        Self {
            insert: format!(
                "INSERT INTO {jobs} (rowid, id, kind, params, priority, seq, state, created_at, parent, retry_of, opts, run_at, schedule, trail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            insert_dispatched: format!(
                "INSERT INTO {jobs} (rowid, id, kind, params, priority, seq, state, created_at, parent, retry_of, opts, run_at, schedule, trail, attempts, worker, token) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ),
            reprioritise: OnJob::new(format!("UPDATE {jobs} SET priority = ?2, {TRAIL}3 WHERE id = ?1"), 3),
            started: OnJob::new(format!("UPDATE {jobs} SET state = 'running', worker = ?2, {TRAIL}3 WHERE id = ?1"), 3),
            finish: OnJob::new(
                format!(
                    "UPDATE {jobs} SET state = ?2, attempts = ?3, token = ?5, result = ?6, error = ?7, finished_at = ?8, run_at = ?9, {TRAIL}10 WHERE id = ?1 AND worker IS ?4"
                ),
                10,
            ),
            update: OnJob::new(
                format!(
                    "UPDATE {jobs} SET state = ?2, attempts = ?3, worker = ?4, token = ?5, result = ?6, error = ?7, finished_at = ?8, run_at = ?9, {TRAIL}10 WHERE id = ?1"
                ),
                10,
            ),
            released: OnJob::new(format!("UPDATE {jobs} SET state = ?2, run_at = ?3, {TRAIL}4 WHERE id = ?1"), 4),
            id,
            jobs,
            history,
        }
    }
}

/// A statement on one job, two ways: by its id (a search of the id's
/// index, comparing 36-character strings down the tree), and by the row id
/// the writer gave it, known from a hint (the table's own key, and the id
/// still checked, so a stale hint changes nothing).
#[derive(Debug)]
pub(crate) struct OnJob {
    pub by_id: String,
    pub by_row: String,
}

impl OnJob {
    /// `sql` ends in its `WHERE id = ?1 ...` and takes `params` parameters.
    fn new(sql: String, params: usize) -> Self {
        Self { by_row: format!("{sql} AND rowid = ?{}", params + 1), by_id: sql }
    }
}

/// What the writer knows of the generations. It works on a copy during a
/// commit group and keeps it only once the group commits.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Oldest first; the last takes new jobs.
    pub gens: Vec<Arc<Gen>>,
    /// The last of `gens`.
    newest: Arc<Gen>,
    /// The row ids jobs get: shared by the shards of a store (`shards.rs`),
    /// so a row id names one job in all of them and grows with the order
    /// the jobs were stored in.
    pub row_ids: RowIds,
    /// Jobs stored in the newest generation.
    rows: u64,
    /// The shards the store's jobs are spread over: each generation of
    /// one holds that share of what retention sizes it for.
    shards: u64,
    /// When the newest generation's first job was submitted.
    first_at: Option<i64>,
}

impl Layout {
    /// Reads (or makes) the generations of the store `conn` is open on.
    pub(crate) fn open(conn: &Connection, now_ms: i64) -> Result<Self, StoreError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS generations (gen INTEGER PRIMARY KEY, opened_at INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS unique_keys (key TEXT PRIMARY KEY, job TEXT NOT NULL, until_ms INTEGER);
            CREATE INDEX IF NOT EXISTS unique_keys_until ON unique_keys(until_ms) WHERE until_ms IS NOT NULL;
            CREATE TABLE IF NOT EXISTS named (kind TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (kind, name));
            CREATE TABLE IF NOT EXISTS schedule_firings (name TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, job TEXT);",
        )?;
        let mut ids: Vec<i64> = conn
            .prepare("SELECT gen FROM generations ORDER BY gen")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            conn.execute("INSERT INTO generations (gen, opened_at) VALUES (0, ?1)", [now_ms])?;
            ids.push(0);
        }
        let mut next_row = 1;
        for &g in &ids {
            create(conn, g)?;
            let (j, _) = tables(g);
            let max: Option<i64> = conn.query_row(&format!("SELECT max(rowid) FROM {j}"), [], |r| r.get(0))?;
            next_row = next_row.max(max.map_or(1, |m| m + 1));
        }
        // The newest generation's size from its row ids (each found in
        // O(log n), where counting reads every row of a large old store).
        let (j, _) = tables(*ids.last().unwrap_or(&0));
        let one = |sql: &str| conn.query_row(&format!("{sql} FROM {j}"), [], |r| r.get::<_, Option<i64>>(0));
        let rows = one("SELECT min(rowid)")?.map_or(0, |min| next_row - min);
        let first_at = super::created::oldest_created(conn, &j)?;
        let gens: Vec<Arc<Gen>> = ids.into_iter().map(|g| Arc::new(Gen::new(g))).collect();
        let newest = gens.last().cloned().unwrap_or_else(|| Arc::new(Gen::new(0)));
        let (rows, row_ids) = (u64::try_from(rows).unwrap_or(0), RowIds::from(next_row));
        Ok(Self { gens, newest, row_ids, rows, shards: 1, first_at })
    }

    /// Makes this one of `shards` shards handing out row ids from `ids`.
    pub(crate) fn share(&mut self, ids: RowIds, shards: usize) {
        self.row_ids = ids;
        self.shards = shards.max(1) as u64;
    }

    /// The generation new jobs go to.
    pub(crate) fn newest(&self) -> &Arc<Gen> {
        &self.newest
    }

    /// Makes room for one more job submitted at `at_ms`: opens a new
    /// generation when the newest is full for `r`.
    pub(crate) fn before_insert(&mut self, conn: &Connection, r: &Retention, at_ms: i64) -> Result<(), StoreError> {
        // A shard's generations hold its share, so the store as a whole
        // keeps what one file would (a quarter more than retention asks).
        let full = r.generation_rows().is_some_and(|n| self.rows >= (n / self.shards).max(1))
            || r.generation_span()
                .zip(self.first_at)
                .is_some_and(|(span, first)| at_ms.saturating_sub(first) >= span.as_millis() as i64);
        if full && self.gens.len() < MAX_GENERATIONS {
            let g = self.newest().id + 1;
            create(conn, g)?;
            conn.execute("INSERT INTO generations (gen, opened_at) VALUES (?1, ?2)", [g, at_ms])?;
            self.newest = Arc::new(Gen::new(g));
            self.gens.push(self.newest.clone());
            (self.rows, self.first_at) = (0, None);
        }
        self.rows += 1;
        self.first_at.get_or_insert(at_ms);
        Ok(())
    }

    /// Runs the statement `which` picks with `args` on the generation that
    /// holds job `id`: by its row where `hints` know it, else by its id in
    /// each generation, newest first. The generation it changed a row in.
    pub(crate) fn touch(
        &self,
        held: &mut super::write::Held<'_>,
        hints: &Hints,
        id: JobId,
        which: fn(&Gen) -> &OnJob,
        args: &[&dyn ToSql],
    ) -> Result<Option<&Arc<Gen>>, StoreError> {
        if let Some((g, row)) = hints.0.get(&id)
            && let Ok(i) = self.gens.binary_search_by_key(g, |x| x.id)
        {
            let mut by_row = Vec::with_capacity(args.len() + 1);
            by_row.extend_from_slice(args);
            by_row.push(row as &dyn ToSql);
            if held.get(&which(&self.gens[i]).by_row)?.execute(&*by_row)? > 0 {
                return Ok(Some(&self.gens[i]));
            }
        }
        for g in self.gens.iter().rev() {
            if held.get(&which(g).by_id)?.execute(args)? > 0 {
                return Ok(Some(g));
            }
        }
        Ok(None)
    }

    /// Forgets the oldest generation (its tables dropped) and counts the
    /// `moved` jobs it handed to the newest.
    pub(crate) fn dropped_oldest(&mut self, moved: u64) {
        self.gens.remove(0);
        self.rows += moved;
    }
}

/// The row ids a store hands out: the next one, shared by its shards'
/// writers. One not used (its group failed) is a gap, as a moved or pruned
/// job leaves.
#[derive(Debug, Clone)]
pub(crate) struct RowIds(Arc<AtomicI64>);

impl From<i64> for RowIds {
    fn from(next: i64) -> Self {
        Self(Arc::new(AtomicI64::new(next)))
    }
}

impl RowIds {
    /// The next job's row id, taken.
    pub(crate) fn take(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// The row id the next job will get.
    pub(crate) fn next(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Hands out no row id below `next` from now on.
    pub(crate) fn raise(&self, next: i64) {
        self.0.fetch_max(next, Ordering::Relaxed);
    }
}

/// Where unfinished jobs are: the generation and row each was stored in,
/// so that a change to a job finds its row at once, without a search of
/// the id's index or of each newer generation first (a deep queue). Only
/// hints: a job not found where its hint says (moved, or the hint lost
/// with a failed commit group) is looked for by id in every generation.
#[derive(Debug)]
pub(crate) struct Hints(FastMap<JobId, (i64, i64)>, usize);

impl Default for Hints {
    fn default() -> Self {
        Self(FastMap::default(), MAX_HINTS)
    }
}

/// The writer's maps keyed by the job ids the master made (or by places in
/// a commit group), each lookup on every change to a job: foldhash, keyed
/// per process, in place of SipHash, which cost several hundred
/// instructions a job. They are bounded (`MAX_HINTS`, a group's changes).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Most hints kept: past it they are forgotten (and jobs looked for).
const MAX_HINTS: usize = 2_000_000;

impl Hints {
    pub(crate) fn stored(&mut self, id: JobId, generation: i64, row: i64) {
        if self.0.len() >= self.1 {
            self.0.clear();
        }
        self.0.insert(id, (generation, row));
    }

    pub(crate) fn finished(&mut self, id: JobId) {
        self.0.remove(&id);
    }
}

impl Retention {
    /// Jobs in a generation before the next opens: a quarter of what is
    /// kept, so the store holds at most a quarter more than that.
    pub(crate) fn generation_rows(&self) -> Option<u64> {
        match (self.keep, self.age) {
            (Some(keep), _) => Some((keep / 4).clamp(MIN_ROWS, MAX_ROWS)),
            (None, Some(_)) => Some(MAX_ROWS),
            (None, None) => None,
        }
    }

    /// The longest span of submissions in one generation: a sixteenth of
    /// the retention period, so jobs outlive it by at most that.
    pub(crate) fn generation_span(&self) -> Option<Duration> {
        self.age.map(|age| (age / 16).max(Duration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's statements on a job find it by id and change it in
    /// place: none builds a temporary table (an `IN` list of more than two
    /// values in an index's predicate made every update build one, and
    /// halved batch dispatch).
    #[test]
    fn the_writers_statements_build_no_temporary_table() {
        let conn = Connection::open_in_memory().expect("in memory");
        let layout = Layout::open(&conn, 0).expect("layout");
        let g = layout.newest();
        let on_job = [&g.reprioritise, &g.started, &g.update, &g.finish, &g.released];
        for sql in on_job.iter().flat_map(|s| [&s.by_id, &s.by_row]).chain([&g.insert, &g.insert_dispatched]) {
            let n = sql.matches('?').count();
            let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).expect("explains");
            let ops: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(vec![rusqlite::types::Value::Null; n]), |r| r.get(1))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("ops");
            assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{sql} builds a temporary table");
        }
    }

    /// Unfinished jobs (a restart's load, retention's moves) are found
    /// through the `state` index, one search a state, never by reading
    /// every job; a store made with the indexes this took the place of
    /// loses them when it opens.
    #[test]
    fn unfinished_jobs_are_found_through_the_state_index() {
        let conn = Connection::open_in_memory().expect("in memory");
        create(&conn, 0).expect("creates");
        conn.execute_batch(
            "CREATE INDEX jobs_open ON jobs(seq) WHERE state = 'queued';
             CREATE INDEX jobs_created ON jobs(created_at);",
        )
        .expect("old indexes");
        create(&conn, 0).expect("opens again");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL")
            .expect("reads")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("names");
        assert!(!indexes.iter().any(|i| i == "jobs_open" || i == "jobs_created"), "{indexes:?}");
        for sql in [
            format!("SELECT id FROM jobs WHERE {}", crate::contract::UNFINISHED_SQLITE),
            format!("SELECT count(*) FROM jobs WHERE id = ?1 AND {}", crate::contract::UNFINISHED_SQLITE),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explains")
                .query_map(rusqlite::params_from_iter(vec![""; sql.matches('?').count()]), |r| r.get(3))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("plan");
            assert!(plan.iter().all(|step| step.starts_with("SEARCH")), "{sql}: {plan:?}");
        }
    }

    /// By a hint, a statement goes to the row by the table's own key, and
    /// a hint that names another job's row changes neither.
    #[test]
    fn a_hinted_row_is_found_by_its_key_and_only_if_it_is_the_job() {
        let conn = Connection::open_in_memory().expect("in memory");
        let layout = Layout::open(&conn, 0).expect("layout");
        let g = layout.newest();
        for s in [&g.reprioritise, &g.started, &g.update, &g.finish, &g.released] {
            let n = s.by_row.matches('?').count();
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", s.by_row))
                .expect("explains")
                .query_map(rusqlite::params_from_iter(vec![rusqlite::types::Value::Null; n]), |r| r.get(3))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("plan");
            assert!(plan.iter().any(|p| p.contains("INTEGER PRIMARY KEY")), "{}: {plan:?}", s.by_row);
        }
        let (a, b) = (JobId::new(), JobId::new());
        for (row, id) in [(1, a), (2, b)] {
            conn.execute(
                "INSERT INTO jobs (rowid, id, kind, params, priority, seq, state, created_at) VALUES (?1, ?2, 'noop', '{}', 'normal', ?1, 'queued', 0)",
                rusqlite::params![row, id.to_string()],
            )
            .expect("inserts");
        }
        let state = |id: JobId| -> String {
            conn.query_row("SELECT state FROM jobs WHERE id = ?1", [id.to_string()], |r| r.get(0)).expect("reads")
        };
        let release = |hints: &Hints, id: JobId, to: &str| {
            let mut held = super::super::write::Held::new(&conn);
            let args = rusqlite::params![id.to_string(), to, None::<i64>, ""];
            layout.touch(&mut held, hints, id, |g| &g.released, args).expect("runs").map(|g| g.id)
        };
        let mut hints = Hints::default();
        hints.stored(a, 0, 1);
        assert_eq!(release(&hints, a, "waiting"), Some(0));
        assert_eq!((state(a), state(b)), ("waiting".into(), "queued".into()));
        // A's hint names B's row (a group that failed handed it out again).
        hints.stored(a, 0, 2);
        assert_eq!(release(&hints, a, "scheduled"), Some(0));
        assert_eq!((state(a), state(b)), ("scheduled".into(), "queued".into()));
        assert_eq!(release(&Hints::default(), JobId::new(), "waiting"), None, "no such job");
    }

    #[test]
    fn hints_are_bounded_and_only_hints() {
        let mut hints = Hints(FastMap::default(), 3);
        let ids: Vec<JobId> = (0..5).map(|_| JobId::new()).collect();
        for (g, id) in ids.iter().enumerate() {
            hints.stored(*id, g as i64, g as i64 + 10);
            assert!(hints.0.len() <= 3, "never more than the bound");
        }
        // Past the bound they were forgotten, not the newest.
        assert_eq!(hints.0.get(&ids[4]), Some(&(4, 14)));
        hints.finished(ids[4]);
        assert_eq!(hints.0.keys().collect::<Vec<_>>(), [&ids[3]]);
        assert_eq!(Hints::default().1, MAX_HINTS);
    }
}
