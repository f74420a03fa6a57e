//! The human report of `netpath trace`: both families side by side, then each path hop by hop
//! with the drop point and the cause highlighted.
use std::fmt::Write;

use crate::event::{Direction, EventKind};

use super::{family_name, path::Hop, FamilyReport, TraceReport, Verdict};

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
            t.kind,
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
            style.paint("1", &format!("{:<width$}", family_name(v.family)))
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
            style.paint("1", family_name(v.family)),
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
    use crate::{
        lab::Family,
        resolve::{Endpoint, EndpointKind},
        trace::{Cause, Where},
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
}
