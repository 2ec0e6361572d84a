//! `faena-master` entry point: parse config, set up logs, run until SIGTERM.

use clap::Parser;

// Many small, short-lived allocations per job (JSON, messages): mimalloc
// spends measurably less time on them than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use faena_master::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    let logs = faena_common::logs::init("master", cfg.log_json);
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        faena_common::shutdown::signal().await;
        on_signal.cancel();
    });
    let result = faena_master::run(cfg, Some(logs), shutdown, |addrs| {
        // The one line on stdout: scripts and tests read the bound addresses from it.
        println!("FAENA_READY {}", serde_json::to_string(addrs).unwrap_or_default());
    })
    .await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "faena-master stopped");
    }
    result.map_err(Into::into)
}
