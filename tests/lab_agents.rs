//! The lab runs like a cluster: `netpath lab up` starts one `netpath agent` per lab node
//! (confined to the node's namespace and its pods'), records them in agents.json, and its
//! Kubernetes API shows them as Running DaemonSet pods with their real ports (read by
//! kubectl, an independent client). A trace through the agents gives the verdicts of a trace
//! without them; `watch` and `capture` take both nodes' events and packets through them (the
//! capture finding them through the API); `lab down`, and a `lab up` whose agents cannot start, leave no agent process,
//! file or namespace.
//!
//! Each lab has its own namespace prefix and state directory and is brought down by a guard,
//! also when a test fails.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use integration_tests::{alive, case, netpath, unique, NetpathProcess, Requires};
use serde_json::Value;
use tracer::lab::{self, agents::AgentsRecord, LabState};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            lab_up_runs_one_agent_per_node_that_kubectl_sees_and_traces_go_through,
            Requires::Root,
            Requires::Tool("kubectl")
        ),
        case!(
            agents_that_cannot_start_fail_lab_up_and_leave_nothing,
            Requires::Root
        ),
    ])
}

/// Labs one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A lab's directory and prefix, brought down (and the directory removed) on drop.
struct Lab {
    dir: PathBuf,
    prefix: String,
}

impl Lab {
    fn new() -> Lab {
        let prefix = unique("la");
        let dir = std::env::temp_dir().join(format!("netpath-agents-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        Lab { dir, prefix }
    }

    fn args<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut a = cmd.to_vec();
        a.extend([
            "--state",
            self.dir.to_str().unwrap(),
            "--prefix",
            &self.prefix,
        ]);
        a
    }

    fn state(&self) -> LabState {
        lab::state::load(&self.dir)
            .unwrap()
            .expect("a lab recorded")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = netpath(&self.args(&["lab", "down"]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every live `netpath agent` whose command line names a path under `dir`.
fn agents_under(dir: &Path) -> Vec<u32> {
    let want = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.contains(&&b"agent"[..])
                && args.iter().any(|a| a.starts_with(want))
                && alive(u64::from(*pid))
        })
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn namespaces_of(prefix: &str) -> Vec<String> {
    integration_tests::sh("ip netns list")
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect()
}

/// What a trace answered: (family, verdict, cause) per family.
type Verdicts = Vec<(String, String, String)>;

/// `netpath trace pod-a pod-c --json` in the lab, with `extra` flags: its verdicts, the nodes
/// its hops (request and reply) were seen on, and how long it took.
fn trace(lab: &Lab, extra: &[&str]) -> (Verdicts, BTreeSet<String>, Duration) {
    let mut args = lab.args(&["trace", "--json", "pod-a", "pod-c"]);
    args.retain(|a| *a != "--prefix" && *a != lab.prefix);
    args.extend_from_slice(extra);
    let t = Instant::now();
    let out = netpath(&args);
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("netpath {args:?} printed no JSON ({e}): {stdout}\n{stderr}"));
    let verdicts = report["verdicts"]
        .as_array()
        .unwrap_or_else(|| panic!("no verdicts: {report}"))
        .iter()
        .map(|v| {
            (
                v["family"].as_str().unwrap_or_default().to_string(),
                v["verdict"].as_str().unwrap_or_default().to_string(),
                v["cause"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let nodes = report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            v["hops"]
                .as_array()
                .into_iter()
                .chain(v["reply_hops"].as_array())
                .flatten()
        })
        .filter_map(|h| h["node"].as_str().map(String::from))
        .collect();
    (verdicts, nodes, took)
}

fn lab_up_runs_one_agent_per_node_that_kubectl_sees_and_traces_go_through() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let out = netpath(&lab.args(&["lab", "up", "-s", "flannel"]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "lab up: {stderr}");
    let took = stderr
        .lines()
        .find(|l| l.contains(" agents in "))
        .unwrap_or_else(|| panic!("lab up says nothing of its agents: {stderr}"));
    eprintln!("{took}");
    let st = lab.state();

    // agents.json: one live agent per node, confined to the node's namespaces.
    let text = std::fs::read_to_string(lab.dir.join("agents.json")).expect("agents.json");
    let rec: AgentsRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(rec.tls_dir, lab.dir.join("tls"));
    let nodes: Vec<&str> = rec.agents.iter().map(|a| a.node.as_str()).collect();
    let want: Vec<&str> = st.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes, want);
    for a in &rec.agents {
        assert!(
            alive(a.pid.into()),
            "agent of {} (pid {}) is not running",
            a.node,
            a.pid
        );
        // As on a cluster: the agent runs in its node's namespace (what `ps` and
        // `ip netns identify PID` show) and listens on the node's underlay address.
        let node = st.node(&a.node).unwrap();
        assert_eq!(a.addr.ip(), node.underlay_v4, "{}", a.node);
        assert_eq!(a.via_netns.as_deref(), Some(st.underlay.netns.as_str()));
        let identify = Command::new("ip")
            .args(["netns", "identify", &a.pid.to_string()])
            .output()
            .expect("ip netns identify");
        assert_eq!(
            String::from_utf8_lossy(&identify.stdout).trim(),
            node.netns,
            "agent of {} runs in its node's namespace",
            a.node
        );
        let mut scope = vec![node.netns.clone()];
        scope.extend(
            st.pods
                .iter()
                .filter(|p| p.node == a.node)
                .map(|p| p.netns.clone()),
        );
        assert_eq!(a.netns_scope, scope, "{}", a.node);
        assert!(!a.netns_scope.contains(&st.underlay.netns));
    }
    let mut pids = agents_under(&lab.dir);
    pids.sort();
    let mut recorded: Vec<u32> = rec.agents.iter().map(|a| a.pid).collect();
    recorded.sort();
    assert_eq!(pids, recorded, "exactly the recorded agents run");
    let mode = std::fs::metadata(lab.dir.join("agents.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
        0,
        "agents.json is private"
    );

    // `lab status` lists them.
    let status = netpath(&lab.args(&["lab", "status"]));
    let text = String::from_utf8_lossy(&status.stdout);
    for a in &rec.agents {
        assert!(
            text.contains(&a.addr.to_string()) && text.contains("running"),
            "lab status shows agent {} at {}: {text}",
            a.node,
            a.addr
        );
    }

    // The lab's API: the DaemonSet's pods Running on their nodes' addresses, reached from the
    // underlay.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(lab.dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(lab.dir.join("kube-cache"))
        .args([
            "--request-timeout=10s",
            "get",
            "pods",
            "-n",
            "netpath",
            "-o",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("spawn kubectl");
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = pods["items"].as_array().expect("a list");
    assert_eq!(items.len(), rec.agents.len());
    for a in &rec.agents {
        let pod = items
            .iter()
            .find(|p| p["spec"]["nodeName"] == a.node.as_str())
            .unwrap_or_else(|| panic!("no agent pod on {}", a.node));
        assert_eq!(pod["status"]["phase"], "Running", "{}", a.node);
        assert_eq!(pod["status"]["hostIP"], a.addr.ip().to_string());
        assert_eq!(pod["status"]["podIP"], a.addr.ip().to_string());
        assert_eq!(
            pod["metadata"]["annotations"]["lab.netpath.dev/dial-netns"],
            st.underlay.netns.as_str()
        );
        assert_eq!(
            pod["metadata"]["annotations"]["netpath.io/agent-port"],
            a.addr.port().to_string()
        );
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
    }

    // A trace through the agents gives the verdicts of a trace without them. By default a lab
    // trace goes through them: no agent serves the underlay, so its hops are missing there and
    // present in the local trace.
    let (local, local_seen, local_took) = trace(&lab, &["--local"]);
    let agents = rec.agents_arg();
    let tls = rec.tls_dir.to_str().unwrap();
    let (remote, seen_on, remote_took) = trace(&lab, &["--agents", &agents, "--tls-dir", tls]);
    let (default, default_seen, default_took) = trace(&lab, &[]);
    eprintln!(
        "trace pod-a pod-c: {:.2} s on this kernel, {:.2} s through the agents (--agents), \
         {:.2} s by default (the lab's agents); the agents load their programs at start",
        local_took.as_secs_f64(),
        remote_took.as_secs_f64(),
        default_took.as_secs_f64()
    );
    assert!(local_seen.contains("underlay"), "{local_seen:?}");
    assert!(!default_seen.contains("underlay"), "{default_seen:?}");
    assert_eq!(default, local, "by default through the lab's agents");
    assert_eq!(local.len(), 2, "both families: {local:?}");
    assert!(
        local.iter().all(|(_, v, _)| v == "delivered"),
        "flannel delivers: {local:?}"
    );
    assert_eq!(remote, local, "through the agents as without them");
    let both: BTreeSet<String> = ["node-1", "node-2"].map(String::from).into();
    assert!(
        both.is_subset(&seen_on),
        "events from both nodes' agents: {seen_on:?}"
    );

    // `watch --agents`: both nodes' events, merged, each with its node.
    let mut watch = NetpathProcess::spawn(&[
        "watch",
        "--agents",
        &agents,
        "--tls-dir",
        tls,
        "--json",
        "--host",
        "10.244.1.2",
        "--host",
        "10.99.1.2",
        "--duration",
        "5",
    ]);
    watch.wait_stderr("watching", Duration::from_secs(30));
    integration_tests::sh(&format!(
        "ip netns exec {}-pod-a ping -c 2 -i 0.2 -W 1 10.244.2.2 >/dev/null 2>&1 || true",
        lab.prefix
    ));
    // A device made while the agents run (a new pod's, say) is attached when the kernel
    // announces it: hops on it, with no stream opened since. (The namespaces go with the lab.)
    let p = &lab.prefix;
    integration_tests::sh(&format!(
        "ip -n {p}-node-1 link add npn0 type veth peer name npn1 netns {p}-pod-a && \
         ip -n {p}-node-1 addr add 10.99.1.1/24 dev npn0 && ip -n {p}-node-1 link set npn0 up && \
         ip -n {p}-pod-a addr add 10.99.1.2/24 dev npn1 && ip -n {p}-pod-a link set npn1 up"
    ));
    std::thread::sleep(Duration::from_millis(500));
    integration_tests::sh(&format!(
        "ip netns exec {p}-pod-a ping -c 2 -i 0.2 -W 1 10.99.1.1 >/dev/null 2>&1 || true"
    ));
    let (code, out, stderr) = watch.finish_with_stderr();
    assert_eq!(code, Some(0), "watch --agents: {stderr:?}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let watched: BTreeSet<&str> = events.iter().filter_map(|e| e["node"].as_str()).collect();
    assert!(
        watched.contains("node-1") && watched.contains("node-2") && !watched.contains("underlay"),
        "watch --agents: events from {watched:?}"
    );
    let ours = |e: &Value| {
        ["10.244.1.2", "10.99.1.2"]
            .iter()
            .any(|a| e["src"] == *a || e["dst"] == *a)
    };
    assert!(
        events.iter().all(|e| ours(e) || e["kind"] == "lost"),
        "only pod-a's packets"
    );
    let new_dev: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["kind"] == "hop")
        .filter_map(|e| e["ifname"].as_str())
        .filter(|d| d.starts_with("npn"))
        .collect();
    assert!(
        new_dev.contains("npn0") && new_dev.contains("npn1"),
        "hops on the devices made while the agents ran: {new_dev:?}"
    );

    // `capture` through the agents the lab's API lists (as on a cluster, where the CLI finds
    // the DaemonSet's pods): one pcap-filter, packets of both nodes merged into one output.
    let kubeconfig = lab.dir.join("kubeconfig");
    let mut capture = NetpathProcess::spawn(&[
        "capture",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--tls-dir",
        tls,
        "-c",
        "8",
        "--duration",
        "30",
        "icmp and host 10.244.1.2",
    ]);
    capture.wait_stderr("listening through 2 of 2", Duration::from_secs(30));
    integration_tests::sh(&format!(
        "ip netns exec {p}-pod-a ping -c 3 -i 0.2 -W 1 10.244.2.2 >/dev/null 2>&1 || true"
    ));
    let (code, out, stderr) = capture.finish_with_stderr();
    assert_eq!(
        code,
        Some(0),
        "capture through the API's agents: {stderr:?}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    for node in ["node-1", "node-2"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!(" {node}/"))),
            "no packet from {node}: {out}"
        );
    }
    assert!(lines.iter().all(|l| l.contains("10.244.1.2")), "{out}");

    // `lab down`: no agent, no file, no namespace.
    let t = Instant::now();
    let down = netpath(&lab.args(&["lab", "down"]));
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    eprintln!(
        "lab down (with agents) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    for a in &rec.agents {
        assert!(
            !alive(a.pid.into()),
            "agent {} (pid {}) outlived lab down",
            a.node,
            a.pid
        );
    }
    assert!(agents_under(&lab.dir).is_empty());
    let left: Vec<String> = files(&lab.dir)
        .into_iter()
        .filter(|f| !f.starts_with("kube-cache"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(namespaces_of(&lab.prefix).is_empty());
}

fn agents_that_cannot_start_fail_lab_up_and_leave_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    // node-2's agent cannot have its log (a directory stands in its place): node-1's agent
    // may already run; `lab up` must stop it and take the lab down.
    std::fs::create_dir(lab.dir.join("agent-node-2.log")).unwrap();
    let out = netpath(&lab.args(&["lab", "up", "-s", "flannel"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lab up succeeded: {stderr}");
    assert!(stderr.contains("agent-node-2.log"), "{stderr}");
    assert!(
        agents_under(&lab.dir).is_empty(),
        "an agent still runs for {}",
        lab.dir.display()
    );
    assert!(namespaces_of(&lab.prefix).is_empty());
    assert_eq!(files(&lab.dir), ["agent-node-2.log"], "only the test's own");
}
