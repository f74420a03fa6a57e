//! What people read: `watch`'s one line per event, and `trace`'s report (both families side by
//! side, then each path hop by hop with the drop point and the cause highlighted).
use std::{fmt::Write, net::IpAddr};

use netpath_core::model::{
    Direction, Event, EventKind, FamilyReport, Hop, TraceReport, Verdict, Where,
};

/// An event kind's name, as in JSON (`hop`, `drop`, `route`, ...).
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Hop => "hop",
        EventKind::Drop => "drop",
        EventKind::Route => "route",
        EventKind::Neigh => "neigh",
        EventKind::Func => "func",
        EventKind::Lost => "lost",
    }
}

/// One event as one human-readable line (`watch`), written into `out` without an allocation
/// per field: `watch` reuses one buffer.
pub fn event_line(e: &Event, out: &mut impl Write) -> std::fmt::Result {
    let secs = e.ts_ns / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let micros = (e.ts_ns % 1_000_000_000) / 1000;
    let dir = match e.dir {
        Direction::Ingress => "in ",
        Direction::Egress => "out",
        Direction::None => "   ",
    };
    let kind = match e.kind {
        EventKind::Drop => "DROP",
        EventKind::Hop => "hop ",
        EventKind::Route => "route",
        EventKind::Neigh => "neigh",
        EventKind::Lost => "lost",
        EventKind::Func => "func",
    };
    // A function event's hook is the function it was in.
    let hook = match e.packet.as_ref().and_then(|p| p.function.as_deref()) {
        Some(f) if e.kind == EventKind::Func => f,
        _ => e.hook.as_str(),
    };
    let dev = if e.ifname.is_empty() {
        "-"
    } else {
        e.ifname.as_str()
    };
    write!(
        out,
        "{h:02}:{m:02}:{s:02}.{micros:06} {kind} {hook:<17} {}/{dev} {dir} ",
        e.netns
    )?;
    struct Addr(Option<IpAddr>, Option<u16>);
    impl std::fmt::Display for Addr {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match (self.0, self.1) {
                (Some(IpAddr::V6(a)), Some(p)) => write!(f, "[{a}]:{p}"),
                (Some(a), Some(p)) => write!(f, "{a}:{p}"),
                (Some(a), None) => write!(f, "{a}"),
                (None, _) => f.write_str("?"),
            }
        }
    }
    let flow = &e.flow;
    let src = Addr(flow.src, flow.sport);
    let dst = Addr(flow.dst, flow.dport);
    let family = flow.family.map(|f| f.number()).unwrap_or(0);
    let proto = flow.proto.as_str();
    if let Some(r) = &e.route {
        write!(
            out,
            "IPv{family} {src} > {dst} {proto} table {} {}",
            r.table, r.kind
        )?;
        if let Some(gw) = &r.gw {
            write!(out, " via {gw}")?;
        }
        if let Some(oif) = &r.oif {
            write!(out, " dev {oif}")?;
        }
        if let Some(err) = &r.error {
            write!(out, " err {err}")?;
        }
        return Ok(());
    }
    if let Some(n) = &e.neigh {
        write!(
            out,
            "IPv{family} neighbour {} {} -> {}",
            n.addr,
            n.old_state.as_deref().unwrap_or("?"),
            n.state
        )?;
        if let Some(ll) = &n.lladdr {
            write!(out, " lladdr {ll}")?;
        }
        return Ok(());
    }
    let packet = e.packet.as_ref();
    if flow.family.is_none() {
        write!(
            out,
            "ethertype 0x{:04x}",
            packet.map(|p| p.ident.ethertype).unwrap_or(0)
        )?;
    } else {
        write!(out, "IPv{family} {src} > {dst} {proto}")?;
    }
    if let Some(icmp) = packet.and_then(|p| p.icmp.as_deref()) {
        write!(out, " {icmp}")?;
    }
    if let Some(p) = packet {
        write!(out, " len {}", p.len)?;
        if let Some(t) = &p.tunnel {
            write!(
                out,
                " via {} {} > {}",
                t.kind.as_str(),
                t.outer_src,
                t.outer_dst
            )?;
            if let Some(vni) = t.vni {
                write!(out, " vni {vni}")?;
            }
        }
    }
    if let Some(d) = &e.drop {
        write!(out, " reason {}", d.reason)?;
        if let Some(l) = &d.location {
            write!(out, " at {l}")?;
        }
    }
    if let Some(p) = packet {
        write!(out, " pkt {}", p.pkt_id.get(..8).unwrap_or(&p.pkt_id))?;
    }
    Ok(())
}

/// [`event_line`] as a new string.
#[cfg(test)]
fn event_text(e: &Event) -> String {
    let mut line = String::with_capacity(160);
    let _ = event_line(e, &mut line);
    line
}

/// ANSI styling, off when not writing to a terminal or when NO_COLOR is set.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn verdict(&self, v: Verdict) -> String {
        let code = match v {
            Verdict::Delivered => "1;32",
            Verdict::NoAddress => "1;33",
            _ => "1;31",
        };
        self.paint(code, v.as_str())
    }
}

fn cell(r: &FamilyReport, row: &str) -> String {
    match row {
        "verdict" => r.verdict.as_str().to_string(),
        "cause" => r
            .cause
            .map(|c| c.as_str().to_string())
            .unwrap_or("-".into()),
        "where" => r.at.as_ref().map(place_text).unwrap_or("-".into()),
        "function" => {
            r.at.as_ref()
                .and_then(|w| w.location.clone())
                .unwrap_or("-".into())
        }
        "reason" => r.reason.clone().unwrap_or("-".into()),
        "probe" => r.probe.clone().unwrap_or("-".into()),
        "addresses" => match (r.src, r.dst) {
            (Some(s), Some(d)) => format!("{s} -> {d}"),
            _ => "-".into(),
        },
        _ => String::new(),
    }
}

fn hop_line(i: usize, h: &Hop, style: Style) -> String {
    let dir = match h.dir {
        Direction::Ingress => "in ",
        Direction::Egress => "out",
        Direction::None => "   ",
    };
    let mut line = format!(
        "  {:>2}  {:<9} {:<18} {:<14} {dir} ttl {:<3}",
        i + 1,
        if h.node.is_empty() { "-" } else { &h.node },
        h.netns,
        if h.ifname.is_empty() { "-" } else { &h.ifname },
        h.ttl
    );
    if let Some(t) = &h.tunnel {
        let _ = write!(
            line,
            " [{}{} {} -> {}]",
            t.kind.as_str(),
            t.vni.map(|v| format!(" vni {v}")).unwrap_or_default(),
            t.outer_src,
            t.outer_dst
        );
    }
    if let Some(nat) = &h.nat {
        let _ = write!(line, " {}", style.paint("1;36", nat));
    }
    if h.kind == EventKind::Route {
        let text = h.route_text().unwrap_or_default();
        let failed = h.route.as_ref().is_some_and(|r| r.is_failure());
        let line = format!(
            "  {:>2}  {:<9} {:<18} route lookup {} -> {}: {text}",
            i + 1,
            if h.node.is_empty() { "-" } else { &h.node },
            h.netns,
            h.src.map(|a| a.to_string()).unwrap_or("*".into()),
            h.dst.map(|a| a.to_string()).unwrap_or("?".into()),
        );
        return if failed {
            style.paint("1;33", &line)
        } else {
            line
        };
    }
    if h.kind == EventKind::Func {
        let _ = write!(line, " in {}()", h.location.as_deref().unwrap_or("?"));
        return line;
    }
    if h.kind == EventKind::Drop {
        return style.paint(
            "1;31",
            &format!(
                "{line} DROPPED in {} [{}]",
                h.location.as_deref().unwrap_or("?"),
                h.reason.as_deref().unwrap_or("?")
            ),
        );
    }
    line
}

/// `node netns device` of a place, `-` for what is not known.
pub fn place_text(w: &Where) -> String {
    let mut s = format!(
        "{} {}",
        if w.node.is_empty() { "-" } else { &w.node },
        w.netns
    );
    if !w.ifname.is_empty() {
        s.push(' ');
        s.push_str(&w.ifname);
    }
    s
}

/// One family in one line: delivered and how fast, or where it died, why and the fix.
fn family_line(v: &FamilyReport, style: Style) -> String {
    let mut line = format!(
        "{} {}",
        style.paint("1", v.family.name()),
        style.verdict(v.verdict)
    );
    if v.verdict == Verdict::Delivered {
        if let Some(us) = v.rtt_us {
            let _ = write!(line, ": answer in {:.2} ms", us as f64 / 1000.0);
        }
        return line;
    }
    if let Some(w) = &v.at {
        let at = if v.verdict == Verdict::LostInTransit {
            "last seen at"
        } else {
            "at"
        };
        let _ = write!(line, " {at} {}", place_text(w));
    }
    let why = match (v.cause, &v.reason) {
        (Some(c), Some(r)) => format!("{} ({r})", c.as_str()),
        (Some(c), None) => c.as_str().to_string(),
        (None, Some(r)) => r.clone(),
        (None, None) => "cause unknown".to_string(),
    };
    let _ = write!(line, ": {why}");
    if let Some(h) = &v.hint {
        let _ = write!(line, "; fix: {h}");
    }
    line
}

/// The dual-stack comparison in one line: where this family parted from the delivered one
/// and what it lacks there.
fn comparison_line(v: &FamilyReport) -> Option<String> {
    let c = v.comparison.as_ref()?;
    let (name, rname) = (v.family.name(), c.reference.name());
    let mut line = match (&c.parted_after, &c.reference_next) {
        (Some(p), Some(n)) => format!(
            "compared with {rname}: both passed {}, then {rname} went on to {}",
            place_text(p),
            place_text(n)
        ),
        (Some(p), None) => format!("compared with {rname}: both passed {}", place_text(p)),
        (None, _) => format!("compared with {rname}: the paths share no first step"),
    };
    match &c.next {
        Some(n) => {
            let _ = write!(line, " and {name} to {}", place_text(n));
        }
        None if c.reference_next.is_some() => {
            let _ = write!(line, " and {name} nowhere");
        }
        None => {}
    }
    if !c.lacks.is_empty() {
        let _ = write!(line, "; {name} lacks: {}", c.lacks.join("; "));
    }
    Some(line)
}

/// The whole report as text: the table and one line per family; with `verbose`, each family's
/// explanation, evidence and paths hop by hop.
pub fn render(r: &TraceReport, style: Style, verbose: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "netpath trace {} -> {}   (verdict in {:.2} s{})",
        r.from.name,
        r.to.name,
        r.elapsed_ms as f64 / 1000.0,
        if r.lost_events > 0 {
            format!(", {} events lost", r.lost_events)
        } else {
            String::new()
        }
    );
    out.push('\n');
    let rows = [
        "verdict",
        "cause",
        "where",
        "function",
        "reason",
        "probe",
        "addresses",
    ];
    let width = r
        .verdicts
        .iter()
        .map(|v| rows.iter().map(|row| cell(v, row).len()).max().unwrap_or(0))
        .max()
        .unwrap_or(10)
        .max(12)
        + 3;
    let _ = write!(out, "{:<10}", "");
    for v in &r.verdicts {
        let _ = write!(
            out,
            "{}",
            style.paint("1", &format!("{:<width$}", v.family.name()))
        );
    }
    out.push('\n');
    for row in rows {
        let _ = write!(out, "{row:<10}");
        for v in &r.verdicts {
            let text = format!("{:<width$}", cell(v, row));
            if row == "verdict" {
                let pad = width.saturating_sub(v.verdict.as_str().len());
                let _ = write!(out, "{}{}", style.verdict(v.verdict), " ".repeat(pad));
            } else {
                out.push_str(&text);
            }
        }
        out.push('\n');
    }
    if !verbose {
        out.push('\n');
        for v in &r.verdicts {
            let _ = writeln!(out, "{}", family_line(v, style));
            if let Some(c) = comparison_line(v) {
                let _ = writeln!(out, "  {c}");
            }
        }
        return out;
    }
    for v in &r.verdicts {
        out.push('\n');
        let _ = writeln!(
            out,
            "{} {}: {}",
            style.paint("1", v.family.name()),
            style.verdict(v.verdict),
            v.summary
        );
        if let Some(h) = &v.hint {
            let _ = writeln!(out, "  fix: {h}");
        }
        if let Some(c) = comparison_line(v) {
            let _ = writeln!(out, "  {c}");
        }
        for e in &v.evidence {
            let _ = writeln!(out, "  evidence: {e}");
        }
        if !v.hops.is_empty() {
            let _ = writeln!(out, "  path of the probe:");
            for (i, h) in v.hops.iter().enumerate() {
                let _ = writeln!(out, "{}", hop_line(i, h, style));
            }
        }
        if !v.reply_hops.is_empty() {
            let _ = writeln!(out, "  path of the answer:");
            for (i, h) in v.reply_hops.iter().enumerate() {
                let _ = writeln!(out, "{}", hop_line(i, h, style));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netpath_core::model::{
        Cause, DropSection, Endpoint, EndpointKind, Family, FlowKey, Hook, NeighEvent, PacketIdent,
        PacketSection, Proto, RouteLookup, RouteType,
    };

    fn endpoint(name: &str) -> Endpoint {
        Endpoint {
            name: name.into(),
            kind: EndpointKind::Pod,
            netns: None,
            node: None,
            ipv4: vec![],
            ipv6: vec![],
            port: None,
            backends: vec![],
            stale_of: None,
        }
    }

    /// A place on a path (`hop`, or `drop` with `reason`), at `ts` µs.
    fn step(kind: EventKind, at: (&str, &str, &str), dir: Direction, ttl: u8, ts: u64) -> Hop {
        let (node, netns, ifname) = at;
        Hop {
            kind,
            node: node.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            dir,
            hook: match dir {
                Direction::Ingress => Hook::TcIngress,
                Direction::Egress => Hook::TcEgress,
                Direction::None => Hook::KfreeSkb,
            },
            ts_ns: ts * 1000,
            src: None,
            dst: None,
            proto: Proto::Icmp,
            sport: None,
            dport: None,
            ttl,
            len: 84,
            tunnel: None,
            nat: None,
            reason: None,
            location: None,
            route: None,
        }
    }

    /// pod-a (node-1) -> pod-c (node-2) across the underlay's bridge: IPv4 delivered, IPv6
    /// dropped on the bridge for want of a route (seed 000's shape), built by hand.
    pub(crate) fn sample_report() -> TraceReport {
        use Direction::{Egress as Out, Ingress as In};
        let pod_a = ("node-1", "np-pod-a", "eth0");
        let node1_veth = ("node-1", "np-node-1", "veth1a");
        let node1_eth0 = ("node-1", "np-node-1", "eth0");
        let br_from1 = ("underlay", "np-underlay", "node-1");
        let br_to2 = ("underlay", "np-underlay", "node-2");
        let node2_eth0 = ("node-2", "np-node-2", "eth0");
        let node2_veth = ("node-2", "np-node-2", "veth2c");
        let pod_c = ("node-2", "np-pod-c", "eth0");
        let out_and_back = [
            (pod_a, Out, 64),
            (node1_veth, In, 64),
            (node1_eth0, Out, 63),
            (br_from1, In, 63),
            (br_to2, Out, 63),
            (node2_eth0, In, 63),
            (node2_veth, Out, 62),
            (pod_c, In, 62),
        ];
        let path = |steps: &[((&str, &str, &str), Direction, u8)], t0: u64| -> Vec<Hop> {
            steps
                .iter()
                .enumerate()
                .map(|(i, (at, dir, ttl))| step(EventKind::Hop, *at, *dir, *ttl, t0 + i as u64))
                .collect()
        };
        let mut v4 = FamilyReport::new(
            Family::Ipv4,
            Verdict::Delivered,
            "pod-a reached pod-c".into(),
        );
        v4.rtt_us = Some(2240);
        v4.probe = Some("ICMP echo".into());
        v4.src = Some("10.244.1.2".parse().unwrap());
        v4.dst = Some("10.244.2.2".parse().unwrap());
        v4.hops = path(&out_and_back, 10);
        let mut lookup = step(EventKind::Route, node1_eth0, Direction::None, 0, 11);
        lookup.route = Some(RouteLookup {
            table: 254,
            kind: RouteType::Unicast,
            err: 0,
            error: None,
            gw: Some("198.18.0.12".parse().unwrap()),
            oif: Some("eth0".into()),
            oif_index: Some(2),
            no_route: false,
            flow_oif: 0,
            iif: 3,
        });
        v4.hops.insert(2, lookup);
        let back: Vec<_> = out_and_back
            .iter()
            .rev()
            .map(|&(at, dir, ttl)| (at, if dir == In { Out } else { In }, ttl))
            .collect();
        v4.reply_hops = path(&back, 30);

        let mut v6 = FamilyReport::new(
            Family::Ipv6,
            Verdict::Dropped,
            "dropped on the underlay".into(),
        );
        v6.cause = Some(Cause::NotOnLink);
        v6.reason = Some("IP_INNOROUTES".into());
        v6.hint = Some("give the node addresses the node network's prefix length".into());
        v6.probe = Some("ICMPv6 echo".into());
        v6.at = Some(Where {
            node: "underlay".into(),
            netns: "np-underlay".into(),
            ifname: "br0".into(),
            location: Some("ip6_pkt_discard+0x11".into()),
        });
        v6.hops = path(&out_and_back[..4], 50);
        v6.hops.push(step(
            EventKind::Hop,
            ("underlay", "np-underlay", "br0"),
            In,
            63,
            54,
        ));
        let mut drop = step(
            EventKind::Drop,
            ("underlay", "np-underlay", "br0"),
            Direction::None,
            63,
            55,
        );
        drop.reason = Some("IP_INNOROUTES".into());
        drop.location = Some("ip6_pkt_discard+0x11".into());
        v6.hops.push(drop);
        TraceReport {
            schema_version: TraceReport::SCHEMA_VERSION,
            from: endpoint("pod-a"),
            to: endpoint("pod-c"),
            verdicts: vec![v4, v6],
            lost_events: 0,
            elapsed_ms: 1350,
        }
    }

    #[test]
    fn the_comparison_with_the_delivered_family_follows_the_failing_one() {
        let mut report = sample_report();
        let at = |netns: &str, dev: &str| Where {
            node: "node-1".into(),
            netns: netns.into(),
            ifname: dev.into(),
            location: None,
        };
        report.verdicts[1].comparison = Some(netpath_core::model::Comparison {
            reference: netpath_core::model::Family::Ipv4,
            parted_after: Some(at("np-node-1", "eth0")),
            reference_next: Some(at("np-underlay", "node-1")),
            next: None,
            lacks: vec!["IPv6 is disabled on node-1 in np-underlay".into()],
        });
        let want = "  compared with IPv4: both passed node-1 np-node-1 eth0, then IPv4 went on \
                    to node-1 np-underlay node-1 and IPv6 nowhere; IPv6 lacks: IPv6 is disabled \
                    on node-1 in np-underlay";
        for verbose in [false, true] {
            let text = render(&report, Style { color: false }, verbose);
            assert!(text.lines().any(|l| l == want), "{text}");
        }
    }

    #[test]
    fn by_default_one_line_per_family_says_where_why_and_the_fix() {
        let report = sample_report();
        let text = render(&report, Style { color: false }, false);
        let v4: Vec<&str> = text.lines().filter(|l| l.starts_with("IPv4 ")).collect();
        let v6: Vec<&str> = text.lines().filter(|l| l.starts_with("IPv6 ")).collect();
        assert_eq!(v4, ["IPv4 delivered: answer in 2.24 ms"], "{text}");
        assert_eq!(
            v6,
            [
                "IPv6 dropped at underlay np-underlay br0: not_on_link (IP_INNOROUTES); fix: \
              give the node addresses the node network's prefix length"
            ],
            "{text}"
        );
        assert!(!text.contains("path of the probe") && !text.contains("evidence"));
        let verbose = render(&report, Style { color: false }, true);
        assert!(verbose.starts_with(&text[..text.find("\nIPv4 ").unwrap()]));
        assert!(verbose.contains("path of the probe") && verbose.contains("path of the answer"));
    }

    #[test]
    fn both_families_side_by_side_with_the_cause() {
        let ok = FamilyReport::new(Family::Ipv4, Verdict::Delivered, "fine".into());
        let mut bad = FamilyReport::new(Family::Ipv6, Verdict::Dropped, "dropped at br0".into());
        bad.cause = Some(Cause::NotOnLink);
        bad.reason = Some("IP_INNOROUTES".into());
        bad.at = Some(Where {
            node: "underlay".into(),
            netns: "np-underlay".into(),
            ifname: "br0".into(),
            location: Some("ip6_pkt_discard+0x11".into()),
        });
        bad.hint = Some("fix the prefix".into());
        let report = TraceReport {
            schema_version: TraceReport::SCHEMA_VERSION,
            from: endpoint("pod-a"),
            to: endpoint("pod-c"),
            verdicts: vec![ok, bad],
            lost_events: 0,
            elapsed_ms: 1900,
        };
        let text = render(&report, Style { color: false }, true);
        let verdict_line = text.lines().find(|l| l.starts_with("verdict")).unwrap();
        assert!(verdict_line.contains("delivered") && verdict_line.contains("dropped"));
        assert!(text.contains("not_on_link") && text.contains("IP_INNOROUTES"));
        assert!(text.contains("fix: fix the prefix"));
        assert!(!text.contains('\x1b'));
        assert!(render(&report, Style { color: true }, true).contains("\x1b[1;31mdropped"));
        assert_eq!(report.exit_code(), 1);
    }

    fn event(kind: EventKind, hook: Hook) -> Event {
        Event {
            kind,
            ts_ns: 1_000,
            node: "n".into(),
            netns: "ns7".into(),
            netns_inode: 7,
            ifname: "if2".into(),
            ifindex: 2,
            dir: Direction::None,
            hook,
            flow: FlowKey::NONE,
            packet: None,
            drop: None,
            route: None,
            neigh: None,
        }
    }

    #[test]
    fn event_lines_say_what_each_kind_of_event_is() {
        let mut drop = event(EventKind::Drop, Hook::KfreeSkb);
        drop.flow = FlowKey {
            family: Some(Family::Ipv6),
            src: Some("fd00::1".parse().unwrap()),
            dst: Some("fd00::2".parse().unwrap()),
            proto: Proto::Icmp6,
            sport: None,
            dport: None,
        };
        drop.packet = Some(PacketSection {
            icmp: Some("echo-request".into()),
            len: 62,
            pkt_id: "0123456789abcdef".into(),
            tunnel: None,
            skb: "1".into(),
            ident: PacketIdent::default(),
            function: None,
        });
        drop.drop = Some(DropSection {
            reason: "NO_SOCKET".into(),
            location: Some("fn+0x42".into()),
        });
        let line = event_text(&drop);
        assert!(line.contains("reason NO_SOCKET"), "{line}");
        assert!(
            line.contains("DROP kfree_skb") && line.contains("pkt 01234567"),
            "{line}"
        );

        let mut route = event(EventKind::Route, Hook::Fib6Lookup);
        route.flow = FlowKey {
            family: Some(Family::Ipv6),
            src: Some("fd00::1".parse().unwrap()),
            dst: Some("fd00:9::1".parse().unwrap()),
            proto: Proto::Udp,
            sport: Some(1000),
            dport: Some(53),
        };
        route.route = Some(RouteLookup {
            table: 254,
            kind: RouteType::Unicast,
            err: 0,
            error: None,
            gw: Some("fd00::fe".parse().unwrap()),
            oif: Some("eth0".into()),
            oif_index: Some(3),
            no_route: false,
            flow_oif: 0,
            iif: 1,
        });
        let line = event_text(&route);
        assert!(
            line.contains("table 254 unicast via fd00::fe dev eth0"),
            "{line}"
        );

        let mut neigh = event(EventKind::Neigh, Hook::NeighTimerHandler);
        neigh.flow.family = Some(Family::Ipv4);
        neigh.neigh = Some(NeighEvent {
            addr: "10.1.0.9".parse().unwrap(),
            state: "FAILED".into(),
            old_state: Some("INCOMPLETE".into()),
            lladdr: None,
        });
        let line = event_text(&neigh);
        assert!(
            line.contains("neighbour 10.1.0.9 INCOMPLETE -> FAILED"),
            "{line}"
        );
    }
}
