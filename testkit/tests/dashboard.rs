//! The operations dashboard: its `/ops` feed behind the API token, and the
//! page in chromium (`web/tests/dashboard.mjs`): charts that move while
//! jobs run, the jobs table's filters, a job's timeline, and retry,
//! re-prioritise and cancel from the page.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::{Cluster, MasterOpts, repo, run_node};

const TOKEN: &str = "dashboard-test-token";

#[tokio::test]
async fn the_dashboard_shows_the_cluster_live_and_acts_on_jobs() {
    let web = repo().join("web").display().to_string();
    let extra = [("FAENA_WEB_DIR", web.as_str()), ("FAENA_NO_WORKER_TIMEOUT_MS", "500")];
    let opts =
        MasterOpts { extra: extra.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), ..MasterOpts::default() };
    let mut c = Cluster::start_with_api_token(opts, TOKEN).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let shots = faena_testkit::target_dir().join("screenshots").join("web");
    run_node(&c, "dashboard.mjs", &[TOKEN, &shots.display().to_string()]).await;
}
