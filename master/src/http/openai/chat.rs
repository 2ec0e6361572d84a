//! `POST /v1/chat/completions`: the request becomes an `ai.query` job in
//! its key's group; the answer's pieces, as the worker reports them, go to
//! the client as OpenAI's `chat.completion.chunk`s (or, unstreamed, one
//! `chat.completion`). The response starts only once the job runs, so a
//! request that waited its whole `queue_wait` in the queue can still get an
//! honest 429. A client that hangs up cancels its job.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use faena_proto::ai::{AiOutput, AiParams, Provider, Role, Turn};
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobSpec, Priority};
use faena_proto::options::JobOptions;
use serde::Deserialize;
use serde_json::{Value, json};

use super::relay::{CancelOnDrop, Piece, Relay};
use super::{Gateway, OaiError, Tenant, tenant};
use crate::engine::NewJob;
use crate::http::{AppError, AppState, check_accepting, parse_body, submit_jobs};

#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    /// Faena's own: the providers to try in this order (with model `auto`).
    #[serde(default)]
    providers: Vec<Provider>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

fn text_of(m: &Message, i: usize) -> Result<String, OaiError> {
    match &m.content {
        Some(Content::Text(t)) => Ok(t.clone()),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match (p.kind.as_str(), &p.text) {
                ("text", Some(t)) => Ok(t.as_str()),
                (kind, _) => Err(OaiError::bad(
                    "unsupported_content",
                    format!("messages[{i}]: only text parts are served, not {kind:?}"),
                )),
            })
            .collect::<Result<String, _>>(),
        None => Err(OaiError::bad("invalid_message", format!("messages[{i}] has no content"))),
    }
}

/// Which provider and model `model` names: `auto` (any, the worker's
/// order), `provider`, `provider/model`, or a model some worker offers.
fn resolve(model: &str, offered: &[String]) -> Result<(Option<Provider>, Option<String>), OaiError> {
    let unknown = || {
        OaiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "The model `{model}` does not exist here: GET /v1/models lists what the workers offer, or use auto"
            ),
        )
    };
    let offers = |p: Provider| offered.iter().any(|m| m.split_once('/').is_some_and(|(q, _)| q == p.as_str()));
    if model.is_empty() || model == "auto" {
        return Ok((None, None));
    }
    if let Some((p, name)) = model.split_once('/')
        && let Some(p) = Provider::parse(p)
    {
        faena_proto::ai::check_model_name(name).map_err(|m| OaiError::bad("invalid_model", m))?;
        return if offers(p) { Ok((Some(p), Some(name.to_owned()))) } else { Err(unknown()) };
    }
    if let Some(p) = Provider::parse(model) {
        return if offers(p) { Ok((Some(p), None)) } else { Err(unknown()) };
    }
    let found = offered.iter().find_map(|m| m.split_once('/').filter(|(_, name)| *name == model));
    match found.and_then(|(p, name)| Some((Provider::parse(p)?, name))) {
        Some((p, name)) => Ok((Some(p), Some(name.to_owned()))),
        None => Err(unknown()),
    }
}

/// The job a chat request asks for.
fn params(req: &ChatRequest, provider: Option<Provider>, model: Option<String>) -> Result<AiParams, OaiError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(OaiError::bad("unsupported_parameter", "n: one choice per request is served"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(OaiError::bad("unsupported_parameter", "tools are not served"));
    }
    if !req.providers.is_empty() && provider.is_some() {
        return Err(OaiError::bad("invalid_model", "providers (an order to try) goes with model auto"));
    }
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let text = text_of(m, i)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => turns.push(Turn { role: Role::User, text }),
            "assistant" => turns.push(Turn { role: Role::Model, text }),
            other => {
                return Err(OaiError::bad("invalid_message", format!("messages[{i}]: role {other:?} is not served")));
            }
        }
    }
    let prompt = match turns.pop() {
        Some(Turn { role: Role::User, text }) => text,
        _ => return Err(OaiError::bad("invalid_message", "messages must end with a user message")),
    };
    let stop = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    let p = AiParams {
        prompt,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        model,
        provider,
        providers: req.providers.clone(),
        history: turns,
        stream: Some(true),
        cache: Some(false),
        temperature: req.temperature,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        stop,
        prefix: None,
        own_key: false,
    };
    p.validate().map_err(|e| OaiError::bad("invalid_request", e.to_string()))?;
    Ok(p)
}

fn created() -> u64 {
    faena_proto::mqtt::now_ms() / 1000
}

fn finish_reason(out: &AiOutput) -> &'static str {
    match out.finish_reason.to_ascii_lowercase().as_str() {
        "length" | "max_tokens" => "length",
        _ => "stop",
    }
}

fn usage(out: &AiOutput) -> Value {
    let u = out.usage.clone().unwrap_or_default();
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.prompt_tokens + u.output_tokens})
}

/// Which providers wrote the answer (Faena's own field).
fn faena(id: JobId, out: &AiOutput) -> Value {
    let by = if out.answered_by.is_empty() { vec![out.provider] } else { out.answered_by.clone() };
    json!({"job": id, "providers": by, "tried": out.tried})
}

pub(super) async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OaiError> {
    let metrics = state.metrics.clone();
    let answered = answer(state, headers, body).await;
    metrics.openai_request(match &answered {
        Ok(_) => "ok",
        Err(e) => e.app.code(),
    });
    answered
}

async fn answer(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OaiError> {
    let who = tenant(&state, &headers)?;
    check_accepting(&state)?;
    let req: ChatRequest = parse_body(body)?;
    let (provider, model) = match resolve(&req.model, &state.ai.offered.get(&state).await?) {
        Ok(found) => found,
        Err(_) => resolve(&req.model, &state.ai.offered.refresh(&state).await?)?,
    };
    if let Tenant::Key(k) = &who {
        if !k.allows(provider.map(Provider::as_str), model.as_deref()) {
            let m = format!("key {} may use only {}", k.name, k.models.join(", "));
            return Err(OaiError::new(StatusCode::FORBIDDEN, "model_not_allowed", m));
        }
        if let Some(limit) = k.tokens_per_day
            && state.ai.keys.spent_today(&k.name) >= limit
        {
            let m =
                format!("key {} used its {limit} tokens for today (UTC); it may ask again after midnight UTC", k.name);
            return Err(OaiError::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", m));
        }
    }
    let params = params(&req, provider, model)?;
    let id = JobId::new();
    let opts = JobOptions { group: Some(who.group()), ..Default::default() };
    let job = NewJob { opts: Some(Arc::new(opts)), ..NewJob::new(id, JobSpec::AiQuery(params), Priority::default()) };
    // Watched before it exists, so nothing it does is missed.
    let (kept, watch) = state.hub.subscribe(id);
    submit_jobs(&state, vec![job]).await?;
    let guard = CancelOnDrop { coord: state.coord.clone(), id, armed: true };
    let mut relay = Relay {
        hub: state.hub.clone(),
        id,
        watch,
        backlog: kept.into(),
        next_seq: 0,
        sent: String::new(),
        guard,
        done: None,
    };
    let asked = Instant::now();
    match tokio::time::timeout(state.ai.queue_wait, relay.started()).await {
        Ok(true) => {}
        Ok(false) => return Err(AppError::shutting_down().into()),
        Err(_) => return Err(too_long(&state, id, asked).await),
    }
    let name = match &who {
        Tenant::Key(k) => Some(k.name.clone()),
        Tenant::Operator => None,
    };
    let ctx = Answering { gateway: state.ai.clone(), key: name, id, model: req.model.clone(), asked };
    if req.stream {
        Ok(stream(relay, ctx, req.stream_options.is_some_and(|o| o.include_usage)).into_response())
    } else {
        whole(relay, ctx).await
    }
}

/// The request waited its whole `queue_wait`: the job goes, and the
/// client hears why (no worker at all, or every slot busy).
async fn too_long(state: &AppState, id: JobId, asked: Instant) -> OaiError {
    let waiting = state.coord.view(id).await.ok().flatten().and_then(|v| v.waiting);
    let _ = state.coord.cancel(id).await;
    let waited = asked.elapsed().as_millis();
    match waiting {
        Some(why) => OaiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_worker", format!("{why} (waited {waited} ms)")),
        None => OaiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("every AI slot stayed busy for {waited} ms (FAENA_AI_QUEUE_WAIT_MS); ask again later"),
        )
        .retry_after(state.ai.retry_after_s()),
    }
}

/// What finishing an answer needs.
struct Answering {
    gateway: Gateway,
    key: Option<String>,
    id: JobId,
    model: String,
    asked: Instant,
}

impl Answering {
    /// Counts the answer against its key.
    fn done(&self, out: &AiOutput) {
        self.gateway.answered_in(self.asked.elapsed().as_millis() as u64);
        if let Some(k) = &self.key {
            let u = out.usage.clone().unwrap_or_default();
            self.gateway.keys.spend(k, u.prompt_tokens, u.output_tokens);
        }
    }

    fn model_of(&self, out: &AiOutput) -> String {
        format!("{}/{}", out.provider, out.model)
    }
}

fn failed(error: String) -> OaiError {
    OaiError::new(StatusCode::BAD_GATEWAY, "provider_error", error)
}

async fn whole(mut relay: Relay, ctx: Answering) -> Result<Response, OaiError> {
    loop {
        match relay.next().await {
            Some(Piece::Text(_)) => {}
            Some(Piece::Done(out)) => {
                ctx.done(&out);
                let body = json!({
                    "id": format!("chatcmpl-{}", ctx.id), "object": "chat.completion", "created": created(),
                    "model": ctx.model_of(&out), "system_fingerprint": null,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text, "refusal": null},
                                 "logprobs": null, "finish_reason": finish_reason(&out)}],
                    "usage": usage(&out), "faena": faena(ctx.id, &out),
                });
                return Ok(Json(body).into_response());
            }
            Some(Piece::Failed(e)) => return Err(failed(e)),
            None => return Err(AppError::shutting_down().into()),
        }
    }
}

/// The answer as OpenAI's server-sent events: the role, each piece, the
/// finish (with which providers wrote it), the usage if asked, `[DONE]`.
fn stream(
    relay: Relay,
    ctx: Answering,
    include_usage: bool,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let id = format!("chatcmpl-{}", ctx.id);
    let chunk = move |model: &str, delta: Value, finish: Option<&str>, extra: Option<(&str, Value)>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created(), "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        if let Some((k, v)) = extra {
            c[k] = v;
        }
        Event::default().data(c.to_string())
    };
    let first = chunk(&ctx.model, json!({"role": "assistant", "content": ""}), None, None);
    let start = (Some(relay), ctx, std::collections::VecDeque::from([first]));
    let events = futures::stream::unfold(start, move |(mut relay, ctx, mut out)| {
        let chunk = chunk.clone();
        async move {
            loop {
                if let Some(e) = out.pop_front() {
                    return Some((Ok(e), (relay, ctx, out)));
                }
                let r = relay.as_mut()?;
                match r.next().await {
                    Some(Piece::Text(t)) => out.push_back(chunk(&ctx.model, json!({"content": t}), None, None)),
                    Some(Piece::Done(o)) => {
                        ctx.done(&o);
                        let model = ctx.model_of(&o);
                        out.push_back(chunk(
                            &model,
                            json!({}),
                            Some(finish_reason(&o)),
                            Some(("faena", faena(ctx.id, &o))),
                        ));
                        if include_usage {
                            // The usage chunk has no choices.
                            let u = json!({"id": format!("chatcmpl-{}", ctx.id), "object": "chat.completion.chunk",
                                "created": created(), "model": model, "system_fingerprint": null,
                                "choices": [], "usage": usage(&o)});
                            out.push_back(Event::default().data(u.to_string()));
                        }
                        out.push_back(Event::default().data("[DONE]"));
                        relay = None;
                    }
                    Some(Piece::Failed(e)) => {
                        // Mid-stream, as OpenAI does: an error event, then the end.
                        out.push_back(Event::default().data(failed(e).body().to_string()));
                        relay = None;
                    }
                    None => relay = None,
                }
            }
        }
    });
    Sse::new(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> ChatRequest {
        serde_json::from_value(v).expect("a chat request")
    }

    #[test]
    fn messages_become_system_history_and_prompt() {
        let req = request(json!({"model": "auto", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "text", "text": "now?"}]},
        ], "stop": "END", "max_completion_tokens": 20}));
        let p = params(&req, None, None).expect("valid");
        assert_eq!(p.prompt, "and now?");
        assert_eq!(p.system.as_deref(), Some("be brief"));
        assert_eq!(
            p.history,
            vec![Turn { role: Role::User, text: "hi".into() }, Turn { role: Role::Model, text: "hello".into() }]
        );
        assert_eq!((p.stop.clone(), p.max_tokens), (vec!["END".to_owned()], Some(20)));
    }

    #[test]
    fn what_is_not_served_is_refused_clearly() {
        for (body, says) in [
            (json!({"model": "auto", "messages": [{"role": "assistant", "content": "x"}]}), "end with a user"),
            (json!({"model": "auto", "messages": []}), "end with a user"),
            (json!({"model": "auto", "messages": [{"role": "tool", "content": "x"}]}), "not served"),
            (json!({"model": "auto", "n": 2, "messages": [{"role": "user", "content": "x"}]}), "one choice"),
            (json!({"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), "only text"),
            (json!({"model": "auto", "temperature": 5, "messages": [{"role": "user", "content": "x"}]}), "temperature"),
        ] {
            let e = params(&request(body.clone()), None, None).expect_err("refused");
            assert!(e.app.message().contains(says), "{body}: {}", e.app.message());
            assert_eq!(e.app.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn a_model_name_picks_its_provider() {
        let offered = vec!["gemini/gemini-2.5-flash".to_owned(), "local/SmolLM2".to_owned()];
        assert_eq!(resolve("auto", &offered).ok(), Some((None, None)));
        assert_eq!(resolve("local", &offered).ok(), Some((Some(Provider::Local), None)));
        assert_eq!(resolve("SmolLM2", &offered).ok(), Some((Some(Provider::Local), Some("SmolLM2".into()))));
        assert_eq!(
            resolve("gemini/gemini-2.5-pro", &offered).ok(),
            Some((Some(Provider::Gemini), Some("gemini-2.5-pro".into())))
        );
        for missing in ["gpt-4o", "openai", "openai/gpt-4o"] {
            let e = resolve(missing, &offered).expect_err("unknown");
            assert_eq!((e.app.status(), e.app.code()), (StatusCode::NOT_FOUND, "model_not_found"));
        }
    }
}
