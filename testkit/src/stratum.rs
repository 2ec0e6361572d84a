//! A Stratum miner written for the tests, speaking XMRig's protocol
//! exactly (login with its fields, `job` notifications, `submit`,
//! `keepalived`), and hashing with RandomX (light mode) to find real shares.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use faena_proto::jobs::{decode_hex, encode_hex};
use faena_proto::mine::parse_target;
use faena_proto::stratum::{self, Incoming, Job, LoginResult};
use faena_randomx::mine::meets;
use faena_randomx::{Flags, Material, Mode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::WAIT;

#[derive(Debug)]
pub struct Miner {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    wr: OwnedWriteHalf,
    next_id: u64,
    /// Job notifications not taken yet.
    pub jobs: VecDeque<Job>,
    pub session: String,
    pub job: Option<Job>,
    pub extensions: Vec<String>,
}

/// A share found on a job: nonce and hash as XMRig submits them.
#[derive(Debug, Clone)]
pub struct Found {
    pub job_id: String,
    pub nonce: u32,
    pub hash: [u8; 32],
}

impl Miner {
    pub async fn connect(addr: &str) -> Self {
        Self::over(TcpStream::connect(addr).await.expect("connect to the Stratum server"))
    }

    /// Connects from `local` (another loopback address: 127.0.0.2, …), as a
    /// miner on another machine would.
    pub async fn connect_from(addr: &str, local: std::net::IpAddr) -> Self {
        let to = addr.parse().expect("a socket address");
        Self::over(crate::hostile::connect_from(to, local).await.expect("connect to the Stratum server"))
    }

    fn over(tcp: TcpStream) -> Self {
        let (rd, wr) = tcp.into_split();
        Self {
            lines: BufReader::new(rd).lines(),
            wr,
            next_id: 1,
            jobs: VecDeque::new(),
            session: String::new(),
            job: None,
            extensions: vec![],
        }
    }

    pub async fn send_raw(&mut self, line: &str) {
        self.wr.write_all(line.as_bytes()).await.expect("write");
    }

    /// The next line from the server; None when it closed the connection.
    pub async fn read(&mut self) -> Option<Incoming> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line()).await.expect("the server answered in time");
        let line = line.ok().flatten()?;
        Some(serde_json::from_str(&line).expect("the server sends JSON lines"))
    }

    /// Sends a call and returns its answer (job notifications on the way are queued).
    pub async fn call(&mut self, method: &str, params: Value) -> Option<Incoming> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(&stratum::request(id, method, &params)).await;
        self.answer(id).await
    }

    /// The answer to call `id`.
    pub async fn answer(&mut self, id: u64) -> Option<Incoming> {
        loop {
            let msg = self.read().await?;
            if msg.method.as_deref() == Some("job") {
                self.jobs.push_back(serde_json::from_value(msg.params).expect("a job"));
                continue;
            }
            if msg.id.as_u64() == Some(id) || msg.id.is_null() {
                return Some(msg);
            }
        }
    }

    /// Logs in as XMRig 6 does; the answer's error, if any.
    pub async fn login(&mut self, user: &str, pass: &str) -> Result<(), String> {
        let params = json!({"login": user, "pass": pass, "agent": "XMRig/6.26.0 (Linux x86_64) libuv/1.44.2 gcc/12.2.0",
            "algo": ["rx/0", "rx/wow", "rx/arq", "rx/graft", "rx/sfx", "rx/yada"]});
        let msg = self.call("login", params).await.ok_or("closed")?;
        if let Some(e) = msg.error {
            return Err(e.message);
        }
        let r: LoginResult = serde_json::from_value(msg.result).map_err(|e| e.to_string())?;
        self.session = r.id;
        self.extensions = r.extensions;
        self.job = Some(r.job);
        Ok(())
    }

    /// Waits for the next job notification and makes it current.
    pub async fn next_job(&mut self) -> Job {
        loop {
            if let Some(j) = self.jobs.pop_front() {
                self.job = Some(j.clone());
                return j;
            }
            let msg = self.read().await.expect("connection open");
            if msg.method.as_deref() == Some("job") {
                self.jobs.push_back(serde_json::from_value(msg.params).expect("a job"));
            }
        }
    }

    /// Submits; Ok(status) or Err(message).
    pub async fn submit(&mut self, job_id: &str, nonce: u32, hash: &[u8; 32]) -> Result<String, String> {
        let params = json!({"id": self.session, "job_id": job_id, "nonce": stratum::nonce_hex(nonce),
            "result": encode_hex(hash), "algo": "rx/0"});
        let msg = self.call("submit", params).await.ok_or("closed")?;
        match msg.error {
            Some(e) => Err(e.message),
            None => Ok(msg.result["status"].as_str().unwrap_or_default().to_owned()),
        }
    }

    pub async fn keepalive(&mut self) -> Option<Incoming> {
        let session = self.session.clone();
        self.call("keepalived", json!({"id": session})).await
    }
}

/// Hashes `job`'s nonces from its blob's (XMRig's nicehash mode keeps the
/// top byte) until `n` meet its target, as a miner would.
pub fn mine(job: &Job, n: usize) -> Vec<Found> {
    let blob = decode_hex(&job.blob).expect("blob");
    let key = decode_hex(job.seed_hash.as_deref().expect("seed_hash")).expect("seed");
    let target = parse_target(&job.target).expect("target");
    let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &key, 1).expect("material"));
    let mut vm = material.vm().expect("vm");
    let top = u32::from(blob[stratum::NICEHASH_BYTE]) << 24;
    let mut input = blob.clone();
    let mut out = Vec::new();
    for low in 0..(1u32 << 24) {
        let nonce = top | low;
        input[39..43].copy_from_slice(&nonce.to_le_bytes());
        let hash = vm.hash(&input);
        if meets(&hash, target) {
            out.push(Found { job_id: job.job_id.clone(), nonce, hash });
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// The RandomX hashes of `blob` (hex) with each of `nonces` at byte 39,
/// under `key` (hex), off the async runtime: what a worker computes.
pub async fn hashes_at(blob: &str, key: &str, nonces: &[u32]) -> Vec<[u8; 32]> {
    let (mut input, key, nonces) = (decode_hex(blob).expect("blob"), decode_hex(key).expect("key"), nonces.to_vec());
    let work = move || {
        let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &key, 1).expect("material"));
        let mut vm = material.vm().expect("vm");
        let mut hash = |nonce: u32| {
            input[39..43].copy_from_slice(&nonce.to_le_bytes());
            vm.hash(&input)
        };
        nonces.into_iter().map(&mut hash).collect()
    };
    tokio::task::spawn_blocking(work).await.expect("hashing thread")
}

/// [`mine`] off the async runtime.
pub async fn mine_async(job: &Job, n: usize) -> Vec<Found> {
    let job = job.clone();
    tokio::time::timeout(Duration::from_secs(600), tokio::task::spawn_blocking(move || mine(&job, n)))
        .await
        .expect("mined in time")
        .expect("mining thread")
}
