//! `ai.query` with the `local` provider: the real default model
//! (SmolLM2-135M-Instruct, fetched by `scripts/fetch-model.sh`) run by
//! llama.cpp inside a real worker, at temperature 0 so answers are stable:
//! streamed in pieces, `max_tokens` flagged, cancel stops generation, the
//! history reaches the prompt, the provider is offered to the master, and
//! an unavailable provider (a fake Gemini answering 503) hands over to it.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::api::is_final;
use faena_testkit::{Cluster, FakeAi, MasterOpts, WAIT, eventually, local_model};
use serde_json::{Value, json};

/// One worker with the local model alone (no key, no network), one AI slot.
async fn cluster() -> Cluster {
    let model = local_model();
    let mut c = Cluster::start(MasterOpts::default()).await;
    let model = model.display().to_string();
    c.add_worker_with("local", 1, &[("FAENA_LOCAL_MODEL", model.as_str()), ("FAENA_AI_SLOTS", "1")]).await;
    c.wait_workers(1).await;
    c
}

/// Submits and returns (the pieces streamed, the finished job).
async fn run(c: &Cluster, params: Value) -> (Vec<String>, Value) {
    let (pieces, _, job) = run_watched(c, params).await;
    (pieces, job)
}

/// Submits and returns (the pieces streamed, the waits reported, the finished job).
async fn run_watched(c: &Cluster, params: Value) -> (Vec<String>, Vec<Value>, Value) {
    let id = c.api.submit_ok("ai.query", params, None).await;
    let mut events = c.api.events(&id).await;
    let (mut pieces, mut waits) = (Vec::new(), Vec::new());
    let done = tokio::time::timeout(WAIT, async {
        while let Some((name, data)) = events.next().await {
            match name.as_str() {
                "progress" => match data["data"]["text"].as_str() {
                    Some(text) => pieces.push(text.to_owned()),
                    None => waits.push(data["data"].clone()),
                },
                n if is_final(n) => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert_eq!(done, Ok(true), "job {id} did not finish");
    (pieces, waits, c.api.job(&id).await)
}

#[tokio::test]
async fn the_local_model_answers_streamed_and_stops_at_max_tokens() {
    let c = cluster().await;
    let workers = c.api.workers().await;
    assert_eq!(workers[0]["ai_providers"], json!(["local"]), "{workers:?}");

    let ask = json!({"prompt": "What is the capital of France? Answer in one sentence.", "temperature": 0, "provider": "local"});
    let (pieces, job) = run(&c, ask.clone()).await;
    let result = &job["result"];
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(result["provider"], "local");
    assert_eq!(result["model"], "SmolLM2-135M-Instruct.Q4_1");
    assert!(pieces.len() >= 2, "streamed in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), result["text"].as_str().unwrap_or_default(), "the pieces make the answer");
    assert!(result["text"].as_str().is_some_and(|t| t.contains("Paris")), "{result}");
    assert_eq!(result["finish_reason"], "stop");
    assert!(result["usage"]["output_tokens"].as_u64().is_some_and(|n| n > 1), "{result}");
    // Temperature 0: the same question gets the same answer (not from the cache).
    let again = json!({"prompt": ask["prompt"], "temperature": 0, "provider": "local", "cache": false});
    let (_, job2) = run(&c, again).await;
    assert_eq!(job2["result"]["text"], result["text"]);

    let short = json!({"prompt": "Tell me a long story about a dragon.", "temperature": 0, "max_tokens": 5});
    let (pieces, job) = run(&c, short).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["finish_reason"], "length");
    assert!(job["result"]["flagged"].as_str().is_some_and(|f| f.contains("token limit")), "{job}");
    assert_eq!(job["result"]["usage"]["output_tokens"], 5);
    assert!(!pieces.is_empty());
}

#[tokio::test]
async fn a_stop_sequence_ends_the_answer_and_a_prefix_is_continued() {
    let c = cluster().await;
    let ask = json!({"prompt": "What is the capital of France? Answer in one sentence.", "temperature": 0,
        "provider": "local", "cache": false, "max_tokens": 60});
    let (_, whole) = run(&c, ask.clone()).await;
    let text = whole["result"]["text"].as_str().unwrap_or_default().to_owned();
    let cut = text.find("Paris").unwrap_or_else(|| panic!("the model knows: {text:?}"));
    // Stopped before "Paris": nothing of it or after it.
    let mut stopped = ask.clone();
    stopped["stop"] = json!(["Paris"]);
    let (pieces, job) = run(&c, stopped).await;
    assert_eq!(job["result"]["text"].as_str(), Some(&text[..cut]), "{job}");
    assert_eq!(pieces.concat(), text[..cut]);
    assert_eq!(job["result"]["finish_reason"], "stop");
    // Given the start of the answer, the model writes on from it: the
    // result is the whole answer, and only the rest is streamed.
    let mut continued = ask.clone();
    continued["prefix"] = json!(&text[..cut]);
    let (pieces, job) = run(&c, continued).await;
    let again = job["result"]["text"].as_str().unwrap_or_default();
    assert!(again.starts_with(&text[..cut]) && again.len() > cut, "{job}");
    assert_eq!(pieces.concat(), again[cut..], "only what it wrote on from the prefix is streamed");
}

#[tokio::test]
async fn history_reaches_the_prompt_and_cancel_stops_generation() {
    let c = cluster().await;
    let plain = json!({"prompt": "What is my name?", "temperature": 0, "max_tokens": 8, "cache": false});
    let (_, alone) = run(&c, plain.clone()).await;
    let mut with_history = plain.clone();
    with_history["history"] = json!([
        {"role": "user", "text": "Hello! My name is Zorblax Quintavius."},
        {"role": "model", "text": "Nice to meet you, Zorblax Quintavius."}
    ]);
    with_history["system"] = json!("You are a helpful assistant.");
    let (_, remembered) = run(&c, with_history).await;
    let tokens = |j: &Value| j["result"]["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!(
        tokens(&remembered) > tokens(&alone) + 15,
        "the history and system turns went into the prompt: {} vs {}",
        tokens(&remembered),
        tokens(&alone)
    );

    // A long answer, cancelled once its first pieces have come.
    let long = json!({"prompt": "Write a very long essay about the history of Rome.", "temperature": 0, "max_tokens": 3000, "cache": false});
    let id = c.api.submit_ok("ai.query", long, None).await;
    let mut events = c.api.events(&id).await;
    let mut seen = 0;
    while let Some((name, _)) = tokio::time::timeout(WAIT, events.next()).await.expect("events") {
        if name == "progress" {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
    let (status, _) = c.api.cancel(&id).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(c.api.wait_final(&id).await["state"], "cancelled");
    let said = eventually("the worker stops generating", || {
        let log = c.worker_log("local");
        async move { log.contains("local model stopped: cancelled").then_some(log) }
    })
    .await;
    assert!(said.contains("local model stopped: cancelled"));
    // The slot is free again: the next question runs at once.
    let (_, next) = run(&c, json!({"prompt": "Say hi.", "temperature": 0, "max_tokens": 4})).await;
    assert_eq!(next["state"], "succeeded", "{next}");
}

#[tokio::test]
async fn an_unavailable_provider_hands_over_to_the_next_but_a_bad_request_does_not() {
    let fake = FakeAi::start().await;
    let (base, model) = (fake.gemini_base(), local_model().display().to_string());
    let mut c = Cluster::start(MasterOpts::default()).await;
    let env = [("GEMINI_BASE_URL", base.as_str()), ("GEMINI_API_KEY", "k"), ("FAENA_LOCAL_MODEL", model.as_str())];
    c.add_worker_with("both", 1, &env).await;
    c.wait_workers(1).await;
    assert_eq!(c.api.workers().await[0]["ai_providers"], json!(["gemini", "local"]));

    // Gemini is down for good (every try 503): the job's order moves on to
    // local at once, and the result says who answered and who was tried.
    let down = r#"[[fake {"fail": [503, 503, 503, 503, 503, 503]}]] What is two plus two?"#;
    let ask = |prompt: &str, order: Value| json!({"prompt": prompt, "providers": order, "temperature": 0, "max_tokens": 12, "cache": false});
    let (pieces, waits, job) = run_watched(&c, ask(down, json!(["gemini", "local"]))).await;
    let r = &job["result"];
    // Watchers heard of the hand-over as it happened.
    assert_eq!(
        (&waits[0]["status"], &waits[0]["provider"], &waits[0]["next"]),
        (&json!("falling_back"), &json!("gemini"), &json!("local")),
        "{waits:?}"
    );
    assert_eq!((job["state"].as_str(), r["provider"].as_str()), (Some("succeeded"), Some("local")), "{job}");
    assert_eq!(r["tried"][0]["provider"], "gemini", "{job}");
    assert!(r["tried"][0]["error"].as_str().is_some_and(|e| e.contains("503")), "{job}");
    assert!(!pieces.is_empty());
    // No order in the job: the worker's own (gemini, then local) does the same.
    let (_, job) = run(&c, json!({"prompt": down, "temperature": 0, "max_tokens": 12, "cache": false})).await;
    assert_eq!(job["result"]["provider"], "local", "{job}");
    let log = c.worker_log("both");
    assert!(log.contains("AI provider unavailable; trying the next"), "{log}");

    // A bad request is the asker's to fix: no fallback, the job fails saying why.
    let bad = r#"[[fake {"fail": [400]}]] What is two plus two?"#;
    let (pieces, job) = run(&c, ask(bad, json!(["gemini", "local"]))).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().is_some_and(|e| e.contains("Gemini rejected the request")), "{job}");
    assert!(pieces.is_empty(), "local never answered: {pieces:?}");
    // An order that names a provider twice is refused at the door.
    let (status, body) =
        c.api.submit("ai.query", json!({"prompt": "x", "providers": ["gemini", "gemini"]}), None).await;
    assert_eq!(status, 400, "{body}");
}
