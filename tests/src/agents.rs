//! Two `netpath agent`s on loopback over a small routed topology, shared by the agent tests
//! (tests/agent.rs, tests/capture_agents.rs).
use std::{path::Path, time::Duration};

use crate::{netpath, sh, unique, wait_reachable, NetNsGuard, NetpathProcess};

/// client (c) -- router (r) -- server (s): c 10.1.0.1 fd00:1::1, r 10.1.0.2 fd00:1::2 and
/// 10.2.0.1 fd00:2::1, s 10.2.0.2 fd00:2::2; r forwards. Node A holds c and r, node B s.
pub struct Topology {
    pub c: NetNsGuard,
    pub r: NetNsGuard,
    pub s: NetNsGuard,
}

impl Topology {
    /// The namespaces are named `PREFIX{c,r,s}…`, removed when the topology is dropped.
    pub fn new(prefix: &str) -> Topology {
        let c = NetNsGuard::new(&unique(&format!("{prefix}c")));
        let r = NetNsGuard::new(&unique(&format!("{prefix}r")));
        let s = NetNsGuard::new(&unique(&format!("{prefix}s")));
        sh(&format!(
            "ip link add va netns {} type veth peer name vb netns {}",
            c.name, r.name
        ));
        sh(&format!(
            "ip link add vc netns {} type veth peer name vd netns {}",
            r.name, s.name
        ));
        for (ns, dev, v4, v6) in [
            (&c, "va", "10.1.0.1/24", "fd00:1::1/64"),
            (&r, "vb", "10.1.0.2/24", "fd00:1::2/64"),
            (&r, "vc", "10.2.0.1/24", "fd00:2::1/64"),
            (&s, "vd", "10.2.0.2/24", "fd00:2::2/64"),
        ] {
            ns.exec(&format!(
                "ip addr add {v4} dev {dev} && ip addr add {v6} dev {dev} nodad && ip link set {dev} up"
            ));
        }
        r.exec("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
        c.exec("ip route add default via 10.1.0.2 && ip -6 route add default via fd00:1::2");
        s.exec("ip route add default via 10.2.0.1 && ip -6 route add default via fd00:2::1");
        wait_reachable(&c, "10.2.0.2");
        wait_reachable(&c, "fd00:2::2");
        Topology { c, r, s }
    }
}

/// A `netpath agent` confined to some namespaces, on a free loopback port; killed by its
/// process guard when dropped.
pub struct TestAgent {
    pub node: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub process: NetpathProcess,
}

impl TestAgent {
    pub fn start(node: &str, tls: &Path, scope: &[&str], extra: &[&str]) -> TestAgent {
        let scope = scope.join(",");
        let mut args = vec![
            "agent",
            "--node",
            node,
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            tls.to_str().unwrap(),
            "--netns-scope",
            &scope,
        ];
        args.extend_from_slice(extra);
        let mut process = NetpathProcess::spawn(&args);
        process.wait_stderr("listening on", Duration::from_secs(30));
        let line = process.stderr_seen.last().unwrap().clone();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        TestAgent {
            node: node.into(),
            addr,
            process,
        }
    }
}

/// `netpath certs` for node-a and node-b on 127.0.0.1, into `dir`.
pub fn certs_for_two(dir: &Path) {
    let out = netpath(&[
        "certs",
        "--out",
        dir.to_str().unwrap(),
        "--nodes",
        "node-a=127.0.0.1,node-b=127.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "netpath certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
