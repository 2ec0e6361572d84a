//! Which RandomX material the verifier hashes a key with, so that no share
//! is lost to a verifier that is not ready.
//!
//! - **Pinned keys** are the live mining sources' (the pool pins them as
//!   their templates arrive). Each gets its light material at once (a
//!   256 MiB cache, ~0.5 s), so its shares verify from the first one; in
//!   fast mode its 2 GiB dataset is built beside, on a thread of its own and
//!   outside any share's time limit, retried with the one backoff policy if
//!   it fails, and used once ready. Pinned material is never evicted by
//!   other keys.
//! - **Other keys** (a client's `randomx.mine` job may name any) get light
//!   material only, in a small LRU: a job that churns keys costs a cache
//!   build per key and can evict only other unpinned keys, never a source's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_common::retry::Policy;
use faena_proto::jobs::encode_hex;
use faena_randomx::{Flags, KeyCache, Material, Mode, RxError};
use parking_lot::Mutex;

/// Light-mode materials of unpinned keys kept (256 MiB each).
const LIGHT_KEPT: usize = 2;
/// Pinned keys with a fast dataset (2 GiB each); others pinned stay light.
const FAST_KEPT: usize = 1;
/// Keys pinned at once (live sources' keys).
const PINNED_MAX: usize = 8;

/// Where a pinned key's fast dataset stands.
#[derive(Debug, Clone)]
enum Fast {
    /// Light mode is configured, or the key is past [`FAST_KEPT`].
    Off,
    Building {
        since: Instant,
        attempt: u32,
    },
    Ready(Arc<Material>),
    Failed {
        error: String,
        attempt: u32,
    },
}

#[derive(Debug)]
struct Pinned {
    key: Vec<u8>,
    light: Option<Arc<Material>>,
    fast: Fast,
}

/// One pinned key's state, for the API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    /// The key's first 8 bytes, hex.
    pub key: String,
    /// What its shares are hashed with now: `fast`, `light`, or `none` (not ready).
    pub hashing: &'static str,
    /// `ready`, `building` (with the seconds so far), `failed` (with the
    /// reason, retrying) or `off`.
    pub dataset: &'static str,
    pub building_secs: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Keys {
    flags: Flags,
    mode: Mode,
    /// Threads a dataset is built on.
    threads: usize,
    light: KeyCache,
    pinned: Mutex<Vec<Pinned>>,
    /// The newest pinning applied: pins run one at a time, and an older
    /// one that comes late changes nothing.
    applied: Mutex<u64>,
}

impl Keys {
    pub fn new(flags: Flags, mode: Mode, threads: usize) -> Self {
        Self {
            flags,
            mode,
            threads: threads.max(1),
            light: KeyCache::default(),
            pinned: Mutex::default(),
            applied: Mutex::new(0),
        }
    }

    /// The material to hash `key` with now: a pinned key's dataset once
    /// ready, else its light material; an unpinned key's light material
    /// (built here, on the caller's blocking thread, when missing).
    pub fn material(&self, key: &[u8]) -> Result<Arc<Material>, RxError> {
        if let Some(m) = self.pinned_material(key) {
            return Ok(m);
        }
        let (flags, key) = (self.flags, key.to_vec());
        self.light.get_or_build(&key, LIGHT_KEPT, || Material::build(flags, Mode::Light, &key, 1))
    }

    fn pinned_material(&self, key: &[u8]) -> Option<Arc<Material>> {
        let pinned = self.pinned.lock();
        let p = pinned.iter().find(|p| p.key == key)?;
        match &p.fast {
            Fast::Ready(m) => Some(m.clone()),
            _ => p.light.clone(),
        }
    }

    /// Makes `keys` the pinned ones (the live sources' keys, newest first):
    /// a new one's light material is built before this returns (call it on
    /// a blocking thread), its dataset is started; keys no longer live are
    /// let go (their memory is freed once running checks let go).
    /// `generation` orders pinnings asked for at once.
    pub fn pin(self: &Arc<Self>, generation: u64, keys: &[Vec<u8>]) {
        let mut applied = self.applied.lock();
        if generation < *applied {
            return;
        }
        *applied = generation;
        let keys: Vec<&Vec<u8>> = keys.iter().take(PINNED_MAX).collect();
        let fresh: Vec<Vec<u8>> = {
            let mut pinned = self.pinned.lock();
            pinned.retain(|p| keys.contains(&&p.key));
            keys.iter().filter(|k| !pinned.iter().any(|p| &&p.key == *k)).map(|k| (*k).clone()).collect()
        };
        for key in fresh {
            let light = match Material::build(self.flags, Mode::Light, &key, 1) {
                Ok(m) => Some(Arc::new(m)),
                Err(e) => {
                    tracing::error!(error = %e, "the verifier could not build a source key's cache; retried on its shares");
                    None
                }
            };
            let mut pinned = self.pinned.lock();
            let fast_slots = pinned.iter().filter(|p| !matches!(p.fast, Fast::Off)).count();
            let fast = if self.mode == Mode::Fast && fast_slots < FAST_KEPT {
                Fast::Building { since: Instant::now(), attempt: 1 }
            } else {
                Fast::Off
            };
            let build = matches!(fast, Fast::Building { .. });
            pinned.push(Pinned { key: key.clone(), light, fast });
            drop(pinned);
            if build {
                self.build_dataset(key);
            }
        }
        // A key pinned ahead of its switch (a next key) got no dataset while
        // the current key held the slot: once that key is let go, it does.
        let promoted: Vec<Vec<u8>> = {
            let mut pinned = self.pinned.lock();
            let mut fast_slots = pinned.iter().filter(|p| !matches!(p.fast, Fast::Off)).count();
            let mut out = Vec::new();
            for p in pinned.iter_mut() {
                if self.mode == Mode::Fast && fast_slots < FAST_KEPT && matches!(p.fast, Fast::Off) {
                    p.fast = Fast::Building { since: Instant::now(), attempt: 1 };
                    fast_slots += 1;
                    out.push(p.key.clone());
                }
            }
            out
        };
        for key in promoted {
            self.build_dataset(key);
        }
        // A pinned key whose cache could not be built tries again now.
        let missing: Vec<Vec<u8>> =
            self.pinned.lock().iter().filter(|p| p.light.is_none()).map(|p| p.key.clone()).collect();
        for key in missing {
            if let Ok(m) = Material::build(self.flags, Mode::Light, &key, 1)
                && let Some(p) = self.pinned.lock().iter_mut().find(|p| p.key == key)
            {
                p.light = Some(Arc::new(m));
            }
        }
    }

    /// Builds `key`'s dataset on a thread of its own until it is ready or
    /// the key is let go, retrying failures with the reconnect policy.
    fn build_dataset(self: &Arc<Self>, key: Vec<u8>) {
        let (keys, wanted) = (self.clone(), key.clone());
        let spawned = std::thread::Builder::new().name("verifier-dataset".into()).spawn(move || {
            let mut backoff = Policy::RECONNECT.start();
            loop {
                let started = Instant::now();
                let built = Material::build(keys.flags, Mode::Fast, &key, keys.threads);
                let mut pinned = keys.pinned.lock();
                let Some(p) = pinned.iter_mut().find(|p| p.key == key) else { return };
                match built {
                    Ok(m) => {
                        tracing::info!(secs = format!("{:.1}", started.elapsed().as_secs_f64()), "the verifier's dataset is ready: fast mode");
                        p.fast = Fast::Ready(Arc::new(m));
                        return;
                    }
                    Err(e) => {
                        let attempt = match p.fast {
                            Fast::Building { attempt, .. } | Fast::Failed { attempt, .. } => attempt,
                            _ => 1,
                        };
                        tracing::error!(error = %e, attempt, "the verifier could not build its dataset; verifying in light mode, retrying");
                        p.fast = Fast::Failed { error: e.to_string(), attempt };
                        drop(pinned);
                        let wait = backoff.next(None).unwrap_or(Duration::from_secs(2)).max(Duration::from_secs(1));
                        std::thread::sleep(wait);
                        let mut pinned = keys.pinned.lock();
                        let Some(p) = pinned.iter_mut().find(|p| p.key == key) else { return };
                        p.fast = Fast::Building { since: Instant::now(), attempt: attempt + 1 };
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the verifier's dataset thread; verifying in light mode");
            if let Some(p) = self.pinned.lock().iter_mut().find(|p| p.key == wanted) {
                p.fast = Fast::Failed { error: e.to_string(), attempt: 1 };
            }
        }
    }

    /// Whether some pinned key is hashed in fast mode now.
    pub fn fast_ready(&self) -> bool {
        self.pinned.lock().iter().any(|p| matches!(p.fast, Fast::Ready(_)))
    }

    pub fn states(&self) -> Vec<KeyState> {
        let now = Instant::now();
        self.pinned
            .lock()
            .iter()
            .map(|p| {
                let hashing = match (&p.fast, &p.light) {
                    (Fast::Ready(_), _) => "fast",
                    (_, Some(_)) => "light",
                    (_, None) => "none",
                };
                let (dataset, building_secs, error) = match &p.fast {
                    Fast::Off => ("off", None, None),
                    Fast::Ready(_) => ("ready", None, None),
                    Fast::Building { since, .. } => {
                        ("building", Some(now.saturating_duration_since(*since).as_secs_f64()), None)
                    }
                    Fast::Failed { error, .. } => ("failed", None, Some(error.clone())),
                };
                KeyState { key: encode_hex(&p.key[..p.key.len().min(8)]), hashing, dataset, building_secs, error }
            })
            .collect()
    }
}
