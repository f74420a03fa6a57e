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
    /// Device names per namespace inode, with when they were read.
    devices: HashMap<u32, Devices>,
    reasons: DropReasons,
    kallsyms: Kallsyms,
    boot_offset_ns: u64,
}

/// Rescans at most this often when an unknown namespace or device shows up.
const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// What is known is read again when older than this: the kernel reuses a deleted namespace's
/// inode and its devices' ifindexes for the next one (pod churn), so a known (inode, ifindex)
/// may be another device of another namespace by now. Namespaces gone at a rescan take their
/// devices with them.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// The device names of one namespace, as read at `read`.
struct Devices {
    names: HashMap<u32, String>,
    read: Instant,
}

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
            let before = std::mem::replace(&mut self.namespaces, netns::all());
            self.ns_refreshed = Instant::now();
            // A namespace gone, or renamed (its inode reused by a new one): its devices go.
            let now = &self.namespaces;
            self.devices.retain(|inode, _| {
                let name = |list: &[netns::Netns]| {
                    list.iter()
                        .find(|n| n.inode == *inode)
                        .map(|n| n.name.clone())
                };
                name(now).is_some() && name(now) == name(&before)
            });
        }
    }

    /// Rescans the namespaces when `inode` is not among them, or when the list is stale.
    fn know_namespace(&mut self, inode: u32) {
        if self.ns_refreshed.elapsed() >= STALE_AFTER
            || !self.namespaces.iter().any(|n| n.inode == inode)
        {
            self.refresh_namespaces();
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

    /// Namespaces whose device names are held (the cache stays as big as the live set).
    pub fn cached_namespaces(&self) -> usize {
        self.devices.len()
    }
}

impl Namer for LiveNamer {
    fn netns_name(&mut self, inode: u32) -> String {
        self.know_namespace(inode);
        netns::name_of(inode, &self.namespaces)
    }

    fn ifname(&mut self, netns_inode: u32, ifindex: u32) -> String {
        let known = self
            .devices
            .get(&netns_inode)
            .filter(|d| d.read.elapsed() < STALE_AFTER)
            .and_then(|d| d.names.get(&ifindex))
            .cloned();
        if let Some(name) = known {
            return name;
        }
        self.know_namespace(netns_inode);
        match self.namespaces.iter().find(|n| n.inode == netns_inode) {
            Some(ns) => {
                if let Ok(devs) = netns::devices(ns) {
                    let names = devs.into_iter().collect();
                    let read = Instant::now();
                    self.devices.insert(netns_inode, Devices { names, read });
                }
            }
            None => {
                self.devices.remove(&netns_inode);
            }
        }
        self.devices
            .get(&netns_inode)
            .and_then(|d| d.names.get(&ifindex))
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
