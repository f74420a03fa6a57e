//! `netpath capture --agents`: packets captured by several nodes' agents (`Capture` of the
//! agent protocol), merged into one pcapng file or one stream of text lines, as a local
//! capture writes them. Interfaces are named `NODE/NETNS/DEVICE` (`NODE/DEVICE` for the node's
//! own namespace), with `node NODE` as their description.
//!
//! Packets are written in timestamp order within a window ([`MERGE_WINDOW`]): each waits that
//! long for packets of other nodes stamped earlier (clocks of different nodes are as good as
//! their synchronisation).
use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result};
use netpath_agent::{
    capture::{capture_from, failure_line, CaptureNews, Reorder},
    client::AgentAddr,
    proto::{self, capture_message::Item},
    server::TlsFiles,
};
use tracer::capture::{CaptureSink, Direction, DropInfo, IfaceSlot, PacketRef};

use super::capture::{CaptureArgs, LiveOutput, OUT_BUFFER};

/// How long a packet waits for earlier-stamped packets of other nodes.
pub const MERGE_WINDOW: Duration = Duration::from_millis(200);
/// Most packets held for the merge; beyond, the earliest go out at once.
const MAX_HELD: usize = 1 << 16;
/// Messages from the agents waiting for the writer; beyond, the agents' streams are held back
/// (they then drop packets, and say how many).
const NEWS_QUEUE: usize = 64;
const TICK: Duration = Duration::from_millis(50);

/// One agent's capture, as the CLI follows it.
struct Node {
    at: AgentAddr,
    started: bool,
    /// Its stream ended, or failed.
    done: bool,
    /// Capture interface id -> where its packets are written.
    ifaces: HashMap<u32, IfaceSlot>,
    packets: u64,
    lost: u64,
}

/// One held packet: the node's index and the packet.
type HeldPacket = (usize, proto::Packet);

/// `capture --agents`: until `-c`, `--duration`, a signal, or every agent's end.
pub async fn run(args: CaptureArgs, mut signals: super::stop::Stop) -> Result<i32> {
    super::check_secs("--duration", args.duration)?;
    let ring_bytes = super::ring_bytes("-B", args.buffer_kib)?;
    let dir = args.tls_dir.as_ref().expect("clap requires --tls-dir");
    let tls = TlsFiles::load(dir, "client").context("TLS material")?;
    let req = proto::CaptureRequest {
        filter: args.expression.join(" "),
        snaplen: args.snaplen(),
        interfaces: args.ifaces.clone(),
        netns: args.netns.clone().unwrap_or_default(),
        drops: args.drops,
        ring_bytes,
    };
    let mut nodes: Vec<Node> = args
        .agents
        .iter()
        .map(|at| Node {
            at: at.clone(),
            started: false,
            done: false,
            ifaces: HashMap::new(),
            packets: 0,
            lost: 0,
        })
        .collect();
    let mut news = capture_from(&args.agents, &tls, req, NEWS_QUEUE);
    // Problems before any agent started: held, so that a capture nobody starts is one line.
    let mut held_problems: Vec<(String, tonic::Status)> = Vec::new();
    let mut sink: Option<CaptureSink<LiveOutput>> = None;
    let mut merge: Reorder<HeldPacket> = Reorder::new(MERGE_WINDOW, MAX_HELD);
    let deadline = super::deadline(args.duration);
    let mut tick = tokio::time::interval(TICK);
    let mut code = 0;
    let mut listening = false;
    let mut finished = false;
    let mut all_gone = false;
    while !finished {
        let sleep = super::until(deadline);
        tokio::select! {
            item = news.recv() => match item {
                None => {
                    // Every agent's stream is over: nothing more can come.
                    all_gone = true;
                    break;
                }
                Some((i, CaptureNews::Message(m))) => match m.item {
                    Some(Item::Started(s)) => {
                        let node = &mut nodes[i];
                        node.started = true;
                        for why in &s.unavailable {
                            eprintln!("netpath: {}: not available: {why}", node.at.node);
                        }
                        let filter_where = match s.filter_runs.as_str() {
                            "" => String::new(),
                            "kernel" => ", filter in the kernel".into(),
                            why => format!(", filter in {why}"),
                        };
                        eprintln!(
                            "netpath: {}: capturing on {} device(s){}, snapshot length {} bytes{filter_where}",
                            node.at.node,
                            s.devices,
                            if args.drops { " and kernel drops" } else { "" },
                            s.snaplen
                        );
                        if sink.is_none() {
                            // Opened once a capture started: a refused one leaves -w FILE as it was.
                            sink = Some(CaptureSink::new(None, args.output(open_output(&args)?)?));
                            for (line, _) in held_problems.drain(..) {
                                eprintln!("netpath: {line}");
                            }
                        }
                    }
                    Some(Item::Packets(batch)) => {
                        let node = &mut nodes[i];
                        for iface in batch.interfaces {
                            node.ifaces.insert(iface.id, slot(&node.at.node, &iface));
                        }
                        let now = std::time::Instant::now();
                        for p in batch.packets {
                            merge.push(p.ts_ns, (i, p), now);
                        }
                    }
                    Some(Item::Lost(l)) => {
                        nodes[i].lost += l.count;
                        if let Some(s) = sink.as_mut() {
                            s.add_lost(l.count);
                        }
                    }
                    None => {}
                },
                Some((i, CaptureNews::Failed { status, started })) => {
                    let node = &mut nodes[i];
                    node.done = true;
                    let line = failure_line(&node.at, &status, started);
                    if sink.is_some() {
                        eprintln!("netpath: {line}");
                    } else {
                        held_problems.push((line, status));
                    }
                }
                Some((i, CaptureNews::Ended)) => {
                    nodes[i].done = true;
                    if !nodes[i].started {
                        held_problems.push((
                            format!("agent {} ended the capture before it started", nodes[i].at.node),
                            tonic::Status::unknown("ended"),
                        ));
                    }
                }
            },
            _ = tick.tick() => {}
            _ = sleep => break,
            signalled = signals.recv() => { code = signalled; break; }
        }
        if sink.is_none() && nodes.iter().all(|n| n.done) {
            return nobody_captures(&held_problems);
        }
        if let Some(s) = sink.as_mut() {
            if !listening {
                // Every agent answered (started or failed): say so once.
                if nodes.iter().all(|n| n.started || n.done) {
                    listening = true;
                    let capturing = nodes.iter().filter(|n| n.started).count();
                    eprintln!(
                        "netpath: listening through {capturing} of {} agent(s); Ctrl-C to stop",
                        nodes.len()
                    );
                }
            }
            finished = write_ready(s, &mut merge, &mut nodes, args.count, false)?;
        }
    }
    drop(news); // the agents' calls end with it
    let Some(mut sink) = sink else {
        // Stopped before any agent started.
        for (line, _) in &held_problems {
            eprintln!("netpath: {line}");
        }
        return Ok(code);
    };
    if !finished {
        write_ready(&mut sink, &mut merge, &mut nodes, args.count, true)?;
    }
    let stats = sink.stats();
    match sink.finish() {
        Err(e) if !e.is_broken_pipe() => return Err(e.into()),
        _ => {}
    }
    eprintln!("{}", stats.summary());
    for n in &nodes {
        eprintln!(
            "{}: {} {}, {} lost",
            n.at.node,
            n.packets,
            if n.packets == 1 { "packet" } else { "packets" },
            n.lost
        );
    }
    if all_gone && code == 0 {
        eprintln!("netpath: every agent's capture has ended (above): no more packets can come");
        return Ok(2);
    }
    Ok(code)
}

fn open_output(args: &CaptureArgs) -> Result<LiveOutput> {
    Ok(match args.write {
        Some(_) => args.open_output()?,
        None => Box::new(std::io::BufWriter::with_capacity(
            OUT_BUFFER,
            args.open_output()?,
        )),
    })
}

/// Where packets of an agent's interface are written: `NODE/NETNS/DEVICE`, the node's own
/// namespace (named after the node) as `NODE/DEVICE`.
fn slot(node: &str, iface: &proto::CaptureInterface) -> IfaceSlot {
    let netns = if iface.netns.is_empty() || iface.netns == node {
        node.to_string()
    } else {
        format!("{node}/{}", iface.netns)
    };
    IfaceSlot::new(node, &netns, &iface.device)
}

/// The packet of a `Packet` message, borrowing its bytes.
fn packet_ref<'a>(p: &'a proto::Packet, drop: Option<&'a DropInfo>) -> PacketRef<'a> {
    PacketRef {
        ts_ns: p.ts_ns,
        dir: match p.direction() {
            proto::PacketDirection::Inbound => Some(Direction::In),
            proto::PacketDirection::Outbound => Some(Direction::Out),
            proto::PacketDirection::Unknown => None,
        },
        data: &p.data,
        orig_len: p.orig_len,
        drop,
    }
}

/// Writes the packets the merge lets go (all of them with `all`), then flushes; true once `-c`
/// is reached or the output's reader went away.
fn write_ready(
    sink: &mut CaptureSink<LiveOutput>,
    merge: &mut Reorder<HeldPacket>,
    nodes: &mut [Node],
    count: Option<u64>,
    all: bool,
) -> Result<bool> {
    let now = std::time::Instant::now();
    let mut wrote = false;
    while let Some((i, p)) = merge.pop(now, all) {
        let node = &mut nodes[i];
        let Some(slot) = node.ifaces.get_mut(&p.interface) else {
            continue; // an undeclared interface: an agent's bug, not worth stopping for
        };
        let drop = (!p.drop_reason.is_empty()).then(|| DropInfo {
            reason: p.drop_reason.clone(),
            location: p.drop_location.clone(),
        });
        match sink.write_accepted(slot, &packet_ref(&p, drop.as_ref())) {
            Err(e) if e.is_broken_pipe() => return Ok(true),
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        node.packets += 1;
        wrote = true;
        if count.is_some_and(|c| sink.stats().captured >= c) {
            flush(sink)?;
            return Ok(true);
        }
    }
    if wrote {
        return flush(sink);
    }
    Ok(false)
}

/// Flushes; true when the output's reader went away.
fn flush(sink: &mut CaptureSink<LiveOutput>) -> Result<bool> {
    match sink.flush() {
        Err(e) if e.is_broken_pipe() => Ok(true),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(false),
    }
}

/// No agent started: one line. A filter every agent refused is said as a local capture says
/// it (exit 2); otherwise every agent's problem on that line.
fn nobody_captures(problems: &[(String, tonic::Status)]) -> Result<i32> {
    let refusals: std::collections::BTreeSet<&str> = problems
        .iter()
        .filter(|(_, s)| s.code() == tonic::Code::InvalidArgument)
        .map(|(_, s)| s.message())
        .collect();
    let all_refused = problems
        .iter()
        .all(|(_, s)| s.code() == tonic::Code::InvalidArgument);
    if let (true, [msg]) = (all_refused, &refusals.into_iter().collect::<Vec<_>>()[..]) {
        eprintln!("netpath: {msg}");
        return Ok(2);
    }
    let lines: Vec<&str> = problems.iter().map(|(l, _)| l.as_str()).collect();
    anyhow::bail!("no agent is capturing: {}", lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_say_node_namespace_and_device() {
        let iface = |netns: &str| proto::CaptureInterface {
            id: 0,
            netns: netns.into(),
            device: "eth0".into(),
        };
        let s = slot("node-a", &iface("pod-1"));
        let name = tracer::capture::packet::interface_name(&s.node, &s.netns, &s.ifname);
        assert_eq!(name, "node-a/pod-1/eth0");
        let s = slot("node-a", &iface("node-a"));
        let name = tracer::capture::packet::interface_name(&s.node, &s.netns, &s.ifname);
        assert_eq!(name, "node-a/eth0");
        assert_eq!(
            tracer::capture::split_interface_name("node-a/pod-1/eth0"),
            ("node-a/pod-1".into(), "eth0".into())
        );
    }

    #[test]
    fn packets_keep_direction_and_drop_reason() {
        let p = proto::Packet {
            interface: 1,
            ts_ns: 42,
            data: vec![1, 2, 3],
            orig_len: 100,
            direction: proto::PacketDirection::Outbound as i32,
            drop_reason: String::new(),
            drop_location: String::new(),
        };
        let r = packet_ref(&p, None);
        assert_eq!(
            (r.ts_ns, r.dir, r.data, r.orig_len),
            (42, Some(Direction::Out), &[1u8, 2, 3][..], 100)
        );
        let d = DropInfo {
            reason: "NO_SOCKET".into(),
            location: "f+0x1".into(),
        };
        let p = proto::Packet { direction: 0, ..p };
        let r = packet_ref(&p, Some(&d));
        assert_eq!(
            (r.dir, r.drop.map(|d| d.reason.as_str())),
            (None, Some("NO_SOCKET"))
        );
    }

    #[test]
    fn a_filter_every_agent_refuses_is_one_line_and_exit_2() {
        let bad =
            tonic::Status::invalid_argument("invalid capture filter 'tcp port': syntax error");
        let problems = vec![
            ("agent a refused".to_string(), bad.clone()),
            ("agent b refused".to_string(), bad),
        ];
        assert_eq!(nobody_captures(&problems).unwrap(), 2);
        let problems = vec![
            (
                "agent a at X unreachable: refused".to_string(),
                tonic::Status::unavailable("x"),
            ),
            (
                "agent b at Y unreachable: refused".to_string(),
                tonic::Status::unavailable("y"),
            ),
        ];
        let e = nobody_captures(&problems).unwrap_err().to_string();
        assert!(
            e.contains("agent a at X") && e.contains("agent b at Y"),
            "{e}"
        );
    }
}
