//! The worker's configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use faena_common::args::ConfigError;
use faena_common::args::{BrokerAuth, ClusterToken};
use faena_proto::ai::Provider;
use faena_proto::settings::MAX_SLOTS;

#[derive(Debug, Clone, Parser)]
#[command(name = "faena-worker", version, about = "Faena worker: runs work units from MQTT, reports over gRPC")]
pub struct Config {
    /// Unique id of this worker (A-Z a-z 0-9 _ . -). Default: host name plus a random suffix.
    #[arg(long, env = "FAENA_WORKER_ID")]
    pub worker_id: Option<String>,
    /// The master's gRPC address (`https://` for TLS); several masters,
    /// comma-separated: calls go to any of them that answers.
    #[arg(long, env = "FAENA_MASTER_URL", default_value = "http://127.0.0.1:50051")]
    pub master_url: String,
    /// The broker (`mqtts://` for TLS).
    #[arg(long, env = "FAENA_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
    pub mqtt_url: String,
    /// What `https://` and `mqtts://` URLs trust (the CA file; system roots when unset).
    #[command(flatten)]
    pub tls: faena_common::tls::TlsArgs,
    #[command(flatten)]
    pub broker_auth: BrokerAuth,
    #[command(flatten)]
    pub token: ClusterToken,
    #[arg(long, env = "FAENA_TOPIC_PREFIX", default_value = "faena")]
    pub topic_prefix: String,
    /// Units this worker runs at once. Default: one per core.
    #[arg(long, env = "FAENA_WORKER_SLOTS")]
    pub slots: Option<u32>,
    /// `fast` (2080 MiB dataset), `light` (256 MiB cache, ~8x slower), or
    /// `auto`: fast when the machine has the memory.
    #[arg(long, env = "FAENA_RANDOMX_MODE", value_enum, default_value = "auto")]
    pub randomx_mode: crate::randomx::ModeChoice,
    /// Threads for RandomX (dataset initialisation and hashing). Default: one per core.
    #[arg(long, env = "FAENA_RANDOMX_THREADS")]
    pub randomx_threads: Option<usize>,
    /// Build the key a mining template says comes next (Monero's seed
    /// change) while mining the current one, where there is room for both;
    /// `false`: build it at the switch, as before.
    #[arg(long, env = "FAENA_RANDOMX_AHEAD", default_value_t = true, action = clap::ArgAction::Set)]
    pub randomx_ahead: bool,
    /// A directory the workers of this machine share fast-mode datasets
    /// through (a tmpfs such as `/dev/shm/faena`, ideally one that gives
    /// huge pages): the first worker to need a key builds its 2 GiB dataset
    /// there and the others map it. Unset: each worker builds its own.
    #[arg(long, env = "FAENA_RANDOMX_SHARE_DIR")]
    pub randomx_share_dir: Option<std::path::PathBuf>,
    /// Where `/metrics` and `/healthz` listen (port 0 picks one).
    #[arg(long, env = "FAENA_WORKER_METRICS_ADDR", default_value = "127.0.0.1:0")]
    pub metrics_addr: SocketAddr,
    /// On SIGTERM, how long running units may finish before they are handed back.
    #[arg(long, env = "FAENA_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,
    #[arg(long, env = "FAENA_LOG_JSON")]
    pub log_json: bool,
    #[command(flatten)]
    pub ai: AiArgs,
}

/// `ai.query` slots when none is given.
pub const DEFAULT_AI_SLOTS: u32 = 8;
/// The model asked of Gemini when none is given.
pub const DEFAULT_GEMINI_MODEL: &str = "gemini-2.5-flash";
/// The model asked of an OpenAI-compatible endpoint when none is given.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

/// AI providers. Gemini is offered when a key or a base URL is given (a
/// base URL alone serves jobs that bring their own key); an
/// OpenAI-compatible endpoint when a base URL or a key is given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AiArgs {
    #[arg(long, env = "GEMINI_API_KEY", hide_env_values = true)]
    pub gemini_api_key: Option<String>,
    #[arg(long, env = "GEMINI_API_KEY_FILE")]
    pub gemini_api_key_file: Option<PathBuf>,
    /// Default: Google's, https://generativelanguage.googleapis.com/v1beta.
    #[arg(long, env = "GEMINI_BASE_URL")]
    pub gemini_base_url: Option<String>,
    #[arg(long, env = "GEMINI_MODEL", default_value = DEFAULT_GEMINI_MODEL)]
    pub gemini_model: String,
    /// An OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp): the
    /// part before `/v1/chat/completions`. Default with a key: https://api.openai.com.
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    #[arg(long, env = "OPENAI_API_KEY_FILE")]
    pub openai_api_key_file: Option<PathBuf>,
    #[arg(long, env = "OPENAI_MODEL", default_value = DEFAULT_OPENAI_MODEL)]
    pub openai_model: String,
    /// `ai.query` units at once, apart from the other slots (I/O-bound).
    #[arg(long, env = "FAENA_AI_SLOTS", default_value_t = DEFAULT_AI_SLOTS)]
    pub ai_slots: u32,
    /// Connecting to a provider may take this long.
    #[arg(long, env = "FAENA_AI_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ai_connect_timeout_ms: u64,
    /// The longest wait for the answer to start or for its next piece.
    #[arg(long, env = "FAENA_AI_CHUNK_TIMEOUT_MS", default_value_t = 60_000)]
    pub ai_chunk_timeout_ms: u64,
    /// Tries on rate limits (429) and server errors (500, 503, 504).
    #[arg(long, env = "FAENA_AI_TRIES", default_value_t = 4)]
    pub ai_tries: u32,
    /// A GGUF model this worker runs itself (provider `local`, llama.cpp in
    /// this process): no key, no network. `scripts/fetch-model.sh` fetches
    /// the default one (SmolLM2-135M-Instruct).
    #[arg(long, env = "FAENA_LOCAL_MODEL")]
    pub local_model: Option<PathBuf>,
    /// The order this worker tries its providers in when a job names none,
    /// e.g. `gemini,local` (default: gemini, openai, local — those it has).
    #[arg(long, env = "FAENA_AI_PROVIDERS", value_delimiter = ',', value_parser = parse_provider)]
    pub ai_providers: Vec<Provider>,
    /// Threads the local model computes on (default: half the cores), so it
    /// shares the machine with RandomX.
    #[arg(long, env = "FAENA_LOCAL_THREADS")]
    pub local_threads: Option<usize>,
    /// Tokens of question and answer the local model holds (at most what the
    /// model was trained for).
    #[arg(long, env = "FAENA_LOCAL_CONTEXT", default_value_t = 4096)]
    pub local_context: u32,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.randomx_threads.is_some_and(|t| t == 0 || t > 1024) {
            return Err(ConfigError("--randomx-threads must be 1..=1024".into()));
        }
        // The same limit as a live `worker.slots` setting's.
        if self.slots.is_some_and(|s| s == 0 || s > MAX_SLOTS) {
            return Err(ConfigError(format!("--slots must be 1..={MAX_SLOTS}")));
        }
        if self.ai.ai_slots == 0 || self.ai.ai_slots > MAX_SLOTS {
            return Err(ConfigError(format!("--ai-slots must be 1..={MAX_SLOTS}")));
        }
        if self.ai.ai_tries == 0 || self.ai.ai_tries > 20 {
            return Err(ConfigError("--ai-tries must be 1..=20".into()));
        }
        if self.ai.local_threads.is_some_and(|t| t == 0 || t > 1024) {
            return Err(ConfigError("--local-threads must be 1..=1024".into()));
        }
        if !(256..=1_048_576).contains(&self.ai.local_context) {
            return Err(ConfigError("--local-context must be 256..=1048576".into()));
        }
        for url in [&self.ai.gemini_base_url, &self.ai.openai_base_url].into_iter().flatten() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!("AI base URL {url:?} must start with http:// or https://")));
            }
        }
        let urls = crate::client::master_urls(&self.master_url);
        if urls.is_empty() || urls.len() > crate::client::MAX_MASTERS {
            return Err(ConfigError(format!(
                "--master-url names 1 to {} masters, comma-separated",
                crate::client::MAX_MASTERS
            )));
        }
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!("--master-url {url:?} must start with http:// or https://")));
            }
        }
        Ok(())
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

fn parse_provider(s: &str) -> Result<Provider, String> {
    Provider::parse(s.trim()).ok_or_else(|| format!("unknown AI provider {s:?} (gemini, openai, local)"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Config, MAX_SLOTS};

    #[test]
    fn a_worker_is_told_of_one_to_sixteen_masters() {
        let parse =
            |urls: &str| Config::try_parse_from(["faena-worker", "--master-url", urls]).map_err(|e| e.to_string());
        let many = (0..17).map(|i| format!("http://m{i}:50051")).collect::<Vec<_>>().join(",");
        assert!(parse(&many).expect("parses").validate().is_err());
        assert!(parse("http://a:1,https://b:2").expect("parses").validate().is_ok());
        assert!(parse("http://a:1,b:2").expect("parses").validate().is_err());
        assert!(parse(",").expect("parses").validate().is_err());
    }

    /// `--slots` and `--ai-slots` take what a live setting takes.
    #[test]
    fn slots_stay_within_the_settings_limit() {
        let check = |flag: &str, n: u32| {
            Config::try_parse_from(["faena-worker", flag, &n.to_string()]).expect("parses").validate().is_ok()
        };
        for flag in ["--slots", "--ai-slots"] {
            assert!(!check(flag, 0), "{flag} 0");
            assert!(check(flag, 1), "{flag} 1");
            assert!(check(flag, MAX_SLOTS), "{flag} at the limit");
            assert!(!check(flag, MAX_SLOTS + 1), "{flag} past the limit");
        }
    }
}
