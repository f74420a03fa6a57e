//! Service-family diagnosis from the API objects alone: what the Service, its EndpointSlices,
//! the client pod and the cluster say about which family can work, before any packet is sent.
//! Each finding is one sentence, for one family (or both); the trace report carries them as
//! evidence of that family's verdict.
use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use netpath_core::model::Family;

use super::convert::{
    cluster_ips, endpoint_ready, family_named, pod_ips, pod_name, service_families, service_name,
    service_policy, slices_of, Snapshot,
};

/// One fact from the API that bears on a family's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The family it is about (`None`: both).
    pub family: Option<Family>,
    pub text: String,
}

impl Finding {
    fn new(family: Option<Family>, text: String) -> Self {
        Finding {
            family,
            text: format!("kubernetes: {text}"),
        }
    }

    /// Whether it bears on `family`'s verdict.
    pub fn about(&self, family: Family) -> bool {
        self.family.is_none_or(|f| f == family)
    }
}

fn names(families: &[Family]) -> String {
    if families.is_empty() {
        return "none".into();
    }
    families
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ready and total endpoints of one family in `svc`'s slices, with the slices' names.
fn endpoints_of(
    svc: &Service,
    slices: &[EndpointSlice],
    family: Family,
) -> (usize, usize, Vec<String>) {
    let (mut ready, mut total, mut names) = (0, 0, Vec::new());
    for s in slices_of(svc, slices) {
        if family_named(&s.address_type) != Some(family) {
            continue;
        }
        names.push(s.metadata.name.clone().unwrap_or_default());
        for e in &s.endpoints {
            total += e.addresses.len();
            if endpoint_ready(e) {
                ready += e.addresses.len();
            }
        }
    }
    (ready, total, names)
}

/// What the API says about reaching `svc` from `client` (a pod, if FROM was one).
pub fn service_findings(
    snap: &Snapshot,
    svc: &Service,
    client: Option<&Pod>,
    default_ns: &str,
) -> Vec<Finding> {
    let name = service_name(svc, default_ns);
    let fams = service_families(svc);
    let policy = service_policy(svc);
    let ips = cluster_ips(svc);
    let mut out = Vec::new();
    if ips.is_empty() {
        out.push(Finding::new(
            None,
            format!("{name} has no ClusterIP (headless): there is no Service address to probe"),
        ));
    }
    for family in Family::BOTH {
        let (ready, total, slice_names) = endpoints_of(svc, &snap.slices, family);
        let has = fams.contains(&family);
        if !has && ready > 0 {
            // The classic mix-up: endpoints of a family the Service has no ClusterIP of.
            out.push(Finding::new(
                None,
                format!(
                    "{name} has ipFamilies [{}] ({policy}) but its EndpointSlice {} holds {ready} \
                     ready {} endpoint(s): no ClusterIP of that family translates to them",
                    names(&fams),
                    slice_names.join(", "),
                    family.name()
                ),
            ));
        }
        if has && ready == 0 {
            out.push(Finding::new(
                Some(family),
                if total == 0 {
                    format!(
                        "{name} has an {} ClusterIP but no {} endpoints in any EndpointSlice",
                        family.name(),
                        family.name()
                    )
                } else {
                    format!(
                        "{name} has an {} ClusterIP but none of its {total} {} endpoint(s) is ready \
                         (EndpointSlice {})",
                        family.name(),
                        family.name(),
                        slice_names.join(", ")
                    )
                },
            ));
        }
        if !has && snap.has_family(family) && fams.len() == 1 {
            out.push(Finding::new(
                Some(family),
                format!(
                    "{name} is single-stack {} ({policy}) in a cluster that also gives pods {} \
                     addresses: {} clients have no ClusterIP for it",
                    names(&fams),
                    family.name(),
                    family.name()
                ),
            ));
        }
    }
    if let Some(pod) = client {
        let client_fams: Vec<Family> = Family::BOTH
            .into_iter()
            .filter(|f| pod_ips(pod).iter().any(|ip| Family::of(ip) == *f))
            .collect();
        if !fams.is_empty() && !fams.iter().any(|f| client_fams.contains(f)) {
            out.push(Finding::new(
                None,
                format!(
                    "client {} has only {} addresses while {name} is {} only: they share no family",
                    pod_name(pod),
                    names(&client_fams),
                    names(&fams)
                ),
            ));
        }
    }
    out
}

/// What the API says about a pod's own families in this cluster.
pub fn pod_findings(snap: &Snapshot, pod: &Pod) -> Vec<Finding> {
    let ips = pod_ips(pod);
    let host_net = super::convert::host_network(pod);
    let mut out = Vec::new();
    for family in Family::BOTH {
        if ips.iter().any(|ip| Family::of(ip) == family) || !snap.has_family(family) {
            continue;
        }
        let listed = ips
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        out.push(Finding::new(
            Some(family),
            format!(
                "{} has no {} podIP (status.podIPs: [{listed}]) although the cluster gives pods {} \
                 addresses{}",
                pod_name(pod),
                family.name(),
                family.name(),
                if host_net {
                    " (it uses the host network: its node has none of that family)"
                } else {
                    ""
                }
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::convert::tests::{cluster, pod, service, slice};
    use super::*;

    fn texts(f: &[Finding]) -> String {
        f.iter()
            .map(|f| format!("[{:?}] {}", f.family, f.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_healthy_dual_stack_service_has_no_findings() {
        let s = cluster();
        let a = &s.pods[0];
        assert_eq!(
            service_findings(&s, &s.services[0], Some(a), "default"),
            vec![]
        );
        assert_eq!(pod_findings(&s, a), vec![]);
    }

    #[test]
    fn ipv4_service_with_ipv6_endpoints() {
        let mut s = cluster();
        s.services = vec![service(
            "default",
            "web",
            &["10.96.0.10"],
            &["IPv4"],
            "SingleStack",
        )];
        s.slices = vec![slice(
            "default",
            "web",
            "IPv6",
            &[("fd00:10:244:2::2", true)],
        )];
        let f = service_findings(&s, &s.services[0], Some(&s.pods[0]), "default");
        let t = texts(&f);
        assert!(
            f.iter().any(|f| f.family.is_none()
                && f.text.contains("ipFamilies [IPv4]")
                && f.text.contains("1 ready IPv6")),
            "{t}"
        );
        assert!(
            f.iter()
                .any(|f| f.family == Some(Family::Ipv4) && f.text.contains("no IPv4 endpoints")),
            "{t}"
        );
        assert!(
            f.iter().any(|f| f.family == Some(Family::Ipv6)
                && f.text.contains("single-stack IPv4")
                && f.text.contains("SingleStack")),
            "{t}"
        );
        assert!(f.iter().all(|f| f.text.starts_with("kubernetes: ")), "{t}");
    }

    #[test]
    fn no_ready_endpoints_of_a_family() {
        let mut s = cluster();
        s.slices[1] = slice("default", "web", "IPv6", &[("fd00:10:244:2::2", false)]);
        let f = service_findings(&s, &s.services[0], None, "default");
        assert_eq!(f.len(), 1, "{}", texts(&f));
        assert_eq!(f[0].family, Some(Family::Ipv6));
        assert!(
            f[0].text
                .contains("none of its 1 IPv6 endpoint(s) is ready"),
            "{}",
            f[0].text
        );
        assert!(f[0].about(Family::Ipv6) && !f[0].about(Family::Ipv4));
    }

    #[test]
    fn client_and_service_share_no_family() {
        let mut s = cluster();
        s.services = vec![service(
            "default",
            "web6",
            &["fd00:10:96::10"],
            &["IPv6"],
            "SingleStack",
        )];
        s.slices = vec![slice(
            "default",
            "web6",
            "IPv6",
            &[("fd00:10:244:2::2", true)],
        )];
        let v4_only = pod("other", "pod-a", "node-2", &["10.244.2.7"]);
        let f = service_findings(&s, &s.services[0], Some(&v4_only), "default");
        let t = texts(&f);
        assert!(
            f.iter().any(|f| f.family.is_none()
                && f.text.contains("client other/pod-a has only IPv4")
                && f.text.contains("IPv6 only")),
            "{t}"
        );
    }

    #[test]
    fn a_pod_without_an_ipv6_address_in_a_dual_stack_cluster() {
        let s = cluster();
        let f = pod_findings(&s, &s.pods[2]);
        assert_eq!(f.len(), 1, "{}", texts(&f));
        assert_eq!(f[0].family, Some(Family::Ipv6));
        assert!(
            f[0].text.contains("other/pod-a has no IPv6 podIP"),
            "{}",
            f[0].text
        );
        // In an IPv4-only cluster that is normal.
        let mut v4 = cluster();
        for n in &mut v4.nodes {
            n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.0.0/16".into()]);
        }
        assert_eq!(pod_findings(&v4, &v4.pods[2]), vec![]);
    }
}
