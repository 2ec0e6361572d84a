//! Live configuration on the worker: takes the signed configuration (from
//! the broker's retained `{p}/config`, or from the master's answer to
//! Register), checks that the master signed it, and applies what concerns
//! this worker without a restart. A setting it has none of falls back to its
//! own flags; a setting it cannot apply is refused with the reason and its
//! flag's value stays.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use faena_common::signing::{self, OpenError};
use faena_proto::ai::Provider;
use faena_proto::secret::Secret;
use faena_proto::settings::{self as settings, Applied, Override, Refusal, Setting, SignedConfig};
use parking_lot::Mutex;
use serde_json::Value;

use crate::ai::{LiveAi, Providers};
use crate::config;
use crate::randomx::RandomX;
use crate::runner::Runner;

/// What this worker runs without any live setting: its flags.
#[derive(Debug, Clone)]
pub struct Base {
    pub slots: (u32, u32),
    pub randomx_threads: usize,
    /// For each key live configuration may set: what this worker's own
    /// settings say, so a live value that differs is reported as overriding it.
    pub own: BTreeMap<&'static str, Own>,
}

/// What a worker's own settings say for one key, and where that came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Own {
    pub value: Value,
    /// `FAENA_WORKER_SLOTS=1`, `--slots 1`, `the default 2, one per core`.
    pub from: String,
}

impl Own {
    /// `value`, which the environment variable `env` gave when it holds
    /// the same, else the flag `flag` when `explicit`, else the default
    /// (`default_why` says what the default follows).
    fn of(value: Value, explicit: bool, (env, flag): (&str, &str), default_why: &str) -> Self {
        let text = settings::shown(&value);
        let from_env = std::env::var(env).ok().filter(|v| v.trim() == text);
        let from = match (from_env, explicit) {
            (Some(v), _) => format!("{env}={v}"),
            (None, true) => format!("{flag} {text}"),
            (None, false) if default_why.is_empty() => format!("the default {text}"),
            (None, false) => format!("the default {text}, {default_why}"),
        };
        Self { value, from }
    }
}

impl Base {
    /// What `cfg` (and the defaults it leaves) sets for each live key.
    pub fn new(cfg: &crate::Config, slots: (u32, u32), randomx_threads: usize, providers: &Providers) -> Self {
        let mut own = BTreeMap::new();
        own.insert(
            "worker.slots",
            Own::of(slots.0.into(), cfg.slots.is_some(), ("FAENA_WORKER_SLOTS", "--slots"), "one per core"),
        );
        let threads = ("FAENA_RANDOMX_THREADS", "--randomx-threads");
        own.insert(
            "worker.randomx_threads",
            Own::of(randomx_threads.into(), cfg.randomx_threads.is_some(), threads, "one per core"),
        );
        let log = std::env::var("FAENA_LOG").ok().filter(|l| !l.trim().is_empty());
        let (level, explicit) = log.map_or(("info".to_owned(), false), |l| (l, true));
        own.insert("worker.log_level", Own::of(level.into(), explicit, ("FAENA_LOG", "FAENA_LOG"), ""));
        let offered = providers.offered();
        if offered.is_empty() {
            return Self { slots, randomx_threads, own };
        }
        let ai_slots = cfg.ai.ai_slots;
        own.insert(
            "worker.ai_slots",
            Own::of(ai_slots.into(), ai_slots != config::DEFAULT_AI_SLOTS, ("FAENA_AI_SLOTS", "--ai-slots"), ""),
        );
        let explicit = !cfg.ai.ai_providers.is_empty();
        let order = if explicit { cfg.ai.ai_providers.clone() } else { offered.clone() };
        let order = Value::from(order.iter().map(|p| p.as_str()).collect::<Vec<_>>());
        let why = "those it has, in that order";
        own.insert("ai.providers", Own::of(order, explicit, ("FAENA_AI_PROVIDERS", "--ai-providers"), why));
        let models = [
            ("ai.model.gemini", Provider::Gemini, ("GEMINI_MODEL", "--gemini-model"), config::DEFAULT_GEMINI_MODEL),
            ("ai.model.openai", Provider::Openai, ("OPENAI_MODEL", "--openai-model"), config::DEFAULT_OPENAI_MODEL),
        ];
        for (key, provider, source, default) in models {
            if let Some(model) = providers.default_model(provider) {
                let explicit = model != default;
                own.insert(key, Own::of(model.into(), explicit, source, ""));
            }
        }
        Self { slots, randomx_threads, own }
    }
}

#[derive(Debug)]
pub struct Live {
    token: Secret,
    base: Base,
    runner: Arc<Runner>,
    rx: Arc<RandomX>,
    providers: Arc<Providers>,
    /// The log filter it set (reloaded only on change); held while a
    /// configuration is applied, so two are never applied at once.
    level: Mutex<Option<String>>,
}

/// Why a configuration was not taken at all.
#[derive(Debug, thiserror::Error)]
pub enum NotTaken {
    #[error(transparent)]
    Unsigned(#[from] OpenError),
    #[error("version {got} is not newer than version {have}, which this worker runs")]
    Old { got: u64, have: u64 },
}

impl Live {
    pub fn new(token: Secret, base: Base, runner: Arc<Runner>, rx: Arc<RandomX>, providers: Arc<Providers>) -> Self {
        runner.metrics.settings(base.slots, base.randomx_threads, 0);
        Self { token, base, runner, rx, providers, level: Mutex::new(None) }
    }

    /// Applies `signed` if the master signed it and, unless it came from
    /// the master itself (`current`: its answer to Register), it is newer
    /// than what runs (an old message replayed on the broker changes nothing).
    pub fn take(&self, signed: &SignedConfig, current: bool) -> Result<Applied, NotTaken> {
        let config = signing::open(&self.token, signed)?;
        let mut applied_level = self.level.lock();
        let have = self.runner.config_version.load(Ordering::Relaxed);
        if !current && config.version <= have {
            return Err(NotTaken::Old { got: config.version, have });
        }
        let scope = config.for_worker(self.runner.worker_id.as_str());
        let mut refused = Vec::new();
        let mut settings = Vec::new();
        let mut overrides = Vec::new();
        for (key, value) in &scope {
            match Setting::parse(key, value).and_then(|s| self.check(s)) {
                Ok(s) => {
                    let own = self.base.own.get(key.as_str()).filter(|own| own.value != s.value());
                    if let Some(own) = own {
                        overrides.push(Override { key: key.clone(), value: s.value(), own: own.from.clone() });
                    }
                    settings.push(s);
                }
                Err(reason) => refused.push(Refusal { key: key.clone(), reason }),
            }
        }
        let (mut slots, mut threads, mut level, mut ai) =
            (self.base.slots, self.base.randomx_threads, None, LiveAi::default());
        for s in settings {
            match s {
                Setting::Slots(n) => slots.0 = n,
                Setting::AiSlots(n) => slots.1 = n,
                Setting::RandomxThreads(n) => threads = n,
                Setting::LogLevel(f) => level = Some(f),
                Setting::AiProviders(order) => ai.preference = Some(order),
                Setting::AiModel(p, m) => ai.models.push((p, m)),
            }
        }
        if level != *applied_level {
            match faena_common::logs::set_filter(level.as_deref()) {
                Ok(()) => *applied_level = level,
                Err(reason) => refused.push(Refusal { key: "worker.log_level".into(), reason }),
            }
        }
        // A worker that offers no AI keeps its zero AI slots.
        let offers_ai = self.base.slots.1 > 0;
        self.runner.resize((slots.0, if offers_ai { slots.1 } else { 0 }));
        self.rx.set_threads(threads);
        *self.providers.live.write() = ai;
        self.runner.config_version.store(config.version, Ordering::Relaxed);
        self.runner.metrics.settings(self.runner.slots(), threads, config.version);
        Ok(Applied { version: config.version, refused, overrides })
    }

    /// Whether this worker can apply `s`, and why not.
    fn check(&self, s: Setting) -> Result<Setting, String> {
        let offered = self.providers.offered();
        if let Setting::AiProviders(order) = &s
            && !offered.is_empty()
            && !order.iter().any(|p| offered.contains(p))
        {
            let names = |ps: &[Provider]| ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
            return Err(format!("this worker has none of {}; it offers {}", names(order), names(&offered)));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_setting_says_where_it_came_from() {
        let names = ("FAENA_TEST_NEVER_SET", "--slots");
        assert_eq!(Own::of(3.into(), true, names, "one per core").from, "--slots 3");
        assert_eq!(Own::of(2.into(), false, names, "one per core").from, "the default 2, one per core");
        assert_eq!(Own::of("info".into(), false, names, "").from, "the default info");
        let order = Value::from(vec!["local", "gemini"]);
        assert_eq!(
            Own::of(order, true, ("FAENA_TEST_NEVER_SET", "--ai-providers"), "").from,
            "--ai-providers local,gemini"
        );
    }
}
