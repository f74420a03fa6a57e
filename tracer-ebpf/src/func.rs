//! `--functions`: kprobes on kernel functions that take an skb, one program per position of
//! the skb among the arguments (userspace finds it in BTF), each packet an event tied to the
//! packet by its bytes like every other, filtered the same way. Plus the probes `check` and
//! `--functions` use to find out what this kernel allows.

use crate::maps::CONFIG;
use crate::skb::skb_event;
use aya_ebpf::{
    helpers::generated::bpf_get_func_ip,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
    EbpfContext,
};
use tracer_common::{dir, hook, kind};

/// The event of a function probe: the skb is argument `N` (0-based).
#[inline(always)]
fn func_event<const N: usize>(ctx: &ProbeContext) -> u32 {
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    let Some(skb) = ctx.arg::<u64>(N) else {
        return 0;
    };
    // SAFETY: a kprobe context (bpf_get_func_ip is allowed for kprobes since Linux 5.15).
    let ip = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
    let _ = skb_event(cfg, skb, kind::FUNC, hook::KPROBE, dir::NONE, 0, ip);
    0
}

/// A function whose first argument is the skb.
#[kprobe]
pub fn netpath_kp_skb1(ctx: ProbeContext) -> u32 {
    func_event::<0>(&ctx)
}

#[kprobe]
pub fn netpath_kp_skb2(ctx: ProbeContext) -> u32 {
    func_event::<1>(&ctx)
}

#[kprobe]
pub fn netpath_kp_skb3(ctx: ProbeContext) -> u32 {
    func_event::<2>(&ctx)
}

#[kprobe]
pub fn netpath_kp_skb4(ctx: ProbeContext) -> u32 {
    func_event::<3>(&ctx)
}

#[kprobe]
pub fn netpath_kp_skb5(ctx: ProbeContext) -> u32 {
    func_event::<4>(&ctx)
}

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
