use super::*;
use faena_proto::ids::FencingToken;
use faena_proto::jobs::{JobSpec, JobState, Priority};
use serde_json::json;

fn wait_commit(store: &Store) {
    let (tx, rx) = mpsc::channel();
    store.after_commit(move |r| {
        let _ = tx.send(r);
    });
    assert!(matches!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(Ok(()))));
}

#[tokio::test]
async fn records_every_transition_and_restores_unfinished_jobs() {
    let dir = std::env::temp_dir().join(format!("faena-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("jobs.db");
    let (a, b, c) = (JobId::new(), JobId::new(), JobId::new());
    {
        let store = Store::open(&path, SyncMode::Full, Retention::OFF).expect("opens");
        for (i, id) in [a, b, c].into_iter().enumerate() {
            store.write(StoreOp::Insert {
                id,
                spec: Arc::new(JobSpec::parse("noop", json!({"payload": i})).expect("valid")),
                priority: Priority::Normal,
                seq: i as u64,
                at_ms: 1000,
                parent: None,
                retry_of: None,
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
        });
        wait_commit(&store);
        let done = store.get(c).await.expect("reads").expect("exists");
        assert_eq!((done.state, done.result), (JobState::Succeeded, Some(json!({"payload": 2}))));
        assert_eq!(
            store.history(c).await.expect("reads").iter().map(|t| t.state.as_str()).collect::<Vec<_>>(),
            ["queued", "running", "succeeded"]
        );
    }
    let store = Store::open(&path, SyncMode::Normal, Retention::OFF).expect("reopens");
    let restored = store.load_unfinished().await.expect("loads");
    assert_eq!(restored.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(restored[0].lease.as_ref().map(|l| (l.0.as_str(), l.1, l.2.as_str())), Some(("w1", 1, "tok")));
    assert!(restored[1].lease.is_none());
    assert!(store.get(JobId::new()).await.expect("reads").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn harness_smoke() {
    let pg = crate::harness::Postgres::start();
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.expect("connects");
    tokio::spawn(conn);
    let row = client.query_one("SELECT 1::int4", &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn since_holds_when_the_clock_steps_back() {
    let dir = std::env::temp_dir().join(format!("faena-list-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("faena.db"), SyncMode::Normal, Retention::OFF).expect("opens");
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
        };
        store.write(op);
    }
    wait_commit(&store);
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
    let _ = std::fs::remove_dir_all(&dir);
}
