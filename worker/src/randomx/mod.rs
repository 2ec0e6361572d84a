//! RandomX on a worker: picks fast or light mode from the machine, keeps
//! per-key caches and datasets (bounded), initialises datasets on every
//! core, and hashes batches on all its threads.

pub use faena_randomx::{engine, mine};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use faena_randomx::{Flags, KeyCache, Material, Mode, RxError, ShareDir, Vm};

/// Dataset (2080 MiB) + cache (256 MiB) + margin for VMs and the process.
pub const FAST_MODE_BYTES: u64 = 3 * 1024 * 1024 * 1024;
/// Memory one key needs in fast mode, for sizing the key cache.
const FAST_KEY_BYTES: u64 = 2_400 * 1024 * 1024;
/// Huge pages worth asking for: dataset and cache.
const LARGE_PAGE_BYTES: u64 = (2080 + 256) * 1024 * 1024;

/// What the operator asked for (`FAENA_RANDOMX_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    Auto,
    Fast,
    Light,
}

/// The machine facts the choice depends on.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub memory_bytes: u64,
    pub huge_pages_free_bytes: u64,
    pub cores: usize,
}

#[derive(Debug)]
pub struct RandomX {
    flags: Flags,
    mode: Mode,
    /// Changed live (`worker.randomx_threads`): the next batch or unit uses it.
    threads: std::sync::atomic::AtomicUsize,
    /// Threads a dataset is initialised on: every core, whatever `threads` is.
    init_threads: usize,
    max_keys: usize,
    keys: KeyCache,
    /// The next key being (or last) built ahead ([`RandomX::prepare`]).
    preparing: parking_lot::Mutex<Option<Vec<u8>>>,
    /// Whether next keys are built ahead at all (`FAENA_RANDOMX_AHEAD`).
    ahead: bool,
    /// Where fast-mode datasets are shared with this machine's other
    /// workers (`FAENA_RANDOMX_SHARE_DIR`); None: built privately.
    share: Option<ShareDir>,
    initialising: watch::Sender<bool>,
    /// One all-thread RandomX operation at a time: two at once would only
    /// fight over the same cores (and caches) for the same total work.
    compute: Arc<tokio::sync::Semaphore>,
    /// Measured hashrate with every thread busy (H/s, f64 bits); 0 = not yet.
    hashrate: std::sync::atomic::AtomicU64,
}

impl RandomX {
    /// Decides mode, threads and huge pages, and says why in one log line.
    pub fn new(choice: ModeChoice, threads: Option<usize>, machine: Machine) -> Self {
        let (mode, why) = match choice {
            ModeChoice::Light => (Mode::Light, "FAENA_RANDOMX_MODE=light".to_owned()),
            ModeChoice::Fast => (Mode::Fast, "FAENA_RANDOMX_MODE=fast".to_owned()),
            ModeChoice::Auto if machine.memory_bytes >= FAST_MODE_BYTES => {
                (Mode::Fast, format!("{} MiB of memory allows the 2080 MiB dataset", machine.memory_bytes >> 20))
            }
            ModeChoice::Auto => (
                Mode::Light,
                format!(
                    "{} MiB of memory is under the {} MiB fast mode needs",
                    machine.memory_bytes >> 20,
                    FAST_MODE_BYTES >> 20
                ),
            ),
        };
        let threads = threads.unwrap_or(machine.cores).max(1);
        let want_pages = match mode {
            Mode::Fast => LARGE_PAGE_BYTES,
            Mode::Light => 256 * 1024 * 1024,
        };
        let large_pages = machine.huge_pages_free_bytes >= want_pages;
        let flags = Flags::detect().with_large_pages(large_pages);
        let max_keys = match mode {
            Mode::Fast => (machine.memory_bytes.saturating_sub(1 << 30) / FAST_KEY_BYTES).clamp(1, 2) as usize,
            Mode::Light => 4,
        };
        tracing::info!(
            mode = mode.as_str(),
            threads,
            jit = flags.jit(),
            hard_aes = flags.hard_aes(),
            huge_pages = large_pages,
            keys_kept = max_keys,
            "RandomX: {} mode because {why}; huge pages {}",
            mode.as_str(),
            if large_pages {
                "on".to_owned()
            } else {
                format!(
                    "off ({} MiB free, {} MiB wanted; see docs/mining.md)",
                    machine.huge_pages_free_bytes >> 20,
                    want_pages >> 20
                )
            }
        );
        Self {
            flags,
            mode,
            threads: std::sync::atomic::AtomicUsize::new(threads),
            init_threads: machine.cores.max(threads),
            max_keys,
            keys: KeyCache::default(),
            preparing: parking_lot::Mutex::new(None),
            ahead: true,
            share: None,
            initialising: watch::channel(false).0,
            compute: Arc::new(tokio::sync::Semaphore::new(1)),
            hashrate: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether next keys are built ahead of their switch ([`RandomX::prepare`]).
    pub fn ahead(self, ahead: bool) -> Self {
        Self { ahead, ..self }
    }

    /// Shares fast-mode datasets with this machine's other workers through
    /// `dir` (see [`ShareDir`]); light mode has nothing worth sharing.
    pub fn share(self, dir: &std::path::Path) -> Self {
        if self.mode != Mode::Fast {
            return self;
        }
        match ShareDir::open(dir) {
            Ok(share) => {
                tracing::info!(dir = %dir.display(), "RandomX: datasets shared with this machine's other workers");
                Self { share: Some(share), ..self }
            }
            Err(e) => {
                tracing::warn!(error = %e, "RandomX: cannot share datasets; each key's is built by this worker alone");
                self
            }
        }
    }

    /// Lets go of every key's material (the memory is freed once running
    /// work lets go): at a clean stop, so a shared dataset nobody else maps
    /// is removed rather than left in its directory.
    pub fn release(&self) {
        self.keys.shrink_to(0);
        self.preparing.lock().take();
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Threads a hashing batch or a mining unit runs on.
    pub fn threads(&self) -> usize {
        self.threads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Live change: batches and units that start from now on use `threads`.
    pub fn set_threads(&self, threads: usize) {
        self.threads.store(threads.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// This worker's RandomX speed (H/s on all threads), measured on real
    /// work and smoothed; 0 until it has hashed something.
    pub fn hashrate(&self) -> f64 {
        f64::from_bits(self.hashrate.load(Ordering::Relaxed))
    }

    /// Folds in `hashes` done in `elapsed` on `threads_used` threads,
    /// scaled to all threads (exponentially weighted, new work counts 30 %).
    pub fn record(&self, hashes: u64, elapsed: Duration, threads_used: usize) {
        if hashes == 0 || elapsed.is_zero() || threads_used == 0 {
            return;
        }
        let sample = hashes as f64 / elapsed.as_secs_f64() * self.threads() as f64 / threads_used as f64;
        let old = self.hashrate();
        let new = if old > 0.0 { 0.7 * old + 0.3 * sample } else { sample };
        self.hashrate.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Waits for the cores: held for the whole of a hashing batch or mining unit.
    pub async fn cores(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.compute.clone().acquire_owned().await.ok()
    }

    /// True while a dataset is being built (the worker reports `initialising`).
    pub fn initialising(&self) -> watch::Receiver<bool> {
        self.initialising.subscribe()
    }

    /// The material for `key`, building it (blocking) if it is not kept.
    pub fn material(&self, key: &[u8]) -> Result<Arc<Material>, RxError> {
        self.build(key, true)
    }

    /// Builds the material of the key the chain moves to next on a thread
    /// of its own, while the current key is mined, when there is room to
    /// keep both (fast mode: memory for two datasets); the switch then finds
    /// it ready and hashing does not stop. Without room it is built at the
    /// switch, as any new key is. Once per key; the worker stays `idle` or
    /// `busy`, not `initialising`, meanwhile. The thread building it, if one
    /// was started.
    pub fn prepare(self: &Arc<Self>, key: &[u8]) -> Option<std::thread::JoinHandle<()>> {
        if !self.ahead || self.keys.contains(key) {
            return None;
        }
        {
            let mut preparing = self.preparing.lock();
            if preparing.as_deref() == Some(key) {
                return None;
            }
            *preparing = Some(key.to_vec());
        }
        if self.max_keys < 2 {
            tracing::info!(
                "RandomX: the next key is known but there is no memory for a second dataset; it is built at the switch"
            );
            return None;
        }
        let (this, key) = (self.clone(), key.to_vec());
        let spawned = std::thread::Builder::new().name("faena-rx-next".into()).spawn(move || {
            tracing::info!(mode = this.mode.as_str(), "RandomX: building the next key's material ahead of the switch");
            if let Err(e) = this.build(&key, false) {
                tracing::warn!(error = %e, "RandomX: the next key could not be built ahead; it is built at the switch");
                this.preparing.lock().take();
            }
        });
        match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "RandomX: no thread to build the next key ahead");
                self.preparing.lock().take();
                None
            }
        }
    }

    /// The material for `key`, built if it is not kept; `announce`: the
    /// worker says `initialising` meanwhile (not for a key built ahead).
    fn build(&self, key: &[u8], announce: bool) -> Result<Arc<Material>, RxError> {
        self.keys.get_or_build(key, self.max_keys, || {
            // Free the oldest key first: two datasets may not fit.
            self.keys.shrink_to(self.max_keys - 1);
            let started = Instant::now();
            let _ = self.initialising.send(announce && self.mode == Mode::Fast);
            let built = self.build_material(key);
            let _ = self.initialising.send(false);
            match built {
                Ok(m) => {
                    let ms = started.elapsed().as_millis() as u64;
                    // Once: whether huge pages back it is read from /proc/self/smaps.
                    let shared = m.shared();
                    match shared {
                        Some(s) if !s.built => tracing::info!(
                            ms,
                            huge_pages = s.huge_pages,
                            ahead = !announce,
                            "RandomX key attached: its dataset was built by another worker of this machine"
                        ),
                        shared => tracing::info!(
                            mode = self.mode.as_str(),
                            threads = self.init_threads,
                            ms,
                            ahead = !announce,
                            shared = shared.is_some(),
                            huge_pages = shared.map(|s| s.huge_pages),
                            dataset = m.dataset_built_by(),
                            "RandomX key initialised"
                        ),
                    }
                    if shared_without_huge_pages(shared) {
                        tracing::warn!(
                            "RandomX: the shared dataset has no huge pages (hashing is slower): mount its directory as a tmpfs with huge=within_size, see docs/mining.md"
                        );
                    }
                    Ok(m)
                }
                Err(e) if self.mode == Mode::Fast => {
                    tracing::warn!(error = %e, "no memory for a fast-mode dataset; this key runs in light mode");
                    Material::build(self.flags, Mode::Light, key, self.threads())
                }
                Err(e) => Err(e),
            }
        })
    }

    /// A fast-mode dataset through the share directory when there is one
    /// (falling back to this worker's own when sharing fails), else built here.
    fn build_material(&self, key: &[u8]) -> Result<Material, RxError> {
        if let (Some(share), Mode::Fast) = (&self.share, self.mode) {
            match Material::build_shared(self.flags, key, self.init_threads, share) {
                Ok(m) => return Ok(m),
                Err(faena_randomx::ShareError::Build(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "RandomX: this key's dataset is not shared; building this worker's own")
                }
            }
        }
        Material::build(self.flags, self.mode, key, self.init_threads)
    }

    /// Hashes `inputs` in order on up to `threads` threads (blocking).
    /// `progress(done)` is called about once a second.
    pub fn hash_batch(
        &self,
        key: &[u8],
        inputs: &[Vec<u8>],
        stop: &AtomicBool,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Vec<[u8; 32]>, RxError> {
        let material = self.material(key)?;
        let threads = self.threads().min(inputs.len()).max(1);
        let started = Instant::now();
        let chunk = inputs.len().div_ceil(threads);
        let counter = faena_randomx::Progress::new(progress);
        let results: Vec<Result<Vec<[u8; 32]>, RxError>> = std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .chunks(chunk)
                .map(|part| {
                    let (material, counter) = (&material, &counter);
                    s.spawn(move || {
                        let mut vm = material.vm()?;
                        let mut out = Vec::with_capacity(part.len());
                        for input in part {
                            if stop.load(Ordering::Relaxed) {
                                return Err(RxError::Cancelled);
                            }
                            out.push(vm.hash(input));
                            counter.add(1);
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(Err(RxError::Alloc("hashing thread")))).collect()
        });
        let mut hashes = Vec::with_capacity(inputs.len());
        for part in results {
            hashes.extend(part?);
        }
        self.record(hashes.len() as u64, started.elapsed(), threads);
        Ok(hashes)
    }
}

/// Whether to warn: a dataset shared without huge pages hashes markedly
/// slower than a private one with transparent huge pages.
fn shared_without_huge_pages(shared: Option<faena_randomx::Shared>) -> bool {
    shared.is_some_and(|s| s.built && !s.huge_pages)
}

/// `GLIBC_TUNABLES` with `glibc.malloc.hugetlb=1` added, for a one-time
/// re-exec ([`faena_common::lifecycle::reexec_with`]) — None when it is set
/// already, the kernel has transparent huge pages off, or
/// `FAENA_RANDOMX_THP=off`. glibc honours that tunable only at exec time;
/// with it, the memory RandomX allocates through malloc (cache, VM
/// scratchpads, dataset) is backed by transparent huge pages, worth ~40 %
/// hashrate and a faster dataset build without any huge-page reservation.
pub fn transparent_huge_pages_env() -> Option<(&'static str, String)> {
    const TUNABLE: &str = "glibc.malloc.hugetlb=1";
    if std::env::var("FAENA_RANDOMX_THP").is_ok_and(|v| v == "off") {
        return None;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("glibc.malloc.hugetlb") {
        return None;
    }
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") {
        return None;
    }
    let value = if current.is_empty() { TUNABLE.to_owned() } else { format!("{current}:{TUNABLE}") };
    Some(("GLIBC_TUNABLES", value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashrate_is_scaled_to_all_threads_and_smoothed() {
        let machine = Machine { memory_bytes: 1 << 30, huge_pages_free_bytes: 0, cores: 2 };
        let rx = RandomX::new(ModeChoice::Auto, Some(2), machine);
        assert_eq!(rx.mode(), Mode::Light, "1 GiB is too little for fast mode");
        assert_eq!(rx.hashrate(), 0.0);
        rx.record(30, Duration::from_secs(1), 1);
        assert_eq!(rx.hashrate(), 60.0);
        rx.record(80, Duration::from_secs(1), 2);
        assert!((rx.hashrate() - (0.7 * 60.0 + 0.3 * 80.0)).abs() < 1e-9);
        rx.record(0, Duration::from_secs(1), 2);
        rx.record(5, Duration::ZERO, 2);
        assert!((rx.hashrate() - 66.0).abs() < 1e-9);
    }

    #[test]
    fn the_next_key_is_built_ahead_beside_the_current_one_where_there_is_room() {
        let machine = Machine { memory_bytes: 1 << 30, huge_pages_free_bytes: 0, cores: 1 };
        let rx = Arc::new(RandomX::new(ModeChoice::Light, Some(1), machine));
        let current = rx.material(b"current").expect("material");
        let mut initialising = rx.initialising();
        rx.prepare(b"next").expect("a thread builds it").join().expect("built");
        assert!(rx.keys.contains(b"next") && rx.keys.contains(b"current"), "both kept");
        assert!(!initialising.has_changed().unwrap_or(true) || !*initialising.borrow_and_update());
        assert!(rx.prepare(b"next").is_none(), "once");
        assert!(Arc::ptr_eq(&rx.material(b"current").expect("kept"), &current));
        // Fast mode with memory for one dataset: built at the switch, not ahead.
        let machine = Machine { memory_bytes: 4 << 30, huge_pages_free_bytes: 0, cores: 1 };
        let one = Arc::new(RandomX::new(ModeChoice::Fast, Some(1), machine));
        assert!(one.prepare(b"next").is_none() && !one.keys.contains(b"next"));
    }
}
