//! The cBPF -> eBPF translator on arbitrary instruction arrays (8 bytes each, libpcap's
//! `struct bpf_insn` in little-endian order). Accepted programs must be ones the kernel's
//! verifier can take structurally: every jump inside the program, nothing falls off the end,
//! no unreachable instruction (the verifier refuses dead code).
//!
//! Input: byte 0 chooses the accept action (even: return, odd: tail call); the rest is the
//! program.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer::capture::cbpf::{translate, CbpfInsn, EbpfInsn, OnAccept};

const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const JA: u8 = 0x05;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;

fuzz_target!(|input: &[u8]| {
    let [choice, rest @ ..] = input else {
        return;
    };
    let prog: Vec<CbpfInsn> = rest
        .chunks_exact(8)
        .map(|c| CbpfInsn {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let on_accept = if choice & 1 == 0 {
        OnAccept::Return(1)
    } else {
        OnAccept::TailCall {
            prog_array_fd: 3,
            index: 0,
        }
    };
    if let Ok(ebpf) = translate(&prog, on_accept, 0) {
        check_structure(&ebpf);
    }
});

/// The instructions control can go to next from `pc`.
fn successors(prog: &[EbpfInsn], pc: usize) -> Vec<i64> {
    let insn = prog[pc];
    let next = pc as i64 + 1;
    let target = next + i64::from(insn.off);
    match insn.code {
        EXIT => vec![],
        JA => vec![target],
        CALL => vec![next],
        LD_IMM64 => vec![next + 1],
        code if matches!(code & 0x07, CLASS_JMP | CLASS_JMP32) => vec![next, target],
        _ => vec![next],
    }
}

fn check_structure(prog: &[EbpfInsn]) {
    assert!(
        !prog.is_empty(),
        "an accepted program translates to instructions"
    );
    let mut reached = vec![false; prog.len()];
    let mut todo = vec![0usize];
    while let Some(pc) = todo.pop() {
        if std::mem::replace(&mut reached[pc], true) {
            continue;
        }
        for t in successors(prog, pc) {
            assert!(
                (0..prog.len() as i64).contains(&t),
                "instruction {pc} ({:?}) leads to {t}, outside 0..{}",
                prog[pc],
                prog.len()
            );
            todo.push(t as usize);
        }
    }
    // The second slot of a 64-bit immediate load is data, never reached on its own.
    let mut pc = 0;
    while pc < prog.len() {
        assert!(
            reached[pc],
            "instruction {pc} ({:?}) is unreachable",
            prog[pc]
        );
        pc += if prog[pc].code == LD_IMM64 { 2 } else { 1 };
    }
}
