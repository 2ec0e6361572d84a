//! OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp's
//! server): `POST {base}/v1/chat/completions` with `stream: true` (SSE,
//! ending in `data: [DONE]`), `Authorization: Bearer` only when a key is set.

use faena_proto::ai::Role;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AiError, Answer, Folded, Query, Sink, body, decode, error_answer, send, sse};

const WHO: &str = "the OpenAI-compatible server";

pub fn request_body(q: &Query<'_>, stream: bool) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &q.params.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for t in &q.params.history {
        let role = match t.role {
            Role::User => "user",
            Role::Model => "assistant",
        };
        messages.push(json!({"role": role, "content": t.text}));
    }
    messages.push(json!({"role": "user", "content": q.params.prompt}));
    if let Some(prefix) = q.params.prefix.as_deref().filter(|p| !p.is_empty()) {
        // The answer so far, for the server to write on from.
        messages.push(json!({"role": "assistant", "content": prefix}));
    }
    let mut body = json!({"model": q.model, "messages": messages, "stream": stream});
    if !q.params.stop.is_empty() {
        body["stop"] = json!(q.params.stop);
    }
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(t) = q.params.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = q.params.max_tokens {
        body["max_tokens"] = json!(m);
    }
    body
}

#[derive(Debug, Deserialize)]
struct Chunk {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<RawUsage>,
    error: Option<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    /// Streamed chunks carry `delta`, whole answers `message`.
    delta: Option<Message>,
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

fn classify(status: u16, e: &ErrorDetail, model: &str, after: Option<std::time::Duration>) -> AiError {
    let msg = if e.message.is_empty() { "no message".to_owned() } else { e.message.clone() };
    let what = match &e.kind {
        Some(k) => format!("{status} {k}"),
        None => status.to_string(),
    };
    match status {
        429 => AiError::Transient {
            message: format!("the OpenAI-compatible server is rate limiting ({what}): {msg}"),
            after,
        },
        500 | 502 | 503 | 504 => {
            AiError::Transient { message: format!("the OpenAI-compatible server had an error ({what}): {msg}"), after }
        }
        401 => AiError::Fatal(format!("the OpenAI-compatible server rejected the API key ({what}): {msg}")),
        403 => AiError::Fatal(format!("the OpenAI-compatible server refused access ({what}): {msg}")),
        404 => {
            AiError::Fatal(format!("the OpenAI-compatible server does not know the model {model:?} ({what}): {msg}"))
        }
        _ => AiError::Fatal(format!("the OpenAI-compatible server answered {what}: {msg}")),
    }
}

fn finish(reason: &str) -> Result<Option<String>, AiError> {
    match reason {
        "" | "stop" | "tool_calls" | "function_call" => Ok(None),
        "length" => Ok(Some("length: the answer was cut off at the token limit".into())),
        "content_filter" => Err(AiError::Fatal(
            "the OpenAI-compatible server's content filter stopped the answer (finish_reason content_filter)".into(),
        )),
        other => Ok(Some(format!("{other}: the answer stopped for a reason the provider names {other:?}"))),
    }
}

async fn take(f: &mut Folded, c: Chunk, sink: &mut Sink<'_>, model: &str) -> Result<(), AiError> {
    if let Some(e) = &c.error {
        return Err(classify(500, e, model, None));
    }
    if let Some(m) = c.model {
        f.model = Some(m);
    }
    if let Some(u) = c.usage {
        f.usage(u.prompt_tokens, u.completion_tokens, u.total_tokens);
    }
    if let Some(choice) = c.choices.into_iter().next() {
        if let Some(text) = choice.delta.or(choice.message).and_then(|m| m.content) {
            sink.push(&text).await;
        }
        f.finish(choice.finish_reason);
    }
    Ok(())
}

pub async fn query(
    http: &reqwest::Client,
    q: &Query<'_>,
    stream: bool,
    timeout: std::time::Duration,
    sink: &mut Sink<'_>,
) -> Result<Answer, AiError> {
    let mut req = http.post(format!("{}/v1/chat/completions", q.base)).json(&request_body(q, stream));
    if let Some(key) = q.key {
        req = req.bearer_auth(key.expose());
    }
    let resp = send(req, timeout, WHO).await?;
    if !resp.status().is_success() {
        let (status, after, detail) = error_answer(resp, |message| ErrorDetail { message, kind: None }).await;
        return Err(classify(status, &detail, q.model, after));
    }
    let mut folded = Folded::default();
    if stream {
        let mut events = std::pin::pin!(sse(resp, timeout, WHO));
        let mut done = false;
        while let Some(data) = events.next().await {
            let data = data?;
            if data.trim() == "[DONE]" {
                done = true;
                break;
            }
            take(&mut folded, decode(WHO, &data)?, sink, q.model).await?;
            if sink.stopped() {
                folded.finish_reason = "stop".into();
                break;
            }
        }
        if !done && folded.finish_reason.is_empty() {
            return Err(AiError::Transient {
                message: format!("{WHO} ended the stream before the answer was complete"),
                after: None,
            });
        }
    } else {
        take(&mut folded, decode(WHO, &body(resp, timeout, WHO).await?)?, sink, q.model).await?;
    }
    let flagged = finish(&folded.finish_reason)?;
    Ok(folded.answer(q.model, "stop", flagged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faena_proto::ai::AiParams;

    #[test]
    fn messages_carry_system_history_and_prompt() {
        let params: AiParams = serde_json::from_value(json!({
            "prompt": "and now?", "system": "be brief",
            "history": [{"role": "user", "text": "hi"}, {"role": "model", "text": "hello"}]
        }))
        .expect("params");
        let q = Query { params: &params, base: "http://x", model: "llama3", key: None };
        let body = request_body(&q, true);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "and now?"},
            ])
        );
        assert_eq!((body["model"].as_str(), body["stream"].as_bool()), (Some("llama3"), Some(true)));
    }

    #[test]
    fn finish_reasons_and_errors() {
        assert_eq!(finish("stop"), Ok(None));
        assert!(finish("length").is_ok_and(|f| f.is_some()));
        assert!(finish("content_filter").is_err());
        let e =
            ErrorDetail { message: "Incorrect API key provided".into(), kind: Some("invalid_request_error".into()) };
        assert!(matches!(classify(401, &e, "m", None), AiError::Fatal(m) if m.contains("rejected the API key")));
        assert!(matches!(classify(429, &e, "m", None), AiError::Transient { .. }));
    }
}
