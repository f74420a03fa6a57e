//! Bad input, table-driven, across every command: wrong flags, endpoints, filters, files, lab
//! state and scenario names. Each one must give exactly one clear `netpath: ...` line on
//! stderr that names what was wrong, exit 2, print nothing on stdout, and change nothing on
//! the machine: the test's namespaces (a lab-like one included), the qdiscs and filters on
//! `lo`, and every file in its temporary directory are compared before and after.
use std::{collections::BTreeMap, path::Path, process::Command};

use integration_tests::*;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![case!(
        every_bad_input_is_one_line_exit_2_and_changes_nothing,
        Requires::Root
    )])
}

/// What the test can see of the machine: its own namespaces (others' tests come and go on a
/// shared machine), `lo`'s qdiscs and tc filters, and the temp dir's files with contents.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    netns: Vec<String>,
    lo_tc: String,
    files: BTreeMap<String, Vec<u8>>,
}

fn snapshot(stem: &str, dir: &Path) -> Snapshot {
    let netns = sh("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(stem))
        .map(String::from)
        .collect();
    let lo_tc =
        sh("tc qdisc show dev lo; tc filter show dev lo ingress; tc filter show dev lo egress");
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read temp dir").flatten() {
            let path = entry.path();
            let key = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                files.insert(key + "/", Vec::new());
                stack.push(path);
            } else {
                files.insert(key, std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    Snapshot {
        netns,
        lo_tc,
        files,
    }
}

fn every_bad_input_is_one_line_exit_2_and_changes_nothing() {
    let stem = unique("npbad");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let d = |name: &str| dir.join(name).display().to_string();
    // A namespace named like a lab's (prefix `stem`), which no bad command may remove.
    let lab_ns = NetNsGuard::new(&format!("{stem}-node-1"));
    std::fs::write(d("junk.pcapng"), b"this is not a capture file\n").unwrap();
    std::fs::write(d("empty"), b"").unwrap();
    std::fs::write(d("keep.pcapng"), b"an earlier capture, kept\n").unwrap();
    for sub in ["badstate", "emptystate", "labstate", "tls"] {
        std::fs::create_dir(d(sub)).unwrap();
    }
    std::fs::write(d("badstate/lab.json"), b"{\"scenario\": ").unwrap();
    // A recorded lab (as `lab up` writes it) whose namespace exists: a typo must not take it down.
    let labstate = serde_json::json!({
        "scenario": "flannel", "description": "", "flavour": "flannel", "prefix": stem,
        "run": 1, "complete": true, "namespaces": [lab_ns.name],
        "underlay": {"netns": lab_ns.name, "bridge": "br0", "cidr_v4": "198.18.0.0/24",
                     "cidr_v6": "fd00:198:18::/64", "gateway_v4": "198.18.0.254",
                     "gateway_v6": "fd00:198:18::fe"},
        "nodes": [], "pods": [], "services": [], "expectations": []
    });
    std::fs::write(d("labstate/lab.json"), labstate.to_string()).unwrap();

    let no_ns = format!("{stem}nosuch");
    let (bad_state, empty_state, lab_state) = (d("badstate"), d("emptystate"), d("labstate"));
    let (junk, keep, tls, missing) = (d("junk.pcapng"), d("keep.pcapng"), d("tls"), d("nosuch"));
    let (empty, out, certs) = (d("empty"), d("out.pcapng"), d("certs"));
    let dir_s = dir.display().to_string();
    let lab = |verb: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec!["lab", verb, "--state", &lab_state, "--prefix", &stem];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect()
    };
    // (arguments, a word the line must contain)
    let cases: Vec<(Vec<String>, &str)> = [
        (vec!["bogus"], "bogus"),
        (vec!["watch", "--bogus"], "--bogus"),
        (vec!["watch", "--iface"], "--iface"),
        (vec!["watch", "--count", "x"], "--count"),
        (vec!["watch", "--ring-kib", "5"], "--ring-kib"),
        (vec!["watch", "--ring-kib", "4194304"], "--ring-kib"),
        (vec!["watch", "--duration", "inf"], "--duration"),
        (vec!["watch", "--duration", "nan"], "--duration"),
        (vec!["watch", "--family", "5"], "--family"),
        (vec!["watch", "--host", "999.1.1.1"], "999.1.1.1"),
        (vec!["watch", "--port", "70000"], "70000"),
        (vec!["watch", "--proto", "foo"], "foo"),
        (vec!["watch", "--netns", &no_ns, "--iface", "eth0"], &no_ns),
        (vec!["watch", "--iface", "nosuchdev0"], "nosuchdev0"),
        (vec!["watch", "--all", "--iface", "lo"], "--all"),
        (vec!["capture", "-r", &missing], "nosuch"),
        (vec!["capture", "-r", &junk], "not a pcap"),
        (vec!["capture", "-r", &empty], "empty"),
        (vec!["capture", "-r", &dir_s], "directory"),
        (vec!["capture", "-r", "/dev/null"], "/dev/null"),
        (vec!["capture", "-r", &junk, "-w", &out], "not a pcap"),
        (vec!["capture", "tcp port"], "tcp port"),
        (vec!["capture", "host 1.2.3.4.5"], "1.2.3.4.5"),
        (
            vec!["capture", "-i", "nosuchdev0", "-w", &keep],
            "nosuchdev0",
        ),
        (vec!["capture", "-B", "3"], "-B"),
        (vec!["capture", "-s", "x"], "-s"),
        (vec!["capture", "--netns", &no_ns], &no_ns),
        (vec!["capture", "--pod", "nosuchpod"], "nosuchpod"),
        (vec!["trace"], "<FROM>"),
        (
            vec!["trace", "pod-a", "pod-b", "--state", &bad_state],
            "not valid",
        ),
        (
            vec!["trace", "nosuch1", "nosuch2", "--state", &empty_state],
            "nosuch1",
        ),
        (
            vec!["trace", "pod-a", "pod-c", "--timeout", "0"],
            "--timeout",
        ),
        (vec!["trace", "pod-a", "pod-c", "--family", "5"], "--family"),
        (vec!["trace", "pod-a", "pod-c", "--size", "70000"], "--size"),
        (vec!["trace", "pod-a", "pod-c", "--udp"], "--port"),
        (
            vec![
                "trace",
                "10.0.0.1",
                "10.0.0.2",
                "--agents",
                "node-1=bad",
                "--tls-dir",
                &tls,
            ],
            "node-1=bad",
        ),
        (
            vec![
                "trace",
                "10.0.0.1",
                "10.0.0.2",
                "--agents",
                "node-1=127.0.0.1:1",
                "--tls-dir",
                &missing,
            ],
            "ca.pem",
        ),
        (vec!["check", "--bogus"], "--bogus"),
        (vec!["lab", "bogus"], "bogus"),
        (vec!["lab", "up", "--nodes", "x"], "--nodes"),
        (vec!["lab", "status", "--state", &bad_state], "not valid"),
        (vec!["lab", "down", "--state", &bad_state], "not valid"),
        (vec!["lab", "status", "--state", &junk], "junk.pcapng"),
        (vec!["agent"], "--node"),
        (
            vec!["agent", "--node", "n", "--listen", "bad", "--tls-dir", &tls],
            "--listen",
        ),
        (
            vec![
                "agent",
                "--node",
                "n",
                "--listen",
                "127.0.0.1:0",
                "--tls-dir",
                &missing,
            ],
            "ca.pem",
        ),
        (
            vec!["certs", "--out", &certs, "--nodes", "a=notanip"],
            "notanip",
        ),
        (
            vec!["certs", "--out", &certs, "--nodes", "n1", "--days", "0"],
            "--days",
        ),
        (vec!["certs", "--out", &certs, "--nodes", "../x"], "../x"),
    ]
    .into_iter()
    .map(|(args, word)| (args.into_iter().map(String::from).collect(), word))
    .chain([
        (lab("up", &["--scenario", "flanel"]), "flanel"),
        (lab("up", &["--nodes", "0"]), "nodes"),
        (lab("up", &["--nodes", "99"]), "nodes"),
    ])
    .chain([(
        vec!["lab", "up", "--state", &empty_state, "--prefix", "Bad/"]
            .into_iter()
            .map(String::from)
            .collect(),
        "prefix",
    )])
    .collect();
    assert!(cases.len() >= 30, "{} cases", cases.len());

    let mut failures = Vec::new();
    for (args, word) in &cases {
        let before = snapshot(&stem, dir);
        let out = Command::new(netpath_bin())
            .args(args)
            .env("NETPATH_STATE", &empty_state)
            .output()
            .expect("spawn netpath");
        let after = snapshot(&stem, dir);
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        let mut wrong = Vec::new();
        if out.status.code() != Some(2) {
            wrong.push(format!("exit {:?}", out.status.code()));
        }
        if lines.len() != 1 || !lines[0].starts_with("netpath: ") {
            wrong.push(format!("{} stderr lines", lines.len()));
        }
        if !err.contains(word) {
            wrong.push(format!("does not name {word:?}"));
        }
        if !out.stdout.is_empty() {
            wrong.push("printed on stdout".into());
        }
        if before != after {
            wrong.push(format!("changed the machine: {before:?} -> {after:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "netpath {}: {} ({err:?})",
                args.join(" "),
                wrong.join(", ")
            ));
        }
    }
    println!("{} bad inputs, {} wrong", cases.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(tracer::node::netns::by_name(&lab_ns.name).is_ok());
}
