use std::time::Duration;

use faena_proto::mining::BlockView;

use super::{MiningDb, Tally};
use crate::{Retention, Store};

#[cfg(unix)]
#[test]
fn the_sqlite_mining_store_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("mining.db");
    let _db = MiningDb::open(&path).expect("opens");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "pool passwords are in it");
}

fn tally(name: &str, valid: u64) -> Tally {
    Tally { name: name.into(), kind: "worker".into(), source: "a".into(), valid, invalid: 0, stale: 0, blocks: 0 }
}

async fn old_blocks_surplus_blocks_and_quiet_tallies_go(db: MiningDb) {
    let day = 86_400_000u64;
    let now = faena_proto::mqtt::now_ms();
    let block = |height: u64, at_ms: u64| BlockView {
        height,
        hash: format!("{height:064x}"),
        participant: "w1".into(),
        accepted: true,
        reason: None,
        at_ms,
    };
    // Source a: 2 blocks a year old, 5 recent; source b: 3 recent.
    for (h, at) in [(1, now - 400 * day), (2, now - 400 * day)] {
        db.add_block("a".into(), block(h, at)).await.expect("adds");
    }
    for h in 3..8 {
        db.add_block("a".into(), block(h, now - 8 + h)).await.expect("adds");
    }
    for h in 1..4 {
        db.add_block("b".into(), block(h, now - 4 + h)).await.expect("adds");
    }
    db.add_tallies(vec![tally("quiet", 1), tally("busy", 1)]).await.expect("saves");
    db.add_tallies(vec![tally("busy", 4)]).await.expect("adds");
    db.seen("quiet", (now - 400 * day) as i64).await;

    // A year's retention and the newest 4 blocks per source.
    let (blocks, participants) = db.prune(Duration::from_secs(365 * 86_400), 4, now).await.expect("prunes");
    assert_eq!((blocks, participants), (2 + 1, 1));
    let loaded = db.load().await.expect("loads");
    let heights = |source: &str| -> Vec<u64> {
        loaded.blocks.iter().filter(|(s, _)| s == source).map(|(_, b)| b.height).collect()
    };
    assert_eq!(heights("a"), [4, 5, 6, 7], "the old ones, then the oldest beyond four");
    assert_eq!(heights("b"), [1, 2, 3]);
    assert_eq!(loaded.tallies, [tally("busy", 5)]);
}

async fn sources_come_back_with_their_job(db: MiningDb) {
    let spec: faena_proto::mining::SourceSpec = serde_json::from_value(
        serde_json::json!({"kind": "daemon", "url": "http://127.0.0.1:18081", "wallet": "4abc"}),
    )
    .expect("a source");
    db.add_source("s1".into(), &spec, 1).await.expect("adds");
    db.add_source("s2".into(), &spec, 2).await.expect("adds");
    let job = faena_proto::ids::JobId::new();
    db.set_job("s1".into(), job).await.expect("sets");
    db.remove_source("s2".into()).await.expect("removes");
    let loaded = db.load().await.expect("loads");
    assert_eq!(loaded.sources.len(), 1);
    assert_eq!((loaded.sources[0].0.as_str(), loaded.sources[0].2), ("s1", Some(job)));
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    old_blocks_surplus_blocks_and_quiet_tallies_go(MiningDb::open(&dir.path().join("mining.db")).expect("opens")).await;
    sources_come_back_with_their_job(MiningDb::open(&dir.path().join("m2.db")).expect("opens")).await;
}

#[tokio::test]
async fn on_postgres() {
    let pg = crate::harness::Postgres::start();
    let store = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    let unused = std::path::Path::new("unused");
    old_blocks_surplus_blocks_and_quiet_tallies_go(MiningDb::beside(&store, unused).expect("beside")).await;
    sources_come_back_with_their_job(MiningDb::beside(&store, unused).expect("beside")).await;
}
