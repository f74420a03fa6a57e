//! The event filter (`CONFIG.filter`) on copied packet bytes.

use crate::copy::copied;
use crate::maps::Scratch;
use tracer_common::{parse, Config};

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
/// those paths together ran past its instruction budget).
#[no_mangle]
#[inline(never)]
pub extern "C" fn netpath_parse(scratch: *mut Scratch, vxlan_port: u32) -> i32 {
    // SAFETY: the caller's per-CPU scratch slot, or null (which the verifier makes us check).
    let Some(scratch) = (unsafe { scratch.as_mut() }) else {
        return 0;
    };
    let p = &mut scratch.parsed;
    zero_parsed(p);
    let ev = &scratch.ev;
    let Some((data, from_mac)) = copied(ev) else {
        return 0;
    };
    parse::parse_into(data, from_mac, ev.protocol, vxlan_port as u16, p);
    1
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
