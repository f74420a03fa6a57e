//! Rebuilding one packet's path from events of any number of nodes (pure functions).
//!
//! A packet is recognised by what the probe put in it (ICMP echo id/sequence, or the source
//! port of a TCP/UDP probe); its hops are the events with its packet identity (`pkt_id`, which
//! survives forwarding, tunnels and DNAT), plus the drop events about it.
//!
//! Order: events of one node are ordered by that node's clock. Nodes are ordered by causality,
//! not by comparing clocks: every router on the way decrements the TTL / hop limit, so a node
//! that saw the packet with a higher TTL saw it earlier. Nodes that only bridge (equal TTLs) are
//! ordered by the lowest TTL they saw, then by time.
use std::{collections::BTreeMap, net::IpAddr};

use crate::model::{Direction, Event, EventKind, Family, Hop, PacketPath, Proto};

/// What identifies the probe's packets in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMatch {
    /// ICMP/ICMPv6 echo with this identifier and sequence number.
    Echo { family: Family, id: u16, seq: u16 },
    /// TCP or UDP from `addr`:`port` (the probe socket), and the answers to it.
    Transport {
        family: Family,
        proto: Proto,
        addr: IpAddr,
        port: u16,
    },
}

impl ProbeMatch {
    pub fn family(&self) -> Family {
        match *self {
            ProbeMatch::Echo { family, .. } | ProbeMatch::Transport { family, .. } => family,
        }
    }

    /// The probe itself, as seen anywhere (before or after NAT, inside a tunnel).
    pub fn is_request(&self, e: &Event) -> bool {
        self.matches(e, false)
    }

    /// The answer to the probe (echo reply, SYN-ACK/RST, UDP answer).
    pub fn is_reply(&self, e: &Event) -> bool {
        self.matches(e, true)
    }

    fn matches(&self, e: &Event, reply: bool) -> bool {
        if e.flow.family != Some(self.family()) {
            return false;
        }
        let ident = e.ident();
        match *self {
            ProbeMatch::Echo { id, seq, .. } => {
                let (v4, v6) = if reply { (0, 129) } else { (8, 128) };
                ((e.flow.proto == Proto::Icmp && ident.icmp_type == v4)
                    || (e.flow.proto == Proto::Icmp6 && ident.icmp_type == v6))
                    && ident.l4_ident == ((id as u32) << 16 | seq as u32)
            }
            ProbeMatch::Transport {
                proto, addr, port, ..
            } => {
                // Requests come from the probe socket, answers go to it.
                let (ip, p) = if reply {
                    (e.flow.dst, e.flow.dport)
                } else {
                    (e.flow.src, e.flow.sport)
                };
                e.flow.proto == proto && ip == Some(addr) && p == Some(port)
            }
        }
    }

    /// An ICMP error sent back to the probe's source (unreachable, too big, time exceeded).
    pub fn is_error_to_source(&self, e: &Event, source: IpAddr) -> bool {
        e.flow.family == Some(self.family())
            && e.flow.dst == Some(source)
            && matches!(
                (e.flow.proto, e.ident().icmp_type),
                (Proto::Icmp, 3 | 11 | 12) | (Proto::Icmp6, 1..=4)
            )
    }
}

/// The path of the first packet `is_packet` selects: its hop events (same `pkt_id`) and every
/// drop event about it, ordered by causality across nodes.
pub fn rebuild(events: &[Event], is_packet: impl Fn(&Event) -> bool) -> PacketPath {
    let first = events
        .iter()
        .filter(|e| e.kind == EventKind::Hop && is_packet(e))
        .min_by_key(|e| e.ts_ns);
    let first_drop = events
        .iter()
        .filter(|e| e.kind == EventKind::Drop && is_packet(e))
        .min_by_key(|e| e.ts_ns);
    let id = first
        .or(first_drop)
        .and_then(|e| e.pkt_id())
        .map(str::to_string);
    let Some(id) = id else {
        return PacketPath::default();
    };
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| match e.kind {
            EventKind::Hop | EventKind::Func => e.pkt_id() == Some(id.as_str()),
            EventKind::Drop => e.pkt_id() == Some(id.as_str()) || is_packet(e),
            _ => false,
        })
        .collect();
    let routes = route_lookups(events, &mine);
    let mut all = mine;
    all.extend(routes);
    let mut hops: Vec<Hop> = order(&all).into_iter().map(Hop::from_event).collect();
    drop_repeated_lookups(&mut hops);
    mark_nat(&mut hops);
    PacketPath { hops }
}

/// The packet's stay in one namespace: first and last time seen, whether it came in there (its
/// first event is an ingress) rather than being made there, and its (src, dst) pairs there.
struct Stay {
    first: u64,
    last: u64,
    came_in: bool,
    pairs: Vec<(Option<IpAddr>, Option<IpAddr>)>,
}

/// Route lookups the kernel made for this packet: route events in a namespace the packet went
/// through, for its addresses there, during its time there. A packet that came in is looked up
/// after its ingress (an earlier lookup for the same addresses was another packet's, e.g. the
/// request's reverse-path check seen by the answer); one made there is looked up before it
/// leaves, hence up to 2 ms before. Lookups up to 2 ms after the last event are kept (local
/// delivery). (The kernel programs already leave out misses in the local table.)
fn route_lookups<'a>(events: &'a [Event], packet: &[&'a Event]) -> Vec<&'a Event> {
    const SLACK_NS: u64 = 2_000_000;
    let mut seen: BTreeMap<&str, Stay> = BTreeMap::new();
    for e in packet {
        let stay = seen.entry(e.netns.as_str()).or_insert(Stay {
            first: u64::MAX,
            last: 0,
            came_in: false,
            pairs: Vec::new(),
        });
        if e.ts_ns < stay.first {
            stay.first = e.ts_ns;
            stay.came_in = e.dir == Direction::Ingress;
        }
        stay.last = stay.last.max(e.ts_ns);
        if !stay.pairs.contains(&(e.flow.src, e.flow.dst)) {
            stay.pairs.push((e.flow.src, e.flow.dst));
        }
    }
    events
        .iter()
        .filter(|e| e.kind == EventKind::Route)
        .filter(|e| {
            seen.get(e.netns.as_str()).is_some_and(|stay| {
                let before = if stay.came_in { 0 } else { SLACK_NS };
                e.ts_ns + before >= stay.first
                    && e.ts_ns <= stay.last + SLACK_NS
                    && stay.pairs.iter().any(|(src, dst)| {
                        *dst == e.flow.dst
                            && (e.flow.src == *src || e.flow.src.is_none_or(|s| s.is_unspecified()))
                    })
            })
        })
        .collect()
}

/// Drops a route hop that repeats the one just before it (same place, addresses and answer):
/// the kernel may look the same packet up twice (input route, then a reverse-path check).
fn drop_repeated_lookups(hops: &mut Vec<Hop>) {
    hops.dedup_by(|next, prev| {
        next.kind == EventKind::Route
            && prev.kind == EventKind::Route
            && next.node == prev.node
            && next.netns == prev.netns
            && next.src == prev.src
            && next.dst == prev.dst
            && next.route == prev.route
    });
}

/// Orders events of one packet: per node by time, nodes by decreasing TTL (see module docs).
pub fn order<'a>(events: &[&'a Event]) -> Vec<&'a Event> {
    let mut by_node: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_node.entry(e.node.as_str()).or_default().push(e);
    }
    let mut nodes: Vec<(u8, u8, u64, Vec<&Event>)> = by_node
        .into_values()
        .map(|mut evs| {
            evs.sort_by_key(|e| e.ts_ns);
            // Drops of packets without a parsed IP header carry TTL 0: ignore them here.
            let ttls = evs.iter().map(|e| e.ident().ttl).filter(|t| *t > 0);
            let max = ttls.clone().max().unwrap_or(0);
            let min = ttls.min().unwrap_or(0);
            let first_ts = evs.first().map(|e| e.ts_ns).unwrap_or(0);
            (max, min, first_ts, evs)
        })
        .collect();
    nodes.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    nodes.into_iter().flat_map(|n| n.3).collect()
}

fn endpoint(ip: Option<IpAddr>, port: Option<u16>) -> String {
    match (ip, port) {
        (Some(ip), Some(p)) => std::net::SocketAddr::new(ip, p).to_string(),
        (Some(ip), None) => ip.to_string(),
        _ => "?".into(),
    }
}

/// Notes on each hop where the innermost addresses or ports changed since the previous one.
fn mark_nat(hops: &mut [Hop]) {
    let mut prev: Option<(String, String)> = None;
    for h in hops.iter_mut().filter(|h| h.kind == EventKind::Hop) {
        let now = (endpoint(h.src, h.sport), endpoint(h.dst, h.dport));
        if let Some((ps, pd)) = &prev {
            let mut notes = Vec::new();
            if *pd != now.1 {
                notes.push(format!("DNAT {pd} -> {}", now.1));
            }
            if *ps != now.0 {
                notes.push(format!("SNAT {ps} -> {}", now.0));
            }
            if !notes.is_empty() {
                h.nat = Some(notes.join(", "));
            }
        }
        prev = Some(now);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{
        DropSection, FlowKey, Hook, PacketIdent, PacketSection, RouteLookup, RouteType,
    };

    /// A hand-made event of an ICMP echo request (id 7, seq 1) with `ttl`.
    pub(crate) fn echo_event(
        node: &str,
        netns: &str,
        ifname: &str,
        dir: Direction,
        ts: u64,
        ttl: u8,
        dst: &str,
    ) -> Event {
        Event {
            kind: EventKind::Hop,
            ts_ns: ts,
            node: node.into(),
            netns: netns.into(),
            netns_inode: 1,
            ifname: ifname.into(),
            ifindex: 2,
            dir,
            hook: if dir == Direction::Egress {
                Hook::TcEgress
            } else {
                Hook::TcIngress
            },
            flow: FlowKey {
                family: Some(Family::Ipv4),
                src: Some("10.244.1.2".parse().unwrap()),
                dst: Some(dst.parse().unwrap()),
                proto: Proto::Icmp,
                sport: None,
                dport: None,
            },
            packet: Some(PacketSection {
                icmp: Some("echo-request".into()),
                len: 84,
                pkt_id: "abc".into(),
                tunnel: None,
                skb: "0".into(),
                ident: PacketIdent {
                    ttl,
                    icmp_type: 8,
                    l4_ident: 7 << 16 | 1,
                    ..PacketIdent::default()
                },
                function: None,
            }),
            drop: None,
            route: None,
            neigh: None,
        }
    }

    /// The same packet taken at a kfree_skb drop with `reason` at `location`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn drop_event(
        node: &str,
        netns: &str,
        ifname: &str,
        ts: u64,
        ttl: u8,
        dst: &str,
        reason: &str,
        location: &str,
    ) -> Event {
        let mut e = echo_event(node, netns, ifname, Direction::None, ts, ttl, dst);
        e.kind = EventKind::Drop;
        e.hook = Hook::KfreeSkb;
        e.drop = Some(DropSection {
            reason: reason.into(),
            location: Some(location.into()),
        });
        e
    }

    /// Sets the identity of a hand-made event.
    pub(crate) fn set_pkt_id(e: &mut Event, id: &str) {
        e.packet.as_mut().unwrap().pkt_id = id.into();
    }

    const ECHO: ProbeMatch = ProbeMatch::Echo {
        family: Family::Ipv4,
        id: 7,
        seq: 1,
    };

    #[test]
    fn nodes_are_ordered_by_ttl_even_when_their_clocks_disagree() {
        use Direction::*;
        let pc = "10.244.2.2";
        // node-2's clock is 5 s behind: by timestamps it would come first.
        let events = vec![
            echo_event("node-2", "np-node-2", "eth0", Ingress, 1_000, 62, pc),
            echo_event("node-2", "np-pod-c", "eth0", Ingress, 1_010, 61, pc),
            echo_event("node-1", "np-pod-a", "eth0", Egress, 5_000_000_000, 64, pc),
            echo_event("node-1", "np-node-1", "eth0", Egress, 5_000_000_100, 63, pc),
            echo_event(
                "underlay",
                "np-underlay",
                "br0",
                Ingress,
                5_000_000_200,
                63,
                pc,
            ),
            echo_event(
                "underlay",
                "np-underlay",
                "br0",
                Egress,
                5_000_000_300,
                62,
                pc,
            ),
        ];
        let path = rebuild(&events, |e| ECHO.is_request(e));
        assert_eq!(
            path.namespaces(),
            [
                "np-pod-a",
                "np-node-1",
                "np-underlay",
                "np-node-2",
                "np-pod-c"
            ]
        );
        assert!(path.reached("np-pod-c"));
        assert!(!path.reached("np-pod-b"));
    }

    fn route_event(netns: &str, ts: u64, table: u32, kind: &str, no_route: bool) -> Event {
        let mut e = echo_event("node-1", netns, "", Direction::None, ts, 0, "10.244.2.2");
        e.kind = EventKind::Route;
        e.hook = Hook::FibLookup;
        e.packet = None;
        e.route = Some(RouteLookup {
            table,
            kind: RouteType::from_name(kind).unwrap(),
            err: 0,
            error: None,
            gw: Some("198.18.0.1".parse().unwrap()),
            oif: Some("eth0".into()),
            oif_index: Some(2),
            no_route,
            flow_oif: 0,
            iif: 3,
        });
        e
    }

    #[test]
    fn the_kernels_route_lookups_join_the_path_where_the_packet_was() {
        use Direction::*;
        let pc = "10.244.2.2";
        let events = vec![
            echo_event("node-1", "np-pod-a", "eth0", Egress, 1_000_000, 64, pc),
            echo_event("node-1", "np-node-1", "veth1", Ingress, 10_000_000, 64, pc),
            route_event("np-node-1", 10_200_000, 254, "unicast", false),
            echo_event("node-1", "np-node-1", "eth0", Egress, 10_300_000, 63, pc),
            // Another packet's lookup, long after.
            route_event("np-node-1", 90_000_000, 254, "unicast", false),
            // A namespace the packet never went through.
            route_event("np-pod-b", 10_200_000, 254, "unicast", false),
        ];
        let path = rebuild(&events, |e| ECHO.is_request(e));
        let routes: Vec<&Hop> = path
            .hops
            .iter()
            .filter(|h| h.kind == EventKind::Route)
            .collect();
        assert_eq!(routes.len(), 1, "{path:#?}");
        assert_eq!(
            path.hops[2].kind,
            EventKind::Route,
            "between ingress and egress"
        );
        assert_eq!(
            path.route_in("np-node-1")
                .and_then(|h| h.route_text())
                .as_deref(),
            Some("table 254: unicast via 198.18.0.1 dev eth0")
        );
        assert_eq!(
            path.last().unwrap().ifname,
            "eth0",
            "a lookup is not a place"
        );
    }

    /// A lookup for `src -> dst` in `netns` at `ts` (the answer's direction when dst is the
    /// client).
    fn lookup(netns: &str, ts: u64, table: u32, src: &str, dst: &str) -> Event {
        let mut e = route_event(netns, ts, table, "unicast", false);
        e.flow.src = Some(src.parse().unwrap());
        e.flow.dst = Some(dst.parse().unwrap());
        e
    }

    #[test]
    fn the_answers_lookups_come_after_it_was_sent_and_repeats_are_dropped() {
        use Direction::*;
        let (pa, pc) = ("10.244.1.2", "10.244.2.2");
        // The echo reply (type 0, same id/seq), from pod-c to pod-a, on one node.
        let reply = |netns: &str, ifname: &str, dir, ts, ttl| {
            let mut e = echo_event("node-1", netns, ifname, dir, ts, ttl, pa);
            e.flow.src = Some(pc.parse().unwrap());
            e.packet.as_mut().unwrap().ident.icmp_type = 0;
            set_pkt_id(&mut e, "answer");
            e
        };
        let events = vec![
            // The request's reverse-path checks: before the answer existed.
            lookup("np-node-1", 1_000_000, 255, "0.0.0.0", pa),
            lookup("np-pod-a", 1_100_000, 255, "0.0.0.0", pa),
            // The answer: looked up, sent, forwarded by the node, delivered.
            lookup("np-pod-c", 2_000_000, 254, pc, pa),
            reply("np-pod-c", "eth0", Egress, 2_100_000, 64),
            reply("np-node-1", "veth3", Ingress, 2_200_000, 64),
            lookup("np-node-1", 2_300_000, 254, pc, pa),
            lookup("np-node-1", 2_310_000, 254, pc, pa),
            reply("np-node-1", "veth1", Egress, 2_400_000, 63),
            reply("np-pod-a", "eth0", Ingress, 2_500_000, 63),
            lookup("np-pod-a", 2_600_000, 255, pc, pa),
        ];
        let reply_echo = ProbeMatch::Echo {
            family: Family::Ipv4,
            id: 7,
            seq: 1,
        };
        let path = rebuild(&events, |e| reply_echo.is_reply(e));
        let steps: Vec<(EventKind, &str, u64)> = path
            .hops
            .iter()
            .map(|h| (h.kind, h.netns.as_str(), h.ts_ns))
            .collect();
        use EventKind::{Hop as H, Route as R};
        assert_eq!(
            steps,
            [
                (R, "np-pod-c", 2_000_000),
                (H, "np-pod-c", 2_100_000),
                (H, "np-node-1", 2_200_000),
                (R, "np-node-1", 2_300_000),
                (H, "np-node-1", 2_400_000),
                (H, "np-pod-a", 2_500_000),
                (R, "np-pod-a", 2_600_000),
            ]
        );
    }

    #[test]
    fn bridging_nodes_with_equal_ttl_fall_back_to_min_ttl_then_time() {
        use Direction::*;
        let pc = "10.244.2.2";
        let events = vec![
            echo_event("node-2", "np-node-2", "eth0", Ingress, 10, 63, pc),
            echo_event("node-2", "np-node-2", "cni0", Egress, 11, 62, pc),
            echo_event("underlay", "np-underlay", "br0", Ingress, 50, 63, pc),
            echo_event("node-1", "np-node-1", "eth0", Egress, 40, 63, pc),
            echo_event("node-1", "np-pod-a", "eth0", Egress, 30, 64, pc),
        ];
        let path = rebuild(&events, |e| ECHO.is_request(e));
        assert_eq!(
            path.namespaces(),
            ["np-pod-a", "np-node-1", "np-underlay", "np-node-2"]
        );
    }

    #[test]
    fn only_the_probe_and_its_drops_are_kept_and_dnat_is_noted() {
        use Direction::*;
        let mut a = echo_event("n", "pod", "eth0", Egress, 1, 64, "10.96.0.10");
        let mut b = echo_event("n", "node", "veth1", Ingress, 2, 64, "10.96.0.10");
        let mut c = echo_event("n", "node", "eth0", Egress, 3, 63, "10.244.2.2");
        let mut other = echo_event("n", "node", "eth0", Egress, 4, 63, "10.244.2.2");
        other.packet.as_mut().unwrap().ident.l4_ident = 9 << 16 | 1;
        set_pkt_id(&mut other, "zzz");
        let mut drop = drop_event(
            "n",
            "node",
            "eth0",
            5,
            63,
            "10.244.2.2",
            "NETFILTER_DROP",
            "nft_do_chain+0x3e8",
        );
        set_pkt_id(&mut drop, "different-skb-view");
        for e in [&mut a, &mut b, &mut c] {
            set_pkt_id(e, "same");
        }
        let path = rebuild(&[other, drop, c, b, a], |e| ECHO.is_request(e));
        assert_eq!(path.hops.len(), 4, "{path:#?}");
        assert_eq!(
            path.hops[2].nat.as_deref(),
            Some("DNAT 10.96.0.10 -> 10.244.2.2")
        );
        let d: Vec<_> = path.drops().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].function(), Some("nft_do_chain"));
        assert!(rebuild(&[], |e| ECHO.is_request(e)).is_empty());
    }
}
