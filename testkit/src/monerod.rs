//! A real Monero node for tests: Debian's `monerod` in regtest, offline,
//! at a fixed difficulty, on free loopback ports, its data in the test's
//! directory; killed when dropped. Ready once its RPC answers `get_info`.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::{eventually, free_port};

/// A valid mainnet address (regtest takes mainnet addresses) for coinbases
/// nobody in the tests needs to spend.
pub const WALLET: &str =
    "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A";

/// One JSON-RPC call (monerod's and its wallet's dialect): its `result`.
async fn json_rpc(http: &reqwest::Client, url: &str, method: &str, params: Value) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": "0", "method": method, "params": params});
    let resp = http.post(url).json(&body).send().await.ok()?;
    let mut v: Value = resp.json().await.ok()?;
    Some(v["result"].take()).filter(|r| !r.is_null())
}

#[derive(Debug)]
pub struct Monerod {
    child: tokio::process::Child,
    pub url: String,
    http: reqwest::Client,
}

impl Monerod {
    pub async fn start(dir: &Path, difficulty: u64) -> Self {
        let data = dir.join("monerod");
        std::fs::create_dir_all(&data).expect("monerod dir");
        let (rpc, p2p) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("monerod.log")).expect("monerod log");
        let child = tokio::process::Command::new("monerod")
            .args(["--regtest", "--offline", "--no-igd", "--no-zmq", "--non-interactive", "--rpc-bind-ip", "127.0.0.1"])
            // A chain in `dir` already (a benchmark's, grown first) is kept.
            .arg("--keep-fakechain")
            .args(["--fixed-difficulty", &difficulty.to_string()])
            .args([
                "--rpc-bind-port",
                &rpc.to_string(),
                "--p2p-bind-ip",
                "127.0.0.1",
                "--p2p-bind-port",
                &p2p.to_string(),
            ])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("monerod (Debian's monero package) must be installed");
        let node = Self { child, url: format!("http://127.0.0.1:{rpc}"), http: crate::http() };
        eventually("monerod answers get_info", || async { node.try_call("get_info", json!({})).await }).await;
        node
    }

    async fn try_call(&self, method: &str, params: Value) -> Option<Value> {
        json_rpc(&self.http, &format!("{}/json_rpc", self.url), method, params).await
    }

    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params).await.unwrap_or_else(|| panic!("monerod {method} failed"))
    }

    pub async fn height(&self) -> u64 {
        self.call("get_info", json!({})).await["height"].as_u64().expect("height")
    }

    /// The main chain's block at `height`: its header (hash, nonce, …).
    pub async fn header(&self, height: u64) -> Value {
        self.call("get_block_header_by_height", json!({"height": height})).await["block_header"].take()
    }

    /// Stops the node as its operator would (`stop_daemon`: the chain is
    /// written out, where a kill may lose the newest blocks) and waits for
    /// it, so another node may open its chain.
    pub async fn stop(mut self) {
        let _ = self.http.post(format!("{}/stop_daemon", self.url)).send().await;
        if tokio::time::timeout(crate::WAIT, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Mines `n` blocks inside the node (a block found elsewhere).
    pub async fn generate(&self, n: u64) {
        self.call("generateblocks", json!({"amount_of_blocks": n, "wallet_address": WALLET})).await;
    }
}

/// A wallet of the node's (Debian's `monero-wallet-rpc`), to see which
/// blocks paid it: a coinbase shows in its incoming transfers as `block`.
#[derive(Debug)]
pub struct Wallet {
    _child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
    pub address: String,
}

impl Wallet {
    pub async fn create(dir: &Path, node: &Monerod) -> Self {
        let wallets = dir.join("wallets");
        std::fs::create_dir_all(&wallets).expect("wallet dir");
        let port = free_port();
        let log = std::fs::File::create(dir.join("wallet-rpc.log")).expect("wallet log");
        let daemon = node.url.trim_start_matches("http://").to_owned();
        let child = tokio::process::Command::new("monero-wallet-rpc")
            .args(["--daemon-address", &daemon, "--trusted-daemon", "--disable-rpc-login", "--non-interactive"])
            .args(["--rpc-bind-ip", "127.0.0.1", "--rpc-bind-port", &port.to_string()])
            .arg("--wallet-dir")
            .arg(&wallets)
            // Its own log goes to the working directory unless told otherwise.
            .arg("--log-file")
            .arg(dir.join("wallet-rpc-internal.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("monero-wallet-rpc (Debian's monero package) must be installed");
        let mut w = Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}/json_rpc"),
            http: crate::http(),
            address: String::new(),
        };
        let params = json!({"filename": "faena-test", "password": "", "language": "English"});
        eventually("monero-wallet-rpc creates a wallet", || async {
            w.try_call("create_wallet", params.clone()).await
        })
        .await;
        let addr = w.try_call("get_address", json!({"account_index": 0})).await.expect("address");
        w.address = addr["address"].as_str().expect("address").to_owned();
        w
    }

    async fn try_call(&self, method: &str, params: Value) -> Option<Value> {
        json_rpc(&self.http, &self.url, method, params).await
    }

    /// Heights of the blocks whose coinbase paid this wallet.
    pub async fn coinbase_heights(&self) -> Vec<u64> {
        self.try_call("refresh", json!({})).await.expect("refresh");
        let t = self.try_call("get_transfers", json!({"in": true})).await.expect("transfers");
        let ins = t["in"].as_array().cloned().unwrap_or_default();
        ins.iter().filter(|x| x["type"] == "block").filter_map(|x| x["height"].as_u64()).collect()
    }
}
