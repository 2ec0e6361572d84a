//! The browser contract: Socket.IO event names and payloads between the web
//! page and the master, defined once here (`web/app.js` uses these names).
//!
//! A browser *session* (its id kept by the browser) owns its jobs: a socket
//! joins its session's room on `hello` and only ever hears of that
//! session's jobs. Every request is acknowledged with an [`Ack`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ai::{Provider, Role, Turn};
use crate::ids::JobId;
use crate::jobs::JobState;

/// Client → master.
pub mod to_master {
    /// Start or resume a session: [`super::Hello`] → [`super::Welcome`].
    pub const HELLO: &str = "hello";
    /// Ask the AI: [`super::Ask`] → job id.
    pub const ASK: &str = "ask";
    /// Use this key for the session's AI queries: [`super::SetKey`].
    pub const SET_KEY: &str = "set_key";
    /// Forget the session's key.
    pub const CLEAR_KEY: &str = "clear_key";
    /// Hash a text: [`super::HashText`] → job id.
    pub const HASH: &str = "hash";
    /// Start a mining job: [`super::Mine`] → job id.
    pub const MINE: &str = "mine";
    /// Cancel one of the session's jobs: [`super::JobRef`].
    pub const CANCEL: &str = "cancel";
}

/// Master → client.
pub mod to_client {
    /// A job of the session changed state or place in the queue: [`super::JobUpdate`].
    pub const JOB: &str = "job";
    /// A piece of an answer as it is written: [`super::Chunk`].
    pub const CHUNK: &str = "chunk";
    /// Progress of a RandomX job (hashrate, shares): [`super::Progress`].
    pub const PROGRESS: &str = "progress";
    /// A job ended: [`super::Done`].
    pub const DONE: &str = "done";
    /// The cluster's workers (`[WorkerView]`), on connect and when they change.
    pub const WORKERS: &str = "workers";
}

/// The `connect_error` message of a connection refused for want of the
/// master's API token (`FAENA_API_TOKEN`); the client sends it as
/// `auth: {token}` in its handshake.
pub const UNAUTHORIZED: &str = "unauthorized";

/// Every event name, both ways (the page's own list is checked against it).
pub const ALL_EVENTS: [&str; 12] = [
    to_master::HELLO,
    to_master::ASK,
    to_master::SET_KEY,
    to_master::CLEAR_KEY,
    to_master::HASH,
    to_master::MINE,
    to_master::CANCEL,
    to_client::JOB,
    to_client::CHUNK,
    to_client::PROGRESS,
    to_client::DONE,
    to_client::WORKERS,
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The session to resume (kept by the browser); none or an unknown one starts a new one.
    #[serde(default)]
    pub session: Option<String>,
}

/// One question of the session's chat and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub job: JobId,
    pub question: String,
    /// The answer so far, or all of it once done.
    pub answer: String,
    pub state: JobState,
    /// Worker, model, timings, attempt, cached... once done; the error if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub session: String,
    /// The session's chat so far, oldest first.
    pub history: Vec<Exchange>,
    /// Whether the session has a key of its own (the key is never sent back).
    pub has_key: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetKey {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashText {
    pub key: String,
    pub input: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mine {
    /// Hex.
    pub key: String,
    /// Hex.
    pub blob: String,
    pub difficulty: u64,
    #[serde(default)]
    pub nonce_start: Option<u32>,
    #[serde(default)]
    pub nonce_count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub job: JobId,
}

/// The answer to every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ack {
    Job { job: JobId, position: u64 },
    Welcome(Welcome),
    Ok { ok: bool },
    Error { error: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobUpdate {
    pub job: JobId,
    pub state: JobState,
    /// Jobs ahead of this one while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Why it waits, or why it went back to the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Back in the queue with its answer so far kept: the next attempt
    /// continues it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continues: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub job: JobId,
    pub seq: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub job: JobId,
    /// `MineProgress` or `HashProgress`.
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub job: JobId,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// A session's answered questions as an AI query's `history`.
pub fn history(exchanges: &[Exchange]) -> Vec<Turn> {
    exchanges
        .iter()
        .filter(|e| e.state == JobState::Succeeded)
        .flat_map(|e| {
            [Turn { role: Role::User, text: e.question.clone() }, Turn { role: Role::Model, text: e.answer.clone() }]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_strict_and_acks_read_plainly() {
        let ask: Ask = serde_json::from_value(json!({"prompt": "hi", "provider": "openai"})).expect("ask");
        assert_eq!(ask.provider, Some(Provider::Openai));
        assert!(
            serde_json::from_value::<Ask>(json!({"prompt": "hi", "session": "other"})).is_err(),
            "no smuggled fields"
        );
        let id = JobId::new();
        assert_eq!(
            serde_json::to_value(Ack::Job { job: id, position: 3 }).expect("json"),
            json!({"job": id, "position": 3})
        );
        assert_eq!(serde_json::to_value(Ack::Error { error: "no".into() }).expect("json"), json!({"error": "no"}));
    }

    #[test]
    fn only_answered_questions_become_context() {
        let ex = |q: &str, a: &str, state| Exchange {
            job: JobId::new(),
            question: q.into(),
            answer: a.into(),
            state,
            meta: None,
        };
        let turns = history(&[ex("q1", "a1", JobState::Succeeded), ex("q2", "", JobState::Failed)]);
        assert_eq!(turns.len(), 2);
        assert_eq!((turns[0].text.as_str(), turns[1].text.as_str()), ("q1", "a1"));
    }
}
