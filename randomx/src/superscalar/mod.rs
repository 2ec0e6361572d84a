//! RandomX's dataset built here, from the specification: a key's eight
//! SuperscalarHash programs ([`program`]), compiled ([`jit`]) or not, run
//! over many items at once ([`exec`]). RandomX's own library still fills
//! the cache (Argon2d) and runs every hash; only the dataset items, 34
//! million of them, are computed here, several times faster than one at a
//! time.
//!
//! The engine checks the first items against RandomX's own before it uses
//! the rest (see `init::checked`), so a dataset is never built from a
//! program that differs from the library's.

pub mod exec;
pub mod jit;
pub mod program;

pub use exec::vector_width;
pub use program::Program;

/// The eight programs of a key (specification 7.2: one BlakeGenerator
/// seeded with the key, nonce 0).
pub fn programs(key: &[u8]) -> [Program; 8] {
    let mut rng = program::BlakeGenerator::new(key, 0);
    std::array::from_fn(|_| program::generate(&mut rng))
}

/// A key's programs, compiled where the CPU allows, ready to compute items.
#[derive(Debug)]
pub struct Items {
    programs: [Program; 8],
    compiled: Option<jit::Compiled>,
}

impl Items {
    /// Compiled for the widest vectors the CPU has (AVX-512, AVX2), else
    /// interpreted.
    pub fn new(key: &[u8]) -> Self {
        let programs = programs(key);
        let compiled = jit::Isa::detect().and_then(|isa| jit::compile(&programs, isa));
        Self { programs, compiled }
    }

    /// Compiled for `isa` (None: this CPU does not run it).
    pub fn compiled_for(key: &[u8], isa: jit::Isa) -> Option<Self> {
        let programs = programs(key);
        let compiled = Some(jit::compile(&programs, isa)?);
        Some(Self { programs, compiled })
    }

    /// Interpreted, whatever the CPU (for tests and comparisons).
    pub fn interpreted(key: &[u8]) -> Self {
        Self { programs: programs(key), compiled: None }
    }

    /// How items are computed: `avx512-jit`, `avx2-jit`, or the
    /// interpreter's vectors.
    pub fn how(&self) -> &'static str {
        self.compiled.as_ref().map_or_else(vector_width, |c| c.isa().name())
    }

    /// Writes items `first..` into `out` (a whole number of 64-byte items)
    /// from `cache`, the key's cache memory.
    pub fn compute(&self, cache: &[u8], first: u64, out: &mut [u8]) {
        exec::items(&self.programs, self.compiled.as_ref(), cache, first, out);
    }
}

#[cfg(test)]
mod tests;
