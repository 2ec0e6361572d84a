use std::sync::mpsc as std_mpsc;

use faena_proto::ids::JobId;
use faena_proto::jobs::JobState;

use super::*;
use crate::tests::{finished, insert, noop, wait_commit};
use crate::{JobFilter, NamedKind, Store};

fn open(dir: &Path, shards: Option<usize>) -> Result<Store, StoreError> {
    Store::open_sharded(&dir.join("faena.db"), SyncMode::Normal, Retention::OFF, shards)
}

/// Jobs in each shard's file, read apart from the store.
fn jobs_in(path: &Path) -> i64 {
    let conn = Connection::open(path).expect("opens");
    conn.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).expect("counts")
}

/// A store of four shards spreads its jobs over four files and reads as
/// one: a job by its id, pages merged in the order jobs were stored,
/// a mining job's units beside it (listed and restored), unique keys,
/// firings and named documents; reopened, it keeps its shards and its
/// order.
#[tokio::test]
async fn a_store_of_shards_spreads_its_jobs_and_reads_as_one() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), Some(4)).expect("opens");
    assert_eq!(store.shards(), 4);
    let ids: Vec<JobId> = (0..64).map(|_| JobId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        noop(&store, *id, i as u64);
        if i % 2 == 0 {
            store.write(finished(*id, None));
        }
    }
    // A running job with two units, one done; a job holding a unique key,
    // made by a schedule's firing; a firing that made no job, later.
    let mine = ids[1];
    let units = [JobId::beside(mine), JobId::beside(mine)];
    for (n, unit) in units.iter().enumerate() {
        let StoreOp::Insert { id, spec, priority, seq, at_ms, state, .. } = insert(*unit, 100 + n as u64, None) else {
            unreachable!("an insert")
        };
        let (parent, retry_of, opts, run_at_ms) = (Some(mine), None, None, None);
        store.write(StoreOp::Insert { id, spec, priority, seq, at_ms, parent, retry_of, state, opts, run_at_ms });
    }
    store.write(finished(units[0], None));
    let keyed = crate::tests::keyed_and_named(&store);
    wait_commit(&store).await;

    let files: Vec<PathBuf> = (0..4).map(|k| shard_path(&dir.path().join("faena.db"), k)).collect();
    assert_eq!(files[2].file_name().and_then(|n| n.to_str()), Some("faena.2.db"));
    let counts: Vec<i64> = files.iter().map(|f| jobs_in(f)).collect();
    assert_eq!(counts.iter().sum::<i64>(), 67, "{counts:?}");
    assert!(counts.iter().all(|&n| n > 0), "every shard holds jobs: {counts:?}");
    assert!(store.bytes().await.expect("sizes") > 0);

    for (i, id) in ids.iter().enumerate() {
        let view = store.get(*id).await.expect("reads").expect("found in its shard");
        let want = if i % 2 == 0 { JobState::Succeeded } else { JobState::Queued };
        assert_eq!(view.state, want);
        assert!(store.spec(*id).await.expect("reads").is_some());
        assert_eq!(store.history(*id).await.expect("reads").len(), if i % 2 == 0 { 2 } else { 1 });
    }
    // Pages of 10 over all shards: every job once, newest first.
    let mut listed = Vec::new();
    let mut before = None;
    loop {
        let page = store.list(&JobFilter { before, limit: 10, ..Default::default() }).await.expect("lists");
        listed.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    let mut stored: Vec<JobId> = ids.iter().copied().chain([keyed]).collect();
    stored.reverse();
    assert_eq!(listed, stored, "the order they were stored in, units left out");
    let of_mine = JobFilter { parent: Some(mine), limit: 10, ..Default::default() };
    assert_eq!(store.list(&of_mine).await.expect("lists").jobs.len(), 2);
    let done = store.outcomes(vec![ids[0], ids[1], units[0]]).await.expect("reads");
    assert_eq!(done.len(), 3);
    assert_eq!(done[&ids[0]].0, JobState::Succeeded);

    let keys = store.held_keys(0).await.expect("reads");
    assert_eq!(keys.iter().map(|k| (k.key.as_str(), k.job)).collect::<Vec<_>>(), [("k1", keyed)]);
    let firings = store.firings().await.expect("reads");
    assert_eq!(firings["nightly"].job, Some(keyed));
    assert_eq!(firings["hourly"].at_ms, 7_000);
    assert_eq!(store.named(NamedKind::Group).await.expect("reads"), [("g".to_owned(), "{}".to_owned())]);
    drop(store);

    // Reopened without saying how many: as it was made.
    let store = open(dir.path(), None).expect("reopens");
    assert_eq!(store.shards(), 4);
    let restored = store.load_unfinished().await.expect("loads");
    let mut want: Vec<JobId> = ids.iter().skip(1).step_by(2).copied().collect();
    want.extend([units[1], keyed, units[0]]);
    let mut got: Vec<JobId> = restored.iter().map(|j| j.id).collect();
    let by_seq: Vec<u64> = restored.iter().map(|j| j.seq).collect();
    assert!(by_seq.is_sorted(), "in submission order: {by_seq:?}");
    got.sort();
    want.sort();
    assert_eq!(got, want, "unfinished jobs, and the finished unit of the running mining job");
    let later = JobId::new();
    noop(&store, later, 300);
    wait_commit(&store).await;
    let first = store.list(&JobFilter { limit: 1, ..Default::default() }).await.expect("lists");
    assert_eq!(first.jobs[0].id, later, "row ids go on from the highest of any shard");
}

/// The number of shards is the store's: another is refused, as are a
/// missing shard, a shard's file named as the store, a one-file store with
/// jobs split in place, and a number out of range.
#[tokio::test]
async fn a_store_keeps_its_number_of_shards_and_refuses_what_would_lose_jobs() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), Some(4)).expect("opens");
    noop(&store, JobId::new(), 0);
    wait_commit(&store).await;
    drop(store);
    let refused = |r: Result<Store, StoreError>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let other = refused(open(dir.path(), Some(2)));
    assert!(other.contains("made with 4 shard(s), not 2") && other.contains("FAENA_STORE_SHARDS=4"), "{other}");
    let shard = Store::open(&dir.path().join("faena.3.db"), SyncMode::Normal, Retention::OFF);
    assert!(refused(shard).contains("is shard 3 of 4"));
    std::fs::rename(dir.path().join("faena.2.db"), dir.path().join("elsewhere.db")).expect("moves");
    let missing = refused(open(dir.path(), None));
    assert!(missing.contains("shard 2") && missing.contains("missing"), "{missing}");
    std::fs::rename(dir.path().join("elsewhere.db"), dir.path().join("faena.2.db")).expect("moves back");
    assert_eq!(open(dir.path(), Some(4)).expect("whole again").shards(), 4);

    let one = tempfile::tempdir().expect("dir");
    let store = open(one.path(), None).expect("one file");
    noop(&store, JobId::new(), 0);
    wait_commit(&store).await;
    drop(store);
    assert!(refused(open(one.path(), Some(2))).contains("made with 1 shard(s), not 2"));
    assert_eq!(open(one.path(), Some(1)).expect("one, as made").shards(), 1);
    // A store from a build before shards records none: one file.
    Connection::open(one.path().join("faena.db")).expect("opens").execute_batch("DROP TABLE shards").expect("drops");
    assert!(refused(open(one.path(), Some(2))).contains("cannot be split"));
    assert_eq!(open(one.path(), None).expect("as it was").shards(), 1);
    // A place no build writes (a file edited by hand) is refused, not opened.
    let odd = tempfile::tempdir().expect("dir");
    let conn = Connection::open(odd.path().join("faena.db")).expect("opens");
    conn.execute_batch(
        "CREATE TABLE shards (shard INTEGER NOT NULL, of INTEGER NOT NULL); INSERT INTO shards VALUES (0, 0);",
    )
    .expect("marks");
    drop(conn);
    assert!(refused(open(odd.path(), None)).contains("shard 0 of 0"));
    for n in [0, MAX_SHARDS + 1] {
        assert!(refused(open(tempfile::tempdir().expect("dir").path(), Some(n))).contains("1 to 8"), "{n}");
    }
}

/// What a caller queued goes to its shards in order, each new job after
/// the row id it takes (in the order queued, over every shard), and its
/// callbacks come back as one, in order.
#[test]
fn a_batch_goes_to_its_shards_in_order_numbered_as_queued() {
    let ids: Vec<JobId> = (0..40).map(|_| JobId::new()).collect();
    let (tx, rx) = std_mpsc::channel();
    let mut cmds: Vec<Cmd> = ids.iter().enumerate().map(|(i, id)| Cmd::Op(insert(*id, i as u64, None))).collect();
    let first = tx.clone();
    cmds.insert(3, Cmd::AfterCommit(Box::new(move |r| first.send(("first", r.is_ok())).expect("sends"))));
    cmds.push(Cmd::Many(vec![Cmd::AfterCommit(Box::new(move |r| tx.send(("last", r.is_ok())).expect("sends")))]));
    let numbering = Numbering { ids: RowIds::from(10), newest: Mutex::new(0) };
    let (parts, callbacks) = split(cmds, 4, &numbering);
    assert_eq!(parts.len(), 4);
    let mut numbered = Vec::new();
    for (k, part) in parts.into_iter().enumerate() {
        let (mut seen, mut row) = (Vec::new(), None);
        for cmd in part {
            match cmd {
                Cmd::Row(r) => row = Some(r),
                Cmd::Op(StoreOp::Insert { id, at_ms, .. }) => {
                    assert_eq!(id.shard(4), k);
                    let stamp = row.take().expect("a row id before each new job");
                    assert_eq!(stamp.created, at_ms as i64, "times in order already: kept");
                    numbered.push((stamp.row, id));
                    seen.push(id);
                }
                _ => panic!("only new jobs and their row ids"),
            }
        }
        let mine: Vec<JobId> = ids.iter().copied().filter(|id| id.shard(4) == k).collect();
        assert_eq!(seen, mine, "shard {k} gets its jobs, in order");
    }
    numbered.sort();
    let in_order: Vec<(i64, JobId)> = (10..).zip(ids.iter().copied()).collect();
    assert_eq!(numbered, in_order, "row ids in the order the jobs were queued, over every shard");
    assert_eq!(numbering.ids.next(), 50);
    // A time that steps back is stamped as the newest before it.
    assert_eq!(numbering.stamp(5).created, 1_039);
    assert_eq!(numbering.stamp(2_000).created, 2_000);
    callbacks.expect("the callbacks")(Ok(()));
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [("first", true), ("last", true)]);
}

/// A callback runs once every shard committed what was queued before it,
/// in the order callbacks were made; with nothing outstanding, shard 0's
/// writer is woken to run it; one left when the writers are gone hears so.
#[test]
fn a_callback_waits_for_every_shard_and_they_run_in_order() {
    let joiner = Arc::new(Joiner::new(3));
    let chans: Vec<(std_mpsc::Sender<Cmd>, std_mpsc::Receiver<Cmd>)> = (0..3).map(|_| std_mpsc::channel()).collect();
    let (ran, heard) = std_mpsc::channel();
    let note = |name: &'static str| {
        let ran = ran.clone();
        Box::new(move |r: Result<(), CommitFailed>| ran.send((name, r.is_ok())).expect("sends")) as Callback
    };
    // One message to shards 0 and 2, then two callbacks, then one more to 2.
    joiner.send(0, &chans[0].0, Cmd::Many(Vec::new()));
    joiner.send(2, &chans[2].0, Cmd::Many(Vec::new()));
    joiner.after(note("a"), &chans[0].0);
    joiner.after(note("b"), &chans[0].0);
    joiner.send(2, &chans[2].0, Cmd::Many(Vec::new()));
    joiner.after(note("c"), &chans[0].0);
    joiner.committed(2, 1);
    assert!(heard.try_recv().is_err(), "shard 0 has not committed");
    joiner.committed(0, 1);
    assert_eq!(heard.try_iter().collect::<Vec<_>>(), [("a", true), ("b", true)], "in order; c waits for shard 2");
    joiner.committed(2, 1);
    assert_eq!(heard.try_recv(), Ok(("c", true)));
    // Nothing outstanding: shard 0's writer is woken, and its answer runs it.
    let kicks = chans[0].1.try_iter().count();
    joiner.after(note("d"), &chans[0].0);
    assert!(heard.try_recv().is_err(), "never on the caller");
    assert_eq!(chans[0].1.try_iter().count(), 1, "shard 0 woken (after the {kicks} sent before)");
    joiner.committed(0, 1);
    assert_eq!(heard.try_recv(), Ok(("d", true)));
    // Left waiting when the store and its writers are gone.
    joiner.send(1, &chans[1].0, Cmd::Many(Vec::new()));
    joiner.after(note("e"), &chans[0].0);
    drop(joiner);
    assert_eq!(heard.try_recv(), Ok(("e", false)));

    // A writer gone while the store is not: what waits, and what would,
    // hears it at once instead of waiting for ever.
    let joiner = Joiner::new(2);
    let (tx0, _rx0) = std_mpsc::channel();
    let (tx1, rx1) = std_mpsc::channel();
    joiner.send(0, &tx0, Cmd::Many(Vec::new()));
    joiner.after(note("f"), &tx0);
    drop(rx1);
    joiner.send(1, &tx1, Cmd::Many(Vec::new()));
    assert_eq!(heard.try_recv(), Ok(("f", false)));
    joiner.after(note("g"), &tx0);
    assert_eq!(heard.try_recv(), Ok(("g", false)));
}
