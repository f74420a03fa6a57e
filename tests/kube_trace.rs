//! `netpath trace` with names from the Kubernetes API: in every seed scenario, the lab's
//! documented flows traced as `default/pod-a`, `svc/web`, `node/node-1` through the lab's API
//! server (`--kubeconfig`) get the same verdicts, causes and places as by lab names, and the
//! API's own facts about the families are in the evidence; bad Kubernetes input is one line
//! and exit 2 (root).
use std::{collections::BTreeMap, path::PathBuf};

use integration_tests::{case, netpath, unique, Requires};
use serde_json::Value;
use tracer::lab::{self, Outcome};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(seed_000_by_api_names_as_by_lab_names, Requires::Root),
        case!(seed_001_by_api_names_as_by_lab_names, Requires::Root),
        case!(seed_002_by_api_names_as_by_lab_names, Requires::Root),
        case!(seed_003_by_api_names_as_by_lab_names, Requires::Root),
        case!(seed_004_by_api_names_as_by_lab_names, Requires::Root),
        case!(bad_kubernetes_input_is_one_line_and_exit_2, Requires::Root),
    ])
}

/// A lab brought up by `netpath lab up` (with its API server), always brought down.
struct Lab {
    dir: PathBuf,
    prefix: String,
}

impl Lab {
    fn up(scenario: &str) -> Lab {
        let prefix = unique("kt");
        let lab = Lab {
            dir: std::env::temp_dir().join(format!("netpath-kube-trace-{prefix}")),
            prefix,
        };
        let out = netpath(&[
            "lab",
            "up",
            "-s",
            scenario,
            "--state",
            lab.state(),
            "--prefix",
            &lab.prefix,
        ]);
        assert!(
            out.status.success(),
            "lab up {scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn state(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn kubeconfig(&self) -> String {
        self.dir.join("kubeconfig").display().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The API server's side of a failure (it has reset connections now and then while
            // traces ran: its log says why, if anything).
            let log = std::fs::read_to_string(self.dir.join("api.log")).unwrap_or_default();
            let alive = std::fs::read_to_string(self.dir.join("api.json")).is_ok();
            eprintln!("lab API server (api.json present: {alive}), its log:\n{log}");
        }
        let _ = netpath(&[
            "lab",
            "down",
            "--state",
            self.state(),
            "--prefix",
            &self.prefix,
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A lab name as the API names it: pods are in `default`, nodes are `node/NAME`.
fn api_name(lab_name: &str) -> String {
    if lab_name.starts_with("pod-") {
        format!("default/{lab_name}")
    } else if lab_name.starts_with("node-") && !lab_name.contains('/') {
        format!("node/{lab_name}")
    } else {
        lab_name.to_string()
    }
}

/// `netpath trace ARGS --json`: exit code and report.
fn trace(args: &[&str]) -> (i32, Value) {
    let (code, report, _) = trace_with_stderr(args);
    (code, report)
}

/// [`trace`], and what netpath said on stderr (notes, features not available).
fn trace_with_stderr(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["trace"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = netpath(&all);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "netpath {all:?} (exit {code}) printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        code,
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Per family: verdict, cause, where (node, netns).
fn outcome(report: &Value) -> BTreeMap<u64, [Value; 4]> {
    report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["family"].as_u64().unwrap(),
                [
                    v["verdict"].clone(),
                    v["cause"].clone(),
                    v["where"]["node"].clone(),
                    v["where"]["netns"].clone(),
                ],
            )
        })
        .collect()
}

fn evidence(report: &Value, family: u64) -> Vec<String> {
    report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["family"] == family)
        .flat_map(|v| v["evidence"].as_array().unwrap())
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// Every flow the scenario documents as dropped, one it documents as delivered, and `extra`,
/// traced by lab names and by API names; returns the API-name reports by (from, to).
fn same_by_api_names(
    scenario: &str,
    extra: &[(&str, &str)],
) -> (Lab, BTreeMap<(String, String), Value>) {
    let lab = Lab::up(scenario);
    let state = lab::state::load(&lab.dir).unwrap().unwrap();
    let mut flows: Vec<(String, String)> = Vec::new();
    let mut delivered = None;
    for e in &state.expectations {
        let flow = (e.from.clone(), e.to.clone());
        match e.expect {
            Outcome::Dropped if !flows.contains(&flow) => flows.push(flow),
            Outcome::Delivered if delivered.is_none() => delivered = Some(flow),
            _ => {}
        }
    }
    flows.extend(delivered);
    flows.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    assert!(flows.len() >= 2, "{scenario}: {flows:?}");
    let kubeconfig = lab.kubeconfig();
    let mut reports = BTreeMap::new();
    for (from, to) in flows {
        // Both with this machine's kernel: the names are what is compared here (traces through
        // the agents found by the API are below).
        let (lab_code, by_lab) = trace(&[&from, &to, "--state", lab.state(), "--local"]);
        let (api_from, api_to) = (api_name(&from), api_name(&to));
        let (api_code, by_api) = trace(&[
            &api_from,
            &api_to,
            "--kubeconfig",
            &kubeconfig,
            "--state",
            lab.state(),
        ]);
        let ctx = format!("{scenario}: {from} -> {to} as {api_from} -> {api_to}");
        eprintln!("{ctx}: {:?}", outcome(&by_api));
        assert_eq!(outcome(&by_lab), outcome(&by_api), "{ctx}");
        assert_eq!(lab_code, api_code, "{ctx}");
        assert_eq!(by_api["from"]["name"], api_from.as_str(), "{ctx}");
        assert_eq!(by_lab["from"]["netns"], by_api["from"]["netns"], "{ctx}");
        // As on a real cluster: the agents found through the API, each pod placed by its
        // node's agent (through the lab's container runtime), not by the lab's annotations.
        let tls = lab.dir.join("tls");
        let (agents_code, by_agents) = trace(&[
            &api_from,
            &api_to,
            "--kubeconfig",
            &kubeconfig,
            "--tls-dir",
            tls.to_str().unwrap(),
            "--state",
            lab.state(),
        ]);
        // Compared with the trace by lab names through the same agents (a drop in the
        // underlay, which no agent serves, is seen by --local only).
        let (lab_agents_code, by_lab_agents) = trace(&[&from, &to, "--state", lab.state()]);
        assert_eq!(
            outcome(&by_lab_agents),
            outcome(&by_agents),
            "{ctx}, with agents"
        );
        assert_eq!(lab_agents_code, agents_code, "{ctx}, with agents");
        assert_eq!(by_lab["from"]["netns"], by_agents["from"]["netns"], "{ctx}");
        reports.insert((from, to), by_api);
    }
    // The agents said how they placed the pods.
    let logs: String = state
        .nodes
        .iter()
        .map(|n| std::fs::read_to_string(lab.dir.join(format!("agent-{}.log", n.name))).unwrap())
        .collect();
    assert!(
        logs.contains("default/pod-a is in") && logs.contains("found by CRI"),
        "{scenario}: the agents did not place pod-a through CRI: {logs}"
    );
    (lab, reports)
}

fn seed_000_by_api_names_as_by_lab_names() {
    same_by_api_names("kube-router-v6-onlink", &[]);
}

fn seed_001_by_api_names_as_by_lab_names() {
    let (_lab, reports) = same_by_api_names("calico-v6-withdrawn", &[("pod-a", "pod-d")]);
    // The API says it too: pod-d has no IPv6 podIP in a dual-stack cluster.
    let (_, r) = reports
        .iter()
        .find(|((_, to), _)| to == "pod-d")
        .expect("a flow to pod-d");
    let ev = evidence(r, 6);
    assert!(
        ev.iter()
            .any(|e| e.starts_with("kubernetes: default/pod-d has no IPv6 podIP")),
        "{ev:?}"
    );
    assert!(
        evidence(r, 4).iter().all(|e| !e.contains("podIP")),
        "an IPv6 fact is not IPv4 evidence"
    );
}

fn seed_002_by_api_names_as_by_lab_names() {
    same_by_api_names("flannel-v6-missing", &[]);
}

fn seed_003_by_api_names_as_by_lab_names() {
    let (_lab, reports) = same_by_api_names("k0s-service-family", &[]);
    let (_, r) = reports
        .iter()
        .find(|((_, to), _)| to == "svc/kubernetes")
        .expect("a flow to svc/kubernetes");
    // The Service's family against its EndpointSlice's, from the API objects.
    for family in [4, 6] {
        let ev = evidence(r, family);
        assert!(
            ev.iter().any(
                |e| e.starts_with("kubernetes: svc/kubernetes has ipFamilies [IPv4]")
                    && e.contains("ready IPv6 endpoint")
            ),
            "IPv{family}: {ev:?}"
        );
    }
}

fn seed_004_by_api_names_as_by_lab_names() {
    same_by_api_names("vcluster-service-flip", &[]);
}

/// `netpath ARGS`: exit code and stderr, which must be one line.
fn fails(args: &[&str]) -> (i32, String) {
    let out = netpath(args);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("netpath: "), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn bad_kubernetes_input_is_one_line_and_exit_2() {
    let lab = Lab::up("flannel");
    let kubeconfig = lab.kubeconfig();
    let by_api = |from: &str, to: &str| {
        fails(&[
            "trace",
            from,
            to,
            "--kubeconfig",
            &kubeconfig,
            "--state",
            lab.state(),
        ])
    };
    let (code, err) = by_api("default/pod-z", "default/pod-a");
    assert_eq!(code, 2);
    assert!(
        err.contains("default/pod-z") && err.contains("default/pod-a"),
        "names what is known: {err}"
    );
    let (code, err) = by_api("default/pod-a", "svc/nope");
    assert_eq!(code, 2);
    assert!(err.contains("svc/web"), "{err}");
    let (code, err) = by_api("default/pod-a", "a/b/c");
    assert_eq!(code, 2);
    assert!(err.contains("a/b/c"), "{err}");

    let scratch = Scratch(std::env::temp_dir().join(unique("netpath-kube-bad")));
    let dir = &scratch.0;
    std::fs::create_dir_all(dir).unwrap();
    // Agents from the API: the lab's agents (one per node, Running in its API), found by
    // their label and reached with the lab's mTLS material, carry the trace.
    let tls = lab.dir.join("tls");
    let (code, report, stderr) = trace_with_stderr(&[
        "default/pod-a",
        "default/pod-c",
        "--kubeconfig",
        &kubeconfig,
        "--tls-dir",
        tls.to_str().unwrap(),
        "--state",
        lab.state(),
    ]);
    let nodes: std::collections::BTreeSet<&str> = report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["hops"].as_array().unwrap())
        .filter_map(|h| h["node"].as_str())
        .collect();
    assert_eq!(code, 0, "{report:#}");
    assert!(
        !stderr.contains("not available"),
        "every agent found through the API opened its stream: {stderr}"
    );
    // Once a defect of fresh clones under CI (events of one agent only, when the agents were
    // still loading programs per stream and the trailing wait was fixed): agents now load
    // once at start and the trace waits for the streams to go quiet.
    assert!(
        nodes.contains("node-1") && nodes.contains("node-2"),
        "events from only {nodes:?} in the trace through the API's agents"
    );
    // Without the client's certificate: one line.
    let (code, err) = fails(&[
        "trace",
        "default/pod-a",
        "default/pod-c",
        "--kubeconfig",
        &kubeconfig,
        "--tls-dir",
        dir.to_str().unwrap(),
        "--state",
        lab.state(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("ca.pem"), "{err}");
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, "clusters: [this is not a kubeconfig").unwrap();
    // An API server nobody runs: the kubeconfig points at a closed port (the lab writes its
    // kubeconfig as JSON, which is YAML).
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1".into();
    let closed = dir.join("closed");
    std::fs::write(&closed, config.to_string()).unwrap();
    for (kc, expect) in [
        (garbage.display().to_string(), "kubeconfig"),
        (closed.display().to_string(), "127.0.0.1:1"),
        ("/nonexistent/kubeconfig".to_string(), "no such file"),
    ] {
        let (code, err) = fails(&[
            "trace",
            "default/pod-a",
            "default/pod-c",
            "--kubeconfig",
            &kc,
            "--state",
            lab.state(),
        ]);
        assert_eq!(code, 2, "{kc}: {err}");
        assert!(err.contains(expect), "{kc}: {err}");
    }
    let (code, err) = fails(&[
        "trace",
        "pod-a",
        "pod-c",
        "--kubeconfig",
        &kubeconfig,
        "-n",
        "Not_A_Namespace",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--namespace"), "{err}");
    drop(scratch);
}

/// A scratch directory, removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
