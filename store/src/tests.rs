use super::*;
use faena_proto::ids::FencingToken;
use faena_proto::jobs::{JobSpec, JobState, Priority};
use serde_json::json;

/// What the writer answers for everything sent to `store` so far: `Ok`
/// once it is committed, the failure where the group was refused.
pub(crate) fn outcome(store: &Store) -> tokio::sync::oneshot::Receiver<Result<(), CommitFailed>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    store.after_commit(move |r| {
        let _ = tx.send(r);
    });
    rx
}

pub(crate) async fn wait_commit(store: &Store) {
    let r = outcome(store).await.expect("the writer answers");
    assert!(r.is_ok(), "the group commits: {r:?}");
}

/// Fresh storage of one backend: a SQLite file in a temporary directory
/// (or several: a store of shards), or a PostgreSQL of its own (`harness`).
struct Backend {
    dir: tempfile::TempDir,
    pg: Option<crate::harness::Postgres>,
    shards: Option<usize>,
}

impl Backend {
    fn sqlite() -> Self {
        Self { dir: tempfile::tempdir().expect("tmp dir"), pg: None, shards: None }
    }

    /// SQLite over four files, each with its writer (`shards.rs`).
    fn sqlite_shards() -> Self {
        Self { shards: Some(4), ..Self::sqlite() }
    }

    fn postgres() -> Self {
        Self { pg: Some(crate::harness::Postgres::start()), ..Self::sqlite() }
    }

    /// PostgreSQL with four writers, each on its own connection.
    fn postgres_writers() -> Self {
        Self { shards: Some(4), ..Self::postgres() }
    }

    async fn open(&self) -> Store {
        let path = self.dir.path().join("jobs.db");
        match &self.pg {
            Some(pg) => {
                let writers = self.shards.unwrap_or(1);
                Store::connect_writers(&pg.url(), Retention::OFF, writers).await.expect("connects")
            }
            None => Store::open_sharded(&path, SyncMode::Full, Retention::OFF, self.shards).expect("opens"),
        }
    }
}

/// Runs the check `$f(&Backend)` on each backend (SQLite in one file and
/// in shards, PostgreSQL with one writer and with four), as four tests.
macro_rules! on_every_backend {
    ($f:ident) => {
        mod $f {
            #[tokio::test]
            async fn on_sqlite() {
                super::$f(&super::Backend::sqlite()).await;
            }

            #[tokio::test]
            async fn on_sqlite_shards() {
                super::$f(&super::Backend::sqlite_shards()).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                super::$f(&super::Backend::postgres()).await;
            }

            #[tokio::test]
            async fn on_postgres_writers() {
                super::$f(&super::Backend::postgres_writers()).await;
            }
        }
    };
}

on_every_backend!(records_every_transition_and_restores_unfinished_jobs);
async fn records_every_transition_and_restores_unfinished_jobs(backend: &Backend) {
    let (a, b, c) = (JobId::new(), JobId::new(), JobId::new());
    {
        let store = backend.open().await;
        for (i, id) in [a, b, c].into_iter().enumerate() {
            store.write(StoreOp::Insert {
                id,
                spec: Arc::new(JobSpec::parse("noop", json!({"payload": i})).expect("valid")),
                priority: Priority::Normal,
                seq: i as u64,
                at_ms: 1000,
                parent: None,
                retry_of: None,
                state: JobState::Queued,
                opts: None,
                run_at_ms: None,
            });
        }
        let token = FencingToken::parse("tok").expect("token");
        store.write(StoreOp::Dispatched { id: a, attempt: 1, worker: "w1".into(), token, at_ms: 1001 });
        let token = FencingToken::parse("t").expect("token");
        store.write(StoreOp::Dispatched { id: c, attempt: 1, worker: "w1".into(), token, at_ms: 1001 });
        store.write(StoreOp::Finished {
            id: c,
            state: JobState::Succeeded,
            attempts: 1,
            worker: Some("w1".into()),
            result: Some(json!({"payload": 2})),
            error: None,
            at_ms: 1002,
            release_key: None,
        });
        wait_commit(&store).await;
        let done = store.get(c).await.expect("reads").expect("exists");
        assert_eq!((done.state, done.result), (JobState::Succeeded, Some(json!({"payload": 2}))));
        assert_eq!(
            store.history(c).await.expect("reads").iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
            ["queued", "running", "succeeded"]
        );
    }
    let store = backend.open().await;
    let restored = store.load_unfinished().await.expect("loads");
    assert_eq!(restored.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(restored[0].lease.as_ref().map(|l| (l.0.as_str(), l.1, l.2.as_str())), Some(("w1", 1, "tok")));
    assert!(restored[1].lease.is_none());
    assert!(store.get(JobId::new()).await.expect("reads").is_none());
}

on_every_backend!(a_restored_job_counts_the_priority_changes_in_its_history);
async fn a_restored_job_counts_the_priority_changes_in_its_history(backend: &Backend) {
    let id = JobId::new();
    {
        let store = backend.open().await;
        noop(&store, id, 1);
        for (n, (priority, was)) in
            [(Priority::High, Priority::Normal), (Priority::Low, Priority::High), (Priority::Normal, Priority::Low)]
                .into_iter()
                .enumerate()
        {
            let at_ms = 1001 + n as u64;
            store.write(StoreOp::Reprioritised { id, priority, was, state: JobState::Queued, attempts: 0, at_ms });
        }
        // A requeue whose reason speaks of priority is not a change of it.
        let reason = "priority inversion on the worker".to_owned();
        store.write(StoreOp::Requeued { id, attempts: 1, reason, at_ms: 1010, run_at_ms: None });
        wait_commit(&store).await;
    }
    let store = backend.open().await;
    let restored = store.load_unfinished().await.expect("loads");
    assert_eq!(restored.iter().map(|j| (j.id, j.priority_changes)).collect::<Vec<_>>(), [(id, 3)]);
}

on_every_backend!(since_holds_when_the_clock_steps_back);
async fn since_holds_when_the_clock_steps_back(backend: &Backend) {
    let store = backend.open().await;
    // Submitted at 1000, 3000, then 2000 (the master's clock stepped back).
    let ids: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
    for (seq, (id, at_ms)) in ids.iter().zip([1000, 3000, 2000]).enumerate() {
        let spec = Arc::new(JobSpec::parse("noop", json!({})).expect("valid"));
        let op = StoreOp::Insert {
            id: *id,
            spec,
            priority: Priority::Normal,
            seq: seq as u64,
            at_ms,
            parent: None,
            retry_of: None,
            state: JobState::Queued,
            opts: None,
            run_at_ms: None,
        };
        store.write(op);
    }
    wait_commit(&store).await;
    let listed = |since_ms| {
        let store = store.clone();
        async move {
            let page = store.list(&JobFilter { since_ms: Some(since_ms), limit: 10, ..Default::default() }).await;
            page.expect("lists").jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    // The last job is stored as created at 3000, not before the one ahead of it.
    assert_eq!(listed(2500).await, vec![ids[2], ids[1]]);
    assert_eq!(listed(3001).await, Vec::<JobId>::new());
    assert_eq!(listed(0).await, vec![ids[2], ids[1], ids[0]]);
}

on_every_backend!(lists_by_state_and_worker_across_open_and_ended_jobs);
/// The listing's state and worker filters, alone and together, over jobs
/// queued, running and ended (PostgreSQL reads unfinished states and a
/// worker's running jobs among the open ones, migration 8), and a
/// worker's jobs paged across both.
async fn lists_by_state_and_worker_across_open_and_ended_jobs(backend: &Backend) {
    let store = backend.open().await;
    let [queued, run1, done1, failed2, run2]: [JobId; 5] = std::array::from_fn(|_| JobId::new());
    for (seq, id) in [queued, run1, done1, failed2, run2].into_iter().enumerate() {
        noop(&store, id, seq as u64);
    }
    let token = || FencingToken::parse("tok").expect("token");
    for (id, worker) in [(run1, "w1"), (done1, "w1"), (failed2, "w2"), (run2, "w2")] {
        store.write(StoreOp::Dispatched { id, attempt: 1, worker: worker.into(), token: token(), at_ms: 2000 });
    }
    let end = |id, state, worker: &str| StoreOp::Finished {
        id,
        state,
        attempts: 1,
        worker: Some(worker.into()),
        result: None,
        error: None,
        at_ms: 3000,
        release_key: None,
    };
    store.write(end(done1, JobState::Succeeded, "w1"));
    store.write(end(failed2, JobState::Failed, "w2"));
    wait_commit(&store).await;
    let listed = |state: Option<JobState>, worker: Option<&str>| {
        let (store, worker) = (store.clone(), worker.map(str::to_owned));
        async move {
            let filter = JobFilter { state, worker, limit: 10, ..Default::default() };
            store.list(&filter).await.expect("lists").jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(Some(JobState::Queued), None).await, vec![queued]);
    assert_eq!(listed(Some(JobState::Running), None).await, vec![run2, run1]);
    assert_eq!(listed(Some(JobState::Succeeded), None).await, vec![done1]);
    assert_eq!(listed(Some(JobState::Failed), None).await, vec![failed2]);
    assert_eq!(listed(None, Some("w1")).await, vec![done1, run1]);
    assert_eq!(listed(None, Some("w2")).await, vec![run2, failed2]);
    assert_eq!(listed(Some(JobState::Running), Some("w1")).await, vec![run1]);
    assert_eq!(listed(Some(JobState::Failed), Some("w2")).await, vec![failed2]);
    assert_eq!(listed(Some(JobState::Queued), Some("w1")).await, Vec::<JobId>::new());
    // A worker's jobs a page at a time, the ended and the running interleaved.
    let mut filter = JobFilter { worker: Some("w2".into()), limit: 1, ..Default::default() };
    let first = store.list(&filter).await.expect("lists");
    filter.before = first.next;
    let second = store.list(&filter).await.expect("lists");
    assert_eq!((first.jobs[0].id, second.jobs[0].id, second.next), (run2, failed2, None));
    // Ended since: listed by its final state, and no longer as running.
    store.write(end(run1, JobState::Succeeded, "w1"));
    wait_commit(&store).await;
    assert_eq!(listed(Some(JobState::Running), None).await, vec![run2]);
    assert_eq!(listed(Some(JobState::Succeeded), Some("w1")).await, vec![done1, run1]);
    // Ended on another worker than the one its row names, or on none: the
    // row says so, and the worker filter follows it.
    store.write(end(run2, JobState::Failed, "w3"));
    store.write(StoreOp::Finished {
        id: queued,
        state: JobState::Cancelled,
        attempts: 0,
        worker: None,
        result: None,
        error: None,
        at_ms: 3000,
        release_key: None,
    });
    wait_commit(&store).await;
    assert_eq!(listed(None, Some("w3")).await, vec![run2]);
    assert_eq!(listed(None, Some("w2")).await, vec![failed2]);
    let cancelled = store.get(queued).await.expect("reads").expect("exists");
    assert_eq!((cancelled.state, cancelled.worker), (JobState::Cancelled, None));
}

pub(crate) fn noop(store: &Store, id: JobId, seq: u64) {
    store.write(insert(id, seq, None));
}

/// Job `id` succeeded on `w1`, its result naming it, freeing `release_key`.
pub(crate) fn finished(id: JobId, release_key: Option<String>) -> StoreOp {
    StoreOp::Finished {
        id,
        state: JobState::Succeeded,
        attempts: 1,
        worker: Some("w1".into()),
        result: Some(json!({"id": id.to_string()})),
        error: None,
        at_ms: 9_000,
        release_key,
    }
}

/// Retention's steps until one deletes nothing; the jobs deleted.
pub(crate) async fn prune_all(store: &Store) -> usize {
    let mut total = 0;
    loop {
        match store.prune().await.expect("prunes") {
            0 => return total,
            n => total += n,
        }
    }
}

/// A queued `noop` job stored, asking `opts`.
pub(crate) fn insert(id: JobId, seq: u64, opts: Option<faena_proto::options::JobOptions>) -> StoreOp {
    StoreOp::Insert {
        id,
        spec: Arc::new(JobSpec::parse("noop", json!({})).expect("valid")),
        priority: Priority::Normal,
        seq,
        at_ms: 1000 + seq,
        parent: None,
        retry_of: None,
        state: JobState::Queued,
        opts: opts.map(Arc::new),
        run_at_ms: None,
    }
}

/// Every job the listing shows, newest first.
pub(crate) async fn all_listed(store: &Store) -> Vec<JobId> {
    let (mut out, mut before) = (Vec::new(), None);
    loop {
        let page = store.list(&JobFilter { before, limit: 50, ..Default::default() }).await.expect("lists");
        out.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(n) => before = Some(n),
            None => return out,
        }
    }
}

/// A store to copy at `path` (over `shards` files), in generations of 16
/// (a quarter of 64) so a copy reads several: 100 `noop` jobs, all but the
/// eighth succeeded with `{"n": i}`; their ids.
pub(crate) fn to_copy(path: &std::path::Path, shards: Option<usize>) -> (Store, Vec<JobId>) {
    let keep = Retention { age: None, keep: Some(64) };
    let source = Store::open_sharded(path, SyncMode::Normal, keep, shards).expect("opens");
    let ids: Vec<JobId> = (0..100).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        noop(&source, *id, i as u64);
        if i != 7 {
            source.write(StoreOp::Finished {
                id: *id,
                state: JobState::Succeeded,
                attempts: 1,
                worker: Some("w1".into()),
                result: Some(json!({"n": i})),
                error: None,
                at_ms: 5000,
                release_key: None,
            });
        }
    }
    (source, ids)
}

/// A job holding the unique key `k1`, made by the schedule `nightly`'s
/// firing; a firing of `hourly` that made no job, later; the group `g`'s
/// limits. The keyed job's id.
pub(crate) fn keyed_and_named(store: &Store) -> JobId {
    let keyed = JobId::new();
    let opts = faena_proto::options::JobOptions {
        unique_key: Some("k1".into()),
        schedule: Some("nightly".into()),
        fired_for_ms: Some(5_000),
        ..Default::default()
    };
    store.write(insert(keyed, 200, Some(opts)));
    store.write(StoreOp::Fired { schedule: "hourly".into(), at_ms: 7_000 });
    store.write(StoreOp::Named { kind: crate::NamedKind::Group, name: "g".into(), doc: Some("{}".into()) });
    keyed
}

/// The live configuration's version 1, saved beside the store at `path`.
pub(crate) async fn version_one(path: &std::path::Path) {
    let settings = crate::settings::SettingsDb::open(path).expect("settings");
    settings.save(&faena_proto::settings::ClusterConfig { version: 1, ..Default::default() }).await.expect("saves");
}

/// A worker's tally of shares and blocks.
pub(crate) fn tally() -> crate::mining::Tally {
    crate::mining::Tally {
        name: "w1".into(),
        kind: "worker".into(),
        source: "s1".into(),
        valid: 3,
        invalid: 0,
        stale: 1,
        blocks: 1,
    }
}

/// `faena store copy`: a SQLite store in several generations, copied into
/// PostgreSQL by a run that stops after three batches and one that
/// resumes, reads back the same; a store holding other jobs is refused.
#[tokio::test]
async fn a_sqlite_store_copies_into_postgres_resumably() {
    copies_into_postgres_resumably(None).await;
}

/// The same from a store of four shards: their jobs read as one.
#[tokio::test]
async fn a_sqlite_store_of_shards_copies_into_postgres_resumably() {
    copies_into_postgres_resumably(Some(4)).await;
}

async fn copies_into_postgres_resumably(shards: Option<usize>) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("faena.db");
    let (source, ids) = to_copy(&path, shards);
    wait_commit(&source).await;
    let expected = all_listed(&source).await;
    drop(source);
    version_one(&path).await;
    let mining = crate::mining::MiningDb::open(&dir.path().join("mining.db")).expect("mining store");
    let block = faena_proto::mining::BlockView {
        height: 9,
        hash: "ab".repeat(32),
        participant: "w1".into(),
        accepted: true,
        reason: None,
        at_ms: 7,
    };
    mining.add_block("s1".into(), block).await.expect("adds");
    let tally = tally();
    mining.add_tallies(vec![tally.clone()]).await.expect("saves");

    let pg = crate::harness::Postgres::start();
    let part = crate::copy::copy(&path, &pg.url(), 7, Some(3), |_| {}).await.expect("copies a part");
    assert_eq!((part.jobs, part.target_jobs, part.source_jobs), (21, 21, 100));
    assert!(!part.is_whole());
    let rest = crate::copy::copy(&path, &pg.url(), 7, None, |_| {}).await.expect("resumes");
    assert_eq!((rest.jobs, rest.config_versions), (79, 0), "the rest, and the versions once");
    assert_eq!(part.mining, (0, 1, 1), "the mining store with the first run");
    assert_eq!(rest.mining, (0, 0, 0), "and not again");
    assert!(rest.is_whole(), "{rest:?}");
    assert_eq!((rest.target_jobs, rest.target_history), (100, 199));

    let target = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    assert_eq!(all_listed(&target).await, expected, "the same jobs in the same order");
    let restored: Vec<JobId> = target.load_unfinished().await.expect("loads").into_iter().map(|j| j.id).collect();
    assert_eq!(restored, [ids[7]]);
    assert_eq!(target.get(ids[3]).await.expect("reads").and_then(|j| j.result), Some(json!({"n": 3})));
    let states: Vec<String> = target.history(ids[3]).await.expect("reads").into_iter().map(|t| t.state).collect();
    assert_eq!(states, ["queued", "succeeded"]);
    let config = crate::settings::SettingsDb::beside(&target, &path).expect("beside").current().await.expect("reads");
    assert_eq!(config.version, 1);
    let mined = crate::mining::MiningDb::beside(&target, &path).expect("beside").load().await.expect("loads");
    assert_eq!((mined.blocks.len(), mined.tallies), (1, vec![tally]));
    // A new job on PostgreSQL lists ahead of the copied ones.
    let later = JobId::new();
    noop(&target, later, 100);
    wait_commit(&target).await;
    assert_eq!(all_listed(&target).await.first(), Some(&later));
    // Into a store that holds other jobs: refused.
    let other = crate::harness::Postgres::start();
    let theirs = Store::connect(&other.url(), Retention::OFF).await.expect("connects");
    noop(&theirs, JobId::new(), 0);
    wait_commit(&theirs).await;
    let err = crate::copy::copy(&path, &other.url(), 7, None, |_| {}).await.expect_err("refused");
    assert!(err.to_string().contains("not this store's"), "{err}");
}
