//! `netpath check` against the real kernel: each line says what the kernel has, found by
//! trying or from BTF; absent features say why and what netpath does instead; the exit status
//! says whether netpath can work here (0) or not (1, e.g. for a user who is not root).
use std::collections::HashMap;

use integration_tests::*;
use serde_json::Value;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(check_says_what_this_kernel_gives_netpath, Requires::Root),
        case!(
            function_tracing_absent_is_one_line_each_with_the_reason,
            Requires::Root,
            Requires::KernelWithout(Feature::Fentry),
            Requires::KernelWithout(Feature::Kprobes)
        ),
        case!(
            fentry_present_is_ok,
            Requires::Root,
            Requires::Kernel(Feature::Fentry)
        ),
        case!(
            kprobes_present_are_ok,
            Requires::Root,
            Requires::Kernel(Feature::Kprobes)
        ),
        case!(
            json_has_one_object_per_feature_as_the_text_says,
            Requires::Root
        ),
        case!(
            not_root_cannot_run_and_says_so,
            Requires::Root,
            Requires::Tool("setpriv")
        ),
        case!(help_teaches_the_lines_and_the_exit_status),
    ])
}

/// `netpath check`'s exit code and its lines by feature name: (status, rest of the line).
fn check_lines(
    out: &std::process::Output,
) -> (Option<i32>, HashMap<String, (String, String)>, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = HashMap::new();
    for l in text.lines() {
        let mut parts = l.splitn(2, ' ');
        let status = parts.next().unwrap_or_default();
        if !matches!(status, "ok" | "no" | "??") {
            continue;
        }
        let rest = parts.next().unwrap_or_default().trim_start();
        let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        lines.insert(
            name.to_string(),
            (status.to_string(), detail.trim_start().to_string()),
        );
    }
    (out.status.code(), lines, text)
}

/// Whether the kernel's BTF has `struct NAME`, read here independently of netpath.
fn btf_has_struct(name: &str) -> bool {
    let btf = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    btf.resolve_types_by_name(name)
        .unwrap_or_default()
        .iter()
        .any(|t| matches!(t, btf_rs::Type::Struct(_)))
}

fn check_says_what_this_kernel_gives_netpath() {
    let (code, lines, text) = check_lines(&netpath(&["check"]));
    assert_eq!(code, Some(0), "{text}");
    let line = |name: &str| {
        lines
            .get(name)
            .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
    };
    let ok = |name: &str| {
        let (status, detail) = line(name);
        assert_eq!(status, "ok", "{name}: {detail}\n{text}");
        detail.clone()
    };
    assert!(text.starts_with("kernel "), "{text}");
    assert!(ok("btf").starts_with("/sys/kernel/btf/vmlinux"));
    ok("bpf");
    assert_eq!(ok("ringbuf"), "BPF ring buffer: events to userspace");
    assert!(ok("programs").starts_with("netpath's programs pass the verifier"));
    // tcx where the kernel's BTF has it (as on 6.6 and later); the clsact qdisc otherwise.
    if btf_has_struct("tcx_entry") {
        assert_eq!(ok("tcx"), "attach tc programs without a qdisc");
        assert_eq!(ok("clsact"), "clsact qdisc fallback (unused: tcx is here)");
    } else {
        let (status, detail) = line("tcx");
        assert_eq!(status, "no", "{text}");
        assert!(detail.ends_with("; instead: clsact qdisc"), "{detail}");
        assert_eq!(ok("clsact"), "tc programs attach through a clsact qdisc");
    }
    assert_eq!(ok("kfree_skb"), "drops, with the kernel's drop reason");
    for tp in [
        "net_dev_queue",
        "netif_receive_skb",
        "fib_table_lookup",
        "fib6_table_lookup",
        "neigh_update",
        "neigh_timer_handler",
    ] {
        ok(tp);
    }
    let reasons = ok("drop-reasons");
    let count: u32 = reasons
        .strip_prefix("enum skb_drop_reason: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {reasons:?}"));
    assert!(count > 10, "{reasons}");
    ok("test-run");
    for name in ["fentry", "kprobes"] {
        let (status, _) = line(name);
        assert!(status == "ok" || status == "no", "{name}: {text}");
    }
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("netpath can run here"), "{text}");
}

fn function_tracing_absent_is_one_line_each_with_the_reason() {
    let (code, lines, text) = check_lines(&netpath(&["check"]));
    assert_eq!(
        code,
        Some(0),
        "missing function tracing is optional:\n{text}"
    );
    assert_eq!(
        lines.get("fentry"),
        Some(&(
            "no".to_string(),
            "EPERM (loading a trivial fentry program on ip_rcv); instead: no function tracing"
                .to_string()
        )),
        "{text}"
    );
    assert_eq!(
        lines.get("kprobes"),
        Some(&(
            "no".to_string(),
            "not built in (no kprobe PMU: CONFIG_KPROBES is off); instead: no function tracing"
                .to_string()
        )),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("netpath can run here, without: fentry, kprobes"),
        "{text}"
    );
}

fn function_line_is_ok(name: &str) {
    let (code, lines, text) = check_lines(&netpath(&["check"]));
    assert_eq!(code, Some(0), "{text}");
    let (status, detail) = lines.get(name).expect(name);
    assert_eq!(status, "ok", "{text}");
    assert!(detail.contains("ip_rcv"), "{detail}");
}

fn fentry_present_is_ok() {
    function_line_is_ok("fentry");
}

fn kprobes_present_are_ok() {
    function_line_is_ok("kprobes");
}

fn json_has_one_object_per_feature_as_the_text_says() {
    let out = netpath(&["check", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    assert_eq!(v["root"], true);
    assert_eq!(v["can_run"], true);
    let features = v["features"].as_array().expect("features");
    let (_, lines, text) = check_lines(&netpath(&["check"]));
    assert_eq!(features.len(), lines.len(), "{v:#}\n{text}");
    for f in features {
        let name = f["name"].as_str().expect("name");
        let status = f["status"].as_str().expect("status");
        assert!(matches!(status, "ok" | "no" | "unknown"), "{f}");
        assert!(f["required"].is_boolean() && f["detail"].is_string(), "{f}");
        // `instead` only for what is absent.
        assert!(f.get("instead").is_none() || status != "ok", "{f}");
        let (text_status, _) = &lines[name];
        let as_text = match status {
            "unknown" => "??",
            s => s,
        };
        assert_eq!(as_text, text_status, "{name}");
    }
    for required in ["btf", "bpf", "ringbuf", "programs"] {
        let f = features
            .iter()
            .find(|f| f["name"] == required)
            .unwrap_or_else(|| panic!("no {required} in {v:#}"));
        assert_eq!(f["required"], true, "{f}");
    }
}

fn not_root_cannot_run_and_says_so() {
    for json in [false, true] {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(netpath_bin())
            .arg("check")
            .args(json.then_some("--json"))
            .output()
            .expect("setpriv");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        if json {
            let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
            assert_eq!(v["can_run"], false);
            assert_eq!(v["root"], false);
            continue;
        }
        let (_, lines, text) = check_lines(&out);
        let (status, detail) = &lines["bpf"];
        assert_eq!(status, "no", "{text}");
        assert!(
            detail.starts_with("EPERM (loading a trivial tc program): run as root"),
            "{detail}"
        );
        assert_eq!(lines["programs"].0, "??", "{text}");
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("netpath cannot run here: bpf")
                && last.ends_with("missing (not root: run as root)"),
            "{text}"
        );
    }
}

fn help_teaches_the_lines_and_the_exit_status() {
    let out = netpath(&["check", "--help"]);
    // Words only: clap wraps the help to the terminal's width.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "--json",
        "never by the kernel's version",
        "Exit status",
        "instead",
    ] {
        assert!(
            help.contains(needle),
            "check --help lacks {needle:?}:\n{help}"
        );
    }
    let top = String::from_utf8_lossy(&netpath(&["--help"]).stdout).into_owned();
    assert!(top.contains("check"), "{top}");
}
