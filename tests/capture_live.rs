//! `netpath capture` against the real kernel: two namespaces joined by a veth, capture on the
//! `b` side. Checks the pcapng (interface names, directions, counts) with tshark, drops at
//! kfree_skb, and that a range of filter expressions select the same packets as tcpdump
//! capturing at the same time.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use integration_tests::*;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            capture_writes_pcapng_with_namespaced_names_and_directions,
            Requires::Root,
            Requires::Tool("tshark")
        ),
        case!(
            capture_with_drops_records_the_kernel_reason,
            Requires::Root,
            Requires::Tool("tshark")
        ),
        case!(
            kernel_written_pcapng_reads_back_whole_and_stops_at_the_count,
            Requires::Root,
            Requires::Tool("tshark"),
            Requires::Tool("tcpdump")
        ),
        case!(
            filters_select_the_same_packets_as_tcpdump,
            Requires::Root,
            Requires::Tool("tshark"),
            Requires::Tool("tcpdump"),
            Requires::Tool("socat")
        ),
        case!(
            vlan_tagged_frames_are_captured_as_tcpdump_sees_them,
            Requires::Root,
            Requires::Tool("tshark"),
            Requires::Tool("tcpdump")
        ),
        case!(
            a_closed_output_pipe_ends_the_capture_quietly,
            Requires::Root,
            Requires::Tool("tcpdump")
        ),
        case!(
            ipv6_extension_headers_are_selected_as_tcpdump_selects_them,
            Requires::Root,
            Requires::Tool("tshark"),
            Requires::Tool("tcpdump")
        ),
        case!(
            vlan_tags_are_put_back_at_drop_points_too,
            Requires::Root,
            Requires::Tool("tshark"),
            Requires::Tool("tcpdump")
        ),
        case!(
            filters_the_kernel_cannot_run_are_applied_in_userspace,
            Requires::Root,
            Requires::Tool("tshark")
        ),
    ])
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn capture_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn capture_writes_pcapng_with_namespaced_names_and_directions() {
    let p = routed_pair("npc");
    let dir = temp_dir();
    let file = capture_path(&dir, "echo.pcapng");
    let file_s = file.to_str().expect("utf-8 path");
    // Echo requests and replies only: 2 pings x 2 families x 2 directions.
    let mut np = NetpathProcess::spawn(&[
        "capture",
        "-i",
        "vb",
        "--netns",
        &p.b.name,
        "-w",
        file_s,
        "-c",
        "8",
        "--duration",
        "10",
        "icmp or (icmp6 and (ip6[40] == 128 or ip6[40] == 129))",
    ]);
    np.wait_stderr("listening", Duration::from_secs(10));
    p.a.exec("ping -c2 -i0.2 -W1 10.1.0.2 >/dev/null");
    p.a.exec("ping -c2 -i0.2 -W1 fd00:1::2 >/dev/null");
    let (code, _) = np.finish();
    assert_eq!(code, Some(0));
    let rows = tshark_fields(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "ip.src",
            "ipv6.src",
        ],
    );
    assert_eq!(rows.len(), 8, "{rows:?}");
    block_types(&file);
    let want_if = format!("{}/vb", p.b.name);
    assert!(rows.iter().all(|r| r[0] == want_if), "{rows:?}");
    let dir_of = |src4: &str, src6: &str| {
        rows.iter()
            .filter(|r| r[2] == src4 || r[3] == src6)
            .map(|r| r[1].clone())
            .collect::<BTreeSet<_>>()
    };
    // pcapng epb_flags: 1 = inbound (a -> b arrives on vb), 2 = outbound.
    assert_eq!(
        dir_of("10.1.0.1", "fd00:1::1"),
        BTreeSet::from(["0x00000001".to_string()]),
        "{rows:?}"
    );
    assert_eq!(
        dir_of("10.1.0.2", "fd00:1::2"),
        BTreeSet::from(["0x00000002".to_string()]),
        "{rows:?}"
    );
    assert_eq!(tc_programs(&p.b.name, "vb"), 0, "tc programs left attached");
}

fn capture_with_drops_records_the_kernel_reason() {
    let p = routed_pair("npc");
    let dir = temp_dir();
    let file = capture_path(&dir, "drops.pcapng");
    let mut np = NetpathProcess::spawn(&[
        "capture",
        "--drops",
        "-i",
        "vb",
        "--netns",
        &p.b.name,
        "-w",
        file.to_str().expect("utf-8 path"),
        "--duration",
        "4",
        "host 10.99.0.1 or host fd00:99::1",
    ]);
    np.wait_stderr("listening", Duration::from_secs(10));
    p.a.exec("ping -c1 -W1 10.99.0.1 >/dev/null || true");
    p.a.exec("ping -c1 -W1 fd00:99::1 >/dev/null || true");
    let (code, _) = np.finish();
    assert_eq!(code, Some(0));
    let rows = tshark_fields(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "frame.comment",
            "ip.dst",
            "ipv6.dst",
        ],
    );
    for dst in ["10.99.0.1", "fd00:99::1"] {
        let to_dst: Vec<_> = rows.iter().filter(|r| r[3] == dst || r[4] == dst).collect();
        assert!(
            to_dst
                .iter()
                .any(|r| r[2].contains("IP_INNOROUTES") && r[1].is_empty()),
            "no drop of the packet to {dst} in {rows:?}"
        );
        assert!(
            to_dst
                .iter()
                .any(|r| r[1] == "0x00000001" && r[2].is_empty()),
            "the packet to {dst} was not seen entering vb: {rows:?}"
        );
    }
    assert!(
        np_summary_ok(&file),
        "capture file unreadable by netpath -r"
    );
}

/// The type of every block of a pcapng file, checking that the blocks chain: each one's two
/// lengths agree and the last ends the file.
fn block_types(file: &Path) -> Vec<u32> {
    let bytes = std::fs::read(file).expect("read capture");
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let (mut at, mut types) = (0, Vec::new());
    while at < bytes.len() {
        assert!(at + 12 <= bytes.len(), "a block cut short at {at}");
        let len = word(at + 4) as usize;
        assert!(
            len >= 12 && len.is_multiple_of(4) && at + len <= bytes.len(),
            "block at {at}: {len}"
        );
        assert_eq!(
            word(at + len - 4) as usize,
            len,
            "trailing length of the block at {at}"
        );
        types.push(word(at));
        at += len;
    }
    types
}

/// Blocks of a file that the kernel wrote: packets that went from the ring to the file
/// without being looked at (`tracer_common::pcapng_record`).
fn kernel_written(types: &[u32]) -> usize {
    types
        .iter()
        .filter(|t| **t == tracer_common::pcapng_record::FILLER_TYPE)
        .count()
}

fn kernel_written_pcapng_reads_back_whole_and_stops_at_the_count() {
    let p = routed_pair("npc");
    let dir = temp_dir();
    for count in [None, Some(250)] {
        let file = capture_path(&dir, &format!("flood-{count:?}.pcapng"));
        let mut args = vec![
            "capture".to_string(),
            "-i".into(),
            "vb".into(),
            "--netns".into(),
            p.b.name.clone(),
            "-w".into(),
            file.to_str().expect("utf-8 path").into(),
        ];
        if let Some(c) = count {
            args.extend(["-c".into(), c.to_string()]);
        }
        args.push("icmp".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut np = NetpathProcess::spawn(&args);
        np.wait_stderr("filter in the kernel", Duration::from_secs(10));
        // The device's first packet goes through userspace, which writes its description
        // block and hands the kernel its interface id: from then on the kernel writes.
        p.a.exec("ping -c1 -s3 10.1.0.2 >/dev/null");
        std::thread::sleep(Duration::from_millis(100));
        // Frames of 45, 49 and 342 bytes: padded lengths of both parities, and one cut to the
        // 256-byte snap length.
        p.a.exec("ping -f -c299 -s3 10.1.0.2 >/dev/null");
        p.a.exec("ping -f -c300 -s7 10.1.0.2 >/dev/null");
        p.a.exec("ping -c2 -i0.2 -s300 10.1.0.2 >/dev/null");
        std::thread::sleep(Duration::from_millis(300));
        if count.is_none() {
            np.interrupt();
        }
        let (code, _, stderr) = np.finish_with_stderr();
        // Ended by -c, or by Ctrl-C (130, as shells expect).
        let want_code = if count.is_some() { 0 } else { 130 };
        assert_eq!(code, Some(want_code), "{stderr:?}");
        let want = count.unwrap_or(1204);
        assert!(
            stderr.contains(&format!("{want} packets captured")),
            "{stderr:?}"
        );
        let types = block_types(&file);
        let written = kernel_written(&types);
        assert!(
            written > want / 2,
            "{written} of {want} packets written by the kernel"
        );
        let rows = tshark_fields(
            &file,
            &[
                "frame.len",
                "frame.cap_len",
                "frame.packet_flags_direction",
                "frame.interface_name",
            ],
        );
        assert_eq!(rows.len(), want, "tshark's packets");
        let want_if = format!("{}/vb", p.b.name);
        assert!(rows.iter().all(|r| r[3] == want_if), "{rows:?}");
        if count.is_none() {
            let n = |len: &str, cap: &str, dir: &str| {
                rows.iter()
                    .filter(|r| r[0] == len && r[1] == cap && r[2] == dir)
                    .count()
            };
            for (len, cap, each) in [("45", "45", 300), ("49", "49", 300), ("342", "256", 2)] {
                assert_eq!(n(len, cap, "0x00000001"), each, "{len}-byte requests in");
                assert_eq!(n(len, cap, "0x00000002"), each, "{len}-byte replies out");
            }
        }
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&file)
            .output()
            .expect("run tcpdump");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), want);
        let out = netpath(&["capture", "-r", file.to_str().expect("utf-8 path")]);
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), want);
    }
}

/// `netpath capture -r` prints the file back, one line per packet, without root.
fn np_summary_ok(file: &Path) -> bool {
    let out = netpath(&["capture", "-r", file.to_str().expect("utf-8 path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("DROP reason=IP_INNOROUTES")
}

/// Header fields that identify a packet regardless of where it was captured or its direction.
const KEY_FIELDS: &[&str] = &[
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "ipv6.nxt",
    "icmp.type",
    "icmp.seq",
    "icmpv6.type",
    "icmpv6.echo.sequence_number",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "udp.srcport",
    "udp.dstport",
    "arp.opcode",
];

/// ICMPv6 types of neighbour discovery and MLD: their timing is the kernel's, not the test's.
fn is_nd_or_mld(row: &[String]) -> bool {
    let ty = &row[8];
    ["130", "131", "132", "133", "134", "135", "136", "143"]
        .iter()
        .any(|t| ty.split(',').next() == Some(t))
}

/// Sorted packet keys (a multiset: a packet seen twice must be seen twice by both), and the
/// total including ND/MLD.
fn packet_keys(file: &Path) -> (Vec<String>, usize) {
    let rows = tshark_fields(file, KEY_FIELDS);
    let total = rows.len();
    let mut keys: Vec<String> = rows
        .into_iter()
        .filter(|r| !is_nd_or_mld(r))
        .map(|r| r.join("|"))
        .collect();
    keys.sort();
    (keys, total)
}

/// A background process killed when dropped (servers the traffic needs).
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn background(ns: &NetNsGuard, cmd: &str) -> Background {
    Background(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c", cmd])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn background server"),
    )
}

/// Captures on `vb` in `ns` with netpath (into `ours`, once it printed `ready`) and tcpdump
/// (into `theirs`) at the same time, while `traffic` runs; both are stopped with SIGINT.
fn capture_both(
    ns: &NetNsGuard,
    expr: &str,
    ours: &Path,
    theirs: &Path,
    ready: &str,
    traffic: impl FnOnce(),
) {
    let mut np = NetpathProcess::spawn(&[
        "capture",
        "-i",
        "vb",
        "--netns",
        &ns.name,
        "-w",
        ours.to_str().expect("utf-8 path"),
        expr,
    ]);
    // -Z root: tcpdump would otherwise drop to its own user and fail to write the temp dir.
    // --immediate-mode: without it, packets still in the current TPACKET_V3 block when
    // SIGINT arrives are never written.
    let mut td = NetpathProcess::spawn_program(
        Path::new("ip"),
        &[
            "netns",
            "exec",
            &ns.name,
            "tcpdump",
            "--immediate-mode",
            "-Z",
            "root",
            "-i",
            "vb",
            "-w",
            theirs.to_str().expect("utf-8 path"),
            expr,
        ],
    );
    np.wait_stderr(ready, Duration::from_secs(10));
    td.wait_stderr("listening on", Duration::from_secs(10));
    traffic();
    std::thread::sleep(Duration::from_millis(300));
    np.interrupt();
    td.interrupt();
    assert_eq!(np.finish().0, Some(130), "netpath failed for {expr:?}");
    td.finish();
}

/// Captures with netpath (into `base`.pcapng) and tcpdump (into `base`.pcap) at once while
/// `traffic` runs ([`capture_both`]); asserts that both files give the same rows of `fields`
/// that `keep` accepts, and returns netpath's, sorted, each joined with '|'.
fn same_rows_as_tcpdump(
    ns: &NetNsGuard,
    base: &Path,
    expr: &str,
    ready: &str,
    fields: &[&str],
    keep: impl Fn(&[String]) -> bool,
    traffic: impl FnOnce(),
) -> Vec<String> {
    let (ours, theirs) = (base.with_extension("pcapng"), base.with_extension("pcap"));
    capture_both(ns, expr, &ours, &theirs, ready, traffic);
    let rows = |file: &Path| -> Vec<String> {
        let mut rows: Vec<String> = tshark_fields(file, fields)
            .into_iter()
            .filter(|r| keep(r))
            .map(|r| r.join("|"))
            .collect();
        rows.sort();
        rows
    };
    let (ours, theirs) = (rows(&ours), rows(&theirs));
    eprintln!("{expr:?}: netpath {ours:?}, tcpdump {theirs:?}");
    assert_eq!(ours, theirs, "{expr:?}");
    ours
}

/// The fixed mix: ICMP and ICMPv6 echoes, TCP to 8080 in both families, UDP to 8080 and 5353
/// (no listener: ICMP port unreachable back).
fn send_traffic(p: &RoutedPair) {
    p.a.exec("ping -c2 -i0.2 -W1 10.1.0.2 >/dev/null");
    p.a.exec("ping -c2 -i0.2 -W1 fd00:1::2 >/dev/null");
    p.a.exec("echo hi | socat -t1 - TCP4:10.1.0.2:8080");
    p.a.exec("echo hi | socat -t1 - TCP6:[fd00:1::2]:8080");
    p.a.exec("echo u | socat -t0.3 - UDP4:10.1.0.2:8080 || true");
    p.a.exec("echo u | socat -t0.3 - UDP6:[fd00:1::2]:5353 || true");
}

fn filters_select_the_same_packets_as_tcpdump() {
    let p = routed_pair("npc");
    let _server = background(
        &p.b,
        "socat TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=0 SYSTEM:'cat >/dev/null'",
    );
    std::thread::sleep(Duration::from_millis(300));
    let dir = temp_dir();
    let expressions = [
        "host 10.1.0.1",
        "net 10.1.0.0/24",
        "port 8080",
        "ip6",
        "icmp6",
        "tcp[tcpflags] & tcp-syn != 0",
        "host fd00:1::1 and not icmp6",
        "udp or icmp",
    ];
    let mut failures = Vec::new();
    for (i, expr) in expressions.iter().enumerate() {
        let ours = capture_path(&dir, &format!("np{i}.pcapng"));
        let theirs = capture_path(&dir, &format!("td{i}.pcap"));
        // The whole expression runs in the kernel (libpcap's program translated to eBPF):
        // this compares that translation with tcpdump's socket filter.
        capture_both(&p.b, expr, &ours, &theirs, "filter in the kernel", || {
            send_traffic(&p)
        });
        let (a, a_total) = packet_keys(&ours);
        let (b, b_total) = packet_keys(&theirs);
        eprintln!(
            "{expr:?}: netpath {a_total} packets, tcpdump {b_total} ({} compared)",
            b.len()
        );
        if a.is_empty() || a != b {
            failures.push(format!("{expr:?}: netpath {a:#?}\ntcpdump {b:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An ICMP echo request 10.100.0.1 > 10.100.0.2 (78 bytes with a tag), tagged with VLAN `vlan`
/// or untagged, addressed to a MAC no device has.
fn echo(vlan: Option<u16>, seq: u16) -> Vec<u8> {
    let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = match vlan {
        Some(id) => {
            eth.single_vlan(id.try_into().unwrap())
                .ipv4([10, 100, 0, 1], [10, 100, 0, 2], 64)
        }
        None => eth.ipv4([10, 100, 0, 1], [10, 100, 0, 2], 64),
    };
    let mut v = Vec::new();
    ip.icmpv4_echo_request(7, seq)
        .write(&mut v, &[0x5a; 32])
        .unwrap();
    v
}

/// 802.1Q-tagged frames: the receiving veth takes the tag out of the frame into the skb's
/// metadata (as NICs with VLAN offload do) before the taps and tc see it; tcpdump puts it back
/// from AF_PACKET's auxiliary data, netpath's tc programs in their copy. Both must show the
/// tagged frames and select them alike. (This kernel has no VLAN devices: the frames are
/// written raw.)
fn vlan_tagged_frames_are_captured_as_tcpdump_sees_them() {
    let (a, b) = veth_pair("npv");
    let frames: Vec<Vec<u8>> = (1..=3)
        .flat_map(|seq| [echo(Some(100), seq), echo(Some(200), seq), echo(None, seq)])
        .collect();
    let dir = temp_dir();
    for (i, (expr, want_tags)) in [
        (
            "vlan and icmp",
            vec!["100", "100", "100", "200", "200", "200"],
        ),
        ("vlan 100 and host 10.100.0.2", vec!["100", "100", "100"]),
        // (libpcap's `vlan` shifts the offsets of what follows it, even under `not`: it
        // comes last here.)
        ("icmp and not vlan", vec!["", "", ""]),
        // Without `vlan`, tcpdump filters the frame as the kernel hands it, the tag moved out
        // to the skb's metadata on receive: tagged ICMP is ICMP (in the kernel's filter as in
        // userspace's), and the written frames keep their tags.
        (
            "icmp",
            vec!["100", "100", "100", "200", "200", "200", "", "", ""],
        ),
        (
            "host 10.100.0.2",
            vec!["100", "100", "100", "200", "200", "200", "", "", ""],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let ours = same_rows_as_tcpdump(
            &b,
            &dir.path().join(format!("v{i}")),
            expr,
            "listening",
            &["vlan.id", "ip.dst", "icmp.seq", "frame.len"],
            |_| true,
            || send_frames(&a, "va", frames.iter().map(Vec::as_slice)),
        );
        let tags: Vec<&str> = ours.iter().map(|r| r.split('|').next().unwrap()).collect();
        assert_eq!(tags, want_tags, "{expr:?}");
    }
}

/// `netpath capture -w - | head -c 300`: when the reader goes away, the capture ends at once,
/// quietly and with exit code 0 (as ripgrep does), whoever wrote the packets (kernel or
/// userspace).
fn a_closed_output_pipe_ends_the_capture_quietly() {
    use std::io::Read;
    let p = routed_pair("npc");
    let mut np = NetpathProcess::spawn(&["capture", "-i", "vb", "--netns", &p.b.name, "-w", "-"]);
    np.wait_stderr("listening", Duration::from_secs(10));
    let mut out = np.child.stdout.take().expect("piped stdout");
    p.a.exec("ping -c1 10.1.0.2 >/dev/null");
    let mut head = [0u8; 300];
    out.read_exact(&mut head).expect("300 bytes of pcapng");
    assert_eq!(
        &head[..4],
        &[0x0a, 0x0d, 0x0d, 0x0a],
        "a section header first"
    );
    drop(out);
    let started = std::time::Instant::now();
    p.a.exec("ping -f -c300 10.1.0.2 >/dev/null");
    let (code, _, stderr) = np.finish_with_stderr();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "still running {:?} after its output closed",
        started.elapsed()
    );
    assert_eq!(code, Some(0), "{stderr:?}");
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("pipe") || l.contains("writing")),
        "{stderr:?}"
    );
}

/// IPv6 packets with extension headers (hop-by-hop and destination options before ICMPv6,
/// a fragment header), written raw next to plain ICMPv6 echoes: netpath (filter in the kernel)
/// and tcpdump select the same ones for expressions on the first next header and on the
/// protocol (libpcap's `icmp6` looks at the first next header, and behind a fragment header).
fn ipv6_extension_headers_are_selected_as_tcpdump_selects_them() {
    use tracer_common::fixtures::{icmp6, icmp6_ext_headers};
    let (a, b) = veth_pair("npx");
    let fragment = |seq: u16| {
        let base = icmp6(seq);
        let mut f = base[..54].to_vec();
        f[14 + 6] = 44; // next header: fragment
                        // Next header ICMPv6, offset 0 with more fragments to come, identification 7.
        f.extend_from_slice(&[58, 0, 0, 1, 0, 0, 0, 7]);
        f.extend_from_slice(&base[54..]);
        let plen = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        f
    };
    let frames: Vec<Vec<u8>> = (1..=2)
        .flat_map(|seq| [icmp6_ext_headers(seq), icmp6(10 + seq), fragment(20 + seq)])
        .collect();
    let dir = temp_dir();
    // (libpcap's `icmp6` also looks behind a fragment header.)
    for (i, (expr, want)) in [
        ("icmp6", 4),
        ("ip6[6] == 0", 2),
        ("ip6[6] == 44", 2),
        ("ip6 and not icmp6", 2),
    ]
    .into_iter()
    .enumerate()
    {
        // The new veth's own neighbour discovery and MLD come and go with the kernel's timing:
        // only the frames written here are compared.
        let ours = same_rows_as_tcpdump(
            &b,
            &dir.path().join(format!("x{i}")),
            expr,
            "filter in the kernel",
            &["ipv6.nxt", "frame.len", "frame.cap_len", "ipv6.src"],
            |r| r[3] == "fd00::1",
            || send_frames(&a, "va", frames.iter().map(Vec::as_slice)),
        );
        assert_eq!(ours.len(), want, "{expr:?}: {ours:?}");
    }
}

/// Tagged frames dropped at tc ingress (a classic-BPF `tc` filter returning TC_ACT_SHOT, as a
/// CNI's policy program would): at that drop point the tag is still in the skb's metadata, and
/// it goes back into the copy there too, so `--drops` with a `vlan` filter sees both netpath's
/// tc copy and the drop. (Further up the stack the kernel clears the tag of frames no VLAN
/// device takes: their drops carry none.)
fn vlan_tags_are_put_back_at_drop_points_too() {
    let (a, b) = veth_pair("npv");
    // `ret #2`: TC_ACT_SHOT in direct-action mode. Goes with the namespace.
    b.exec(
        "tc qdisc add dev vb clsact && tc filter add dev vb ingress bpf da bytecode '1,6 0 0 2'",
    );
    let frames = [echo(Some(100), 1), echo(Some(200), 2)];
    let dir = temp_dir();
    let file = capture_path(&dir, "vlan-drops.pcapng");
    let mut np = NetpathProcess::spawn(&[
        "capture",
        "--drops",
        "-i",
        "vb",
        "--netns",
        &b.name,
        "-w",
        file.to_str().expect("utf-8 path"),
        "vlan and icmp",
    ]);
    np.wait_stderr("listening", Duration::from_secs(10));
    send_frames(&a, "va", frames.iter().map(Vec::as_slice));
    std::thread::sleep(Duration::from_millis(300));
    np.interrupt();
    let (code, _) = np.finish();
    assert_eq!(code, Some(130), "Ctrl-C: 128 + SIGINT");
    let mut rows: Vec<String> = tshark_fields(
        &file,
        &["vlan.id", "icmp.seq", "frame.len", "frame.comment"],
    )
    .into_iter()
    .map(|r| {
        let kind = if r[3].starts_with("drop: TC_INGRESS") {
            "drop"
        } else {
            "tc"
        };
        format!("{}|{}|{}|{kind}", r[0], r[1], r[2])
    })
    .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "100|1|78|drop",
            "100|1|78|tc",
            "200|2|78|drop",
            "200|2|78|tc"
        ],
        "each tagged frame at netpath's tc hook and where the tc filter dropped it"
    );
}

/// A filter the kernel cannot run (`protochain` loops backwards) is said to run in userspace,
/// and still selects exactly what it should there.
fn filters_the_kernel_cannot_run_are_applied_in_userspace() {
    let (a, b) = veth_pair("npp");
    let dir = temp_dir();
    let ours = capture_path(&dir, "protochain.pcapng");
    let mut np = NetpathProcess::spawn(&[
        "capture",
        "-i",
        "vb",
        "--netns",
        &b.name,
        "-w",
        ours.to_str().expect("utf-8 path"),
        "ip6 protochain 58",
    ]);
    np.wait_stderr("runs in userspace only", Duration::from_secs(10));
    np.wait_stderr("filter in userspace", Duration::from_secs(10));
    a.exec("ping -c2 -i0.2 -W1 fd00:1::2 >/dev/null");
    a.exec("ping -c2 -i0.2 -W1 10.1.0.2 >/dev/null");
    std::thread::sleep(Duration::from_millis(300));
    np.interrupt();
    assert_eq!(np.finish().0, Some(130), "Ctrl-C: 128 + SIGINT");
    let rows = tshark_fields(&ours, &["ip.src", "icmpv6.type"]);
    let echoes = rows
        .iter()
        .filter(|r| r[1] == "128" || r[1] == "129")
        .count();
    assert_eq!(echoes, 4, "two ICMPv6 echoes and replies: {rows:?}");
    assert!(
        rows.iter().all(|r| r[0].is_empty() && !r[1].is_empty()),
        "only ICMPv6: {rows:?}"
    );
}
