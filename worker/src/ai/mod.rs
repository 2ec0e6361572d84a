//! AI providers on a worker: Google's Gemini REST API and any
//! OpenAI-compatible chat completions endpoint, both streamed over SSE, and
//! a GGUF model run in this process ([`local`]).
//!
//! Each provider module turns a query into one HTTP request, feeds the
//! answer's pieces to a [`Sink`] as they arrive and classifies what goes
//! wrong: [`AiError::Transient`] (rate limits, server errors, broken or
//! silent connections: worth another try, after the delay the provider asks
//! for if it gives one) or [`AiError::Fatal`] (a bad key, an unknown model, a
//! blocked prompt: said so a person can act on it).

pub mod gemini;
pub mod local;
pub mod openai;

use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::ai::{AiChunk, AiParams, Provider, Usage};
use faena_proto::secret::Secret;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;

use crate::config::AiArgs;
use crate::exec::JobContext;

pub const GEMINI_DEFAULT_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";
pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com";
/// Longest error body kept for a message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One provider as this worker is configured for it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base: String,
    pub model: String,
    pub key: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Providers {
    pub gemini: Option<Endpoint>,
    pub openai: Option<Endpoint>,
    pub local: Option<Arc<local::LocalModel>>,
    /// The order to try providers in when a job names none (`FAENA_AI_PROVIDERS`).
    pub preference: Vec<Provider>,
    /// What the live configuration changed (`ai.providers`, `ai.model.*`).
    pub live: Arc<parking_lot::RwLock<LiveAi>>,
    pub http: reqwest::Client,
    pub chunk_timeout: Duration,
    pub tries: u32,
}

/// The live configuration's AI settings; `None` or absent: the flags' value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveAi {
    pub preference: Option<Vec<Provider>>,
    pub models: Vec<(Provider, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Secret(#[from] faena_common::secrets::SecretError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Local(#[from] local::LocalError),
}

impl Providers {
    pub fn from_args(a: &AiArgs) -> Result<Self, SetupError> {
        // An empty key (a stack deployed without one) means no key.
        use faena_common::secrets::resolve_optional as resolve;
        let gemini_key = resolve("GEMINI_API_KEY", a.gemini_api_key.as_deref(), a.gemini_api_key_file.as_deref())?;
        let openai_key = resolve("OPENAI_API_KEY", a.openai_api_key.as_deref(), a.openai_api_key_file.as_deref())?;
        let trim = |s: &str| s.trim_end_matches('/').to_owned();
        let gemini = (gemini_key.is_some() || a.gemini_base_url.is_some()).then(|| Endpoint {
            base: trim(a.gemini_base_url.as_deref().unwrap_or(GEMINI_DEFAULT_BASE)),
            model: a.gemini_model.clone(),
            key: gemini_key,
        });
        let openai = (openai_key.is_some() || a.openai_base_url.is_some()).then(|| Endpoint {
            base: trim(a.openai_base_url.as_deref().unwrap_or(OPENAI_DEFAULT_BASE)),
            model: a.openai_model.clone(),
            key: openai_key,
        });
        let http = faena_common::tls::http_client()
            .connect_timeout(Duration::from_millis(a.ai_connect_timeout_ms))
            .tcp_nodelay(true)
            .user_agent(concat!("faena-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let local = match &a.local_model {
            None => None,
            Some(_) if !local::cpu_supported() => {
                tracing::warn!(
                    "FAENA_LOCAL_MODEL is set but this CPU lacks AVX2/FMA/F16C: the local model is not offered"
                );
                None
            }
            Some(path) => {
                let threads = a.local_threads.unwrap_or_else(|| (crate::caps::cores() as usize / 2).max(1));
                let model = local::LocalModel::load(path, threads, a.local_context)?;
                tracing::info!(model = model.name(), threads, path = %path.display(), "local model loaded");
                Some(Arc::new(model))
            }
        };
        Ok(Self {
            gemini,
            openai,
            local,
            preference: a.ai_providers.clone(),
            live: Arc::default(),
            http,
            chunk_timeout: Duration::from_millis(a.ai_chunk_timeout_ms),
            tries: a.ai_tries,
        })
    }

    /// The providers this worker offers, in the order it prefers them.
    pub fn offered(&self) -> Vec<Provider> {
        let mut out = Vec::new();
        if self.gemini.is_some() {
            out.push(Provider::Gemini);
        }
        if self.openai.is_some() {
            out.push(Provider::Openai);
        }
        if self.local.is_some() {
            out.push(Provider::Local);
        }
        out
    }

    /// The providers to try for a job that accepts `wanted` (in its order;
    /// empty: this worker's own order), those this worker has.
    pub fn order_for(&self, wanted: &[Provider]) -> Vec<Provider> {
        let offered = self.offered();
        let preference = self.live.read().preference.clone().unwrap_or_else(|| self.preference.clone());
        let mine: Vec<Provider> = match preference.is_empty() {
            true => offered.clone(),
            false => preference.into_iter().filter(|p| offered.contains(p)).collect(),
        };
        match wanted.is_empty() {
            true => mine,
            false => wanted.iter().copied().filter(|p| offered.contains(p)).collect(),
        }
    }

    /// The model asked of `p` when a job names none: the live
    /// configuration's, else the flag's.
    pub fn model(&self, p: Provider) -> Option<String> {
        let live = self.live.read().models.iter().find(|(q, _)| *q == p).map(|(_, m)| m.clone());
        live.or_else(|| self.endpoint(p).map(|e| e.model.clone()))
    }

    /// The model `p` answers with when a job names none (the local
    /// model's file name for `local`).
    pub fn default_model(&self, p: Provider) -> Option<String> {
        match p {
            Provider::Local => self.local.as_ref().map(|m| m.name().to_owned()),
            _ => self.model(p).filter(|m| !m.is_empty()),
        }
    }

    /// A remote provider's endpoint (the local one has none).
    pub fn endpoint(&self, p: Provider) -> Option<&Endpoint> {
        match p {
            Provider::Gemini => self.gemini.as_ref(),
            Provider::Openai => self.openai.as_ref(),
            Provider::Local => None,
        }
    }
}

/// One request to a provider.
#[derive(Debug)]
pub struct Query<'a> {
    pub params: &'a AiParams,
    pub base: &'a str,
    pub model: &'a str,
    pub key: Option<&'a Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AiError {
    #[error("{message}")]
    Transient { message: String, after: Option<Duration> },
    #[error("{0}")]
    Fatal(String),
}

/// What a provider answered (the text went to the sink as it came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub model: String,
    pub usage: Option<Usage>,
    pub finish_reason: String,
    pub flagged: Option<String>,
}

/// What a provider said besides the text, gathered over its chunks.
#[derive(Debug, Default)]
pub struct Folded {
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub finish_reason: String,
}

impl Folded {
    pub fn usage(&mut self, prompt: Option<u64>, output: Option<u64>, total: Option<u64>) {
        let (prompt, output) = (prompt.unwrap_or(0), output.unwrap_or(0));
        self.usage = Some(Usage {
            prompt_tokens: prompt,
            output_tokens: output,
            total_tokens: total.unwrap_or(prompt + output),
        });
    }

    pub fn finish(&mut self, reason: Option<String>) {
        if let Some(r) = reason {
            self.finish_reason = r;
        }
    }

    /// The answer, given how the finish reason reads for the provider.
    pub fn answer(self, model: &str, default_reason: &str, flagged: Option<String>) -> Answer {
        Answer {
            model: self.model.unwrap_or_else(|| model.to_owned()),
            usage: self.usage,
            finish_reason: if self.finish_reason.is_empty() { default_reason.into() } else { self.finish_reason },
            flagged,
        }
    }
}

/// Where the answer's pieces go: the job's progress, in order, and the
/// full text. It ends the answer before a stop sequence: text that could
/// be the start of one is held back until the next piece says.
#[derive(Debug)]
pub struct Sink<'a> {
    ctx: Option<&'a JobContext>,
    /// The answer so far (a continued answer's start included).
    pub text: String,
    /// Where this provider's part of the answer starts in `text`.
    start: usize,
    seq: u64,
    stops: &'a [String],
    held: String,
    stopped: bool,
    started: Instant,
    pub first_token: Option<Duration>,
}

/// Where an answer cut off mid-way stands: its text and pieces so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub text: String,
    pub seq: u64,
}

impl<'a> Sink<'a> {
    pub fn new(ctx: Option<&'a JobContext>) -> Self {
        Self::resume(ctx, Written::default(), &[])
    }

    /// Goes on from `written` (pieces numbered on from there), ending
    /// before the first of `stops`.
    pub fn resume(ctx: Option<&'a JobContext>, written: Written, stops: &'a [String]) -> Self {
        let start = written.text.len();
        Self {
            ctx,
            text: written.text,
            start,
            seq: written.seq,
            stops,
            held: String::new(),
            stopped: false,
            started: Instant::now(),
            first_token: None,
        }
    }

    /// Nothing of this provider's answer went out yet.
    pub fn is_empty(&self) -> bool {
        self.text.len() == self.start
    }

    /// A stop sequence came: the provider should stop.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text written so far and where the numbering stands.
    pub fn written(&self) -> Written {
        Written { text: self.text.clone(), seq: self.seq }
    }

    /// This provider's part of the answer.
    pub fn own_text(&self) -> &str {
        &self.text[self.start..]
    }

    pub async fn push(&mut self, piece: &str) {
        if piece.is_empty() || self.stopped {
            return;
        }
        self.first_token.get_or_insert_with(|| self.started.elapsed());
        if self.stops.is_empty() {
            return self.send(piece.to_owned()).await;
        }
        self.held.push_str(piece);
        let found = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        let out = match found {
            Some(at) => {
                self.stopped = true;
                let out = self.held[..at].to_owned();
                self.held.clear();
                out
            }
            None => {
                // Keep back the longest tail that begins a stop sequence.
                let keep = self.held.len() - self.safe_len();
                let out = self.held[..self.held.len() - keep].to_owned();
                self.held.drain(..self.held.len() - keep);
                out
            }
        };
        self.send(out).await;
    }

    /// How much of `held` cannot be the start of a stop sequence.
    fn safe_len(&self) -> usize {
        let h = &self.held;
        (0..h.len())
            .filter(|&i| h.is_char_boundary(i))
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&h[i..])))
            .unwrap_or(h.len())
    }

    /// The answer ended: what was held back goes out.
    pub async fn finish(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.send(held).await;
    }

    async fn send(&mut self, piece: String) {
        if piece.is_empty() {
            return;
        }
        self.text.push_str(&piece);
        if let Some(ctx) = self.ctx {
            let chunk = AiChunk { seq: self.seq, text: piece };
            ctx.report(serde_json::to_value(chunk).unwrap_or_default()).await;
        }
        self.seq += 1;
    }
}

/// Sends a request, waiting at most `timeout` for the response to start.
pub async fn send(req: reqwest::RequestBuilder, timeout: Duration, who: &str) -> Result<reqwest::Response, AiError> {
    match tokio::time::timeout(timeout, req.send()).await {
        Err(_) => Err(AiError::Transient {
            message: format!("{who} did not answer within {} ms", timeout.as_millis()),
            after: None,
        }),
        Ok(Err(e)) if e.is_connect() => {
            Err(AiError::Transient { message: format!("cannot connect to {who}: {}", root_cause(&e)), after: None })
        }
        Ok(Err(e)) => {
            Err(AiError::Transient { message: format!("{who} request failed: {}", root_cause(&e)), after: None })
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// An error answer: its status, the delay it asks for (`Retry-After`), and
/// its JSON `{"error": E}`, or `plain(text)` when the body is not that.
pub async fn error_answer<E: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    plain: impl FnOnce(String) -> E,
) -> (u16, Option<Duration>, E) {
    #[derive(serde::Deserialize)]
    struct Body<E> {
        error: Option<E>,
    }
    let (status, headers, text) = error_body(resp).await;
    let detail = serde_json::from_str::<Body<E>>(&text).ok().and_then(|b| b.error);
    (status.as_u16(), retry_after(&headers), detail.unwrap_or_else(|| plain(text.chars().take(300).collect())))
}

/// The body of an error answer, bounded.
async fn error_body(resp: reqwest::Response) -> (reqwest::StatusCode, HeaderMap, String) {
    let (status, headers) = (resp.status(), resp.headers().clone());
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            break;
        }
    }
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The `data` of each server-sent event of `resp`, each within `timeout` of
/// the one before.
pub fn sse(
    resp: reqwest::Response,
    timeout: Duration,
    who: &'static str,
) -> impl Stream<Item = Result<String, AiError>> {
    use eventsource_stream::Eventsource;
    let events = resp.bytes_stream().eventsource();
    futures::stream::unfold(Box::pin(events), move |mut events| async move {
        let item = match tokio::time::timeout(timeout, events.next()).await {
            Err(_) => Err(AiError::Transient {
                message: format!("{who} sent nothing for {} ms in the middle of the answer", timeout.as_millis()),
                after: None,
            }),
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                Err(AiError::Transient { message: format!("{who} stream broke: {}", root_cause(&e)), after: None })
            }
            Ok(Some(Ok(event))) => Ok(event.data),
        };
        Some((item, events))
    })
}

/// Reads a whole (non-streamed) body within `timeout`.
pub async fn body(resp: reqwest::Response, timeout: Duration, who: &str) -> Result<String, AiError> {
    match tokio::time::timeout(timeout, resp.text()).await {
        Err(_) => Err(AiError::Transient {
            message: format!("{who} answer took over {} ms", timeout.as_millis()),
            after: None,
        }),
        Ok(Err(e)) => {
            Err(AiError::Transient { message: format!("{who} answer broke: {}", root_cause(&e)), after: None })
        }
        Ok(Ok(text)) => Ok(text),
    }
}

/// A provider's JSON (a stream chunk or a whole answer); what does not
/// parse is a transient fault of the provider.
pub fn decode<T: serde::de::DeserializeOwned>(who: &str, text: &str) -> Result<T, AiError> {
    serde_json::from_str(text)
        .map_err(|e| AiError::Transient { message: format!("{who} sent a malformed chunk: {e}"), after: None })
}

/// `Retry-After` in seconds (or `retry-after-ms`, as OpenAI sends), if any.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    get("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| get("retry-after"))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_answer_ends_before_a_stop_sequence_split_over_pieces() {
        let stops = vec!["END".to_owned(), "\n\n".to_owned()];
        let mut sink = Sink::resume(None, Written::default(), &stops);
        for piece in ["Hello E", "N", "ough. E", "ND and more"] {
            sink.push(piece).await;
        }
        sink.finish().await;
        assert!(sink.stopped());
        assert_eq!(sink.text, "Hello ENough. ");
        let mut plain = Sink::resume(None, Written::default(), &stops);
        plain.push("no stop E").await;
        assert_eq!(plain.text, "no stop ", "a possible start is held back");
        plain.finish().await;
        assert_eq!((plain.text.as_str(), plain.stopped()), ("no stop E", false));
    }

    #[tokio::test]
    async fn a_continued_answer_numbers_its_pieces_on() {
        let mut sink = Sink::resume(None, Written { text: "abc".into(), seq: 3 }, &[]);
        assert!(sink.is_empty());
        sink.push("def").await;
        assert_eq!(sink.written(), Written { text: "abcdef".into(), seq: 4 });
        assert_eq!(sink.own_text(), "def");
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().expect("v"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "250".parse().expect("v"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }
}
