//! `netpath check`: what this kernel supports and what netpath will use, one line each.
use std::io::Write;

use anyhow::Result;
use clap::Args;
use tracer::node::features::{self, Feature, Report, Status};

/// Exit status when netpath cannot work here.
pub const CANNOT_RUN: i32 = 1;

#[derive(Debug, Args)]
#[command(
    after_help = "Each feature is found by trying it (loading a trivial program, creating a \
small ring buffer, adding a clsact qdisc in a throwaway network namespace) or by reading the \
kernel's BTF, never by the kernel's version number. netpath's own programs are loaded and \
verified as `trace` and `watch` load them; nothing is attached and nothing is left behind.

Lines:
  ok   FEATURE   what netpath gets from it
  no   FEATURE   why not; instead: what netpath does without it
  ??   FEATURE   not tried, because something it needs is missing
  A required feature that is absent is marked [required].

Exit status: 0 when netpath can work here (perhaps without some optional features), 1 when it \
cannot (no BTF, no BPF ring buffer, its programs rejected, or this user may not load programs: \
run as root).

Examples:
  netpath check                        is this node ready for netpath?
  netpath check --json | jq .can_run   the same, for scripts"
)]
pub struct CheckArgs {
    /// Print one JSON object: {kernel, root, can_run, features: [{name, status, required, detail,
    /// instead}]}; status is ok, no or unknown.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs) -> Result<i32> {
    let report = features::check();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &json(&report))?;
        writeln!(out)?;
    } else {
        out.write_all(render(&report).as_bytes())?;
    }
    Ok(exit_code(&report))
}

/// 0 when netpath can work here, [`CANNOT_RUN`] otherwise.
pub fn exit_code(report: &Report) -> i32 {
    if report.can_run() {
        0
    } else {
        CANNOT_RUN
    }
}

/// The report as `--json` prints it.
pub fn json(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "kernel": report.kernel,
        "root": report.root,
        "can_run": report.can_run(),
        "features": report.features,
    })
}

/// Every line, then the verdict.
pub fn render(report: &Report) -> String {
    let width = report
        .features
        .iter()
        .map(|f| f.name.len() + 1)
        .max()
        .unwrap_or(0)
        .max(16);
    let mut s = format!("kernel {}\n", report.kernel);
    for f in &report.features {
        s.push_str(&line(f, width));
        s.push('\n');
    }
    s.push_str(&verdict(report));
    s.push('\n');
    s
}

/// `ok   tcx             attach tc programs without a qdisc`
pub fn line(f: &Feature, width: usize) -> String {
    let status = match f.status {
        Status::Ok => "ok",
        Status::No => "no",
        Status::Unknown => "??",
    };
    let mut s = format!("{status:<4} {:<width$}{}", f.name, f.detail);
    if !f.is_ok() && f.required {
        s.push_str(" [required]");
    }
    if let Some(instead) = &f.instead {
        s.push_str("; instead: ");
        s.push_str(instead);
    }
    s
}

/// The last line: whether netpath can work here, and what it goes without.
pub fn verdict(report: &Report) -> String {
    let names =
        |it: &mut dyn Iterator<Item = &Feature>| -> Vec<&str> { it.map(|f| f.name).collect() };
    let blockers = names(&mut report.blockers());
    if !blockers.is_empty() {
        let hint = if report.root {
            ""
        } else {
            " (not root: run as root)"
        };
        return format!(
            "netpath cannot run here: {} missing{hint}",
            blockers.join(", ")
        );
    }
    let missing = names(&mut report.missing());
    if missing.is_empty() {
        "netpath can run here, with every feature".into()
    } else {
        format!("netpath can run here, without: {}", missing.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &'static str, status: Status, required: bool, detail: &str) -> Feature {
        Feature {
            name,
            status,
            required,
            detail: detail.into(),
            instead: None,
        }
    }

    fn host_like() -> Report {
        Report {
            kernel: "6.18.0".into(),
            root: true,
            features: vec![
                feature("btf", Status::Ok, true, "/sys/kernel/btf/vmlinux"),
                feature(
                    "tcx",
                    Status::Ok,
                    false,
                    "attach tc programs without a qdisc",
                ),
                Feature {
                    instead: Some("no function tracing".into()),
                    ..feature(
                        "fentry",
                        Status::No,
                        false,
                        "EPERM (loading a trivial fentry program on ip_rcv)",
                    )
                },
            ],
        }
    }

    #[test]
    fn lines_are_status_name_and_detail_in_columns() {
        let r = host_like();
        assert_eq!(
            line(&r.features[1], 16),
            "ok   tcx             attach tc programs without a qdisc"
        );
        assert_eq!(
            line(&r.features[2], 16),
            "no   fentry          EPERM (loading a trivial fentry program on ip_rcv); \
             instead: no function tracing"
        );
        let blocked = feature("bpf", Status::No, true, "EPERM");
        assert_eq!(line(&blocked, 8), "no   bpf     EPERM [required]");
        let unknown = feature("kprobes", Status::Unknown, false, "not tried");
        assert!(line(&unknown, 8).starts_with("??   kprobes "));
    }

    #[test]
    fn the_exit_code_and_verdict_follow_the_required_features() {
        let mut r = host_like();
        assert_eq!(exit_code(&r), 0);
        assert_eq!(verdict(&r), "netpath can run here, without: fentry");
        let text = render(&r);
        assert!(text.starts_with("kernel 6.18.0\nok   btf "), "{text}");
        assert!(text.ends_with("without: fentry\n"), "{text}");
        r.features
            .push(feature("ringbuf", Status::No, true, "EPERM"));
        r.features
            .push(feature("programs", Status::Unknown, true, "not tried"));
        assert_eq!(exit_code(&r), CANNOT_RUN);
        assert_eq!(
            verdict(&r),
            "netpath cannot run here: ringbuf, programs missing"
        );
        r.root = false;
        assert_eq!(
            verdict(&r),
            "netpath cannot run here: ringbuf, programs missing (not root: run as root)"
        );
        r.features.retain(|f| f.required);
        r.features.truncate(1);
        assert_eq!(verdict(&r), "netpath can run here, with every feature");
    }

    #[test]
    fn json_has_the_verdict_and_every_feature() {
        let v = json(&host_like());
        assert_eq!(v["kernel"], "6.18.0");
        assert_eq!(v["can_run"], true);
        let f = &v["features"][2];
        assert_eq!(f["name"], "fentry");
        assert_eq!(f["status"], "no");
        assert_eq!(f["required"], false);
        assert_eq!(f["instead"], "no function tracing");
        assert!(v["features"][0].get("instead").is_none());
    }
}
