//! The worker's MQTT side: its jobs and control topics in, the master's status
//! in, its own retained status (with an `offline` last will) out. Malformed
//! messages are counted, logged and dropped.

use std::sync::Arc;

use faena_common::broker::{self, BrokerError, Endpoint};
use faena_proto::ids::InstanceId;
use faena_proto::mqtt::{Control, MasterState, MasterStatus, Payload, WorkerState, WorkerStatus, decode_units, now_ms};
use faena_proto::settings::SignedConfig;
use faena_proto::topics::{Topic, Topics};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::randomx::RandomX;
use crate::runner::Runner;

/// What the MQTT side tells the rest of the worker.
#[derive(Debug)]
pub enum Inbound {
    /// The master (re)started: register with it.
    MasterOnline(InstanceId),
    Drain,
    /// The live configuration, as published (checked by [`crate::live`]).
    Config(SignedConfig),
}

#[derive(Debug, Clone)]
pub struct StatusPublisher {
    client: AsyncClient,
    topics: Topics,
    runner: Arc<Runner>,
    kinds: Vec<String>,
    rx: Arc<RandomX>,
    /// True while RandomX builds a dataset.
    initialising: watch::Receiver<bool>,
}

impl StatusPublisher {
    pub fn status(&self, state: WorkerState) -> WorkerStatus {
        WorkerStatus {
            worker_id: self.runner.worker_id.clone(),
            instance_id: self.runner.instance,
            state,
            slots: self.runner.slots().0,
            running: self.runner.running_count() as u32,
            kinds: self.kinds.clone(),
            hashrate: self.rx.hashrate(),
            config_version: self.runner.config_version.load(std::sync::atomic::Ordering::Relaxed),
            ts_ms: now_ms(),
        }
    }

    pub fn current_state(&self) -> WorkerState {
        if self.runner.is_draining() {
            WorkerState::Draining
        } else if *self.initialising.borrow() {
            WorkerState::Initialising
        } else {
            WorkerState::Online
        }
    }

    pub fn publish(&self, state: WorkerState) {
        let topic = self.topics.worker_status(&self.runner.worker_id);
        let _ = self.client.try_publish(topic, QoS::AtLeastOnce, true, self.status(state).encode());
    }

    pub async fn publish_and_disconnect(&self, state: WorkerState) {
        let topic = self.topics.worker_status(&self.runner.worker_id);
        let _ = self.client.publish(topic, QoS::AtLeastOnce, true, self.status(state).encode()).await;
        let _ = self.client.disconnect().await;
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }
}

pub struct Connection {
    pub status: StatusPublisher,
    /// True once subscribed to the jobs topic (safe to register).
    pub subscribed: watch::Receiver<bool>,
    pub inbound: tokio::sync::mpsc::UnboundedReceiver<Inbound>,
    pub driver: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BrokerError>> + Send>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

pub fn connect(
    at: Endpoint<'_>,
    relogin: Option<broker::Relogin>,
    topics: Topics,
    runner: Arc<Runner>,
    rx: Arc<RandomX>,
    cancel: CancellationToken,
) -> Result<Connection, faena_common::tls::TlsError> {
    let initialising = rx.initialising();
    let kinds: Vec<String> = runner.registry.kinds().iter().map(|k| k.as_str().to_owned()).collect();
    let me = runner.worker_id.clone();
    let will_status = WorkerStatus {
        worker_id: me.clone(),
        instance_id: runner.instance,
        state: WorkerState::Offline,
        slots: runner.slots().0,
        running: 0,
        kinds: kinds.clone(),
        hashrate: 0.0,
        config_version: 0,
        ts_ms: 0,
    };
    let will = LastWill::new(topics.worker_status(&me), will_status.encode(), QoS::AtLeastOnce, true);
    let options = broker::options(me.as_str(), at, Some(will))?;
    let (client, eventloop) = broker::client(options, 65_536);
    let status = StatusPublisher {
        client: client.clone(),
        topics: topics.clone(),
        runner: runner.clone(),
        kinds,
        rx,
        initialising,
    };
    let (subscribed_tx, subscribed) = watch::channel(false);
    let (inbound_tx, inbound) = tokio::sync::mpsc::unbounded_channel();
    let publisher = status.clone();
    let on_event = move |event: Event| match event {
        Event::Incoming(Packet::ConnAck(_)) => {
            let filters =
                [topics.worker_jobs(&me), topics.worker_control(&me), topics.master_status(), topics.config()];
            for f in filters {
                let _ = client.try_subscribe(f, QoS::AtLeastOnce);
            }
            publisher.publish(publisher.current_state());
        }
        Event::Incoming(Packet::SubAck(ack)) => {
            if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                tracing::error!("the broker refused one of this worker's subscriptions (check its account's ACL)");
            }
            let _ = subscribed_tx.send(true);
        }
        Event::Incoming(Packet::Publish(p)) => {
            if let Err(e) = handle(&topics, &runner, &inbound_tx, &p.topic, &p.payload) {
                runner.metrics.malformed_messages.inc();
                tracing::warn!(topic = %p.topic, error = %e, "dropped a malformed MQTT message");
            }
        }
        _ => {}
    };
    let driver = Box::pin(broker::drive(eventloop, cancel, on_event, relogin));
    Ok(Connection { status, subscribed, inbound, driver })
}

fn handle(
    topics: &Topics,
    runner: &Arc<Runner>,
    inbound: &tokio::sync::mpsc::UnboundedSender<Inbound>,
    topic: &str,
    payload: &[u8],
) -> Result<(), String> {
    match topics.parse(topic).map_err(|e| e.to_string())? {
        Topic::WorkerJobs(w) if w == runner.worker_id => {
            for unit in decode_units(payload).map_err(|e| e.to_string())? {
                runner.start(unit);
            }
        }
        Topic::WorkerControl(w) if w == runner.worker_id => {
            match Control::decode(payload).map_err(|e| e.to_string())? {
                Control::Cancel { job_id, attempt } => {
                    runner.cancel(job_id, attempt);
                }
                Control::Drain => {
                    let _ = inbound.send(Inbound::Drain);
                }
            }
        }
        Topic::MasterStatus => {
            if payload.is_empty() {
                return Ok(());
            }
            let status = MasterStatus::decode(payload).map_err(|e| e.to_string())?;
            if status.state == MasterState::Online {
                let _ = inbound.send(Inbound::MasterOnline(status.instance_id));
            }
        }
        Topic::Config => {
            if payload.is_empty() {
                return Ok(());
            }
            let signed = SignedConfig::decode(payload).map_err(|e| e.to_string())?;
            let _ = inbound.send(Inbound::Config(signed));
        }
        other => return Err(format!("not a topic this worker reads: {other:?}")),
    }
    Ok(())
}
