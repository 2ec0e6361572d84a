//! The master's MQTT side: publishes work units, control messages and its own
//! retained status; reads worker status (and their last wills). Malformed
//! messages are counted, logged and dropped.
//!
//! Worker statuses reach the coordinator through a [`Statuses`] mailbox that
//! keeps the latest status of each worker instance: the MQTT loop never
//! waits on it and no status is lost to a full buffer — a newer status of the
//! same instance replaces the older one, which is all the engine needs, and
//! an `offline` one (a last will) is always taken.

use std::collections::HashMap;
use std::sync::Arc;

use faena_common::broker::{self, BrokerError, Endpoint};
use faena_proto::ids::{InstanceId, WorkerId};
use faena_proto::mqtt::{Control, MasterState, MasterStatus, Payload, WorkUnit, WorkerState, WorkerStatus, now_ms};
use faena_proto::topics::{Topic, Topics};
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::broker::dynsec::{self, Dynsec};
use crate::metrics::Metrics;

/// Publishing handle for the coordinator. Publishing never waits: the client
/// queues requests, and a unit lost on the way is recovered by its lease.
#[derive(Debug, Clone)]
pub struct MqttOut {
    client: AsyncClient,
    topics: Topics,
    instance: InstanceId,
    /// The signed live configuration, published again on every connection
    /// (a restarted broker may have lost the retained copy).
    config: Arc<Mutex<Option<Vec<u8>>>>,
    /// Units and control messages go out only while this master leads;
    /// its status names the lead.
    lead: crate::leader::Lead,
    /// With the embedded broker, units and control messages go through its
    /// in-process link instead of the TCP connection.
    direct: Option<Arc<crate::broker::link::Direct>>,
}

impl MqttOut {
    fn status(&self, state: MasterState) -> MasterStatus {
        let (leader, epoch) = self.lead.shared.clone().unzip();
        MasterStatus { instance_id: self.instance, state, ts_ms: now_ms(), leader, epoch }
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Whether this master holds the lead now: what it sends to workers goes out.
    pub fn leads(&self) -> bool {
        self.lead.held.holds()
    }

    /// Publishes `unit` to `worker`; false when it did not go out (this
    /// master does not hold the lead, or the client's queue refused it).
    pub fn dispatch(&self, worker: &WorkerId, unit: &WorkUnit) -> bool {
        self.to_jobs_topic(worker, unit.encode(), &format_args!("job {}", unit.job_id))
    }

    /// Publishes a message of `count` units ([`faena_proto::mqtt::UnitBatch`])
    /// to `worker`; false when it did not go out, as [`MqttOut::dispatch`].
    pub fn dispatch_batch(&self, worker: &WorkerId, message: Vec<u8>, count: usize) -> bool {
        self.to_jobs_topic(worker, message, &format_args!("{count} units"))
    }

    /// Publishes a message of `units` on `worker`'s jobs topic while this
    /// master holds the lead; whether it went out (if not, its units go
    /// back to the queue).
    fn to_jobs_topic(&self, worker: &WorkerId, payload: Vec<u8>, units: &dyn std::fmt::Display) -> bool {
        if !self.lead.held.holds() {
            tracing::debug!(units = %units, "not sent: this master's lease has run out");
            return false;
        }
        if let Err(e) = self.to_worker(self.topics.worker_jobs(worker), payload) {
            tracing::warn!(units = %units, worker = %worker, error = %e, "could not queue work units; they go back to the queue");
            return false;
        }
        true
    }

    /// Publishes what a worker is sent: through the embedded broker's link
    /// when there is one, else at QoS 1 on the connection.
    fn to_worker(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match &self.direct {
            Some(d) => d.publish(topic, payload).map_err(|e| e.to_string()),
            None => self.client.try_publish(topic, QoS::AtLeastOnce, false, payload).map_err(|e| e.to_string()),
        }
    }

    pub fn control(&self, worker: &WorkerId, control: &Control) {
        if !self.lead.held.holds() {
            tracing::debug!(worker = %worker, "control message not sent: this master's lease has run out");
            return;
        }
        if let Err(e) = self.to_worker(self.topics.worker_control(worker), control.encode()) {
            tracing::warn!(worker = %worker, error = %e, "could not queue a control message");
        }
    }

    /// Publishes (retained) and keeps the signed live configuration.
    pub fn set_config(&self, payload: Vec<u8>) {
        *self.config.lock() = Some(payload.clone());
        self.publish_config(payload);
    }

    fn publish_config(&self, payload: Vec<u8>) {
        if let Err(e) = self.client.try_publish(self.topics.config(), QoS::AtLeastOnce, true, payload) {
            tracing::warn!(error = %e, "could not queue the live configuration; it goes out again on reconnect");
        }
    }

    pub async fn announce(&self, state: MasterState) {
        let status = self.status(state);
        let _ = self.client.publish(self.topics.master_status(), QoS::AtLeastOnce, true, status.encode()).await;
    }
}

/// Statuses not yet handed to the coordinator, beyond which new non-offline
/// ones wait for the next (they are repeated every heartbeat anyway).
const MAX_PENDING_STATUSES: usize = 65_536;

#[derive(Debug, Default)]
struct Pending {
    order: Vec<WorkerStatus>,
    at: HashMap<(WorkerId, InstanceId), usize>,
    closed: bool,
}

/// The receiving side of the status mailbox.
#[derive(Debug, Clone, Default)]
pub struct Statuses {
    pending: Arc<Mutex<Pending>>,
    ready: Arc<Notify>,
}

/// The MQTT loop's side: never blocks; closes the mailbox when dropped.
#[derive(Debug)]
pub struct StatusSender(Statuses);

impl Statuses {
    pub fn channel() -> (StatusSender, Statuses) {
        let s = Statuses::default();
        (StatusSender(s.clone()), s)
    }

    /// The statuses that arrived since the last call, oldest first; None
    /// once the sender is gone and nothing is left.
    pub async fn next(&mut self) -> Option<Vec<WorkerStatus>> {
        loop {
            let notified = self.ready.notified();
            {
                let mut p = self.pending.lock();
                if !p.order.is_empty() {
                    p.at.clear();
                    return Some(std::mem::take(&mut p.order));
                }
                if p.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

impl StatusSender {
    pub fn put(&self, status: WorkerStatus) {
        let mut p = self.0.pending.lock();
        let key = (status.worker_id.clone(), status.instance_id);
        match p.at.get(&key).copied() {
            Some(i) => p.order[i] = status,
            None if p.order.len() >= MAX_PENDING_STATUSES && status.state != WorkerState::Offline => {
                tracing::debug!(worker = %status.worker_id, "status mailbox full; a non-offline status waits for the next");
                return;
            }
            None => {
                let at = p.order.len();
                p.at.insert(key, at);
                p.order.push(status);
            }
        }
        drop(p);
        self.0.ready.notify_one();
    }
}

impl Drop for StatusSender {
    fn drop(&mut self) {
        self.0.pending.lock().closed = true;
        self.0.ready.notify_one();
    }
}

pub struct Connection {
    pub out: MqttOut,
    /// True while connected to the broker.
    pub connected: watch::Receiver<bool>,
    pub statuses: Statuses,
    /// The broker's dynamic security plugin, when the master manages workers' accounts there.
    pub dynsec: Option<Arc<Dynsec>>,
    pub driver: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BrokerError>> + Send>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("out", &self.out).finish_non_exhaustive()
    }
}

/// The broker the master reaches, beyond its address.
#[derive(Debug)]
pub enum Reach {
    /// Its own embedded broker: what workers are sent goes through the
    /// router's in-process link.
    Embedded(Arc<crate::broker::link::Direct>),
    /// Another process (Mosquitto), with its dynamic security plugin when
    /// `dynsec` (the master then manages workers' accounts there).
    External { dynsec: bool },
}

pub fn connect(
    at: Endpoint<'_>,
    topics: Topics,
    instance: InstanceId,
    lead: crate::leader::Lead,
    metrics: Arc<Metrics>,
    reach: Reach,
    cancel: CancellationToken,
) -> Result<Connection, faena_common::tls::TlsError> {
    let (dynsec, direct) = match reach {
        Reach::Embedded(d) => (false, Some(d)),
        Reach::External { dynsec } => (dynsec, None),
    };
    let (leader, epoch) = lead.shared.clone().unzip();
    let will_status = MasterStatus { instance_id: instance, state: MasterState::Offline, ts_ms: 0, leader, epoch };
    let will = LastWill::new(topics.master_status(), will_status.encode(), QoS::AtLeastOnce, true);
    let options = broker::options(broker::MASTER_CLIENT_ID, at, Some(will))?;
    let (client, eventloop) = broker::client(options, 65_536);
    let (connected_tx, connected) = watch::channel(false);
    let (status_tx, statuses) = Statuses::channel();
    let out =
        MqttOut { client: client.clone(), topics: topics.clone(), instance, config: Arc::default(), lead, direct };
    let announce = out.clone();
    let accounts = dynsec.then(|| Arc::new(Dynsec::new(client.clone(), topics.clone(), connected.clone())));
    let answers = accounts.clone();
    let on_event = move |event: Event| match event {
        Event::Incoming(Packet::ConnAck(_)) => {
            // Subscribed before anyone sees the connection: an account
            // change sent after this gets its answer.
            if let Some(d) = &answers {
                d.subscribe();
            }
            let _ = connected_tx.send(true);
            let _ = client.try_subscribe(topics.all_worker_status(), QoS::AtLeastOnce);
            // Another master's status (a deposed leader's last will, sent
            // after this one took over) must not stay the retained one.
            let _ = client.try_subscribe(topics.master_status(), QoS::AtLeastOnce);
            let status = announce.status(MasterState::Online);
            let _ = client.try_publish(topics.master_status(), QoS::AtLeastOnce, true, status.encode());
            if let Some(config) = announce.config.lock().clone() {
                announce.publish_config(config);
            }
        }
        Event::Incoming(Packet::Disconnect) | Event::Outgoing(rumqttc::Outgoing::Disconnect) => {
            let _ = connected_tx.send(false);
        }
        Event::Incoming(Packet::Publish(p)) if p.topic == dynsec::ANSWER_TOPIC => {
            if let Some(Err(e)) = answers.as_ref().map(|d| d.on_answer(&p.payload)) {
                tracing::warn!(error = %e, "dropped a malformed answer from the broker's dynamic security plugin");
            }
        }
        Event::Incoming(Packet::Publish(p)) if p.topic == topics.master_status() => {
            let theirs = MasterStatus::decode(&p.payload).ok().filter(|s| s.instance_id != announce.instance);
            if theirs.is_some() && announce.lead.held.holds() {
                let status = announce.status(MasterState::Online);
                let _ = client.try_publish(topics.master_status(), QoS::AtLeastOnce, true, status.encode());
            }
        }
        Event::Incoming(Packet::Publish(p)) => match decode_status(&topics, &p.topic, &p.payload) {
            Ok(Some(status)) => status_tx.put(status),
            Ok(None) => {}
            Err(e) => {
                metrics.malformed_messages.inc();
                tracing::warn!(topic = %p.topic, error = %e, "dropped a malformed MQTT message");
            }
        },
        _ => {}
    };
    let driver = Box::pin(broker::drive(eventloop, cancel, on_event, None));
    Ok(Connection { out, connected, statuses, driver, dynsec: accounts })
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

    fn status(worker: &str, instance: InstanceId, state: WorkerState) -> WorkerStatus {
        WorkerStatus {
            worker_id: WorkerId::parse(worker).expect("id"),
            instance_id: instance,
            state,
            slots: 1,
            running: 0,
            kinds: vec![],
            hashrate: 0.0,
            config_version: 0,
            ts_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_last_will_gets_through_a_full_status_mailbox() {
        let (tx, mut rx) = Statuses::channel();
        let victim = InstanceId::new();
        tx.put(status("victim", victim, WorkerState::Online));
        // Fill the mailbox with other workers' statuses while nobody reads it.
        for i in 0..MAX_PENDING_STATUSES + 10 {
            tx.put(status(&format!("w{i}"), InstanceId::new(), WorkerState::Online));
        }
        tx.put(status("victim", victim, WorkerState::Offline));
        let dead = InstanceId::new();
        tx.put(status("other", dead, WorkerState::Offline));
        let batch = rx.next().await.expect("statuses");
        assert_eq!(batch.len(), MAX_PENDING_STATUSES + 1, "full: later online statuses wait, offline ones do not");
        let victim_state = batch.iter().find(|s| s.worker_id.as_str() == "victim").map(|s| s.state);
        assert_eq!(
            victim_state,
            Some(WorkerState::Offline),
            "the newer status of the same instance replaced the older"
        );
        assert!(batch.iter().any(|s| s.instance_id == dead && s.state == WorkerState::Offline));
        drop(tx);
        assert!(rx.next().await.is_none(), "closed once the MQTT loop is gone");
    }

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
            config_version: 0,
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
