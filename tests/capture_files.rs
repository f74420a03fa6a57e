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
use integration_tests::{case, veth_pair, NetpathProcess, Requires};
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
        case!(
            files_tcpdump_writes_read_like_tcpdump,
            Requires::Root,
            Requires::Tool("tcpdump"),
            Requires::Tool("socat"),
            Requires::Tool("editcap")
        ),
        case!(
            hand_written_link_types_read_like_tcpdump,
            Requires::Tool("tcpdump")
        ),
        case!(other_link_types_are_one_line_and_exit_2),
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

/// `tcpdump -n -r FILE EXPR` (run in `netns` when given, where it names interfaces by their
/// index): Ok(lines) or Err(stderr) when tcpdump refuses.
fn tcpdump_read(
    netns: Option<&str>,
    file: &std::path::Path,
    flags: &[&str],
    expr: &str,
) -> Result<Vec<String>, String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "tcpdump"]);
            c
        }
        None => Command::new("tcpdump"),
    };
    let out = cmd
        .args(["-n", "-r"])
        .arg(file)
        .args(flags)
        .arg(expr)
        .output()
        .expect("tcpdump");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect())
}

/// `netpath capture -r FILE EXPR`: Ok(lines) or Err(stderr) when it exits 2.
fn netpath_read(file: &std::path::Path, flags: &[&str], expr: &str) -> Result<Vec<String>, String> {
    let mut args = vec!["capture", "-r", file.to_str().unwrap()];
    args.extend_from_slice(flags);
    if !expr.is_empty() {
        args.push(expr);
    }
    let out = integration_tests::netpath(&args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => Ok(String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()),
        Some(2) => {
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            Err(err)
        }
        code => panic!("netpath -r {} {expr}: exit {code:?}: {err}", file.display()),
    }
}

/// A line from its network layer on (`IP ...`, `IP6 ...`, `ARP, ...`): what follows the
/// time and the link-layer part, which tcpdump and netpath word differently for some links.
fn network_part(line: &str) -> &str {
    [" IP ", " IP6 ", " ARP, "]
        .iter()
        .filter_map(|m| line.find(m))
        .min()
        .map_or(line, |i| &line[i + 1..])
}

/// What of a line is compared with tcpdump's: the addresses (and ports), and the whole
/// network-layer text of ICMP echoes and plain UDP, which netpath words as tcpdump does
/// (tcpdump decodes some applications further: DNS, HTTP).
fn compared(line: &str) -> &str {
    let net = network_part(line);
    if net.contains("ICMP echo") || net.contains("ICMP6, echo") || net.ends_with(": UDP, length 4")
    {
        return net;
    }
    net.split(": ").next().unwrap_or(net)
}

/// Reads `file` with both tools for each expression and compares what they select, packet
/// by packet (the network-layer text); an expression tcpdump refuses, netpath refuses with
/// one line. Returns the number of packets each expression selected.
fn compare_with_tcpdump(netns: Option<&str>, file: &std::path::Path, exprs: &[&str]) -> Vec<usize> {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    exprs
        .iter()
        .map(|expr| {
            let theirs = tcpdump_read(netns, file, &[], expr);
            let ours = netpath_read(file, &[], expr);
            match (theirs, ours) {
                (Ok(theirs), Ok(ours)) => {
                    eprintln!("{name:14} {expr:32} {} packets", ours.len());
                    let t: Vec<_> = theirs.iter().map(|l| compared(l)).collect();
                    let o: Vec<_> = ours.iter().map(|l| compared(l)).collect();
                    assert_eq!(o, t, "{name} `{expr}`");
                    ours.len()
                }
                (Err(t), Err(o)) => {
                    eprintln!("{name:14} {expr:32} refused: {}", o.trim());
                    assert!(o.contains(expr), "{o} / tcpdump: {t}");
                    0
                }
                (t, o) => panic!("{name} `{expr}`: tcpdump {t:?}, netpath {o:?}"),
            }
        })
        .collect()
}

/// tcpdump writes pcap of the cooked Linux headers (`-i any`: LINUX_SLL2; `-y LINUX_SLL`),
/// of a tun device (RAW) and of a veth (Ethernet) in a test namespace; netpath reads each,
/// and editcap's pcapng copies, selecting what tcpdump selects.
fn files_tcpdump_writes_read_like_tcpdump() {
    let (a, _b) = veth_pair("cf");
    let dir = tempfile::tempdir().unwrap();
    // A tun device has a carrier while a program holds it: socat, reading into /dev/null.
    let _tun = NetpathProcess::spawn_program(
        std::path::Path::new("ip"),
        &[
            "netns",
            "exec",
            &a.name,
            "socat",
            "-u",
            "TUN:10.9.0.1/24,tun-type=tun,tun-name=tn0,iff-no-pi,iff-up",
            "OPEN:/dev/null",
        ],
    );
    a.exec(
        "for i in $(seq 50); do ip link show tn0 >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1",
    );
    a.exec("ip addr add fd00:9::1/64 dev tn0 nodad");
    let files: Vec<(&str, Vec<&str>)> = vec![
        ("sll2.pcap", vec!["-i", "any"]),
        ("sll.pcap", vec!["-i", "any", "-y", "LINUX_SLL"]),
        ("raw.pcap", vec!["-i", "tn0"]),
        ("eth.pcap", vec!["-i", "va"]),
    ];
    let mut dumps = Vec::new();
    for (file, flags) in &files {
        let path = dir.path().join(file);
        // Packets as they come: a packet still in the ring's block at SIGINT is lost.
        let mut args = vec![
            "netns",
            "exec",
            &a.name,
            "tcpdump",
            "--immediate-mode",
            "-U",
            "-n",
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-w", path.to_str().unwrap()]);
        let mut p = NetpathProcess::spawn_program(std::path::Path::new("ip"), &args);
        p.wait_stderr("listening on", Duration::from_secs(20));
        dumps.push(p);
    }
    // Both families over the veth (answered) and the tun (not), UDP, and a refused TCP
    // connection (SYN, RST).
    a.exec(
        "ping -c2 -i0.2 -W1 10.1.0.2 && ping -c2 -i0.2 -W1 fd00:1::2 && \
         (ping -c1 -W1 10.9.0.2; ping -c1 -W1 fd00:9::2; \
          bash -c \"echo hi > /dev/udp/10.1.0.2/9999; echo hi > /dev/udp/10.9.0.2/9999; \
                    echo hi > /dev/udp/fd00:9::2/9999; exec 3<>/dev/tcp/10.1.0.2/80\"; \
          sleep 0.3; true)",
    );
    for p in dumps {
        p.interrupt();
        let (code, _, err) = p.finish_with_stderr();
        assert_eq!(code, Some(0), "{err:?}");
    }
    for file in ["sll2.pcap", "raw.pcap"] {
        let path = dir.path().join(file);
        let ng = path.with_extension("pcapng");
        run(Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(&path)
            .arg(&ng));
    }
    let exprs = [
        "",
        "icmp",
        "ip6",
        "udp port 9999",
        "tcp",
        "host 10.1.0.2",
        "net 10.9.0.0/24 or net fd00:9::/64",
        "inbound",
        "outbound and icmp",
        "icmp6 and ip6[40] == 128",
        "greater 100",
        "arp or icmp6",
        "ether host 02:00:00:00:00:01",
    ];
    let mut selected = std::collections::HashMap::new();
    for file in [
        "sll2.pcap",
        "sll2.pcapng",
        "sll.pcap",
        "raw.pcap",
        "raw.pcapng",
        "eth.pcap",
    ] {
        let counts = compare_with_tcpdump(Some(&a.name), &dir.path().join(file), &exprs);
        selected.insert(file, counts);
    }
    // Not vacuous: every file has packets, and the cooked files both directions.
    for (file, counts) in &selected {
        assert!(counts[0] >= 4, "{file}: {counts:?}");
    }
    for file in ["sll2.pcap", "sll.pcap"] {
        let c = &selected[file];
        assert!(c[7] > 0 && c[8] > 0, "{file}: inbound/outbound {c:?}");
        assert!(c[3] >= 3 && c[4] >= 2, "{file}: udp/tcp {c:?}");
    }
    assert!(selected["raw.pcap"][3] == 2, "{:?}", selected["raw.pcap"]);

    // SLL2's interface index and direction, field by field: tcpdump names the interface
    // (in the namespace), netpath gives the index it was captured with.
    let index_of = |dev: &str| -> String {
        a.exec(&format!("cat /sys/class/net/{dev}/ifindex"))
            .trim()
            .to_string()
    };
    let file = dir.path().join("sll2.pcap");
    let theirs = tcpdump_read(Some(&a.name), &file, &[], "icmp or udp").unwrap();
    let ours = netpath_read(&file, &[], "icmp or udp").unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (t, o) in theirs.iter().zip(&ours) {
        let t: Vec<_> = t.split_whitespace().collect();
        let o: Vec<_> = o.split_whitespace().collect();
        // "TIME va Out IP ..." / "TIME ifindex N Out IP ..."
        assert_eq!((o[0], o[1]), (t[0], "ifindex"), "{t:?} {o:?}");
        assert_eq!(o[2], index_of(t[1]), "{t:?} {o:?}");
        assert_eq!(o[3], t[2], "direction: {t:?} {o:?}");
    }
    // LINUX_SLL with -e: the same words as tcpdump's (direction, address, protocol, length).
    let file = dir.path().join("sll.pcap");
    let theirs = tcpdump_read(None, &file, &["-e"], "icmp").unwrap();
    let ours = netpath_read(&file, &["-e"], "icmp").unwrap();
    let words = |l: &String| l.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        ours.iter().map(words).collect::<Vec<_>>(),
        theirs.iter().map(words).collect::<Vec<_>>()
    );

    // -w from a cooked file keeps its link type: tcpdump reads netpath's pcapng as SLL2.
    let out = dir.path().join("copy.pcapng");
    let file = dir.path().join("sll2.pcap");
    let o = integration_tests::netpath(&[
        "capture",
        "-r",
        file.to_str().unwrap(),
        "-w",
        out.to_str().unwrap(),
        "inbound",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let header = Command::new("tcpdump")
        .arg("-r")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&header.stderr);
    assert!(err.contains("LINUX_SLL2"), "{err}");
    let copied = tcpdump_read(None, &out, &[], "").unwrap();
    let inbound = tcpdump_read(None, &file, &[], "inbound").unwrap();
    assert_eq!(copied, inbound);
}

/// A record to write: captured bytes, the captured length written, the original length.
type Record = (Vec<u8>, u32, u32);

/// A classic pcap file written here: byte order, snap length, the link-type field (FCS bits
/// included) and records of (captured bytes, captured length written, original length).
fn hand_pcap(
    path: &std::path::Path,
    big_endian: bool,
    snaplen: u32,
    linktype: u32,
    records: &[Record],
) {
    let mut v = Vec::new();
    let put = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    put(&mut v, 0xA1B2_C3D4);
    v.extend_from_slice(&if big_endian {
        [0, 2, 0, 4]
    } else {
        [2, 0, 4, 0]
    });
    for x in [0, 0, snaplen, linktype] {
        put(&mut v, x);
    }
    for (i, (data, caplen, orig)) in records.iter().enumerate() {
        for x in [1_700_000_000 + i as u32, 0, *caplen, *orig] {
            put(&mut v, x);
        }
        v.extend_from_slice(data);
    }
    std::fs::write(path, v).unwrap();
}

/// NULL, LOOP, RAW, IPV4, IPV6 and Ethernet with an FCS, which tcpdump cannot capture here,
/// written by hand; and records longer than the file's snap length. tcpdump reads them
/// all: netpath must select and print the same packets.
fn hand_written_link_types_read_like_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let ip4 = |dst: [u8; 4]| -> Vec<u8> {
        build(|v| {
            PacketBuilder::ipv4([10, 244, 1, 2], dst, 64)
                .icmpv4_echo_request(1, 1)
                .write(v, &[0; 56])
                .unwrap()
        })
    };
    let udp6 = || -> Vec<u8> {
        build(|v| {
            PacketBuilder::ipv6(v6(1), v6(2), 64)
                .udp(40000, 9999)
                .write(v, &[7; 8])
                .unwrap()
        })
    };
    let syn4 =
        || -> Vec<u8> { tcp4([10, 244, 1, 2], [10, 96, 0, 10], 40000, 80, true)[14..].to_vec() };
    let whole = |d: Vec<u8>| {
        let n = d.len() as u32;
        (d, n, n)
    };
    let with_family = |family: [u8; 4], ip: Vec<u8>| whole([family.to_vec(), ip].concat());
    let ips = || vec![ip4([10, 244, 2, 3]), udp6(), syn4(), ip4([192, 168, 1, 1])];
    let null = |big: bool| -> Vec<Record> {
        let order = |af: u32| {
            if big {
                af.to_be_bytes()
            } else {
                af.to_le_bytes()
            }
        };
        vec![
            with_family(order(2), ip4([10, 244, 2, 3])),
            with_family(order(24), udp6()),
            with_family(order(28), udp6()),
            with_family(order(30), udp6()),
            with_family(order(2), syn4()),
        ]
    };
    // Whole frames with 4 bytes of FCS (tcpdump prints a VXLAN packet on two lines: left out).
    let fcs_frames: Vec<_> = crafted()
        .into_iter()
        .filter(|(name, f, orig)| f.len() as u32 == *orig && *name != "vxlan")
        .map(|(_, f, _)| whole([f, vec![0xde, 0xad, 0xbe, 0xef]].concat()))
        .collect();
    let long = icmp_echo([10, 244, 1, 2], [10, 244, 2, 3]);
    let files: Vec<(&str, bool, u32, u32, Vec<Record>)> = vec![
        ("null-le.pcap", false, 65535, 0, null(false)),
        ("null-be.pcap", true, 65535, 0, null(true)),
        (
            "loop.pcap",
            false,
            65535,
            108,
            vec![
                with_family(2u32.to_be_bytes(), ip4([10, 244, 2, 3])),
                with_family(24u32.to_be_bytes(), udp6()),
                with_family(30u32.to_be_bytes(), udp6()),
            ],
        ),
        (
            "raw.pcap",
            true,
            65535,
            101,
            ips().into_iter().map(whole).collect(),
        ),
        (
            "ipv4.pcap",
            false,
            65535,
            228,
            vec![whole(ip4([10, 244, 2, 3])), whole(syn4())],
        ),
        ("ipv6.pcap", false, 65535, 229, vec![whole(udp6())]),
        // FCS length 2 words, "present" bit, Ethernet.
        (
            "fcs.pcap",
            false,
            65535,
            (2 << 28) | 0x0400_0000 | 1,
            fcs_frames,
        ),
        (
            "over-snaplen.pcap",
            false,
            60,
            1,
            vec![
                (long.clone(), long.len() as u32, long.len() as u32),
                (long.clone(), long.len() as u32, 1500),
                (long[..60].to_vec(), 60, 1500),
            ],
        ),
    ];
    let exprs = [
        "",
        "icmp",
        "ip6",
        "ip",
        "udp port 9999",
        "tcp[tcpflags] & tcp-syn != 0",
        "host 10.244.2.3",
        "not host 192.168.1.1",
        "greater 100",
        "len = 102",
        "ether[60:4] = 0xdeadbeef or ip6",
        "inbound",
        "arp",
    ];
    for (name, big, snaplen, linktype, records) in &files {
        let path = dir.path().join(name);
        hand_pcap(&path, *big, *snaplen, *linktype, records);
        let counts = compare_with_tcpdump(None, &path, &exprs);
        assert_eq!(counts[0], records.len(), "{name}: every record read");
        // With -e, the link-layer words too.
        let theirs = tcpdump_read(None, &path, &["-e"], "").unwrap();
        let ours = netpath_read(&path, &["-e"], "").unwrap();
        let strip = |l: &String| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
        let (t, o): (Vec<_>, Vec<_>) = (
            theirs.iter().map(strip).collect(),
            ours.iter().map(strip).collect(),
        );
        // Upper layers tcpdump decodes further (SYN options) aside, the lines are tcpdump's.
        for (t, o) in t.iter().zip(&o) {
            let link_part = |l: &str| l.split(": ").next().unwrap_or("").to_string();
            assert_eq!(link_part(o), link_part(t), "{name} -e");
            if t.contains("ICMP echo") || t.contains("UDP, length") {
                assert_eq!(o, t, "{name} -e");
            }
        }
    }
    // -r IN -w OUT copies every packet whole, on interfaces of the input's link type (and
    // FCS length); tcpdump reads the copy as it reads the original.
    for (name, ..) in &files {
        let path = dir.path().join(name);
        let copy = dir.path().join(format!("{name}.pcapng"));
        let o = integration_tests::netpath(&[
            "capture",
            "-r",
            path.to_str().unwrap(),
            "-w",
            copy.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let read = |p: &std::path::Path| {
            let mut r = read_capture_file(std::fs::File::open(p).unwrap()).unwrap();
            std::iter::from_fn(|| r.next_packet())
                .map(|p| {
                    let p = p.unwrap();
                    (p.link, p.fcs_len, p.packet.data, p.packet.orig_len)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(read(&copy), read(&path), "{name}");
        assert_eq!(
            tcpdump_read(None, &copy, &["-e"], "").unwrap(),
            tcpdump_read(None, &path, &["-e"], "").unwrap(),
            "{name}"
        );
    }
    // The NULL files differ in byte order only: the same packets, the same selections.
    let le = netpath_read(&dir.path().join("null-le.pcap"), &[], "ip6").unwrap();
    let be = netpath_read(&dir.path().join("null-be.pcap"), &[], "ip6").unwrap();
    assert_eq!((le.len(), be.len()), (3, 3));
}

/// A file of a link type netpath does not read: one line naming it, exit 2 (tcpdump prints
/// such packets as hex).
fn other_link_types_are_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user0.pcap");
    let pkt = icmp_echo([10, 0, 0, 1], [10, 0, 0, 2]);
    hand_pcap(&path, false, 65535, 147, &[(pkt.clone(), 98, 98)]);
    let err = netpath_read(&path, &[], "").unwrap_err();
    assert!(
        err.contains("link type 147 (USER0) is not supported"),
        "{err}"
    );
    // pcapng: the interface's link type, when its first packet comes.
    let mut w = PcapngWriter::new(Vec::new(), 1000).unwrap();
    w.write_packet(&sample_packets()[0]).unwrap();
    let mut bytes = w.into_inner();
    let idb = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    bytes[idb + 8..idb + 10].copy_from_slice(&147u16.to_le_bytes());
    let ng = dir.path().join("user0.pcapng");
    std::fs::write(&ng, bytes).unwrap();
    let err = netpath_read(&ng, &[], "").unwrap_err();
    assert!(err.contains("pod-a/eth0") && err.contains("147"), "{err}");
}
