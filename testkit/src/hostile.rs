//! Hostile Stratum clients and honest ones, for `faena-stratum-bench
//! --hostile`: what a pool facing the internet meets. Every client binds a
//! loopback address of its own choosing (127.0.x.y), as miners on other
//! machines would come from other addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faena_proto::jobs::{decode_hex, encode_hex};
use faena_proto::stratum::{self, Incoming, Job, LoginResult, NICEHASH_BYTE};
use faena_randomx::{Flags, Material, Mode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// What the hostile clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Connects and never logs in; reconnects when dropped.
    Idle,
    /// Logs in, then says nothing.
    Silent,
    /// Logs in and sends junk shares as fast as it may; reconnects when dropped.
    Junk,
    /// Logs in and sends keepalives without ever reading the answers.
    SlowReader,
}

/// Counts, for the report.
#[derive(Debug, Default)]
pub struct Counts {
    pub connected: AtomicU64,
    pub refused: AtomicU64,
    pub accepted_shares: AtomicU64,
    pub rejected_shares: AtomicU64,
    /// Why the last share was rejected.
    pub last_rejection: std::sync::Mutex<Option<String>>,
}

/// A TCP connection to `addr` from the loopback address `local`.
pub async fn connect_from(addr: SocketAddr, local: IpAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(local, 0)).ok()?;
    socket.connect(addr).await.ok()
}

/// The `n`-th client address: 127.1.0.0 and up (`per` clients each).
pub fn address(n: usize, per: usize) -> IpAddr {
    let a = (n / per.max(1)) as u32;
    IpAddr::V4(std::net::Ipv4Addr::from(0x7f01_0000 + a))
}

async fn login(
    stream: TcpStream,
    name: &str,
) -> Option<(tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>, tokio::net::tcp::OwnedWriteHalf, LoginResult)>
{
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    let params = json!({"login": name, "pass": "x", "agent": "faena-bench", "algo": ["rx/0"]});
    wr.write_all(stratum::request(1, "login", &params).as_bytes()).await.ok()?;
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.ok()?.ok()??;
    let msg: Incoming = serde_json::from_str(&line).ok()?;
    let login = serde_json::from_value(msg.result).ok()?;
    Some((lines, wr, login))
}

/// One hostile client doing `what` from `local` until `stop`.
pub async fn hostile(addr: SocketAddr, local: IpAddr, what: Hostile, n: usize, stop: Instant, counts: Arc<Counts>) {
    while Instant::now() < stop {
        let Some(stream) = connect_from(addr, local).await else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        counts.connected.fetch_add(1, Ordering::Relaxed);
        let until = tokio::time::Instant::from_std(stop);

        match what {
            Hostile::Idle => {
                let mut buf = [0u8; 256];
                let mut stream = stream;
                let _ = tokio::time::timeout_at(until, tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await;
            }
            Hostile::Silent | Hostile::Junk | Hostile::SlowReader => {
                let Some((mut lines, mut wr, login)) = login(stream, &format!("hostile-{n}")).await else {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                let session = login.id.clone();
                match what {
                    Hostile::Silent => {
                        let _ = tokio::time::timeout_at(until, async {
                            while let Ok(Some(_)) = lines.next_line().await {}
                        })
                        .await;
                    }
                    Hostile::Junk => {
                        let top = u32::from(
                            decode_hex(&login.job.blob).unwrap_or_default().get(NICEHASH_BYTE).copied().unwrap_or(0),
                        ) << 24;
                        let _ = tokio::time::timeout_at(until, async {
                            for i in 0u32.. {
                                let p = json!({"id": session, "job_id": login.job.job_id, "nonce": stratum::nonce_hex(top | i),
                                    "result": "00".repeat(24) + "0000000000000000", "algo": "rx/0"});
                                if wr.write_all(stratum::request(u64::from(i) + 2, "submit", &p).as_bytes()).await.is_err() {
                                    return;
                                }
                                match lines.next_line().await {
                                    Ok(Some(_)) => {}
                                    _ => return,
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        })
                        .await;
                    }
                    _ => {
                        let _ = tokio::time::timeout_at(until, async {
                            for i in 0u64.. {
                                let ka = stratum::request(i + 2, "keepalived", &json!({"id": session}));
                                if wr.write_all(ka.as_bytes()).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        })
                        .await;
                    }
                }
            }
        }
        // Back a second after each drop: churn, without the bench's own CPU
        // drowning the machine it shares with the master.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Real shares for an honest miner: its job's blob with its slot's nonces
/// `first..first + count` hashed (difficulty 1: every hash is a share).
pub fn real_shares(jobs: &[(Job, u32, u32)], threads: usize) -> Vec<Vec<(u32, [u8; 32])>> {
    let Some((first, _, _)) = jobs.first() else { return Vec::new() };
    let key = decode_hex(first.seed_hash.as_deref().unwrap_or_default()).unwrap_or_default();
    let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &key, 1).expect("material"));
    let chunk = jobs.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                let material = material.clone();
                s.spawn(move || {
                    let mut vm = material.vm().expect("vm");
                    part.iter()
                        .map(|(job, first, count)| {
                            let mut input = decode_hex(&job.blob).unwrap_or_default();
                            let top = u32::from(input[NICEHASH_BYTE]) << 24;
                            (*first..*first + *count)
                                .map(|i| {
                                    let nonce = top | i;
                                    input[39..43].copy_from_slice(&nonce.to_le_bytes());
                                    (nonce, vm.hash(&input))
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("hashing thread")).collect()
    })
}

/// An honest miner's connection after its login: submits `shares` one
/// every `every` from `start`, counting the accepted ones.
#[derive(Debug)]
pub struct Honest {
    pub lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    pub wr: tokio::net::tcp::OwnedWriteHalf,
    pub login: LoginResult,
}

impl Honest {
    pub async fn connect(addr: SocketAddr, local: IpAddr, name: &str) -> Option<Self> {
        let (lines, wr, login) = login(connect_from(addr, local).await?, name).await?;
        Some(Self { lines, wr, login })
    }

    pub async fn submit_all(&mut self, shares: &[(u32, [u8; 32])], every: Duration, start: Instant, counts: &Counts) {
        for (i, (nonce, hash)) in shares.iter().enumerate() {
            tokio::time::sleep_until((start + every * i as u32).into()).await;
            let id = i as u64 + 100;
            let p = json!({"id": self.login.id, "job_id": self.login.job.job_id, "nonce": stratum::nonce_hex(*nonce),
                "result": encode_hex(hash), "algo": "rx/0"});
            if self.wr.write_all(stratum::request(id, "submit", &p).as_bytes()).await.is_err() {
                return;
            }
            loop {
                let Ok(Some(line)) = self.lines.next_line().await else { return };
                let Ok(m) = serde_json::from_str::<Incoming>(&line) else { continue };
                if m.id.as_u64() != Some(id) {
                    continue;
                }
                match m.error {
                    None => counts.accepted_shares.fetch_add(1, Ordering::Relaxed),
                    Some(e) => {
                        *counts.last_rejection.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.message);
                        counts.rejected_shares.fetch_add(1, Ordering::Relaxed)
                    }
                };
                break;
            }
        }
    }
}
