//! Types shared by the kernel programs (`tracer-ebpf`) and userspace (`tracer`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes it into the ring buffer, userspace
//! reads the same bytes. The packet parser lives here too, so the kernel (for its filter) and
//! userspace (for decoding) agree on every header by construction.
#![no_std]

pub mod parse;
pub mod pcapng_record;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

/// Bytes of each packet copied into an event, from the Ethernet header (or the network header
/// when the skb has no MAC header).
pub const SNAP_LEN: usize = 256;

/// Maximum address prefixes in the in-kernel filter.
pub const MAX_FILTER_ADDRS: usize = 8;

/// What an event is.
pub mod kind {
    pub const HOP: u8 = 1;
    pub const DROP: u8 = 2;
    pub const ROUTE: u8 = 3;
    pub const NEIGH: u8 = 4;
    /// A kernel function a packet passed through (`--functions`).
    pub const FUNC: u8 = 5;
}

/// Where in the kernel an event was taken.
pub mod hook {
    pub const TC_INGRESS: u8 = 1;
    pub const TC_EGRESS: u8 = 2;
    pub const KFREE_SKB: u8 = 3;
    pub const NET_DEV_QUEUE: u8 = 4;
    pub const NETIF_RECEIVE: u8 = 5;
    pub const FIB_LOOKUP: u8 = 6;
    pub const FIB6_LOOKUP: u8 = 7;
    pub const NEIGH_UPDATE: u8 = 8;
    pub const NEIGH_TIMER: u8 = 9;
    /// A kprobe on a kernel function that takes an skb (`--functions`).
    pub const KPROBE: u8 = 10;
}

/// Direction of a hop relative to the device.
pub mod dir {
    pub const NONE: u8 = 0;
    pub const INGRESS: u8 = 1;
    pub const EGRESS: u8 = 2;
}

/// `RawEvent::flags` bits.
pub mod flags {
    /// `data` starts at the Ethernet header (otherwise at the network header).
    pub const DATA_FROM_MAC: u8 = 1;
    /// The complete capture filter (libpcap's program, translated to eBPF and tail-called
    /// from the tc programs) accepted this packet in the kernel: userspace need not run it.
    pub const PCAP_MATCHED: u8 = 2;
    /// A VLAN tag the device had moved into the skb's metadata was put back into `data`
    /// after the MAC addresses; `skb_len` counts its 4 bytes.
    pub const VLAN_TAG_ADDED: u8 = 4;
}

/// What a route event carries in `RawEvent::data` (kind `ROUTE`): the flow key of the lookup
/// and its result, read through BTF offsets in `fib:fib_table_lookup` /
/// `fib6:fib6_table_lookup`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RouteRaw {
    /// Flow key addresses (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Gateway of the chosen nexthop (family in `gw_family`, 0 = none).
    pub gw: [u8; 16],
    /// Output device name (nexthop device), NUL padded.
    pub oif_name: [u8; 16],
    /// Routing table id.
    pub table: u32,
    /// IPv4: the tracepoint's `err` (0 or -errno). IPv6: 0 (userspace derives it from `rtype`).
    pub err: i32,
    /// Flow key output / input interface index (`flowi_oif`, `flowi_iif`).
    pub flow_oif: u32,
    pub flow_iif: u32,
    /// Nexthop device ifindex (0 = none).
    pub nh_ifindex: u32,
    /// Flow key ports (host byte order; 0 when the lookup had none).
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub proto: u8,
    /// RTN_* route type (0 when the kernel did not say: IPv4 lookups without a nexthop).
    pub rtype: u8,
    pub gw_family: u8,
    /// 1: no route matched in this table (IPv4 -EAGAIN without a nexthop, IPv6 the null entry).
    pub no_route: u8,
    pub _pad: [u8; 3],
}

/// What a neighbour event carries in `RawEvent::data` (kind `NEIGH`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct NeighRaw {
    /// The neighbour's address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Link-layer address the kernel held for it (may be zero).
    pub lladdr: [u8; 8],
    pub family: u8,
    /// NUD_* state after the event and before it (0 = unknown).
    pub state: u8,
    pub old_state: u8,
    pub _pad: u8,
}

/// Neighbour states (`NUD_*`).
pub mod nud {
    pub const INCOMPLETE: u8 = 0x01;
    pub const REACHABLE: u8 = 0x02;
    pub const STALE: u8 = 0x04;
    pub const DELAY: u8 = 0x08;
    pub const PROBE: u8 = 0x10;
    pub const FAILED: u8 = 0x20;
    pub const NOARP: u8 = 0x40;
    pub const PERMANENT: u8 = 0x80;
}

/// One kernel event, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawEvent {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Drop location (kernel text address) for drops; 0 otherwise.
    pub location: u64,
    /// The skb's address: ties together events about the same buffer on one node.
    pub skb: u64,
    /// Inode of the network namespace of the device (or socket).
    pub netns: u32,
    pub ifindex: u32,
    /// Drop reason (enum skb_drop_reason) for drops; lookup error for route events.
    pub reason: u32,
    /// skb->len.
    pub skb_len: u32,
    pub kind: u8,
    pub hook: u8,
    pub dir: u8,
    pub flags: u8,
    /// skb->protocol (host byte order).
    pub protocol: u16,
    /// Valid bytes in `data`.
    pub data_len: u16,
    pub data: [u8; SNAP_LEN],
}

impl RawEvent {
    /// Where `data` starts: the kernel writes this header plus `data_len` bytes of `data`.
    pub const DATA_OFFSET: usize = core::mem::offset_of!(RawEvent, data);
    pub const ZERO: RawEvent = RawEvent {
        ts_ns: 0,
        location: 0,
        skb: 0,
        netns: 0,
        ifindex: 0,
        reason: 0,
        skb_len: 0,
        kind: 0,
        hook: 0,
        dir: 0,
        flags: 0,
        protocol: 0,
        data_len: 0,
        data: [0; SNAP_LEN],
    };
}

/// Offsets of the kernel struct fields the tracepoint programs read, taken from the running
/// kernel's BTF at load time (never compiled in). A zero `valid` means "not resolved".
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_len: u32,
    pub skb_tail: u32,
    pub skb_mac_header: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub sk_net: u32,
    /// `sk_buff.vlan_proto` and `vlan_tci`: a tag the device took out of the frame, present
    /// when the protocol is non-zero (Linux 6.1+, where `vlan_all` replaced the
    /// `vlan_present` bit); 0 = not resolved, tags are not put back.
    pub skb_vlan_proto: u32,
    pub skb_vlan_tci: u32,
}

/// Offsets for the route-lookup tracepoints (from BTF). A zero `valid` means "not resolved":
/// the route programs are then reported unavailable and not attached.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RouteOffsets {
    pub valid: u32,
    /// flowi4 / flowi6 (the flowi_common part is shared).
    pub fl_oif: u32,
    pub fl_iif: u32,
    pub fl_proto: u32,
    pub fl4_saddr: u32,
    pub fl4_daddr: u32,
    pub fl4_dport: u32,
    pub fl4_sport: u32,
    pub fl6_saddr: u32,
    pub fl6_daddr: u32,
    pub fl6_dport: u32,
    pub fl6_sport: u32,
    /// fib_nh_common (also the start of fib_nh and fib6_nh).
    pub nhc_dev: u32,
    pub nhc_family: u32,
    pub nhc_gw_family: u32,
    pub nhc_gw: u32,
    /// fib_nh -> fib_info -> type / net.
    pub fib_nh_parent: u32,
    pub fib_info_type: u32,
    pub fib_info_net: u32,
    /// fib6_result, fib6_table, net->ipv6.fib6_null_entry.
    pub f6res_nh: u32,
    pub f6res_f6i: u32,
    pub f6res_type: u32,
    pub f6table_id: u32,
    pub net_fib6_null_entry: u32,
    /// net_device.name, task_struct.nsproxy, nsproxy.net_ns.
    pub dev_name: u32,
    pub task_nsproxy: u32,
    pub nsproxy_net_ns: u32,
}

/// Offsets for the neighbour tracepoints (from BTF).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct NeighOffsets {
    pub valid: u32,
    pub tbl: u32,
    pub tbl_family: u32,
    pub nud_state: u32,
    pub ha: u32,
    pub dev: u32,
    pub primary_key: u32,
}

/// One address prefix of the in-kernel filter. The address and its mask are kept as four
/// native-endian words over the network-order bytes (IPv4 in the first word), so the kernel
/// compares an address read from a packet with a few word operations: build it with
/// [`AddrPrefix::new`].
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct AddrPrefix {
    pub addr: [u32; 4],
    /// `prefix_len` leading one bits over the same bytes.
    pub mask: [u32; 4],
    /// 4 or 6.
    pub family: u8,
    pub prefix_len: u8,
    pub _pad: [u8; 2],
}

impl AddrPrefix {
    /// The prefix `bytes/prefix_len` of `family` (IPv4 in the first 4 bytes); a length past
    /// the family's width is cut to it.
    pub fn new(family: u8, bytes: [u8; 16], prefix_len: u8) -> Self {
        let width = if family == 4 { 32 } else { 128 };
        let prefix_len = if prefix_len > width {
            width
        } else {
            prefix_len
        };
        let mut mask = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            let lo = i as u8 * 8;
            mask[i] = if prefix_len >= lo + 8 {
                0xff
            } else if prefix_len > lo {
                0xffu8 << (8 - (prefix_len - lo))
            } else {
                0
            };
            i += 1;
        }
        AddrPrefix {
            addr: words(&bytes),
            mask: words(&mask),
            family,
            prefix_len,
            _pad: [0; 2],
        }
    }

    /// The address bytes in network order.
    pub fn addr_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            out[i] = self.addr[i / 4].to_ne_bytes()[i % 4];
            i += 1;
        }
        out
    }

    /// Does the address `a` of `family` lie in this prefix? `a` is the address's first `W`
    /// [`words`]: 1 is enough for IPv4, whose prefixes mask only the first word.
    #[inline(always)]
    pub fn contains<const W: usize>(&self, family: u8, a: &[u32; W]) -> bool {
        let mut diff = 0;
        let mut k = 0;
        while k < W && k < 4 {
            diff |= (a[k] ^ self.addr[k]) & self.mask[k];
            k += 1;
        }
        self.family == family && diff == 0
    }
}

/// 16 network-order address bytes as the four native-endian words [`AddrPrefix`] compares.
#[inline(always)]
pub fn words(b: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// The in-kernel filter, applied before any ring-buffer work. Zero fields match everything.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    /// Only packets of this family (4 or 6), outer or inner; 0 = any.
    pub family: u8,
    /// Only this IP protocol (inner-most), 0 = any.
    pub proto: u8,
    /// Number of valid entries in `addrs`; a packet matches when any of its outer or inner
    /// addresses falls in any prefix.
    pub n_addrs: u8,
    /// 1: packets that are not IP pass (a capture filter of `host`/`net` alone, which
    /// libpcap also matches against ARP and RARP addresses); 0: an active filter drops them.
    pub non_ip_passes: u8,
    /// Either port (outer or inner), 0 = any.
    pub port: u16,
    /// Extra UDP port carrying VXLAN (besides 4789 and 8472), 0 = none.
    pub vxlan_port: u16,
    /// Only this network namespace inode, 0 = any (tracepoint hooks).
    pub netns: u32,
    pub addrs: [AddrPrefix; MAX_FILTER_ADDRS],
}

/// Where [`Config::filter`] starts. The kernel keeps an array map's values 312 bytes into the
/// map (Linux 6.x), 8 bytes short of a cache line: at 8 bytes in, the filter's fixed fields and
/// its first prefix, all the tc programs read for a packet that does not match, share one
/// cache line. On a busy send path that line is mostly cold: one miss instead of two saved
/// about 3 ns per tc program run here (measured with kernel.bpf_stats_enabled).
pub const CONFIG_FILTER_OFFSET: usize = 8;

/// Everything userspace hands the kernel programs, in the one-entry `CONFIG` array map. It can
/// be updated while the programs run (a new filter needs no reload).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Config {
    /// Wake the reader only once this many bytes wait in the ring (batched wake-ups); a
    /// userspace timer drains the rest.
    pub wakeup_bytes: u32,
    /// Packet bytes to hand to userspace per event, 1..=SNAP_LEN; 0 = SNAP_LEN. The filter
    /// still sees up to SNAP_LEN bytes; only the copy into the ring is cut (`capture -s`).
    pub snap_len: u32,
    /// What every tc run reads, 8 bytes into the value (see [`CONFIG_FILTER_OFFSET`]).
    pub filter: FilterConfig,
    pub offsets: KernelOffsets,
    /// Drop reasons that are not drops (SKB_NOT_DROPPED_YET, SKB_CONSUMED), from BTF.
    pub reason_not_dropped: u32,
    pub reason_consumed: u32,
    /// Non-zero: emit hop events from net_dev_queue/netif_receive_skb.
    pub dev_hops: u32,
    /// Non-zero: route events are on (netif_receive_skb then also records, per CPU, the
    /// namespace of the packet being received, for IPv4 lookups that found no nexthop).
    pub routes: u32,
    pub route: RouteOffsets,
    pub neigh: NeighOffsets,
    /// Non-zero: the tc programs on devices with a link-layer header hand packets the early
    /// filter kept to the capture filter in `PCAP_PROGS` (slot 0), which tail-calls
    /// `tc_pcap_matched` (slot 1) for the ones it accepts.
    pub pcap_filter: u32,
    /// Non-zero: tc packets that need no filtering in userspace (no capture filter, or the
    /// kernel's accepted them) go out as pcapng blocks ([`pcapng_record`]) when their device
    /// has an id in `PCAP_IFACES`.
    pub pcapng_direct: u32,
    /// Non-zero: the capture filter never looks at VLAN tags, so it also runs on packets whose
    /// tag the device moved out of the frame (into the skb's metadata), on the frame as the
    /// kernel hands it, as tcpdump's socket filter does on Linux. (Expressions with `vlan`
    /// expect the tag in the frame: those packets are filtered in userspace, tag put back.)
    pub pcap_filter_untagged: u32,
    /// UNIX epoch ns minus bpf_ktime_get_ns, for the timestamps of those blocks.
    pub boot_offset_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain data without padding-dependent invariants.
    unsafe impl aya::Pod for super::RawEvent {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::FilterConfig {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::RouteRaw {}
    unsafe impl aya::Pod for super::NeighRaw {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn the_config_has_no_padding_before_its_last_field() {
        // Pod: every byte is a field's.
        assert_eq!(
            core::mem::offset_of!(Config, boot_offset_ns) + 8,
            core::mem::size_of::<Config>()
        );
        assert_eq!(
            core::mem::offset_of!(Config, pcap_filter_untagged) + 4,
            core::mem::offset_of!(Config, boot_offset_ns)
        );
    }

    #[test]
    fn the_filter_starts_where_its_cache_line_does() {
        assert_eq!(core::mem::offset_of!(Config, filter), CONFIG_FILTER_OFFSET);
        // Fixed fields and the first prefix: within the 64-byte line.
        assert!(
            core::mem::offset_of!(FilterConfig, addrs) + core::mem::size_of::<AddrPrefix>() <= 64
        );
    }

    #[test]
    fn prefixes_keep_their_bytes_and_mask_whole_and_partial_bytes() {
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0xfd, 0x00, 0x01, 0x98]);
        let p = AddrPrefix::new(6, v6, 59);
        assert_eq!(p.addr_bytes(), v6);
        let mask: Vec<u8> = p.mask.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(
            &mask[..9],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xe0, 0]
        );
        let mut inside = v6;
        inside[7] = 0x1f; // the low 5 bits of byte 7 are outside a /59
        assert!(p.contains(6, &words(&inside)));
        inside[7] = 0x20;
        assert!(!p.contains(6, &words(&inside)));
        assert!(!p.contains(4, &words(&v6)), "family counts");

        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[198, 18, 0, 0]);
        let p = AddrPrefix::new(4, v4, 40);
        assert_eq!(p.prefix_len, 32, "cut to the family's width");
        let p = AddrPrefix::new(4, v4, 15);
        let mut a = v4;
        a[1] = 19;
        assert!(p.contains::<1>(4, &[words(&a)[0]]));
        a[1] = 20;
        assert!(!p.contains::<1>(4, &[words(&a)[0]]));
        assert!(AddrPrefix::new(4, v4, 0).contains::<1>(4, &[0xdead_beef]));
    }
}
