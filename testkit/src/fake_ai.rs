//! A local HTTP server that speaks Gemini's and OpenAI's REST wire formats
//! faithfully enough to test against: SSE framing (`data: ...` blocks,
//! `[DONE]` for OpenAI), answers in several chunks, usage metadata, the
//! error bodies and statuses both send (including Gemini's `RetryInfo`),
//! blocked prompts, finish reasons and slow or stalling streams. It records
//! every request (path, headers, body) and notices clients that hang up
//! mid-answer.
//!
//! What it answers is steered by the prompt: a prompt that starts with
//! `[[fake {json}]]` sets [`Script`] fields; otherwise the answer is
//! `You said: <prompt>` in word-sized chunks. Key `bad-key` is rejected as
//! a bad key, `forbidden-key` (Gemini) as not allowed; model
//! `missing-model` is unknown.
//!
//! A request whose messages end with the assistant's (OpenAI) or the
//! model's (Gemini) turn continues that answer: it gets the pieces of the
//! scripted answer that come after it.
//!
//! A test that needs a question to stay in flight until it says so (rather
//! than for a guessed time) scripts `"hold": "name"` and later calls
//! [`FakeAi::release`] or `POST /fake/release/<name>` (for scripts outside
//! Rust, such as the browser tests).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

/// How to answer one prompt (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The answer's pieces, in order.
    pub chunks: Option<Vec<String>>,
    /// Before the response starts.
    pub delay_ms: Option<u64>,
    /// Before the response starts, wait until this name is released.
    pub hold: Option<String>,
    /// Between chunks.
    pub gap_ms: Option<u64>,
    /// Error statuses for the first tries of this prompt, in order.
    pub fail: Option<Vec<u16>>,
    /// Gemini's `RetryInfo.retryDelay` / OpenAI's `Retry-After` on a 429.
    pub retry_delay_s: Option<f64>,
    /// Gemini `promptFeedback.blockReason`.
    pub block: Option<String>,
    /// Finish reason of the last chunk.
    pub finish: Option<String>,
    /// Stop sending after the first chunk, for this long, without closing.
    pub stall_ms: Option<u64>,
    /// Cut the connection after this many pieces (a provider that dies
    /// mid-answer). Not when the request continues an answer.
    pub cut_after: Option<usize>,
    /// After this many pieces, send an error event instead of the rest (a
    /// server error mid-stream). Not when the request continues an answer.
    pub error_after: Option<usize>,
    /// Put the send time (µs since the UNIX epoch) into each chunk's text as
    /// `<t:...>` so a client can measure delivery latency.
    pub stamp: Option<bool>,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Inner {
    requests: Mutex<Vec<Recorded>>,
    tries: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    hung_up: AtomicUsize,
    released: Mutex<HashSet<String>>,
    paused: AtomicBool,
    release: Notify,
}

/// The running server; it stops when dropped.
#[derive(Debug, Clone)]
pub struct FakeAi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeAi {
    pub async fn start() -> Self {
        Self::serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind the fake AI server")
    }

    /// Listens on `addr` (the `faena-fake-ai` binary serves a test stack).
    pub async fn serve(addr: SocketAddr) -> std::io::Result<Self> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1beta/models/{call}", post(gemini))
            .route("/v1/chat/completions", post(openai))
            .route("/fake/release/{name}", post(release))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // Each chunk leaves at once, as a real provider's would.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner, task: Arc::new(task) })
    }

    /// What to put in `GEMINI_BASE_URL`.
    pub fn gemini_base(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// What to put in `OPENAI_BASE_URL`.
    pub fn openai_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().await.clone()
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Most requests answered at the same time so far.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::Relaxed)
    }

    /// Answers a client abandoned before their end.
    pub fn hung_up(&self) -> usize {
        self.inner.hung_up.load(Ordering::Relaxed)
    }

    /// Lets every question scripted with `"hold": name` go on, now and later.
    pub async fn release(&self, name: &str) {
        open_gate(&self.inner, name).await;
    }

    /// Holds every question, scripted or not, until [`FakeAi::resume`]: a
    /// test that must watch a job before it can end pauses, submits,
    /// subscribes, then resumes.
    pub fn pause(&self) {
        self.inner.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.inner.paused.store(false, Ordering::SeqCst);
        self.inner.release.notify_waiters();
    }
}

async fn open_gate(inner: &Inner, name: &str) {
    inner.released.lock().await.insert(name.to_owned());
    inner.release.notify_waiters();
}

async fn release(State(inner): State<Arc<Inner>>, Path(name): Path<String>) -> StatusCode {
    open_gate(&inner, &name).await;
    StatusCode::NO_CONTENT
}

/// Waits out a pause, the script's hold and its delay, before anything is answered.
async fn wait_before_answering(inner: &Inner, s: &Script) {
    loop {
        // Made before the checks, so a release in between is not missed.
        let released = inner.release.notified();
        let held = match &s.hold {
            Some(name) => !inner.released.lock().await.contains(name),
            None => false,
        };
        if !held && !inner.paused.load(Ordering::SeqCst) {
            break;
        }
        released.await;
    }
    if let Some(ms) = s.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

impl Drop for FakeAi {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

fn script(prompt: &str) -> (Script, String) {
    if let Some(rest) = prompt.strip_prefix("[[fake ")
        && let Some((json, tail)) = rest.split_once("]]")
    {
        return (serde_json::from_str(json).expect("a valid [[fake ...]] script"), tail.trim().to_owned());
    }
    (Script::default(), prompt.to_owned())
}

/// Stands for the send time in a frame until it is sent.
const STAMP: &str = "<t:now>";
/// A frame that cuts the connection instead of being sent.
const CUT: &str = "<cut>";

/// The pieces of the answer still to send: after `prefix` when the request
/// continues an answer (none cut), else all, cut as the script says
/// (`error` frames the mid-stream error event).
fn to_send(s: &Script, pieces: Vec<String>, prefix: Option<&str>, error: &str) -> Vec<String> {
    if let Some(prefix) = prefix {
        let mut sent = String::new();
        return pieces
            .into_iter()
            .filter(|p| {
                let before = sent.len();
                sent.push_str(p);
                before >= prefix.len() || !prefix.starts_with(&sent)
            })
            .collect();
    }
    let mut out = pieces;
    if let Some(n) = s.cut_after.filter(|n| *n < out.len()) {
        out.truncate(n);
        out.push(CUT.into());
    } else if let Some(n) = s.error_after.filter(|n| *n < out.len()) {
        out.truncate(n);
        out.push(error.into());
    }
    out
}

fn now_us() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0)
}

fn chunks_of(s: &Script, said: &str) -> Vec<String> {
    s.chunks.clone().unwrap_or_else(|| {
        let answer = format!("You said: {said}");
        let mut out = Vec::new();
        let mut word = String::new();
        for c in answer.chars() {
            word.push(c);
            if c == ' ' {
                out.push(std::mem::take(&mut word));
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out
    })
}

/// Counts a request in flight until dropped; notes a stream cut short.
struct Flight {
    inner: Arc<Inner>,
    streaming: bool,
    finished: bool,
}

impl Flight {
    fn new(inner: &Arc<Inner>) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        inner.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self { inner: inner.clone(), streaming: false, finished: false }
    }
}

impl Flight {
    fn land(&mut self) {
        self.finished = true;
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.streaming && !self.finished {
            self.inner.hung_up.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn record(inner: &Inner, path: String, headers: &HeaderMap, body: &Value) {
    let headers = headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    inner.requests.lock().await.push(Recorded { path, headers, body: body.clone() });
}

/// The error status this try should get, if the script says so.
async fn failure(inner: &Inner, s: &Script, prompt: &str) -> Option<u16> {
    let fail = s.fail.as_ref()?;
    let mut tries = inner.tries.lock().await;
    let n = tries.entry(prompt.to_owned()).or_default();
    *n += 1;
    fail.get(*n - 1).copied()
}

/// Streams `frames` (already framed as SSE), pausing as the script says.
fn sse(mut flight: Flight, s: &Script, frames: Vec<String>) -> Response {
    let gap = Duration::from_millis(s.gap_ms.unwrap_or(0));
    let stall = s.stall_ms.map(Duration::from_millis);
    flight.streaming = true;
    let stream =
        futures::stream::unfold((frames.into_iter().enumerate(), flight), move |(mut it, mut flight)| async move {
            let Some((i, frame)) = it.next() else {
                flight.land();
                return None;
            };
            if i > 0 {
                if let (1, Some(stall)) = (i, stall) {
                    tokio::time::sleep(stall).await;
                }
                tokio::time::sleep(gap).await;
            }
            if frame == CUT {
                // The connection dies mid-answer.
                return Some((Err(std::io::Error::other("cut")), (it, flight)));
            }
            let frame = frame.replace(STAMP, &format!("<t:{}>", now_us()));
            Some((Ok::<_, std::io::Error>(Bytes::from(frame)), (it, flight)))
        });
    ([("content-type", "text/event-stream")], Body::from_stream(stream)).into_response()
}

fn text_of(s: &Script, piece: &str) -> String {
    // The time goes in when the frame is sent (see `sse`).
    if s.stamp == Some(true) { format!("{piece}{STAMP}") } else { piece.to_owned() }
}

fn gemini_error(code: u16, status: &str, message: &str, retry: Option<f64>) -> Response {
    let mut details = vec![];
    if let Some(d) = retry {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{d}s")}));
    }
    let body = json!({"error": {"code": code, "message": message, "status": status, "details": details}});
    (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
}

async fn gemini(
    State(inner): State<Arc<Inner>>,
    Path(call): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    record(&inner, format!("/v1beta/models/{call}{query}"), &headers, &body).await;
    let flight = Flight::new(&inner);
    let (model, method) = call.split_once(':').unwrap_or((&call, ""));
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let text = |c: &Value| c["parts"][0]["text"].as_str().unwrap_or("").to_owned();
    let prompt = contents.iter().rev().find(|c| c["role"] == "user").map(text).unwrap_or_default();
    let prefix = contents.last().filter(|c| c["role"] == "model").map(text);
    let prompt = prompt.as_str();
    let (s, said) = script(prompt);
    wait_before_answering(&inner, &s).await;
    let key = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).unwrap_or("");
    if key.is_empty() {
        return gemini_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.", None);
    }
    if key == "bad-key" {
        return gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", None);
    }
    if key == "forbidden-key" {
        return gemini_error(
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in this project.",
            None,
        );
    }
    if model == "missing-model" {
        return gemini_error(404, "NOT_FOUND", &format!("models/{model} is not found for API version v1beta"), None);
    }
    if let Some(code) = failure(&inner, &s, prompt).await {
        let status = match code {
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            _ => "INTERNAL",
        };
        return gemini_error(code, status, "try again later", if code == 429 { s.retry_delay_s } else { None });
    }
    let usage = json!({"promptTokenCount": 7, "candidatesTokenCount": 11, "totalTokenCount": 18});
    if let Some(reason) = &s.block {
        let body = json!({"promptFeedback": {"blockReason": reason}, "usageMetadata": usage, "modelVersion": model});
        return if method.starts_with("streamGenerateContent") {
            sse(flight, &s, vec![format!("data: {body}\r\n\r\n")])
        } else {
            axum::Json(body).into_response()
        };
    }
    let error = json!({"error": {"code": 500, "message": "internal error mid-stream", "status": "INTERNAL"}});
    let error = format!("data: {error}\r\n\r\n");
    let pieces = to_send(&s, chunks_of(&s, &said), prefix.as_deref(), &error);
    let finish = s.finish.clone().unwrap_or_else(|| "STOP".into());
    if method.starts_with("streamGenerateContent") {
        let n = if pieces.last().is_some_and(|p| *p == CUT || *p == error) { usize::MAX } else { pieces.len() };
        let frames = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if *p == CUT || *p == error {
                    return p.clone();
                }
                let mut cand = json!({"content": {"parts": [{"text": text_of(&s, p)}], "role": "model"}, "index": 0});
                let mut chunk = json!({"modelVersion": model});
                if i + 1 == n {
                    cand["finishReason"] = json!(finish);
                    chunk["usageMetadata"] = usage.clone();
                }
                chunk["candidates"] = json!([cand]);
                format!("data: {chunk}\r\n\r\n")
            })
            .collect();
        sse(flight, &s, frames)
    } else {
        let text: String = pieces.iter().filter(|p| **p != CUT && **p != error).map(String::as_str).collect();
        axum::Json(json!({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": model,
        }))
        .into_response()
    }
}

fn openai_error(code: u16, kind: &str, message: &str, retry: Option<f64>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    let mut resp =
        (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response();
    if let Some(r) = retry
        && let Ok(v) = format!("{r}").parse()
    {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

async fn openai(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    record(&inner, "/v1/chat/completions".into(), &headers, &body).await;
    let flight = Flight::new(&inner);
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let content = |m: &Value| m["content"].as_str().unwrap_or("").to_owned();
    let prompt = messages.iter().rev().find(|m| m["role"] == "user").map(content).unwrap_or_default();
    let prefix = messages.last().filter(|m| m["role"] == "assistant").map(content);
    let prompt = prompt.as_str();
    let (s, said) = script(prompt);
    wait_before_answering(&inner, &s).await;
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer bad-key") {
        return openai_error(401, "invalid_request_error", "Incorrect API key provided: bad-key.", None);
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    if model == "missing-model" {
        return openai_error(404, "invalid_request_error", &format!("The model `{model}` does not exist"), None);
    }
    if let Some(code) = failure(&inner, &s, prompt).await {
        return openai_error(code, "server_error", "try again later", if code == 429 { s.retry_delay_s } else { None });
    }
    let error =
        json!({"error": {"message": "internal error mid-stream", "type": "server_error", "param": null, "code": null}});
    let error = format!("data: {error}\n\n");
    let pieces = to_send(&s, chunks_of(&s, &said), prefix.as_deref(), &error);
    let broken = pieces.last().is_some_and(|p| *p == CUT || *p == error);
    let finish = s.finish.clone().unwrap_or_else(|| "stop".into());
    let usage = json!({"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18});
    if body["stream"] == true {
        let n = if broken { usize::MAX } else { pieces.len() };
        let mut frames: Vec<String> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if *p == CUT || *p == error {
                    return p.clone();
                }
                let fr = if i + 1 == n { json!(finish) } else { Value::Null };
                let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": text_of(&s, p)}, "finish_reason": fr}]});
                format!("data: {chunk}\n\n")
            })
            .collect();
        if broken {
            return sse(flight, &s, frames);
        }
        if body["stream_options"]["include_usage"] == true {
            let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage});
            frames.push(format!("data: {chunk}\n\n"));
        }
        frames.push("data: [DONE]\n\n".into());
        sse(flight, &s, frames)
    } else {
        axum::Json(json!({"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": pieces.iter().filter(|p| **p != CUT && **p != error).map(String::as_str).collect::<String>()}, "finish_reason": finish}],
            "usage": usage}))
        .into_response()
    }
}
