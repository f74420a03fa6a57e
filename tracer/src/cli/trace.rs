//! `netpath trace FROM TO`: probe both families from FROM's namespace, follow the packets on
//! every node, and say per family whether they got through and, if not, where and why.
use std::{
    collections::HashMap,
    io::IsTerminal,
    net::IpAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use tracer::{
    event::{Event, EventKind},
    lab::{Family, LabOptions},
    netns,
    resolve::{Endpoint, EndpointKind, LocalResolver, Resolver},
    trace::{
        self,
        inspect::LiveInspector,
        path::{proto_number, ProbeMatch},
        probe::{self, Probe, ProbeKind, ProbeOutcome, Reply},
        report::{render, Style},
        FamilyReport, FamilyTrace, TraceReport,
    },
    tracer::{hostname, DeviceSelector, NodeTracer, StreamItem, TracerSpec},
};
use tracer_common::{AddrPrefix, FilterConfig, MAX_FILTER_ADDRS};

use super::filter::parse_prefix;

#[derive(Debug, Args)]
#[command(
    after_help = "FROM and TO: a lab pod (`pod-a`, `node-1/pod-b`), a lab node (`node-2`), a Service \
(`svc/web`), `netns:NAME` for any network namespace, or an address (`10.244.2.3`, \
`[fd00:10:96::10]:80`); an address is looked up in the lab, then in every named namespace.

Exit status: 0 when every asked family was delivered, 1 when one was not, 2 on a usage or
environment error.

Examples:
  netpath trace pod-a pod-c                 ICMP echo in IPv4 and IPv6, cross-node
  netpath trace pod-a svc/web               TCP SYN to the Service port, through its DNAT
  netpath trace pod-a pod-c --port 8080     TCP SYN instead of ICMP
  netpath trace pod-a pod-c --family 6 --json
  netpath trace netns:client 10.50.2.2      namespaces built by hand work the same way
  netpath trace pod-a pod-c --passive --timeout 30   wait for real traffic instead of probing

JSON schema (--json): docs/trace.md"
)]
pub struct TraceArgs {
    /// Where the traffic starts: the probes are sent from its network namespace.
    #[arg(value_name = "FROM")]
    pub from: String,
    /// Where it should arrive. Optional when --service is given.
    #[arg(value_name = "TO", required_unless_present = "service")]
    pub to: Option<String>,
    /// Probe a Service (`web`, `svc/web` or a ClusterIP) instead of TO.
    #[arg(long, value_name = "NAME|IP", conflicts_with = "to")]
    pub service: Option<String>,
    /// Probe with TCP SYN (or UDP with --udp) to this port instead of ICMP echo. Services are
    /// probed on their port by default.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Probe with a UDP datagram to --port instead of TCP.
    #[arg(long, requires = "port")]
    pub udp: bool,
    /// Payload bytes of ICMP/UDP probes, sent without fragmentation (like `ping -s -M do`):
    /// find MTU problems on tunnels.
    #[arg(long, value_name = "BYTES", default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=65000))]
    pub size: u16,
    /// Do not send anything: wait for real traffic between FROM and TO (see --timeout).
    #[arg(long)]
    pub passive: bool,
    /// Seconds to wait for answers (active; default 2: a first packet may wait 1 s for a
    /// neighbour) or for traffic (--passive; default 10). Drops end the wait early.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Only this family.
    #[arg(long, value_name = "4|6", value_parser = ["4", "6"])]
    pub family: Option<String>,
    /// Print the report as JSON (schema: docs/trace.md).
    #[arg(long)]
    pub json: bool,
    /// Lab state directory [default: $NETPATH_STATE, else /run/netpath].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Ring buffer size in KiB (power of two).
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    pub ring_kib: u32,
}

/// One family to probe (or to watch, passively).
struct Planned {
    family: Family,
    src: IpAddr,
    dst: IpAddr,
    kind: ProbeKind,
    probe: Option<Probe>,
    matcher: Option<ProbeMatch>,
    outcome: ProbeOutcome,
    cancel: Arc<AtomicBool>,
    /// A drop or an answer already decided this family.
    decided: bool,
}

fn families(args: &TraceArgs, to: &Endpoint) -> Vec<Family> {
    let asked = match args.family.as_deref() {
        Some("4") => vec![Family::Ipv4],
        Some("6") => vec![Family::Ipv6],
        _ => vec![Family::Ipv4, Family::Ipv6],
    };
    // A bare address is one family: only that one is asked unless --family says otherwise.
    if to.kind == EndpointKind::Address && args.family.is_none() {
        return to.addrs().map(|a| Family::of(&a)).take(1).collect();
    }
    asked
}

fn filter_for(from: &Endpoint) -> Result<FilterConfig> {
    let mut cfg = FilterConfig::default();
    let addrs: Vec<AddrPrefix> = from
        .addrs()
        .take(MAX_FILTER_ADDRS)
        .map(|a| parse_prefix(&a.to_string()))
        .collect::<Result<_>>()?;
    if addrs.is_empty() {
        bail!("{} has no address to trace", from.name);
    }
    for (i, a) in addrs.iter().enumerate() {
        cfg.addrs[i] = *a;
    }
    cfg.n_addrs = addrs.len() as u8;
    Ok(cfg)
}

/// Is this event a drop that settles a probe (not the socket layer discarding a delivered
/// packet)?
fn settles(e: &Event) -> bool {
    let function = e.location.as_deref().and_then(|l| l.split('+').next());
    e.kind == EventKind::Drop
        && !trace::diagnose::is_socket_level_drop(
            e.reason.as_deref().unwrap_or_default(),
            function.unwrap_or_default(),
        )
}

pub async fn run(args: TraceArgs) -> Result<i32> {
    let started = Instant::now();
    if !args.ring_kib.is_power_of_two() || args.ring_kib < 4 {
        bail!("--ring-kib must be a power of two, at least 4");
    }
    if let Some(t) = args.timeout {
        if !(t > 0.0 && t <= 3600.0) {
            bail!("--timeout must be between 0 and 3600 seconds");
        }
    }
    let resolver = LocalResolver::load(&LabOptions::new(args.state.clone()))?;
    let from = resolver.resolve(&args.from)?;
    let to_spec = match (&args.to, &args.service) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) if s.starts_with("svc/") || s.parse::<IpAddr>().is_ok() => s.clone(),
        (None, Some(s)) => format!("svc/{s}"),
        (None, None) => bail!("TO or --service is required"),
    };
    let to = resolver.resolve(&to_spec)?;
    let Some(src_netns) = from.netns.clone() else {
        bail!(
            "{} is not in a network namespace here: FROM must be a pod, a node, netns:NAME or an address one of \
             them holds",
            from.name
        );
    };
    let inspector = LiveInspector;
    let timeout =
        Duration::from_secs_f64(
            args.timeout
                .unwrap_or(if args.passive { 10.0 } else { 2.0 }),
        );
    let kind = match (args.port.or(to.port), args.udp) {
        (Some(port), true) => ProbeKind::Udp { port },
        (Some(port), false) => ProbeKind::Tcp { port },
        (None, _) => ProbeKind::Icmp,
    };

    // Families a side has no address for are answered without probing.
    let mut reports: Vec<FamilyReport> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    let pid = std::process::id() as u16;
    for (i, family) in families(&args, &to).into_iter().enumerate() {
        if let Some(r) = trace::unprobed(family, &from, &to, &inspector) {
            reports.push(r);
            continue;
        }
        let (src, dst) = (
            from.addr(family).expect("checked by unprobed"),
            to.addr(family).expect("checked by unprobed"),
        );
        let echo_id = pid.wrapping_add(i as u16 * 7919);
        // An ephemeral-range port unlikely to be in use, different per family and run.
        let sport = 40_000 + (pid % 10_000).wrapping_mul(2) + i as u16;
        let probe = (!args.passive).then(|| Probe {
            netns: src_netns.clone(),
            src,
            dst,
            kind,
            echo_id,
            echo_seq: 1,
            sport,
            size: args.size as usize,
        });
        let matcher = match kind {
            _ if args.passive => None,
            ProbeKind::Icmp => Some(ProbeMatch::Echo {
                family: trace::family_number(family),
                id: echo_id,
                seq: 1,
            }),
            ProbeKind::Tcp { .. } | ProbeKind::Udp { .. } => Some(ProbeMatch::Transport {
                family: trace::family_number(family),
                proto: proto_number(if matches!(kind, ProbeKind::Udp { .. }) {
                    "udp"
                } else {
                    "tcp"
                }),
                addr: src,
                port: sport,
            }),
        };
        planned.push(Planned {
            family,
            src,
            dst,
            kind,
            probe,
            matcher,
            outcome: ProbeOutcome::default(),
            cancel: Arc::new(AtomicBool::new(false)),
            decided: false,
        });
    }

    let mut events: Vec<Event> = Vec::new();
    let mut lost = 0u64;
    // Detaching takes an RCU grace period per device: done after the report is out.
    let mut attached: Option<NodeTracer> = None;
    if !planned.is_empty() {
        let node_of: HashMap<String, String> = resolver.node_namespaces().into_iter().collect();
        let spec = tracer_spec(&args, &from, &to, &node_of)?;
        let (tracer, mut stream) = NodeTracer::start(spec)?;
        tracing::debug!(
            "tracer on {} devices after {} ms",
            tracer.attached_devices(),
            started.elapsed().as_millis()
        );
        for why in &tracer.unavailable {
            eprintln!("netpath: not available on this kernel: {why}");
        }
        // Passive mode always says when it is ready: whoever makes the traffic waits for it.
        if args.passive || (!args.json && std::io::stderr().is_terminal()) {
            eprintln!(
                "netpath: tracing {} device(s), {}",
                tracer.attached_devices(),
                if args.passive {
                    format!("waiting {:.0} s for traffic", timeout.as_secs_f64())
                } else {
                    "probing".to_string()
                }
            );
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, p) in planned.iter().enumerate() {
            if let Some(probe) = p.probe.clone() {
                let cancel = p.cancel.clone();
                tasks.spawn_blocking(move || (i, probe::run(&probe, timeout, cancel)));
            }
        }
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_millis(300);
        let mut settle: Option<tokio::time::Instant> = None;
        let host = hostname();
        loop {
            let wake = settle.unwrap_or(deadline).min(deadline);
            tokio::select! {
                item = stream.next() => match item {
                    Some(StreamItem::Event(mut ev)) => {
                        if let Some(node) = node_of.get(&ev.netns) {
                            ev.node = node.clone();
                        } else {
                            ev.node = host.clone();
                        }
                        if settles(&ev) {
                            for p in planned.iter_mut() {
                                if p.matcher.is_some_and(|m| m.is_request(&ev) || m.is_reply(&ev)) {
                                    p.decided = true;
                                    p.cancel.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                        events.push(*ev);
                    }
                    Some(StreamItem::Lost { count, .. }) => lost += count,
                    None => break,
                },
                done = tasks.join_next(), if !tasks.is_empty() => {
                    if let Some(Ok((i, result))) = done {
                        let p = &mut planned[i];
                        p.outcome = result.with_context(|| format!("{} probe", trace::family_name(trace::family_number(p.family))))?;
                    }
                    tracing::debug!("probe done after {} ms", started.elapsed().as_millis());
                    if tasks.is_empty() {
                        // Trailing events (the answer's last hops) are still in the ring.
                        settle = Some(tokio::time::Instant::now() + Duration::from_millis(120));
                    }
                },
                _ = tokio::time::sleep_until(wake) => break,
                _ = tokio::signal::ctrl_c() => {
                    for p in &planned { p.cancel.store(true, Ordering::Relaxed); }
                    bail!("interrupted");
                }
            }
        }
        for p in &planned {
            p.cancel.store(true, Ordering::Relaxed);
        }
        lost += tracer.lost().saturating_sub(lost);
        tracing::debug!(
            "events collected after {} ms",
            started.elapsed().as_millis()
        );
        attached = Some(tracer);
        let _ = tasks.join_all().await;
    }

    for p in &mut planned {
        if args.passive {
            passive_match(p, &from, &to, &events);
        }
        let Some(matcher) = p.matcher else {
            let mut r = FamilyReport::new(
                p.family,
                tracer::trace::Verdict::LostInTransit,
                if args.passive {
                    format!(
                        "no {} traffic from {} to {} was seen in {:.0} s",
                        trace::family_name(trace::family_number(p.family)),
                        from.name,
                        to.name,
                        timeout.as_secs_f64()
                    )
                } else {
                    format!(
                        "the probe could not be sent: {}",
                        p.outcome.send_error.as_deref().unwrap_or("unknown error")
                    )
                },
            );
            r.cause = Some(tracer::trace::Cause::NoAnswer);
            r.src = Some(p.src);
            r.dst = Some(p.dst);
            reports.push(r);
            continue;
        };
        let src_node_netns = from
            .node
            .as_deref()
            .and_then(|n| resolver.resolve(n).ok())
            .and_then(|n| n.netns);
        // The destination after DNAT decides which node it lives on.
        let request = tracer::trace::path::rebuild(&events, |e| matcher.is_request(e));
        let final_dst = request
            .hops
            .iter()
            .rev()
            .find_map(|h| h.dst)
            .unwrap_or(p.dst);
        let dst_node = to.node.clone().or_else(|| {
            resolver
                .resolve(&final_dst.to_string())
                .ok()
                .and_then(|e| e.node)
        });
        let dst_node_addr = dst_node
            .as_deref()
            .and_then(|n| resolver.resolve(n).ok())
            .and_then(|n| n.addr(p.family));
        let t = FamilyTrace {
            family: p.family,
            from: &from,
            to: &to,
            src: p.src,
            dst: p.dst,
            kind: p.kind,
            matcher,
            outcome: p.outcome.clone(),
            src_node_netns,
            dst_node_addr,
        };
        reports.push(trace::analyze(&t, &events, &inspector));
    }
    reports.sort_by_key(|r| r.family);
    tracing::debug!("diagnosed after {} ms", started.elapsed().as_millis());
    let report = TraceReport {
        from,
        to,
        verdicts: reports,
        lost_events: lost,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        render(&report, Style { color })
    };
    // A closed stdout (`| head`) is not an error worth a panic; the exit code still tells.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    drop(out);
    drop(attached);
    tracing::debug!("tracer detached after {} ms", started.elapsed().as_millis());
    Ok(report.exit_code())
}

/// Devices to trace: every device of every namespace connected to FROM's and TO's (veth
/// peers, tunnels: the lab's nodes, pods and underlay, or namespaces built by hand), plus the
/// lab's namespaces.
fn tracer_spec(
    args: &TraceArgs,
    from: &Endpoint,
    to: &Endpoint,
    node_of: &HashMap<String, String>,
) -> Result<TracerSpec> {
    let mut start: Vec<String> = [&from.netns, &to.netns]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    start.extend(node_of.keys().cloned());
    let mut namespaces = netns::connected(&start, 256);
    namespaces.sort();
    Ok(TracerSpec {
        devices: namespaces
            .into_iter()
            .map(|netns| DeviceSelector {
                netns,
                pattern: "*".into(),
            })
            .collect(),
        all_devices: false,
        drops: true,
        dev_hops: false,
        routes: true,
        // Neighbour state is read from the namespace when it matters (fewer programs to verify).
        neigh: false,
        filter: filter_for(from)?,
        ring_bytes: args.ring_kib * 1024,
        ..TracerSpec::default()
    })
}

/// Passive mode: the first packet from FROM to TO of this family becomes the "probe", and its
/// answer (if one was seen arriving back in FROM's namespace) the reply.
fn passive_match(p: &mut Planned, from: &Endpoint, to: &Endpoint, events: &[Event]) {
    let fam = trace::family_number(p.family);
    let to_addrs: Vec<IpAddr> = to
        .addrs()
        .chain(to.backends.iter().map(|b| b.ip()))
        .collect();
    let first = events
        .iter()
        .filter(|e| e.kind == EventKind::Hop && e.family == fam)
        .filter(|e| e.src.is_some_and(|s| from.addrs().any(|a| a == s)))
        .filter(|e| e.dst.is_some_and(|d| to_addrs.contains(&d)))
        .min_by_key(|e| e.ts_ns);
    let Some(e) = first else {
        return;
    };
    let f = e.parsed.innermost();
    let (src, sport) = (e.src.expect("filtered"), e.sport);
    p.src = src;
    p.dst = e.dst.unwrap_or(p.dst);
    p.matcher = match (e.proto, sport) {
        ("icmp" | "icmp6", _) => Some(ProbeMatch::Echo {
            family: fam,
            id: (f.l4_ident >> 16) as u16,
            seq: f.l4_ident as u16,
        }),
        (proto @ ("tcp" | "udp"), Some(port)) => {
            p.kind = if proto == "tcp" {
                ProbeKind::Tcp {
                    port: e.dport.unwrap_or(0),
                }
            } else {
                ProbeKind::Udp {
                    port: e.dport.unwrap_or(0),
                }
            };
            Some(ProbeMatch::Transport {
                family: fam,
                proto: proto_number(proto),
                addr: src,
                port,
            })
        }
        _ => None,
    };
    if let (Some(m), Some(ns)) = (p.matcher, from.netns.as_deref()) {
        let reply = tracer::trace::path::rebuild(events, |e| m.is_reply(e));
        if reply.reached(ns) {
            p.outcome.reply = Some(match p.kind {
                ProbeKind::Icmp => Reply::EchoReply,
                ProbeKind::Tcp { .. } => Reply::SynAck,
                ProbeKind::Udp { .. } => Reply::Datagram,
            });
        }
    }
}
