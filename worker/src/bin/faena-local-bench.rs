//! `faena-local-bench`: the `local` AI provider against llama.cpp's own
//! `llama-bench`, in one run (`scripts/bench-local.sh` builds llama-bench
//! against the same llama.cpp and runs this).
//!
//! For 1 and 2 threads it measures the provider's time to first token and
//! generation speed over greedy answers (the worker's own code path:
//! chat template, a fresh context, prompt, sampling, pieces), then
//! llama-bench's prompt and generation speed on the same GGUF, prompt
//! length, answer length and threads, and prints the ratios. Then the same
//! again while a RandomX mining unit (the worker's mining loop) hashes on
//! other threads, as on a worker that mines while it answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use faena_proto::ai::AiParams;
use faena_worker::ai::Sink;
use faena_worker::ai::local::{self, LocalModel};
use faena_worker::randomx::mine::{Work, mine};
use faena_worker::randomx::{Flags, Material, Mode};
use parking_lot::Mutex;

#[derive(Debug, Parser)]
struct Args {
    /// The GGUF model (`scripts/fetch-model.sh` prints the default's path).
    #[arg(long, env = "FAENA_LOCAL_MODEL")]
    model: PathBuf,
    /// llama.cpp's benchmark, built against the same llama.cpp.
    #[arg(long)]
    llama_bench: PathBuf,
    /// Tokens each answer generates (the answer is cut off there).
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    /// Answers (and llama-bench repetitions) per round.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Rounds per setting, ours and llama-bench's taking turns; medians count.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// RandomX mode of the mining unit beside the model.
    #[arg(long, value_parser = ["fast", "light"], default_value = "fast")]
    randomx_mode: String,
    /// Threads of the mining unit beside the model.
    #[arg(long, default_value_t = 1)]
    randomx_threads: usize,
}

const PROMPT: &str = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.";

/// The provider's answers: times to first token (s), tokens per second after it.
#[derive(Debug, Default)]
struct Measured {
    ttft: Vec<f64>,
    tps: Vec<f64>,
    prompt_tokens: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn provider(model: &Arc<LocalModel>, tokens: u32, runs: usize, into: &mut Measured) -> anyhow::Result<()> {
    let params: AiParams =
        serde_json::from_value(serde_json::json!({ "prompt": PROMPT, "temperature": 0, "max_tokens": tokens }))?;
    local::query(model, &params, &mut Sink::new(None)).await?; // warm-up, as llama-bench does
    for _ in 0..runs {
        let mut sink = Sink::new(None);
        let started = Instant::now();
        let answer = local::query(model, &params, &mut sink).await?;
        let total = started.elapsed();
        let ttft = sink.first_token.context("the model answered nothing")?;
        let usage = answer.usage.unwrap_or_default();
        if usage.output_tokens < u64::from(tokens) {
            bail!("the model stopped after {} tokens, before the {tokens} measured", usage.output_tokens);
        }
        into.prompt_tokens = usage.prompt_tokens;
        into.ttft.push(ttft.as_secs_f64());
        // Tokens after the first, over the time after the first.
        into.tps.push((usage.output_tokens - 1) as f64 / (total - ttft).as_secs_f64().max(1e-9));
    }
    Ok(())
}

/// llama-bench's (prompt tokens/s, generation tokens/s) for this prompt
/// length, answer length and threads.
fn llama_bench(a: &Args, prompt: u64, threads: usize) -> anyhow::Result<(f64, f64)> {
    let out = Command::new(&a.llama_bench)
        .arg("-m")
        .arg(&a.model)
        .args(["-p", &prompt.to_string(), "-n", &a.tokens.to_string(), "-t", &threads.to_string()])
        .args(["-r", &a.runs.to_string(), "-o", "json"])
        .output()
        .with_context(|| format!("running {}", a.llama_bench.display()))?;
    if !out.status.success() {
        bail!("llama-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).context("llama-bench's JSON")?;
    let rate = |prompt_test: bool| {
        rows.iter()
            .find(|r| (r["n_prompt"].as_u64().unwrap_or(0) > 0) == prompt_test)
            .and_then(|r| r["avg_ts"].as_f64())
            .context("llama-bench printed no such test")
    };
    Ok((rate(true)?, rate(false)?))
}

/// A mining unit over the whole nonce space, hashing until `stop`.
struct Miner {
    stop: Arc<AtomicBool>,
    /// The total hashed when the loop last reported it (about once a second), and when.
    hashes: Arc<Mutex<(u64, Instant)>>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Miner {
    fn start(material: &Arc<Material>, threads: usize) -> Self {
        let (stop, hashes) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new((0, Instant::now()))));
        let (material, s, h) = (material.clone(), stop.clone(), hashes.clone());
        let thread = std::thread::spawn(move || {
            let blob = [7u8; 76];
            // Target 0: no hash is a share, so it runs until stopped.
            let work = Work { blob: &blob, nonce_offset: 39, start: 0, count: 1 << 32, target: 0, max_shares: None };
            mine(&material, threads, &work, &s, &|n| *h.lock() = (n, Instant::now()), &|_| {})?;
            Ok(())
        });
        Self { stop, hashes, thread }
    }

    /// Hashes per second while `f` runs, between the loop's reports.
    async fn rate_over<T>(&self, f: impl Future<Output = T>) -> (T, f64) {
        let before = *self.hashes.lock();
        let out = f.await;
        let after = *self.hashes.lock();
        let seconds = after.1.saturating_duration_since(before.1).as_secs_f64();
        (out, if seconds > 0.0 { after.0.saturating_sub(before.0) as f64 / seconds } else { 0.0 })
    }

    fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("the mining thread panicked"))?
    }
}

fn load(path: &Path, threads: usize) -> anyhow::Result<Arc<LocalModel>> {
    Ok(Arc::new(LocalModel::load(path, threads, 4096)?))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !local::cpu_supported() {
        bail!("this CPU lacks AVX2/FMA/F16C: the worker would not offer `local` here");
    }
    let mode = if a.randomx_mode == "fast" { Mode::Fast } else { Mode::Light };
    println!(
        "{} · {} tokens per answer · {} rounds of {} answers and {} llama-bench repetitions, medians",
        a.model.display(),
        a.tokens,
        a.rounds,
        a.runs,
        a.runs
    );
    let material = Arc::new(Material::build(Flags::detect(), mode, b"faena local bench", 2)?);
    let alone = Miner::start(&material, a.randomx_threads);
    let (_, mining_alone) = alone.rate_over(tokio::time::sleep(Duration::from_secs(10))).await;
    alone.stop()?;
    println!(
        "RandomX mining unit ({} mode, {} thread(s)) alone: {mining_alone:.0} H/s",
        a.randomx_mode, a.randomx_threads
    );
    println!(
        "\n{:<24} {:>7} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6} {:>9}",
        "", "threads", "ttft ms", "ref ms", "ratio", "tok/s", "ref tok/s", "ratio", "RandomX"
    );
    let mut prompt_tokens = 0;
    for beside in [false, true] {
        for threads in [1usize, 2] {
            let model = load(&a.model, threads)?;
            let miner = beside.then(|| Miner::start(&material, a.randomx_threads));
            let measure = async {
                let (mut ours, mut pp, mut tg) = (Measured::default(), Vec::new(), Vec::new());
                for _ in 0..a.rounds.max(1) {
                    provider(&model, a.tokens, a.runs, &mut ours).await?;
                    let (p, g) = llama_bench(&a, ours.prompt_tokens, threads)?;
                    pp.push(p);
                    tg.push(g);
                }
                anyhow::Ok((ours, (median(pp), median(tg))))
            };
            let (measured, hashrate) = match &miner {
                Some(m) => {
                    let (r, rate) = m.rate_over(measure).await;
                    (r, format!("{rate:.0} H/s"))
                }
                None => (measure.await, "-".into()),
            };
            if let Some(m) = miner {
                m.stop()?;
            }
            let (ours, (pp, tg)) = measured?;
            prompt_tokens = ours.prompt_tokens;
            let (ours_ms, ours_tps) = (median(ours.ttft) * 1000.0, median(ours.tps));
            let ref_ms = ours.prompt_tokens as f64 / pp.max(1e-9) * 1000.0;
            println!(
                "{:<24} {:>7} {:>9.1} {:>9.1} {:>6.2} {:>9.1} {:>9.1} {:>6.2} {:>9}",
                if beside { "beside a mining unit" } else { "alone" },
                threads,
                ours_ms,
                ref_ms,
                ref_ms / ours_ms.max(1e-9),
                ours_tps,
                tg,
                ours_tps / tg.max(1e-9),
                hashrate,
            );
        }
    }
    println!(
        "\nref ms: the prompt ({prompt_tokens} tokens, the chat template applied) at llama-bench's prompt speed; \
         ratio: llama-bench's time / ours, and our speed / llama-bench's (1.00 = as fast)."
    );
    Ok(())
}
