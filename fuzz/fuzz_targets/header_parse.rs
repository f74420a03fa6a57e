//! The packet header parser shared by the kernel programs and userspace, and the kernel's
//! early filter verdict checked against it.
//!
//! Input: byte 0 bit 0 = the buffer starts at the Ethernet header; bytes 1..3 = skb->protocol
//! (used without one); the rest is the packet.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tracer_common::{
    fixtures::filter_configs,
    parse::{filter_matches, parse, quick_verdict, Parsed},
    FilterConfig,
};

fuzz_target!(|input: &[u8]| {
    static CONFIGS: OnceLock<Vec<FilterConfig>> = OnceLock::new();
    let [flags, p0, p1, buf @ ..] = input else {
        return;
    };
    let from_mac = flags & 1 != 0;
    let protocol = u16::from_be_bytes([*p0, *p1]);
    // The configurations use two VXLAN port settings: parse once per setting.
    let mut parsed: Vec<(u16, Parsed)> = Vec::with_capacity(2);
    for cfg in CONFIGS.get_or_init(filter_configs) {
        let full = match parsed.iter().find(|(port, _)| *port == cfg.vxlan_port) {
            Some((_, p)) => filter_matches(cfg, p),
            None => {
                let p = parse(buf, from_mac, protocol, cfg.vxlan_port);
                let _ = p.innermost();
                let m = filter_matches(cfg, &p);
                parsed.push((cfg.vxlan_port, p));
                m
            }
        };
        // The kernel's shortcut must never disagree with the full parser when it decides.
        if let Some(quick) = quick_verdict(cfg, buf, from_mac, protocol) {
            assert_eq!(quick, full, "{cfg:?} on {buf:?}");
        }
    }
});
