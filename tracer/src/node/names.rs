//! Names for the numbers in kernel events, read from the live system and cached.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{btf::DropReasons, decode::Namer, ksyms::Kallsyms, netns};

/// [`Namer`] over the running system: namespaces from /run/netns and /proc, devices through
/// the namespaces themselves, drop reasons from BTF, symbols from kallsyms.
pub struct LiveNamer {
    namespaces: Vec<netns::Netns>,
    ns_refreshed: Instant,
    devices: HashMap<u32, HashMap<u32, String>>,
    reasons: DropReasons,
    kallsyms: Kallsyms,
    boot_offset_ns: u64,
}

/// Rescans at most this often when an unknown namespace or device shows up.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

impl LiveNamer {
    pub fn new(reasons: DropReasons) -> Self {
        Self::with_kallsyms(reasons, Kallsyms::load())
    }

    /// With symbols loaded elsewhere (in parallel with program verification).
    pub fn with_kallsyms(reasons: DropReasons, kallsyms: Kallsyms) -> Self {
        LiveNamer {
            namespaces: netns::all(),
            ns_refreshed: Instant::now(),
            devices: HashMap::new(),
            reasons,
            kallsyms,
            boot_offset_ns: boot_offset_ns(),
        }
    }

    fn refresh_namespaces(&mut self) {
        if self.ns_refreshed.elapsed() >= REFRESH_EVERY {
            self.namespaces = netns::all();
            self.ns_refreshed = Instant::now();
        }
    }

    /// Timestamps from this UNIX-epoch offset (the tracer's, so that events and the pcapng
    /// blocks the kernel stamps itself agree), not one read now.
    pub fn with_boot_offset_ns(mut self, boot_offset_ns: u64) -> Self {
        self.boot_offset_ns = boot_offset_ns;
        self
    }

    pub fn namespaces(&self) -> &[netns::Netns] {
        &self.namespaces
    }
}

impl Namer for LiveNamer {
    fn netns_name(&mut self, inode: u32) -> String {
        if !self.namespaces.iter().any(|n| n.inode == inode) {
            self.refresh_namespaces();
        }
        netns::name_of(inode, &self.namespaces)
    }

    fn ifname(&mut self, netns_inode: u32, ifindex: u32) -> String {
        let known = self
            .devices
            .get(&netns_inode)
            .and_then(|d| d.get(&ifindex))
            .cloned();
        if let Some(name) = known {
            return name;
        }
        if !self.namespaces.iter().any(|n| n.inode == netns_inode) {
            self.refresh_namespaces();
        }
        if let Some(ns) = self.namespaces.iter().find(|n| n.inode == netns_inode) {
            if let Ok(devs) = netns::devices(ns) {
                self.devices.insert(netns_inode, devs.into_iter().collect());
            }
        }
        self.devices
            .get(&netns_inode)
            .and_then(|d| d.get(&ifindex))
            .cloned()
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    fn drop_reason(&self, reason: u32) -> String {
        self.reasons.name(reason)
    }

    fn symbol(&self, addr: u64) -> String {
        self.kallsyms.symbolize(addr)
    }

    fn boot_offset_ns(&self) -> u64 {
        self.boot_offset_ns
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// UNIX epoch ns minus kernel monotonic ns (bpf_ktime_get_ns).
pub fn boot_offset_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME).saturating_sub(clock_ns(libc::CLOCK_MONOTONIC))
}
