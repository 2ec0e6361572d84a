//! The master's configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use faena_common::args::ConfigError;
use faena_common::args::{BrokerAuth, ClusterToken};

use crate::store::SyncMode;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "faena-master",
    version,
    about = "Faena coordinator: REST API, durable queue, MQTT dispatch, gRPC callbacks"
)]
pub struct Config {
    /// Where the REST API (and web page) listens.
    #[arg(long, env = "FAENA_HTTP_ADDR", default_value = "127.0.0.1:8888")]
    pub http_addr: SocketAddr,
    /// Where workers call back over gRPC.
    #[arg(long, env = "FAENA_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Listen address of the embedded broker (used when no --mqtt-url is given).
    #[arg(long, env = "FAENA_MQTT_ADDR", default_value = "127.0.0.1:1883")]
    pub mqtt_addr: SocketAddr,
    /// External broker, e.g. mqtt://mosquitto:1883. Without it the master embeds one.
    #[arg(long, env = "FAENA_MQTT_URL")]
    pub mqtt_url: Option<String>,
    #[command(flatten)]
    pub broker_auth: BrokerAuth,
    /// Without a cluster token, a random one is written to
    /// `<data-dir>/cluster-token` for local workers to read.
    #[command(flatten)]
    pub token: ClusterToken,
    /// Token the REST API (`Authorization: Bearer`) and the web page's
    /// Socket.IO connections (`auth.token`) must present. Unset or empty:
    /// open, for a trusted network. `/healthz` and `/metrics` stay open.
    #[arg(long, env = "FAENA_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    #[arg(long, env = "FAENA_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Topic prefix shared by the whole cluster.
    #[arg(long, env = "FAENA_TOPIC_PREFIX", default_value = "faena")]
    pub topic_prefix: String,
    /// Directory of the job store (`faena.db`).
    #[arg(long, env = "FAENA_DATA_DIR", default_value = "faena-data")]
    pub data_dir: PathBuf,
    /// `full` fsyncs every commit group (survives power loss); `normal` survives a master crash.
    #[arg(long, env = "FAENA_STORE_SYNC", value_enum, default_value = "full")]
    pub store_sync: SyncMode,
    /// Most jobs waiting in the queue; past it submissions get 429.
    #[arg(long, env = "FAENA_QUEUE_CAPACITY", default_value_t = 100_000)]
    pub queue_capacity: usize,
    /// Dispatches of one job before it fails for good.
    #[arg(long, env = "FAENA_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Invalid mining shares a worker may submit before it is quarantined
    /// (no more work until it registers again).
    #[arg(long, env = "FAENA_INVALID_SHARE_LIMIT", default_value_t = 10)]
    pub invalid_share_limit: u32,
    /// A queued job fails when no registered worker has offered its kind
    /// (and AI provider) for this long.
    #[arg(long, env = "FAENA_NO_WORKER_TIMEOUT_MS", default_value_t = 60_000)]
    pub no_worker_timeout_ms: u64,
    /// `ai.query` answers kept in the result cache (0 turns it off).
    #[arg(long, env = "FAENA_AI_CACHE_ENTRIES", default_value_t = 1000)]
    pub ai_cache_entries: usize,
    /// How long a cached `ai.query` answer is served.
    #[arg(long, env = "FAENA_AI_CACHE_TTL_SECS", default_value_t = 3600)]
    pub ai_cache_ttl_secs: u64,
    /// The web page's directory (`index.html`, `app.js`, and `node_modules`
    /// with the Socket.IO client), served at `/`.
    #[arg(long, env = "FAENA_WEB_DIR", default_value = "web")]
    pub web_dir: std::path::PathBuf,
    /// Threads the master re-hashes submitted mining shares on (light mode).
    #[arg(long, env = "FAENA_VERIFY_THREADS", default_value_t = 2)]
    pub verify_threads: usize,
    /// Worker heartbeat interval; a worker or lease silent for two is lost.
    #[arg(long, env = "FAENA_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_ms: u32,
    /// Largest request body accepted by the REST API.
    #[arg(long, env = "FAENA_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long to wait for the broker at start-up.
    #[arg(long, env = "FAENA_MQTT_CONNECT_TIMEOUT_MS", default_value_t = 30_000)]
    pub mqtt_connect_timeout_ms: u64,
    /// Log JSON lines on stderr instead of text.
    #[arg(long, env = "FAENA_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        if self.queue_capacity == 0 {
            return err("--queue-capacity must be at least 1");
        }
        if self.max_attempts == 0 {
            return err("--max-attempts must be at least 1");
        }
        if !(1..=256).contains(&self.verify_threads) {
            return err("--verify-threads must be between 1 and 256");
        }
        if !(100..=600_000).contains(&self.heartbeat_ms) {
            return err("--heartbeat-ms must be between 100 and 600000");
        }
        if self.mqtt_url.is_none() && self.broker_auth.is_set() {
            return err("MQTT credentials need --mqtt-url (the embedded broker takes none)");
        }
        Ok(())
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(u64::from(self.heartbeat_ms))
    }
}
