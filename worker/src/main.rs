//! `faena-worker` entry point: parse config, set up logs, run until SIGTERM.

use clap::Parser;

// Many small, short-lived allocations per job (JSON, messages): mimalloc
// spends measurably less time on them than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use faena_worker::Config;

fn main() -> anyhow::Result<()> {
    // Settings read before `main` (allocator, glibc): start again once with them.
    let env = [faena_common::lifecycle::allocator_env(), faena_worker::randomx::transparent_huge_pages_env()];
    faena_common::lifecycle::reexec_with(env.into_iter().flatten().collect());
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut cfg = Config::parse();
    let id = cfg.worker_id.get_or_insert_with(faena_worker::default_worker_id).clone();
    let logs = faena_common::logs::init(&format!("worker:{id}"), cfg.log_json);
    let shutdown = faena_common::lifecycle::on_signal();
    let result = faena_worker::run(cfg, Some(logs), shutdown, faena_common::lifecycle::announce_ready).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "faena-worker stopped");
    }
    result.map_err(Into::into)
}
