//! Pod churn: namespaces created and deleted one after another, as pods come and go on a
//! node. The kernel reuses a deleted namespace's inode (and its devices' ifindexes) for the
//! next one, so names cached by (inode, ifindex) went stale: the next pod's devices showed the
//! previous pod's names, forever. Here each of 50 pod-like namespaces (a veth to a node
//! namespace, traffic across it) must be named by its own name and its own device's name,
//! and the name cache must stay as big as the live set.
use std::{
    io::BufRead,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use integration_tests::*;
use tracer::node::{btf::DropReasons, decode::Namer, names::LiveNamer, netns};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(names_follow_fifty_pods_that_reuse_inodes, Requires::Root),
        case!(watch_all_sees_every_new_pod_by_its_names, Requires::Root),
    ])
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

/// A pod-like namespace: a veth `eth{i}` to the node namespace (`vh{i}` there), 10.77.i.0/24.
fn pod(stem: &str, node: &NetNsGuard, i: usize) -> (NetNsGuard, String) {
    let pod = NetNsGuard::new(&format!("{stem}p{i}"));
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
    (pod, dev)
}

/// `watch --all` running while 50 pods come and go, most reusing an earlier pod's inode and
/// ifindexes: each pod's pings are seen on its own device, named by its own names (they were
/// never seen: the tracer took the new pod's devices for the old pod's, already attached).
fn watch_all_sees_every_new_pod_by_its_names() {
    let stem = unique("npcw");
    let node = NetNsGuard::new(&format!("{stem}node"));
    let mut watch = Command::new(netpath_bin())
        .args(["watch", "--all", "--json", "--no-drops", "--proto", "icmp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn netpath");
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
    let watch = Kill(watch);
    let mut inodes = std::collections::HashSet::new();
    let (mut reused, mut missed, mut slowest) = (0, Vec::new(), Duration::ZERO);
    for i in 0..PODS {
        let (pod, dev) = pod(&stem, &node, i);
        if !inodes.insert(netns::by_name(&pod.name).unwrap().inode) {
            reused += 1;
        }
        // Pings until watch reports one on the pod's device (new devices are attached at its
        // next rescan, within a second or two).
        let start = Instant::now();
        let mut seen = false;
        while !seen && start.elapsed() < Duration::from_secs(15) {
            pod.exec(&format!("ping -c1 -W1 10.77.{i}.1 >/dev/null || true"));
            let until = Instant::now() + Duration::from_millis(300);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                let Ok(ev) = rx.recv_timeout(left) else { break };
                if ev["netns"] == pod.name.as_str() && ev["ifname"] == dev.as_str() {
                    seen = true;
                    break;
                }
            }
        }
        slowest = slowest.max(start.elapsed());
        if !seen {
            missed.push(format!("{}/{dev}", pod.name));
        }
        drop(pod);
    }
    drop(watch);
    println!(
        "{PODS} pods under watch --all: {reused} reused an earlier pod's inode, {} never seen \
         by their names, slowest first sight {:.1} s",
        missed.len(),
        slowest.as_secs_f64()
    );
    assert!(missed.is_empty(), "{missed:#?}");
    assert!(
        reused > 0,
        "no inode was reused: this test did not exercise churn"
    );
}
