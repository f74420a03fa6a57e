//! What people read: `watch`'s one line per event, and `trace`'s report (both families side by
//! side, then each path hop by hop with the drop point and the cause highlighted).
use std::{fmt::Write, net::IpAddr};

use netpath_core::model::{Direction, Event, EventKind, FamilyReport, Hop, TraceReport, Verdict};

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
        "where" => {
            r.at.as_ref()
                .map(|w| {
                    let mut s = format!(
                        "{} {}",
                        if w.node.is_empty() { "-" } else { &w.node },
                        w.netns
                    );
                    if !w.ifname.is_empty() {
                        s.push_str(&format!(" {}", w.ifname));
                    }
                    s
                })
                .unwrap_or("-".into())
        }
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

/// The whole report as text.
pub fn render(r: &TraceReport, style: Style) -> String {
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
mod tests {
    use super::*;
    use netpath_core::model::{
        Cause, DropSection, Endpoint, EndpointKind, Family, FlowKey, Hook, NeighEvent, PacketIdent,
        PacketSection, Proto, RouteLookup, RouteType, Where,
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
            from: endpoint("pod-a"),
            to: endpoint("pod-c"),
            verdicts: vec![ok, bad],
            lost_events: 0,
            elapsed_ms: 1900,
        };
        let text = render(&report, Style { color: false });
        let verdict_line = text.lines().find(|l| l.starts_with("verdict")).unwrap();
        assert!(verdict_line.contains("delivered") && verdict_line.contains("dropped"));
        assert!(text.contains("not_on_link") && text.contains("IP_INNOROUTES"));
        assert!(text.contains("fix: fix the prefix"));
        assert!(!text.contains('\x1b'));
        assert!(render(&report, Style { color: true }).contains("\x1b[1;31mdropped"));
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
