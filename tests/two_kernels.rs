//! Two real kernels as two nodes: two qemu guests (virtme-ng, software emulation) booting
//! different kernels (6.12 and 6.1 as scripts/setup fetches them), each a node with a pod
//! namespace and its own `netpath agent` (scripts/vm-node). The guests are linked by a qemu
//! socket netdev over loopback; the host reaches each agent through qemu's user networking,
//! port-forwarded to 127.0.0.1 only. From the host, which sees none of the guests'
//! namespaces, `netpath trace POD-A POD-B --agents ...` finds both pods through the agents,
//! follows both families across both kernels and puts each packet's hops in order although
//! node-b's clock runs 3 hours ahead of node-a's; a blackhole route on node-b then drops one
//! family's answer there, with the kernel's reason. `capture --agents` takes a trace's
//! probes from both kernels into one pcapng.
//!
//! Every guest is killed (its process group) if the test fails, and the shared directory
//! is removed.
use std::{
    io::Read,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    case, guest_kernels, netpath, netpath_bin, sh, tshark_fields, NetpathProcess, Requires,
};
use netpath_agent::{
    client::{channel, describe, AgentAddr},
    proto::{self, agent_client::AgentClient},
    server::TlsFiles,
};
use serde_json::Value;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![case!(
        two_guests_of_different_kernels_are_traced_as_two_nodes,
        Requires::Root,
        Requires::Tool("vng"),
        Requires::Tool("qemu-system-x86_64"),
        Requires::Tool("tshark"),
        Requires::GuestKernels
    )])
}

/// The port each agent listens on inside its guest.
const AGENT_PORT: u16 = 7101;
/// Longest a guest may take from `vng` to its agent listening (boot, set-up, waiting for the
/// other guest on the link, loading the programs under emulation).
const READY_LIMIT: Duration = Duration::from_secs(240);

/// One guest: `vng` in a process group of its own, killed with everything in it (qemu) when
/// dropped while still running.
struct Guest {
    node: &'static str,
    release: String,
    child: Child,
    started: Instant,
    dir: PathBuf,
}

impl Guest {
    /// Boots `kernel` running scripts/vm-node for `node` (number `index`, the other node's
    /// `peer`). `qemu`: the guest's NICs and anything else qemu needs.
    fn boot(
        node: &'static str,
        (index, peer): (u8, u8),
        (release, kernel): &(String, PathBuf),
        dir: &Path,
        qemu: &str,
    ) -> Guest {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/vm-node");
        let exec = format!(
            "NETPATH_BIN={} {} {node} {index} {peer} {d} {d}/tls",
            netpath_bin().display(),
            script.display(),
            d = dir.display()
        );
        let console = |suffix: &str| {
            std::fs::File::create(dir.join(format!("{node}.{suffix}"))).expect("console file")
        };
        let child = Command::new("vng")
            .arg("--run")
            .arg(kernel)
            .args(["--disable-kvm", "--cpus", "1", "--memory", "1G"])
            .arg("--rwdir")
            .arg(dir)
            .args(["--exec", &exec])
            .arg(format!("--qemu-opts={qemu}"))
            .stdin(Stdio::null())
            .stdout(console("console"))
            .stderr(console("console-err"))
            // Its own process group: the guard kills vng and qemu together.
            .process_group(0)
            .spawn()
            .expect("spawn vng");
        Guest {
            node,
            release: release.clone(),
            child,
            started: Instant::now(),
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.node))).unwrap_or_default()
    }

    /// The guest's log and the end of its console, for a failure message.
    fn story(&self) -> String {
        let mut console = String::new();
        for suffix in ["console", "console-err"] {
            if let Ok(mut f) = std::fs::File::open(self.dir.join(format!("{}.{suffix}", self.node)))
            {
                let _ = f.read_to_string(&mut console);
            }
        }
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        format!(
            "--- {} ({}) log:\n{}--- console (last lines):\n{}",
            self.node,
            self.release,
            self.log(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The NIC for the host, with the agent's port forwarded from 127.0.0.1:`host_port`,
    /// and the NIC of the link between the guests (`link`: qemu's socket netdev options).
    fn nics(index: u8, host_port: u16, link: &str) -> String {
        format!(
            "-netdev user,id=host,hostfwd=tcp:127.0.0.1:{host_port}-:{AGENT_PORT} \
             -device virtio-net-pci,netdev=host,mac=52:54:00:91:{index:02x}:01 \
             -netdev socket,id=link,{link} \
             -device virtio-net-pci,netdev=link,mac=52:54:00:91:{index:02x}:02"
        )
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.running() {
            // SAFETY: kill(2) on the process group this test created for the guest.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Something listens on 127.0.0.1:`port` (qemu's end of the link), read from /proc/net/tcp:
/// connecting would take the one connection qemu accepts.
fn listening(port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[3] == "0A"
        })
}

/// Waits for `cond` up to `limit`, checking the guests are still running; panics with
/// their story otherwise.
fn wait_for(
    what: &str,
    limit: Duration,
    guests: &mut [&mut Guest],
    mut cond: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        for g in guests.iter_mut() {
            if !g.running() {
                panic!(
                    "{} stopped while waiting for {what}:\n{}",
                    g.node,
                    g.story()
                );
            }
        }
        if Instant::now() > deadline {
            let stories: Vec<String> = guests.iter().map(|g| g.story()).collect();
            panic!(
                "no {what} after {} s:\n{}",
                limit.as_secs(),
                stories.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The number in a log line `... in N ms`.
fn ms_in(log: &str, needle: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let before = line.split(" ms").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// The kernel release each agent reports in `Info`.
fn releases(agents: &[AgentAddr], tls: &TlsFiles) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    agents
        .iter()
        .map(|at| {
            rt.block_on(async {
                let mut client = AgentClient::new(channel(at, tls).unwrap());
                let info = client
                    .info(proto::InfoRequest {})
                    .await
                    .unwrap_or_else(|s| panic!("Info of {}: {}", at.node, describe(&s)));
                info.into_inner().kernel_release
            })
        })
        .collect()
}

/// `netpath trace FROM TO --json` through the agents: (exit code, report, wall time).
fn trace(dir: &Path, agents: &str, from: &str, to: &str) -> (i32, Value, Duration) {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let tls = dir.join("tls");
    let started = Instant::now();
    // A guest's first events take seconds under emulation: a longer wait than the default
    // (the trace ends as soon as every family is decided and its events are in).
    let args = [
        "trace",
        from,
        to,
        "--json",
        "--timeout",
        "10",
        "--agents",
        agents,
        "--tls-dir",
        tls.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    let out = netpath(&args);
    let took = started.elapsed();
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "netpath {args:?} (exit {code}) printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report, took)
}

/// The verdict of `family` (4 or 6).
fn verdict(report: &Value, family: u64) -> &Value {
    report["verdicts"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["family"] == family))
        .unwrap_or_else(|| panic!("no IPv{family} verdict: {report:#}"))
}

/// The nodes of a path's hops in order, each run of one node once: `[node-a, node-b]`.
fn node_runs(hops: &Value) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for h in hops.as_array().into_iter().flatten() {
        let node = h["node"].as_str().unwrap_or_default().to_string();
        if runs.last() != Some(&node) {
            runs.push(node);
        }
    }
    runs
}

fn two_guests_of_different_kernels_are_traced_as_two_nodes() {
    let t0 = Instant::now();
    let mut kernels = guest_kernels();
    // The newest kernel for node-a, the oldest for node-b.
    kernels.sort_by_key(|k| std::cmp::Reverse(version_key(&k.0)));
    let (ka, kb) = (kernels[0].clone(), kernels[kernels.len() - 1].clone());
    assert_ne!(ka.0, kb.0, "two different kernels: {kernels:?}");

    // Shared with the guests (their only writable host directory); under target/, as the
    // guests' /tmp is an overlay of their own.
    let dir = tempfile::Builder::new()
        .prefix("two-kernels-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let out = netpath(&[
        "certs",
        "--out",
        dir.path().join("tls").to_str().unwrap(),
        "--nodes",
        "node-a=127.0.0.1,node-b=127.0.0.1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (port_a, port_b, port_link) = (free_port(), free_port(), free_port());

    // node-a's qemu listens for the link, node-b's connects to it (so node-a's first). node-b's
    // clock is 3 hours ahead: the merge must not depend on the nodes' clocks. (Ahead, not
    // behind: its agent checks the client certificate against its own clock.)
    let mut a = Guest::boot(
        "node-a",
        (1, 2),
        &ka,
        dir.path(),
        &Guest::nics(1, port_a, &format!("listen=127.0.0.1:{port_link}")),
    );
    wait_for(
        "link listener of node-a's qemu",
        Duration::from_secs(60),
        &mut [&mut a],
        || listening(port_link),
    );
    let skewed = sh("date -u -d '+3 hours' +%Y-%m-%dT%H:%M:%S");
    let mut b = Guest::boot(
        "node-b",
        (2, 1),
        &kb,
        dir.path(),
        &format!(
            "{} -rtc base={}",
            Guest::nics(2, port_b, &format!("connect=127.0.0.1:{port_link}")),
            skewed.trim()
        ),
    );
    let boot_started = t0.elapsed();
    // When each agent said it listens, after its vng started.
    let mut listening_after: [Option<Duration>; 2] = [None, None];
    {
        let guests = [
            (a.dir.join("node-a.log"), a.started),
            (b.dir.join("node-b.log"), b.started),
        ];
        wait_for(
            "agent listening in both guests",
            READY_LIMIT,
            &mut [&mut a, &mut b],
            || {
                for ((log, started), at) in guests.iter().zip(listening_after.iter_mut()) {
                    if at.is_none()
                        && std::fs::read_to_string(log).is_ok_and(|l| l.contains("listening on"))
                    {
                        *at = Some(started.elapsed());
                    }
                }
                listening_after.iter().all(Option::is_some)
            },
        );
    }
    let ready = t0.elapsed();
    for (g, at) in [&a, &b].into_iter().zip(listening_after) {
        let log = g.log();
        eprintln!(
            "{} ({}): agent listening {:.1} s after vng started; in the guest: the other guest \
             answered on the link at {} ms, programs loaded in {} ms",
            g.node,
            g.release,
            at.unwrap_or_default().as_secs_f64(),
            ms_in(&log, "answers (after").map_or("?".into(), |m| m.to_string()),
            ms_in(&log, "programs loaded").map_or("?".into(), |m| m.to_string()),
        );
    }

    let agents = format!("node-a=127.0.0.1:{port_a},node-b=127.0.0.1:{port_b}");
    let addrs = [
        AgentAddr::new("node-a", format!("127.0.0.1:{port_a}")),
        AgentAddr::new("node-b", format!("127.0.0.1:{port_b}")),
    ];
    let tls = TlsFiles::load(&dir.path().join("tls"), "client").unwrap();
    assert_eq!(
        releases(&addrs, &tls),
        vec![a.release.clone(), b.release.clone()],
        "each agent runs on its own kernel"
    );

    // Healthy: the pods are found by their agents (the host has no such namespace), both
    // families delivered, each packet's hops on both nodes, in causal order.
    let (code, report, took) = trace(dir.path(), &agents, "10.91.1.2", "10.91.2.2");
    let healthy_ms = report["elapsed_ms"].as_u64().unwrap_or(0);
    assert_eq!(code, 0, "{report:#}");
    for (end, node, netns) in [("from", "node-a", "pod-a"), ("to", "node-b", "pod-b")] {
        assert_eq!(
            (report[end]["node"].as_str(), report[end]["netns"].as_str()),
            (Some(node), Some(netns)),
            "{report:#}"
        );
    }
    for family in [4, 6] {
        let v = verdict(&report, family);
        assert_eq!(v["verdict"], "delivered", "IPv{family}: {report:#}");
        // node-b's clock is ahead: ordered by time, node-a's hops of the answer would come
        // first.
        assert_eq!(
            node_runs(&v["hops"]),
            ["node-a", "node-b"],
            "IPv{family} request: {v:#}"
        );
        assert_eq!(
            node_runs(&v["reply_hops"]),
            ["node-b", "node-a"],
            "IPv{family} answer: {v:#}"
        );
    }
    eprintln!(
        "healthy trace: {} ms in netpath ({:.1} s wall), both families delivered across {} and {}",
        healthy_ms,
        took.as_secs_f64(),
        a.release,
        b.release
    );

    // capture --agents across both kernels: a trace's probes, seen on both nodes, in one
    // pcapng (each guest loads the capture's programs of its own: slow under emulation).
    let pcap = dir.path().join("both.pcapng");
    let tls_dir = dir.path().join("tls");
    let capture_started = Instant::now();
    let mut capture = NetpathProcess::spawn(&[
        "capture",
        "--agents",
        &agents,
        "--tls-dir",
        tls_dir.to_str().unwrap(),
        "-w",
        pcap.to_str().unwrap(),
        "--duration",
        "300",
        "icmp or icmp6",
    ]);
    capture.wait_stderr("listening through 2 of 2", Duration::from_secs(180));
    let capture_ready = capture_started.elapsed();
    let (code, report, _) = trace(dir.path(), &agents, "10.91.1.2", "10.91.2.2");
    assert_eq!(code, 0, "{report:#}");
    capture.interrupt();
    let (code, _, stderr) = capture.finish_with_stderr();
    assert_eq!(code, Some(130), "{stderr:#?}");
    let rows = tshark_fields(&pcap, &["frame.interface_name", "icmp.type", "icmpv6.type"]);
    for node in ["node-a", "node-b"] {
        for (column, echo) in [(1, "8"), (2, "128")] {
            assert!(
                rows.iter()
                    .any(|r| r[0].starts_with(&format!("{node}/")) && r[column] == echo),
                "no echo request (type {echo}) captured on {node}: {rows:?}\n{stderr:#?}"
            );
        }
    }
    eprintln!(
        "capture --agents across both kernels: listening after {:.1} s, {} packets; {:?}",
        capture_ready.as_secs_f64(),
        rows.len(),
        stderr.iter().rev().take(2).collect::<Vec<_>>()
    );

    // node-b loses its IPv4 route to node-a's pods: the answer is dropped there.
    std::fs::write(dir.path().join("node-b.fault"), "blackhole4").unwrap();
    let done = dir.path().join("node-b.fault.done");
    wait_for(
        "the fault applied on node-b",
        Duration::from_secs(30),
        &mut [&mut b],
        || done.exists(),
    );
    // By IPv6 addresses this time: a pod's address of either family names the pod.
    let (code, report, took) = trace(dir.path(), &agents, "fd00:91:1::2", "fd00:91:2::2");
    assert_eq!(code, 1, "{report:#}");
    let v4 = verdict(&report, 4);
    assert_eq!(v4["verdict"], "dropped", "{report:#}");
    assert_eq!(v4["where"]["node"], "node-b", "{v4:#}");
    let reason = v4["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "no reason: {v4:#}");
    assert_eq!(verdict(&report, 6)["verdict"], "delivered", "{report:#}");
    eprintln!(
        "IPv4 blackhole on node-b: dropped there ({}, reason {reason}, cause {}), IPv6 delivered; \
         {} ms in netpath ({:.1} s wall)",
        v4["where"]["location"].as_str().unwrap_or("?"),
        v4["cause"].as_str().unwrap_or("?"),
        report["elapsed_ms"],
        took.as_secs_f64()
    );

    // Stop: each guest stops its agent, removes its namespace and powers off.
    let stopping = Instant::now();
    std::fs::write(dir.path().join("stop"), "").unwrap();
    for g in [&mut a, &mut b] {
        let deadline = Instant::now() + Duration::from_secs(90);
        while g.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(!g.running(), "{} did not power off:\n{}", g.node, g.story());
        assert!(g.log().contains("stopped"), "{}", g.story());
    }
    eprintln!(
        "timings: guests started {:.1} s, both agents ready {:.1} s, guests off {:.1} s after \
         the stop; {:.1} s in all",
        boot_started.as_secs_f64(),
        ready.as_secs_f64(),
        stopping.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// `6.12.118+deb12-amd64` -> [6, 12, 118, 12]: sorts releases by version.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}
