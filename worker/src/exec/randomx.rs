//! `randomx.hash`: one input or a batch, on the worker's [`RandomX`] engine
//! (fast or light mode, all threads, key material reused across jobs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use faena_proto::jobs::{HashOutput, HashProgress, JobSpec, encode_hex};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Executor, JobContext, JobFailure};
use crate::randomx::{RandomX, RxError};

#[derive(Debug, Clone)]
pub struct RandomxHash {
    rx: Arc<RandomX>,
}

impl RandomxHash {
    pub fn new(rx: Arc<RandomX>) -> Self {
        Self { rx }
    }
}

impl Executor for RandomxHash {
    fn execute(&self, spec: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        let rx = self.rx.clone();
        async move {
            let JobSpec::RandomxHash(params) = spec else {
                return Err(JobFailure::permanent("randomx.hash executor got another kind"));
            };
            let bad = |e: faena_proto::WireError| JobFailure::permanent(e.to_string());
            let key = params.key_bytes().map_err(bad)?;
            let inputs = params.input_bytes().map_err(bad)?;
            let total = inputs.len() as u64;
            let progress_ctx = ctx.clone();
            let hashes = run_blocking(&rx.clone(), &ctx, move |stop| {
                let progress = move |done: u64| {
                    progress_ctx.progress(serde_json::to_value(HashProgress { done, total }).unwrap_or(Value::Null));
                };
                rx.hash_batch(&key, &inputs, stop, &progress)
            })
            .await?;
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

/// Runs blocking RandomX work off the async threads, once it has the cores
/// (one such job at a time per worker; see [`RandomX::cores`]); cancelling
/// the job raises the `stop` flag the work watches and fails the unit at
/// once. Engine errors become failures: bad input is permanent, no memory
/// retryable.
pub(super) async fn run_blocking<T: Send + 'static>(
    rx: &RandomX,
    ctx: &JobContext,
    work: impl FnOnce(&AtomicBool) -> Result<T, RxError> + Send + 'static,
) -> Result<T, JobFailure> {
    let permit = tokio::select! {
        p = rx.cores() => p,
        () = ctx.cancel.cancelled() => return Err(JobFailure::cancelled()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _cores = permit;
        work(&flag)
    });
    let out = tokio::select! {
        r = task => r.map_err(|e| JobFailure::retryable(format!("RandomX task failed: {e}")))?,
        () = ctx.cancel.cancelled() => {
            stop.store(true, Ordering::Relaxed);
            return Err(JobFailure::cancelled());
        }
    };
    out.map_err(|e| match e {
        RxError::Cancelled => JobFailure::cancelled(),
        RxError::Input(m) => JobFailure::permanent(m),
        e @ RxError::Alloc(_) => JobFailure::retryable(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::randomx::{Machine, ModeChoice};

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

    fn engine(choice: ModeChoice) -> RandomxHash {
        let machine = Machine { memory_bytes: 8 << 30, huge_pages_free_bytes: 0, cores: 2 };
        RandomxHash::new(Arc::new(RandomX::new(choice, Some(2), machine)))
    }

    #[tokio::test]
    async fn light_mode_matches_randomx_test_vectors() {
        check_vectors(engine(ModeChoice::Light)).await;
    }

    /// Builds a 2 GiB dataset on two threads: the slowest unit test.
    #[tokio::test]
    async fn fast_mode_matches_randomx_test_vectors() {
        let hasher = engine(ModeChoice::Fast);
        assert_eq!(hasher.rx.mode(), crate::randomx::Mode::Fast);
        let material = hasher.rx.material(b"test key 000").expect("a dataset");
        // Built by Faena's own code (compiled where the CPU allows), checked
        // against RandomX's first items; the vectors then hash over all of it.
        let built_by = material.dataset_built_by().expect("built here");
        let compiled = faena_randomx::superscalar::jit::Isa::detect().map(|isa| isa.name());
        assert_eq!(built_by, compiled.unwrap_or(faena_randomx::superscalar::vector_width()));
        check_vectors(hasher).await;
    }

    async fn check_vectors(hasher: RandomxHash) {
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
        let spec = JobSpec::parse(
            "randomx.hash",
            json!({
                "key": "test key 001",
                "input": "sed do eiusmod tempor incididunt ut labore et dolore magna aliqua",
            }),
        )
        .expect("valid");
        assert_eq!(
            hasher.execute(spec, ctx()).await,
            Ok(json!({"hash": "e9ff4503201c0c2cca26d285c93ae883f9b1d30c9eb240b820756f2d5a7905fc"}))
        );
    }
}
