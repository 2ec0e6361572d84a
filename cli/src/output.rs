//! What the CLI prints for people; `--json` prints the API's JSON instead.

use std::io::Write;

use serde_json::Value;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Pretty JSON on stdout.
pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// One job, a field a line.
pub fn job(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}  {}  {}", s(&v["id"]), s(&v["kind"]), s(&v["state"]));
    let _ = writeln!(out, "  priority  {}", s(&v["priority"]));
    if let Some(p) = v["position"].as_u64() {
        let _ = writeln!(out, "  position  {p}");
    }
    if let Some(w) = v["waiting"].as_str() {
        let _ = writeln!(out, "  waiting   {w}");
    }
    if let Some(at) = v["run_at"].as_str() {
        let _ = writeln!(out, "  run at    {at}");
    }
    let o = &v["options"];
    for (label, key) in [("group", "group"), ("schedule", "schedule"), ("unique", "unique_key")] {
        if let Some(x) = o[key].as_str() {
            let _ = writeln!(out, "  {label:<9} {x}");
        }
    }
    if let Some(after) = o["after"].as_array().filter(|a| !a.is_empty()) {
        let ids: Vec<&str> = after.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "  after     {}", ids.join(", "));
    }
    if let Some(w) = v["worker"].as_str() {
        let _ = writeln!(out, "  worker    {w}");
    }
    let _ = writeln!(out, "  attempts  {}", v["attempts"].as_u64().unwrap_or(0));
    let _ = writeln!(out, "  created   {}", s(&v["created_at"]));
    if let Some(f) = v["finished_at"].as_str() {
        let _ = writeln!(out, "  finished  {f}");
    }
    for link in ["parent", "retry_of", "retried_as"] {
        if let Some(id) = v[link].as_str() {
            let _ = writeln!(out, "  {link:<9} {id}");
        }
    }
    if let Some(e) = v["error"].as_str() {
        let _ = writeln!(out, "  error     {e}");
    }
    if let Some(code) = v["error_code"].as_str() {
        let _ = writeln!(out, "  code      {code}");
    }
    if !v["result"].is_null() {
        let _ = writeln!(out, "  result    {}", v["result"]);
    }
}

/// Rows under a header, columns padded to their widest cell.
/// A table cell: a string as it is, null as "-", anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { (*c).to_owned() } else { format!("{c:<w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

pub fn job_rows(jobs: &[Value]) -> Vec<Vec<String>> {
    jobs.iter()
        .map(|j| {
            [&j["id"], &j["kind"], &j["state"], &j["priority"], &j["worker"], &j["created_at"]]
                .map(|v| s(v).to_owned())
                .to_vec()
        })
        .collect()
}

pub fn worker_rows(workers: &[Value]) -> Vec<Vec<String>> {
    workers
        .iter()
        .map(|w| {
            let kinds: Vec<&str> = w["kinds"].as_array().map(|k| k.iter().map(s).collect()).unwrap_or_default();
            let hashrate = w["hashrate"].as_f64().filter(|h| *h > 0.0).map(|h| format!("{h:.0} H/s"));
            vec![
                s(&w["id"]).to_owned(),
                s(&w["state"]).to_owned(),
                format!("{}/{}", w["running"].as_u64().unwrap_or(0), w["slots"].as_u64().unwrap_or(0)),
                kinds.join(","),
                hashrate.unwrap_or_else(|| "-".into()),
                s(&w["version"]).to_owned(),
                w["config"]["version"].as_u64().map_or_else(|| "-".to_owned(), |v| v.to_string()),
            ]
        })
        .collect()
}

/// One job event as a line for people.
pub fn event(name: &str, data: &Value) -> String {
    match name {
        "queued" => format!("queued (position {})", data["position"].as_u64().unwrap_or(0)),
        "running" => format!("running on {} (attempt {})", s(&data["worker"]), data["attempt"].as_u64().unwrap_or(0)),
        "progress" => format!("progress {}", data["data"]),
        "succeeded" => format!("succeeded {}", data["result"]),
        "failed" => format!("failed: {}", s(&data["error"])),
        "cancelled" => "cancelled".to_owned(),
        other => format!("{other} {data}"),
    }
}
