//! `netpath watch`: live kernel events, one line (or JSON object) each.
use std::{io::Write, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Args;
use netpath_agent::{
    client::{AgentAddr, RemoteWorld},
    server::TlsFiles,
};
use netpath_core::{
    model::{Event, Family},
    world::{EventSource, Scope, StreamItem},
};
use tracer::node::kernel::{DeviceSelector, NodeTracer, TracerSpec};

use super::filter::FilterArgs;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  netpath watch --netns pod-a --iface eth0          hops on one pod's eth0, plus every drop
  netpath watch --iface 'cali*' --iface eth0 --json JSON lines from Calico veths and eth0
  netpath watch --all --family 6 --count 20          first 20 IPv6 events on any device
  netpath watch --dev-hops --host fd00::/8           device hops via tracepoints, no tc attach
  netpath watch --routes --neigh --host 10.244.2.2   route lookups and neighbour failures for one host
  netpath watch --agents node-1=10.0.0.1:7101,node-2=10.0.0.2:7101 --tls-dir DIR --host 10.244.2.2
                                                     the same from several nodes' agents, merged
  kubectl netpath watch --tls-dir DIR --host 10.244.2.2
                                                     the agents found through the cluster's API")]
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
    /// Take the events from these node agents (`netpath agent`) instead of this machine's
    /// kernel: every device each agent serves, merged, each event with its node. Filters:
    /// --host (addresses), --family; with `netpath lab up`, `lab status` prints the lab's.
    #[arg(
        long,
        value_name = "NODE=ADDR:PORT[@NETNS],...",
        value_delimiter = ',',
        requires = "tls_dir",
        conflicts_with_all = ["ifaces", "all", "dev_hops", "neigh"]
    )]
    pub agents: Vec<AgentAddr>,
    /// Directory with ca.pem, client.pem and client.key (`netpath certs`), for the agents.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    #[command(flatten)]
    pub kube: super::kube::KubeAgentsArgs,
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

impl WatchArgs {
    /// What to ask the agents for: packets of the --host addresses (all when none), drops and
    /// route lookups as asked. The agents filter by address only: the family is checked here,
    /// and the other filters are refused rather than ignored.
    fn agent_scope(&self) -> Result<Scope> {
        super::check_secs("--duration", self.duration)?;
        let f = &self.filter;
        if f.port.is_some() || f.proto.is_some() || f.vxlan_port.is_some() {
            bail!("with --agents only --host and --family filter (the agents filter by address)");
        }
        let addrs = f
            .hosts
            .iter()
            .map(|h| {
                let (addr, len) = h.split_once('/').unwrap_or((h, ""));
                let ip: IpAddr = addr.parse().with_context(|| format!("bad address {h:?}"))?;
                let full = if ip.is_ipv4() { "32" } else { "128" };
                if !len.is_empty() && len != full {
                    bail!("--host {h}: with --agents, addresses only (no prefixes)");
                }
                Ok(ip)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Scope {
            places: Vec::new(),
            addrs,
            non_ip: false,
            drops: !self.no_drops,
            routes: self.routes,
            ring_bytes: super::ring_bytes("--ring-kib", self.ring_kib)?,
            functions: self.functions.clone(),
        })
    }

    /// --family, for events from agents.
    fn family_matches(&self, ev: &Event) -> bool {
        let Some(want) = self.filter.family.as_deref() else {
            return true;
        };
        let want = if want == "4" {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let outer = ev
            .packet
            .as_ref()
            .and_then(|p| p.tunnel.as_ref())
            .map(|t| Family::of(&t.outer_src));
        ev.flow.family == Some(want) || outer == Some(want)
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

/// Writes a loss report as `watch` prints it.
fn write_lost(out: &mut impl Write, json: bool, node: &str, count: u64) -> std::io::Result<()> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"kind": "lost", "node": node, "count": count})
        )
    } else {
        writeln!(out, "lost {count} events on {node} (ring buffer full)")
    }
}

/// `watch --agents`: the merged streams of several nodes' agents.
async fn run_agents(args: WatchArgs, mut signals: super::stop::Stop) -> Result<i32> {
    let scope = args.agent_scope()?;
    let dir = args.tls_dir.as_ref().expect("clap requires --tls-dir");
    let tls = TlsFiles::load(dir, "client").context("TLS material")?;
    let world = RemoteWorld::connect(&args.agents, &tls).await?;
    let mut stream = world.open(&scope).await?;
    for why in stream.unavailable() {
        eprintln!("netpath: not available: {why}");
    }
    eprintln!(
        "netpath: watching {} device(s) through {} node agent(s); Ctrl-C to stop",
        stream.devices(),
        args.agents.len()
    );
    let deadline = super::deadline(args.duration);
    let (mut seen, mut lost, mut code) = (0u64, 0u64, 0);
    let mut all_gone = false;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut line = String::with_capacity(256);
    loop {
        let sleep = super::until(deadline);
        tokio::select! {
            item = stream.next() => match item {
                Some(StreamItem::Event(ev)) => {
                    if !args.family_matches(&ev) {
                        continue;
                    }
                    seen += 1;
                    if write_event(&mut out, &ev, args.json, &mut line).and_then(|_| out.flush()).is_err() {
                        break;
                    }
                    if args.count.is_some_and(|c| seen >= c) { break; }
                }
                Some(StreamItem::Lost { node, count }) => {
                    lost += count;
                    let _ = write_lost(&mut out, args.json, &node, count).and_then(|_| out.flush());
                }
                None => {
                    // Every agent's stream is over: nothing more can come.
                    all_gone = true;
                    break;
                }
            },
            _ = sleep => break,
            signalled = signals.recv() => { code = signalled; break; }
        }
    }
    drop(stream);
    for problem in world.problems() {
        eprintln!("netpath: {problem}");
    }
    eprintln!("netpath: {seen} events, {lost} lost");
    if all_gone && code == 0 {
        eprintln!("netpath: every agent's stream has ended (above): no more events can come");
        return Ok(2);
    }
    Ok(code)
}

pub async fn run(args: WatchArgs, signals: super::stop::Stop) -> Result<i32> {
    let agents = args
        .kube
        .agents(&args.agents, args.tls_dir.is_some())
        .await?;
    if !agents.is_empty() {
        if !args.ifaces.is_empty() || args.all || args.dev_hops || args.neigh {
            // As clap refuses them with --agents.
            bail!("--iface, --all, --dev-hops and --neigh are for this machine's kernel, not for node agents");
        }
        return run_agents(WatchArgs { agents, ..args }, signals).await;
    }
    let mut signals = signals;
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
                    let _ = write_lost(&mut out, args.json, &node, count).and_then(|_| out.flush());
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
