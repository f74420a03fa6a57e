//! The lab's address plan: node underlay and pod addresses, one place for the topology and
//! the scenarios' expectations. (ULA IPv6 and 10.0.0.0/8 / 198.18.0.0/15 IPv4 only, inside
//! the lab's own namespaces.)
use std::net::{Ipv4Addr, Ipv6Addr};

pub(crate) fn node_v4(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n as u8)
}
pub(crate) fn node_v6(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x18, n as u16, 0, 0, 0, 0x10)
}
/// Addresses of pod `i` (0-based) on node `n` (1-based).
pub(crate) fn pod_addrs(n: usize, i: usize) -> (Ipv4Addr, Ipv6Addr) {
    let host = 2 + i as u8;
    (
        Ipv4Addr::new(10, 244, n as u8, host),
        Ipv6Addr::new(0xfd00, 0x10, 0x244, n as u16, 0, 0, 0, host.into()),
    )
}
