//! The master's MQTT side: publishes work units, control messages and its own
//! retained status; reads worker status (and their last wills). Malformed
//! messages are counted, logged and dropped.

use std::sync::Arc;

use faena_common::broker::{self, BrokerError, BrokerUrl, Credentials};
use faena_proto::ids::{InstanceId, WorkerId};
use faena_proto::mqtt::{Control, MasterState, MasterStatus, Payload, WorkUnit, WorkerStatus, now_ms};
use faena_proto::topics::{Topic, Topics};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Publishing handle for the coordinator. Publishing never waits: the client
/// queues requests, and a unit lost on the way is recovered by its lease.
#[derive(Debug, Clone)]
pub struct MqttOut {
    client: AsyncClient,
    topics: Topics,
    instance: InstanceId,
}

impl MqttOut {
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    pub fn dispatch(&self, worker: &WorkerId, unit: &WorkUnit) {
        if let Err(e) = self.client.try_publish(self.topics.worker_jobs(worker), QoS::AtLeastOnce, false, unit.encode())
        {
            tracing::warn!(job = %unit.job_id, worker = %worker, error = %e, "could not queue a work unit; its lease will recover it");
        }
    }

    pub fn control(&self, worker: &WorkerId, control: &Control) {
        if let Err(e) =
            self.client.try_publish(self.topics.worker_control(worker), QoS::AtLeastOnce, false, control.encode())
        {
            tracing::warn!(worker = %worker, error = %e, "could not queue a control message");
        }
    }

    pub async fn announce(&self, state: MasterState) {
        let status = MasterStatus { instance_id: self.instance, state, ts_ms: now_ms() };
        let _ = self.client.publish(self.topics.master_status(), QoS::AtLeastOnce, true, status.encode()).await;
    }
}

pub struct Connection {
    pub out: MqttOut,
    /// True while connected to the broker.
    pub connected: watch::Receiver<bool>,
    pub statuses: mpsc::Receiver<WorkerStatus>,
    pub driver: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BrokerError>> + Send>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("out", &self.out).finish_non_exhaustive()
    }
}

pub fn connect(
    url: &BrokerUrl,
    creds: Option<&Credentials>,
    topics: Topics,
    instance: InstanceId,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Connection {
    let will_status = MasterStatus { instance_id: instance, state: MasterState::Offline, ts_ms: 0 };
    let will = LastWill::new(topics.master_status(), will_status.encode(), QoS::AtLeastOnce, true);
    let options = broker::options(broker::MASTER_CLIENT_ID, url, creds, Some(will));
    let (client, eventloop) = broker::client(options, 65_536);
    let (connected_tx, connected) = watch::channel(false);
    let (status_tx, statuses) = mpsc::channel(4096);
    let out = MqttOut { client: client.clone(), topics: topics.clone(), instance };
    let announce = out.clone();
    let on_event = move |event: Event| match event {
        Event::Incoming(Packet::ConnAck(_)) => {
            let _ = connected_tx.send(true);
            let _ = client.try_subscribe(topics.all_worker_status(), QoS::AtLeastOnce);
            let status = MasterStatus { instance_id: announce.instance, state: MasterState::Online, ts_ms: now_ms() };
            let _ = client.try_publish(topics.master_status(), QoS::AtLeastOnce, true, status.encode());
        }
        Event::Incoming(Packet::Disconnect) | Event::Outgoing(rumqttc::Outgoing::Disconnect) => {
            let _ = connected_tx.send(false);
        }
        Event::Incoming(Packet::Publish(p)) => match decode_status(&topics, &p.topic, &p.payload) {
            Ok(Some(status)) => {
                let _ = status_tx.try_send(status);
            }
            Ok(None) => {}
            Err(e) => {
                metrics.malformed_messages.inc();
                tracing::warn!(topic = %p.topic, error = %e, "dropped a malformed MQTT message");
            }
        },
        _ => {}
    };
    let driver = Box::pin(broker::drive(eventloop, cancel, on_event));
    Connection { out, connected, statuses, driver }
}

/// A status message must parse, and name the worker whose topic it came on.
fn decode_status(topics: &Topics, topic: &str, payload: &[u8]) -> Result<Option<WorkerStatus>, String> {
    let worker = match topics.parse(topic).map_err(|e| e.to_string())? {
        Topic::WorkerStatus(w) => w,
        _ => return Ok(None),
    };
    if payload.is_empty() {
        // A cleared retained message.
        return Ok(None);
    }
    let status = WorkerStatus::decode(payload).map_err(|e| e.to_string())?;
    if status.worker_id != worker {
        return Err(format!("status names worker {} but came on {worker}'s topic", status.worker_id));
    }
    Ok(Some(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faena_proto::mqtt::WorkerState;

    #[test]
    fn status_messages_are_validated() {
        let topics = Topics::default();
        let w = WorkerId::parse("w1").expect("id");
        let status = WorkerStatus {
            worker_id: w.clone(),
            instance_id: InstanceId::new(),
            state: WorkerState::Online,
            slots: 1,
            running: 0,
            kinds: vec![],
            hashrate: 0.0,
            ts_ms: 0,
        };
        let topic = topics.worker_status(&w);
        assert_eq!(decode_status(&topics, &topic, &status.encode()), Ok(Some(status.clone())));
        assert_eq!(decode_status(&topics, &topic, b""), Ok(None));
        assert_eq!(decode_status(&topics, &topics.logs(), b"whatever"), Ok(None));
        assert!(decode_status(&topics, &topic, b"{not json").is_err());
        let other = topics.worker_status(&WorkerId::parse("w2").expect("id"));
        assert!(decode_status(&topics, &other, &status.encode()).is_err());
        assert!(decode_status(&topics, "faena/workers/a+b/status", &status.encode()).is_err());
    }
}
