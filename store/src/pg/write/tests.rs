//! The PostgreSQL writer against a real server: a group is one
//! transaction whatever it holds, and a group whose chain no longer
//! follows is sent again, never lost and never stored twice.

use std::sync::Arc;

use faena_proto::ids::JobId;
use faena_proto::jobs::{JobSpec, JobState, Priority};
use faena_proto::options::JobOptions;
use serde_json::json;

use crate::tests::wait_commit;
use crate::{NamedKind, Retention, Store, StoreOp};

fn insert(id: JobId, seq: u64, opts: Option<JobOptions>) -> StoreOp {
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

/// A job, the unique key it takes and a named document, in one group, are
/// written by one transaction (one `xmin`): a statement sent only after
/// the one before it was answered once reached the server after the
/// group's COMMIT, and ran on its own.
#[tokio::test]
async fn every_statement_of_a_group_is_in_its_transaction() {
    let pg = crate::harness::Postgres::start();
    let store = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    let id = JobId::new();
    let opts = JobOptions { unique_key: Some("k".into()), ..JobOptions::default() };
    let mut batch = crate::Batch::default();
    batch.write(insert(id, 0, Some(opts)));
    batch.write(StoreOp::Named { kind: NamedKind::Group, name: "g".into(), doc: Some("{}".into()) });
    store.send(&mut batch);
    wait_commit(&store).await;
    let xmins = pg.sql(&format!(
        "SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM jobs WHERE id = '{id}'
         UNION ALL SELECT xmin::text FROM unique_keys WHERE key = 'k'
         UNION ALL SELECT xmin::text FROM named WHERE name = 'g') AS w"
    ));
    assert_eq!(xmins, "1", "the job, its key and the document were written by one transaction");
}

/// A group that does not follow the chain (here, moved by hand; after a
/// failure, the group before it did not commit) is refused by the server,
/// then sent again once the writer has read where the chain ends: stored
/// once, its callback told only then, and the store healthy again.
#[tokio::test]
async fn a_group_that_does_not_follow_the_chain_is_sent_again() {
    let pg = crate::harness::Postgres::start();
    let store = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    let first = JobId::new();
    store.write(insert(first, 0, None));
    wait_commit(&store).await;
    pg.sql("UPDATE faena_chain SET link = 42");
    let second = JobId::new();
    store.write(insert(second, 1, None));
    wait_commit(&store).await;
    assert!(store.is_healthy());
    assert_eq!(pg.sql(&format!("SELECT count(*) FROM jobs WHERE id = '{second}'")), "1");
    assert_eq!(pg.sql(&format!("SELECT count(*) FROM transitions WHERE job_id = '{second}'")), "1");
    assert_ne!(pg.sql("SELECT link FROM faena_chain"), "42", "the chain goes on from where it was found");
}

/// Many groups sent back to back, each depending on the last (a job
/// stored, then dispatched, then finished, each by a group of its own):
/// every one commits, in order.
#[tokio::test]
async fn groups_sent_while_the_last_commits_keep_their_order() {
    let pg = crate::harness::Postgres::start();
    let store = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    let ids: Vec<JobId> = (0..200).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        store.write(insert(*id, i as u64, None));
        let token = faena_proto::ids::FencingToken::new();
        store.write(StoreOp::Dispatched { id: *id, attempt: 1, worker: "w".into(), token, at_ms: 2000 });
        store.write(StoreOp::Finished {
            id: *id,
            state: JobState::Succeeded,
            attempts: 1,
            worker: Some("w".into()),
            result: Some(json!({"ok": true})),
            error: None,
            at_ms: 3000,
            release_key: None,
        });
        if i % 3 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_commit(&store).await;
    assert_eq!(pg.sql("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), "200");
    assert_eq!(pg.sql("SELECT count(*) FROM transitions"), "600");
}
