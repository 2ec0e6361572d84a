//! Solo mining from monerod: its JSON-RPC (`/json_rpc`) gives block
//! templates (`get_block_template`, one per group of 255 miners, each with
//! its own extra nonce so their blobs differ), tells of new blocks
//! (`get_info`'s top block, polled) and takes the blocks found
//! (`submit_block`). The template is also refreshed every
//! `template_refresh` (a minute), so new transactions get in.

use std::sync::Arc;
use std::time::Instant;

use faena_common::retry::Policy;
use faena_proto::jobs::decode_hex;
use faena_proto::mining::SourceState;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Pool, Template, limits};

/// What went wrong with monerod: a source shows it as its reason and asks
/// again (with backoff); a block's is its refusal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("monerod: {method}: {source}")]
    Unreachable {
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("monerod answered {method} with HTTP {status}")]
    Status { method: &'static str, status: reqwest::StatusCode },
    #[error("monerod: {method}: {source}")]
    Body {
        method: &'static str,
        #[source]
        source: BodyError,
    },
    #[error("monerod: {method}: {source}")]
    Json {
        method: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("monerod: {method}: {message}")]
    Rpc { method: &'static str, message: String },
    #[error("monerod sent a bad {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("monerod refused the block: {0}")]
    Refused(String),
}

/// A reply's body that could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the reply is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Read(#[from] reqwest::Error),
}

#[derive(Debug, Clone)]
pub struct Rpc {
    http: reqwest::Client,
    url: String,
}

#[derive(Debug, Deserialize)]
struct Info {
    height: u64,
    top_block_hash: String,
}

#[derive(Debug, Deserialize)]
struct BlockTemplate {
    blockhashing_blob: String,
    blocktemplate_blob: String,
    seed_hash: String,
    /// Known 64 blocks before the key changes; empty otherwise.
    #[serde(default)]
    next_seed_hash: String,
    difficulty: u64,
    height: u64,
}

impl Rpc {
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Self { http, url: format!("{}/json_rpc", base.trim_end_matches('/')) }
    }

    async fn call(&self, method: &'static str, params: Value) -> Result<Value, DaemonError> {
        let body = json!({"jsonrpc": "2.0", "id": "0", "method": method, "params": params});
        let resp = self.http.post(&self.url).json(&body).send().await;
        let resp = resp.map_err(|source| DaemonError::Unreachable { method, source })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DaemonError::Status { method, status });
        }
        let body = read_bounded(resp, limits::MAX_REPLY_BYTES).await;
        let body = body.map_err(|source| DaemonError::Body { method, source })?;
        let mut v: Value = serde_json::from_slice(&body).map_err(|source| DaemonError::Json { method, source })?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("error").to_owned();
            return Err(DaemonError::Rpc { method, message });
        }
        Ok(v["result"].take())
    }

    /// `method`'s result as `T`.
    async fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<T, DaemonError> {
        serde_json::from_value(self.call(method, params).await?).map_err(|source| DaemonError::Json { method, source })
    }

    async fn info(&self) -> Result<Info, DaemonError> {
        self.call_as("get_info", json!({})).await
    }

    async fn template(&self, wallet: &str, extra_nonce: &str) -> Result<BlockTemplate, DaemonError> {
        self.call_as("get_block_template", json!({"wallet_address": wallet, "extra_nonce": extra_nonce})).await
    }

    /// Submits a block; Err carries the node's reason.
    pub async fn submit_block(&self, blob: &str) -> Result<(), DaemonError> {
        let result = self.call("submit_block", json!([blob])).await?;
        match result.get("status").and_then(Value::as_str) {
            Some("OK") => Ok(()),
            other => Err(DaemonError::Refused(other.unwrap_or("no status").to_owned())),
        }
    }

    /// The id and nonce of the main chain's block at `height`.
    pub async fn block_at(&self, height: u64) -> Option<(String, u32)> {
        let r = self.call("get_block_header_by_height", json!({"height": height})).await.ok()?;
        let header = &r["block_header"];
        Some((header["hash"].as_str()?.to_owned(), u32::try_from(header["nonce"].as_u64()?).ok()?))
    }
}

/// A reply's body, refused as soon as it passes `max` bytes (a node that
/// streams without end cannot fill the master's memory).
async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn decode(field: &'static str, hex: &str) -> Result<Vec<u8>, DaemonError> {
    decode_hex(hex).map_err(|reason| DaemonError::Field { field, reason })
}

/// Fetches one template per group in `groups`.
async fn fetch(
    pool: &Pool,
    rpc: &Rpc,
    wallet: &str,
    salt: u32,
    groups: std::ops::Range<u32>,
) -> Result<Vec<Template>, DaemonError> {
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let mut extra = salt.to_le_bytes().to_vec();
        extra.extend_from_slice(&group.to_le_bytes());
        let t = rpc.template(wallet, &faena_proto::jobs::encode_hex(&extra)).await?;
        let blob = decode("blockhashing_blob", &t.blockhashing_blob)?;
        if blob.len() < 43 {
            let reason = "too short to hold a nonce".to_owned();
            return Err(DaemonError::Field { field: "blockhashing_blob", reason });
        }
        let key = decode("seed_hash", &t.seed_hash)?;
        if key.len() != 32 {
            return Err(DaemonError::Field { field: "seed_hash", reason: format!("{} bytes, not 32", key.len()) });
        }
        // A next key the node announces is prepared ahead (a malformed one
        // is only not prepared: the current work is good).
        let next_key = decode("next_seed_hash", &t.next_seed_hash).ok().filter(|k| k.len() == 32 && *k != key);
        out.push(Template {
            seq: pool.next_seq(),
            group,
            key,
            next_key,
            blob,
            height: Some(t.height),
            network_difficulty: Some(t.difficulty.max(1)),
            block: Some(decode("blocktemplate_blob", &t.blocktemplate_blob)?),
            upstream: None,
            fixed_byte: None,
        });
    }
    Ok(out)
}

/// Keeps a daemon source's work current until `cancel`.
pub(super) async fn run(
    pool: Pool,
    id: String,
    rpc: Rpc,
    wallet: String,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let salt: u32 = rand::random();
    let mut backoff = Policy::RECONNECT.start();
    let mut top: Option<String> = None;
    let mut groups = 0;
    let mut fetched = Instant::now();
    let (poll, refresh) = (pool.config().poll, pool.config().template_refresh);
    loop {
        let info = match rpc.info().await {
            Ok(info) => info,
            Err(e) => {
                pool.set_state(&id, SourceState::Error, Some(e.to_string()));
                top = None;
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.wait()) => continue,
                }
            }
        };
        backoff.reset();
        let wanted = pool.groups_wanted(&id);
        let moved = top.as_deref() != Some(&info.top_block_hash) || fetched.elapsed() > refresh;
        if moved || wanted > groups {
            // Only more miners: the blobs of the groups there are stay, the new ones are added.
            let (kept, from) = match moved {
                true => (Vec::new(), 0),
                false => (pool.current(&id), groups),
            };
            match fetch(&pool, &rpc, &wallet, salt, from..wanted.max(1)).await {
                Ok(fresh) => {
                    let templates: Vec<Template> = kept.into_iter().chain(fresh).collect();
                    if top.as_deref() != Some(&info.top_block_hash) {
                        tracing::info!(source = %id, height = info.height, "new block template");
                    }
                    groups = templates.len() as u32;
                    if moved {
                        pool.install(&id, templates).await;
                        fetched = Instant::now();
                    } else {
                        pool.add_groups(&id, templates);
                    }
                    top = Some(info.top_block_hash);
                }
                Err(e) => pool.set_state(&id, SourceState::Error, Some(e.to_string())),
            }
        } else {
            pool.ensure_job(&id).await;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
            () = wake.notified() => {}
        }
    }
}
