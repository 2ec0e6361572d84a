//! SuperscalarHash programs compiled to AVX-512 machine code, 16 items at
//! a time: each RandomX register lives in two `zmm` registers (8 items
//! each) for the whole program, so an instruction costs one or two vector
//! instructions and no memory traffic (the interpreter in [`super::exec`]
//! loads and stores every lane array per instruction).
//!
//! A compiled program is `extern "sysv64" fn(regs, constants)`: `regs` is
//! the lane arrays of [`super::exec`] (register `q`, item `i` at
//! `q * LANES + i`), 16 items from where it points; `constants` the
//! program's 64-bit immediates. The encodings are Intel's (SDM vol. 2,
//! "EVEX encoding"); x86-64 with AVX-512F and AVX-512DQ (`vpmullq`) only.
#![allow(unsafe_code)]

use super::exec::LANES;
use super::program::{Op, Program};

/// Items per call: two `zmm` of eight 64-bit lanes per register.
pub const ITEMS: usize = 16;

/// Bytes between one register's lane array and the next.
const REG_STRIDE: i32 = (LANES * 8) as i32;
/// `zmm16`..: scratch for shifts and the high multiplies.
const T: u8 = 16;
/// Base registers: `rdi` = lane arrays, `rsi` = constants.
const RDI: u8 = 7;
const RSI: u8 = 6;

enum Rm {
    Reg(u8),
    /// `[base + disp32]`, optionally one 64-bit element broadcast.
    Mem {
        base: u8,
        disp: i32,
        broadcast: bool,
    },
}

/// An opcode: its implied prefix (`66` = 1, `F3` = 2) and map (`0F` = 1,
/// `0F38` = 2), as EVEX encodes them, and the opcode byte.
#[derive(Clone, Copy)]
struct Opcode(u8, u8, u8);

const VPADDQ: Opcode = Opcode(1, 1, 0xd4);
const VPSUBQ: Opcode = Opcode(1, 1, 0xfb);
const VPXORQ: Opcode = Opcode(1, 1, 0xef);
const VPANDQ: Opcode = Opcode(1, 1, 0xdb);
const VPMULLQ: Opcode = Opcode(1, 2, 0x40);
const VPMULUDQ: Opcode = Opcode(1, 1, 0xf4);
/// `vpsrlq`/`vpsllq` (`/2`, `/6`) and `vpsraq`/`vprorq` (`/4`, `/0`).
const SHIFT_73: Opcode = Opcode(1, 1, 0x73);
const SHIFT_72: Opcode = Opcode(1, 1, 0x72);
const VMOVDQA64: Opcode = Opcode(1, 1, 0x6f);
const VMOVDQU64_LOAD: Opcode = Opcode(2, 1, 0x6f);
const VMOVDQU64_STORE: Opcode = Opcode(2, 1, 0x7f);

#[derive(Default)]
struct Asm {
    code: Vec<u8>,
    constants: Vec<u64>,
}

impl Asm {
    /// One EVEX.512.W1 instruction: `reg` (ModRM.reg), `vvvv` (second
    /// source or, for shifts, the destination), `rm`, and an immediate.
    fn evex(&mut self, Opcode(pp, map, op): Opcode, reg: u8, vvvv: u8, rm: Rm, imm: Option<u8>) {
        let (x, b, bcast, modrm_rm, md) = match rm {
            Rm::Reg(r) => ((r >> 4) & 1, (r >> 3) & 1, 0, r & 7, 0b11),
            Rm::Mem { base, broadcast, .. } => (0, (base >> 3) & 1, u8::from(broadcast), base & 7, 0b10),
        };
        let p0 = ((!(reg >> 3) & 1) << 7) | ((!x & 1) << 6) | ((!b & 1) << 5) | ((!(reg >> 4) & 1) << 4) | map;
        let p1 = 0x80 | ((!vvvv & 0xf) << 3) | 0x04 | pp;
        let p2 = 0x40 | (bcast << 4) | ((!(vvvv >> 4) & 1) << 3);
        self.code.extend_from_slice(&[0x62, p0, p1, p2, op, (md << 6) | ((reg & 7) << 3) | modrm_rm]);
        if let Rm::Mem { disp, .. } = rm {
            self.code.extend_from_slice(&disp.to_le_bytes());
        }
        if let Some(i) = imm {
            self.code.push(i);
        }
    }

    /// `dst = a OP b` for the two-source integer instructions.
    fn op3(&mut self, op: Opcode, dst: u8, a: u8, b: Rm) {
        self.evex(op, dst, a, b, None);
    }

    /// `dst = src SHIFT imm` (`72`/`73` with an opcode extension).
    fn shift(&mut self, op: Opcode, ext: u8, dst: u8, src: u8, imm: u8) {
        self.evex(op, ext, dst, Rm::Reg(src), Some(imm));
    }

    fn constant(&mut self, value: u64) -> Rm {
        let at = self.constants.iter().position(|&c| c == value).unwrap_or_else(|| {
            self.constants.push(value);
            self.constants.len() - 1
        });
        Rm::Mem { base: RSI, disp: (at * 8) as i32, broadcast: true }
    }

    fn add(&mut self, dst: u8, a: u8, b: Rm) {
        self.op3(VPADDQ, dst, a, b);
    }
    fn sub(&mut self, dst: u8, a: u8, b: Rm) {
        self.op3(VPSUBQ, dst, a, b);
    }
    fn xor(&mut self, dst: u8, a: u8, b: Rm) {
        self.op3(VPXORQ, dst, a, b);
    }
    fn and(&mut self, dst: u8, a: u8, b: Rm) {
        self.op3(VPANDQ, dst, a, b);
    }
    fn mullo(&mut self, dst: u8, a: u8, b: Rm) {
        self.op3(VPMULLQ, dst, a, b);
    }
    fn mul32(&mut self, dst: u8, a: u8, b: u8) {
        self.op3(VPMULUDQ, dst, a, Rm::Reg(b));
    }
    fn srl(&mut self, dst: u8, src: u8, n: u8) {
        self.shift(SHIFT_73, 2, dst, src, n);
    }
    fn sll(&mut self, dst: u8, src: u8, n: u8) {
        self.shift(SHIFT_73, 6, dst, src, n);
    }
    fn sra(&mut self, dst: u8, src: u8, n: u8) {
        self.shift(SHIFT_72, 4, dst, src, n);
    }
    fn ror(&mut self, dst: u8, src: u8, n: u8) {
        self.shift(SHIFT_72, 0, dst, src, n);
    }
    fn copy(&mut self, dst: u8, src: u8) {
        self.evex(VMOVDQA64, dst, 0, Rm::Reg(src), None);
    }
    fn load(&mut self, dst: u8, disp: i32) {
        self.evex(VMOVDQU64_LOAD, dst, 0, Rm::Mem { base: RDI, disp, broadcast: false }, None);
    }
    fn store(&mut self, src: u8, disp: i32) {
        self.evex(VMOVDQU64_STORE, src, 0, Rm::Mem { base: RDI, disp, broadcast: false }, None);
    }

    /// `dst = high 64 bits of a * b`, unsigned or signed, from four 32-bit
    /// products; `a` and `b` are read before `dst` is written.
    fn mul_high(&mut self, dst: u8, a: u8, b: u8, signed: bool) {
        let (ah, bh, ll, lh, hl, x) = (T, T + 1, T + 2, T + 3, T + 4, T + 5);
        let low32 = self.constant(0xffff_ffff);
        self.srl(ah, a, 32);
        self.srl(bh, b, 32);
        self.mul32(ll, a, b);
        self.mul32(lh, a, bh);
        self.mul32(hl, ah, b);
        self.mul32(ah, ah, bh); // ah * bh
        self.srl(ll, ll, 32);
        self.and(x, lh, low32);
        self.add(ll, ll, Rm::Reg(x));
        let low32 = self.constant(0xffff_ffff);
        self.and(x, hl, low32);
        self.add(ll, ll, Rm::Reg(x)); // the middle column, < 3 * 2^32
        self.srl(lh, lh, 32);
        self.add(ah, ah, Rm::Reg(lh));
        self.srl(hl, hl, 32);
        self.add(ah, ah, Rm::Reg(hl));
        self.srl(ll, ll, 32);
        self.add(ah, ah, Rm::Reg(ll));
        if signed {
            // As signed: minus b where a < 0 and minus a where b < 0.
            self.sra(x, a, 63);
            self.and(x, x, Rm::Reg(b));
            self.sub(ah, ah, Rm::Reg(x));
            self.sra(x, b, 63);
            self.and(x, x, Rm::Reg(a));
            self.sub(ah, ah, Rm::Reg(x));
        }
        self.copy(dst, ah);
    }

    fn op(&mut self, op: Op, half: u8) {
        let z = |r: u8| (r & 7) * 2 + half;
        match op {
            Op::Sub { dst, src } => self.sub(z(dst), z(dst), Rm::Reg(z(src))),
            Op::Xor { dst, src } => self.xor(z(dst), z(dst), Rm::Reg(z(src))),
            Op::AddShift { dst, src, shift } => {
                if shift == 0 {
                    self.add(z(dst), z(dst), Rm::Reg(z(src)));
                } else {
                    self.sll(T, z(src), shift as u8);
                    self.add(z(dst), z(dst), Rm::Reg(T));
                }
            }
            Op::Mul { dst, src } => self.mullo(z(dst), z(dst), Rm::Reg(z(src))),
            Op::Ror { dst, count } => self.ror(z(dst), z(dst), (count & 63) as u8),
            Op::AddConst { dst, value } => {
                let c = self.constant(value);
                self.add(z(dst), z(dst), c);
            }
            Op::XorConst { dst, value } => {
                let c = self.constant(value);
                self.xor(z(dst), z(dst), c);
            }
            Op::MulConst { dst, value } => {
                let c = self.constant(value);
                self.mullo(z(dst), z(dst), c);
            }
            Op::MulHigh { dst, src } => self.mul_high(z(dst), z(dst), z(src), false),
            Op::MulHighSigned { dst, src } => self.mul_high(z(dst), z(dst), z(src), true),
        }
    }
}

type Entry = unsafe extern "sysv64" fn(*mut u64, *const u64);

/// A key's eight programs as machine code.
pub struct Compiled {
    code: *mut u8,
    len: usize,
    entries: [usize; 8],
    constants: [Vec<u64>; 8],
}

// SAFETY: the code is written once, before `compile` returns, and is
// read-only and executable from then on; calls share nothing mutable.
unsafe impl Send for Compiled {}
unsafe impl Sync for Compiled {}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("bytes", &self.len).finish_non_exhaustive()
    }
}

/// Whether this CPU runs what [`compile`] emits.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Compiles `programs`; `None` where the CPU lacks AVX-512 or executable
/// memory cannot be had.
pub fn compile(programs: &[Program; 8]) -> Option<Compiled> {
    if !available() {
        return None;
    }
    let mut code = Vec::new();
    let mut entries = [0; 8];
    let constants = std::array::from_fn(|p| {
        entries[p] = code.len();
        let mut asm = Asm::default();
        let disp = |q: u8, half: u8| i32::from(q) * REG_STRIDE + i32::from(half) * 64;
        for q in 0..8 {
            for half in 0..2 {
                asm.load(q * 2 + half, disp(q, half));
            }
        }
        for op in &programs[p].ops {
            for half in 0..2 {
                asm.op(*op, half);
            }
        }
        for q in 0..8 {
            for half in 0..2 {
                asm.store(q * 2 + half, disp(q, half));
            }
        }
        asm.code.extend_from_slice(&[0xc5, 0xf8, 0x77, 0xc3]); // vzeroupper; ret
        code.extend_from_slice(&asm.code);
        asm.constants
    });
    let len = code.len();
    // SAFETY: a fresh private anonymous mapping, written here and then made
    // read-only and executable; checked for failure.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if map == libc::MAP_FAILED {
            return None;
        }
        std::ptr::copy_nonoverlapping(code.as_ptr(), map.cast::<u8>(), len);
        if libc::mprotect(map, len, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            libc::munmap(map, len);
            return None;
        }
        Some(Compiled { code: map.cast(), len, entries, constants })
    }
}

impl Compiled {
    /// Runs program `p` over the 16 items of `regs` from lane `first`.
    #[inline(always)]
    pub fn run(&self, p: usize, regs: &mut [[u64; LANES]; 8], first: usize) {
        assert!(first + ITEMS <= LANES);
        // SAFETY: the entry is the start of program `p`'s code, compiled for
        // this CPU (`available`); it reads and writes 16 lanes of each of the
        // 8 arrays from `first`, inside `regs`, and reads its constants,
        // whose offsets it was compiled with.
        unsafe {
            let entry: Entry = std::mem::transmute(self.code.add(self.entries[p % 8]));
            entry(regs.as_mut_ptr().cast::<u64>().add(first), self.constants[p % 8].as_ptr());
        }
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `compile`; no call runs any more.
        unsafe { libc::munmap(self.code.cast(), self.len) };
    }
}
