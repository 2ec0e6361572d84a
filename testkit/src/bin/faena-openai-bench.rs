//! `faena-openai-bench`: the OpenAI API (`/v1/chat/completions`) as issue
//! 31 asks it to be measured. `scripts/bench-openai.sh` runs every part.
//!
//!   faena-openai-bench overhead FAKE_URL LITELLM_URL   (FAKE_URL: a faena-fake-ai process;
//!                                                       LITELLM_URL: LiteLLM's proxy in front of it)
//!                                                       (FAENA_BENCH_CLIENTS=1,32: only those N;
//!                                                        FAENA_BENCH_BROKERS=embedded: only that broker)
//!   faena-openai-bench overload
//!   faena-openai-bench failover
//!   faena-openai-bench local
//!
//! - overhead: N = 1, 32 and 256 concurrent streaming clients, each asking
//!   in a loop, straight to the fake OpenAI-compatible backend (the
//!   reference), through LiteLLM's proxy and through Faena (master and one
//!   worker with 256 AI slots); time to the first token p50/p99, what each
//!   gateway adds to the reference's, and requests/s. The three alternate
//!   round by round. Faena is measured twice, each time beside the other
//!   two: on its embedded broker (what `dev.sh` runs) and on Mosquitto
//!   (what the stack runs).
//! - overload: 8 AI slots, 80 concurrent clients (10×), key A with 72 and
//!   key B with 8, each asking in a loop for 20 s against a backend that
//!   takes 50 ms: 429/503s seen, and each key's share of the completions.
//! - failover: 100 streams whose provider is cut off after 40 of 60 pieces;
//!   how many end as one whole answer from the fallback.
//! - local: the local model's tokens/s for one question through
//!   `/v1/chat/completions` and as a Faena job, alternated.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faena_testkit::bench::percentile;
use faena_testkit::mosquitto::Mosquitto;
use faena_testkit::{Cluster, FakeAi, MasterOpts, local_model};
use futures::StreamExt;
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    faena_common::tls::http_client().no_proxy().pool_max_idle_per_host(512).build().expect("client")
}

/// One streamed chat: (time to the first piece of content, the text, the last chunk before `[DONE]`).
async fn stream(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> Result<(Duration, String, Value), String> {
    let asked = Instant::now();
    let resp = client.post(url).bearer_auth(key).json(body).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(resp.status().as_u16().to_string());
    }
    let (mut first, mut text, mut last, mut buf, mut done) = (None, String::new(), Value::Null, String::new(), false);
    let mut bytes = resp.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.map_err(|e| e.to_string())?));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
            if v.get("error").is_some() {
                return Err(v.to_string());
            }
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
                first.get_or_insert_with(|| asked.elapsed());
                text.push_str(t);
            }
            last = v;
        }
    }
    match (done, first) {
        (true, Some(f)) => Ok((f, text, last)),
        _ => Err("the stream ended without [DONE] or content".into()),
    }
}

/// `clients` concurrent streaming clients, `each` requests apiece:
/// (sorted times to first token, requests/s, failures). Each client's
/// first request (its connection being made) is not counted.
async fn load(url: &str, key: &str, model: &str, clients: usize, each: usize) -> (Vec<Duration>, f64, usize) {
    let client = http();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url, key, model) = (client.clone(), url.to_owned(), key.to_owned(), model.to_owned());
            tokio::spawn(async move {
                let warm = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hello"}]});
                let _ = stream(&client, &url, &key, &warm).await;
                let mut out = Vec::with_capacity(each);
                for i in 0..each {
                    let body = json!({"model": model, "stream": true,
                        "messages": [{"role": "user", "content": format!("client {c} asks {i}: how are you today?")}]});
                    out.push(stream(&client, &url, &key, &body).await.map(|r| r.0));
                }
                out
            })
        })
        .collect();
    let (mut ttft, mut failed) = (Vec::new(), 0);
    for t in tasks {
        for r in t.await.expect("a client") {
            match r {
                Ok(d) => ttft.push(d),
                Err(_) => failed += 1,
            }
        }
    }
    let rate = (clients * each) as f64 / started.elapsed().as_secs_f64();
    ttft.sort();
    (ttft, rate, failed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A master and one worker whose providers are the fake at `base` (OpenAI
/// at `/v1`, Gemini at `/v1beta`).
async fn ai_cluster(base: &str, slots: u32, opts: MasterOpts, extra: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::start(MasterOpts { heartbeat_ms: 2000, ..opts }).await;
    let slots = slots.to_string();
    let gemini = format!("{base}/v1beta");
    let mut env = vec![
        ("OPENAI_BASE_URL", base),
        ("OPENAI_MODEL", "fake-gpt"),
        ("GEMINI_BASE_URL", gemini.as_str()),
        ("GEMINI_API_KEY", "bench"),
        ("FAENA_AI_SLOTS", slots.as_str()),
    ];
    env.extend_from_slice(extra);
    c.add_worker_with("ai", 1, &env).await;
    c.wait_workers(1).await;
    c
}

async fn overhead(fake: &str, litellm: &str) {
    // FAENA_BENCH_BROKERS=embedded measures only that one.
    let brokers = std::env::var("FAENA_BENCH_BROKERS").unwrap_or_else(|_| "embedded,mosquitto".into());
    for broker in brokers.split(',').map(str::trim) {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let (opts, _mosquitto) = match broker {
            "embedded" => (MasterOpts::default(), None),
            "mosquitto" => {
                let m = Mosquitto::start(tmp.path()).await;
                (MasterOpts { broker: m.broker(), ..MasterOpts::default() }, Some(m))
            }
            other => panic!("FAENA_BENCH_BROKERS: {other} is neither embedded nor mosquitto"),
        };
        overhead_with(fake, litellm, broker, opts).await;
    }
}

/// The overhead with Faena's master on `broker` (`opts`).
async fn overhead_with(fake: &str, litellm: &str, broker: &str, opts: MasterOpts) {
    let fake = fake.trim_end_matches('/');
    let c = ai_cluster(fake, 256, opts, &[]).await;
    let faena = format!("http://{}/v1/chat/completions", c.addrs.http);
    let targets = [
        ("backend (reference)", format!("{fake}/v1/chat/completions"), "fake-gpt"),
        ("LiteLLM proxy", format!("{}/chat/completions", litellm.trim_end_matches('/')), "fake"),
        ("Faena", faena, "openai/fake-gpt"),
    ];
    println!(
        "overhead, Faena on the {broker} broker: streaming clients against the fake backend, straight, through LiteLLM, through Faena"
    );
    // FAENA_BENCH_CLIENTS=1,32 measures only those.
    let ns: Vec<usize> = std::env::var("FAENA_BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 32, 256]);
    for n in ns {
        // One client's p99 is the 15th slowest of 1,500 requests each way.
        let each = if n == 1 { 500 } else { (1024 / n).clamp(4, 200) };
        let mut all: Vec<(Vec<Duration>, f64, usize)> = vec![(Vec::new(), 0.0, 0); 3];
        // Three rounds, alternating which goes first.
        for round in 0..3 {
            for k in 0..3 {
                let i = (k + round) % 3;
                let (url, model) = (&targets[i].1, targets[i].2);
                let (t, rate, failed) = load(url, "bench", model, n, each).await;
                all[i].0.extend(t);
                all[i].1 += rate / 3.0;
                all[i].2 += failed;
            }
        }
        for a in &mut all {
            a.0.sort();
        }
        let (r50, r99) = (ms(percentile(&all[0].0, 0.5)), ms(percentile(&all[0].0, 0.99)));
        println!("N={n} ({} requests each way)", all[0].0.len() + all[0].2);
        let mut added99 = Vec::new();
        for (i, (name, ..)) in targets.iter().enumerate() {
            let (p50, p99) = (ms(percentile(&all[i].0, 0.5)), ms(percentile(&all[i].0, 0.99)));
            let add = if i == 0 {
                String::new()
            } else {
                format!("  added p50 {:>7.2} ms  p99 {:>7.2} ms", p50 - r50, p99 - r99)
            };
            added99.push(p99 - r99);
            println!(
                "  {name:<20} first token p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  {:>7.0} req/s  failed {}{add}",
                all[i].1, all[i].2
            );
        }
        println!("  Faena's added p99 / LiteLLM's: {:.3}", added99[2].max(0.0) / added99[1].max(1e-3));
    }
}

async fn overload() {
    let fake = FakeAi::start().await;
    let c = ai_cluster(&fake.openai_base(), 8, MasterOpts::default(), &[]).await;
    let key = |name: &'static str| {
        let c = &c;
        async move { c.api.post("/api/keys", &json!({"name": name})).await.1["key"].as_str().unwrap().to_owned() }
    };
    let (ka, kb) = (key("a").await, key("b").await);
    let url = format!("http://{}/v1/chat/completions", c.addrs.http);
    let secs = 20;
    println!("overload: 8 AI slots, key a with 72 clients and key b with 8 (10x the slots), {secs} s, 50 ms answers");
    let until = Instant::now() + Duration::from_secs(secs);
    let counts: Vec<Arc<(AtomicU64, AtomicU64)>> = (0..2).map(|_| Arc::default()).collect();
    let client = http();
    let mut tasks = Vec::new();
    for (k, (key, n)) in [(ka, 72), (kb, 8)].into_iter().enumerate() {
        for i in 0..n {
            let (client, url, key, count) = (client.clone(), url.clone(), key.clone(), counts[k].clone());
            tasks.push(tokio::spawn(async move {
                let mut j = 0;
                while Instant::now() < until {
                    let prompt = format!("[[fake {{\"delay_ms\": 50}}]] key {k} client {i} asks {j}");
                    let body =
                        json!({"model": "openai", "stream": true, "messages": [{"role": "user", "content": prompt}]});
                    match stream(&client, &url, &key, &body).await {
                        Ok(_) if Instant::now() < until => count.0.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => 0,
                        Err(_) => count.1.fetch_add(1, Ordering::Relaxed),
                    };
                    j += 1;
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("a client");
    }
    let (a, b) = (counts[0].0.load(Ordering::Relaxed), counts[1].0.load(Ordering::Relaxed));
    let refused = counts[0].1.load(Ordering::Relaxed) + counts[1].1.load(Ordering::Relaxed);
    let total = (a + b).max(1) as f64;
    println!(
        "completed: a {a}, b {b} ({:.0}/s); refused or failed: {refused}; shares a {:.1} % b {:.1} % (fair: 50 % each, both always waiting)",
        total / secs as f64,
        a as f64 / total * 100.0,
        b as f64 / total * 100.0
    );
}

async fn failover() {
    let fake = FakeAi::start().await;
    let c = ai_cluster(&fake.openai_base(), 128, MasterOpts::default(), &[]).await;
    let url = format!("http://{}/v1/chat/completions", c.addrs.http);
    let words: Vec<String> = (0..60).map(|i| format!("w{i} ")).collect();
    let whole: String = words.concat();
    let client = http();
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (client, url, words) = (client.clone(), url.clone(), words.clone());
            tokio::spawn(async move {
                let script = json!({"chunks": words, "cut_after": 40, "gap_ms": 5});
                let body = json!({"model": "auto", "providers": ["gemini", "openai"], "stream": true,
                    "messages": [{"role": "user", "content": format!("[[fake {script}]] stream {i}")}]});
                stream(&client, &url, "bench", &body).await
            })
        })
        .collect();
    let (mut whole_ok, mut both, mut errors) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.expect("a client") {
            Ok((_, text, last)) => {
                whole_ok += usize::from(text == whole);
                both += usize::from(last["faena"]["providers"] == json!(["gemini", "openai"]));
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(e) = errors.first() {
        println!("{} failed, the first with: {e}", errors.len());
    }
    println!(
        "failover: 100 streams cut after 40 of 60 pieces: {whole_ok} ended as the whole answer in one stream, {both} of them written by gemini then openai ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

async fn local() {
    let model = local_model().display().to_string();
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker_with("local", 1, &[("FAENA_LOCAL_MODEL", model.as_str()), ("FAENA_AI_SLOTS", "1")]).await;
    c.wait_workers(1).await;
    let question = "Write a short paragraph about the sea.";
    let url = format!("http://{}/v1/chat/completions", c.addrs.http);
    let client = http();
    let ask = |way: usize| {
        let (client, url, api) = (client.clone(), url.clone(), c.api.clone());
        async move {
            if way == 0 {
                let body = json!({"model": "local", "temperature": 0, "max_tokens": 200,
                    "messages": [{"role": "user", "content": question}]});
                let v: Value = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
                v["usage"]["completion_tokens"].as_u64().unwrap()
            } else {
                let params = json!({"prompt": question, "provider": "local", "temperature": 0, "max_tokens": 200, "cache": false});
                let id = api.submit_ok("ai.query", params, None).await;
                api.wait_final(&id).await["result"]["usage"]["output_tokens"].as_u64().unwrap()
            }
        }
    };
    // The model's first answer after loading is slower: asked once each
    // way, not counted, so neither way pays it.
    for way in [0, 1] {
        ask(way).await;
    }
    const ROUNDS: usize = 20;
    let (mut via_api, mut as_job, mut paired) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut rates = [0.0; 2];
        for way in [round % 2, 1 - round % 2] {
            let started = Instant::now();
            let tokens = ask(way).await;
            rates[way] = tokens as f64 / started.elapsed().as_secs_f64();
            let how = if way == 0 { "/v1/chat/completions" } else { "as a Faena job" };
            println!("  round {}: {how:<20} {tokens} tokens, {:.1} tokens/s", round + 1, rates[way]);
        }
        via_api.push(rates[0]);
        as_job.push(rates[1]);
        // The two ways of one round run back to back: their ratio is
        // steadier than the VM's speed from round to round.
        paired.push(rates[0] / rates[1]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let (a, j, r) = (median(&mut via_api), median(&mut as_job), median(&mut paired));
    println!(
        "local model, 200 tokens at most, {ROUNDS} rounds each (after one each not counted): /v1/chat/completions {a:.1} tokens/s, as a Faena job {j:.1} tokens/s (medians); /v1 / job in the same round: median {r:.3}, {:.3}–{:.3}",
        paired[0],
        paired[ROUNDS - 1]
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("overhead") if args.len() == 4 => overhead(&args[2], &args[3]).await,
        Some("overload") => overload().await,
        Some("failover") => failover().await,
        Some("local") => local().await,
        _ => {
            eprintln!("usage: faena-openai-bench overhead FAKE_URL LITELLM_URL | overload | failover | local");
            std::process::exit(2);
        }
    }
}
