//! `faena store copy`: moves a SQLite store (one machine) into PostgreSQL
//! (a cluster), or into a new SQLite store of another number of shards. It
//! talks to the stores, not to a master: run it where the SQLite file is,
//! with the master stopped.

use std::path::PathBuf;

use serde_json::json;

use crate::client::{Exit, Failure, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Copy a SQLite store (jobs, their history, live configuration, and
    /// the mining store beside it) into an empty PostgreSQL store (run
    /// again to resume an interrupted copy), or into a new SQLite store of
    /// `--shards` files.
    Copy {
        /// The source: `sqlite:PATH` (a master's `faena.db`).
        #[arg(long)]
        from: String,
        /// The target: `postgres://user:password@host:port/db` (a secret:
        /// prefer --to-file or FAENA_STORE_URL_FILE), or `sqlite:PATH` for
        /// a new SQLite store (nothing of a store may be there yet).
        #[arg(long, env = "FAENA_STORE_URL", hide_env_values = true)]
        to: Option<String>,
        /// A file holding the target's URL.
        #[arg(long, env = "FAENA_STORE_URL_FILE")]
        to_file: Option<PathBuf>,
        /// Jobs per transaction (into PostgreSQL).
        #[arg(long, default_value_t = 5_000)]
        batch: usize,
        /// Files of a new SQLite store (1–8; FAENA_STORE_SHARDS for a
        /// master); the source's number when not given.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
        shards: Option<u8>,
    },
}

pub async fn run(action: Action, as_json: bool) -> Result<Exit> {
    let Action::Copy { from, to, to_file, batch, shards } = action;
    let Some(path) = from.strip_prefix("sqlite:") else {
        return Err(Failure::new(Exit::Usage, format!("--from {from:?}: give sqlite:PATH")));
    };
    let to = faena_common::secrets::resolve("FAENA_STORE_URL", to.as_deref(), to_file.as_deref())
        .map_err(|e| Failure::new(Exit::Usage, e.to_string()))?
        .ok_or_else(|| Failure::new(Exit::Usage, "give the target: --to, --to-file or FAENA_STORE_URL(_FILE)"))?;
    let report = if let Some(new) = to.expose().strip_prefix("sqlite:") {
        let (from, new) = (PathBuf::from(path), PathBuf::from(new));
        let shards = match shards {
            Some(n) => usize::from(n),
            None => faena_store::shards::count(&from).map_err(|e| Failure::new(Exit::Refused, e.to_string()))?,
        };
        tokio::task::spawn_blocking(move || faena_store::copy::into_sqlite(&from, &new, shards))
            .await
            .map_err(|e| Failure::new(Exit::Refused, format!("store copy stopped: {e}")))?
            .map_err(|e| {
                Failure::new(Exit::Refused, format!("store copy stopped, nothing written at the target: {e}"))
            })?
    } else if to.expose().starts_with("postgres://") || to.expose().starts_with("postgresql://") {
        if shards.is_some() {
            return Err(Failure::new(Exit::Usage, "--shards is for a SQLite target (sqlite:PATH)"));
        }
        let mut last = 0;
        faena_store::copy::copy(path.as_ref(), to.expose(), batch.max(1), None, |n| {
            if !as_json && n >= last + 100_000 {
                eprintln!("{n} jobs copied");
                last = n;
            }
        })
        .await
        .map_err(|e| Failure::new(Exit::Refused, format!("store copy stopped (run it again to resume): {e}")))?
    } else {
        return Err(Failure::new(Exit::Usage, "the target is a postgres:// URL or sqlite:PATH"));
    };
    if as_json {
        println!(
            "{}",
            json!({
                "jobs_copied": report.jobs, "history_copied": report.history,
                "config_versions_copied": report.config_versions,
                "mining_copied": {"sources": report.mining.0, "blocks": report.mining.1, "participants": report.mining.2},
                "source": {"jobs": report.source_jobs, "history": report.source_history},
                "target": {"jobs": report.target_jobs, "history": report.target_history},
                "whole": report.is_whole(),
            })
        );
    } else {
        println!(
            "copied {} jobs, {} history rows, {} live configuration versions, {} mining sources, {} blocks, {} tallies\nsource: {} jobs, {} history rows\ntarget: {} jobs, {} history rows",
            report.jobs,
            report.history,
            report.config_versions,
            report.mining.0,
            report.mining.1,
            report.mining.2,
            report.source_jobs,
            report.source_history,
            report.target_jobs,
            report.target_history
        );
    }
    if report.is_whole() {
        Ok(Exit::Ok)
    } else {
        Err(Failure::new(Exit::Refused, "the counts differ: the target does not hold the whole store"))
    }
}
