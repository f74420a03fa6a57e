//! Capture files and filters checked against the reference tools: pcapng written by netpath
//! must read back in tshark/tcpdump with interface names, directions and drop comments, and
//! the userspace filter must select exactly the packets tcpdump selects.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use bytes::Bytes;
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv6Extensions,
    Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
};
use integration_tests::{case, Requires};
use tracer::capture::{
    read_capture_file, CaptureOutput, CaptureSink, CapturedPacket, Direction, DropInfo,
    PacketFilter, PcapngWriter, DEFAULT_SNAPLEN,
};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            filter_selects_what_tcpdump_selects,
            Requires::Tool("tcpdump")
        ),
        case!(
            pcapng_reads_back_in_tshark_and_tcpdump,
            Requires::Tool("tshark"),
            Requires::Tool("tcpdump")
        ),
        case!(
            pcapng_on_a_pipe_is_read_live_by_tshark,
            Requires::Tool("tshark")
        ),
        case!(text_lines_for_a_capture),
        case!(reading_into_a_closed_pipe_ends_quietly_like_tcpdump),
    ])
}

const MAC_A: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02];
const MAC_B: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x03];

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

fn build(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_A, MAC_B)
}

fn icmp_echo(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    build(|v| {
        eth()
            .ipv4(src, dst, 64)
            .icmpv4_echo_request(1, 1)
            .write(v, &[0; 56])
            .unwrap()
    })
}

fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    build(|v| {
        let b = eth().ipv4(src, dst, 64).tcp(sport, dport, 1, 64240);
        if syn {
            b.syn().write(v, &[])
        } else {
            b.ack(2).write(v, &[7; 20])
        }
        .unwrap()
    })
}

fn ipv6_tcp_with_ext_headers() -> Vec<u8> {
    let opts = [1u8, 4, 0, 0, 0, 0]; // PadN option filling the 8-byte header
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(60), &opts).unwrap()),
        destination_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(6), &opts).unwrap()),
        ..Default::default()
    };
    let hdr = Ipv6Header {
        hop_limit: 64,
        source: v6(1),
        destination: v6(2),
        ..Default::default()
    };
    build(|v| {
        eth()
            .ip(IpHeaders::Ipv6(hdr, exts))
            .tcp(40000, 80, 1, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    })
}

/// Crafted frames with their original lengths (some truncated, as with a snap length).
fn crafted() -> Vec<(&'static str, Vec<u8>, u32)> {
    let arp = build(|v| {
        let a = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REQUEST,
            &MAC_A,
            &[10, 244, 1, 1],
            &[0; 6],
            &[10, 244, 1, 2],
        )
        .unwrap();
        PacketBuilder::ethernet2(MAC_A, [0xff; 6])
            .arp(a)
            .write(v)
            .unwrap()
    });
    let vlan_icmp = build(|v| {
        eth()
            .single_vlan(100.try_into().unwrap())
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
            .icmpv4_echo_request(2, 1)
            .write(v, &[0; 8])
            .unwrap()
    });
    let mut vxlan_payload = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    vxlan_payload.extend(icmp_echo([10, 244, 1, 2], [10, 244, 2, 3]));
    let vxlan = build(|v| {
        eth()
            .ipv4([192, 168, 0, 1], [192, 168, 0, 2], 64)
            .udp(40000, 4789)
            .write(v, &vxlan_payload)
            .unwrap()
    });
    let mut frames = vec![
        ("icmp4", icmp_echo([10, 244, 1, 2], [10, 244, 2, 3])),
        (
            "syn80",
            tcp4([10, 244, 1, 2], [10, 96, 0, 10], 40000, 80, true),
        ),
        (
            "ack80",
            tcp4([10, 244, 2, 3], [10, 244, 1, 2], 80, 40000, false),
        ),
        (
            "ssh",
            tcp4([10, 244, 1, 2], [192, 168, 1, 1], 50022, 22, true),
        ),
        (
            "dns",
            build(|v| {
                eth()
                    .ipv4([10, 244, 1, 2], [10, 96, 0, 10], 64)
                    .udp(5353, 53)
                    .write(v, &[0; 12])
                    .unwrap()
            }),
        ),
        (
            "syn6",
            build(|v| {
                eth()
                    .ipv6(v6(1), v6(2), 64)
                    .tcp(40000, 80, 1, 64240)
                    .syn()
                    .write(v, &[])
                    .unwrap()
            }),
        ),
        (
            "echo6",
            build(|v| {
                eth()
                    .ipv6(v6(1), v6(2), 64)
                    .icmpv6_echo_request(1, 1)
                    .write(v, &[0; 8])
                    .unwrap()
            }),
        ),
        ("exthdr6", ipv6_tcp_with_ext_headers()),
        ("arp", arp),
        ("vlan", vlan_icmp),
        ("vxlan", vxlan),
    ];
    let mut out: Vec<_> = frames
        .drain(..)
        .map(|(n, f)| {
            let l = f.len() as u32;
            (n, f, l)
        })
        .collect();
    // Cut after the IPv4 header: port filters must reject it, as tcpdump does.
    let mut cut = tcp4([10, 244, 1, 2], [10, 96, 0, 1], 40001, 443, true);
    let orig = cut.len() as u32;
    cut.truncate(34);
    out.push(("cut443", cut, orig));
    // Long on the wire, short in the capture: `greater` uses the original length.
    let mut big = tcp4([10, 244, 1, 2], [10, 96, 0, 1], 40002, 8080, false);
    big.truncate(80);
    out.push(("big", big, 1500));
    out
}

fn write_plain_pcap(path: &std::path::Path, frames: &[(&str, Vec<u8>, u32)]) {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, (_, f, orig)) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_secs(i as u64 + 1),
            *orig,
            f,
        ))
        .unwrap();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/setup)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn filter_selects_what_tcpdump_selects() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("crafted.pcap");
    let frames = crafted();
    write_plain_pcap(&pcap, &frames);
    let exprs = [
        "host 10.244.1.2",
        "host 10.96.0.10",
        "net 10.244.0.0/16",
        "port 80",
        "port 443",
        "host 10.96.0.1",
        "tcp port 80 and host 10.244.1.2",
        "ip6",
        "icmp6",
        "icmp",
        "arp",
        "tcp[tcpflags] & tcp-syn != 0",
        "vlan",
        "vlan and icmp",
        "host 10.244.1.2 and not port 22",
        "udp or icmp",
        "ip6 and tcp",
        "udp port 4789",
        "greater 1000",
        "ip6 host fd00::2 and tcp",
    ];
    for expr in exprs {
        // tcpdump writes the packets it selects; read them back with our reader.
        let out = Command::new("tcpdump")
            .arg("-r")
            .arg(&pcap)
            .args(["-w", "-", expr])
            .output()
            .expect("tcpdump not installed (run scripts/setup)");
        assert!(
            out.status.success(),
            "tcpdump {expr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Vec<&str> = read_capture_file(&out.stdout[..])
            .unwrap()
            .map(|p| {
                let p = p.unwrap();
                frames
                    .iter()
                    .find(|(_, f, _)| f[..] == p.data[..])
                    .expect("unknown packet")
                    .0
            })
            .collect();
        let filter = PacketFilter::compile(expr).unwrap();
        let ours: Vec<&str> = frames
            .iter()
            .filter(|(_, f, orig)| filter.matches(f, *orig))
            .map(|(n, _, _)| *n)
            .collect();
        eprintln!("{expr:40} -> {ours:?}");
        assert_eq!(ours, theirs, "filter `{expr}` differs from tcpdump");
        if let Some(hint) = filter.kernel_hint() {
            for (n, f, orig) in &frames {
                if filter.matches(f, *orig) {
                    assert!(
                        hint.admits(f),
                        "kernel hint {hint:?} of `{expr}` rejects {n}"
                    );
                }
            }
        }
    }
    // libpcap's `tcp` does not walk IPv6 extension headers (tcpdump agrees, checked above);
    // the kernel hint, defined on the upper-layer protocol, still admits the packet.
    let f = PacketFilter::compile("ip6 and tcp").unwrap();
    let exthdr = ipv6_tcp_with_ext_headers();
    assert!(!f.matches(&exthdr, exthdr.len() as u32));
    assert!(f.kernel_hint().unwrap().admits(&exthdr));
}

fn sample_packets() -> Vec<CapturedPacket> {
    let p = |netns: &str, ifname: &str, dir, data: Vec<u8>, drop: Option<DropInfo>, ts: u64| {
        CapturedPacket {
            ts_ns: 1_700_000_000_000_000_000 + ts,
            node: "node-1".into(),
            netns: netns.into(),
            ifname: ifname.into(),
            dir,
            orig_len: data.len() as u32,
            data: Bytes::from(data),
            drop,
        }
    };
    let req = icmp_echo([10, 244, 1, 2], [10, 244, 2, 3]);
    vec![
        p(
            "pod-a",
            "eth0",
            Some(Direction::Out),
            req.clone(),
            None,
            1_000,
        ),
        p("", "eth0", Some(Direction::In), req.clone(), None, 2_000),
        p(
            "pod-b",
            "eth0",
            Some(Direction::In),
            req.clone(),
            None,
            3_000,
        ),
        p(
            "pod-b",
            "eth0",
            None,
            req,
            Some(DropInfo {
                reason: "NETFILTER_DROP".into(),
                location: "nf_hook_slow+0x8c".into(),
            }),
            4_123,
        ),
    ]
}

fn pcapng_reads_back_in_tshark_and_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.pcapng");
    let file = std::fs::File::create(&path).unwrap();
    let out = CaptureOutput::Pcapng(PcapngWriter::new(file, DEFAULT_SNAPLEN).unwrap());
    let mut sink = CaptureSink::new(Some(PacketFilter::compile("icmp").unwrap()), out);
    for p in sample_packets() {
        assert!(sink.push(&p).unwrap());
    }
    let (_, stats) = sink.finish().unwrap();
    assert_eq!((stats.captured, stats.dropped_by_kernel), (4, 1));

    let fields = run(Command::new("tshark").arg("-r").arg(&path).args([
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.interface_description",
        "-e",
        "frame.packet_flags_direction",
        "-e",
        "frame.comment",
        "-e",
        "frame.time_epoch",
    ]));
    let rows: Vec<Vec<&str>> = fields.lines().map(|l| l.split('|').collect()).collect();
    eprintln!("{fields}");
    assert_eq!(rows.len(), 4, "{fields}");
    let names: Vec<_> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        names,
        ["pod-a/eth0", "node-1/eth0", "pod-b/eth0", "pod-b/eth0"]
    );
    assert!(rows.iter().all(|r| r[1] == "node node-1"), "{fields}");
    let dirs: Vec<_> = rows.iter().map(|r| r[2]).collect();
    assert_eq!(
        dirs,
        ["0x00000002", "0x00000001", "0x00000001", ""],
        "epb_flags direction: 1 inbound, 2 outbound"
    );
    assert_eq!(rows[3][3], "drop: NETFILTER_DROP at nf_hook_slow+0x8c");
    assert!(rows[..3].iter().all(|r| r[3].is_empty()));
    assert_eq!(rows[3][4], "1700000000.000004123", "nanosecond timestamps");

    // tcpdump (libpcap) reads it too and sees every packet.
    let lines = run(Command::new("tcpdump").args(["-n", "-r"]).arg(&path));
    assert_eq!(lines.lines().count(), 4, "{lines}");
    assert!(
        lines.lines().all(|l| l.contains("ICMP echo request")),
        "{lines}"
    );

    // And our reader restores what was written.
    let back: Vec<_> = read_capture_file(std::fs::File::open(&path).unwrap())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut expected = sample_packets();
    expected[1].netns = "node-1".into(); // the root namespace is named after the node
    assert_eq!(back, expected);
}

fn pcapng_on_a_pipe_is_read_live_by_tshark() {
    let mut tshark = Command::new("tshark")
        .args([
            "-l",
            "-r",
            "-",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark not installed (run scripts/setup)");
    let stdout = tshark.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut w = PcapngWriter::new(tshark.stdin.take().unwrap(), DEFAULT_SNAPLEN).unwrap();
    let pkt = &sample_packets()[0];
    w.write_packet(pkt).unwrap();
    // The pipe stays open: tshark must show the packet before the stream ends.
    let first = rx.recv_timeout(Duration::from_secs(30));
    w.flush().unwrap();
    drop(w);
    let _ = tshark.wait();
    assert_eq!(first.as_deref(), Ok("pod-a/eth0"));
}

fn text_lines_for_a_capture() {
    let mut out = Vec::new();
    {
        let opts = tracer::capture::TextOptions::default();
        let mut sink = CaptureSink::new(
            Some(PacketFilter::compile("host 10.244.2.3").unwrap()),
            CaptureOutput::Text {
                out: &mut out,
                opts,
            },
        );
        for p in sample_packets() {
            sink.push(&p).unwrap();
        }
        sink.add_lost(2);
        let (_, stats) = sink.finish().unwrap();
        assert_eq!(
            stats.summary(),
            "4 packets captured\n1 packet dropped by the kernel (seen at drop points)\n2 packets lost by the tracer"
        );
    }
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[0].ends_with(
            " pod-a/eth0 Out IP 10.244.1.2 > 10.244.2.3: ICMP echo request, id 1, seq 1, length 64"
        ),
        "{text}"
    );
    assert!(lines[1].contains(" node-1/eth0 In IP "), "{text}");
    assert!(
        lines[3].ends_with(" DROP reason=NETFILTER_DROP at nf_hook_slow+0x8c"),
        "{text}"
    );
}

/// `netpath capture -r FILE | head -1`: the reader goes away after one line; netpath ends as
/// tcpdump does, exit 0 and nothing on stderr (it said "Broken pipe", exit 2).
fn reading_into_a_closed_pipe_ends_quietly_like_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.pcap");
    // More than a pipe's 64 KiB of text, so netpath is still writing when `head` leaves.
    let frames: Vec<_> = (0..4000u32)
        .map(|i| {
            (
                "echo",
                icmp_echo([10, 0, 0, 1], [10, 0, (i >> 8) as u8, i as u8]),
                98,
            )
        })
        .collect();
    write_plain_pcap(&file, &frames);
    let mut np = Command::new(integration_tests::netpath_bin())
        .arg("capture")
        .arg("-r")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(np.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The read end is closed here (dropped), as `head -1` exits.
    assert!(first.contains("10.0.0.1 > 10.0.0.0"), "{first}");
    let out = np.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}
