//! `faena-randomx-bench`: the worker's RandomX engine on the same work as
//! RandomX's own `randomx-benchmark` (same 76-byte block template, nonce at
//! byte 39, key = 4 zero bytes, nonces 0..N), so both print the same
//! "Calculated result" (the XOR of all hashes) and their speeds compare.
//! It runs the same mining loop as the worker (`randomx::mine`).
//! `scripts/bench-randomx.sh` runs the two interleaved.
//!
//! `faena-randomx-bench --mode fast|light --threads N --init N --nonces N [--large-pages]
//!  [--share DIR] [--hold]`
//!
//! `--share DIR`: the fast-mode dataset through a share directory, as
//! workers with `FAENA_RANDOMX_SHARE_DIR` get it (mapped if another process
//! built it). `--hold`: after hashing, keep everything until stdin closes
//! (`scripts/bench-share.sh` starts a second process meanwhile).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use faena_worker::randomx::mine::{Work, mine};
use faena_worker::randomx::{Flags, Material, Mode, ShareDir};

const TEMPLATE: [u8; 76] = [
    0x07, 0x07, 0xf7, 0xa4, 0xf0, 0xd6, 0x05, 0xb3, 0x03, 0x26, 0x08, 0x16, 0xba, 0x3f, 0x10, 0x90, 0x2e, 0x1a, 0x14,
    0x5a, 0xc5, 0xfa, 0xd3, 0xaa, 0x3a, 0xf6, 0xea, 0x44, 0xc1, 0x18, 0x69, 0xdc, 0x4f, 0x85, 0x3f, 0x00, 0x2b, 0x2e,
    0xea, 0x00, 0x00, 0x00, 0x00, 0x77, 0xb2, 0x06, 0xa0, 0x2c, 0xa5, 0xb1, 0xd4, 0xce, 0x6b, 0xbf, 0xdf, 0x0a, 0xca,
    0xc3, 0x8b, 0xde, 0xd3, 0x4d, 0x2d, 0xcd, 0xee, 0xf9, 0x5c, 0xd2, 0x0c, 0xef, 0xc1, 0x2f, 0x61, 0xd5, 0x61, 0x09,
];
const NONCE_OFFSET: usize = 39;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the worker does: transparent huge pages for RandomX's memory.
    faena_common::lifecycle::reexec_with(faena_worker::randomx::transparent_huge_pages_env().into_iter().collect());
    let args: Vec<String> = std::env::args().collect();
    let mode = match args.iter().position(|a| a == "--mode").and_then(|i| args.get(i + 1)).map(String::as_str) {
        Some("light") => Mode::Light,
        _ => Mode::Fast,
    };
    let threads = arg(&args, "--threads", 1).max(1);
    let init = arg(&args, "--init", threads).max(1) as usize;
    let nonces = arg(&args, "--nonces", 1000);
    let flags = Flags::detect().with_large_pages(args.iter().any(|a| a == "--large-pages"));
    println!(
        "faena RandomX engine: {} mode, {threads} threads, {init} init threads, {nonces} nonces, jit={} hard_aes={} large_pages={}",
        mode.as_str(),
        flags.jit(),
        flags.hard_aes(),
        flags.large_pages()
    );

    let share = args.iter().position(|a| a == "--share").and_then(|i| args.get(i + 1));
    let started = Instant::now();
    let material = Arc::new(match share {
        Some(dir) => Material::build_shared(flags, &[0u8; 4], init, &ShareDir::open(dir)?)?,
        None => Material::build(flags, mode, &[0u8; 4], init)?,
    });
    let how = match material.shared() {
        Some(s) => format!(" ({}, huge pages: {})", if s.built { "built" } else { "mapped" }, s.huge_pages),
        None => String::new(),
    };
    println!("Memory initialized in {:.4} s{how}", started.elapsed().as_secs_f64());
    // Every hash is a "share" at target u64::MAX, so the XOR covers them all.
    let work = Work {
        blob: &TEMPLATE,
        nonce_offset: NONCE_OFFSET,
        start: 0,
        count: nonces,
        target: u64::MAX,
        max_shares: None,
    };
    let mined = mine(&material, threads as usize, &work, &AtomicBool::new(false), &|_| {}, &|_| {})?;
    let elapsed = mined.elapsed.as_secs_f64();
    let mut xor = [0u8; 32];
    for share in &mined.shares {
        xor.iter_mut().zip(share.hash).for_each(|(a, h)| *a ^= h);
    }
    println!("Calculated result: {}", faena_proto::jobs::encode_hex(&xor));
    println!("Performance: {:.1} hashes per second", nonces as f64 / elapsed);
    // How much of the process's memory transparent huge pages back: at
    // most the dataset's 2,080 MiB (RandomX's scratchpads are not 2 MiB
    // aligned, so none of them gets one; BENCHMARKS.md).
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    if let Some(kib) = rollup.lines().find_map(|l| l.strip_prefix("AnonHugePages:")) {
        let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        println!("Transparent huge pages: {} MiB", kib / 1024);
    }
    if args.iter().any(|a| a == "--hold") {
        use std::io::Read;
        println!("holding until stdin closes");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }
    Ok(())
}
