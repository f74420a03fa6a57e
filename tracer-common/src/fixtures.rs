//! Crafted packets shared by the parser's unit tests and the BPF_PROG_TEST_RUN tests of the
//! kernel programs (feature `fixtures`; never in the kernel build).
extern crate std;
use std::{vec, vec::Vec};

use etherparse::PacketBuilder;

pub const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// Outer (underlay) addresses of the encapsulations.
pub const OUTER_SRC4: [u8; 4] = [198, 18, 0, 1];
pub const OUTER_DST4: [u8; 4] = [198, 18, 0, 2];

/// Ethernet + IPv4 + UDP.
pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Ethernet + IPv6 fd00::1 > fd00::2 + ICMPv6 echo request (id 7).
pub fn icmp6(seq: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv6(A6, B6, 64)
        .icmpv6_echo_request(7, seq)
        .write(&mut v, &[0; 8])
        .unwrap();
    v
}

/// IPv6 fd00::2 > fd00::1 + TCP 443 > 50000, without Ethernet (an inner packet).
pub fn tcp6_ip() -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(B6, A6, 64)
        .tcp(443, 50000, 0x0102_0304, 1000)
        .write(&mut v, b"x")
        .unwrap();
    v
}

/// `inner` (an Ethernet frame) in VXLAN with `vni` on UDP `port` over the IPv4 underlay.
pub fn vxlan(port: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    udp4(OUTER_SRC4, OUTER_DST4, 40000, port, &payload)
}

/// `inner` (an Ethernet frame) in Geneve with one 8-byte option.
pub fn geneve(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x02, 0, 0x65, 0x58];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(&[0; 8]);
    payload.extend_from_slice(inner);
    udp4(
        OUTER_SRC4,
        OUTER_DST4,
        5000,
        crate::parse::GENEVE_PORT,
        &payload,
    )
}

/// An inner IP packet (no Ethernet) in an outer IPv4 (underlay) or IPv6 header with `proto`.
pub fn ip_in(outer_v6: bool, proto: u8, inner_ip: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2([1; 6], [2; 6]);
    if outer_v6 {
        b.ipv6(A6, B6, 64)
            .write(&mut v, proto.into(), inner_ip)
            .unwrap();
    } else {
        b.ipv4(OUTER_SRC4, OUTER_DST4, 64)
            .write(&mut v, proto.into(), inner_ip)
            .unwrap();
    }
    v
}

/// An inner IPv4 packet in GRE with `key`, over IPv4.
pub fn gre(key: u32, inner_ip4: &[u8]) -> Vec<u8> {
    let mut g = vec![0x20, 0x00, 0x08, 0x00];
    g.extend_from_slice(&key.to_be_bytes());
    g.extend_from_slice(inner_ip4);
    ip_in(false, crate::parse::IPPROTO_GRE, &g)
}

/// [`icmp6`] with a hop-by-hop (8 bytes) and a destination-options (16 bytes) header before
/// the ICMPv6 header.
pub fn icmp6_ext_headers(seq: u16) -> Vec<u8> {
    let base = icmp6(seq);
    let mut frame = base[..54].to_vec();
    frame[14 + 6] = 0; // next header: hop-by-hop
    frame.extend_from_slice(&[60u8, 0, 1, 4, 0, 0, 0, 0]);
    frame.extend_from_slice(&[58u8, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&base[54..]);
    let plen = (frame.len() - 54) as u16;
    frame[18..20].copy_from_slice(&plen.to_be_bytes());
    frame
}

/// Frames for checking the early filter against the full parser: plain ones it decides (IPv4
/// and IPv6, UDP/TCP/ICMP, fragments, ARP) and every kind it must leave to the parser (VLAN
/// tags, extension headers, each encapsulation, a VXLAN port configured at run time).
pub fn filter_frames() -> Vec<Vec<u8>> {
    let inner4 = udp4([10, 9, 9, 1], [10, 9, 9, 2], 1111, 2222, b"x")[14..].to_vec();
    let mut tagged = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, b"hi");
    tagged.splice(12..12, [0x81, 0x00, 0x00, 42]);
    let mut frag4 = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 4789, b"fragment");
    frag4[14 + 6] = 0x00;
    frag4[14 + 7] = 0x10; // offset 128: not the first fragment
    let mut tcp4 = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 3], [198, 18, 0, 9], 64)
        .tcp(50000, 80, 1, 1000)
        .write(&mut tcp4, b"GET")
        .unwrap();
    let mut tcp6 = vec![0u8; 12];
    tcp6.extend_from_slice(&[0x86, 0xdd]);
    tcp6.extend_from_slice(&tcp6_ip());
    let mut arp = vec![0xffu8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let mut gre_key = vec![0x20, 0x00, 0x08, 0x00, 0, 0, 0, 77];
    gre_key.extend_from_slice(&inner4);
    vec![
        udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, b"hi"),
        udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 9999, b"hi"),
        udp4([10, 244, 1, 1], [10, 0, 0, 2], 6081, 80, b"hi"),
        tagged.clone(),
        frag4,
        tcp4.clone(),
        tcp6,
        arp,
        icmp6(1),
        icmp6_ext_headers(2),
        vxlan(4789, 1, &icmp6(3)),
        vxlan(8472, 1, &icmp6(3)),
        // Decided in place by the early filter: inner IPv4 UDP and TCP.
        vxlan(
            4789,
            2,
            &udp4([10, 9, 9, 1], [10, 9, 9, 2], 1111, 2222, b"x"),
        ),
        vxlan(8472, 3, &tcp4),
        // Left to the full parser: inner IPv6 extension headers, no VXLAN flag, inner VLAN.
        vxlan(4789, 4, &icmp6_ext_headers(6)),
        {
            let mut f = vxlan(
                4789,
                5,
                &udp4([10, 9, 9, 1], [10, 9, 9, 2], 1111, 2222, b"x"),
            );
            f[14 + 20 + 8] = 0;
            f
        },
        vxlan(4789, 6, &tagged),
        vxlan(9999, 1, &icmp6(3)),
        geneve(5, &icmp6(4)),
        ip_in(false, crate::parse::IPPROTO_IPIP, &inner4),
        ip_in(true, crate::parse::IPPROTO_IPIP, &inner4),
        ip_in(false, crate::parse::IPPROTO_IPV6, &icmp6(5)[14..]),
        ip_in(false, crate::parse::IPPROTO_GRE, &gre_key),
        gre(7, &inner4),
    ]
}

/// In-kernel filters over [`filter_frames`]: addresses (outer, inner, none), family,
/// protocol, port, combinations, with and without an extra VXLAN port.
pub fn filter_configs() -> Vec<crate::FilterConfig> {
    use crate::{AddrPrefix, FilterConfig};
    let pre = |b: &[u8], family: u8, len: u8| {
        let mut addr = [0u8; 16];
        addr[..b.len()].copy_from_slice(b);
        AddrPrefix::new(family, addr, len)
    };
    let prefixes = [
        pre(&[10, 0, 0, 1], 4, 32),
        pre(&[10, 0, 0, 2], 4, 32),
        pre(&[10, 9, 9, 0], 4, 24),
        pre(&[198, 18, 0, 0], 4, 15),
        pre(&[0xfd], 6, 8),
        pre(&[10, 244, 0, 0], 4, 16),
        pre(&B6, 6, 128),
        pre(&[0, 0, 0, 0], 4, 0),
    ];
    let mut out = Vec::new();
    for extra in [0u16, 9999] {
        let base = FilterConfig {
            vxlan_port: extra,
            ..FilterConfig::default()
        };
        out.push(base);
        for p in prefixes {
            let mut c = base;
            c.n_addrs = 1;
            c.addrs[0] = p;
            out.push(c);
            // Two prefixes, the second one matching something else.
            c.n_addrs = 2;
            c.addrs[1] = pre(&[10, 244, 0, 0], 4, 16);
            out.push(c);
        }
        for family in [4, 6] {
            out.push(FilterConfig { family, ..base });
        }
        for proto in [1, 6, 17, 58, 132] {
            out.push(FilterConfig { proto, ..base });
        }
        for port in [53, 80, 2222, 4789, 6081, 9999, 1000] {
            out.push(FilterConfig { port, ..base });
            let mut c = FilterConfig {
                port,
                proto: 17,
                family: 4,
                ..base
            };
            out.push(c);
            c.n_addrs = 1;
            c.addrs[0] = prefixes[0];
            out.push(c);
        }
    }
    out
}
