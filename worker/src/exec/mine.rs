//! `randomx.mine`: hashes one unit's nonce range on all RandomX threads
//! (each its own VM over the key's shared dataset), reports hashes, speed
//! and the shares found about once a second, and returns every share.
//! Stops early at `max_shares` or when the job is cancelled.

use std::sync::Arc;

use faena_proto::jobs::{JobSpec, encode_hex};
use faena_proto::mine::{Share, UnitOutput, UnitProgress};
use faena_randomx::mine::{self, Work};
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::Value;

use super::randomx::run_blocking;
use super::{Executor, JobContext, JobFailure};
use crate::randomx::RandomX;

#[derive(Debug, Clone)]
pub struct RandomxMine {
    rx: Arc<RandomX>,
}

impl RandomxMine {
    pub fn new(rx: Arc<RandomX>) -> Self {
        Self { rx }
    }
}

/// Shares one progress report carries (the master takes reports up to
/// 64 KiB, ~80 bytes a share); more wait for the next report, and all are
/// in the unit's output.
const PROGRESS_SHARES: usize = 500;

/// Takes up to [`PROGRESS_SHARES`] of the shares not reported yet.
fn unreported(fresh: &Mutex<Vec<Share>>) -> Vec<Share> {
    let mut fresh = fresh.lock();
    let n = fresh.len().min(PROGRESS_SHARES);
    fresh.drain(..n).collect()
}

fn share(s: &mine::Share) -> Share {
    Share { nonce: s.nonce, hash: encode_hex(&s.hash) }
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Executor for RandomxMine {
    fn execute(&self, spec: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        let rx = self.rx.clone();
        async move {
            let JobSpec::RandomxMine(params) = spec else {
                return Err(JobFailure::permanent("randomx.mine executor got another kind"));
            };
            let w = params.work().map_err(|e| JobFailure::permanent(e.to_string()))?;
            let progress_ctx = ctx.clone();
            // Shares found since the last progress report, and that report's
            // figures: what a cancel (a new template) would otherwise lose.
            let fresh = Arc::new(Mutex::new(Vec::new()));
            let last = Arc::new(Mutex::new((0u64, 0.0f64)));
            let (unsent, reported) = (fresh.clone(), last.clone());
            let mined = run_blocking(&rx.clone(), &ctx, move |stop| {
                let material = rx.material(&w.key)?;
                if let Some(next) = &w.next_key {
                    rx.prepare(next);
                }
                let started = std::time::Instant::now();
                let progress = |hashes: u64| {
                    let hashrate = hashes as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    let shares = unreported(&fresh);
                    *last.lock() = (hashes, hashrate);
                    progress_ctx.progress(json(&UnitProgress { hashes, hashrate, shares }));
                };
                let work = Work {
                    blob: &w.blob,
                    nonce_offset: w.nonce_offset,
                    start: w.start,
                    count: w.count,
                    target: w.target,
                    max_shares: w.max_shares.map(|m| m as usize),
                };
                let on_share = |s: &mine::Share| fresh.lock().push(share(s));
                let mined = mine::mine(&material, rx.threads(), &work, stop, &progress, &on_share)?;
                rx.record(mined.hashes, mined.elapsed, rx.threads().min(w.count as usize));
                Ok(mined)
            })
            .await;
            let mined = match mined {
                Ok(mined) => mined,
                Err(e) => {
                    // Cancelled (its template replaced, most often): the
                    // shares found since the last report still go out; the
                    // master counts them as stale.
                    let shares = unreported(&unsent);
                    if !shares.is_empty() {
                        let (hashes, hashrate) = *reported.lock();
                        ctx.progress(json(&UnitProgress { hashes, hashrate, shares }));
                    }
                    return Err(e);
                }
            };
            let secs = mined.elapsed.as_secs_f64();
            Ok(json(&UnitOutput {
                shares: mined.shares.iter().map(share).collect(),
                hashes: mined.hashes,
                hashrate: if secs > 0.0 { mined.hashes as f64 / secs } else { 0.0 },
                elapsed_ms: mined.elapsed.as_millis() as u64,
            }))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_report_stays_under_the_masters_size_limit() {
        let fresh = Mutex::new((0..1234).map(|n| Share { nonce: n, hash: "ab".repeat(32) }).collect::<Vec<_>>());
        let first = unreported(&fresh);
        assert_eq!(first.len(), PROGRESS_SHARES);
        let bytes = serde_json::to_vec(&UnitProgress { hashes: u64::MAX, hashrate: 1e9, shares: first }).expect("JSON");
        assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
        assert_eq!(unreported(&fresh)[0].nonce, PROGRESS_SHARES as u32, "the rest come next, in order");
        assert_eq!(unreported(&fresh).len(), 1234 - 2 * PROGRESS_SHARES);
    }
    use serde_json::json;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::randomx::{Machine, ModeChoice};

    fn miner() -> RandomxMine {
        let machine = Machine { memory_bytes: 1 << 30, huge_pages_free_bytes: 0, cores: 2 };
        RandomxMine::new(Arc::new(RandomX::new(ModeChoice::Light, Some(2), machine)))
    }

    #[tokio::test]
    async fn mines_its_range_and_reports_every_share() {
        let (tx, mut rx) = mpsc::channel(64);
        let ctx = JobContext::new(CancellationToken::new(), tx);
        let params = json!({"key": "6b6579", "blob": "01".repeat(76), "difficulty": 4,
                            "nonce_start": 500, "nonce_count": 40});
        let spec = JobSpec::parse("randomx.mine", params.clone()).expect("valid");
        let out = miner().execute(spec, ctx).await.expect("mined");
        let out: UnitOutput = serde_json::from_value(out).expect("unit output");
        assert_eq!(out.hashes, 40);
        let w = faena_proto::mine::MineParams::work(&serde_json::from_value(params).expect("params")).expect("work");
        assert!(!out.shares.is_empty(), "difficulty 4 over 40 nonces finds some");
        for s in &out.shares {
            assert!(w.contains(s.nonce));
        }
        // Progress, if any was sent, parses as the contract says.
        while let Ok(p) = rx.try_recv() {
            let _: UnitProgress = serde_json::from_value(p).expect("unit progress");
        }
    }

    #[tokio::test]
    async fn one_randomx_job_at_a_time_and_waiting_can_be_cancelled() {
        let m = miner();
        let held = m.rx.cores().await.expect("the cores");
        let cancel = CancellationToken::new();
        let (tx, mut progress) = mpsc::channel(8);
        let spec = JobSpec::parse(
            "randomx.mine",
            json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 2, "nonce_count": 4}),
        )
        .expect("valid");
        let waiting = tokio::spawn(m.execute(spec.clone(), JobContext::new(cancel.clone(), tx)));
        cancel.cancel();
        let e = waiting.await.expect("joins").expect_err("cancelled while waiting for the cores");
        assert_eq!(e.message, "cancelled");
        assert!(progress.try_recv().is_err(), "it never started");
        drop(held);
        let out = m.execute(spec, JobContext::new(CancellationToken::new(), mpsc::channel(8).0)).await.expect("runs");
        assert_eq!(out["hashes"], 4);
    }

    #[tokio::test]
    async fn bad_blob_is_a_permanent_failure_and_cancel_stops() {
        let ctx = JobContext::new(CancellationToken::new(), mpsc::channel(4).0);
        let spec = JobSpec::RandomxMine(
            serde_json::from_value(json!({"key": "6b", "blob": "00", "difficulty": 1})).expect("params"),
        );
        let e = miner().execute(spec, ctx).await.expect_err("short blob");
        assert!(!e.retryable && e.message.contains("nonce"), "{e:?}");
        let cancel = CancellationToken::new();
        let ctx = JobContext::new(cancel.clone(), mpsc::channel(4).0);
        let spec = JobSpec::parse("randomx.mine", json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 1000000}))
            .expect("valid");
        let running = tokio::spawn(miner().execute(spec, ctx));
        cancel.cancel();
        let e = running.await.expect("joins").expect_err("cancelled");
        assert_eq!(e.message, "cancelled");
    }
}
