use std::path::Path;

use faena_proto::ids::JobId;
use serde_json::json;

use crate::shards::shard_path;
use crate::tests::{all_listed, keyed_and_named, noop, tally, to_copy, version_one, wait_commit};
use crate::{NamedKind, Retention, Store, SyncMode};

fn open(path: &Path, retention: Retention) -> Store {
    Store::open_sharded(path, SyncMode::Normal, retention, None).expect("opens")
}

/// Names in `dir` a copy would have left behind: its files being built.
fn leftovers(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir).expect("reads").map(|e| e.expect("entry").file_name());
    names.map(|n| n.to_string_lossy().into_owned()).filter(|n| n.contains(".copy")).collect()
}

/// `faena store copy --to sqlite:… --shards 4`: a one-file store in several
/// generations, with unique keys, schedule firings, named documents, live
/// configuration and a mining store, copied into a new store of four files
/// reads back the same (jobs in the same order, unfinished jobs restored,
/// history, keys, firings, documents) and numbers on after the copied
/// jobs; copied back into one file, the same again.
#[tokio::test]
async fn a_sqlite_store_copies_into_a_new_store_of_another_number_of_shards() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("old/faena.db");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    let (source, ids) = to_copy(&path, None);
    let keyed = keyed_and_named(&source);
    wait_commit(&source).await;
    let expected = all_listed(&source).await;
    drop(source);
    version_one(&path).await;
    let mining = crate::mining::MiningDb::open(&path.with_file_name("mining.db")).expect("mining store");
    let tally = tally();
    mining.add_tallies(vec![tally.clone()]).await.expect("saves");
    drop(mining);

    let new = dir.path().join("new/faena.db");
    std::fs::create_dir_all(new.parent().expect("parent")).expect("dir");
    // What a copy killed part way left: cleared, not taken for the store.
    std::fs::write(new.with_file_name(".faena.db.1.copy"), "half a copy").expect("writes");
    let report = crate::copy::into_sqlite(&path, &new, 4).expect("copies");
    assert!(report.is_whole(), "{report:?}");
    assert_eq!((report.jobs, report.config_versions, report.mining), (report.source_jobs, 1, (0, 0, 1)));
    assert_eq!(report.history, report.source_history, "rows and trails' steps");
    assert_eq!(report.source_jobs, expected.len() as u64, "every job the source lists");
    assert_eq!(leftovers(new.parent().expect("parent")), Vec::<String>::new());
    for k in 0..4 {
        let conn = rusqlite::Connection::open(shard_path(&new, k)).expect("opens");
        let n: i64 = conn.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).expect("counts");
        assert!(n > 0, "shard {k} holds jobs");
    }

    let target = open(&new, Retention::OFF);
    assert_eq!(target.shards(), 4, "made with the number asked");
    assert_eq!(all_listed(&target).await, expected, "the same jobs in the same order");
    let restored: Vec<JobId> = target.load_unfinished().await.expect("loads").into_iter().map(|j| j.id).collect();
    assert_eq!(restored, [ids[7], keyed]);
    assert_eq!(target.get(ids[90]).await.expect("reads").and_then(|j| j.result), Some(json!({"n": 90})));
    let states: Vec<String> = target.history(ids[90]).await.expect("reads").into_iter().map(|t| t.state).collect();
    assert_eq!(states, ["queued", "succeeded"]);
    let keys = target.held_keys(0).await.expect("reads");
    assert_eq!(keys.iter().map(|k| (k.key.as_str(), k.job)).collect::<Vec<_>>(), [("k1", keyed)]);
    let firings = target.firings().await.expect("reads");
    assert_eq!((firings["nightly"].job, firings["hourly"].at_ms), (Some(keyed), 7_000));
    assert_eq!(target.named(NamedKind::Group).await.expect("reads"), [("g".to_owned(), "{}".to_owned())]);
    let config = crate::settings::SettingsDb::open(&new).expect("opens").current().await.expect("reads");
    assert_eq!(config.version, 1);
    let mined = crate::mining::MiningDb::open(&new.with_file_name("mining.db")).expect("opens");
    assert_eq!(mined.load().await.expect("loads").tallies, vec![tally]);
    let later = JobId::new();
    noop(&target, later, 300);
    wait_commit(&target).await;
    let mut now_listed = all_listed(&target).await;
    assert_eq!(now_listed.remove(0), later, "row ids go on after the copied jobs");
    drop(target);

    // Back into one file, in a directory the copy makes: the same again.
    let one = dir.path().join("one/faena.db");
    let back = crate::copy::into_sqlite(&new, &one, 1).expect("copies");
    assert!(back.is_whole(), "{back:?}");
    let target = open(&one, Retention::OFF);
    assert_eq!(target.shards(), 1);
    let mut want = expected.clone();
    want.insert(0, later);
    assert_eq!(all_listed(&target).await, want);
}

/// A copy goes into a new store only, with 1 to 8 shards, from a store
/// that is there; each refusal says why and leaves nothing behind.
#[tokio::test]
async fn a_copy_into_sqlite_refuses_a_target_that_holds_a_store() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("faena.db");
    let store = open(&path, Retention::OFF);
    noop(&store, JobId::new(), 0);
    wait_commit(&store).await;
    drop(store);
    let refused =
        |from: &Path, to: &Path, shards| crate::copy::into_sqlite(from, to, shards).expect_err("refused").to_string();
    let there = dir.path().join("there/faena.db");
    std::fs::create_dir_all(there.parent().expect("parent")).expect("dir");
    std::fs::write(shard_path(&there, 2), "a shard of another store").expect("writes");
    assert!(refused(&path, &there, 4).contains("faena.2.db exists"));
    assert!(refused(&path, &path, 1).contains("exists"), "not onto itself");
    assert!(refused(&path, &dir.path().join("x/faena.db"), 9).contains("1 to 8"));
    assert!(refused(&dir.path().join("none.db"), &dir.path().join("y.db"), 2).contains("no SQLite store"));
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    assert_eq!(leftovers(there.parent().expect("parent")), Vec::<String>::new());
}
