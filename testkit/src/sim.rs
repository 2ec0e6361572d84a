//! Simulated workers for scale benchmarks: light in-process clients that
//! speak the real contract — an MQTT connection subscribed to their jobs
//! topic, and gRPC calls (one shared HTTP/2 channel) to register, heartbeat
//! every interval with the leases they hold, and complete units. They hold
//! the units they get until told to complete a budget of them, so a test can
//! keep every worker busy and the queue as deep as it wants.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use faena_proto::grpc::{self as pb, master_client::MasterClient};
use faena_proto::mqtt::{Payload, WorkUnit};
use faena_proto::topics::Topics;
use tokio::sync::{Notify, mpsc};
use tonic::transport::Channel;

use crate::{Listener, TOKEN, WAIT};

/// Simulated workers started at once.
const WAVE: usize = 100;

/// What all simulated workers of a fleet share.
#[derive(Debug, Default)]
pub struct Fleet {
    /// Units to complete before holding again (taken one at a time).
    budget: AtomicI64,
    complete: AtomicBool,
    kick: Notify,
    pub heartbeats: AtomicU64,
    pub completed: AtomicU64,
    /// Results the master refused because the lease was no longer this
    /// worker's (it expired and the job went to another): the budget they
    /// took is given back.
    pub stale: AtomicU64,
    /// Results that did not get through (the call failed): kept and sent
    /// again, their budget given back meanwhile.
    pub failed: AtomicU64,
    pub registered: AtomicU64,
    /// Registrations again after the master dropped a worker whose
    /// heartbeats came late.
    pub reregistered: AtomicU64,
    /// Heartbeats the fleet itself sent more than an interval after they
    /// were due (its loop was busy or waited for a core): enough, on their
    /// own, for the master to find the worker silent.
    pub late: AtomicU64,
    stop: AtomicBool,
}

impl Fleet {
    /// Lets the fleet complete `n` more units (held ones first).
    pub fn complete(&self, n: i64) {
        self.budget.fetch_add(n, Ordering::SeqCst);
        self.complete.store(true, Ordering::SeqCst);
        self.kick.notify_waiters();
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kick.notify_waiters();
    }

    /// A unit taken with [`Fleet::take`] did not complete: its budget goes back.
    fn untake(&self) {
        self.budget.fetch_add(1, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        if !self.complete.load(Ordering::SeqCst) {
            return false;
        }
        if self.budget.fetch_sub(1, Ordering::SeqCst) > 0 {
            return true;
        }
        self.budget.fetch_add(1, Ordering::SeqCst);
        false
    }
}

/// A gRPC call with the test cluster's token.
pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {TOKEN}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// A registration for a one-slot, one-core worker of `kind` holding nothing.
pub fn register_request(worker: &str, instance: &str, kind: &str) -> pb::RegisterRequest {
    let caps = pb::Capabilities { cores: 1, slots: 1, kinds: vec![kind.into()], ..Default::default() };
    pb::RegisterRequest {
        worker_id: worker.into(),
        instance_id: instance.into(),
        capabilities: Some(caps),
        running: vec![],
    }
}

/// A gRPC call with the test cluster's token and a registration's session.
pub fn request_in<T>(msg: T, session: &str) -> tonic::Request<T> {
    let mut req = request(msg);
    if let Ok(v) = session.parse() {
        req.metadata_mut().insert(faena_proto::grpc::SESSION_METADATA, v);
    }
    req
}

/// The lease a work unit carries, as gRPC calls name it.
pub fn lease(u: &WorkUnit) -> pb::Lease {
    pb::Lease { job_id: u.job_id.to_string(), attempt: u.attempt, token: u.token.as_str().to_owned() }
}

/// Starts `n` simulated workers `sim-0` … against a master; returns once each
/// has subscribed to its jobs topic and registered.
/// Each logs in to the broker with the account the master hands it.
pub async fn start_fleet(n: usize, grpc: &str, mqtt: &str, heartbeat: Duration) -> Arc<Fleet> {
    let fleet = Arc::new(Fleet::default());
    let channel = Channel::from_shared(format!("http://{grpc}")).expect("url").connect().await.expect("gRPC");
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    // In waves, as a real fleet comes up: a thousand connects in one instant
    // on two cores would time out some of them.
    for wave in (0..n).collect::<Vec<_>>().chunks(WAVE) {
        for &i in wave {
            let (fleet, channel, ready_tx) = (fleet.clone(), channel.clone(), ready_tx.clone());
            let mqtt = mqtt.to_owned();
            let client = MasterClient::new(channel);
            tokio::spawn(run_worker(format!("sim-{i}"), fleet, client, mqtt, heartbeat, ready_tx));
        }
        for _ in wave {
            tokio::time::timeout(WAIT, ready.recv()).await.expect("simulated workers register in time");
        }
    }
    fleet
}

async fn run_worker(
    id: String,
    fleet: Arc<Fleet>,
    mut grpc: MasterClient<Channel>,
    mqtt: String,
    heartbeat: Duration,
    ready: mpsc::UnboundedSender<()>,
) {
    let topic = Topics::default().worker_jobs(&faena_proto::ids::WorkerId::parse(&id).expect("id"));
    let instance = uuid::Uuid::new_v4().to_string();
    let login = broker_login(&mut grpc, &id, &instance, "").await.expect("a broker login");
    let mut mqtt = Listener::start_with(&mqtt, &id, &topic, login).await;
    let register = register_request(&id, &instance, "noop");
    let mut session = String::new();
    if let Ok(r) = grpc.register(request(register)).await {
        session = r.into_inner().session;
        fleet.registered.fetch_add(1, Ordering::SeqCst);
        let _ = ready.send(());
    }
    let mut held: HashMap<String, WorkUnit> = HashMap::new();
    // Spread the heartbeats over the interval, as real workers started at different times do.
    let offset = Duration::from_micros(rand_offset(&id, heartbeat));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
    loop {
        let kicked = fleet.kick.notified();
        tokio::select! {
            Some((_, payload)) = mqtt.messages.recv() => {
                if let Ok(u) = WorkUnit::decode(&payload) {
                    held.insert(u.job_id.to_string(), u);
                }
            }
            due = tick.tick() => {
                if due.elapsed() > heartbeat {
                    fleet.late.fetch_add(1, Ordering::Relaxed);
                }
                let running = held.values().map(lease).collect();
                let hb = pb::HeartbeatRequest { worker_id: id.clone(), instance_id: instance.clone(), running, hashrate: 0.0 };
                match grpc.heartbeat(request_in(hb, &session)).await {
                    Ok(r) => {
                        fleet.heartbeats.fetch_add(1, Ordering::Relaxed);
                        for l in r.into_inner().revoked {
                            held.remove(&l.job_id);
                        }
                    }
                    // The master dropped it (its heartbeats came late) and
                    // says so: it registers again with what it holds, as the
                    // real worker does, and keeps only what is adopted.
                    Err(s) if s.code() == tonic::Code::Aborted => {
                        let mut again = register_request(&id, &instance, "noop");
                        again.running = held.values().map(lease).collect();
                        if let Ok(r) = grpc.register(request(again)).await {
                            let r = r.into_inner();
                            session = r.session;
                            held.retain(|job, _| r.adopted.iter().any(|l| &l.job_id == job));
                            fleet.reregistered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {}
                }
            }
            () = kicked => {}
        }
        if fleet.stop.load(Ordering::SeqCst) {
            break;
        }
        while !held.is_empty() && fleet.take() {
            let Some(key) = held.keys().next().cloned() else { break };
            let Some(u) = held.remove(&key) else { break };
            let result = pb::ResultRequest {
                worker_id: id.clone(),
                lease: Some(lease(&u)),
                outcome: Some(pb::result_request::Outcome::OutputJson("{\"payload\":null}".into())),
                elapsed_us: 1,
            };
            match grpc.submit_result(request_in(result, &session)).await {
                Ok(_) => {
                    fleet.completed.fetch_add(1, Ordering::Relaxed);
                }
                Err(s) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {
                    // Not ours any more: another worker holds the job now.
                    fleet.stale.fetch_add(1, Ordering::Relaxed);
                    fleet.untake();
                }
                Err(_) => {
                    // Kept, and sent again with the next budget.
                    fleet.failed.fetch_add(1, Ordering::Relaxed);
                    fleet.untake();
                    held.insert(key, u);
                    break;
                }
            }
        }
    }
}

/// The broker login the master hands worker `id` (instance `instance`,
/// carrying `session` when not empty), as a worker asks for it before it
/// connects; None when the master hands out none.
pub async fn broker_login(
    grpc: &mut MasterClient<Channel>,
    id: &str,
    instance: &str,
    session: &str,
) -> Result<Option<(String, String)>, tonic::Status> {
    let req = pb::BrokerLoginRequest { worker_id: id.to_owned(), instance_id: instance.to_owned() };
    let req = if session.is_empty() { request(req) } else { request_in(req, session) };
    let r = grpc.broker_login(req).await?.into_inner();
    Ok((!r.username.is_empty()).then_some((r.username, r.password)))
}

/// A stable pseudo-random offset within `period` for `id`.
fn rand_offset(id: &str, period: Duration) -> u64 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    h % period.as_micros().max(1) as u64
}
