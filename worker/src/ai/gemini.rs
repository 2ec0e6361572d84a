//! Google's Gemini REST API: `POST {base}/models/{model}:streamGenerateContent?alt=sse`
//! (or `:generateContent` when streaming is off), key in `x-goog-api-key`.
//! The system instruction goes in `systemInstruction`, the conversation's
//! earlier turns and the prompt in `contents`.

use faena_proto::ai::Role;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AiError, Answer, Folded, Query, Sink, body, decode, error_answer, send, sse};

const WHO: &str = "Gemini";

pub fn request_body(q: &Query<'_>) -> Value {
    let mut contents: Vec<Value> = q
        .params
        .history
        .iter()
        .map(|t| {
            let role = match t.role {
                Role::User => "user",
                Role::Model => "model",
            };
            json!({"role": role, "parts": [{"text": t.text}]})
        })
        .collect();
    contents.push(json!({"role": "user", "parts": [{"text": q.params.prompt}]}));
    if let Some(prefix) = q.params.prefix.as_deref().filter(|p| !p.is_empty()) {
        // The answer so far, for the model to write on from.
        contents.push(json!({"role": "model", "parts": [{"text": prefix}]}));
    }
    let mut body = json!({"contents": contents});
    if let Some(system) = &q.params.system {
        body["systemInstruction"] = json!({"parts": [{"text": system}]});
    }
    let mut config = serde_json::Map::new();
    if let Some(t) = q.params.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(m) = q.params.max_tokens {
        config.insert("maxOutputTokens".into(), json!(m));
    }
    if !q.params.stop.is_empty() {
        config.insert("stopSequences".into(), json!(q.params.stop));
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    body
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    error: Option<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<Content>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    total_token_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    code: Option<u16>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

/// `RetryInfo.retryDelay` ("37s", "1.5s") from an error's details.
fn retry_delay(details: &[Value]) -> Option<std::time::Duration> {
    details
        .iter()
        .filter(|d| d["@type"].as_str().is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))
        .find_map(|d| d["retryDelay"].as_str()?.strip_suffix('s')?.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(std::time::Duration::from_secs_f64)
}

/// Classifies an error answer the way a user needs it.
fn classify(status: u16, e: &ErrorDetail, model: &str, header_delay: Option<std::time::Duration>) -> AiError {
    let what = if e.status.is_empty() { format!("{status}") } else { format!("{status} {}", e.status) };
    let msg = if e.message.is_empty() { "no message".to_owned() } else { e.message.clone() };
    match status {
        429 => AiError::Transient {
            message: format!("Gemini is rate limiting ({what}): {msg}"),
            after: retry_delay(&e.details).or(header_delay),
        },
        500 | 502 | 503 | 504 => {
            AiError::Transient { message: format!("Gemini had a server error ({what}): {msg}"), after: None }
        }
        400 if msg.to_lowercase().contains("api key") => {
            AiError::Fatal(format!("Gemini rejected the API key ({what}): {msg}"))
        }
        400 => AiError::Fatal(format!("Gemini rejected the request ({what}): {msg}")),
        401 | 403 => AiError::Fatal(format!(
            "Gemini refused access ({what}): {msg} — check the API key and that the Generative Language API is enabled for it"
        )),
        404 => AiError::Fatal(format!("Gemini does not know the model {model:?} ({what}): {msg}")),
        _ => AiError::Fatal(format!("Gemini answered {what}: {msg}")),
    }
}

/// What `finishReason` means for the job: fine, usable but flagged, or a failure.
fn finish(reason: &str) -> Result<Option<String>, AiError> {
    match reason {
        "" | "STOP" | "FINISH_REASON_UNSPECIFIED" => Ok(None),
        "MAX_TOKENS" => Ok(Some("MAX_TOKENS: the answer was cut off at the output token limit".into())),
        "SAFETY" | "PROHIBITED_CONTENT" | "SPII" | "BLOCKLIST" | "IMAGE_SAFETY" => Err(AiError::Fatal(format!(
            "Gemini stopped the answer: its safety filters flagged it (finishReason {reason})"
        ))),
        "RECITATION" => Err(AiError::Fatal(
            "Gemini stopped the answer because it recited copyrighted material (finishReason RECITATION)".into(),
        )),
        other => Err(AiError::Fatal(format!("Gemini stopped the answer early (finishReason {other})"))),
    }
}

/// Takes one response (a stream chunk or the whole answer): its text goes
/// to the sink; blocks and errors end the query.
async fn take(f: &mut Folded, r: Response, sink: &mut Sink<'_>, model: &str) -> Result<(), AiError> {
    if let Some(e) = &r.error {
        return Err(classify(e.code.unwrap_or(500), e, model, None));
    }
    if let Some(reason) = r.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_deref()) {
        return Err(AiError::Fatal(format!("Gemini blocked the prompt (blockReason {reason}); rephrase it")));
    }
    if let Some(v) = r.model_version {
        f.model = Some(v);
    }
    if let Some(u) = r.usage_metadata {
        f.usage(u.prompt_token_count, u.candidates_token_count, u.total_token_count);
    }
    if let Some(c) = r.candidates.into_iter().next() {
        for part in c.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(text) = part.text {
                sink.push(&text).await;
            }
        }
        f.finish(c.finish_reason);
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
    let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    let url = format!("{}/models/{}:{method}", q.base, q.model);
    let mut req = http.post(url).json(&request_body(q));
    match q.key {
        Some(key) => req = req.header("x-goog-api-key", key.expose()),
        None => {
            return Err(AiError::Fatal("no Gemini API key: set GEMINI_API_KEY on the worker or send your own".into()));
        }
    }
    let resp = send(req, timeout, WHO).await?;
    if !resp.status().is_success() {
        let (status, after, detail) = error_answer(resp, |message| ErrorDetail { message, ..Default::default() }).await;
        return Err(classify(status, &detail, q.model, after));
    }
    let mut folded = Folded::default();
    if stream {
        let mut events = std::pin::pin!(sse(resp, timeout, WHO));
        while let Some(data) = events.next().await {
            take(&mut folded, decode(WHO, &data?)?, sink, q.model).await?;
            if sink.stopped() {
                folded.finish_reason = "STOP".into();
                break;
            }
        }
        if folded.finish_reason.is_empty() {
            // Gemini's last chunk always says why it stopped.
            return Err(AiError::Transient {
                message: format!("{WHO} ended the stream before the answer was complete"),
                after: None,
            });
        }
    } else {
        take(&mut folded, decode(WHO, &body(resp, timeout, WHO).await?)?, sink, q.model).await?;
    }
    let flagged = finish(&folded.finish_reason)?;
    Ok(folded.answer(q.model, "STOP", flagged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faena_proto::ai::AiParams;

    #[test]
    fn history_and_system_instruction_go_where_gemini_wants_them() {
        let params: AiParams = serde_json::from_value(json!({
            "prompt": "and now?", "system": "be brief", "max_tokens": 50, "temperature": 0.2,
            "history": [{"role": "user", "text": "hi"}, {"role": "model", "text": "hello"}]
        }))
        .expect("params");
        let q = Query { params: &params, base: "http://x", model: "m", key: None };
        assert_eq!(
            request_body(&q),
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}]},
                    {"role": "model", "parts": [{"text": "hello"}]},
                    {"role": "user", "parts": [{"text": "and now?"}]},
                ],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50},
            })
        );
    }

    #[test]
    fn errors_read_as_a_person_needs_them() {
        let e = |code, status: &str, message: &str, details| ErrorDetail {
            code: Some(code),
            message: message.into(),
            status: status.into(),
            details,
        };
        let retry = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]);
        let r = classify(
            429,
            &e(429, "RESOURCE_EXHAUSTED", "quota", retry.as_array().cloned().unwrap_or_default()),
            "m",
            None,
        );
        assert_eq!(
            r,
            AiError::Transient {
                message: "Gemini is rate limiting (429 RESOURCE_EXHAUSTED): quota".into(),
                after: Some(std::time::Duration::from_millis(1500)),
            }
        );
        let bad_key = classify(
            400,
            &e(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", vec![]),
            "m",
            None,
        );
        assert!(matches!(&bad_key, AiError::Fatal(m) if m.starts_with("Gemini rejected the API key")), "{bad_key:?}");
        let model = classify(404, &e(404, "NOT_FOUND", "models/x is not found", vec![]), "x", None);
        assert!(matches!(&model, AiError::Fatal(m) if m.contains("does not know the model \"x\"")), "{model:?}");
        assert!(matches!(
            classify(503, &e(503, "UNAVAILABLE", "overloaded", vec![]), "m", None),
            AiError::Transient { .. }
        ));
        assert_eq!(finish("STOP"), Ok(None));
        assert!(finish("MAX_TOKENS").is_ok_and(|f| f.is_some()));
        assert!(finish("SAFETY").is_err());
    }
}
