//! `faena-edge` entry point: the public ports of a cluster of masters
//! (see `faena_master::edge`).

use clap::Parser;

use faena_master::edge::{EdgeConfig, run};

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
        let cfg = EdgeConfig::parse();
        let _logs = faena_common::logs::init("edge", cfg.log_json);
        let shutdown = faena_common::lifecycle::on_signal();
        let result = run(cfg, shutdown, faena_common::lifecycle::announce_ready).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "faena-edge stopped");
        }
        result.map_err(Into::into)
    })
}
