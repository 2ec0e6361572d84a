//! The master's REST API as the CLI calls it: where it is and the token
//! (flag, environment, config file), errors mapped to exit codes, and a
//! job's server-sent events.

use std::path::PathBuf;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// Exit codes a script can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The job failed (`--wait`, `watch`, `ask`).
    JobFailed = 1,
    /// Bad arguments or a request the master refused as invalid (400).
    Usage = 2,
    /// No such job (404).
    NotFound = 3,
    /// Refused as things stand: conflict (409), queue full (429), too large (413).
    Refused = 4,
    /// Missing or wrong API token (401, 403).
    Unauthorized = 5,
    /// The master could not be reached, or failed (5xx).
    Unreachable = 6,
    /// The job was cancelled.
    Cancelled = 7,
}

/// Why a command stopped, with the code it exits with.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Where the master is, and its token: flags and environment (through clap)
/// win over the config file, which wins over the defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The master's HTTP address.
    #[arg(long, global = true, env = "FAENA_URL")]
    pub url: Option<String>,
    /// The master's API token (FAENA_API_TOKEN on the master).
    #[arg(long, global = true, env = "FAENA_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API token.
    #[arg(long, global = true, env = "FAENA_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to trust for an https:// master (the stack's:
    /// .faena-tls/ca.pem); the system's roots when unset.
    #[arg(long, global = true, env = "FAENA_TLS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Config file (TOML: url, token or token_file, ca_file); default
    /// $XDG_CONFIG_HOME/faena/config.toml, else ~/.config/faena/config.toml.
    #[arg(long, global = true, env = "FAENA_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

const DEFAULT_URL: &str = "http://127.0.0.1:8888";

/// Whether the token was given as a flag (not from the environment or a file).
fn token_on_command_line(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.map(|a| a.to_string_lossy().into_owned()).any(|a| a == "--token" || a.starts_with("--token="))
}

impl Target {
    fn file(&self) -> Result<FileConfig> {
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => {
                let base = std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
                match base {
                    Some(b) => (b.join("faena/config.toml"), false),
                    None => return Ok(FileConfig::default()),
                }
            }
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
            Err(e) => return Err(Failure::new(Exit::Usage, format!("cannot read {}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| Failure::new(Exit::Usage, format!("{}: {e}", path.display())))
    }

    pub fn client(&self) -> Result<Client> {
        if token_on_command_line(std::env::args_os()) {
            eprintln!(
                "warning: --token shows in `ps` to everyone on this machine; use --token-file or FAENA_API_TOKEN instead"
            );
        }
        let file = self.file()?;
        let url = self.url.clone().or(file.url).unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token_file = self.token_file.clone().or(file.token_file);
        let token = match (self.token.clone(), token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        Failure::new(Exit::Usage, format!("cannot read the token file {}: {e}", path.display()))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => file.token,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::new(Exit::Usage, format!("the master's URL must be http(s)://…, not {url:?}")));
        }
        let mut builder = faena_common::tls::http_client().connect_timeout(Duration::from_secs(10));
        if let Some(path) = self.ca_file.clone().or(file.ca_file) {
            let usage = |e: String| Failure::new(Exit::Usage, format!("the CA file {}: {e}", path.display()));
            let pem = std::fs::read(&path).map_err(|e| usage(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| usage(e.to_string()))?;
            if certs.is_empty() {
                return Err(usage("no certificate in it".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| Failure::new(Exit::Usage, format!("HTTP client: {e}")))?;
        Ok(Client { http, base: url.trim_end_matches('/').to_owned(), token })
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// One request, asked again while the masters hand the lead over (a
    /// `503` with `Retry-After` that says so, for [`TAKEOVER_WAIT`] at
    /// most): a read always, a change only when it never reached a leader.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let mut req = self.request(method.clone(), path).timeout(Duration::from_secs(60));
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| self.unreachable(e))?;
            let status = resp.status();
            let retry = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok());
            let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(value);
            }
            match again_after(&method, status, retry, &value) {
                Some(wait) if tokio::time::Instant::now() + wait < deadline => tokio::time::sleep(wait).await,
                _ => return Err(refusal(status, &value)),
            }
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    fn unreachable(&self, e: reqwest::Error) -> Failure {
        Failure::new(Exit::Unreachable, format!("cannot reach the master at {}: {e}", self.base))
    }

    /// A job's events as `(name, data)`, from its current state to its end.
    pub async fn events(&self, id: &str) -> Result<impl Stream<Item = Result<(String, Value)>> + use<>> {
        let resp = self
            .request(Method::GET, &format!("/api/jobs/{id}/events"))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.json::<Value>().await.unwrap_or(Value::Null);
            return Err(refusal(status, &body));
        }
        let base = self.base.clone();
        Ok(resp.bytes_stream().eventsource().filter_map(move |ev| {
            let out = match ev {
                Ok(ev) if ev.event.is_empty() || ev.event == "message" => None,
                Ok(ev) => Some(Ok((ev.event, serde_json::from_str(&ev.data).unwrap_or(Value::Null)))),
                Err(e) => {
                    Some(Err(Failure::new(Exit::Unreachable, format!("the event stream from {base} broke: {e}"))))
                }
            };
            std::future::ready(out)
        }))
    }
}

/// How long the CLI waits for a new leader, asking again.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

/// When to ask again after an error answer: a `503` with `Retry-After`
/// while the masters hand the lead over. A read is asked again whatever
/// the cause; a change only when it reached no leader (`no_leader`,
/// `no_master`, `leader_unreachable`): one caught in flight
/// (`leader_changed`, `leader_lost`) may have been done, and is left to
/// the user.
fn again_after(method: &Method, status: StatusCode, retry_after: Option<u64>, body: &Value) -> Option<Duration> {
    let secs = retry_after.filter(|_| status == StatusCode::SERVICE_UNAVAILABLE)?;
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let undone = matches!(code, "no_leader" | "no_master" | "leader_unreachable");
    let takeover = undone || matches!(code, "leader_changed" | "leader_lost");
    (takeover && (*method == Method::GET || undone)).then(|| Duration::from_secs(secs.clamp(1, 5)))
}

/// The failure an error answer means, with the master's own message.
fn refusal(status: StatusCode, body: &Value) -> Failure {
    let message = body["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| status.to_string());
    let exit = match status.as_u16() {
        400 | 422 => Exit::Usage,
        401 | 403 => Exit::Unauthorized,
        404 => Exit::NotFound,
        409 | 413 | 429 => Exit::Refused,
        _ => Exit::Unreachable,
    };
    Failure::new(exit, message)
}

/// Whether an event ends a job's stream.
pub fn is_final(name: &str) -> bool {
    matches!(name, "succeeded" | "failed" | "cancelled")
}

/// The exit code a finished job's state stands for.
pub fn exit_for_state(state: &str) -> Exit {
    match state {
        "succeeded" => Exit::Ok,
        "cancelled" => Exit::Cancelled,
        _ => Exit::JobFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_are_asked_again_through_a_takeover_and_changes_only_when_undone() {
        let said = |code: &str| json!({"error": {"code": code, "message": "…"}});
        let busy = StatusCode::SERVICE_UNAVAILABLE;
        let one = Some(Duration::from_secs(1));
        assert_eq!(again_after(&Method::GET, busy, Some(1), &said("leader_changed")), one);
        assert_eq!(again_after(&Method::POST, busy, Some(1), &said("no_leader")), one);
        assert_eq!(again_after(&Method::POST, busy, Some(1), &said("no_master")), one);
        assert_eq!(again_after(&Method::POST, busy, Some(1), &said("leader_changed")), None, "may have been done");
        assert_eq!(again_after(&Method::POST, busy, Some(1), &said("leader_unreachable")), one, "never sent");
        assert_eq!(again_after(&Method::POST, busy, Some(1), &said("leader_lost")), None);
        assert_eq!(again_after(&Method::GET, busy, Some(1), &said("leader_lost")), one);
        assert_eq!(again_after(&Method::GET, busy, None, &said("no_leader")), None, "only when told to");
        assert_eq!(again_after(&Method::GET, busy, Some(1), &said("store_unavailable")), None, "not a takeover");
        assert_eq!(again_after(&Method::GET, StatusCode::TOO_MANY_REQUESTS, Some(1), &said("no_leader")), None);
        assert_eq!(again_after(&Method::GET, busy, Some(600), &said("no_leader")), Some(Duration::from_secs(5)));
    }
}
