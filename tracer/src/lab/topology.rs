//! Builds the lab as pure data: from (scenario, nodes) to the namespaces, links, addresses,
//! routes, sysctls and nftables rulesets that make it, plus the state `up` will record.
//! Nothing here touches the machine, so every scenario's shape is unit-testable.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{
    addresses::{node_v4, node_v6, pod_addrs},
    scenarios::{self, Fault, Scenario},
    state::{Family, Flavour, LabNode, LabPod, LabService, LabState, LabUnderlay},
    LabError,
};

pub const MAX_NODES: usize = 8;
pub const PODS_PER_NODE: usize = 2;
/// Port the Service endpoints (pods) listen on; tests start listeners there.
pub const POD_PORT: u16 = 8080;
pub const WEB_PORT: u16 = 80;
/// Port of the API server endpoint in the k0s scenario (on node-1's host network).
pub const API_PORT: u16 = 6443;
/// Pod MTU under a VXLAN overlay (room for the IPv6 VXLAN header).
const OVERLAY_MTU: u32 = 1400;
/// Calico's host-side veth MAC: its EUI-64 link-local is the pods' IPv6 gateway.
const CALICO_MAC: &str = "ee:ee:ee:ee:ee:ee";
const CALICO_GW_V4: &str = "169.254.1.1";
const CALICO_GW_V6: &str = "fe80::ecee:eeff:feee:eeee";
/// The node network is a /59; healthy nodes are configured with it, seed 000's with /64.
const NODE_NET_V6_PREFIX: u8 = 59;

/// Inputs of a plan besides the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    /// Namespace name prefix: namespaces are `PREFIX-node-1`, `PREFIX-pod-a`, `PREFIX-underlay`.
    pub prefix: String,
    pub nodes: usize,
    /// Which `lab up` of this scenario this is (1-based); the vcluster flip depends on it.
    pub run: u32,
}

/// Everything to do inside one namespace, in execution order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsPlan {
    pub name: String,
    /// Sysctls (paths under /proc/sys) set before any link exists: `default` values are what
    /// new devices inherit (no DAD delay, forwarding).
    pub early_sysctls: Vec<(String, String)>,
    /// `ip -n NAME -batch -` lines.
    pub ip: Vec<String>,
    /// `bridge -n NAME -batch -` lines (VXLAN forwarding entries).
    pub bridge: Vec<String>,
    /// Per-device sysctls, set once the devices exist.
    pub sysctls: Vec<(String, String)>,
    /// `nft -f -` ruleset.
    pub nft: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The state `up` records (with `complete: false` until it has finished).
    pub state: LabState,
    /// Underlay first (it creates the node veths), then the nodes (they create the pod veths),
    /// then the pods.
    pub namespaces: Vec<NsPlan>,
}

impl Plan {
    pub fn ns(&self, name: &str) -> Option<&NsPlan> {
        self.namespaces.iter().find(|n| n.name == name)
    }
}

fn pod_net_v4(n: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, n as u8, host)
}
fn pod_net_v6(n: usize, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, n as u16, 0, 0, 0, host)
}
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1);
const WEB_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const WEB_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x10);
const KUBERNETES_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// Stable short hash for veth names (CNIs derive them from the container id the same way).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn sysctl(path: &str, value: &str) -> (String, String) {
    (path.to_string(), value.to_string())
}

fn base_sysctls(router: bool) -> Vec<(String, String)> {
    let mut v = vec![
        sysctl("net/ipv6/conf/all/accept_dad", "0"),
        sysctl("net/ipv6/conf/default/accept_dad", "0"),
    ];
    if router {
        v.push(sysctl("net/ipv4/ip_forward", "1"));
        v.push(sysctl("net/ipv6/conf/all/forwarding", "1"));
    }
    v
}

/// One VXLAN device of an overlay, and the per-peer route, neighbour and FDB entries the CNI
/// programs (flannel's and Calico's VXLAN modes use the same scheme).
struct Vxlan<'a> {
    dev: &'a str,
    vni: u32,
    port: u16,
    /// MAC of node `n`'s device.
    mac: fn(usize) -> String,
}

impl Vxlan<'_> {
    fn program(&self, node: &mut NsPlan, n: usize, nodes: usize, v6: bool) {
        let dev = self.dev;
        let local = if v6 {
            IpAddr::V6(node_v6(n))
        } else {
            IpAddr::V4(node_v4(n))
        };
        // The tunnel address is the pod CIDR's network address, as flannel assigns it.
        let tunnel = |m: usize| -> String {
            if v6 {
                pod_net_v6(m, 0).to_string()
            } else {
                pod_net_v4(m, 0).to_string()
            }
        };
        let (cidr, host_len) = if v6 { ("/64", "/128") } else { ("/24", "/32") };
        node.ip.push(format!(
            "link add {dev} address {} type vxlan id {} local {local} dstport {} nolearning",
            (self.mac)(n),
            self.vni,
            self.port
        ));
        node.ip.push(format!("link set {dev} up"));
        node.ip.push(format!(
            "addr add {}{host_len} dev {dev}{}",
            tunnel(n),
            if v6 { " nodad" } else { "" }
        ));
        for m in (1..=nodes).filter(|&m| m != n) {
            let remote = if v6 {
                IpAddr::V6(node_v6(m))
            } else {
                IpAddr::V4(node_v4(m))
            };
            let gw = tunnel(m);
            node.ip
                .push(format!("route add {gw}{cidr} via {gw} dev {dev} onlink"));
            node.ip.push(format!(
                "neigh add {gw} lladdr {} dev {dev} nud permanent",
                (self.mac)(m)
            ));
            node.bridge.push(format!(
                "fdb append {} dev {dev} dst {remote}",
                (self.mac)(m)
            ));
        }
    }
}

const FLANNEL_V4: Vxlan = Vxlan {
    dev: "flannel.1",
    vni: 1,
    port: 8472,
    mac: |n| format!("0e:00:00:00:04:{n:02x}"),
};
const FLANNEL_V6: Vxlan = Vxlan {
    dev: "flannel-v6.1",
    vni: 1,
    port: 8472,
    mac: |n| format!("0e:00:00:00:06:{n:02x}"),
};
const CALICO_V4: Vxlan = Vxlan {
    dev: "vxlan.calico",
    vni: 4096,
    port: 4789,
    mac: |n| format!("66:00:00:00:04:{n:02x}"),
};
const CALICO_V6: Vxlan = Vxlan {
    dev: "vxlan-v6.calico",
    vni: 4096,
    port: 4789,
    mac: |n| format!("66:00:00:00:06:{n:02x}"),
};

fn validate(sc: &Scenario, ctx: &PlanContext) -> Result<(), LabError> {
    if ctx.nodes < sc.min_nodes() || ctx.nodes > MAX_NODES {
        return Err(LabError::Nodes {
            scenario: sc.name.into(),
            min: sc.min_nodes(),
            max: MAX_NODES,
            got: ctx.nodes,
        });
    }
    if !valid_prefix(&ctx.prefix) {
        return Err(LabError::Prefix(ctx.prefix.clone()));
    }
    Ok(())
}

/// A lab prefix: 1-16 lowercase letters or digits.
pub(super) fn valid_prefix(prefix: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !prefix.is_empty() && prefix.len() <= 16 && prefix.chars().all(ok)
}

/// Builds the plan of `sc` with `ctx.nodes` nodes. No side effects.
pub fn plan(sc: &Scenario, ctx: &PlanContext) -> Result<Plan, LabError> {
    validate(sc, ctx)?;
    let ns = |name: &str| format!("{}-{name}", ctx.prefix);
    let fault = sc.fault;
    let flavour = sc.flavour;
    let overlay_v4 = match flavour {
        _ if !sc.overlay => None,
        Flavour::Flannel => Some(&FLANNEL_V4),
        Flavour::Calico => Some(&CALICO_V4),
        Flavour::KubeRouter => None,
    };
    let overlay_v6 = match (flavour, fault) {
        _ if !sc.overlay => None,
        (Flavour::Flannel, Some(Fault::V6OverlayMissing)) => None,
        (Flavour::Flannel, _) => Some(&FLANNEL_V6),
        (Flavour::Calico, _) => Some(&CALICO_V6),
        (Flavour::KubeRouter, _) => None,
    };
    let node_v6_prefix = if fault == Some(Fault::V6NotOnLink) {
        64
    } else {
        NODE_NET_V6_PREFIX
    };
    let bridge = match flavour {
        Flavour::Flannel => Some("cni0"),
        Flavour::KubeRouter => Some("kube-bridge"),
        Flavour::Calico => None,
    };
    let pod_mtu = overlay_v4.map(|_| OVERLAY_MTU);
    let underlay_ns = ns("underlay");

    let mut pods = Vec::new();
    for n in 1..=ctx.nodes {
        for i in 0..PODS_PER_NODE {
            let name = format!(
                "pod-{}",
                (b'a' + ((n - 1) * PODS_PER_NODE + i) as u8) as char
            );
            let node = format!("node-{n}");
            let host_ifname = match flavour {
                Flavour::Calico => format!(
                    "cali{:011x}",
                    fnv(&format!("{node}/{name}")) & 0xfff_ffff_ffff
                ),
                _ => format!("veth{:08x}", fnv(&format!("{node}/{name}")) as u32),
            };
            let (v4, v6) = pod_addrs(n, i);
            pods.push(LabPod {
                netns: ns(&name),
                name,
                node,
                ifname: "eth0".into(),
                host_ifname,
                ipv4: Some(v4.into()),
                ipv6: Some(v6.into()),
            });
        }
    }
    if fault == Some(Fault::V6Withdrawn) {
        if let Some(p) = pods.iter_mut().rev().find(|p| p.node == "node-2") {
            p.ipv6 = None;
        }
    }

    let services = services(sc, ctx, &pods);
    // The underlay makes the node veths after its bridge, so a port's ifindex (3, 4, ...) never
    // equals its peer's (eth0 is 2 in every node): the kernel treats a veth whose ifindex equals
    // its peer's as a non-urgent link event and lets the bridge port forward only up to 1 s later.
    let mut underlay = NsPlan {
        name: underlay_ns.clone(),
        early_sysctls: base_sysctls(true),
        ..Default::default()
    };
    underlay.ip.push("link set lo up".into());
    underlay
        .ip
        .push("link add br0 type bridge mcast_snooping 0".into());
    underlay.ip.push("link set br0 up".into());
    underlay
        .ip
        .push(format!("addr add {GATEWAY_V4}/24 dev br0"));
    underlay.ip.push(format!(
        "addr add {GATEWAY_V6}/{NODE_NET_V6_PREFIX} dev br0 nodad"
    ));
    for n in 1..=ctx.nodes {
        underlay.ip.push(format!(
            "link add node-{n} type veth peer name eth0 netns {}",
            ns(&format!("node-{n}"))
        ));
        underlay.ip.push(format!("link set node-{n} master br0 up"));
    }
    let mut node_plans = Vec::new();
    let mut nodes = Vec::new();
    for n in 1..=ctx.nodes {
        let name = format!("node-{n}");
        let mut np = NsPlan {
            name: ns(&name),
            early_sysctls: base_sysctls(true),
            ..Default::default()
        };
        let mut devices = vec!["eth0".to_string()];
        np.ip.push("link set lo up".into());
        np.ip.push("link set eth0 up".into());
        np.ip.push(format!("addr add {}/24 dev eth0", node_v4(n)));
        np.ip.push(format!(
            "addr add {}/{node_v6_prefix} dev eth0 nodad",
            node_v6(n)
        ));
        np.ip
            .push(format!("route add default via {GATEWAY_V4} dev eth0"));
        // With a /64 the gateway is not on-link either; the node still has its default route.
        let onlink = if node_v6_prefix == NODE_NET_V6_PREFIX {
            ""
        } else {
            " onlink"
        };
        np.ip.push(format!(
            "route add default via {GATEWAY_V6} dev eth0{onlink}"
        ));
        if let Some(br) = bridge {
            np.ip
                .push(format!("link add {br} type bridge mcast_snooping 0"));
            np.ip.push(format!("link set {br} up"));
            np.ip
                .push(format!("addr add {}/24 dev {br}", pod_net_v4(n, 1)));
            np.ip
                .push(format!("addr add {}/64 dev {br} nodad", pod_net_v6(n, 1)));
            devices.push(br.into());
        } else {
            // Calico: the node owns its block; addresses it does not route to a veth are dropped.
            np.ip
                .push(format!("route add blackhole {}/24", pod_net_v4(n, 0)));
            np.ip
                .push(format!("route add blackhole {}/64", pod_net_v6(n, 0)));
        }
        for pod in pods.iter().filter(|p| p.node == name) {
            let host = &pod.host_ifname;
            let mtu = pod_mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
            let mac = if bridge.is_none() {
                format!(" address {CALICO_MAC}")
            } else {
                String::new()
            };
            np.ip.push(format!(
                "link add {host}{mac}{mtu} type veth peer name eth0 netns {}",
                pod.netns
            ));
            match bridge {
                Some(br) => np.ip.push(format!("link set {host} master {br} up")),
                None => {
                    np.ip.push(format!("link set {host} up"));
                    for ip in pod.ipv4.iter().chain(&pod.ipv6) {
                        np.ip.push(format!("route add {ip} dev {host}"));
                    }
                    // Proxy ARP answers for 169.254.1.1 at once (the default delay is up to 0.8 s).
                    np.sysctls
                        .push(sysctl(&format!("net/ipv4/conf/{host}/proxy_arp"), "1"));
                    np.sysctls
                        .push(sysctl(&format!("net/ipv4/neigh/{host}/proxy_delay"), "0"));
                }
            }
            devices.push(host.clone());
        }
        for (vx, v6) in [(overlay_v4, false), (overlay_v6, true)] {
            if let Some(vx) = vx {
                vx.program(&mut np, n, ctx.nodes, v6);
                devices.push(vx.dev.into());
            }
        }
        // Without an overlay (kube-router, Calico BGP) each node routes the others' pod CIDRs
        // to their node addresses.
        if !sc.overlay {
            for m in (1..=ctx.nodes).filter(|&m| m != n) {
                np.ip.push(format!(
                    "route add {}/24 via {} dev eth0",
                    pod_net_v4(m, 0),
                    node_v4(m)
                ));
                // kube-router routes directly only to peers its own subnet shows as on-link.
                if fault != Some(Fault::V6NotOnLink) {
                    np.ip.push(format!(
                        "route add {}/64 via {} dev eth0",
                        pod_net_v6(m, 0),
                        node_v6(m)
                    ));
                }
            }
        }
        np.nft = Some(kube_proxy_ruleset(&services));
        node_plans.push(np);
        nodes.push(LabNode {
            netns: ns(&name),
            name,
            underlay_v4: node_v4(n).into(),
            underlay_v6: node_v6(n).into(),
            underlay_v6_prefix: node_v6_prefix,
            pod_cidr_v4: format!("{}/24", pod_net_v4(n, 0)),
            pod_cidr_v6: format!("{}/64", pod_net_v6(n, 0)),
            devices,
        });
    }

    let mut pod_plans = Vec::new();
    for pod in &pods {
        let n: usize = pod.node.trim_start_matches("node-").parse().unwrap_or(1);
        let mut pp = NsPlan {
            name: pod.netns.clone(),
            early_sysctls: base_sysctls(false),
            ..Default::default()
        };
        pp.ip.push("link set lo up".into());
        let mtu = pod_mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
        pp.ip.push(format!("link set eth0{mtu} up"));
        let (len4, len6) = if bridge.is_some() {
            (24, 64)
        } else {
            (32, 128)
        };
        if let Some(ip) = pod.ipv4 {
            pp.ip.push(format!("addr add {ip}/{len4} dev eth0"));
        }
        if let Some(ip) = pod.ipv6 {
            pp.ip.push(format!("addr add {ip}/{len6} dev eth0 nodad"));
        }
        if bridge.is_some() {
            pp.ip.push(format!(
                "route add default via {} dev eth0",
                pod_net_v4(n, 1)
            ));
            pp.ip.push(format!(
                "route add default via {} dev eth0",
                pod_net_v6(n, 1)
            ));
        } else {
            pp.ip
                .push(format!("route add {CALICO_GW_V4} dev eth0 scope link"));
            pp.ip
                .push(format!("route add default via {CALICO_GW_V4} dev eth0"));
            if pod.ipv6.is_some() {
                pp.ip
                    .push(format!("route add default via {CALICO_GW_V6} dev eth0"));
            }
        }
        pod_plans.push(pp);
    }

    let mut namespaces = vec![underlay];
    namespaces.extend(node_plans);
    namespaces.extend(pod_plans);
    let mut state = LabState {
        scenario: sc.name.into(),
        description: sc.description.into(),
        seed: sc.seed.map(Into::into),
        flavour,
        prefix: ctx.prefix.clone(),
        run: ctx.run,
        complete: false,
        made: Some(Vec::new()),
        namespaces: namespaces.iter().map(|n| n.name.clone()).collect(),
        underlay: LabUnderlay {
            netns: underlay_ns,
            bridge: "br0".into(),
            cidr_v4: "198.18.0.0/24".into(),
            cidr_v6: format!(
                "{}/{NODE_NET_V6_PREFIX}",
                Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0)
            ),
            gateway_v4: GATEWAY_V4.into(),
            gateway_v6: GATEWAY_V6.into(),
        },
        nodes,
        pods,
        services,
        expectations: Vec::new(),
    };
    state.expectations = scenarios::expectations(sc, &state);
    Ok(Plan { state, namespaces })
}

/// The Services of a scenario, with their endpoints resolved to pod addresses.
fn services(sc: &Scenario, ctx: &PlanContext, pods: &[LabPod]) -> Vec<LabService> {
    let last_node = format!("node-{}", ctx.nodes);
    // svc/web is served by the second pod of each node, or where a fault needs a fixed path.
    let serves = |p: &LabPod, i: usize| match sc.fault {
        Some(Fault::V6NotOnLink) => p.node == "node-1" && i == 1,
        Some(Fault::V6OverlayMissing) => p.node == last_node && i == 1,
        _ => i == 1,
    };
    let mut cluster_ips: Vec<IpAddr> = vec![WEB_V4.into(), WEB_V6.into()];
    let mut stale = Vec::new();
    if sc.fault == Some(Fault::ServiceFamilyFlip) {
        // Odd runs get IPv4, even runs IPv6; clients hold the other one from the run before.
        let now = if ctx.run % 2 == 1 { 0 } else { 1 };
        stale.push(cluster_ips.remove(1 - now));
    }
    let families: Vec<Family> = cluster_ips.iter().map(Family::of).collect();
    let endpoints = pods
        .iter()
        .enumerate()
        .filter(|(k, p)| serves(p, k % PODS_PER_NODE))
        .flat_map(|(_, p)| p.ipv4.iter().chain(&p.ipv6))
        .filter(|ip| families.contains(&Family::of(ip)))
        .map(|ip| SocketAddr::new(*ip, POD_PORT))
        .collect();
    let mut out = vec![LabService {
        name: "web".into(),
        cluster_ips,
        port: WEB_PORT,
        endpoints,
        stale_cluster_ips: stale,
    }];
    if sc.fault == Some(Fault::ServiceFamilyMismatch) {
        out.push(LabService {
            name: "kubernetes".into(),
            cluster_ips: vec![KUBERNETES_V4.into()],
            port: 443,
            endpoints: vec![SocketAddr::new(node_v6(1).into(), API_PORT)],
            stale_cluster_ips: Vec::new(),
        });
    }
    out
}

/// A kube-proxy (nftables mode) style ruleset: ClusterIP DNAT with random endpoint choice, and
/// reject for a ClusterIP whose family has no endpoint.
pub(crate) fn kube_proxy_ruleset(services: &[LabService]) -> String {
    let mut dispatch = Vec::new();
    let mut no_endpoints = Vec::new();
    let mut chains = Vec::new();
    for svc in services {
        for ip in &svc.cluster_ips {
            let fam = Family::of(ip);
            let (kw, tag) = match fam {
                Family::Ipv4 => ("ip", "ipv4"),
                Family::Ipv6 => ("ip6", "ipv6"),
            };
            let eps: Vec<_> = svc
                .endpoints
                .iter()
                .filter(|e| Family::of(&e.ip()) == fam)
                .collect();
            let matcher = format!("{kw} daddr {ip} tcp dport {}", svc.port);
            if eps.is_empty() {
                no_endpoints.push(format!(
                    "\t\t{matcher} reject comment \"svc/{} has no {fam} endpoints\"",
                    svc.name
                ));
                continue;
            }
            let chain = format!("svc-{}-{tag}", svc.name);
            dispatch.push(format!("\t\t{matcher} goto {chain}"));
            let map: Vec<String> = (0..eps.len())
                .map(|k| format!("{k} : goto sep-{}-{tag}-{k}", svc.name))
                .collect();
            chains.push(format!(
                "\tchain {chain} {{\n\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
                eps.len(),
                map.join(", ")
            ));
            for (k, ep) in eps.iter().enumerate() {
                chains.push(format!(
                    "\tchain sep-{}-{tag}-{k} {{\n\t\tmeta l4proto tcp dnat {kw} to {ep}\n\t}}",
                    svc.name
                ));
            }
        }
    }
    format!(
        "table inet kube-proxy {{\n\
         \tchain nat-prerouting {{\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tjump services\n\t}}\n\
         \tchain nat-output {{\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}}\n\
         \tchain filter-forward {{\n\t\ttype filter hook forward priority -10; policy accept;\n\t\tjump no-endpoints\n\t}}\n\
         \tchain filter-output {{\n\t\ttype filter hook output priority -10; policy accept;\n\t\tjump no-endpoints\n\t}}\n\
         \tchain services {{\n{}\n\t}}\n\
         \tchain no-endpoints {{\n{}\n\t}}\n\
         {}\n}}\n",
        dispatch.join("\n"),
        no_endpoints.join("\n"),
        chains.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{scenarios, Outcome};

    fn plan_of(name: &str, nodes: usize, run: u32) -> Plan {
        let sc = scenarios::find(name).expect("known scenario");
        plan(
            sc,
            &PlanContext {
                prefix: "np".into(),
                nodes,
                run,
            },
        )
        .expect("plan builds")
    }

    fn has_line(p: &Plan, ns: &str, needle: &str) -> bool {
        p.ns(ns)
            .expect("namespace planned")
            .ip
            .iter()
            .any(|l| l.contains(needle))
    }

    #[test]
    fn every_scenario_plans_prefixed_unique_namespaces() {
        for sc in scenarios::SCENARIOS {
            let p = plan_of(sc.name, 2, 1);
            let mut names = p.state.namespaces.clone();
            assert!(names.iter().all(|n| n.starts_with("np-")), "{names:?}");
            names.sort();
            names.dedup();
            assert_eq!(names.len(), 7, "{}: 2 nodes + 4 pods + underlay", sc.name);
            assert_eq!(
                sc.overlay,
                p.ns("np-node-1")
                    .unwrap()
                    .ip
                    .iter()
                    .any(|l| l.contains("vxlan"))
            );
            let pods: Vec<_> = p
                .state
                .pods
                .iter()
                .map(|p| (p.name.as_str(), p.node.as_str()))
                .collect();
            assert_eq!(
                pods,
                [
                    ("pod-a", "node-1"),
                    ("pod-b", "node-1"),
                    ("pod-c", "node-2"),
                    ("pod-d", "node-2")
                ]
            );
            assert!(p.state.service("web").is_some());
            let dropped = p
                .state
                .expectations
                .iter()
                .any(|e| e.expect == Outcome::Dropped);
            assert_eq!(
                dropped,
                sc.fault.is_some(),
                "{}: faults document a failure, healthy ones none",
                sc.name
            );
        }
    }

    #[test]
    fn healthy_flavours_have_their_cni_devices() {
        let f = plan_of("flannel", 2, 1);
        assert_eq!(f.state.nodes[0].devices[..2], ["eth0", "cni0"]);
        assert!(f.state.nodes[0].devices.iter().any(|d| d == "flannel.1"));
        assert!(f.state.nodes[0].devices.iter().any(|d| d == "flannel-v6.1"));
        assert!(has_line(
            &f,
            "np-node-1",
            "route add fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink"
        ));
        assert!(f
            .ns("np-node-1")
            .unwrap()
            .bridge
            .iter()
            .any(|l| l.contains("dst fd00:198:18:2::10")));

        let c = plan_of("calico", 2, 1);
        let host = &c.state.pods[0].host_ifname;
        assert!(host.starts_with("cali") && host.len() == 15, "{host}");
        assert!(has_line(
            &c,
            "np-node-1",
            &format!("route add 10.244.1.2 dev {host}")
        ));
        assert!(has_line(
            &c,
            "np-node-1",
            &format!("route add fd00:10:244:1::2 dev {host}")
        ));
        assert!(has_line(
            &c,
            "np-pod-a",
            "route add default via 169.254.1.1 dev eth0"
        ));
        assert!(has_line(
            &c,
            "np-pod-a",
            "route add default via fe80::ecee:eeff:feee:eeee dev eth0"
        ));
        assert!(has_line(&c, "np-node-1", "vxlan.calico"));

        let b = plan_of("calico-bgp", 2, 1);
        assert!(has_line(
            &b,
            "np-node-1",
            "route add 10.244.2.0/24 via 198.18.0.12 dev eth0"
        ));
        assert!(!has_line(&b, "np-node-1", "vxlan"));

        let k = plan_of("kube-router", 2, 1);
        assert!(has_line(
            &k,
            "np-node-1",
            "route add fd00:10:244:2::/64 via fd00:198:18:2::10 dev eth0"
        ));
        assert!(!has_line(&k, "np-node-1", "vxlan"));
    }

    #[test]
    fn kube_router_onlink_fault_has_no_v6_route_to_the_other_pod_cidr() {
        let p = plan_of("kube-router-v6-onlink", 2, 1);
        assert!(!has_line(&p, "np-node-1", "route add fd00:10:244:2::/64"));
        assert!(has_line(
            &p,
            "np-node-1",
            "route add 10.244.2.0/24 via 198.18.0.12 dev eth0"
        ));
        assert!(has_line(
            &p,
            "np-node-1",
            "addr add fd00:198:18:1::10/64 dev eth0"
        ));
        assert_eq!(p.state.nodes[0].underlay_v6_prefix, 64);
    }

    #[test]
    fn calico_withdrawn_pod_has_no_ipv6() {
        let p = plan_of("calico-v6-withdrawn", 2, 1);
        let d = p.state.pod("pod-d").unwrap();
        assert_eq!(d.ipv6, None);
        assert!(d.ipv4.is_some());
        assert!(!has_line(&p, "np-pod-d", "fd00:"));
        assert!(!has_line(&p, "np-node-2", "route add fd00:10:244:2::3 "));
        assert!(has_line(
            &p,
            "np-node-2",
            "route add blackhole fd00:10:244:2::/64"
        ));
        let web = p.state.service("web").unwrap();
        assert!(!web
            .endpoints
            .iter()
            .any(|e| e.ip().to_string() == "fd00:10:244:2::3"));
        assert!(p
            .state
            .expectations
            .iter()
            .any(|e| e.to == "fd00:10:244:2::3" && e.expect == Outcome::Dropped));
    }

    #[test]
    fn flannel_missing_v6_has_no_v6_overlay() {
        let p = plan_of("flannel-v6-missing", 2, 1);
        assert!(!has_line(&p, "np-node-1", "flannel-v6.1"));
        assert!(has_line(&p, "np-node-1", "flannel.1"));
        assert!(has_line(&p, "np-pod-a", "addr add fd00:10:244:1::2/64"));
    }

    #[test]
    fn k0s_kubernetes_service_has_only_an_ipv6_endpoint_and_a_reject_rule() {
        let p = plan_of("k0s-service-family", 2, 1);
        let k = p.state.service("kubernetes").unwrap();
        assert_eq!(k.cluster_ips, [IpAddr::from([10, 96, 0, 1])]);
        assert!(k.endpoints.iter().all(|e| e.is_ipv6()));
        let nft = p.ns("np-node-2").unwrap().nft.as_deref().unwrap();
        assert!(
            nft.contains("ip daddr 10.96.0.1 tcp dport 443 reject"),
            "{nft}"
        );
        assert!(nft.contains("dnat ip6 to [fd00:10:244:1::3]:8080"), "{nft}");
    }

    #[test]
    fn vcluster_service_family_flips_between_runs() {
        let one = plan_of("vcluster-service-flip", 2, 1);
        let two = plan_of("vcluster-service-flip", 2, 2);
        let (w1, w2) = (
            one.state.service("web").unwrap(),
            two.state.service("web").unwrap(),
        );
        assert!(
            w1.cluster_ips.iter().all(IpAddr::is_ipv4)
                && w2.cluster_ips.iter().all(IpAddr::is_ipv6)
        );
        assert_eq!(w1.stale_cluster_ips, w2.cluster_ips);
        assert_eq!(w2.stale_cluster_ips, w1.cluster_ips);
        assert!(w1.endpoints.iter().all(|e| e.is_ipv4()));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let sc = scenarios::find("flannel").unwrap();
        let ctx = |nodes, prefix: &str| PlanContext {
            prefix: prefix.into(),
            nodes,
            run: 1,
        };
        assert!(matches!(
            plan(sc, &ctx(0, "np")),
            Err(LabError::Nodes { .. })
        ));
        assert!(matches!(
            plan(sc, &ctx(MAX_NODES + 1, "np")),
            Err(LabError::Nodes { .. })
        ));
        assert!(matches!(
            plan(sc, &ctx(2, "Bad/")),
            Err(LabError::Prefix(_))
        ));
        let fault = scenarios::find("calico-v6-withdrawn").unwrap();
        assert!(matches!(
            plan(fault, &ctx(1, "np")),
            Err(LabError::Nodes { .. })
        ));
        let single = plan(sc, &ctx(1, "np")).unwrap();
        assert_eq!(single.state.pods.len(), 2);
        let eight = plan(sc, &ctx(MAX_NODES, "np")).unwrap();
        assert_eq!(eight.state.pods.last().unwrap().name, "pod-p");
    }
}
