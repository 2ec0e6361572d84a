//! Dataset items computed many at a time (RandomX specification, 7.3).
//!
//! RandomX's own code computes one item at a time: eight programs, each
//! about 170 cycles of dependent instructions, and between them a cache
//! line whose address the program before it chose. A core spends that time
//! waiting on latencies. Here a block of [`LANES`] items is worked on
//! together, one array of lanes per register. The compiled programs
//! ([`super::jit`]) run it in groups of 16 items, and the cache lines a
//! group mixes in next are prefetched as soon as its program ends, to
//! arrive while the other groups run. Without them, the interpreter puts
//! all 64 lanes through each instruction, a loop the compiler turns into
//! vector code, dispatching each instruction once for the block.
#![allow(unsafe_code)]

use super::jit::{self, Compiled};
use super::program::{Op, Program};

/// Items computed together. 8 registers × 64 lanes × 8 bytes = 4 KiB, well
/// inside a core's L1 cache.
pub const LANES: usize = 64;
type Lanes = [u64; LANES];

/// Bytes in a dataset item and in a cache line.
pub const ITEM: usize = 64;

const MUL0: u64 = 6_364_136_223_846_793_005;
const XORS: [u64; 7] = [
    9_298_411_001_130_361_340,
    12_065_312_585_734_608_966,
    9_306_329_213_124_626_780,
    5_281_919_268_842_080_866,
    10_536_153_434_571_861_004,
    3_398_623_926_847_679_864,
    9_549_104_520_008_361_294,
];

/// Applies `f` lane by lane: `dst = f(dst, src)`. Destination and source
/// differ in every two-register instruction but the high multiplies; when
/// they are one register, the source is read from a copy.
#[inline(always)]
fn binary(r: &mut [Lanes; 8], dst: u8, src: u8, f: impl Fn(u64, u64) -> u64) {
    let (d, s) = (usize::from(dst) & 7, usize::from(src) & 7);
    let (d, s): (&mut Lanes, &Lanes) = match d.cmp(&s) {
        std::cmp::Ordering::Less => {
            let (a, b) = r.split_at_mut(s);
            (&mut a[d], &b[0])
        }
        std::cmp::Ordering::Greater => {
            let (a, b) = r.split_at_mut(d);
            (&mut b[0], &a[s])
        }
        std::cmp::Ordering::Equal => {
            let copy = r[s];
            for (x, y) in r[d].iter_mut().zip(copy.iter()) {
                *x = f(*x, *y);
            }
            return;
        }
    };
    for (x, y) in d.iter_mut().zip(s.iter()) {
        *x = f(*x, *y);
    }
}

#[inline(always)]
fn unary(r: &mut [Lanes; 8], dst: u8, f: impl Fn(u64) -> u64) {
    for x in &mut r[usize::from(dst) & 7] {
        *x = f(*x);
    }
}

#[inline(always)]
fn run(ops: &[Op], r: &mut [Lanes; 8]) {
    for op in ops {
        match *op {
            Op::Sub { dst, src } => binary(r, dst, src, u64::wrapping_sub),
            Op::Xor { dst, src } => binary(r, dst, src, |a, b| a ^ b),
            Op::AddShift { dst, src, shift } => binary(r, dst, src, |a, b| a.wrapping_add(b << shift)),
            Op::Mul { dst, src } => binary(r, dst, src, u64::wrapping_mul),
            Op::Ror { dst, count } => unary(r, dst, |a| a.rotate_right(count)),
            Op::AddConst { dst, value } => unary(r, dst, |a| a.wrapping_add(value)),
            Op::XorConst { dst, value } => unary(r, dst, |a| a ^ value),
            Op::MulHigh { dst, src } => {
                binary(r, dst, src, |a, b| ((u128::from(a) * u128::from(b)) >> 64) as u64);
            }
            Op::MulHighSigned { dst, src } => {
                binary(r, dst, src, |a, b| ((i128::from(a as i64) * i128::from(b as i64)) >> 64) as u64)
            }
            Op::MulConst { dst, value } => unary(r, dst, |a| a.wrapping_mul(value)),
        }
    }
}

#[inline(always)]
fn prefetch(line: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = line;
}

/// The cache line a register value picks.
#[inline(always)]
fn line(cache: &[u8], value: u64) -> &[u8] {
    let lines = cache.len() / ITEM;
    // The cache's line count is a power of two (checked by the caller).
    let at = (value as usize & (lines - 1)) * ITEM;
    &cache[at..at + ITEM]
}

/// XORs into the registers of `lanes` the cache lines their `address` picks.
#[inline(always)]
fn mix(r: &mut [Lanes; 8], words: &mut [Lanes; 8], cache: &[u8], address: &Lanes, lanes: std::ops::Range<usize>) {
    // The lines go to their own arrays (`words`, reused) first, then into
    // the registers an array at a time: a word read out of the middle of
    // the vector stores that just wrote the registers would wait for them.
    for lane in lanes.clone() {
        for (q, word) in line(cache, address[lane]).chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            words[q][lane] = u64::from_le_bytes(b);
        }
    }
    for (reg, words) in r.iter_mut().zip(words.iter()) {
        for (x, y) in reg[lanes.clone()].iter_mut().zip(&words[lanes.clone()]) {
            *x ^= y;
        }
    }
}

/// Computes up to [`LANES`] items from `first` into `out` (64 bytes each),
/// by the compiled programs where there are some.
#[inline(always)]
fn block(programs: &[Program; 8], compiled: Option<&Compiled>, cache: &[u8], first: u64, out: &mut [u8]) {
    let mut r = [[0u64; LANES]; 8];
    let mut address = [0u64; LANES];
    for lane in 0..LANES {
        let item = first + lane as u64;
        let r0 = item.wrapping_add(1).wrapping_mul(MUL0);
        r[0][lane] = r0;
        for (q, x) in XORS.iter().enumerate() {
            r[q + 1][lane] = r0 ^ x;
        }
        address[lane] = item;
    }
    for &a in &address {
        prefetch(line(cache, a));
    }
    // Compiled programs run 16 items at a time, group after group: the
    // lines a group mixes in next are prefetched as soon as its program is
    // done, and arrive while the other three groups run theirs.
    let group = if compiled.is_some() { jit::ITEMS } else { LANES };
    let mut words = [[0u64; LANES]; 8];
    for (p, program) in programs.iter().enumerate() {
        for start in (0..LANES).step_by(group) {
            let lanes = start..start + group;
            match compiled {
                Some(c) => c.run(p, &mut r, start),
                None => run(&program.ops, &mut r),
            }
            mix(&mut r, &mut words, cache, &address, lanes.clone());
            let next = &mut address[lanes.clone()];
            next.copy_from_slice(&r[program.address_register & 7][lanes]);
            if p + 1 < programs.len() {
                next.iter().for_each(|&a| prefetch(line(cache, a)));
            }
        }
    }
    for (lane, item) in out.chunks_exact_mut(ITEM).enumerate().take(LANES) {
        for (q, word) in item.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&r[q][lane].to_le_bytes());
        }
    }
}

#[inline(always)]
fn items_generic(programs: &[Program; 8], compiled: Option<&Compiled>, cache: &[u8], first: u64, out: &mut [u8]) {
    let mut spare = [0u8; LANES * ITEM];
    for (n, chunk) in out.chunks_mut(LANES * ITEM).enumerate() {
        let at = first + (n * LANES) as u64;
        if chunk.len() == LANES * ITEM {
            block(programs, compiled, cache, at, chunk);
        } else {
            block(programs, compiled, cache, at, &mut spare);
            chunk.copy_from_slice(&spare[..chunk.len()]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,bmi2")]
fn items_avx512(programs: &[Program; 8], compiled: Option<&Compiled>, cache: &[u8], first: u64, out: &mut [u8]) {
    items_generic(programs, compiled, cache, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi2")]
fn items_avx2(programs: &[Program; 8], compiled: Option<&Compiled>, cache: &[u8], first: u64, out: &mut [u8]) {
    items_generic(programs, compiled, cache, first, out);
}

/// Which vector instructions [`items`] uses on this CPU.
pub fn vector_width() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        // Every feature `items_avx512` is compiled with.
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("bmi2")
        {
            return "avx512";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("bmi2") {
            return "avx2";
        }
    }
    "baseline"
}

/// Writes items `first..` into `out` (its length a multiple of 64 bytes),
/// computed from `cache` (a power-of-two count of 64-byte lines) with the
/// widest vectors the CPU has, running `compiled` where given.
pub fn items(programs: &[Program; 8], compiled: Option<&Compiled>, cache: &[u8], first: u64, out: &mut [u8]) {
    debug_assert!(out.len().is_multiple_of(ITEM) && (cache.len() / ITEM).is_power_of_two());
    #[cfg(target_arch = "x86_64")]
    match vector_width() {
        // SAFETY: the CPU has the features these versions were compiled for.
        "avx512" => return unsafe { items_avx512(programs, compiled, cache, first, out) },
        // SAFETY: as above.
        "avx2" => return unsafe { items_avx2(programs, compiled, cache, first, out) },
        _ => {}
    }
    items_generic(programs, compiled, cache, first, out);
}
