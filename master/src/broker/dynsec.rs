//! Broker accounts for workers. Each worker connects with an account of its
//! own that the broker confines to its own topics, whatever client id it
//! picks; a worker asks for it over gRPC (`BrokerLogin`), where the master
//! applies the same rule as `Register` (a live worker id's login goes only
//! to the caller carrying that worker's session).
//!
//! - The embedded broker: accounts derived from the cluster token, checked
//!   by the [guard](super::guard).
//! - Mosquitto with its dynamic security plugin (`--mqtt-dynsec`, as the
//!   stack runs it): the master, the plugin's admin, creates one client and
//!   one role per worker over `$CONTROL/dynamic-security/v1`, with a new
//!   random password on every login. Re-creating the client closes the
//!   connections of the old password; a restarted broker forgets the
//!   workers' accounts, and each asks for a new one when it is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use faena_common::broker::{Credentials, embedded_credentials};
use faena_proto::ids::WorkerId;
use faena_proto::secret::Secret;
use faena_proto::topics::Topics;
use parking_lot::Mutex;
use rumqttc::{AsyncClient, QoS};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const ANSWER_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// How long the broker has to answer an account change.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// An unanswered change is sent again after this (it may have gone out
/// before the subscription to the answers, on a reconnect).
const RESEND_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "the broker did not answer the account change within {0:?} (is the broker up, and is the master's account the admin of its dynamic security plugin?)"
    )]
    Timeout(Duration),
    #[error("could not send the account change to the broker: {0}")]
    Send(String),
    #[error("the broker refused the account change: {command}: {error}")]
    Refused { command: String, error: String },
}

/// Where a worker's broker account comes from.
#[derive(Debug, Clone)]
pub enum WorkerLogins {
    /// The embedded broker's accounts, derived from the cluster token.
    Embedded(Secret),
    /// Mosquitto's dynamic security plugin, driven by the master.
    Dynsec(Arc<Dynsec>),
    /// None to give: accounts, if any, are configured on each worker.
    None,
}

impl WorkerLogins {
    /// The account `worker` connects with from now on; None when the master
    /// hands out none.
    pub async fn login(&self, worker: &WorkerId) -> Result<Option<Credentials>, LoginError> {
        match self {
            Self::Embedded(token) => Ok(Some(embedded_credentials(token, &worker.broker_account()))),
            Self::Dynsec(d) => d.provision(worker).await.map(Some),
            Self::None => Ok(None),
        }
    }
}

/// The master's side of Mosquitto's dynamic security plugin.
#[derive(Debug)]
pub struct Dynsec {
    client: AsyncClient,
    topics: Topics,
    /// True while the master is connected (and subscribed to the answers).
    connected: watch::Receiver<bool>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Vec<Answer>>>>,
}

#[derive(Debug, Deserialize)]
struct Answers {
    responses: Vec<Answer>,
}

/// The broker's answer to one command.
#[derive(Debug, Deserialize)]
struct Answer {
    command: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "correlationData")]
    correlation: Option<String>,
}

impl Dynsec {
    pub fn new(client: AsyncClient, topics: Topics, connected: watch::Receiver<bool>) -> Self {
        Self { client, topics, connected, waiting: Mutex::default() }
    }

    /// Subscribes to the plugin's answers; called on every (re)connection.
    pub fn subscribe(&self) {
        if let Err(e) = self.client.try_subscribe(ANSWER_TOPIC, QoS::AtLeastOnce) {
            tracing::warn!(error = %e, "could not subscribe to the broker's account answers");
        }
    }

    /// Hands the answers on [`ANSWER_TOPIC`] to whoever waits for them.
    pub fn on_answer(&self, payload: &[u8]) -> Result<(), String> {
        let answers: Answers = serde_json::from_slice(payload).map_err(|e| format!("not a dynsec answer: {e}"))?;
        let batch = answers
            .responses
            .first()
            .and_then(|a| a.correlation.as_deref())
            .and_then(|c| c.split_once(':'))
            .map(|(batch, _)| batch.to_owned());
        // An answer nobody waits for any more (timed out) is dropped.
        if let Some(tx) = batch.and_then(|b| self.waiting.lock().remove(&b)) {
            let _ = tx.send(answers.responses);
        }
        Ok(())
    }

    /// A new account for `worker`: its role (its own topics), then the
    /// client, deleted first so the old password's connections close. The
    /// commands are idempotent, so an unanswered batch is sent again.
    pub async fn provision(&self, worker: &WorkerId) -> Result<Credentials, LoginError> {
        let creds = Credentials { username: worker.broker_account(), password: Secret::random() };
        let batch = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = oneshot::channel();
        self.waiting.lock().insert(batch.clone(), tx);
        let request = self.commands(worker, &creds.password, &batch).to_string();
        let answers = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let mut connected = self.connected.clone();
            loop {
                connected.wait_for(|c| *c).await.map_err(|_| LoginError::Send("the MQTT loop ended".into()))?;
                self.client
                    .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, request.clone())
                    .await
                    .map_err(|e| LoginError::Send(e.to_string()))?;
                if let Ok(answer) = tokio::time::timeout(RESEND_AFTER, &mut rx).await {
                    return answer.map_err(|_| LoginError::Send("the MQTT loop ended".into()));
                }
            }
        })
        .await
        .unwrap_or(Err(LoginError::Timeout(ANSWER_TIMEOUT)));
        self.waiting.lock().remove(&batch);
        check(&answers?)?;
        Ok(creds)
    }

    fn commands(&self, worker: &WorkerId, password: &Secret, batch: &str) -> Value {
        let (t, account, id) = (&self.topics, worker.broker_account(), worker.as_str());
        let acl = |acltype: &str, topic: String| json!({ "acltype": acltype, "topic": topic, "allow": true });
        let mut acls = Vec::new();
        for topic in [t.worker_jobs(worker), t.worker_control(worker), t.master_status(), t.config()] {
            acls.push(acl("subscribeLiteral", topic.clone()));
            acls.push(acl("publishClientReceive", topic));
        }
        acls.push(acl("publishClientSend", t.worker_status(worker)));
        acls.push(acl("publishClientSend", t.logs()));
        let role = role_name(worker);
        // The role is made afresh, so one an older master made gets today's topics.
        json!({ "commands": [
            { "command": "deleteClient", "username": account, "correlationData": format!("{batch}:old") },
            { "command": "deleteRole", "rolename": role, "correlationData": format!("{batch}:oldrole") },
            { "command": "createRole", "rolename": role, "acls": acls, "correlationData": format!("{batch}:role") },
            {
                "command": "createClient", "username": account, "password": password.expose(), "clientid": id,
                "roles": [{ "rolename": role }], "correlationData": format!("{batch}:client"),
            },
        ]})
    }
}

/// The role that holds `worker`'s topics.
fn role_name(worker: &WorkerId) -> String {
    format!("faena-worker-{worker}")
}

/// Every command must have succeeded, but for a role that already exists
/// (its rules are the same) and an old client that was not there.
fn check(answers: &[Answer]) -> Result<(), LoginError> {
    for a in answers {
        let Some(error) = a.error.as_deref() else { continue };
        let fine = match a.command.as_str() {
            "deleteClient" | "deleteRole" => error.contains("not found"),
            _ => false,
        };
        if !fine {
            return Err(LoginError::Refused { command: a.command.clone(), error: error.to_owned() });
        }
    }
    if answers.len() != 4 {
        return Err(LoginError::Refused {
            command: "(batch)".into(),
            error: format!("{} answers to 4 commands", answers.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(json: &str) -> Vec<Answer> {
        serde_json::from_str::<Answers>(json).expect("answers").responses
    }

    #[test]
    fn a_repeated_login_is_fine_and_a_refusal_is_an_error() {
        let again = answers(
            r#"{"responses":[{"command":"deleteClient","error":"Client not found","correlationData":"b:old"},
            {"command":"deleteRole","error":"Role not found","correlationData":"b:oldrole"},
            {"command":"createRole","correlationData":"b:role"},{"command":"createClient","correlationData":"b:client"}]}"#,
        );
        assert!(check(&again).is_ok());
        let refused = answers(
            r#"{"responses":[{"command":"deleteClient","error":"Client not found"},{"command":"deleteRole"},
            {"command":"createRole"},{"command":"createClient","error":"Permission denied"}]}"#,
        );
        assert!(matches!(check(&refused), Err(LoginError::Refused { command, .. }) if command == "createClient"));
        assert!(check(&answers(r#"{"responses":[]}"#)).is_err(), "no answers is no account");
    }

    #[tokio::test]
    async fn the_role_holds_only_the_workers_own_topics() {
        let (client, _el) = AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 10);
        let d = Dynsec::new(client, Topics::default(), watch::channel(false).1);
        let w = WorkerId::parse("w1").expect("id");
        let cmds = d.commands(&w, &Secret::new("pw"), "b");
        let topics: Vec<(String, String)> = cmds["commands"][2]["acls"]
            .as_array()
            .expect("acls")
            .iter()
            .map(|a| (a["acltype"].as_str().unwrap_or("").to_owned(), a["topic"].as_str().unwrap_or("").to_owned()))
            .collect();
        for (kind, topic) in &topics {
            let shared = ["faena/master/status", "faena/logs", "faena/config"].contains(&topic.as_str());
            let own = topic.starts_with("faena/workers/w1/") || shared;
            assert!(own && !topic.contains(['+', '#']), "{kind} {topic}");
        }
        assert!(topics.iter().any(|(k, t)| k == "publishClientSend" && t == "faena/workers/w1/status"));
        assert!(!topics.iter().any(|(k, t)| k == "publishClientSend" && t.ends_with("/jobs")));
        assert_eq!(cmds["commands"][3]["clientid"], "w1", "the account is bound to its client id");
        assert!(d.on_answer(b"{not json").is_err());
        assert!(d.on_answer(br#"{"responses":[{"command":"x","correlationData":"gone:1"}]}"#).is_ok());
    }
}
