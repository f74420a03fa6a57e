//! `netpath capture --agents` on the real kernel: two `netpath agent`s on loopback, each
//! confined to the namespaces of its "node" of a small topology (client and router on node A,
//! server on node B), capture for one client; the merged pcapng holds both nodes' packets,
//! each interface named NODE/NETNS/DEVICE, only those the filter selects (checked with
//! tshark). An agent that cannot be reached is named and the capture goes on; a filter that
//! does not compile is one line and exit 2.
use std::{
    collections::BTreeSet,
    sync::Mutex,
    time::{Duration, Instant},
};

use integration_tests::{
    agents::{certs_for_two, TestAgent, Topology},
    case, exits_within, netpath, tc_programs, tshark_fields, NetpathProcess, Requires,
};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            packets_of_both_nodes_are_merged_into_one_pcapng_with_the_filter_applied,
            Requires::Root,
            Requires::Tool("tshark")
        ),
        case!(
            a_filter_the_agents_cannot_compile_is_one_line_and_exit_2,
            Requires::Root
        ),
        case!(
            an_agent_stopped_during_a_capture_ends_its_stream_and_detaches,
            Requires::Root
        ),
    ])
}

/// One test at a time: each starts agents, and captures load kernel programs.
static SLOTS: Mutex<()> = Mutex::new(());

/// Certificates and the two agents: A confined to c and r, B to s.
struct Cluster {
    tls: tempfile::TempDir,
    a: TestAgent,
    b: TestAgent,
}

impl Cluster {
    fn start(t: &Topology) -> Cluster {
        let tls = tempfile::tempdir().unwrap();
        certs_for_two(tls.path());
        let a = TestAgent::start("node-a", tls.path(), &[&t.c.name, &t.r.name], &[]);
        let b = TestAgent::start("node-b", tls.path(), &[&t.s.name], &[]);
        Cluster { tls, a, b }
    }

    fn tls_dir(&self) -> &str {
        self.tls.path().to_str().unwrap()
    }
}

fn packets_of_both_nodes_are_merged_into_one_pcapng_with_the_filter_applied() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ca");
    let cluster = Cluster::start(&t);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("merged.pcapng");
    // A third agent nobody listens for: named, and the capture goes on with the others.
    let agents = format!(
        "node-a={},node-b={},node-c=127.0.0.1:9",
        cluster.a.addr, cluster.b.addr
    );
    // 3 IPv4 pings, each echo and reply seen on va (c), vb and vc (r) and vd (s): 24 packets.
    let started = Instant::now();
    let mut np = NetpathProcess::spawn(&[
        "capture",
        "--agents",
        &agents,
        "--tls-dir",
        cluster.tls_dir(),
        "-w",
        file.to_str().unwrap(),
        "-c",
        "24",
        "--duration",
        "60",
        "icmp",
    ]);
    np.wait_stderr("listening through 2 of 3", Duration::from_secs(60));
    let listening = started.elapsed();
    // IPv6 pings at the same time: ICMPv6, which the filter (`icmp`, IPv4's) leaves out.
    t.c.exec(
        "ping -6 -c3 -i0.2 -W1 fd00:2::2 >/dev/null & ping -c3 -i0.2 -W1 10.2.0.2 >/dev/null; wait",
    );
    let (code, _, stderr) = np.finish_with_stderr();
    eprintln!(
        "capture through 2 agents listening after {} ms; stderr: {stderr:#?}",
        listening.as_millis()
    );
    assert_eq!(code, Some(0), "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("agent node-c at 127.0.0.1:9 unreachable")),
        "{stderr:#?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("24 packets captured")),
        "{stderr:#?}"
    );
    let rows = tshark_fields(
        &file,
        &[
            "frame.interface_name",
            "frame.interface_description",
            "frame.packet_flags_direction",
            "ip.proto",
            "ipv6.src",
            "frame.time_epoch",
        ],
    );
    assert_eq!(rows.len(), 24, "{rows:#?}");
    let names: BTreeSet<(String, String)> =
        rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let want: BTreeSet<(String, String)> = [
        (format!("node-a/{}/va", t.c.name), "node node-a"),
        (format!("node-a/{}/vb", t.r.name), "node node-a"),
        (format!("node-a/{}/vc", t.r.name), "node node-a"),
        (format!("node-b/{}/vd", t.s.name), "node node-b"),
    ]
    .into_iter()
    .map(|(n, d)| (n, d.to_string()))
    .collect();
    assert_eq!(names, want, "{rows:#?}");
    // Only IPv4 ICMP: the agents applied the filter.
    assert!(
        rows.iter().all(|r| r[3] == "1" && r[4].is_empty()),
        "{rows:#?}"
    );
    // Each interface saw 3 packets each way.
    for (name, _) in &want {
        for dir in ["0x00000001", "0x00000002"] {
            let n = rows.iter().filter(|r| &r[0] == name && r[2] == dir).count();
            assert_eq!(n, 3, "{name} {dir}: {rows:#?}");
        }
    }
    // Merged in timestamp order (both nodes share this kernel's clock here).
    let times: Vec<f64> = rows.iter().map(|r| r[5].parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

fn a_filter_the_agents_cannot_compile_is_one_line_and_exit_2() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ca");
    let cluster = Cluster::start(&t);
    let agents = format!("node-a={},node-b={}", cluster.a.addr, cluster.b.addr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.pcapng");
    let out = netpath(&[
        "capture",
        "--agents",
        &agents,
        "--tls-dir",
        cluster.tls_dir(),
        "-w",
        file.to_str().unwrap(),
        "tcp",
        "port",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("netpath: invalid capture filter 'tcp port': "),
        "{stderr}"
    );
    // Refused before any output: -w FILE is not created.
    assert!(!file.exists());
}

/// SIGTERM to one agent while a capture reads from it (a DaemonSet pod being stopped): its
/// stream ends with the agent's word, the agent exits 0 within seconds with every program it
/// attached (its own and the capture's) detached, and the capture goes on with the other;
/// when that one stops too, the capture ends by itself with exit 2.
fn an_agent_stopped_during_a_capture_ends_its_stream_and_detaches() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ca");
    let mut cluster = Cluster::start(&t);
    let agents = format!("node-a={},node-b={}", cluster.a.addr, cluster.b.addr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one-left.pcapng");
    let mut np = NetpathProcess::spawn(&[
        "capture",
        "--agents",
        &agents,
        "--tls-dir",
        cluster.tls_dir(),
        "-w",
        file.to_str().unwrap(),
        "--duration",
        "60",
        "icmp",
    ]);
    np.wait_stderr("listening through 2 of 2", Duration::from_secs(60));
    assert!(tc_programs(&t.s.name, "vd") > 0, "node-b's agent attached");
    cluster.b.process.signal(libc::SIGTERM);
    let code = exits_within(&mut cluster.b.process, Duration::from_secs(10), "the agent");
    assert_eq!(code, Some(0), "{:?}", cluster.b.process.stderr_so_far());
    assert_eq!(tc_programs(&t.s.name, "vd"), 0, "programs left on vd");
    // The capture goes on with node-a: 2 pings, echo and reply on va, vb and vc.
    np.wait_stderr("node-b", Duration::from_secs(15));
    t.c.exec("ping -c2 -i0.2 -W1 10.2.0.2 >/dev/null");
    std::thread::sleep(Duration::from_millis(500));
    // node-a stops too: nothing more can come, the capture ends by itself, not a success.
    cluster.a.process.signal(libc::SIGTERM);
    let code = exits_within(
        &mut cluster.a.process,
        Duration::from_secs(10),
        "node-a's agent",
    );
    assert_eq!(code, Some(0), "{:?}", cluster.a.process.stderr_so_far());
    let code = exits_within(&mut np, Duration::from_secs(15), "capture --agents");
    let (_, _, stderr) = np.finish_with_stderr();
    eprintln!("capture after both agents stopped: {stderr:#?}");
    assert_eq!(code, Some(2), "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("no more packets can come")),
        "{stderr:#?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("agent node-b") && l.contains("is stopping")),
        "{stderr:#?}"
    );
    assert!(
        stderr.iter().any(|l| l == "node-a: 12 packets, 0 lost"),
        "{stderr:#?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("12 packets captured")),
        "{stderr:#?}"
    );
}
