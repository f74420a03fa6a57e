//! The node-side queries of `tracer::sys` (netlink, /proc/sys) against the real kernel, in
//! namespaces built here by hand, compared with what `ip`, `sysctl` and `nft` answer (root).
//! The tools build the fixtures and give the reference answers; the library runs none of them.
use std::{
    net::IpAddr,
    process::{Child, Command, Output},
};

use integration_tests::{case, sh, unique, veth_pair, NetNsGuard, Requires};
use netpath_core::model::{RouteAnswer, RouteType};
use tracer::node::{
    inspect,
    netns::{self, NetnsRef},
    sys,
};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            route_get_answers_what_ip_route_get_says,
            Requires::Root,
            Requires::Tool("ip"),
            Requires::Tool("nft")
        ),
        case!(
            addresses_and_links_are_what_ip_lists,
            Requires::Root,
            Requires::Tool("ip"),
            Requires::Tool("nft")
        ),
        case!(
            neighbour_states_are_what_ip_neigh_shows,
            Requires::Root,
            Requires::Tool("ip"),
            Requires::Tool("nft")
        ),
        case!(
            sysctls_are_read_inside_the_namespace,
            Requires::Root,
            Requires::Tool("ip"),
            Requires::Tool("nft")
        ),
        case!(
            nft_drop_and_reject_rules_are_found_with_table_and_chain,
            Requires::Root,
            Requires::Tool("ip"),
            Requires::Tool("nft")
        ),
        case!(
            connected_namespaces_follow_veths,
            Requires::Root,
            Requires::Tool("ip"),
            Requires::Tool("nft")
        ),
        case!(
            a_namespace_known_only_by_a_pid_is_reached,
            Requires::Root,
            Requires::Tool("ip"),
            Requires::Tool("nft")
        ),
    ])
}

fn named(ns: &NetNsGuard) -> NetnsRef {
    NetnsRef::Named(ns.name.clone())
}

fn ip(ns: &NetNsGuard, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["-n", &ns.name])
        .args(args)
        .output()
        .expect("spawn ip")
}

/// `ip route get` the way the inspector asked before it used netlink: the answer, or the
/// error with the most specific discard route of `ip route show match` (the reference).
fn ip_route_get(ns: &NetNsGuard, dst: IpAddr, from_iif: Option<(IpAddr, &str)>) -> RouteAnswer {
    let d = dst.to_string();
    let mut args = vec!["-j", "route", "get", d.as_str()];
    let src;
    if let Some((s, dev)) = from_iif {
        src = s.to_string();
        args.extend(["from", src.as_str(), "iif", dev]);
    }
    let out = ip(ns, &args);
    if out.status.success() {
        let mut answer =
            inspect::parse_route_get(&ns.name, &d, &out.stdout).expect("ip -j route get");
        // The route that matched, as `ip route get fibmatch` shows it (asked without iif).
        if from_iif.is_none() {
            let matched = ip(ns, &["-j", "route", "get", "fibmatch", d.as_str()]);
            let v: serde_json::Value = serde_json::from_slice(&matched.stdout).unwrap();
            answer.prefix = v[0]["dst"].as_str().map(String::from);
        }
        return answer;
    }
    assert!(from_iif.is_none(), "the fixtures' iif lookups succeed");
    let err = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("RTNETLINK answers: ")
        .to_string();
    let fam = if dst.is_ipv6() { "-6" } else { "-4" };
    let shown = ip(ns, &[fam, "-j", "route", "show", "match", &d]);
    let (kind, prefix) = match inspect::most_specific_route(&shown.stdout) {
        Some((kind, prefix)) if kind != RouteType::Unicast => (kind, Some(prefix)),
        _ => (RouteType::None, None),
    };
    RouteAnswer {
        netns: ns.name.clone(),
        dst: d,
        kind,
        gateway: None,
        dev: None,
        error: Some(err),
        prefix,
    }
}

/// `a` (va: 10.1.0.1/24, fd00:1::1/64) -- `b` (vb: .2), and in `a` a route through `b`, a
/// blackhole, an unreachable and a prohibit route per family.
fn routed() -> (NetNsGuard, NetNsGuard) {
    let (a, b) = veth_pair("npnl");
    a.exec(
        "ip route add 10.10.0.0/16 via 10.1.0.2 && ip route add fd00:10::/64 via fd00:1::2 && \
         ip route add blackhole 10.6.0.0/16 && ip route add blackhole fd00:6::/64 && \
         ip route add unreachable 10.7.0.0/16 && ip route add unreachable fd00:7::/64 && \
         ip route add prohibit 10.8.0.0/16 && ip route add prohibit fd00:8::/64 && \
         ip route add blackhole 10.10.5.0/24",
    );
    (a, b)
}

fn route_get_answers_what_ip_route_get_says() {
    let (a, b) = routed();
    let cases = [
        ("10.10.3.3", "unicast via a gateway"),
        ("fd00:10::3", "unicast via a gateway"),
        ("10.1.0.2", "on-link"),
        ("fd00:1::2", "on-link"),
        ("10.1.0.1", "local"),
        ("fd00:1::1", "local"),
        ("10.6.0.1", "blackhole"),
        ("fd00:6::1", "blackhole"),
        ("10.10.5.9", "blackhole inside a unicast route"),
        ("10.7.0.1", "unreachable"),
        ("fd00:7::1", "unreachable"),
        ("10.8.0.1", "prohibit"),
        ("fd00:8::1", "prohibit"),
        ("10.99.0.1", "no route"),
        ("fd00:99::1", "no route"),
    ];
    let ns = named(&a);
    for (dst, what) in cases {
        let dst: IpAddr = dst.parse().unwrap();
        let ours = sys::route_get(&ns, dst, None, None).unwrap();
        let theirs = ip_route_get(&a, dst, None);
        assert_eq!(ours, theirs, "{what}: {dst}");
        println!("{what:32} {}", ours.describe());
    }
    // Spot checks that the comparison compares something.
    let gw = sys::route_get(&ns, "fd00:10::3".parse().unwrap(), None, None).unwrap();
    assert_eq!(
        (gw.kind.as_str(), gw.gateway, gw.dev.as_deref()),
        ("unicast", Some("fd00:1::2".parse().unwrap()), Some("va"))
    );
    let bh = sys::route_get(&ns, "10.6.0.1".parse().unwrap(), None, None).unwrap();
    assert_eq!(
        (bh.kind.as_str(), bh.prefix.as_deref(), bh.error.as_deref()),
        ("blackhole", Some("10.6.0.0/16"), Some("Invalid argument"))
    );
    let none = sys::route_get(&ns, "fd00:99::1".parse().unwrap(), None, None).unwrap();
    assert_eq!(
        (none.kind.as_str(), none.error.as_deref()),
        ("none", Some("Network is unreachable"))
    );

    // fibmatch: the matched prefix, as `ip route get fibmatch`.
    for dst in ["10.10.3.3", "fd00:10::3", "10.1.0.2", "fd00:1::2"] {
        let m = sys::route_fib_match(&ns, dst.parse().unwrap()).unwrap();
        let out = ip(&a, &["-j", "route", "get", "fibmatch", dst]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(m.prefix, v[0]["dst"].as_str().unwrap(), "fibmatch {dst}");
        assert_eq!(m.dev.as_deref(), v[0]["dev"].as_str(), "fibmatch {dst}");
    }
    assert!(sys::route_fib_match(&ns, "10.6.0.1".parse().unwrap()).is_err());

    // Input-side lookups (`from SRC iif DEV`) in a forwarding namespace.
    b.exec("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 && ip route add 10.20.0.0/16 dev lo && ip route add fd00:20::/64 dev lo");
    for (dst, src) in [("10.20.0.1", "10.1.0.1"), ("fd00:20::1", "fd00:1::1")] {
        let (dst, src): (IpAddr, IpAddr) = (dst.parse().unwrap(), src.parse().unwrap());
        let ours = sys::route_get(&named(&b), dst, Some(src), Some("vb")).unwrap();
        assert_eq!(ours, ip_route_get(&b, dst, Some((src, "vb"))), "iif {dst}");
    }
    // A device that is gone: the output-side answer.
    let gone = sys::route_get(
        &named(&b),
        "10.20.0.1".parse().unwrap(),
        Some("10.1.0.1".parse().unwrap()),
        Some("nosuchdev"),
    )
    .unwrap();
    assert_eq!(gone, ip_route_get(&b, "10.20.0.1".parse().unwrap(), None));
}

fn addresses_and_links_are_what_ip_lists() {
    let (a, _b) = veth_pair("npnl");
    a.exec("ip addr add 10.3.0.1/16 dev va && ip addr add fd00:3::1/48 dev va nodad && ip link set va mtu 1400");
    let ns = named(&a);
    let all = sys::addresses(&ns).unwrap();
    let json = ip(&a, &["-j", "addr", "show"]).stdout;
    assert_eq!(inspect::if_addrs(&all), inspect::parse_addresses(&json));
    assert!(all
        .iter()
        .any(|x| x.dev == "va" && x.addr.to_string() == "fd00:3::1" && x.prefix_len == 48));
    // Link-local and loopback addresses are there for who needs them.
    assert!(all.iter().any(|x| x.dev == "lo" && x.scope == "host"));
    // The resolver's view: every address but lo's and link-local ones, in ip's order.
    let mut want: Vec<IpAddr> = Vec::new();
    for x in inspect::parse_addresses(&json) {
        if !want.contains(&x.addr) {
            want.push(x.addr);
        }
    }
    assert_eq!(tracer::node::resolve::netns_addrs(&a.name).unwrap(), want);

    let links = sys::links(&ns).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&ip(&a, &["-j", "-d", "link", "show"]).stdout).unwrap();
    let theirs: Vec<(u32, String, u32, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifindex"].as_u64().unwrap() as u32,
                l["ifname"].as_str().unwrap().to_string(),
                l["mtu"].as_u64().unwrap() as u32,
                l["operstate"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ours: Vec<(u32, String, u32, String)> = links
        .iter()
        .map(|l| (l.index, l.name.clone(), l.mtu.unwrap(), l.operstate.clone()))
        .collect();
    assert_eq!(ours, theirs);
    let va = sys::link(&ns, "va").unwrap().unwrap();
    assert_eq!((va.mtu, va.kind.as_deref()), (Some(1400), Some("veth")));
    assert!(
        va.link_netnsid.is_some(),
        "a veth's peer is in another namespace"
    );
    assert_eq!(sys::link(&ns, "nosuchdev").unwrap(), None);

    // State and counters as `ip -s link` has them; the peer going down shows on this end.
    a.exec("ping -c2 -i0.2 -W1 10.1.0.2 >/dev/null");
    let state = inspect::LiveInspector.link_state_in(&a.name, "va").unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&ip(&a, &["-j", "-s", "link", "show", "va"]).stdout).unwrap();
    let rx = &v[0]["stats64"]["rx"];
    assert_eq!(state.operstate, "UP");
    assert!(state.rx_packets >= 2, "{state:?}");
    assert_eq!(
        (state.rx_packets, state.rx_dropped, state.rx_errors),
        (
            rx["packets"].as_u64().unwrap(),
            rx["dropped"].as_u64().unwrap(),
            rx["errors"].as_u64().unwrap()
        )
    );
    _b.exec("ip link set vb down");
    let state = inspect::LiveInspector.link_state_in(&a.name, "va").unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&ip(&a, &["-j", "link", "show", "va"]).stdout).unwrap();
    assert_eq!(state.operstate, v[0]["operstate"].as_str().unwrap());
    assert!(state.is_down(), "{state:?}");
    assert_eq!(
        inspect::LiveInspector.link_state_in(&a.name, "nosuchdev"),
        None
    );
}

fn neighbour_states_are_what_ip_neigh_shows() {
    let (a, _b) = veth_pair("npnl");
    a.exec(
        "ping -c1 -W1 10.1.0.2 >/dev/null && ping -c1 -W1 fd00:1::2 >/dev/null && \
         ip neigh add 10.1.0.50 lladdr 02:00:00:00:00:50 dev va nud permanent && \
         ip neigh add fd00:1::50 lladdr 02:00:00:00:00:50 dev va nud stale && \
         ip neigh add 10.1.0.51 lladdr 02:00:00:00:00:51 dev va nud noarp",
    );
    // Nobody answers for .60: the kernel's own attempt ends INCOMPLETE, then FAILED.
    let _ = a.exec("ping -c1 -W1 10.1.0.60 >/dev/null; ping -c1 -W1 fd00:1::60 >/dev/null; true");
    let ns = named(&a);
    // `ip neigh show` leaves NOARP entries out unless asked for `nud all`; they are entries
    // all the same, so the comparison is with `nud all`.
    let mut states = Vec::new();
    for addr in [
        "10.1.0.2",
        "fd00:1::2",
        "10.1.0.50",
        "fd00:1::50",
        "10.1.0.51",
        "10.1.0.60",
        "fd00:1::60",
        "10.1.0.99",
    ] {
        let ours = sys::neighbour_state(&ns, addr.parse().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(
            &ip(&a, &["-j", "neigh", "show", "nud", "all", "to", addr]).stdout,
        )
        .unwrap();
        let theirs = v.as_array().unwrap().first().map(|e| {
            e["state"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(",")
        });
        assert_eq!(ours, theirs, "{addr}");
        states.push(ours);
    }
    println!("{states:?}");
    assert_eq!(states[2].as_deref(), Some("PERMANENT"));
    assert_eq!(states[3].as_deref(), Some("STALE"));
    assert_eq!(states[4].as_deref(), Some("NOARP"));
    assert!(
        matches!(states[5].as_deref(), Some("INCOMPLETE" | "FAILED")),
        "{states:?}"
    );
    assert_eq!(states[7], None);
}

fn sysctls_are_read_inside_the_namespace() {
    let (a, b) = veth_pair("npnl");
    a.exec("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=0 net.ipv6.conf.va.disable_ipv6=1");
    b.exec("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=1");
    for (ns, v4, v6) in [(&a, true, false), (&b, false, true)] {
        assert_eq!(sys::forwarding(&named(ns), 4).unwrap(), v4, "{}", ns.name);
        assert_eq!(sys::forwarding(&named(ns), 6).unwrap(), v6, "{}", ns.name);
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            assert_eq!(
                sys::read_sysctl(&named(ns), key).unwrap(),
                ns.exec(&format!("sysctl -n {key}")).trim(),
                "{key} in {}",
                ns.name
            );
        }
    }
    assert_eq!(sys::ipv6_disabled_devices(&named(&a)).unwrap(), ["va"]);
    assert!(sys::ipv6_disabled_devices(&named(&b)).unwrap().is_empty());
    let grep = a.exec("grep -l 1 /proc/sys/net/ipv6/conf/*/disable_ipv6 || true");
    assert!(grep.contains("/va/"), "{grep}");
}

fn nft_drop_and_reject_rules_are_found_with_table_and_chain() {
    let a = NetNsGuard::new(&unique("npnl"));
    a.exec(
        r#"nft -f - <<'EOF'
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ct state established,related accept
        ip6 daddr fd00::/64 drop
        ip saddr 10.0.0.0/8 tcp dport 443 reject
        ip6 saddr fd00:1:2::/60 udp sport 53 counter reject with icmpv6 admin-prohibited
        ip daddr 10.1.2.3 accept
    }
    chain input {
        type filter hook input priority 0; policy drop;
        iifname "lo" accept
        tcp dport { 22, 80 } drop
    }
}
table ip nat4 {
    chain out {
        type filter hook output priority 0; policy accept;
        ip daddr 10.9.0.0/16 oifname "va" drop
        udp dport 53 reject with icmp host-unreachable
        tcp dport 25 reject with tcp reset
    }
}
table ip6 f6 {
    chain fw {
        type filter hook forward priority 0;
        ip6 daddr fd00:99::1 reject
        ip6 nexthdr tcp tcp sport 1000-2000 drop
    }
}
EOF"#,
    );
    let ours = sys::drop_rules(&named(&a)).unwrap();
    for r in &ours {
        println!("{r}");
    }
    let ruleset = a.exec("nft list ruleset");
    let theirs = inspect::nft_drop_rules(&ruleset);
    // nft's text, without the counters' values, is ours without the handles.
    let strip_handle = |s: String| match s.find(" # handle ") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let strip_counter = |s: &String| {
        let words: Vec<&str> = s.split(' ').collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
                i += 5;
                continue;
            }
            out.push(words[i]);
            i += 1;
        }
        out.join(" ")
    };
    let ours_text: Vec<String> = ours.iter().map(|r| strip_handle(r.to_string())).collect();
    let theirs_text: Vec<String> = theirs.iter().map(strip_counter).collect();
    // The set lookup (`tcp dport { 22, 80 }`) is an anonymous set ours names by its id.
    let (set_ours, rest_ours): (Vec<_>, Vec<_>) =
        ours_text.iter().partition(|t| t.contains("@__set"));
    let (set_theirs, rest_theirs): (Vec<_>, Vec<_>) =
        theirs_text.iter().partition(|t| t.contains("{ 22, 80 }"));
    assert_eq!(rest_ours, rest_theirs);
    assert_eq!((set_ours.len(), set_theirs.len()), (1, 1), "{ours_text:#?}");
    assert!(set_ours[0].starts_with("table inet filter chain input: tcp dport @__set"));
    assert!(ours
        .iter()
        .all(|r| r.to_string().contains(" # handle ") || r.discard == sys::Discard::Policy));
    // The diagnosis looks for the address a rule names.
    assert!(ours
        .iter()
        .any(|r| r.to_string().contains("fd00::/64") && r.chain == "forward"));
    // A namespace without nftables tables has no rules, and is not an error.
    let empty = NetNsGuard::new(&unique("npnl"));
    assert!(sys::drop_rules(&named(&empty)).unwrap().is_empty());
}

fn connected_namespaces_follow_veths() {
    let (a, b) = veth_pair("npnl");
    let c = NetNsGuard::new(&unique("npnlc"));
    sh(&format!(
        "ip link add bc netns {} type veth peer name cb netns {}",
        b.name, c.name
    ));
    for ns in [&a, &b, &c] {
        let ours = netns::names_of_peers(&sys::peers(&named(ns)).unwrap());
        let theirs = netns::peer_names(&ip(ns, &["-j", "netns", "list-id"]).stdout);
        let (mut o, mut t) = (ours.clone(), theirs);
        o.sort();
        t.sort();
        assert_eq!(o, t, "peers of {}", ns.name);
    }
    let mut reach = netns::connected(std::slice::from_ref(&a.name), 16);
    reach.sort();
    let mut want = vec![a.name.clone(), b.name.clone(), c.name.clone()];
    want.sort();
    assert_eq!(reach, want);
    assert_eq!(netns::connected(std::slice::from_ref(&a.name), 2).len(), 2);
}

/// A process holding a namespace, killed when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn a_namespace_known_only_by_a_pid_is_reached() {
    let (a, _b) = veth_pair("npnl");
    a.exec("ip route add blackhole fd00:6::/64 && sysctl -qw net.ipv4.ip_forward=1");
    let holder = Holder(
        Command::new("ip")
            .args(["netns", "exec", &a.name, "sleep", "60"])
            .spawn()
            .expect("spawn sleep"),
    );
    let by_pid = NetnsRef::parse(&format!("pid:{}", holder.0.id())).unwrap();
    // `ip netns exec` execs sleep in the same process: wait until it has entered.
    let named_inode = named(&a).inode().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while by_pid.inode().ok() != Some(named_inode) {
        assert!(
            std::time::Instant::now() < deadline,
            "sleep never entered {}",
            a.name
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(by_pid.cookie().unwrap(), named(&a).cookie().unwrap());
    let before = sys::addresses(&named(&a)).unwrap();
    // The name goes; the namespace lives on in the process.
    sh(&format!("ip netns del {}", a.name));
    assert!(NetnsRef::parse(&a.name).unwrap().inode().is_err());
    assert_eq!(by_pid.inode().unwrap(), named_inode);
    assert_eq!(sys::addresses(&by_pid).unwrap(), before);
    let bh = sys::route_get(&by_pid, "fd00:6::1".parse().unwrap(), None, None).unwrap();
    assert_eq!(
        (bh.kind.as_str(), bh.prefix.as_deref()),
        ("blackhole", Some("fd00:6::/64"))
    );
    assert_eq!(bh.netns, format!("pid:{}", holder.0.id()));
    assert!(sys::forwarding(&by_pid, 4).unwrap());
    assert!(
        sys::neighbour_state(&by_pid, "fd00:1::2".parse().unwrap())
            .unwrap()
            .is_some(),
        "veth_pair pinged fd00:1::2 from here"
    );
    assert!(sys::drop_rules(&by_pid).unwrap().is_empty());
    let resolved = netns::by_name(&format!("pid:{}", holder.0.id())).unwrap();
    assert_eq!(resolved.inode, named_inode);
    drop(holder);
}
