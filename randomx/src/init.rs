//! A dataset initialised on every thread, each over its own range of items:
//! by [`crate::superscalar`] (many items at once) once its first items
//! proved equal to RandomX's, else by RandomX's `randomx_init_dataset`.
#![allow(unsafe_code)]

use std::ffi::c_ulong;
use std::time::Instant;

use crate::engine::{Cache, dataset_items};
use crate::ffi;
use crate::superscalar::{self, Items, jit};

/// Items compared with RandomX's before the rest are computed here: two
/// blocks of lanes, every program and hundreds of cache lines.
const CHECKED_ITEMS: usize = 2 * superscalar::exec::LANES;

/// `FAENA_RANDOMX_DATASET_INIT`: `avx2` (the AVX2 code on a CPU that has
/// AVX-512), `interpreted` or `randomx` instead of the widest compiled
/// programs, for comparing them (scripts/bench-dataset.sh).
const INIT_ENV: &str = "FAENA_RANDOMX_DATASET_INIT";

struct SendPtr<T>(*mut T);
// SAFETY: used only to hand disjoint dataset ranges to scoped init threads.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// The first `count` items of `cache`'s dataset, by RandomX.
pub(crate) fn randomx_items(cache: &Cache, count: usize) -> Vec<u8> {
    let mut out = vec![0u8; count * superscalar::exec::ITEM];
    let mut header = ffi::DatasetHeader::new(out.as_mut_ptr());
    // SAFETY: RandomX writes items [0, count) at the header's memory, which
    // is `out`, exactly that long; the cache is initialised and read-only.
    unsafe { ffi::randomx_init_dataset(header.as_dataset(), cache.ptr(), 0, count as c_ulong) };
    out
}

/// `key`'s programs as `FAENA_RANDOMX_DATASET_INIT` asks, if the items
/// they give are RandomX's.
fn checked_programs(cache: &Cache, key: &[u8]) -> Option<Items> {
    match std::env::var(INIT_ENV).as_deref() {
        Ok("randomx") => None,
        Ok("interpreted") => checked(cache, Items::interpreted(key)),
        Ok("avx2") => match Items::compiled_for(key, jit::Isa::Avx2) {
            Some(items) => checked(cache, items),
            None => {
                tracing::warn!("{INIT_ENV}=avx2, but this CPU has no AVX2: the dataset is built by RandomX's code");
                None
            }
        },
        Ok("") | Err(_) => checked(cache, Items::new(key)),
        Ok(other) => {
            tracing::warn!(value = other, "{INIT_ENV} is avx2, interpreted or randomx; building the dataset as usual");
            checked(cache, Items::new(key))
        }
    }
}

/// `items`, if its first items from `cache` are RandomX's.
fn checked(cache: &Cache, items: Items) -> Option<Items> {
    let mut ours = vec![0u8; CHECKED_ITEMS * superscalar::exec::ITEM];
    items.compute(cache.memory(), 0, &mut ours);
    if ours != randomx_items(cache, CHECKED_ITEMS) {
        tracing::warn!("dataset items computed here differ from RandomX's; the dataset is built by RandomX's code");
        return None;
    }
    Some(items)
}

/// Initialises every item of `dataset` from `cache` on `threads` threads,
/// each over its own range of items; says how (`Items::how`, or `randomx`).
pub(crate) fn init_items(
    dataset: *mut ffi::randomx_dataset,
    cache: &Cache,
    key: &[u8],
    threads: usize,
) -> &'static str {
    let started = Instant::now();
    let items = dataset_items();
    let threads = threads.clamp(1, 256) as u64;
    let range = |t: u64| (items * t / threads, items * (t + 1) / threads);
    let Some(programs) = checked_programs(cache, key) else {
        let (dataset, cache_ptr) = (SendPtr(dataset), SendPtr(cache.ptr()));
        std::thread::scope(|s| {
            for t in 0..threads {
                let (start, end) = range(t);
                let (dataset, cache_ptr) = (&dataset, &cache_ptr);
                s.spawn(move || {
                    // SAFETY: each thread writes only items [start, end),
                    // disjoint from every other thread's; the cache is read-only.
                    unsafe {
                        ffi::randomx_init_dataset(dataset.0, cache_ptr.0, start as c_ulong, (end - start) as c_ulong);
                    }
                });
            }
        });
        tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "dataset initialised by RandomX");
        return "randomx";
    };
    let len = items as usize * superscalar::exec::ITEM;
    // SAFETY: a dataset's memory is `items` items long, and nothing reads or
    // writes it while it is initialised (no VM exists over it yet).
    let mut rest =
        unsafe { std::slice::from_raw_parts_mut(ffi::randomx_get_dataset_memory(dataset).cast::<u8>(), len) };
    let memory = cache.memory();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (start, end) = range(t);
            let (mine, others) = rest.split_at_mut((end - start) as usize * superscalar::exec::ITEM);
            rest = others;
            let programs = &programs;
            s.spawn(move || programs.compute(memory, start, mine));
        }
    });
    tracing::debug!(took_ms = started.elapsed().as_millis() as u64, how = programs.how(), "dataset initialised");
    programs.how()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Flags;

    #[test]
    fn programs_that_give_other_items_than_randomx_are_refused() {
        let cache = Cache::new(Flags::detect().with_large_pages(false), b"one key").expect("a cache");
        assert!(checked(&cache, Items::new(b"one key")).is_some());
        assert!(checked(&cache, Items::interpreted(b"one key")).is_some());
        assert!(checked(&cache, Items::new(b"another key")).is_none());
    }
}
