//! Names for the numbers in kernel events, read from the live system and cached.
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    time::Duration,
};

use super::{btf::DropReasons, decode::Namer, ksyms::Kallsyms, netns};

/// [`Namer`] over the running system: namespaces from /run/netns and /proc, devices through
/// the namespaces themselves, drop reasons from BTF, symbols from kallsyms.
///
/// Asked once or twice per event: the lookups are hash maps, and the clock that tells when
/// to read again is the coarse monotonic one (a few ns, millisecond resolution).
pub struct LiveNamer {
    namespaces: Vec<netns::Netns>,
    /// Name of each namespace in `namespaces`, by inode.
    ns_names: ByNumber<String>,
    /// When `namespaces` was read ([`coarse_now`]).
    ns_refreshed: Duration,
    /// Device names per namespace inode, with when they were read.
    devices: ByNumber<Devices>,
    reasons: DropReasons,
    kallsyms: Kallsyms,
    boot_offset_ns: u64,
}

/// Maps keyed by the kernel's numbers (namespace inodes, ifindexes), looked up for every
/// event: hashed with one multiplication instead of SipHash (the keys come from the kernel,
/// not from the packets).
type ByNumber<V> = HashMap<u32, V, BuildHasherDefault<NumberHasher>>;

#[derive(Default)]
struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses, depend on every key bit.
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Rescans at most this often when an unknown namespace or device shows up.
const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// What is known is read again when older than this: the kernel reuses a deleted namespace's
/// inode and its devices' ifindexes for the next one (pod churn), so a known (inode, ifindex)
/// may be another device of another namespace by now. Namespaces gone at a rescan take their
/// devices with them.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// The device names of one namespace, as read at `read` ([`coarse_now`]).
struct Devices {
    names: ByNumber<String>,
    read: Duration,
}

/// CLOCK_MONOTONIC_COARSE: the last tick's time, read without a full clock read (names are
/// refreshed on a scale of 200 ms to 1 s, so a few ms of resolution are plenty).
fn coarse_now() -> Duration {
    Duration::from_nanos(clock_ns(libc::CLOCK_MONOTONIC_COARSE))
}

fn names_by_inode(namespaces: &[netns::Netns]) -> ByNumber<String> {
    namespaces
        .iter()
        .map(|n| (n.inode, n.name.clone()))
        .collect()
}

impl LiveNamer {
    pub fn new(reasons: DropReasons) -> Self {
        Self::with_kallsyms(reasons, Kallsyms::load())
    }

    /// With symbols loaded elsewhere (in parallel with program verification).
    pub fn with_kallsyms(reasons: DropReasons, kallsyms: Kallsyms) -> Self {
        let namespaces = netns::all();
        LiveNamer {
            ns_names: names_by_inode(&namespaces),
            namespaces,
            ns_refreshed: coarse_now(),
            devices: ByNumber::default(),
            reasons,
            kallsyms,
            boot_offset_ns: boot_offset_ns(),
        }
    }

    fn refresh_namespaces(&mut self, now: Duration) {
        if now.saturating_sub(self.ns_refreshed) >= REFRESH_EVERY {
            self.namespaces = netns::all();
            let before = std::mem::replace(&mut self.ns_names, names_by_inode(&self.namespaces));
            self.ns_refreshed = now;
            // A namespace gone, or renamed (its inode reused by a new one): its devices go.
            let now = &self.ns_names;
            self.devices
                .retain(|inode, _| now.get(inode).is_some_and(|n| before.get(inode) == Some(n)));
        }
    }

    /// Rescans the namespaces when `inode` is not among them, or when the list is stale.
    fn know_namespace(&mut self, inode: u32, now: Duration) {
        if now.saturating_sub(self.ns_refreshed) >= STALE_AFTER
            || !self.ns_names.contains_key(&inode)
        {
            self.refresh_namespaces(now);
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
        self.know_namespace(inode, coarse_now());
        match self.ns_names.get(&inode) {
            Some(name) => name.clone(),
            None => netns::name_of(inode, &[]),
        }
    }

    fn ifname(&mut self, netns_inode: u32, ifindex: u32) -> String {
        let now = coarse_now();
        let known = self
            .devices
            .get(&netns_inode)
            .filter(|d| now.saturating_sub(d.read) < STALE_AFTER)
            .and_then(|d| d.names.get(&ifindex));
        if let Some(name) = known {
            return name.clone();
        }
        self.know_namespace(netns_inode, now);
        match self.namespaces.iter().find(|n| n.inode == netns_inode) {
            Some(ns) => {
                if let Ok(devs) = netns::devices(ns) {
                    let names = devs.into_iter().collect();
                    self.devices
                        .insert(netns_inode, Devices { names, read: now });
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

pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashSet, hash::BuildHasher};

    #[test]
    fn number_hashes_spread_over_the_bits_the_map_uses() {
        let build = BuildHasherDefault::<NumberHasher>::default();
        // Consecutive inodes and ifindexes, as the kernel hands them out.
        let hashes: Vec<u64> = (4_026_531_840u32..4_026_532_864)
            .map(|k| build.hash_one(k))
            .collect();
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0x3ff).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 600, "bucket bits: {} of 1024", low.len());
        assert!(top.len() > 100, "control bits: {} of 128", top.len());
    }
}
