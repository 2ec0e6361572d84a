//! RandomX's C API (`randomx.h`), as compiled and linked by the `randomx-rs`
//! crate. randomx-rs keeps these bindings private and initialises a dataset
//! on one thread only; the engine needs `randomx_init_dataset` over item
//! ranges to use every core, and the `_first/_next` pipeline for mining.
//!
//! Only [`crate::engine`] calls these. Every pointer returned here is checked
//! for NULL (RandomX returns NULL when an allocation fails, e.g. when huge
//! pages were asked for and none are free).
#![allow(unsafe_code)]

use std::ffi::{c_int, c_ulong, c_void};

// Links randomx-rs, and with it the RandomX library (and libstdc++) it
// builds: nothing else of that crate is used, so rustc would drop it.
extern crate randomx_rs;

#[repr(C)]
pub struct randomx_cache {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct randomx_dataset {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct randomx_vm {
    _opaque: [u8; 0],
}

/// The layout of RandomX's `struct randomx_dataset` (dataset.hpp):
/// `{ uint8_t* memory; DatasetDeallocFunc* dealloc; }`. VMs and
/// `randomx_init_dataset` read only `memory`, so a dataset in memory
/// RandomX did not allocate (a shared mapping) is this header around it;
/// RandomX never frees it (`randomx_release_dataset` is not called on it).
#[repr(C)]
#[derive(Debug)]
pub struct DatasetHeader {
    memory: *mut u8,
    dealloc: *mut c_void,
}

impl DatasetHeader {
    pub fn new(memory: *mut u8) -> Self {
        Self { memory, dealloc: std::ptr::null_mut() }
    }

    pub fn as_dataset(&mut self) -> *mut randomx_dataset {
        std::ptr::from_mut(self).cast()
    }
}

pub const FLAG_LARGE_PAGES: c_int = 1;
pub const FLAG_HARD_AES: c_int = 2;
pub const FLAG_FULL_MEM: c_int = 4;
pub const FLAG_JIT: c_int = 8;
pub const HASH_SIZE: usize = 32;
/// Bytes per dataset item (`RANDOMX_DATASET_ITEM_SIZE`).
pub const DATASET_ITEM_SIZE: u64 = 64;
/// Bytes in a cache (`RANDOMX_ARGON_MEMORY` KiB, Monero's configuration).
pub const CACHE_SIZE: usize = 262_144 * 1024;

unsafe extern "C" {
    pub fn randomx_get_flags() -> c_int;
    pub fn randomx_alloc_cache(flags: c_int) -> *mut randomx_cache;
    pub fn randomx_init_cache(cache: *mut randomx_cache, key: *const c_void, key_size: usize);
    pub fn randomx_release_cache(cache: *mut randomx_cache);
    pub fn randomx_alloc_dataset(flags: c_int) -> *mut randomx_dataset;
    pub fn randomx_dataset_item_count() -> c_ulong;
    pub fn randomx_init_dataset(
        dataset: *mut randomx_dataset,
        cache: *mut randomx_cache,
        start: c_ulong,
        count: c_ulong,
    );
    pub fn randomx_get_dataset_memory(dataset: *mut randomx_dataset) -> *mut c_void;
    pub fn randomx_release_dataset(dataset: *mut randomx_dataset);
    pub fn randomx_create_vm(flags: c_int, cache: *mut randomx_cache, dataset: *mut randomx_dataset)
    -> *mut randomx_vm;
    pub fn randomx_destroy_vm(vm: *mut randomx_vm);
    pub fn randomx_calculate_hash(vm: *mut randomx_vm, input: *const c_void, size: usize, output: *mut c_void);
    pub fn randomx_calculate_hash_first(vm: *mut randomx_vm, input: *const c_void, size: usize);
    pub fn randomx_calculate_hash_next(vm: *mut randomx_vm, input: *const c_void, size: usize, output: *mut c_void);
    pub fn randomx_calculate_hash_last(vm: *mut randomx_vm, output: *mut c_void);
}
