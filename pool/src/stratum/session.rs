//! One miner's connection: the socket, and the pool calls a line leads to.
//! Every decision (rate, deadlines, pre-checks, vardiff) is the pure
//! [`Miner`](super::miner::Miner)'s.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::jobs::encode_hex;
use faena_proto::mine::{Share, parse_target};
use faena_proto::stratum::{self, ALGO, EXTENSIONS, Incoming, Job, LoginParams, LoginResult, SubmitParams};
use faena_randomx::mine::meets;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use super::miner::{Admit, Miner, Rules, check_login};
use crate::accounts::Participant;
use crate::shares::Taken;
use crate::{Pool, Seat, Template};
use faena_proto::stratum::FORWARDED_PREFACE;
use faena_verify::Rejection;

/// A write that takes longer means the miner does not read: it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The miner's address: the connection's peer, or the one a forwarder
    /// signed in its preface.
    peer: SocketAddr,
    /// The address its connection is counted under; none once a forwarded
    /// miner's own address was refused.
    counted: Option<IpAddr>,
    /// It sent a line other than a preface: prefaces come first or not at all.
    spoke: bool,
    id: String,
    name: String,
    seat: Option<Seat>,
    miner: Miner,
}

/// Serves one miner until it leaves or `cancel`; returns the address its
/// connection is still counted under.
pub(super) async fn run(pool: Pool, stream: TcpStream, peer: SocketAddr, cancel: CancellationToken) -> Option<IpAddr> {
    let cfg = pool.config().clone();
    let (rd, mut wr) = stream.into_split();
    let mut lines = FramedRead::new(rd, LinesCodec::new_with_max_length(cfg.max_line));
    let mut s = Session {
        pool,
        peer,
        counted: Some(peer.ip()),
        spoke: false,
        id: uuid::Uuid::new_v4().simple().to_string(),
        name: String::new(),
        seat: None,
        miner: Miner::new(Rules::from(&cfg), cfg.start_difficulty, Instant::now()),
    };
    let mut retarget = tokio::time::interval(cfg.share_interval.min(Duration::from_secs(5)));
    loop {
        let seat_lost = s.seat.as_ref().map(|seat| seat.lost.clone());
        let flow = tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(s.miner.deadline().into()) => {
                tracing::debug!(peer = %peer, "Stratum connection timed out");
                break;
            }
            line = lines.next() => match line {
                None | Some(Err(LinesCodecError::Io(_))) => break,
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    Flow::closing(stratum::error(&Value::Null, &format!("Line too long (limit {} bytes)", cfg.max_line)))
                }
                Some(Ok(line)) => s.handle(&line).await,
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
            // Its seat is another miner's now: it logs in again, anew.
            () = lost(seat_lost.as_ref()) => break,
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
    s.counted
}

/// Resolves when the seat's source has new work (true) or is gone (false);
/// never without a seat.
async fn changed(seat: &mut Option<Seat>) -> bool {
    match seat {
        Some(seat) => seat.work.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Resolves when the seat was given to another miner; never without a seat.
async fn lost(seat: Option<&CancellationToken>) {
    match seat {
        Some(lost) => lost.cancelled().await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn handle(&mut self, line: &str) -> Flow {
        let line = line.trim();
        if line.is_empty() {
            return Flow::default();
        }
        match self.miner.admit(Instant::now()) {
            Admit::Go => {}
            admit => {
                let reply = stratum::error(&Value::Null, "Too many requests; slow down");
                return Flow { lines: vec![reply], close: admit == Admit::Cut };
            }
        }
        if let Some(signed) = line.strip_prefix(FORWARDED_PREFACE) {
            return self.forwarded(signed);
        }
        self.spoke = true;
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

    /// A forwarder (a standby, the edge) names the miner it passes on: from
    /// now on the connection is counted under that address, as if the miner
    /// had come straight here. Several forwarders in a row each add one;
    /// the last names the miner. Believed only with the cluster's signature
    /// and before anything else was said.
    fn forwarded(&mut self, signed: &str) -> Flow {
        let token = self.pool.config().forwarders.clone();
        let client = token.as_deref().and_then(|t| faena_common::signing::vouched(t, signed.trim()));
        let Some(client) = client.filter(|_| !self.spoke) else {
            return Flow::closing(stratum::error(
                &Value::Null,
                "Unauthenticated: a forwarded connection's preface is not this cluster's",
            ));
        };
        if let Some(counted) = self.counted.take() {
            self.pool.disconnect(counted);
        }
        if let Err(refused) = self.pool.connect(client) {
            self.pool.inner.metrics.stratum_refused(refused.reason());
            return Flow::closing(stratum::error(&Value::Null, &refused.to_string()));
        }
        self.counted = Some(client);
        self.peer = SocketAddr::new(client, 0);
        Flow::default()
    }

    fn garbage(&mut self, id: &Value, message: &str) -> Flow {
        let reply = stratum::error(id, message);
        if self.miner.garbage() {
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
        let name = match check_login(&p, self.pool.config().password.as_deref()) {
            Ok(name) => name,
            Err(refused) => return Flow::closing(stratum::error(id, &refused.to_string())),
        };
        let mut seat = match self.pool.join().await {
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
        self.miner.logged_in(Instant::now());
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
        if seq.is_some() && seq == self.miner.current_seq() {
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
        let difficulty = self.miner.difficulty.clamp(cfg.min_difficulty.max(1), template.upstream_difficulty().max(1));
        let target_hex = stratum::target_hex(difficulty);
        let target = parse_target(&target_hex).ok()?;
        let params = template.slot_params(seat.slot, target);
        let job_id = self.miner.push_job(template.seq, difficulty, template.upstream_target(), params);
        Some(Job {
            blob: encode_hex(&template.blob_for(seat.slot)),
            job_id,
            target: target_hex,
            algo: Some(ALGO.into()),
            height: template.height,
            seed_hash: Some(encode_hex(&template.key)),
            id: Some(self.id.clone()),
        })
    }

    /// The seat's source gives no slots any more (a pool that fixes the nonce byte).
    fn slots_gone(&self) -> bool {
        let Some(seat) = &self.seat else { return true };
        seat.work.borrow().as_ref().and_then(|w| w.main().map(|t| !t.has_miner_slots())).unwrap_or(false)
    }

    fn who(&self) -> Participant {
        Participant::stratum(&self.name)
    }

    /// Counts an invalid share: against this connection, its address, and
    /// the miner's record once the connection has shown real work. Past the
    /// connection's limit, or when the address's shares are mostly junk, the
    /// address is banned.
    fn reject(&mut self, id: &Value, message: &str) -> Flow {
        let over = self.miner.invalid();
        if let Some(seat) = &self.seat {
            self.pool.invalid_shares(&seat.source, self.miner.is_proven().then(|| self.who()).as_ref(), 1);
        }
        let ip = self.peer.ip();
        if self.pool.share_verdict(ip, false) || over {
            if over {
                self.pool.ban(ip);
            }
            self.pool.inner.metrics.stratum_refused("ban");
            tracing::warn!(peer = %self.peer, miner = %self.name, "Stratum miner banned: too many invalid shares");
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
        let candidate = match self.miner.precheck(&p.job_id, &p.nonce, &p.result, slot) {
            Ok(c) => c,
            Err(e) if e.is_invalid_share() => return self.reject(id, &e.to_string()),
            Err(e) => return Flow::line(stratum::error(id, &e.to_string())),
        };
        if !self.pool.take_budget(self.peer.ip(), self.miner.is_proven()) {
            self.miner.over_budget();
            return Flow::line(stratum::error(id, "Server busy: over the verification budget; difficulty raised"));
        }
        let Some(job) = self.miner.job(candidate.at) else { return Flow::default() };
        let (params, seen, seq, difficulty) = (job.params.clone(), job.seen.clone(), job.seq, job.difficulty);
        let share = Share { nonce: candidate.nonce, hash: p.result.to_ascii_lowercase() };
        // A share that claims to be a block is checked first — from a miner
        // that has shown real work (a junk hash of zeros claims one too).
        let checked = match self.miner.is_proven() && meets(&candidate.hash, job.upstream) {
            true => self.pool.verifier().check_urgent(&params, &seen, vec![share]).await,
            false => self.pool.verifier().check(&params, &seen, vec![share]).await,
        };
        self.pool.inner.metrics.shares_checked(checked.valid.len(), checked.invalid.len(), checked.unverified.len());
        if let Some((_, why)) = checked.unverified.first() {
            tracing::error!(miner = %self.name, reason = %why, "a Stratum share could not be verified; not counted");
            return Flow::line(stratum::error(id, "Could not verify the share; not counted, not held against you"));
        }
        if let Some((_, why)) = checked.invalid.first() {
            let message = match why {
                Rejection::AboveTarget => "Low difficulty share".to_owned(),
                why => format!("Invalid share: {why}"),
            };
            return self.reject(id, &message);
        }
        let Some(source) = self.seat.as_ref().map(|s| s.source.clone()) else { return Flow::default() };
        let fresh = match self.pool.take_share(&source, seq, &self.who(), difficulty, candidate.nonce, &candidate.hash)
        {
            Taken::Valid => true,
            Taken::Stale => false,
            Taken::Expired => return Flow::line(stratum::error(id, "Block expired")),
        };
        self.pool.share_verdict(self.peer.ip(), true);
        self.miner.accepted(&candidate, fresh);
        // Said accepted once it is counted in the store.
        if !self.pool.saved().await {
            let busy = "Server busy: the share is verified, and counted once the store answers again";
            return Flow::line(stratum::error(id, busy));
        }
        Flow::line(stratum::response(id, &json!({"status": "OK"})))
    }

    /// Vardiff (the miner's rule), and a job at the new difficulty.
    fn retarget(&mut self) -> Option<Job> {
        let new = self.miner.retarget(self.pool.share_interval(), Instant::now())?;
        tracing::debug!(miner = %self.name, to = new, "vardiff");
        self.job()
    }
}
