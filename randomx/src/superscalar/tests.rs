//! The items computed here against RandomX's own `randomx_init_dataset`,
//! over the same cache, for several keys.
#![allow(unsafe_code)]

use super::program::{self, BlakeGenerator, Op};
use crate::engine::{Cache, Flags};

/// The first `count` items of `key`'s dataset by RandomX, by the compiled
/// programs (where this CPU runs them) and by the interpreter.
fn computed(key: &[u8], count: usize) -> Vec<(&'static str, Vec<u8>)> {
    let cache = Cache::new(Flags::detect().with_large_pages(false), key).expect("a cache");
    let mut all = vec![("RandomX", crate::init::randomx_items(&cache, count))];
    let compiled = [super::jit::Isa::Avx512, super::jit::Isa::Avx2]
        .into_iter()
        .filter_map(|isa| super::Items::compiled_for(key, isa));
    for items in compiled.chain([super::Items::interpreted(key)]) {
        let mut out = vec![0u8; count * super::exec::ITEM];
        items.compute(cache.memory(), 0, &mut out);
        all.push((items.how(), out));
    }
    all
}

#[test]
fn items_are_randomx_items_for_several_keys() {
    // 200 items: three full blocks of lanes and a part of one.
    if let Some(isa) = super::jit::Isa::detect() {
        assert_eq!(super::Items::new(b"key").how(), isa.name());
    }
    for key in [&b"test key 000"[..], b"", &[0u8; 4], &[0xa5; 60], b"Faena"] {
        let all = computed(key, 200);
        let (_, reference) = &all[0];
        for (how, ours) in &all[1..] {
            for (n, (a, b)) in reference.chunks(64).zip(ours.chunks(64)).enumerate() {
                assert_eq!(a, b, "item {n} of key {key:?}, {how}");
            }
        }
    }
}

#[test]
fn blake_generator_rehashes_its_state_when_used_up() {
    let mut rng = BlakeGenerator::new(b"key", 0);
    let first: Vec<u8> = (0..64).map(|_| rng.byte()).collect();
    let mut again = BlakeGenerator::new(b"key", 0);
    assert_eq!(first, (0..64).map(|_| again.byte()).collect::<Vec<_>>());
    // 65th byte: a fresh hash, not a repeat of the first.
    assert_ne!(rng.byte(), first[0]);
    // 4 bytes when 2 are left: taken from the next state, not split.
    let mut g = BlakeGenerator::new(b"key", 0);
    (0..62).for_each(|_| {
        g.byte();
    });
    let mut h = BlakeGenerator::new(b"key", 0);
    (0..64).for_each(|_| {
        h.byte();
    });
    let next: [u8; 4] = std::array::from_fn(|_| h.byte());
    assert_eq!(g.u32(), u32::from_le_bytes(next));
}

#[test]
fn reciprocal_is_the_largest_power_quotient_below_two_to_the_64() {
    for d in [3u32, 5, 7, 10, 1_000_003, u32::MAX, 0x8000_0001] {
        let r = program::reciprocal(d);
        assert!(r >= 1 << 63, "{d}: {r:#x}");
        // 2^x / d with x = 63 + bits(d): one more bit would pass 2^64.
        let x = 63 + (32 - d.leading_zeros());
        assert_eq!(u128::from(r), (1u128 << x) / u128::from(d));
    }
}

#[test]
fn programs_follow_the_rules_of_table_6_1_1() {
    for key in [&b"rules"[..], b"another key"] {
        for p in super::programs(key) {
            assert!(!p.ops.is_empty() && p.ops.len() <= program::MAX_SIZE);
            assert!(p.address_register < 8);
            for op in &p.ops {
                let (dst, src) = program::operands(*op);
                match *op {
                    Op::Sub { .. } | Op::Xor { .. } | Op::Mul { .. } => assert_ne!(dst, src),
                    Op::AddShift { .. } => assert!(dst != src && dst != 5),
                    Op::Ror { count, .. } => assert!((1..64).contains(&count)),
                    _ => {}
                }
            }
        }
    }
}

/// The vector code's 64-bit multiplies (built from 32-bit products on
/// AVX2) against 128-bit arithmetic, on the values where carries and signs
/// go wrong: zero, one, all ones, the sign bit, 2³² ± 1 and mixed halves.
#[test]
fn compiled_multiplies_match_128_bit_arithmetic_at_the_edges() {
    use super::exec::LANES;
    use super::jit::{self, ITEMS, Isa};
    let edges = [
        0u64,
        1,
        u64::MAX,
        1 << 63,
        (1 << 63) - 1,
        0xffff_ffff,
        1 << 32,
        (1 << 32) + 1,
        0xffff_ffff_0000_0001,
        0x8000_0000_ffff_ffff,
        0x1234_5678_9abc_def0,
        0xfedc_ba98_7654_3210,
    ];
    let constants = [u64::MAX, 1 << 63, 0xffff_ffff, 0xcccc_cccc_cccc_cccd, 3];
    let mut ops =
        vec![Op::MulHigh { dst: 0, src: 1 }, Op::MulHighSigned { dst: 2, src: 3 }, Op::Mul { dst: 5, src: 6 }];
    ops.extend(constants.iter().enumerate().map(|(i, &value)| Op::MulConst { dst: [4, 7, 4, 7, 4][i], value }));
    let programs: [program::Program; 8] =
        std::array::from_fn(|_| program::Program { ops: ops.clone(), address_register: 0 });
    let pairs: Vec<(u64, u64)> = edges.iter().flat_map(|&a| edges.iter().map(move |&b| (a, b))).collect();
    for isa in [Isa::Avx512, Isa::Avx2] {
        let Some(code) = jit::compile(&programs, isa) else { continue };
        for chunk in pairs.chunks(ITEMS) {
            let mut regs = [[0u64; LANES]; 8];
            for (i, &(a, b)) in chunk.iter().enumerate() {
                for (q, v) in [a, b, a, b, a, a, b, b].into_iter().enumerate() {
                    regs[q][i] = v;
                }
            }
            code.run(0, &mut regs, 0);
            for (i, &(a, b)) in chunk.iter().enumerate() {
                let high = ((u128::from(a) * u128::from(b)) >> 64) as u64;
                let signed = ((i128::from(a as i64) * i128::from(b as i64)) >> 64) as u64;
                let (mut r4, mut r7) = (a, b);
                for (k, &c) in constants.iter().enumerate() {
                    if k % 2 == 0 { r4 = r4.wrapping_mul(c) } else { r7 = r7.wrapping_mul(c) }
                }
                let got = (regs[0][i], regs[2][i], regs[5][i], regs[4][i], regs[7][i]);
                assert_eq!(got, (high, signed, a.wrapping_mul(b), r4, r7), "{isa:?}: {a:#x} * {b:#x}");
            }
        }
    }
}
