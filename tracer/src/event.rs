//! The typed event stream: what one node's kernel saw, decoded from ring-buffer bytes by pure
//! functions, then named (namespaces, devices, drop reasons, kernel symbols) by a [`Namer`].
//!
//! The JSON form of [`Event`] is a public interface (`netpath watch --json`); see
//! docs/events.md.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use serde::Serialize;
use tracer_common::{
    dir, flags, hook, kind,
    parse::{self, tunnel, Flow, Parsed},
    RawEvent,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Hop,
    Drop,
    Route,
    Neigh,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
    None,
}

/// Where in the kernel the event was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    TcIngress,
    TcEgress,
    KfreeSkb,
    NetDevQueue,
    NetifReceiveSkb,
    FibLookup,
    Fib6Lookup,
    Unknown,
}

impl Hook {
    fn from_raw(v: u8) -> Self {
        match v {
            hook::TC_INGRESS => Hook::TcIngress,
            hook::TC_EGRESS => Hook::TcEgress,
            hook::KFREE_SKB => Hook::KfreeSkb,
            hook::NET_DEV_QUEUE => Hook::NetDevQueue,
            hook::NETIF_RECEIVE => Hook::NetifReceiveSkb,
            hook::FIB_LOOKUP => Hook::FibLookup,
            hook::FIB6_LOOKUP => Hook::Fib6Lookup,
            _ => Hook::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
            Hook::KfreeSkb => "kfree_skb",
            Hook::NetDevQueue => "net_dev_queue",
            Hook::NetifReceiveSkb => "netif_receive_skb",
            Hook::FibLookup => "fib_table_lookup",
            Hook::Fib6Lookup => "fib6_table_lookup",
            Hook::Unknown => "unknown",
        }
    }
}

/// Encapsulation seen around the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// VXLAN/Geneve VNI or GRE key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
}

/// One decoded kernel event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// Wall-clock time, ns since the UNIX epoch (kernel monotonic time + boot offset).
    pub ts_ns: u64,
    /// Node the event came from (the stream's node name).
    pub node: String,
    /// Network namespace name (`ip netns` name, `root`, `pid:N`, or `netns:INODE`).
    pub netns: String,
    pub netns_inode: u32,
    pub ifname: String,
    pub ifindex: u32,
    pub dir: Direction,
    pub hook: Hook,
    /// 4 or 6 (innermost packet); 0 for non-IP.
    pub family: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    pub proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 type name (echo-request, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<String>,
    /// skb length in bytes.
    pub len: u32,
    /// Identity of the packet across hops, namespaces, tunnels and DNAT (see docs/events.md).
    pub pkt_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    /// Drop reason name from the running kernel (drops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Kernel function and offset where the packet was dropped (drops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Kernel skb address: links events about the same buffer on one node.
    pub skb: String,
    /// Packet bytes from the Ethernet header (synthesised when the stack had none).
    #[serde(skip)]
    pub data: Bytes,
    #[serde(skip)]
    pub parsed: Parsed,
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

pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        parse::IPPROTO_TCP => "tcp",
        parse::IPPROTO_UDP => "udp",
        parse::IPPROTO_ICMP => "icmp",
        parse::IPPROTO_ICMPV6 => "icmp6",
        parse::IPPROTO_SCTP => "sctp",
        parse::IPPROTO_GRE => "gre",
        parse::IPPROTO_IPIP => "ipip",
        parse::IPPROTO_IPV6 => "ipv6",
        0 => "none",
        _ => "other",
    }
}

fn tunnel_name(t: u8) -> &'static str {
    match t {
        tunnel::VXLAN => "vxlan",
        tunnel::GENEVE => "geneve",
        tunnel::GRE => "gre",
        tunnel::IPIP => "ipip",
        tunnel::IP6IN4 => "sit",
        tunnel::IP4IN6 => "ip4ip6",
        tunnel::IP6IN6 => "ip6ip6",
        _ => "none",
    }
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

/// Puts an Ethernet header in front of data that starts at the network header, so every
/// packet a consumer sees is an Ethernet frame.
fn ethernet_frame(raw: &RawEvent) -> Bytes {
    let len = (raw.data_len as usize).min(raw.data.len());
    let data = &raw.data[..len];
    if raw.flags & flags::DATA_FROM_MAC != 0 {
        return Bytes::copy_from_slice(data);
    }
    let mut v = Vec::with_capacity(14 + len);
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&raw.protocol.to_be_bytes());
    v.extend_from_slice(data);
    Bytes::from(v)
}

/// Decodes one raw event into an [`Event`]. Pure apart from the names `namer` gives.
pub fn decode(raw: &RawEvent, node: &str, extra_vxlan_port: u16, namer: &mut dyn Namer) -> Event {
    let data = ethernet_frame(raw);
    let parsed = parse::parse(&data, true, raw.protocol, extra_vxlan_port);
    let f = *parsed.innermost();
    let has_tunnel = parsed.tunnel != tunnel::NONE;
    let tunnel = if has_tunnel {
        match (
            addr(parsed.outer.family, &parsed.outer.src),
            addr(parsed.outer.family, &parsed.outer.dst),
        ) {
            (Some(outer_src), Some(outer_dst)) => Some(Tunnel {
                kind: tunnel_name(parsed.tunnel),
                vni: matches!(parsed.tunnel, tunnel::VXLAN | tunnel::GENEVE | tunnel::GRE)
                    .then_some(parsed.vni),
                outer_src,
                outer_dst,
            }),
            _ => None,
        }
    } else {
        None
    };
    let ports = matches!(
        f.proto,
        parse::IPPROTO_TCP | parse::IPPROTO_UDP | parse::IPPROTO_SCTP
    ) && f.fragment == 0;
    let kind = match raw.kind {
        kind::DROP => EventKind::Drop,
        kind::ROUTE => EventKind::Route,
        kind::NEIGH => EventKind::Neigh,
        _ => EventKind::Hop,
    };
    let is_drop = kind == EventKind::Drop;
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
        hook: Hook::from_raw(raw.hook),
        family: f.family,
        src: addr(f.family, &f.src),
        dst: addr(f.family, &f.dst),
        proto: proto_name(f.proto),
        sport: ports.then_some(f.sport),
        dport: ports.then_some(f.dport),
        icmp: icmp_name(&f),
        len: raw.skb_len,
        pkt_id: format!("{:016x}", packet_id(&parsed)),
        tunnel,
        reason: is_drop.then(|| namer.drop_reason(raw.reason)),
        location: (is_drop && raw.location != 0).then(|| namer.symbol(raw.location)),
        skb: format!("{:x}", raw.skb),
        data,
        parsed,
    }
}

impl Event {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let secs = self.ts_ns / 1_000_000_000;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let micros = (self.ts_ns % 1_000_000_000) / 1000;
        let dir = match self.dir {
            Direction::Ingress => "in ",
            Direction::Egress => "out",
            Direction::None => "   ",
        };
        let kind = match self.kind {
            EventKind::Drop => "DROP",
            EventKind::Hop => "hop ",
            EventKind::Route => "route",
            EventKind::Neigh => "neigh",
            EventKind::Lost => "lost",
        };
        let dev = if self.ifname.is_empty() {
            "-".to_string()
        } else {
            self.ifname.clone()
        };
        let mut line = format!(
            "{h:02}:{m:02}:{s:02}.{micros:06} {kind} {:<17} {}/{dev} {dir} ",
            self.hook.as_str(),
            self.netns
        );
        let endpoint = |a: &Option<IpAddr>, p: Option<u16>| match (a, p) {
            (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.to_string(),
            (None, _) => "?".into(),
        };
        if self.family == 0 {
            line.push_str(&format!("ethertype 0x{:04x}", self.parsed.ethertype));
        } else {
            line.push_str(&format!(
                "IPv{} {} > {} {}",
                self.family,
                endpoint(&self.src, self.sport),
                endpoint(&self.dst, self.dport),
                self.proto
            ));
        }
        if let Some(icmp) = &self.icmp {
            line.push_str(&format!(" {icmp}"));
        }
        line.push_str(&format!(" len {}", self.len));
        if let Some(t) = &self.tunnel {
            line.push_str(&format!(
                " via {} {} > {}",
                t.kind, t.outer_src, t.outer_dst
            ));
            if let Some(vni) = t.vni {
                line.push_str(&format!(" vni {vni}"));
            }
        }
        if let Some(r) = &self.reason {
            line.push_str(&format!(" reason {r}"));
        }
        if let Some(l) = &self.location {
            line.push_str(&format!(" at {l}"));
        }
        line.push_str(&format!(" pkt {}", &self.pkt_id[..8]));
        line
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
        assert_eq!(ev.family, 6);
        assert_eq!(ev.src, Some("fd00::1".parse().unwrap()));
        assert_eq!(ev.dst, Some("fd00::2".parse().unwrap()));
        assert_eq!(ev.proto, "icmp6");
        assert_eq!(ev.icmp.as_deref(), Some("echo-request"));
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
        assert_eq!(&ev.data[12..14], &[0x86, 0xdd]);
        assert_eq!(ev.family, 6);
    }

    #[test]
    fn drops_carry_reason_and_location() {
        let mut raw = raw_with(&icmp6_echo(1), true, 0x86dd);
        raw.kind = kind::DROP;
        raw.hook = hook::KFREE_SKB;
        raw.reason = 5;
        raw.location = 0xffff_ffff_8100_0042;
        let ev = decode(&raw, "n", 0, &mut FixedNames);
        assert_eq!(ev.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(ev.location.as_deref(), Some("fn+0x42"));
        assert!(ev.line().contains("reason NO_SOCKET"), "{}", ev.line());
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
    fn short_records_are_rejected() {
        assert!(matches!(
            raw_from_bytes(&[0; 10]),
            Err(DecodeError::Size { .. })
        ));
    }
}
