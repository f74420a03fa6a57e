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
    let ev = &scratch.ev;
    let Some((data, from_mac)) = copied(ev) else {
        return false;
    };
    let p = &mut scratch.parsed;
    zero_parsed(p);
    parse::parse_into(data, from_mac, ev.protocol, cfg.filter.vxlan_port, p);
    parse::filter_matches(&cfg.filter, p)
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
