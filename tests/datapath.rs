//! The kernel data path, live: two "nodes" (namespaces) joined by an underlay veth, each with a
//! bridge, a pod (namespace + veth) and a VXLAN device enslaved to the bridge. Pings in both
//! families from pod-a to pod-b must show the ordered hops through the tunnel with one packet
//! identity. Also: drop reasons for nftables drops and IPv6 disabled on the receiving device,
//! and the lost-event counter under a burst into a tiny ring.
use std::time::Duration;

use integration_tests::*;
use serde_json::Value;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            vxlan_overlay_hops_are_ordered_with_one_identity_in_both_families,
            Requires::Root
        ),
        case!(
            nftables_drop_is_reported_with_its_reason,
            Requires::Root,
            Requires::Tool("nft"),
            Requires::Tool("nc")
        ),
        case!(
            ipv6_disabled_on_the_receiving_device_is_reported,
            Requires::Root
        ),
        case!(
            lost_events_are_counted_when_the_ring_overflows,
            Requires::Root
        ),
        case!(
            a_device_without_link_layer_header_gets_the_l3_programs,
            Requires::Root
        ),
    ])
}

struct Overlay {
    pa: NetNsGuard,
    n1: NetNsGuard,
    n2: NetNsGuard,
    pb: NetNsGuard,
}

fn overlay() -> Overlay {
    let pa = NetNsGuard::new(&unique("nppa"));
    let n1 = NetNsGuard::new(&unique("npn1"));
    let n2 = NetNsGuard::new(&unique("npn2"));
    let pb = NetNsGuard::new(&unique("nppb"));
    sh(&format!(
        "ip link add u1 netns {} type veth peer name u2 netns {}",
        n1.name, n2.name
    ));
    sh(&format!(
        "ip link add eth0 netns {} type veth peer name vpa netns {}",
        pa.name, n1.name
    ));
    sh(&format!(
        "ip link add eth0 netns {} type veth peer name vpb netns {}",
        pb.name, n2.name
    ));
    for (node, u, local, remote, v6, vpod) in [
        (
            &n1,
            "u1",
            "198.18.0.1",
            "198.18.0.2",
            "fd00:198:18::1/64",
            "vpa",
        ),
        (
            &n2,
            "u2",
            "198.18.0.2",
            "198.18.0.1",
            "fd00:198:18::2/64",
            "vpb",
        ),
    ] {
        node.exec(&format!(
            "ip addr add {local}/24 dev {u} && ip addr add {v6} dev {u} nodad && ip link set {u} up && \
             ip link add br0 type bridge && ip link set br0 up && \
             ip link add vx type vxlan id 42 local {local} remote {remote} dstport 4789 dev {u} && \
             ip link set vx master br0 && ip link set vx up && ip link set {vpod} master br0 && ip link set {vpod} up"
        ));
    }
    for (pod, v4, v6) in [
        (&pa, "10.244.1.2/16", "fd00:244::1:2/64"),
        (&pb, "10.244.2.2/16", "fd00:244::2:2/64"),
    ] {
        pod.exec(&format!(
            "ip addr add {v4} dev eth0 && ip addr add {v6} dev eth0 nodad && ip link set eth0 up"
        ));
    }
    Overlay { pa, n1, n2, pb }
}

fn path_of(events: &[Value], pkt_id: &str) -> Vec<(String, String, String)> {
    let mut evs: Vec<&Value> = events
        .iter()
        .filter(|e| e["pkt_id"] == pkt_id && e["kind"] == "hop")
        .collect();
    evs.sort_by_key(|e| e["ts_ns"].as_u64());
    evs.iter()
        .map(|e| {
            (
                e["netns"].as_str().unwrap_or("").to_string(),
                e["ifname"].as_str().unwrap_or("").to_string(),
                e["dir"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn vxlan_overlay_hops_are_ordered_with_one_identity_in_both_families() {
    let o = overlay();
    let ifaces = [
        format!("{}/eth0", o.pa.name),
        format!("{}/*", o.n1.name),
        format!("{}/*", o.n2.name),
        format!("{}/eth0", o.pb.name),
    ];
    let mut args = vec![
        "watch",
        "--json",
        "--no-drops",
        "--duration",
        "7",
        "--host",
        "10.244.1.2",
        "--host",
        "fd00:244::1:2",
    ];
    for i in &ifaces {
        args.extend(["--iface", i.as_str()]);
    }
    let mut np = NetpathProcess::spawn(&args);
    np.wait_stderr("watching", Duration::from_secs(10));
    o.pa.exec("ping -c2 -W2 10.244.2.2");
    o.pa.exec("ping -c2 -W2 fd00:244::2:2");
    let (code, out) = np.finish();
    assert_eq!(code, Some(0));
    let events = json_lines(&out);
    let expected = |fam: &str| {
        vec![
            (o.pa.name.clone(), "eth0".to_string(), "egress".to_string()),
            (o.n1.name.clone(), "vpa".into(), "ingress".into()),
            (o.n1.name.clone(), "vx".into(), "egress".into()),
            (o.n1.name.clone(), "u1".into(), "egress".into()),
            (o.n2.name.clone(), "u2".into(), "ingress".into()),
            (o.n2.name.clone(), "vx".into(), "ingress".into()),
            (o.n2.name.clone(), "vpb".into(), "egress".into()),
            (o.pb.name.clone(), "eth0".into(), "ingress".into()),
        ]
        .into_iter()
        .map(|h| (h, fam.to_string()))
        .collect::<Vec<_>>()
    };
    for (family, dst) in [(4u64, "10.244.2.2"), (6, "fd00:244::2:2")] {
        // The echo requests that reached pod-b, each followed through every hop.
        let arrivals: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["family"] == family
                    && e["dst"] == dst
                    && e["netns"] == o.pb.name.as_str()
                    && e["dir"] == "ingress"
                    && e["icmp"] == "echo-request"
            })
            .collect();
        assert!(
            !arrivals.is_empty(),
            "no IPv{family} echo request reached pod-b: {events:#?}"
        );
        for arrival in arrivals {
            let id = arrival["pkt_id"].as_str().unwrap();
            let path = path_of(&events, id);
            let want: Vec<_> = expected("").into_iter().map(|(h, _)| h).collect();
            assert_eq!(
                path, want,
                "IPv{family} request {id} took an unexpected path"
            );
            // Inside the tunnel the event carries the outer header and the same identity.
            let on_underlay = events
                .iter()
                .find(|e| e["pkt_id"] == id && e["ifname"] == "u1")
                .expect("underlay hop");
            assert_eq!(on_underlay["tunnel"]["type"], "vxlan");
            assert_eq!(on_underlay["tunnel"]["vni"], 42);
            assert_eq!(on_underlay["tunnel"]["outer_src"], "198.18.0.1");
            assert_eq!(on_underlay["tunnel"]["outer_dst"], "198.18.0.2");
            assert_eq!(on_underlay["dst"], dst, "inner destination is reported");
        }
    }
}

fn pair() -> (NetNsGuard, NetNsGuard) {
    veth_pair("npd")
}

fn drops_while(b: &NetNsGuard, extra: &[&str], traffic: impl FnOnce()) -> Vec<Value> {
    let mut args = vec![
        "watch",
        "--json",
        "--netns",
        b.name.as_str(),
        "--iface",
        "vb",
        "--duration",
        "5",
    ];
    args.extend_from_slice(extra);
    let mut np = NetpathProcess::spawn(&args);
    np.wait_stderr("watching", Duration::from_secs(10));
    traffic();
    let (code, out) = np.finish();
    assert_eq!(code, Some(0));
    json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "drop")
        .collect()
}

fn nftables_drop_is_reported_with_its_reason() {
    let (a, b) = pair();
    b.exec(
        "nft add table inet nptest && \
         nft add chain inet nptest in \"{ type filter hook input priority 0; }\" && \
         nft add rule inet nptest in tcp dport 8080 drop",
    );
    let drops = drops_while(
        &b,
        &["--host", "10.1.0.0/24", "--host", "fd00:1::/64"],
        || {
            a.exec("nc -z -w1 10.1.0.2 8080 || true");
            a.exec("nc -z -w1 fd00:1::2 8080 || true");
        },
    );
    for family in [4u64, 6] {
        let d = drops
            .iter()
            .find(|e| e["family"] == family && e["dport"] == 8080)
            .unwrap_or_else(|| panic!("no IPv{family} drop to port 8080 in {drops:#?}"));
        assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
        assert_eq!(d["netns"], b.name.as_str());
        assert!(
            d["location"].as_str().unwrap_or("").starts_with("nf"),
            "netfilter function expected: {d}"
        );
    }
}

fn ipv6_disabled_on_the_receiving_device_is_reported() {
    let (a, b) = pair();
    let mac = b.exec("cat /sys/class/net/vb/address");
    a.exec(&format!(
        "ip neigh replace fd00:1::2 lladdr {} dev va nud permanent",
        mac.trim()
    ));
    b.exec("sysctl -qw net.ipv6.conf.vb.disable_ipv6=1");
    let drops = drops_while(&b, &["--family", "6"], || {
        a.exec("ping -c1 -W1 fd00:1::2 || true");
    });
    let d = drops
        .iter()
        .find(|e| e["dst"] == "fd00:1::2" && e["icmp"] == "echo-request")
        .unwrap_or_else(|| panic!("no drop of the IPv6 echo request in {drops:#?}"));
    assert_eq!(d["reason"], "IPV6DISABLED", "{d}");
    assert_eq!(d["ifname"], "vb");
}

fn lost_events_are_counted_when_the_ring_overflows() {
    let (a, b) = pair();
    let mut np = NetpathProcess::spawn(&[
        "watch",
        "--json",
        "--netns",
        &b.name,
        "--iface",
        "vb",
        "--ring-kib",
        "4",
        "--duration",
        "5",
    ]);
    np.wait_stderr("watching", Duration::from_secs(10));
    a.exec("ping -f -c 3000 -q 10.1.0.2 >/dev/null");
    let (code, out) = np.finish();
    assert_eq!(code, Some(0));
    let events = json_lines(&out);
    let lost: u64 = events
        .iter()
        .filter(|e| e["kind"] == "lost")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    let seen = events.iter().filter(|e| e["kind"] == "hop").count() as u64;
    assert!(
        lost > 0,
        "a 4 KiB ring under a 6000-packet burst lost nothing? seen {seen}"
    );
    assert!(seen > 0);
    let summary = np_summary(&out);
    assert!(summary.is_none(), "summary goes to stderr, not stdout");
}

fn np_summary(out: &str) -> Option<&str> {
    out.lines()
        .find(|l| l.contains(" lost") && l.starts_with("netpath:"))
}

fn a_device_without_link_layer_header_gets_the_l3_programs() {
    // A tun device (no Ethernet header) next to a veth: both must decode.
    let (a, _b) = veth_pair("npl3");
    a.exec(
        "ip tuntap add dev tun0 mode tun && ip addr add 10.77.0.1/24 dev tun0 && \
         ip -6 addr add fd00:77::1/64 dev tun0 nodad && ip link set tun0 up",
    );
    let mut np = NetpathProcess::spawn(&[
        "watch",
        "--json",
        "--no-drops",
        "--duration",
        "4",
        "--netns",
        &a.name,
        "--iface",
        "tun0",
        "--iface",
        "va",
    ]);
    np.wait_stderr("watching", Duration::from_secs(10));
    a.exec(
        "ping -c1 -W1 10.77.0.2 || true; ping -c1 -W1 fd00:77::2 || true; ping -c1 -W1 10.1.0.2",
    );
    let (code, out) = np.finish();
    assert_eq!(code, Some(0));
    let events = json_lines(&out);
    for (dev, dst, family) in [
        ("tun0", "10.77.0.2", 4u64),
        ("tun0", "fd00:77::2", 6),
        ("va", "10.1.0.2", 4),
    ] {
        let e = events
            .iter()
            .find(|e| e["ifname"] == dev && e["dst"] == dst && e["icmp"] == "echo-request")
            .unwrap_or_else(|| panic!("no echo request to {dst} on {dev}: {events:#?}"));
        assert_eq!(e["family"], family, "{e}");
        assert_eq!(e["dir"], "egress");
    }
    // (Had tun0 got the Ethernet programs, its packets would have been read as Ethernet
    // frames starting at the IP header and decoded as non-IP.)
}
