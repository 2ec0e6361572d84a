//! A scripted worker for custom kinds (`x.<name>`): it speaks the real
//! contract — broker login, registration, heartbeats with the leases it
//! holds, its jobs and control topics — and lets a test decide, unit by
//! unit, what it reports: progress, an output, a failure.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use faena_proto::grpc::{self as pb, master_client::MasterClient};
use faena_proto::ids::WorkerId;
use faena_proto::mqtt::{Control, Payload, WorkUnit, decode_units};
use faena_proto::topics::Topics;
use parking_lot::Mutex;
use serde_json::Value;
use tonic::transport::Channel;

use crate::sim::{broker_login, lease, request, request_in};
use crate::{Cluster, Listener, WAIT};

#[derive(Debug)]
pub struct Scripted {
    pub id: String,
    grpc: MasterClient<Channel>,
    session: String,
    mqtt: Listener,
    held: Arc<Mutex<HashMap<String, WorkUnit>>>,
    controls: VecDeque<Control>,
    units: VecDeque<WorkUnit>,
    /// Messages it read on its jobs topic (one unit each, or several).
    pub unit_messages: usize,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Scripted {
    /// Registers worker `id` offering `kinds` with `slots` slots and listens
    /// on its topics; returns once it is registered and subscribed.
    pub async fn start(c: &Cluster, id: &str, kinds: &[&str], slots: u32) -> Self {
        Self::start_with(c, id, kinds, slots, false).await
    }

    /// The same, registered as reading several units in one message when
    /// `unit_batches`.
    pub async fn start_with(c: &Cluster, id: &str, kinds: &[&str], slots: u32, unit_batches: bool) -> Self {
        let channel =
            Channel::from_shared(format!("http://{}", c.addrs.grpc)).expect("url").connect().await.expect("gRPC");
        let mut grpc = MasterClient::new(channel);
        let instance = uuid::Uuid::new_v4().to_string();
        let login = broker_login(&mut grpc, id, &instance, "").await.expect("a broker login");
        let topics = Topics::default();
        let wid = WorkerId::parse(id).expect("worker id");
        let (jobs, control) = (topics.worker_jobs(&wid), topics.worker_control(&wid));
        let mqtt = Listener::start_on(&c.addrs.mqtt, id, &[&jobs, &control], login).await;
        let caps = pb::Capabilities {
            cores: 1,
            slots,
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            version: "scripted".into(),
            unit_batches,
            ..Default::default()
        };
        let register = pb::RegisterRequest {
            worker_id: id.into(),
            instance_id: instance.clone(),
            capabilities: Some(caps),
            running: vec![],
        };
        let r = grpc.register(request(register)).await.expect("registered").into_inner();
        let held: Arc<Mutex<HashMap<String, WorkUnit>>> = Arc::default();
        let every = Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(50)));
        let heartbeat =
            tokio::spawn(beat(grpc.clone(), id.to_owned(), instance, r.session.clone(), held.clone(), every));
        Self {
            id: id.to_owned(),
            grpc,
            session: r.session,
            mqtt,
            held,
            controls: VecDeque::new(),
            units: VecDeque::new(),
            unit_messages: 0,
            heartbeat,
        }
    }

    async fn pump(&mut self) {
        let (topic, payload) =
            tokio::time::timeout(WAIT, self.mqtt.messages.recv()).await.expect("a message in time").expect("broker");
        self.take(&topic, &payload);
    }

    /// Files one message: an order, or a unit it now holds.
    fn take(&mut self, topic: &str, payload: &[u8]) {
        if topic.ends_with("/control") {
            self.controls.push_back(Control::decode(payload).expect("a control message"));
        } else {
            self.unit_messages += 1;
            for unit in decode_units(payload).expect("work units") {
                self.held.lock().insert(unit.job_id.to_string(), unit.clone());
                self.units.push_back(unit);
            }
        }
    }

    /// The next work unit it is sent (held until the test reports on it).
    pub async fn next_unit(&mut self) -> WorkUnit {
        while self.units.is_empty() {
            self.pump().await;
        }
        self.units.pop_front().expect("a unit")
    }

    /// The next order on its control topic.
    pub async fn next_control(&mut self) -> Control {
        while self.controls.is_empty() {
            self.pump().await;
        }
        self.controls.pop_front().expect("a control")
    }

    /// Units received and not yet taken by [`Self::next_unit`], without waiting.
    pub fn pending_units(&mut self) -> usize {
        while let Ok((topic, payload)) = self.mqtt.messages.try_recv() {
            self.take(&topic, &payload);
        }
        self.units.len()
    }

    pub async fn progress(&mut self, u: &WorkUnit, progress: Value) -> Result<(), tonic::Status> {
        let req = pb::ProgressRequest {
            worker_id: self.id.clone(),
            lease: Some(lease(u)),
            progress_json: progress.to_string(),
        };
        self.grpc.report_progress(request_in(req, &self.session)).await.map(|_| ())
    }

    pub async fn complete(&mut self, u: &WorkUnit, output: Value) -> Result<(), tonic::Status> {
        self.result(u, pb::result_request::Outcome::OutputJson(output.to_string())).await
    }

    pub async fn fail(&mut self, u: &WorkUnit, message: &str, retryable: bool) -> Result<(), tonic::Status> {
        let failure = pb::JobFailure { message: message.into(), retryable };
        self.result(u, pb::result_request::Outcome::Failure(failure)).await
    }

    async fn result(&mut self, u: &WorkUnit, outcome: pb::result_request::Outcome) -> Result<(), tonic::Status> {
        self.held.lock().remove(&u.job_id.to_string());
        let req = pb::ResultRequest {
            worker_id: self.id.clone(),
            lease: Some(lease(u)),
            outcome: Some(outcome),
            elapsed_us: 1,
        };
        self.grpc.submit_result(request_in(req, &self.session)).await.map(|_| ())
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn beat(
    mut grpc: MasterClient<Channel>,
    id: String,
    instance: String,
    session: String,
    held: Arc<Mutex<HashMap<String, WorkUnit>>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let running = held.lock().values().map(lease).collect();
        let hb = pb::HeartbeatRequest { worker_id: id.clone(), instance_id: instance.clone(), running, hashrate: 0.0 };
        let _ = grpc.heartbeat(request_in(hb, &session)).await;
    }
}
