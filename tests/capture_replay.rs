//! `netpath capture` selects exactly what tcpdump selects, packet by packet and byte for byte.
//!
//! A varied set of frames is replayed live into a veth while netpath and tcpdump capture on
//! its peer with the same filter: traffic this test generates in a routed pair of namespaces
//! (ping, TCP and UDP in both families, ICMP errors, neighbour discovery), captured there by
//! tcpdump and read back, plus crafted frames of many protocols, untagged, 802.1Q-tagged and
//! QinQ-tagged (the receiving veth moves the outer tag into the skb's metadata, as VLAN
//! offload does), and malformed ones. For each filter, every frame tcpdump wrote must be in
//! netpath's file with the same bytes (up to netpath's snap length) and original length, and
//! netpath must write nothing else.
use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
};
use integration_tests::*;
use pcap_file::{pcap::PcapReader, pcapng::Block, pcapng::PcapNgReader};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![case!(
        replayed_frames_are_selected_as_tcpdump_selects_them,
        Requires::Root,
        Requires::Tool("tcpdump"),
        Requires::Tool("socat"),
        Requires::Tool("ethtool")
    )])
}

/// What netpath's kernel copies of each packet (tracer_common::SNAP_LEN).
const NETPATH_SNAPLEN: usize = tracer_common::SNAP_LEN;

/// The filters compared: families, protocols, addresses, ports, VLANs, lengths, link-layer
/// addresses, and negations (where a frame the parser finds malformed must still be judged
/// by the filter, not dropped).
const FILTERS: &[&str] = &[
    "",
    "ip",
    "ip6",
    "arp",
    "udp",
    "tcp",
    "icmp or icmp6",
    "ip and not tcp",
    "net 10.0.0.0/8",
    "host 10.1.0.2 or host fd00:1::2",
    "port 53 or port 4789",
    "tcp[tcpflags] & tcp-syn != 0",
    "vlan",
    "vlan 10 and udp",
    "greater 200",
    "ether broadcast or ether multicast",
    "not ip and not ip6",
    "ip proto 47 or ip proto 4 or ip proto 41",
];

const SRC_MAC: [u8; 6] = [0x02, 0x6e, 0x70, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0x6e, 0x70, 0, 0, 2];

fn build(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
}

fn v6(net: u16, last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[2..4].copy_from_slice(&net.to_be_bytes());
    a[15] = last;
    a
}

/// `frame` with an 802.1Q-style tag (`tpid`, VLAN `vid`) inserted after the MAC addresses:
/// twice gives QinQ.
fn tagged(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend(tpid.to_be_bytes());
    v.extend(vid.to_be_bytes());
    v.extend(&frame[12..]);
    v
}

/// An IPv4 packet with protocol `proto` around `payload`.
fn ipv4_proto(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        eth()
            .ipv4(src, dst, 64)
            .write(v, IpNumber(proto), payload)
            .unwrap()
    })
}

/// The IP packet of an Ethernet frame (what tunnels carry).
fn l3(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// Well-formed frames of many protocols.
fn protocol_frames() -> Vec<(String, Vec<u8>)> {
    let echo4 = build(|v| {
        eth()
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .icmpv4_echo_request(9, 1)
            .write(v, &[0x5a; 48])
            .unwrap()
    });
    let echo6 = build(|v| {
        eth()
            .ipv6(v6(1, 1), v6(1, 2), 64)
            .icmpv6_echo_request(9, 1)
            .write(v, &[0x5a; 48])
            .unwrap()
    });
    let syn4 = build(|v| {
        eth()
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .tcp(40000, 80, 1, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    let data4 = build(|v| {
        eth()
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .tcp(443, 40001, 77, 502)
            .ack(9)
            .psh()
            .write(v, &[0x17; 600])
            .unwrap()
    });
    let syn6 = build(|v| {
        eth()
            .ipv6(v6(1, 1), v6(1, 2), 64)
            .tcp(40002, 8080, 1, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    let dns4 = build(|v| {
        eth()
            .ipv4([10, 1, 0, 1], [10, 96, 0, 10], 64)
            .udp(5353, 53)
            .write(v, &[0x12; 30])
            .unwrap()
    });
    let dns6 = build(|v| {
        eth()
            .ipv6(v6(1, 1), v6(96, 10), 64)
            .udp(5353, 53)
            .write(v, &[0x12; 30])
            .unwrap()
    });
    let mut vxlan_payload = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    vxlan_payload.extend(&echo4);
    let vxlan = build(|v| {
        eth()
            .ipv4([198, 18, 1, 1], [198, 18, 2, 1], 64)
            .udp(40003, 4789)
            .write(v, &vxlan_payload)
            .unwrap()
    });
    let mut gre_payload = vec![0, 0, 0x08, 0];
    gre_payload.extend(l3(&echo4));
    let gre = ipv4_proto([198, 18, 1, 1], [198, 18, 2, 1], 47, &gre_payload);
    let ipip = ipv4_proto([198, 18, 1, 1], [198, 18, 2, 1], 4, l3(&syn4));
    let sit = ipv4_proto([198, 18, 1, 1], [198, 18, 2, 1], 41, l3(&echo6));
    let igmp = ipv4_proto(
        [10, 1, 0, 1],
        [224, 0, 0, 22],
        2,
        &[0x22, 0, 0xfa, 0xfd, 0, 0, 0, 0],
    );
    let sctp = ipv4_proto([10, 1, 0, 1], [10, 1, 0, 2], 132, &[0x13; 28]);
    let mdns = build(|v| {
        PacketBuilder::ethernet2(SRC_MAC, [0x01, 0, 0x5e, 0, 0, 0xfb])
            .ipv4([10, 1, 0, 1], [224, 0, 0, 251], 255)
            .udp(5353, 5353)
            .write(v, &[0; 24])
            .unwrap()
    });
    let opts = [1u8, 4, 0, 0, 0, 0]; // PadN filling an 8-byte extension header
    let ext6 = build(|v| {
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(60), &opts).unwrap()),
            destination_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(17), &opts).unwrap()),
            ..Default::default()
        };
        let hdr = Ipv6Header {
            hop_limit: 64,
            source: v6(1, 1),
            destination: v6(1, 2),
            ..Default::default()
        };
        eth()
            .ip(IpHeaders::Ipv6(hdr, exts))
            .udp(40004, 53)
            .write(v, &[1; 16])
            .unwrap()
    });
    // An IPv4 header with 4 bytes of options (IHL 6): ports sit further in.
    let options4 = build(|v| {
        let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, [10, 1, 0, 1], [10, 1, 0, 2]).unwrap();
        ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
        eth()
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(40005, 53)
            .write(v, &[3; 12])
            .unwrap()
    });
    // A non-first IPv4 fragment: no transport header, `udp` matches, `port 53` must not.
    let mut frag4 = dns4.clone();
    frag4[20] = 0x00;
    frag4[21] = 0x10; // fragment offset 16 (x 8 bytes)
    fix_ipv4_checksum(&mut frag4);
    let arp_req = arp(1, [0xff; 6], [10, 1, 0, 2]);
    let arp_rep = arp(2, DST_MAC, [10, 1, 0, 1]);
    // Not IP at all: LLDP, and an 802.3 length frame carrying STP (LLC).
    let mut lldp = vec![0x01, 0x80, 0xc2, 0, 0, 0x0e];
    lldp.extend(SRC_MAC);
    lldp.extend([0x88, 0xcc, 0x02, 0x07, 0x04]);
    lldp.extend(SRC_MAC);
    lldp.extend([0; 40]);
    let mut stp = vec![0x01, 0x80, 0xc2, 0, 0, 0];
    stp.extend(SRC_MAC);
    stp.extend([0x00, 0x26, 0x42, 0x42, 0x03]);
    stp.extend([0; 43]);

    let mut frames: Vec<(String, Vec<u8>)> = [
        ("echo4", echo4),
        ("echo6", echo6),
        ("syn4", syn4),
        ("data4", data4),
        ("syn6", syn6),
        ("dns4", dns4),
        ("dns6", dns6),
        ("vxlan", vxlan),
        ("gre", gre),
        ("ipip", ipip),
        ("sit", sit),
        ("igmp", igmp),
        ("sctp", sctp),
        ("mdns", mdns),
        ("ext6", ext6),
        ("options4", options4),
        ("frag4", frag4),
        ("arp-request", arp_req),
        ("arp-reply", arp_rep),
        ("lldp", lldp),
        ("stp", stp),
    ]
    .into_iter()
    .map(|(n, f)| (n.to_string(), f))
    .collect();
    // Every one again behind an 802.1Q tag, a QinQ pair (802.1ad outside), and two 802.1Q tags.
    let plain = frames.clone();
    for (name, f) in &plain {
        let vid = if name.starts_with("dns") { 10 } else { 20 };
        frames.push((format!("{name}+vlan{vid}"), tagged(f, 0x8100, vid)));
        frames.push((
            format!("{name}+qinq"),
            tagged(&tagged(f, 0x8100, 10), 0x88a8, 300),
        ));
        frames.push((
            format!("{name}+2tags"),
            tagged(&tagged(f, 0x8100, 30), 0x8100, 10),
        ));
    }
    frames
}

fn arp(op: u8, target_mac: [u8; 6], target_ip: [u8; 4]) -> Vec<u8> {
    let dst = if op == 1 { [0xff; 6] } else { DST_MAC };
    let mut v = dst.to_vec();
    v.extend(SRC_MAC);
    v.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
    v.extend(SRC_MAC);
    v.extend([10, 1, 0, 9]);
    v.extend(target_mac);
    v.extend(target_ip);
    v.extend([0; 18]);
    v
}

fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0xf) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let mut sum: u32 = frame[14..14 + ihl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Frames a parser calls malformed: tcpdump's filter still judges them by their bytes.
fn malformed_frames() -> Vec<(String, Vec<u8>)> {
    let ip6_packet = build(|v| {
        eth()
            .ipv6(v6(1, 1), v6(1, 2), 64)
            .udp(40006, 53)
            .write(v, &[0; 8])
            .unwrap()
    });
    let mut v6_in_v4 = ip6_packet.clone();
    v6_in_v4[12..14].copy_from_slice(&[0x08, 0x00]); // IPv4 ethertype, IPv6 header inside
    let udp4 = build(|v| {
        eth()
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .udp(40007, 53)
            .write(v, &[0; 8])
            .unwrap()
    });
    let mut short_ihl = udp4.clone();
    short_ihl[14] = 0x43; // IHL 3: shorter than the fixed header
    let mut long_total = udp4.clone();
    long_total[16..18].copy_from_slice(&1400u16.to_be_bytes()); // total length past the frame
    let mut truncated_ip = udp4.clone();
    truncated_ip.truncate(14 + 12); // half an IPv4 header
    let mut truncated_tcp = build(|v| {
        eth()
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .tcp(40008, 80, 1, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    truncated_tcp.truncate(14 + 20 + 8); // ports and sequence number only
    let mut short_ip6 = ip6_packet.clone();
    short_ip6.truncate(14 + 24); // IPv6 ethertype, 24 bytes of header
    let mut wrong_version6 = ip6_packet.clone();
    wrong_version6[14] = 0x45; // IPv6 ethertype, IPv4 version nibble
    let only_ethernet = [&DST_MAC[..], &SRC_MAC[..], &[0x08, 0x00]].concat();
    let mut frames: Vec<(String, Vec<u8>)> = [
        ("v6-in-v4-ethertype", v6_in_v4),
        ("ipv4-ihl-3", short_ihl),
        ("ipv4-total-length-past-end", long_total),
        ("ipv4-truncated", truncated_ip),
        ("tcp-truncated", truncated_tcp),
        ("ipv6-truncated", short_ip6),
        ("ipv6-version-4", wrong_version6),
        ("ethernet-header-only", only_ethernet),
    ]
    .into_iter()
    .map(|(n, f)| (n.to_string(), f))
    .collect();
    let plain = frames.clone();
    for (name, f) in &plain {
        frames.push((format!("{name}+vlan10"), tagged(f, 0x8100, 10)));
    }
    frames
}

/// Traffic generated for real in a routed pair and captured there by tcpdump: the frames the
/// kernel itself builds (echo, TCP handshakes and data, UDP and ICMP errors, neighbour
/// discovery and MLD, ARP).
fn generated_frames(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let p = routed_pair("nprg");
    // Segmentation offload would hand tcpdump one 3 KB TCP packet that no veth can send back.
    p.a.exec("ethtool -K va tso off gso off >/dev/null");
    let _server = Background::start(
        &p.b,
        "socat TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=0 SYSTEM:'cat >/dev/null'",
    );
    std::thread::sleep(Duration::from_millis(300));
    let file = dir.join("generated.pcap");
    let mut td = NetpathProcess::spawn_program(
        Path::new("ip"),
        &[
            "netns",
            "exec",
            &p.b.name,
            "tcpdump",
            "--immediate-mode",
            "-Z",
            "root",
            "-i",
            "vb",
            "-w",
            file.to_str().expect("utf-8 path"),
        ],
    );
    td.wait_stderr("listening on", Duration::from_secs(10));
    p.a.exec("ping -c2 -i0.2 -W1 10.1.0.2 >/dev/null");
    p.a.exec("ping -c2 -i0.2 -W1 -s 1200 fd00:1::2 >/dev/null");
    p.a.exec("echo hello | socat -t1 - TCP4:10.1.0.2:8080");
    p.a.exec("head -c 3000 /dev/zero | socat -t1 - TCP6:[fd00:1::2]:8080");
    p.a.exec("echo u | socat -t0.3 - UDP4:10.1.0.2:53 || true");
    p.a.exec("echo u | socat -t0.3 - UDP6:[fd00:1::2]:4789 || true");
    p.a.exec("ping -c1 -W1 10.99.0.1 >/dev/null || true");
    p.a.exec("ping -c1 -W1 fd00:99::1 >/dev/null || true");
    p.a.exec("ip neigh flush dev va && ping -c1 -W1 10.1.0.2 >/dev/null");
    std::thread::sleep(Duration::from_millis(300));
    td.interrupt();
    td.finish();
    let frames: Vec<(String, Vec<u8>)> = read_frames(&file)
        .into_iter()
        .enumerate()
        .map(|(i, (data, _))| (format!("generated#{i}"), data))
        .collect();
    assert!(
        frames.len() >= 30,
        "tcpdump captured only {} generated frames",
        frames.len()
    );
    frames
}

/// A background process in a namespace, killed when dropped.
struct Background(std::process::Child);

impl Background {
    fn start(ns: &NetNsGuard, cmd: &str) -> Self {
        Self(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, "sh", "-c", cmd])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn background server"),
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every packet of a pcap or pcapng file: its captured bytes and original length.
fn read_frames(file: &Path) -> Vec<(Vec<u8>, u32)> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = PcapNgReader::new(&bytes[..]).expect("pcapng header");
        while let Some(block) = r.next_block() {
            match block.expect("pcapng block") {
                Block::EnhancedPacket(p) => out.push((p.data.to_vec(), p.original_len)),
                Block::SimplePacket(p) => out.push((p.data.to_vec(), p.original_len)),
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(&bytes[..]).expect("pcap header");
        while let Some(p) = r.next_packet() {
            let p = p.expect("pcap record");
            out.push((p.data.to_vec(), p.orig_len));
        }
    }
    out
}

/// Two namespaces joined by a veth with IPv6 off and no addresses: nothing but the replayed
/// frames crosses it.
fn quiet_pair() -> (NetNsGuard, NetNsGuard) {
    let a = NetNsGuard::new(&unique("npra"));
    let b = NetNsGuard::new(&unique("nprb"));
    sh(&format!(
        "ip link add name va netns {} type veth peer name vb netns {}",
        a.name, b.name
    ));
    for (ns, dev) in [(&a, "va"), (&b, "vb")] {
        ns.exec(&format!(
            "sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1 && ip link set {dev} up"
        ));
    }
    (a, b)
}

/// A packet as both tools must agree on it: the first bytes netpath keeps, and the length on
/// the wire.
fn key(data: &[u8], orig_len: u32) -> (Vec<u8>, u32) {
    (data[..data.len().min(NETPATH_SNAPLEN)].to_vec(), orig_len)
}

/// Counts of each key (a multiset: a frame replayed twice must be written twice).
fn multiset(frames: Vec<(Vec<u8>, u32)>) -> BTreeMap<(Vec<u8>, u32), usize> {
    let mut m = BTreeMap::new();
    for (d, l) in frames {
        *m.entry(key(&d, l)).or_insert(0) += 1;
    }
    m
}

/// The names of the sent frames that match `k` (tags put back, so compare as sent).
fn names_of<'a>(frames: &'a [(String, Vec<u8>)], k: &(Vec<u8>, u32)) -> Vec<&'a str> {
    frames
        .iter()
        .filter(|(_, f)| key(f, f.len() as u32) == *k)
        .map(|(n, _)| n.as_str())
        .collect()
}

fn replayed_frames_are_selected_as_tcpdump_selects_them() {
    // NETPATH_TEST_KEEP=1 keeps the captures to look at after a failure.
    let keep = std::env::var_os("NETPATH_TEST_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .prefix("netpath-replay")
        .disable_cleanup(keep)
        .tempdir()
        .expect("temp dir");
    if keep {
        eprintln!("captures kept in {}", dir.path().display());
    }
    let mut frames = generated_frames(dir.path());
    let generated = frames.len();
    let protocols = protocol_frames();
    let malformed = malformed_frames();
    let (n_protocols, n_malformed) = (protocols.len(), malformed.len());
    frames.extend(protocols);
    frames.extend(malformed);
    eprintln!(
        "replaying {} frames: {generated} generated, {n_protocols} crafted, {n_malformed} malformed",
        frames.len()
    );
    let (a, b) = quiet_pair();
    let mut failures = Vec::new();
    let mut selected_total = 0;
    for (i, expr) in FILTERS.iter().enumerate() {
        let ours = dir.path().join(format!("np{i}.pcapng"));
        let theirs = dir.path().join(format!("td{i}.pcap"));
        let mut np = NetpathProcess::spawn(&[
            "capture",
            "-i",
            "vb",
            "--netns",
            &b.name,
            "-w",
            ours.to_str().expect("utf-8 path"),
            expr,
        ]);
        let mut td = NetpathProcess::spawn_program(
            Path::new("ip"),
            &[
                "netns",
                "exec",
                &b.name,
                "tcpdump",
                "--immediate-mode",
                // In immediate mode every ring slot holds a whole snap length (256 KiB): the
                // default 2 MiB ring overflows after 8 back-to-back frames.
                "-B",
                "65536",
                "-Z",
                "root",
                "-i",
                "vb",
                "-w",
                theirs.to_str().expect("utf-8 path"),
                expr,
            ],
        );
        np.wait_stderr("listening", Duration::from_secs(10));
        td.wait_stderr("listening on", Duration::from_secs(10));
        send_frames(&a, "va", frames.iter().map(|(_, f)| f.as_slice()));
        std::thread::sleep(Duration::from_millis(400));
        np.interrupt();
        td.interrupt();
        assert_eq!(np.finish().0, Some(130), "netpath failed for {expr:?}");
        let (_, _, td_stderr) = td.finish_with_stderr();
        let td_dropped = td_stderr
            .iter()
            .find(|l| l.contains("dropped by kernel"))
            .cloned()
            .unwrap_or_default();
        assert!(
            td_dropped.starts_with("0 "),
            "{expr:?}: tcpdump lost packets, nothing to compare with: {td_stderr:?}"
        );
        let (ours, theirs) = (read_frames(&ours), read_frames(&theirs));
        let (n_ours, n_theirs) = (ours.len(), theirs.len());
        let (ours, theirs) = (multiset(ours), multiset(theirs));
        let mut missing = Vec::new();
        let mut added = Vec::new();
        for (k, &n) in &theirs {
            let m = ours.get(k).copied().unwrap_or(0);
            if m < n {
                missing.push(format!("{:?} x{}", names_of(&frames, k), n - m));
            }
        }
        for (k, &n) in &ours {
            let m = theirs.get(k).copied().unwrap_or(0);
            if n > m {
                added.push(format!("{:?} x{}", names_of(&frames, k), n - m));
            }
        }
        eprintln!(
            "{expr:?}: tcpdump {n_theirs}, netpath {n_ours}: {} missing, {} added",
            missing.len(),
            added.len()
        );
        selected_total += n_theirs;
        if n_theirs == 0 {
            failures.push(format!("{expr:?}: tcpdump selected nothing"));
        }
        if !missing.is_empty() || !added.is_empty() {
            failures.push(format!("{expr:?}: missing {missing:?}; added {added:?}"));
        }
    }
    eprintln!(
        "{} filters, {} frames each: {selected_total} packets selected by tcpdump in all",
        FILTERS.len(),
        frames.len()
    );
    drop((a, b));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
