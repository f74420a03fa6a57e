//! `netpath trace` as a picture: nodes as boxes, inside them the namespaces and devices the
//! probes went through in path order, and per family a column of its steps with the drop
//! marked. Three drawings of one layout: text (terminal), SVG and Graphviz dot. All are
//! deterministic: the same report gives the same bytes (no timestamps, no hash order).
use std::fmt::Write;

use netpath_core::model::{Direction, EventKind, FamilyReport, Hop, TraceReport, Verdict};

/// How `trace` (and `render`) print the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The verdict table and one line per family (the paths with -v, a diagram with --picture).
    Text,
    /// The picture as an SVG image.
    Svg,
    /// The picture as a Graphviz digraph (`dot -Tpng`).
    Dot,
}

/// A device's place: node, namespace, device (`-` when the event had none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    node: String,
    netns: String,
    ifname: String,
}

impl Place {
    fn of(h: &Hop) -> Place {
        let or = |s: &str, none: &str| {
            if s.is_empty() {
                none.to_string()
            } else {
                s.to_string()
            }
        };
        Place {
            node: or(&h.node, "host"),
            netns: h.netns.clone(),
            ifname: or(&h.ifname, "-"),
        }
    }
}

/// One step of a family's probe path at a place: its number in the path (as `-v` lists it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    step: usize,
    dir: Direction,
    /// A drop: the kernel's reason.
    dropped: Option<String>,
    /// Address rewrites since the previous step (`DNAT`, `SNAT`, `DNAT+SNAT`).
    nat: Option<String>,
}

impl Mark {
    fn text(&self) -> String {
        let mut text = match (&self.dropped, self.dir) {
            (Some(reason), _) => format!("{} ✗ {reason}", self.step),
            (None, Direction::Ingress) => format!("{} in", self.step),
            (None, Direction::Egress) => format!("{} out", self.step),
            (None, Direction::None) => format!("{}", self.step),
        };
        if let Some(nat) = &self.nat {
            text.push(' ');
            text.push_str(nat);
        }
        text
    }
}

/// One line of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Row {
    NodeTop(String),
    Netns(String),
    /// A device, and per family its marks there.
    Device(Place, Vec<Vec<Mark>>),
    NodeBottom,
}

/// The layout every drawing is made from.
struct Layout {
    title: String,
    /// Per family: `IPv4 delivered`.
    columns: Vec<String>,
    /// Whether the family's column shows a failure.
    failed: Vec<bool>,
    rows: Vec<Row>,
    /// Per family, its places in step order with the marks (for lines and edges).
    paths: Vec<Vec<(Place, Mark)>>,
}

/// The steps of a family's probe path that are places (not route lookups).
fn marks(v: &FamilyReport) -> Vec<(Place, Mark)> {
    v.hops
        .iter()
        .enumerate()
        .filter(|(_, h)| matches!(h.kind, EventKind::Hop | EventKind::Drop))
        .map(|(i, h)| {
            let dropped =
                (h.kind == EventKind::Drop).then(|| h.reason.clone().unwrap_or_else(|| "?".into()));
            (
                Place::of(h),
                Mark {
                    step: i + 1,
                    dir: h.dir,
                    dropped,
                    nat: h.nat.as_deref().map(nat_kinds),
                },
            )
        })
        .collect()
}

/// The kinds of a hop's rewrite note (`DNAT 10.96.0.10:80 -> 10.244.2.2:8080` is `DNAT`).
fn nat_kinds(note: &str) -> String {
    note.split(", ")
        .filter_map(|part| part.split(' ').next())
        .collect::<Vec<_>>()
        .join("+")
}

fn layout(r: &TraceReport) -> Layout {
    let paths: Vec<Vec<(Place, Mark)>> = r.verdicts.iter().map(marks).collect();
    // Nodes, their namespaces and their devices in the order the paths first reach them
    // (families in order, each path in step order).
    type Namespace = (String, Vec<Place>);
    let mut nodes: Vec<(String, Vec<Namespace>)> = Vec::new();
    for (place, _) in paths.iter().flatten() {
        let n = match nodes.iter().position(|(name, _)| *name == place.node) {
            Some(i) => i,
            None => {
                nodes.push((place.node.clone(), Vec::new()));
                nodes.len() - 1
            }
        };
        let namespaces = &mut nodes[n].1;
        let ns = match namespaces.iter().position(|(name, _)| *name == place.netns) {
            Some(i) => i,
            None => {
                namespaces.push((place.netns.clone(), Vec::new()));
                namespaces.len() - 1
            }
        };
        if !namespaces[ns].1.contains(place) {
            namespaces[ns].1.push(place.clone());
        }
    }
    let mut rows = Vec::new();
    for (node, namespaces) in nodes {
        rows.push(Row::NodeTop(node));
        for (netns, devices) in namespaces {
            rows.push(Row::Netns(netns));
            for place in devices {
                let cells = paths
                    .iter()
                    .map(|p| {
                        p.iter()
                            .filter(|(at, _)| *at == place)
                            .map(|(_, m)| m.clone())
                            .collect()
                    })
                    .collect();
                rows.push(Row::Device(place, cells));
            }
        }
        rows.push(Row::NodeBottom);
    }
    Layout {
        title: format!("{} -> {}", r.from.name, r.to.name),
        columns: r
            .verdicts
            .iter()
            .map(|v| format!("{} {}", v.family.name(), v.verdict.as_str()))
            .collect(),
        failed: r
            .verdicts
            .iter()
            .map(|v| v.verdict != Verdict::Delivered)
            .collect(),
        rows,
        paths,
    }
}

fn cell_text(marks: &[Mark]) -> String {
    marks.iter().map(Mark::text).collect::<Vec<_>>().join("  ")
}

/// Widths of the layout's text grid, in characters: the left part (namespaces, devices) and
/// each family's column.
fn widths(l: &Layout) -> (usize, Vec<usize>) {
    let width = |s: &str| s.chars().count();
    let left = l
        .rows
        .iter()
        .map(|r| match r {
            Row::Netns(n) => width(n),
            Row::Device(p, _) => 2 + width(&p.ifname),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
        .max(8);
    let columns = l
        .columns
        .iter()
        .enumerate()
        .map(|(i, title)| {
            l.rows
                .iter()
                .filter_map(|r| match r {
                    Row::Device(_, cells) => Some(width(&cell_text(&cells[i]))),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
                .max(width(title))
        })
        .collect();
    (left, columns)
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// The diagram for the terminal (after the table with `--picture`).
pub fn text(r: &TraceReport) -> String {
    let l = layout(r);
    let (left, columns) = widths(&l);
    let inner = left + columns.iter().map(|w| w + 3).sum::<usize>();
    let mut out = String::new();
    let mut header = format!("  {}", " ".repeat(left));
    for (title, w) in l.columns.iter().zip(&columns) {
        let _ = write!(header, "   {}", pad(title, *w));
    }
    let _ = writeln!(out, "{}", header.trim_end());
    for row in &l.rows {
        let line = match row {
            Row::NodeTop(name) => {
                let label = format!("─ {name} ");
                let fill = (inner + 2).saturating_sub(label.chars().count());
                format!("┌{label}{}┐", "─".repeat(fill))
            }
            Row::NodeBottom => format!("└{}┘", "─".repeat(inner + 2)),
            Row::Netns(netns) => format!("│ {} │", pad(netns, inner)),
            Row::Device(place, cells) => {
                let mut content = pad(&format!("  {}", place.ifname), left);
                for (marks, w) in cells.iter().zip(&columns) {
                    let _ = write!(content, "   {}", pad(&cell_text(marks), *w));
                }
                format!("│ {content} │")
            }
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "numbers: each probe's steps, as -v lists them (route lookups left out); ✗: the drop"
    );
    out
}

/// Text for XML: `&`, `<`, `>` and quotes escaped.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Colours of the families' columns (IPv4, IPv6, ...) and of a drop.
const COLOURS: [&str; 2] = ["#1f5fbf", "#1a7f37"];
const DROP_COLOUR: &str = "#cf222e";

/// The picture as a self-contained SVG: the text layout on a monospace grid, nodes as boxes,
/// each family's steps joined by a line in its colour.
pub fn svg(r: &TraceReport) -> String {
    const CHAR_W: usize = 9; // px per character: 15 px monospace is about 0.6 em wide.
    const ROW_H: usize = 22;
    const MARGIN: usize = 16;
    let l = layout(r);
    let (left, columns) = widths(&l);
    let inner_chars = left + columns.iter().map(|w| w + 3).sum::<usize>();
    let box_w = (inner_chars + 2) * CHAR_W;
    // Rows: the title, the column titles, then the layout.
    let top = MARGIN + 2 * ROW_H;
    let width = box_w + 2 * MARGIN;
    let height = top + l.rows.len() * ROW_H + MARGIN;
    let baseline = |row: usize| top + row * ROW_H + 15;
    let column_x: Vec<usize> = columns
        .iter()
        .scan(MARGIN + (1 + left + 3) * CHAR_W, |x, w| {
            let here = *x;
            *x += (w + 3) * CHAR_W;
            Some(here)
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, monospace" font-size="15">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="{}" font-weight="bold">{}</text>"#,
        MARGIN + 15,
        xml(&l.title)
    );
    for (i, (title, x)) in l.columns.iter().zip(&column_x).enumerate() {
        let colour = if l.failed[i] {
            DROP_COLOUR
        } else {
            COLOURS[i % COLOURS.len()]
        };
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{}" font-weight="bold" fill="{colour}">{}</text>"#,
            MARGIN + ROW_H + 15,
            xml(title)
        );
    }
    // Node boxes first, text over them.
    let mut open = None;
    for (i, row) in l.rows.iter().enumerate() {
        match row {
            Row::NodeTop(_) => open = Some(i),
            Row::NodeBottom => {
                if let Some(start) = open.take() {
                    let _ = writeln!(
                        out,
                        r##"<rect x="{MARGIN}" y="{}" width="{box_w}" height="{}" rx="6" fill="#f6f8fa" stroke="#57606a"/>"##,
                        top + start * ROW_H + 4,
                        (i - start) * ROW_H + ROW_H / 2,
                    );
                }
            }
            _ => {}
        }
    }
    // Each family's steps joined in order, at the left edge of its column.
    let row_of = |place: &Place| {
        l.rows
            .iter()
            .position(|r| matches!(r, Row::Device(p, _) if p == place))
    };
    for (i, path) in l.paths.iter().enumerate() {
        let x = column_x[i] - CHAR_W / 2 - 2;
        let points: Vec<String> = path
            .iter()
            .filter_map(|(place, _)| row_of(place))
            .map(|row| format!("{x},{}", baseline(row) - 5))
            .collect();
        if points.len() > 1 {
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                points.join(" "),
                COLOURS[i % COLOURS.len()]
            );
        }
    }
    for (i, row) in l.rows.iter().enumerate() {
        let y = baseline(i);
        match row {
            Row::NodeTop(name) => {
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{y}" font-weight="bold">{}</text>"#,
                    MARGIN + CHAR_W,
                    xml(name)
                );
            }
            Row::Netns(netns) => {
                let _ = writeln!(
                    out,
                    r##"<text x="{}" y="{y}" fill="#57606a">{}</text>"##,
                    MARGIN + CHAR_W,
                    xml(netns)
                );
            }
            Row::Device(place, cells) => {
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{y}">{}</text>"#,
                    MARGIN + 3 * CHAR_W,
                    xml(&place.ifname)
                );
                for (c, marks) in cells.iter().enumerate() {
                    if marks.is_empty() {
                        continue;
                    }
                    let colour = if marks.iter().any(|m| m.dropped.is_some()) {
                        DROP_COLOUR
                    } else {
                        COLOURS[c % COLOURS.len()]
                    };
                    let _ = writeln!(
                        out,
                        r#"<text x="{}" y="{y}" fill="{colour}">{}</text>"#,
                        column_x[c],
                        xml(&cell_text(marks))
                    );
                }
            }
            Row::NodeBottom => {}
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A quoted dot string.
fn dot_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The picture as a Graphviz digraph: a cluster per node, inside it a cluster per namespace
/// with its devices; each family's steps as edges in its colour, a drop as a red octagon.
pub fn dot(r: &TraceReport) -> String {
    let l = layout(r);
    let mut out = String::new();
    let _ = writeln!(out, "digraph netpath {{");
    let _ = writeln!(
        out,
        "  label={}; labelloc=t; fontname=\"monospace\";",
        dot_str(&l.title)
    );
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"monospace\"];\n  edge [fontname=\"monospace\", fontsize=10];"
    );
    let mut ids: Vec<(Place, String)> = Vec::new();
    let (mut clusters, mut in_netns) = (0, false);
    for row in &l.rows {
        match row {
            Row::NodeTop(name) => {
                let _ = writeln!(
                    out,
                    "  subgraph cluster_{clusters} {{\n    label={}; style=rounded; bgcolor=\"#f6f8fa\";",
                    dot_str(name)
                );
                clusters += 1;
            }
            Row::Netns(netns) => {
                if in_netns {
                    let _ = writeln!(out, "    }}");
                }
                let _ = writeln!(
                    out,
                    "    subgraph cluster_{clusters} {{\n      label={}; style=dashed;",
                    dot_str(netns)
                );
                clusters += 1;
                in_netns = true;
            }
            Row::Device(place, _) => {
                let id = format!("d{}", ids.len());
                let _ = writeln!(out, "      {id} [label={}];", dot_str(&place.ifname));
                ids.push((place.clone(), id));
            }
            Row::NodeBottom => {
                if in_netns {
                    let _ = writeln!(out, "    }}");
                    in_netns = false;
                }
                let _ = writeln!(out, "  }}");
            }
        }
    }
    let id_of = |place: &Place| {
        ids.iter()
            .find(|(p, _)| p == place)
            .map(|(_, id)| id.as_str())
            .unwrap_or("?")
    };
    for (i, path) in l.paths.iter().enumerate() {
        let family = &l.columns[i];
        let family = family.split(' ').next().unwrap_or(family);
        let colour = COLOURS[i % COLOURS.len()];
        let mut prev: Option<&str> = None;
        for (place, mark) in path {
            let here = id_of(place);
            if let Some(reason) = &mark.dropped {
                let drop_id = format!("drop{i}");
                let _ = writeln!(
                    out,
                    "  {drop_id} [label={}, shape=octagon, style=bold, color=\"{DROP_COLOUR}\", fontcolor=\"{DROP_COLOUR}\"];",
                    dot_str(&format!("✗ {family} dropped: {reason}"))
                );
                let _ = writeln!(
                    out,
                    "  {here} -> {drop_id} [color=\"{DROP_COLOUR}\", label={}];",
                    dot_str(&format!("{family} {}", mark.step))
                );
                break;
            }
            if let Some(p) = prev.filter(|p| *p != here) {
                let _ = writeln!(
                    out,
                    "  {p} -> {here} [color=\"{colour}\", fontcolor=\"{colour}\", label={}];",
                    dot_str(&format!("{family} {}", mark.step))
                );
            }
            prev = Some(here);
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::render::tests::sample_report;

    /// Compares with the stored snapshot; `NETPATH_UPDATE_SNAPSHOTS=1` rewrites it instead.
    fn snapshot(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/cli/snapshots")
            .join(name);
        if std::env::var_os("NETPATH_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (NETPATH_UPDATE_SNAPSHOTS=1 writes it)",
                path.display()
            )
        });
        assert_eq!(
            actual, expected,
            "{name} changed (NETPATH_UPDATE_SNAPSHOTS=1 rewrites it)"
        );
    }

    #[test]
    fn a_rewritten_step_says_which_rewrite() {
        let mut r = sample_report();
        r.verdicts[0].hops[1].nat = Some("DNAT 10.96.0.10:80 -> 10.244.2.2:8080".into());
        r.verdicts[0].hops[3].nat =
            Some("DNAT 10.96.0.10 -> 10.244.2.2, SNAT 10.244.1.2 -> 198.18.0.11".into());
        let picture = text(&r);
        let row = |dev: &str| {
            picture
                .lines()
                .find(|l| l.contains(&format!("  {dev} ")))
                .unwrap_or_else(|| panic!("{picture}"))
                .to_string()
        };
        assert!(row("veth1a").contains("2 in DNAT "), "{picture}");
        assert!(picture.contains("4 out DNAT+SNAT"), "{picture}");
    }

    #[test]
    fn text_picture_snapshot() {
        snapshot("picture.txt", &text(&sample_report()));
    }

    #[test]
    fn svg_picture_snapshot() {
        snapshot("picture.svg", &svg(&sample_report()));
    }

    #[test]
    fn dot_picture_snapshot() {
        snapshot("picture.dot", &dot(&sample_report()));
    }
}
