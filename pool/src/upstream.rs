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

/// A pool url Faena cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("a pool url is stratum+tcp://host:port or stratum+ssl://host:port (got {0:?})")]
    Scheme(String),
    #[error("{0:?} has no port")]
    NoPort(String),
    #[error("{0:?} has a bad port")]
    BadPort(String),
    #[error("{0:?} has no host")]
    NoHost(String),
}

/// Why a session with the pool ended (the source fails over to the next
/// url and shows this as its reason).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}: connect timed out")]
    ConnectTimeout(Endpoint),
    #[error("{0}: {1}")]
    Io(Endpoint, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Tls(Endpoint, #[source] faena_common::tls::TlsError),
    #[error("{0}: TLS: {1}")]
    Handshake(Endpoint, #[source] std::io::Error),
    #[error("{0}: bad TLS name: {1}")]
    TlsName(Endpoint, #[source] tokio_rustls::rustls::pki_types::InvalidDnsNameError),
    #[error("{0}: {1}")]
    Lines(Endpoint, #[source] tokio_util::codec::LinesCodecError),
    #[error("{0}: no answer to login")]
    NoLoginAnswer(Endpoint),
    #[error("{0}: closed at login")]
    ClosedAtLogin(Endpoint),
    #[error("{0}: bad login answer: {1}")]
    BadLoginAnswer(Endpoint, #[source] serde_json::Error),
    #[error("{0}: login refused: {1}")]
    LoginRefused(Endpoint, String),
    #[error("{0}: {1}")]
    Job(Endpoint, JobError),
    #[error("{0}: silent for {secs} s", secs = SILENT.as_secs())]
    Silent(Endpoint),
    #[error("{0}: closed the connection")]
    Closed(Endpoint),
    #[error("{0}: write timed out")]
    WriteTimeout(Endpoint),
}

/// A pool's job Faena cannot mine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("the pool sent a bad {0}: {1}")]
    Field(&'static str, String),
    #[error("the pool sent a blob too short to hold a nonce")]
    ShortBlob,
    #[error("the pool asks for {0:?}; Faena mines rx/0")]
    Algo(Option<String>),
    #[error("the pool's job has no seed_hash")]
    NoSeed,
    #[error("the pool sent a seed_hash of {0} bytes, not 32")]
    SeedLength(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("stratum+tcp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("stratum+ssl://").or_else(|| url.strip_prefix("stratum+tls://")) {
            (true, r)
        } else {
            return Err(EndpointError::Scheme(url.to_owned()));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| EndpointError::NoPort(url.to_owned()))?;
        let port = port.parse().map_err(|_| EndpointError::BadPort(url.to_owned()))?;
        if host.is_empty() || host.len() > 253 {
            return Err(EndpointError::NoHost(url.to_owned()));
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

async fn connect(ep: &Endpoint) -> Result<Box<dyn Conn>, UpstreamError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ep.host.as_str(), ep.port)))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(ep.clone()))?
        .map_err(|e| UpstreamError::Io(ep.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    if !ep.tls {
        return Ok(Box::new(tcp));
    }
    // A pool's certificate is checked against the system's roots
    // (SSL_CERT_FILE for a private CA), as every TLS client of Faena's.
    let config =
        faena_common::tls::TlsArgs::default().client_config().map_err(|e| UpstreamError::Tls(ep.clone(), e))?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(ep.host.clone())
        .map_err(|e| UpstreamError::TlsName(ep.clone(), e))?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await;
    let tls = tls.map_err(|e| UpstreamError::Handshake(ep.clone(), e))?;
    Ok(Box::new(tls))
}

/// Shares sent upstream awaiting the pool's verdict, at most.
const MAX_PENDING: usize = 4096;

/// A pool's job as a template; the nonce byte it fixed, if it did.
fn template(pool: &Pool, job: &Job, nicehash: bool) -> Result<Template, JobError> {
    let blob = decode_hex(&job.blob).map_err(|e| JobError::Field("blob", e))?;
    if blob.len() <= NICEHASH_BYTE {
        return Err(JobError::ShortBlob);
    }
    if job.algo.as_deref().is_some_and(|a| a != ALGO && a != "rx") {
        return Err(JobError::Algo(job.algo.clone()));
    }
    let seed = job.seed_hash.as_deref().ok_or(JobError::NoSeed)?;
    let key = decode_hex(seed).map_err(|e| JobError::Field("seed_hash", e))?;
    if key.len() != 32 {
        return Err(JobError::SeedLength(key.len()));
    }
    let target = parse_target(&job.target).map_err(|e| JobError::Field("target", e))?;
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
                pool.set_state(&id, SourceState::Error, Some(e.to_string()));
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
) -> Result<(), UpstreamError> {
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
    wr.write_all(stratum::request(1, "login", &params).as_bytes())
        .await
        .map_err(|e| UpstreamError::Io(ep.clone(), e))?;
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, lines.next())
        .await
        .map_err(|_| UpstreamError::NoLoginAnswer(ep.clone()))?
        .ok_or_else(|| UpstreamError::ClosedAtLogin(ep.clone()))?
        .map_err(|e| UpstreamError::Lines(ep.clone(), e))?;
    let answer: Incoming = serde_json::from_str(&answer).map_err(|e| UpstreamError::BadLoginAnswer(ep.clone(), e))?;
    if let Some(err) = answer.error {
        return Err(UpstreamError::LoginRefused(ep.clone(), err.message));
    }
    let result: LoginResult =
        serde_json::from_value(answer.result).map_err(|e| UpstreamError::BadLoginAnswer(ep.clone(), e))?;
    let nicehash = result.extensions.iter().any(|e| e == "nicehash");
    let session = result.id.clone();
    let first = template(pool, &result.job, nicehash).map_err(|e| UpstreamError::Job(ep.clone(), e))?;
    pool.install(id, vec![first]).await;
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
                let line = line.map_err(|_| UpstreamError::Silent(ep.clone()))?
                    .ok_or_else(|| UpstreamError::Closed(ep.clone()))?
                    .map_err(|e| UpstreamError::Lines(ep.clone(), e))?;
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
                .map_err(|_| UpstreamError::WriteTimeout(ep.clone()))?
                .map_err(|e| UpstreamError::Io(ep.clone(), e))?;
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
        match serde_json::from_value::<Job>(msg.params) {
            Ok(j) => match template(pool, &j, nicehash) {
                Ok(t) => pool.install(id, vec![t]).await,
                Err(e) => tracing::warn!(source = %id, error = %e, "the pool sent a job Faena cannot mine; ignored"),
            },
            Err(e) => tracing::warn!(source = %id, error = %e, "the pool sent a malformed job; ignored"),
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
