//! The worker's broker account, when none is configured: the master hands
//! it out over gRPC (`BrokerLogin`) — on the embedded broker the account
//! derived from the cluster token, on the stack's Mosquitto an account of
//! this worker's own, confined to its own topics. A broker that refuses it
//! later (restarted, it forgot the account) gets a new one the same way.

use faena_common::broker::Credentials;
use faena_proto::grpc as pb;
use faena_proto::ids::{InstanceId, WorkerId};
use faena_proto::secret::Secret;
use tokio_util::sync::CancellationToken;

use crate::WorkerError;
use crate::client::{self, Client};

/// What the master says this worker logs in to the broker with.
#[derive(Debug)]
pub enum Login {
    /// The account to use.
    Account(Credentials),
    /// The master hands out none: connect without one.
    None,
}

/// Asks the master until it answers ([`client::until_answered`]). None
/// when `cancel` fires first.
pub async fn fetch(
    client: &Client,
    worker: &WorkerId,
    instance: InstanceId,
    cancel: &CancellationToken,
) -> Result<Option<Login>, WorkerError> {
    let req = pb::BrokerLoginRequest { worker_id: worker.to_string(), instance_id: instance.to_string() };
    let answer = client::until_answered(cancel, || {
        let (mut client, req) = (client.clone(), req.clone());
        async move { client.broker_login(req).await }
    })
    .await?;
    Ok(answer.map(|resp| {
        let resp = resp.into_inner();
        match resp.username.is_empty() {
            true => Login::None,
            false => Login::Account(Credentials { username: resp.username, password: Secret::new(resp.password) }),
        }
    }))
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
