//! The master on a PostgreSQL store (`FAENA_STORE_URL`, from a real server
//! the harness initdb's on a free port): jobs run, are listed and kept;
//! the store's size is in `faena_store_bytes`; the store is copied from
//! SQLite; the server killed, made read-only; the chaos drill.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_store::harness::Postgres;
use faena_testkit::{Cluster, MasterOpts, Mosquitto, eventually, sample, scrape};
use serde_json::{Value, json};

/// `opts` with the store on `pg`, and the directory holding its URL's file.
fn on_store(pg: &Postgres, opts: MasterOpts) -> (MasterOpts, tempfile::TempDir) {
    // The URL carries the password: given as a file, as a Swarm secret is.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("store-url");
    std::fs::write(&file, format!("{}\n", pg.url())).expect("url file");
    let mut extra = opts.extra.clone();
    extra.push(("FAENA_STORE_URL_FILE".to_owned(), file.display().to_string()));
    (MasterOpts { extra, ..opts }, dir)
}

/// A cluster on `pg`, and the directory holding its store URL's file.
async fn on_postgres(pg: &Postgres) -> (Cluster, tempfile::TempDir) {
    let (opts, dir) = on_store(pg, MasterOpts::default());
    (Cluster::start(opts).await, dir)
}

/// What is PostgreSQL's own: the rows are there, each transition once,
/// pages come from the store, the size is the database's, and the URL (a
/// secret) is never logged. (A master killed under work on PostgreSQL is
/// `failures.rs`, which `test.sh` runs on both backends.)
#[tokio::test]
async fn jobs_on_postgres_are_stored_listed_and_sized_and_the_url_never_logged() {
    let pg = Postgres::start();
    let (mut c, _secrets) = on_postgres(&pg).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(c.api.submit_ok("noop", json!({"payload": i}), None).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let job = c.api.wait_final(id).await;
        assert_eq!((job["state"].as_str(), &job["result"]["payload"]), (Some("succeeded"), &json!(i)), "{job}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), "5");
    assert_eq!(pg.sql("SELECT count(*) FROM transitions WHERE state = 'succeeded'"), "5");
    let (status, page) = c.api.get("/api/jobs?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["jobs"][0]["id"], json!(ids[4]), "newest first");
    assert_eq!(page["next_cursor"], "4", "the next page starts below the fourth job stored");
    let metrics = scrape(&c.api.url("/metrics")).await;
    assert!(sample(&metrics, "faena_store_bytes").is_some_and(|b| b > 1_000_000.0), "the database's size");
    assert!(!c.master_log().contains(&pg.url()), "the store's URL (a secret) is not logged");
}

/// From one machine to a cluster: a master's SQLite store, with the master
/// stopped, copied by `faena store copy` into PostgreSQL (the URL from a
/// file, printed nowhere); a master started on PostgreSQL then serves the
/// same jobs.
#[tokio::test]
async fn faena_store_copy_moves_a_sqlite_store_into_postgres() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 2).await;
    c.wait_workers(1).await;
    let ids = c.api.run_noops(20).await;
    c.master().terminate().await;

    let pg = Postgres::start();
    let secrets = tempfile::tempdir().expect("dir");
    let url_file = secrets.path().join("store-url");
    std::fs::write(&url_file, format!("{}\n", pg.url())).expect("url file");
    let db = c.dir.path().join("data/faena.db");
    let args = ["--json", "store", "copy", "--from", &format!("sqlite:{}", db.display()), "--to-file"];
    let args: Vec<&str> = args.iter().copied().chain([url_file.to_str().expect("path")]).collect();
    let out = faena_testkit::cli::faena_env(&c, &pg.url(), &args, &[]).await;
    out.ok();
    let report = out.json();
    assert_eq!(report["whole"], true, "{report}");
    assert_eq!(report["target"]["jobs"], 20, "{report}");
    assert_eq!(pg.sql("SELECT count(*) FROM transitions WHERE state = 'succeeded'"), "20");
    // A wrong source is a usage error, not a panic.
    let out = faena_testkit::cli::faena_env(
        &c,
        &pg.url(),
        &["store", "copy", "--from", "faena.db", "--to-file", url_file.to_str().expect("path")],
        &[],
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    let (mut on_pg, _secrets) = on_postgres(&pg).await;
    let job = on_pg.api.job(&ids[7]).await;
    assert_eq!((job["state"].as_str(), job["result"]["payload"].as_i64()), (Some("succeeded"), Some(7)), "{job}");
    on_pg.add_worker("w2", 1).await;
    let next = on_pg.api.submit_ok("noop", json!({}), None).await;
    assert_eq!(on_pg.api.wait_final(&next).await["state"], "succeeded");
    let (_, page) = on_pg.api.get("/api/jobs?limit=1").await;
    assert_eq!(page["jobs"][0]["id"], json!(next), "new jobs list ahead of the copied ones");
}

/// PostgreSQL killed with -9, then made read-only (as a recovering server
/// is): each time the master stops taking jobs (`503 store_unavailable`)
/// and hands out no work it cannot store, acknowledges nothing it did not
/// commit, and resumes by itself once the server is back — no restart.
#[tokio::test]
async fn a_postgres_killed_or_read_only_pauses_the_master_which_recovers_by_itself() {
    let mut pg = Postgres::start();
    let (mut c, _secrets) = on_postgres(&pg).await;
    let id = c.api.submit_ok("noop", json!({"payload": "kept"}), None).await;

    pg.kill9();
    // The worker's arrival makes the master place the job: that dispatch
    // cannot be stored.
    c.add_worker("w1", 1).await;
    c.api.wait_store_failing().await;
    let (status, body) = c.api.submit("noop", json!({}), None).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (503, Some("store_unavailable")), "{body}");
    pg.resume();
    let job = c.api.wait_final(&id).await;
    assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
    assert!(c.api.store_healthy().await);

    // Read-only: a submission waits for a commit that cannot happen yet.
    pg.sql("ALTER SYSTEM SET default_transaction_read_only = on");
    pg.sql("SELECT pg_reload_conf()");
    let api = c.api.clone();
    let waiting = tokio::spawn(async move { api.submit("noop", json!({"payload": "waited"}), None).await });
    c.api.wait_store_failing().await;
    assert!(!waiting.is_finished(), "nothing is acknowledged before it is stored");
    pg.sql("ALTER SYSTEM RESET default_transaction_read_only");
    pg.sql("SELECT pg_reload_conf()");
    let (status, body) = waiting.await.expect("submits");
    assert_eq!(status.as_u16(), 202, "{body}");
    let waited = body["id"].as_str().expect("id").to_owned();
    assert_eq!(c.api.wait_final(&waited).await["result"]["payload"], "waited");
    assert!(c.master_log().contains("the store commits again"), "the recovery is logged");
    assert_eq!(pg.sql("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), "2");
}

/// The mining store beside the jobs on PostgreSQL: a daemon source added
/// through the API is a row there (not a `mining.db` beside the master),
/// and after a restart the master has it back.
#[tokio::test]
async fn mining_sources_live_in_postgres_and_survive_a_restart() {
    let pg = Postgres::start();
    let (mut c, _secrets) = on_postgres(&pg).await;
    let node = faena_testkit::monerod::Monerod::start(c.dir.path(), 200).await;
    let wallet = faena_testkit::monerod::Wallet::create(c.dir.path(), &node).await;
    let body = json!({"kind": "daemon", "url": node.url, "wallet": wallet.address});
    let (status, v) = c.api.post("/api/mining/sources", &body).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(pg.sql("SELECT count(*) FROM sources"), "1");
    assert!(!c.dir.path().join("data/mining.db").exists(), "no SQLite mining store");
    c.master().terminate().await;
    c.restart_master().await;
    let (status, v) = c.api.get(&format!("/api/mining/sources/{id}")).await;
    assert_eq!((status.as_u16(), v["kind"].as_str()), (200, Some("daemon")), "{v}");
}

/// Submits `n` short `noop` jobs in one batch; their ids.
async fn wave(c: &Cluster, n: usize, tag: &str) -> Vec<String> {
    let jobs: Vec<Value> =
        (0..n).map(|i| json!({"kind": "noop", "params": {"payload": format!("{tag} {i}"), "delay_ms": 40}})).collect();
    let (status, body) = c.api.post("/api/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 202, "{body}");
    body["jobs"].as_array().expect("ids").iter().map(|j| j["id"].as_str().expect("id").to_owned()).collect()
}

/// The chaos drill on PostgreSQL: under a stream of jobs, a worker is
/// killed with -9, then the master, then the broker (Mosquitto), then the
/// PostgreSQL server itself. Every job accepted along the way ends once,
/// succeeded, and the store holds each success once.
#[tokio::test]
async fn chaos_on_postgres_loses_nothing_and_runs_nothing_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut broker = Mosquitto::start(tmp.path()).await;
    let mut pg = Postgres::start();
    let (opts, _secrets) = on_store(&pg, MasterOpts { broker: broker.broker(), ..MasterOpts::default() });
    let mut c = Cluster::start(opts).await;
    for w in ["w1", "w2", "w3"] {
        c.add_worker(w, 4).await;
    }
    c.wait_workers(3).await;
    let mut ids = wave(&c, 60, "start").await;
    c.worker("w1").kill9().await;
    ids.extend(wave(&c, 60, "worker killed").await);
    c.master().kill9().await;
    c.restart_master().await;
    ids.extend(wave(&c, 60, "master killed").await);
    broker.kill9().await;
    broker.restart().await;
    ids.extend(wave(&c, 60, "broker killed").await);
    pg.kill9();
    // A submission's commit is what finds the server gone; it waits (or is
    // told 503) and is counted only if it was accepted.
    let api = c.api.clone();
    let during = tokio::spawn(async move { api.submit("noop", json!({"payload": "during"}), None).await });
    c.api.wait_store_failing().await;
    pg.resume();
    let (status, body) = during.await.expect("submits");
    match status.as_u16() {
        202 => ids.push(body["id"].as_str().expect("id").to_owned()),
        503 => assert_eq!(body["error"]["code"], "store_unavailable", "{body}"),
        other => panic!("a submission while PostgreSQL was away answered {other}: {body}"),
    }
    eventually("the store commits again", || {
        let api = c.api.clone();
        async move { api.store_healthy().await.then_some(()) }
    })
    .await;
    ids.extend(wave(&c, 60, "postgres killed").await);

    for id in &ids {
        let job = c.api.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let history = c.api.history(id).await;
        assert_eq!(history.iter().filter(|t: &&Value| t["state"] == "succeeded").count(), 1, "{history:?}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), ids.len().to_string());
    assert_eq!(pg.sql("SELECT count(*) FROM transitions WHERE state = 'succeeded'"), ids.len().to_string());
}
