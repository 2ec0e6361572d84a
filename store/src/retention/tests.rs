use std::sync::Arc;
use std::time::Duration;

use faena_proto::ids::{FencingToken, JobId};
use faena_proto::jobs::{JobSpec, JobState, Priority};
use serde_json::json;

use super::Retention;
use crate::StoreOp;
use crate::{Store, SyncMode};

fn insert(store: &Store, id: JobId, seq: u64, at_ms: u64, parent: Option<JobId>) {
    store.write(StoreOp::Insert {
        id,
        spec: Arc::new(JobSpec::parse("noop", json!({})).expect("valid")),
        priority: Priority::Normal,
        seq,
        at_ms,
        parent,
        retry_of: None,
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
    });
}

async fn prune_all(store: &Store, r: Retention) -> usize {
    let mut total = 0;
    loop {
        let n = store.prune(r).await.expect("prunes");
        total += n;
        if n < r.batch {
            return total;
        }
    }
}

#[tokio::test]
async fn old_and_surplus_finished_jobs_go_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("faena-retention-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("faena.db"), SyncMode::Normal).expect("opens");
    let now = faena_proto::mqtt::now_ms();
    let day = 86_400_000;
    // 50 finished jobs ten days old, one still queued as old, a running
    // mining job as old with a finished unit, and 30 finished jobs of today.
    let old: Vec<JobId> = (0..50).map(|_| JobId::new()).collect();
    for (i, id) in old.iter().enumerate() {
        insert(&store, *id, i as u64, now - 10 * day, None);
        finish(&store, *id, now - 10 * day);
    }
    let (waiting, mining, unit) = (JobId::new(), JobId::new(), JobId::new());
    insert(&store, waiting, 50, now - 10 * day, None);
    insert(&store, mining, 51, now - 10 * day, None);
    insert(&store, unit, 52, now - 10 * day, Some(mining));
    finish(&store, unit, now - 10 * day);
    let recent: Vec<JobId> = (0..30).map(|_| JobId::new()).collect();
    for (i, id) in recent.iter().enumerate() {
        insert(&store, *id, 60 + i as u64, now - 1000 + i as u64, None);
        finish(&store, *id, now);
    }
    let week = Retention { age: Some(Duration::from_secs(7 * 86_400)), keep: None, batch: 7 };
    assert_eq!(prune_all(&store, week).await, 50, "in batches of 7");
    assert!(store.get(old[0]).expect("reads").is_none());
    assert!(store.history(old[0]).expect("reads").is_empty(), "its history went with it");
    for kept in [waiting, mining, unit, recent[0]] {
        assert!(store.get(kept).expect("reads").is_some(), "unfinished jobs and a live job's units stay");
    }
    // Keep the newest 10: the 20 oldest of today's go, the unfinished stay.
    let ten = Retention { age: None, keep: Some(10), batch: 1000 };
    assert_eq!(prune_all(&store, ten).await, 20);
    assert!(store.get(recent[19]).expect("reads").is_none() && store.get(recent[20]).expect("reads").is_some());
    assert!(store.get(waiting).expect("reads").is_some() && store.get(unit).expect("reads").is_some());
    let off = Retention { age: None, keep: None, batch: 1000 };
    assert!(off.is_off());
    assert_eq!(prune_all(&store, off).await, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_batch_reads_the_rows_it_deletes_not_every_finished_job_kept() {
    let dir = std::env::temp_dir().join(format!("faena-retention-plan-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    drop(Store::open(&dir.join("faena.db"), SyncMode::Normal).expect("opens"));
    let conn = rusqlite::Connection::open(dir.join("faena.db")).expect("opens");
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", super::BATCH)).expect("plans");
    let plan: Vec<String> =
        stmt.query_map([1, 2], |r| r.get::<_, String>(3)).expect("plan").collect::<Result<_, _>>().expect("rows");
    assert!(plan[0].contains("INTEGER PRIMARY KEY (rowid<?)"), "the row-id range drives the scan: {plan:?}");
    assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE") || p.contains("jobs_state")), "{plan:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
