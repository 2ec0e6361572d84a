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

    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": "0", "method": method, "params": params});
        let resp = self.http.post(&self.url).json(&body).send().await.map_err(|e| format!("monerod: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("monerod answered {method} with HTTP {status}"));
        }
        let body = read_bounded(resp, limits::MAX_REPLY_BYTES).await.map_err(|e| format!("monerod: {method}: {e}"))?;
        let mut v: Value = serde_json::from_slice(&body).map_err(|e| format!("monerod: {method}: {e}"))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("error");
            return Err(format!("monerod: {method}: {msg}"));
        }
        Ok(v["result"].take())
    }

    async fn info(&self) -> Result<Info, String> {
        serde_json::from_value(self.call("get_info", json!({})).await?).map_err(|e| format!("monerod get_info: {e}"))
    }

    async fn template(&self, wallet: &str, extra_nonce: &str) -> Result<BlockTemplate, String> {
        let params = json!({"wallet_address": wallet, "extra_nonce": extra_nonce});
        serde_json::from_value(self.call("get_block_template", params).await?)
            .map_err(|e| format!("monerod get_block_template: {e}"))
    }

    /// Submits a block; Err carries the node's reason.
    pub async fn submit_block(&self, blob: &str) -> Result<(), String> {
        let result = self.call("submit_block", json!([blob])).await?;
        match result.get("status").and_then(Value::as_str) {
            Some("OK") => Ok(()),
            other => Err(format!("monerod refused the block: {}", other.unwrap_or("no status"))),
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
async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("the reply is larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("the reply is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn decode(field: &str, hex: &str) -> Result<Vec<u8>, String> {
    decode_hex(hex).map_err(|e| format!("monerod sent a bad {field}: {e}"))
}

/// Fetches one template per group in `groups`.
async fn fetch(
    pool: &Pool,
    rpc: &Rpc,
    wallet: &str,
    salt: u32,
    groups: std::ops::Range<u32>,
) -> Result<Vec<Template>, String> {
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let mut extra = salt.to_le_bytes().to_vec();
        extra.extend_from_slice(&group.to_le_bytes());
        let t = rpc.template(wallet, &faena_proto::jobs::encode_hex(&extra)).await?;
        let blob = decode("blockhashing_blob", &t.blockhashing_blob)?;
        if blob.len() < 43 {
            return Err("monerod sent a hashing blob too short to hold a nonce".into());
        }
        let key = decode("seed_hash", &t.seed_hash)?;
        if key.len() != 32 {
            return Err(format!("monerod sent a seed_hash of {} bytes, not 32", key.len()));
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
                pool.set_state(&id, SourceState::Error, Some(e));
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
                Err(e) => pool.set_state(&id, SourceState::Error, Some(e)),
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
