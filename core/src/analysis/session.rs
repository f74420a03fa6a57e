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
        Cause, Endpoint, EndpointKind, Event, EventKind, Family, FamilyReport, Place, Probe,
        ProbeKind, ProbeOutcome, Proto, TraceReport, Verdict,
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
fn families(config: &TraceConfig, to: &Endpoint) -> Vec<Family> {
    match config.family {
        Some(f) => vec![f],
        None if to.kind == EndpointKind::Address => {
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
    let to = world.resolver.resolve(&config.to).await?;
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
    let kind = kind_of(config, &to);

    // Families a side has no address for are answered without probing.
    let mut reports: Vec<FamilyReport> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    for (i, family) in families(config, &to).into_iter().enumerate() {
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
            drops: true,
            routes: true,
            ring_bytes: config.ring_bytes,
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
        notify(Notice::Tracing {
            devices: stream.devices(),
            passive: config.passive,
            wait: config.timeout,
        });
        collect(
            world,
            config,
            &mut planned,
            stream.as_mut(),
            &node_of,
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
    tracing::debug!("diagnosed after {} ms", started.elapsed().as_millis());
    Ok(Traced {
        report: TraceReport {
            from,
            to,
            verdicts: reports,
            lost_events: lost,
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
        streams,
    })
}

/// Sends the probes and gathers events until every family is decided (an answer, or a drop
/// that settles it) and the trailing events are in, or the wait is over.
async fn collect(
    world: World<'_>,
    config: &TraceConfig,
    planned: &mut [Planned],
    stream: &mut dyn crate::world::EventStream,
    node_of: &HashMap<String, String>,
    events: &mut Vec<Event>,
    lost: &mut u64,
) -> Result<(), TraceError> {
    let started = Instant::now();
    let mut probes = send_probes(world, planned, config.timeout);
    let deadline = tokio::time::Instant::now() + config.timeout + Duration::from_millis(300);
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let wake = settle.unwrap_or(deadline).min(deadline);
        tokio::select! {
            item = stream.next() => match item {
                Some(StreamItem::Event(mut ev)) => {
                    // Events of namespaces the resolver places on a node are that node's.
                    if let Some(node) = node_of.get(&ev.netns) {
                        ev.node = node.clone();
                    }
                    if settles(&ev) {
                        for p in planned.iter() {
                            if p.matcher.is_some_and(|m| m.is_request(&ev) || m.is_reply(&ev)) {
                                p.cancel.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                    events.push(*ev);
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
                if probes.is_empty() {
                    // Trailing events (the answer's last hops) are still on their way.
                    settle = Some(tokio::time::Instant::now() + Duration::from_millis(120));
                }
            },
            _ = tokio::time::sleep_until(wake) => break,
        }
    }
    for p in planned.iter() {
        p.cancel.store(true, Ordering::Relaxed);
    }
    Ok(())
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
