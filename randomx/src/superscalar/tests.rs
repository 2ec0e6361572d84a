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
