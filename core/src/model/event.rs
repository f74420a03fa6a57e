//! One kernel event, as it travels: a common part (when, which node, namespace, device, hook),
//! the flow key, and optional sections for what the event is about (a packet, a drop, a route
//! lookup, a neighbour entry).
//!
//! In JSON the common part, the flow key and the packet and drop sections are flat (the
//! schema of `netpath watch --json`, docs/events.md); `route` and `neigh` are objects.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::family::{self, Family};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A packet seen on a device.
    Hop,
    /// A packet the kernel freed as dropped.
    Drop,
    /// A routing-table lookup.
    Route,
    /// A neighbour (ARP/NDP) entry that failed.
    Neigh,
    /// A kernel function the packet passed through (`--functions`).
    Func,
    /// Events the producer could not deliver.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
    None,
}

/// Where in the kernel the event was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    TcIngress,
    TcEgress,
    KfreeSkb,
    NetDevQueue,
    NetifReceiveSkb,
    #[serde(rename = "fib_table_lookup")]
    FibLookup,
    #[serde(rename = "fib6_table_lookup")]
    Fib6Lookup,
    NeighUpdate,
    NeighTimerHandler,
    /// A kprobe on a kernel function (`--functions`).
    Kprobe,
    Unknown,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
            Hook::KfreeSkb => "kfree_skb",
            Hook::NetDevQueue => "net_dev_queue",
            Hook::NetifReceiveSkb => "netif_receive_skb",
            Hook::FibLookup => "fib_table_lookup",
            Hook::Fib6Lookup => "fib6_table_lookup",
            Hook::NeighUpdate => "neigh_update",
            Hook::NeighTimerHandler => "neigh_timer_handler",
            Hook::Kprobe => "kprobe",
            Hook::Unknown => "unknown",
        }
    }
}

/// The transport (or next-header) protocol of the innermost packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Sctp,
    Gre,
    Ipip,
    Ipv6,
    /// An ARP packet (no IP header; `src`/`dst` are its sender and target addresses).
    Arp,
    /// No transport header (not IP, or a flow key without one).
    None,
    Other,
}

impl Proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMP: u8 = 1;
    pub const ICMPV6: u8 = 58;

    /// From the IP protocol number.
    pub fn from_number(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 => Proto::Icmp,
            58 => Proto::Icmp6,
            132 => Proto::Sctp,
            47 => Proto::Gre,
            4 => Proto::Ipip,
            41 => Proto::Ipv6,
            0 => Proto::None,
            _ => Proto::Other,
        }
    }

    /// The IP protocol number (`Other` and `None`: 0, unknown).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmp6 => 58,
            Proto::Sctp => 132,
            Proto::Gre => 47,
            Proto::Ipip => 4,
            Proto::Ipv6 => 41,
            Proto::Arp | Proto::None | Proto::Other => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmp6 => "icmp6",
            Proto::Sctp => "sctp",
            Proto::Gre => "gre",
            Proto::Ipip => "ipip",
            Proto::Ipv6 => "ipv6",
            Proto::Arp => "arp",
            Proto::None => "none",
            Proto::Other => "other",
        }
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::Icmp | Proto::Icmp6)
    }
}

/// Encapsulation seen around the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    Vxlan,
    Geneve,
    Gre,
    Ipip,
    /// IPv6 in IPv4.
    Sit,
    Ip4ip6,
    Ip6ip6,
}

impl TunnelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Gre => "gre",
            TunnelKind::Ipip => "ipip",
            TunnelKind::Sit => "sit",
            TunnelKind::Ip4ip6 => "ip4ip6",
            TunnelKind::Ip6ip6 => "ip6ip6",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    #[serde(rename = "type")]
    pub kind: TunnelKind,
    /// VXLAN/Geneve VNI or GRE key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
}

/// The addresses and ports an event is about: the innermost packet's, or a route lookup's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowKey {
    /// `4`, `6`, or `0` when there is no IP header.
    #[serde(with = "family::number_or_zero")]
    pub family: Option<Family>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    pub proto: Proto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
}

impl FlowKey {
    pub const NONE: FlowKey = FlowKey {
        family: None,
        src: None,
        dst: None,
        proto: Proto::None,
        sport: None,
        dport: None,
    };
}

/// The header fields that stay the same on every hop of one packet (NAT rewrites addresses
/// and ports, not these): what recognises a probe and orders nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketIdent {
    /// IPv4 TTL / IPv6 hop limit of the innermost packet.
    pub ttl: u8,
    /// IPv4 identification, or the IPv6 flow label.
    pub ip_id: u32,
    /// TCP sequence number, or ICMP/ICMPv6 echo `id << 16 | seq`.
    pub l4_ident: u32,
    /// ICMP/ICMPv6 type (0 otherwise).
    pub icmp_type: u8,
    pub tcp_flags: u8,
    /// Ethertype of the outermost frame.
    pub ethertype: u16,
}

/// The packet an event saw (hops and drops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketSection {
    /// ICMP/ICMPv6 type name (echo-request, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<String>,
    /// skb length in bytes.
    pub len: u32,
    /// Identity of the packet across hops, namespaces, tunnels and DNAT (docs/events.md).
    pub pkt_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    /// Kernel skb address: links events about the same buffer on one node.
    pub skb: String,
    pub ident: PacketIdent,
    /// The kernel function the packet was in, for function events (`ip_rcv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// Why and where the kernel dropped the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropSection {
    /// Drop reason name from the running kernel (`enum skb_drop_reason`).
    pub reason: String,
    /// Kernel function and offset (`ip6_pkt_discard+0x11`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl DropSection {
    /// The function part of `location` (`ip_error` of `ip_error+0x94`).
    pub fn function(&self) -> Option<&str> {
        self.location
            .as_deref()
            .map(|l| l.split('+').next().unwrap_or(l))
    }
}

/// RTN_* route types, plus `none`: no route matched in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteType {
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Nat,
    Xresolve,
    Unspec,
    /// No route matched in this table (IPv4 lookups that go on in the next table).
    None,
}

impl RouteType {
    /// From the kernel's RTN_* number.
    pub fn from_rtn(rtype: u8) -> RouteType {
        match rtype {
            1 => RouteType::Unicast,
            2 => RouteType::Local,
            3 => RouteType::Broadcast,
            4 => RouteType::Anycast,
            5 => RouteType::Multicast,
            6 => RouteType::Blackhole,
            7 => RouteType::Unreachable,
            8 => RouteType::Prohibit,
            9 => RouteType::Throw,
            10 => RouteType::Nat,
            11 => RouteType::Xresolve,
            _ => RouteType::Unspec,
        }
    }

    /// From the name iproute2 and the kernel use (`unicast`, `blackhole`, ...).
    pub fn from_name(name: &str) -> Option<RouteType> {
        Some(match name {
            "unicast" => RouteType::Unicast,
            "local" => RouteType::Local,
            "broadcast" => RouteType::Broadcast,
            "anycast" => RouteType::Anycast,
            "multicast" => RouteType::Multicast,
            "blackhole" => RouteType::Blackhole,
            "unreachable" => RouteType::Unreachable,
            "prohibit" => RouteType::Prohibit,
            "throw" => RouteType::Throw,
            "nat" => RouteType::Nat,
            "xresolve" => RouteType::Xresolve,
            "unspec" => RouteType::Unspec,
            "none" => RouteType::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteType::Unicast => "unicast",
            RouteType::Local => "local",
            RouteType::Broadcast => "broadcast",
            RouteType::Anycast => "anycast",
            RouteType::Multicast => "multicast",
            RouteType::Blackhole => "blackhole",
            RouteType::Unreachable => "unreachable",
            RouteType::Prohibit => "prohibit",
            RouteType::Throw => "throw",
            RouteType::Nat => "nat",
            RouteType::Xresolve => "xresolve",
            RouteType::Unspec => "unspec",
            RouteType::None => "none",
        }
    }

    /// A route that exists and discards what matches it.
    pub fn discards(self) -> bool {
        matches!(
            self,
            RouteType::Blackhole | RouteType::Unreachable | RouteType::Prohibit
        )
    }
}

impl std::fmt::Display for RouteType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one routing-table lookup (`kind: "route"`). The flow key is the event's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLookup {
    /// Routing table id (254 main, 255 local, ...).
    pub table: u32,
    #[serde(rename = "type")]
    pub kind: RouteType,
    /// 0, or the negative errno of the result (-101 ENETUNREACH, -22 EINVAL for blackhole...).
    pub err: i32,
    /// Name of `err` (`ENETUNREACH`), or null.
    pub error: Option<String>,
    /// Gateway of the chosen nexthop, or null (directly connected, or a failed lookup).
    pub gw: Option<IpAddr>,
    /// Output device name and index of a successful lookup, or null.
    pub oif: Option<String>,
    pub oif_index: Option<u32>,
    /// No route matched in this table (IPv4: -EAGAIN without a nexthop; IPv6: the kernel's
    /// null entry). The lookup may go on in the next table of the rules.
    pub no_route: bool,
    /// Flow key interfaces: the requested output device (0 = any) and the input device
    /// (1 = loopback: a locally generated packet).
    pub flow_oif: u32,
    pub iif: u32,
}

impl RouteLookup {
    /// Did this lookup fail: an error, or a route that discards?
    pub fn is_failure(&self) -> bool {
        self.err != 0 || self.error.is_some() || self.kind.discards()
    }

    /// The result in words: `table 254: unicast via fd00::1 dev eth0`.
    pub fn text(&self) -> String {
        let mut s = format!("table {}: ", self.table);
        if self.no_route {
            s.push_str("no route");
        } else {
            s.push_str(self.kind.as_str());
        }
        if let Some(g) = self.gw {
            s.push_str(&format!(" via {g}"));
        }
        if let Some(o) = &self.oif {
            s.push_str(&format!(" dev {o}"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" ({e})"));
        }
        s
    }
}

/// A neighbour (ARP / NDP) entry that failed to resolve (`kind: "neigh"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighEvent {
    pub addr: IpAddr,
    /// `FAILED`, ...
    pub state: String,
    /// State before: `INCOMPLETE` (never answered), `PROBE` (stopped answering), ...
    pub old_state: Option<String>,
    /// Link-layer address the kernel last held, or null.
    pub lladdr: Option<String>,
}

/// One event from one node's kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// Wall-clock time, ns since the UNIX epoch (the node's clock: compare only within a node).
    pub ts_ns: u64,
    /// The node the event came from.
    pub node: String,
    /// Network namespace name (`ip netns` name, `root`, `pid:N`, or `netns:INODE`).
    pub netns: String,
    pub netns_inode: u32,
    pub ifname: String,
    pub ifindex: u32,
    pub dir: Direction,
    pub hook: Hook,
    #[serde(flatten)]
    pub flow: FlowKey,
    #[serde(flatten, default)]
    pub packet: Option<PacketSection>,
    #[serde(flatten, default)]
    pub drop: Option<DropSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteLookup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neigh: Option<NeighEvent>,
}

impl Event {
    /// The packet's invariant header fields (zero for events without a packet).
    pub fn ident(&self) -> PacketIdent {
        self.packet.as_ref().map(|p| p.ident).unwrap_or_default()
    }

    pub fn pkt_id(&self) -> Option<&str> {
        self.packet.as_ref().map(|p| p.pkt_id.as_str())
    }

    pub fn reason(&self) -> Option<&str> {
        self.drop.as_ref().map(|d| d.reason.as_str())
    }

    pub fn location(&self) -> Option<&str> {
        self.drop.as_ref().and_then(|d| d.location.as_deref())
    }

    pub fn function(&self) -> Option<&str> {
        self.drop.as_ref().and_then(DropSection::function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop() -> Event {
        Event {
            kind: EventKind::Drop,
            ts_ns: 5,
            node: "node-1".into(),
            netns: "np-pod-a".into(),
            netns_inode: 7,
            ifname: "eth0".into(),
            ifindex: 2,
            dir: Direction::Egress,
            hook: Hook::KfreeSkb,
            flow: FlowKey {
                family: Some(Family::Ipv6),
                src: Some("fd00::1".parse().unwrap()),
                dst: Some("fd00::2".parse().unwrap()),
                proto: Proto::Icmp6,
                sport: None,
                dport: None,
            },
            packet: Some(PacketSection {
                icmp: Some("echo-request".into()),
                len: 104,
                pkt_id: "00ff".into(),
                tunnel: Some(Tunnel {
                    kind: TunnelKind::Vxlan,
                    vni: Some(1),
                    outer_src: "198.18.1.10".parse().unwrap(),
                    outer_dst: "198.18.2.10".parse().unwrap(),
                }),
                skb: "ffff1".into(),
                ident: PacketIdent {
                    ttl: 63,
                    l4_ident: 7 << 16 | 1,
                    icmp_type: 128,
                    ..PacketIdent::default()
                },
                function: None,
            }),
            drop: Some(DropSection {
                reason: "IP_INNOROUTES".into(),
                location: Some("ip6_pkt_discard+0x11".into()),
            }),
            route: None,
            neigh: None,
        }
    }

    #[test]
    fn events_round_trip_through_json_with_the_flat_schema() {
        let e = hop();
        let json = serde_json::to_value(&e).unwrap();
        for (key, want) in [
            ("kind", "drop"),
            ("family", "6"),
            ("proto", "icmp6"),
            ("reason", "IP_INNOROUTES"),
            ("pkt_id", "00ff"),
            ("hook", "kfree_skb"),
            ("dir", "egress"),
        ] {
            let got = json[key].to_string().trim_matches('"').to_string();
            assert_eq!(got, want, "{key} in {json}");
        }
        assert_eq!(json["tunnel"]["type"], "vxlan");
        assert_eq!(json["ident"]["ttl"], 63);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.function(), Some("ip6_pkt_discard"));
    }

    #[test]
    fn events_without_a_packet_or_a_drop_have_neither_section() {
        let mut e = hop();
        e.kind = EventKind::Route;
        e.packet = None;
        e.drop = None;
        e.flow.family = None;
        e.route = Some(RouteLookup {
            table: 254,
            kind: RouteType::Unreachable,
            err: -101,
            error: Some("ENETUNREACH".into()),
            gw: None,
            oif: None,
            oif_index: None,
            no_route: true,
            flow_oif: 0,
            iif: 1,
        });
        let json = serde_json::to_value(&e).unwrap();
        assert!(
            json.get("pkt_id").is_none() && json.get("reason").is_none(),
            "{json}"
        );
        assert_eq!(json["family"], 0);
        assert_eq!(json["route"]["type"], "unreachable");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert!(back.route.unwrap().is_failure());
    }

    #[test]
    fn protocols_and_route_types_have_numbers_and_names() {
        for n in [1u8, 6, 17, 58, 132, 47, 4, 41] {
            assert_eq!(Proto::from_number(n).number(), n);
        }
        assert_eq!(Proto::from_number(200), Proto::Other);
        for t in 1u8..=11 {
            let r = RouteType::from_rtn(t);
            assert_eq!(RouteType::from_name(r.as_str()), Some(r));
        }
        assert!(RouteType::Blackhole.discards() && !RouteType::None.discards());
    }
}
