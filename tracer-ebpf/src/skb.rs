//! skb tracepoints: drops (`kfree_skb`, with the reason) and device hops.

use crate::copy::{copy_skb_data, snap_len, VLAN_HLEN};
use crate::filter::passes_filter;
use crate::kernel::{read, skb_netns_ifindex};
use crate::maps::{RxCtx, CONFIG, RX_CTX, SCRATCH};
use crate::output::output;
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_get_current_task},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{dir, flags, hook, kind, Config};

/// Shared body of the skb tracepoints and the function probes.
#[inline(always)]
pub(crate) fn skb_event(
    cfg: &Config,
    skb: u64,
    kind_id: u8,
    hook_id: u8,
    direction: u8,
    reason: u32,
    location: u64,
) -> Option<()> {
    if cfg.offsets.valid == 0 || skb == 0 {
        return None;
    }
    let o = &cfg.offsets;
    let (netns, ifindex) = unsafe { skb_netns_ifindex(o, skb) };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let ev = &mut scratch.ev;
    ev.flags = 0;
    unsafe { copy_skb_data(o, skb, ev) };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.location = location;
    ev.skb = skb;
    ev.netns = netns;
    ev.ifindex = ifindex;
    ev.reason = reason;
    // The length on the wire: with a tag put back.
    ev.skb_len = unsafe { read(skb, o.skb_len) }.unwrap_or(0)
        + if ev.flags & flags::VLAN_TAG_ADDED != 0 {
            VLAN_HLEN as u32
        } else {
            0
        };
    ev.kind = kind_id;
    ev.hook = hook_id;
    ev.dir = direction;
    if passes_filter(cfg, scratch) {
        let ev = &mut scratch.ev;
        let snap = snap_len(cfg);
        if ev.data_len as u32 > snap {
            ev.data_len = snap as u16;
        }
        output(cfg, ev);
    }
    Some(())
}

/// skb:kfree_skb(skb, location, reason, rx_sk): a packet the stack dropped, and why.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    if reason == cfg.reason_not_dropped || reason == cfg.reason_consumed {
        return 0;
    }
    let _ = skb_event(
        cfg,
        skb,
        kind::DROP,
        hook::KFREE_SKB,
        dir::NONE,
        reason,
        location,
    );
    0
}

/// net:net_dev_queue(skb): a packet handed to a device for transmission.
#[btf_tracepoint(function = "net_dev_queue")]
pub fn net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    if let Some(cfg) = CONFIG.get(0).filter(|c| c.dev_hops != 0) {
        let _ = skb_event(
            cfg,
            ctx.arg(0),
            kind::HOP,
            hook::NET_DEV_QUEUE,
            dir::EGRESS,
            0,
            0,
        );
    }
    0
}

/// net:netif_receive_skb(skb): a packet entering the stack from a device. With route events
/// on, it also notes which device and namespace this CPU is receiving on (see `RX_CTX`).
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    let skb: u64 = ctx.arg(0);
    if cfg.routes != 0 && cfg.offsets.valid != 0 && skb != 0 {
        if let Some(rx) = RX_CTX.get_ptr_mut(0) {
            let (netns, ifindex) = unsafe { skb_netns_ifindex(&cfg.offsets, skb) };
            let task = unsafe { bpf_get_current_task() };
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe {
                *rx = RxCtx {
                    netns,
                    ifindex,
                    task,
                }
            };
        }
    }
    if cfg.dev_hops != 0 {
        let _ = skb_event(cfg, skb, kind::HOP, hook::NETIF_RECEIVE, dir::INGRESS, 0, 0);
    }
    0
}
