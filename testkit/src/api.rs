//! A small client of the master's REST API, with an SSE reader so tests wait
//! on job events rather than polling.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::WAIT;

#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(addr: &str) -> Self {
        Self::with_headers(addr, reqwest::header::HeaderMap::new())
    }

    /// A client that sends `Authorization: Bearer <token>` (a master with `FAENA_API_TOKEN`).
    pub fn with_token(addr: &str, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Self::with_headers(addr, headers)
    }

    fn with_headers(addr: &str, headers: reqwest::header::HeaderMap) -> Self {
        let http = faena_common::tls::http_client().no_proxy().default_headers(headers).build().expect("client");
        Self { base: format!("http://{addr}"), http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self.http.post(self.url(path)).json(body).send().await.expect("POST");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs `body` as it is, said to be JSON (malformed or oversized bodies).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Like [`Api::post_raw`], but `None` when the connection broke before an
    /// answer (a server may reset it after rejecting a body it did not read).
    /// It uses a connection of its own, so one the server closes does not
    /// poison the pool the other calls share.
    pub async fn try_post_raw(&self, path: &str, body: Vec<u8>) -> Option<(StatusCode, Value)> {
        let once = faena_common::tls::http_client().no_proxy().pool_max_idle_per_host(0).build().ok()?;
        let resp = once.post(self.url(path)).header("content-type", "application/json").body(body).send().await.ok()?;
        let status = resp.status();
        Some((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs a body the server refuses unread (too large), on fresh
    /// connections until one gets its answer before the server resets it;
    /// panics after 20 resets.
    pub async fn post_refused(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        for _ in 0..20 {
            if let Some(answer) = self.try_post_raw(path, body.clone()).await {
                return answer;
            }
        }
        panic!("POST {path}: the connection broke before an answer, 20 times");
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn text(&self, path: &str) -> String {
        self.http.get(self.url(path)).send().await.expect("GET").text().await.unwrap_or_default()
    }

    pub async fn submit(&self, kind: &str, params: Value, priority: Option<&str>) -> (StatusCode, Value) {
        let mut body = json!({"kind": kind, "params": params});
        if let Some(p) = priority {
            body["priority"] = json!(p);
        }
        self.post("/api/jobs", &body).await
    }

    /// Submits and returns the id, asserting a 202.
    pub async fn submit_ok(&self, kind: &str, params: Value, priority: Option<&str>) -> String {
        let (status, body) = self.submit(kind, params, priority).await;
        assert_eq!(status, StatusCode::ACCEPTED, "submit answered {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Submits `n` `noop` jobs (`{"payload": i}`) and waits for each to
    /// succeed; their ids, in the order submitted.
    pub async fn run_noops(&self, n: usize) -> Vec<String> {
        let mut ids = vec![];
        for i in 0..n {
            ids.push(self.submit_ok("noop", serde_json::json!({"payload": i}), None).await);
        }
        for id in &ids {
            assert_eq!(self.wait_final(id).await["state"], "succeeded");
        }
        ids
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/jobs/{id}")).await.1
    }

    pub async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        self.delete(&format!("/api/jobs/{id}")).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.delete(self.url(path)).send().await.expect("DELETE");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PATCH, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self.http.request(method.clone(), self.url(path)).json(body).send().await.expect("{method}");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn workers(&self) -> Vec<Value> {
        self.get("/api/workers").await.1["workers"].as_array().cloned().unwrap_or_default()
    }

    pub async fn history(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/api/jobs/{id}/history")).await.1["transitions"].as_array().cloned().unwrap_or_default()
    }

    pub async fn events(&self, id: &str) -> Events {
        let resp = self.http.get(self.url(&format!("/api/jobs/{id}/events"))).send().await.expect("events");
        assert_eq!(resp.status(), StatusCode::OK, "events stream refused");
        Events { stream: Box::pin(resp.bytes_stream()), buf: String::new() }
    }

    /// Waits for the job's `running` event; returns the worker running it.
    pub async fn wait_running(&self, id: &str) -> String {
        let mut events = self.events(id).await;
        let worker = tokio::time::timeout(WAIT, async {
            while let Some((name, data)) = events.next().await {
                match name.as_str() {
                    "running" => return data["worker"].as_str().map(str::to_owned),
                    n if is_final(n) => panic!("job {id} ended before it was seen running: {data}"),
                    _ => {}
                }
            }
            None
        })
        .await;
        worker.ok().flatten().unwrap_or_else(|| panic!("job {id} did not run"))
    }

    /// Whether the master says its store commits (`/healthz`).
    pub async fn store_healthy(&self) -> bool {
        self.get("/healthz").await.1["store"] == serde_json::json!(true)
    }

    /// Waits until the master says its store cannot commit.
    pub async fn wait_store_failing(&self) {
        crate::eventually("the master reports that its store cannot commit", || async {
            (!self.store_healthy().await).then_some(())
        })
        .await;
    }

    /// Waits for the job's final event, then returns the job as stored.
    pub async fn wait_final(&self, id: &str) -> Value {
        let mut events = self.events(id).await;
        let finished = tokio::time::timeout(WAIT, async {
            while let Some((name, _)) = events.next().await {
                if is_final(&name) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(finished, Ok(true), "job {id} did not finish");
        self.job(id).await
    }
}

/// Whether a job event's name ends its stream (the names of the final
/// `JobEvent`s).
pub fn is_final(name: &str) -> bool {
    matches!(name, "succeeded" | "failed" | "cancelled")
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Server-sent events of one job: `(event name, data)`.
pub struct Events {
    stream: ByteStream,
    buf: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() {
                    continue;
                }
                return Some((name, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
            let chunk = self.stream.next().await?.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
