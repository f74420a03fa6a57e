//! Pod churn: namespaces created and deleted one after another, as pods come and go on a
//! node. The kernel reuses a deleted namespace's inode (and its devices' ifindexes) for the
//! next one, so names cached by (inode, ifindex) went stale: the next pod's devices showed the
//! previous pod's names, forever. Here each of 50 pod-like namespaces (a veth to a node
//! namespace, traffic across it) must be named by its own name and its own device's name,
//! and the name cache must stay as big as the live set.
use std::time::{Duration, Instant};

use integration_tests::*;
use tracer::node::{btf::DropReasons, decode::Namer, names::LiveNamer, netns};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![case!(
        names_follow_fifty_pods_that_reuse_inodes,
        Requires::Root
    )])
}

const PODS: usize = 50;

fn names_follow_fifty_pods_that_reuse_inodes() {
    let stem = unique("npch");
    let node = NetNsGuard::new(&format!("{stem}node"));
    let mut namer = LiveNamer::new(DropReasons::default());
    let mut inodes = std::collections::HashSet::new();
    let mut reused = 0;
    let mut wrong = Vec::new();
    let mut held = 0;
    let started = Instant::now();
    for i in 0..PODS {
        let pod = NetNsGuard::new(&format!("{stem}p{i}"));
        // Each pod's device has its own name; the node side too.
        let (dev, host) = (format!("eth{i}"), format!("vh{i}"));
        sh(&format!(
            "ip link add {dev} netns {} type veth peer name {host} netns {}",
            pod.name, node.name
        ));
        pod.exec(&format!(
            "ip addr add 10.77.{i}.2/24 dev {dev} && ip link set {dev} up"
        ));
        node.exec(&format!(
            "ip addr add 10.77.{i}.1/24 dev {host} && ip link set {host} up"
        ));
        pod.exec(&format!("ping -c1 -W1 10.77.{i}.1 >/dev/null || true"));
        let ns = netns::by_name(&pod.name).unwrap();
        let ifindex: u32 = pod
            .exec(&format!("cat /sys/class/net/{dev}/ifindex"))
            .trim()
            .parse()
            .unwrap();
        if !inodes.insert(ns.inode) {
            reused += 1;
        }
        // What a watch decoding this pod's events would print. A pod lives at least the
        // namer's staleness bound (1 s) before its first event is named here, as a pod's
        // first packet comes after its sandbox is set up.
        let deadline = Instant::now() + Duration::from_millis(1100);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (got_ns, got_dev) = (namer.netns_name(ns.inode), namer.ifname(ns.inode, ifindex));
        if got_ns != pod.name || got_dev != dev {
            wrong.push(format!(
                "pod {i}: {got_ns}/{got_dev}, not {}/{dev} (inode {}, ifindex {ifindex})",
                pod.name, ns.inode
            ));
        }
        held = held.max(namer.cached_namespaces());
        drop(pod);
    }
    println!(
        "{PODS} pods in {:.1} s: {reused} reused an earlier pod's inode, {} named wrong, \
         device names of at most {held} namespaces held",
        started.elapsed().as_secs_f64(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The node and the live pod (and at most one gone pod not yet noticed).
    assert!(held <= 3, "device names of up to {held} namespaces held");
    assert!(
        reused > 0,
        "no inode was reused: this test did not exercise the churn it is about"
    );
}
