//! Neighbour (ARP/NDP) resolution failures.

use crate::kernel::{net_inum, read, AF_INET, AF_INET6};
use crate::maps::{CONFIG, NEIGH_PREV, SCRATCH};
use crate::output::finish_meta_event;
use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel as probe_read_raw, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{hook, kind, nud, parse, Config, NeighRaw};

/// NEIGH_UPDATE_F_ADMIN: an administrative change (`ip neigh del`), not a resolution failure.
const NEIGH_UPDATE_F_ADMIN: u32 = 1 << 31;

/// Emits a neighbour event for `n` with its states, after the filter.
#[inline(always)]
fn neigh_event(cfg: &Config, n: u64, state: u8, old_state: u8, hook_id: u8) -> Option<()> {
    let o = &cfg.neigh;
    if o.valid == 0 || cfg.offsets.valid == 0 || n == 0 {
        return None;
    }
    let dev: u64 = unsafe { read(n, o.dev) }.unwrap_or(0);
    let (netns, ifindex) = if dev != 0 {
        unsafe {
            (
                net_inum(&cfg.offsets, read(dev, cfg.offsets.dev_nd_net).unwrap_or(0)),
                read(dev, cfg.offsets.dev_ifindex).unwrap_or(0),
            )
        }
    } else {
        (0, 0)
    };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    let tbl: u64 = unsafe { read(n, o.tbl) }.unwrap_or(0);
    let family: u16 = if tbl != 0 {
        unsafe { read(tbl, o.tbl_family) }.unwrap_or(0)
    } else {
        0
    };
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let f = &mut scratch.parsed.outer;
    *f = parse::Flow::default();
    let len = if family == AF_INET as u16 {
        f.family = 4;
        4
    } else if family == AF_INET6 as u16 {
        f.family = 6;
        16
    } else {
        return None;
    };
    unsafe {
        let _ = probe_read_raw(
            f.src.as_mut_ptr().cast(),
            len,
            (n + o.primary_key as u64) as *const _,
        );
    }
    f.dst = f.src;
    if !parse::flow_matches(&cfg.filter, f) {
        return None;
    }
    let ev = &mut scratch.ev;
    // SAFETY: data is SNAP_LEN bytes, 8-aligned in RawEvent, larger than NeighRaw.
    let nr = unsafe { &mut *(ev.data.as_mut_ptr() as *mut NeighRaw) };
    *nr = NeighRaw::default();
    nr.addr = scratch.parsed.outer.src;
    nr.family = scratch.parsed.outer.family;
    nr.state = state;
    nr.old_state = old_state;
    unsafe {
        let _ = probe_read_raw(
            nr.lladdr.as_mut_ptr().cast(),
            6,
            (n + o.ha as u64) as *const _,
        );
    }
    ev.netns = netns;
    ev.ifindex = ifindex;
    finish_meta_event(
        cfg,
        ev,
        kind::NEIGH,
        hook_id,
        core::mem::size_of::<NeighRaw>(),
    );
    Some(())
}

/// neigh:neigh_update(n, lladdr, new, flags, nlmsg_pid), before the update: a neighbour set
/// to FAILED (not by an administrator).
#[btf_tracepoint(function = "neigh_update")]
pub fn neigh_update(ctx: BtfTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    let new: u8 = ctx.arg(2);
    let update_flags: u32 = ctx.arg(3);
    if new != nud::FAILED || update_flags & NEIGH_UPDATE_F_ADMIN != 0 {
        return 0;
    }
    if let Some(cfg) = CONFIG.get(0) {
        let old: u8 = unsafe { read(n, cfg.neigh.nud_state) }.unwrap_or(0);
        let _ = neigh_event(cfg, n, new, old, hook::NEIGH_UPDATE);
    }
    0
}

/// Reads the neighbour's state and, while it is probing (INCOMPLETE/PROBE), remembers it as
/// the `old_state` of a later failure. Returns the state.
#[inline(always)]
fn note_neigh_state(ctx: &BtfTracePointContext, cfg: &Config, n: u64) -> u8 {
    if cfg.neigh.valid == 0 || n == 0 {
        return 0;
    }
    let state: u8 = unsafe { read(n, cfg.neigh.nud_state) }.unwrap_or(0);
    if state & (nud::INCOMPLETE | nud::PROBE) != 0 {
        if NEIGH_PREV.insert(&n, &state, 0).is_err() {
            // Rare (the LRU map makes room by evicting): a failure of this neighbour is then
            // reported without its old state.
            debug!(ctx, "neigh: NEIGH_PREV update failed");
        }
    }
    state
}

/// neigh:neigh_timer_handler(n, err), after the state machine ran: resolution gave up when
/// the state is now FAILED. While probing, the state is remembered for `old_state`.
#[btf_tracepoint(function = "neigh_timer_handler")]
pub fn neigh_timer_handler(ctx: BtfTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    if note_neigh_state(&ctx, cfg, n) == nud::FAILED {
        let old = unsafe { NEIGH_PREV.get(&n) }.copied().unwrap_or(0);
        let _ = NEIGH_PREV.remove(&n);
        let _ = neigh_event(cfg, n, nud::FAILED, old, hook::NEIGH_TIMER);
    }
    0
}

/// neigh:neigh_event_send_done(n, err): a packet asked for resolution; a neighbour that just
/// went INCOMPLETE is remembered here, since it may fail at its first timer run.
#[btf_tracepoint(function = "neigh_event_send_done")]
pub fn neigh_event_send_done(ctx: BtfTracePointContext) -> i32 {
    if let Some(cfg) = CONFIG.get(0) {
        note_neigh_state(&ctx, cfg, ctx.arg(0));
    }
    0
}
