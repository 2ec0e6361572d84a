//! Safe RandomX: caches and datasets per key, reused across jobs and shared
//! by many VMs, with the dataset initialised on every thread.
//!
//! Safety rests on three invariants, each upheld here:
//! - a cache or dataset is written only while it is being initialised, by
//!   this module, before any VM can see it; afterwards it is read-only, so
//!   sharing it between threads (`Send + Sync`) is sound. Dataset
//!   initialisation writes disjoint item ranges from each thread, as
//!   RandomX's own benchmark does;
//! - a VM is used by one thread at a time (`Vm` is `Send`, not `Sync`, and
//!   its methods take `&mut self`);
//! - a VM never outlives the cache and dataset it reads: it holds an `Arc`
//!   of its [`Material`], and pooled VMs are destroyed before the material.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::ffi;
use crate::share::{self, ShareDir, ShareError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    #[error("RandomX could not allocate {0} (out of memory?)")]
    Alloc(&'static str),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Input(String),
}

/// Full dataset (~2080 MiB, fastest) or cache only (256 MiB, ~8x slower).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Fast,
    Light,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Fast, Mode::Light];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Light => "light",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// RandomX flags: what the CPU offers (JIT, hardware AES, Argon2 SIMD) plus
/// huge pages when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(c_int);

impl Flags {
    pub fn detect() -> Self {
        // SAFETY: a pure query of CPU features.
        Self(unsafe { ffi::randomx_get_flags() })
    }

    pub fn jit(self) -> bool {
        self.0 & ffi::FLAG_JIT != 0
    }

    pub fn hard_aes(self) -> bool {
        self.0 & ffi::FLAG_HARD_AES != 0
    }

    pub fn large_pages(self) -> bool {
        self.0 & ffi::FLAG_LARGE_PAGES != 0
    }

    pub fn with_large_pages(self, on: bool) -> Self {
        if on { Self(self.0 | ffi::FLAG_LARGE_PAGES) } else { Self(self.0 & !ffi::FLAG_LARGE_PAGES) }
    }

    fn full_mem(self) -> Self {
        Self(self.0 | ffi::FLAG_FULL_MEM)
    }
}

/// Allocates with huge pages when the flags ask for them, else (or when that
/// fails) with normal pages: RandomX returns NULL rather than failing later.
fn alloc<T>(flags: Flags, what: &'static str, f: impl Fn(c_int) -> *mut T) -> Result<(NonNull<T>, bool), RxError> {
    if flags.large_pages() {
        if let Some(p) = NonNull::new(f(flags.0)) {
            return Ok((p, true));
        }
        tracing::warn!(what, "huge pages requested but not available; using normal pages");
    }
    NonNull::new(f(flags.with_large_pages(false).0)).map(|p| (p, false)).ok_or(RxError::Alloc(what))
}

pub(crate) struct Cache(NonNull<ffi::randomx_cache>);
// SAFETY: read-only after `Cache::new` returns (see module docs).
unsafe impl Send for Cache {}
unsafe impl Sync for Cache {}

impl Cache {
    pub(crate) fn new(flags: Flags, key: &[u8]) -> Result<Self, RxError> {
        // SAFETY: allocation only; NULL is handled by `alloc`.
        let (ptr, _) = alloc(flags, "cache", |f| unsafe { ffi::randomx_alloc_cache(f) })?;
        // SAFETY: `ptr` is a fresh cache nobody else sees; `key` is a valid slice.
        unsafe { ffi::randomx_init_cache(ptr.as_ptr(), key.as_ptr().cast::<c_void>(), key.len()) };
        Ok(Self(ptr))
    }

    pub(crate) fn ptr(&self) -> *mut ffi::randomx_cache {
        self.0.as_ptr()
    }

    /// The cache's memory, as Argon2d filled it.
    pub(crate) fn memory(&self) -> &[u8] {
        // SAFETY: RandomX 1.2.1's `struct randomx_cache` (dataset.hpp) begins
        // with `uint8_t* memory`, `RANDOMX_ARGON_MEMORY` KiB long once
        // `randomx_init_cache` filled it; read-only from then on. Every item
        // built from it is checked against RandomX's own before use
        // (`init::checked`), which a different layout would fail.
        unsafe {
            let memory = *self.0.as_ptr().cast::<*const u8>();
            std::slice::from_raw_parts(memory, ffi::CACHE_SIZE)
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: no VM uses it any more (see `Material`'s drop order).
        unsafe { ffi::randomx_release_cache(self.0.as_ptr()) }
    }
}

/// A dataset: allocated by RandomX for this process, or mapped from a
/// [`ShareDir`] that the workers of one machine share.
enum Dataset {
    Own(NonNull<ffi::randomx_dataset>),
    /// RandomX's `randomx_dataset` is `{ uint8_t* memory; dealloc }` and VMs
    /// read only `memory`: `header` points it at the shared mapping (checked
    /// with `randomx_get_dataset_memory`). Boxed: VMs keep its address.
    Shared {
        header: Box<ffi::DatasetHeader>,
        region: share::Region,
    },
}
// SAFETY: read-only after it is built (see module docs).
unsafe impl Send for Dataset {}
unsafe impl Sync for Dataset {}

/// Items in a dataset (a constant of the library).
pub(crate) fn dataset_items() -> u64 {
    // SAFETY: a constant of the library.
    unsafe { ffi::randomx_dataset_item_count() as u64 }
}

impl Dataset {
    /// Allocates the dataset and initialises it from `cache` on `threads`
    /// threads; with how its items were computed ([`crate::init::init_items`]).
    fn new(flags: Flags, cache: &Cache, key: &[u8], threads: usize) -> Result<(Self, &'static str), RxError> {
        // SAFETY: allocation only; NULL is handled by `alloc`.
        let (ptr, huge) = alloc(flags, "dataset", |f| unsafe { ffi::randomx_alloc_dataset(f) })?;
        if !huge {
            // Without reserved huge pages, ask for transparent ones before the
            // pages are touched: dataset reads are random over 2 GiB, so TLB
            // misses cost more than anything else. Advisory; failure is harmless.
            // madvise needs a page-aligned start and RandomX's allocation is
            // only cache-line aligned: advise the 2 MiB-aligned inside of it.
            const HUGE: usize = 2 * 1024 * 1024;
            // SAFETY: a getter of the dataset just allocated.
            let mem = unsafe { ffi::randomx_get_dataset_memory(ptr.as_ptr()) } as usize;
            let end = mem + (dataset_items() * ffi::DATASET_ITEM_SIZE) as usize;
            let start = mem.next_multiple_of(HUGE);
            let len = (end - start) / HUGE * HUGE;
            // SAFETY: [start, start+len) lies within the dataset's memory, which
            // nobody else sees yet; madvise only changes how it is backed.
            let rc = unsafe { libc::madvise(start as *mut c_void, len, libc::MADV_HUGEPAGE) };
            if rc != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "madvise(MADV_HUGEPAGE) on the dataset failed");
            }
        }
        let how = crate::init::init_items(ptr.as_ptr(), cache, key, threads);
        Ok((Self::Own(ptr), how))
    }

    /// Maps `key`'s dataset from `share`, building it there first if no
    /// worker of this machine has (the cache is made only then).
    /// How its items were computed is known only where this process built it.
    fn map_shared(
        flags: Flags,
        key: &[u8],
        threads: usize,
        share: &ShareDir,
    ) -> Result<(Self, Option<&'static str>), ShareError> {
        let name = ShareDir::name_of(key)?;
        let size = (dataset_items() * ffi::DATASET_ITEM_SIZE) as usize;
        let mut how = None;
        let region = share.attach_or_build(&name, size, |memory| {
            let cache = Cache::new(flags, key)?;
            let mut header = ffi::DatasetHeader::new(memory.as_ptr());
            how = Some(crate::init::init_items(header.as_dataset(), &cache, key, threads));
            Ok(())
        })?;
        let mut header = Box::new(ffi::DatasetHeader::new(region.ptr().as_ptr()));
        // SAFETY: RandomX's getter reads the first field of the struct it is
        // given; that it returns our pointer proves the layout assumed here.
        let seen = unsafe { ffi::randomx_get_dataset_memory(header.as_dataset()) };
        if seen.cast::<u8>() != region.ptr().as_ptr() {
            return Err(
                RxError::Input("this RandomX's dataset layout is not the one shared datasets assume".into()).into()
            );
        }
        Ok((Self::Shared { header, region }, how))
    }

    fn ptr(&self) -> *mut ffi::randomx_dataset {
        match self {
            Self::Own(p) => p.as_ptr(),
            Self::Shared { header, .. } => std::ptr::from_ref::<ffi::DatasetHeader>(header).cast_mut().cast(),
        }
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        if let Self::Own(p) = self {
            // SAFETY: no VM uses it any more (see `Material`'s drop order).
            unsafe { ffi::randomx_release_dataset(p.as_ptr()) }
        }
        // A shared one is unmapped by its region (after this body).
    }
}

struct RawVm(NonNull<ffi::randomx_vm>);
// SAFETY: a VM may move between threads; `Vm` keeps it to one at a time.
unsafe impl Send for RawVm {}

/// How a [`Material`]'s shared dataset was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    pub built: bool,
    pub huge_pages: bool,
}

/// Everything RandomX needs for one key: its cache, its dataset in fast
/// mode, and a pool of idle VMs over them.
pub struct Material {
    key: Vec<u8>,
    flags: Flags,
    mode: Mode,
    /// Light mode's VMs read the cache; in fast mode it is freed once the
    /// dataset is built (256 MiB back), as RandomX's own tools do.
    cache: Option<Cache>,
    dataset: Option<Dataset>,
    /// How this process computed the dataset's items, where it did.
    built_by: Option<&'static str>,
    idle: Mutex<Vec<RawVm>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").field("mode", &self.mode).field("key_len", &self.key.len()).finish_non_exhaustive()
    }
}

impl Drop for Material {
    fn drop(&mut self) {
        for vm in self.idle.get_mut().drain(..) {
            // SAFETY: idle VMs are owned by the pool; cache and dataset are
            // dropped only after this body, as fields.
            unsafe { ffi::randomx_destroy_vm(vm.0.as_ptr()) }
        }
    }
}

impl Material {
    pub fn build(flags: Flags, mode: Mode, key: &[u8], threads: usize) -> Result<Self, RxError> {
        let cache = Cache::new(flags, key)?;
        let (cache, dataset, built_by) = match mode {
            Mode::Fast => {
                let (dataset, how) = Dataset::new(flags, &cache, key, threads)?;
                (None, Some(dataset), Some(how))
            }
            Mode::Light => (Some(cache), None, None),
        };
        Ok(Self { key: key.to_vec(), flags, mode, cache, dataset, built_by, idle: Mutex::new(Vec::new()) })
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Fast mode with the dataset shared by the workers of this machine
    /// through `share`: mapped if one of them built it, else built there.
    pub fn build_shared(flags: Flags, key: &[u8], threads: usize, share: &ShareDir) -> Result<Self, ShareError> {
        let (dataset, built_by) = Dataset::map_shared(flags, key, threads, share)?;
        let dataset = Some(dataset);
        Ok(Self {
            key: key.to_vec(),
            flags,
            mode: Mode::Fast,
            cache: None,
            dataset,
            built_by,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// How this process computed the dataset's items (`avx512-jit`,
    /// `avx2-jit`, an interpreter's vectors, or `randomx` for RandomX's own
    /// code); None in light mode or for a shared dataset another built.
    pub fn dataset_built_by(&self) -> Option<&'static str> {
        self.built_by
    }

    /// For a shared dataset: whether this process built it (else it mapped
    /// another's) and whether huge pages back it. None when not shared.
    pub fn shared(&self) -> Option<Shared> {
        match &self.dataset {
            Some(Dataset::Shared { region, .. }) => {
                Some(Shared { built: region.built, huge_pages: region.huge_pages() })
            }
            _ => None,
        }
    }

    /// A VM over this material: an idle one from the pool, or a new one.
    pub fn vm(self: &Arc<Self>) -> Result<Vm, RxError> {
        if let Some(raw) = self.idle.lock().pop() {
            return Ok(Vm { raw: Some(raw), material: self.clone() });
        }
        let (flags, dataset) = match &self.dataset {
            Some(d) => (self.flags.full_mem(), d.ptr()),
            None => (self.flags, std::ptr::null_mut()),
        };
        let cache = self.cache.as_ref().map_or(std::ptr::null_mut(), |c| c.0.as_ptr());
        // SAFETY: cache and dataset are initialised and outlive the VM (it holds
        // an Arc of this material); NULL is handled by `alloc`.
        let (ptr, _) = alloc(flags, "VM", |f| unsafe { ffi::randomx_create_vm(f, cache, dataset) })?;
        Ok(Vm { raw: Some(RawVm(ptr)), material: self.clone() })
    }
}

/// One RandomX VM; back to its material's pool when dropped.
pub struct Vm {
    raw: Option<RawVm>,
    material: Arc<Material>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("material", &self.material).finish()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.material.idle.lock().push(raw);
        }
    }
}

impl Vm {
    fn ptr(&self) -> *mut ffi::randomx_vm {
        self.raw.as_ref().map_or(std::ptr::null_mut(), |r| r.0.as_ptr())
    }

    pub fn hash(&mut self, input: &[u8]) -> [u8; 32] {
        let mut out = [0u8; ffi::HASH_SIZE];
        // SAFETY: a valid VM used by this thread only; valid input and output buffers.
        unsafe {
            ffi::randomx_calculate_hash(self.ptr(), input.as_ptr().cast(), input.len(), out.as_mut_ptr().cast());
        }
        out
    }

    /// Hashes `count` inputs made by `make(i, buf)`, pipelined as RandomX's
    /// benchmark and miners do (`_first`/`_next`/`_last`): the next input's
    /// program is prepared while the previous hash completes. `sink(i, hash)`
    /// sees every hash in order; it returns false to stop early.
    pub fn hash_pipelined(
        &mut self,
        count: u64,
        buf: &mut Vec<u8>,
        mut make: impl FnMut(u64, &mut Vec<u8>),
        mut sink: impl FnMut(u64, &[u8; 32]) -> bool,
        stop: &AtomicBool,
    ) -> u64 {
        if count == 0 {
            return 0;
        }
        let vm = self.ptr();
        let mut out = [0u8; ffi::HASH_SIZE];
        make(0, buf);
        // SAFETY (all calls below): a valid VM used by this thread only; `buf`
        // and `out` are valid for the lengths given.
        unsafe { ffi::randomx_calculate_hash_first(vm, buf.as_ptr().cast(), buf.len()) };
        let mut done = 0;
        for i in 1..count {
            make(i, buf);
            unsafe { ffi::randomx_calculate_hash_next(vm, buf.as_ptr().cast(), buf.len(), out.as_mut_ptr().cast()) };
            done += 1;
            if !sink(i - 1, &out) || stop.load(Ordering::Relaxed) {
                unsafe { ffi::randomx_calculate_hash_last(vm, out.as_mut_ptr().cast()) };
                return done;
            }
        }
        unsafe { ffi::randomx_calculate_hash_last(vm, out.as_mut_ptr().cast()) };
        sink(count - 1, &out);
        done + 1
    }
}

/// Keeps the materials of the most recently used keys, within a bound.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<VecDeque<Arc<Material>>>,
    /// Serialises building: a dataset costs 2 GiB and all cores.
    building: Mutex<()>,
}

impl KeyCache {
    pub fn get_or_build(
        &self,
        key: &[u8],
        max: usize,
        build: impl FnOnce() -> Result<Material, RxError>,
    ) -> Result<Arc<Material>, RxError> {
        if let Some(m) = self.lookup(key) {
            return Ok(m);
        }
        let _guard = self.building.lock();
        if let Some(m) = self.lookup(key) {
            return Ok(m);
        }
        let material = Arc::new(build()?);
        let mut entries = self.entries.lock();
        entries.push_front(material.clone());
        entries.truncate(max.max(1));
        Ok(material)
    }

    /// Makes room before building: drops the least recently used materials
    /// beyond `keep` (their memory is freed once running jobs let go).
    pub fn shrink_to(&self, keep: usize) {
        self.entries.lock().truncate(keep);
    }

    /// Whether `key`'s material is kept (its place in the order unchanged).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.lock().iter().any(|m| m.key() == key)
    }

    fn lookup(&self, key: &[u8]) -> Option<Arc<Material>> {
        let mut entries = self.entries.lock();
        let pos = entries.iter().position(|m| m.key() == key)?;
        let m = entries.remove(pos)?;
        entries.push_front(m.clone());
        Some(m)
    }
}
