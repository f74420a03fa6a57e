//! Real-kernel lab tests: bring every scenario up, check its documented connectivity with ping
//! and TCP connects in both families, and bring it down with nothing left.
//!
//! Labs are serialised (the up/down timings are meaningful only on an idle machine) and each
//! uses its own namespace prefix and state directory, so they never meet other tests' names.
use std::{
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use integration_tests::{case, sh, unique, NetNsGuard, Requires};
use netpath_core::model::EndpointKind;
use tracer::{
    lab::{self, Expectation, Family, LabOptions, LabState, Outcome},
    node::resolve::LocalResolver,
};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            flannel,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            calico,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            calico_bgp,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            kube_router,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            kube_router_v6_onlink,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            calico_v6_withdrawn,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            flannel_v6_missing,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            k0s_service_family,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(
            vcluster_service_flip_alternates_between_runs,
            Requires::Root,
            Requires::Tool("socat"),
            Requires::Tool("nc")
        ),
        case!(down_cleans_up_after_a_half_failed_up, Requires::Root),
        case!(
            up_refuses_a_second_lab_and_foreign_namespaces,
            Requires::Root
        ),
        case!(
            resolver_reads_namespaces_the_lab_did_not_make,
            Requires::Root
        ),
        case!(a_scenario_typo_leaves_the_running_lab_alone, Requires::Root),
        case!(down_removes_only_namespaces_the_lab_made, Requires::Root),
        case!(
            the_state_is_never_written_through_a_planted_symlink,
            Requires::Root
        ),
    ])
}

static SERIAL: Mutex<()> = Mutex::new(());
const UP_LIMIT: Duration = Duration::from_secs(3);
const DOWN_LIMIT: Duration = Duration::from_secs(2);

/// A lab that is always brought down (listeners killed first), also when the test panics.
struct Lab {
    opts: LabOptions,
    state: LabState,
    listeners: Vec<Child>,
}

/// Options with a fresh prefix and state directory; the directory goes when the guard drops
/// (it outlives single labs: the flip scenario's run counter lives there).
struct Scratch(LabOptions);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0.state_dir);
    }
}

fn options() -> Scratch {
    let prefix = unique("nt");
    // A new directory of a random name (not a guessable /tmp path); Scratch removes it.
    let dir = tempfile::Builder::new()
        .prefix(&format!("netpath-lab-{prefix}."))
        .tempdir()
        .expect("temp dir")
        .keep();
    Scratch(LabOptions {
        state_dir: dir,
        prefix,
    })
}

impl Lab {
    fn up(opts: &LabOptions, scenario: &str) -> Lab {
        let report = lab::up(opts, scenario, 2);
        // Guard before asserting, so even a failed `up` is cleaned.
        let guard = Lab {
            opts: opts.clone(),
            state: lab::status(opts)
                .ok()
                .flatten()
                .map(|s| s.state)
                .unwrap_or_else(|| panic!("{report:?}")),
            listeners: Vec::new(),
        };
        let report = report.unwrap_or_else(|e| panic!("lab up {scenario}: {e}"));
        eprintln!("{scenario}: lab up {:.3} s", report.elapsed.as_secs_f64());
        assert!(
            report.elapsed < UP_LIMIT,
            "{scenario}: lab up took {:?}",
            report.elapsed
        );
        guard
    }

    /// Starts a dual-stack TCP listener on `port` in `netns`, and waits until it listens.
    fn listen(&mut self, netns: &str, port: u16) {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "socat"])
            .arg(format!("TCP6-LISTEN:{port},ipv6only=0,reuseaddr,fork"))
            .arg("EXEC:true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat");
        self.listeners.push(child);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !sh(&format!("ip netns exec {netns} ss -Hltn sport = :{port}"))
            .contains(&format!(":{port}"))
        {
            assert!(
                Instant::now() < deadline,
                "listener in {netns} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn listen_on_pods(&mut self) {
        let pods: Vec<String> = self.state.pods.iter().map(|p| p.netns.clone()).collect();
        for ns in pods {
            self.listen(&ns, lab::topology::POD_PORT);
        }
    }

    fn resolver(&self) -> LocalResolver {
        LocalResolver::new(Some(self.state.clone()))
    }

    /// Sends one probe (TCP connect when the target has a port, else ping); true if answered.
    fn probe(&self, from: &str, to: &str, family: Family) -> bool {
        let r = self.resolver();
        let src = r.lookup(from).unwrap_or_else(|e| panic!("{e}"));
        let dst = r.lookup(to).unwrap_or_else(|e| panic!("{e}"));
        let ns = src.netns.expect("source has a namespace");
        let addr = dst
            .addr(family)
            .unwrap_or_else(|| panic!("{to} has no {family} address"));
        let cmd = match dst.port {
            Some(port) => format!("ip netns exec {ns} nc -z -w1 {addr} {port}"),
            None => format!("ip netns exec {ns} ping -c1 -W1 {addr}"),
        };
        Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .expect("spawn probe")
            .status
            .success()
    }

    /// Checks one expectation; Service flows are tried several times so that every endpoint
    /// the random DNAT can pick is exercised.
    fn check(&self, e: &Expectation) -> Result<(), String> {
        let tries = if e.to.starts_with("svc/") && e.expect == Outcome::Delivered {
            4
        } else {
            1
        };
        for _ in 0..tries {
            let delivered = self.probe(&e.from, &e.to, e.family);
            if delivered != (e.expect == Outcome::Delivered) {
                return Err(format!(
                    "{} -> {} {}: expected {:?}, got delivered={delivered}",
                    e.from, e.to, e.family, e.expect
                ));
            }
        }
        Ok(())
    }

    fn check_expectations(&self) {
        let failures: Vec<String> = self
            .state
            .expectations
            .iter()
            .filter_map(|e| self.check(e).err())
            .collect();
        assert!(
            failures.is_empty(),
            "{}: {failures:#?}",
            self.state.scenario
        );
    }

    /// Healthy flavours: every pod reaches every other pod in both families.
    fn check_full_mesh(&self) {
        let mut failures = Vec::new();
        for a in &self.state.pods {
            for b in self.state.pods.iter().filter(|b| b.name != a.name) {
                for fam in [Family::Ipv4, Family::Ipv6] {
                    if !self.probe(&a.name, &b.name, fam) {
                        failures.push(format!("{} -> {} {fam}", a.name, b.name));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{}: unreachable: {failures:?}",
            self.state.scenario
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for l in &mut self.listeners {
            let _ = l.kill();
            let _ = l.wait();
        }
        let scenario = self.state.scenario.clone();
        match lab::down(&self.opts) {
            Ok(r) => {
                eprintln!(
                    "{scenario}: lab down {:.3} s ({} namespaces)",
                    r.elapsed.as_secs_f64(),
                    r.removed.len()
                );
                if !std::thread::panicking() {
                    assert!(
                        r.elapsed < DOWN_LIMIT,
                        "{scenario}: lab down took {:?}",
                        r.elapsed
                    );
                }
            }
            Err(e) if !std::thread::panicking() => panic!("lab down: {e}"),
            Err(e) => eprintln!("lab down: {e}"),
        }
        let left = leftovers(&self.opts.prefix);
        if !std::thread::panicking() {
            assert!(left.is_empty(), "namespaces left behind: {left:?}");
        }
    }
}

fn leftovers(prefix: &str) -> Vec<String> {
    sh("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect()
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn scenario_test(scenario: &str, extra: impl FnOnce(&mut Lab)) {
    let _serial = serial();
    let scratch = options();
    let opts = &scratch.0;
    let mut lab = Lab::up(opts, scenario);
    lab.listen_on_pods();
    extra(&mut lab);
    lab.check_expectations();
    let sc = lab::scenarios::find(scenario).unwrap();
    if sc.fault.is_none() {
        lab.check_full_mesh();
    }
}

fn flannel() {
    scenario_test("flannel", |_| {});
}

fn calico() {
    scenario_test("calico", |_| {});
}

fn calico_bgp() {
    scenario_test("calico-bgp", |_| {});
}

fn kube_router() {
    scenario_test("kube-router", |_| {});
}

fn kube_router_v6_onlink() {
    scenario_test("kube-router-v6-onlink", |lab| {
        // Node to node still works through the gateway: only the pod CIDR route is missing.
        assert!(lab.probe("node-1", "node-2", Family::Ipv6));
        let routes = sh(&format!("ip -n {}-node-1 -6 route", lab.opts.prefix));
        assert!(!routes.contains("fd00:10:244:2::/64"), "{routes}");
    });
}

fn calico_v6_withdrawn() {
    scenario_test("calico-v6-withdrawn", |lab| {
        let d = lab.resolver().lookup("pod-d").unwrap();
        assert!(d.ipv6.is_empty() && !d.ipv4.is_empty(), "{d:?}");
        let addrs = sh(&format!(
            "ip -n {}-pod-d -6 addr show dev eth0",
            lab.opts.prefix
        ));
        assert!(
            addrs.contains("fe80::") && !addrs.contains("fd00:"),
            "{addrs}"
        );
    });
}

fn flannel_v6_missing() {
    scenario_test("flannel-v6-missing", |lab| {
        let links = sh(&format!("ip -n {}-node-1 link", lab.opts.prefix));
        assert!(
            links.contains("flannel.1") && !links.contains("flannel-v6.1"),
            "{links}"
        );
    });
}

fn k0s_service_family() {
    scenario_test("k0s-service-family", |lab| {
        let node1 = format!("{}-node-1", lab.opts.prefix);
        lab.listen(&node1, lab::topology::API_PORT);
        let k = lab.resolver().lookup("svc/kubernetes").unwrap();
        assert_eq!((k.ipv4.len(), k.ipv6.len(), k.port), (1, 0, Some(443)));
    });
}

fn vcluster_service_flip_alternates_between_runs() {
    let _serial = serial();
    let scratch = options();
    let opts = &scratch.0;
    let mut families = Vec::new();
    for _ in 0..2 {
        let mut lab = Lab::up(opts, "vcluster-service-flip");
        lab.listen_on_pods();
        lab.check_expectations();
        let web = lab.state.service("web").unwrap().clone();
        assert_eq!((web.cluster_ips.len(), web.stale_cluster_ips.len()), (1, 1));
        families.push((web.cluster_ips[0], web.stale_cluster_ips[0]));
    }
    let ((now1, stale1), (now2, stale2)) = (families[0], families[1]);
    assert_ne!(now1.is_ipv4(), now2.is_ipv4(), "family flipped");
    assert_eq!(
        (stale2, stale1),
        (now1, now2),
        "clients hold the previous run's ClusterIP"
    );
}

fn down_cleans_up_after_a_half_failed_up() {
    let _serial = serial();
    let scratch = options();
    let opts = &scratch.0;
    let sc = lab::scenarios::find("calico").unwrap();
    let mut plan = lab::plan(
        sc,
        &lab::PlanContext {
            prefix: opts.prefix.clone(),
            nodes: 2,
            run: 1,
        },
    )
    .unwrap();
    plan.namespaces
        .last_mut()
        .unwrap()
        .ip
        .push("route add 10.99.0.0/16 via 10.98.0.1 dev no-such-dev".into());
    let err = lab::apply(opts, &plan).unwrap_err().to_string();
    assert!(
        err.contains("no-such-dev"),
        "error names the failing command: {err}"
    );
    let status = lab::status(opts)
        .unwrap()
        .expect("state kept after failure");
    assert!(!status.state.complete);
    assert!(
        !leftovers(&opts.prefix).is_empty(),
        "the failure happened after namespaces were made"
    );
    let down = lab::down(opts).unwrap();
    assert_eq!(down.removed.len(), 7);
    assert!(leftovers(&opts.prefix).is_empty());
    assert!(lab::status(opts).unwrap().is_none());
}

fn up_refuses_a_second_lab_and_foreign_namespaces() {
    let _serial = serial();
    let scratch = options();
    let opts = &scratch.0;
    let taken = NetNsGuard::new(&format!("{}-pod-c", opts.prefix));
    let err = lab::up(opts, "flannel", 2).unwrap_err();
    assert!(
        matches!(err, lab::LabError::NamespaceExists(ref n) if *n == taken.name),
        "{err}"
    );
    assert!(
        lab::status(opts).unwrap().is_none(),
        "nothing recorded, nothing made"
    );
    drop(taken);
    let _lab = Lab::up(opts, "kube-router");
    assert!(matches!(
        lab::up(opts, "calico", 2),
        Err(lab::LabError::AlreadyUp { .. })
    ));
    assert!(matches!(
        lab::up(&options().0, "nope", 2),
        Err(lab::LabError::UnknownScenario { .. })
    ));
}

fn resolver_reads_namespaces_the_lab_did_not_make() {
    let ns = NetNsGuard::new(&unique("ntr"));
    sh(&format!(
        "ip -n {0} link add r0 type veth peer name r1 && ip -n {0} link set r0 up",
        ns.name
    ));
    sh(&format!("ip -n {} addr add 10.77.0.1/24 dev r0", ns.name));
    sh(&format!(
        "ip -n {} addr add fd00:77::1/64 dev r0 nodad",
        ns.name
    ));
    let r = LocalResolver::new(None);
    let e = r.lookup(&format!("netns:{}", ns.name)).unwrap();
    assert_eq!(e.kind, EndpointKind::Netns);
    assert_eq!(e.ipv4, ["10.77.0.1".parse::<std::net::Ipv4Addr>().unwrap()]);
    assert_eq!(
        e.ipv6,
        ["fd00:77::1".parse::<std::net::Ipv6Addr>().unwrap()],
        "no link-local"
    );
    let by_ip = r.lookup("[fd00:77::1]:80").unwrap();
    assert_eq!(
        (by_ip.netns.as_deref(), by_ip.port),
        (Some(ns.name.as_str()), Some(80))
    );
    let nowhere = r.lookup("10.254.254.254").unwrap();
    assert_eq!((nowhere.kind, nowhere.netns), (EndpointKind::Address, None));
}

/// `lab up --scenario flanel` while a lab is up: one line, exit 2, and the lab still stands
/// (it used to be brought down by the failed `up`'s clean-up).
fn a_scenario_typo_leaves_the_running_lab_alone() {
    let _serial = serial();
    let scratch = options();
    let opts = &scratch.0;
    let lab = Lab::up(opts, "flannel");
    let state_dir = opts.state_dir.display().to_string();
    for bad in [["--scenario", "flanel"], ["--nodes", "0"]] {
        let out = integration_tests::netpath(&[
            "lab",
            "up",
            bad[0],
            bad[1],
            "--state",
            &state_dir,
            "--prefix",
            &opts.prefix,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let status = lab::status(opts)
            .unwrap()
            .expect("the lab is still recorded");
        assert!(
            status.missing.is_empty(),
            "lab namespaces gone: {:?}",
            status.missing
        );
        assert_eq!(leftovers(&opts.prefix).len(), lab.state.namespaces.len());
    }
    // A second `up` of a valid scenario is refused the same way, without touching the lab.
    let out = integration_tests::netpath(&[
        "lab",
        "up",
        "--scenario",
        "calico",
        "--state",
        &state_dir,
        "--prefix",
        &opts.prefix,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(lab::status(opts).unwrap().unwrap().missing.is_empty());
}

/// A state file that lists namespaces the lab did not make (edited, or another tool's):
/// `down` removes only what carries the lab's prefix and a cookie `up` recorded.
fn down_removes_only_namespaces_the_lab_made() {
    let _serial = serial();
    let scratch = options();
    let opts = &scratch.0;
    let lab = Lab::up(opts, "flannel");
    let mut st = lab.state.clone();
    // Someone else's namespaces, one even named like the lab's.
    let foreign = NetNsGuard::new(&unique("ntf"));
    let lookalike = NetNsGuard::new(&format!("{}-pod-z", opts.prefix));
    st.namespaces.push(foreign.name.clone());
    st.namespaces.push(lookalike.name.clone());
    lab::state::save(&opts.state_dir, &st).unwrap();
    let down = lab::down(opts).unwrap();
    assert_eq!(
        down.removed.len(),
        lab.state.namespaces.len(),
        "{:?}",
        down.removed
    );
    let left = leftovers(&opts.prefix);
    assert_eq!(left, vec![lookalike.name.clone()]);
    assert!(tracer::node::netns::by_name(&foreign.name).is_ok());
    // A state of an older netpath (no cookies): the lab's naming still decides.
    st.made = None;
    lab::state::save(&opts.state_dir, &st).unwrap();
    lab::down(opts).unwrap();
    assert!(tracer::node::netns::by_name(&foreign.name).is_ok());
}

/// The state is replaced through a new file of a random name: a symlink planted where the
/// temporary file used to be (`.lab.json.tmp`, a fixed name) is not followed.
fn the_state_is_never_written_through_a_planted_symlink() {
    let _serial = serial();
    let scratch = options();
    let opts = &scratch.0;
    std::fs::create_dir_all(&opts.state_dir).unwrap();
    let victim = opts.state_dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, opts.state_dir.join(".lab.json.tmp")).unwrap();
    let _lab = Lab::up(opts, "flannel");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(lab::status(opts).unwrap().is_some());
}
