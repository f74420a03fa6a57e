//! A pod's network namespace found by its address (tracer::node::podns), without a container
//! runtime: in namespaces made here, named or only held by a process, with `ip` (root).
use std::{
    net::IpAddr,
    process::{Child, Command},
    time::{Duration, Instant},
};

use integration_tests::{case, sh, unique, NetNsGuard, Requires};
use netpath_k8s::client::NetnsLocator;
use tracer::node::{
    netns::{self, NetnsRef},
    podns,
};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            a_named_namespace_is_found_by_its_address,
            Requires::Root,
            Requires::Tool("ip")
        ),
        case!(
            a_namespace_held_only_by_a_process_is_found,
            Requires::Root,
            Requires::Tool("ip")
        ),
    ])
}

/// A namespace with a pod-like device (a veth: no dummy module on every kernel) holding one address of each family (unique per test).
fn pod_ns(prefix: &str, octet: u8) -> (NetNsGuard, IpAddr, IpAddr) {
    let ns = NetNsGuard::new(&unique(prefix));
    let n = std::process::id() % 200 + 20;
    let (v4, v6) = (
        format!("10.{n}.{octet}.2"),
        format!("fd00:{n:x}:{octet:x}::2"),
    );
    ns.exec(&format!(
        "ip link add eth0 type veth peer name peer0 && ip link set eth0 up && ip addr add {v4}/24 dev eth0 && \
         ip addr add {v6}/64 dev eth0 nodad"
    ));
    (ns, v4.parse().unwrap(), v6.parse().unwrap())
}

struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn a_named_namespace_is_found_by_its_address() {
    let (ns, v4, v6) = pod_ns("nppod", 1);
    let (_other, other_v4, _) = pod_ns("nppod", 2);
    assert_eq!(podns::holding(&[v4]).as_deref(), Some(ns.name.as_str()));
    assert_eq!(podns::holding(&[v6]).as_deref(), Some(ns.name.as_str()));
    // The first address someone holds decides.
    let nobody: IpAddr = "10.255.254.253".parse().unwrap();
    assert_eq!(
        podns::holding(&[nobody, v6]).as_deref(),
        Some(ns.name.as_str())
    );
    assert_eq!(podns::holding(&[nobody]), None);
    assert_eq!(podns::holding(&["127.0.0.1".parse().unwrap()]), None);
    // `ip:ADDR` is a namespace name the whole node side accepts (an agent asked about a pod).
    let r = NetnsRef::parse(&format!("ip:{v4}")).unwrap();
    assert_eq!(r, NetnsRef::Named(ns.name.clone()));
    assert_eq!(
        netns::by_name(&format!("ip:{v6}")).unwrap().inode,
        NetnsRef::Named(ns.name.clone()).inode().unwrap()
    );
    let err = NetnsRef::parse(&format!("ip:{nobody}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");
    assert!(NetnsRef::parse("ip:not-an-address").is_err());
    // The locator the Kubernetes resolver uses reads every namespace once.
    let locator = podns::LocalNetnsLocator::new();
    assert_eq!(locator.locate(&[v4]).as_deref(), Some(ns.name.as_str()));
    assert_eq!(
        locator.locate(&[other_v4]).as_deref(),
        Some(_other.name.as_str())
    );
    assert_eq!(locator.locate(&[nobody]), None);
}

fn a_namespace_held_only_by_a_process_is_found() {
    let (ns, v4, _) = pod_ns("nppid", 3);
    let holder = Holder(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "sleep", "60"])
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = holder.0.id();
    let inode = NetnsRef::Named(ns.name.clone()).inode().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while NetnsRef::pid(pid).inode().ok() != Some(inode) {
        assert!(Instant::now() < deadline, "sleep never entered {}", ns.name);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The name goes (as when a runtime holds a pod's namespace only through its pause
    // process); the namespace lives on in the process.
    sh(&format!("ip netns del {}", ns.name));
    let found = podns::holding(&[v4]).expect("found through /proc");
    assert!(found.starts_with("pid:"), "{found}");
    assert_eq!(NetnsRef::parse(&found).unwrap().inode().unwrap(), inode);
    assert_eq!(
        NetnsRef::parse(&format!("ip:{v4}"))
            .unwrap()
            .inode()
            .unwrap(),
        inode
    );
    drop(holder);
}
