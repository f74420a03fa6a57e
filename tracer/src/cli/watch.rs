//! `netpath watch`: live kernel events, one line (or JSON object) each.
use std::{io::Write, time::Duration};

use anyhow::Result;
use clap::Args;
use netpath_core::{model::Event, world::StreamItem};
use tracer::node::kernel::{DeviceSelector, NodeTracer, TracerSpec};

use super::filter::FilterArgs;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  netpath watch --netns pod-a --iface eth0          hops on one pod's eth0, plus every drop
  netpath watch --iface 'cali*' --iface eth0 --json JSON lines from Calico veths and eth0
  netpath watch --all --family 6 --count 20          first 20 IPv6 events on any device
  netpath watch --dev-hops --host fd00::/8           device hops via tracepoints, no tc attach
  netpath watch --routes --neigh --host 10.244.2.2   route lookups and neighbour failures for one host")]
pub struct WatchArgs {
    /// Attach tc ingress/egress to this device (repeatable; globs like 'cali*' or 'veth*';
    /// `NS/IF` names a device in another namespace, e.g. 'node-1/*').
    #[arg(short, long = "iface", value_name = "[NS/]IF")]
    pub ifaces: Vec<String>,
    /// Network namespace of the --iface devices: an `ip netns` name, or a lab pod or node
    /// (`pod-a`) [default: this one].
    #[arg(long, value_name = "NS", default_value = "", hide_default_value = true)]
    pub netns: String,
    /// Attach to every device in every network namespace, and to new ones as they appear.
    #[arg(long, conflicts_with = "ifaces")]
    pub all: bool,
    /// Also report hops from the net_dev_queue/netif_receive_skb tracepoints (every device,
    /// every namespace, no attachment needed).
    #[arg(long)]
    pub dev_hops: bool,
    /// Do not attach the kfree_skb tracepoint (no drop events).
    #[arg(long)]
    pub no_drops: bool,
    /// Also report route lookups (fib/fib6 tracepoints: flow key, table, type, error,
    /// gateway, output device), filtered in the kernel by --host/--family/--netns like packets.
    #[arg(long)]
    pub routes: bool,
    /// Also report neighbour (ARP/NDP) resolution failures: entries that became FAILED.
    #[arg(long)]
    pub neigh: bool,
    /// Also report the packets passing through the kernel functions matching this glob that
    /// take an skb (`ip_*`, `*_rcv`), with kprobes where the kernel has them (kind `func`);
    /// otherwise say why in one line and continue with everything else.
    #[arg(long, value_name = "PATTERN")]
    pub functions: Option<String>,
    /// Print one JSON object per line (schema: docs/events.md).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(short = 'c', long, value_name = "N")]
    pub count: Option<u64>,
    /// Ring buffer size in KiB (power of two, at least 4).
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    pub ring_kib: u32,
    #[command(flatten)]
    pub filter: FilterArgs,
}

impl WatchArgs {
    fn spec(&self) -> Result<TracerSpec> {
        super::check_secs("--duration", self.duration)?;
        Ok(TracerSpec {
            devices: self
                .ifaces
                .iter()
                .map(|i| {
                    let sel = DeviceSelector::parse(i, &self.netns);
                    let flag = if i.contains('/') {
                        "--iface"
                    } else {
                        "--netns"
                    };
                    Ok(DeviceSelector {
                        netns: super::netns_named(flag, &sel.netns)?,
                        ..sel
                    })
                })
                .collect::<Result<_>>()?,
            all_devices: self.all,
            drops: !self.no_drops,
            dev_hops: self.dev_hops,
            routes: self.routes,
            neigh: self.neigh,
            functions: self.functions.clone(),
            filter: self.filter.to_config()?,
            ring_bytes: super::ring_bytes("--ring-kib", self.ring_kib)?,
            ..TracerSpec::default()
        })
    }
}

/// Writes one event as `watch` prints it (a JSON object or a text line, with its newline):
/// JSON straight into `out`, text through `scratch` (reused across events, so neither form
/// allocates a line per event).
pub fn write_event(
    out: &mut impl Write,
    ev: &Event,
    json: bool,
    scratch: &mut String,
) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, ev)?;
        out.write_all(b"\n")
    } else {
        scratch.clear();
        let _ = super::render::event_line(ev, scratch);
        scratch.push('\n');
        out.write_all(scratch.as_bytes())
    }
}

/// Said when tc programs went through clsact: what a user must know if netpath is killed.
pub const CLSACT_NOTE: &str = "tc programs attached as clsact filters (this kernel has no tcx, \
or NETPATH_TC_ATTACH=clsact): if netpath is killed, `netpath cleanup` removes them";

pub async fn run(args: WatchArgs, mut signals: super::stop::Stop) -> Result<i32> {
    let spec = args.spec()?;
    let (mut tracer, mut stream) = NodeTracer::start(spec)?;
    for why in &tracer.unavailable {
        eprintln!("netpath: not available on this kernel: {why}");
    }
    if let Some(f) = &tracer.functions {
        eprintln!("netpath: {}", f.message());
    }
    if tracer.uses_clsact() {
        eprintln!("netpath: {CLSACT_NOTE}");
    }
    let extras: String = [
        (!args.no_drops, " and kernel drops"),
        (args.dev_hops, " and device tracepoints"),
        (args.routes, " and route lookups"),
        (args.neigh, " and neighbour failures"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, text)| *text)
    .collect();
    eprintln!(
        "netpath: watching {} device(s){extras}; Ctrl-C to stop",
        tracer.attached_devices(),
    );
    let deadline = super::deadline(args.duration);
    let mut rescan = tokio::time::interval(Duration::from_secs(1));
    let mut seen = 0u64;
    let mut lost = 0u64;
    let mut code = 0;
    // Buffered, flushed whenever no further event is waiting: one write per burst rather than
    // one per event, without holding back a line when things are quiet.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut line = String::with_capacity(256);
    loop {
        let sleep = super::until(deadline);
        tokio::select! {
            item = stream.next() => match item {
                Some(StreamItem::Event(ev)) => {
                    seen += 1;
                    let written = write_event(&mut out, &ev, args.json, &mut line)
                        .and_then(|_| if stream.is_empty() { out.flush() } else { Ok(()) });
                    if written.is_err() {
                        break; // stdout closed (| head)
                    }
                    if args.count.is_some_and(|c| seen >= c) { break; }
                }
                Some(StreamItem::Lost { node, count }) => {
                    lost += count;
                    if args.json {
                        let _ = writeln!(out, "{}", serde_json::json!({"kind": "lost", "node": node, "count": count}));
                    } else {
                        let _ = writeln!(out, "lost {count} events on {node} (ring buffer full)");
                    }
                    let _ = out.flush();
                }
                None => break,
            },
            _ = rescan.tick() => { tracer.attach_devices(false)?; }
            _ = sleep => break,
            // Also one that came during start-up.
            signalled = signals.recv() => { code = signalled; break; }
        }
    }
    drop(tracer);
    eprintln!("netpath: {seen} events, {lost} lost");
    Ok(code)
}
