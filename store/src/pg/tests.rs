//! The PostgreSQL backend's own behaviour: migrations under a lock, a
//! server stopped, slow or out of reach, retention, the leader's fence.

use faena_proto::ids::JobId;

use crate::tests::{finished, noop, outcome, prune_all, wait_commit};
use crate::{Retention, Store, StoreError};

/// Two masters starting together on an empty PostgreSQL migrate it once
/// (the advisory lock), and a store newer than this build is refused.
#[tokio::test]
async fn postgres_migrates_once_under_a_lock_and_refuses_a_newer_schema() {
    let pg = crate::harness::Postgres::start();
    let url = pg.url();
    let (a, b) = tokio::join!(Store::connect(&url, Retention::OFF), Store::connect(&url, Retention::OFF));
    let (a, _b) = (a.expect("first"), b.expect("second"));
    assert_eq!(
        pg.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM faena_schema"),
        "1,2,3,4,5,6,7,8,9,10,11,12"
    );
    let id = JobId::new();
    noop(&a, id, 0);
    wait_commit(&a).await;
    assert!(a.get(id).await.expect("reads").is_some());
    pg.sql("INSERT INTO faena_schema (version, name) VALUES (999, 'from the future')");
    let err = Store::connect(&pg.url(), Retention::OFF).await.expect_err("refused");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

/// PostgreSQL stopped under writes: nothing is acknowledged while it is
/// down, the store reads as unhealthy, and once it is back the queued
/// group commits without a restart.
#[tokio::test]
async fn postgres_down_then_back_commits_what_waited() {
    let mut pg = crate::harness::Postgres::start();
    let store = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    let first = JobId::new();
    noop(&store, first, 0);
    wait_commit(&store).await;
    pg.stop();
    let waiting = JobId::new();
    noop(&store, waiting, 1);
    let mut rx = outcome(&store);
    // The writer fails, reads as unhealthy and keeps the group.
    while store.is_healthy() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(rx.try_recv().is_err(), "nothing acknowledged while the store is down");
    pg.resume();
    assert!(rx.await.expect("answered").is_ok(), "the group commits once it is back");
    assert!(store.is_healthy());
    assert!(store.get(waiting).await.expect("reads").is_some());
    assert_eq!(pg.sql("SELECT count(*) FROM jobs"), "2");
}

/// Retention on PostgreSQL: the oldest finished jobs beyond `keep` go,
/// with their history; unfinished ones stay.
#[tokio::test]
async fn postgres_retention_deletes_the_oldest_finished_beyond_keep() {
    let pg = crate::harness::Postgres::start();
    let keep = Retention { age: None, keep: Some(10) };
    let store = Store::connect(&pg.url(), keep).await.expect("connects");
    let ids: Vec<JobId> = (0..30).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        noop(&store, *id, i as u64);
        if i != 3 {
            store.write(finished(*id, None));
        }
    }
    wait_commit(&store).await;
    assert_eq!(prune_all(&store).await, 19, "rows 1 to 20 less the queued one");
    assert!(store.get(ids[0]).await.expect("reads").is_none());
    assert!(store.history(ids[0]).await.expect("reads").is_empty());
    assert!(store.get(ids[3]).await.expect("reads").is_some(), "the unfinished job stays");
    assert!(store.get(ids[20]).await.expect("reads").is_some());
}

/// A deposed leader's writes are refused whole: once another master holds
/// a newer epoch, a group fenced with the old one applies nothing (no job,
/// no history row), and whoever waits on it is told why.
#[tokio::test]
async fn a_group_fenced_with_an_old_epoch_is_refused_whole() {
    let pg = crate::harness::Postgres::start();
    let store = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    pg.sql("UPDATE faena_leader SET epoch = 7");
    store.fence(7);
    let first = JobId::new();
    noop(&store, first, 0);
    wait_commit(&store).await;
    // Another master takes over.
    pg.sql("UPDATE faena_leader SET epoch = 8, holder = 'another'");
    let late = JobId::new();
    noop(&store, late, 1);
    let failed = outcome(&store).await.expect("told").expect_err("refused");
    assert!(matches!(*failed.0, StoreError::Fenced { epoch: 7 }), "{:?}", failed.0);
    assert!(store.get(first).await.expect("reads").is_some());
    assert_eq!(store.get(late).await.expect("reads"), None);
    assert_eq!(pg.sql(&format!("SELECT count(*) FROM transitions WHERE job_id = '{late}'")), "0");
    // Fenced with the epoch the store holds now, it writes again.
    store.fence(8);
    let again = JobId::new();
    noop(&store, again, 2);
    wait_commit(&store).await;
    assert!(store.get(again).await.expect("reads").is_some());
}

/// A statement that runs past the statement timeout (here the URL's own
/// `options`, 300 ms; 30 s by default) behind a lock another session
/// holds: the server cancels it, the store reads as unhealthy, and the
/// group commits by itself once the lock is gone. Nothing is lost.
#[tokio::test]
async fn a_statement_timeout_is_retried_until_the_group_commits() {
    let pg = crate::harness::Postgres::start();
    let url = format!("{}?options=-c%20statement_timeout%3D300", pg.url());
    let store = Store::connect(&url, Retention::OFF).await.expect("connects");
    let first = JobId::new();
    noop(&store, first, 0);
    wait_commit(&store).await;
    let mut locker =
        pg.sql_in_background("BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT;");
    // Held once the session shows the lock granted.
    while pg.sql(
        "SELECT count(*) FROM pg_locks WHERE relation = 'jobs'::regclass AND mode = 'AccessExclusiveLock' AND granted",
    ) != "1"
    {
        tokio::task::yield_now().await;
    }
    let late = JobId::new();
    noop(&store, late, 1);
    let rx = outcome(&store);
    let mut saw_unhealthy = false;
    tokio::pin!(rx);
    let committed = loop {
        tokio::select! {
            r = &mut rx => break r,
            () = tokio::time::sleep(std::time::Duration::from_millis(20)) => saw_unhealthy |= !store.is_healthy(),
        }
    };
    assert!(committed.expect("answered").is_ok(), "the group commits once the lock is gone");
    assert!(saw_unhealthy, "the timed-out statement made the store unhealthy meanwhile");
    assert!(locker.wait().expect("psql").success());
    assert!(store.get(late).await.expect("reads").is_some());
    assert!(store.is_healthy());
}

/// A server that cannot be reached may answer later; one that refuses
/// the login will refuse it again.
#[tokio::test]
async fn an_unreachable_server_is_worth_asking_again_and_a_refused_login_is_not() {
    let closed = crate::harness::Postgres::start();
    let url = closed.url();
    let wrong = url.replacen("://faena:", "://faena:not-", 1);
    assert_ne!(url, wrong, "the harness's URL names the faena role with a password");
    let refused = Store::connect(&wrong, Retention::OFF).await.expect_err("a wrong password");
    assert!(!refused.is_transient(), "{refused}");
    drop(closed);
    let gone = Store::connect(&url, Retention::OFF).await.expect_err("nobody listens");
    assert!(gone.is_transient(), "{gone}");
}

/// Four writers on one store, each job's changes on one of them: every job
/// stored once, row ids in the order of the jobs' times whatever order the
/// writers' groups committed in, a callback run only once every writer has
/// committed what was queued before it; retention run once (not by each
/// writer), and another master's store with another number of writers
/// restoring every unfinished job and numbering new ones after the rest.
#[tokio::test]
async fn postgres_writers_side_by_side_store_each_job_once_in_order() {
    let pg = crate::harness::Postgres::start();
    let keep = Retention { age: None, keep: Some(100) };
    for bad in [0, crate::MAX_WRITERS + 1] {
        let refused = Store::connect_writers(&pg.url(), keep, bad).await.expect_err("out of bounds");
        assert!(refused.to_string().contains("a PostgreSQL store has 1 to 8"), "{refused}");
    }
    let store = Store::connect_writers(&pg.url(), keep, 4).await.expect("connects");
    assert_eq!(store.shards(), 4);
    let ids: Vec<JobId> = (0..400).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        noop(&store, *id, i as u64);
        if i % 2 == 0 {
            store.write(finished(*id, None));
        }
    }
    let keyed = crate::tests::keyed_and_named(&store);
    wait_commit(&store).await;
    // Read straight after the callback: every writer's part is in.
    assert_eq!(pg.sql("SELECT count(*) FROM jobs"), "401");
    assert_eq!(pg.sql("SELECT count(DISTINCT row_id) FROM jobs"), "401");
    assert_eq!(pg.sql("SELECT count(*) FROM faena_writer_groups"), "4", "each writer committed groups");
    let out_of_order = "SELECT count(*) FROM (SELECT created_at < lag(created_at) OVER (ORDER BY row_id) AS back
        FROM jobs) t WHERE back";
    assert_eq!(pg.sql(out_of_order), "0");
    assert_eq!(store.history(ids[0]).await.expect("reads").len(), 2);
    assert_eq!(store.held_keys(0).await.expect("reads").len(), 1);

    // The 200 finished jobs less the newest 100 rows' finished ones: each
    // deleted once, by one writer.
    let finished_in_newest: usize = pg
        .sql(
            "SELECT count(*) FROM (SELECT state FROM jobs ORDER BY row_id DESC
        LIMIT 100) t WHERE state = 'succeeded'",
        )
        .parse()
        .expect("a count");
    assert_eq!(prune_all(&store).await, 200 - finished_in_newest);

    // Another master's store, opened while this one still stores jobs: it
    // numbers on after them once it reads the unfinished jobs, as a
    // master does when it starts to lead.
    let other = Store::connect_writers(&pg.url(), keep, 2).await.expect("connects again");
    let more: Vec<JobId> = (0..20).map(|_| JobId::new()).collect();
    for (i, id) in more.iter().enumerate() {
        noop(&store, *id, 500 + i as u64);
    }
    wait_commit(&store).await;
    drop(store);
    let (store, last) = (other, pg.sql("SELECT max(row_id) FROM jobs").parse::<i64>().expect("a row id"));
    let restored = store.load_unfinished().await.expect("loads");
    let odd = ids.iter().skip(1).step_by(2);
    let mut want: Vec<JobId> = odd.chain(&more).copied().chain([keyed]).collect();
    let mut got: Vec<JobId> = restored.iter().map(|j| j.id).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let later = JobId::new();
    noop(&store, later, 1_000);
    wait_commit(&store).await;
    let row: i64 = pg.sql(&format!("SELECT row_id FROM jobs WHERE id = '{later}'")).parse().expect("a row id");
    assert!(row > last, "{row} after {last}");
}
