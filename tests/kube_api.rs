//! The lab as a Kubernetes cluster, read by kubectl (an independent client): `netpath lab up`
//! serves a read-only API and writes a kubeconfig; every lab pod, node, Service and
//! EndpointSlice reads back as the lab state says, tables and watches work, writes and
//! requests without the token are refused, and `lab down` (or the state file going away)
//! leaves no server and no file behind.
//!
//! Each lab has its own namespace prefix and state directory (kubectl's cache goes there too)
//! and is brought down by a guard, also when a test fails.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use integration_tests::{case, netpath, unique, Requires};
use serde_json::Value;
use tracer::lab::{self, LabState};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            kubectl_reads_every_scenario_as_the_lab_built_it,
            Requires::Root,
            Requires::Tool("kubectl")
        ),
        case!(
            kubectl_tables_selectors_and_watches,
            Requires::Root,
            Requires::Tool("kubectl")
        ),
        case!(
            kubectl_without_the_token_or_writing_is_refused,
            Requires::Root,
            Requires::Tool("kubectl")
        ),
        case!(
            down_or_a_vanished_state_stops_the_api_and_leaves_nothing,
            Requires::Root,
            Requires::Tool("kubectl")
        ),
        case!(
            an_api_that_cannot_start_fails_lab_up_cleanly,
            Requires::Root
        ),
    ])
}

/// Labs one at a time (their timings mean something only on an idle machine).
static SERIAL: Mutex<()> = Mutex::new(());
/// `lab up` answers only once its API does; the server's own start is measured and printed.
const API_LIMIT: Duration = Duration::from_secs(5);

/// A lab brought up with `netpath lab up`, brought down (and its directory removed) on drop.
struct Lab {
    dir: PathBuf,
    prefix: String,
    state: LabState,
    kubeconfig: PathBuf,
}

impl Lab {
    fn up(scenario: &str) -> Lab {
        let prefix = unique("ka");
        let dir = std::env::temp_dir().join(format!("netpath-kube-{prefix}"));
        Self::up_in(scenario, dir, prefix)
    }

    fn up_in(scenario: &str, dir: PathBuf, prefix: String) -> Lab {
        let out = netpath(&[
            "lab",
            "up",
            "-s",
            scenario,
            "--state",
            dir.to_str().unwrap(),
            "--prefix",
            &prefix,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Guard first, so even a failed `up` is cleaned.
        let mut lab = Lab {
            state: lab::state::load(&dir)
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{scenario}: no lab state after `lab up`: {stderr}")),
            dir,
            prefix,
            kubeconfig: PathBuf::new(),
        };
        assert!(out.status.success(), "lab up {scenario}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .find_map(|l| l.strip_prefix("kubeconfig "))
            .unwrap_or_else(|| panic!("lab up prints no kubeconfig: {stdout}"));
        lab.kubeconfig = PathBuf::from(kubeconfig);
        assert_eq!(lab.kubeconfig, lab.dir.join("kubeconfig"));
        let took = stderr
            .lines()
            .find_map(|l| {
                l.split_once("Kubernetes API on ")
                    .map(|(_, r)| r.to_string())
            })
            .unwrap_or_else(|| panic!("lab up says nothing of its API: {stderr}"));
        eprintln!("{scenario}: Kubernetes API {took}");
        lab
    }

    fn kubectl_raw(&self, args: &[&str], extra: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .arg("--request-timeout=10s")
            .args(extra)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn kubectl")
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_raw(args, &[]);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl -o json")
    }

    fn api_pid(&self) -> u32 {
        let rec: Value = serde_json::from_str(
            &std::fs::read_to_string(self.dir.join("api.json")).expect("api.json"),
        )
        .unwrap();
        rec["pid"].as_u64().expect("pid") as u32
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = netpath(&[
            "lab",
            "down",
            "--state",
            self.dir.to_str().unwrap(),
            "--prefix",
            &self.prefix,
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `pid` is a running process (a zombie, waiting for its reaper, is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().expect("a list")
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn kubectl_reads_every_scenario_as_the_lab_built_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let version = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .expect("kubectl version");
    let version = String::from_utf8_lossy(&version.stdout);
    eprintln!("client: kubectl {}", version.lines().next().unwrap_or("?"));
    for sc in lab::SCENARIOS {
        let lab = Lab::up(sc.name);
        let st = &lab.state;

        // Pods: every lab pod, on its node, with exactly the addresses the lab gave it.
        let pods = lab.json(&["get", "pods", "-A"]);
        let by_name: BTreeMap<&str, &Value> = items(&pods)
            .iter()
            .filter(|p| p["metadata"]["namespace"] == "default")
            .map(|p| (p["metadata"]["name"].as_str().unwrap(), p))
            .collect();
        assert_eq!(by_name.len(), st.pods.len(), "{}: {pods}", sc.name);
        for p in &st.pods {
            let got = by_name[p.name.as_str()];
            let want: Vec<String> = p
                .ipv4
                .iter()
                .chain(&p.ipv6)
                .map(|i| i.to_string())
                .collect();
            let ips: Vec<String> = got["status"]["podIPs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["ip"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ips, want, "{}: pod {} podIPs", sc.name, p.name);
            assert_eq!(got["spec"]["nodeName"], p.node.as_str());
            assert_eq!(got["status"]["phase"], "Running");
        }
        // One agent pod per node, found by label as a client finds them.
        let agents = lab.json(&[
            "get",
            "pods",
            "-A",
            "-l",
            "app.kubernetes.io/name=netpath-agent",
        ]);
        let mut agent_nodes: Vec<String> = items(&agents)
            .iter()
            .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
            .collect();
        agent_nodes.sort();
        let nodes: Vec<String> = st.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(agent_nodes, nodes, "{}", sc.name);
        assert!(items(&agents)
            .iter()
            .all(|p| p["spec"]["hostNetwork"] == true));

        // Services: ClusterIPs and families as the scenario made them.
        let svcs = lab.json(&["get", "svc", "-A"]);
        assert_eq!(items(&svcs).len(), st.services.len(), "{}", sc.name);
        for s in &st.services {
            let got = items(&svcs)
                .iter()
                .find(|x| x["metadata"]["name"] == s.name.as_str())
                .unwrap_or_else(|| panic!("{}: svc/{} missing", sc.name, s.name));
            let ips: Vec<String> = s.cluster_ips.iter().map(|i| i.to_string()).collect();
            assert_eq!(
                strs(&got["spec"]["clusterIPs"]),
                ips,
                "{}: svc/{}",
                sc.name,
                s.name
            );
            let fams: Vec<String> = s
                .cluster_ips
                .iter()
                .map(|i| if i.is_ipv4() { "IPv4" } else { "IPv6" }.to_string())
                .collect();
            assert_eq!(
                strs(&got["spec"]["ipFamilies"]),
                fams,
                "{}: svc/{}",
                sc.name,
                s.name
            );

            // EndpointSlices: every endpoint, in a slice of its own family.
            let slices = lab.json(&[
                "get",
                "endpointslices",
                "-n",
                "default",
                "-l",
                &format!("kubernetes.io/service-name={}", s.name),
            ]);
            let mut seen: Vec<String> = Vec::new();
            for slice in items(&slices) {
                let port = slice["ports"][0]["port"].as_u64().unwrap() as u16;
                for e in slice["endpoints"].as_array().unwrap() {
                    let ip: std::net::IpAddr = e["addresses"][0].as_str().unwrap().parse().unwrap();
                    let fam = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                    assert_eq!(slice["addressType"], fam, "{}: {slice}", sc.name);
                    seen.push(std::net::SocketAddr::new(ip, port).to_string());
                }
            }
            let mut want: Vec<String> = s.endpoints.iter().map(|e| e.to_string()).collect();
            want.sort();
            seen.sort();
            assert_eq!(seen, want, "{}: svc/{} endpoints", sc.name, s.name);
        }

        // Nodes: both families' InternalIPs and pod CIDRs.
        let nodes = lab.json(&["get", "nodes"]);
        for n in &st.nodes {
            let got = items(&nodes)
                .iter()
                .find(|x| x["metadata"]["name"] == n.name.as_str())
                .unwrap();
            let internal: Vec<String> = got["status"]["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["type"] == "InternalIP")
                .map(|a| a["address"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                internal,
                [n.underlay_v4.to_string(), n.underlay_v6.to_string()]
            );
            assert_eq!(
                strs(&got["spec"]["podCIDRs"]),
                [n.pod_cidr_v4.clone(), n.pod_cidr_v6.clone()]
            );
        }
        eprintln!(
            "{}: {} pods, {} services, {} nodes read back by kubectl",
            sc.name,
            st.pods.len(),
            st.services.len(),
            st.nodes.len()
        );
    }
}

fn kubectl_tables_selectors_and_watches() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("calico-v6-withdrawn");

    // Server-side tables, as `kubectl get` prints them.
    let table = lab.kubectl(&["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[..5],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    for p in &lab.state.pods {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(p.name.as_str()))
            .unwrap_or_else(|| panic!("no row for {}: {table}", p.name));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..3], ["1/1", "Running"], "{row}");
        assert!(cells.contains(&p.node.as_str()), "{row}");
    }
    let svc = lab.kubectl(&["get", "svc", "web"]);
    assert!(
        svc.contains("ClusterIP") && svc.contains("10.96.0.10") && svc.contains("80/TCP"),
        "{svc}"
    );
    let slices = lab.kubectl(&["get", "endpointslices"]);
    assert!(
        slices.contains("web-ipv6") && slices.contains("IPv6"),
        "{slices}"
    );
    let ds = lab.kubectl(&["get", "daemonsets", "-n", "netpath"]);
    assert!(ds.contains("netpath-agent"), "{ds}");

    // The withdrawn pod (seed 001): only its IPv4 address is left.
    let d = lab.json(&["get", "pod", "pod-d"]);
    assert_eq!(
        d["status"]["podIPs"],
        serde_json::json!([{"ip": "10.244.2.3"}])
    );

    // Selectors: labels and spec.nodeName, as the client lists pods of a node.
    let names = lab.kubectl(&[
        "get",
        "pods",
        "-A",
        "-l",
        "app=web",
        "--field-selector",
        "spec.nodeName=node-2",
        "-o",
        "name",
    ]);
    assert_eq!(names.trim(), "pod/pod-d");

    // A raw watch: ADDED for every current pod, then open until its timeout.
    let start = Instant::now();
    let raw = lab.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=2",
    ]);
    let events: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), lab.state.pods.len(), "{raw}");
    assert!(events
        .iter()
        .all(|e| e["type"] == "ADDED" && e["object"]["kind"] == "Pod"));
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "the watch stayed open until its timeout"
    );

    // `kubectl get pods -w`: lists, then watches (and keeps watching) without an error.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .arg("--cache-dir")
        .arg(lab.dir.join("kube-cache"))
        .args(["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl -w");
    std::thread::sleep(Duration::from_secs(2));
    let still_watching = watch.try_wait().expect("try_wait").is_none();
    let _ = watch.kill();
    let out = watch.wait_with_output().expect("kubectl -w output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(still_watching, "kubectl get -w ended: {stdout} {stderr}");
    assert!(stderr.trim().is_empty(), "kubectl get -w: {stderr}");
    for p in &lab.state.pods {
        assert!(
            stdout.contains(&p.name),
            "kubectl get -w printed no {}: {stdout}",
            p.name
        );
    }
}

fn kubectl_without_the_token_or_writing_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("flannel");
    // A client that goes away mid-answer must not kill the server: SIGPIPE is ignored there
    // (one-shot `lab` commands let a closed pipe end them; the server's TLS writes would die).
    let status = std::fs::read_to_string(format!("/proc/{}/status", lab.api_pid())).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("SigIgn in /proc/PID/status");
    assert_ne!(
        ignored & (1u64 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE not ignored: {ignored:x}"
    );
    let wrong = lab.kubectl_raw(&["get", "pods"], &["--token", "not-the-token"]);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");

    // No token at all (kubectl would prompt for a user name instead of asking): the
    // server's own HTTPS client, trusting the lab's CA, on the address the lab recorded.
    let rec: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.join("api.json")).unwrap()).unwrap();
    let addr: std::net::SocketAddr = rec["addr"].as_str().unwrap().parse().unwrap();
    let ca = rec["ca_pem"].as_str().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in ["/api", "/api/v1/pods", "/apis/apps/v1/daemonsets"] {
        let (code, body) = runtime
            .block_on(netpath_k8s::apiserver::fetch(addr, ca, None, path))
            .expect("fetch");
        assert_eq!(code, 401, "{path}: {body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["reason"].as_str()),
            (Some("Status"), Some("Unauthorized"))
        );
    }

    let del = lab.kubectl_raw(&["delete", "pod", "pod-a"], &[]);
    assert!(!del.status.success());
    let err = String::from_utf8_lossy(&del.stderr);
    assert!(err.contains("MethodNotAllowed"), "{err}");
    let missing = lab.kubectl_raw(&["get", "pod", "no-such-pod"], &[]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("NotFound") && err.contains("no-such-pod"),
        "{err}"
    );
    // Still there after the refused delete.
    assert!(lab
        .kubectl(&["get", "pod", "pod-a", "-o", "name"])
        .contains("pod/pod-a"));
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

fn wait_dead(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn down_or_a_vanished_state_stops_the_api_and_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // `lab down`: the server stops, its files go.
    let lab = Lab::up("kube-router");
    let pid = lab.api_pid();
    assert!(alive(pid));
    assert!(lab
        .kubectl(&["get", "nodes", "-o", "name"])
        .contains("node/node-1"));
    let status = netpath(&[
        "lab",
        "status",
        "--state",
        lab.dir.to_str().unwrap(),
        "--prefix",
        &lab.prefix,
    ]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("kubeconfig {}", lab.kubeconfig.display())),
        "lab status shows the kubeconfig: {text}"
    );
    let t = Instant::now();
    let down = netpath(&[
        "lab",
        "down",
        "--state",
        lab.dir.to_str().unwrap(),
        "--prefix",
        &lab.prefix,
    ]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        wait_dead(pid, Duration::from_secs(1)),
        "API server {pid} still runs after lab down"
    );
    eprintln!(
        "lab down (with the API server) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let left: Vec<String> = files(&lab.dir)
        .into_iter()
        .filter(|f| !f.starts_with("kube-cache"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(lab);

    // The state file removed behind the lab's back: the server notices and goes, with its files.
    let lab = Lab::up("flannel");
    let pid = lab.api_pid();
    let state_file = lab::state::state_file(&lab.dir);
    let saved = std::fs::read(&state_file).unwrap();
    std::fs::remove_file(&state_file).unwrap();
    let gone = wait_dead(pid, Duration::from_secs(3));
    // Put the state back so the guard's `lab down` removes the namespaces.
    std::fs::write(&state_file, saved).unwrap();
    assert!(gone, "API server {pid} outlived its lab's state");
    for f in ["api.json", "kubeconfig"] {
        assert!(!lab.dir.join(f).exists(), "{f} left behind");
    }
    drop(lab);

    // `lab up` refused (a lab is already up) starts no second server and keeps the first.
    let lab = Lab::up("calico");
    let pid = lab.api_pid();
    let again = netpath(&[
        "lab",
        "up",
        "-s",
        "flannel",
        "--state",
        lab.dir.to_str().unwrap(),
        "--prefix",
        &lab.prefix,
    ]);
    assert!(!again.status.success());
    assert_eq!(lab.api_pid(), pid);
    assert!(alive(pid));
    let t = Instant::now();
    assert!(lab
        .kubectl(&["get", "ns", "-o", "name"])
        .contains("namespace/default"));
    assert!(t.elapsed() < API_LIMIT);
}

/// Every live `netpath lab serve-api` process serving state directory `dir`.
fn servers_of(dir: &Path) -> Vec<u32> {
    let want = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.contains(&&b"serve-api"[..]) && args.contains(&want) && alive(*pid)
        })
        .collect()
}

fn an_api_that_cannot_start_fails_lab_up_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = unique("ka");
    let dir = std::env::temp_dir().join(format!("netpath-kube-{prefix}"));
    // The server cannot write its kubeconfig (a directory stands in its place): it exits,
    // and `lab up` must fail and take the lab it built down again.
    std::fs::create_dir_all(dir.join("kubeconfig")).unwrap();
    let guard = Lab {
        dir: dir.clone(),
        prefix: prefix.clone(),
        // The guard's `lab down` needs only the directory and prefix; the state is the plan's.
        state: lab::plan(
            lab::scenarios::find("flannel").unwrap(),
            &lab::PlanContext {
                prefix: prefix.clone(),
                nodes: 2,
                run: 1,
            },
        )
        .unwrap()
        .state,
        kubeconfig: PathBuf::new(),
    };
    let out = netpath(&[
        "lab",
        "up",
        "-s",
        "flannel",
        "--state",
        dir.to_str().unwrap(),
        "--prefix",
        &prefix,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "lab up succeeded without its API: {stderr}"
    );
    assert!(stderr.contains("lab API server"), "{stderr}");
    let left_ns: Vec<String> = integration_tests::sh("ip netns list")
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect();
    assert!(left_ns.is_empty(), "namespaces left: {left_ns:?}");
    assert_eq!(
        files(&dir),
        ["kubeconfig"],
        "only the test's own directory is left"
    );
    assert!(
        servers_of(&dir).is_empty(),
        "an API server still runs for {}",
        dir.display()
    );
    drop(guard);
}
