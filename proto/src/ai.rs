//! `ai.query`: parameters, the streamed chunks a worker reports, and the
//! result. A query goes to Google's Gemini or to any OpenAI-compatible
//! endpoint; `history` carries a chat's earlier turns so it has context.

use serde::{Deserialize, Serialize};

use crate::WireError;

/// Largest prompt, in bytes.
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;
/// Largest prompt + system instruction + history together, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;
/// Most earlier turns sent along.
pub const MAX_TURNS: usize = 200;
/// Most stop sequences (as OpenAI allows), and the longest, in bytes.
pub const MAX_STOPS: usize = 4;
pub const MAX_STOP_BYTES: usize = 256;
/// Name of the per-job API key a work unit may refer to (fetched over gRPC).
pub const API_KEY_SECRET: &str = "api_key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Gemini,
    Openai,
    /// A GGUF model run by llama.cpp inside the worker (`FAENA_LOCAL_MODEL`).
    Local,
}

/// A model name goes into a provider's URL path (Gemini's
/// `models/{model}:generateContent`): 1 to 128 of letters, digits and
/// `-._:@+`, starting with a letter or digit, never `..`. The one rule for
/// a job's `model` and the live configuration's `ai.model.*`.
pub fn check_model_name(m: &str) -> Result<(), String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || "-._:@+".contains(c);
    let starts_well = m.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if m.len() > 128 || !starts_well || !m.chars().all(name_char) || m.contains("..") {
        return Err(format!(
            "model must be 1..=128 letters, digits or '-', '.', '_', ':', '@', '+', starting with a letter or digit, without '..' (got {:?})",
            m.chars().take(140).collect::<String>()
        ));
    }
    Ok(())
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Gemini, Provider::Openai, Provider::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Gemini => "gemini",
            Provider::Openai => "openai",
            Provider::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Some of the providers, as a job may accept them (any of them); empty
/// means any provider at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProviderSet(u8);

impl ProviderSet {
    fn bit(p: Provider) -> u8 {
        1 << (p as u8)
    }

    pub fn of(providers: &[Provider]) -> Self {
        Self(providers.iter().fold(0, |m, p| m | Self::bit(*p)))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a worker offering `offered` can take a job that accepts this set.
    pub fn met_by(self, offered: &[Provider]) -> bool {
        self.is_empty() || offered.iter().any(|p| self.0 & Self::bit(*p) != 0)
    }

    pub fn iter(self) -> impl Iterator<Item = Provider> {
        Provider::ALL.into_iter().filter(move |p| self.0 & Self::bit(*p) != 0)
    }
}

impl std::fmt::Display for ProviderSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Provider::as_str).collect();
        f.write_str(&names.join(" or "))
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Model,
}

/// One earlier turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiParams {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Which model; the worker's default for the provider when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Which provider; any worker that has one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// Providers to try in this order (instead of `provider`): a rate
    /// limit, an outage or a timeout before any text has gone out moves to
    /// the next one the worker has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    /// Earlier turns, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Turn>,
    /// Stream the answer as it is written (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Answer from the master's result cache when the same question was
    /// asked recently (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The answer ends before the first of these would be written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The start of the answer, already written: the provider continues it
    /// (as an assistant turn it writes on from). The result's text is the
    /// whole answer, this included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Set by the master when the submitter gave a key of their own: the
    /// job then runs with that key or not at all (the key itself is never
    /// here). Not for clients to set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_key: bool,
}

impl AiParams {
    pub fn validate(&self) -> Result<(), WireError> {
        let bad = |m: String| Err(WireError::Params(m));
        if self.prompt.trim().is_empty() {
            return bad("prompt must not be empty".into());
        }
        if self.prompt.len() > MAX_PROMPT_BYTES {
            return bad(format!("prompt is {} bytes; the limit is {MAX_PROMPT_BYTES}", self.prompt.len()));
        }
        if self.history.len() > MAX_TURNS {
            return bad(format!("history has {} turns; the limit is {MAX_TURNS}", self.history.len()));
        }
        let context = self.prompt.len()
            + self.system.as_ref().map_or(0, String::len)
            + self.prefix.as_ref().map_or(0, String::len)
            + self.history.iter().map(|t| t.text.len()).sum::<usize>();
        if context > MAX_CONTEXT_BYTES {
            return bad(format!(
                "prompt, system and history are {context} bytes together; the limit is {MAX_CONTEXT_BYTES}"
            ));
        }
        if let Some(m) = &self.model {
            check_model_name(m).map_err(WireError::Params)?;
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return bad("temperature must be between 0 and 2".into());
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens must be at least 1".into());
        }
        if self.stop.len() > MAX_STOPS || self.stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return bad(format!("stop takes at most {MAX_STOPS} sequences of 1 to {MAX_STOP_BYTES} bytes"));
        }
        if self.provider.is_some() && !self.providers.is_empty() {
            return bad("give either provider or providers, not both".into());
        }
        if ProviderSet::of(&self.providers).iter().count() != self.providers.len() {
            return bad("providers must not repeat a provider".into());
        }
        Ok(())
    }

    /// The providers this job accepts, in the order to try them (empty: any).
    pub fn order(&self) -> Vec<Provider> {
        match self.provider {
            Some(p) => vec![p],
            None => self.providers.clone(),
        }
    }

    pub fn streams(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    pub fn cacheable(&self) -> bool {
        self.cache.unwrap_or(true)
    }

    /// What makes two questions the same for the result cache: everything
    /// that shapes the answer, nothing that does not (streaming, caching).
    pub fn cache_key(&self) -> String {
        let key = Self { stream: None, cache: None, own_key: false, ..self.clone() };
        serde_json::to_string(&key).unwrap_or_default()
    }
}

/// Worker → master, for each piece of the answer as it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiChunk {
    /// 0, 1, 2, ... in the order they were written.
    pub seq: u64,
    pub text: String,
}

/// Worker → master, while no answer is being written: why it waits. Goes
/// out as the job's progress (never with `seq`/`text`, so it cannot be
/// taken for a piece of the answer); the page shows it under the question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiStatus {
    pub provider: Provider,
    /// What the provider said (`429 …`, `timed out …`).
    pub error: String,
    #[serde(flatten)]
    pub next: AiNext,
}

/// What the worker does after a provider could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AiNext {
    /// Asks the same provider again after `retry_in_ms`; this will be try
    /// `attempt` of at most `tries`.
    Retrying { retry_in_ms: u64, attempt: u32, tries: u32 },
    /// Asks the next provider of the job's order now.
    FallingBack { next: Provider },
    /// The provider was cut off mid-answer: the next provider of the
    /// job's order continues the answer from what was written.
    Continuing { next: Provider },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Timings {
    /// From sending the request to the first piece of the answer.
    pub first_token_ms: u64,
    pub total_ms: u64,
    /// Tries the provider needed (rate limits and server errors are retried).
    pub tries: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiOutput {
    pub text: String,
    pub model: String,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why the model stopped, as the provider says it (`STOP`, `stop`, ...).
    pub finish_reason: String,
    /// Set when the answer is usable but incomplete, e.g. cut at the token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagged: Option<String>,
    pub timings: Timings,
    /// True when the master answered from its result cache.
    #[serde(default)]
    pub cached: bool,
    /// Providers tried before the one that answered, and why each failed
    /// (one cut off mid-answer too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Tried>,
    /// When a provider was cut off mid-answer and the next one continued
    /// it: each that wrote part of the answer, in order (`provider` is the
    /// last). Empty when one provider wrote it all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered_by: Vec<Provider>,
}

/// A provider that could not answer before another did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tried {
    pub provider: Provider,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<AiParams, String> {
        let p: AiParams = serde_json::from_value(v).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn a_wait_goes_out_flat_and_never_as_a_piece_of_the_answer() {
        let retrying = AiStatus {
            provider: Provider::Gemini,
            error: "429".into(),
            next: AiNext::Retrying { retry_in_ms: 2000, attempt: 2, tries: 4 },
        };
        let v = serde_json::to_value(&retrying).expect("serialises");
        assert_eq!(
            v,
            json!({"status": "retrying", "provider": "gemini", "error": "429", "retry_in_ms": 2000, "attempt": 2, "tries": 4})
        );
        let falling = AiStatus {
            provider: Provider::Gemini,
            error: "503".into(),
            next: AiNext::FallingBack { next: Provider::Local },
        };
        let v = serde_json::to_value(&falling).expect("serialises");
        assert_eq!(v, json!({"status": "falling_back", "provider": "gemini", "error": "503", "next": "local"}));
        assert!(v.get("seq").is_none() && v.get("text").is_none());
        assert_eq!(serde_json::from_value::<AiStatus>(v).expect("parses"), falling);
    }

    #[test]
    fn limits_are_clear() {
        assert!(
            parse(json!({"prompt": "hi", "provider": "openai", "history": [{"role": "user", "text": "a"}]})).is_ok()
        );
        for (bad, says) in [
            (json!({"prompt": " "}), "must not be empty"),
            (json!({"prompt": "x".repeat(MAX_PROMPT_BYTES + 1)}), "the limit is 32768"),
            (json!({"prompt": "x", "provider": "claude"}), "unknown variant"),
            (json!({"prompt": "x", "model": "../etc"}), "model must be"),
            (json!({"prompt": "x", "temperature": 3.0}), "temperature"),
            (json!({"prompt": "x", "history": [{"role": "system", "text": "a"}]}), "unknown variant"),
            (json!({"prompt": "x", "system": "y".repeat(MAX_CONTEXT_BYTES)}), "together"),
            (json!({"prompt": "x", "provider": "local", "providers": ["gemini"]}), "not both"),
            (json!({"prompt": "x", "providers": ["local", "gemini", "local"]}), "repeat"),
            (json!({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}), "at most 4"),
            (json!({"prompt": "x", "stop": [""]}), "1 to 256"),
            (json!({"prompt": "x", "prefix": "y".repeat(MAX_CONTEXT_BYTES)}), "together"),
        ] {
            let e = parse(bad.clone()).err().unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cache_key_ignores_how_the_answer_is_delivered() {
        let a = parse(json!({"prompt": "q", "stream": false})).expect("valid");
        let b = parse(json!({"prompt": "q", "cache": true})).expect("valid");
        let c = parse(json!({"prompt": "q", "model": "m"})).expect("valid");
        assert_eq!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), c.cache_key());
    }

    #[test]
    fn a_job_accepts_its_providers_in_its_order() {
        let p = parse(json!({"prompt": "x", "providers": ["local", "gemini"]})).expect("valid");
        assert_eq!(p.order(), vec![Provider::Local, Provider::Gemini]);
        let set = ProviderSet::of(&p.order());
        assert_eq!(set.to_string(), "gemini or local");
        assert!(set.met_by(&[Provider::Openai, Provider::Local]) && !set.met_by(&[Provider::Openai]));
        assert!(ProviderSet::default().met_by(&[]), "no providers named: any worker");
        let one = parse(json!({"prompt": "x", "provider": "openai"})).expect("valid");
        assert_eq!(one.order(), vec![Provider::Openai]);
    }
}
