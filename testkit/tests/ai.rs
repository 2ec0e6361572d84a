//! `ai.query` end to end against the local fake Gemini/OpenAI server:
//! streaming in order, context, metadata, keys (and that a job's own key
//! never reaches the broker, the store or a log), every error path, cancel,
//! capability and slots, and the result cache.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::api::is_final;
use faena_testkit::{Cluster, FakeAi, Listener, MasterOpts, WAIT, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WORKER_KEY: &str = "worker-wide-key";

/// A cluster with one worker that has both providers (Gemini with a key).
async fn cluster(fake: &FakeAi, extra: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::start(MasterOpts::default()).await;
    let (gemini, openai) = (fake.gemini_base(), fake.openai_base());
    let mut env = vec![
        ("GEMINI_BASE_URL", gemini.as_str()),
        ("GEMINI_API_KEY", WORKER_KEY),
        ("OPENAI_BASE_URL", openai.as_str()),
    ];
    env.extend_from_slice(extra);
    c.add_worker_with("ai", 1, &env).await;
    c.wait_workers(1).await;
    c
}

fn script(s: Value, prompt: &str) -> String {
    format!("[[fake {s}]] {prompt}")
}

/// Submits and returns (chunks streamed, the finished job). The provider
/// waits until the test watches the job, so no chunk is over before then.
async fn run(c: &Cluster, fake: &FakeAi, params: Value) -> (Vec<Value>, Value) {
    fake.pause();
    let id = c.api.submit_ok("ai.query", params, None).await;
    let mut events = c.api.events(&id).await;
    fake.resume();
    let mut chunks = Vec::new();
    let done = tokio::time::timeout(WAIT, async {
        while let Some((name, data)) = events.next().await {
            match name.as_str() {
                "progress" => chunks.push(data["data"].clone()),
                "requeued" if data["continues"] != true => chunks.clear(),
                n if is_final(n) => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(done, Ok(true), "job {id} did not finish");
    (chunks, c.api.job(&id).await)
}

#[tokio::test]
async fn gemini_streams_the_answer_in_order_with_context_and_metadata() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[]).await;
    let workers = c.api.workers().await;
    assert!(workers[0]["kinds"].as_array().unwrap().contains(&json!("ai.query")));
    let prompt = script(json!({"chunks": ["Hel", "lo ", "there"], "gap_ms": 30}), "and now?");
    let (chunks, job) = run(
        &c,
        &fake,
        json!({
            "prompt": prompt, "system": "be brief", "provider": "gemini", "temperature": 0.5,
            "history": [{"role": "user", "text": "hi"}, {"role": "model", "text": "hello"}],
        }),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let texts: Vec<&str> = chunks.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Hel", "lo ", "there"], "streamed in order while being written");
    let seqs: Vec<u64> = chunks.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [0, 1, 2]);
    let r = &job["result"];
    assert_eq!(
        (r["text"].as_str(), r["provider"].as_str(), r["model"].as_str()),
        (Some("Hello there"), Some("gemini"), Some("gemini-2.5-flash"))
    );
    assert_eq!(r["usage"], json!({"prompt_tokens": 7, "output_tokens": 11, "total_tokens": 18}));
    assert_eq!(
        (r["finish_reason"].as_str(), r["cached"].as_bool(), r["timings"]["tries"].as_u64()),
        (Some("STOP"), Some(false), Some(1))
    );
    assert!(r["timings"]["total_ms"].as_u64().unwrap() >= r["timings"]["first_token_ms"].as_u64().unwrap());

    let requests = fake.requests().await;
    let req = requests.last().expect("one request");
    assert_eq!(req.path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    assert_eq!(req.headers.get("x-goog-api-key").map(String::as_str), Some(WORKER_KEY));
    assert_eq!(req.body["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
    assert_eq!(
        req.body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": prompt}]},
        ])
    );
    assert_eq!(req.body["generationConfig"]["temperature"], 0.5);

    // Streaming off: one generateContent call, the same answer; another model per job.
    let (chunks, job) =
        run(&c, &fake, json!({"prompt": "plain", "stream": false, "model": "gemini-pro", "provider": "gemini"})).await;
    assert_eq!(job["result"]["text"], "You said: plain", "{job}");
    assert_eq!(job["result"]["model"], "gemini-pro");
    assert_eq!(chunks.len(), 1, "the whole answer in one piece");
    let requests = fake.requests().await;
    assert_eq!(requests.last().unwrap().path, "/v1beta/models/gemini-pro:generateContent");
}

#[tokio::test]
async fn openai_compatible_endpoints_stream_with_or_without_a_key() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[("OPENAI_MODEL", "llama3")]).await;
    let (chunks, job) = run(
        &c,
        &fake,
        json!({"prompt": "hi there", "provider": "openai", "system": "s",
                                        "history": [{"role": "model", "text": "before"}]}),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(chunks.iter().map(|c| c["text"].as_str().unwrap()).collect::<String>(), "You said: hi there");
    let r = &job["result"];
    assert_eq!(
        (r["provider"].as_str(), r["model"].as_str(), r["finish_reason"].as_str()),
        (Some("openai"), Some("llama3"), Some("stop"))
    );
    assert_eq!(r["usage"]["total_tokens"], 18);
    let req = fake.requests().await.pop().unwrap();
    assert_eq!(req.path, "/v1/chat/completions");
    assert!(!req.headers.contains_key("authorization"), "a local server needs no key");
    assert_eq!(req.body["stream"], true);
    assert_eq!(
        req.body["messages"],
        json!([
            {"role": "system", "content": "s"}, {"role": "assistant", "content": "before"}, {"role": "user", "content": "hi there"}
        ])
    );
    // The job's own key goes as a Bearer token.
    let (status, body) = c
        .api
        .post(
            "/api/jobs",
            &json!({"kind": "ai.query", "params": {"prompt": "keyed", "provider": "openai"}, "api_key": "sk-own"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = c.api.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let req = fake.requests().await.pop().unwrap();
    assert_eq!(req.headers.get("authorization").map(String::as_str), Some("Bearer sk-own"));
}

#[tokio::test]
async fn provider_errors_are_retried_or_explained() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[("FAENA_AI_TRIES", "3"), ("FAENA_AI_CHUNK_TIMEOUT_MS", "400"), ("FAENA_AI_SLOTS", "16")])
        .await;
    let gemini = |s: Value, p: &str| json!({"prompt": script(s, p), "provider": "gemini", "cache": false});
    let openai = |s: Value, p: &str| json!({"prompt": script(s, p), "provider": "openai", "cache": false});
    let cases: Vec<(Value, &str, &str)> = vec![
        (gemini(json!({"fail": [429], "retry_delay_s": 0.3}), "rate"), "succeeded", "tries:2"),
        (gemini(json!({"fail": [503, 504]}), "busy"), "succeeded", "tries:3"),
        (gemini(json!({"fail": [500, 500, 500]}), "down"), "failed", "gave up after 3 tries"),
        (
            json!({"prompt": "x", "provider": "gemini", "model": "missing-model"}),
            "failed",
            "does not know the model \"missing-model\"",
        ),
        (gemini(json!({"block": "SAFETY"}), "blocked"), "failed", "blocked the prompt (blockReason SAFETY)"),
        (gemini(json!({"finish": "SAFETY"}), "unsafe"), "failed", "safety filters"),
        (gemini(json!({"finish": "MAX_TOKENS"}), "long"), "succeeded", "flagged:MAX_TOKENS"),
        (openai(json!({"finish": "length"}), "long"), "succeeded", "flagged:length"),
        (openai(json!({"finish": "content_filter"}), "filtered"), "failed", "content filter"),
        (openai(json!({"fail": [429], "retry_delay_s": 0.2}), "rate"), "succeeded", "tries:2"),
        (json!({"prompt": "x", "provider": "openai", "model": "missing-model"}), "failed", "does not know the model"),
        // Stalled after part of the answer: the next attempt continues it.
        (gemini(json!({"chunks": ["a", "b"], "stall_ms": 3000}), "stall"), "succeeded", "text:ab"),
    ];
    let mut ids = Vec::new();
    for (params, ..) in &cases {
        ids.push(c.api.submit_ok("ai.query", params.clone(), None).await);
    }
    for ((params, state, expect), id) in cases.iter().zip(&ids) {
        let job = c.api.wait_final(id).await;
        assert_eq!(job["state"], *state, "{params}: {job}");
        let r = &job["result"];
        if let Some(tries) = expect.strip_prefix("tries:") {
            assert_eq!(r["timings"]["tries"].to_string(), tries, "{params}: {job}");
        } else if let Some(text) = expect.strip_prefix("text:") {
            assert_eq!(r["text"], text, "{params}: {job}");
            assert_eq!(job["attempts"], 2, "{params}: {job}");
        } else if let Some(flag) = expect.strip_prefix("flagged:") {
            assert!(r["flagged"].as_str().is_some_and(|f| f.starts_with(flag)), "{params}: {job}");
            assert!(!r["text"].as_str().unwrap_or_default().is_empty());
        } else {
            assert!(job["error"].as_str().is_some_and(|e| e.contains(expect)), "{params}: {job}");
        }
    }
    // A 429 waited the delay the provider asked for before the second try.
    let log = std::fs::read_to_string(c.dir.path().join("worker-ai.log")).unwrap_or_default();
    assert!(log.contains("wait_ms=300"), "RetryInfo.retryDelay honoured: {log}");
    // Watchers are told while it waits: which provider, what it said, when
    // it is asked again, and which try that will be — before any text.
    let (progress, job) = run(&c, &fake, gemini(json!({"fail": [429], "retry_delay_s": 0.3}), "watched")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let status = &progress[0];
    assert_eq!(
        (&status["status"], &status["provider"], &status["retry_in_ms"], &status["attempt"], &status["tries"]),
        (&json!("retrying"), &json!("gemini"), &json!(300), &json!(2), &json!(3)),
        "{progress:?}"
    );
    assert!(status["error"].as_str().is_some_and(|e| e.contains("429")), "{status}");
    assert!(progress[1..].iter().all(|p| p.get("seq").is_some()), "then only the answer: {progress:?}");
    // A bad or forbidden key (the job's own here) is explained, not retried.
    for (key, says) in
        [("bad-key", "rejected the API key"), ("forbidden-key", "refused access (403 PERMISSION_DENIED)")]
    {
        let params = json!({"prompt": "k", "provider": "gemini", "cache": false});
        let (status, body) =
            c.api.post("/api/jobs", &json!({"kind": "ai.query", "params": params, "api_key": key})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let job = c.api.wait_final(body["id"].as_str().unwrap()).await;
        assert!(job["error"].as_str().is_some_and(|e| e.contains(says)), "{job}");
    }
}

#[tokio::test]
async fn a_jobs_own_key_never_reaches_the_broker_the_store_or_a_log() {
    const MARKER: &str = "MARKER-KEY-6f1d2c0b9a";
    let fake = FakeAi::start().await;
    let mut c = Cluster::start(MasterOpts::default()).await;
    // Capture everything on the broker, from before the worker exists (the
    // master's own account reads every topic).
    let login = Some(faena_testkit::embedded_login(faena_common::broker::MASTER_CLIENT_ID));
    let mut spy = Listener::start_with(&c.addrs.mqtt, "spy", "#", login).await;
    let base = fake.gemini_base();
    c.add_worker_with("ai", 1, &[("GEMINI_BASE_URL", base.as_str()), ("FAENA_LOG", "debug")]).await;
    c.wait_workers(1).await;
    let (status, body) = c
        .api
        .post(
            "/api/jobs",
            &json!({"kind": "ai.query", "params": {"prompt": "secret test", "provider": "gemini"}, "api_key": MARKER}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let job = c.api.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let req = fake.requests().await.pop().unwrap();
    assert_eq!(req.headers.get("x-goog-api-key").map(String::as_str), Some(MARKER), "the key did its job");
    // The unit said which secret to fetch, not what it is.
    let mut messages = Vec::new();
    let saw_unit = eventually("the unit on the broker", || {
        while let Ok((topic, payload)) = spy.messages.try_recv() {
            messages.push(format!("{topic} {}", String::from_utf8_lossy(&payload)));
        }
        let found = messages.iter().any(|m| m.contains("workers/ai/jobs") && m.contains("\"secrets\":[\"api_key\"]"));
        async move { found.then_some(()) }
    });
    saw_unit.await;
    c.worker("ai").terminate().await;
    while let Ok((topic, payload)) = spy.messages.try_recv() {
        messages.push(format!("{topic} {}", String::from_utf8_lossy(&payload)));
    }
    assert!(messages.len() > 3, "the spy saw the traffic: {messages:?}");
    for m in &messages {
        assert!(!m.contains(MARKER), "the key went over MQTT: {m}");
    }
    let logs = [c.master_log(), std::fs::read_to_string(c.dir.path().join("worker-ai.log")).unwrap_or_default()];
    assert!(logs[1].contains("DEBUG"), "the worker logged at debug level");
    for log in &logs {
        assert!(!log.contains(MARKER), "the key went into a log");
    }
    for path in [format!("/api/jobs/{id}"), format!("/api/jobs/{id}/history")] {
        assert!(!c.api.text(&path).await.contains(MARKER), "{path} shows the key");
    }
    c.master().terminate().await;
    for entry in std::fs::read_dir(c.dir.path().join("data")).expect("data dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).unwrap_or_default();
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "the key is in the store");
    }
}

#[tokio::test]
async fn cancelling_a_job_stops_the_provider_stream() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[]).await;
    let chunks: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let params = json!({"prompt": script(json!({"chunks": chunks, "gap_ms": 250}), "slow"), "provider": "gemini"});
    let id = c.api.submit_ok("ai.query", params, None).await;
    let mut events = c.api.events(&id).await;
    let first = tokio::time::timeout(WAIT, async {
        while let Some((name, _)) = events.next().await {
            if name == "progress" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(first, Ok(true));
    assert_eq!(c.api.cancel(&id).await.0, StatusCode::OK);
    eventually("the worker hung up on the provider", || async { (fake.hung_up() >= 1).then_some(()) }).await;
    assert_eq!(c.api.job(&id).await["state"], "cancelled");
}

#[tokio::test]
async fn without_a_provider_the_capability_is_not_offered_and_jobs_say_why_they_wait() {
    let fake = FakeAi::start().await;
    let opts =
        MasterOpts { extra: vec![("FAENA_NO_WORKER_TIMEOUT_MS".into(), "1500".into())], ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    c.add_worker("plain", 1).await;
    let base = fake.gemini_base();
    c.add_worker_with("gem", 1, &[("GEMINI_BASE_URL", base.as_str()), ("GEMINI_API_KEY", "k")]).await;
    let workers = c.wait_workers(2).await;
    let plain = workers.iter().find(|w| w["id"] == "plain").unwrap();
    assert!(!plain["kinds"].as_array().unwrap().contains(&json!("ai.query")));
    assert_eq!((plain["ai_slots"].as_u64(), plain["ai_providers"].clone()), (Some(0), json!([])));
    let gem = workers.iter().find(|w| w["id"] == "gem").unwrap();
    assert_eq!(gem["ai_providers"], json!(["gemini"]), "{gem}");
    // Nobody offers OpenAI: the job says why it waits, then fails.
    let id = c.api.submit_ok("ai.query", json!({"prompt": "hi", "provider": "openai"}), None).await;
    let job = c.api.job(&id).await;
    assert_eq!(job["state"], "queued");
    assert_eq!(job["waiting"], "no registered worker runs ai.query (provider openai)", "{job}");
    // ... without holding up the Gemini jobs behind it.
    let other = c.api.submit_ok("ai.query", json!({"prompt": "hi", "provider": "gemini"}), None).await;
    assert_eq!(c.api.wait_final(&other).await["state"], "succeeded");
    let job = c.api.wait_final(&id).await;
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("no worker that runs ai.query (provider openai) registered within 1s"),
        "{job}"
    );
}

#[tokio::test]
async fn repeated_questions_are_answered_from_the_cache_and_say_so() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[]).await;
    let params = json!({"prompt": "what is RandomX?", "provider": "gemini", "system": "short"});
    let (_, first) = run(&c, &fake, params.clone()).await;
    assert_eq!(first["result"]["cached"], false);
    let (_, second) = run(&c, &fake, params.clone()).await;
    assert_eq!(second["state"], "succeeded");
    assert_eq!(second["result"]["cached"], true, "{second}");
    assert_eq!(second["result"]["text"], first["result"]["text"]);
    assert_eq!(fake.requests().await.len(), 1, "the provider was asked once");
    // Not for another system instruction, nor when the job opts out.
    run(&c, &fake, json!({"prompt": "what is RandomX?", "provider": "gemini", "system": "long"})).await;
    let mut no_cache = params.clone();
    no_cache["cache"] = json!(false);
    let (_, third) = run(&c, &fake, no_cache).await;
    assert_eq!(third["result"]["cached"], false);
    assert_eq!(fake.requests().await.len(), 3);
}

#[tokio::test]
async fn an_answer_made_with_a_submitters_own_key_is_nobody_elses() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[]).await;
    let params = json!({"prompt": "what did my key pay for?", "provider": "gemini"});
    // With a key of their own: the provider is asked, with that key, each time.
    for _ in 0..2 {
        let (status, body) =
            c.api.post("/api/jobs", &json!({"kind": "ai.query", "params": params, "api_key": "own-key"})).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let job = c.api.wait_final(body["id"].as_str().unwrap()).await;
        assert_eq!((job["state"].as_str(), job["result"]["cached"].as_bool()), (Some("succeeded"), Some(false)));
    }
    // Another submitter asking the same is not answered from it.
    let (_, other) = run(&c, &fake, params.clone()).await;
    assert_eq!(other["result"]["cached"], false, "{other}");
    assert_eq!(fake.requests().await.len(), 3, "the provider answered every one");
    // Their own repeated question still is (the cache works per submitter).
    let (_, again) = run(&c, &fake, params).await;
    assert_eq!(again["result"]["cached"], true, "{again}");
}

#[tokio::test]
async fn ai_slots_bound_concurrent_queries_apart_from_other_work() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[("FAENA_AI_SLOTS", "3")]).await;
    let ids: Vec<String> = futures::future::join_all((0..7).map(|i| {
        let params = json!({"prompt": script(json!({"hold": "go"}), &format!("q{i}")), "provider": "gemini"});
        let api = c.api.clone();
        async move { api.submit_ok("ai.query", params, None).await }
    }))
    .await;
    // The fake holds every answer: three are asked, the rest wait their turn.
    eventually("three questions reach the provider", || async { (fake.in_flight() == 3).then_some(()) }).await;
    // A noop job runs on the worker's one ordinary slot meanwhile.
    let noop = c.api.submit_ok("noop", json!({"payload": 1}), None).await;
    assert_eq!(c.api.wait_final(&noop).await["state"], "succeeded");
    assert_eq!(fake.in_flight(), 3, "no fourth question while three are open");
    fake.release("go").await;
    for id in &ids {
        assert_eq!(c.api.wait_final(id).await["state"], "succeeded");
    }
    assert_eq!(fake.max_in_flight(), 3, "three AI slots, three queries at once");
}

#[tokio::test]
async fn unreachable_providers_and_bad_requests_get_clear_answers() {
    let closed = format!("http://127.0.0.1:{}", faena_testkit::free_port());
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker_with("ai", 1, &[("OPENAI_BASE_URL", closed.as_str()), ("FAENA_AI_TRIES", "2")]).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("ai.query", json!({"prompt": "anyone?"}), None).await;
    let job = c.api.wait_final(&id).await;
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot connect to the OpenAI-compatible server") && error.contains("gave up after 2 tries"),
        "{job}"
    );
    // Oversized or malformed queries are refused at the door, with the reason.
    let big = "x".repeat(40 * 1024);
    for (body, says) in [
        (json!({"kind": "ai.query", "params": {"prompt": big}}), "the limit is 32768"),
        (json!({"kind": "ai.query", "params": {"prompt": "x", "provider": "claude"}}), "unknown variant `claude`"),
        (json!({"kind": "noop", "params": {}, "api_key": "k"}), "only used by ai.query"),
        (json!({"kind": "ai.query", "params": {"prompt": "x"}, "api_key": ""}), "api_key must be"),
        // A URL parser reads `\` as `/`: the model would leave its path.
        (json!({"kind": "ai.query", "params": {"prompt": "x", "model": "..\\..\\files"}}), "model must be"),
        (json!({"kind": "ai.query", "params": {"prompt": "x", "model": "m%2F..%2Fx"}}), "model must be"),
    ] {
        let (status, answer) = c.api.post("/api/jobs", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{answer}");
    }
}

#[tokio::test]
async fn a_job_whose_own_key_was_lost_in_a_restart_fails_instead_of_using_another() {
    let fake = FakeAi::start().await;
    let mut c = Cluster::start(MasterOpts::default()).await;
    // Accepted while no worker can run it, so it waits in the store.
    let (status, body) = c
        .api
        .post(
            "/api/jobs",
            &json!({"kind": "ai.query", "params": {"prompt": "mine only", "provider": "gemini"}, "api_key": "own-key"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    c.master().terminate().await;
    c.restart_master().await;
    let base = fake.gemini_base();
    c.add_worker_with("ai", 1, &[("GEMINI_BASE_URL", base.as_str()), ("GEMINI_API_KEY", WORKER_KEY)]).await;
    let job = c.api.wait_final(&id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("no longer held by the master"), "{job}");
    assert!(fake.requests().await.is_empty(), "nothing was sent with the worker's key");
    // Clients cannot set the marker themselves.
    let (status, _) =
        c.api.post("/api/jobs", &json!({"kind": "ai.query", "params": {"prompt": "x", "own_key": true}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
