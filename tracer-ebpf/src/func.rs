//! Probes for `--functions`: whether this kernel allows fentry and kprobes.

use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};

/// Loaded only to find out whether this kernel allows fentry (`--functions`); never attached
/// by the probe.
#[fentry(function = "ip_rcv")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

/// Loaded and attached only to find out whether this kernel has kprobes (`--functions`).
#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}
