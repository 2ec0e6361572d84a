//! `randomx.hash` with randomx-rs, in light mode on a dedicated thread.
//!
//! RandomX objects are neither `Send` nor `Sync`, so one thread owns the cache
//! and VM and takes requests over a channel; it keeps the last key's VM, so
//! repeated jobs with the same key pay the ~0.5 s cache set-up once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faena_proto::jobs::{HashOutput, HashProgress, JobSpec, encode_hex};
use futures::FutureExt;
use futures::future::BoxFuture;
use randomx_rs::{RandomXCache, RandomXFlag, RandomXVM};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Executor, JobContext, JobFailure};

struct Request {
    key: Vec<u8>,
    inputs: Vec<Vec<u8>>,
    cancelled: Arc<AtomicBool>,
    progress: Box<dyn Fn(HashProgress) + Send>,
    reply: oneshot::Sender<Result<Vec<Vec<u8>>, JobFailure>>,
}

#[derive(Debug, Clone)]
pub struct RandomxHasher {
    tx: std::sync::mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("inputs", &self.inputs.len()).finish_non_exhaustive()
    }
}

impl RandomxHasher {
    /// Starts the hashing thread. Light mode; JIT and hardware AES when the
    /// CPU has them (RandomX's own detection).
    pub fn start() -> std::io::Result<Self> {
        let flags = RandomXFlag::get_recommended_flags();
        tracing::info!(
            mode = "light",
            jit = flags.contains(RandomXFlag::FLAG_JIT),
            hard_aes = flags.contains(RandomXFlag::FLAG_HARD_AES),
            large_pages = false,
            "RandomX: light mode (256 MiB cache per key); JIT and AES as the CPU reports them"
        );
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new().name("faena-randomx".into()).spawn(move || {
            let mut current: Option<(Vec<u8>, RandomXVM)> = None;
            for req in rx {
                let result = hash_all(flags, &mut current, &req);
                let _ = req.reply.send(result);
            }
        })?;
        Ok(Self { tx })
    }
}

fn hash_all(
    flags: RandomXFlag,
    current: &mut Option<(Vec<u8>, RandomXVM)>,
    req: &Request,
) -> Result<Vec<Vec<u8>>, JobFailure> {
    if current.as_ref().is_none_or(|(key, _)| *key != req.key) {
        *current = None;
        let cache =
            RandomXCache::new(flags, &req.key).map_err(|e| JobFailure::retryable(format!("RandomX cache: {e}")))?;
        let vm =
            RandomXVM::new(flags, Some(cache), None).map_err(|e| JobFailure::retryable(format!("RandomX VM: {e}")))?;
        *current = Some((req.key.clone(), vm));
    }
    let Some((_, vm)) = current.as_ref() else { return Err(JobFailure::retryable("RandomX VM missing")) };
    let total = req.inputs.len() as u64;
    let mut last_report = Instant::now();
    let mut out = Vec::with_capacity(req.inputs.len());
    for (i, input) in req.inputs.iter().enumerate() {
        if req.cancelled.load(Ordering::Relaxed) {
            return Err(JobFailure::permanent("cancelled"));
        }
        out.push(
            vm.calculate_hash(input).map_err(|e| JobFailure::permanent(format!("RandomX hash of input {i}: {e}")))?,
        );
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            (req.progress)(HashProgress { done: i as u64 + 1, total });
        }
    }
    Ok(out)
}

impl Executor for RandomxHasher {
    fn execute(&self, spec: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        let tx = self.tx.clone();
        async move {
            let JobSpec::RandomxHash(params) = spec else {
                return Err(JobFailure::permanent("randomx.hash executor got another kind"));
            };
            let bad = |e: faena_proto::WireError| JobFailure::permanent(e.to_string());
            let key = params.key_bytes().map_err(bad)?;
            let inputs = params.input_bytes().map_err(bad)?;
            let cancelled = Arc::new(AtomicBool::new(false));
            let (reply, rx) = oneshot::channel();
            let progress_ctx = ctx.clone();
            let progress =
                Box::new(move |p: HashProgress| progress_ctx.progress(serde_json::to_value(p).unwrap_or(Value::Null)));
            tx.send(Request { key, inputs, cancelled: cancelled.clone(), progress, reply })
                .map_err(|_| JobFailure::retryable("RandomX thread is gone"))?;
            let hashes = tokio::select! {
                r = rx => r.map_err(|_| JobFailure::retryable("RandomX thread is gone"))??,
                () = ctx.cancel.cancelled() => {
                    cancelled.store(true, Ordering::Relaxed);
                    return Err(JobFailure::permanent("cancelled"));
                }
            };
            let hex: Vec<String> = hashes.iter().map(|h| encode_hex(h)).collect();
            let out = if params.is_batch() {
                HashOutput::Many { hashes: hex }
            } else {
                HashOutput::One { hash: hex.into_iter().next().unwrap_or_default() }
            };
            serde_json::to_value(out).map_err(|e| JobFailure::permanent(e.to_string()))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// RandomX's published test vectors (tests/tests.cpp of tevador/RandomX).
    const VECTORS: [(&str, &str, &str); 3] = [
        ("test key 000", "This is a test", "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f"),
        (
            "test key 000",
            "Lorem ipsum dolor sit amet",
            "300a0adb47603dedb42228ccb2b211104f4da45af709cd7547cd049e9489c969",
        ),
        (
            "test key 000",
            "sed do eiusmod tempor incididunt ut labore et dolore magna aliqua",
            "c36d4ed4191e617309867ed66a443be4075014e2b061bcdaf9ce7b721d2b77a8",
        ),
    ];

    fn ctx() -> JobContext {
        JobContext::new(CancellationToken::new(), mpsc::channel(16).0)
    }

    #[tokio::test]
    async fn matches_randomx_test_vectors_one_by_one_and_batched() {
        let hasher = RandomxHasher::start().expect("thread starts");
        for (key, input, want) in VECTORS {
            let spec = JobSpec::parse("randomx.hash", json!({"key": key, "input": input})).expect("valid");
            assert_eq!(hasher.execute(spec, ctx()).await, Ok(json!({"hash": want})));
        }
        let inputs: Vec<&str> = VECTORS.iter().map(|v| v.1).collect();
        let spec = JobSpec::parse("randomx.hash", json!({"key": "test key 000", "inputs": inputs})).expect("valid");
        let wants: Vec<&str> = VECTORS.iter().map(|v| v.2).collect();
        assert_eq!(hasher.execute(spec, ctx()).await, Ok(json!({"hashes": wants})));
        // The hex form: key "test key 001" and a Monero-style block blob.
        let spec = JobSpec::parse("randomx.hash", json!({
            "key": encode_hex(b"test key 001"),
            "input": "0b0b98bea7e805e0010a2126d287a2a0cc833d312cb786385a7c2f9de69d25537f584a9bc9977b00000000666fd8753bf61a8631f12984e3fd44f4014eca629276817b56f32e9b68bd82f416",
            "hex": true,
        })).expect("valid");
        assert_eq!(
            hasher.execute(spec, ctx()).await,
            Ok(json!({"hash": "c56414121acda1713c2f2a819d8ae38aed7c80c35c2a769298d34f03833cd5f1"}))
        );
    }
}
