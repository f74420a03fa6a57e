//! The event filter (`CONFIG.filter`) on copied packet bytes.

use crate::copy::copied;
use crate::maps::Scratch;
use tracer_common::{parse, Config, SNAP_LEN};

/// Parses the copied packet into `scratch.parsed` and applies the filter (not the namespace).
#[inline(always)]
pub(crate) fn passes_filter(cfg: &Config, scratch: &mut Scratch) -> bool {
    if !parse::filter_active(&cfg.filter) {
        return true;
    }
    let ev = &scratch.ev;
    let Some((data, from_mac)) = copied(ev) else {
        return false;
    };
    if let Some(verdict) = parse::quick_verdict(&cfg.filter, data, from_mac, ev.protocol) {
        return verdict;
    }
    full_filter(cfg, scratch)
}

/// The full parse of the copied packet and the filter on it.
#[inline(always)]
pub(crate) fn full_filter(cfg: &Config, scratch: &mut Scratch) -> bool {
    netpath_parse(scratch, cfg.filter.vxlan_port as u32) != 0
        && parse::filter_matches(&cfg.filter, &scratch.parsed)
}

/// The full parse of the packet copied into `scratch.ev`, into `scratch.parsed`; 1 when there
/// was a copy to parse. A BPF global function: the verifier checks it once, on its own, not
/// along every path of every program that calls it (on Linux 6.1, whose pruning is weaker,
/// those paths together ran past its instruction budget). Its IP layers are another one,
/// [`netpath_parse_ip`], so that the inner layer is not checked again along every path of the
/// outer one.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netpath_parse(scratch: *mut Scratch, vxlan_port: u32) -> i32 {
    if scratch.is_null() {
        return 0; // the verifier makes us check
    }
    // SAFETY: the caller's per-CPU scratch slot; `ev` and `parsed` are disjoint fields, and
    // the IP layer's function reads only `ev` through `scratch`.
    let (ev, p) = unsafe { (&(*scratch).ev, &mut (*scratch).parsed) };
    zero_parsed(p);
    let Some((data, from_mac)) = copied(ev) else {
        return 0;
    };
    parse::parse_layers(
        data,
        from_mac,
        ev.protocol,
        vxlan_port as u16,
        p,
        |off, ethertype, flow| {
            // Offsets past the copy are refused in there; u32 keeps the call's arguments
            // scalars the verifier knows.
            let off = if off > SNAP_LEN { SNAP_LEN } else { off };
            (netpath_parse_ip(scratch, flow, off as u32, ethertype as u32) != 0).then_some(())
        },
    );
    1
}

/// [`parse::parse_ip`] on the packet copied into `scratch.ev`, at `off`, into `flow` (a part of
/// `scratch.parsed`); 1 when the IP layer was read. A BPF global function (see
/// [`netpath_parse`]). It takes the whole scratch slot, not only the event, because the
/// verifier bounds its reads by the pointee's size and a read near the end of the data may
/// run into the room behind it.
#[no_mangle]
#[inline(never)]
pub extern "C" fn netpath_parse_ip(
    scratch: *const Scratch,
    flow: *mut parse::Flow,
    off: u32,
    ethertype: u32,
) -> i32 {
    if scratch.is_null() {
        return 0;
    }
    // SAFETY: `flow` points into the caller's scratch slot, or is null (checked); `ev` is the
    // slot's event, a field `flow` is not part of.
    let (ev, Some(flow)) = (unsafe { &(*scratch).ev }, unsafe { flow.as_mut() }) else {
        return 0;
    };
    let Some((data, _)) = copied(ev) else {
        return 0;
    };
    parse::parse_ip(data, off as usize, ethertype as u16, flow).is_some() as i32
}

/// `*p = Parsed::default()` in 8-byte stores straight into the map value (a plain assignment
/// builds the zero value on the stack and copies it byte by byte).
#[inline(always)]
fn zero_parsed(p: &mut parse::Parsed) {
    const WORDS: usize = core::mem::size_of::<parse::Parsed>() / 8;
    let w = p as *mut parse::Parsed as *mut u64;
    let mut i = 0;
    while i < WORDS {
        // SAFETY: Parsed is 8-aligned, a multiple of 8 bytes, and all-zero is its default.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
        i += 1;
    }
}
