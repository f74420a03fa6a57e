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
