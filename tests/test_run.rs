//! The tc programs run by the kernel on crafted packets (BPF_PROG_TEST_RUN): every
//! encapsulation this kernel has no device for (Geneve, GRE, IPIP, sit, ip4ip6, ip6ip6) and
//! the ones it has (VXLAN on 4789 and 8472), IPv6 extension headers, and truncated packets. For
//! each, the event the program writes to the ring buffer must carry the packet's bytes and
//! decode to exactly what the userspace decoder makes of the same bytes (outer, inner, tunnel,
//! pkt_id), and the in-kernel filter must select on inner and outer addresses.
use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use integration_tests::{case, Requires};
use netpath_core::model::{Event, Family};
use tracer::node::{
    btf::KernelBtf,
    decode::{self as event, Namer},
};
use tracer_common::{
    fixtures::{geneve, gre, icmp6, icmp6_ext_headers, ip_in, tcp6_ip, udp4, vxlan},
    flags, parse, AddrPrefix, Config, FilterConfig, KernelOffsets, RawEvent, SNAP_LEN,
};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            tc_programs_decode_crafted_packets_like_userspace,
            Requires::Root
        ),
        case!(
            the_kernel_filter_selects_on_inner_and_outer_addresses,
            Requires::Root
        ),
        case!(
            the_early_filter_decides_like_the_full_parser,
            Requires::Root
        ),
        case!(snap_len_cuts_the_copy_not_the_filter, Requires::Root),
        case!(the_capture_filter_runs_in_the_kernel, Requires::Root),
        case!(
            tc_programs_write_pcapng_records_for_devices_with_an_interface_id,
            Requires::Root,
            Requires::Tool("tshark")
        ),
        case!(tc_program_cost_per_packet, Requires::Root).opt_in("a benchmark, not a check"),
    ])
}

struct Names;
impl Namer for Names {
    fn netns_name(&mut self, inode: u32) -> String {
        format!("netns:{inode}")
    }
    fn ifname(&mut self, _: u32, ifindex: u32) -> String {
        format!("if{ifindex}")
    }
    fn drop_reason(&self, r: u32) -> String {
        format!("reason#{r}")
    }
    fn symbol(&self, a: u64) -> String {
        format!("0x{a:x}")
    }
    fn boot_offset_ns(&self) -> u64 {
        0
    }
}

/// The kernel programs, loaded, with the running kernel's offsets and `filter`.
fn load(filter: FilterConfig) -> (Ebpf, RingBuf<MapData>) {
    load_with_ring(filter, 4 << 20)
}

/// [`load`] with a ring buffer of `ring_bytes`.
fn load_with_ring(filter: FilterConfig, ring_bytes: u32) -> (Ebpf, RingBuf<MapData>) {
    let obj = tracer::node::kernel::kernel_object();
    assert!(!obj.is_empty(), "netpath was built without kernel programs");
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", ring_bytes)
        .load(obj)
        .expect("load object");
    set_config(&mut ebpf, filter, 0);
    let prog: &mut SchedClassifier = ebpf
        .program_mut("netpath_tc_in")
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().expect("verifier accepts tc_ingress");
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").unwrap()).unwrap();
    (ebpf, ring)
}

/// Writes `CONFIG`: the running kernel's offsets (read from BTF once), `filter` and `snap_len`.
fn set_config(ebpf: &mut Ebpf, filter: FilterConfig, snap_len: u32) {
    static OFFSETS: std::sync::OnceLock<KernelOffsets> = std::sync::OnceLock::new();
    let offsets = *OFFSETS.get_or_init(|| {
        KernelBtf::load()
            .and_then(|b| b.kernel_offsets())
            .expect("offsets")
    });
    let config = Config {
        offsets,
        filter,
        wakeup_bytes: 4096,
        snap_len,
        ..Config::default()
    };
    let mut cfg: Array<&mut MapData, Config> =
        Array::try_from(ebpf.map_mut("CONFIG").unwrap()).unwrap();
    cfg.set(0, config, 0).unwrap();
}

/// Runs tc_ingress on `frame` and returns what it wrote to the ring buffer (at most one).
fn run(ebpf: &Ebpf, ring: &mut RingBuf<MapData>, frame: &[u8]) -> Option<RawEvent> {
    run_bytes(ebpf, ring, frame).map(|b| event::raw_from_bytes(&b).expect("record size"))
}

/// Runs tc_ingress on `frame` and returns the record it wrote to the ring buffer, as bytes.
fn run_bytes(ebpf: &Ebpf, ring: &mut RingBuf<MapData>, frame: &[u8]) -> Option<Vec<u8>> {
    let prog: &SchedClassifier = ebpf.program("netpath_tc_in").unwrap().try_into().unwrap();
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes: {e:?}", frame.len()));
    assert_eq!(
        res.return_value as i32, -1,
        "tc programs return TC_ACT_UNSPEC (next)"
    );
    let raw = ring.next().map(|item| item.to_vec());
    assert!(ring.next().is_none(), "one event per packet");
    raw
}

/// The same bytes as if they had come from the kernel unchanged.
fn userspace_raw(frame: &[u8], like: &RawEvent) -> RawEvent {
    let mut raw = *like;
    let n = frame.len().min(SNAP_LEN);
    raw.data = [0; SNAP_LEN];
    raw.data[..n].copy_from_slice(&frame[..n]);
    raw.data_len = n as u16;
    raw.flags = tracer_common::flags::DATA_FROM_MAC;
    raw
}

/// What userspace makes of the same bytes, as if they had come from the kernel unchanged.
fn userspace_view(frame: &[u8], like: &RawEvent) -> Event {
    event::decode(&userspace_raw(frame, like), "n", 0, &mut Names)
}

fn prefix(addr: &[u8], family: u8, len: u8) -> AddrPrefix {
    let mut a = [0u8; 16];
    a[..addr.len()].copy_from_slice(addr);
    AddrPrefix::new(family, a, len)
}

fn tc_programs_decode_crafted_packets_like_userspace() {
    let inner4 = udp4([10, 9, 9, 1], [10, 9, 9, 2], 1111, 2222, b"inner")[14..].to_vec();
    let inner6 = tcp6_ip();
    let mut big = udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[0xab; 600]);
    big.truncate(400);
    let vx = vxlan(4789, 42, &icmp6(1));
    // (name, frame, tunnel, inner family, innermost protocol)
    let cases: Vec<(&str, Vec<u8>, &str, u8, &str)> = vec![
        ("vxlan 4789", vx.clone(), "vxlan", 6, "icmp6"),
        ("vxlan 8472", vxlan(8472, 7, &icmp6(2)), "vxlan", 6, "icmp6"),
        ("geneve", geneve(0x102, &icmp6(3)), "geneve", 6, "icmp6"),
        ("gre key", gre(77, &inner4), "gre", 4, "udp"),
        (
            "ipip",
            ip_in(false, parse::IPPROTO_IPIP, &inner4),
            "ipip",
            4,
            "udp",
        ),
        (
            "sit",
            ip_in(false, parse::IPPROTO_IPV6, &inner6),
            "sit",
            6,
            "tcp",
        ),
        (
            "ip4ip6",
            ip_in(true, parse::IPPROTO_IPIP, &inner4),
            "ip4ip6",
            4,
            "udp",
        ),
        (
            "ip6ip6",
            ip_in(true, parse::IPPROTO_IPV6, &inner6),
            "ip6ip6",
            6,
            "tcp",
        ),
        ("ipv6 ext headers", icmp6_ext_headers(9), "", 6, "icmp6"),
        ("longer than the snap length", big, "", 4, "udp"),
        // Truncated: the VXLAN frame cut inside the inner IPv6 header, a UDP header cut inside
        // its ports, an IPv6 extension chain cut inside the destination options (the kernel
        // refuses to run a test packet whose IPv4 header itself is short: EINVAL). The parser
        // reads what is there and nothing else.
        (
            "truncated inner",
            vx[..14 + 20 + 8 + 8 + 14 + 20].to_vec(),
            "vxlan",
            0,
            "udp",
        ),
        (
            "truncated udp header",
            udp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"")[..14 + 20 + 3].to_vec(),
            "",
            4,
            "udp",
        ),
        (
            "truncated ipv6 extension chain",
            icmp6_ext_headers(9)[..14 + 40 + 12].to_vec(),
            "",
            6,
            "icmp6",
        ),
    ];
    let (ebpf, mut ring) = load(FilterConfig::default());
    for (name, frame, tunnel, family, proto) in &cases {
        let raw = run(&ebpf, &mut ring, frame).unwrap_or_else(|| panic!("{name}: no event"));
        let n = frame.len().min(SNAP_LEN);
        assert_eq!(raw.data_len as usize, n, "{name}: copied length");
        assert_eq!(&raw.data[..n], &frame[..n], "{name}: copied bytes");
        assert_eq!(raw.skb_len as usize, frame.len(), "{name}: skb length");
        let kernel = event::decode(&raw, "n", 0, &mut Names);
        let user = userspace_view(frame, &raw);
        assert_eq!(
            event::parse_raw(&raw, 0),
            event::parse_raw(&userspace_raw(frame, &raw), 0),
            "{name}: outer/inner/tunnel fields"
        );
        let (kp, up) = (kernel.packet.unwrap(), user.packet.unwrap());
        assert_eq!(kp.pkt_id, up.pkt_id, "{name}: pkt_id");
        assert_eq!(kp.tunnel, up.tunnel, "{name}: tunnel");
        let got_tunnel = kp.tunnel.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
        assert_eq!(got_tunnel, *tunnel, "{name}: tunnel type");
        if *family != 0 {
            assert_eq!(
                kernel.flow.family,
                Family::from_number(*family),
                "{name}: innermost family"
            );
            assert_eq!(
                kernel.flow.proto.as_str(),
                *proto,
                "{name}: innermost protocol"
            );
        }
    }
    // Spot checks of what the kernel's copy says.
    let raw = run(&ebpf, &mut ring, &geneve(0x102, &icmp6(3))).unwrap();
    let ev = event::decode(&raw, "n", 0, &mut Names);
    let t = ev.packet.unwrap().tunnel.unwrap();
    assert_eq!(
        (t.vni, t.outer_dst.to_string()),
        (Some(0x102), "198.18.0.2".into())
    );
    assert_eq!(ev.flow.dst, Some("fd00::2".parse().unwrap()));
    let raw = run(&ebpf, &mut ring, &gre(77, &inner4)).unwrap();
    assert_eq!(
        event::decode(&raw, "n", 0, &mut Names)
            .packet
            .unwrap()
            .tunnel
            .unwrap()
            .vni,
        Some(77)
    );
}

fn the_kernel_filter_selects_on_inner_and_outer_addresses() {
    let vx = vxlan(4789, 42, &icmp6(1));
    let inner4 = udp4([10, 9, 9, 1], [10, 9, 9, 2], 1111, 2222, b"inner")[14..].to_vec();
    let ipip = ip_in(false, parse::IPPROTO_IPIP, &inner4);
    for (prefix, vx_hit, ipip_hit) in [
        (prefix(&[0xfd], 6, 8), true, false), // inner IPv6 of the VXLAN frame
        (prefix(&[198, 18, 0, 2], 4, 32), true, true), // outer destination of both
        (prefix(&[10, 9, 9, 1], 4, 32), false, true), // inner source of the IPIP packet
        (prefix(&[10, 244, 0, 0], 4, 16), false, false), // nobody
    ] {
        let mut addrs = [AddrPrefix::default(); tracer_common::MAX_FILTER_ADDRS];
        addrs[0] = prefix;
        let filter = FilterConfig {
            n_addrs: 1,
            addrs,
            ..FilterConfig::default()
        };
        let (ebpf, mut ring) = load(filter);
        assert_eq!(
            run(&ebpf, &mut ring, &vx).is_some(),
            vx_hit,
            "vxlan vs {prefix:?}"
        );
        assert_eq!(
            run(&ebpf, &mut ring, &ipip).is_some(),
            ipip_hit,
            "ipip vs {prefix:?}"
        );
    }
    // Port (inner) and family (inner) filters on the same parser.
    let filter = FilterConfig {
        port: 2222,
        ..FilterConfig::default()
    };
    let (ebpf, mut ring) = load(filter);
    assert!(run(&ebpf, &mut ring, &ipip).is_some(), "inner port");
    assert!(run(&ebpf, &mut ring, &vx).is_none());
    let filter = FilterConfig {
        family: 6,
        ..FilterConfig::default()
    };
    let (ebpf, mut ring) = load(filter);
    assert!(
        run(&ebpf, &mut ring, &vx).is_some(),
        "inner family 6 in an IPv4 outer"
    );
    assert!(run(&ebpf, &mut ring, &ipip).is_none());
}

/// The kernel's early filter (headers read in place, before any copy) never disagrees with
/// the full parser: over plain frames, every encapsulation, VLAN tags, extension headers,
/// fragments and truncations, with filters on addresses, family, protocol and port, the
/// program emits an event exactly when userspace's parser and filter say the packet matches.
fn the_early_filter_decides_like_the_full_parser() {
    let (mut ebpf, mut ring) = load(FilterConfig::default());
    let frames = tracer_common::fixtures::filter_frames();
    let (mut hits, mut misses) = (0, 0);
    for filter in tracer_common::fixtures::filter_configs() {
        set_config(&mut ebpf, filter, 0);
        for f in &frames {
            // Whole, cut inside the headers, and cut right after them.
            let mut lens = vec![f.len(), 15, 20, 34, 38, 42, 54, 58, 62];
            lens.retain(|&n| n <= f.len());
            for n in lens {
                let buf = &f[..n];
                let want =
                    parse::filter_matches(&filter, &parse::parse(buf, true, 0, filter.vxlan_port));
                let prog: &SchedClassifier =
                    ebpf.program("netpath_tc_in").unwrap().try_into().unwrap();
                let opts = TestRunOptions {
                    data_in: Some(buf),
                    ..TestRunOptions::default()
                };
                if prog.test_run(opts).is_err() {
                    continue; // the kernel refuses frames too short for their ethertype
                }
                let got = ring.next().is_some();
                assert!(ring.next().is_none(), "one event per packet");
                assert_eq!(got, want, "{filter:?} on {buf:?}");
                if want {
                    hits += 1;
                } else {
                    misses += 1;
                }
            }
        }
    }
    assert!(hits > 100 && misses > 100, "{hits} hits, {misses} misses");
}

/// `Config::snap_len` (`capture -s`) cuts what goes to the ring, not what the filter sees: a
/// VXLAN frame matched on its inner address (past the snap length) still gets through, with
/// only the first snap_len bytes.
fn snap_len_cuts_the_copy_not_the_filter() {
    let vx = vxlan(4789, 42, &icmp6(1));
    let plain = udp4([10, 9, 0, 1], [10, 9, 0, 2], 40000, 9999, &[0x5a; 200]);
    let (mut ebpf, mut ring) = load(FilterConfig::default());
    let mut addrs = [AddrPrefix::default(); tracer_common::MAX_FILTER_ADDRS];
    addrs[0] = prefix(&[0xfd], 6, 8);
    addrs[1] = prefix(&[10, 9, 0, 1], 4, 32);
    for (filter, snap, want) in [
        (FilterConfig::default(), 0u32, SNAP_LEN),
        (FilterConfig::default(), 64, 64),
        (
            FilterConfig {
                n_addrs: 2,
                addrs,
                ..FilterConfig::default()
            },
            64,
            64,
        ),
        (FilterConfig::default(), 1000, SNAP_LEN),
    ] {
        set_config(&mut ebpf, filter, snap);
        for frame in [&vx, &plain] {
            let ev = run(&ebpf, &mut ring, frame).expect("matches");
            let n = want.min(frame.len());
            assert_eq!(ev.data_len as usize, n, "snap {snap}, {filter:?}");
            assert_eq!(&ev.data[..n], &frame[..n]);
            assert_eq!(ev.skb_len as usize, frame.len());
        }
    }
}

fn the_capture_filter_runs_in_the_kernel() {
    let (mut ebpf, mut ring) = load(FilterConfig::default());
    // (libpcap's tcp[] is IPv4 only: the SYN bit of an IPv6 TCP header is ip6[40 + 13].)
    let expr = "udp dst port 9999 or (ip6 and tcp and ip6[53] & 2 != 0)";
    let filter = tracer::capture::PacketFilter::compile(expr).unwrap();
    let hit = udp4([10, 9, 0, 1], [10, 9, 0, 2], 40000, 9999, &[0x5a; 300]);
    let miss = udp4([10, 9, 0, 1], [10, 9, 0, 2], 9999, 40000, &[0x5a; 300]);
    // Off: every packet goes out unmarked, for userspace to filter.
    set_config(&mut ebpf, FilterConfig::default(), 64);
    for frame in [&hit, &miss] {
        let ev = run(&ebpf, &mut ring, frame).expect("no kernel filter: every packet");
        assert_eq!(ev.flags & flags::PCAP_MATCHED, 0);
    }
    // On: the kernel decides on the whole packet, as libpcap does, and marks what it keeps.
    enable_capture_filter(&mut ebpf, &filter);
    let syn6 = tcp6_eth(0x02);
    let ack6 = tcp6_eth(0x10);
    let mut kept = 0;
    for frame in [&hit, &miss, &icmp6(3), &syn6, &ack6] {
        let ev = run(&ebpf, &mut ring, frame);
        assert_eq!(
            ev.is_some(),
            filter.matches(frame, frame.len() as u32),
            "{frame:02x?}"
        );
        if let Some(ev) = ev {
            kept += 1;
            assert_eq!(ev.flags & flags::PCAP_MATCHED, flags::PCAP_MATCHED);
            assert_eq!(ev.flags & flags::DATA_FROM_MAC, flags::DATA_FROM_MAC);
            assert_eq!(
                &ev.data[..ev.data_len as usize],
                &frame[..64],
                "snap length 64"
            );
            assert_eq!(ev.skb_len as usize, frame.len());
        }
    }
    assert_eq!(kept, 2, "the UDP packet to 9999 and the IPv6 SYN");
}

fn tc_programs_write_pcapng_records_for_devices_with_an_interface_id() {
    use std::os::unix::fs::MetadataExt;
    use tracer::capture::{read_capture_file, Direction, PcapngWriter};
    use tracer_common::pcapng_record::{self as rec, Layout};
    let (mut ebpf, mut ring) = load(FilterConfig::default());
    set_config(&mut ebpf, FilterConfig::default(), 200);
    let frames: Vec<Vec<u8>> = [0usize, 1, 2, 3, 4, 5, 300]
        .iter()
        .map(|n| udp4([10, 9, 0, 1], [10, 9, 0, 2], 40000, 9999, &vec![0x5a; *n]))
        .collect();
    let netns = enable_pcapng_records(&mut ebpf, &mut ring, &frames[0]);
    assert_eq!(
        netns as u64,
        std::fs::metadata("/proc/self/ns/net").unwrap().ino()
    );
    // The reader's view: a pcapng section with interface ids 0-3, then the records with
    // (made-up) ring headers between them, as they lie in the ring.
    let mut w = PcapngWriter::new(Vec::new(), 200).unwrap();
    for i in 0..4 {
        assert_eq!(w.interface_id("n", &format!("ns/if{i}")).unwrap(), i);
    }
    for frame in &frames {
        let payload = run_bytes(&ebpf, &mut ring, frame).expect("a record");
        let caplen = frame.len().min(200);
        let layout = Layout::new(caplen);
        assert!(
            rec::is_record(&payload),
            "{} bytes: {payload:02x?}",
            frame.len()
        );
        assert_eq!(payload.len(), layout.payload_len);
        let word = |i: usize| u32::from_le_bytes(payload[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(
            (word(3), word(6), word(7)),
            (3, caplen as u32, frame.len() as u32)
        );
        let ts = (word(4) as u64) << 32 | word(5) as u64;
        assert!(ts > PCAPNG_BOOT_OFFSET_NS, "monotonic time plus the offset");
        let data = &payload[rec::DATA_OFFSET..];
        assert_eq!(&data[..caplen], &frame[..caplen]);
        assert!(
            data[caplen..layout.padded].iter().all(|b| *b == 0),
            "zero padding"
        );
        assert_eq!(&payload[payload.len() - 8..], &rec::FILLER_OPEN);
        let mut run = (payload.len() as u32).to_le_bytes().to_vec();
        run.extend_from_slice(&[0xee; 4]);
        run.extend_from_slice(&payload);
        w.write_kernel_records(&run).unwrap();
    }
    // A block of netpath's own closes the filler the last record opened.
    w.write_block(0, 5, &frames[0], frames[0].len() as u32, None, None)
        .unwrap();
    let bytes = w.into_inner();
    let back: Vec<_> = read_capture_file(&bytes[..])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back.len(), frames.len() + 1);
    for (pkt, frame) in back.iter().zip(&frames) {
        let caplen = frame.len().min(200);
        assert_eq!(&pkt.data[..], &frame[..caplen]);
        assert_eq!(pkt.orig_len as usize, frame.len());
        assert_eq!(pkt.dir, Some(Direction::In));
        assert_eq!(pkt.ifname, "if3");
    }
    assert_eq!(back[frames.len()].ts_ns, 5);
    // tshark reads the same stream.
    if let Ok(mut tshark) = std::process::Command::new("tshark")
        .args([
            "-r",
            "-",
            "-T",
            "fields",
            "-e",
            "frame.len",
            "-e",
            "frame.interface_name",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        use std::io::Write;
        tshark.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = tshark.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lens: Vec<&str> = text
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        let want: Vec<String> = frames
            .iter()
            .chain([&frames[0]])
            .map(|f| f.len().to_string())
            .collect();
        assert_eq!(lens, want, "{text}");
        assert!(
            text.lines()
                .take(frames.len())
                .all(|l| l.ends_with("ns/if3")),
            "{text}"
        );
    }
    // With a capture filter, only the packets it accepted go out as records.
    enable_capture_filter(
        &mut ebpf,
        &tracer::capture::PacketFilter::compile("udp dst port 9999").unwrap(),
    );
    assert!(rec::is_record(
        &run_bytes(&ebpf, &mut ring, &frames[1]).unwrap()
    ));
    let other = udp4([10, 9, 0, 1], [10, 9, 0, 2], 40000, 53, &[1; 8]);
    assert!(run_bytes(&ebpf, &mut ring, &other).is_none());
}

const PCAPNG_BOOT_OFFSET_NS: u64 = 1_700_000_000_000_000_000;

/// Turns pcapng records on (with [`PCAPNG_BOOT_OFFSET_NS`]) and gives the test run's device
/// interface id 3, after checking that without an id `frame` makes the usual event; returns
/// the device's namespace inode.
fn enable_pcapng_records(ebpf: &mut Ebpf, ring: &mut RingBuf<MapData>, frame: &[u8]) -> u32 {
    let mut cfg = Array::<_, Config>::try_from(ebpf.map_mut("CONFIG").unwrap()).unwrap();
    let on = Config {
        pcapng_direct: 1,
        boot_offset_ns: PCAPNG_BOOT_OFFSET_NS,
        ..cfg.get(&0, 0).unwrap()
    };
    cfg.set(0, on, 0).unwrap();
    let ev = run(ebpf, ring, frame).expect("an event");
    let mut ids =
        aya::maps::HashMap::<_, u64, u32>::try_from(ebpf.map_mut("PCAP_IFACES").unwrap()).unwrap();
    ids.insert(
        tracer_common::pcapng_record::iface_key(ev.netns, ev.ifindex),
        3,
        0,
    )
    .unwrap();
    ev.netns
}

/// Installs `filter` as the kernel's capture filter and turns it on in `CONFIG`.
fn enable_capture_filter(ebpf: &mut Ebpf, filter: &tracer::capture::PacketFilter) {
    tracer::capture::cbpf::install_in_kernel(ebpf, &filter.instructions())
        .expect("the translated filter loads");
    let mut cfg = Array::<_, Config>::try_from(ebpf.map_mut("CONFIG").unwrap()).unwrap();
    let on = Config {
        pcap_filter: 1,
        ..cfg.get(&0, 0).unwrap()
    };
    cfg.set(0, on, 0).unwrap();
}

/// An Ethernet frame with an IPv6 TCP segment carrying `flags`.
fn tcp6_eth(flags: u8) -> Vec<u8> {
    let mut tcp = tcp6_ip();
    // tcp6_ip starts at the IPv6 header (40 bytes); TCP flags are byte 13 of the TCP header.
    tcp[40 + 13] = flags;
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    frame.extend_from_slice(&tcp);
    frame.extend_from_slice(&[0; 32]);
    frame
}

/// Not a check: the kernel's own timing of tc_ingress (BPF_PROG_TEST_RUN with repeat) on a
/// plain UDP frame and a VXLAN frame, with a filter that matches nothing and with none. Run
/// with `cargo test --test test_run -- --ignored --nocapture`.
fn tc_program_cost_per_packet() {
    let frames = [
        (
            "plain UDP",
            udp4([10, 9, 0, 1], [10, 9, 0, 2], 40000, 9999, &[0x5a; 64]),
        ),
        ("VXLAN", vxlan(4789, 42, &icmp6(1))),
    ];
    let mut addrs = [AddrPrefix::default(); tracer_common::MAX_FILTER_ADDRS];
    addrs[0] = prefix(&[10, 244, 0, 0], 4, 16);
    let quiet = FilterConfig {
        n_addrs: 1,
        addrs,
        ..FilterConfig::default()
    };
    for (name, filter, capture, pcapng) in [
        ("filter matching nothing", quiet, None, false),
        ("no filter", FilterConfig::default(), None, false),
        (
            "capture filter 'udp port 53' (kernel)",
            FilterConfig::default(),
            Some("udp port 53"),
            false,
        ),
        (
            "capture filter 'udp port 9999' (kernel)",
            FilterConfig::default(),
            Some("udp port 9999"),
            false,
        ),
        (
            "capture filter 'udp port 9999' (kernel), pcapng records",
            FilterConfig::default(),
            Some("udp port 9999"),
            true,
        ),
    ] {
        // Room for every record of a timed run (200 000 of at most 312 bytes): a full ring
        // would time failed outputs.
        let (mut ebpf, mut ring) = load_with_ring(filter, 64 << 20);
        if let Some(expr) = capture {
            let f = tracer::capture::PacketFilter::compile(expr).unwrap();
            enable_capture_filter(&mut ebpf, &f);
        }
        if pcapng {
            enable_pcapng_records(&mut ebpf, &mut ring, &frames[0].1);
        }
        let prog: &SchedClassifier = ebpf.program("netpath_tc_in").unwrap().try_into().unwrap();
        for (frame_name, frame) in &frames {
            let mut best = u128::MAX;
            for _ in 0..5 {
                let res = prog
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        repeat: 200_000,
                        ..TestRunOptions::default()
                    })
                    .expect("test run");
                best = best.min(res.duration.as_nanos());
                while ring.next().is_some() {}
            }
            eprintln!(
                "tc_ingress, {frame_name}, {name}: {best} ns per packet (best of 5 x 200000)"
            );
        }
    }
}
