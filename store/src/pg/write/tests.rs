//! The PostgreSQL writer against a real server: a group is one
//! transaction whatever it holds, and a group whose COMMIT went
//! unanswered is neither lost nor stored twice; the marks of writers long
//! gone are deleted.

use std::sync::Arc;

use faena_proto::ids::JobId;
use faena_proto::options::JobOptions;

use super::Unsure;
use crate::tests::{finished, insert, prune_all, wait_commit};
use crate::writer::Apply;
use crate::{NamedKind, Retention, Store, StoreOp};

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

/// A group whose COMMIT's answer was lost with the connection is asked
/// about once connected again: stored, it is not sent again (its jobs'
/// rows would clash, and the writer fail until restarted), only what came
/// after it; not stored, it is sent whole — also when other transactions
/// committed meanwhile (a standby promoted in the old server's place goes
/// on with its own: asked by transaction id, the lost group was once taken
/// for one of them and its changes dropped); and while the lost
/// connection's transaction still holds its mark, the writer waits.
#[test]
fn a_group_whose_commit_went_unanswered_is_neither_lost_nor_stored_twice() {
    let pg = crate::harness::Postgres::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fence = Arc::new(std::sync::atomic::AtomicI64::new(crate::UNFENCED));
    let (writers, _pool, _election) =
        rt.block_on(crate::pg::open_store(&pg.url(), Retention::OFF, fence, 1)).expect("opens");
    let mut w = writers.into_iter().next().expect("one writer");
    let count = |id: JobId| pg.sql(&format!("SELECT count(*) FROM jobs WHERE id = '{id}'"));

    let first = JobId::new();
    w.apply(&[insert(first, 0, None)], &[], 0).expect("commits");
    // As if that COMMIT's answer had been lost: the writer gives the group
    // again, with what arrived since, on a new connection.
    (w.unsure, w.conn) = (Some(Unsure { mark: w.next_mark - 1, upto: 1 }), None);
    let second = JobId::new();
    w.apply(&[insert(first, 0, None), insert(second, 1, None)], &[], 0).expect("the rest commits");
    assert_eq!((count(first), count(second)), ("1".into(), "1".into()));

    // A group whose COMMIT the server never took, and other transactions
    // after it: the group goes whole.
    (w.unsure, w.conn) = (Some(Unsure { mark: w.next_mark, upto: 1 }), None);
    w.next_mark += 1;
    pg.sql("CREATE TABLE unrelated (n INTEGER); INSERT INTO unrelated VALUES (1)");
    let third = JobId::new();
    w.apply(&[insert(third, 2, None)], &[], 0).expect("commits");
    assert_eq!(count(third), "1");

    // The lost connection's transaction still holds the mark: asked again
    // later; once it has rolled back, the group goes whole.
    let writer = w.writer;
    let held = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.expect("connects");
        tokio::spawn(connection);
        client.batch_execute("BEGIN").await.expect("begins");
        client
            .execute("UPDATE faena_writer_groups SET seq = seq + 1 WHERE writer = $1", &[&writer])
            .await
            .expect("takes the row");
        client
    });
    (w.unsure, w.conn) = (Some(Unsure { mark: w.next_mark, upto: 1 }), None);
    w.next_mark += 1;
    let fourth = JobId::new();
    let ops = [insert(fourth, 3, None)];
    assert!(matches!(w.apply(&ops, &[], 0), Err(crate::StoreError::Unavailable)), "waits for the lost transaction");
    rt.block_on(held.batch_execute("ROLLBACK")).expect("rolls back");
    w.apply(&ops, &[], 0).expect("commits");
    assert_eq!(count(fourth), "1");
}

/// The writer's plans, made once per connection, read `jobs` by its key
/// even when made while the table is empty: a generic plan made then
/// (a sequential scan) once stayed cached as the table grew.
#[test]
fn the_writers_update_reads_jobs_by_key_even_planned_on_an_empty_table() {
    let pg = crate::harness::Postgres::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(Store::connect(&pg.url(), Retention::OFF)).expect("migrates");
    let nulls = vec!["NULL"; 13].join(", ");
    let plan = pg.sql(&format!(
        "{}; PREPARE u AS {}; SET plan_cache_mode = force_generic_plan; EXPLAIN EXECUTE u({nulls})",
        super::WRITER_PLANS,
        super::UPDATE
    ));
    assert!(plan.contains("jobs_pkey") && !plan.contains("Seq Scan on jobs"), "{plan}");
}

/// Each master's run leaves one mark; a writer connecting deletes those
/// idle for a day (no unanswered group waits that long to be asked about),
/// and keeps the rest.
#[test]
fn marks_of_writers_idle_for_a_day_are_deleted_on_connecting() {
    let pg = crate::harness::Postgres::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(Store::connect(&pg.url(), Retention::OFF)).expect("migrates");
    let now = faena_proto::mqtt::now_ms() as i64;
    let (day, gone, recent) = (super::FORGET_AFTER_MS as i64, uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    pg.sql(&format!(
        "INSERT INTO faena_writer_groups VALUES ('{gone}', 7, {}), ('{recent}', 9, {})",
        now - day - 60_000,
        now - day + 600_000
    ));
    let fence = Arc::new(std::sync::atomic::AtomicI64::new(crate::UNFENCED));
    let (writers, _pool, _election) =
        rt.block_on(crate::pg::open_store(&pg.url(), Retention::OFF, fence, 1)).expect("opens");
    let mut w = writers.into_iter().next().expect("one writer");
    w.apply(&[insert(JobId::new(), 0, None)], &[], 0).expect("commits");
    let marks = |id: uuid::Uuid| pg.sql(&format!("SELECT count(*) FROM faena_writer_groups WHERE writer = '{id}'"));
    assert_eq!(marks(gone), "0", "a day idle: deleted");
    assert_eq!(marks(recent), "1", "idle for less: kept");
    assert_eq!(marks(w.writer), "1", "the writer's own mark");
}

/// Retention by age on PostgreSQL: the finished jobs created before the
/// cutoff go (found by a search over row ids, migration 11), those after
/// it stay; once every job is past it, all the finished ones go.
#[tokio::test]
async fn retention_by_age_deletes_the_finished_jobs_created_before_the_cutoff() {
    let pg = crate::harness::Postgres::start();
    let day = std::time::Duration::from_secs(86_400);
    let store = Store::connect(&pg.url(), Retention { age: Some(day), keep: None }).await.expect("connects");
    let now = faena_proto::mqtt::now_ms();
    let ids: Vec<JobId> = (0..12).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        // Eight jobs two days old, then four of a second ago.
        let mut op = insert(*id, i as u64, None);
        if let StoreOp::Insert { at_ms, .. } = &mut op {
            *at_ms = if i < 8 { now - 2 * 86_400_000 + i as u64 } else { now - 1_000 + i as u64 };
        }
        store.write(op);
        store.write(finished(*id, None));
    }
    wait_commit(&store).await;
    let pruned = prune_all(&store).await;
    assert_eq!(pruned, 8, "the eight old jobs");
    assert!(store.get(ids[7]).await.expect("reads").is_none());
    assert!(store.get(ids[8]).await.expect("reads").is_some(), "created after the cutoff");

    // A day later (as a retention of no time at all sees it): every job
    // is older than the cutoff, the newest too.
    drop(store);
    let store = Store::connect(&pg.url(), Retention { age: Some(std::time::Duration::ZERO), keep: None })
        .await
        .expect("connects");
    assert_eq!(prune_all(&store).await, 4);
    assert_eq!(pg.sql("SELECT count(*) FROM jobs"), "0");
}

/// Writers side by side lock unique keys in one order: taking a key is the
/// only key statement that waits for another writer's group, and freeing
/// a key or dropping the expired ones skips rows another group holds
/// (which it takes over). Dropping the expired keys first, the writer once
/// waited for such a group while that group could wait for it, a deadlock
/// PostgreSQL broke after a second by failing one of them. A key whose
/// free was so skipped, and whose taker never committed, is not read back
/// as held once its job has ended.
#[test]
fn a_groups_keys_wait_for_no_other_writer_but_to_take_one() {
    let pg = crate::harness::Postgres::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fence = Arc::new(std::sync::atomic::AtomicI64::new(crate::UNFENCED));
    let (writers, pool, _election) =
        rt.block_on(crate::pg::open_store(&pg.url(), Retention::OFF, fence, 1)).expect("opens");
    let mut w = writers.into_iter().next().expect("one writer");
    let holder = JobId::new();
    let keyed = |key: &str| Some(JobOptions { unique_key: Some(key.into()), ..JobOptions::default() });
    w.apply(&[insert(holder, 0, keyed("k"))], &[], 0).expect("commits");
    // A key whose time ran out long ago.
    pg.sql(&format!("INSERT INTO unique_keys VALUES ('e', '{}', 1)", JobId::new()));

    // Another writer's group, open: it takes both over (the engine let
    // `k` go as its holder finished).
    let (other, takers) = (
        rt.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.expect("connects");
            tokio::spawn(connection);
            client
        }),
        [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()],
    );
    rt.block_on(async {
        other.batch_execute("BEGIN").await.expect("begins");
        let hour_on = faena_proto::mqtt::now_ms() as i64 + 3_600_000;
        let (keys, until) = (vec!["e", "k"], vec![Some(hour_on), None]);
        other.execute(super::TAKE_KEYS, &[&keys, &takers.to_vec(), &until]).await.expect("takes");
    });

    // This writer's group frees `k` and takes a key of its own (so it drops
    // the expired ones too): it commits while the other group is open.
    let fresh = JobId::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let applying = std::thread::spawn(move || {
        let _ = tx.send(w.apply(&[finished(holder, Some("k".into())), insert(fresh, 1, keyed("z"))], &[], 0).map(drop));
    });
    let applied = rx.recv_timeout(std::time::Duration::from_secs(60));
    assert!(matches!(applied, Ok(Ok(()))), "commits without waiting for the other group: {applied:?}");
    applying.join().expect("the writer's thread");
    rt.block_on(other.batch_execute("COMMIT")).expect("the other group commits");
    let holders = pg.sql("SELECT string_agg(key || '=' || job, ',' ORDER BY key) FROM unique_keys");
    assert_eq!(holders, format!("e={},k={},z={fresh}", takers[0], takers[1]));

    // Had the other group never committed, `k` would be left to the job
    // that finished: not held.
    pg.sql(&format!("UPDATE unique_keys SET job = '{holder}' WHERE key = 'k'"));
    let now = faena_proto::mqtt::now_ms();
    let mut held: Vec<String> =
        rt.block_on(crate::pg::read::held_keys(&pool, now)).expect("reads").into_iter().map(|k| k.key).collect();
    held.sort();
    assert_eq!(held, ["e", "z"], "the key held for an hour and the queued job's; not the finished job's");
}
