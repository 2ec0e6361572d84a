//! `faena schedules …` (recurring jobs: `/api/schedules`) and `faena groups
//! …` (fair shares and limits: `/api/groups`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, Exit, Result};
use crate::output::{self, text};

#[derive(Debug, clap::Subcommand)]
pub enum Schedules {
    /// Every schedule, with its next firing.
    List,
    /// One schedule.
    Get { name: String },
    /// A new schedule: a job of KIND at each firing of CRON.
    Add {
        name: String,
        /// 5 fields: minute hour day-of-month month day-of-week ("0 * * * *": hourly).
        #[arg(long)]
        cron: String,
        #[arg(long)]
        kind: String,
        /// The job's parameters, JSON.
        #[arg(long, short)]
        params: Option<String>,
        /// An IANA zone the cron is read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long)]
        priority: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// skip (default), queue or allow: a firing while the last one's job runs.
        #[arg(long)]
        overlap: Option<String>,
        /// none, one (default) or all: firings missed while no master led.
        #[arg(long)]
        catch_up: Option<String>,
    },
    /// Change a schedule's cron, zone, overlap or catch-up.
    Set {
        name: String,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long)]
        overlap: Option<String>,
        #[arg(long)]
        catch_up: Option<String>,
    },
    /// Delete a schedule (the jobs it made stay).
    Delete { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum Groups {
    /// Every group with jobs or limits: queued, running, limits.
    List,
    /// One group.
    Get { name: String },
    /// Limit a group (a limit left out is no limit).
    Set {
        name: String,
        /// At most this many of its jobs out at once.
        #[arg(long)]
        max_running: Option<u32>,
        /// At most this many dispatched: N/s, N/min or N/h.
        #[arg(long)]
        rate: Option<String>,
        /// Its share against groups of weight 1.
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a group's limits.
    Clear { name: String },
}

fn put(body: &mut Value, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        body[key] = v.into();
    }
}

fn show(v: &Value, as_json: bool, rows: impl Fn(&Value) -> Vec<Vec<String>>, header: &[&str]) {
    if as_json { output::json(v) } else { output::table(header, &rows(v)) }
}

const SCHEDULE_HEADER: &[&str] = &["NAME", "CRON", "ZONE", "KIND", "OVERLAP", "CATCH-UP", "NEXT", "LAST JOB"];

fn schedule_row(s: &Value) -> Vec<String> {
    vec![
        text(&s["name"]),
        text(&s["cron"]),
        s["timezone"].as_str().unwrap_or("UTC").to_owned(),
        text(&s["job"]["kind"]),
        text(&s["overlap"]),
        text(&s["catch_up"]),
        text(&s["next_run_at"]),
        text(&s["last_job"]),
    ]
}

pub async fn schedules(c: &Client, action: Schedules, as_json: bool) -> Result<Exit> {
    let one = |v: &Value| vec![schedule_row(v)];
    match action {
        Schedules::List => {
            let v = c.get("/api/schedules").await?;
            let rows =
                |v: &Value| v["schedules"].as_array().map(|a| a.iter().map(schedule_row).collect()).unwrap_or_default();
            show(&v, as_json, rows, SCHEDULE_HEADER);
        }
        Schedules::Get { name } => {
            show(&c.get(&format!("/api/schedules/{name}")).await?, as_json, one, SCHEDULE_HEADER)
        }
        Schedules::Add { name, cron, kind, params, timezone, priority, group, overlap, catch_up } => {
            let params = match params {
                Some(p) => crate::read_params(&p)?,
                None => Value::Null,
            };
            let mut job = json!({"kind": kind, "params": params});
            put(&mut job, "priority", priority);
            put(&mut job, "group", group);
            let mut body = json!({"name": name, "cron": cron, "job": job});
            put(&mut body, "timezone", timezone);
            put(&mut body, "overlap", overlap);
            put(&mut body, "catch_up", catch_up);
            show(&c.post("/api/schedules", &body).await?, as_json, one, SCHEDULE_HEADER);
        }
        Schedules::Set { name, cron, timezone, overlap, catch_up } => {
            let mut body = json!({});
            put(&mut body, "cron", cron);
            put(&mut body, "timezone", timezone);
            put(&mut body, "overlap", overlap);
            put(&mut body, "catch_up", catch_up);
            let v = c.call(Method::PATCH, &format!("/api/schedules/{name}"), Some(&body)).await?;
            show(&v, as_json, one, SCHEDULE_HEADER);
        }
        Schedules::Delete { name } => {
            let v = c.call(Method::DELETE, &format!("/api/schedules/{name}"), None).await?;
            if as_json { output::json(&v) } else { println!("deleted schedule {name}") }
        }
    }
    Ok(Exit::Ok)
}

const GROUP_HEADER: &[&str] = &["GROUP", "JOBS", "QUEUED", "RUNNING", "MAX RUNNING", "RATE", "WEIGHT", "HELD"];

fn group_row(g: &Value) -> Vec<String> {
    vec![
        text(&g["name"]),
        text(&g["jobs"]),
        text(&g["queued"]),
        text(&g["running"]),
        text(&g["max_running"]),
        text(&g["rate"]),
        g["weight"].as_u64().unwrap_or(1).to_string(),
        if g["held"] == json!(true) { "yes".into() } else { "no".into() },
    ]
}

pub async fn groups(c: &Client, action: Groups, as_json: bool) -> Result<Exit> {
    let one = |v: &Value| vec![group_row(v)];
    match action {
        Groups::List => {
            let v = c.get("/api/groups").await?;
            let rows =
                |v: &Value| v["groups"].as_array().map(|a| a.iter().map(group_row).collect()).unwrap_or_default();
            show(&v, as_json, rows, GROUP_HEADER);
        }
        Groups::Get { name } => show(&c.get(&format!("/api/groups/{name}")).await?, as_json, one, GROUP_HEADER),
        Groups::Set { name, max_running, rate, weight } => {
            let mut body = json!({});
            put(&mut body, "max_running", max_running);
            put(&mut body, "rate", rate);
            put(&mut body, "weight", weight);
            let v = c.call(Method::PUT, &format!("/api/groups/{name}"), Some(&body)).await?;
            show(&v, as_json, one, GROUP_HEADER);
        }
        Groups::Clear { name } => {
            let v = c.call(Method::DELETE, &format!("/api/groups/{name}"), None).await?;
            if as_json { output::json(&v) } else { println!("cleared group {name}'s limits") }
        }
    }
    Ok(Exit::Ok)
}
