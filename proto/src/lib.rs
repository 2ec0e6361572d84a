//! Faena's wire contract, shared by master, worker and tools.
//!
//! - [`ids`]: `JobId`, `WorkerId`, `InstanceId`, `FencingToken` newtypes and their validation.
//! - [`topics`]: every MQTT topic string, built and parsed here only.
//! - [`mqtt`]: the versioned JSON payloads carried on those topics.
//! - [`kind`]: job kinds, built-in and custom (`x.<name>`).
//! - [`jobs`]: job kinds, their parameters, outputs and progress payloads.
//! - [`mine`]: `randomx.mine` parameters, shares, unit and job progress and output.
//! - [`mining`]: mining sources, participants and the verifier's capacity (REST).
//! - [`options`]: what a job asks beyond its kind: delay, parents, uniqueness, group, timeout, retries.
//! - [`ai`]: `ai.query` parameters, streamed chunks and result.
//! - [`api`]: the REST request/response bodies.
//! - [`grpc`]: the generated `faena.v1.Master` service (client and server).
//! - [`sio`]: the web page's Socket.IO events and payloads.
//! - [`stratum`]: Monero Stratum (XMRig's dialect) lines and targets.
//! - [`settings`]: live configuration: keys, versions, the signed payload.
//! - [`lease`]: what a leading master says of itself in the store's lease.
//! - [`secret`]: a string wrapper whose `Debug`/`Display` never show the value.

pub mod ai;
pub mod api;
pub mod ids;
pub mod jobs;
pub mod kind;
pub mod lease;
pub mod mine;
pub mod mining;
pub mod mqtt;
pub mod options;
pub mod scaling;
pub mod secret;
pub mod settings;
pub mod sio;
pub mod stratum;
pub mod topics;

/// The generated gRPC code for `proto/faena/v1/master.proto`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod grpc {
    tonic::include_proto!("faena.v1");

    /// The metadata key every call after `Register` carries its session in.
    pub const SESSION_METADATA: &str = "faena-session";

    /// Most results one `SubmitResults` call may carry; a call with more is
    /// refused whole (`INVALID_ARGUMENT`).
    pub const MAX_RESULTS_PER_CALL: usize = 256;
}

/// What `faena-master` and `faena-worker` print on stdout, followed by a JSON
/// object of their bound addresses, once they are ready (the only stdout line;
/// scripts and the test harness read it, so port 0 works).
pub const READY_PREFIX: &str = "FAENA_READY ";

/// Version stamped into every JSON payload (`"v": 1`).
pub const PAYLOAD_VERSION: u32 = 1;

/// Everything that can go wrong decoding a wire message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed JSON payload: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported payload version {found} (this build speaks {PAYLOAD_VERSION})")]
    Version { found: u32 },
    #[error("payload has no version field \"v\"")]
    MissingVersion,
    #[error("topic {0:?} is not a Faena topic")]
    Topic(String),
    #[error("invalid id: {0}")]
    Id(String),
    #[error("invalid parameters: {0}")]
    Params(String),
    /// A submit option (`run_at`, `after`, `group`…) that does not hold.
    #[error("{0}")]
    Invalid(String),
}
