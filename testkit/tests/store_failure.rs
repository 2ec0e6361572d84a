//! The job store on a disk that fills up and is freed again (a real tmpfs,
//! so SQLite meets a real `SQLITE_FULL`): the master claims nothing it did
//! not store, hands out no work it could not record, retries, and recovers
//! by itself — every job with exactly one outcome.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use faena_testkit::{Cluster, Listener, MasterOpts, embedded_login};
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
