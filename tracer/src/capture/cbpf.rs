//! Classic BPF (what libpcap compiles tcpdump expressions to) translated into eBPF, so the
//! exact filter `netpath capture` runs in userspace can also run in the kernel as a tc
//! (`BPF_PROG_TYPE_SCHED_CLS`) program.
//!
//! The translation reproduces libpcap's interpreter (`bpf_filter`) on Ethernet frames:
//! - A and X live in r7 and r8, the skb context in r6, scratch memory M[0..16] on the stack
//!   at r10-72..r10-8 and an 8-byte load buffer at r10-8. Every ALU operation is 32-bit so A
//!   and X wrap like `u32` and their upper halves stay zero.
//! - Packet loads read the skb's linear data in place when the bytes are there, and otherwise
//!   go through `bpf_skb_load_bytes`, which fails past the end of the packet; like the
//!   interpreter's bounds checks, that rejects the packet.
//! - `len` is `__sk_buff.len`, the whole frame (at tc the skb data starts at the MAC header).
//! - Division or modulo by zero and out-of-range shifts give libpcap's results (reject, 0).
//!
//! Not supported: Linux ancillary loads (`k >= SKF_AD_OFF`, never in programs compiled for a
//! dead Ethernet handle) and backward jumps (libpcap's `protochain`), which eBPF's verifier
//! could not prove to terminate anyway.
use std::{
    ffi::c_long,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

/// One classic BPF instruction, laid out as libpcap's `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CbpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// One eBPF instruction (`struct bpf_insn` of linux/bpf.h: code, dst_reg:4 | src_reg:4, off,
/// imm).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EbpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl EbpfInsn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        // The bitfields `dst_reg:4, src_reg:4` start at the low bits on little-endian targets.
        #[cfg(target_endian = "little")]
        let regs = (src << 4) | (dst & 0xf);
        #[cfg(target_endian = "big")]
        let regs = (dst << 4) | (src & 0xf);
        EbpfInsn {
            code,
            regs,
            off,
            imm,
        }
    }

    /// Destination register.
    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0xf
        } else {
            self.regs >> 4
        }
    }

    /// Source register.
    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0xf
        }
    }
}

/// What the program does with a packet the filter accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnAccept {
    /// Return this value (e.g. a `TC_ACT_*` code).
    Return(i32),
    /// Tail-call `index` of the `BPF_MAP_TYPE_PROG_ARRAY` `prog_array_fd`. If the slot is
    /// empty the program returns the reject value: the packet counts as not captured. The
    /// kernel resolves the fd when the program is loaded, so it must be open until then.
    TailCall { prog_array_fd: i32, index: u32 },
}

/// Errors of translating, loading or running a filter.
#[derive(Debug, thiserror::Error)]
pub enum CbpfError {
    /// An opcode libpcap's interpreter does not run (or a scratch slot past M[15]).
    #[error("unsupported cBPF instruction {0:#06x} at {1}")]
    Unsupported(u16, usize),
    #[error("empty cBPF program")]
    Empty,
    /// More than [`MAX_CBPF_INSNS`] instructions, or a translated jump beyond eBPF's 16-bit
    /// offsets.
    #[error("cBPF program too long to translate")]
    TooLong,
    /// A jump (or the fall-through of the last instruction) leaves the program; backward
    /// jumps (libpcap's `protochain`) land here too.
    #[error("cBPF instruction {0} jumps backwards or out of the program (libpcap's protochain loops; eBPF cannot run that here)")]
    BadJump(usize),
    #[error("BPF_PROG_LOAD failed: {errno}{}", log_suffix(.log))]
    Load {
        errno: io::Error,
        /// The last lines of the verifier log.
        log: String,
    },
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(io::Error),
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier log ends:\n{log}")
    }
}

/// Longest cBPF program accepted (the kernel's limit for socket filters).
pub const MAX_CBPF_INSNS: usize = 4096;

/// Copies the instructions of a program compiled by the `pcap` crate.
pub fn from_pcap(insns: &[pcap::BpfInstruction]) -> Vec<CbpfInsn> {
    const _: () = assert!(
        std::mem::size_of::<pcap::BpfInstruction>() == std::mem::size_of::<CbpfInsn>()
            && std::mem::align_of::<pcap::BpfInstruction>() == std::mem::align_of::<CbpfInsn>()
    );
    // SAFETY: `pcap::BpfInstruction` is `#[repr(transparent)]` over libpcap's
    // `struct bpf_insn { u16 code; u8 jt; u8 jf; u32 k; }` (`#[repr(C)]` in pcap's raw
    // bindings), the same layout as `CbpfInsn` (size and alignment asserted above); every
    // bit pattern is a valid `CbpfInsn`. The slice borrows `insns` only for this copy.
    unsafe { std::slice::from_raw_parts(insns.as_ptr().cast::<CbpfInsn>(), insns.len()) }.to_vec()
}

// Classic BPF opcode fields (pcap/bpf.h).
const C_LD: u16 = 0x00;
const C_LDX: u16 = 0x01;
const C_ST: u16 = 0x02;
const C_STX: u16 = 0x03;
const C_ALU: u16 = 0x04;
const C_JMP: u16 = 0x05;
const C_RET: u16 = 0x06;
const C_MISC: u16 = 0x07;
const C_W: u16 = 0x00;
const C_H: u16 = 0x08;
const C_B: u16 = 0x10;
const C_IMM: u16 = 0x00;
const C_ABS: u16 = 0x20;
const C_IND: u16 = 0x40;
const C_MEM: u16 = 0x60;
const C_LEN: u16 = 0x80;
const C_MSH: u16 = 0xa0;
const C_K: u16 = 0x00;
const C_X: u16 = 0x08;
const C_A: u16 = 0x10;
const C_TAX: u16 = 0x00;
const C_TXA: u16 = 0x80;
const BPF_MEMWORDS: u32 = 16;
// Linux ancillary data offsets start here (SKF_AD_OFF = -0x1000).
const SKF_AD_OFF: u32 = 0xffff_f000;

// eBPF opcode fields (linux/bpf.h). ALU and jump operations use the same values as cBPF.
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const DW: u8 = 0x18;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const DIV: u8 = 0x30;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const NEG: u8 = 0x80;
const MOD: u8 = 0x90;
const MOV: u8 = 0xb0;
const END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JGE: u8 = 0x30;
const JSET: u8 = 0x40;
const JNE: u8 = 0x50;
const JLT: u8 = 0xa0;
const JLE: u8 = 0xb0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_TAIL_CALL: i32 = 12;
const HELPER_SKB_LOAD_BYTES: i32 = 26;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const CTX: u8 = 6;
const RA: u8 = 7;
const RX: u8 = 8;
const FP: u8 = 10;
/// `struct __sk_buff` fields (include/uapi/linux/bpf.h, a stable ABI).
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
/// The largest offset the verifier lets a packet pointer take (MAX_PACKET_OFF).
const MAX_PACKET_OFF: u32 = 0xffff;
/// Load buffer for `bpf_skb_load_bytes`.
const BUF_OFF: i16 = -8;
/// M[0]; M[i] is at `MEM_OFF + 4 * i`, up to the load buffer.
const MEM_OFF: i16 = BUF_OFF - 4 * BPF_MEMWORDS as i16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The first eBPF instruction of a cBPF instruction.
    Cbpf(usize),
    Accept,
    Reject,
}

#[derive(Default)]
struct Emitter {
    out: Vec<EbpfInsn>,
    /// Jumps whose offsets are patched once every block's position is known.
    fixups: Vec<(usize, Target)>,
}

impl Emitter {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.out.push(EbpfInsn::new(code, dst, src, off, imm));
    }

    /// Conditional (or `JA`) jump to a block.
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Target) {
        self.fixups.push((self.out.len(), to));
        self.op(code, dst, src, 0, imm);
    }

    fn goto(&mut self, to: Target) {
        self.jump(JMP | JA, 0, 0, 0, to);
    }

    fn mov32_imm(&mut self, dst: u8, imm: u32) {
        self.op(ALU | MOV | K, dst, 0, 0, imm as i32);
    }

    fn mov64_reg(&mut self, dst: u8, src: u8) {
        self.op(ALU64 | MOV | X, dst, src, 0, 0);
    }

    /// `dst = big-endian packet[offset .. offset + size]`, rejecting the packet if that is
    /// past its end. `ind` adds X to the offset.
    ///
    /// Bytes in the linear data (nearly always, at tc) are read in place: a helper call per
    /// load cost about 15 ns, most of the filter's time. Others go through
    /// `bpf_skb_load_bytes`, which also reads paged data.
    fn load(&mut self, dst: u8, size: u8, k: u32, ind: bool) {
        let width = match size {
            4 => W,
            2 => H,
            _ => B,
        };
        let last_start = MAX_PACKET_OFF - u32::from(size);
        let mut to_slow = Vec::new();
        let mut to_done = None;
        if k <= last_start {
            self.op(LDX | MEM | W, R2, CTX, SKB_DATA, 0);
            self.op(LDX | MEM | W, R3, CTX, SKB_DATA_END, 0);
            if ind {
                // X + k, bounded so the verifier accepts it as a packet offset.
                self.mov64_reg(R4, RX);
                self.op(ALU64 | ADD | K, R4, 0, 0, k as i32);
                to_slow.push(self.out.len());
                self.op(JMP | JGT | K, R4, 0, 0, last_start as i32);
                self.op(ALU64 | ADD | X, R2, R4, 0, 0);
            } else if k > 0 {
                self.op(ALU64 | ADD | K, R2, 0, 0, k as i32);
            }
            self.mov64_reg(R4, R2);
            self.op(ALU64 | ADD | K, R4, 0, 0, size.into());
            to_slow.push(self.out.len());
            self.op(JMP | JGT | X, R4, R3, 0, 0);
            self.op(LDX | MEM | width, dst, R2, 0, 0);
            to_done = Some(self.out.len());
            self.op(JMP | JA, 0, 0, 0, 0);
        }
        let slow = self.out.len();
        for at in to_slow {
            self.out[at].off = (slow - at - 1) as i16;
        }
        self.mov64_reg(R1, CTX);
        self.mov32_imm(R2, k);
        if ind {
            // 64-bit sum: X + k never wraps into a valid offset. The helper takes a u32 and
            // fails above INT_MAX itself, but only after truncating, so bound the sum here.
            self.op(ALU64 | ADD | X, R2, RX, 0, 0);
            self.jump(JMP | JGT | K, R2, 0, i32::MAX, Target::Reject);
        }
        self.mov64_reg(R3, FP);
        self.op(ALU64 | ADD | K, R3, 0, 0, BUF_OFF.into());
        self.op(ALU64 | MOV | K, R4, 0, 0, size.into());
        self.op(JMP | CALL, 0, 0, 0, HELPER_SKB_LOAD_BYTES);
        self.jump(JMP | JNE | K, R0, 0, 0, Target::Reject);
        self.op(LDX | MEM | width, dst, FP, BUF_OFF, 0);
        let done = self.out.len();
        if let Some(at) = to_done {
            self.out[at].off = (done - at - 1) as i16;
        }
        if size > 1 {
            self.op(ALU | END | TO_BE, dst, 0, 0, i32::from(size) * 8);
        }
    }
}

/// Successors of cBPF instruction `i` (`None` for "none", i.e. it ends the program).
/// Rejects jumps out of the program.
fn successors(prog: &[CbpfInsn], i: usize) -> Result<[Option<usize>; 2], CbpfError> {
    let insn = prog[i];
    let to = |delta: u64| -> Result<Option<usize>, CbpfError> {
        match usize::try_from(i as u64 + 1 + delta) {
            Ok(t) if t < prog.len() => Ok(Some(t)),
            _ => Err(CbpfError::BadJump(i)),
        }
    };
    let class = insn.code & 0x07;
    let op = insn.code & 0xf0;
    Ok(match class {
        C_RET => [None, None],
        C_JMP if op == 0x00 => [to(insn.k.into())?, None],
        C_JMP => [to(insn.jt.into())?, to(insn.jf.into())?],
        // Division by a constant zero always rejects: nothing after it runs.
        C_ALU
            if (op == u16::from(DIV) || op == u16::from(MOD))
                && insn.code & C_X == 0
                && insn.k == 0 =>
        {
            [None, None]
        }
        _ => [to(0)?, None],
    })
}

/// Translates a cBPF program into an eBPF program for `BPF_PROG_TYPE_SCHED_CLS` that
/// evaluates it on the frame: accepted packets (non-zero return) get `on_accept`, rejected
/// ones return `on_reject`. Unreachable cBPF instructions are dropped (the verifier refuses
/// dead code), and the accept/reject blocks are only emitted when something jumps to them.
pub fn translate(
    prog: &[CbpfInsn],
    on_accept: OnAccept,
    on_reject: i32,
) -> Result<Vec<EbpfInsn>, CbpfError> {
    if prog.is_empty() {
        return Err(CbpfError::Empty);
    }
    if prog.len() > MAX_CBPF_INSNS {
        return Err(CbpfError::TooLong);
    }
    let mut reachable = vec![false; prog.len()];
    reachable[0] = true;
    for i in 0..prog.len() {
        // Every jump is validated, reachable or not, as libpcap's validator does. Jumps only
        // go forward, so one pass sees every predecessor first.
        let next = successors(prog, i)?;
        if reachable[i] {
            for t in next.into_iter().flatten() {
                reachable[t] = true;
            }
        }
    }

    let mut em = Emitter::default();
    em.mov64_reg(CTX, R1);
    em.mov32_imm(RA, 0);
    em.mov32_imm(RX, 0);
    // Zero M[] and the load buffer so no path reads uninitialised stack.
    let mut off = MEM_OFF;
    while off < 0 {
        em.op(ST | MEM | DW, FP, 0, off, 0);
        off += 8;
    }

    let mut starts = Vec::with_capacity(prog.len());
    let mut dead = Emitter::default();
    for (i, insn) in prog.iter().enumerate() {
        starts.push(em.out.len());
        // Unreachable code is still checked for unsupported opcodes.
        let sink = if reachable[i] { &mut em } else { &mut dead };
        emit(sink, prog, i, insn)?;
    }

    let mut accept_at = None;
    let mut reject_at = None;
    if em.fixups.iter().any(|&(_, t)| t == Target::Accept) {
        accept_at = Some(em.out.len());
        match on_accept {
            OnAccept::Return(v) => {
                em.op(ALU64 | MOV | K, R0, 0, 0, v);
                em.op(JMP | EXIT, 0, 0, 0, 0);
            }
            OnAccept::TailCall {
                prog_array_fd,
                index,
            } => {
                em.mov64_reg(R1, CTX);
                // Two-slot ld_imm64; the loader replaces the fd with the map's address.
                em.op(LD | DW | IMM, R2, PSEUDO_MAP_FD, 0, prog_array_fd);
                em.op(0, 0, 0, 0, 0);
                em.mov32_imm(R3, index);
                em.op(JMP | CALL, 0, 0, 0, HELPER_TAIL_CALL);
                // Only reached if the tail call failed (empty slot).
                em.op(ALU64 | MOV | K, R0, 0, 0, on_reject);
                em.op(JMP | EXIT, 0, 0, 0, 0);
            }
        }
    }
    if em.fixups.iter().any(|&(_, t)| t == Target::Reject) {
        reject_at = Some(em.out.len());
        em.op(ALU64 | MOV | K, R0, 0, 0, on_reject);
        em.op(JMP | EXIT, 0, 0, 0, 0);
    }

    let Emitter { mut out, fixups } = em;
    for (at, to) in fixups {
        let target = match to {
            Target::Cbpf(j) => starts[j],
            // Both are set whenever a fixup names them.
            Target::Accept => accept_at.unwrap_or_default(),
            Target::Reject => reject_at.unwrap_or_default(),
        };
        let off = target as i64 - (at as i64 + 1);
        out[at].off = i16::try_from(off).map_err(|_| CbpfError::TooLong)?;
    }
    Ok(out)
}

/// Emits the eBPF for cBPF instruction `i`.
fn emit(em: &mut Emitter, prog: &[CbpfInsn], i: usize, insn: &CbpfInsn) -> Result<(), CbpfError> {
    let unsupported = || CbpfError::Unsupported(insn.code, i);
    let k = insn.k;
    let mem_off = |k: u32| -> Result<i16, CbpfError> {
        if k < BPF_MEMWORDS {
            Ok(MEM_OFF + 4 * k as i16)
        } else {
            Err(unsupported())
        }
    };
    let size = |code: u16| match code & 0x18 {
        C_W => Some(4u8),
        C_H => Some(2),
        C_B => Some(1),
        _ => None,
    };
    match insn.code {
        // Ancillary data only exists on live Linux sockets.
        c if c & 0x07 == C_LD && c & 0xe0 == C_ABS && k >= SKF_AD_OFF => return Err(unsupported()),
        c if c & 0xe7 == C_LD | C_ABS || c & 0xe7 == C_LD | C_IND => {
            let size = size(c).ok_or_else(unsupported)?;
            em.load(RA, size, k, c & 0xe0 == C_IND);
        }
        c if c == C_LD | C_W | C_LEN || c == C_LDX | C_W | C_LEN => {
            let dst = if c & 0x07 == C_LD { RA } else { RX };
            // __sk_buff.len, offset 0.
            em.op(LDX | MEM | W, dst, CTX, 0, 0);
        }
        c if c == C_LDX | C_MSH | C_B => {
            em.load(RX, 1, k, false);
            em.op(ALU | AND | K, RX, 0, 0, 0xf);
            em.op(ALU | LSH | K, RX, 0, 0, 2);
        }
        c if c == C_LD | C_IMM => em.mov32_imm(RA, k),
        c if c == C_LDX | C_IMM => em.mov32_imm(RX, k),
        c if c == C_LD | C_MEM => em.op(LDX | MEM | W, RA, FP, mem_off(k)?, 0),
        c if c == C_LDX | C_MEM => em.op(LDX | MEM | W, RX, FP, mem_off(k)?, 0),
        C_ST => em.op(STX | MEM | W, FP, RA, mem_off(k)?, 0),
        C_STX => em.op(STX | MEM | W, FP, RX, mem_off(k)?, 0),
        c if c == C_MISC | C_TAX => em.op(ALU | MOV | X, RX, RA, 0, 0),
        c if c == C_MISC | C_TXA => em.op(ALU | MOV | X, RA, RX, 0, 0),
        c if c == C_ALU | NEG as u16 => em.op(ALU | NEG, RA, 0, 0, 0),
        c if c & 0x07 == C_ALU => {
            let op = (c & 0xf0) as u8;
            let by_x = c & C_X != 0;
            if c & !0xf8 != C_ALU || !matches!(op, 0x00..=0x70 | MOD | 0xa0) {
                return Err(unsupported());
            }
            match (op, by_x) {
                (DIV | MOD, false) if k == 0 => em.goto(Target::Reject),
                (DIV | MOD, true) => {
                    em.jump(JMP32 | JEQ | K, RX, 0, 0, Target::Reject);
                    em.op(ALU | op | X, RA, RX, 0, 0);
                }
                // libpcap shifts by 32 or more give 0; eBPF would mask the count to 5 bits
                // (and its verifier refuses such constant shifts).
                (LSH | RSH, false) if k >= 32 => em.mov32_imm(RA, 0),
                (LSH | RSH, true) => {
                    em.op(JMP32 | JLT | K, RX, 0, 2, 32);
                    em.mov32_imm(RA, 0);
                    em.op(JMP | JA, 0, 0, 1, 0);
                    em.op(ALU | op | X, RA, RX, 0, 0);
                }
                (_, false) => em.op(ALU | op | K, RA, 0, 0, k as i32),
                (_, true) => em.op(ALU | op | X, RA, RX, 0, 0),
            }
        }
        c if c == C_JMP | JA as u16 => {
            let target = successors(prog, i)?[0].ok_or(CbpfError::BadJump(i))?;
            if target != i + 1 {
                em.goto(Target::Cbpf(target));
            }
        }
        c if c & 0x07 == C_JMP => {
            let op = (c & 0xf0) as u8;
            if c & !0xf8 != C_JMP || !matches!(op, JEQ | JGT | JGE | JSET) {
                return Err(unsupported());
            }
            let (src, imm) = if c & C_X != 0 { (RX, 0) } else { (0, k as i32) };
            let code = JMP32 | op | (c & C_X) as u8;
            let t = i + 1 + usize::from(insn.jt);
            let f = i + 1 + usize::from(insn.jf);
            // eBPF jumps have one target: `if cond goto T; goto F`, dropping whatever falls
            // through to the next instruction anyway.
            if t == f {
                if t != i + 1 {
                    em.goto(Target::Cbpf(t));
                }
            } else if t == i + 1 && op != JSET {
                // JEQ/JGT/JGE have eBPF inverses; JSET does not.
                let inverse = match op {
                    JEQ => JNE,
                    JGT => JLE,
                    _ => JLT,
                };
                em.jump(
                    JMP32 | inverse | (c & C_X) as u8,
                    RA,
                    src,
                    imm,
                    Target::Cbpf(f),
                );
            } else {
                em.jump(code, RA, src, imm, Target::Cbpf(t));
                if f != i + 1 {
                    em.goto(Target::Cbpf(f));
                }
            }
        }
        c if c == C_RET | C_K => em.goto(if k != 0 {
            Target::Accept
        } else {
            Target::Reject
        }),
        c if c == C_RET | C_A => {
            em.jump(JMP32 | JNE | K, RA, 0, 0, Target::Accept);
            em.goto(Target::Reject);
        }
        _ => return Err(unsupported()),
    }
    Ok(())
}

/// Puts the capture filter into `PCAP_PROGS`: slot 1 `tc_pcap_matched`, slot 0 the filter
/// translated to eBPF, which tail-calls slot 1 for the packets it accepts and otherwise lets
/// the packet go on (TC_ACT_UNSPEC). The map holds the programs until it is closed. Public
/// for tests that load the object themselves; `NodeTracer::start_raw` calls it for
/// `TracerSpec::capture_filter` and then sets `Config::pcap_filter`.
pub fn install_in_kernel(ebpf: &mut aya::Ebpf, filter: &[CbpfInsn]) -> Result<(), String> {
    use std::os::fd::{AsFd, AsRawFd};
    let matched: &mut aya::programs::SchedClassifier = ebpf
        .program_mut("tc_pcap_matched")
        .ok_or("tc_pcap_matched missing from the kernel object")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    matched
        .load()
        .map_err(|e| format!("tc_pcap_matched: {e}"))?;
    let matched_fd = matched
        .fd()
        .map_err(|e| e.to_string())?
        .try_clone()
        .map_err(|e| e.to_string())?;
    let Some(aya::maps::Map::ProgramArray(progs)) = ebpf.map("PCAP_PROGS") else {
        return Err("PCAP_PROGS map missing".into());
    };
    let map = progs.fd().as_fd();
    let ebpf_insns = translate(
        filter,
        OnAccept::TailCall {
            prog_array_fd: map.as_raw_fd(),
            index: 1,
        },
        -1, // TC_ACT_UNSPEC: on to the next program
    )
    .map_err(|e| e.to_string())?;
    let filter_prog = load_sched_cls(&ebpf_insns, "pcap_filter").map_err(|e| e.to_string())?;
    set_prog_array_slot(map, 1, matched_fd.as_fd()).map_err(|e| e.to_string())?;
    set_prog_array_slot(map, 0, filter_prog.as_fd()).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
const BPF_MAP_CREATE: c_long = 0;
const BPF_MAP_UPDATE_ELEM: c_long = 2;
const BPF_PROG_LOAD: c_long = 5;
const BPF_PROG_TEST_RUN: c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const LOG_SIZE: usize = 64 * 1024;
const LOG_LINES: usize = 20;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`; the kernel takes a shorter union as long
/// as the tail it does not see is zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 7],
}

/// The `BPF_MAP_*_ELEM` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `BPF_PROG_TEST_RUN` part of `union bpf_attr` (`test`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `bpf(cmd, attr)`; returns the non-negative result or errno.
fn sys_bpf<T>(cmd: c_long, attr: &mut T) -> io::Result<c_long> {
    // SAFETY: `attr` is a valid, writable #[repr(C)] prefix of `union bpf_attr` for `cmd`
    // whose pointer fields point to memory the caller keeps alive; the size passed is its
    // own, and the kernel zero-extends it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor a `bpf()` call returned.
fn owned_fd(ret: c_long) -> OwnedFd {
    // SAFETY: `ret` is a fresh descriptor the kernel just returned; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// Loads a `BPF_PROG_TYPE_SCHED_CLS` program (license "GPL"). `name` is cut to 15 bytes and
/// characters the kernel refuses become `_`. On failure the error carries the last lines of
/// the verifier log.
pub fn load_sched_cls(insns: &[EbpfInsn], name: &str) -> Result<OwnedFd, CbpfError> {
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| CbpfError::TooLong)?;
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    for (d, c) in prog_name[..15].iter_mut().zip(name.bytes()) {
        *d = if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            c
        } else {
            b'_'
        };
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    let errno = match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => return Ok(owned_fd(fd)),
        Err(e) => e,
    };
    // Load again only to get the verifier's explanation; the first errno is the answer.
    let mut log = vec![0u8; LOG_SIZE];
    attr.log_level = 1;
    attr.log_size = LOG_SIZE as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    if let Ok(fd) = sys_bpf(BPF_PROG_LOAD, &mut attr) {
        return Ok(owned_fd(fd));
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text.lines().collect();
    let log = lines[lines.len().saturating_sub(LOG_LINES)..].join("\n");
    Err(CbpfError::Load { errno, log })
}

/// Puts `prog` into slot `index` of the `BPF_MAP_TYPE_PROG_ARRAY` `map` (the tail-call
/// target of [`OnAccept::TailCall`]).
pub fn set_prog_array_slot(
    map: BorrowedFd<'_>,
    index: u32,
    prog: BorrowedFd<'_>,
) -> io::Result<()> {
    let key = index;
    let value = prog.as_raw_fd() as u32;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Runs a loaded program once on `frame` (an Ethernet frame, at least 14 bytes) with
/// `BPF_PROG_TEST_RUN` and returns its return value. The kernel refuses (EINVAL) IPv4 and
/// IPv6 frames too short to hold their network header.
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> Result<i32, CbpfError> {
    const ETH_HLEN: usize = 14;
    if frame.len() < ETH_HLEN {
        return Err(CbpfError::TestRun(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame shorter than an Ethernet header",
        )));
    }
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: u32::try_from(frame.len())
            .map_err(|_| CbpfError::TestRun(io::ErrorKind::InvalidInput.into()))?,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(CbpfError::TestRun)?;
    Ok(attr.retval as i32)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use etherparse::{err::packet::BuildWriteError, PacketBuilder, VlanId};
    use pcap::{Capture, Linktype};

    use super::*;

    /// `BPF_MAP_CREATE` fields used by the tests.
    #[repr(C)]
    #[derive(Default)]
    struct MapCreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        _rest: [u32; 14],
    }

    fn c(code: u16, jt: u8, jf: u8, k: u32) -> CbpfInsn {
        CbpfInsn { code, jt, jf, k }
    }

    const RET_K: u16 = C_RET | C_K;
    const LDH_ABS: u16 = C_LD | C_H | C_ABS;
    const JEQ_K: u16 = C_JMP | 0x10;

    /// Prologue length: r6 = r1, A = X = 0, nine zeroing stores.
    const PROLOGUE: usize = 12;

    fn jump_target(prog: &[EbpfInsn], at: usize) -> usize {
        (at as i64 + 1 + i64::from(prog[at].off)) as usize
    }

    fn is_exit_with(prog: &[EbpfInsn], at: usize, r0: i32) -> bool {
        prog[at] == EbpfInsn::new(ALU64 | MOV | K, R0, 0, 0, r0)
            && prog[at + 1] == EbpfInsn::new(JMP | EXIT, 0, 0, 0, 0)
    }

    #[test]
    fn ret_zero_is_only_the_reject_block() {
        let out = translate(&[c(RET_K, 0, 0, 0)], OnAccept::Return(1), 7).unwrap();
        assert_eq!(out.len(), PROLOGUE + 3);
        assert_eq!(out[0], EbpfInsn::new(ALU64 | MOV | X, CTX, R1, 0, 0));
        assert_eq!(out[PROLOGUE].code, JMP | JA);
        assert_eq!(jump_target(&out, PROLOGUE), PROLOGUE + 1);
        assert!(is_exit_with(&out, PROLOGUE + 1, 7));
    }

    #[test]
    fn ethertype_test_jumps_resolve() {
        // ld [12]; jeq #0x800 jt 0 jf 1; ret #1; ret #0
        let prog = [
            c(LDH_ABS, 0, 0, 12),
            c(JEQ_K, 0, 1, 0x800),
            c(RET_K, 0, 0, 1),
            c(RET_K, 0, 0, 0),
        ];
        let out = translate(&prog, OnAccept::Return(42), 0).unwrap();
        let call = out
            .iter()
            .position(|i| i.code == JMP | CALL)
            .expect("helper call");
        assert_eq!(out[call].imm, HELPER_SKB_LOAD_BYTES);
        assert_eq!(out[call - 1].imm, 2, "two bytes");
        assert_eq!(out[call - 4].imm, 12, "offset 12");
        // Load failure goes to the reject block.
        let fail = call + 1;
        assert_eq!(out[fail].code, JMP | JNE | K);
        assert!(is_exit_with(&out, jump_target(&out, fail), 0));
        assert_eq!(out[fail + 2].code, ALU | END | TO_BE);
        // jt is the next instruction: a single inverted jump to `ret #0`.
        let jeq = fail + 3;
        assert_eq!(out[jeq].code, JMP32 | JNE | K);
        assert_eq!(out[jeq].imm, 0x800);
        assert_eq!(out[jeq].dst(), RA);
        let ret0 = jump_target(&out, jeq);
        let ret1 = jeq + 1;
        assert!(is_exit_with(&out, jump_target(&out, ret1), 42));
        assert!(is_exit_with(&out, jump_target(&out, ret0), 0));
        assert_eq!(out.len(), ret0 + 1 + 4);
    }

    #[test]
    fn both_branches_taken_when_neither_is_next() {
        // ld #5; jgt x jt 1 jf 2; ret #0; ret #1; ret #0
        let prog = [
            c(C_LD | C_IMM, 0, 0, 5),
            c(C_JMP | 0x20 | C_X, 1, 2, 0),
            c(RET_K, 0, 0, 0),
            c(RET_K, 0, 0, 1),
            c(RET_K, 0, 0, 0),
        ];
        let out = translate(&prog, OnAccept::Return(1), 0).unwrap();
        let j = PROLOGUE + 1;
        assert_eq!(out[j].code, JMP32 | JGT | X);
        assert_eq!((out[j].dst(), out[j].src()), (RA, RX));
        // The first `ret #0` is unreachable, so nothing is emitted for it.
        assert_eq!(jump_target(&out, j), j + 2, "jt -> ret #1");
        assert_eq!(out[j + 1].code, JMP | JA);
        assert_eq!(jump_target(&out, j + 1), j + 3, "jf -> second ret #0");
        assert!(is_exit_with(&out, jump_target(&out, j + 2), 1));
        assert!(is_exit_with(&out, jump_target(&out, j + 3), 0));
    }

    #[test]
    fn tail_call_block_uses_two_slot_map_load() {
        let out = translate(
            &[c(RET_K, 0, 0, 0xffff)],
            OnAccept::TailCall {
                prog_array_fd: 33,
                index: 5,
            },
            2,
        )
        .unwrap();
        let ld = out.iter().position(|i| i.code == LD | DW | IMM).unwrap();
        assert_eq!(
            (out[ld].dst(), out[ld].src(), out[ld].imm),
            (R2, PSEUDO_MAP_FD, 33)
        );
        assert_eq!(out[ld + 1], EbpfInsn::new(0, 0, 0, 0, 0));
        assert_eq!(out[ld - 1], EbpfInsn::new(ALU64 | MOV | X, R1, CTX, 0, 0));
        assert_eq!(out[ld + 2], EbpfInsn::new(ALU | MOV | K, R3, 0, 0, 5));
        assert_eq!(
            out[ld + 3],
            EbpfInsn::new(JMP | CALL, 0, 0, 0, HELPER_TAIL_CALL)
        );
        assert!(is_exit_with(&out, ld + 4, 2));
        assert_eq!(out.len(), ld + 6, "no reject block: nothing rejects");
    }

    #[test]
    fn bad_programs_are_errors() {
        let ret = c(RET_K, 0, 0, 1);
        let run = |p: &[CbpfInsn]| translate(p, OnAccept::Return(1), 0);
        assert!(matches!(run(&[]), Err(CbpfError::Empty)));
        assert!(matches!(
            run(&[c(JEQ_K, 0, 5, 1), ret]),
            Err(CbpfError::BadJump(0))
        ));
        assert!(matches!(
            run(&[c(C_JMP, 0, 0, u32::MAX), ret]),
            Err(CbpfError::BadJump(0))
        ));
        // Falls off the end.
        assert!(matches!(
            run(&[c(LDH_ABS, 0, 0, 12)]),
            Err(CbpfError::BadJump(0))
        ));
        assert!(matches!(
            run(&[c(0xff, 0, 0, 0), ret]),
            Err(CbpfError::Unsupported(0xff, 0))
        ));
        // ret x, M[16], ancillary load, ldx [k] (only msh exists for LDX), neg by x.
        for bad in [
            c(C_RET | C_X, 0, 0, 0),
            c(C_ST, 0, 0, 16),
            c(C_LD | C_B | C_ABS, 0, 0, SKF_AD_OFF + 44),
            c(C_LDX | C_B | C_ABS, 0, 0, 1),
            c(C_ALU | 0x80 | C_X, 0, 0, 0),
            c(C_JMP | 0x50, 0, 0, 0),
        ] {
            assert!(
                matches!(run(&[ret, bad, ret]), Err(CbpfError::Unsupported(code, 1)) if code == bad.code),
                "{bad:?}"
            );
        }
        assert!(matches!(
            run(&vec![ret; MAX_CBPF_INSNS + 1]),
            Err(CbpfError::TooLong)
        ));
    }

    #[test]
    fn long_jumps_past_i16_are_too_long() {
        // ld #1; jeq #1 jt 0 jf 1; ja L; 4000 x ldb [x + 0]; L: ret #0. Each byte IND load
        // is 10 eBPF instructions, so the `ja` (and the loads' reject jumps) exceed 32767.
        let mut prog = vec![
            c(C_LD | C_IMM, 0, 0, 1),
            c(JEQ_K, 0, 1, 1),
            c(C_JMP, 0, 0, 4000),
        ];
        prog.extend(std::iter::repeat_n(c(C_LD | C_B | C_IND, 0, 0, 0), 4000));
        prog.push(c(RET_K, 0, 0, 0));
        assert!(matches!(
            translate(&prog, OnAccept::Return(1), 0),
            Err(CbpfError::TooLong)
        ));
    }

    #[test]
    fn dead_code_is_dropped() {
        // ld #1; div #0 (always rejects); ret a (unreachable)
        let prog = [
            c(C_LD | C_IMM, 0, 0, 1),
            c(C_ALU | DIV as u16, 0, 0, 0),
            c(C_RET | C_A, 0, 0, 0),
        ];
        let out = translate(&prog, OnAccept::Return(1), 0).unwrap();
        assert_eq!(out.len(), PROLOGUE + 1 + 1 + 2);
        assert!(!out.iter().any(|i| i.code == JMP32 | JNE | K), "no ret a");
        // A JA skipping an instruction leaves it out too.
        let prog = [c(C_JMP, 0, 0, 1), c(C_ST, 0, 0, 99), c(RET_K, 0, 0, 1)];
        assert!(matches!(
            translate(&prog, OnAccept::Return(1), 0),
            Err(CbpfError::Unsupported(C_ST, 1))
        ));
        let prog = [c(C_JMP, 0, 0, 1), c(C_ST, 0, 0, 3), c(RET_K, 0, 0, 1)];
        let out = translate(&prog, OnAccept::Return(1), 0).unwrap();
        assert_eq!(out.len(), PROLOGUE + 2 + 2);
    }

    #[test]
    fn from_pcap_matches_libpcap_fields() {
        let dead = Capture::dead(Linktype::ETHERNET).unwrap();
        let prog = dead.compile("tcp port 80 or udp", true).unwrap();
        let ours = from_pcap(prog.get_instructions());
        assert!(ours.len() > 5);
        for (p, o) in prog.get_instructions().iter().zip(&ours) {
            // pcap's Display prints "code jt jf k".
            assert_eq!(
                p.to_string(),
                format!("{} {} {} {}", o.code, o.jt, o.jf, o.k)
            );
        }
    }

    // ---- Real kernel ----

    // Same declaration as filter.rs (identical signatures, or rustc warns of a clash).
    extern "C" {
        fn bpf_filter(
            pc: *const std::ffi::c_void,
            pkt: *const u8,
            wirelen: std::ffi::c_uint,
            buflen: std::ffi::c_uint,
        ) -> std::ffi::c_uint;
    }

    /// libpcap's verdict on a program (which must end in a `ret`, as validated ones do).
    fn libpcap_accepts(prog: &[CbpfInsn], frame: &[u8]) -> bool {
        let len = frame.len() as u32;
        // SAFETY: every program passed here is terminated by `ret` on every path, so the
        // interpreter stays inside `prog`; it bounds-checks loads against `len`.
        unsafe { bpf_filter(prog.as_ptr().cast(), frame.as_ptr(), len, len) != 0 }
    }

    const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn v6(last: u16) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xfd, 0x00]);
        a[14..].copy_from_slice(&last.to_be_bytes());
        a
    }

    fn build(
        b: impl FnOnce(&mut Vec<u8>, &[u8]) -> Result<(), BuildWriteError>,
        payload: usize,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        b(&mut v, &vec![0xab; payload]).unwrap();
        v
    }

    fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        build(
            |v, p| {
                PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                    .ipv4(src, dst, 64)
                    .udp(sport, dport)
                    .write(v, p)
            },
            payload,
        )
    }

    fn frames() -> Vec<(&'static str, Vec<u8>)> {
        let mut f: Vec<(&'static str, Vec<u8>)> = Vec::new();
        let udp9999 = udp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 9999, 32);
        f.push(("udp4 9999", udp9999.clone()));
        f.push((
            "udp4 dns",
            udp4([10, 1, 2, 3], [192, 168, 0, 1], 53, 40001, 60),
        ));
        f.push((
            "udp4 vxlan",
            udp4([192, 168, 0, 7], [10, 1, 9, 9], 51000, 8472, 8),
        ));
        let tcp4 = |src, dst, sport, dport, flags: &str, payload| {
            build(
                |v, p| {
                    let b = PacketBuilder::ethernet2(OTHER_MAC, DST_MAC)
                        .ipv4(src, dst, 128)
                        .tcp(sport, dport, 1000, 64000);
                    match flags {
                        "S" => b.syn().write(v, p),
                        "SA" => b.syn().ack(7).write(v, p),
                        _ => b.ack(7).write(v, p),
                    }
                },
                payload,
            )
        };
        f.push((
            "tcp4 syn",
            tcp4([10, 1, 0, 5], [10, 0, 0, 1], 33000, 80, "S", 0),
        ));
        f.push((
            "tcp4 synack",
            tcp4([10, 0, 0, 1], [10, 1, 0, 5], 80, 33000, "SA", 0),
        ));
        f.push((
            "tcp4 ack",
            tcp4([10, 1, 200, 5], [172, 16, 0, 1], 5000, 443, "A", 200),
        ));
        f.push((
            "icmp4",
            build(
                |v, p| {
                    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                        .ipv4([10, 0, 0, 1], [8, 8, 8, 8], 3)
                        .icmpv4_echo_request(1, 2)
                        .write(v, p)
                },
                16,
            ),
        ));
        f.push((
            "udp6 dns",
            build(
                |v, p| {
                    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                        .ipv6(v6(1), v6(2), 64)
                        .udp(53, 5353)
                        .write(v, p)
                },
                20,
            ),
        ));
        let tcp6 = build(
            |v, p| {
                PacketBuilder::ethernet2(OTHER_MAC, DST_MAC)
                    .ipv6(v6(3), v6(4), 64)
                    .tcp(40000, 80, 1, 1000)
                    .syn()
                    .write(v, p)
            },
            0,
        );
        f.push(("tcp6 80 syn", tcp6.clone()));
        let icmp6 = build(
            |v, p| {
                PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                    .ipv6(v6(5), v6(6), 255)
                    .icmpv6_echo_request(9, 9)
                    .write(v, p)
            },
            8,
        );
        f.push(("icmp6", icmp6.clone()));
        // Hop-by-hop options (8 bytes: next header, length 0, PadN of 4) before ICMPv6.
        let mut hbh = icmp6.clone();
        hbh[14 + 6] = 0;
        let plen = u16::from_be_bytes([hbh[18], hbh[19]]) + 8;
        hbh[18..20].copy_from_slice(&plen.to_be_bytes());
        hbh.splice(54..54, [58, 0, 1, 4, 0, 0, 0, 0]);
        f.push(("icmp6 hop-by-hop", hbh));
        f.push((
            "vlan udp",
            build(
                |v, p| {
                    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                        .single_vlan(VlanId::try_new(100).unwrap())
                        .ipv4([10, 0, 0, 1], [10, 0, 0, 3], 64)
                        .udp(1000, 9999)
                        .write(v, p)
                },
                24,
            ),
        ));
        f.push((
            "vlan tcp",
            build(
                |v, p| {
                    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                        .single_vlan(VlanId::try_new(7).unwrap())
                        .ipv4([10, 0, 0, 4], [10, 0, 0, 3], 64)
                        .tcp(1000, 80, 5, 5)
                        .syn()
                        .write(v, p)
                },
                24,
            ),
        ));
        // ARP request who-has 10.0.0.1.
        let mut arp = Vec::new();
        arp.extend_from_slice(&[0xff; 6]);
        arp.extend_from_slice(&SRC_MAC);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&SRC_MAC);
        arp.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        arp.resize(60, 0);
        f.push(("arp", arp));
        // A later fragment of a UDP datagram: its "ports" are payload bytes.
        let mut frag = udp9999.clone();
        frag[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
        f.push(("udp4 fragment", frag));
        // IPv4 with 4 bytes of options (NOP NOP NOP EOL): the UDP header moves by 4.
        let mut opts = udp9999.clone();
        opts[14] = 0x46;
        let tot = u16::from_be_bytes([opts[16], opts[17]]) + 4;
        opts[16..18].copy_from_slice(&tot.to_be_bytes());
        opts.splice(34..34, [1, 1, 1, 0]);
        f.push(("udp4 options", opts));
        // Broadcast, padded to the Ethernet minimum.
        let mut bcast = udp4([10, 0, 0, 9], [10, 0, 0, 255], 138, 138, 1);
        bcast[..6].copy_from_slice(&[0xff; 6]);
        f.push(("udp4 broadcast", bcast.clone()));
        bcast.resize(60, 0);
        f.push(("udp4 broadcast padded", bcast));
        // BPF_PROG_TEST_RUN refuses (EINVAL) IPv4/IPv6 frames shorter than their network
        // header, so frames cut shorter than that carry a VLAN tag or ARP instead.
        let vlan_udp = f.iter().find(|(n, _)| *n == "vlan udp").unwrap().1.clone();
        let arp = f.iter().find(|(n, _)| *n == "arp").unwrap().1.clone();
        for len in [14, 15, 16, 17, 18, 19, 20, 24, 37, 38, 41, 45] {
            f.push(("truncated vlan udp", vlan_udp[..len].to_vec()));
        }
        for len in [14, 15, 20, 30, 41] {
            f.push(("truncated arp", arp[..len].to_vec()));
        }
        for len in [34, 35, 36, 37, 40, 41] {
            f.push(("truncated udp4", udp9999[..len].to_vec()));
        }
        for len in [54, 55, 60, 66] {
            f.push(("truncated tcp6", tcp6[..len].to_vec()));
        }
        f
    }

    const EXPRESSIONS: &[&str] = &[
        "ip",
        "ip6",
        "udp port 9999",
        "host 10.0.0.1",
        "net 10.1.0.0/16 and tcp",
        "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
        "icmp6",
        "vlan and udp",
        "ip6 and tcp port 80",
        "not arp and (udp or icmp)",
        "greater 100",
        "less 80",
        "ip[6:2] & 0x1fff = 0",
        "ip6 proto 58",
        "len >= 60 and ether src 02:00:00:00:00:01",
        "port 53 or port 8472",
        "ip and ip[2:2] / 4 > 10",
        "ether broadcast",
        "arp",
        "icmp",
        "tcp",
        "ip[0] & 0xf != 5",
        "udp and udp[4:2] > 20",
        "ip[8] > ip[9]",
        "ip[8] * 2 - 1 > 100",
        "ip[0] % 16 = 6",
        "ip[2:2] / ip[8] > 10",
        "ip[2:2] % (ip[9] - 17) = ip[2:2]",
        "ip[2:2] / (ip[9] - 17) = 0",
        "ip[0] << (ip[9] + 20) != 0",
        "ip[0] >> (ip[9] - 3) = 0",
        "ip[2:2] >> 2 = 15 or ip[3] << 1 > 60",
        "ip[9] ^ 17 = 0 or ip[8] | 1 = 65",
        "ip and -ip[8] < 0xffffffc0",
        "ip[ip[0] & 0xf] != 0xff",
        "udp[len - 20 - 14 - 8 - 1] = 0xab",
        "tcp portrange 70-90 or udp src portrange 50-60",
        "vlan 100 and udp port 9999",
        "ip6 and ip6[40] = 58",
        "ether[12:2] = 0x86dd",
    ];

    /// Loads `prog` translated with Return(1)/0.
    fn load(prog: &[CbpfInsn], what: &str) -> OwnedFd {
        let ebpf = translate(prog, OnAccept::Return(1), 0)
            .unwrap_or_else(|e| panic!("translating {what}: {e}"));
        load_sched_cls(&ebpf, "netpath_test").unwrap_or_else(|e| panic!("loading {what}: {e}"))
    }

    #[test]
    #[ignore = "needs root (BPF_PROG_LOAD); scripts/test runs it"]
    fn kernel_verdicts_match_libpcap() {
        let frames = frames();
        let dead = Capture::dead(Linktype::ETHERNET).unwrap();
        for expr in EXPRESSIONS {
            let compiled = dead
                .compile(expr, true)
                .unwrap_or_else(|e| panic!("{expr}: {e}"));
            let prog = from_pcap(compiled.get_instructions());
            let fd = load(&prog, expr);
            let (mut accepted, mut rejected) = (0, 0);
            for (name, frame) in &frames {
                let want = compiled.filter(frame);
                assert_eq!(want, libpcap_accepts(&prog, frame), "{expr} on {name}");
                let got = test_run(fd.as_fd(), frame)
                    .unwrap_or_else(|e| panic!("{name} ({} bytes): {e}", frame.len()));
                assert_eq!(
                    got != 0,
                    want,
                    "'{expr}' on {name} ({} bytes): kernel {got}, libpcap {want}",
                    frame.len()
                );
                if want {
                    accepted += 1;
                } else {
                    rejected += 1;
                }
            }
            assert!(
                accepted > 0 && rejected > 0,
                "'{expr}' is vacuous: {accepted} accepted, {rejected} rejected"
            );
        }
    }

    #[test]
    #[ignore = "needs root (BPF_PROG_LOAD); scripts/test runs it"]
    fn kernel_matches_libpcap_on_edge_cases() {
        // Hand-written programs for what libpcap's compiler rarely emits. Each ends with
        // `ret a` so the verdict is A != 0.
        const RET_A: CbpfInsn = CbpfInsn {
            code: C_RET | C_A,
            jt: 0,
            jf: 0,
            k: 0,
        };
        let ldx = |k| c(C_LDX | C_IMM, 0, 0, k);
        let ld = |k| c(C_LD | C_IMM, 0, 0, k);
        let alu_x = |op: u8| c(C_ALU | u16::from(op) | C_X, 0, 0, 0);
        let alu_k = |op: u8, k| c(C_ALU | u16::from(op), 0, 0, k);
        let cases: Vec<(&str, Vec<CbpfInsn>)> = vec![
            ("div by x = 0", vec![ld(8), ldx(0), alu_x(DIV), RET_A]),
            ("div by x", vec![ld(8), ldx(3), alu_x(DIV), RET_A]),
            ("mod by x = 0", vec![ld(8), ldx(0), alu_x(MOD), RET_A]),
            ("mod by x", vec![ld(8), ldx(3), alu_x(MOD), RET_A]),
            ("lsh by x = 32", vec![ld(8), ldx(32), alu_x(LSH), RET_A]),
            ("lsh by x = 33", vec![ld(8), ldx(33), alu_x(LSH), RET_A]),
            ("rsh by x = 40", vec![ld(0x80), ldx(40), alu_x(RSH), RET_A]),
            ("rsh by x = 3", vec![ld(0x80), ldx(3), alu_x(RSH), RET_A]),
            ("lsh by 31", vec![ld(3), alu_k(LSH, 31), RET_A]),
            ("neg", vec![ld(5), c(C_ALU | 0x80, 0, 0, 0), RET_A]),
            ("sub wraps", vec![ld(5), alu_k(0x10, 6), RET_A]),
            ("mul wraps", vec![ld(0x10000), alu_k(0x20, 0x10000), RET_A]),
            (
                "div unsigned",
                vec![ld(0xffff_fff0), alu_k(DIV, 0x8000_0000), RET_A],
            ),
            ("len", vec![c(C_LD | C_W | C_LEN, 0, 0, 0), RET_A]),
            (
                "ldx len, txa, sub k",
                vec![
                    c(C_LDX | C_W | C_LEN, 0, 0, 0),
                    c(C_MISC | C_TXA, 0, 0, 0),
                    alu_k(0x10, 42),
                    RET_A,
                ],
            ),
            (
                "scratch memory",
                vec![
                    ld(7),
                    c(C_ST, 0, 0, 15),
                    ldx(9),
                    c(C_STX, 0, 0, 0),
                    ld(0),
                    c(C_LDX | C_MEM, 0, 0, 15),
                    c(C_LD | C_MEM, 0, 0, 0),
                    alu_x(0x10),
                    RET_A,
                ],
            ),
            (
                // Wraps to offset 14 (0x45) in 32 bits: libpcap rejects the overflow.
                "ind with x + k overflowing",
                vec![ldx(0xffff_fff0), c(C_LD | C_B | C_IND, 0, 0, 0x1e), RET_A],
            ),
            (
                "ind with huge x",
                vec![ldx(0x8000_0000), c(C_LD | C_B | C_IND, 0, 0, 0), RET_A],
            ),
            (
                "ind word at the end",
                vec![ldx(10), c(C_LD | C_W | C_IND, 0, 0, 40), RET_A],
            ),
            (
                "ind half past the end",
                vec![ldx(10), c(C_LD | C_H | C_IND, 0, 0, 43), RET_A],
            ),
            (
                "abs at 0x7fffffff",
                vec![c(C_LD | C_B | C_ABS, 0, 0, 0x7fff_ffff), RET_A],
            ),
            (
                "abs at 0x80000000",
                vec![c(C_LD | C_B | C_ABS, 0, 0, 0x8000_0000), RET_A],
            ),
            (
                "msh",
                vec![
                    c(C_LDX | C_MSH | C_B, 0, 0, 14),
                    c(C_MISC | C_TXA, 0, 0, 0),
                    RET_A,
                ],
            ),
            (
                "jset x, jge x, ja",
                vec![
                    ld(0x30),
                    ldx(0x10),
                    c(C_JMP | 0x40 | C_X, 1, 0, 0),
                    RET_A,
                    c(C_JMP | 0x30 | C_X, 0, 3, 0),
                    c(C_JMP, 0, 0, 1),
                    c(RET_K, 0, 0, 0),
                    c(RET_K, 0, 0, 9),
                    c(RET_K, 0, 0, 0),
                ],
            ),
            (
                "jgt k unsigned",
                vec![
                    ld(0x8000_0000),
                    c(JEQ_K + 0x10, 1, 0, 1),
                    c(RET_K, 0, 0, 0),
                    c(RET_K, 0, 0, 1),
                ],
            ),
            (
                "jset k, jt next",
                vec![
                    ld(0x0f),
                    c(C_JMP | 0x40, 0, 1, 0xf0),
                    c(RET_K, 0, 0, 1),
                    c(RET_K, 0, 0, 0),
                ],
            ),
        ];
        let frame = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 12);
        assert_eq!(frame.len(), 54);
        let (mut accepted, mut rejected) = (0, 0);
        for (what, prog) in &cases {
            let fd = load(prog, what);
            let want = libpcap_accepts(prog, &frame);
            let got = test_run(fd.as_fd(), &frame).unwrap();
            assert_eq!(got != 0, want, "{what}: kernel {got}, libpcap {want}");
            if want {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
        assert!(accepted > 5 && rejected > 5, "{accepted} {rejected}");
    }

    #[test]
    #[ignore = "needs root (BPF_PROG_LOAD); scripts/test runs it"]
    fn tail_call_with_empty_slot_returns_reject_value() {
        let mut attr = MapCreateAttr {
            map_type: 3, // BPF_MAP_TYPE_PROG_ARRAY
            key_size: 4,
            value_size: 4,
            max_entries: 2,
            ..Default::default()
        };
        let map = owned_fd(sys_bpf(BPF_MAP_CREATE, &mut attr).expect("BPF_MAP_CREATE"));
        let dead = Capture::dead(Linktype::ETHERNET).unwrap();
        let compiled = dead.compile("udp port 9999", true).unwrap();
        let prog = translate(
            &from_pcap(compiled.get_instructions()),
            OnAccept::TailCall {
                prog_array_fd: map.as_raw_fd(),
                index: 0,
            },
            5,
        )
        .unwrap();
        let fd = load_sched_cls(&prog, "netpath tail/call").unwrap();
        let hit = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 9999, 4);
        let miss = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 9998, 4);
        assert!(compiled.filter(&hit) && !compiled.filter(&miss));
        // Empty slot: the tail call fails and the program returns the reject value.
        assert_eq!(test_run(fd.as_fd(), &hit).unwrap(), 5);
        assert_eq!(test_run(fd.as_fd(), &miss).unwrap(), 5);
        // With a program in the slot, accepted packets run it.
        let target = translate(&[c(RET_K, 0, 0, 1)], OnAccept::Return(77), 0).unwrap();
        let target = load_sched_cls(&target, "target").unwrap();
        set_prog_array_slot(map.as_fd(), 0, target.as_fd()).unwrap();
        assert_eq!(test_run(fd.as_fd(), &hit).unwrap(), 77);
        assert_eq!(test_run(fd.as_fd(), &miss).unwrap(), 5);
        assert!(set_prog_array_slot(map.as_fd(), 2, target.as_fd()).is_err());
        drop(fd);
        drop(map);
        drop(target);
    }

    #[test]
    #[ignore = "needs root (BPF_PROG_LOAD); scripts/test runs it"]
    fn load_errors_carry_the_verifier_log() {
        // r0 is never set before exit.
        let bad = [EbpfInsn::new(JMP | EXIT, 0, 0, 0, 0)];
        match load_sched_cls(&bad, "bad") {
            Err(CbpfError::Load { errno, log }) => {
                assert_eq!(errno.raw_os_error(), Some(libc::EACCES), "{errno}");
                assert!(log.contains("R0"), "{log}");
            }
            other => panic!("{other:?}"),
        }
        let ok = translate(&[c(RET_K, 0, 0, 1)], OnAccept::Return(1), 0).unwrap();
        let fd = load_sched_cls(&ok, "ok").unwrap();
        assert!(matches!(
            test_run(fd.as_fd(), &[0; 13]),
            Err(CbpfError::TestRun(_))
        ));
        assert_eq!(test_run(fd.as_fd(), &[0; 14]).unwrap(), 1);
    }
}
