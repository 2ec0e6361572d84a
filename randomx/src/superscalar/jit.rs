//! SuperscalarHash programs compiled to vector machine code, 16 items a
//! call: each RandomX register lives in vector registers for the whole
//! program, so an instruction costs a few vector instructions and no
//! memory traffic (the interpreter in [`super::exec`] loads and stores
//! every lane array per instruction).
//!
//! - AVX-512 (F and DQ): a register's 16 items in two `zmm`, scratch from
//!   `zmm16`; 64-bit multiplies are `vpmullq`, rotations `vprorq`.
//! - AVX2: a register's 4 items in one `ymm`, four passes a call, scratch
//!   from `ymm8`; 64-bit multiplies and rotations built from 32-bit
//!   multiplies and shifts.
//!
//! A compiled program is `extern "sysv64" fn(regs, constants)`: `regs` is
//! the lane arrays of [`super::exec`] (register `q`, item `i` at
//! `q * LANES + i`), 16 items from where it points; `constants` the
//! program's 64-bit immediates. The encodings are Intel's (SDM vol. 2,
//! "VEX" and "EVEX encoding").
#![allow(unsafe_code)]

use super::exec::LANES;
use super::program::{Op, Program};

/// Items per call.
pub const ITEMS: usize = 16;

/// Bytes between one register's lane array and the next.
const REG_STRIDE: i32 = (LANES * 8) as i32;

/// The vector instructions a program is compiled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The widest this CPU runs, if any.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq") {
                return Some(Self::Avx512);
            }
            if std::is_x86_feature_detected!("avx2") {
                return Some(Self::Avx2);
            }
        }
        None
    }

    /// Whether this CPU runs code compiled for `self`.
    pub fn runs_here(self) -> bool {
        matches!((self, Self::detect()), (_, Some(Self::Avx512)) | (Self::Avx2, Some(Self::Avx2)))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512-jit",
            Self::Avx2 => "avx2-jit",
        }
    }

    /// The vector register that holds RandomX register `r` (`half`: which
    /// eight items, AVX-512 only).
    fn reg(self, r: u8, half: u8) -> u8 {
        match self {
            Self::Avx512 => (r & 7) * 2 + half,
            Self::Avx2 => r & 7,
        }
    }

    /// The first scratch register.
    fn scratch(self) -> u8 {
        match self {
            Self::Avx512 => 16,
            Self::Avx2 => 8,
        }
    }
}
/// Base registers: `rdi` = lane arrays, `rsi` = constants.
const RDI: u8 = 7;
const RSI: u8 = 6;

#[derive(Clone, Copy)]
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
const VMOVDQU64_LOAD: Opcode = Opcode(2, 1, 0x6f);
const VMOVDQU64_STORE: Opcode = Opcode(2, 1, 0x7f);

/// `vpor` and `vpcmpgtq`, used by the AVX2 code only.
const VPOR: Opcode = Opcode(1, 1, 0xeb);
const VPCMPGTQ: Opcode = Opcode(1, 2, 0x37);

struct Asm {
    isa: Isa,
    /// The first scratch register.
    t: u8,
    code: Vec<u8>,
    constants: Vec<u64>,
}

impl Asm {
    fn new(isa: Isa) -> Self {
        Self { isa, t: isa.scratch(), code: Vec::new(), constants: Vec::new() }
    }

    fn enc(&mut self, op: Opcode, reg: u8, vvvv: u8, rm: Rm, imm: Option<u8>) {
        match self.isa {
            Isa::Avx512 => self.evex(op, reg, vvvv, rm, imm),
            Isa::Avx2 => self.vex(op, reg, vvvv, rm, imm),
        }
    }

    /// What follows ModRM: a memory operand's disp32, then the immediate.
    fn operand_tail(&mut self, rm: &Rm, imm: Option<u8>) {
        if let Rm::Mem { disp, .. } = rm {
            self.code.extend_from_slice(&disp.to_le_bytes());
        }
        self.code.extend(imm);
    }

    /// One VEX.256.W0 instruction (three-byte VEX), operands as [`Asm::evex`].
    fn vex(&mut self, Opcode(pp, map, op): Opcode, reg: u8, vvvv: u8, rm: Rm, imm: Option<u8>) {
        let (b, modrm_rm, md) = match rm {
            Rm::Reg(r) => ((r >> 3) & 1, r & 7, 0b11),
            Rm::Mem { base, .. } => ((base >> 3) & 1, base & 7, 0b10),
        };
        let b1 = ((!(reg >> 3) & 1) << 7) | (1 << 6) | ((!b & 1) << 5) | map;
        let b2 = ((!vvvv & 0xf) << 3) | 0x04 | pp;
        self.code.extend_from_slice(&[0xc4, b1, b2, op, (md << 6) | ((reg & 7) << 3) | modrm_rm]);
        self.operand_tail(&rm, imm);
    }

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
        self.operand_tail(&rm, imm);
    }

    /// `dst = a OP b` for the two-source integer instructions.
    fn op3(&mut self, op: Opcode, dst: u8, a: u8, b: Rm) {
        self.enc(op, dst, a, b, None);
    }

    /// `dst = src SHIFT imm` (`72`/`73` with an opcode extension).
    fn shift(&mut self, op: Opcode, ext: u8, dst: u8, src: u8, imm: u8) {
        self.enc(op, ext, dst, Rm::Reg(src), Some(imm));
    }

    /// A 64-bit constant as an operand: one element broadcast (AVX-512),
    /// or four copies read as one vector (AVX2).
    fn constant(&mut self, value: u64) -> Rm {
        let copies = match self.isa {
            Isa::Avx512 => 1,
            Isa::Avx2 => 4,
        };
        let at = self.constants.chunks(copies).position(|c| c[0] == value).unwrap_or_else(|| {
            self.constants.extend(std::iter::repeat_n(value, copies));
            self.constants.len() / copies - 1
        });
        Rm::Mem { base: RSI, disp: (at * copies * 8) as i32, broadcast: self.isa == Isa::Avx512 }
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
    /// `dst = a * b`, the low 64 bits.
    fn mullo(&mut self, dst: u8, a: u8, b: u8) {
        if self.isa == Isa::Avx512 {
            return self.op3(VPMULLQ, dst, a, Rm::Reg(b));
        }
        // (ah * bl + al * bh) << 32 + al * bl, from 32-bit products.
        let (hi, lo) = (self.t, self.t + 1);
        self.srl(hi, a, 32);
        self.mul32(hi, hi, Rm::Reg(b));
        self.srl(lo, b, 32);
        self.mul32(lo, a, Rm::Reg(lo));
        self.mullo_tail(dst, a, Rm::Reg(b));
    }
    /// `dst = a * value`, the low 64 bits: on AVX2 the constant's high
    /// half is a constant of its own, and each product reads its operand
    /// from memory.
    fn mul_const(&mut self, dst: u8, a: u8, value: u64) {
        let c = self.constant(value);
        if self.isa == Isa::Avx512 {
            return self.op3(VPMULLQ, dst, a, c);
        }
        let (hi, lo) = (self.t, self.t + 1);
        self.srl(hi, a, 32);
        self.mul32(hi, hi, c);
        let c_high = self.constant(value >> 32);
        self.mul32(lo, a, c_high);
        self.mullo_tail(dst, a, c);
    }
    /// The end of an AVX2 low multiply: `hi` and `lo` (the first two
    /// scratch registers) hold the two cross products.
    fn mullo_tail(&mut self, dst: u8, a: u8, b: Rm) {
        let (hi, lo) = (self.t, self.t + 1);
        self.add(hi, hi, Rm::Reg(lo));
        self.sll(hi, hi, 32);
        self.mul32(lo, a, b);
        self.add(dst, lo, Rm::Reg(hi));
    }
    /// `dst = a * b` of each element's low 32 bits, unsigned.
    fn mul32(&mut self, dst: u8, a: u8, b: Rm) {
        self.op3(VPMULUDQ, dst, a, b);
    }
    fn srl(&mut self, dst: u8, src: u8, n: u8) {
        self.shift(SHIFT_73, 2, dst, src, n);
    }
    fn sll(&mut self, dst: u8, src: u8, n: u8) {
        self.shift(SHIFT_73, 6, dst, src, n);
    }
    /// `dst` = all ones where `src` is negative, else zeros.
    fn sign(&mut self, dst: u8, src: u8) {
        match self.isa {
            Isa::Avx512 => self.shift(SHIFT_72, 4, dst, src, 63),
            // 0 > src, with the zero register the AVX2 code keeps.
            Isa::Avx2 => self.op3(VPCMPGTQ, dst, self.t + 7, Rm::Reg(src)),
        }
    }
    fn ror(&mut self, dst: u8, src: u8, n: u8) {
        if self.isa == Isa::Avx512 {
            return self.shift(SHIFT_72, 0, dst, src, n);
        }
        self.srl(self.t, src, n);
        self.sll(dst, src, 64 - n);
        self.op3(VPOR, dst, dst, Rm::Reg(self.t));
    }
    fn load_rm(&mut self, dst: u8, rm: Rm) {
        self.enc(VMOVDQU64_LOAD, dst, 0, rm, None);
    }
    fn load(&mut self, dst: u8, disp: i32) {
        self.load_rm(dst, Rm::Mem { base: RDI, disp, broadcast: false });
    }
    fn store(&mut self, src: u8, disp: i32) {
        self.enc(VMOVDQU64_STORE, src, 0, Rm::Mem { base: RDI, disp, broadcast: false }, None);
    }

    /// `dst = high 64 bits of a * b`, unsigned or signed, from four 32-bit
    /// products; `a` and `b` are read before `dst` is written.
    ///
    /// With `a = ah·2³² + al` and `b` alike, `a·b = hh·2⁶⁴ + (lh + hl)·2³²
    /// + ll`. The carries are folded in two sums that cannot overflow:
    /// `t = hl + (ll >> 32)` and `u = lh + (t mod 2³²)`, each below 2⁶⁴;
    /// the high half is `hh + (t >> 32) + (u >> 32)`.
    fn mul_high(&mut self, dst: u8, a: u8, b: u8, signed: bool) {
        let t = self.t;
        let (hh, bh, ll, lh, hl, x) = (t, t + 1, t + 2, t + 3, t + 4, t + 5);
        self.srl(hh, a, 32);
        self.srl(bh, b, 32);
        self.mul32(ll, a, Rm::Reg(b));
        self.mul32(lh, a, Rm::Reg(bh));
        self.mul32(hl, hh, Rm::Reg(b));
        self.mul32(hh, hh, Rm::Reg(bh));
        self.srl(ll, ll, 32);
        self.add(hl, hl, Rm::Reg(ll)); // t
        let low32 = self.constant(0xffff_ffff);
        self.and(ll, hl, low32);
        self.add(lh, lh, Rm::Reg(ll)); // u
        self.srl(hl, hl, 32);
        self.add(hh, hh, Rm::Reg(hl));
        self.srl(lh, lh, 32);
        if signed {
            // As signed: minus b where a < 0 and minus a where b < 0.
            self.sign(x, a);
            self.and(x, x, Rm::Reg(b));
            self.sub(hh, hh, Rm::Reg(x));
            self.sign(x, b);
            self.and(x, x, Rm::Reg(a));
            self.sub(hh, hh, Rm::Reg(x));
        }
        self.add(dst, hh, Rm::Reg(lh));
    }

    fn op(&mut self, op: Op, half: u8) {
        let isa = self.isa;
        let z = |r: u8| isa.reg(r, half);
        match op {
            Op::Sub { dst, src } => self.sub(z(dst), z(dst), Rm::Reg(z(src))),
            Op::Xor { dst, src } => self.xor(z(dst), z(dst), Rm::Reg(z(src))),
            Op::AddShift { dst, src, shift } => {
                if shift == 0 {
                    self.add(z(dst), z(dst), Rm::Reg(z(src)));
                } else {
                    let t = self.t;
                    self.sll(t, z(src), shift as u8);
                    self.add(z(dst), z(dst), Rm::Reg(t));
                }
            }
            Op::Mul { dst, src } => self.mullo(z(dst), z(dst), z(src)),
            Op::Ror { dst, count } => self.ror(z(dst), z(dst), (count & 63) as u8),
            Op::AddConst { dst, value } => {
                let c = self.constant(value);
                self.add(z(dst), z(dst), c);
            }
            Op::XorConst { dst, value } => {
                let c = self.constant(value);
                self.xor(z(dst), z(dst), c);
            }
            Op::MulConst { dst, value } => self.mul_const(z(dst), z(dst), value),
            Op::MulHigh { dst, src } => self.mul_high(z(dst), z(dst), z(src), false),
            Op::MulHighSigned { dst, src } => self.mul_high(z(dst), z(dst), z(src), true),
        }
    }
}

type Entry = unsafe extern "sysv64" fn(*mut u64, *const u64);

/// A key's eight programs as machine code.
pub struct Compiled {
    isa: Isa,
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

impl Asm {
    /// One program over 16 items: all in registers at once (AVX-512), or
    /// four passes of four (AVX2, a loop over `rdi`).
    fn program(&mut self, program: &Program) {
        let disp = |q: u8, half: u8| i32::from(q) * REG_STRIDE + i32::from(half) * 64;
        let halves = match self.isa {
            Isa::Avx512 => 2,
            Isa::Avx2 => {
                let zero = self.t + 7;
                self.xor(zero, zero, Rm::Reg(zero));
                self.code.extend_from_slice(&[0xb9, 4, 0, 0, 0]); // mov ecx, 4
                1
            }
        };
        let top = self.code.len();
        for q in 0..8 {
            for half in 0..halves {
                self.load(self.isa.reg(q, half), disp(q, half));
            }
        }
        for op in &program.ops {
            for half in 0..halves {
                self.op(*op, half);
            }
        }
        for q in 0..8 {
            for half in 0..halves {
                self.store(self.isa.reg(q, half), disp(q, half));
            }
        }
        if self.isa == Isa::Avx2 {
            // add rdi, 32 (the next four items); dec ecx; jnz top
            self.code.extend_from_slice(&[0x48, 0x83, 0xc7, 32, 0xff, 0xc9, 0x0f, 0x85]);
            let back = top as i64 - (self.code.len() as i64 + 4);
            self.code.extend_from_slice(&(back as i32).to_le_bytes());
        }
        self.code.extend_from_slice(&[0xc5, 0xf8, 0x77, 0xc3]); // vzeroupper; ret
    }
}

/// Compiles `programs` for `isa`; `None` where this CPU does not run it or
/// executable memory cannot be had.
pub fn compile(programs: &[Program; 8], isa: Isa) -> Option<Compiled> {
    if !isa.runs_here() {
        return None;
    }
    let mut code = Vec::new();
    let mut entries = [0; 8];
    let constants = std::array::from_fn(|p| {
        entries[p] = code.len();
        let mut asm = Asm::new(isa);
        asm.program(&programs[p]);
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
        Some(Compiled { isa, code: map.cast(), len, entries, constants })
    }
}

impl Compiled {
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs program `p` over the 16 items of `regs` from lane `first`.
    #[inline(always)]
    pub fn run(&self, p: usize, regs: &mut [[u64; LANES]; 8], first: usize) {
        assert!(first + ITEMS <= LANES);
        // SAFETY: the entry is the start of program `p`'s code, compiled for
        // this CPU (`Isa::runs_here`); it reads and writes 16 lanes of each of the
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
