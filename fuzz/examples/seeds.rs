//! Writes the seed corpus (`corpus/TARGET/`) from the crafted packets the parser tests use,
//! libpcap-compiled filters, and encoded agent messages, so the seeds can be made again:
//! `cargo +nightly run --example seeds` (from fuzz/, with AYA_BUILD_SKIP=1).
use std::{borrow::Cow, fs, path::Path, time::Duration};

use netpath_agent::{proto, wire};
use netpath_core::{
    model::{Endpoint, EndpointKind, Place, Probe, ProbeKind, ProbeOutcome, Reply},
    world::Scope,
};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
        PcapNgWriter,
    },
    DataLink, Endianness,
};
use prost::Message;
use tracer::capture::PacketFilter;
use tracer_common::{fixtures, flags, kind, NeighRaw, RawEvent, RouteRaw};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(name), bytes).expect("seed written");
}

/// The bytes the kernel sends for `raw`: the header and `data_len` bytes of data.
fn record(raw: &RawEvent) -> Vec<u8> {
    // SAFETY: RawEvent is repr(C) plain data; the slice covers only its own bytes.
    let all = unsafe {
        std::slice::from_raw_parts(
            (raw as *const RawEvent).cast::<u8>(),
            std::mem::size_of::<RawEvent>(),
        )
    };
    all[..RawEvent::DATA_OFFSET + raw.data_len as usize].to_vec()
}

fn packet_event(frame: &[u8], kind: u8, from_mac: bool) -> RawEvent {
    let mut raw = RawEvent::ZERO;
    let data = if from_mac { frame } else { &frame[14..] };
    let n = data.len().min(raw.data.len());
    raw.data[..n].copy_from_slice(&data[..n]);
    raw.data_len = n as u16;
    raw.kind = kind;
    raw.hook = 1;
    raw.netns = 4026531840;
    raw.ifindex = 2;
    raw.reason = if kind == tracer_common::kind::DROP {
        5
    } else {
        0
    };
    raw.location = 0xffff_ffff_8100_0000;
    raw.ts_ns = 1_000_000;
    raw.skb_len = frame.len() as u32;
    raw.protocol = u16::from_be_bytes([frame[12], frame[13]]);
    raw.flags = if from_mac { flags::DATA_FROM_MAC } else { 0 };
    raw
}

fn meta_event<T: Copy>(kind: u8, meta: T) -> RawEvent {
    let mut raw = RawEvent::ZERO;
    let n = std::mem::size_of::<T>();
    // SAFETY: T is one of the repr(C) plain-data records the kernel writes into `data`.
    let bytes = unsafe { std::slice::from_raw_parts((&meta as *const T).cast::<u8>(), n) };
    raw.data[..n].copy_from_slice(bytes);
    raw.data_len = n as u16;
    raw.kind = kind;
    raw.netns = 4026531840;
    raw
}

fn event_seeds(frames: &[Vec<u8>]) {
    for (i, f) in frames.iter().enumerate().take(12) {
        let k = if i % 3 == 2 { kind::DROP } else { kind::HOP };
        write(
            "event_record",
            &format!("packet-{i}"),
            &record(&packet_event(f, k, i % 2 == 0)),
        );
    }
    let mut route = RouteRaw {
        family: 4,
        nh_ifindex: 2,
        table: 254,
        ..Default::default()
    };
    route.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
    route.oif_name[..4].copy_from_slice(b"eth0");
    write(
        "event_record",
        "route",
        &record(&meta_event(kind::ROUTE, route)),
    );
    let neigh = NeighRaw {
        family: 6,
        addr: fixtures::B6,
        state: tracer_common::nud::REACHABLE,
        ..Default::default()
    };
    write(
        "event_record",
        "neigh",
        &record(&meta_event(kind::NEIGH, neigh)),
    );
}

fn header_seeds(frames: &[Vec<u8>]) {
    for (i, f) in frames.iter().enumerate() {
        let mut with_mac = vec![1, 0, 0];
        with_mac.extend_from_slice(f);
        write("header_parse", &format!("mac-{i}"), &with_mac);
        if i % 4 == 0 {
            let mut l3 = vec![0, f[12], f[13]];
            l3.extend_from_slice(&f[14..]);
            write("header_parse", &format!("l3-{i}"), &l3);
        }
    }
}

fn capture_seeds(frames: &[Vec<u8>]) {
    for (name, endianness, datalink) in [
        ("pcap-le-ethernet", Endianness::Little, DataLink::ETHERNET),
        ("pcap-be-ethernet", Endianness::Big, DataLink::ETHERNET),
        ("pcap-le-raw", Endianness::Little, DataLink::RAW),
    ] {
        let header = PcapHeader {
            endianness,
            datalink,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
        for (i, f) in frames.iter().take(3).enumerate() {
            let data = if datalink == DataLink::RAW {
                &f[14..]
            } else {
                &f[..]
            };
            w.write_packet(&PcapPacket::new(
                Duration::from_micros(i as u64),
                data.len() as u32,
                data,
            ))
            .expect("pcap record");
        }
        write("capture_file", name, &w.into_writer());
    }
    for (name, endianness) in [
        ("pcapng-le", Endianness::Little),
        ("pcapng-be", Endianness::Big),
    ] {
        let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).expect("pcapng header");
        for link in [DataLink::ETHERNET, DataLink::LINUX_SLL2] {
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: link,
                snaplen: 262144,
                options: vec![],
            })
            .expect("interface block");
        }
        for (i, f) in frames.iter().take(3).enumerate() {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_micros(i as u64),
                original_len: f.len() as u32,
                data: Cow::Borrowed(f),
                options: vec![],
            })
            .expect("packet block");
        }
        write("capture_file", name, &w.into_inner());
    }
}

fn cbpf_seeds() {
    for (i, expr) in [
        "tcp port 80",
        "host 10.0.0.1 and udp",
        "ip6 and icmp6",
        "vlan 42 and host 10.0.0.2",
        "net 10.244.0.0/16 or port 53",
        "tcp[tcpflags] & tcp-syn != 0",
        "ip[6:2] & 0x1fff != 0",
        "ether host 02:00:00:00:00:01",
    ]
    .iter()
    .enumerate()
    {
        let insns = PacketFilter::compile(expr)
            .expect("filter compiles")
            .instructions();
        let mut bytes = vec![i as u8];
        for insn in insns {
            bytes.extend_from_slice(&insn.code.to_le_bytes());
            bytes.extend_from_slice(&[insn.jt, insn.jf]);
            bytes.extend_from_slice(&insn.k.to_le_bytes());
        }
        write("cbpf_translate", &format!("filter-{i}"), &bytes);
    }
}

fn agent_seed(name: &str, which: u8, msg: &impl Message) {
    let mut bytes = vec![which];
    bytes.extend_from_slice(&msg.encode_to_vec());
    write("agent_messages", name, &bytes);
}

fn agent_seeds(events_json: Vec<Vec<u8>>) {
    let scope = Scope {
        places: vec![Place::new("node-1", "pod-a")],
        addrs: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        drops: true,
        routes: true,
        ring_bytes: 1 << 16,
        functions: Some("ip_*".into()),
    };
    agent_seed("open-stream", 0, &wire::scope_to(&scope));
    let probe = Probe {
        from: Place::new("node-1", "pod-a"),
        src: "10.0.0.1".parse().unwrap(),
        dst: "10.0.0.2".parse().unwrap(),
        kind: ProbeKind::Tcp { port: 80 },
        echo_id: 7,
        echo_seq: 1,
        sport: 40000,
        size: 56,
    };
    agent_seed(
        "probe",
        1,
        &proto::ProbeRequest {
            probe_json: wire::to_json(&probe),
            timeout_ms: 1000,
        },
    );
    agent_seed(
        "inspect",
        2,
        &proto::InspectRequest {
            at: Some(wire::place_to(&Place::new("node-1", "pod-a"))),
            question: Some(proto::inspect_request::Question::Mtu(proto::Mtu {
                dev: "eth0".into(),
            })),
        },
    );
    agent_seed(
        "resolve",
        3,
        &proto::ResolveRequest {
            spec: "netns:pod-a".into(),
        },
    );
    agent_seed(
        "events",
        4,
        &proto::StreamMessage {
            item: Some(proto::stream_message::Item::Events(proto::EventBatch {
                events_json,
            })),
        },
    );
    let outcome = ProbeOutcome {
        send_error: None,
        sport: Some(40000),
        reply: Some(Reply::SynAck),
        rtt_us: Some(120),
    };
    agent_seed(
        "probe-reply",
        5,
        &proto::ProbeReply {
            outcome_json: wire::to_json(&outcome),
        },
    );
    let endpoint =
        Endpoint::new("pod-a", EndpointKind::Netns).with_addrs(["10.0.0.2".parse().unwrap()]);
    agent_seed(
        "resolve-reply",
        6,
        &proto::ResolveReply {
            endpoint_json: wire::to_json(&endpoint),
            found_by: String::new(),
        },
    );
}

struct FixedNamer;

impl tracer::node::decode::Namer for FixedNamer {
    fn netns_name(&mut self, inode: u32) -> String {
        format!("ns{inode}")
    }
    fn ifname(&mut self, _: u32, ifindex: u32) -> String {
        format!("if{ifindex}")
    }
    fn drop_reason(&self, reason: u32) -> String {
        format!("reason{reason}")
    }
    fn symbol(&self, addr: u64) -> String {
        format!("fn+{addr:#x}")
    }
    fn boot_offset_ns(&self) -> u64 {
        0
    }
}

fn main() {
    let frames = fixtures::filter_frames();
    event_seeds(&frames);
    header_seeds(&frames);
    capture_seeds(&frames);
    cbpf_seeds();
    let events = frames
        .iter()
        .take(4)
        .map(|f| {
            let raw = packet_event(f, kind::HOP, true);
            wire::to_json(&tracer::node::decode::decode(
                &raw,
                "node-1",
                0,
                &mut FixedNamer,
            ))
        })
        .collect();
    agent_seeds(events);
}
