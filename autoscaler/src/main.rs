//! `faena-autoscaler` entry point: parse config, set up logs, run until SIGTERM.

use clap::Parser;
use faena_autoscaler::{AutoscaleArgs, Autoscaler};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = AutoscaleArgs::parse();
    // Its log lines go to stderr only: it has no broker account.
    drop(faena_common::logs::init("autoscaler", args.log_json));
    let stop = faena_common::lifecycle::on_signal();
    let scaler = Autoscaler::new(args).inspect_err(|e| tracing::error!(error = %e, "faena-autoscaler cannot start"))?;
    scaler.run(stop).await;
    tracing::info!("faena-autoscaler stopped");
    Ok(())
}
