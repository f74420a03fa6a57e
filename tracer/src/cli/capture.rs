//! `netpath capture`: tcpdump-style packet capture from the kernel programs, written as pcapng
//! or printed as tcpdump-like lines.
use std::{
    cell::RefCell,
    fs::File,
    io::{BufWriter, IsTerminal, Write},
    os::fd::{AsFd, AsRawFd},
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use netpath_agent::client::AgentAddr;
use tracer::{
    capture::{
        filter::FileFilter,
        format::format_packet_on,
        live::{kernel_filter, Epoll, KERNEL_SNAPLEN, MIN_KERNEL_COPY},
        read_capture_file, CaptureError, CaptureOutput, CaptureSink, CaptureStats, Cursor,
        PacketFilter, PcapngWriter, RecordDecoder, RingReader, TextOptions, DEFAULT_SNAPLEN,
        FILTER_HELP, PUBLISH_EVERY,
    },
    node::{
        kernel::{DeviceSelector, NodeTracer, RawRing, TracerSpec},
        names::LiveNamer,
        netns,
    },
};
use tracer_common::{pcapng_record, FilterConfig, RawEvent};

fn after_help() -> String {
    format!(
        "{FILTER_HELP}

The kernel copies at most the first {KERNEL_SNAPLEN} bytes of each packet, so -s is capped at \
{KERNEL_SNAPLEN} (-s 0 means {KERNEL_SNAPLEN}); the original length of each packet is kept.

With -w, once a device's first packet has been written (with its interface description), the \
kernel writes that device's packets as pcapng blocks itself, and they go from its ring buffer \
to the file in runs, unread. Between those blocks the file holds 20-byte blocks of a \
local-use type (around the ring's record headers) that tshark (Wireshark's reader) and tcpdump \
skip. Packets at drop points and those userspace filters are written by userspace.

Examples:
  netpath capture -i any icmp6                       ICMPv6 on every device in every namespace
  netpath capture -i eth0 --netns pod-a -w a.pcapng 'tcp port 80'
  netpath capture -i 'veth*' -w - host 10.244.1.2 | tshark -r -
  netpath capture --drops -i any -c 10 host 10.1.0.1  also packets the kernel dropped, with why
  netpath capture -r a.pcapng -e -v tcp              print a capture file (no root needed)
  netpath capture --agents node-1=10.0.0.1:7101,node-2=10.0.0.2:7101 --tls-dir DIR \\
      -w all.pcapng udp port 53                      from several nodes' agents, merged
  kubectl netpath capture --tls-dir DIR -w all.pcapng icmp6
                                                     the agents found through the cluster's API

With --agents each agent compiles the filter and captures on its node (every namespace it \
serves, or --netns there); packets go out in timestamp order within a {merge_ms} ms window \
(each waits that long for earlier ones of other nodes). An agent that cannot be reached is \
named and the capture goes on with the others.",
        merge_ms = super::capture_agents::MERGE_WINDOW.as_millis()
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
    /// Read packets from a pcapng/pcap FILE and print them (no capture, no root needed):
    /// Ethernet, Linux cooked (SLL, SLL2), raw IP and BSD loopback files.
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
    /// Take the packets from these node agents (`netpath agent`) instead of this machine's
    /// kernel: each agent captures as asked here (filter, -i, --netns, -s, --drops, -B) on the
    /// namespaces it serves, and the packets are merged into one output, each interface named
    /// NODE/NETNS/DEVICE.
    #[arg(
        long,
        value_name = "NODE=ADDR:PORT[@NETNS],...",
        value_delimiter = ',',
        requires = "tls_dir",
        conflicts_with_all = ["read", "pod"]
    )]
    pub agents: Vec<AgentAddr>,
    /// Directory with ca.pem, client.pem and client.key (`netpath certs`), for the agents.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["read", "pod"])]
    pub tls_dir: Option<PathBuf>,
    #[command(flatten)]
    pub kube: super::kube::KubeAgentsArgs,
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

impl CaptureArgs {
    pub(super) fn snaplen(&self) -> u32 {
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

    pub(super) fn output<W: Write>(&self, out: W) -> Result<CaptureOutput<W>> {
        // The kernel's copy limits a live capture; a file's packets are copied as read.
        let snaplen = match self.read {
            Some(_) => DEFAULT_SNAPLEN,
            None => self.snaplen(),
        };
        Ok(match &self.write {
            Some(_) => CaptureOutput::Pcapng(PcapngWriter::new(out, snaplen)?),
            None => CaptureOutput::Text {
                out,
                opts: self.text_options(),
            },
        })
    }

    pub(super) fn open_output(&self) -> Result<Box<dyn Write + Send>> {
        Ok(match self.write.as_deref() {
            None => Box::new(std::io::stdout()),
            // Bytes, not lines: past stdout's line buffering, straight to fd 1.
            Some("-") => Box::new(File::from(
                std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("duplicating stdout")?,
            )),
            Some(path) => Box::new(File::create(path).with_context(|| format!("creating {path}"))?),
        })
    }

    fn spec(&self, filter: FilterConfig) -> Result<TracerSpec> {
        super::check_secs("--duration", self.duration)?;
        let netns = match &self.pod {
            Some(pod) => Some(super::pod_netns("--pod", pod)?),
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
            ring_bytes: super::ring_bytes("-B", self.buffer_kib)?,
            // The writer cuts to -s.
            snap_len: self.snaplen().max(MIN_KERNEL_COPY),
            ..TracerSpec::default()
        })
    }
}

/// Reads `-r FILE`, or captures live until `-c`, `--duration` or a signal `signals` catches.
pub async fn run(args: CaptureArgs, signals: Option<super::stop::Stop>) -> Result<i32> {
    let expr = args.expression.join(" ");
    if let Some(path) = &args.read {
        // Compiled for the file's link type(s), not for Ethernet.
        return read_file(&args, path, &expr);
    }
    let agents = args
        .kube
        .agents(&args.agents, args.tls_dir.is_some())
        .await?;
    if !agents.is_empty() {
        let args = CaptureArgs { agents, ..args };
        // The agents compile the filter.
        let Some(signals) = signals else {
            anyhow::bail!("a live capture needs its signal handlers");
        };
        return super::capture_agents::run(args, signals).await;
    }
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
    let Some(mut signals) = signals else {
        anyhow::bail!("a live capture needs its signal handlers");
    };
    let mut spec = args.spec(kernel_filter(filter.as_ref().and_then(|f| f.kernel_hint())))?;
    spec.capture_filter = filter
        .as_ref()
        .map(PacketFilter::instructions)
        .unwrap_or_default();
    spec.capture_filter_untagged = filter.as_ref().is_some_and(|f| !f.reads_vlan_tags());
    // Written as pcapng by the kernel where no userspace work is left (the IDB's snap length
    // must hold the kernel's copy).
    spec.pcapng_direct = args.write.is_some() && args.snaplen() >= MIN_KERNEL_COPY;
    let (mut tracer, ring) = NodeTracer::start_raw(spec.clone())?;
    // The output is opened once start-up can no longer fail for other reasons: a refused
    // start must leave `-w FILE` as it was (tcpdump's order too).
    // The pcapng writer buffers by itself (and writes runs of kernel records from where they
    // lie); text lines need a buffer.
    let out: LiveOutput = match args.write {
        Some(_) => args.open_output()?,
        None => Box::new(BufWriter::with_capacity(OUT_BUFFER, args.open_output()?)),
    };
    let sink = CaptureSink::new(filter, args.output(out)?);
    // Names (kallsyms, namespaces) are loaded before "listening": a tool that says it listens
    // should not spend its first half second parsing kallsyms.
    let decoder = RecordDecoder::new(
        LiveNamer::new(ring.reasons.clone()).with_boot_offset_ns(ring.boot_offset_ns),
        &spec.node,
        args.snaplen(),
    );
    for why in &tracer.unavailable {
        eprintln!("netpath: not available on this kernel: {why}");
    }
    if tracer.uses_clsact() {
        eprintln!("netpath: {}", super::watch::CLSACT_NOTE);
    }
    let filter_where = match &tracer.capture_filter_in_kernel {
        None => "",
        Some(Ok(())) => ", filter in the kernel",
        Some(Err(why)) => {
            eprintln!("netpath: the filter runs in userspace only: {why}");
            ", filter in userspace"
        }
    };
    eprintln!(
        "netpath: listening on {} device(s){}, snapshot length {} bytes{filter_where}; Ctrl-C to stop",
        tracer.attached_devices(),
        if args.drops { " and kernel drops" } else { "" },
        args.snaplen()
    );
    let status = std::io::stderr().is_terminal()
        && (args.write.as_deref().is_some_and(|w| w != "-") || !std::io::stdout().is_terminal());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = RingReader::new(ring.ring.as_fd(), spec.ring_bytes as usize)
        .context("mapping the ring buffer")?;
    let drain = Drain {
        reader,
        decoder,
        ring,
        sink,
        count: args.count,
        status,
        stop: stop.clone(),
        ring_records: (spec.ring_bytes as usize / std::mem::size_of::<RawEvent>()).max(1),
    };
    let mut reader = tokio::task::spawn_blocking(move || drain.run());
    let deadline = super::deadline(args.duration);
    let mut rescan = tokio::time::interval(Duration::from_secs(1));
    let mut finished = None;
    let mut code = 0;
    loop {
        let sleep = super::until(deadline);
        tokio::select! {
            done = &mut reader => { finished = Some(done); break; }
            _ = rescan.tick() => { tracer.attach_devices(false)?; }
            _ = sleep => break,
            signalled = signals.recv() => { code = signalled; break; }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sink = match finished {
        Some(done) => done,
        None => reader.await,
    }
    .context("capture thread")?;
    drop(tracer);
    let stats = sink.stats();
    match sink.finish() {
        Err(e) if !e.is_broken_pipe() => return Err(e.into()),
        _ => {}
    }
    if status {
        eprint!("\r\x1b[K");
    }
    eprintln!("{}", stats.summary());
    Ok(code)
}

pub(super) type LiveOutput = Box<dyn Write + Send>;
pub(super) const OUT_BUFFER: usize = 256 << 10;
/// The longest a packet waits in the ring buffer: the kernel wakes the reader only once
/// `wakeup_bytes` are queued, so at low rates the reader looks on this timer.
const POLL_MS: i32 = 20;
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// The capture thread: waits for the kernel's batched wake-ups (edge-triggered epoll, so a
/// wake-up is one batch, not one packet), drains the ring buffer straight into the sink and
/// flushes once per batch.
struct Drain {
    reader: RingReader,
    /// The ring's map (keeps its fd open for `reader`) and loss counters.
    ring: RawRing,
    decoder: RecordDecoder<LiveNamer>,
    sink: CaptureSink<LiveOutput>,
    count: Option<u64>,
    status: bool,
    stop: Arc<AtomicBool>,
    /// Records the ring holds: the most one batch drains before looking at `stop` again.
    ring_records: usize,
}

impl Drain {
    fn run(mut self) -> CaptureSink<LiveOutput> {
        if let Err(e) = self.run_loop() {
            let closed = e
                .downcast_ref::<CaptureError>()
                .is_some_and(CaptureError::is_broken_pipe);
            if !closed {
                eprintln!("netpath: {e}");
            }
        }
        self.add_lost();
        self.sink
    }

    /// Drains at most one ring's worth of records; returns whether `-c` was reached.
    fn drain_batch(&mut self) -> Result<bool> {
        if self.ring.pcapng_ifaces.is_some() {
            self.drain_direct()
        } else {
            self.drain_records()
        }
    }

    fn run_loop(&mut self) -> Result<()> {
        let epoll = Epoll::new(self.ring.ring.as_raw_fd())?;
        let mut next_status = Instant::now() + STATUS_EVERY;
        while !self.stop.load(Ordering::Relaxed) {
            epoll.wait(POLL_MS)?;
            if self.drain_batch()? {
                return Ok(()); // -c reached
            }
            self.add_lost();
            self.sink.flush()?;
            if self.status && Instant::now() >= next_status {
                print_status(&self.sink.stats());
                next_status = Instant::now() + STATUS_EVERY;
            }
        }
        // Stopped (signal or --duration): write out what the kernel has queued.
        self.drain_batch()?;
        Ok(())
    }

    /// [`Drain::drain_batch`] record by record.
    fn drain_records(&mut self) -> Result<bool> {
        let (decoder, sink, count) = (&mut self.decoder, &mut self.sink, self.count);
        let mut outcome = Ok(false);
        self.reader.drain(self.ring_records, |record| {
            match decoder.push(record, sink) {
                Ok(true) if count.is_some_and(|c| sink.stats().captured >= c) => {
                    outcome = Ok(true);
                }
                Ok(_) => return true,
                Err(e) => outcome = Err(e.into()),
            }
            false
        });
        outcome
    }

    /// [`Drain::drain_batch`] when the kernel writes pcapng records: a run of them goes out as
    /// it lies in the ring, headers included, without a look inside (see
    /// `tracer_common::pcapng_record`); any other record (a drop, a device without an
    /// interface id yet, a packet left to userspace's filter) goes through the decoder, and a
    /// device it writes a description block for gets its id in the kernel's map.
    fn drain_direct(&mut self) -> Result<bool> {
        let Drain {
            reader,
            decoder,
            ring,
            sink,
            count,
            ring_records,
            ..
        } = self;
        let ifaces = ring.pcapng_ifaces.as_mut().expect("direct mode");
        let mut cursor = reader.cursor();
        // A run of kernel records: first position, end position, packets.
        let mut run: Option<(usize, usize, u64)> = None;
        let mut reached = false;
        for _ in 0..*ring_records {
            let Some(r) = cursor.next_record() else {
                break;
            };
            let payload = cursor.payload(&r);
            if !r.discarded && pcapng_record::is_record(payload) {
                let (from, n) = run.map_or((r.start, 1), |(from, _, n)| (from, n + 1));
                run = Some((from, r.end, n));
                if count.is_some_and(|c| sink.stats().captured + n >= c) {
                    reached = true;
                    break;
                }
                if n as usize >= PUBLISH_EVERY {
                    write_run(&mut cursor, sink, &mut run)?;
                }
                continue;
            }
            write_run(&mut cursor, sink, &mut run)?;
            if !r.discarded {
                let payload = cursor.payload(&r);
                let captured = decoder.push(payload, sink)?;
                for (netns, ifindex, id) in decoder.take_new_interfaces() {
                    // A full map leaves the device's packets to this path.
                    let _ = ifaces.insert(pcapng_record::iface_key(netns, ifindex), id, 0);
                }
                reached = captured && count.is_some_and(|c| sink.stats().captured >= c);
            }
            cursor.release(r.end);
            if reached {
                break;
            }
        }
        write_run(&mut cursor, sink, &mut run)?;
        let end = cursor.position();
        cursor.release(end);
        Ok(reached)
    }

    /// Brings the sink's loss count up to the kernel's counters.
    fn add_lost(&mut self) {
        let lost = self.ring.lost_total();
        let known = self.sink.stats().lost_by_tracer;
        self.sink.add_lost(lost.saturating_sub(known));
    }
}

/// Writes a run of kernel pcapng records, if any, and hands its space back to the kernel.
fn write_run(
    cursor: &mut Cursor<'_>,
    sink: &mut CaptureSink<LiveOutput>,
    run: &mut Option<(usize, usize, u64)>,
) -> Result<()> {
    if let Some((from, to, n)) = run.take() {
        sink.write_kernel_records(cursor.span(from, to), n)?;
        cursor.release(to);
    }
    Ok(())
}

fn print_status(s: &CaptureStats) {
    eprint!(
        "\r\x1b[K{} captured, {} dropped by kernel, {} lost by tracer",
        s.captured, s.dropped_by_kernel, s.lost_by_tracer
    );
}

/// `-r FILE`: prints (or with `-w` copies, keeping each interface's link type) the packets
/// the filter, compiled for each link type the file holds, accepts.
fn read_file(args: &CaptureArgs, path: &str, expr: &str) -> Result<i32> {
    let input: Box<dyn std::io::Read> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("opening {path}"))?)
    };
    // The input is known to be a capture file before `-w FILE` is created.
    let mut reader = read_capture_file(std::io::BufReader::new(input))
        .with_context(|| format!("reading {path}"))?;
    let mut filter = (!expr.trim().is_empty()).then(|| FileFilter::new(expr));
    // A pcap file has one link type, known now: a filter that does not compile for it is
    // refused before any output, as tcpdump does. pcapng interfaces come with the packets.
    if let (Some(f), Some((link, foreign_order))) = (&mut filter, reader.file_link_type()) {
        if let Err(e) = f.prepare(link, foreign_order) {
            eprintln!("netpath: {e}");
            return Ok(2);
        }
    }
    let out = Deferred::new(args.open_output()?);
    let mut output = args.output(out.clone())?;
    let mut written = 0u64;
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.with_context(|| format!("reading {path}"))?;
        match filter.as_mut().map(|f| f.matches(&pkt)) {
            Some(Ok(false)) => continue,
            Some(Err(e)) => {
                eprintln!("netpath: {e}");
                return Ok(2);
            }
            Some(Ok(true)) | None => {}
        }
        let wrote = match &mut output {
            CaptureOutput::Pcapng(w) => w.write_file_packet(&pkt),
            CaptureOutput::Text { out, opts } => {
                writeln!(out, "{}", format_packet_on(pkt.link, &pkt.packet, opts))
                    .map_err(CaptureError::from)
            }
            CaptureOutput::Packets(_) => unreachable!("a file is read to pcapng or text"),
        };
        match wrote {
            Err(e) if e.is_broken_pipe() => return Ok(0), // `| head`: done, as tcpdump
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        written += 1;
        if args.count.is_some_and(|c| written >= c) {
            break;
        }
    }
    let flushed = match &mut output {
        CaptureOutput::Pcapng(w) => w.flush(),
        CaptureOutput::Text { out, .. } => out.flush(),
        CaptureOutput::Packets(_) => unreachable!("a file is read to pcapng or text"),
    };
    match flushed
        .and_then(|_| out.flush_now())
        .map_err(CaptureError::from)
    {
        Err(e) if !e.is_broken_pipe() => Err(e.into()),
        _ => Ok(0),
    }
}
