//! The `faena.v1.Master` gRPC service workers call. Translates between the
//! wire and the coordinator; checks the cluster token and every field.
//! Reports go to the coordinator as they came: checking a mining unit's
//! shares is the coordinator's business, not this adapter's.
//!
//! Error codes tell the worker what to do next:
//! `UNAUTHENTICATED` wrong or missing token · `INVALID_ARGUMENT` malformed
//! request · `ABORTED` worker not registered, or the call lacks its
//! current session (register again, then retry) · `ALREADY_EXISTS` another
//! live registration holds the worker id ·
//! `NOT_FOUND` unknown job · `FAILED_PRECONDITION` stale lease (drop the
//! result) · `RESOURCE_EXHAUSTED` message too large · `UNAVAILABLE` retry later.

use std::sync::Arc;

use faena_proto::ai::Provider;
use faena_proto::grpc::master_server::{Master, MasterServer};
use faena_proto::grpc::{self as pb, MAX_RESULTS_PER_CALL, SESSION_METADATA, result_request};
use faena_proto::ids::{FencingToken, InstanceId, WorkerId};
use faena_proto::jobs::JobKind;
use faena_proto::secret::Secret;
use faena_proto::settings::{Applied, MAX_SETTINGS_PER_UPDATE, Override, Refusal};
use faena_randomx::Mode;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::broker::dynsec::WorkerLogins;
use crate::coordinator::{CoordError, Coordinator};
use crate::engine::{LeaseError, LeaseRef, Outcome, Registration};
use crate::metrics::Metrics;
use crate::scheduler::Capabilities;
use crate::settings::LiveConfig;

/// Largest gRPC message accepted; larger ones get `RESOURCE_EXHAUSTED`.
pub const MAX_MESSAGE_BYTES: usize = 5 * 1024 * 1024;
/// Largest job output.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Largest progress payload.
pub const MAX_PROGRESS_BYTES: usize = 64 * 1024;
const MAX_SLOTS: u32 = 4096;
/// Most job kinds one worker may offer.
const MAX_OFFERED_KINDS: usize = 64;

#[derive(Debug)]
pub struct MasterService {
    coord: Coordinator,
    instance: InstanceId,
    heartbeat_ms: u32,
    metrics: Arc<Metrics>,
    logins: WorkerLogins,
    live: LiveConfig,
}

pub type Server = InterceptedService<MasterServer<MasterService>, Auth>;

pub fn server(
    coord: Coordinator,
    instance: InstanceId,
    heartbeat_ms: u32,
    metrics: Arc<Metrics>,
    token: Secret,
    logins: WorkerLogins,
    live: LiveConfig,
) -> Server {
    let svc = MasterService { coord, instance, heartbeat_ms, metrics: metrics.clone(), logins, live };
    let inner = MasterServer::new(svc).max_decoding_message_size(MAX_MESSAGE_BYTES);
    InterceptedService::new(inner, Auth { token, metrics })
}

/// Checks `authorization: Bearer <cluster token>` on every call.
#[derive(Debug, Clone)]
pub struct Auth {
    token: Secret,
    metrics: Arc<Metrics>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given =
            req.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if self.token.constant_time_eq(t) => Ok(req),
            Some(_) => {
                self.metrics.rejected_callbacks.inc();
                tracing::warn!(peer = ?req.remote_addr(), "gRPC call with a wrong cluster token rejected");
                Err(Status::unauthenticated("wrong cluster token"))
            }
            None => {
                self.metrics.rejected_callbacks.inc();
                Err(Status::unauthenticated("missing cluster token (authorization: Bearer <token>)"))
            }
        }
    }
}

fn to_status(e: CoordError) -> Status {
    match e {
        CoordError::Malformed(m) => Status::invalid_argument(m),
        CoordError::Refused(e) => Status::invalid_argument(e.to_string()),
        CoordError::Schedule(e) => Status::invalid_argument(e.to_string()),
        CoordError::Lease(LeaseError::UnknownWorker(w)) => {
            Status::aborted(format!("worker {w} is not registered; register again"))
        }
        CoordError::Lease(e @ LeaseError::UnknownJob(_)) => Status::not_found(e.to_string()),
        CoordError::Lease(e @ LeaseError::Stale { .. }) => Status::failed_precondition(e.to_string()),
        CoordError::Lease(e @ LeaseError::InUse(_)) => Status::already_exists(e.to_string()),
        CoordError::Lease(e @ LeaseError::Session(_)) => Status::aborted(e.to_string()),
        CoordError::QueueFull(e) => Status::resource_exhausted(e.to_string()),
        CoordError::Unmovable(e) => Status::failed_precondition(e.to_string()),
        e @ (CoordError::Store(_) | CoordError::Stopped) => Status::unavailable(e.to_string()),
    }
}

impl MasterService {
    fn invalid(&self, msg: impl Into<String>) -> Status {
        self.metrics.rejected_callbacks.inc();
        Status::invalid_argument(msg)
    }

    /// A coordinator error as a status; a malformed report counts as a rejected callback.
    fn reject(&self, e: CoordError) -> Status {
        if matches!(e, CoordError::Malformed(_)) {
            self.metrics.rejected_callbacks.inc();
        }
        to_status(e)
    }

    fn worker(&self, id: &str) -> Result<WorkerId, Status> {
        WorkerId::parse(id).map_err(|e| self.invalid(e.to_string()))
    }

    fn instance(&self, id: &str) -> Result<InstanceId, Status> {
        id.parse().map_err(|e: faena_proto::WireError| self.invalid(e.to_string()))
    }

    fn lease(&self, lease: Option<&pb::Lease>) -> Result<LeaseRef, Status> {
        let lease = lease.ok_or_else(|| self.invalid("lease is required"))?;
        let job_id = lease.job_id.parse().map_err(|e: faena_proto::WireError| self.invalid(e.to_string()))?;
        let token = FencingToken::parse(&lease.token);
        let (Ok(token), 1..) = (token, lease.attempt) else {
            return Err(self.invalid("lease needs a token (at most 128 bytes) and an attempt >= 1"));
        };
        Ok(LeaseRef { job_id, attempt: lease.attempt, token })
    }

    /// One result's lease and outcome, checked (its time to the metrics).
    fn outcome(&self, req: pb::ResultRequest) -> Result<(LeaseRef, Outcome), Status> {
        let lease = self.lease(req.lease.as_ref())?;
        if req.elapsed_us > 0 {
            self.metrics.ran(req.elapsed_us as f64 / 1e6);
        }
        let outcome = match req.outcome {
            Some(result_request::Outcome::OutputJson(json)) => {
                if json.len() > MAX_OUTPUT_BYTES {
                    return Err(self.invalid(format!("output is over {MAX_OUTPUT_BYTES} bytes")));
                }
                let output =
                    serde_json::from_str(&json).map_err(|e| self.invalid(format!("output is not JSON: {e}")))?;
                Outcome::Success(output)
            }
            Some(result_request::Outcome::Failure(f)) => {
                Outcome::Failure { message: truncate(f.message), retryable: f.retryable }
            }
            Some(result_request::Outcome::HandedBack(reason)) => Outcome::HandedBack(truncate(reason)),
            None => return Err(self.invalid("outcome is required")),
        };
        Ok((lease, outcome))
    }

    fn leases(&self, leases: &[pb::Lease]) -> Result<Vec<LeaseRef>, Status> {
        leases.iter().map(|l| self.lease(Some(l))).collect()
    }

    /// Validates a registration's capabilities; every list and string is bounded.
    fn capabilities(&self, caps: Option<pb::Capabilities>) -> Result<Capabilities, Status> {
        let caps = caps.ok_or_else(|| self.invalid("capabilities are required"))?;
        if caps.slots == 0 || caps.slots > MAX_SLOTS {
            return Err(self.invalid(format!("slots must be 1..={MAX_SLOTS}")));
        }
        let short = |v: &str| v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        if caps.kinds.len() > MAX_OFFERED_KINDS
            || caps.ai_providers.len() > 8
            || caps.randomx_modes.len() > 4
            || !short(&caps.version)
            || caps.ai_models.len() > 8
            || caps.ai_providers.iter().chain(&caps.randomx_modes).chain(&caps.ai_models).any(|v| !short(v))
        {
            return Err(self.invalid(format!(
                "capabilities too large: at most {MAX_OFFERED_KINDS} kinds, 8 providers, 4 RandomX modes, \
                 and a version and names of at most 64 printable characters"
            )));
        }
        let mut kinds = std::collections::HashSet::new();
        for k in &caps.kinds {
            match JobKind::offered(k) {
                Ok(kind) => {
                    kinds.insert(kind);
                }
                Err(e) => {
                    tracing::warn!(kind = %k.chars().take(80).collect::<String>(), error = %e, "worker offers a job kind this master does not take; ignored")
                }
            }
        }
        if kinds.is_empty() {
            return Err(self.invalid("the worker offers no job kind this master knows"));
        }
        if kinds.contains(&JobKind::AiQuery) && (caps.ai_slots == 0 || caps.ai_slots > MAX_SLOTS) {
            return Err(self.invalid(format!("a worker that runs ai.query needs ai_slots 1..={MAX_SLOTS}")));
        }
        let providers: Vec<Provider> = caps.ai_providers.iter().filter_map(|p| Provider::parse(p)).collect();
        let modes: Vec<Mode> = caps.randomx_modes.iter().filter_map(|m| Mode::parse(m)).collect();
        if kinds.contains(&JobKind::AiQuery) && providers.is_empty() {
            return Err(self.invalid("a worker that runs ai.query must name its providers (gemini, openai)"));
        }
        // "provider/model" of a provider it offers; others are not news.
        let models = caps
            .ai_models
            .iter()
            .filter_map(|m| {
                let (p, name) = m.split_once('/')?;
                let p = Provider::parse(p).filter(|p| providers.contains(p))?;
                faena_proto::ai::check_model_name(name).ok().map(|()| (p, name.to_owned()))
            })
            .collect();
        Ok(Capabilities {
            ai_models: models,
            kinds,
            slots: caps.slots,
            ai_slots: caps.ai_slots,
            cores: caps.cores,
            memory_bytes: caps.memory_bytes,
            aes_ni: caps.aes_ni,
            huge_pages: caps.huge_pages,
            randomx_modes: modes,
            ai_providers: providers,
            version: caps.version,
            unit_batches: caps.unit_batches,
        })
    }
}

/// The session a call carries (`faena-session` metadata), if any.
fn session<T>(req: &Request<T>) -> Option<Secret> {
    let value = req.metadata().get(SESSION_METADATA)?.to_str().ok()?;
    (value.len() <= 128).then(|| Secret::new(value))
}

fn to_pb(leases: Vec<LeaseRef>) -> Vec<pb::Lease> {
    leases
        .into_iter()
        .map(|l| pb::Lease { job_id: l.job_id.to_string(), attempt: l.attempt, token: l.token.as_str().to_owned() })
        .collect()
}

#[tonic::async_trait]
impl Master for MasterService {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let session = session(&req);
        let req = req.into_inner();
        let reg = Registration {
            worker: self.worker(&req.worker_id)?,
            instance: self.instance(&req.instance_id)?,
            caps: self.capabilities(req.capabilities)?,
            running: self.leases(&req.running)?,
            session,
        };
        let (worker, slots) = (reg.worker.clone(), reg.caps.slots);
        let out = self.coord.register(reg).await.map_err(to_status)?;
        tracing::info!(worker = %worker, slots, adopted = out.adopted.len(), revoked = out.revoked.len(), "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            master_instance: self.instance.to_string(),
            heartbeat_interval_ms: self.heartbeat_ms,
            adopted: to_pb(out.adopted),
            revoked: to_pb(out.revoked),
            session: out.session.expose().to_owned(),
            config: self.live.signed_json(),
        }))
    }

    async fn broker_login(
        &self,
        req: Request<pb::BrokerLoginRequest>,
    ) -> Result<Response<pb::BrokerLoginResponse>, Status> {
        let session = session(&req);
        let req = req.into_inner();
        let worker = self.worker(&req.worker_id)?;
        let instance = self.instance(&req.instance_id)?;
        self.coord.may_claim((worker.clone(), session), instance).await.map_err(to_status)?;
        match self.logins.login(&worker).await {
            Ok(Some(c)) => {
                tracing::info!(worker = %worker, "broker login handed out");
                Ok(Response::new(pb::BrokerLoginResponse {
                    username: c.username,
                    password: c.password.expose().to_owned(),
                }))
            }
            Ok(None) => Ok(Response::new(pb::BrokerLoginResponse::default())),
            Err(e) => {
                tracing::warn!(worker = %worker, error = %e, "could not make a broker account");
                Err(Status::unavailable(e.to_string()))
            }
        }
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let session = session(&req);
        let req = req.into_inner();
        let worker = (self.worker(&req.worker_id)?, session);
        let instance = self.instance(&req.instance_id)?;
        let running = self.leases(&req.running)?;
        let hashrate = if req.hashrate.is_finite() && req.hashrate >= 0.0 { req.hashrate } else { 0.0 };
        let revoked = self.coord.heartbeat(worker, instance, running, hashrate).await.map_err(to_status)?;
        Ok(Response::new(pb::HeartbeatResponse { revoked: to_pb(revoked) }))
    }

    async fn report_progress(
        &self,
        req: Request<pb::ProgressRequest>,
    ) -> Result<Response<pb::ProgressResponse>, Status> {
        let session = session(&req);
        let req = req.into_inner();
        let worker = (self.worker(&req.worker_id)?, session);
        let lease = self.lease(req.lease.as_ref())?;
        if req.progress_json.len() > MAX_PROGRESS_BYTES {
            return Err(self.invalid(format!("progress is over {MAX_PROGRESS_BYTES} bytes")));
        }
        let data =
            serde_json::from_str(&req.progress_json).map_err(|e| self.invalid(format!("progress is not JSON: {e}")))?;
        self.coord.progress(worker, lease, data).await.map_err(|e| self.reject(e))?;
        Ok(Response::new(pb::ProgressResponse {}))
    }

    async fn submit_result(&self, req: Request<pb::ResultRequest>) -> Result<Response<pb::ResultResponse>, Status> {
        let session = session(&req);
        let req = req.into_inner();
        let worker = (self.worker(&req.worker_id)?, session);
        let (lease, outcome) = self.outcome(req)?;
        let duplicate = self.coord.complete(worker, lease, outcome).await.map_err(|e| self.reject(e))?;
        Ok(Response::new(pb::ResultResponse { duplicate }))
    }

    async fn submit_results(&self, req: Request<pb::ResultsRequest>) -> Result<Response<pb::ResultsResponse>, Status> {
        let session = session(&req);
        let results = req.into_inner().results;
        if results.len() > MAX_RESULTS_PER_CALL {
            return Err(self.invalid(format!("at most {MAX_RESULTS_PER_CALL} results a call")));
        }
        let Some(first) = results.first() else {
            return Ok(Response::new(pb::ResultsResponse { statuses: vec![] }));
        };
        if results.iter().any(|r| r.worker_id != first.worker_id) {
            return Err(self.invalid("the results of one call must all be the calling worker's"));
        }
        let worker = (self.worker(&first.worker_id)?, session);
        // Each result is checked on its own: a malformed one is refused
        // alone, the others go to the coordinator together (one turn).
        let mut refused = Vec::with_capacity(results.len());
        let mut taken = Vec::with_capacity(results.len());
        for r in results {
            match self.outcome(r) {
                Ok(item) => {
                    taken.push(item);
                    refused.push(None);
                }
                Err(s) => refused.push(Some(s)),
            }
        }
        let mut answers = self.coord.complete_many(worker, taken).await.map_err(to_status)?.into_iter();
        let statuses = refused
            .into_iter()
            .map(|refused| {
                let answer = match refused {
                    Some(s) => Err(s),
                    None => answers.next().unwrap_or(Err(CoordError::Stopped)).map_err(|e| self.reject(e)),
                };
                match answer {
                    Ok(duplicate) => pb::ResultStatus { code: 0, message: String::new(), duplicate },
                    Err(s) => {
                        pb::ResultStatus { code: s.code() as i32, message: s.message().to_owned(), duplicate: false }
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::ResultsResponse { statuses }))
    }

    async fn report_config(
        &self,
        req: Request<pb::ConfigReport>,
    ) -> Result<Response<pb::ConfigReportResponse>, Status> {
        let session = session(&req);
        let req = req.into_inner();
        let worker = (self.worker(&req.worker_id)?, session);
        let instance = self.instance(&req.instance_id)?;
        if req.slots > MAX_SLOTS || req.ai_slots > MAX_SLOTS {
            return Err(self.invalid(format!("slots and ai_slots are 1..={MAX_SLOTS} (0: unchanged)")));
        }
        if req.refused.len() > MAX_SETTINGS_PER_UPDATE * 2 || req.overrides.len() > MAX_SETTINGS_PER_UPDATE * 2 {
            return Err(self.invalid("too many refused or overridden settings"));
        }
        let refused = req
            .refused
            .into_iter()
            .map(|r| Refusal { key: r.key.chars().take(64).collect(), reason: truncate(r.reason) })
            .collect();
        let mut overrides = Vec::with_capacity(req.overrides.len());
        for o in req.overrides {
            let value = (o.value_json.len() <= 1024).then(|| serde_json::from_str(&o.value_json).ok()).flatten();
            let Some(value) = value else {
                return Err(self.invalid(format!("override of {:?}: value_json is not JSON of at most 1 KiB", o.key)));
            };
            overrides.push(Override { key: o.key.chars().take(64).collect(), value, own: truncate(o.own) });
        }
        let applied = Applied { version: req.version, refused, overrides };
        self.coord.worker_config(worker, instance, (req.slots, req.ai_slots), applied).await.map_err(to_status)?;
        Ok(Response::new(pb::ConfigReportResponse {}))
    }

    async fn fetch_secret(&self, req: Request<pb::SecretRequest>) -> Result<Response<pb::SecretResponse>, Status> {
        let session = session(&req);
        let req = req.into_inner();
        let worker = (self.worker(&req.worker_id)?, session);
        let lease = self.lease(req.lease.as_ref())?;
        let name = req.name.clone();
        match self.coord.secret(worker, lease, req.name).await.map_err(to_status)? {
            Some(secret) => Ok(Response::new(pb::SecretResponse { value: secret.expose().to_owned() })),
            None => Err(Status::not_found(format!("this job has no secret named {name:?}"))),
        }
    }
}

/// Error texts from workers are shown to people; keep them readable.
fn truncate(mut s: String) -> String {
    const MAX: usize = 4096;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
