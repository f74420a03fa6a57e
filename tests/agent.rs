//! Cluster mode on the real kernel: two `netpath agent`s on loopback, each confined to the
//! namespaces of its "node" of a topology built by hand (client and router on node A, server
//! on node B). Traces through them give the local verdicts with events from both agents;
//! mutual TLS refuses clients without a certificate, from another CA, or expired; a slow
//! client gets counted losses while the agent's memory stays bounded; an agent killed
//! mid-trace is named in the output.
use std::{path::Path, sync::Mutex, time::Duration};

use integration_tests::{
    agents::{certs_for_two, TestAgent, Topology},
    case, exits_within, netpath, tc_programs, NameServer, NetNsGuard, NetpathProcess, Requires,
    ResolvConfGuard,
};
use netpath_agent::{
    certs::{Ca, Validity},
    client::{channel, describe, AgentAddr, AgentsResolver, RemoteWorld},
    proto::{self, agent_client::AgentClient, stream_message::Item},
    server::TlsFiles,
};
use serde_json::Value;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            traces_through_two_agents_give_the_local_verdicts_with_events_from_both,
            Requires::Root
        ),
        case!(
            names_are_looked_up_by_the_source_nodes_agent,
            Requires::Root
        ),
        case!(
            addresses_this_machine_cannot_place_resolve_through_the_agent_that_holds_them,
            Requires::Root,
            Requires::Tool("unshare")
        ),
        case!(
            agents_refuse_clients_without_a_certificate_of_their_ca_or_with_an_expired_one,
            Requires::Root
        ),
        case!(
            a_slow_client_gets_counted_losses_and_the_agent_stays_small,
            Requires::Root
        ),
        case!(
            an_agent_killed_mid_trace_is_named_and_the_trace_goes_on,
            Requires::Root
        ),
        case!(
            an_agent_stopped_with_a_stream_open_ends_it_and_detaches,
            Requires::Root
        ),
    ])
}

/// One test at a time: each starts agents that load kernel programs.
static SLOTS: Mutex<()> = Mutex::new(());

/// Certificates (`netpath certs`) and two agents: A confined to c and r, B to s.
struct Cluster {
    tls: tempfile::TempDir,
    state: tempfile::TempDir,
    a: TestAgent,
    b: TestAgent,
}

/// Agents here are named by node for the client's [`AgentAddr`].
fn at(agent: &TestAgent) -> AgentAddr {
    AgentAddr::new(&agent.node, &agent.addr)
}

impl Cluster {
    fn start(t: &Topology, extra_a: &[&str]) -> Cluster {
        let tls = tempfile::tempdir().unwrap();
        certs_for_two(tls.path());
        let a = TestAgent::start("node-a", tls.path(), &[&t.c.name, &t.r.name], extra_a);
        let b = TestAgent::start("node-b", tls.path(), &[&t.s.name], &[]);
        Cluster {
            tls,
            state: tempfile::tempdir().unwrap(),
            a,
            b,
        }
    }

    fn agents_arg(&self) -> String {
        format!("node-a={},node-b={}", self.a.addr, self.b.addr)
    }
}

/// `netpath trace ARGS --json` (with an empty lab state); returns (exit code, report, stderr).
fn trace(state: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["trace", "--json", "--state", state.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = netpath(&all);
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("netpath {all:?} (exit {code}) printed no JSON ({e}): {stdout}\n{stderr}")
    });
    (code, report, stderr)
}

/// (family, verdict, cause) of every family.
fn verdicts(report: &Value) -> Vec<(String, String, String)> {
    report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["family"].as_str().unwrap_or_default().to_string(),
                v["verdict"].as_str().unwrap_or_default().to_string(),
                v["cause"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Nodes the hops of every family's request and reply were seen on.
fn hop_nodes(report: &Value) -> std::collections::BTreeSet<String> {
    report["verdicts"]
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
        .collect()
}

fn traces_through_two_agents_give_the_local_verdicts_with_events_from_both() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ag");
    let cluster = Cluster::start(&t, &[]);
    let from = format!("netns:{}", t.c.name);
    let to = format!("netns:{}", t.s.name);
    let tls = cluster.tls.path().to_str().unwrap().to_string();
    let agents = cluster.agents_arg();
    let remote = [
        from.as_str(),
        to.as_str(),
        "--agents",
        &agents,
        "--tls-dir",
        &tls,
    ];
    let state = cluster.state.path();

    // Healthy: both families delivered, locally and through the agents.
    let (code_local, local, _) = trace(state, &[&from, &to]);
    let (code_remote, report, stderr) = trace(state, &remote);
    assert_eq!(code_local, 0, "local: {local:#}");
    assert_eq!(code_remote, 0, "through agents: {report:#}\n{stderr}");
    assert_eq!(verdicts(&report), verdicts(&local));
    let nodes = hop_nodes(&report);
    assert!(
        nodes.contains("node-a") && nodes.contains("node-b"),
        "hops should come from both agents, got {nodes:?}: {report:#}"
    );
    eprintln!(
        "healthy: local {} ms, through agents {} ms",
        local["elapsed_ms"], report["elapsed_ms"]
    );

    // IPv6 forwarding off on the router (node A): IPv4 delivered, IPv6 dropped there.
    t.r.exec("sysctl -qw net.ipv6.conf.all.forwarding=0");
    let (code_local, local, _) = trace(state, &[&from, &to]);
    let (code_remote, report, stderr) = trace(state, &remote);
    assert_eq!((code_local, code_remote), (1, 1), "{report:#}\n{stderr}");
    let v = verdicts(&report);
    assert_eq!(v, verdicts(&local), "{report:#}\n{local:#}");
    assert_eq!(v[0].1, "delivered", "{report:#}");
    assert_ne!(v[1].1, "delivered", "{report:#}");
    let at = report["verdicts"][1]["where"].clone();
    assert_eq!(at["node"], "node-a", "{report:#}");
    assert_eq!(at["netns"], t.r.name.as_str(), "{report:#}");
}

/// `netpath trace ARGS --json` as from a machine that sees none of the namespaces: in a mount
/// namespace of its own where /run/netns is empty (what the CLI sees of another node's pods).
fn trace_from_elsewhere(state: &Path, args: &[&str]) -> (i32, Value, String) {
    let bin = integration_tests::netpath_bin();
    let out = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs netpath-test /run/netns && exec \"$0\" \"$@\"",
        ])
        .arg(&bin)
        .args(["trace", "--json", "--state", state.to_str().unwrap()])
        .args(args)
        .output()
        .expect("spawn unshare");
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("netpath trace {args:?} (exit {code}) printed no JSON ({e}): {stdout}\n{stderr}")
    });
    (code, report, stderr)
}

/// A resolver for a machine that knows no namespace: addresses are bare, names unknown.
struct Nowhere;

/// (node, netns) of an endpoint, or the error resolving it.
type Placed = Result<(Option<String>, Option<String>), String>;

/// (node, netns) of each spec as the agents resolve it for a machine that knows nothing.
fn resolve_through(agents: &[AgentAddr], tls: &TlsFiles, specs: &[&str]) -> Vec<Placed> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(resolve_through_async(agents, tls, specs))
}

async fn resolve_through_async(
    agents: &[AgentAddr],
    tls: &TlsFiles,
    specs: &[&str],
) -> Vec<Placed> {
    use netpath_core::world::Resolver;
    let world = RemoteWorld::connect(agents, tls).await.unwrap();
    let local = tracer::node::resolve::LocalResolver::new(None);
    let r = AgentsResolver::new(&Nowhere, &world);
    let mut out = Vec::new();
    for spec in specs {
        // What this (shared-kernel) machine would say itself: the address is in a named
        // namespace, without a node.
        if let Ok(e) = local.lookup(spec) {
            assert_eq!(e.node, None, "{spec}: {e:?}");
        }
        out.push(
            r.resolve(spec)
                .await
                .map(|e| (e.node, e.netns))
                .map_err(|e| e.to_string()),
        );
    }
    out
}

#[async_trait::async_trait]
impl netpath_core::world::Resolver for Nowhere {
    async fn resolve(
        &self,
        spec: &str,
    ) -> Result<netpath_core::model::Endpoint, netpath_core::world::ResolveError> {
        use netpath_core::model::{Endpoint, EndpointKind};
        match spec.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(Endpoint::new(spec, EndpointKind::Address).with_addrs([ip])),
            Err(_) => Err(netpath_core::world::ResolveError::Unknown {
                spec: spec.into(),
                known: "nothing".into(),
            }),
        }
    }
}

fn addresses_this_machine_cannot_place_resolve_through_the_agent_that_holds_them() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ag");
    let cluster = Cluster::start(&t, &[]);
    let tls = cluster.tls.path().to_str().unwrap().to_string();
    let agents = cluster.agents_arg();
    let state = cluster.state.path();

    // Each agent answers for its own namespaces only, though both see the whole kernel.
    let c_ns = format!("netns:{}", t.c.name);
    let s_ns = format!("netns:{}", t.s.name);
    let specs = [
        "10.1.0.1",
        "ip:10.1.0.2",
        "fd00:2::2",
        "[fd00:1::1]:80",
        &s_ns,
        &c_ns,
        "10.77.77.77",
    ];
    let answers = resolve_through(
        &[at(&cluster.a), at(&cluster.b)],
        &tls_files(cluster.tls.path(), "client"),
        &specs,
    );
    let some = |node: &str, ns: &NetNsGuard| Ok((Some(node.to_string()), Some(ns.name.clone())));
    assert_eq!(
        answers,
        vec![
            some("node-a", &t.c),
            some("node-a", &t.r),
            some("node-b", &t.s),
            some("node-a", &t.c),
            some("node-b", &t.s),
            some("node-a", &t.c),
            // Nobody's: the bare address, as without agents.
            Ok((None, None)),
        ],
        "{specs:?}"
    );

    // The CLI sees no namespace at all: both ends are found by their node's agent, and the
    // trace gives what the local one gives.
    let (code_local, local, _) = trace(state, &[&c_ns, &s_ns]);
    let (code, report, stderr) = trace_from_elsewhere(
        state,
        &[
            "10.1.0.1",
            "10.2.0.2",
            "--agents",
            &agents,
            "--tls-dir",
            &tls,
        ],
    );
    assert_eq!((code_local, code), (0, 0), "{report:#}\n{stderr}");
    assert_eq!(verdicts(&report), verdicts(&local), "{report:#}");
    assert_eq!(
        (&report["from"]["node"], &report["from"]["netns"]),
        (&Value::from("node-a"), &Value::from(t.c.name.as_str())),
        "{report:#}"
    );
    assert_eq!(
        (&report["to"]["node"], &report["to"]["netns"]),
        (&Value::from("node-b"), &Value::from(t.s.name.as_str())),
        "{report:#}"
    );
    // Dual-stack: an IPv4 address names the namespace, both families are traced.
    assert_eq!(
        report["verdicts"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    // Without agents the same CLI cannot place the source.
    let (code, report, _) = trace_from_elsewhere(state, &["10.1.0.1", "10.2.0.2"]);
    assert_eq!(code, 2, "{report:#}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("not in a network namespace here")),
        "{report:#}"
    );
}

fn tls_files(dir: &Path, name: &str) -> TlsFiles {
    TlsFiles::load(dir, name).unwrap()
}

/// `Info` with `tls`: Ok(node name) or the refusal as text.
async fn info(at: &AgentAddr, tls: &TlsFiles) -> Result<String, String> {
    let mut client = AgentClient::new(channel(at, tls).map_err(|e| e.to_string())?);
    client
        .info(proto::InfoRequest {})
        .await
        .map(|r| r.into_inner().node)
        .map_err(|s| describe(&s))
}

fn agents_refuse_clients_without_a_certificate_of_their_ca_or_with_an_expired_one() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ag");
    let cluster = Cluster::start(&t, &[]);
    let dir = cluster.tls.path();
    let at = at(&cluster.a);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The right client certificate: answered.
    let good = tls_files(dir, "client");
    assert_eq!(rt.block_on(info(&at, &good)), Ok("node-a".to_string()));

    // No client certificate.
    let none = TlsFiles {
        cert_pem: String::new(),
        key_pem: String::new(),
        ..good.clone()
    };
    let refused = rt.block_on(info(&at, &none));
    assert!(refused.is_err(), "answered without a client certificate");
    eprintln!("no certificate: {}", refused.unwrap_err());

    // A client certificate from another CA (trusting the right CA for the server).
    let other = tempfile::tempdir().unwrap();
    certs_for_two(other.path());
    let foreign = TlsFiles {
        ca_pem: good.ca_pem.clone(),
        ..tls_files(other.path(), "client")
    };
    let refused = rt.block_on(info(&at, &foreign));
    assert!(refused.is_err(), "answered a certificate from another CA");
    eprintln!("other CA: {}", refused.unwrap_err());

    // An expired certificate from the right CA.
    let now = time::OffsetDateTime::now_utc();
    let expired = Ca::load(dir)
        .unwrap()
        .client(
            "netpath-cli",
            Validity {
                not_before: now - time::Duration::days(10),
                not_after: now - time::Duration::days(1),
            },
        )
        .unwrap();
    let expired = TlsFiles {
        cert_pem: expired.cert_pem,
        key_pem: expired.key_pem,
        ..good.clone()
    };
    let refused = rt.block_on(info(&at, &expired));
    assert!(refused.is_err(), "answered an expired certificate");
    eprintln!("expired: {}", refused.unwrap_err());

    // And the agent still serves the right client afterwards.
    assert_eq!(rt.block_on(info(&at, &good)), Ok("node-a".to_string()));
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn a_slow_client_gets_counted_losses_and_the_agent_stays_small() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ag");
    let cluster = Cluster::start(&t, &["--client-queue", "4"]);
    let at = at(&cluster.a);
    let pid = cluster.a.process.child.id();
    let tls = tls_files(cluster.tls.path(), "client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rss_before = rss_kib(pid);
    let (events, lost, dropped, rss_opened, rss_during) = rt.block_on(async {
        let mut client = AgentClient::new(channel(&at, &tls).unwrap());
        let req = proto::OpenStreamRequest {
            places: vec![proto::Place {
                node: String::new(),
                netns: t.c.name.clone(),
            }],
            addrs: vec!["10.1.0.1".into(), "fd00:1::1".into()],
            drops: true,
            routes: false,
            ring_bytes: 1 << 22,
            functions: String::new(),
            non_ip: false,
        };
        let mut stream = client.open_stream(req).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(
            matches!(first.item, Some(Item::Opened(ref o)) if o.devices > 0),
            "{first:?}"
        );
        let rss_opened = rss_kib(pid);
        // Traffic while the client reads nothing: ~4 events per packet on c and r.
        t.c.exec("ping -f -c 20000 -s 200 -W 1 10.2.0.2 >/dev/null 2>&1 || true");
        let rss_during = rss_kib(pid);
        let (mut events, mut lost) = (0u64, 0u64);
        loop {
            let m = match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => panic!("the stream ended"),
                Ok(Err(status)) => panic!("the stream broke: {}", describe(&status)),
                Err(_) => break, // drained
            };
            match m.item {
                Some(Item::Events(b)) => events += b.events_json.len() as u64,
                Some(Item::Lost(l)) => lost += l.count,
                _ => {}
            }
        }
        let info = client
            .info(proto::InfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let dropped = info.health.unwrap().dropped_for_clients;
        (events, lost, dropped, rss_opened, rss_during)
    });
    let rss_after = rss_kib(pid);
    eprintln!(
        "slow client: {events} events delivered, {lost} reported lost ({dropped} dropped for \
         clients); agent RSS {rss_before} KiB idle, {rss_opened} with the stream open (kernel programs \
         loaded), {rss_during} after the flood, {rss_after} after reading"
    );
    // Where the events were lost depends on who was slowest (the client, the agent's encoding
    // or the kernel reader): every loss is told to the client, whoever counted it.
    assert!(lost > 0, "no loss reported to a client that did not read");
    assert!(
        dropped <= lost,
        "the agent dropped {dropped} events for clients but told this one of {lost}"
    );
    assert!(events > 0, "nothing delivered once the client read");
    // Bounded queues all the way: the client's (4 messages here), the stream's in the agent
    // and the kernel reader's (8 ring-buffer drains). 17-20 MiB for this flood on a debug
    // build (docs/benchmarks.md, Agent).
    let growth = rss_during.max(rss_after).saturating_sub(rss_opened);
    assert!(growth < 64 * 1024, "agent RSS grew by {growth} KiB");
}

fn an_agent_killed_mid_trace_is_named_and_the_trace_goes_on() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ag");
    let mut cluster = Cluster::start(&t, &[]);
    let from = format!("netns:{}", t.c.name);
    let to = format!("netns:{}", t.s.name);
    let tls = cluster.tls.path().to_str().unwrap().to_string();
    let agents = cluster.agents_arg();
    let state = cluster.state.path().to_str().unwrap().to_string();
    let mut trace = NetpathProcess::spawn(&[
        "trace",
        &from,
        &to,
        "--passive",
        "--timeout",
        "4",
        "--agents",
        &agents,
        "--tls-dir",
        &tls,
        "--state",
        &state,
    ]);
    trace.wait_stderr("tracing", Duration::from_secs(30));
    t.c.exec("ping -c 2 -i 0.2 10.2.0.2 >/dev/null 2>&1 || true");
    // SIGKILL: no goodbye from the agent.
    cluster.b.process.child.kill().unwrap();
    let _ = cluster.b.process.child.wait();
    let (code, out, stderr) = trace.finish_with_stderr();
    let all = format!("{out}\n{}", stderr.join("\n"));
    eprintln!("{all}");
    assert!(
        matches!(code, Some(0 | 1)),
        "trace failed (exit {code:?}): {all}"
    );
    assert!(
        out.contains("evidence missing") && out.contains("node-b"),
        "the dead agent is not named in the output: {all}"
    );
    assert!(
        out.contains("IPv4") || out.contains("ipv4"),
        "no verdict printed: {all}"
    );
}

/// A DNS name as TO is looked up by the source node's agent, inside the source namespace with
/// its resolver settings (the CLI's machine need not resolve it): both families traced, the
/// answer in the evidence; a name nobody knows is one line with the server's answer.
fn names_are_looked_up_by_the_source_nodes_agent() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ag");
    // Addresses no other test's namespaces hold (an address resolves to the first holder).
    t.s.exec("ip addr add 10.77.3.53/24 dev vd && ip addr add fd77:3::53/64 dev vd nodad");
    t.r.exec("ip route add 10.77.3.0/24 via 10.2.0.2 && ip -6 route add fd77:3::/64 via fd00:2::2");
    let _dns = NameServer::start(&t.s, "10.2.0.2", "10.77.3.53", "fd77:3::53");
    let _conf = ResolvConfGuard::new(&t.c, "search np.test\nnameserver 10.2.0.2\n");
    let cluster = Cluster::start(&t, &[]);
    let from = format!("netns:{}", t.c.name);
    let tls = cluster.tls.path().to_str().unwrap().to_string();
    let agents = cluster.agents_arg();
    let state = cluster.state.path();
    let (code, report, stderr) = trace(
        state,
        &[
            &from,
            "both.np.test",
            "--agents",
            &agents,
            "--tls-dir",
            &tls,
        ],
    );
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    for v in report["verdicts"].as_array().unwrap() {
        assert_eq!(v["verdict"], "delivered", "{v:#}");
        assert!(
            v["evidence"].to_string().contains("dns: both.np.test"),
            "{v:#}"
        );
    }
    let nodes = hop_nodes(&report);
    assert!(nodes.contains("node-b"), "{nodes:?}");
    let out = netpath(&[
        "trace",
        &from,
        "nosuch.np.test",
        "--agents",
        &agents,
        "--tls-dir",
        &tls,
        "--state",
        state.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("NXDOMAIN"), "{err}");
}

/// SIGTERM to an agent while a client reads its stream (a DaemonSet pod being stopped): the
/// stream ends with the agent's word, the agent exits 0 within seconds (the server's graceful
/// shutdown does not wait for a client that never leaves), its programs are detached, and the
/// client ends by itself.
fn an_agent_stopped_with_a_stream_open_ends_it_and_detaches() {
    let _slot = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let t = Topology::new("ag");
    let mut cluster = Cluster::start(&t, &[]);
    assert!(tc_programs(&t.s.name, "vd") > 0, "node-b's agent attached");
    let tls = cluster.tls.path().to_str().unwrap().to_string();
    let mut watch = NetpathProcess::spawn(&[
        "watch",
        "--json",
        "--agents",
        &format!("node-b={}", cluster.b.addr),
        "--tls-dir",
        &tls,
    ]);
    watch.wait_stderr("watching", Duration::from_secs(30));
    cluster.b.process.signal(libc::SIGTERM);
    let code = exits_within(&mut cluster.b.process, Duration::from_secs(10), "the agent");
    assert_eq!(code, Some(0), "{:?}", cluster.b.process.stderr_so_far());
    assert_eq!(tc_programs(&t.s.name, "vd"), 0, "programs left on vd");
    let code = exits_within(&mut watch, Duration::from_secs(15), "watch --agents");
    let stderr = watch.stderr_so_far().join("\n");
    eprintln!("watch ended ({code:?}): {stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    // Its only agent gone, nothing more can come: said, and not a success.
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no more events can come"), "{stderr}");
}
