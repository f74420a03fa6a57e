//! Route lookups: the fib/fib6 tracepoints, and the receive context that gives the namespace
//! of an IPv4 lookup without a nexthop.

use crate::kernel::{net_inum, read, task_netns, AF_INET, AF_INET6};
use crate::maps::{Scratch, CONFIG, RX_CTX, SCRATCH};
use crate::output::finish_meta_event;
use aya_ebpf::{
    helpers::generated::{bpf_get_current_task, bpf_probe_read_kernel as probe_read_raw},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{hook, kind, parse, Config, RawEvent, RouteRaw};

const EAGAIN: i32 = 11;
const RT_TABLE_LOCAL: u32 = 255;
const NET_RX_SOFTIRQ: u32 = 3;

/// Reads the nexthop (`struct fib_nh_common`, also the head of fib_nh and fib6_nh): device,
/// gateway. Returns the device pointer.
#[inline(always)]
unsafe fn read_nexthop(cfg: &Config, nhc: u64, rr: &mut RouteRaw, ifindex: &mut u32) -> u64 {
    let r = &cfg.route;
    unsafe {
        let dev: u64 = read(nhc, r.nhc_dev).unwrap_or(0);
        if dev != 0 {
            *ifindex = read(dev, cfg.offsets.dev_ifindex).unwrap_or(0);
            rr.nh_ifindex = *ifindex;
            let _ = probe_read_raw(
                rr.oif_name.as_mut_ptr().cast(),
                16,
                (dev + r.dev_name as u64) as *const _,
            );
        }
        rr.gw_family = read(nhc, r.nhc_gw_family).unwrap_or(0);
        if rr.gw_family == AF_INET {
            let _ = probe_read_raw(
                rr.gw.as_mut_ptr().cast(),
                4,
                (nhc + r.nhc_gw as u64) as *const _,
            );
        } else if rr.gw_family == AF_INET6 {
            let _ = probe_read_raw(
                rr.gw.as_mut_ptr().cast(),
                16,
                (nhc + r.nhc_gw as u64) as *const _,
            );
        }
        dev
    }
}

/// Reads the flow key of a lookup into `f` (addresses, protocol, ports, oif/iif).
#[inline(always)]
unsafe fn read_flow_key(cfg: &Config, flp: u64, v6: bool, f: &mut parse::Flow) -> (u32, u32) {
    let r = &cfg.route;
    *f = parse::Flow::default();
    unsafe {
        let (src, dst, sport, dport, n) = if v6 {
            (r.fl6_saddr, r.fl6_daddr, r.fl6_sport, r.fl6_dport, 16)
        } else {
            (r.fl4_saddr, r.fl4_daddr, r.fl4_sport, r.fl4_dport, 4)
        };
        f.family = if v6 { 6 } else { 4 };
        let _ = probe_read_raw(f.src.as_mut_ptr().cast(), n, (flp + src as u64) as *const _);
        let _ = probe_read_raw(f.dst.as_mut_ptr().cast(), n, (flp + dst as u64) as *const _);
        f.proto = read(flp, r.fl_proto).unwrap_or(0);
        // flowi_uli holds ports only for these; for ICMP it is type/code, for GRE the key.
        if matches!(
            f.proto,
            parse::IPPROTO_TCP | parse::IPPROTO_UDP | parse::IPPROTO_SCTP
        ) {
            f.sport = u16::from_be(read(flp, sport).unwrap_or(0));
            f.dport = u16::from_be(read(flp, dport).unwrap_or(0));
        }
        let oif: u32 = read(flp, r.fl_oif).unwrap_or(0);
        let iif: u32 = read(flp, r.fl_iif).unwrap_or(0);
        (oif, iif)
    }
}

/// Copies the flow key into the route record.
#[inline(always)]
fn route_key(rr: &mut RouteRaw, f: &parse::Flow, oif: u32, iif: u32) {
    rr.src = f.src;
    rr.dst = f.dst;
    rr.family = f.family;
    rr.proto = f.proto;
    rr.sport = f.sport;
    rr.dport = f.dport;
    rr.flow_oif = oif;
    rr.flow_iif = iif;
}

/// The route record inside the scratch event's data.
#[inline(always)]
fn route_raw(ev: &mut RawEvent) -> &mut RouteRaw {
    // SAFETY: data is SNAP_LEN bytes, 8-aligned in RawEvent, larger than RouteRaw.
    unsafe { &mut *(ev.data.as_mut_ptr() as *mut RouteRaw) }
}

/// Reads a lookup's flow key, applies the filter, and starts the route record with the key.
#[inline(always)]
fn begin_route(cfg: &Config, flp: u64, v6: bool) -> Option<&'static mut Scratch> {
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let f = &mut scratch.parsed.outer;
    let (oif, iif) = unsafe { read_flow_key(cfg, flp, v6, f) };
    if !parse::flow_matches(&cfg.filter, f) {
        return None;
    }
    let rr = route_raw(&mut scratch.ev);
    *rr = RouteRaw::default();
    route_key(rr, &scratch.parsed.outer, oif, iif);
    Some(scratch)
}

/// Writes a finished route record.
#[inline(always)]
fn finish_route(cfg: &Config, ev: &mut RawEvent, netns: u32, ifindex: u32, hook_id: u8) {
    ev.netns = netns;
    ev.ifindex = ifindex;
    finish_meta_event(
        cfg,
        ev,
        kind::ROUTE,
        hook_id,
        core::mem::size_of::<RouteRaw>(),
    );
}

/// fib:fib_table_lookup(tb_id, flp, nhc, err): one IPv4 routing-table lookup and its result.
#[btf_tracepoint(function = "fib_table_lookup")]
pub fn fib_table_lookup(ctx: BtfTracePointContext) -> i32 {
    let _ = fib4_event(&ctx);
    0
}

#[inline(always)]
fn fib4_event(ctx: &BtfTracePointContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let r = &cfg.route;
    if r.valid == 0 || cfg.offsets.valid == 0 {
        return None;
    }
    let tb_id: u32 = ctx.arg(0);
    let flp: u64 = ctx.arg(1);
    let nhc: u64 = ctx.arg(2);
    let err: i32 = ctx.arg(3);
    let no_route = nhc == 0 && err == -EAGAIN;
    // A miss in the local table is never the answer: the lookup goes on with the next rule.
    if flp == 0 || (no_route && tb_id == RT_TABLE_LOCAL) {
        return None;
    }
    let scratch = begin_route(cfg, flp, false)?;
    let rr = route_raw(&mut scratch.ev);
    rr.table = tb_id;
    rr.err = err;
    rr.no_route = no_route as u8;
    let mut ifindex = 0u32;
    let mut netns = 0u32;
    if nhc != 0 {
        let dev = unsafe { read_nexthop(cfg, nhc, rr, &mut ifindex) };
        let family: u8 = unsafe { read(nhc, r.nhc_family) }.unwrap_or(0);
        if family == AF_INET {
            // A classic route's nexthop is embedded in its fib_info: type and namespace.
            let fi: u64 = unsafe { read(nhc, r.fib_nh_parent) }.unwrap_or(0);
            if fi != 0 {
                rr.rtype = unsafe { read(fi, r.fib_info_type) }.unwrap_or(0);
                netns = unsafe { net_inum(&cfg.offsets, read(fi, r.fib_info_net).unwrap_or(0)) };
            }
        }
        if netns == 0 && dev != 0 {
            netns =
                unsafe { net_inum(&cfg.offsets, read(dev, cfg.offsets.dev_nd_net).unwrap_or(0)) };
        }
    }
    if netns == 0 {
        // No nexthop to take the namespace from. Inside a receive softirq (forwarding, ICMP
        // errors, SYN-ACKs) the lookup belongs to the packet being received on this CPU;
        // otherwise to the calling task.
        let task = unsafe { bpf_get_current_task() };
        netns = match RX_CTX.get(0) {
            Some(rx) if rx.ifindex != 0 && rx.task == task => rx.netns,
            _ => unsafe { task_netns(cfg) },
        };
    }
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    finish_route(cfg, &mut scratch.ev, netns, ifindex, hook::FIB_LOOKUP);
    Some(())
}

/// fib6:fib6_table_lookup(net, res, table, flp): one IPv6 routing-table lookup and its result.
#[btf_tracepoint(function = "fib6_table_lookup")]
pub fn fib6_table_lookup(ctx: BtfTracePointContext) -> i32 {
    let _ = fib6_event(&ctx);
    0
}

#[inline(always)]
fn fib6_event(ctx: &BtfTracePointContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let r = &cfg.route;
    if r.valid == 0 || cfg.offsets.valid == 0 {
        return None;
    }
    let net: u64 = ctx.arg(0);
    let res: u64 = ctx.arg(1);
    let table: u64 = ctx.arg(2);
    let flp: u64 = ctx.arg(3);
    if res == 0 || flp == 0 {
        return None;
    }
    let tb_id: u32 = if table != 0 {
        unsafe { read(table, r.f6table_id) }.unwrap_or(0)
    } else {
        0
    };
    let f6i: u64 = unsafe { read(res, r.f6res_f6i) }.unwrap_or(0);
    let null_entry: u64 = if net != 0 {
        unsafe { read(net, r.net_fib6_null_entry) }.unwrap_or(0)
    } else {
        0
    };
    let no_route = f6i != 0 && f6i == null_entry;
    if no_route && tb_id == RT_TABLE_LOCAL {
        return None;
    }
    let netns = unsafe { net_inum(&cfg.offsets, net) };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    let scratch = begin_route(cfg, flp, true)?;
    let rr = route_raw(&mut scratch.ev);
    rr.table = tb_id;
    rr.err = 0;
    rr.no_route = no_route as u8;
    rr.rtype = unsafe { read(res, r.f6res_type) }.unwrap_or(0);
    let mut ifindex = 0u32;
    let nh: u64 = unsafe { read(res, r.f6res_nh) }.unwrap_or(0);
    if nh != 0 && !no_route {
        unsafe { read_nexthop(cfg, nh, rr, &mut ifindex) };
    }
    finish_route(cfg, &mut scratch.ev, netns, ifindex, hook::FIB6_LOOKUP);
    Some(())
}

/// irq:softirq_exit(vec_nr): the receive softirq is over; lookups now belong to tasks.
#[btf_tracepoint(function = "softirq_exit")]
pub fn softirq_exit(ctx: BtfTracePointContext) -> i32 {
    let vec: u32 = ctx.arg(0);
    if vec == NET_RX_SOFTIRQ {
        if let Some(rx) = RX_CTX.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { (*rx).ifindex = 0 };
        }
    }
    0
}
