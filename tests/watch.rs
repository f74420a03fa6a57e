//! `netpath watch` against the real kernel: two namespaces joined by a veth; the watched side
//! forwards. Asserts hop events (device, direction, family, addresses) in both families and the
//! drop of a packet it has no route for, with the kernel's reason name.
use std::time::Duration;

use integration_tests::*;
use serde_json::Value;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            watch_reports_hops_in_both_families_and_a_no_route_drop,
            Requires::Root
        ),
        case!(ctrl_c_detaches_everything, Requires::Root),
        case!(
            unknown_device_and_namespace_are_one_clear_line,
            Requires::Root
        ),
        case!(
            not_root_is_one_clear_line,
            Requires::Root,
            Requires::Tool("setpriv")
        ),
        case!(help_explains_every_flag),
    ])
}

fn find(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    events.iter().find(|e| pred(e))
}

fn watch_reports_hops_in_both_families_and_a_no_route_drop() {
    let p = routed_pair("npw");
    let mut np = NetpathProcess::spawn(&[
        "watch",
        "--json",
        "--netns",
        &p.b.name,
        "--iface",
        "vb",
        "--duration",
        "6",
    ]);
    np.wait_stderr("watching", Duration::from_secs(10));
    p.a.exec("ping -c1 -W1 10.1.0.2");
    p.a.exec("ping -c1 -W1 fd00:1::2");
    p.a.exec("ping -c1 -W1 10.99.0.1 || true");
    p.a.exec("ping -c1 -W1 fd00:99::1 || true");
    let (code, out) = np.finish();
    assert_eq!(code, Some(0));
    let events = json_lines(&out);
    let hop = |family: u64, dir: &str, src: &str, dst: &str| {
        find(&events, |e| {
            e["kind"] == "hop"
                && e["ifname"] == "vb"
                && e["netns"] == p.b.name.as_str()
                && e["dir"] == dir
                && e["family"] == family
                && e["src"] == src
                && e["dst"] == dst
        })
        .unwrap_or_else(|| panic!("no {dir} IPv{family} hop {src} > {dst} on vb in {events:#?}"))
    };
    let req4 = hop(4, "ingress", "10.1.0.1", "10.1.0.2");
    assert_eq!(req4["proto"], "icmp");
    assert_eq!(req4["hook"], "tc_ingress");
    hop(4, "egress", "10.1.0.2", "10.1.0.1");
    let req6 = hop(6, "ingress", "fd00:1::1", "fd00:1::2");
    assert_eq!(req6["proto"], "icmp6");
    hop(6, "egress", "fd00:1::2", "fd00:1::1");
    for (family, dst) in [(4u64, "10.99.0.1"), (6, "fd00:99::1")] {
        let drop = find(&events, |e| {
            e["kind"] == "drop" && e["family"] == family && e["dst"] == dst
        })
        .unwrap_or_else(|| panic!("no drop to {dst} in {events:#?}"));
        assert_eq!(drop["reason"], "IP_INNOROUTES", "{drop}");
        assert_eq!(drop["netns"], p.b.name.as_str());
        assert!(
            drop["location"].as_str().is_some_and(|l| l.contains("+0x")),
            "{drop}"
        );
        // The same packet was seen entering vb: its identity links the two events.
        let seen = hop(
            family,
            "ingress",
            if family == 4 { "10.1.0.1" } else { "fd00:1::1" },
            dst,
        );
        assert_eq!(seen["pkt_id"], drop["pkt_id"]);
    }
    assert_eq!(
        tc_programs(&p.b.name, "vb"),
        0,
        "tc programs left attached after exit"
    );
}

fn ctrl_c_detaches_everything() {
    let p = routed_pair("npw");
    let mut np = NetpathProcess::spawn(&["watch", "--netns", &p.b.name, "--iface", "vb"]);
    np.wait_stderr("watching", Duration::from_secs(10));
    assert_eq!(
        tc_programs(&p.b.name, "vb"),
        2,
        "ingress and egress should be attached while running"
    );
    np.interrupt();
    let (code, _) = np.finish();
    assert_eq!(code, Some(130), "Ctrl-C: 128 + SIGINT, as shells expect");
    assert_eq!(
        tc_programs(&p.b.name, "vb"),
        0,
        "tc programs left attached after Ctrl-C"
    );
    drop(p);
}

fn unknown_device_and_namespace_are_one_clear_line() {
    let out = netpath(&[
        "watch",
        "--netns",
        "netpath-no-such-ns",
        "--iface",
        "eth0",
        "--duration",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("netpath-no-such-ns") && err.contains("not found"),
        "{err}"
    );
    let p = routed_pair("npw");
    let out = netpath(&[
        "watch",
        "--netns",
        &p.b.name,
        "--iface",
        "nosuchdev0",
        "--duration",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nosuchdev0"), "{err}");
}

fn not_root_is_one_clear_line() {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(netpath_bin())
        .args(["watch", "--iface", "lo", "--duration", "1"])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("root"), "{err}");
}

fn help_explains_every_flag() {
    let out = netpath(&["watch", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--iface",
        "--netns",
        "--all",
        "--json",
        "--duration",
        "--count",
        "--host",
        "--port",
        "--proto",
        "--family",
    ] {
        assert!(help.contains(flag), "watch --help lacks {flag}");
    }
    let top = String::from_utf8_lossy(&netpath(&["--help"]).stdout).into_owned();
    assert!(top.contains("watch") && top.contains("root"), "{top}");
}
