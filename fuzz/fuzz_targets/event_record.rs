//! Kernel event records (ring-buffer bytes) -> RawEvent -> model Event, with fixed names.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer::node::decode::{decode, packet_id, parse_raw, raw_from_bytes, Namer};

/// Names from the numbers alone, so a run depends only on the input.
struct FixedNamer;

impl Namer for FixedNamer {
    fn netns_name(&mut self, inode: u32) -> String {
        format!("ns{inode}")
    }
    fn ifname(&mut self, _netns: u32, ifindex: u32) -> String {
        format!("if{ifindex}")
    }
    fn drop_reason(&self, reason: u32) -> String {
        format!("reason{reason}")
    }
    fn symbol(&self, addr: u64) -> String {
        format!("fn+{addr:#x}")
    }
    fn boot_offset_ns(&self) -> u64 {
        // Large, so timestamp arithmetic near u64::MAX is exercised.
        u64::MAX / 2
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(raw) = raw_from_bytes(bytes) else {
        return;
    };
    let _ = packet_id(&parse_raw(&raw, 8472));
    let event = decode(&raw, "node-1", 8472, &mut FixedNamer);
    // `watch --json` prints it: every decoded event must serialize and read back.
    let json = serde_json::to_string(&event).expect("a decoded event serializes");
    let _: netpath_core::model::Event = serde_json::from_str(&json).expect("and reads back");
});
