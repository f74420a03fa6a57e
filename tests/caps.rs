//! Capabilities, not uid 0: `watch`, `capture` and `trace` run as `nobody` with CAP_BPF,
//! CAP_NET_ADMIN, CAP_PERFMON and CAP_SYS_ADMIN (what the README documents; `trace` also needs
//! CAP_NET_RAW for its probes' raw sockets), kept across exec by `setpriv --ambient-caps`.
//! Without them: one clear line, exit 2.
use std::{process::Command, time::Duration};

use integration_tests::*;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            capabilities_are_enough_without_root,
            Requires::Root,
            Requires::Tool("setpriv")
        ),
        case!(
            no_capabilities_is_one_clear_line,
            Requires::Root,
            Requires::Tool("setpriv")
        ),
    ])
}

const TRACING_CAPS: &str = "+bpf,+net_admin,+perfmon,+sys_admin";

/// `setpriv` arguments: user and group nobody, no groups, `caps` inherited and ambient.
fn as_nobody(caps: &str) -> Vec<String> {
    vec![
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
    ]
}

fn spawn_as_nobody(caps: &str, args: &[&str]) -> NetpathProcess {
    let bin = netpath_bin().display().to_string();
    let mut all: Vec<String> = as_nobody(caps);
    all.push(bin);
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    NetpathProcess::spawn_program(std::path::Path::new("setpriv"), &all)
}

fn capabilities_are_enough_without_root() {
    let p = routed_pair("npc");
    let ping = || p.a.exec("ping -c2 -i0.2 -W1 10.1.0.2 >/dev/null");

    let mut watch = spawn_as_nobody(
        TRACING_CAPS,
        &[
            "watch",
            "--json",
            "--netns",
            &p.b.name,
            "--iface",
            "vb",
            "--duration",
            "4",
        ],
    );
    watch.wait_stderr("watching", Duration::from_secs(30));
    ping();
    let (code, out, err) = watch.finish_with_stderr();
    assert_eq!(code, Some(0), "{err:?}");
    let hops = json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "hop" && e["ifname"] == "vb" && e["dst"] == "10.1.0.2")
        .count();
    assert!(
        hops >= 2,
        "watch as nobody saw {hops} echo requests on vb: {out}"
    );

    let mut capture = spawn_as_nobody(
        TRACING_CAPS,
        &[
            "capture", "--netns", &p.b.name, "-i", "vb", "-c", "4", "icmp",
        ],
    );
    capture.wait_stderr("listening", Duration::from_secs(30));
    ping();
    let (code, out, err) = capture.finish_with_stderr();
    assert_eq!(code, Some(0), "{err:?}");
    assert_eq!(out.matches("ICMP echo").count(), 4, "{out}");

    // Probes are sent from raw sockets: CAP_NET_RAW as well.
    let trace = spawn_as_nobody(
        &format!("{TRACING_CAPS},+net_raw"),
        &[
            "trace",
            &format!("netns:{}", p.a.name),
            "10.1.0.2",
            "--json",
        ],
    );
    let (code, out, err) = trace.finish_with_stderr();
    assert_eq!(code, Some(0), "{err:?} {out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("trace JSON");
    assert!(
        report["verdicts"]
            .as_array()
            .is_some_and(|v| v.len() == 2 && v.iter().all(|f| f["verdict"] == "delivered")),
        "{report:#}"
    );
    assert_eq!(tc_programs(&p.b.name, "vb"), 0, "left attached");
}

fn no_capabilities_is_one_clear_line() {
    for args in [
        vec!["watch", "--iface", "lo", "--duration", "1"],
        vec!["capture", "-i", "lo", "-c", "1"],
        vec!["trace", "netns:nosuch", "10.1.0.2"],
    ] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(netpath_bin())
            .args(&args)
            .output()
            .expect("setpriv");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("netpath: "), "{err}");
    }
}
