//! `faena-master` entry point: parse config, set up logs, run until SIGTERM.

use clap::Parser;

// Many small, short-lived allocations per job (JSON, messages): mimalloc
// spends measurably less time on them than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use faena_master::Config;

fn main() -> anyhow::Result<()> {
    // The allocator reads its settings before `main`: start again once with them.
    faena_common::lifecycle::reexec_with(faena_common::lifecycle::allocator_env().into_iter().collect());
    let cfg = Config::parse();
    let threads = cfg.runtime_threads()?;
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?.block_on(run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let logs = faena_common::logs::init("master", cfg.log_json);
    let shutdown = faena_common::lifecycle::on_signal();
    let result = faena_master::run(cfg, Some(logs), shutdown, faena_common::lifecycle::announce_ready).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "faena-master stopped");
    }
    result.map_err(Into::into)
}
