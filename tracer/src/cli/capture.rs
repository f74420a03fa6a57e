//! `netpath capture`: tcpdump-style packet capture from the kernel programs, written as pcapng
//! or printed as tcpdump-like lines.
use std::{
    cell::RefCell,
    fs::File,
    io::{BufWriter, IsTerminal, Write},
    rc::Rc,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Args;
use tracer::{
    capture::{
        read_capture_file, CaptureOutput, CaptureSink, CaptureStats, CapturedPacket, Direction,
        DropInfo, KernelHint, PacketFilter, PcapngWriter, TextOptions, FILTER_HELP,
    },
    event::{self, Event, EventKind},
    netns,
    tracer::{DeviceSelector, NodeTracer, StreamItem, TracerSpec},
};
use tracer_common::{AddrPrefix, FilterConfig, MAX_FILTER_ADDRS, SNAP_LEN};

/// Bytes of each packet the kernel programs copy; `-s` cannot go beyond it.
const KERNEL_SNAPLEN: u32 = SNAP_LEN as u32;
const IPPROTO_UDP: u8 = 17;

fn after_help() -> String {
    format!(
        "{FILTER_HELP}

The kernel copies at most the first {KERNEL_SNAPLEN} bytes of each packet, so -s is capped at \
{KERNEL_SNAPLEN} (-s 0 means {KERNEL_SNAPLEN}); the original length of each packet is kept.

Examples:
  netpath capture -i any icmp6                       ICMPv6 on every device in every namespace
  netpath capture -i eth0 --netns pod-a -w a.pcapng 'tcp port 80'
  netpath capture -i 'veth*' -w - host 10.244.1.2 | tshark -r -
  netpath capture --drops -i any -c 10 host 10.1.0.1  also packets the kernel dropped, with why
  netpath capture -r a.pcapng -e -v tcp              print a capture file (no root needed)"
    )
}

#[derive(Debug, Args)]
#[command(after_help = after_help())]
pub struct CaptureArgs {
    /// Device to capture on (repeatable; globs like 'veth*'); `any` = every device in every
    /// namespace (or in --netns), including new ones.
    #[arg(
        short = 'i',
        long = "interface",
        value_name = "IFACE",
        default_value = "any"
    )]
    pub ifaces: Vec<String>,
    /// Network namespace (`ip netns` name) of the -i devices [default: this one].
    #[arg(long, value_name = "NS", conflicts_with = "pod")]
    pub netns: Option<String>,
    /// Pod (lab name like `pod-a` or `node-1/pod-b`, `netns:NAME`, or an address a namespace
    /// holds) whose namespace to capture in. The lab state comes from $NETPATH_STATE.
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// Write packets to FILE as pcapng instead of printing them (`-` = stdout).
    #[arg(short = 'w', value_name = "FILE")]
    pub write: Option<String>,
    /// Read packets from a pcapng/pcap FILE and print them (no capture, no root needed).
    #[arg(short = 'r', value_name = "FILE", conflicts_with_all = ["netns", "pod", "drops", "duration"])]
    pub read: Option<String>,
    /// Stop after N packets.
    #[arg(short = 'c', value_name = "N")]
    pub count: Option<u64>,
    /// Bytes to keep of each packet; capped at the kernel's 256-byte copy (0 = 256).
    #[arg(short = 's', value_name = "SNAPLEN", default_value_t = KERNEL_SNAPLEN)]
    pub snaplen: u32,
    /// Accepted for tcpdump habits: output is always numeric.
    #[arg(short = 'n')]
    pub numeric: bool,
    /// Print link-level headers (MAC addresses, ethertype).
    #[arg(short = 'e')]
    pub link_headers: bool,
    /// Print IP header details (TTL/hop limit, id, flags, lengths).
    #[arg(short = 'v')]
    pub verbose: bool,
    /// Also capture packets at kernel drop points (kfree_skb), with the drop reason.
    #[arg(long)]
    pub drops: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Kernel ring buffer size in KiB (power of two, at least 4), like tcpdump -B.
    #[arg(
        short = 'B',
        long = "buffer-size",
        value_name = "KIB",
        default_value_t = 4096
    )]
    pub buffer_kib: u32,
    /// pcap-filter expression (tcpdump syntax); several words are joined with spaces.
    #[arg(value_name = "FILTER", trailing_var_arg = true)]
    pub expression: Vec<String>,
}

/// A writer whose `flush` is deferred: the sink flushes after every packet (for live pipes),
/// which would cost one syscall per packet; the event loop flushes on a timer instead.
#[derive(Clone)]
struct Deferred(Rc<RefCell<BufWriter<Box<dyn Write>>>>);

impl Deferred {
    fn new(out: Box<dyn Write>) -> Self {
        Deferred(Rc::new(RefCell::new(BufWriter::with_capacity(
            1 << 16,
            out,
        ))))
    }
    fn flush_now(&self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

impl Write for Deferred {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Coarse in-kernel copy of the filter. It must admit a superset of what the expression
/// accepts: the kernel matches hosts as "any of", family on outer or inner headers, and the
/// protocol on the innermost header, so UDP is not pushed down (a VXLAN packet is UDP to
/// libpcap but its innermost protocol is not).
fn kernel_filter(hint: Option<&KernelHint>) -> FilterConfig {
    let mut cfg = FilterConfig::default();
    let Some(hint) = hint else {
        return cfg;
    };
    cfg.family = hint.family.unwrap_or(0);
    cfg.proto = hint.proto.filter(|p| *p != IPPROTO_UDP).unwrap_or(0);
    cfg.port = hint.port.unwrap_or(0);
    if hint.hosts.len() <= MAX_FILTER_ADDRS {
        for (slot, h) in cfg.addrs.iter_mut().zip(&hint.hosts) {
            let (family, addr) = match h.addr {
                std::net::IpAddr::V4(a) => {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&a.octets());
                    (4, b)
                }
                std::net::IpAddr::V6(a) => (6, a.octets()),
            };
            *slot = AddrPrefix {
                addr,
                family,
                prefix_len: h.prefix,
                _pad: [0; 2],
            };
        }
        cfg.n_addrs = hint.hosts.len() as u8;
    }
    cfg
}

/// The capture unit for a tracer event; `None` for events that carry no packet.
fn to_packet(ev: Event, snaplen: u32) -> Option<CapturedPacket> {
    let (dir, drop) = match ev.kind {
        EventKind::Hop => (
            match ev.dir {
                event::Direction::Ingress => Some(Direction::In),
                event::Direction::Egress => Some(Direction::Out),
                event::Direction::None => None,
            },
            None,
        ),
        EventKind::Drop => (
            None,
            Some(DropInfo {
                reason: ev.reason.unwrap_or_default(),
                location: ev.location.unwrap_or_default(),
            }),
        ),
        _ => return None,
    };
    // Drop points often have no MAC header: the tracer then prepends a zeroed one that the
    // skb length does not count.
    let synthetic_mac = drop.is_some() && ev.data.get(..12).is_some_and(|m| m == [0; 12]);
    let orig_len = ev.len + if synthetic_mac { 14 } else { 0 };
    let orig_len = orig_len.max(ev.data.len() as u32);
    let mut data = ev.data;
    data.truncate(snaplen as usize);
    Some(CapturedPacket {
        ts_ns: ev.ts_ns,
        netns: if ev.netns == "root" {
            ev.node.clone()
        } else {
            ev.netns
        },
        node: ev.node,
        ifname: ev.ifname,
        dir,
        data,
        orig_len,
        drop,
    })
}

impl CaptureArgs {
    fn snaplen(&self) -> u32 {
        match self.snaplen {
            0 => KERNEL_SNAPLEN,
            s => s.min(KERNEL_SNAPLEN),
        }
    }

    fn text_options(&self) -> TextOptions {
        TextOptions {
            verbose: self.verbose,
            link_headers: self.link_headers,
        }
    }

    fn output(&self, out: Deferred) -> Result<CaptureOutput<Deferred>> {
        Ok(match &self.write {
            Some(_) => CaptureOutput::Pcapng(PcapngWriter::new(out, self.snaplen())?),
            None => CaptureOutput::Text {
                out,
                opts: self.text_options(),
            },
        })
    }

    fn open_output(&self) -> Result<Deferred> {
        Ok(Deferred::new(match self.write.as_deref() {
            None | Some("-") => Box::new(std::io::stdout()),
            Some(path) => Box::new(File::create(path).with_context(|| format!("creating {path}"))?),
        }))
    }

    fn spec(&self, filter: FilterConfig) -> Result<TracerSpec> {
        if !self.buffer_kib.is_power_of_two() || self.buffer_kib < 4 {
            anyhow::bail!("-B must be a power of two (KiB), at least 4");
        }
        let netns = match &self.pod {
            Some(pod) => Some(pod_netns(pod)?),
            None => self.netns.clone(),
        };
        let any = self.ifaces.iter().any(|i| i == "any");
        let mut filter = filter;
        if !any || netns.is_some() {
            // Drop points see every namespace: keep only the one the devices are in.
            filter.netns = netns::by_name(netns.as_deref().unwrap_or(""))?.inode;
        }
        let ns = netns.unwrap_or_default();
        Ok(TracerSpec {
            devices: self
                .ifaces
                .iter()
                .map(|i| DeviceSelector {
                    netns: ns.clone(),
                    pattern: if i == "any" { "*".into() } else { i.clone() },
                })
                .collect(),
            all_devices: any && ns.is_empty(),
            drops: self.drops,
            dev_hops: false,
            filter,
            ring_bytes: self.buffer_kib * 1024,
            ..TracerSpec::default()
        })
    }
}

pub async fn run(args: CaptureArgs) -> Result<i32> {
    let expr = args.expression.join(" ");
    let filter = if expr.trim().is_empty() {
        None
    } else {
        match PacketFilter::compile(&expr) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("netpath: {e}");
                return Ok(2);
            }
        }
    };
    if let Some(path) = &args.read {
        return read_file(&args, path, filter);
    }
    let spec = args.spec(kernel_filter(filter.as_ref().and_then(|f| f.kernel_hint())))?;
    let out = args.open_output()?;
    let mut sink = CaptureSink::new(filter, args.output(out.clone())?);
    let (mut tracer, mut stream) = NodeTracer::start(spec)?;
    for why in &tracer.unavailable {
        eprintln!("netpath: not available on this kernel: {why}");
    }
    eprintln!(
        "netpath: listening on {} device(s){}, snapshot length {} bytes; Ctrl-C to stop",
        tracer.attached_devices(),
        if args.drops { " and kernel drops" } else { "" },
        args.snaplen()
    );
    let status = std::io::stderr().is_terminal()
        && (args.write.as_deref().is_some_and(|w| w != "-") || !std::io::stdout().is_terminal());
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut rescan = tokio::time::interval(Duration::from_secs(1));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut lost = 0u64;
    let snaplen = args.snaplen();
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = stream.next() => match item {
                Some(StreamItem::Event(ev)) => {
                    let Some(pkt) = to_packet(*ev, snaplen) else { continue };
                    match sink.push(&pkt) {
                        Ok(_) => {}
                        // stdout closed (| head) or disk full: stop like tcpdump does.
                        Err(e) => { eprintln!("netpath: {e}"); break; }
                    }
                    if args.count.is_some_and(|c| sink.stats().captured >= c) { break; }
                }
                Some(StreamItem::Lost { count, .. }) => { lost += count; sink.add_lost(count); }
                None => break,
            },
            _ = tick.tick() => {
                if out.flush_now().is_err() { break; }
                if status { print_status(&sink.stats()); }
            }
            _ = rescan.tick() => { tracer.attach_devices(false)?; }
            _ = sleep => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    // Losses the reader counted but had not reported yet.
    sink.add_lost(tracer.lost().saturating_sub(lost));
    drop(tracer);
    let (_, stats) = sink.finish()?;
    let _ = out.flush_now();
    if status {
        eprint!("\r\x1b[K");
    }
    eprintln!("{}", stats.summary());
    Ok(0)
}

fn print_status(s: &CaptureStats) {
    eprint!(
        "\r\x1b[K{} captured, {} dropped by kernel, {} lost by tracer",
        s.captured, s.dropped_by_kernel, s.lost_by_tracer
    );
}

fn read_file(args: &CaptureArgs, path: &str, filter: Option<PacketFilter>) -> Result<i32> {
    let input: Box<dyn std::io::Read> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("opening {path}"))?)
    };
    let out = args.open_output()?;
    let mut sink = CaptureSink::new(filter, args.output(out.clone())?);
    let reader = read_capture_file(std::io::BufReader::new(input))
        .with_context(|| format!("reading {path}"))?;
    for pkt in reader {
        let pkt = pkt.with_context(|| format!("reading {path}"))?;
        if sink.push(&pkt).is_err() {
            break; // stdout closed
        }
        if args.count.is_some_and(|c| sink.stats().captured >= c) {
            break;
        }
    }
    sink.finish()?;
    out.flush_now()?;
    Ok(0)
}

/// The namespace a `--pod` lives in, through the same resolver `trace` uses.
fn pod_netns(spec: &str) -> Result<String> {
    let resolver = tracer::resolve::LocalResolver::load(&tracer::lab::LabOptions::default())?;
    let ep = tracer::resolve::Resolver::resolve(&resolver, spec)?;
    ep.netns.ok_or_else(|| {
        anyhow::anyhow!(
            "--pod {spec}: {} is not in a network namespace here",
            ep.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_filter_keeps_a_superset() {
        let f = PacketFilter::compile("udp and host 10.1.0.1 and port 53").unwrap();
        let cfg = kernel_filter(f.kernel_hint());
        assert_eq!((cfg.proto, cfg.port, cfg.n_addrs), (0, 53, 1));
        assert_eq!(&cfg.addrs[0].addr[..4], &[10, 1, 0, 1]);
        let f = PacketFilter::compile("icmp6").unwrap();
        let cfg = kernel_filter(f.kernel_hint());
        assert_eq!((cfg.family, cfg.proto), (6, 58));
        let f = PacketFilter::compile("udp or icmp").unwrap();
        assert_eq!(kernel_filter(f.kernel_hint()), FilterConfig::default());
    }

    #[test]
    fn events_map_to_packets() {
        let ev = |kind, dir, data: &'static [u8]| Event {
            kind,
            dir,
            netns: "root".into(),
            node: "n1".into(),
            len: 100,
            data: bytes::Bytes::from_static(data),
            reason: Some("IP_INNOROUTES".into()),
            location: Some("ip_route_input+0x1".into()),
            ts_ns: 0,
            netns_inode: 1,
            ifname: "vb".into(),
            ifindex: 2,
            hook: event::Hook::TcEgress,
            family: 4,
            src: None,
            dst: None,
            proto: "",
            sport: None,
            dport: None,
            icmp: None,
            pkt_id: String::new(),
            tunnel: None,
            route: None,
            neigh: None,
            skb: String::new(),
            parsed: Default::default(),
        };
        let p = to_packet(ev(EventKind::Hop, event::Direction::Egress, &[1; 20]), 16).unwrap();
        assert_eq!(
            (p.dir, p.data.len(), p.orig_len),
            (Some(Direction::Out), 16, 100)
        );
        assert_eq!(p.netns, "n1");
        assert!(p.drop.is_none());
        let p = to_packet(ev(EventKind::Drop, event::Direction::None, &[0; 20]), 256).unwrap();
        assert_eq!((p.dir, p.orig_len), (None, 114));
        assert_eq!(p.drop.unwrap().reason, "IP_INNOROUTES");
        assert!(to_packet(ev(EventKind::Neigh, event::Direction::None, &[]), 256).is_none());
    }
}
