//! RandomX for Faena, shared by the worker (hashing, mining) and the master
//! (verifying shares): keys' caches and datasets shared by many VMs, the
//! dataset initialised on every thread, the pipelined mining loop, and the
//! share rule.
//!
//! It calls RandomX's C API directly (see [`ffi`]): `randomx-rs` compiles
//! and links the library but keeps its bindings private and initialises a
//! dataset on one thread only. The dataset's items are computed here
//! ([`superscalar`], from the RandomX specification, compiled to AVX-512 or
//! AVX2 where the CPU has it), after their first items proved equal to RandomX's.

pub mod engine;
mod ffi;
mod init;
pub mod mine;
mod progress;
pub mod share;
pub mod superscalar;

pub use engine::{Flags, KeyCache, Material, Mode, RxError, Shared, Vm};
pub use progress::Progress;
pub use share::{ShareDir, ShareError};
