//! Names for the numbers in kernel events, read from the live system and cached.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{btf::DropReasons, event::Namer, netns};

/// Kernel text symbols from /proc/kallsyms, for drop locations.
#[derive(Default)]
pub struct Kallsyms {
    /// (address, name), sorted by address.
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/kallsyms").unwrap_or_default())
    }

    /// Parses kallsyms text, keeping text symbols (`t`/`T`).
    pub fn parse(text: &str) -> Self {
        // Fixed layout `ADDR TYPE NAME[\t[module]]`; ~200k lines, parsed on every start, so
        // bytes rather than char iterators.
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let b = line.as_bytes();
                let sp = b.iter().position(|&c| c == b' ')?;
                let ty = *b.get(sp + 1)?;
                if (ty != b't' && ty != b'T') || b.get(sp + 2) != Some(&b' ') {
                    return None;
                }
                let addr = u64::from_str_radix(&line[..sp], 16).ok()?;
                let rest = &line[sp + 3..];
                let name = rest.split('\t').next()?.trim_end();
                (addr != 0 && !name.is_empty()).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_unstable_by_key(|(a, _)| *a);
        Kallsyms { syms }
    }

    /// Every text symbol name, in address order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.syms.iter().map(|(_, n)| n.as_str())
    }

    /// `function+0xoffset`, or the raw address when unknown (kallsyms hidden: kptr_restrict).
    pub fn symbolize(&self, addr: u64) -> String {
        let idx = self.syms.partition_point(|(a, _)| *a <= addr);
        match idx.checked_sub(1).map(|i| &self.syms[i]) {
            Some((start, name)) => format!("{name}+0x{:x}", addr - start),
            None => format!("0x{addr:x}"),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_symbolizes_inside_functions_and_skips_data() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t ip_rcv_core\nffffffff81000200 D some_data\nffffffff81000300 T ip_forward\nffffffffc0001000 t nft_do_chain\t[nf_tables]\n",
        );
        assert_eq!(k.symbolize(0xffffffffc0001010), "nft_do_chain+0x10");
        assert_eq!(k.symbolize(0xffffffff81000142), "ip_rcv_core+0x42");
        assert_eq!(k.symbolize(0xffffffff81000300), "ip_forward+0x0");
        assert_eq!(k.symbolize(0x10), "0x10");
    }
}
