//! Mining behind a pool: a Stratum client (XMRig's dialect) that logs in,
//! takes job notifications, keeps the connection alive, sends the shares the
//! master verified and that meet the pool's target, and records the pool's
//! verdict. On a lost connection it reconnects with backoff, moving to the
//! next URL of its list (failover). TLS (`stratum+ssl://`) checks the pool's
//! certificate against the system's roots.
//!
//! A pool that fixes the top nonce byte (its `nicehash` extension, or
//! non-zero nonce bytes in the blob, as xmrig-proxy does) leaves 2^24
//! nonces per job: the Faena workers split those, and the byte is never
//! touched.

use std::collections::HashMap;
use std::time::Duration;

use faena_common::retry::Policy;
use faena_proto::jobs::{decode_hex, encode_hex};
use faena_proto::mine::parse_target;
use faena_proto::mining::SourceState;
use faena_proto::secret::Secret;
use faena_proto::stratum::{self, ALGO, Incoming, Job, LoginParams, LoginResult, NICEHASH_BYTE, SubmitParams};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use super::{Pool, Template, template::Upstream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
const KEEPALIVE: Duration = Duration::from_secs(60);
/// A pool silent for this long (no job, no answer to a keepalive) is given up on.
const SILENT: Duration = Duration::from_secs(180);
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("stratum+tcp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("stratum+ssl://").or_else(|| url.strip_prefix("stratum+tls://")) {
            (true, r)
        } else {
            return Err(format!("a pool url is stratum+tcp://host:port or stratum+ssl://host:port (got {url:?})"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("{url:?} has no port"))?;
        let port = port.parse().map_err(|_| format!("{url:?} has a bad port"))?;
        if host.is_empty() || host.len() > 253 {
            return Err(format!("{url:?} has no host"));
        }
        Ok(Self { host: host.trim_matches(['[', ']']).to_owned(), port, tls })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "stratum+ssl" } else { "stratum+tcp" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub pass: Secret,
}

/// A verified share for the pool.
#[derive(Debug, Clone)]
pub struct Submit {
    pub job_id: String,
    pub nonce: u32,
    pub hash: [u8; 32],
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

async fn connect(ep: &Endpoint) -> Result<Box<dyn Conn>, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ep.host.as_str(), ep.port)))
        .await
        .map_err(|_| format!("{ep}: connect timed out"))?
        .map_err(|e| format!("{ep}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if !ep.tls {
        return Ok(Box::new(tcp));
    }
    // A pool's certificate is checked against the system's roots
    // (SSL_CERT_FILE for a private CA), as every TLS client of Faena's.
    let config = faena_common::tls::TlsArgs::default().client_config().map_err(|e| format!("{ep}: {e}"))?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(ep.host.clone())
        .map_err(|e| format!("{ep}: bad TLS name: {e}"))?;
    let tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("{ep}: TLS: {e}"))?;
    Ok(Box::new(tls))
}

/// Shares sent upstream awaiting the pool's verdict, at most.
const MAX_PENDING: usize = 4096;

/// A pool's job as a template; the nonce byte it fixed, if it did.
fn template(pool: &Pool, job: &Job, nicehash: bool) -> Result<Template, String> {
    let blob = decode_hex(&job.blob).map_err(|e| format!("the pool sent a bad blob: {e}"))?;
    if blob.len() <= NICEHASH_BYTE {
        return Err("the pool sent a blob too short to hold a nonce".into());
    }
    if job.algo.as_deref().is_some_and(|a| a != ALGO && a != "rx") {
        return Err(format!("the pool asks for {:?}; Faena mines rx/0", job.algo));
    }
    let seed = job.seed_hash.as_deref().ok_or("the pool's job has no seed_hash")?;
    let key = decode_hex(seed).map_err(|e| format!("the pool sent a bad seed_hash: {e}"))?;
    if key.len() != 32 {
        return Err(format!("the pool sent a seed_hash of {} bytes, not 32", key.len()));
    }
    let target = parse_target(&job.target).map_err(|e| format!("the pool sent a bad target: {e}"))?;
    let fixed = nicehash || blob[39..43].iter().any(|b| *b != 0);
    Ok(Template {
        seq: pool.next_seq(),
        group: 0,
        key,
        // Stratum jobs do not announce the next seed.
        next_key: None,
        fixed_byte: fixed.then_some(blob[NICEHASH_BYTE]),
        blob,
        height: job.height,
        network_difficulty: None,
        block: None,
        upstream: Some(Upstream { job_id: job.job_id.clone(), target }),
    })
}

/// Mines behind the pool until `cancel`, failing over along `endpoints`.
pub(super) async fn run(
    pool: Pool,
    id: String,
    endpoints: Vec<Endpoint>,
    login: Login,
    mut shares: mpsc::Receiver<Submit>,
    cancel: CancellationToken,
) {
    let mut backoff = Policy::RECONNECT.start();
    let mut at = 0;
    loop {
        let Some(ep) = endpoints.get(at % endpoints.len().max(1)) else { return };
        pool.set_state(&id, SourceState::Connecting, None);
        match session(&pool, &id, ep, &login, &mut shares, &cancel, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(source = %id, pool = %ep, error = %e, "pool connection lost; failing over");
                pool.set_state(&id, SourceState::Error, Some(e));
                at += 1;
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff.wait()) => {}
        }
    }
}

async fn session(
    pool: &Pool,
    id: &str,
    ep: &Endpoint,
    login: &Login,
    shares: &mut mpsc::Receiver<Submit>,
    cancel: &CancellationToken,
    backoff: &mut faena_common::retry::Backoff,
) -> Result<(), String> {
    let conn = connect(ep).await?;
    let (rd, mut wr) = tokio::io::split(conn);
    let mut lines = FramedRead::new(rd, LinesCodec::new_with_max_length(MAX_LINE));
    let params = LoginParams {
        login: login.user.clone(),
        pass: Some(login.pass.expose().to_owned()),
        agent: Some(concat!("faena/", env!("CARGO_PKG_VERSION")).into()),
        algo: Some(vec![ALGO.into()]),
        rigid: None,
    };
    wr.write_all(stratum::request(1, "login", &params).as_bytes()).await.map_err(|e| format!("{ep}: {e}"))?;
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, lines.next())
        .await
        .map_err(|_| format!("{ep}: no answer to login"))?
        .ok_or_else(|| format!("{ep}: closed at login"))?
        .map_err(|e| format!("{ep}: {e}"))?;
    let answer: Incoming = serde_json::from_str(&answer).map_err(|e| format!("{ep}: bad login answer: {e}"))?;
    if let Some(err) = answer.error {
        return Err(format!("{ep}: login refused: {}", err.message));
    }
    let result: LoginResult =
        serde_json::from_value(answer.result).map_err(|e| format!("{ep}: bad login answer: {e}"))?;
    let nicehash = result.extensions.iter().any(|e| e == "nicehash");
    let session = result.id.clone();
    pool.install(id, vec![template(pool, &result.job, nicehash)?]).await;
    tracing::info!(source = %id, pool = %ep, "logged in to the pool");
    backoff.reset();
    let mut seq = 1u64;
    let mut pending: HashMap<u64, ()> = HashMap::new();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    loop {
        let out = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            line = tokio::time::timeout(SILENT, lines.next()) => {
                let line = line.map_err(|_| format!("{ep}: silent for {} s", SILENT.as_secs()))?
                    .ok_or_else(|| format!("{ep}: closed the connection"))?
                    .map_err(|e| format!("{ep}: {e}"))?;
                handle(pool, id, &line, nicehash, &mut pending).await;
                None
            }
            share = shares.recv() => match share {
                None => return Ok(()),
                Some(s) => {
                    seq += 1;
                    // A pool that never answers cannot grow this without end.
                    if pending.len() >= MAX_PENDING {
                        pending.clear();
                    }
                    pending.insert(seq, ());
                    let p = SubmitParams {
                        id: session.clone(),
                        job_id: s.job_id,
                        nonce: stratum::nonce_hex(s.nonce),
                        result: encode_hex(&s.hash),
                        algo: Some(ALGO.into()),
                    };
                    Some(stratum::request(seq, "submit", &p))
                }
            },
            _ = keepalive.tick() => {
                seq += 1;
                Some(stratum::request(seq, "keepalived", &serde_json::json!({"id": session})))
            }
        };
        if let Some(line) = out {
            tokio::time::timeout(RESPONSE_TIMEOUT, wr.write_all(line.as_bytes()))
                .await
                .map_err(|_| format!("{ep}: write timed out"))?
                .map_err(|e| format!("{ep}: {e}"))?;
        }
    }
}

async fn handle(pool: &Pool, id: &str, line: &str, nicehash: bool, pending: &mut HashMap<u64, ()>) {
    let msg: Incoming = match serde_json::from_str(line) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(source = %id, error = %e, "the pool sent a malformed line; ignored");
            return;
        }
    };
    if msg.method.as_deref() == Some("job") {
        match serde_json::from_value::<Job>(msg.params)
            .map_err(|e| e.to_string())
            .and_then(|j| template(pool, &j, nicehash))
        {
            Ok(t) => pool.install(id, vec![t]).await,
            Err(e) => tracing::warn!(source = %id, error = %e, "the pool sent a job Faena cannot mine; ignored"),
        }
        return;
    }
    let Some(n) = msg.id.as_u64() else { return };
    if pending.remove(&n).is_none() {
        return;
    }
    match msg.error {
        None => pool.upstream_verdict(id, msg.result.get("status").and_then(Value::as_str) == Some("OK")),
        Some(e) => {
            tracing::warn!(source = %id, reason = %e.message, "the pool rejected a share");
            pool.upstream_verdict(id, false);
        }
    }
}
