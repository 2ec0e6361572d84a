use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use faena_proto::ids::{FencingToken, JobId};
use faena_proto::jobs::{JobSpec, JobState, Priority};
use serde_json::json;

use super::Retention;
use crate::tests::{prune_all, wait_commit};
use crate::{JobFilter, Store, StoreOp, SyncMode};

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faena-retention-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn insert(store: &Store, id: JobId, seq: u64, at_ms: u64, parent: Option<JobId>) {
    store.write(StoreOp::Insert {
        id,
        spec: Arc::new(JobSpec::parse("noop", json!({})).expect("valid")),
        priority: Priority::Normal,
        seq,
        at_ms,
        parent,
        retry_of: None,
        state: JobState::Queued,
        opts: None,
        run_at_ms: None,
    });
}

fn finish(store: &Store, id: JobId, at_ms: u64) {
    let token = FencingToken::parse("t").expect("token");
    store.write(StoreOp::Dispatched { id, attempt: 1, worker: "w1".into(), token, at_ms });
    store.write(StoreOp::Finished {
        id,
        state: JobState::Succeeded,
        attempts: 1,
        worker: Some("w1".into()),
        result: Some(json!({})),
        error: None,
        at_ms,
        release_key: None,
    });
}

/// The store in `dir` that keeps the newest 64 jobs: a generation opens
/// every 16 (every 4 of a shard's, over four).
fn keeping_64(dir: &std::path::Path, shards: Option<usize>) -> Store {
    let keep = Retention { age: None, keep: Some(64) };
    Store::open_sharded(&dir.join("faena.db"), SyncMode::Normal, keep, shards).expect("opens")
}

/// Every job the listing shows, newest first, a page of `limit` at a time.
async fn listed(store: &Store, limit: usize) -> Vec<JobId> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store.list(&JobFilter { before, limit, ..Default::default() }).await.expect("lists");
        out.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => before = Some(next),
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_generation_out_of_retention_goes_whole_and_what_must_stay_moves_on() {
    let dir = dir();
    let week = Retention { age: Some(Duration::from_secs(7 * 86_400)), keep: None };
    let store = Store::open(&dir.join("faena.db"), SyncMode::Normal, week).expect("opens");
    let now = faena_proto::mqtt::now_ms();
    let day = 86_400_000;
    // 50 finished jobs ten days old, one still queued as old, a running
    // mining job as old with a finished unit; then three generations of 5
    // finished jobs, 9, 8.5 and 8 days old (each more than a sixteenth of
    // the week after the one before: a generation of its own).
    let old: Vec<JobId> = (0..50).map(|_| JobId::new()).collect();
    for (i, id) in old.iter().enumerate() {
        insert(&store, *id, i as u64, now - 10 * day, None);
        finish(&store, *id, now - 10 * day);
    }
    let (waiting, mining, unit) = (JobId::new(), JobId::new(), JobId::new());
    insert(&store, waiting, 50, now - 10 * day, None);
    insert(&store, mining, 51, now - 10 * day, None);
    store.write(StoreOp::Started { id: mining, worker: "w1".into(), at_ms: now - 10 * day });
    insert(&store, unit, 52, now - 10 * day, Some(mining));
    finish(&store, unit, now - 10 * day);
    let mut seq = 53;
    for age in [9 * day, 17 * day / 2, 8 * day] {
        for _ in 0..5 {
            let id = JobId::new();
            insert(&store, id, seq, now - age, None);
            finish(&store, id, now - age);
            seq += 1;
        }
    }
    // The oldest waits for its unfinished jobs while fewer than four
    // generations are out of retention.
    assert_eq!(prune_all(&store).await, 0, "nothing moved yet");
    assert!(store.get(old[0]).await.expect("reads").is_some());
    // 30 finished jobs of today: now four are out of retention and it goes.
    let recent: Vec<JobId> = (0..30).map(|_| JobId::new()).collect();
    for (i, id) in recent.iter().enumerate() {
        insert(&store, *id, 100 + i as u64, now - 1000 + i as u64, None);
        finish(&store, *id, now);
    }
    assert_eq!(prune_all(&store).await, 65, "four old generations went, less the three that must stay");
    assert!(store.get(old[0]).await.expect("reads").is_none());
    assert!(store.history(old[0]).await.expect("reads").is_empty(), "its history went with it");
    for kept in [waiting, mining, unit, recent[0]] {
        assert!(store.get(kept).await.expect("reads").is_some(), "unfinished jobs and a live job's units stay");
    }
    let states: Vec<String> = store.history(unit).await.expect("reads").into_iter().map(|t| t.state).collect();
    assert_eq!(states, ["queued", "running", "succeeded"], "a moved job's history moved with it, in order");
    // The moved ones still change where they now are, and come back after a restart.
    finish(&store, waiting, now);
    wait_commit(&store).await;
    drop(store);
    let store = Store::open(&dir.join("faena.db"), SyncMode::Normal, week).expect("reopens");
    assert_eq!(store.get(waiting).await.expect("reads").map(|j| j.state), Some(JobState::Succeeded));
    let restored: Vec<JobId> = store.load_unfinished().await.expect("loads").into_iter().map(|j| j.id).collect();
    assert_eq!(restored, [mining, unit], "the running mining job and its finished unit");
    assert_eq!(prune_all(&store).await, 0, "the newest generation never goes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn at_least_the_newest_keep_stay_and_pages_run_across_generations() {
    newest_keep_stay(None).await;
}

/// The same over four shards: the newest 64 of the store (row ids are
/// the store's), each shard's generations its own.
#[tokio::test]
async fn at_least_the_newest_keep_stay_over_shards() {
    newest_keep_stay(Some(4)).await;
}

async fn newest_keep_stay(shards: Option<usize>) {
    let dir = dir();
    let store = keeping_64(&dir, shards);
    let now = faena_proto::mqtt::now_ms();
    // 200 finished jobs in generations of 16 (200 a shard over shards, so
    // each has generations enough behind its oldest to move the queued job
    // on), the sixth left queued.
    let ids: Vec<JobId> = (0..200 * shards.unwrap_or(1)).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        insert(&store, *id, i as u64, now, None);
        if i != 5 {
            finish(&store, *id, now);
        }
    }
    wait_commit(&store).await;
    let all: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(listed(&store, 7).await, all, "pages of 7 run across 13 generations in order");
    let pruned = prune_all(&store).await;
    let kept = listed(&store, 500).await;
    assert_eq!(kept.len(), ids.len() - pruned);
    assert!(
        (65..=64 + 16 + 1).contains(&kept.len()),
        "the newest 64, at most a generation more (over the shards), and the queued one: {}",
        kept.len()
    );
    let expected: Vec<JobId> = match shards {
        // One file: the newest jobs, whole generations of them.
        None => all[..kept.len() - 1].iter().copied().chain([ids[5]]).collect(),
        // Shards drop their own generations: the newest 64, then what
        // each shard still holds of the jobs before them, the queued job
        // among them in its place.
        Some(_) => {
            assert!(all[..64].iter().all(|id| kept.contains(id)) && kept.contains(&ids[5]));
            all.iter().copied().filter(|id| kept.contains(id)).collect()
        }
    };
    assert_eq!(kept, expected, "newest first; the queued job kept its place at the end");
    assert_eq!(listed(&store, 10).await, expected, "and so page by page");
    // Jobs stored after a restart list ahead of every one before.
    drop(store);
    let store = keeping_64(&dir, shards);
    let later = JobId::new();
    insert(&store, later, 300, now, None);
    finish(&store, later, now);
    wait_commit(&store).await;
    assert_eq!(listed(&store, 500).await.first(), Some(&later));
    let off = Retention::OFF;
    assert!(off.is_off() && off.generation_rows().is_none() && off.generation_span().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A job's changes land in its own row's trail, in its generation (a new
/// one opens every 16 jobs here), in order, with what they say, however
/// far apart in a large group; the history tables stay empty.
#[tokio::test]
async fn a_groups_changes_land_in_their_jobs_trails_in_order() {
    let dir = dir();
    let store = keeping_64(&dir, None);
    let now = faena_proto::mqtt::now_ms();
    // Every job stored, then every one dispatched, then every one ended:
    // a job's rows are far apart in their group, and the groups are large.
    let ids: Vec<JobId> = (0..203).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        insert(&store, *id, i as u64, now, None);
    }
    for (i, id) in ids.iter().enumerate() {
        let token = FencingToken::parse("t").expect("token");
        store.write(StoreOp::Dispatched { id: *id, attempt: 1, worker: format!("w{}", i % 3), token, at_ms: now + 1 });
    }
    for (i, id) in ids.iter().enumerate() {
        let error = (i % 2 == 1).then(|| format!("failed {i}"));
        store.write(StoreOp::Finished {
            id: *id,
            state: if error.is_some() { JobState::Failed } else { JobState::Succeeded },
            attempts: 1,
            worker: Some(format!("w{}", i % 3)),
            result: None,
            error,
            at_ms: now + 2,
            release_key: None,
        });
    }
    wait_commit(&store).await;
    for (i, id) in ids.iter().enumerate() {
        let h = store.history(*id).await.expect("reads");
        let said: Vec<_> =
            h.iter().map(|t| (t.at_ms - now, t.state.as_str(), t.worker.clone(), t.detail.clone())).collect();
        let (worker, error) = (Some(format!("w{}", i % 3)), (i % 2 == 1).then(|| format!("failed {i}")));
        let end = if error.is_some() { "failed" } else { "succeeded" };
        assert_eq!(said, [(0, "queued", None, None), (1, "running", worker.clone(), None), (2, end, worker, error)]);
    }
    // Each change is in its job's row (a read looks in every generation).
    let conn = rusqlite::Connection::open(dir.join("faena.db")).expect("opens");
    let gens: Vec<i64> = conn
        .prepare("SELECT gen FROM generations")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("generations");
    assert!(gens.len() > 10, "{gens:?}");
    let (mut steps, mut rows) = (0, 0);
    for g in gens {
        let (j, t) = crate::sqlite::generations::tables(g);
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).expect("counts");
        steps += count(&crate::sqlite::count_steps(&j));
        rows += count(&format!("SELECT count(*) FROM {t}"));
    }
    assert_eq!((steps, rows), (3 * ids.len() as i64, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store made before generations (one `jobs` table, without the columns
/// added since) opens as generation 0, its jobs readable and listed.
#[tokio::test]
async fn a_store_from_before_generations_is_its_first() {
    let dir = dir();
    let path = dir.join("faena.db");
    let old = JobId::new();
    {
        let conn = rusqlite::Connection::open(&path).expect("opens");
        conn.execute_batch(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL,
                priority TEXT NOT NULL, seq INTEGER NOT NULL, state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, token TEXT, result TEXT,
                error TEXT, created_at INTEGER NOT NULL, finished_at INTEGER);
             CREATE TABLE transitions (job_id TEXT NOT NULL, at INTEGER NOT NULL, state TEXT NOT NULL,
                attempt INTEGER NOT NULL, worker TEXT, detail TEXT);",
        )
        .expect("old schema");
        conn.execute(
            "INSERT INTO jobs (id, kind, params, priority, seq, state, created_at) VALUES (?1, 'noop', '{}', 'normal', 0, 'queued', 5)",
            [old.to_string()],
        )
        .expect("old row");
    }
    let store = Store::open(&path, SyncMode::Normal, Retention::OFF).expect("opens an old store");
    assert_eq!(store.get(old).await.expect("reads").map(|j| j.state), Some(JobState::Queued));
    assert_eq!(store.load_unfinished().await.expect("loads").len(), 1);
    let new = JobId::new();
    insert(&store, new, 1, 10, None);
    wait_commit(&store).await;
    assert_eq!(listed(&store, 50).await, [new, old]);
    let _ = std::fs::remove_dir_all(&dir);
}
