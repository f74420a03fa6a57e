//! The scenario catalogue: healthy flavours and one fault per seed incident, with the
//! connectivity each one documents.
use super::state::{Expectation, Family, Flavour, LabState, Outcome};

/// The data-path fault a scenario injects (`None` for a healthy cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Seed 000: node IPv6 addresses are /64 inside a wider node network, so the peers do not
    /// look on-link and no direct route to the other nodes' IPv6 pod CIDRs is installed.
    V6NotOnLink,
    /// Seed 001: one pod lost its IPv6 address and the node its /128 route to it.
    V6Withdrawn,
    /// Seed 002: the IPv6 overlay (flannel-v6.1 and its routes) was never set up.
    V6OverlayMissing,
    /// Seed 003: `kubernetes` Service is IPv4 while its only endpoint is IPv6.
    ServiceFamilyMismatch,
    /// Seed 004: Service family alternates between runs; clients hold the old ClusterIP.
    ServiceFamilyFlip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub flavour: Flavour,
    pub description: &'static str,
    /// Seed incident id (docs/incidents.md).
    pub seed: Option<&'static str>,
    pub fault: Option<Fault>,
    /// Pod traffic between nodes is encapsulated (VXLAN) rather than routed on the underlay.
    pub overlay: bool,
}

impl Scenario {
    /// Fault scenarios name pods on two nodes.
    pub fn min_nodes(&self) -> usize {
        if self.fault.is_some() {
            2
        } else {
            1
        }
    }
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "flannel",
        flavour: Flavour::Flannel,
        description: "healthy flannel: cni0 bridge, flannel.1 + flannel-v6.1 VXLAN, dual-stack",
        seed: None,
        overlay: true,
        fault: None,
    },
    Scenario {
        name: "calico",
        flavour: Flavour::Calico,
        description: "healthy calico: cali* veths, /32+/128 routes, 169.254.1.1/fe80 gateway, VXLAN",
        seed: None,
        overlay: true,
        fault: None,
    },
    Scenario {
        name: "calico-bgp",
        flavour: Flavour::Calico,
        description: "healthy calico without overlay: routes to other nodes' blocks via their node IPs",
        seed: None,
        overlay: false,
        fault: None,
    },
    Scenario {
        name: "kube-router",
        flavour: Flavour::KubeRouter,
        description: "healthy kube-router: kube-bridge, direct routes between nodes, no overlay",
        seed: None,
        overlay: false,
        fault: None,
    },
    Scenario {
        name: "kube-router-v6-onlink",
        flavour: Flavour::KubeRouter,
        description: "node IPv6 /64 in a /59 network: no route to remote IPv6 pod CIDRs, cross-node IPv6 fails",
        seed: Some("000_04c67b691f3bbe73"),
        overlay: false,
        fault: Some(Fault::V6NotOnLink),
    },
    Scenario {
        name: "calico-v6-withdrawn",
        flavour: Flavour::Calico,
        description: "calico pod-d lost its IPv6 address and /128 route: IPv4 to it works, IPv6 fails",
        seed: Some("001_34ee7e931cfe694d"),
        overlay: true,
        fault: Some(Fault::V6Withdrawn),
    },
    Scenario {
        name: "flannel-v6-missing",
        flavour: Flavour::Flannel,
        description: "flannel IPv6 overlay never set up: same-node IPv6 works, cross-node IPv6 fails, IPv4 fine",
        seed: Some("002_c2e545a9675db600"),
        overlay: true,
        fault: Some(Fault::V6OverlayMissing),
    },
    Scenario {
        name: "k0s-service-family",
        flavour: Flavour::KubeRouter,
        description: "svc/kubernetes has IPv4 ClusterIP 10.96.0.1 but only an IPv6 endpoint: rejected",
        seed: Some("003_d3b8aa09cf3cadff"),
        overlay: false,
        fault: Some(Fault::ServiceFamilyMismatch),
    },
    Scenario {
        name: "vcluster-service-flip",
        flavour: Flavour::Flannel,
        description: "svc/web family flips IPv4/IPv6 on every `lab up`; clients hold the old ClusterIP",
        seed: Some("004_c0342bada0fbaa70"),
        overlay: true,
        fault: Some(Fault::ServiceFamilyFlip),
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}

fn flow(from: &str, to: &str, family: Family) -> Expectation {
    Expectation {
        from: from.into(),
        to: to.into(),
        family,
        expect: Outcome::Delivered,
        at: None,
        cause: None,
    }
}

fn dropped(from: &str, to: &str, family: Family, at: &str, cause: String) -> Expectation {
    Expectation {
        expect: Outcome::Dropped,
        at: Some(at.into()),
        cause: Some(cause),
        ..flow(from, to, family)
    }
}

fn bracket(ip: &std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(*ip, port).to_string()
}

/// The documented connectivity of a built lab: same-node, cross-node both ways and pod to
/// Service, in both families, plus the flows each fault is about.
pub(crate) fn expectations(sc: &Scenario, st: &LabState) -> Vec<Expectation> {
    let on = |node: &str| -> Vec<&str> {
        st.pods
            .iter()
            .filter(|p| p.node == node)
            .map(|p| p.name.as_str())
            .collect()
    };
    let local = on("node-1");
    let remote = on("node-2");
    let mut out = Vec::new();
    for fam in [Family::Ipv4, Family::Ipv6] {
        if let [a, b, ..] = local[..] {
            out.push(flow(a, b, fam));
        }
        if let (Some(a), Some(c)) = (local.first(), remote.first()) {
            out.push(flow(a, c, fam));
            out.push(flow(c, a, fam));
        }
        let web_serves = st
            .service("web")
            .is_some_and(|s| s.cluster_ips.iter().any(|ip| Family::of(ip) == fam));
        if web_serves {
            out.extend(local.first().map(|a| flow(a, "svc/web", fam)));
            out.extend(remote.first().map(|c| flow(c, "svc/web", fam)));
        }
    }
    let v6 = Family::Ipv6;
    let (Some(a), Some(c)) = (local.first().copied(), remote.first().copied()) else {
        return out;
    };
    let mark = |out: &mut Vec<Expectation>, from: &str, to: &str, at: &str, cause: &str| {
        for e in out
            .iter_mut()
            .filter(|e| e.from == from && e.to == to && e.family == v6)
        {
            *e = dropped(from, to, v6, at, cause.to_string());
        }
    };
    let (n1, n2) = (&st.nodes[0], &st.nodes[1]);
    match sc.fault {
        None => {}
        Some(Fault::V6NotOnLink) => {
            let why = |src: &super::state::LabNode, dst: &super::state::LabNode| {
                format!(
                    "{} has no route to {}: its address {}/{} does not cover {} ({}), so kube-router saw no \
                     on-link peer and installed no direct route; the packet leaves by the default route and \
                     the underlay gateway has no route to the pod CIDR",
                    src.name, dst.pod_cidr_v6, src.underlay_v6, src.underlay_v6_prefix, dst.name, dst.underlay_v6
                )
            };
            mark(&mut out, a, c, "underlay", &why(n1, n2));
            mark(&mut out, c, a, "underlay", &why(n2, n1));
            // svc/web's only endpoint is on node-1: DNAT on node-2 then the same missing route.
            mark(&mut out, c, "svc/web", "underlay", &why(n2, n1));
        }
        Some(Fault::V6Withdrawn) => {
            let pod = remote.last().copied().unwrap_or(c);
            let addr = super::addresses::pod_addrs(2, remote.len() - 1)
                .1
                .to_string();
            let cause = format!(
                "{pod} has no IPv6 address (withdrawn; only fe80::/64 is left on its eth0) and {} has no /128 \
                 route to {addr} through its cali veth: the node's blackhole route for {} discards it",
                n2.name, n2.pod_cidr_v6
            );
            for from in [a, c] {
                out.push(flow(from, pod, Family::Ipv4));
                out.push(dropped(from, &addr, v6, &n2.name, cause.clone()));
            }
        }
        Some(Fault::V6OverlayMissing) => {
            let why = |src: &super::state::LabNode, dst: &super::state::LabNode| {
                format!(
                    "flannel set up only IPv4: {} has no flannel-v6.1 device and no route to {}; the packet \
                     leaves by the default route and the underlay gateway drops it (IPv4 works, so \
                     dual-stack clients silently use IPv4)",
                    src.name, dst.pod_cidr_v6
                )
            };
            mark(&mut out, a, c, "underlay", &why(n1, n2));
            mark(&mut out, c, a, "underlay", &why(n2, n1));
            // svc/web's only endpoint is on node-2.
            mark(&mut out, a, "svc/web", "underlay", &why(n1, n2));
        }
        Some(Fault::ServiceFamilyMismatch) => {
            if let Some(k) = st.service("kubernetes") {
                let cause = format!(
                    "svc/kubernetes has only the IPv4 ClusterIP {} but its only endpoint is {}: no IPv4 \
                     endpoint, so kube-proxy's rule rejects it (Service/Endpoints family mismatch)",
                    k.cluster_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
                    k.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
                );
                out.push(dropped(a, "svc/kubernetes", Family::Ipv4, &n1.name, cause));
                for ep in &k.endpoints {
                    out.push(flow(a, &ep.to_string(), Family::of(&ep.ip())));
                }
            }
        }
        Some(Fault::ServiceFamilyFlip) => {
            if let Some(web) = st.service("web") {
                for ip in &web.stale_cluster_ips {
                    let cause = format!(
                        "svc/web is now {} only (run {}); clients still hold the {} ClusterIP {ip} from the \
                         previous run, which no rule translates: it leaves by the default route and the \
                         underlay gateway drops it",
                        web.cluster_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
                        st.run,
                        Family::of(ip)
                    );
                    out.push(dropped(
                        a,
                        &bracket(ip, web.port),
                        Family::of(ip),
                        "underlay",
                        cause,
                    ));
                }
            }
        }
    }
    out
}
