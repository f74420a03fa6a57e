//! `netpath diff A.json [B.json]`: what changed between two saved trace reports (per family:
//! verdict, cause, where, and the first hop where the paths part ways), or, with one report,
//! between its IPv4 and IPv6 paths.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use netpath_core::model::{EventKind, Family, FamilyReport, Hop, TraceReport};

use super::render::{kind_name, place_text};

#[derive(Debug, Args)]
#[command(
    after_help = "A and B: reports saved with `netpath trace ... --json > A.json`.
With one report, its IPv4 and IPv6 results are compared with each other.

Exit status: 0 when nothing differs, 1 when something does, 2 on an error (like diff).

Examples:
  netpath diff before.json after.json     what a change to the cluster did to each family
  netpath diff now.json                   where IPv6 parts ways with IPv4"
)]
pub struct DiffArgs {
    /// The first report (`-` for standard input).
    #[arg(value_name = "A.json")]
    pub a: PathBuf,
    /// The second report; without it, A's IPv4 is compared with A's IPv6.
    #[arg(value_name = "B.json")]
    pub b: Option<PathBuf>,
}

/// A saved `netpath trace --json` report, checked to be of the layout this netpath reads.
pub fn load_report(path: &Path) -> Result<TraceReport> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(TraceReport::SCHEMA_VERSION) => {}
        Some(v) => bail!(
            "{}: schema_version {v}; this netpath reads {}",
            path.display(),
            TraceReport::SCHEMA_VERSION
        ),
        None => bail!(
            "{}: not a `netpath trace --json` report (no schema_version)",
            path.display()
        ),
    }
    serde_json::from_value(value)
        .with_context(|| format!("{}: not a `netpath trace --json` report", path.display()))
}

/// Which of a family's two paths: the probe's or the answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    Probe,
    Answer,
}

impl Leg {
    fn name(self) -> &'static str {
        match self {
            Leg::Probe => "probe",
            Leg::Answer => "answer",
        }
    }
}

/// One difference between two family results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// `verdict`, `cause` or `where` differs: the field and each side's value.
    Field {
        field: &'static str,
        a: String,
        b: String,
    },
    /// The paths part ways at their `place`-th place (0-based; route lookups are not places):
    /// each side's step there, `None` past its end.
    Diverges {
        path: Leg,
        place: usize,
        a: Option<Step>,
        b: Option<Step>,
    },
    /// A family one side has and the other has not (`a`: A has it).
    Missing { a: bool },
}

/// A step of a path: its number in the hop list (from 1, as `trace -v` lists it) and the hop
/// in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub number: usize,
    pub text: String,
}

/// A hop as compared: where it was and what it was.
fn hop_key(h: &Hop) -> (&str, &str, &str, EventKind) {
    (&h.node, &h.netns, &h.ifname, h.kind)
}

/// A hop in words, as the diff prints it: `node-1 np-node-1 eth0 hop`.
fn hop_text(h: &Hop) -> String {
    let (node, netns, ifname, kind) = hop_key(h);
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "{} {} {} {}",
        or_dash(node),
        netns,
        or_dash(ifname),
        kind_name(kind)
    )
}

/// The places of a path (route lookups left out: they are not places, and the kernel makes
/// more or fewer of them for reasons of its own), with their step numbers.
fn places(hops: &[Hop]) -> Vec<(usize, &Hop)> {
    hops.iter()
        .enumerate()
        .filter(|(_, h)| matches!(h.kind, EventKind::Hop | EventKind::Drop | EventKind::Func))
        .map(|(i, h)| (i + 1, h))
        .collect()
}

/// The first place where two paths differ in node, namespace, device or kind.
fn first_divergence(path: Leg, a: &[Hop], b: &[Hop]) -> Option<Difference> {
    let (a, b) = (places(a), places(b));
    let place = (0..a.len().max(b.len()))
        .find(|&i| a.get(i).map(|(_, h)| hop_key(h)) != b.get(i).map(|(_, h)| hop_key(h)))?;
    let step = |p: Option<&(usize, &Hop)>| {
        p.map(|(number, h)| Step {
            number: *number,
            text: hop_text(h),
        })
    };
    Some(Difference::Diverges {
        path,
        place,
        a: step(a.get(place)),
        b: step(b.get(place)),
    })
}

fn where_text(r: &FamilyReport) -> String {
    r.at.as_ref().map(place_text).unwrap_or_else(|| "-".into())
}

/// Everything that differs between two results (of one family in two reports, or of the two
/// families of one report): verdict, cause, where, then each path's first divergence.
pub fn compare(a: &FamilyReport, b: &FamilyReport) -> Vec<Difference> {
    let mut out = Vec::new();
    type Field = (&'static str, fn(&FamilyReport) -> String);
    let fields: [Field; 3] = [
        ("verdict", |r| r.verdict.as_str().to_string()),
        ("cause", |r| {
            r.cause.map_or("-".into(), |c| c.as_str().to_string())
        }),
        ("where", where_text),
    ];
    for (field, value) in fields {
        let (va, vb) = (value(a), value(b));
        if va != vb {
            out.push(Difference::Field {
                field,
                a: va,
                b: vb,
            });
        }
    }
    out.extend(first_divergence(Leg::Probe, &a.hops, &b.hops));
    out.extend(first_divergence(Leg::Answer, &a.reply_hops, &b.reply_hops));
    out
}

/// Per family of either report (in family order), its differences.
pub fn compare_reports(a: &TraceReport, b: &TraceReport) -> Vec<(Family, Vec<Difference>)> {
    let mut families: Vec<_> = a
        .verdicts
        .iter()
        .chain(&b.verdicts)
        .map(|v| v.family)
        .collect();
    families.sort();
    families.dedup();
    families
        .into_iter()
        .map(|family| {
            let find = |r: &TraceReport| r.verdicts.iter().find(|v| v.family == family).cloned();
            let diffs = match (find(a), find(b)) {
                (Some(fa), Some(fb)) => compare(&fa, &fb),
                (fa, _) => vec![Difference::Missing { a: fa.is_some() }],
            };
            (family, diffs)
        })
        .collect()
}

/// The differences of one comparison as lines, each starting with `label`, the sides called
/// `name_a` and `name_b`.
fn lines(label: &str, diffs: &[Difference], name_a: &str, name_b: &str) -> Vec<String> {
    diffs
        .iter()
        .map(|d| match d {
            Difference::Field { field, a, b } => format!("{label} {field}: {a} -> {b}"),
            Difference::Diverges { path, place, a, b } => {
                let side = |name: &str, step: &Option<Step>| match step {
                    Some(s) => format!("{name} #{} {}", s.number, s.text),
                    None => format!("{name} (ended)"),
                };
                format!(
                    "{label} {} path differs from place {}: {}; {}",
                    path.name(),
                    place + 1,
                    side(name_a, a),
                    side(name_b, b),
                )
            }
            Difference::Missing { a } => {
                format!("{label}: only in {}", if *a { name_a } else { name_b })
            }
        })
        .collect()
}

fn title(r: &TraceReport) -> String {
    format!("{} -> {}", r.from.name, r.to.name)
}

pub fn run(args: DiffArgs) -> Result<i32> {
    let a = load_report(&args.a)?;
    let mut out = Vec::new();
    match &args.b {
        Some(path_b) => {
            let b = load_report(path_b)?;
            out.push(format!("A: {} ({})", args.a.display(), title(&a)));
            out.push(format!("B: {} ({})", path_b.display(), title(&b)));
            let mut any = false;
            for (family, diffs) in compare_reports(&a, &b) {
                any |= !diffs.is_empty();
                out.extend(lines(family.name(), &diffs, "A", "B"));
            }
            if !any {
                out.push("same verdicts, causes, places and paths".into());
            }
            print(&out);
            Ok(i32::from(any))
        }
        None => {
            let [v4, v6] = a.verdicts.as_slice() else {
                bail!(
                    "{}: one report compares its IPv4 and IPv6 results, but it has {} \
                     (trace without --family)",
                    args.a.display(),
                    a.verdicts.len()
                );
            };
            out.push(format!(
                "{} ({}): IPv4 vs IPv6",
                args.a.display(),
                title(&a)
            ));
            let diffs = compare(v4, v6);
            out.extend(lines(
                &format!("{} vs {}", v4.family.name(), v6.family.name()),
                &diffs,
                v4.family.name(),
                v6.family.name(),
            ));
            if diffs.is_empty() {
                out.push("same verdicts, causes, places and paths".into());
            }
            print(&out);
            Ok(i32::from(!diffs.is_empty()))
        }
    }
}

fn print(lines: &[String]) {
    super::trace::print(&(lines.join("\n") + "\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::render::tests::sample_report;
    use netpath_core::model::{Cause, Verdict};

    #[test]
    fn the_same_report_has_no_differences() {
        let r = sample_report();
        assert!(compare_reports(&r, &r).iter().all(|(_, d)| d.is_empty()));
    }

    #[test]
    fn a_new_drop_shows_in_verdict_cause_where_and_the_first_divergent_hop() {
        let before = sample_report();
        let mut after = before.clone();
        // IPv4 now dies where IPv6 does: on the underlay's bridge.
        let v6 = after.verdicts[1].clone();
        let v4 = &mut after.verdicts[0];
        v4.verdict = Verdict::Dropped;
        v4.cause = Some(Cause::NetfilterDrop);
        v4.at = v6.at.clone();
        let cut = v4
            .hops
            .iter()
            .position(|h| h.netns == "np-underlay")
            .unwrap();
        v4.hops.truncate(cut);
        v4.hops
            .extend(v6.hops.iter().filter(|h| h.netns == "np-underlay").cloned());
        v4.reply_hops.clear();
        let diffs = compare_reports(&before, &after);
        assert_eq!(diffs.len(), 2);
        assert!(diffs[1].1.is_empty(), "IPv6 unchanged: {:?}", diffs[1]);
        let (_, d4) = &diffs[0];
        assert_eq!(
            d4[..3],
            [
                Difference::Field {
                    field: "verdict",
                    a: "delivered".into(),
                    b: "dropped".into()
                },
                Difference::Field {
                    field: "cause",
                    a: "-".into(),
                    b: "netfilter_drop".into()
                },
                Difference::Field {
                    field: "where",
                    a: "-".into(),
                    b: "underlay np-underlay br0".into()
                },
            ]
        );
        let Difference::Diverges { path, place, a, b } = &d4[3] else {
            panic!("{d4:?}")
        };
        assert_eq!(*path, Leg::Probe);
        // Places 1-4 are the same (pod-a, node-1 twice, the underlay's port from node-1); the
        // 5th is where IPv4 now goes astray.
        assert_eq!(*place, 4);
        let (a, b) = (a.clone().unwrap(), b.clone().unwrap());
        assert_eq!(before.verdicts[0].hops[a.number - 1].ifname, "node-2");
        assert_eq!(after.verdicts[0].hops[b.number - 1].ifname, "br0");
        assert!(
            matches!(
                &d4[4],
                Difference::Diverges {
                    path: Leg::Answer,
                    place: 0,
                    b: None,
                    ..
                }
            ),
            "{d4:?}"
        );
        let text = lines("IPv4", d4, "A", "B");
        assert_eq!(text[0], "IPv4 verdict: delivered -> dropped");
        assert_eq!(
            text[3],
            "IPv4 probe path differs from place 5: A #6 underlay np-underlay node-2 hop; \
             B #6 underlay np-underlay br0 hop"
        );
        assert!(text[4].ends_with("B (ended)"), "{text:?}");
    }

    #[test]
    fn a_family_on_one_side_only_is_a_difference() {
        let both = sample_report();
        let mut v4_only = both.clone();
        v4_only.verdicts.truncate(1);
        let diffs = compare_reports(&both, &v4_only);
        assert_eq!(diffs[1].1, [Difference::Missing { a: true }]);
    }

    #[test]
    fn ipv4_against_ipv6_of_one_report() {
        let r = sample_report();
        let d = compare(&r.verdicts[0], &r.verdicts[1]);
        assert!(d.contains(&Difference::Field {
            field: "verdict",
            a: "delivered".into(),
            b: "dropped".into()
        }));
        // Both go the same way until the underlay, where IPv6 goes to the bridge's own device
        // (IPv4 has one route lookup more on node-1: not a place, not a difference).
        let Some(Difference::Diverges { place, a, b, .. }) = d.iter().find(|x| {
            matches!(
                x,
                Difference::Diverges {
                    path: Leg::Probe,
                    ..
                }
            )
        }) else {
            panic!("{d:?}")
        };
        assert_eq!(*place, 4);
        assert_eq!(a.as_ref().unwrap().text, "underlay np-underlay node-2 hop");
        assert_eq!(b.as_ref().unwrap().text, "underlay np-underlay br0 hop");
    }

    #[test]
    fn reports_of_another_layout_are_refused_in_one_line() {
        let dir = std::env::temp_dir().join(format!("netpath-diff-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.json");
        let mut value = serde_json::to_value(sample_report()).unwrap();
        std::fs::write(&file, value.to_string()).unwrap();
        assert_eq!(load_report(&file).unwrap(), sample_report());
        value["schema_version"] = 2.into();
        std::fs::write(&file, value.to_string()).unwrap();
        let err = format!("{:#}", load_report(&file).unwrap_err());
        value.as_object_mut().unwrap().remove("schema_version");
        std::fs::write(&file, value.to_string()).unwrap();
        let err2 = format!("{:#}", load_report(&file).unwrap_err());
        std::fs::write(&file, "{").unwrap();
        let err3 = format!("{:#}", load_report(&file).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("schema_version 2"), "{err}");
        assert!(err2.contains("no schema_version"), "{err2}");
        assert!(err3.contains("not JSON"), "{err3}");
        for e in [err, err2, err3] {
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
