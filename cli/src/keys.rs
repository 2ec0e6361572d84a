//! `faena keys …`: keys for AI clients of the OpenAI endpoints
//! (`/api/keys`). A key is shown once, when it is made.

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, Exit, Result};
use crate::output::{self, text};

#[derive(Debug, clap::Subcommand)]
pub enum Keys {
    /// A new key (printed this once; the cluster keeps only its hash).
    Create {
        #[arg(long)]
        name: String,
        /// Prompt and completion tokens it may use a day (UTC).
        #[arg(long)]
        tokens_per_day: Option<u64>,
        /// Requests of this key answered at once (more wait in the queue).
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// The models it may use: provider/model or a provider, comma-separated.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
    },
    /// Every key, with what it used today.
    List,
    /// Refuse a key from now on.
    Revoke { name: String },
}

const HEADER: &[&str] = &["NAME", "KEY", "TOKENS/DAY", "AT ONCE", "MODELS", "TODAY", "REQUESTS", "REVOKED"];

fn row(k: &Value) -> Vec<String> {
    let today = &k["today"];
    let tokens = today["prompt_tokens"].as_u64().unwrap_or(0) + today["completion_tokens"].as_u64().unwrap_or(0);
    let models = k["models"].as_array().map(|m| m.iter().map(text).collect::<Vec<_>>().join(",")).unwrap_or_default();
    vec![
        text(&k["name"]),
        text(&k["shown"]),
        text(&k["tokens_per_day"]),
        text(&k["max_concurrent"]),
        if models.is_empty() { "any".into() } else { models },
        tokens.to_string(),
        today["requests"].as_u64().unwrap_or(0).to_string(),
        text(&k["revoked_at"]),
    ]
}

pub async fn keys(c: &Client, action: Keys, as_json: bool) -> Result<Exit> {
    match action {
        Keys::Create { name, tokens_per_day, max_concurrent, models } => {
            let mut body = json!({"name": name, "models": models});
            if let Some(n) = tokens_per_day {
                body["tokens_per_day"] = json!(n);
            }
            if let Some(n) = max_concurrent {
                body["max_concurrent"] = json!(n);
            }
            let v = c.post("/api/keys", &body).await?;
            if as_json {
                output::json(&v);
            } else {
                println!("{}", text(&v["key"]));
                eprintln!("key {name} made: the line above is shown this once; keep it secret");
            }
        }
        Keys::List => {
            let v = c.get("/api/keys").await?;
            if as_json {
                output::json(&v);
            } else {
                let rows: Vec<Vec<String>> =
                    v["keys"].as_array().map(|a| a.iter().map(row).collect()).unwrap_or_default();
                output::table(HEADER, &rows);
            }
        }
        Keys::Revoke { name } => {
            let v = c.call(Method::DELETE, &format!("/api/keys/{name}"), None).await?;
            if as_json { output::json(&v) } else { println!("revoked key {name}") }
        }
    }
    Ok(Exit::Ok)
}
