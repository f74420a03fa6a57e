//! Kernel records -> model events: pure functions over the ring buffer's bytes, plus the names
//! a [`Namer`] gives (namespaces, devices, drop reasons, kernel symbols).
//!
//! The JSON form of the events is a public interface (`netpath watch --json`); see
//! docs/events.md.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netpath_core::model::{
    Direction, DropSection, Event, EventKind, Family, FlowKey, Hook, NeighEvent, PacketIdent,
    PacketSection, Proto, RouteLookup, RouteType, Tunnel, TunnelKind,
};
use tracer_common::{
    dir, flags, hook, kind, nud,
    parse::{self, tunnel, Flow, Parsed},
    NeighRaw, RawEvent, RouteRaw, SNAP_LEN,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
}

/// The model's hook for a kernel hook number.
pub fn hook_of(v: u8) -> Hook {
    match v {
        hook::TC_INGRESS => Hook::TcIngress,
        hook::TC_EGRESS => Hook::TcEgress,
        hook::KFREE_SKB => Hook::KfreeSkb,
        hook::NET_DEV_QUEUE => Hook::NetDevQueue,
        hook::NETIF_RECEIVE => Hook::NetifReceiveSkb,
        hook::FIB_LOOKUP => Hook::FibLookup,
        hook::FIB6_LOOKUP => Hook::Fib6Lookup,
        hook::NEIGH_UPDATE => Hook::NeighUpdate,
        hook::NEIGH_TIMER => Hook::NeighTimerHandler,
        hook::KPROBE => Hook::Kprobe,
        _ => Hook::Unknown,
    }
}

/// Kernel errno names for the values routing and probing produce.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    // unsigned_abs: a record's error field can hold i32::MIN, whose abs() overflows.
    Some(match errno.unsigned_abs() {
        1 => "EPERM",
        2 => "ENOENT",
        11 => "EAGAIN",
        13 => "EACCES",
        19 => "ENODEV",
        22 => "EINVAL",
        90 => "EMSGSIZE",
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        524 => "ENOTSUPP",
        _ => return None,
    })
}

/// The error a route type gives (the kernel's fib_props / fib6_prop table).
fn route_type_error(rtype: u8) -> i32 {
    match rtype {
        6 | 10 | 11 => -22,
        7 => -113,
        8 => -13,
        9 => -11,
        _ => 0,
    }
}

/// NUD_* state names (a single state; combinations are not produced by these events).
pub fn nud_name(state: u8) -> Option<&'static str> {
    Some(match state {
        nud::INCOMPLETE => "INCOMPLETE",
        nud::REACHABLE => "REACHABLE",
        nud::STALE => "STALE",
        nud::DELAY => "DELAY",
        nud::PROBE => "PROBE",
        nud::FAILED => "FAILED",
        nud::NOARP => "NOARP",
        nud::PERMANENT => "PERMANENT",
        _ => return None,
    })
}

/// Reads a `T` the kernel wrote at the start of `RawEvent::data`.
fn payload<T: Copy + Default>(raw: &RawEvent) -> T {
    if (raw.data_len as usize) < std::mem::size_of::<T>() {
        return T::default();
    }
    // SAFETY: T is repr(C) plain data valid for any bit pattern and fits in `data`.
    unsafe { std::ptr::read_unaligned(raw.data.as_ptr().cast::<T>()) }
}

fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The route lookup in a `ROUTE` event.
pub fn route_lookup(rr: &RouteRaw) -> RouteLookup {
    let (kind, err) = if rr.family == 6 {
        if rr.no_route == 1 {
            // The kernel's ip6_null_entry: RTN_UNREACHABLE, and the packet gets ENETUNREACH.
            (RouteType::from_rtn(rr.rtype), -101)
        } else {
            (RouteType::from_rtn(rr.rtype), route_type_error(rr.rtype))
        }
    } else if rr.rtype != 0 {
        (RouteType::from_rtn(rr.rtype), rr.err)
    } else {
        // IPv4 without a nexthop: the kernel passes only the error; the type follows from it.
        let kind = match rr.err {
            0 => RouteType::Unicast,
            -22 => RouteType::Blackhole,
            -113 => RouteType::Unreachable,
            -13 => RouteType::Prohibit,
            _ if rr.no_route == 1 => RouteType::None,
            _ => RouteType::Unspec,
        };
        (kind, rr.err)
    };
    let ok = err == 0;
    let gw = match rr.gw_family {
        2 => addr(4, &rr.gw),
        10 => addr(6, &rr.gw),
        _ => None,
    }
    .filter(|_| ok);
    RouteLookup {
        table: rr.table,
        kind,
        err,
        error: (err != 0).then(|| {
            errno_name(err)
                .map(str::to_string)
                .unwrap_or_else(|| format!("errno{err}"))
        }),
        gw,
        oif: (ok && rr.nh_ifindex != 0).then(|| nul_terminated(&rr.oif_name)),
        oif_index: (ok && rr.nh_ifindex != 0).then_some(rr.nh_ifindex),
        no_route: rr.no_route == 1,
        flow_oif: rr.flow_oif,
        iif: rr.flow_iif,
    }
}

/// Gives names to the numbers in kernel events. Implemented over the live system by
/// `tracer::names::LiveNamer`, and by fixed tables in tests.
pub trait Namer {
    fn netns_name(&mut self, inode: u32) -> String;
    fn ifname(&mut self, netns_inode: u32, ifindex: u32) -> String;
    fn drop_reason(&self, reason: u32) -> String;
    fn symbol(&self, addr: u64) -> String;
    /// Offset that turns kernel monotonic ns into UNIX epoch ns.
    fn boot_offset_ns(&self) -> u64;
}

/// Reinterprets a ring-buffer record as a [`RawEvent`]. The kernel sends the header and only
/// the `data_len` bytes it copied; the rest of `data` is zero-filled.
pub fn raw_from_bytes(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
    let want = RawEvent::DATA_OFFSET;
    if bytes.len() < want {
        return Err(DecodeError::Size {
            got: bytes.len(),
            want,
        });
    }
    let mut raw = RawEvent::ZERO;
    let n = bytes.len().min(std::mem::size_of::<RawEvent>());
    // SAFETY: RawEvent is repr(C) plain data valid for any bit pattern; at most its size is
    // copied, byte-wise, so the ring buffer's alignment does not matter.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut raw as *mut RawEvent).cast::<u8>(), n)
    };
    Ok(raw)
}

fn addr(family: u8, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        _ => None,
    }
}

fn tunnel_kind(t: u8) -> Option<TunnelKind> {
    Some(match t {
        tunnel::VXLAN => TunnelKind::Vxlan,
        tunnel::GENEVE => TunnelKind::Geneve,
        tunnel::GRE => TunnelKind::Gre,
        tunnel::IPIP => TunnelKind::Ipip,
        tunnel::IP6IN4 => TunnelKind::Sit,
        tunnel::IP4IN6 => TunnelKind::Ip4ip6,
        tunnel::IP6IN6 => TunnelKind::Ip6ip6,
        _ => return None,
    })
}

fn icmp_name(f: &Flow) -> Option<String> {
    let name = match (f.proto, f.icmp_type) {
        (parse::IPPROTO_ICMP, 0) => "echo-reply",
        (parse::IPPROTO_ICMP, 3) => "dest-unreachable",
        (parse::IPPROTO_ICMP, 8) => "echo-request",
        (parse::IPPROTO_ICMP, 11) => "time-exceeded",
        (parse::IPPROTO_ICMPV6, 1) => "dest-unreachable",
        (parse::IPPROTO_ICMPV6, 2) => "packet-too-big",
        (parse::IPPROTO_ICMPV6, 3) => "time-exceeded",
        (parse::IPPROTO_ICMPV6, 128) => "echo-request",
        (parse::IPPROTO_ICMPV6, 129) => "echo-reply",
        (parse::IPPROTO_ICMPV6, 133) => "router-solicit",
        (parse::IPPROTO_ICMPV6, 134) => "router-advert",
        (parse::IPPROTO_ICMPV6, 135) => "neighbor-solicit",
        (parse::IPPROTO_ICMPV6, 136) => "neighbor-advert",
        (parse::IPPROTO_ICMP | parse::IPPROTO_ICMPV6, t) => return Some(format!("type-{t}")),
        _ => return None,
    };
    Some(name.to_string())
}

/// The packet identity: a hash of fields that survive forwarding, encapsulation and DNAT.
///
/// Built from the innermost IP layer: family, protocol, IPv4 id or IPv6 flow label, the
/// transport's invariant words (TCP seq/ack/flags, ICMP type/id/seq) and the IP payload length.
/// Addresses and ports are left out on purpose because NAT rewrites them. It fails when two
/// packets share all of these (e.g. UDP without IPv4 id variation or IPv6 flow label 0 with
/// identical lengths), or when a middlebox rewrites an included field (IPv4 id by some NATs,
/// TCP seq by seq-randomising firewalls).
pub fn packet_id(p: &Parsed) -> u64 {
    let f = p.innermost();
    if f.family == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    mix(f.family as u64);
    mix(f.proto as u64);
    mix(f.ip_id as u64);
    mix(f.ip_payload_len as u64);
    mix(f.l4_ident as u64);
    mix(f.l4_ack as u64);
    mix(((f.icmp_type as u64) << 8) | f.tcp_flags as u64);
    h
}

/// Ethernet header length: what [`ethernet_frame`] puts in front of data without one.
const ETH_HLEN: usize = 14;

/// A record's packet as an Ethernet frame, so every packet a consumer sees is one: the data
/// itself when the kernel copied from the link-layer header, else the data behind a zeroed
/// Ethernet header built in `buf` (on the caller's stack: no allocation per event).
fn ethernet_frame<'a>(raw: &'a RawEvent, buf: &'a mut [u8; ETH_HLEN + SNAP_LEN]) -> &'a [u8] {
    let len = (raw.data_len as usize).min(raw.data.len());
    let data = &raw.data[..len];
    if raw.flags & flags::DATA_FROM_MAC != 0 {
        return data;
    }
    buf[..12].fill(0);
    buf[12..ETH_HLEN].copy_from_slice(&raw.protocol.to_be_bytes());
    buf[ETH_HLEN..ETH_HLEN + len].copy_from_slice(data);
    &buf[..ETH_HLEN + len]
}

/// The parser's view of a packet record's bytes (what the kernel parsed in place, redone).
pub fn parse_raw(raw: &RawEvent, extra_vxlan_port: u16) -> Parsed {
    let mut buf = [0; ETH_HLEN + SNAP_LEN];
    parse::parse(
        ethernet_frame(raw, &mut buf),
        true,
        raw.protocol,
        extra_vxlan_port,
    )
}

/// `value` in lower-case hex, at least `width` digits (zero-padded, at most 16): what
/// `{:0width$x}` gives, without the formatting machinery (two of these per event).
fn hex(value: u64, width: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [b'0'; 16];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((value >> ((15 - i) * 4)) & 0xf) as usize];
    }
    let digits = (16 - value.leading_zeros() as usize / 4).clamp(width.clamp(1, 16), 16);
    std::str::from_utf8(&buf[16 - digits..])
        .map(String::from)
        .unwrap_or_default()
}

/// Decodes one raw event into an [`Event`]. Pure apart from the names `namer` gives.
pub fn decode(raw: &RawEvent, node: &str, extra_vxlan_port: u16, namer: &mut dyn Namer) -> Event {
    match raw.kind {
        kind::ROUTE | kind::NEIGH => return decode_meta(raw, node, namer),
        _ => {}
    }
    let parsed = parse_raw(raw, extra_vxlan_port);
    let f = *parsed.innermost();
    let arp = (parsed.ethertype == ETH_P_ARP)
        .then(|| arp_fields(ethernet_frame(raw, &mut [0; ETH_HLEN + SNAP_LEN])))
        .flatten();
    let tunnel = tunnel_kind(parsed.tunnel).and_then(|kind| {
        Some(Tunnel {
            kind,
            vni: matches!(
                kind,
                TunnelKind::Vxlan | TunnelKind::Geneve | TunnelKind::Gre
            )
            .then_some(parsed.vni),
            outer_src: addr(parsed.outer.family, &parsed.outer.src)?,
            outer_dst: addr(parsed.outer.family, &parsed.outer.dst)?,
        })
    });
    let ports = matches!(
        f.proto,
        parse::IPPROTO_TCP | parse::IPPROTO_UDP | parse::IPPROTO_SCTP
    ) && f.fragment == 0;
    let kind = match raw.kind {
        kind::DROP => EventKind::Drop,
        kind::FUNC => EventKind::Func,
        _ => EventKind::Hop,
    };
    Event {
        kind,
        ts_ns: raw.ts_ns.wrapping_add(namer.boot_offset_ns()),
        node: node.to_string(),
        netns: namer.netns_name(raw.netns),
        netns_inode: raw.netns,
        ifname: if raw.ifindex == 0 {
            String::new()
        } else {
            namer.ifname(raw.netns, raw.ifindex)
        },
        ifindex: raw.ifindex,
        dir: match raw.dir {
            dir::INGRESS => Direction::Ingress,
            dir::EGRESS => Direction::Egress,
            _ => Direction::None,
        },
        hook: hook_of(raw.hook),
        flow: match arp {
            Some((_, ref flow)) => flow.clone(),
            None => FlowKey {
                family: Family::from_number(f.family),
                src: addr(f.family, &f.src),
                dst: addr(f.family, &f.dst),
                proto: Proto::from_number(f.proto),
                sport: ports.then_some(f.sport),
                dport: ports.then_some(f.dport),
            },
        },
        packet: Some(PacketSection {
            icmp: match arp {
                Some((op, _)) => Some(op.to_string()),
                None => icmp_name(&f),
            },
            len: raw.skb_len,
            pkt_id: hex(packet_id(&parsed), 16),
            tunnel,
            skb: hex(raw.skb, 1),
            ident: PacketIdent {
                ttl: f.ttl,
                ip_id: f.ip_id,
                l4_ident: f.l4_ident,
                icmp_type: f.icmp_type,
                tcp_flags: f.tcp_flags,
                ethertype: parsed.ethertype,
            },
            // The function's name without the offset the probe's address may carry.
            function: (kind == EventKind::Func && raw.location != 0).then(|| {
                let sym = namer.symbol(raw.location);
                sym.split('+').next().unwrap_or(&sym).to_string()
            }),
        }),
        drop: (kind == EventKind::Drop).then(|| DropSection {
            reason: namer.drop_reason(raw.reason),
            location: (raw.location != 0).then(|| namer.symbol(raw.location)),
        }),
        route: None,
        neigh: None,
    }
}

const ETH_P_ARP: u16 = 0x0806;

/// An ARP packet's operation (`arp-request`, `arp-reply`) and its sender and target IPv4
/// addresses as a flow key (family 4, protocol `arp`), from an Ethernet frame (VLAN tags
/// skipped). None when it is not ARP over Ethernet for IPv4, or is cut short.
pub fn arp_fields(frame: &[u8]) -> Option<(&'static str, FlowKey)> {
    let mut off = 12;
    while matches!(frame.get(off..off + 2)?, [0x81, 0x00] | [0x88, 0xa8]) {
        off += 4;
    }
    if frame.get(off..off + 2)? != [0x08, 0x06] {
        return None;
    }
    let arp = frame.get(off + 2..off + 2 + 28)?;
    // Ethernet hardware (1), IPv4 protocol (0x0800), 6- and 4-byte addresses.
    if arp[..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let op = match u16::from_be_bytes([arp[6], arp[7]]) {
        1 => "arp-request",
        2 => "arp-reply",
        _ => "arp",
    };
    let ip = |b: &[u8]| Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?));
    Some((
        op,
        FlowKey {
            family: Some(Family::Ipv4),
            src: ip(&arp[14..18]),
            dst: ip(&arp[24..28]),
            proto: Proto::Arp,
            sport: None,
            dport: None,
        },
    ))
}

/// Route and neighbour events: no packet, a flow key or an address instead.
fn decode_meta(raw: &RawEvent, node: &str, namer: &mut dyn Namer) -> Event {
    let mut flow = Flow::default();
    let (kind, route, neigh) = if raw.kind == kind::ROUTE {
        let rr: RouteRaw = payload(raw);
        flow.family = rr.family;
        flow.proto = rr.proto;
        flow.src = rr.src;
        flow.dst = rr.dst;
        flow.sport = rr.sport;
        flow.dport = rr.dport;
        (EventKind::Route, Some(route_lookup(&rr)), None)
    } else {
        let nr: NeighRaw = payload(raw);
        flow.family = nr.family;
        flow.dst = nr.addr;
        let neigh = addr(nr.family, &nr.addr).map(|a| NeighEvent {
            addr: a,
            state: nud_name(nr.state)
                .map(str::to_string)
                .unwrap_or_else(|| format!("0x{:02x}", nr.state)),
            old_state: nud_name(nr.old_state).map(str::to_string),
            lladdr: (nr.lladdr[..6] != [0; 6]).then(|| {
                nr.lladdr[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }),
        });
        (EventKind::Neigh, None, neigh)
    };
    let ports = flow.sport != 0 || flow.dport != 0;
    // A route event's device is the output device of a successful lookup, with the name the
    // kernel read at the lookup (no race with a renamed or moved device).
    let (ifname, ifindex) = match &route {
        Some(r) => (r.oif.clone().unwrap_or_default(), r.oif_index.unwrap_or(0)),
        None if raw.ifindex == 0 => (String::new(), 0),
        None => (namer.ifname(raw.netns, raw.ifindex), raw.ifindex),
    };
    Event {
        kind,
        ts_ns: raw.ts_ns.wrapping_add(namer.boot_offset_ns()),
        node: node.to_string(),
        netns: namer.netns_name(raw.netns),
        netns_inode: raw.netns,
        ifname,
        ifindex,
        dir: Direction::None,
        hook: hook_of(raw.hook),
        flow: FlowKey {
            family: Family::from_number(flow.family),
            src: (kind == EventKind::Route)
                .then(|| addr(flow.family, &flow.src))
                .flatten(),
            dst: addr(flow.family, &flow.dst),
            proto: Proto::from_number(flow.proto),
            sport: ports.then_some(flow.sport),
            dport: ports.then_some(flow.dport),
        },
        packet: None,
        drop: None,
        route,
        neigh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    struct FixedNames;
    impl Namer for FixedNames {
        fn netns_name(&mut self, inode: u32) -> String {
            format!("ns{inode}")
        }
        fn ifname(&mut self, _: u32, ifindex: u32) -> String {
            format!("if{ifindex}")
        }
        fn drop_reason(&self, r: u32) -> String {
            if r == 5 {
                "NO_SOCKET".into()
            } else {
                format!("reason#{r}")
            }
        }
        fn symbol(&self, a: u64) -> String {
            format!("fn+0x{:x}", a & 0xff)
        }
        fn boot_offset_ns(&self) -> u64 {
            1_000
        }
    }

    fn raw_with(data: &[u8], from_mac: bool, protocol: u16) -> RawEvent {
        let mut raw = RawEvent::ZERO;
        raw.data[..data.len()].copy_from_slice(data);
        raw.data_len = data.len() as u16;
        raw.flags = if from_mac { flags::DATA_FROM_MAC } else { 0 };
        raw.protocol = protocol;
        raw.kind = kind::HOP;
        raw.hook = hook::TC_EGRESS;
        raw.dir = dir::EGRESS;
        raw.netns = 7;
        raw.ifindex = 2;
        raw.skb_len = data.len() as u32;
        raw
    }

    fn icmp6_echo(seq: u16) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
            .icmpv6_echo_request(1, seq);
        let mut v = Vec::new();
        b.write(&mut v, &[0u8; 8]).unwrap();
        v
    }

    #[test]
    fn decodes_an_icmpv6_echo_hop() {
        let raw = raw_with(&icmp6_echo(3), true, 0x86dd);
        let ev = decode(&raw, "node-1", 0, &mut FixedNames);
        assert_eq!(ev.kind, EventKind::Hop);
        assert_eq!(ev.flow.family, Some(Family::Ipv6));
        assert_eq!(ev.flow.src, Some("fd00::1".parse().unwrap()));
        assert_eq!(ev.flow.dst, Some("fd00::2".parse().unwrap()));
        assert_eq!(ev.flow.proto.as_str(), "icmp6");
        assert_eq!(
            ev.packet.as_ref().unwrap().icmp.as_deref(),
            Some("echo-request")
        );
        assert_eq!(ev.netns, "ns7");
        assert_eq!(ev.ifname, "if2");
        assert_eq!(ev.dir, Direction::Egress);
        assert_eq!(ev.ts_ns, 1_000);
        let json = serde_json::to_value(&ev).unwrap();
        for key in [
            "kind", "ts_ns", "netns", "ifname", "ifindex", "dir", "hook", "family", "src", "dst",
            "proto", "len", "pkt_id",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["dir"], "egress");
        assert_eq!(json["hook"], "tc_egress");
    }

    #[test]
    fn packet_id_differs_between_packets_and_survives_dnat() {
        let a = parse::parse(&icmp6_echo(1), true, 0, 0);
        let b = parse::parse(&icmp6_echo(2), true, 0, 0);
        assert_ne!(packet_id(&a), packet_id(&b));
        // Same packet after DNAT of the destination: same identity.
        let mut natted = icmp6_echo(1);
        natted[14 + 24 + 15] = 9;
        let c = parse::parse(&natted, true, 0, 0);
        assert_eq!(packet_id(&a), packet_id(&c));
    }

    #[test]
    fn data_without_mac_header_gets_a_synthetic_ethernet_header() {
        let frame = icmp6_echo(1);
        let raw = raw_with(&frame[14..], false, 0x86dd);
        let ev = decode(&raw, "n", 0, &mut FixedNames);
        let mut buf = [0xff; ETH_HLEN + SNAP_LEN];
        let eth = ethernet_frame(&raw, &mut buf);
        assert_eq!(eth.len(), frame.len());
        assert_eq!(
            &eth[..14],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd]
        );
        assert_eq!(&eth[14..], &frame[14..]);
        assert_eq!(ev.flow.family, Some(Family::Ipv6));
    }

    #[test]
    fn arp_packets_name_their_operation_and_addresses() {
        let mut frame = vec![0xff; 6];
        frame.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        frame.extend([2, 0, 0, 0, 0, 1, 10, 77, 2, 1]);
        frame.extend([0; 6]);
        frame.extend([10, 77, 2, 2]);
        let ev = decode(&raw_with(&frame, true, 0x0806), "n", 0, &mut FixedNames);
        assert_eq!(ev.flow.proto, Proto::Arp);
        assert_eq!(
            (
                ev.flow.src.unwrap().to_string(),
                ev.flow.dst.unwrap().to_string()
            ),
            ("10.77.2.1".into(), "10.77.2.2".into())
        );
        assert_eq!(ev.packet.unwrap().icmp.as_deref(), Some("arp-request"));
        // Behind a VLAN tag, and cut short.
        let mut tagged = frame[..12].to_vec();
        tagged.extend([0x81, 0, 0, 5]);
        tagged.extend(&frame[12..]);
        assert_eq!(arp_fields(&tagged).unwrap().0, "arp-request");
        assert!(arp_fields(&frame[..30]).is_none());
        assert!(arp_fields(&[0u8; 60]).is_none());
    }

    #[test]
    fn drops_carry_reason_and_location() {
        let mut raw = raw_with(&icmp6_echo(1), true, 0x86dd);
        raw.kind = kind::DROP;
        raw.hook = hook::KFREE_SKB;
        raw.reason = 5;
        raw.location = 0xffff_ffff_8100_0042;
        let ev = decode(&raw, "n", 0, &mut FixedNames);
        assert_eq!(ev.reason(), Some("NO_SOCKET"));
        assert_eq!(ev.location(), Some("fn+0x42"));
    }

    fn route_raw(family: u8) -> RawEvent {
        let mut raw = RawEvent::ZERO;
        raw.kind = kind::ROUTE;
        raw.hook = if family == 4 {
            hook::FIB_LOOKUP
        } else {
            hook::FIB6_LOOKUP
        };
        raw.netns = 7;
        raw
    }

    fn with_route(mut raw: RawEvent, rr: RouteRaw) -> RawEvent {
        let n = std::mem::size_of::<RouteRaw>();
        // SAFETY: RouteRaw is plain data; data has room for it.
        let bytes = unsafe { std::slice::from_raw_parts((&rr as *const RouteRaw).cast::<u8>(), n) };
        raw.data[..n].copy_from_slice(bytes);
        raw.data_len = n as u16;
        raw
    }

    #[test]
    fn any_route_error_value_decodes() {
        // Found by fuzzing (fuzz/artifacts/event_record/): i32::MIN made errno_name's abs()
        // overflow, a panic in debug builds.
        for err in [i32::MIN, i32::MIN + 1, -101, 101, i32::MAX] {
            let rr = RouteRaw {
                family: 4,
                err,
                ..RouteRaw::default()
            };
            let ev = decode(&with_route(route_raw(4), rr), "n", 0, &mut FixedNames);
            let route = ev.route.expect("a route section");
            assert_eq!(route.err, err);
            let want = if err.unsigned_abs() == 101 {
                "ENETUNREACH".to_string()
            } else {
                format!("errno{err}")
            };
            assert_eq!(route.error.as_deref(), Some(want.as_str()));
        }
    }

    #[test]
    fn route_events_carry_key_and_result_in_both_families() {
        let mut rr = RouteRaw {
            family: 6,
            proto: parse::IPPROTO_UDP,
            sport: 1000,
            dport: 53,
            table: 254,
            rtype: 1,
            gw_family: 10,
            nh_ifindex: 3,
            flow_iif: 1,
            ..RouteRaw::default()
        };
        rr.src = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        rr.dst = "fd00:9::1".parse::<Ipv6Addr>().unwrap().octets();
        rr.gw = "fd00::fe".parse::<Ipv6Addr>().unwrap().octets();
        rr.oif_name[..4].copy_from_slice(b"eth0");
        let raw = with_route(route_raw(6), rr);
        let ev = decode(&raw, "n", 0, &mut FixedNames);
        assert_eq!(ev.kind, EventKind::Route);
        assert_eq!(
            (
                ev.flow.family.map(Family::number),
                ev.flow.proto.as_str(),
                ev.flow.sport,
                ev.flow.dport
            ),
            (Some(6), "udp", Some(1000), Some(53))
        );
        assert_eq!(ev.flow.dst, Some("fd00:9::1".parse().unwrap()));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            json["route"],
            serde_json::json!({"table": 254, "type": "unicast", "err": 0, "error": null,
                "gw": "fd00::fe", "oif": "eth0", "oif_index": 3, "no_route": false,
                "flow_oif": 0, "iif": 1})
        );
        assert_eq!(json["kind"], "route");
        assert_eq!(json["hook"], "fib6_table_lookup");
        assert_eq!(ev.ifname, "eth0");
        assert!(!ev.route.as_ref().unwrap().is_failure());

        // IPv6 null entry: no route.
        rr.no_route = 1;
        rr.rtype = 7;
        let r = route_lookup(&rr);
        assert_eq!(
            (r.kind.as_str(), r.err, r.error.as_deref()),
            ("unreachable", -101, Some("ENETUNREACH"))
        );
        assert_eq!((r.gw, r.oif.as_deref(), r.oif_index), (None, None, None));
        assert!(r.is_failure());

        // IPv4: the type follows from the error when there is no nexthop.
        let mut v4 = RouteRaw {
            family: 4,
            table: 254,
            ..RouteRaw::default()
        };
        for (err, no_route, kind, name) in [
            (-22, 0, "blackhole", "EINVAL"),
            (-113, 0, "unreachable", "EHOSTUNREACH"),
            (-13, 0, "prohibit", "EACCES"),
            (-11, 1, "none", "EAGAIN"),
        ] {
            v4.err = err;
            v4.no_route = no_route;
            let r = route_lookup(&v4);
            assert_eq!((r.kind.as_str(), r.error.as_deref()), (kind, Some(name)));
            assert!(r.is_failure());
        }
        v4.err = 0;
        v4.no_route = 0;
        v4.rtype = 2;
        let r = route_lookup(&v4);
        assert_eq!(r.kind, RouteType::Local);
        assert!(!r.is_failure());
    }

    #[test]
    fn neighbour_failures_decode_with_both_states() {
        let mut raw = RawEvent::ZERO;
        raw.kind = kind::NEIGH;
        raw.hook = hook::NEIGH_TIMER;
        raw.ifindex = 2;
        let mut nr = NeighRaw {
            family: 4,
            state: nud::FAILED,
            old_state: nud::INCOMPLETE,
            ..NeighRaw::default()
        };
        nr.addr[..4].copy_from_slice(&[10, 1, 0, 9]);
        let n = std::mem::size_of::<NeighRaw>();
        // SAFETY: NeighRaw is plain data; data has room for it.
        let bytes = unsafe { std::slice::from_raw_parts((&nr as *const NeighRaw).cast::<u8>(), n) };
        raw.data[..n].copy_from_slice(bytes);
        raw.data_len = n as u16;
        let ev = decode(&raw, "n", 0, &mut FixedNames);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["kind"], "neigh");
        assert_eq!(json["hook"], "neigh_timer_handler");
        assert_eq!(
            json["neigh"],
            serde_json::json!({"addr": "10.1.0.9", "state": "FAILED", "old_state": "INCOMPLETE", "lladdr": null})
        );
        assert_eq!(json["dst"], "10.1.0.9");
        assert_eq!(json["ifname"], "if2");
    }

    #[test]
    fn records_end_after_their_data() {
        let full = raw_with(&icmp6_echo(1), true, 0x86dd);
        // SAFETY: RawEvent is repr(C) plain data; viewing it as bytes is always valid.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&full as *const RawEvent).cast::<u8>(),
                RawEvent::DATA_OFFSET + full.data_len as usize,
            )
        };
        let raw = raw_from_bytes(bytes).unwrap();
        assert_eq!(raw.data[..], full.data[..]);
        assert_eq!(raw.skb_len, full.skb_len);
    }

    #[test]
    fn hex_matches_the_formatter() {
        for v in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            0xffff_8880_1234_5600,
            u64::MAX,
        ] {
            assert_eq!(hex(v, 16), format!("{v:016x}"));
            assert_eq!(hex(v, 1), format!("{v:x}"));
            assert_eq!(hex(v, 4), format!("{v:04x}"));
        }
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(matches!(
            raw_from_bytes(&[0; 10]),
            Err(DecodeError::Size { .. })
        ));
    }
}
