//! SuperscalarHash programs (RandomX specification, chapter 6): generated
//! from a key by simulating the specification's reference CPU, so that the
//! eight programs of a key are the ones every RandomX implementation builds.
//!
//! Written from the specification (`doc/specs.md` of RandomX 1.2.1, which the
//! `randomx-rs` crate ships); where it leaves a choice open (how many random
//! bytes a choice takes, the order of the checks) the generator follows the
//! RandomX reference library (BSD-3-Clause), and `tests` compare every item
//! it leads to with that library's. No code of XMRig (GPL) is used.

use blake2::{Blake2b512, Digest};

/// `RANDOMX_SUPERSCALAR_LATENCY`: the reference CPU's cycles per program.
const LATENCY: usize = 170;
/// Ports are simulated a few cycles past the latency.
const CYCLE_MAP_SIZE: usize = LATENCY + 4;
/// The most instructions a program has (`3 * LATENCY + 2`).
pub const MAX_SIZE: usize = 3 * LATENCY + 2;
/// How many cycles the generator looks ahead for a ready operand.
const LOOK_FORWARD_CYCLES: usize = 4;
/// How many instructions in a row may be thrown away for want of operands.
const MAX_THROWAWAY_COUNT: u32 = 256;
/// `r5` cannot be IADD_RS's destination (x86's `lea` needs a displacement).
const NEEDS_DISPLACEMENT: u8 = 5;

/// The specification's BlakeGenerator (chapter 3.5): a 64-byte state, the
/// key padded with zeros and a 4-byte nonce, rehashed when used up.
#[derive(Debug)]
pub struct BlakeGenerator {
    data: [u8; 64],
    index: usize,
}

impl BlakeGenerator {
    pub fn new(seed: &[u8], nonce: u32) -> Self {
        let mut data = [0u8; 64];
        let n = seed.len().min(60);
        data[..n].copy_from_slice(&seed[..n]);
        data[60..].copy_from_slice(&nonce.to_le_bytes());
        Self { data, index: 64 }
    }

    fn need(&mut self, bytes: usize) {
        if self.index + bytes > self.data.len() {
            self.data = Blake2b512::digest(self.data).into();
            self.index = 0;
        }
    }

    pub fn byte(&mut self) -> u8 {
        self.need(1);
        self.index += 1;
        self.data[self.index - 1]
    }

    pub fn u32(&mut self) -> u32 {
        self.need(4);
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.data[self.index..self.index + 4]);
        self.index += 4;
        u32::from_le_bytes(b)
    }
}

/// One instruction, ready to execute: immediates sign-extended, IMUL_RCP's
/// reciprocal computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Sub { dst: u8, src: u8 },
    Xor { dst: u8, src: u8 },
    AddShift { dst: u8, src: u8, shift: u32 },
    Mul { dst: u8, src: u8 },
    Ror { dst: u8, count: u32 },
    AddConst { dst: u8, value: u64 },
    XorConst { dst: u8, value: u64 },
    MulHigh { dst: u8, src: u8 },
    MulHighSigned { dst: u8, src: u8 },
    MulConst { dst: u8, value: u64 },
}

/// A program and the register whose value picks the next cache line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub ops: Vec<Op>,
    pub address_register: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SubR,
    XorR,
    AddRs,
    MulR,
    RorC,
    AddC,
    XorC,
    MulhR,
    SmulhR,
    MulRcp,
}

/// Execution ports as a bit set: P0, P1, P5.
const P0: u8 = 1;
const P1: u8 = 2;
const P5: u8 = 4;
const P01: u8 = P0 | P1;
const P05: u8 = P0 | P5;
const P015: u8 = P0 | P1 | P5;

/// A macro-op (table 6.2.1): latency, its micro-ops' ports (0: none), and
/// whether it waits for the macro-op before it (IMUL_RCP's multiply).
#[derive(Debug, Clone, Copy)]
struct MacroOp {
    latency: usize,
    uop1: u8,
    uop2: u8,
    dependent: bool,
}

const fn mop(latency: usize, uop1: u8, uop2: u8) -> MacroOp {
    MacroOp { latency, uop1, uop2, dependent: false }
}

const SUB_RR: MacroOp = mop(1, P015, 0);
const XOR_RR: MacroOp = mop(1, P015, 0);
const LEA_SIB: MacroOp = mop(1, P01, 0);
const IMUL_RR: MacroOp = mop(3, P1, 0);
const ROR_RI: MacroOp = mop(1, P05, 0);
const ADD_RI: MacroOp = mop(1, P015, 0);
const XOR_RI: MacroOp = mop(1, P015, 0);
const MOV_RR: MacroOp = mop(0, 0, 0);
const MUL_R: MacroOp = mop(4, P1, P5);
const MOV_RI64: MacroOp = mop(1, P015, 0);
const IMUL_RR_DEP: MacroOp = MacroOp { dependent: true, ..IMUL_RR };

/// An instruction's macro-ops and which of them writes the result and reads
/// the destination and the source (`None`: no source register).
struct Info {
    ops: &'static [MacroOp],
    result: usize,
    dst: usize,
    src: Option<usize>,
}

fn info(kind: Kind) -> Info {
    let one = |op: &'static [MacroOp], src| Info { ops: op, result: 0, dst: 0, src };
    match kind {
        Kind::SubR => one(&[SUB_RR], Some(0)),
        Kind::XorR => one(&[XOR_RR], Some(0)),
        Kind::AddRs => one(&[LEA_SIB], Some(0)),
        Kind::MulR => one(&[IMUL_RR], Some(0)),
        Kind::RorC => one(&[ROR_RI], None),
        Kind::AddC => one(&[ADD_RI], None),
        Kind::XorC => one(&[XOR_RI], None),
        Kind::MulhR | Kind::SmulhR => Info { ops: &[MOV_RR, MUL_R, MOV_RR], result: 1, dst: 0, src: Some(1) },
        Kind::MulRcp => Info { ops: &[MOV_RI64, IMUL_RR_DEP], result: 1, dst: 1, src: None },
    }
}

fn is_multiplication(kind: Kind) -> bool {
    matches!(kind, Kind::MulR | Kind::MulhR | Kind::SmulhR | Kind::MulRcp)
}

/// Decoder configurations (table 6.3.1): slot sizes of one 16-byte group.
const DECODE_484: &[usize] = &[4, 8, 4];
const DECODE_7333: &[usize] = &[7, 3, 3, 3];
const DECODE_3733: &[usize] = &[3, 7, 3, 3];
const DECODE_493: &[usize] = &[4, 9, 3];
const DECODE_4444: &[usize] = &[4, 4, 4, 4];
const DECODE_3310: &[usize] = &[3, 3, 10];
const RANDOM_DECODERS: [&[usize]; 4] = [DECODE_484, DECODE_7333, DECODE_3733, DECODE_493];

/// The next decode group (chapter 6.3.1), after an instruction of `last`.
fn next_decoder(last: Option<Kind>, cycle: usize, muls: usize, rng: &mut BlakeGenerator) -> &'static [usize] {
    if matches!(last, Some(Kind::MulhR | Kind::SmulhR)) {
        return DECODE_3310;
    }
    if muls <= cycle {
        return DECODE_4444;
    }
    if last == Some(Kind::MulRcp) {
        return if rng.byte() & 1 == 1 { DECODE_484 } else { DECODE_493 };
    }
    RANDOM_DECODERS[usize::from(rng.byte() & 3)]
}

#[derive(Debug, Clone, Copy)]
struct Register {
    /// The cycle its last result is ready.
    latency: usize,
    last_group: Option<Kind>,
    last_par: i64,
}

/// The instruction being generated.
struct Current {
    kind: Kind,
    imm: u32,
    modifier: u8,
    src: Option<u8>,
    dst: u8,
    group: Kind,
    group_par: i64,
    group_par_is_source: bool,
    can_reuse: bool,
}

impl Current {
    /// Picks an instruction whose first macro-op fits a slot (table 6.3.2)
    /// and draws its immediates.
    fn for_slot(rng: &mut BlakeGenerator, size: usize, all_fours: bool, last_slot: bool) -> Self {
        let pick = |rng: &mut BlakeGenerator, a, b| if rng.byte() & 1 == 0 { a } else { b };
        let kind = match size {
            3 if last_slot => [Kind::SubR, Kind::XorR, Kind::MulhR, Kind::SmulhR][usize::from(rng.byte() & 3)],
            3 => pick(rng, Kind::SubR, Kind::XorR),
            4 if all_fours && !last_slot => Kind::MulR,
            4 => pick(rng, Kind::RorC, Kind::AddRs),
            7..=9 => pick(rng, Kind::XorC, Kind::AddC),
            _ => Kind::MulRcp,
        };
        let mut c = Self {
            kind,
            imm: 0,
            modifier: 0,
            src: None,
            dst: 0,
            group: kind,
            group_par: -1,
            group_par_is_source: false,
            can_reuse: false,
        };
        match kind {
            Kind::SubR => (c.group, c.group_par_is_source) = (Kind::AddRs, true),
            Kind::XorR | Kind::MulR => c.group_par_is_source = true,
            Kind::AddRs => (c.modifier, c.group_par_is_source) = (rng.byte(), true),
            Kind::RorC => {
                while c.imm == 0 {
                    c.imm = u32::from(rng.byte() & 63);
                }
            }
            Kind::AddC | Kind::XorC => c.imm = rng.u32(),
            Kind::MulhR | Kind::SmulhR => {
                c.can_reuse = true;
                // The reference keeps it in an `int`.
                c.group_par = i64::from(rng.u32() as i32);
            }
            Kind::MulRcp => {
                while c.imm == 0 || c.imm.is_power_of_two() {
                    c.imm = rng.u32();
                }
            }
        }
        c
    }

    fn select_source(&mut self, cycle: usize, regs: &[Register; 8], rng: &mut BlakeGenerator) -> bool {
        let ready: Vec<u8> = (0..8u8).filter(|&i| regs[usize::from(i)].latency <= cycle).collect();
        // With two ready and one of them r5, IADD_RS takes r5 as its source:
        // it cannot be the destination.
        if ready.len() == 2 && self.kind == Kind::AddRs && ready.contains(&NEEDS_DISPLACEMENT) {
            self.src = Some(NEEDS_DISPLACEMENT);
            self.group_par = i64::from(NEEDS_DISPLACEMENT);
            return true;
        }
        let Some(src) = select(&ready, rng) else { return false };
        self.src = Some(src);
        if self.group_par_is_source {
            self.group_par = i64::from(src);
        }
        true
    }

    fn select_destination(
        &mut self,
        cycle: usize,
        chained_mul: bool,
        regs: &[Register; 8],
        rng: &mut BlakeGenerator,
    ) -> bool {
        let ready: Vec<u8> = (0..8u8)
            .filter(|&i| {
                let r = regs[usize::from(i)];
                r.latency <= cycle
                    && (self.can_reuse || Some(i) != self.src)
                    && (chained_mul || self.group != Kind::MulR || r.last_group != Some(Kind::MulR))
                    && (r.last_group != Some(self.group) || r.last_par != self.group_par)
                    && (self.kind != Kind::AddRs || i != NEEDS_DISPLACEMENT)
            })
            .collect();
        match select(&ready, rng) {
            Some(dst) => {
                self.dst = dst;
                true
            }
            None => false,
        }
    }

    fn op(&self, src: u8) -> Op {
        let dst = self.dst;
        let sign_extended = u64::from(self.imm) as i32 as i64 as u64;
        match self.kind {
            Kind::SubR => Op::Sub { dst, src },
            Kind::XorR => Op::Xor { dst, src },
            Kind::AddRs => Op::AddShift { dst, src, shift: u32::from((self.modifier >> 2) % 4) },
            Kind::MulR => Op::Mul { dst, src },
            Kind::RorC => Op::Ror { dst, count: self.imm },
            Kind::AddC => Op::AddConst { dst, value: sign_extended },
            Kind::XorC => Op::XorConst { dst, value: sign_extended },
            Kind::MulhR => Op::MulHigh { dst, src },
            Kind::SmulhR => Op::MulHighSigned { dst, src },
            Kind::MulRcp => Op::MulConst { dst, value: reciprocal(self.imm) },
        }
    }
}

fn select(ready: &[u8], rng: &mut BlakeGenerator) -> Option<u8> {
    match ready.len() {
        0 => None,
        1 => Some(ready[0]),
        n => Some(ready[rng.u32() as usize % n]),
    }
}

/// IMUL_RCP's multiplier (chapter 5.2.6): `2^x / d` for the largest `x`
/// that keeps it below 2^64, i.e. `x = 63 + bit length of d`.
pub fn reciprocal(d: u32) -> u64 {
    let bits = 32 - d.leading_zeros();
    ((1u128 << (63 + bits)) / u128::from(d)) as u64
}

/// Ports busy per cycle: [P0, P1, P5].
type Ports = [[bool; 3]; CYCLE_MAP_SIZE];

/// The first cycle from `cycle` on with a free port for a micro-op, tried
/// in the order P5, P0, P1 (chapter 6.3.3); taken when `commit`.
fn schedule_uop(uop: u8, ports: &mut Ports, from: usize, commit: bool) -> Option<usize> {
    for (cycle, busy) in ports.iter_mut().enumerate().skip(from) {
        for (bit, slot) in [(P5, 2), (P0, 0), (P1, 1)] {
            if uop & bit != 0 && !busy[slot] {
                busy[slot] |= commit;
                return Some(cycle);
            }
        }
    }
    None
}

/// The cycle a macro-op can execute from `cycle` on (both micro-ops of a
/// two-op macro-op in one cycle); its ports are taken when `commit`.
fn schedule_mop(op: MacroOp, ports: &mut Ports, mut cycle: usize, dep_cycle: usize, commit: bool) -> Option<usize> {
    if op.dependent {
        cycle = cycle.max(dep_cycle);
    }
    if op.uop1 == 0 {
        return Some(cycle);
    }
    if op.uop2 == 0 {
        return schedule_uop(op.uop1, ports, cycle, commit);
    }
    for c in cycle..CYCLE_MAP_SIZE {
        let first = schedule_uop(op.uop1, ports, c, false);
        if first.is_some() && first == schedule_uop(op.uop2, ports, c, false) {
            if commit {
                schedule_uop(op.uop1, ports, c, true);
                schedule_uop(op.uop2, ports, c, true);
            }
            return first;
        }
    }
    None
}

/// Generates one program (chapter 6.3) from the generator's next bytes.
pub fn generate(rng: &mut BlakeGenerator) -> Program {
    let mut ports: Ports = [[false; 3]; CYCLE_MAP_SIZE];
    let mut regs = [Register { latency: 0, last_group: None, last_par: -1 }; 8];
    let mut ops = Vec::with_capacity(MAX_SIZE);
    // The instruction being issued, and how many of its macro-ops are.
    let mut current: Option<Current> = None;
    let mut issued = 0usize;
    let (mut cycle, mut dep_cycle, mut muls, mut throw_away) = (0usize, 0usize, 0usize, 0u32);
    let mut saturated = false;
    let mut decode_cycle = 0;
    while decode_cycle < LATENCY && !saturated && ops.len() < MAX_SIZE {
        let decoder = next_decoder(current.as_ref().map(|c| c.kind), decode_cycle, muls, rng);
        let mut slot = 0;
        while slot < decoder.len() {
            let top_cycle = cycle;
            let size = current.as_ref().map_or(0, |c| info(c.kind).ops.len());
            if issued >= size {
                if saturated || ops.len() >= MAX_SIZE {
                    break;
                }
                let all_fours = decoder == DECODE_4444;
                current = Some(Current::for_slot(rng, decoder[slot], all_fours, slot + 1 == decoder.len()));
                issued = 0;
            }
            let Some(instr) = current.as_mut() else { break };
            let inf = info(instr.kind);
            let op = inf.ops[issued];
            let Some(mut schedule_cycle) = schedule_mop(op, &mut ports, cycle, dep_cycle, false) else {
                saturated = true;
                break;
            };
            let mut lost = false;
            if inf.src == Some(issued) {
                let mut forward = 0;
                while forward < LOOK_FORWARD_CYCLES && !instr.select_source(schedule_cycle, &regs, rng) {
                    schedule_cycle += 1;
                    cycle += 1;
                    forward += 1;
                }
                lost = forward == LOOK_FORWARD_CYCLES;
            }
            if !lost && inf.dst == issued {
                let mut forward = 0;
                while forward < LOOK_FORWARD_CYCLES
                    && !instr.select_destination(schedule_cycle, throw_away > 0, &regs, rng)
                {
                    schedule_cycle += 1;
                    cycle += 1;
                    forward += 1;
                }
                lost = forward == LOOK_FORWARD_CYCLES;
            }
            if lost {
                // No operand in time: throw the instruction away and pick
                // another for this slot, or give up on this decode group.
                if throw_away < MAX_THROWAWAY_COUNT {
                    throw_away += 1;
                    issued = inf.ops.len();
                    continue;
                }
                current = None;
                break;
            }
            throw_away = 0;
            let Some(schedule_cycle) = schedule_mop(op, &mut ports, schedule_cycle, schedule_cycle, true) else {
                saturated = true;
                break;
            };
            dep_cycle = schedule_cycle + op.latency;
            if inf.result == issued {
                regs[usize::from(instr.dst)] =
                    Register { latency: dep_cycle, last_group: Some(instr.group), last_par: instr.group_par };
            }
            slot += 1;
            issued += 1;
            if schedule_cycle >= LATENCY {
                saturated = true;
            }
            cycle = top_cycle;
            if issued >= inf.ops.len() {
                ops.push(instr.op(instr.src.unwrap_or(instr.dst)));
                muls += usize::from(is_multiplication(instr.kind));
            }
        }
        cycle += 1;
        decode_cycle += 1;
    }
    Program { address_register: address_register(&ops), ops }
}

/// The register with the longest dependency chain, counting every
/// instruction as one step (the first such register on a tie).
fn address_register(ops: &[Op]) -> usize {
    let mut depth = [0u32; 8];
    for op in ops {
        let (dst, src) = operands(*op);
        let via_dst = depth[dst] + 1;
        let via_src = if src != dst { depth[src] + 1 } else { 0 };
        depth[dst] = via_dst.max(via_src);
    }
    let mut best = 0;
    for r in 1..8 {
        if depth[r] > depth[best] {
            best = r;
        }
    }
    best
}

/// An instruction's destination and source (its destination when it has
/// no source register).
pub fn operands(op: Op) -> (usize, usize) {
    let (dst, src) = match op {
        Op::Sub { dst, src }
        | Op::Xor { dst, src }
        | Op::AddShift { dst, src, .. }
        | Op::Mul { dst, src }
        | Op::MulHigh { dst, src }
        | Op::MulHighSigned { dst, src } => (dst, src),
        Op::Ror { dst, .. } | Op::AddConst { dst, .. } | Op::XorConst { dst, .. } | Op::MulConst { dst, .. } => {
            (dst, dst)
        }
    };
    (usize::from(dst), usize::from(src))
}
