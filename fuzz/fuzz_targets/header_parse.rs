//! The packet header parser shared by the kernel programs and userspace, and the kernel's
//! early filter verdict checked against it.
//!
//! Input: byte 0 bit 0 = the buffer starts at the Ethernet header; bytes 1..3 = skb->protocol
//! (used without one); the rest is the packet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_common::{
    fixtures::filter_configs,
    parse::{filter_matches, parse, quick_verdict},
};

fuzz_target!(|input: &[u8]| {
    let [flags, p0, p1, buf @ ..] = input else {
        return;
    };
    let from_mac = flags & 1 != 0;
    let protocol = u16::from_be_bytes([*p0, *p1]);
    let parsed = parse(buf, from_mac, protocol, 8472);
    let _ = parsed.innermost();
    for cfg in filter_configs() {
        let full = filter_matches(&cfg, &parse(buf, from_mac, protocol, cfg.vxlan_port));
        // The kernel's shortcut must never disagree with the full parser when it decides.
        if let Some(quick) = quick_verdict(&cfg, buf, from_mac, protocol) {
            assert_eq!(quick, full, "{cfg:?} on {buf:?}");
        }
    }
});
