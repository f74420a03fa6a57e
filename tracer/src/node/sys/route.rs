//! Route lookups (RTM_GETROUTE), as `ip route get` and `ip route get fibmatch` ask them, and
//! the routing table (`ip route show`).
use std::net::IpAddr;

use netlink_packet_core::{Emitable, Parseable};
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType, RouteVia,
    },
    AddressFamily,
};

use super::{link_by_index, link_by_name, Netlink, SysError};
use crate::node::netns::NetnsRef;
use netpath_core::model::{self, RouteAnswer};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;

/// A route of a table, or the one a lookup matched (`ip route get fibmatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute {
    /// `unicast`, `local`, `blackhole`, `unreachable`, `prohibit`, ...
    pub kind: String,
    /// As `ip route` prints it: `default`, `10.0.0.0/24`, or a bare address for a host route.
    pub prefix: String,
    pub prefix_len: u8,
    pub table: u32,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
}

/// `ip route get DST [from SRC iif DEV]` in `ns`, as a [`RouteAnswer`].
///
/// A lookup the kernel refuses is still an answer: `error` holds its words (`Network is
/// unreachable`) and, when a discard route of the main table (blackhole, unreachable,
/// prohibit) covers DST, `kind` and `prefix` name it; otherwise `kind` is `error`. An
/// input-side lookup (`iif`) that fails is asked again without it: its own failures (rp
/// filter, forwarding) do not explain a missing route.
pub fn route_get(
    ns: &NetnsRef,
    dst: IpAddr,
    src: Option<IpAddr>,
    iif: Option<&str>,
) -> Result<RouteAnswer, SysError> {
    let mut nl = Netlink::route(ns)?;
    let netns = ns.to_string();
    let iif_index = match iif.filter(|_| src.is_some()) {
        Some(dev) => match link_by_name(&mut nl, dev)? {
            Some(link) => Some(link.index),
            // The device is gone: ask without the input side.
            None => return route_get(ns, dst, None, None),
        },
        None => None,
    };
    let src = src.filter(|_| iif_index.is_some());
    match lookup(&mut nl, dst, src, iif_index, false) {
        Ok(msg) => {
            let (gateway, oif) = next_hop(&msg);
            let dev = match oif {
                Some(i) => link_by_index(&mut nl, i)?.map(|l| l.name),
                None => None,
            };
            // The route that matched (`ip route get fibmatch`): whether the packet left by the
            // default route or one of its own is what a diagnosis from the nodes alone needs.
            let prefix = match iif_index {
                None => lookup(&mut nl, dst, None, None, true)
                    .ok()
                    .and_then(|m| matched_route(&mut nl, &m).ok())
                    .map(|r| r.prefix),
                Some(_) => None,
            };
            Ok(RouteAnswer {
                netns,
                dst: dst.to_string(),
                kind: model_kind(msg.header.kind),
                gateway,
                dev,
                error: None,
                prefix,
            })
        }
        Err(SysError::Kernel(_)) if iif_index.is_some() => route_get(ns, dst, None, None),
        Err(SysError::Kernel(errno)) => {
            let matched = most_specific(&main_routes(&mut nl, family_of(dst))?, dst);
            let (kind, prefix) = match matched {
                Some(r) if r.kind != "unicast" => (
                    model::RouteType::from_name(&r.kind).unwrap_or(model::RouteType::Unspec),
                    Some(r.prefix),
                ),
                _ => (model::RouteType::None, None),
            };
            Ok(RouteAnswer {
                netns,
                dst: dst.to_string(),
                kind,
                gateway: None,
                dev: None,
                error: Some(super::strerror(errno)),
                prefix,
            })
        }
        Err(e) => Err(e),
    }
}

/// The route a lookup for DST matches (`ip route get fibmatch DST`): its prefix, type,
/// gateway and device. Lookups that end in a discard route or nowhere are the kernel's
/// error, as for `ip`.
pub fn route_fib_match(ns: &NetnsRef, dst: IpAddr) -> Result<MatchedRoute, SysError> {
    let mut nl = Netlink::route(ns)?;
    let msg = lookup(&mut nl, dst, None, None, true)?;
    matched_route(&mut nl, &msg)
}

/// Every route of the main table of `family` (4 or 6): what `ip -4/-6 route show` lists.
pub fn routes(ns: &NetnsRef, family: u8) -> Result<Vec<MatchedRoute>, SysError> {
    main_routes(&mut Netlink::route(ns)?, family)
}

fn main_routes(nl: &mut Netlink, family: u8) -> Result<Vec<MatchedRoute>, SysError> {
    let mut req = RouteMessage::default();
    req.header.address_family = if family == 6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let mut msgs = Vec::new();
    for reply in nl.request(RTM_GETROUTE, true, &emit(&req))? {
        if reply.kind != RTM_NEWROUTE {
            continue;
        }
        let msg = parse(&reply.payload)?;
        if !msg.header.flags.contains(RouteFlags::Cloned) && table_of(&msg) == main_table() {
            msgs.push(msg);
        }
    }
    let names: Vec<(u32, String)> = if msgs.is_empty() {
        Vec::new()
    } else {
        super::link::dump_links(nl)?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect()
    };
    Ok(msgs
        .iter()
        .map(|msg| {
            let dev_of = |i: u32| names.iter().find(|(x, _)| *x == i).map(|(_, n)| n.clone());
            describe(msg, dev_of)
        })
        .collect())
}

/// The longest prefix among `routes` that contains `dst` (`ip route show match DST`).
pub fn most_specific(routes: &[MatchedRoute], dst: IpAddr) -> Option<MatchedRoute> {
    routes
        .iter()
        .filter(|r| {
            let net = match r.prefix.as_str() {
                "default" => return true,
                p => p.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()),
            };
            net.is_some_and(|n| netpath_core::model::prefix_contains(n, r.prefix_len, dst))
        })
        .max_by_key(|r| r.prefix_len)
        .cloned()
}

fn main_table() -> u32 {
    RouteHeader::RT_TABLE_MAIN as u32
}

fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table as u32)
}

fn family_of(ip: IpAddr) -> u8 {
    if ip.is_ipv6() {
        6
    } else {
        4
    }
}

fn lookup(
    nl: &mut Netlink,
    dst: IpAddr,
    src: Option<IpAddr>,
    iif: Option<u32>,
    fib_match: bool,
) -> Result<RouteMessage, SysError> {
    let mut req = RouteMessage::default();
    req.header.address_family = match dst {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    req.header.destination_prefix_length = if dst.is_ipv6() { 128 } else { 32 };
    req.attributes.push(RouteAttribute::Destination(dst.into()));
    if let Some(src) = src {
        req.header.source_prefix_length = if src.is_ipv6() { 128 } else { 32 };
        req.attributes.push(RouteAttribute::Source(src.into()));
    }
    if let Some(iif) = iif {
        req.attributes.push(RouteAttribute::Iif(iif));
    }
    if fib_match {
        req.header.flags = RouteFlags::FibMatch;
    }
    let reply = nl.request(RTM_GETROUTE, false, &emit(&req))?;
    let first = reply
        .into_iter()
        .find(|r| r.kind == RTM_NEWROUTE)
        .ok_or_else(|| SysError::Decode("route lookup without an answer".into()))?;
    parse(&first.payload)
}

fn emit(msg: &RouteMessage) -> Vec<u8> {
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

fn parse(payload: &[u8]) -> Result<RouteMessage, SysError> {
    RouteMessage::parse(payload).map_err(|e| SysError::Decode(e.to_string()))
}

fn matched_route(nl: &mut Netlink, msg: &RouteMessage) -> Result<MatchedRoute, SysError> {
    let dev = match next_hop(msg).1 {
        Some(i) => link_by_index(nl, i)?.map(|l| l.name),
        None => None,
    };
    Ok(describe(msg, |_| dev.clone()))
}

/// A route message as a [`MatchedRoute`]; `dev_of` names an ifindex.
fn describe(msg: &RouteMessage, dev_of: impl Fn(u32) -> Option<String>) -> MatchedRoute {
    let (gateway, oif) = next_hop(msg);
    let dev = oif.and_then(dev_of);
    let len = msg.header.destination_prefix_length;
    let dst = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(a) => address(a),
        _ => None,
    });
    MatchedRoute {
        kind: kind_name(msg.header.kind),
        prefix: prefix_text(dst, len, msg.header.address_family == AddressFamily::Inet6),
        prefix_len: len,
        table: table_of(msg),
        gateway,
        dev,
    }
}

/// A destination as `ip route` prints it.
pub fn prefix_text(dst: Option<IpAddr>, len: u8, v6: bool) -> String {
    match dst {
        None if len == 0 => "default".into(),
        None => format!("{}/{len}", if v6 { "::" } else { "0.0.0.0" }),
        Some(a) if len == if a.is_ipv6() { 128 } else { 32 } => a.to_string(),
        Some(a) => format!("{a}/{len}"),
    }
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// (gateway, output ifindex) of a route: RTA_GATEWAY / RTA_VIA and RTA_OIF, or those of the
/// first next hop of a multipath route.
fn next_hop(msg: &RouteMessage) -> (Option<IpAddr>, Option<u32>) {
    let of = |attrs: &[RouteAttribute]| {
        let gw = attrs.iter().find_map(|a| match a {
            RouteAttribute::Gateway(g) => address(g),
            RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        });
        let oif = attrs.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        (gw, oif)
    };
    let (gw, oif) = of(&msg.attributes);
    if gw.is_some() || oif.is_some() {
        return (gw, oif);
    }
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::MultiPath(hops) => hops.first().map(|h| {
                let (gw, _) = of(&h.attributes);
                (gw, Some(h.interface_index).filter(|i| *i != 0))
            }),
            _ => None,
        })
        .unwrap_or((None, None))
}

/// A route type in the model's terms.
fn model_kind(kind: RouteType) -> model::RouteType {
    model::RouteType::from_name(&kind_name(kind)).unwrap_or(model::RouteType::Unspec)
}

/// A route type as `ip` names it.
pub fn kind_name(kind: RouteType) -> String {
    match kind {
        RouteType::Unspec => "none",
        RouteType::Unicast => "unicast",
        RouteType::Local => "local",
        RouteType::Broadcast => "broadcast",
        RouteType::Anycast => "anycast",
        RouteType::Multicast => "multicast",
        RouteType::BlackHole => "blackhole",
        RouteType::Unreachable => "unreachable",
        RouteType::Prohibit => "prohibit",
        RouteType::Throw => "throw",
        RouteType::Nat => "nat",
        RouteType::ExternalResolve => "xresolve",
        _ => return format!("{}", u8::from(kind)),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, len: u8, kind: &str) -> MatchedRoute {
        MatchedRoute {
            kind: kind.into(),
            prefix: prefix.into(),
            prefix_len: len,
            table: 254,
            gateway: None,
            dev: None,
        }
    }

    #[test]
    fn prefixes_are_printed_as_ip_does() {
        assert_eq!(prefix_text(None, 0, false), "default");
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(prefix_text(Some(a), 32, false), "10.0.0.5");
        assert_eq!(prefix_text(Some(a), 24, false), "10.0.0.5/24");
        let b: IpAddr = "fd00:10:244:2::".parse().unwrap();
        assert_eq!(prefix_text(Some(b), 64, true), "fd00:10:244:2::/64");
        assert_eq!(kind_name(RouteType::BlackHole), "blackhole");
        assert_eq!(kind_name(RouteType::Prohibit), "prohibit");
    }

    #[test]
    fn the_longest_covering_prefix_wins() {
        let table = [
            route("default", 0, "unicast"),
            route("fd00:10:244:2::/64", 64, "blackhole"),
            route("fd00:10:244::/48", 48, "unicast"),
            route("fd00:10:244:3::/64", 64, "unreachable"),
        ];
        let dst: IpAddr = "fd00:10:244:2::7".parse().unwrap();
        assert_eq!(
            most_specific(&table, dst).map(|r| r.prefix),
            Some("fd00:10:244:2::/64".into())
        );
        let other: IpAddr = "fd00:99::1".parse().unwrap();
        assert_eq!(most_specific(&table, other).unwrap().prefix, "default");
        assert!(most_specific(&table[1..2], other).is_none());
    }

    #[test]
    fn route_answers_decode_from_kernel_bytes() {
        // RTM_NEWROUTE for `10.10.3.3 via 10.5.0.2 dev ifindex 2` as the kernel sends it.
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("10.10.3.3".parse().unwrap())),
            RouteAttribute::Oif(2),
            RouteAttribute::Gateway(RouteAddress::Inet("10.5.0.2".parse().unwrap())),
        ];
        let parsed = parse(&emit(&msg)).unwrap();
        assert_eq!(
            next_hop(&parsed),
            (Some("10.5.0.2".parse().unwrap()), Some(2))
        );
        assert_eq!(kind_name(parsed.header.kind), "unicast");
        assert!(parse(&[1, 2]).is_err());
    }
}
