//! Live configuration on the worker: takes the signed configuration (from
//! the broker's retained `{p}/config`, or from the master's answer to
//! Register), checks that the master signed it, and applies what concerns
//! this worker without a restart. A setting it has none of falls back to its
//! own flags; a setting it cannot apply is refused with the reason and its
//! flag's value stays.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use faena_common::signing::{self, OpenError};
use faena_proto::ai::Provider;
use faena_proto::secret::Secret;
use faena_proto::settings::{Applied, Refusal, Setting, SignedConfig};
use parking_lot::Mutex;

use crate::ai::{LiveAi, Providers};
use crate::randomx::RandomX;
use crate::runner::Runner;

/// What this worker runs without any live setting: its flags.
#[derive(Debug, Clone, Copy)]
pub struct Base {
    pub slots: (u32, u32),
    pub randomx_threads: usize,
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
        for (key, value) in &scope {
            match Setting::parse(key, value).and_then(|s| self.check(s)) {
                Ok(s) => settings.push(s),
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
        Ok(Applied { version: config.version, refused })
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
