//! The OpenAI API (`/v1/*`) end to end: a real master and workers in front
//! of the fake Gemini/OpenAI server. Streamed and whole answers in
//! OpenAI's format, models, keys (hashed, limited, counted, revoked), the
//! queue instead of a 429 (and the honest 429 after the wait), a client
//! that hangs up, and an answer that goes on when its provider is cut off
//! or its worker is killed. The official `openai` package and LiteLLM are
//! run against it by `scripts/openai-clients.sh`.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::{Cluster, FakeAi, MasterOpts, WAIT, eventually};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

const API_TOKEN: &str = "openai-test-api-token";

fn script(s: Value, prompt: &str) -> String {
    format!("[[fake {s}]] {prompt}")
}

async fn cluster(fake: &FakeAi, master: &[(&str, &str)], worker: &[(&str, &str)]) -> Cluster {
    let mut opts = MasterOpts::default();
    opts.extra.extend(master.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let mut c = Cluster::start_with_api_token(opts, API_TOKEN).await;
    let (gemini, openai) = (fake.gemini_base(), fake.openai_base());
    let mut env = vec![
        ("GEMINI_BASE_URL", gemini.as_str()),
        ("GEMINI_API_KEY", "worker-key"),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("OPENAI_MODEL", "fake-gpt"),
    ];
    env.extend_from_slice(worker);
    c.add_worker_with("ai", 1, &env).await;
    c.wait_workers(1).await;
    c
}

fn client() -> reqwest::Client {
    faena_common::tls::http_client().no_proxy().build().expect("client")
}

async fn chat(c: &Cluster, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("http://{}/v1/chat/completions", c.addrs.http))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("a response")
}

/// The `data:` payloads of an OpenAI stream, up to and including `[DONE]`.
async fn data_of(resp: reqwest::Response) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(d) = line.strip_prefix("data: ") {
                    out.push(d.to_owned());
                }
            }
        }
    }
    out
}

/// A chat request sent while the test goes on.
fn in_background(c: &Cluster, body: Value) -> tokio::task::JoinHandle<reqwest::Response> {
    let url = format!("http://{}/v1/chat/completions", c.addrs.http);
    tokio::spawn(async move { client().post(url).bearer_auth(API_TOKEN).json(&body).send().await.expect("a response") })
}

/// Waits until `path` lists exactly one job.
async fn one_job(c: &Cluster, path: &str) {
    eventually(path, || async {
        c.api.get(path).await.1["jobs"].as_array().is_some_and(|j| j.len() == 1).then_some(())
    })
    .await;
}

fn content(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

fn user(prompt: &str) -> Value {
    json!([{"role": "user", "content": prompt}])
}

#[tokio::test]
async fn chat_completions_whole_and_streamed_in_openais_format() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[], &[]).await;
    // Models: what the workers offer, as provider/model.
    let (_, models) = c.api.get("/v1/models").await;
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gemini/gemini-2.5-flash", "openai/fake-gpt"], "{models}");
    assert_eq!((models["object"].as_str(), models["data"][0]["object"].as_str()), (Some("list"), Some("model")));

    let body = json!({"model": "gemini", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and now?"}], "max_tokens": 30});
    let resp = chat(&c, API_TOKEN, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let whole: Value = resp.json().await.unwrap();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(
        whole["choices"][0]["message"],
        json!({"role": "assistant", "content": "You said: and now?", "refusal": null})
    );
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert_eq!(whole["usage"], json!({"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}));
    assert_eq!(whole["model"], "gemini/gemini-2.5-flash");
    let sent = fake.requests().await.pop().unwrap().body;
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "be brief");
    assert_eq!(sent["contents"].as_array().unwrap().len(), 3, "history and prompt: {sent}");
    // It was a job: listed, in the operator's group.
    let job = c.api.job(whole["faena"]["job"].as_str().unwrap()).await;
    assert_eq!((job["kind"].as_str(), job["options"]["group"].as_str()), (Some("ai.query"), Some("ai")), "{job}");

    let prompt = script(json!({"chunks": ["Hel", "lo ", "there"], "gap_ms": 20}), "x");
    let body = json!({"model": "openai/fake-gpt", "messages": user(&prompt), "stream": true,
        "stream_options": {"include_usage": true}, "stop": ["zzz"]});
    let resp = chat(&c, API_TOKEN, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let data = data_of(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(content(&chunks), "Hello there");
    let fin = &chunks[chunks.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    assert_eq!(fin["faena"]["providers"], json!(["openai"]));
    let usage = chunks.last().unwrap();
    assert_eq!((usage["choices"].clone(), usage["usage"]["total_tokens"].clone()), (json!([]), json!(18)));
    assert_eq!(fake.requests().await.pop().unwrap().body["stop"], json!(["zzz"]));

    // OpenAI's errors.
    let resp = chat(&c, API_TOKEN, json!({"model": "gpt-9", "messages": user("x")})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["type"].as_str()),
        (Some("model_not_found"), Some("invalid_request_error"))
    );
    let resp = chat(&c, "wrong", json!({"model": "auto", "messages": user("x")})).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let resp = chat(&c, API_TOKEN, json!({"model": "auto", "messages": [{"role": "assistant", "content": "x"}]})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Each is counted by how it was answered.
    let metrics = c.api.text("/metrics").await;
    for (answer, n) in [("ok", 2), ("model_not_found", 1), ("invalid_api_key", 1), ("invalid_message", 1)] {
        let line = format!("faena_openai_requests_total{{answer=\"{answer}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn keys_are_shown_once_limited_counted_and_revoked() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[], &[]).await;
    let (status, made) =
        c.api.post("/api/keys", &json!({"name": "team-a", "tokens_per_day": 30, "models": ["gemini"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("fk-") && key.len() == 67, "{key}");
    let (status, _) = c.api.post("/api/keys", &json!({"name": "team-a"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The key itself is nowhere: not listed, not stored.
    let (_, list) = c.api.get("/api/keys").await;
    assert!(!list.to_string().contains(&key) && list["keys"][0].get("hash").is_none(), "{list}");
    let db = std::fs::read(c.dir.path().join("data/faena.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(&key));

    let ask = |model: &str| json!({"model": model, "messages": user("count me")});
    let resp = chat(&c, &key, ask("openai")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "only gemini for this key");
    let resp = chat(&c, &key, ask("gemini")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answer: Value = resp.json().await.unwrap();
    let job = c.api.job(answer["faena"]["job"].as_str().unwrap()).await;
    assert_eq!(job["options"]["group"], "ai:team-a", "{job}");
    let resp = chat(&c, &key, ask("gemini")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // 36 tokens spent of 30: the next is over budget.
    let resp = chat(&c, &key, ask("gemini")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["type"].as_str()),
        (Some("insufficient_quota"), Some("insufficient_quota"))
    );
    let (_, list) = c.api.get("/api/keys").await;
    assert_eq!(
        list["keys"][0]["today"],
        json!({"prompt_tokens": 14, "completion_tokens": 22, "requests": 2}),
        "{list}"
    );
    // Revoked: refused at once, still listed.
    let (status, _) = c.api.delete("/api/keys/team-a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat(&c, &key, ask("gemini")).await.status(), StatusCode::UNAUTHORIZED);
    let (_, list) = c.api.get("/api/keys").await;
    assert!(list["keys"][0]["revoked_at"].is_string(), "{list}");
    // Only with the API token.
    let anonymous = faena_testkit::api::Api::new(&c.addrs.http);
    assert_eq!(anonymous.get("/api/keys").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_busy_cluster_queues_the_request_then_answers_429_after_the_wait() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[("FAENA_AI_QUEUE_WAIT_MS", "1500")], &[("FAENA_AI_SLOTS", "1")]).await;
    let held = json!({"model": "gemini", "messages": user(&script(json!({"hold": "slot"}), "first"))});
    let first = in_background(&c, held);
    eventually("the first request at the provider", || async { (fake.in_flight() == 1).then_some(()) }).await;
    // The second waits in the queue, visible there, then gets an honest 429.
    let second = in_background(&c, json!({"model": "gemini", "messages": user("second")}));
    one_job(&c, "/api/jobs?state=queued").await;
    let resp = second.await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limit_exceeded", "{e}");
    // Its job went; the first still answers.
    one_job(&c, "/api/jobs?state=cancelled").await;
    fake.release("slot").await;
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_job() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[], &[]).await;
    let prompt = script(json!({"chunks": ["a ", "b ", "c "], "gap_ms": 60_000}), "slow");
    let resp = chat(&c, API_TOKEN, json!({"model": "gemini", "messages": user(&prompt), "stream": true})).await;
    let mut body = resp.bytes_stream();
    // Its first piece, not the role the master sends at once: the provider
    // is streaming (hanging up sooner may cancel the job before the worker
    // asked the provider, and then there is no stream to drop).
    let mut text = String::new();
    while !text.contains(r#""content":"a ""#) {
        text.push_str(&String::from_utf8_lossy(&body.next().await.expect("a chunk").expect("bytes")));
    }
    assert!(text.contains("chat.completion.chunk"), "{text}");
    drop(body);
    one_job(&c, "/api/jobs?state=cancelled").await;
    eventually("the provider's stream dropped", || async { (fake.hung_up() == 1).then_some(()) }).await;
}

#[tokio::test]
async fn an_answer_cut_off_mid_stream_goes_on_from_the_next_provider() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[], &[]).await;
    let chunks: Vec<String> = (0..60).map(|i| format!("w{i} ")).collect();
    let whole: String = chunks.concat();
    for (how, cut) in [("cut_after", "connection"), ("error_after", "5xx")] {
        let prompt = script(json!({"chunks": chunks, how: 40}), cut);
        let body =
            json!({"model": "auto", "providers": ["gemini", "openai"], "messages": user(&prompt), "stream": true});
        let data = data_of(chat(&c, API_TOKEN, body).await).await;
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{cut}: one stream to its end");
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(content(&chunks), whole, "{cut}: every word once, in order");
        let fin = chunks.last().unwrap();
        assert_eq!(fin["faena"]["providers"], json!(["gemini", "openai"]), "{cut}: {fin}");
        // The continuation asked with the text so far as the assistant's turn.
        let sent = fake.requests().await.pop().unwrap().body;
        let prefix = &whole[..whole.find("w40").unwrap()];
        assert_eq!(
            sent["messages"].as_array().unwrap().last().unwrap(),
            &json!({"role": "assistant", "content": prefix})
        );
    }
}

#[tokio::test]
async fn an_answer_whose_worker_is_killed_goes_on_from_another_worker() {
    let fake = FakeAi::start().await;
    let mut c = cluster(&fake, &[], &[]).await;
    let chunks: Vec<String> = (0..30).map(|i| format!("w{i} ")).collect();
    let whole: String = chunks.concat();
    let prompt = script(json!({"chunks": chunks, "gap_ms": 100}), "long");
    let resp = chat(&c, API_TOKEN, json!({"model": "openai", "messages": user(&prompt), "stream": true})).await;
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("w5 ") {
        text.push_str(&String::from_utf8_lossy(&body.next().await.unwrap().unwrap()));
    }
    // A watcher of the job hears that it went back to the queue, to go on.
    let (_, running) = c.api.get("/api/jobs?state=running").await;
    let mut watch = c.api.events(running["jobs"][0]["id"].as_str().unwrap()).await;
    c.worker("ai").kill9().await;
    let requeued = tokio::time::timeout(WAIT, async {
        loop {
            match watch.next().await {
                Some((name, data)) if name == "requeued" => return data,
                Some(_) => {}
                None => panic!("the job's events ended"),
            }
        }
    })
    .await
    .expect("requeued");
    assert_eq!(requeued["continues"], true, "{requeued}");
    let (gemini, openai) = (fake.gemini_base(), fake.openai_base());
    let env =
        [("OPENAI_BASE_URL", openai.as_str()), ("GEMINI_BASE_URL", gemini.as_str()), ("OPENAI_MODEL", "fake-gpt")];
    c.add_worker_with("ai2", 1, &env).await;
    let rest = tokio::time::timeout(WAIT, async {
        while let Some(Ok(b)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&b));
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|b| b.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(content(&chunks), whole, "one answer, every word once");
    assert!(text.ends_with("data: [DONE]\n\n"));
    // The new worker continued the answer: it asked with the text so far.
    let asked = fake.requests().await.pop().unwrap().body;
    let last = asked["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "assistant", "{asked}");
    assert!(last["content"].as_str().unwrap().starts_with("w0 w1 w2 w3 w4 w5 "), "{last}");
}

#[tokio::test]
async fn the_official_openai_package_and_litellm_work_against_it() {
    let fake = FakeAi::start().await;
    let c = cluster(&fake, &[], &[]).await;
    let (status, made) = c.api.post("/api/keys", &json!({"name": "python"})).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/openai-clients/run.sh");
    let base = format!("http://{}/v1", c.addrs.http);
    let run = tokio::process::Command::new(script)
        .args([base.as_str(), made["key"].as_str().unwrap(), "gemini"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run).await.expect("in time").expect("ran");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("ok litellm: streamed chat"), "{said}");
}
