//! Following a next hop that never answered: when a probe is stuck behind a neighbour entry
//! that never resolved, the cause is on the next hop's side (its node dropped the ARP request
//! or neighbour solicitation, it does not hold the address, it never answered). This finds
//! the namespace that holds the next hop's address, on whichever node, and takes a second,
//! short look: a stream scoped to the next hop's address and its solicitations (ARP for IPv4),
//! and one ping to it from where the probe was stuck, which makes the kernel solicit again.
//! What became of the solicitations on the next hop's node becomes the cause.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{
    model::{
        Cause, Direction, Endpoint, Event, EventKind, Family, FamilyReport, Place, Probe,
        ProbeKind, Proto, Verdict, Where,
    },
    world::{Scope, StreamItem, World},
};

/// How long the second look solicits: long enough for a neighbour entry still being resolved
/// from the trace's probe (the kernel retries every second, three times) to fail and start
/// again.
const LOOK: Duration = Duration::from_millis(2500);

/// How often the second look pings each next hop.
const PING_EVERY: Duration = Duration::from_millis(500);

/// Events still on their way after the last one that mattered.
const SETTLE: Duration = Duration::from_millis(100);

/// At most this many namespaces are asked whether they hold the next hop's address.
const MAX_OWNER_SEARCH: usize = 256;

/// The solicited-node multicast address of `addr` (RFC 4291 2.7.1), where neighbour
/// solicitations for it are sent.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Is `e` a solicitation for `nh` (an ARP request or a neighbour solicitation)?
pub fn is_solicitation(e: &Event, nh: IpAddr) -> bool {
    let icmp = e.packet.as_ref().and_then(|p| p.icmp.as_deref());
    match nh {
        IpAddr::V4(_) => {
            e.flow.proto == Proto::Arp && icmp == Some("arp-request") && e.flow.dst == Some(nh)
        }
        // Sent to the solicited-node group, or to the address itself when re-checking.
        IpAddr::V6(a) => {
            icmp == Some("neighbor-solicit")
                && (e.flow.dst == Some(IpAddr::V6(solicited_node(a))) || e.flow.dst == Some(nh))
        }
    }
}

/// Is `e` an answer from `nh` (an ARP reply or a neighbour advertisement)?
pub fn is_answer(e: &Event, nh: IpAddr) -> bool {
    let icmp = e.packet.as_ref().and_then(|p| p.icmp.as_deref());
    e.flow.src == Some(nh) && matches!(icmp, Some("arp-reply" | "neighbor-advert"))
}

/// What the second look saw of the solicitations, as one verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// A solicitation was dropped: where, by which function, for which reason.
    Dropped { at: Where, reason: String },
    /// The owner answered, and the answer was dropped on its way back.
    AnswerDropped { at: Where, reason: String },
    /// The solicitation reached the owner's namespace and no answer left it.
    Unanswered { at: Where },
    /// The owner answered and the answer never came back to where it was asked.
    AnswerLost { at: Where },
    /// Solicitations left the stuck namespace and were never seen again.
    NeverArrived { last: Where },
    /// No solicitation was seen at all.
    NotSeen,
}

fn where_of(e: &Event) -> Where {
    Where {
        node: e.node.clone(),
        netns: e.netns.clone(),
        ifname: e.ifname.clone(),
        location: e.location().map(str::to_string),
    }
}

/// Decides the fate of the solicitations for `nh` from the events of the second look.
/// `asker`: where the probe was stuck; `owner`: the namespace holding `nh`, when known.
pub fn fate(events: &[Event], nh: IpAddr, asker: &Place, owner: Option<&Place>) -> Fate {
    let at_owner = |e: &Event| owner.is_some_and(|o| e.netns == o.netns && e.node == o.node);
    let at_asker = |e: &Event| e.netns == asker.netns && e.node == asker.node;
    let drop = |e: &Event| e.kind == EventKind::Drop;
    let asked: Vec<&Event> = events.iter().filter(|e| is_solicitation(e, nh)).collect();
    let answers: Vec<&Event> = events.iter().filter(|e| is_answer(e, nh)).collect();
    // A solicitation dropped anywhere but where it was sent from (there the kernel frees its
    // own copies when it gives up).
    if let Some(d) = asked.iter().find(|e| drop(e) && !at_asker(e)) {
        return Fate::Dropped {
            at: where_of(d),
            reason: d.reason().unwrap_or("?").to_string(),
        };
    }
    if let Some(d) = answers.iter().find(|e| drop(e)) {
        return Fate::AnswerDropped {
            at: where_of(d),
            reason: d.reason().unwrap_or("?").to_string(),
        };
    }
    let answered = answers
        .iter()
        .find(|e| e.kind == EventKind::Hop && e.dir == Direction::Egress && !at_asker(e));
    if let Some(a) = answered {
        return Fate::AnswerLost { at: where_of(a) };
    }
    if let Some(reached) = asked
        .iter()
        .find(|e| e.kind == EventKind::Hop && e.dir == Direction::Ingress && at_owner(e))
    {
        return Fate::Unanswered {
            at: where_of(reached),
        };
    }
    match asked.iter().rfind(|e| e.kind == EventKind::Hop) {
        Some(last) => Fate::NeverArrived {
            last: where_of(last),
        },
        None => Fate::NotSeen,
    }
}

fn cause_of_reason(reason: &str) -> Cause {
    match reason {
        "NETFILTER_DROP" => Cause::NetfilterDrop,
        "IPV6DISABLED" => Cause::Ipv6Disabled,
        r if r.starts_with("NEIGH") => Cause::NeighborFailed,
        _ => Cause::KernelDrop,
    }
}

/// `node (netns, dev)`, the way the diagnosis names places in its sentences.
fn place_text(w: &Where) -> String {
    let mut s = format!("{} ({}", super::diagnose::display_node(&w.node), w.netns);
    if !w.ifname.is_empty() {
        s.push_str(", ");
        s.push_str(&w.ifname);
    }
    s.push(')');
    s
}

/// A family stuck behind a next hop, and what is known about that next hop.
struct Stuck {
    /// Index of the family's report.
    report: usize,
    asker: Place,
    nh: IpAddr,
    src: IpAddr,
    owner: Option<Place>,
}

/// Follows every family whose probe was stuck behind an unresolved next hop, in one second
/// look for all of them.
pub async fn follow_unanswered_next_hops(
    reports: &mut [FamilyReport],
    world: World<'_>,
    to: &Endpoint,
    node_of: &HashMap<String, String>,
    ring_bytes: u32,
    run_id: u16,
) {
    let mut stuck = Vec::new();
    for (i, r) in reports.iter_mut().enumerate() {
        if r.cause != Some(Cause::NeighborFailed) {
            continue;
        }
        tracing::debug!("following the {} next hop", r.family);
        match next_hop(i, r, world, to, node_of).await {
            Ok(s) => stuck.push(s),
            Err(e) => r
                .evidence
                .push(format!("the next hop could not be followed: {e}")),
        }
    }
    // Only a next hop some traced namespace holds has a side to follow the solicitations to
    // (the evidence already says when none does).
    stuck.retain(|s| s.owner.is_some());
    if stuck.is_empty() {
        return;
    }
    let events = match second_look(&stuck, world, node_of, ring_bytes, run_id).await {
        Ok(events) => events,
        Err(e) => {
            for s in &stuck {
                reports[s.report]
                    .evidence
                    .push(format!("the next hop could not be followed: {e}"));
            }
            return;
        }
    };
    for s in &stuck {
        let f = fate(&events, s.nh, &s.asker, s.owner.as_ref());
        apply(&mut reports[s.report], s, f, world).await;
    }
}

/// The next hop where `r`'s probe was stuck, the address to ask it from, and who holds it.
async fn next_hop(
    report: usize,
    r: &mut FamilyReport,
    world: World<'_>,
    to: &Endpoint,
    node_of: &HashMap<String, String>,
) -> Result<Stuck, String> {
    let (Some(at), Some(dst)) = (r.at.clone(), r.dst) else {
        return Err("no place or destination".into());
    };
    let asker = Place::new(at.node.clone(), at.netns.clone());
    let inspect = world.inspector;
    let route = inspect
        .route_get(&asker, dst, None, None)
        .await
        .filter(|a| !a.failed())
        .ok_or("no route to the destination where the probe was stuck")?;
    let nh = route.gateway.unwrap_or(dst);
    let dev = route.dev.clone().unwrap_or(at.ifname.clone());
    let family = Family::of(&nh);
    let src = inspect
        .addresses(&asker)
        .await
        .into_iter()
        .find(|a| a.dev == dev && Family::of(&a.addr) == family && !a.dad_failed)
        .map(|a| a.addr)
        .ok_or(format!(
            "{} has no {family} address on {dev} to ask from",
            asker.netns
        ))?;
    let owner = match holder(world, to, node_of, nh).await {
        Some((p, dev)) => {
            r.evidence.push(format!(
                "next hop {nh}: held by {}",
                place_text(&Where {
                    node: p.node.clone(),
                    netns: p.netns.clone(),
                    ifname: dev,
                    location: None,
                })
            ));
            Some(p)
        }
        None => {
            r.evidence
                .push(format!("next hop {nh}: no traced namespace holds it"));
            None
        }
    };
    Ok(Stuck {
        report,
        asker,
        nh,
        src,
        owner,
    })
}

/// The namespace holding `nh` and its device there: the destination first (it often is the
/// next hop), then every namespace of the nodes the resolver knows.
async fn holder(
    world: World<'_>,
    to: &Endpoint,
    node_of: &HashMap<String, String>,
    nh: IpAddr,
) -> Option<(Place, String)> {
    let mut places: Vec<Place> = node_of
        .iter()
        .map(|(ns, node)| Place::new(node.clone(), ns.clone()))
        .collect();
    places.sort_by(|a, b| (&a.node, &a.netns).cmp(&(&b.node, &b.netns)));
    if let Some(p) = to.place() {
        places.insert(0, p);
    }
    for p in places.into_iter().take(MAX_OWNER_SEARCH) {
        if let Some(a) = world
            .inspector
            .addresses(&p)
            .await
            .into_iter()
            .find(|a| a.addr == nh)
        {
            return Some((p, a.dev));
        }
    }
    None
}

/// A probe that left a namespace and was never seen again: the namespace holding its next
/// hop is where it should have arrived. Every namespace the resolver knows was traced, so
/// when that one is among them, it saw nothing of the probe arriving.
pub async fn name_the_silent_receiver(
    reports: &mut [FamilyReport],
    world: World<'_>,
    to: &Endpoint,
    node_of: &HashMap<String, String>,
) {
    for r in reports.iter_mut() {
        if r.verdict != Verdict::LostInTransit {
            continue;
        }
        let left = r
            .hops
            .iter()
            .rev()
            .find(|h| h.kind == EventKind::Hop)
            .filter(|h| h.dir == Direction::Egress)
            .cloned();
        let (Some(last), Some(dst)) = (left, r.dst) else {
            continue;
        };
        let at = Place::new(last.node.clone(), last.netns.clone());
        let Some(route) = world
            .inspector
            .route_get(&at, last.dst.unwrap_or(dst), None, None)
            .await
            .filter(|a| !a.failed())
        else {
            continue;
        };
        let nh = route.gateway.unwrap_or(last.dst.unwrap_or(dst));
        match holder(world, to, node_of, nh).await {
            Some((p, dev)) if p.netns != at.netns || p.node != at.node => {
                let receiver = place_text(&Where {
                    node: p.node.clone(),
                    netns: p.netns.clone(),
                    ifname: dev.clone(),
                    location: None,
                });
                // What both ends of the link say of themselves.
                let sender = world.inspector.link_state(&at, &last.ifname).await;
                let receiving = world.inspector.link_state(&p, &dev).await;
                for (end, state) in [(&at, &sender), (&p, &receiving)] {
                    if let Some(s) = state {
                        r.evidence
                            .push(format!("link in {}: {}", end.netns, s.describe()));
                    }
                }
                let down = [&sender, &receiving]
                    .into_iter()
                    .flatten()
                    .find(|s| s.is_down());
                r.summary.push_str(&format!(
                    "; its next hop {nh} is {receiver}, which was traced and saw nothing of it \
                     arrive"
                ));
                r.hint = Some(match down {
                    Some(s) => format!(
                        "{} is {}: bring the link between {} ({}) and {receiver} up",
                        s.dev, s.operstate, last.netns, last.ifname
                    ),
                    None => format!(
                        "the link between {} ({}) and {receiver} lost it without the kernel \
                         reporting a drop on either side: check that link (cabling, the \
                         underlay, a switch or a NIC dropping in hardware: ip -s link)",
                        last.netns, last.ifname
                    ),
                });
            }
            Some(_) => {}
            None => r.evidence.push(format!(
                "next hop {nh}: no traced namespace holds it (the next node is not traced here)"
            )),
        }
    }
}

/// One stream scoped to every next hop's address and solicitations (ARP for IPv4), and one
/// ping to each from where its probe was stuck, which makes the kernel solicit again.
async fn second_look(
    stuck: &[Stuck],
    world: World<'_>,
    node_of: &HashMap<String, String>,
    ring_bytes: u32,
    run_id: u16,
) -> Result<Vec<Event>, String> {
    let mut places: Vec<Place> = Vec::new();
    let mut addrs: Vec<IpAddr> = Vec::new();
    for s in stuck {
        for p in std::iter::once(&s.asker).chain(s.owner.as_ref()) {
            if !places.contains(p) {
                places.push(p.clone());
            }
        }
        addrs.push(s.nh);
        if let IpAddr::V6(a) = s.nh {
            addrs.push(IpAddr::V6(solicited_node(a)));
        }
    }
    let scope = Scope {
        places,
        addrs,
        non_ip: stuck.iter().any(|s| s.nh.is_ipv4()),
        drops: true,
        routes: false,
        ring_bytes,
        functions: None,
    };
    let mut stream = world.events.open(&scope).await.map_err(|e| e.to_string())?;
    // A ping every PING_EVERY: a neighbour entry still being resolved from the trace's own
    // probe sends nothing new for a queued packet, but once it has failed the next packet
    // makes the kernel solicit again at once.
    let probe = |i: usize, seq: u16| {
        let s = &stuck[i];
        Probe {
            from: s.asker.clone(),
            src: s.src,
            dst: s.nh,
            kind: ProbeKind::Icmp,
            echo_id: run_id ^ 0x4e48 ^ i as u16,
            echo_seq: seq,
            sport: 0,
            size: 56,
        }
    };
    let mut sends = FuturesUnordered::new();
    let mut ticks = tokio::time::interval(PING_EVERY);
    let mut seq = 0u16;
    let mut events = Vec::new();
    let mut deadline = tokio::time::Instant::now() + LOOK + SETTLE;
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(StreamItem::Event(mut ev)) => {
                    if let Some(node) = node_of.get(&ev.netns) {
                        ev.node = node.clone();
                    }
                    events.push(*ev);
                    // A drop decides a next hop at once; the rest needs the whole look.
                    if stuck.iter().all(|s| {
                        matches!(
                            fate(&events, s.nh, &s.asker, s.owner.as_ref()),
                            Fate::Dropped { .. } | Fate::AnswerDropped { .. }
                        )
                    }) {
                        deadline = deadline.min(tokio::time::Instant::now() + SETTLE);
                    }
                }
                Some(StreamItem::Lost { .. }) => {}
                None => break,
            },
            _ = ticks.tick() => {
                seq += 1;
                for i in 0..stuck.len() {
                    let (p, prober) = (probe(i, seq), world.prober);
                    sends.push(async move {
                        prober.send(&p, PING_EVERY, Arc::new(AtomicBool::new(false))).await
                    });
                }
            }
            _ = sends.next(), if !sends.is_empty() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(events)
}

/// Writes what became of the solicitations into the family's report: a drop on the next
/// hop's side is the cause; anything else is evidence.
async fn apply(r: &mut FamilyReport, s: &Stuck, fate: Fate, world: World<'_>) {
    let nh = s.nh;
    let what = match Family::of(&nh) {
        Family::Ipv4 => "ARP request",
        Family::Ipv6 => "neighbour solicitation",
    };
    let before = r.summary.clone();
    match fate {
        Fate::Dropped { at, reason } => {
            let cause = cause_of_reason(&reason);
            r.summary = format!(
                "the next hop {nh} never answered: followed to its side, the {what} for it \
                 reached {} and was dropped there by {} [{reason}]",
                place_text(&at),
                at.location.as_deref().unwrap_or("?")
            );
            r.evidence
                .push(format!("before following the next hop: {before}"));
            if cause == Cause::NetfilterDrop {
                let here = Place::new(at.node.clone(), at.netns.clone());
                for rule in world.inspector.nft_drop_rules(&here).await {
                    r.evidence.push(format!("nftables in {}: {rule}", at.netns));
                }
                r.hint = Some(format!(
                    "let {what}s through the firewall in {} (nft list ruleset)",
                    at.netns
                ));
            } else {
                r.hint = Some(format!(
                    "see why {} drops {what}s [{reason}]",
                    place_text(&at)
                ));
            }
            r.cause = Some(cause);
            r.verdict = Verdict::Dropped;
            r.reason = Some(reason);
            r.at = Some(at);
        }
        Fate::AnswerDropped { at, reason } => {
            r.summary = format!(
                "the next hop {nh} answered the {what}, but its answer was dropped at {} by {} \
                 [{reason}]",
                place_text(&at),
                at.location.as_deref().unwrap_or("?")
            );
            r.evidence
                .push(format!("before following the next hop: {before}"));
            r.cause = Some(cause_of_reason(&reason));
            r.verdict = Verdict::Dropped;
            r.reason = Some(reason);
            r.at = Some(at);
        }
        Fate::Unanswered { at } => r.evidence.push(format!(
            "the {what} for {nh} reached {} and no answer left it",
            place_text(&at)
        )),
        Fate::AnswerLost { at } => r.evidence.push(format!(
            "{} answered the {what} for {nh}, and the answer never reached {}",
            place_text(&at),
            s.asker.netns
        )),
        Fate::NeverArrived { last } => r.evidence.push(format!(
            "the {what}s for {nh} were last seen at {} and never reached {}",
            place_text(&last),
            s.owner
                .as_ref()
                .map(|p| p.netns.as_str())
                .unwrap_or("a namespace holding it")
        )),
        Fate::NotSeen => r
            .evidence
            .push(format!("no {what} for {nh} was seen in a second look")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DropSection, FlowKey, Hook, PacketIdent, PacketSection};

    /// A world where `np-r` routes everything via 10.0.2.2 on `rb`, which `np-b` (node-2)
    /// holds on `vb`; nothing else is known, and nothing may be probed or streamed.
    struct Fixed;

    #[async_trait::async_trait]
    impl crate::world::Inspector for Fixed {
        async fn route_get(
            &self,
            at: &Place,
            dst: IpAddr,
            _: Option<IpAddr>,
            _: Option<&str>,
        ) -> Option<crate::model::RouteAnswer> {
            (at.netns == "np-r").then(|| crate::model::RouteAnswer {
                netns: at.netns.clone(),
                dst: dst.to_string(),
                kind: crate::model::RouteType::from_name("unicast").unwrap(),
                gateway: Some("10.0.2.2".parse().unwrap()),
                dev: Some("rb".into()),
                error: None,
                prefix: None,
            })
        }
        async fn forwarding(&self, _: &Place, _: Family) -> Option<bool> {
            None
        }
        async fn ipv6_disabled_devices(&self, _: &Place) -> Vec<String> {
            Vec::new()
        }
        async fn addresses(&self, at: &Place) -> Vec<crate::model::IfAddr> {
            if at.netns != "np-b" {
                return Vec::new();
            }
            vec![crate::model::IfAddr {
                dev: "vb".into(),
                addr: "10.0.2.2".parse().unwrap(),
                prefix_len: 24,
                dad_failed: false,
            }]
        }
        async fn nft_drop_rules(&self, _: &Place) -> Vec<String> {
            Vec::new()
        }
        async fn mtu(&self, _: &Place, _: &str) -> Option<u32> {
            None
        }
        async fn neighbour_state(&self, _: &Place, _: IpAddr) -> Option<String> {
            None
        }
        async fn link_state(&self, at: &Place, dev: &str) -> Option<crate::model::LinkState> {
            (at.netns == "np-b").then(|| crate::model::LinkState {
                dev: dev.into(),
                operstate: "LOWERLAYERDOWN".into(),
                rx_packets: 10,
                rx_dropped: 0,
                rx_errors: 0,
                tx_dropped: 0,
            })
        }
    }

    #[async_trait::async_trait]
    impl crate::world::Resolver for Fixed {
        async fn resolve(&self, spec: &str) -> Result<Endpoint, crate::world::ResolveError> {
            Err(crate::world::ResolveError::Invalid {
                spec: spec.into(),
                reason: "not in this test".into(),
            })
        }
    }

    #[async_trait::async_trait]
    impl crate::world::Prober for Fixed {
        async fn send(
            &self,
            _: &Probe,
            _: Duration,
            _: crate::world::Cancel,
        ) -> Result<crate::model::ProbeOutcome, crate::world::WorldError> {
            panic!("nothing is probed here")
        }
    }

    #[async_trait::async_trait]
    impl crate::world::EventSource for Fixed {
        async fn open(
            &self,
            _: &Scope,
        ) -> Result<Box<dyn crate::world::EventStream>, crate::world::WorldError> {
            panic!("nothing is streamed here")
        }
    }

    #[tokio::test]
    async fn a_lost_probe_names_the_next_hop_that_saw_nothing() {
        let world = World {
            resolver: &Fixed,
            inspector: &Fixed,
            prober: &Fixed,
            events: &Fixed,
        };
        let mut left = ev(
            EventKind::Hop,
            "np-r",
            Direction::Egress,
            "echo-request",
            "fd77:1::2",
            "fd77:9::1",
        );
        left.flow.src = Some("10.0.1.2".parse().unwrap());
        left.flow.dst = Some("10.0.9.9".parse().unwrap());
        let mut r = FamilyReport::new(Family::Ipv4, Verdict::LostInTransit, "lost".into());
        r.dst = Some("10.0.9.9".parse().unwrap());
        r.hops = vec![crate::model::Hop::from_event(&left)];
        let node_of: HashMap<String, String> = [
            ("np-r".to_string(), "node-1".to_string()),
            ("np-b".to_string(), "node-2".to_string()),
        ]
        .into();
        let to = Endpoint::new("10.0.9.9", crate::model::EndpointKind::Address);
        let mut reports = [r];
        name_the_silent_receiver(&mut reports, world, &to, &node_of).await;
        let r = &reports[0];
        assert!(
            r.summary.contains(
                "its next hop 10.0.2.2 is node-2 (np-b, vb), which was traced and saw nothing"
            ),
            "{}",
            r.summary
        );
        assert_eq!(
            r.hint.as_deref(),
            Some(
                "vb is LOWERLAYERDOWN: bring the link between np-r (eth0) and node-2 (np-b, vb) up"
            )
        );
        assert!(
            r.evidence[0].starts_with("link in np-b: vb: LOWERLAYERDOWN, 10 packets received"),
            "{:?}",
            r.evidence
        );
    }

    #[test]
    fn solicited_node_addresses_keep_the_last_24_bits() {
        let a: Ipv6Addr = "fd77:2::1234:5678".parse().unwrap();
        assert_eq!(solicited_node(a).to_string(), "ff02::1:ff34:5678");
    }

    fn ev(kind: EventKind, netns: &str, dir: Direction, icmp: &str, src: &str, dst: &str) -> Event {
        Event {
            kind,
            ts_ns: 0,
            node: "n".into(),
            netns: netns.into(),
            netns_inode: 0,
            ifname: "eth0".into(),
            ifindex: 2,
            dir,
            hook: Hook::TcIngress,
            flow: FlowKey {
                family: Some(Family::Ipv6),
                src: Some(src.parse().unwrap()),
                dst: Some(dst.parse().unwrap()),
                proto: Proto::Icmp6,
                sport: None,
                dport: None,
            },
            packet: Some(PacketSection {
                icmp: Some(icmp.into()),
                len: 86,
                pkt_id: String::new(),
                tunnel: None,
                skb: String::new(),
                ident: PacketIdent::default(),
                function: None,
            }),
            drop: (kind == EventKind::Drop).then(|| DropSection {
                reason: "NETFILTER_DROP".into(),
                location: Some("nf_hook_slow+0x8c".into()),
            }),
            route: None,
            neigh: None,
        }
    }

    #[test]
    fn the_fate_of_solicitations_is_read_from_the_second_look() {
        use Direction::*;
        let nh: IpAddr = "fd77:2::2".parse().unwrap();
        let (asker, owner) = (Place::new("n", "r"), Place::new("n", "b"));
        let sol = "ff02::1:ff00:2";
        let out = ev(
            EventKind::Hop,
            "r",
            Egress,
            "neighbor-solicit",
            "fd77:2::1",
            sol,
        );
        let arrive = ev(
            EventKind::Hop,
            "b",
            Ingress,
            "neighbor-solicit",
            "fd77:2::1",
            sol,
        );
        let dropped = ev(
            EventKind::Drop,
            "b",
            None,
            "neighbor-solicit",
            "fd77:2::1",
            sol,
        );
        let answer = ev(
            EventKind::Hop,
            "b",
            Egress,
            "neighbor-advert",
            "fd77:2::2",
            "fd77:2::1",
        );
        let f = |evs: &[Event]| fate(evs, nh, &asker, Some(&owner));
        assert!(matches!(
            f(&[out.clone(), arrive.clone(), dropped]),
            Fate::Dropped { ref at, ref reason } if at.netns == "b" && reason == "NETFILTER_DROP"
        ));
        assert!(matches!(
            f(&[out.clone(), arrive.clone()]),
            Fate::Unanswered { ref at } if at.netns == "b"
        ));
        assert!(matches!(
            f(&[out.clone(), arrive, answer]),
            Fate::AnswerLost { ref at } if at.netns == "b"
        ));
        assert!(matches!(
            f(&[out]),
            Fate::NeverArrived { ref last } if last.netns == "r"
        ));
        assert_eq!(f(&[]), Fate::NotSeen);
        // A solicitation for another address is not ours.
        let other = ev(
            EventKind::Drop,
            "b",
            None,
            "neighbor-solicit",
            "fd77:2::1",
            "ff02::1:ff00:9",
        );
        assert_eq!(f(&[other]), Fate::NotSeen);
    }
}
