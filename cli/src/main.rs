//! `faena`: submit, watch, list and manage a Faena master's jobs and workers
//! from a shell or a script.
//!
//! Exit codes: 0 done, 1 the job failed, 2 bad arguments or an invalid
//! request, 3 no such job, 4 refused (conflict, queue full, too large),
//! 5 unauthorised, 6 master unreachable or failing, 7 the job was cancelled.

mod client;
mod config;
mod keys;
mod output;
mod plans;
mod store;

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use client::{Client, Exit, Failure, Result, Target};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "faena", version, about = "The command-line client of a Faena master", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    target: Target,
    /// Print the API's JSON (one object; `watch` prints one per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 done, 1 job failed, 2 bad arguments or invalid request, 3 no such job, \
4 refused (conflict, queue full, too large), 5 unauthorised, 6 master unreachable, 7 job cancelled.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a job of any kind (built-in or x.<name>); prints its id.
    Submit {
        kind: String,
        /// Parameters: JSON, @file, or @- for stdin.
        #[arg(long, short)]
        params: Option<String>,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Show a job.
    Get { id: String },
    /// Follow a job's events live until it ends.
    Watch { id: String },
    /// Cancel a queued or running job.
    Cancel { id: String },
    /// List jobs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        worker: Option<String>,
        #[arg(long)]
        priority: Option<String>,
        /// A mining job's units.
        #[arg(long)]
        parent: Option<String>,
        /// A recurring schedule's firings.
        #[arg(long)]
        schedule: Option<String>,
        /// Only jobs created since (RFC 3339 or milliseconds since the epoch).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue from a previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// List the registered workers.
    Workers,
    /// Ask the AI a question and stream the answer as it comes.
    Ask {
        question: String,
        /// gemini, openai or local (default: the cluster's order).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        system: Option<String>,
        #[arg(long, value_parser = clap::builder::ValueParser::new(parse_priority))]
        priority: Option<String>,
    },
    /// Mine a RandomX block template over a nonce range (randomx.mine).
    Mine {
        /// RandomX key (seed hash), hex.
        #[arg(long)]
        key: String,
        /// Block hashing blob, hex.
        #[arg(long)]
        blob: String,
        #[arg(long, conflicts_with = "target", required_unless_present = "target")]
        difficulty: Option<u64>,
        /// Share target, hex (instead of --difficulty).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        nonce_start: Option<u32>,
        #[arg(long)]
        nonce_count: Option<u64>,
        #[arg(long)]
        max_shares: Option<u32>,
        #[command(flatten)]
        opts: SubmitOpts,
    },
    /// Recurring schedules: list, show, add, change, delete.
    Schedules {
        #[command(subcommand)]
        action: plans::Schedules,
    },
    /// Groups: their jobs and limits; set or clear a group's limits.
    Groups {
        #[command(subcommand)]
        action: plans::Groups,
    },
    /// Keys for AI clients of the OpenAI endpoints (/v1): create, list, revoke.
    Keys {
        #[command(subcommand)]
        action: keys::Keys,
    },
    /// Read or change the cluster's live configuration (workers apply it without restarting).
    Config {
        #[command(subcommand)]
        action: config::Action,
    },
    /// Move a store: copy a SQLite store into PostgreSQL (no master needed).
    Store {
        #[command(subcommand)]
        action: store::Action,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, clap::Args)]
struct SubmitOpts {
    /// high, normal or low.
    #[arg(long, value_parser = clap::builder::ValueParser::new(parse_priority))]
    priority: Option<String>,
    /// Wait for the job to end and print its result (exit code by its state).
    #[arg(long)]
    wait: bool,
    /// Run no sooner than this time (RFC 3339).
    #[arg(long, conflicts_with = "in_")]
    at: Option<String>,
    /// Run no sooner than this from now (30s, 10m, 2h).
    #[arg(long = "in", value_parser = parse_ms)]
    in_: Option<u64>,
    /// Run after this job has succeeded (repeat for several).
    #[arg(long)]
    after: Vec<String>,
    /// With --after: run once the parents ended, however they ended.
    #[arg(long, requires = "after")]
    after_always: bool,
    /// Make no second job with this key: a duplicate submit gets the first's id.
    #[arg(long)]
    unique: Option<String>,
    /// How long the key holds from submission (else: while the job has not ended).
    #[arg(long, requires = "unique", value_parser = parse_ms)]
    unique_for: Option<u64>,
    /// Its group: dispatch is fair between groups, which may be limited (`faena groups`).
    #[arg(long)]
    group: Option<String>,
    /// Cancel an attempt running longer than this (30s, 5m); it fails with `timeout`.
    #[arg(long, value_parser = parse_ms)]
    timeout: Option<u64>,
    /// Attempts in all, retried with backoff (--backoff) after a retryable failure.
    #[arg(long)]
    retries: Option<u32>,
    /// The first wait before a retry, doubling up to a minute.
    #[arg(long, requires = "retries", value_parser = parse_ms)]
    backoff: Option<u64>,
}

impl SubmitOpts {
    /// The submit body's option fields.
    fn apply(&self, body: &mut Value) {
        let set = |body: &mut Value, k: &str, v: Value| body[k] = v;
        if let Some(at) = &self.at {
            set(body, "run_at", json!(at));
        }
        if let Some(ms) = self.in_ {
            set(body, "run_after_ms", json!(ms));
        }
        if !self.after.is_empty() {
            set(body, "after", json!(self.after));
        }
        if self.after_always {
            set(body, "after_policy", json!("always"));
        }
        if let Some(key) = &self.unique {
            set(body, "unique_key", json!(key));
        }
        if let Some(ms) = self.unique_for {
            set(body, "unique_for", json!(ms.div_ceil(1000)));
        }
        if let Some(g) = &self.group {
            set(body, "group", json!(g));
        }
        if let Some(ms) = self.timeout {
            set(body, "timeout_ms", json!(ms));
        }
        if let Some(n) = self.retries {
            let initial = self.backoff.unwrap_or(1_000);
            let max = initial.max(60_000);
            set(
                body,
                "retry",
                json!({"max_attempts": n, "backoff": {"initial_ms": initial, "max_ms": max, "jitter": 0.2}}),
            );
        }
    }
}

/// A duration as people write it (`30s`, `10m`, `1h 30m`), in milliseconds.
fn parse_ms(s: &str) -> std::result::Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 30s, 10m or 2h: {e}"))?;
    u64::try_from(d.as_millis()).map_err(|_| "too long".into())
}

fn parse_priority(s: &str) -> std::result::Result<String, String> {
    match s {
        "high" | "normal" | "low" => Ok(s.to_owned()),
        _ => Err("priority is high, normal or low".into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "faena", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let outcome = match (cli.command, cli.target.client()) {
        (Command::Store { action }, _) => store::run(action, cli.json).await,
        (command, Ok(client)) => run(&client, command, cli.json).await,
        (_, Err(f)) => Err(f),
    };
    match outcome {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(f) => {
            if cli.json {
                println!("{}", json!({"error": {"exit": f.exit as u8, "message": f.message}}));
            }
            eprintln!("faena: {}", f.message);
            ExitCode::from(f.exit as u8)
        }
    }
}

async fn run(c: &Client, command: Command, as_json: bool) -> Result<Exit> {
    match command {
        Command::Submit { kind, params, opts } => {
            let params = match params {
                Some(p) => read_params(&p)?,
                None => Value::Null,
            };
            submit(c, json!({"kind": kind, "params": params}), opts, as_json).await
        }
        Command::Get { id } => {
            let job = c.get(&format!("/api/jobs/{id}")).await?;
            if as_json {
                output::json(&job)
            } else {
                output::job(&job)
            }
            Ok(Exit::Ok)
        }
        Command::Watch { id } => watch(c, &id, as_json).await,
        Command::Cancel { id } => {
            let v = c.call(Method::DELETE, &format!("/api/jobs/{id}"), None).await?;
            if as_json {
                output::json(&v)
            } else {
                println!("cancelled {id}")
            }
            Ok(Exit::Ok)
        }
        Command::List { state, kind, worker, priority, parent, schedule, since, limit, cursor } => {
            let query: Vec<(&str, String)> = [
                ("state", state),
                ("kind", kind),
                ("worker", worker),
                ("priority", priority),
                ("parent", parent),
                ("schedule", schedule),
                ("since", since),
                ("cursor", cursor),
                ("limit", Some(limit.to_string())),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let qs = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&");
            let page = c.get(&format!("/api/jobs?{qs}")).await?;
            if as_json {
                output::json(&page);
            } else {
                let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
                output::table(&["ID", "KIND", "STATE", "PRIORITY", "WORKER", "CREATED"], &output::job_rows(&jobs));
                if let Some(next) = page["next_cursor"].as_str() {
                    eprintln!("more: --cursor {next}");
                }
            }
            Ok(Exit::Ok)
        }
        Command::Workers => {
            let v = c.get("/api/workers").await?;
            if as_json {
                output::json(&v);
            } else {
                let workers = v["workers"].as_array().cloned().unwrap_or_default();
                output::table(
                    &["ID", "STATE", "RUNNING", "KINDS", "HASHRATE", "VERSION", "CONFIG"],
                    &output::worker_rows(&workers),
                );
            }
            Ok(Exit::Ok)
        }
        Command::Ask { question, provider, model, system, priority } => {
            let mut params = json!({"prompt": question, "stream": true});
            for (k, v) in [("provider", provider), ("model", model), ("system", system)] {
                if let Some(v) = v {
                    params[k] = json!(v);
                }
            }
            ask(c, params, priority, as_json).await
        }
        Command::Mine { key, blob, difficulty, target, nonce_start, nonce_count, max_shares, opts } => {
            let mut params = json!({"key": key, "blob": blob});
            let numbers =
                [("difficulty", difficulty), ("nonce_start", nonce_start.map(u64::from)), ("nonce_count", nonce_count)];
            for (k, v) in numbers.into_iter().chain([("max_shares", max_shares.map(u64::from))]) {
                if let Some(v) = v {
                    params[k] = json!(v);
                }
            }
            if let Some(t) = target {
                params["target"] = json!(t);
            }
            submit(c, json!({"kind": "randomx.mine", "params": params}), opts, as_json).await
        }
        Command::Config { action } => config::run(c, action, as_json).await,
        Command::Schedules { action } => plans::schedules(c, action, as_json).await,
        Command::Groups { action } => plans::groups(c, action, as_json).await,
        Command::Keys { action } => keys::keys(c, action, as_json).await,
        Command::Completions { .. } | Command::Store { .. } => Ok(Exit::Ok),
    }
}

/// `JSON`, `@file` or `@-` (stdin).
pub(crate) fn read_params(p: &str) -> Result<Value> {
    let text = match p.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::new(Exit::Usage, format!("stdin: {e}")))?;
            s
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| Failure::new(Exit::Usage, format!("{path}: {e}")))?,
        None => p.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| Failure::new(Exit::Usage, format!("--params is not JSON: {e}")))
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn submit(c: &Client, mut body: Value, opts: SubmitOpts, as_json: bool) -> Result<Exit> {
    if let Some(p) = &opts.priority {
        body["priority"] = json!(p);
    }
    opts.apply(&mut body);
    let accepted = c.post("/api/jobs", &body).await?;
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    if !opts.wait {
        if as_json {
            output::json(&accepted)
        } else if accepted["duplicate"] == json!(true) {
            println!("{id}");
            eprintln!("[a duplicate: job {id} holds the key]");
        } else {
            println!("{id}")
        }
        return Ok(Exit::Ok);
    }
    if !as_json {
        eprintln!("{id}");
    }
    wait_final(c, &id).await?;
    finished(c, &id, as_json).await
}

/// Follows the job's events until its final one.
async fn wait_final(c: &Client, id: &str) -> Result<()> {
    follow(c, id, |_, _| {}).await.map(drop)
}

/// Feeds `each` the job's events until its final one, which it returns.
/// A stream cut by a master going away (a takeover) is opened again —
/// from the job's state as it is then — for [`client::TAKEOVER_WAIT`].
async fn follow(c: &Client, id: &str, mut each: impl FnMut(&str, &Value)) -> Result<String> {
    let mut cut_since: Option<tokio::time::Instant> = None;
    loop {
        let cut = match c.events(id).await {
            Ok(events) => {
                let mut events = std::pin::pin!(events);
                loop {
                    match events.next().await {
                        Some(Ok((name, data))) => {
                            cut_since = None;
                            each(&name, &data);
                            if client::is_final(&name) {
                                return Ok(name);
                            }
                        }
                        Some(Err(e)) => break e,
                        None => break Failure::new(Exit::Unreachable, "the event stream ended before the job did"),
                    }
                }
            }
            Err(e) if e.exit == Exit::Unreachable => e,
            Err(e) => return Err(e),
        };
        let since = *cut_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= client::TAKEOVER_WAIT {
            return Err(cut);
        }
        eprintln!("[the event stream broke ({}); following again]", cut.message);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Prints a finished job's result (or error) and returns the exit code its state stands for.
async fn finished(c: &Client, id: &str, as_json: bool) -> Result<Exit> {
    let job = c.get(&format!("/api/jobs/{id}")).await?;
    let state = job["state"].as_str().unwrap_or_default();
    if as_json {
        output::json(&job);
    } else if state == "succeeded" {
        output::json(&job["result"]);
    } else {
        eprintln!("faena: job {id} {state}{}", job["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default());
    }
    Ok(client::exit_for_state(state))
}

async fn watch(c: &Client, id: &str, as_json: bool) -> Result<Exit> {
    let last = follow(c, id, |name, data| {
        if as_json {
            println!("{}", json!({"event": name, "data": data}));
        } else {
            println!("{}", output::event(name, data));
        }
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(client::exit_for_state(&last))
}

/// Submits an `ai.query` and prints its answer as it streams.
async fn ask(c: &Client, params: Value, priority: Option<String>, as_json: bool) -> Result<Exit> {
    let mut body = json!({"kind": "ai.query", "params": params});
    if let Some(p) = priority {
        body["priority"] = json!(p);
    }
    let id = c.post("/api/jobs", &body).await?["id"].as_str().unwrap_or_default().to_owned();
    let mut events = std::pin::pin!(c.events(&id).await?);
    let mut out = std::io::stdout();
    let mut printed = false;
    while let Some(ev) = events.next().await {
        let (name, data) = ev?;
        match name.as_str() {
            "progress" if !as_json => {
                if let Some(text) = data["data"]["text"].as_str() {
                    let _ = write!(out, "{text}");
                    let _ = out.flush();
                    printed = true;
                } else if let Some(status) = data["data"]["status"].as_str() {
                    eprintln!(
                        "[{status}{}]",
                        data["data"]["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default()
                    );
                }
            }
            "queued" if !as_json => eprintln!("[queued, position {}]", data["position"].as_u64().unwrap_or(0)),
            "succeeded" => {
                if as_json {
                    return finished(c, &id, true).await;
                }
                // A cached or unstreamed answer comes whole in the result.
                if !printed {
                    let _ = write!(out, "{}", data["result"]["text"].as_str().unwrap_or_default());
                }
                let _ = writeln!(out);
                return Ok(Exit::Ok);
            }
            n if client::is_final(n) => return finished(c, &id, as_json).await,
            _ => {}
        }
    }
    Err(Failure::new(Exit::Unreachable, "the event stream ended before the job did"))
}
