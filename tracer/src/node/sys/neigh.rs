//! The neighbour table (RTM_GETNEIGH), as `ip -j neigh show` lists it.
use std::net::IpAddr;

use netlink_packet_core::{Emitable, Parseable};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};

use super::{Netlink, SysError};
use crate::node::netns::NetnsRef;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;

/// One neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub ifindex: u32,
    /// NUD_* bits.
    pub state: u16,
    pub lladdr: Option<Vec<u8>>,
}

impl Neighbour {
    /// `REACHABLE`, `STALE,PERMANENT`, ... as `ip` names the state.
    pub fn state_text(&self) -> String {
        nud_state_names(self.state).join(",")
    }
}

/// NUD_* bits as the words `ip neigh` prints (`NONE` for no bit).
pub fn nud_state_names(state: u16) -> Vec<&'static str> {
    const NAMES: [(u16, &str); 8] = [
        (0x01, "INCOMPLETE"),
        (0x02, "REACHABLE"),
        (0x04, "STALE"),
        (0x08, "DELAY"),
        (0x10, "PROBE"),
        (0x20, "FAILED"),
        (0x40, "NOARP"),
        (0x80, "PERMANENT"),
    ];
    if state == 0 {
        return vec!["NONE"];
    }
    NAMES
        .iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Every IPv4 and IPv6 neighbour entry of `ns`.
pub fn neighbours(ns: &NetnsRef) -> Result<Vec<Neighbour>, SysError> {
    let mut nl = Netlink::route(ns)?;
    let req = NeighbourMessage::default();
    let mut buf = vec![0; req.buffer_len()];
    req.emit(&mut buf);
    let mut out = Vec::new();
    for reply in nl.request(RTM_GETNEIGH, true, &buf)? {
        if reply.kind == RTM_NEWNEIGH {
            out.extend(parse_neighbour(&reply.payload)?);
        }
    }
    Ok(out)
}

/// The state of the entry for `addr` (`ip neigh show to ADDR`), None when there is none.
pub fn neighbour_state(ns: &NetnsRef, addr: IpAddr) -> Result<Option<String>, SysError> {
    Ok(neighbours(ns)?
        .into_iter()
        .find(|n| n.addr == addr)
        .map(|n| n.state_text()))
}

/// An RTM_NEWNEIGH payload; None for entries that are not IP (bridge fdb).
pub fn parse_neighbour(payload: &[u8]) -> Result<Option<Neighbour>, SysError> {
    let msg = NeighbourMessage::parse(payload).map_err(|e| SysError::Decode(e.to_string()))?;
    let addr = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    });
    let lladdr = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => Some(b.clone()),
        _ => None,
    });
    Ok(addr.map(|addr| Neighbour {
        addr,
        ifindex: msg.header.ifindex,
        state: u16::from(msg.header.state),
        lladdr,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_entries_decode_from_kernel_bytes() {
        // ndmsg: AF_INET6, ifindex 3, state FAILED (0x20), flags 0, type unicast; NDA_DST.
        let mut b = vec![10u8, 0, 0, 0, 3, 0, 0, 0, 0x20, 0, 0, 1];
        let dst: std::net::Ipv6Addr = "fd00:1::2".parse().unwrap();
        super::super::push_attr(&mut b, 1, &dst.octets());
        let n = parse_neighbour(&b).unwrap().unwrap();
        assert_eq!((n.addr, n.ifindex), (IpAddr::V6(dst), 3));
        assert_eq!(n.state_text(), "FAILED");
        assert_eq!(nud_state_names(0x02), ["REACHABLE"]);
        assert_eq!(nud_state_names(0x84), ["STALE", "PERMANENT"]);
        assert_eq!(nud_state_names(0), ["NONE"]);
        // An entry without an IP destination is not a neighbour.
        assert_eq!(
            parse_neighbour(&[7u8, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 1]).unwrap(),
            None
        );
    }
}
