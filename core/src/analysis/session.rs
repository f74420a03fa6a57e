//! One `netpath trace`: resolve both ends, open the event streams, send a probe per family,
//! collect until every family is decided, and diagnose. Everything it needs from the world
//! goes through [`World`], so the same session runs on one machine and across node agents.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{stream::FuturesUnordered, StreamExt};

use crate::{
    analysis::{
        diagnose::{analyze, is_socket_level_drop, unprobed, FamilyTrace},
        path::{rebuild, ProbeMatch},
    },
    model::{
        looks_like_a_dns_name, Cause, Endpoint, EndpointKind, Event, EventKind, Family,
        FamilyReport, NameAnswer, Place, Probe, ProbeKind, ProbeOutcome, Proto, TraceReport,
        Verdict,
    },
    world::{Cancel, ResolveError, Scope, StreamItem, World, WorldError},
};

/// A validated trace request (the CLI's flags, checked).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    pub from: String,
    /// What to reach: an endpoint spec (`pod-c`, `svc/web`, an address).
    pub to: String,
    /// TCP SYN (or UDP) to this port instead of ICMP echo; Services default to their port.
    pub port: Option<u16>,
    pub udp: bool,
    /// Payload bytes of ICMP/UDP probes (sent without fragmentation).
    pub size: u16,
    /// Send nothing: wait for real traffic between the two.
    pub passive: bool,
    /// How long to wait for answers (active) or traffic (passive).
    pub timeout: Duration,
    /// Only this family.
    pub family: Option<Family>,
    /// Event buffer per node, in bytes.
    pub ring_bytes: u32,
    /// Identifies this run's probes (ICMP ids and source ports derive from it).
    pub run_id: u16,
    /// Kernel functions (a glob) to follow the packets through as well (`--functions`).
    pub functions: Option<String>,
}

impl TraceConfig {
    /// The default wait: 2 s for probes (a first packet may wait 1 s for a neighbour), 10 s for
    /// traffic.
    pub fn default_timeout(passive: bool) -> Duration {
        Duration::from_secs(if passive { 10 } else { 2 })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    World(#[from] WorldError),
    #[error("{0}")]
    Invalid(String),
}

/// What the session tells its user while it runs (the CLI prints these on stderr).
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A feature the event source could not use.
    Unavailable(String),
    /// What the event source made of an optional request (`--functions`).
    Note(String),
    /// The streams are open: `devices` attached, now probing (or waiting for traffic).
    Tracing {
        devices: usize,
        passive: bool,
        wait: Duration,
    },
}

/// A finished trace: the report, and the streams, still attached (detaching takes time: the
/// caller drops them after printing the report).
pub struct Traced {
    pub report: TraceReport,
    pub streams: Vec<Box<dyn crate::world::EventStream>>,
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
    cancel: Cancel,
}

/// Families to ask: `--family`, else both; a bare address is one family.
fn families(config: &TraceConfig, to: &Endpoint, named: bool) -> Vec<Family> {
    match config.family {
        Some(f) => vec![f],
        // A DNS name is asked in both families: one it has no record of is an answer too.
        None if to.kind == EndpointKind::Address && !named => {
            to.addrs().map(|a| Family::of(&a)).take(1).collect()
        }
        None => Family::BOTH.to_vec(),
    }
}

/// Is this event a drop that settles a probe (not the socket layer discarding a delivered
/// packet)?
fn settles(e: &Event) -> bool {
    e.kind == EventKind::Drop
        && !is_socket_level_drop(
            e.reason().unwrap_or_default(),
            e.function().unwrap_or_default(),
        )
}

fn kind_of(config: &TraceConfig, to: &Endpoint) -> ProbeKind {
    match (config.port.or(to.port), config.udp) {
        (Some(port), true) => ProbeKind::Udp { port },
        (Some(port), false) => ProbeKind::Tcp { port },
        (None, _) => ProbeKind::Icmp,
    }
}

fn matcher_for(family: Family, kind: ProbeKind, src: IpAddr, probe: &Probe) -> ProbeMatch {
    match kind {
        ProbeKind::Icmp => ProbeMatch::Echo {
            family,
            id: probe.echo_id,
            seq: probe.echo_seq,
        },
        ProbeKind::Tcp { .. } | ProbeKind::Udp { .. } => ProbeMatch::Transport {
            family,
            proto: if matches!(kind, ProbeKind::Udp { .. }) {
                Proto::Udp
            } else {
                Proto::Tcp
            },
            addr: src,
            port: probe.sport,
        },
    }
}

/// Runs one trace through `world`, telling `notify` what it is doing.
pub async fn trace(
    world: World<'_>,
    config: &TraceConfig,
    notify: &(dyn Fn(Notice) + Send + Sync),
) -> Result<Traced, TraceError> {
    let started = Instant::now();
    let from = world.resolver.resolve(&config.from).await?;
    let Some(src_place) = from.place() else {
        return Err(TraceError::Invalid(format!(
            "{} is not in a network namespace here: FROM must be a pod, a node, netns:NAME or an \
             address one of them holds",
            from.name
        )));
    };
    if from.addrs().next().is_none() {
        return Err(TraceError::Invalid(format!(
            "{} has no address to trace",
            from.name
        )));
    }
    let (to, named) = resolve_destination(world, config, &src_place).await?;
    let kind = kind_of(config, &to);

    // Families a side has no address for are answered without probing.
    let mut reports: Vec<FamilyReport> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    for (i, family) in families(config, &to, named.is_some())
        .into_iter()
        .enumerate()
    {
        if let Some(name) = &named {
            if to.addr(family).is_none() {
                reports.push(name_lacks_family(family, name));
                continue;
            }
        }
        if let Some(r) = unprobed(family, &from, &to, world.inspector).await {
            reports.push(r);
            continue;
        }
        let (Some(src), Some(dst)) = (from.addr(family), to.addr(family)) else {
            continue; // unprobed() answered every family a side lacks
        };
        let i = i as u16;
        let probe = Probe {
            from: src_place.clone(),
            src,
            dst,
            kind,
            echo_id: config.run_id.wrapping_add(i.wrapping_mul(7919)),
            echo_seq: 1,
            // An ephemeral-range port unlikely to be in use, different per family and run.
            sport: 40_000 + (config.run_id % 10_000).wrapping_mul(2) + i,
            size: config.size as usize,
        };
        let matcher = (!config.passive).then(|| matcher_for(family, kind, src, &probe));
        planned.push(Planned {
            family,
            src,
            dst,
            kind,
            probe: (!config.passive).then_some(probe),
            matcher,
            outcome: ProbeOutcome::default(),
            cancel: Arc::new(AtomicBool::new(false)),
        });
    }

    let node_of: HashMap<String, String> =
        world.resolver.node_namespaces().await.into_iter().collect();
    let mut events: Vec<Event> = Vec::new();
    let mut lost = 0u64;
    let mut streams = Vec::new();
    if !planned.is_empty() {
        let mut places = vec![src_place.clone()];
        places.extend(to.place());
        // Every namespace of the nodes the resolver knows: the path may cross any of them.
        places.extend(
            node_of
                .iter()
                .map(|(ns, node)| Place::new(node.clone(), ns.clone())),
        );
        let scope = Scope {
            places,
            addrs: from.addrs().collect(),
            non_ip: false,
            drops: true,
            routes: true,
            ring_bytes: config.ring_bytes,
            functions: config.functions.clone(),
        };
        let mut stream = world.events.open(&scope).await?;
        tracing::debug!(
            "streaming from {} devices after {} ms",
            stream.devices(),
            started.elapsed().as_millis()
        );
        for why in stream.unavailable() {
            notify(Notice::Unavailable(why));
        }
        for note in stream.notes() {
            notify(Notice::Note(note));
        }
        notify(Notice::Tracing {
            devices: stream.devices(),
            passive: config.passive,
            wait: config.timeout,
        });
        let nodes = Nodes {
            of_netns: &node_of,
            src: from.node.clone(),
            dst: to.node.clone(),
        };
        collect(
            world,
            config,
            &nodes,
            &mut planned,
            stream.as_mut(),
            &mut events,
            &mut lost,
        )
        .await?;
        lost = lost.max(stream.lost());
        streams.push(stream);
    }

    for p in &mut planned {
        if config.passive {
            passive_match(p, &from, &to, &events);
        }
        let Some(matcher) = p.matcher else {
            let mut r = FamilyReport::new(
                p.family,
                Verdict::LostInTransit,
                if config.passive {
                    format!(
                        "no {} traffic from {} to {} was seen in {:.0} s",
                        p.family,
                        from.name,
                        to.name,
                        config.timeout.as_secs_f64()
                    )
                } else {
                    format!(
                        "the probe could not be sent: {}",
                        p.outcome.send_error.as_deref().unwrap_or("unknown error")
                    )
                },
            );
            r.cause = Some(Cause::NoAnswer);
            r.src = Some(p.src);
            r.dst = Some(p.dst);
            reports.push(r);
            continue;
        };
        let src_node_netns = match from.node.as_deref() {
            Some(n) => world.resolver.resolve(n).await.ok().and_then(|n| n.netns),
            None => None,
        };
        // The destination after DNAT decides which node it lives on.
        let request = rebuild(&events, |e| matcher.is_request(e));
        let final_dst = request
            .hops
            .iter()
            .rev()
            .find_map(|h| h.dst)
            .unwrap_or(p.dst);
        let dst_node = match to.node.clone() {
            Some(n) => Some(n),
            None => world
                .resolver
                .resolve(&final_dst.to_string())
                .await
                .ok()
                .and_then(|e| e.node),
        };
        let dst_node_addr = match dst_node.as_deref() {
            Some(n) => world
                .resolver
                .resolve(n)
                .await
                .ok()
                .and_then(|n| n.addr(p.family)),
            None => None,
        };
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
        reports.push(analyze(&t, &events, world.inspector).await);
    }
    reports.sort_by_key(|r| r.family);
    if let Some(name) = &named {
        for r in &mut reports {
            r.evidence.push(name_evidence(&name.answer));
        }
    }
    super::differential::compare_families(&mut reports, &from, &to, world.inspector).await;
    super::nexthop::name_the_silent_receiver(&mut reports, world, &to, &node_of).await;
    super::nexthop::follow_unanswered_next_hops(
        &mut reports,
        world,
        &to,
        &node_of,
        config.ring_bytes,
        config.run_id,
    )
    .await;
    if lost > 0 {
        for r in &mut reports {
            note_lost(r, lost);
        }
    }
    tracing::debug!("diagnosed after {} ms", started.elapsed().as_millis());
    Ok(Traced {
        report: TraceReport {
            schema_version: TraceReport::SCHEMA_VERSION,
            from,
            to,
            verdicts: reports,
            lost_events: lost,
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
        streams,
    })
}

/// A destination given as a DNS name: what the source's resolver answered, and what the
/// resolver of names here knows of the first address (a pod, a Service).
struct Named {
    answer: NameAnswer,
    /// The endpoint the name points at as known here, before the name's own families were
    /// applied (its addresses of both families, a Service's ClusterIPs).
    known: Option<Endpoint>,
}

/// Resolves TO; a DNS name nothing here knows is looked up as the source would look it up.
async fn resolve_destination(
    world: World<'_>,
    config: &TraceConfig,
    src_place: &Place,
) -> Result<(Endpoint, Option<Named>), TraceError> {
    let unknown = match world.resolver.resolve(&config.to).await {
        Ok(to) => return Ok((to, None)),
        Err(e @ ResolveError::Unknown { .. }) if looks_like_a_dns_name(&config.to) => e,
        Err(e) => return Err(e.into()),
    };
    let answer = match world.prober.lookup(src_place, &config.to).await {
        Ok(a) if !a.addrs.is_empty() => a,
        Ok(a) => {
            return Err(TraceError::Invalid(format!(
                "{unknown}; as a DNS name from {}: {} has no A or AAAA record ({} from {})",
                src_place.netns, a.name, a.rcode, a.server
            )))
        }
        Err(e) => {
            return Err(TraceError::Invalid(format!(
                "{unknown}; as a DNS name from {}: {e}",
                src_place.netns
            )))
        }
    };
    let known = match answer.addrs.first() {
        Some(a) => world.resolver.resolve(&a.to_string()).await.ok(),
        None => None,
    };
    let mut to = known
        .clone()
        .unwrap_or_else(|| Endpoint::new(config.to.clone(), EndpointKind::Address));
    // The name's records decide the families, whatever the endpoint behind them has.
    to.name = config.to.clone();
    to.ipv4 = answer
        .addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v) => Some(*v),
            IpAddr::V6(_) => None,
        })
        .collect();
    to.ipv6 = answer
        .addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(v) => Some(*v),
            IpAddr::V4(_) => None,
        })
        .collect();
    Ok((to, Some(Named { answer, known })))
}

fn name_evidence(a: &NameAnswer) -> String {
    let addrs: Vec<String> = a.addrs.iter().map(|a| a.to_string()).collect();
    format!(
        "dns: {} -> {} ({} from {})",
        a.name,
        if addrs.is_empty() {
            "nothing".to_string()
        } else {
            addrs.join(", ")
        },
        a.rcode,
        a.server
    )
}

/// A family the destination's name has no record of: the wrong family for this name, with
/// why (a single-stack Service, or a record missing for an address that exists).
fn name_lacks_family(family: Family, name: &Named) -> FamilyReport {
    let (fam, record) = match family {
        Family::Ipv4 => (family.name(), "A"),
        Family::Ipv6 => (family.name(), "AAAA"),
    };
    let n = &name.answer.name;
    let mut summary = format!(
        "{n} has no {record} record ({} answered {} with {} only)",
        name.answer.server,
        name.answer.rcode,
        family.other().name()
    );
    let hint = match &name.known {
        Some(k) if k.kind == EndpointKind::Service && k.addr(family).is_none() => {
            summary.push_str(&format!(
                ": the Service {} is single-stack ({} only)",
                k.name,
                family.other().name()
            ));
            format!(
                "make the Service dual-stack (ipFamilyPolicy: PreferDualStack) so that its name \
                 gets an {record} record"
            )
        }
        Some(k) if k.addr(family).is_some() => {
            let addr = k.addr(family).map(|a| a.to_string()).unwrap_or_default();
            summary.push_str(&format!(
                ", yet {} has the {fam} address {addr}: the record is missing",
                k.name
            ));
            format!("add an {record} record for {n} -> {addr}")
        }
        _ => format!(
            "add an {record} record for {n}, or use {} towards it",
            family.other().name()
        ),
    };
    let mut r = FamilyReport::new(family, Verdict::WrongFamily, summary);
    r.cause = Some(Cause::WrongFamily);
    r.hint = Some(hint);
    r.evidence.push(name_evidence(&name.answer));
    r
}

/// Events the tracer lost (its ring buffer was full) may have been this packet's: every
/// verdict says so in its evidence, and one that rests on something not being seen says it
/// may be wrong.
fn note_lost(r: &mut FamilyReport, lost: u64) {
    if r.verdict == Verdict::LostInTransit {
        r.summary.push_str(&format!(
            " ({lost} events were lost: it may have been seen and not reported)"
        ));
    }
    r.evidence.push(format!(
        "{lost} events were lost during the trace (ring buffer full): hops or a drop of this \
         packet may be missing; a larger ring buffer (--ring-kib) or fewer devices helps"
    ));
}

/// After the last probe, events still arriving are waited for at least this long...
const SETTLE_MIN: Duration = Duration::from_millis(120);
/// ...and until none came for this long...
const SETTLE_QUIET: Duration = Duration::from_millis(150);
/// ...but no longer than this.
const SETTLE_MAX: Duration = Duration::from_millis(1000);

/// Sends the probes and gathers events until every family is decided (an answer, or a drop
/// that settles it) and the trailing events are in, or the wait is over.
async fn collect(
    world: World<'_>,
    config: &TraceConfig,
    nodes: &Nodes<'_>,
    planned: &mut [Planned],
    stream: &mut dyn crate::world::EventStream,
    events: &mut Vec<Event>,
    lost: &mut u64,
) -> Result<(), TraceError> {
    let started = Instant::now();
    let mut probes = send_probes(world, planned, config.timeout);
    let deadline = tokio::time::Instant::now() + config.timeout + Duration::from_millis(300);
    // Once the probes are done and each sent probe's packets have been seen on the nodes they
    // must have crossed: when the trailing events are in. At least SETTLE_MIN after that, and
    // until no event came for SETTLE_QUIET (a remote agent's stream, or a busy node, delivers
    // later than a local ring buffer), but never past SETTLE_MAX. A probe that went out with
    // none of its events in yet from the source's node, or that was answered with none in yet
    // from the destination's node, has them still on the way (an agent whose first events
    // take seconds, as one under emulation does): they are waited for until the deadline.
    let mut seen = vec![Seen::default(); planned.len()];
    // (Passive traces send nothing: they wait for traffic until the deadline.)
    let mut probes_done = false;
    let mut caught_up: Option<tokio::time::Instant> = None;
    let mut last_event = tokio::time::Instant::now();
    loop {
        if caught_up.is_none() && probes_done && !awaiting_events(planned, &seen, nodes) {
            caught_up = Some(tokio::time::Instant::now());
        }
        let settle = caught_up.map(|from| {
            (from + SETTLE_MIN)
                .max(last_event + SETTLE_QUIET)
                .min(from + SETTLE_MAX)
        });
        let wake = settle.unwrap_or(deadline).min(deadline);
        tokio::select! {
            item = stream.next() => match item {
                Some(StreamItem::Event(mut ev)) => {
                    // Events of namespaces the resolver places on a node are that node's.
                    if let Some(node) = nodes.of_netns.get(&ev.netns) {
                        ev.node = node.clone();
                    }
                    let settling = settles(&ev);
                    for (p, seen) in planned.iter().zip(seen.iter_mut()) {
                        if p.matcher.is_some_and(|m| m.is_request(&ev) || m.is_reply(&ev)) {
                            seen.note(&ev, nodes);
                            if settling {
                                p.cancel.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    events.push(*ev);
                    last_event = tokio::time::Instant::now();
                }
                Some(StreamItem::Lost { count, .. }) => *lost += count,
                None => break,
            },
            done = probes.next(), if !probes.is_empty() => {
                if let Some((i, result)) = done {
                    planned[i].outcome = result.map_err(|e| match e {
                        WorldError::Other(m) => WorldError::Other(format!("{} probe: {m}", planned[i].family)),
                        other => other,
                    })?;
                }
                tracing::debug!("probe done after {} ms", started.elapsed().as_millis());
                probes_done = probes.is_empty();
            },
            _ = tokio::time::sleep_until(wake) => break,
        }
    }
    for p in planned.iter() {
        p.cancel.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Nodes as the resolver knows them: of namespaces (their events are that node's), and of
/// the trace's ends (when it placed them).
struct Nodes<'a> {
    of_netns: &'a HashMap<String, String>,
    src: Option<String>,
    dst: Option<String>,
}

/// Where a probe's packets have been seen so far.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// On the source's node (anywhere, when its node is not known).
    src: bool,
    /// On the destination's node.
    dst: bool,
}

impl Seen {
    fn note(&mut self, ev: &Event, nodes: &Nodes) {
        let on = |node: &Option<String>| node.as_deref().is_none_or(|n| n == ev.node);
        self.src |= on(&nodes.src);
        self.dst |= nodes.dst.is_some() && on(&nodes.dst);
    }
}

/// A probe went out (it has a matcher and no send error) and its packets have not been seen
/// yet on the source's node, or it was answered and they have not been seen yet on the
/// destination's node: those nodes' events are still on their way.
fn awaiting_events(planned: &[Planned], seen: &[Seen], nodes: &Nodes) -> bool {
    planned.iter().zip(seen).any(|(p, seen)| {
        let sent = p.probe.is_some() && p.matcher.is_some() && p.outcome.send_error.is_none();
        let answered = p.outcome.reply.as_ref().is_some_and(|r| r.is_answer());
        sent && (!seen.src || (answered && nodes.dst.is_some() && !seen.dst))
    })
}

type ProbeFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (usize, Result<ProbeOutcome, WorldError>)> + Send + 'a>,
>;

/// The planned probes, sent at once; each resolves to (index in `planned`, outcome).
fn send_probes<'a>(
    world: World<'a>,
    planned: &[Planned],
    timeout: Duration,
) -> FuturesUnordered<ProbeFuture<'a>> {
    planned
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let probe = p.probe.clone()?;
            let cancel = p.cancel.clone();
            let fut: ProbeFuture<'a> =
                Box::pin(async move { (i, world.prober.send(&probe, timeout, cancel).await) });
            Some(fut)
        })
        .collect()
}

/// Passive mode: the first packet from FROM to TO of this family becomes the "probe", and its
/// answer (if one was seen arriving back in FROM's namespace) the reply.
fn passive_match(p: &mut Planned, from: &Endpoint, to: &Endpoint, events: &[Event]) {
    let to_addrs: Vec<IpAddr> = to
        .addrs()
        .chain(to.backends.iter().map(|b| b.ip()))
        .collect();
    let first = events
        .iter()
        .filter(|e| e.kind == EventKind::Hop && e.flow.family == Some(p.family))
        .filter(|e| e.flow.src.is_some_and(|s| from.addrs().any(|a| a == s)))
        .filter(|e| e.flow.dst.is_some_and(|d| to_addrs.contains(&d)))
        .min_by_key(|e| e.ts_ns);
    let Some(e) = first else {
        return;
    };
    let ident = e.ident();
    let Some(src) = e.flow.src else {
        return;
    };
    p.src = src;
    p.dst = e.flow.dst.unwrap_or(p.dst);
    p.matcher = match (e.flow.proto, e.flow.sport) {
        (Proto::Icmp | Proto::Icmp6, _) => Some(ProbeMatch::Echo {
            family: p.family,
            id: (ident.l4_ident >> 16) as u16,
            seq: ident.l4_ident as u16,
        }),
        (proto @ (Proto::Tcp | Proto::Udp), Some(port)) => {
            let dport = e.flow.dport.unwrap_or(0);
            p.kind = if proto == Proto::Tcp {
                ProbeKind::Tcp { port: dport }
            } else {
                ProbeKind::Udp { port: dport }
            };
            Some(ProbeMatch::Transport {
                family: p.family,
                proto,
                addr: src,
                port,
            })
        }
        _ => None,
    };
    if let (Some(m), Some(ns)) = (p.matcher, from.netns.as_deref()) {
        let reply = rebuild(events, |e| m.is_reply(e));
        if reply.reached(ns) {
            p.outcome.reply = Some(p.kind.expected_reply());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;
    use crate::{
        model::{Direction, DropSection, FlowKey, Hook, PacketIdent, PacketSection, Reply},
        world::{EventSource, EventStream, Prober, Resolver},
    };

    #[test]
    fn a_family_a_name_lacks_says_whether_the_service_or_the_record_is_at_fault() {
        let answer = NameAnswer {
            name: "web.default.svc.cluster.local".into(),
            server: "10.96.0.10".parse().unwrap(),
            rcode: "NOERROR".into(),
            addrs: vec!["10.96.0.20".parse().unwrap()],
        };
        let service = |v6: &[&str]| {
            let mut e = Endpoint::new("svc/web", EndpointKind::Service).with_addrs(
                std::iter::once("10.96.0.20")
                    .chain(v6.iter().copied())
                    .map(|a| a.parse::<IpAddr>().unwrap()),
            );
            e.port = Some(80);
            e
        };
        let single = Named {
            answer: answer.clone(),
            known: Some(service(&[])),
        };
        let r = name_lacks_family(Family::Ipv6, &single);
        assert_eq!(
            (r.verdict, r.cause),
            (Verdict::WrongFamily, Some(Cause::WrongFamily))
        );
        assert!(r.summary.contains("has no AAAA record"), "{}", r.summary);
        assert!(
            r.summary.contains("single-stack (IPv4 only)"),
            "{}",
            r.summary
        );
        assert!(r.hint.unwrap().contains("PreferDualStack"));
        let dual = Named {
            answer: answer.clone(),
            known: Some(service(&["fd00:10:96::20"])),
        };
        let r = name_lacks_family(Family::Ipv6, &dual);
        assert!(r.summary.contains("the record is missing"), "{}", r.summary);
        assert!(r.hint.unwrap().contains("fd00:10:96::20"));
        let unknown = Named {
            answer,
            known: None,
        };
        let r = name_lacks_family(Family::Ipv6, &unknown);
        assert!(r.evidence[0].starts_with("dns: web.default.svc.cluster.local -> 10.96.0.20"));
    }

    /// pod-a (np-pod-a on node-1) and pod-c (np-pod-c on node-2); pod-d has IPv4 only.
    struct Names;

    #[async_trait]
    impl Resolver for Names {
        async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError> {
            let (netns, node, addrs): (&str, &str, &[&str]) = match spec {
                "pod-a" => ("np-pod-a", "node-1", &["10.244.1.2", "fd00:10:244:1::2"]),
                "pod-c" => ("np-pod-c", "node-2", &["10.244.2.2", "fd00:10:244:2::2"]),
                "pod-d" => ("np-pod-d", "node-2", &["10.244.2.3"]),
                _ => {
                    return Err(ResolveError::Unknown {
                        spec: spec.into(),
                        known: "pod-a, pod-c, pod-d".into(),
                    })
                }
            };
            let mut e = Endpoint::new(spec, EndpointKind::Pod)
                .with_addrs(addrs.iter().map(|a| a.parse::<IpAddr>().unwrap()));
            e.netns = Some(netns.into());
            e.node = Some(node.into());
            Ok(e)
        }

        async fn node_namespaces(&self) -> Vec<(String, String)> {
            vec![
                ("np-pod-a".into(), "node-1".into()),
                ("np-pod-c".into(), "node-2".into()),
            ]
        }
    }

    /// A network where IPv4 works and IPv6 dies at node-1: each probe's packets appear on
    /// the stream as the kernel would report them.
    struct Network {
        tx: Mutex<Option<mpsc::UnboundedSender<StreamItem>>>,
        rx: Mutex<Option<mpsc::UnboundedReceiver<StreamItem>>>,
        sent: Mutex<Vec<Probe>>,
        /// The IPv4 probe's events after the first reach the stream this long after its
        /// answer (an agent whose first events take seconds)...
        late: Option<Duration>,
        /// ...and the first too.
        late_first: bool,
    }

    impl Network {
        fn new() -> Self {
            let (tx, rx) = mpsc::unbounded_channel();
            Network {
                tx: Mutex::new(Some(tx)),
                rx: Mutex::new(Some(rx)),
                sent: Mutex::new(Vec::new()),
                late: None,
                late_first: false,
            }
        }
    }

    fn packet(p: &Probe, netns: &str, ttl: u8, reply: bool) -> Event {
        let (icmp_type, src, dst) = match (p.src.is_ipv6(), reply) {
            (false, false) => (8, p.src, p.dst),
            (false, true) => (0, p.dst, p.src),
            (true, false) => (128, p.src, p.dst),
            (true, true) => (129, p.dst, p.src),
        };
        Event {
            kind: EventKind::Hop,
            ts_ns: ttl as u64,
            node: "this-host".into(),
            netns: netns.into(),
            netns_inode: 1,
            ifname: "eth0".into(),
            ifindex: 2,
            dir: Direction::Egress,
            hook: Hook::TcEgress,
            flow: FlowKey {
                family: Some(Family::of(&p.src)),
                src: Some(src),
                dst: Some(dst),
                proto: if p.src.is_ipv6() {
                    Proto::Icmp6
                } else {
                    Proto::Icmp
                },
                sport: None,
                dport: None,
            },
            packet: Some(PacketSection {
                icmp: None,
                len: 84,
                pkt_id: format!("{}-{reply}", p.echo_id),
                tunnel: None,
                skb: "0".into(),
                ident: PacketIdent {
                    ttl,
                    icmp_type,
                    l4_ident: (p.echo_id as u32) << 16 | p.echo_seq as u32,
                    ..PacketIdent::default()
                },
                function: None,
            }),
            drop: None,
            route: None,
            neigh: None,
        }
    }

    #[async_trait]
    impl Prober for Network {
        async fn send(
            &self,
            probe: &Probe,
            timeout: Duration,
            cancel: Cancel,
        ) -> Result<ProbeOutcome, WorldError> {
            self.sent.lock().unwrap().push(probe.clone());
            let tx = self.tx.lock().unwrap().clone().unwrap();
            let out = |e: Event| tx.send(StreamItem::Event(Box::new(e))).unwrap();
            let first = packet(probe, "np-pod-a", 64, false);
            let late_first = self.late_first && probe.src.is_ipv4();
            if !late_first {
                out(first.clone());
            }
            if probe.src.is_ipv4() {
                let mut trailing = vec![
                    packet(probe, "np-pod-c", 63, false),
                    packet(probe, "np-pod-a", 63, true),
                ];
                if late_first {
                    trailing.insert(0, first);
                }
                match self.late {
                    Some(after) => {
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            for e in trailing {
                                let _ = tx.send(StreamItem::Event(Box::new(e)));
                            }
                        });
                    }
                    None => trailing.into_iter().for_each(out),
                }
                return Ok(ProbeOutcome {
                    reply: Some(Reply::EchoReply),
                    rtt_us: Some(100),
                    ..ProbeOutcome::default()
                });
            }
            let mut drop = packet(probe, "np-node-1", 63, false);
            drop.kind = EventKind::Drop;
            drop.hook = Hook::KfreeSkb;
            drop.drop = Some(DropSection {
                reason: "IP_INNOROUTES".into(),
                location: Some("ip6_pkt_discard+0x11".into()),
            });
            out(drop);
            // The drop settles the family: the wait ends long before the timeout.
            let waited = std::time::Instant::now();
            while !cancel.load(Ordering::Relaxed) && waited.elapsed() < timeout {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(ProbeOutcome::default())
        }
    }

    struct Stream(mpsc::UnboundedReceiver<StreamItem>);

    #[async_trait]
    impl EventStream for Stream {
        async fn next(&mut self) -> Option<StreamItem> {
            self.0.recv().await
        }
        fn lost(&self) -> u64 {
            0
        }
        fn devices(&self) -> usize {
            4
        }
        fn unavailable(&self) -> Vec<String> {
            vec!["fentry: EPERM".into()]
        }
    }

    #[async_trait]
    impl EventSource for Network {
        async fn open(&self, scope: &Scope) -> Result<Box<dyn EventStream>, WorldError> {
            assert!(
                scope.places.contains(&Place::new("node-1", "np-pod-a")),
                "{scope:?}"
            );
            assert_eq!(scope.addrs.len(), 2, "filtered on the source's addresses");
            let rx = self
                .rx
                .lock()
                .unwrap()
                .take()
                .expect("one stream per trace");
            Ok(Box::new(Stream(rx)))
        }
    }

    fn config(to: &str) -> TraceConfig {
        TraceConfig {
            from: "pod-a".into(),
            to: to.into(),
            port: None,
            udp: false,
            size: 20,
            passive: false,
            timeout: Duration::from_secs(5),
            family: None,
            ring_bytes: 1 << 20,
            run_id: 4242,
            functions: None,
        }
    }

    #[tokio::test]
    async fn a_trace_probes_both_families_through_the_world_and_diagnoses_each() {
        let net = Network::new();
        let world = World {
            resolver: &Names,
            inspector: &crate::world::Unknowing,
            prober: &net,
            events: &net,
        };
        let notices = Mutex::new(Vec::new());
        let started = std::time::Instant::now();
        let traced = trace(world, &config("pod-c"), &|n| {
            notices.lock().unwrap().push(n)
        })
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a drop ends the wait"
        );
        let r = &traced.report;
        assert_eq!(r.verdicts.len(), 2);
        let (v4, v6) = (&r.verdicts[0], &r.verdicts[1]);
        assert_eq!((v4.family, v4.verdict), (Family::Ipv4, Verdict::Delivered));
        assert_eq!(v4.hops.len(), 2, "{v4:#?}");
        assert_eq!(
            v4.hops[1].node, "node-2",
            "events are labelled with their node"
        );
        assert_eq!((v6.family, v6.verdict), (Family::Ipv6, Verdict::Dropped));
        assert_eq!(v6.reason.as_deref(), Some("IP_INNOROUTES"));
        assert_eq!(v6.at.as_ref().unwrap().netns, "np-node-1");
        let sent = net.sent.lock().unwrap();
        assert_eq!(sent.len(), 2);
        assert_ne!(
            sent[0].echo_id, sent[1].echo_id,
            "each family its own probe"
        );
        assert!(sent
            .iter()
            .all(|p| p.from == Place::new("node-1", "np-pod-a")));
        let notices = notices.lock().unwrap();
        assert_eq!(notices[0], Notice::Unavailable("fentry: EPERM".into()));
        assert!(matches!(notices[1], Notice::Tracing { devices: 4, .. }));
        assert_eq!(r.exit_code(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_whose_events_are_late_is_waited_for_until_they_come() {
        // Late from both nodes, then only from the destination's.
        for late_first in [true, false] {
            let net = Network {
                late: Some(Duration::from_secs(3)),
                late_first,
                ..Network::new()
            };
            let world = World {
                resolver: &Names,
                inspector: &crate::world::Unknowing,
                prober: &net,
                events: &net,
            };
            let mut c = config("pod-c");
            c.family = Some(Family::Ipv4);
            let started = tokio::time::Instant::now();
            let r = trace(world, &c, &|_| {}).await.unwrap().report;
            let v4 = &r.verdicts[0];
            assert_eq!(v4.verdict, Verdict::Delivered);
            assert_eq!(v4.hops.len(), 2, "late_first {late_first}: {v4:#?}");
            assert_eq!(v4.reply_hops.len(), 1, "late_first {late_first}: {v4:#?}");
            // Waited for them, and not for the whole timeout once they were in.
            let took = started.elapsed();
            assert!(
                took >= Duration::from_secs(3) && took < c.timeout,
                "{took:?}"
            );
        }
    }

    #[tokio::test]
    async fn lost_events_reach_every_verdict() {
        let net = Network::new();
        let tx = net.tx.lock().unwrap().clone().unwrap();
        tx.send(StreamItem::Lost {
            node: "node-1".into(),
            count: 7,
        })
        .unwrap();
        let world = World {
            resolver: &Names,
            inspector: &crate::world::Unknowing,
            prober: &net,
            events: &net,
        };
        let r = trace(world, &config("pod-c"), &|_| {})
            .await
            .unwrap()
            .report;
        assert_eq!(r.lost_events, 7);
        assert_eq!(r.verdicts.len(), 2);
        for v in &r.verdicts {
            assert!(
                v.evidence.iter().any(|e| e.contains("7 events were lost")),
                "{v:#?}"
            );
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["lost_events"], 7);
        assert!(json["verdicts"][1]["evidence"]
            .to_string()
            .contains("7 events were lost"));
    }

    #[tokio::test]
    async fn families_a_side_lacks_are_answered_without_opening_a_stream() {
        let net = Network::new();
        let world = World {
            resolver: &Names,
            inspector: &crate::world::Unknowing,
            prober: &net,
            events: &net,
        };
        let mut c = config("pod-d");
        c.family = Some(Family::Ipv6);
        let traced = trace(world, &c, &|_| {}).await.unwrap();
        assert_eq!(traced.report.verdicts[0].verdict, Verdict::NoAddress);
        assert!(traced.streams.is_empty() && net.sent.lock().unwrap().is_empty());
        let err = trace(world, &config("pod-z"), &|_| {}).await.err().unwrap();
        assert!(err.to_string().contains("pod-z"), "{err}");
    }
}
