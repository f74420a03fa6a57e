//! netpath's kernel programs: tc/tcx hooks on chosen devices and BTF tracepoints that see every
//! device and every drop. Each program copies the packet headers into a per-CPU scratch event,
//! applies the filter from `CONFIG`, and only then touches the ring buffer (one output per event;
//! a failed output is counted in `LOST`). Kernel struct offsets come from `CONFIG.offsets`,
//! which userspace reads from the running kernel's BTF.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_probe_read_kernel as probe_read_raw, bpf_skb_load_bytes},
    },
    macros::{btf_tracepoint, classifier, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TcContext},
    EbpfContext,
};
use tracer_common::{dir, flags, hook, kind, parse, Config, KernelOffsets, RawEvent, SNAP_LEN};

/// tcx "next" / tc "unspec": let the packet continue to the next program and the stack.
const TC_ACT_UNSPEC: i32 = -1;

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU working memory: the event being built and its parsed headers (too big for the
/// 512-byte BPF stack).
#[repr(C)]
struct Scratch {
    ev: RawEvent,
    parsed: parse::Parsed,
    /// Bytes this CPU queued since it last woke the reader.
    since_wake: u64,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Events that did not fit in the ring buffer, per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
unsafe fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Reads `skb->dev->nd_net->ns.inum` and `skb->dev->ifindex`; falls back to the socket's
/// namespace when the skb has no device yet.
#[inline(always)]
unsafe fn skb_netns_ifindex(o: &KernelOffsets, skb: u64) -> (u32, u32) {
    unsafe {
        let dev: u64 = read(skb, o.skb_dev).unwrap_or(0);
        if dev != 0 {
            let ifindex: u32 = read(dev, o.dev_ifindex).unwrap_or(0);
            let net: u64 = read(dev, o.dev_nd_net).unwrap_or(0);
            let inum: u32 = if net != 0 {
                read(net, o.net_ns_inum).unwrap_or(0)
            } else {
                0
            };
            return (inum, ifindex);
        }
        let sk: u64 = read(skb, o.skb_sk).unwrap_or(0);
        if sk != 0 {
            let net: u64 = read(sk, o.sk_net).unwrap_or(0);
            if net != 0 {
                return (read(net, o.net_ns_inum).unwrap_or(0), 0);
            }
        }
        (0, 0)
    }
}

/// Copies the packet's linear data from the MAC header (or the network header when there is
/// none) into `ev.data`, through the kernel skb.
#[inline(always)]
unsafe fn copy_skb_data(o: &KernelOffsets, skb: u64, ev: &mut RawEvent) {
    unsafe {
        let head: u64 = read(skb, o.skb_head).unwrap_or(0);
        let mac: u16 = read(skb, o.skb_mac_header).unwrap_or(0xffff);
        let net: u16 = read(skb, o.skb_network_header).unwrap_or(0xffff);
        let tail: u32 = read(skb, o.skb_tail).unwrap_or(0);
        ev.protocol = u16::from_be(read::<u16>(skb, o.skb_protocol).unwrap_or(0));
        let start = if mac != 0xffff && mac < net {
            ev.flags |= flags::DATA_FROM_MAC;
            mac as u32
        } else {
            net as u32
        };
        if head == 0 || start == 0xffff || tail <= start {
            ev.data_len = 0;
            return;
        }
        let mut n = tail - start;
        if n > SNAP_LEN as u32 {
            n = SNAP_LEN as u32;
        }
        let n = n & (2 * SNAP_LEN as u32 - 1);
        if n == 0 || n > SNAP_LEN as u32 {
            ev.data_len = 0;
            return;
        }
        if probe_read_raw(
            ev.data.as_mut_ptr().cast(),
            n,
            (head + start as u64) as *const _,
        ) != 0
        {
            ev.data_len = 0;
            return;
        }
        ev.data_len = n as u16;
    }
}

/// Applies the filter and writes the event to the ring buffer.
#[inline(always)]
fn emit(cfg: &Config, scratch: &mut Scratch) {
    let ev = &scratch.ev;
    let len = (ev.data_len as usize) & (2 * SNAP_LEN - 1);
    let data = match ev.data.get(..len) {
        Some(d) => d,
        None => return,
    };
    let p = &mut scratch.parsed;
    *p = parse::Parsed::default();
    parse::parse_into(
        data,
        ev.flags & flags::DATA_FROM_MAC != 0,
        ev.protocol,
        cfg.filter.vxlan_port,
        p,
    );
    if !parse::filter_matches(&cfg.filter, p) {
        return;
    }
    // Only the copied bytes go out: a record is the header plus `data_len` bytes, not the
    // whole SNAP_LEN buffer (userspace zero-fills the rest). The length is read again here
    // so the verifier does not carry it through the parser.
    // SAFETY: a plain read of our own scratch field (volatile so it is not reused from above).
    let len = unsafe { core::ptr::read_volatile(&scratch.ev.data_len) } as usize;
    let len = len & (2 * SNAP_LEN - 1);
    if len > SNAP_LEN {
        return;
    }
    let size = RawEvent::DATA_OFFSET + len;
    // Wake the reader once per wakeup_bytes this CPU queues (the reader also looks every
    // 20 ms), not on every record once the ring holds that much: each forced wake-up is an
    // irq_work self-IPI, and asking the ring how full it is reads the consumer position the
    // reader keeps writing. A wake-up when the reader has already drained costs one poll.
    scratch.since_wake += (size + 8) as u64;
    let wake = if scratch.since_wake >= cfg.wakeup_bytes as u64 {
        scratch.since_wake = 0;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let ev = &scratch.ev;
    // SAFETY: `ev` is a RawEvent of DATA_OFFSET + SNAP_LEN bytes and len <= SNAP_LEN.
    let record = unsafe { core::slice::from_raw_parts((ev as *const RawEvent).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(record, wake as u64).is_err() {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *lost += 1 };
        }
    }
}

#[inline(always)]
fn tc_event(ctx: &TcContext, hook_id: u8, direction: u8) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let ev = &mut scratch.ev;
    let skb_addr = ctx.as_ptr() as u64;
    let (netns, _) = unsafe { skb_netns_ifindex(&cfg.offsets, skb_addr) };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    // A device with no link-layer header (tun, ipip) starts at the network header.
    let mac: u16 = unsafe { read(skb_addr, cfg.offsets.skb_mac_header) }.unwrap_or(0);
    let net: u16 = unsafe { read(skb_addr, cfg.offsets.skb_network_header) }.unwrap_or(0);
    ev.flags = if mac != net || cfg.offsets.valid == 0 {
        flags::DATA_FROM_MAC
    } else {
        0
    };
    // bpf_skb_load_bytes needs a length in [1, SNAP_LEN] the verifier can see.
    let mut n = ctx.len();
    if n > SNAP_LEN as u32 {
        n = SNAP_LEN as u32;
    }
    if n == 0 {
        return None;
    }
    // SAFETY: ev.data has SNAP_LEN bytes and 1 <= n <= SNAP_LEN.
    let loaded =
        unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, 0, ev.data.as_mut_ptr().cast(), n) };
    ev.data_len = if loaded == 0 { n as u16 } else { 0 };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.location = 0;
    ev.skb = skb_addr;
    ev.netns = netns;
    ev.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ev.reason = 0;
    ev.skb_len = ctx.len();
    ev.kind = kind::HOP;
    ev.hook = hook_id;
    ev.dir = direction;
    ev.protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    emit(cfg, scratch);
    Some(())
}

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    let _ = tc_event(&ctx, hook::TC_INGRESS, dir::INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    let _ = tc_event(&ctx, hook::TC_EGRESS, dir::EGRESS);
    TC_ACT_UNSPEC
}

/// Shared body of the skb tracepoints.
#[inline(always)]
fn skb_event(
    skb: u64,
    kind_id: u8,
    hook_id: u8,
    direction: u8,
    reason: u32,
    location: u64,
) -> Option<()> {
    let cfg = CONFIG.get(0)?;
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
    ev.skb_len = unsafe { read(skb, o.skb_len) }.unwrap_or(0);
    ev.kind = kind_id;
    ev.hook = hook_id;
    ev.dir = direction;
    emit(cfg, scratch);
    Some(())
}

/// skb:kfree_skb(skb, location, reason, rx_sk): a packet the stack dropped, and why.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    if let Some(cfg) = CONFIG.get(0) {
        if reason == cfg.reason_not_dropped || reason == cfg.reason_consumed {
            return 0;
        }
    }
    let _ = skb_event(
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
    if CONFIG.get(0).is_some_and(|c| c.dev_hops != 0) {
        let _ = skb_event(
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

/// net:netif_receive_skb(skb): a packet entering the stack from a device.
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    if CONFIG.get(0).is_some_and(|c| c.dev_hops != 0) {
        let _ = skb_event(
            ctx.arg(0),
            kind::HOP,
            hook::NETIF_RECEIVE,
            dir::INGRESS,
            0,
            0,
        );
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
