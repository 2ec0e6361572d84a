//! The worker's broker account, when none is configured: the master hands
//! it out over gRPC (`BrokerLogin`) — on the embedded broker the account
//! derived from the cluster token, on the stack's Mosquitto an account of
//! this worker's own, confined to its own topics. A broker that refuses it
//! later (restarted, it forgot the account) gets a new one the same way.

use faena_common::broker::Credentials;
use faena_common::retry::Policy;
use faena_proto::grpc as pb;
use faena_proto::ids::{InstanceId, WorkerId};
use faena_proto::secret::Secret;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::WorkerError;
use crate::client::Client;

/// What the master says this worker logs in to the broker with.
#[derive(Debug)]
pub enum Login {
    /// The account to use.
    Account(Credentials),
    /// The master hands out none: connect without one.
    None,
}

/// Asks the master until it answers; a wrong token is fatal. None when
/// `cancel` fires first.
pub async fn fetch(
    client: &Client,
    worker: &WorkerId,
    instance: InstanceId,
    cancel: &CancellationToken,
) -> Result<Option<Login>, WorkerError> {
    let mut backoff = Policy::RECONNECT.start();
    loop {
        let req = pb::BrokerLoginRequest { worker_id: worker.to_string(), instance_id: instance.to_string() };
        match client.clone().broker_login(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                if resp.username.is_empty() {
                    return Ok(Some(Login::None));
                }
                let password = Secret::new(resp.password);
                return Ok(Some(Login::Account(Credentials { username: resp.username, password })));
            }
            Err(s) if matches!(s.code(), Code::Unauthenticated | Code::InvalidArgument | Code::PermissionDenied) => {
                return Err(WorkerError::Refused(s.message().to_owned()));
            }
            Err(s) if tls_failure(&s).is_some() => {
                let why = tls_failure(&s).unwrap_or_default();
                return Err(WorkerError::MasterTls(why));
            }
            Err(s) => {
                let wait = backoff.wait();
                let why = match s.code() {
                    Code::AlreadyExists => "worker id in use",
                    Code::Unavailable if !s.message().contains("transport") => {
                        "the master could not make a broker login"
                    }
                    _ => "master not reachable yet",
                };
                tracing::warn!(code = ?s.code(), error = %s.message(), retry_in_ms = wait.as_millis() as u64, "{why}");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Why TLS with the master failed, when it did: a certificate it does not
/// trust will not change by retrying.
fn tls_failure(status: &tonic::Status) -> Option<String> {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("certificate") {
            return Some(text);
        }
        source = e.source();
    }
    None
}

/// For the MQTT loop: a new account each time the broker refuses the one it has.
pub fn relogin(
    client: Client,
    worker: WorkerId,
    instance: InstanceId,
    cancel: CancellationToken,
) -> faena_common::broker::Relogin {
    Box::new(move || {
        let (client, worker, cancel) = (client.clone(), worker.clone(), cancel.clone());
        Box::pin(async move {
            match fetch(&client, &worker, instance, &cancel).await {
                Ok(Some(Login::Account(c))) => Some(c),
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(error = %e, "no new broker login");
                    None
                }
            }
        })
    })
}
