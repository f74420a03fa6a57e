//! Pods found through the container runtime (CRI) on the real kernel. `netpath lab up` serves
//! each node's pod sandboxes on a unix socket (a read-only CRI RuntimeService whose sandbox
//! pids are threads inside the pods' namespaces) and starts each node's agent with
//! `--cri-socket`: the agents find `NS/POD` by its sandbox, which no address search could
//! (no address is given, or a wrong one), and say so; a pod the runtime does not know falls
//! back to the address search. Without a runtime socket the agent searches addresses and
//! says why; a `--cri-socket` that is not a runtime is one line. `lab down` leaves no runtime
//! process, socket or file (root).
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use integration_tests::{agents::TestAgent, alive, case, netpath, unique, NetNsGuard, Requires};
use netpath_agent::{
    client::{channel, describe, AgentAddr},
    cri::Cri,
    proto::{self, agent_client::AgentClient},
    server::TlsFiles,
};
use netpath_core::model::{Endpoint, EndpointKind};
use serde_json::Value;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            the_labs_agents_find_pods_through_its_container_runtime,
            Requires::Root
        ),
        case!(
            without_a_runtime_socket_pods_are_found_by_their_addresses,
            Requires::Root
        ),
        case!(
            a_cri_socket_that_is_not_a_runtime_is_one_line,
            Requires::Root
        ),
    ])
}

/// One test at a time: each starts agents that load kernel programs.
static SLOTS: Mutex<()> = Mutex::new(());

/// A lab brought up by `netpath lab up`, always brought down.
struct Lab {
    dir: tempfile::TempDir,
    prefix: String,
}

impl Lab {
    fn up() -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().unwrap(),
            prefix: unique("cr"),
        };
        let out = netpath(&lab.args(&["lab", "up", "-s", "flannel"]));
        assert!(
            out.status.success(),
            "lab up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn state(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn args<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut a = cmd.to_vec();
        a.extend_from_slice(&["--state", self.state(), "--prefix", &self.prefix]);
        a
    }

    fn json(&self, file: &str) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = netpath(&self.args(&["lab", "down"]));
    }
}

fn inode(path: impl AsRef<Path>) -> u64 {
    std::fs::metadata(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
        .ino()
}

/// Runs `f` on a runtime of its own.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A client of one agent (`addr`: `HOST:PORT[@NETNS]`), with `tls`'s client certificate.
fn agent(node: &str, addr: &str, tls: &Path) -> AgentClient<tonic::transport::Channel> {
    let files = TlsFiles::load(tls, "client").unwrap();
    let at: AgentAddr = format!("{node}={addr}").parse().unwrap();
    AgentClient::new(channel(&at, &files).unwrap())
}

/// `Resolve(spec)`: the endpoint and how it was found, or the refusal's message.
async fn resolve(
    client: &mut AgentClient<tonic::transport::Channel>,
    spec: &str,
) -> Result<(Endpoint, String), String> {
    let reply = client
        .resolve(proto::ResolveRequest { spec: spec.into() })
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    let e: Endpoint = serde_json::from_slice(&reply.endpoint_json).unwrap();
    Ok((e, reply.found_by))
}

/// The `cri` feature of the agent's `Info`.
async fn cri_feature(client: &mut AgentClient<tonic::transport::Channel>) -> proto::Feature {
    let info = client
        .info(proto::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    info.features
        .into_iter()
        .find(|f| f.name == "cri")
        .expect("a cri feature in Info")
}

fn the_labs_agents_find_pods_through_its_container_runtime() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let lab = Lab::up();
    eprintln!("lab up (with CRI): {:.2} s", t.elapsed().as_secs_f64());
    let p = lab.prefix.clone();

    // The runtime: one socket per node; each sandbox's pid is in its pod's namespace.
    let rec = lab.json("cri.json");
    let pid = rec["pid"].as_u64().unwrap();
    assert!(alive(pid), "the lab's runtime runs");
    let sockets: Vec<(String, PathBuf)> = rec["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_str().unwrap().into(), s[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        sockets.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["node-1", "node-2"]
    );
    let node1_socket = sockets[0].1.clone();
    block_on(async {
        let cri = Cri::new(&node1_socket).unwrap();
        let v = cri.version().await.unwrap();
        assert_eq!(
            (v.name.as_str(), v.api_version.as_str()),
            ("netpath-lab", "v1")
        );
        let sb = cri
            .find_pod("default", "pod-a")
            .await
            .unwrap()
            .expect("pod-a's sandbox");
        let sandbox_pid = sb.info.pid.expect("a sandbox pid");
        assert_eq!(
            inode(format!("/proc/{sandbox_pid}/ns/net")),
            inode(format!("/run/netns/{p}-pod-a")),
            "the sandbox's pid is in pod-a's namespace"
        );
        assert!(sb.ips.contains(&"10.244.1.2".to_string()), "{:?}", sb.ips);
        // node-1's runtime has node-1's pods only.
        assert_eq!(cri.find_pod("default", "pod-c").await.unwrap(), None);
    });

    // The agents: found through CRI, which they say in Info, in the answer and in their log.
    let agents = lab.json("agents.json");
    let tls = PathBuf::from(agents["tls_dir"].as_str().unwrap());
    let addr_of = |node: &str| {
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["node"] == node)
            .map(|a| {
                // The lab's agents are reached from its underlay namespace.
                let addr = a["addr"].as_str().unwrap();
                match a["via_netns"].as_str() {
                    Some(ns) => format!("{addr}@{ns}"),
                    None => addr.to_string(),
                }
            })
            .unwrap()
    };
    let (addr1, addr2) = (addr_of("node-1"), addr_of("node-2"));
    block_on(async {
        let mut n1 = agent("node-1", &addr1, &tls);
        let mut n2 = agent("node-2", &addr2, &tls);
        let f = cri_feature(&mut n1).await;
        assert!(
            f.available && f.detail.contains("node-1.sock") && f.detail.contains("netpath-lab"),
            "{f:?}"
        );
        // No address to search for: only the runtime can place it.
        let t = Instant::now();
        let (e, how) = resolve(&mut n1, "default/pod-a").await.unwrap();
        eprintln!(
            "Resolve default/pod-a through CRI: {} ms",
            t.elapsed().as_millis()
        );
        assert_eq!(
            (
                e.kind,
                e.name.as_str(),
                e.netns.as_deref(),
                e.node.as_deref()
            ),
            (
                EndpointKind::Pod,
                "default/pod-a",
                Some(format!("{p}-pod-a").as_str()),
                Some("node-1")
            )
        );
        assert!(how.starts_with("CRI (") && how.contains("pid "), "{how}");
        assert!(e.ipv4.contains(&"10.244.1.2".parse().unwrap()), "{e:?}");
        // A wrong address does not matter when the runtime knows the pod.
        let (e, how) = resolve(&mut n2, "pod:default/pod-d@10.244.1.2")
            .await
            .unwrap();
        assert_eq!(e.netns.as_deref(), Some(format!("{p}-pod-d").as_str()));
        assert!(how.starts_with("CRI ("), "{how}");
        // Another node's pod: not here, and no address to search for.
        let err = resolve(&mut n1, "default/pod-c").await.unwrap_err();
        assert!(
            err.contains("CRI: no ready sandbox of default/pod-c")
                && err.contains("no address to search for on node node-1"),
            "{err}"
        );
        // A pod the runtime does not know: the address search, which says why.
        let (e, how) = resolve(&mut n1, "pod:default/ghost@10.244.1.3")
            .await
            .unwrap();
        assert_eq!(e.netns.as_deref(), Some(format!("{p}-pod-b").as_str()));
        assert_eq!(
            how, "address search (CRI: no ready sandbox of default/ghost)",
            "{how}"
        );
        // Addresses are still searched as before.
        let (e, how) = resolve(&mut n2, "10.244.2.2").await.unwrap();
        assert_eq!(
            (e.netns.as_deref(), how.as_str()),
            (Some(format!("{p}-pod-c").as_str()), "address search")
        );
    });
    let log = std::fs::read_to_string(lab.dir.path().join("agent-node-1.log")).unwrap();
    assert!(
        log.contains(&format!(
            "node node-1: default/pod-a is in {p}-pod-a (found by CRI ("
        )),
        "{log}"
    );
    assert!(
        log.contains("pods are found through CRI at") && log.contains("node-1.sock"),
        "{log}"
    );

    // `lab down`: no runtime, no socket, no file.
    let t = Instant::now();
    let down = netpath(&lab.args(&["lab", "down"]));
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    eprintln!("lab down (with CRI): {:.2} s", t.elapsed().as_secs_f64());
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(pid),
        "the lab's runtime (pid {pid}) outlived lab down"
    );
    for (_, s) in &sockets {
        assert!(!s.exists(), "{} left behind", s.display());
    }
    let left: Vec<String> = std::fs::read_dir(lab.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `netpath certs` for `node` in a new directory.
fn certs(node: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = netpath(&[
        "certs",
        "--out",
        dir.path().to_str().unwrap(),
        "--nodes",
        &format!("{node}=127.0.0.1"),
    ]);
    assert!(
        out.status.success(),
        "netpath certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn without_a_runtime_socket_pods_are_found_by_their_addresses() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let pod = NetNsGuard::new(&unique("crp"));
    pod.exec(
        "ip link add v0 type veth peer name v1 && ip addr add 10.77.0.2/24 dev v0 && \
         ip link set v0 up && ip link set v1 up",
    );
    let tls = certs("node-x");
    // This machine may run a container runtime: then the agent is told to ignore it.
    let present: Vec<&str> = netpath_agent::cri::DEFAULT_SOCKETS
        .iter()
        .copied()
        .filter(|s| Path::new(s).exists())
        .collect();
    let extra: &[&str] = if present.is_empty() {
        &[]
    } else {
        eprintln!("a runtime socket is here ({present:?}): the agent runs with --no-cri");
        &["--no-cri"]
    };
    let TestAgent { process, addr, .. } =
        TestAgent::start("node-x", tls.path(), &[&pod.name], extra);
    let said = process.stderr_seen.join("\n");
    assert!(
        said.contains("pods are found by their addresses only"),
        "said once at start: {said}"
    );
    block_on(async {
        let mut client = agent("node-x", &addr, tls.path());
        let f = cri_feature(&mut client).await;
        assert!(
            !f.available && f.detail.ends_with("address search only"),
            "{f:?}"
        );
        let (e, how) = resolve(&mut client, "pod:shop/web-0@10.77.0.2")
            .await
            .unwrap();
        assert_eq!(
            (e.kind, e.name.as_str(), e.netns.as_deref()),
            (EndpointKind::Pod, "shop/web-0", Some(pod.name.as_str()))
        );
        assert_eq!(how, "address search (no container runtime socket)");
        let err = resolve(&mut client, "shop/web-0").await.unwrap_err();
        assert!(
            err.contains(
                "no container runtime socket, and no address to search for on node node-x"
            ),
            "{err}"
        );
    });
    process.interrupt();
    let (code, _, stderr) = process.finish_with_stderr();
    assert_eq!(code, Some(0), "the agent stops on SIGINT: {stderr:?}");
    let said = stderr.join("\n");
    assert!(
        said.contains("shop/web-0 is in")
            && said.contains("(found by address search (no container runtime socket))"),
        "the agent's log says how: {said}"
    );
}

fn a_cri_socket_that_is_not_a_runtime_is_one_line() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let tls = certs("node-y");
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on any more.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let missing = dir.path().join("missing.sock");
    for (path, want) in [
        (
            &missing,
            format!("CRI socket {}: no such socket", missing.display()),
        ),
        (
            &plain,
            format!("CRI socket {}: not a unix socket", plain.display()),
        ),
        (&stale, format!("CRI Version on {}: ", stale.display())),
    ] {
        let t = Instant::now();
        let out = netpath(&[
            "agent",
            "--node",
            "node-y",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            tls.path().to_str().unwrap(),
            "--cri-socket",
            path.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("netpath: --cri-socket: {want}")),
            "{stderr}"
        );
        // Refused before any kernel program is loaded.
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
