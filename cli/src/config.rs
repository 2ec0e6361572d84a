//! `faena config get|set|unset`: the cluster's live configuration
//! (`GET`/`PUT /api/config`).
//!
//! `--wait` exits 4 when a worker refused one of the settings, and 6 when
//! not every worker reported the new version within `--timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faena_proto::settings::Override;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{Client, Exit, Failure, Result};
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Show the configuration and which version each worker runs; with
    /// KEY, the value that applies (to --worker, or to every worker).
    Get {
        key: Option<String>,
        #[arg(long)]
        worker: Option<String>,
        /// First wait until N workers run the current version (what
        /// `dev.sh` does to say which live settings are in effect).
        #[arg(long, value_name = "N")]
        wait_workers: Option<usize>,
        /// Longest --wait-workers, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Set KEY=VALUE (VALUE as JSON when it parses, else a string) for
    /// every worker, or for one with --worker.
    Set {
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, Value)>,
        #[command(flatten)]
        opts: Opts,
    },
    /// Remove keys: workers go back to their own flags for them.
    Unset {
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        opts: Opts,
    },
}

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// One worker's settings instead of every worker's.
    #[arg(long)]
    worker: Option<String>,
    /// Wait until the workers (or --worker) run the new version.
    #[arg(long)]
    wait: bool,
    /// Longest --wait, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn parse_setting(s: &str) -> std::result::Result<(String, Value), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
    Ok((key.trim().to_owned(), value))
}

pub async fn run(c: &Client, action: Action, as_json: bool) -> Result<Exit> {
    let (settings, opts) = match action {
        Action::Get { key, worker, wait_workers, timeout } => {
            if let Some(n) = wait_workers {
                reporting(c, n, Duration::from_secs(timeout)).await?;
            }
            return get(c, key, worker.as_deref(), as_json).await;
        }
        Action::Set { settings, opts } => (settings.into_iter().collect::<Map<_, _>>(), opts),
        Action::Unset { keys, opts } => (keys.into_iter().map(|k| (k, Value::Null)).collect(), opts),
    };
    let mut body = json!({ "settings": settings });
    if let Some(w) = &opts.worker {
        body["worker"] = Value::from(w.as_str());
    }
    let view = c.call(Method::PUT, "/api/config", Some(&body)).await?;
    let version = view["version"].as_u64().unwrap_or(0);
    if !as_json {
        println!("version {version} ({})", opts.worker.as_deref().unwrap_or("all workers"));
    }
    if !opts.wait {
        if as_json {
            output::json(&view);
        }
        return Ok(Exit::Ok);
    }
    let view = wait(c, version, opts.worker.as_deref(), Duration::from_secs(opts.timeout)).await?;
    if as_json {
        output::json(&view);
    } else {
        reported(&view);
    }
    let refused: Vec<String> = targets(&view, opts.worker.as_deref())
        .flat_map(|(w, a)| a["refused"].as_array().into_iter().flatten().map(move |r| (w, r)))
        .filter(|(_, r)| r["key"].as_str().is_some_and(|k| settings.contains_key(k)))
        .map(|(w, r)| format!("{w}: {} — {}", r["key"], r["reason"]))
        .collect();
    match refused.is_empty() {
        true => Ok(Exit::Ok),
        false => Err(Failure::new(Exit::Refused, format!("refused by workers: {}", refused.join("; ")))),
    }
}

/// The workers a change concerns, with what they reported.
fn targets<'a>(view: &'a Value, worker: Option<&'a str>) -> impl Iterator<Item = (&'a String, &'a Value)> {
    let all = view["reported"].as_object().into_iter().flatten();
    all.filter(move |(w, _)| worker.is_none_or(|only| w.as_str() == only))
}

/// Polls `GET /api/config` until `ready` takes the view (`Ok`), or
/// `timeout` passes: then what `ready` last said is the failure (exit 6).
async fn poll_config(
    c: &Client,
    timeout: Duration,
    mut ready: impl FnMut(&Value) -> std::result::Result<(), String>,
) -> Result<Value> {
    let until = Instant::now() + timeout;
    loop {
        let view = c.get("/api/config").await?;
        match ready(&view) {
            Ok(()) => return Ok(view),
            Err(why) if Instant::now() >= until => return Err(Failure::new(Exit::Unreachable, why)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls until every worker concerned reports `version` or newer.
async fn wait(c: &Client, version: u64, worker: Option<&str>, timeout: Duration) -> Result<Value> {
    poll_config(c, timeout, |view| {
        let behind: Vec<String> = targets(view, worker)
            .filter(|(_, a)| a["version"].as_u64().unwrap_or(0) < version)
            .map(|(w, _)| w.clone())
            .collect();
        let missing = worker.is_some_and(|w| view["reported"].get(w).is_none());
        if behind.is_empty() && !missing {
            return Ok(());
        }
        let who = if missing { worker.unwrap_or_default().to_owned() } else { behind.join(", ") };
        Err(format!("not running version {version} after {}s: {who}", timeout.as_secs()))
    })
    .await
}

/// Polls until at least `n` workers report the current version.
async fn reporting(c: &Client, n: usize, timeout: Duration) -> Result<()> {
    poll_config(c, timeout, |view| {
        let version = view["version"].as_u64().unwrap_or(0);
        let current = targets(view, None).filter(|(_, a)| a["version"].as_u64().unwrap_or(0) >= version).count();
        match current >= n {
            true => Ok(()),
            false => Err(format!("{current} of {n} workers run version {version} after {}s", timeout.as_secs())),
        }
    })
    .await
    .map(drop)
}

async fn get(c: &Client, key: Option<String>, worker: Option<&str>, as_json: bool) -> Result<Exit> {
    let view = c.get("/api/config").await?;
    let Some(key) = key else {
        if as_json {
            output::json(&view);
        } else {
            println!("version {}", view["version"].as_u64().unwrap_or(0));
            scope("all workers", &view["all"]);
            for (w, s) in view["workers"].as_object().into_iter().flatten() {
                scope(w, s);
            }
            reported(&view);
        }
        return Ok(Exit::Ok);
    };
    let own = worker.and_then(|w| view["workers"][w].get(&key));
    let value = own.or_else(|| view["all"].get(&key)).cloned();
    let Some(value) = value else {
        let whom = worker.unwrap_or("every worker");
        return Err(Failure::new(Exit::NotFound, format!("{key} is not set for {whom}: its own flags apply")));
    };
    if as_json {
        output::json(&json!({ "key": key, "value": value, "worker": worker }));
    } else {
        println!("{}", value.as_str().map_or_else(|| value.to_string(), str::to_owned));
    }
    Ok(Exit::Ok)
}

fn scope(name: &str, settings: &Value) {
    let settings: BTreeMap<&String, &Value> = settings.as_object().into_iter().flatten().collect();
    if settings.is_empty() {
        return;
    }
    println!("{name}:");
    for (k, v) in settings {
        println!("  {k} = {v}");
    }
}

fn reported(view: &Value) {
    let version = view["version"].as_u64().unwrap_or(0);
    let rows: Vec<Vec<String>> = view["reported"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(w, a)| {
            let runs = a["version"].as_u64().unwrap_or(0);
            let refused: Vec<String> = a["refused"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{}: {}", r["key"].as_str().unwrap_or("?"), r["reason"].as_str().unwrap_or("?")))
                .collect();
            let state = if runs >= version { "current" } else { "behind" };
            vec![w.clone(), runs.to_string(), state.into(), refused.join("; ")]
        })
        .collect();
    output::table(&["WORKER", "RUNS", "", "REFUSED"], &rows);
    for line in overrides(view) {
        println!("{line}");
    }
}

/// What live settings run instead of the workers' own, one line for the
/// workers that say the same: `live configuration v4 in effect on w1, w2:
/// worker.slots=3 (overrides FAENA_WORKER_SLOTS=1)`.
fn overrides(view: &Value) -> Vec<String> {
    let mut same: BTreeMap<(u64, String), Vec<&str>> = BTreeMap::new();
    for (w, a) in view["reported"].as_object().into_iter().flatten() {
        let said: Vec<String> = a["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| serde_json::from_value::<Override>(o.clone()).ok())
            .map(|o| o.to_string())
            .collect();
        if !said.is_empty() {
            same.entry((a["version"].as_u64().unwrap_or(0), said.join(", "))).or_default().push(w);
        }
    }
    let line = |((version, said), workers): ((u64, String), Vec<&str>)| {
        format!("live configuration v{version} in effect on {}: {said}", workers.join(", "))
    };
    same.into_iter().map(line).collect()
}
