//! The master's configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use faena_common::args::ConfigError;
use faena_common::args::{BrokerAuth, ClusterToken};

use crate::store::SyncMode;

/// The master's async threads when `--threads` is unset: the cores, up to this.
pub const DEFAULT_MAX_THREADS: usize = 4;
/// Most async threads `--threads` may ask for.
const MAX_THREADS: usize = 1024;

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
    /// Serve the web port (REST, page, Socket.IO) over HTTPS/WSS with
    /// FAENA_TLS_CERT_FILE and FAENA_TLS_KEY_FILE (the stack does).
    #[arg(long, env = "FAENA_WEB_TLS", default_value_t = false)]
    pub web_tls: bool,
    /// Where workers call back over gRPC.
    #[arg(long, env = "FAENA_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Listen address of the embedded broker (used when no --mqtt-url is given).
    #[arg(long, env = "FAENA_MQTT_ADDR", default_value = "127.0.0.1:1883")]
    pub mqtt_addr: SocketAddr,
    /// Clients the embedded broker serves at once (workers, observers, the master).
    #[arg(long, env = "FAENA_MQTT_MAX_CLIENTS", default_value_t = 1024)]
    pub mqtt_max_clients: usize,
    /// Of those, clients without an account (observers: mosquitto_sub, monitor.sh).
    #[arg(long, env = "FAENA_MQTT_MAX_OBSERVERS", default_value_t = 256)]
    pub mqtt_max_observers: usize,
    /// External broker, e.g. mqtt://mosquitto:1883. Without it the master embeds one.
    #[arg(long, env = "FAENA_MQTT_URL")]
    pub mqtt_url: Option<String>,
    #[command(flatten)]
    pub broker_auth: BrokerAuth,
    /// Autoscaling moved to its own service (`faena-autoscaler`): read only
    /// to say so to whoever still sets it here.
    #[arg(long, env = "FAENA_AUTOSCALE", hide = true)]
    pub autoscale: Option<String>,
    /// The external broker is Mosquitto with its dynamic security plugin and
    /// the master's account is the plugin's admin: the master gives every
    /// worker an account of its own there, confined to its own topics.
    #[arg(long, env = "FAENA_MQTT_DYNSEC", default_value_t = false, action = clap::ArgAction::Set)]
    pub mqtt_dynsec: bool,
    /// Without a cluster token, a random one is written to
    /// `<data-dir>/cluster-token` for local workers to read.
    #[command(flatten)]
    pub token: ClusterToken,
    /// TLS: gRPC and the embedded broker are served over TLS with this
    /// certificate; `mqtts://` URLs trust the CA file.
    #[command(flatten)]
    pub tls: faena_common::tls::TlsArgs,
    /// Token the REST API (`Authorization: Bearer`) and the web page's
    /// Socket.IO connections (`auth.token`) must present. Unset or empty:
    /// open, for a trusted network. `/healthz` and `/metrics` stay open.
    #[arg(long, env = "FAENA_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    #[arg(long, env = "FAENA_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Web sessions one client address may keep.
    #[arg(long, env = "FAENA_WEB_SESSIONS_PER_ADDRESS", default_value_t = 100)]
    pub web_sessions_per_address: usize,
    /// Questions one client address may ask per minute through the page.
    #[arg(long, env = "FAENA_WEB_ASKS_PER_MINUTE", default_value_t = 10)]
    pub web_asks_per_minute: usize,
    /// Hashing and mining jobs one client address may start per minute through the page.
    #[arg(long, env = "FAENA_WEB_JOBS_PER_MINUTE", default_value_t = 30)]
    pub web_jobs_per_minute: usize,
    /// How long a worker id quarantined for invalid shares gets no work,
    /// however often it registers again.
    #[arg(long, env = "FAENA_QUARANTINE_SECS", default_value_t = 600)]
    pub quarantine_secs: u64,
    /// A web session with no socket and no running job is forgotten after this.
    #[arg(long, env = "FAENA_WEB_SESSION_IDLE_SECS", default_value_t = 3600)]
    pub web_session_idle_secs: u64,
    /// Sites besides the master's own whose pages may call the REST API and
    /// open Socket.IO (comma-separated origins, or `*`).
    #[arg(long, env = "FAENA_ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,
    /// Host names the web page and REST API answer to besides IP addresses
    /// and `localhost` (comma-separated, or `*`): a guard against DNS rebinding.
    #[arg(long, env = "FAENA_ALLOWED_HOSTS", default_value = "")]
    pub allowed_hosts: String,
    /// Topic prefix shared by the whole cluster.
    #[arg(long, env = "FAENA_TOPIC_PREFIX", default_value = "faena")]
    pub topic_prefix: String,
    /// Directory of the job store (`faena.db`).
    #[arg(long, env = "FAENA_DATA_DIR", default_value = "faena-data")]
    pub data_dir: PathBuf,
    /// The job store on PostgreSQL (`postgres://user:password@host:port/db`),
    /// for a cluster; unset: SQLite in the data directory. A secret: give it
    /// as a file (`FAENA_STORE_URL_FILE`) where you can.
    #[arg(long, env = "FAENA_STORE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    #[arg(long, env = "FAENA_STORE_URL_FILE")]
    pub store_url_file: Option<PathBuf>,
    /// How long a leader's lease runs on a shared (PostgreSQL) store: a
    /// standby takes over this long after the leader stopped renewing it.
    #[arg(long, env = "FAENA_LEADER_LEASE_MS", default_value_t = 3_000)]
    pub leader_lease_ms: u64,
    /// The host other masters reach this one at, to forward what only the
    /// leader decides (default: the HTTP address's IP when it is a
    /// specific one, else this machine's name as it resolves here).
    #[arg(long, env = "FAENA_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// `full` fsyncs every commit group (survives power loss); `normal` survives a master crash.
    #[arg(long, env = "FAENA_STORE_SYNC", value_enum, default_value = "full")]
    pub store_sync: SyncMode,
    /// The SQLite store's jobs spread over this many files (1 to 8), each
    /// committed by a writer thread of its own: more jobs a second on a
    /// machine of many cores. Fixed when the store is made; unset: as the
    /// store was made (1 for a new one).
    #[arg(long, env = "FAENA_STORE_SHARDS", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub store_shards: Option<u8>,
    /// The PostgreSQL store's writers (1 to 8), each committing on a
    /// connection of its own, a job's changes always on the same one: more
    /// jobs a second where one connection's server process is the limit.
    #[arg(long, env = "FAENA_STORE_WRITERS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub store_writers: u8,
    /// Finished jobs (and their history) older than this are deleted:
    /// `7d`, `12h`, `30m`, `90s`, or `off`.
    #[arg(long, env = "FAENA_RETENTION", default_value = "7d")]
    pub retention: String,
    /// At least this many jobs are kept, newest first (finished ones beyond
    /// are deleted, a generation of a quarter as many at a time); 0 keeps
    /// any number.
    #[arg(long, env = "FAENA_RETENTION_JOBS", default_value_t = 0)]
    pub retention_jobs: u64,
    /// Mining blocks found and participants' tallies not added to for
    /// longer than this are deleted from the mining store (a source lists
    /// its last 1,000 blocks in any case): a duration, or `off`.
    #[arg(long, env = "FAENA_MINING_RETENTION", default_value = "365d")]
    pub mining_retention: String,
    /// Most jobs waiting in the queue; past it submissions get 429.
    #[arg(long, env = "FAENA_QUEUE_CAPACITY", default_value_t = 100_000)]
    pub queue_capacity: usize,
    /// Most `unique_key`s held at once; past it submissions with a new key get 429.
    #[arg(long, env = "FAENA_MAX_UNIQUE_KEYS", default_value_t = 1_000_000)]
    pub max_unique_keys: usize,
    /// Most groups known at once (those with jobs or limits); past it a job
    /// naming a new group gets 429.
    #[arg(long, env = "FAENA_MAX_GROUPS", default_value_t = 10_000)]
    pub max_groups: usize,
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
    /// Longest an OpenAI-API request (`/v1/chat/completions`) waits in the
    /// queue for an AI slot before it is answered 429 with `Retry-After`.
    #[arg(long, env = "FAENA_AI_QUEUE_WAIT_MS", default_value_t = 60_000)]
    pub ai_queue_wait_ms: u64,
    /// `ai.query` answers kept in the result cache (0 turns it off).
    #[arg(long, env = "FAENA_AI_CACHE_ENTRIES", default_value_t = 1000)]
    pub ai_cache_entries: usize,
    /// How long a cached `ai.query` answer is served.
    #[arg(long, env = "FAENA_AI_CACHE_TTL_SECS", default_value_t = 3600)]
    pub ai_cache_ttl_secs: u64,
    /// Answer one submitter (web session, API caller) from another's
    /// cached questions. Off: each is answered from their own only.
    #[arg(long, env = "FAENA_AI_CACHE_SHARED", default_value_t = false, action = clap::ArgAction::Set)]
    pub ai_cache_shared: bool,
    /// The web page's directory (`index.html`, `app.js`, and `node_modules`
    /// with the Socket.IO client), served at `/`.
    #[arg(long, env = "FAENA_WEB_DIR", default_value = "web")]
    pub web_dir: std::path::PathBuf,
    /// Threads the master's own async work runs on: the web port, gRPC,
    /// MQTT, the coordinator. Unset: the machine's cores, at most 4.
    #[arg(long, env = "FAENA_MASTER_THREADS")]
    pub threads: Option<usize>,
    /// Threads the master re-hashes submitted mining shares on.
    #[arg(long, env = "FAENA_VERIFY_THREADS", default_value_t = 2)]
    pub verify_threads: usize,
    /// How long re-hashing one report's shares may take; the rest come back
    /// unverified (not credited). Keep it under the workers' 30 s call timeout.
    #[arg(long, env = "FAENA_VERIFY_DEADLINE_MS", default_value_t = 20_000)]
    pub verify_deadline_ms: u64,
    /// `fast` (a 2 GiB dataset per key, several times the speed), `light`,
    /// or `auto`: fast when the machine has the memory for it.
    #[arg(long, env = "FAENA_VERIFY_MODE", default_value = "auto")]
    pub verify_mode: VerifyMode,
    /// Memory available (MiB) that `auto` needs to pick fast mode.
    #[arg(long, env = "FAENA_VERIFY_FAST_MIN_MIB", default_value_t = 3072)]
    pub verify_fast_min_mib: u64,
    /// Share of the verifier's measured capacity Stratum miners may use.
    #[arg(long, env = "FAENA_VERIFY_BUDGET", default_value_t = 0.8)]
    pub verify_budget: f64,
    /// Where the Stratum server listens for miners (XMRig), e.g. 0.0.0.0:3333. Off when unset.
    #[arg(long, env = "FAENA_STRATUM_ADDR")]
    pub stratum_addr: Option<SocketAddr>,
    /// Password Stratum miners must log in with. Unset: any.
    #[arg(long, env = "FAENA_STRATUM_PASSWORD", hide_env_values = true)]
    pub stratum_password: Option<String>,
    #[arg(long, env = "FAENA_STRATUM_PASSWORD_FILE")]
    pub stratum_password_file: Option<PathBuf>,
    /// The interval between one miner's shares that vardiff aims at.
    #[arg(long, env = "FAENA_SHARE_INTERVAL_MS", default_value_t = 30_000)]
    pub share_interval_ms: u64,
    /// A Stratum miner's first difficulty.
    #[arg(long, env = "FAENA_STRATUM_DIFFICULTY", default_value_t = 10_000)]
    pub stratum_difficulty: u64,
    /// The lowest difficulty vardiff goes to.
    #[arg(long, env = "FAENA_STRATUM_MIN_DIFFICULTY", default_value_t = 100)]
    pub stratum_min_difficulty: u64,
    /// Difficulty of the Faena workers' shares on a daemon source (0: one
    /// share per interval per worker at its measured speed).
    #[arg(long, env = "FAENA_WORKER_SHARE_DIFFICULTY", default_value_t = 0)]
    pub worker_share_difficulty: u64,
    /// How long shares for a replaced template still count (as stale).
    #[arg(long, env = "FAENA_STALE_GRACE_MS", default_value_t = 10_000)]
    pub stale_grace_ms: u64,
    /// Invalid shares before a Stratum miner's address is banned.
    #[arg(long, env = "FAENA_STRATUM_INVALID_LIMIT", default_value_t = 10)]
    pub stratum_invalid_limit: u32,
    /// How long a ban lasts.
    #[arg(long, env = "FAENA_STRATUM_BAN_SECS", default_value_t = 600)]
    pub stratum_ban_secs: u64,
    /// Longest Stratum line accepted.
    #[arg(long, env = "FAENA_STRATUM_MAX_LINE", default_value_t = 16 * 1024)]
    pub stratum_max_line: usize,
    /// Requests per second one Stratum connection may make (bursts of 4× that).
    #[arg(long, env = "FAENA_STRATUM_RATE", default_value_t = 10.0)]
    pub stratum_rate: f64,
    /// A Stratum connection silent this long is dropped.
    #[arg(long, env = "FAENA_STRATUM_IDLE_SECS", default_value_t = 600)]
    pub stratum_idle_secs: u64,
    /// A Stratum connection that has not logged in this long is dropped.
    #[arg(long, env = "FAENA_STRATUM_LOGIN_SECS", default_value_t = 15)]
    pub stratum_login_secs: u64,
    /// Stratum connections in all; past it new ones are refused.
    #[arg(long, env = "FAENA_STRATUM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub stratum_max_connections: usize,
    /// Stratum connections from one address (a proxy or a farm behind NAT needs more).
    #[arg(long, env = "FAENA_STRATUM_MAX_PER_ADDRESS", default_value_t = 32)]
    pub stratum_max_per_address: u32,
    /// The part of the verification budget one address may use.
    #[arg(long, env = "FAENA_STRATUM_ADDRESS_BUDGET", default_value_t = 0.25)]
    pub stratum_address_budget: f64,
    /// How often a daemon source asks monerod for a new block.
    #[arg(long, env = "FAENA_DAEMON_POLL_MS", default_value_t = 500)]
    pub daemon_poll_ms: u64,
    /// How often a daemon source takes a fresh template anyway (new transactions).
    #[arg(long, env = "FAENA_TEMPLATE_REFRESH_SECS", default_value_t = 60)]
    pub template_refresh_secs: u64,
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

/// How the master verifies shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyMode {
    Auto,
    Fast,
    Light,
}

impl Config {
    /// The verifier's mode: `auto` is fast when `available_mib` allows a dataset.
    pub fn verifier_mode(&self, available_mib: Option<u64>) -> faena_randomx::Mode {
        match self.verify_mode {
            VerifyMode::Fast => faena_randomx::Mode::Fast,
            VerifyMode::Light => faena_randomx::Mode::Light,
            VerifyMode::Auto if available_mib.is_some_and(|m| m >= self.verify_fast_min_mib) => {
                faena_randomx::Mode::Fast
            }
            VerifyMode::Auto => faena_randomx::Mode::Light,
        }
    }

    /// The async runtime's threads. By default the cores, up to
    /// [`DEFAULT_MAX_THREADS`]: the coordinator and the store's writer are
    /// serial, they bound dispatch, and threads beyond what the rest needs
    /// beside them only wake to look for work: on 16 cores, 16 threads
    /// cost a job submitted alone a fifth more of the master's CPU than 4
    /// for the same jobs a second (BENCHMARKS.md).
    pub fn runtime_threads(&self) -> Result<usize, ConfigError> {
        match self.threads {
            Some(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
            Some(_) => Err(ConfigError(format!("--threads must be between 1 and {MAX_THREADS}"))),
            None => Ok(std::thread::available_parallelism().map_or(1, usize::from).min(DEFAULT_MAX_THREADS)),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        self.runtime_threads()?;
        self.retention()?;
        self.mining_retention()?;
        self.allowed_origins()?;
        self.allowed_hosts()?;
        if self.web_tls && (self.tls.tls_cert_file.is_none() || self.tls.tls_key_file.is_none()) {
            return err("FAENA_WEB_TLS needs the certificate it serves: FAENA_TLS_CERT_FILE and FAENA_TLS_KEY_FILE");
        }
        if self.store_shards.is_some() && (self.store_url.is_some() || self.store_url_file.is_some()) {
            return err(
                "FAENA_STORE_SHARDS spreads the SQLite store over files; a PostgreSQL store (FAENA_STORE_URL) has none: unset one of them",
            );
        }
        if self.store_writers > 1 && self.store_url.is_none() && self.store_url_file.is_none() {
            return err(
                "FAENA_STORE_WRITERS sets the PostgreSQL store's writers (FAENA_STORE_URL); a SQLite store has one a file (FAENA_STORE_SHARDS)",
            );
        }
        if !(300..=600_000).contains(&self.leader_lease_ms) {
            return err("FAENA_LEADER_LEASE_MS must be between 300 and 600000");
        }
        if self.queue_capacity == 0 {
            return err("--queue-capacity must be at least 1");
        }
        if self.max_attempts == 0 {
            return err("--max-attempts must be at least 1");
        }
        if !(1..=256).contains(&self.verify_threads) {
            return err("--verify-threads must be between 1 and 256");
        }
        if !(0.01..=1.0).contains(&self.verify_budget) {
            return err("--verify-budget must be between 0.01 and 1");
        }
        if self.share_interval_ms < 100 || self.stratum_difficulty == 0 || self.stratum_min_difficulty == 0 {
            return err("--share-interval-ms must be at least 100 and difficulties at least 1");
        }
        if self.stratum_max_connections == 0
            || self.stratum_max_per_address == 0
            || !(0.01..=1.0).contains(&self.stratum_address_budget)
        {
            return err(
                "--stratum-max-connections and --stratum-max-per-address must be at least 1, --stratum-address-budget between 0.01 and 1",
            );
        }
        if self.stratum_rate <= 0.0 || self.stratum_max_line < 512 {
            return err("--stratum-rate must be positive and --stratum-max-line at least 512");
        }
        if !(100..=600_000).contains(&self.heartbeat_ms) {
            return err("--heartbeat-ms must be between 100 and 600000");
        }
        if self.mqtt_url.is_none() && self.broker_auth.is_set() {
            return err("MQTT credentials need --mqtt-url (the embedded broker takes none)");
        }
        if self.mqtt_url.is_none() && self.mqtt_dynsec {
            return err("--mqtt-dynsec needs --mqtt-url (Mosquitto with its dynamic security plugin)");
        }
        Ok(())
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(u64::from(self.heartbeat_ms))
    }

    /// What one client address may do through the page.
    pub fn web_limits(&self) -> crate::web::limits::WebLimits {
        crate::web::limits::WebLimits {
            sessions: self.web_sessions_per_address.max(1),
            asks_per_minute: self.web_asks_per_minute,
            jobs_per_minute: self.web_jobs_per_minute,
            idle: Duration::from_secs(self.web_session_idle_secs.max(1)),
        }
    }

    /// The origins allowed besides the master's own.
    pub fn allowed_origins(&self) -> Result<crate::http::origin::Origins, ConfigError> {
        crate::http::origin::Origins::parse(&self.allowed_origins)
            .map_err(|e| ConfigError(format!("--allowed-origins: {e}")))
    }

    pub fn allowed_hosts(&self) -> Result<crate::http::origin::Hosts, ConfigError> {
        crate::http::origin::Hosts::parse(&self.allowed_hosts).map_err(|e| ConfigError(format!("--allowed-hosts: {e}")))
    }

    /// What the store keeps (`FAENA_RETENTION`, `FAENA_RETENTION_JOBS`).
    pub fn retention(&self) -> Result<crate::store::Retention, ConfigError> {
        let age = age("--retention", &self.retention)?;
        let keep = (self.retention_jobs > 0).then_some(self.retention_jobs);
        Ok(crate::store::Retention { age, keep })
    }

    /// What the mining store keeps (`FAENA_MINING_RETENTION`).
    pub fn mining_retention(&self) -> Result<Option<Duration>, ConfigError> {
        age("--mining-retention", &self.mining_retention)
    }

    /// The pool side's settings (the Stratum password resolved apart).
    pub fn pool(&self) -> crate::pool::PoolConfig {
        crate::pool::PoolConfig {
            share_interval: Duration::from_millis(self.share_interval_ms),
            start_difficulty: self.stratum_difficulty,
            min_difficulty: self.stratum_min_difficulty,
            worker_difficulty: self.worker_share_difficulty,
            stale_grace: Duration::from_millis(self.stale_grace_ms),
            invalid_limit: self.stratum_invalid_limit,
            ban: Duration::from_secs(self.stratum_ban_secs),
            max_connections: self.stratum_max_connections,
            max_per_address: self.stratum_max_per_address,
            address_share: self.stratum_address_budget,
            max_line: self.stratum_max_line,
            rate: self.stratum_rate,
            burst: self.stratum_rate * 4.0,
            idle: Duration::from_secs(self.stratum_idle_secs),
            login_timeout: Duration::from_secs(self.stratum_login_secs.max(1)),
            poll: Duration::from_millis(self.daemon_poll_ms.max(50)),
            template_refresh: Duration::from_secs(self.template_refresh_secs.max(1)),
            budget_share: self.verify_budget,
            password: None,
            forwarders: None,
            // Checked by validate(); unreadable here means off.
            mining_retention: self.mining_retention().ok().flatten(),
        }
    }
}

/// A retention period: `7d`, `12h`, `30m`, `90s`, or `off` (None).
fn age(flag: &str, text: &str) -> Result<Option<Duration>, ConfigError> {
    let bad = || ConfigError(format!("{flag} {text:?}: a duration such as 7d, 12h, 30m or 90s, or off"));
    let text = text.trim();
    if matches!(text, "off" | "0") {
        return Ok(None);
    }
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(bad()),
    };
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faena_randomx::Mode;

    #[test]
    fn auto_verifies_in_fast_mode_only_with_the_memory_for_a_dataset() {
        let auto = Config::try_parse_from(["faena-master"]).expect("defaults");
        let need = auto.verify_fast_min_mib;
        assert_eq!(auto.verifier_mode(Some(need)), Mode::Fast);
        assert_eq!(auto.verifier_mode(Some(need - 1)), Mode::Light);
        assert_eq!(auto.verifier_mode(None), Mode::Light, "unknown memory: light");
        let light = Config::try_parse_from(["faena-master", "--verify-mode", "light"]).expect("light");
        assert_eq!(light.verifier_mode(Some(u64::MAX)), Mode::Light);
        let fast = Config::try_parse_from(["faena-master", "--verify-mode", "fast"]).expect("fast");
        assert_eq!(fast.verifier_mode(Some(0)), Mode::Fast);
    }

    #[test]
    fn async_threads_are_the_cores_up_to_four_unless_set() {
        let cfg = Config::try_parse_from(["faena-master"]).expect("defaults");
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(cfg.runtime_threads().expect("valid"), cores.min(DEFAULT_MAX_THREADS));
        let cfg = Config::try_parse_from(["faena-master", "--threads", "12"]).expect("parses");
        assert_eq!(cfg.runtime_threads().expect("valid"), 12);
        cfg.validate().expect("valid");
        for bad in ["0", "1025"] {
            let cfg = Config::try_parse_from(["faena-master", "--threads", bad]).expect("parses");
            assert!(cfg.runtime_threads().is_err(), "{bad}");
            let e = cfg.validate().expect_err(bad);
            assert!(e.to_string().contains("--threads must be between 1 and 1024"), "{bad}: {e}");
        }
    }

    #[test]
    fn store_shards_are_one_to_eight_and_only_for_sqlite() {
        let cfg = Config::try_parse_from(["faena-master", "--store-shards", "4"]).expect("parses");
        assert_eq!(cfg.store_shards, Some(4));
        cfg.validate().expect("valid");
        for bad in ["0", "9", "x"] {
            assert!(Config::try_parse_from(["faena-master", "--store-shards", bad]).is_err(), "{bad}");
        }
        let both = ["faena-master", "--store-shards", "2", "--store-url", "postgres://u:p@127.0.0.1/db"];
        let e = Config::try_parse_from(both).expect("parses").validate().expect_err("both");
        assert!(e.to_string().contains("FAENA_STORE_SHARDS") && !e.to_string().contains("u:p"), "{e}");
    }

    #[test]
    fn store_writers_are_one_to_eight_and_only_for_postgresql() {
        let pg = ["faena-master", "--store-writers", "4", "--store-url", "postgres://u:p@127.0.0.1/db"];
        let cfg = Config::try_parse_from(pg).expect("parses");
        assert_eq!(cfg.store_writers, 4);
        cfg.validate().expect("valid");
        assert_eq!(Config::try_parse_from(["faena-master"]).expect("defaults").store_writers, 1);
        for bad in ["0", "9", "x"] {
            assert!(Config::try_parse_from(["faena-master", "--store-writers", bad]).is_err(), "{bad}");
        }
        let sqlite = Config::try_parse_from(["faena-master", "--store-writers", "2"]).expect("parses");
        let e = sqlite.validate().expect_err("no PostgreSQL store");
        assert!(e.to_string().contains("FAENA_STORE_WRITERS"), "{e}");
    }

    #[test]
    fn retention_periods_are_durations_or_off() {
        let day = Duration::from_secs(86_400);
        let cfg = Config::try_parse_from(["faena-master"]).expect("defaults");
        assert_eq!(cfg.retention().expect("valid").age, Some(7 * day));
        assert_eq!(cfg.mining_retention().expect("valid"), Some(365 * day));
        let cfg = Config::try_parse_from(["faena-master", "--retention", "12h", "--mining-retention", "off"])
            .expect("parses");
        assert_eq!(cfg.retention().expect("valid").age, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(cfg.mining_retention().expect("valid"), None);
        for bad in ["7", "7w", "d", "-1d", "1.5d"] {
            let cfg = Config::try_parse_from(["faena-master".to_owned(), format!("--mining-retention={bad}")])
                .expect("parses");
            let e = cfg.validate().expect_err(bad);
            assert!(e.to_string().contains("--mining-retention"), "{bad}: {e}");
        }
    }
}
