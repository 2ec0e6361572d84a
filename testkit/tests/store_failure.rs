//! The job store on a disk that fills up and is freed again (a real tmpfs,
//! so SQLite meets a real `SQLITE_FULL`, and PostgreSQL a real `ENOSPC`):
//! the master claims nothing it did not store, hands out no work it could
//! not record, retries, and recovers by itself — every job with exactly
//! one outcome.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use faena_testkit::{Cluster, Listener, MasterOpts, embedded_login, eventually};
use serde_json::json;

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("runs mount");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
        Self(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file in `dir` until the file system has no room left.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    for chunk in [64 * 1024, 512] {
        let block = vec![0u8; chunk];
        while file.write_all(&block).and_then(|()| file.sync_all()).is_ok() {}
    }
    path
}

#[tokio::test]
async fn a_full_disk_pauses_the_master_which_loses_nothing_and_recovers_by_itself() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let _disk = Tmpfs::mount(&data, "8m");
    let opts =
        MasterOpts { extra: vec![("FAENA_DATA_DIR".into(), data.display().to_string())], ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    let id = c.api.submit_ok("noop", json!({"payload": "kept"}), None).await;

    let filler = fill(&data);
    let login = embedded_login("faena-master");
    let mut spy = Listener::start_with(&c.addrs.mqtt, "spy", "faena/workers/w1/jobs", Some(login)).await;
    // When the first unit for w1 went over the broker, and what it was.
    let first_unit = tokio::spawn(async move {
        let (_, unit) = spy.messages.recv().await?;
        Some((Instant::now(), String::from_utf8_lossy(&unit).into_owned()))
    });
    // The worker's arrival makes the master place the job: that dispatch
    // cannot be stored.
    c.add_worker("w1", 1).await;
    c.api.wait_store_failing().await;
    let (status, body) = c.api.submit("noop", json!({}), None).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (503, Some("store_unavailable")), "{body}");
    assert_ne!(c.api.job(&id).await["state"], "succeeded");

    let freed_at = Instant::now();
    std::fs::remove_file(&filler).expect("frees the disk");
    let job = c.api.wait_final(&id).await;
    assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
    assert_eq!(job["result"]["payload"], "kept");
    let (sent_at, unit) = first_unit.await.expect("spy").expect("the unit went over the broker");
    assert!(unit.contains(&id), "{unit}");
    assert!(sent_at > freed_at, "the unit was published before its dispatch was stored");
    assert!(c.api.store_healthy().await);
    let later = c.api.submit_ok("noop", json!({"payload": "after"}), None).await;
    assert_eq!(c.api.wait_final(&later).await["state"], "succeeded");

    assert!(c.master_log().contains("the store commits again"), "the recovery is logged");

    // What was told is what was stored: after a crash, both jobs are done, once.
    c.master().kill9().await;
    c.restart_master().await;
    for (job, payload) in [(&id, "kept"), (&later, "after")] {
        let view = c.api.job(job).await;
        assert_eq!((view["state"].as_str(), view["result"]["payload"].as_str()), (Some("succeeded"), Some(payload)));
        let history = c.api.history(job).await;
        let states: Vec<_> = history.iter().filter_map(|t| t["state"].as_str()).collect();
        assert_eq!(states, ["queued", "running", "succeeded"], "{history:?}");
    }
}

/// PostgreSQL's data on a tmpfs that fills up under a stream of jobs: the
/// server refuses to extend a table or write its WAL (it may even stop
/// itself, as it does when its WAL cannot be written; a supervisor starts
/// it again, here the test). The master answers 503 while it lasts and
/// recovers by itself; every job it accepted succeeds once.
#[tokio::test]
async fn a_full_disk_under_postgres_pauses_the_master_which_loses_nothing() {
    let root = tempfile::tempdir().expect("temp dir");
    let disk = root.path().join("pg");
    let _disk = Tmpfs::mount(&disk, "128m");
    let mut pg = faena_store::harness::Postgres::start_in(&disk);
    let secrets = tempfile::tempdir().expect("dir");
    let url_file = secrets.path().join("store-url");
    std::fs::write(&url_file, pg.url()).expect("url file");
    let opts = MasterOpts {
        extra: vec![("FAENA_STORE_URL_FILE".into(), url_file.display().to_string())],
        ..MasterOpts::default()
    };
    let mut c = Cluster::start(opts).await;
    c.add_worker("w1", 4).await;
    c.wait_workers(1).await;
    let filler = fill(&disk);

    // Batches until the store gives out: each accepted batch's ids kept.
    let api = c.api.clone();
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let submitter = tokio::spawn(async move {
        let mut accepted: Vec<String> = Vec::new();
        let mut refused = 0;
        let body: Vec<_> = (0..200).map(|i| json!({"kind": "noop", "params": {"payload": i}})).collect();
        while !*stop.borrow_and_update() {
            let (status, answer) = api.post("/api/jobs/batch", &json!({"jobs": body})).await;
            match status.as_u16() {
                202 => accepted.extend(answer["jobs"].as_array().expect("ids").iter().map(|j| j["id"].to_string())),
                503 => {
                    assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
                    refused += 1;
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), stop.changed()).await;
                }
                other => panic!("a batch answered {other}: {answer}"),
            }
        }
        (accepted, refused)
    });
    c.api.wait_store_failing().await;
    let (status, body) = c.api.submit("noop", json!({}), None).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (503, Some("store_unavailable")), "{body}");
    let log = c.master_log();
    assert!(log.contains("No space left on device"), "the server's reason is logged: {log}");
    std::fs::remove_file(&filler).expect("frees the disk");
    if !pg.is_up() {
        pg.resume();
    }
    eventually("the store commits again", || {
        let api = c.api.clone();
        async move { api.store_healthy().await.then_some(()) }
    })
    .await;
    stop_tx.send(true).expect("stops the submitter");
    let (accepted, _refused) = submitter.await.expect("submitter");
    assert!(!accepted.is_empty());
    for id in &accepted {
        let id = id.trim_matches('"');
        let job = c.api.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let history = c.api.history(id).await;
        assert_eq!(history.iter().filter(|t| t["state"] == "succeeded").count(), 1, "{history:?}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), accepted.len().to_string());
    assert!(c.master_log().contains("the store commits again"), "the recovery is logged");
}

/// One master to a SQLite store: a second started on the same data
/// directory (other ports) would dispatch the same queue, and is refused
/// at start, saying why; `faena store copy` of the store is refused while
/// the first runs. The first goes on serving.
#[tokio::test]
async fn a_second_master_on_the_same_sqlite_store_is_refused() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    let data = c.dir.path().join("data");
    let log = c.dir.path().join("second-master.log");
    let env = vec![
        ("FAENA_DATA_DIR".to_owned(), data.display().to_string()),
        ("FAENA_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAENA_GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAENA_MQTT_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAENA_VERIFY_MODE".to_owned(), "light".to_owned()),
    ];
    let mut second = faena_testkit::Proc::spawn_raw(&faena_testkit::bin("faena-master"), &[], &env, &log);
    let status = tokio::time::timeout(faena_testkit::WAIT, second.wait()).await.expect("exits").expect("status");
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("another process has the store") && text.contains("faena.db.lock"), "{text}");

    let from = format!("sqlite:{}", data.join("faena.db").display());
    let to = format!("sqlite:{}", c.dir.path().join("copy/faena.db").display());
    let copy =
        faena_testkit::cli::faena_env(&c, "unused-token", &["store", "copy", "--from", &from, "--to", &to], &[]).await;
    assert!(copy.code != 0 && copy.stderr.contains("another process has the store"), "{}", copy.stderr);
    assert!(!c.dir.path().join("copy/faena.db").exists(), "nothing copied");

    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("noop", json!({}), None).await;
    assert_eq!(c.api.wait_final(&id).await["state"], "succeeded");
}
