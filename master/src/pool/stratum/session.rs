//! One miner's connection: login, jobs, submits, keepalives, vardiff.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::jobs::{decode_hex, encode_hex};
use faena_proto::mine::{MineParams, Share, parse_target};
use faena_proto::stratum::{self, ALGO, EXTENSIONS, Incoming, Job, LoginParams, LoginResult, SubmitParams};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::pool::accounts::Participant;
use crate::pool::shares::Taken;
use crate::pool::{Pool, Seat, Template};

/// Jobs a miner may still submit to (older ones are "Invalid job id").
const JOBS_KEPT: usize = 32;
/// A write that takes longer means the miner does not read: it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Malformed lines tolerated before the connection is closed.
const GARBAGE_LIMIT: u32 = 10;

#[derive(Debug)]
struct MinerJob {
    id: String,
    seq: u64,
    difficulty: u64,
    params: MineParams,
    /// Nonces accepted on it (duplicates are refused).
    seen: HashSet<u32>,
}

/// What handling a line asks for.
#[derive(Debug, Default)]
struct Flow {
    lines: Vec<String>,
    close: bool,
}

impl Flow {
    fn line(line: String) -> Self {
        Self { lines: vec![line], close: false }
    }

    fn closing(line: String) -> Self {
        Self { lines: vec![line], close: true }
    }
}

#[derive(Debug)]
struct Session {
    pool: Pool,
    peer: SocketAddr,
    id: String,
    name: String,
    seat: Option<Seat>,
    difficulty: u64,
    jobs: VecDeque<MinerJob>,
    next_job: u64,
    tokens: f64,
    refilled: Instant,
    invalid: u32,
    garbage: u32,
    /// Verified shares since the last retarget: their difficulties.
    since_retarget: Vec<u64>,
    retargeted: Instant,
}

pub(super) async fn run(pool: Pool, stream: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
    let cfg = pool.config().clone();
    let (rd, mut wr) = stream.into_split();
    let mut lines = FramedRead::new(rd, LinesCodec::new_with_max_length(cfg.max_line));
    let now = Instant::now();
    let mut s = Session {
        pool,
        peer,
        id: uuid::Uuid::new_v4().simple().to_string(),
        name: String::new(),
        seat: None,
        difficulty: cfg.start_difficulty.max(1),
        jobs: VecDeque::new(),
        next_job: 0,
        tokens: cfg.burst,
        refilled: now,
        invalid: 0,
        garbage: 0,
        since_retarget: Vec::new(),
        retargeted: now,
    };
    let login_deadline = now + cfg.login_timeout;
    let mut retarget = tokio::time::interval(cfg.share_interval.min(Duration::from_secs(5)));
    loop {
        let wait = match s.seat {
            Some(_) => cfg.idle,
            None => login_deadline.saturating_duration_since(Instant::now()),
        };
        let flow = tokio::select! {
            () = cancel.cancelled() => break,
            line = tokio::time::timeout(wait, lines.next()) => match line {
                Err(_) => {
                    tracing::debug!(peer = %peer, "Stratum connection timed out");
                    break;
                }
                Ok(None) | Ok(Some(Err(LinesCodecError::Io(_)))) => break,
                Ok(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => {
                    Flow::closing(stratum::error(&Value::Null, &format!("Line too long (limit {} bytes)", cfg.max_line)))
                }
                Ok(Some(Ok(line))) => s.handle(&line).await,
            },
            changed = changed(&mut s.seat) => match (changed, s.fresh_job()) {
                (true, Some(job)) => Flow::line(stratum::job_notification(&job)),
                // Its group's blob is still on its way from the node, or it
                // has not changed (blobs were added for other groups).
                (true, None) if !s.slots_gone() => Flow::default(),
                // The source was removed, or now fixes the nonce byte itself
                // (no slots): the miner logs in again onto another.
                _ => break,
            },
            _ = retarget.tick() => s.retarget().map(|j| Flow::line(stratum::job_notification(&j))).unwrap_or_default(),
        };
        let mut out = String::new();
        for l in &flow.lines {
            out.push_str(l);
        }
        if !out.is_empty()
            && !matches!(tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(out.as_bytes())).await, Ok(Ok(())))
        {
            tracing::debug!(peer = %peer, "dropped a Stratum connection that does not read");
            break;
        }
        if flow.close {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// Resolves when the seat's source has new work (true) or is gone (false);
/// never without a seat.
async fn changed(seat: &mut Option<Seat>) -> bool {
    match seat {
        Some(seat) => seat.work.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

impl Session {
    fn spend_token(&mut self) -> bool {
        let cfg = self.pool.config();
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.saturating_duration_since(self.refilled).as_secs_f64() * cfg.rate).min(cfg.burst);
        self.refilled = now;
        self.tokens -= 1.0;
        self.tokens >= 0.0
    }

    async fn handle(&mut self, line: &str) -> Flow {
        let line = line.trim();
        if line.is_empty() {
            return Flow::default();
        }
        if !self.spend_token() {
            // Far past the limit: not a miner.
            let flood = self.tokens < -self.pool.config().burst;
            let reply = stratum::error(&Value::Null, "Too many requests; slow down");
            return Flow { lines: vec![reply], close: flood };
        }
        let req: Incoming = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => return self.garbage(&Value::Null, &format!("Malformed request: {e}")),
        };
        let id = req.id.clone();
        match (req.method.as_deref(), &self.seat) {
            (Some("login"), None) => self.login(&id, req.params).await,
            (Some("login"), Some(_)) => Flow::line(stratum::error(&id, "Already logged in")),
            (Some("submit" | "keepalived" | "getjob"), None) => {
                Flow::closing(stratum::error(&id, "Unauthenticated: log in first"))
            }
            (Some("keepalived"), Some(_)) => Flow::line(stratum::response(&id, &json!({"status": "KEEPALIVED"}))),
            (Some("getjob"), Some(_)) => match self.job() {
                Some(job) => Flow::line(stratum::response(&id, &job)),
                None => Flow::line(stratum::error(&id, "No job available")),
            },
            (Some("submit"), Some(_)) => self.submit(&id, req.params).await,
            (Some(other), _) => {
                let other = other.chars().take(32).collect::<String>();
                self.garbage(&id, &format!("Unsupported method {other:?}"))
            }
            (None, _) => self.garbage(&id, "Malformed request: no method"),
        }
    }

    fn garbage(&mut self, id: &Value, message: &str) -> Flow {
        self.garbage += 1;
        let reply = stratum::error(id, message);
        if self.garbage > GARBAGE_LIMIT {
            return Flow::closing(reply);
        }
        Flow::line(reply)
    }

    async fn login(&mut self, id: &Value, params: Value) -> Flow {
        if self.pool.is_banned(self.peer.ip()) {
            return Flow::closing(stratum::error(id, "IP Address currently banned"));
        }
        let p: LoginParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return self.garbage(id, &format!("Malformed login: {e}")),
        };
        if let Some(want) = &self.pool.config().password {
            let given = p.pass.as_deref().unwrap_or_default();
            if !want.constant_time_eq(given) {
                return Flow::closing(stratum::error(id, "Unauthenticated: wrong password"));
            }
        }
        let name = p.login.trim();
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Flow::closing(stratum::error(id, "Invalid login: 1 to 256 printable characters"));
        }
        if p.algo.as_ref().is_some_and(|a| !a.iter().any(|x| x == ALGO || x == "rx")) {
            return Flow::closing(stratum::error(id, "Unsupported algorithm: this pool mines rx/0"));
        }
        let mut seat = match self.pool.join() {
            Ok(seat) => seat,
            Err(e) => return Flow::closing(stratum::error(id, &e)),
        };
        // A new group's blob may still be on its way from the node.
        let deadline = Instant::now() + self.pool.config().login_timeout;
        while seat.work.borrow_and_update().as_ref().and_then(|w| w.group(seat.group)).is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if !matches!(tokio::time::timeout(left, seat.work.changed()).await, Ok(Ok(()))) {
                return Flow::closing(stratum::error(id, "No work available yet; try again shortly"));
            }
        }
        tracing::info!(peer = %self.peer, miner = %name, source = %seat.source, slot = seat.slot, group = seat.group, "Stratum miner logged in");
        self.name = name.to_owned();
        self.seat = Some(seat);
        match self.job() {
            Some(job) => {
                let result = LoginResult {
                    id: self.id.clone(),
                    job,
                    extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
                    status: "OK".into(),
                };
                Flow::line(stratum::response(id, &result))
            }
            None => Flow::closing(stratum::error(id, "No work available yet; try again shortly")),
        }
    }

    /// A job when the seat's template is new (more groups added to the same
    /// work change nothing for a miner already seated).
    fn fresh_job(&mut self) -> Option<Job> {
        let seat = self.seat.as_mut()?;
        let seq = seat.work.borrow().as_ref().and_then(|w| w.group(seat.group).map(|t| t.seq));
        if seq.is_some() && seq == self.jobs.front().map(|j| j.seq) {
            seat.work.borrow_and_update();
            return None;
        }
        self.job()
    }

    /// A job on the seat's current template at the miner's difficulty.
    fn job(&mut self) -> Option<Job> {
        let seat = self.seat.as_mut()?;
        let template: Arc<Template> = seat.work.borrow_and_update().as_ref()?.group(seat.group)?.clone();
        if !template.has_miner_slots() {
            return None;
        }
        let cfg = self.pool.config();
        let difficulty = self.difficulty.clamp(cfg.min_difficulty.max(1), template.upstream_difficulty().max(1));
        let target_hex = stratum::target_hex(difficulty);
        let target = parse_target(&target_hex).ok()?;
        self.next_job += 1;
        let id = format!("{:x}", self.next_job);
        let params = template.slot_params(seat.slot, target);
        let job = Job {
            blob: encode_hex(&template.blob_for(seat.slot)),
            job_id: id.clone(),
            target: target_hex,
            algo: Some(ALGO.into()),
            height: template.height,
            seed_hash: Some(encode_hex(&template.key)),
            id: Some(self.id.clone()),
        };
        self.jobs.push_front(MinerJob { id, seq: template.seq, difficulty, params, seen: HashSet::new() });
        self.jobs.truncate(JOBS_KEPT);
        Some(job)
    }

    /// The seat's source gives no slots any more (a pool that fixes the nonce byte).
    fn slots_gone(&self) -> bool {
        let Some(seat) = &self.seat else { return true };
        seat.work.borrow().as_ref().and_then(|w| w.main().map(|t| !t.has_miner_slots())).unwrap_or(false)
    }

    fn who(&self) -> Participant {
        Participant::stratum(&self.name)
    }

    /// Counts an invalid share; past the limit the miner's address is banned.
    fn reject(&mut self, id: &Value, message: &str) -> Flow {
        self.invalid += 1;
        if let Some(seat) = &self.seat {
            self.pool.invalid_shares(&seat.source, &self.who(), 1);
        }
        if self.invalid > self.pool.config().invalid_limit {
            self.pool.ban(self.peer.ip());
            tracing::warn!(peer = %self.peer, miner = %self.name, invalid = self.invalid, "Stratum miner banned: too many invalid shares");
            return Flow::closing(stratum::error(id, "IP Address currently banned: too many invalid shares"));
        }
        Flow::line(stratum::error(id, message))
    }

    async fn submit(&mut self, id: &Value, params: Value) -> Flow {
        let p: SubmitParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return self.garbage(id, &format!("Malformed submit: {e}")),
        };
        if p.id != self.id {
            return Flow::closing(stratum::error(id, "Unauthenticated: unknown session id"));
        }
        if p.algo.as_deref().is_some_and(|a| a != ALGO) {
            return self.reject(id, "Unsupported algorithm");
        }
        let Some(slot) = self.seat.as_ref().map(|s| s.slot) else { return Flow::default() };
        let Some(at) = self.jobs.iter().position(|j| j.id == p.job_id) else {
            return Flow::line(stratum::error(id, "Invalid job id"));
        };
        let Ok(nonce) = stratum::parse_nonce(&p.nonce) else { return self.reject(id, "Malformed nonce") };
        let Some(hash) = decode_hex(&p.result).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()) else {
            return self.reject(id, "Malformed result");
        };
        if (nonce >> 24) as u8 != slot {
            return self.reject(id, "Nonce outside your slice");
        }
        if self.jobs[at].seen.contains(&nonce) {
            return self.reject(id, "Duplicate share");
        }
        if !self.pool.take_budget() {
            self.difficulty = self.difficulty.saturating_mul(2);
            return Flow::line(stratum::error(id, "Server busy: over the verification budget; difficulty raised"));
        }
        let (params, seen) = (self.jobs[at].params.clone(), self.jobs[at].seen.clone());
        let share = Share { nonce, hash: p.result.to_ascii_lowercase() };
        let checked = self.pool.verifier().check(&params, &seen, vec![share]).await;
        self.pool.inner.metrics.shares_checked(checked.valid.len(), checked.invalid.len(), checked.unverified.len());
        if let Some((_, why)) = checked.unverified.first() {
            tracing::error!(miner = %self.name, reason = %why, "a Stratum share could not be verified; not counted");
            return Flow::line(stratum::error(id, "Could not verify the share; not counted, not held against you"));
        }
        if let Some((_, why)) = checked.invalid.first() {
            let message = if why.contains("target") {
                "Low difficulty share".to_owned()
            } else {
                format!("Invalid share: {why}")
            };
            return self.reject(id, &message);
        }
        let Some(job) = self.jobs.get_mut(at) else { return Flow::default() };
        job.seen.insert(nonce);
        let (seq, difficulty) = (job.seq, job.difficulty);
        let Some(source) = self.seat.as_ref().map(|s| s.source.clone()) else { return Flow::default() };
        match self.pool.take_share(&source, seq, &self.who(), difficulty, nonce, &hash) {
            Taken::Valid => {
                self.since_retarget.push(difficulty);
                Flow::line(stratum::response(id, &json!({"status": "OK"})))
            }
            Taken::Stale => Flow::line(stratum::response(id, &json!({"status": "OK"}))),
            Taken::Expired => Flow::line(stratum::error(id, "Block expired")),
        }
    }

    /// Vardiff: after a few shares or a few intervals, moves the difficulty
    /// towards one share per interval at the speed the shares show (at most
    /// 4× each way), and sends a job at the new difficulty.
    fn retarget(&mut self) -> Option<Job> {
        self.seat.as_ref()?;
        let interval = self.pool.share_interval().as_secs_f64();
        let since = self.retargeted.elapsed().as_secs_f64();
        let n = self.since_retarget.len();
        if n < 4 && since < interval * 4.0 {
            return None;
        }
        let work: u64 = self.since_retarget.drain(..).sum();
        self.retargeted = Instant::now();
        let old = self.difficulty as f64;
        let wanted = if n == 0 { old / 4.0 } else { work as f64 / since.max(0.001) * interval };
        let min = self.pool.config().min_difficulty.max(1) as f64;
        let new = wanted.clamp(old / 4.0, old * 4.0).max(min).round() as u64;
        if (new as f64 - old).abs() / old < 0.1 {
            return None;
        }
        tracing::debug!(miner = %self.name, from = self.difficulty, to = new, "vardiff");
        self.difficulty = new;
        self.job()
    }
}
