//! Kubernetes objects to netpath's model, as pure functions over k8s-openapi types: what a
//! name (`default/web-0`, `svc/web`, `node/node-1`, an address) means in one snapshot of the
//! cluster, and the [`Endpoint`] it becomes.
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use netpath_core::{
    model::{prefix_contains, Endpoint, EndpointKind, Family, StaleService},
    world::ResolveError,
};

/// Label EndpointSlices carry to name their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation on a pod (or node) naming its network namespace on its node (`ip netns` name),
/// when whoever runs it knows it (the lab can). Without it the namespace holding the pod's
/// address is used (a node's: its root namespace).
pub const NETNS_ANNOTATION: &str = "netpath.io/netns";
/// The same, as the lab's API server writes it.
pub const LAB_NETNS_ANNOTATION: &str = "lab.netpath.dev/netns";
/// Annotation on a Service listing, comma-separated, ClusterIPs it had before (the lab's
/// "Service whose family flips" scenario records them), so a client still holding one is told.
pub const PREVIOUS_CLUSTER_IPS_ANNOTATION: &str = "netpath.io/previous-cluster-ips";
/// The same, as the lab's API server writes it.
pub const LAB_STALE_IPS_ANNOTATION: &str = "lab.netpath.dev/stale-cluster-ips";

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    keys: &[&str],
) -> Option<&'a String> {
    let a = meta.annotations.as_ref()?;
    keys.iter().find_map(|k| a.get(*k))
}

/// What the user typed, parsed (no API asked yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `NS/POD`, `pod/NAME`, `pod/NS/NAME`; namespace `None`: the default one.
    Pod { ns: Option<String>, name: String },
    /// `svc/NAME`, `svc/NS/NAME` (also `service/`).
    Service { ns: Option<String>, name: String },
    /// `node/NAME`.
    Node(String),
    /// A bare `NAME`: a pod in the default namespace, else a node.
    Bare(String),
    /// `10.0.0.1`, `fd00::1`, `10.0.0.1:80`, `[fd00::1]:80`.
    Addr(IpAddr, Option<u16>),
}

fn invalid(spec: &str, reason: impl Into<String>) -> ResolveError {
    ResolveError::Invalid {
        spec: spec.into(),
        reason: reason.into(),
    }
}

/// A Kubernetes object name (DNS label or subdomain): lowercase alphanumerics, `-` and `.`.
fn check_name(spec: &str, what: &str, name: &str) -> Result<String, ResolveError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(name.to_string())
    } else {
        Err(invalid(
            spec,
            format!("{name:?} is not a valid {what} name (lowercase letters, digits, '-', '.')"),
        ))
    }
}

/// `[NS/]NAME` after a `pod/` or `svc/` prefix.
fn ns_and_name(
    spec: &str,
    what: &str,
    rest: &str,
) -> Result<(Option<String>, String), ResolveError> {
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [name] => Ok((None, check_name(spec, what, name)?)),
        [ns, name] => Ok((
            Some(check_name(spec, "namespace", ns)?),
            check_name(spec, what, name)?,
        )),
        _ => Err(invalid(
            spec,
            format!("expected {what}/NAME or {what}/NAMESPACE/NAME"),
        )),
    }
}

impl Spec {
    pub fn parse(spec: &str) -> Result<Spec, ResolveError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(invalid(spec, "empty endpoint"));
        }
        if let Ok(ip) = spec.parse::<IpAddr>() {
            return Ok(Spec::Addr(ip, None));
        }
        if let Ok(sa) = spec.parse::<SocketAddr>() {
            return Ok(Spec::Addr(sa.ip(), Some(sa.port())));
        }
        for prefix in ["svc/", "service/", "services/"] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let (ns, name) = ns_and_name(spec, "svc", rest)?;
                return Ok(Spec::Service { ns, name });
            }
        }
        for prefix in ["pod/", "pods/", "po/"] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let (ns, name) = ns_and_name(spec, "pod", rest)?;
                return Ok(Spec::Pod { ns, name });
            }
        }
        for prefix in ["node/", "nodes/", "no/"] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                return Ok(Spec::Node(check_name(spec, "node", rest)?));
            }
        }
        match spec.split('/').collect::<Vec<_>>().as_slice() {
            [name] => Ok(Spec::Bare(check_name(spec, "pod or node", name)?)),
            [ns, name] => Ok(Spec::Pod {
                ns: Some(check_name(spec, "namespace", ns)?),
                name: check_name(spec, "pod", name)?,
            }),
            _ => Err(invalid(
                spec,
                "expected NAMESPACE/POD, pod/NAME, svc/NAME, node/NAME or an address",
            )),
        }
    }
}

/// Everything read from the API that names depend on: one list of each kind.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
}

/// What a name turned out to be.
#[derive(Debug, Clone, Copy)]
pub enum Found<'a> {
    Pod(&'a Pod),
    /// A Service, reached through `ip` when an address named it.
    Service(&'a Service, Option<IpAddr>),
    Node(&'a Node),
    /// An address a Service used to have.
    Stale(&'a Service, IpAddr),
    /// An address nothing holds; the node whose pod CIDR contains it, if any.
    Address(IpAddr, Option<&'a Node>),
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn ns_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// `status.podIPs` (else `status.podIP`), parsed, in API order.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    ips
}

pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// A node's `InternalIP` addresses.
pub fn node_internal_ips(node: &Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// `spec.podCIDRs` (else `spec.podCIDR`).
pub fn node_pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    match &spec.pod_cidrs {
        Some(c) if !c.is_empty() => c.clone(),
        _ => spec.pod_cidr.iter().cloned().collect(),
    }
}

/// `10.244.1.0/24` contains `ip` (false for text that is not a CIDR).
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    match (net.parse::<IpAddr>(), len.parse::<u8>()) {
        (Ok(net), Ok(len)) => prefix_contains(net, len, ip),
        _ => false,
    }
}

/// `spec.clusterIPs` (else `spec.clusterIP`), parsed; `None` (headless) is left out.
pub fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            spec.cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    ips
}

/// `IPv4`/`IPv6` as a family.
pub fn family_named(name: &str) -> Option<Family> {
    match name {
        "IPv4" => Some(Family::Ipv4),
        "IPv6" => Some(Family::Ipv6),
        _ => None,
    }
}

/// `spec.ipFamilies`, else the families of its ClusterIPs.
pub fn service_families(svc: &Service) -> Vec<Family> {
    let declared: Vec<Family> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| family_named(f))
        .collect();
    if !declared.is_empty() {
        return declared;
    }
    let mut fams: Vec<Family> = cluster_ips(svc).iter().map(Family::of).collect();
    fams.dedup();
    fams
}

pub fn service_policy(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.ip_family_policy.clone())
        .unwrap_or_else(|| "SingleStack".into())
}

/// The Service's first port.
pub fn service_port(svc: &Service) -> Option<u16> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| u16::try_from(p.port).ok())
}

/// `netpath.io/previous-cluster-ips` (or the lab's `lab.netpath.dev/stale-cluster-ips`).
pub fn previous_cluster_ips(svc: &Service) -> Vec<IpAddr> {
    annotation(
        &svc.metadata,
        &[PREVIOUS_CLUSTER_IPS_ANNOTATION, LAB_STALE_IPS_ANNOTATION],
    )
    .map(|v| {
        v.split(',')
            .filter_map(|ip| ip.trim().parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// The EndpointSlices of `svc` (same namespace, `kubernetes.io/service-name` label).
pub fn slices_of<'a>(svc: &Service, slices: &'a [EndpointSlice]) -> Vec<&'a EndpointSlice> {
    let (ns, name) = (ns_of(&svc.metadata), name_of(&svc.metadata));
    slices
        .iter()
        .filter(|s| {
            ns_of(&s.metadata) == ns
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == name)
        })
        .collect()
}

/// An endpoint is ready unless it says otherwise (the API's own rule).
pub fn endpoint_ready(e: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

/// The slice's port for the Service's first port (matched by name), else its first port.
fn slice_port(slice: &EndpointSlice, svc: &Service) -> Option<u16> {
    let want = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| p.name.clone());
    let ports = slice.ports.as_ref()?;
    ports
        .iter()
        .find(|p| p.name == want)
        .or(ports.first())
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
}

/// The ready backends of `svc`, of either family, as address:port (port 0 when the slice has
/// none).
pub fn service_backends(svc: &Service, slices: &[EndpointSlice]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices_of(svc, slices) {
        let port = slice_port(slice, svc).unwrap_or(0);
        for e in slice.endpoints.iter().filter(|e| endpoint_ready(e)) {
            for a in &e.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    let sa = SocketAddr::new(ip, port);
                    if !out.contains(&sa) {
                        out.push(sa);
                    }
                }
            }
        }
    }
    out
}

/// `NS/NAME` of a pod.
pub fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", ns_of(&pod.metadata), name_of(&pod.metadata))
}

/// `svc/NAME` in the default namespace, else `svc/NS/NAME`.
pub fn service_name(svc: &Service, default_ns: &str) -> String {
    let ns = ns_of(&svc.metadata);
    if ns == default_ns {
        format!("svc/{}", name_of(&svc.metadata))
    } else {
        format!("svc/{ns}/{}", name_of(&svc.metadata))
    }
}

/// The namespace recorded by whoever runs the pod or node ([`NETNS_ANNOTATION`]).
pub fn annotated_netns(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    annotation(meta, &[NETNS_ANNOTATION, LAB_NETNS_ANNOTATION]).cloned()
}

/// A pod as an endpoint; `netns` is its namespace on its node, where known.
pub fn pod_endpoint(pod: &Pod, netns: Option<String>) -> Endpoint {
    let mut ep = Endpoint::new(pod_name(pod), EndpointKind::Pod).with_addrs(pod_ips(pod));
    ep.node = pod_node(pod).map(str::to_string);
    ep.netns = netns;
    ep
}

/// A node as an endpoint (its InternalIPs); `netns` is its own namespace (`root` on a real
/// node).
pub fn node_endpoint(node: &Node, netns: Option<String>) -> Endpoint {
    let name = name_of(&node.metadata).to_string();
    let mut ep =
        Endpoint::new(name.clone(), EndpointKind::Node).with_addrs(node_internal_ips(node));
    ep.node = Some(name);
    ep.netns = netns;
    ep
}

/// A Service as an endpoint: its ClusterIPs (only `via` when an address named it), its port
/// and its ready backends.
pub fn service_endpoint(
    svc: &Service,
    slices: &[EndpointSlice],
    via: Option<IpAddr>,
    default_ns: &str,
) -> Endpoint {
    let mut ep = Endpoint::new(service_name(svc, default_ns), EndpointKind::Service);
    ep = match via {
        Some(ip) => ep.with_addrs([ip]),
        None => ep.with_addrs(cluster_ips(svc)),
    };
    ep.port = service_port(svc);
    ep.backends = service_backends(svc, slices);
    ep
}

/// A bare address; `node`: the node whose pod CIDR holds it.
pub fn address_endpoint(ip: IpAddr, node: Option<&Node>) -> Endpoint {
    let mut ep = Endpoint::new(ip.to_string(), EndpointKind::Address).with_addrs([ip]);
    ep.node = node.map(|n| name_of(&n.metadata).to_string());
    ep
}

/// A former ClusterIP of `svc`.
pub fn stale_endpoint(svc: &Service, ip: IpAddr, default_ns: &str) -> Endpoint {
    let name = service_name(svc, default_ns);
    let mut ep = address_endpoint(ip, None);
    ep.name = format!("{ip} (stale ClusterIP of {name})");
    ep.port = service_port(svc);
    ep.stale_of = Some(StaleService {
        service: name,
        cluster_ips: cluster_ips(svc),
    });
    ep
}

impl Snapshot {
    fn pod(&self, ns: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| ns_of(&p.metadata) == ns && name_of(&p.metadata) == name)
    }

    fn service(&self, ns: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| ns_of(&s.metadata) == ns && name_of(&s.metadata) == name)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| name_of(&n.metadata) == name)
    }

    /// Whether the cluster gives pods addresses of `family` (a node has a pod CIDR of it, or,
    /// without pod CIDRs, a pod has an address of it).
    pub fn has_family(&self, family: Family) -> bool {
        let cidrs: Vec<String> = self.nodes.iter().flat_map(node_pod_cidrs).collect();
        if !cidrs.is_empty() {
            return cidrs.iter().any(|c| {
                c.split_once('/')
                    .and_then(|(net, _)| net.parse::<IpAddr>().ok())
                    .is_some_and(|ip| Family::of(&ip) == family)
            });
        }
        self.pods
            .iter()
            .flat_map(pod_ips)
            .any(|ip| Family::of(&ip) == family)
    }

    fn unknown(&self, spec: &str, what: &str, default_ns: &str) -> ResolveError {
        let mut known: Vec<String> = match what {
            "svc" => self
                .services
                .iter()
                .map(|s| service_name(s, default_ns))
                .collect(),
            "node" => self
                .nodes
                .iter()
                .map(|n| format!("node/{}", name_of(&n.metadata)))
                .collect(),
            _ => self.pods.iter().map(pod_name).collect(),
        };
        known.sort();
        const SHOWN: usize = 12;
        let more = known.len().saturating_sub(SHOWN);
        known.truncate(SHOWN);
        if more > 0 {
            known.push(format!("... {more} more"));
        }
        if known.is_empty() {
            known.push(format!("(no {what}s)"));
        }
        ResolveError::Unknown {
            spec: spec.into(),
            known: known.join(", "),
        }
    }

    /// What `spec` names in this snapshot; `default_ns` for names without a namespace.
    pub fn find(&self, spec: &str, default_ns: &str) -> Result<Found<'_>, ResolveError> {
        match Spec::parse(spec)? {
            Spec::Pod { ns, name } => self
                .pod(ns.as_deref().unwrap_or(default_ns), &name)
                .map(Found::Pod)
                .ok_or_else(|| self.unknown(spec, "pod", default_ns)),
            Spec::Service { ns, name } => self
                .service(ns.as_deref().unwrap_or(default_ns), &name)
                .map(|s| Found::Service(s, None))
                .ok_or_else(|| self.unknown(spec, "svc", default_ns)),
            Spec::Node(name) => self
                .node(&name)
                .map(Found::Node)
                .ok_or_else(|| self.unknown(spec, "node", default_ns)),
            Spec::Bare(name) => match (self.pod(default_ns, &name), self.node(&name)) {
                (Some(_), Some(_)) => Err(invalid(
                    spec,
                    format!(
                        "ambiguous: both pod {default_ns}/{name} and node {name}; say \
                         pod/{name} or node/{name}"
                    ),
                )),
                (Some(p), None) => Ok(Found::Pod(p)),
                (None, Some(n)) => Ok(Found::Node(n)),
                (None, None) => Err(self.unknown(spec, "pod", default_ns)),
            },
            Spec::Addr(ip, _) => self.find_ip(spec, ip),
        }
    }

    /// Who holds `ip`: a pod (not host-network: those share their node's addresses), a node,
    /// a Service; else a former ClusterIP, else an address (in a node's pod CIDR or not).
    pub fn find_ip(&self, spec: &str, ip: IpAddr) -> Result<Found<'_>, ResolveError> {
        let pods: Vec<&Pod> = self
            .pods
            .iter()
            .filter(|p| !host_network(p) && pod_ips(p).contains(&ip))
            .collect();
        // A finished pod may keep its address in the API after a new one took it: only
        // running (or pending) pods count when several claim it.
        let live: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect();
        match (live.as_slice(), pods.as_slice()) {
            ([one], _) | ([], [one]) => return Ok(Found::Pod(one)),
            ([], []) => {}
            (many, _) => {
                let many = if many.is_empty() { &pods[..] } else { many };
                return Err(invalid(
                    spec,
                    format!(
                        "ambiguous: held by pods {}",
                        many.iter()
                            .map(|p| pod_name(p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if let Some(n) = self
            .nodes
            .iter()
            .find(|n| node_internal_ips(n).contains(&ip))
        {
            return Ok(Found::Node(n));
        }
        if let Some(s) = self.services.iter().find(|s| cluster_ips(s).contains(&ip)) {
            return Ok(Found::Service(s, Some(ip)));
        }
        if let Some(s) = self
            .services
            .iter()
            .find(|s| previous_cluster_ips(s).contains(&ip))
        {
            return Ok(Found::Stale(s, ip));
        }
        let node = self
            .nodes
            .iter()
            .find(|n| node_pod_cidrs(n).iter().any(|c| cidr_contains(c, ip)));
        Ok(Found::Address(ip, node))
    }

    /// The port an address spec carried (`[fd00::1]:80`).
    pub fn spec_port(spec: &str) -> Option<u16> {
        match Spec::parse(spec) {
            Ok(Spec::Addr(_, port)) => port,
            _ => None,
        }
    }

    /// `found` as an endpoint; `netns` places pods and nodes on their node.
    pub fn endpoint(
        &self,
        spec: &str,
        found: Found<'_>,
        netns: Option<String>,
        default_ns: &str,
    ) -> Endpoint {
        let port = Self::spec_port(spec);
        let mut ep = match found {
            Found::Pod(p) => pod_endpoint(p, netns),
            Found::Node(n) => node_endpoint(n, netns),
            Found::Service(s, via) => service_endpoint(s, &self.slices, via, default_ns),
            Found::Stale(s, ip) => stale_endpoint(s, ip, default_ns),
            Found::Address(ip, node) => address_endpoint(ip, node),
        };
        if port.is_some() {
            ep.port = port;
        }
        ep
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::{
            core::v1::{
                NodeAddress, NodeSpec, NodeStatus, PodIP, PodSpec, PodStatus, ServicePort,
                ServiceSpec,
            },
            discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions, EndpointPort},
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    pub fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(str::to_string),
            ..Default::default()
        }
    }

    pub fn pod(ns: &str, name: &str, node: &str, ips: &[&str]) -> Pod {
        Pod {
            metadata: meta(Some(ns), name),
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ips.first().map(|s| s.to_string()),
                pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
                ..Default::default()
            }),
        }
    }

    pub fn node(name: &str, ips: &[&str], cidrs: &[&str]) -> Node {
        Node {
            metadata: meta(None, name),
            spec: Some(NodeSpec {
                pod_cidr: cidrs.first().map(|s| s.to_string()),
                pod_cidrs: Some(cidrs.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|ip| NodeAddress {
                            address: ip.to_string(),
                            type_: "InternalIP".into(),
                        })
                        .chain([NodeAddress {
                            address: name.into(),
                            type_: "Hostname".into(),
                        }])
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    pub fn service(ns: &str, name: &str, ips: &[&str], families: &[&str], policy: &str) -> Service {
        Service {
            metadata: meta(Some(ns), name),
            spec: Some(ServiceSpec {
                cluster_ip: ips.first().map(|s| s.to_string()),
                cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
                ip_families: Some(families.iter().map(|s| s.to_string()).collect()),
                ip_family_policy: Some(policy.into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A slice of `svc` with (address, ready) endpoints on port 8080.
    pub fn slice(ns: &str, svc: &str, family: &str, eps: &[(&str, bool)]) -> EndpointSlice {
        let mut m = meta(Some(ns), &format!("{svc}-{}", family.to_lowercase()));
        m.labels = Some(BTreeMap::from([(SERVICE_NAME_LABEL.into(), svc.into())]));
        EndpointSlice {
            metadata: m,
            address_type: family.into(),
            endpoints: eps
                .iter()
                .map(|(a, ready)| SliceEndpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        }
    }

    pub fn cluster() -> Snapshot {
        let mut web = service(
            "default",
            "web",
            &["10.96.0.10", "fd00:10:96::10"],
            &["IPv4", "IPv6"],
            "PreferDualStack",
        );
        web.metadata.annotations = Some(BTreeMap::from([(
            PREVIOUS_CLUSTER_IPS_ANNOTATION.into(),
            "fd00:10:96::99".into(),
        )]));
        let mut host = pod("kube-system", "agent-x", "node-1", &["198.18.0.1"]);
        let mut pod_a = pod(
            "default",
            "pod-a",
            "node-1",
            &["10.244.1.2", "fd00:10:244:1::2"],
        );
        pod_a.metadata.annotations = Some(BTreeMap::from([(
            LAB_NETNS_ANNOTATION.into(),
            "np-pod-a".into(),
        )]));
        host.spec.as_mut().unwrap().host_network = Some(true);
        Snapshot {
            pods: vec![
                pod_a,
                pod(
                    "default",
                    "pod-c",
                    "node-2",
                    &["10.244.2.2", "fd00:10:244:2::2"],
                ),
                pod("other", "pod-a", "node-2", &["10.244.2.7"]),
                pod("default", "node-2", "node-2", &["10.244.2.9"]),
                host,
            ],
            services: vec![web],
            slices: vec![
                slice(
                    "default",
                    "web",
                    "IPv4",
                    &[("10.244.2.2", true), ("10.244.2.3", false)],
                ),
                slice("default", "web", "IPv6", &[("fd00:10:244:2::2", true)]),
            ],
            nodes: vec![
                node(
                    "node-1",
                    &["198.18.0.1", "fd00:198:18::1"],
                    &["10.244.1.0/24", "fd00:10:244:1::/64"],
                ),
                node(
                    "node-2",
                    &["198.18.0.2", "fd00:198:18::2"],
                    &["10.244.2.0/24", "fd00:10:244:2::/64"],
                ),
            ],
        }
    }

    fn ep(s: &Snapshot, spec: &str) -> Result<Endpoint, ResolveError> {
        let found = s.find(spec, "default")?;
        Ok(s.endpoint(spec, found, Some("ns".into()), "default"))
    }

    #[test]
    fn specs_parse() {
        let p = |s: &str| Spec::parse(s).unwrap();
        assert_eq!(
            p("default/web-0"),
            Spec::Pod {
                ns: Some("default".into()),
                name: "web-0".into()
            }
        );
        assert_eq!(
            p("pod/web-0"),
            Spec::Pod {
                ns: None,
                name: "web-0".into()
            }
        );
        assert_eq!(
            p("svc/kube-system/dns"),
            Spec::Service {
                ns: Some("kube-system".into()),
                name: "dns".into()
            }
        );
        assert_eq!(p("node/node-1"), Spec::Node("node-1".into()));
        assert_eq!(p("pod-a"), Spec::Bare("pod-a".into()));
        assert_eq!(
            p("[fd00::1]:80"),
            Spec::Addr("fd00::1".parse().unwrap(), Some(80))
        );
        for bad in [
            "",
            "a/b/c",
            "svc/",
            "svc/a/b/c",
            "Pod-A",
            "node/",
            "default/POD",
            "x y",
        ] {
            assert!(
                matches!(Spec::parse(bad), Err(ResolveError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pods_have_both_families_their_node_and_namespace() {
        let s = cluster();
        let a = ep(&s, "default/pod-a").unwrap();
        assert_eq!(
            (
                a.name.as_str(),
                a.kind,
                a.node.as_deref(),
                a.netns.as_deref()
            ),
            (
                "default/pod-a",
                EndpointKind::Pod,
                Some("node-1"),
                Some("ns")
            )
        );
        assert_eq!(
            (a.addr(Family::Ipv4), a.addr(Family::Ipv6)),
            (
                Some("10.244.1.2".parse().unwrap()),
                Some("fd00:10:244:1::2".parse().unwrap())
            )
        );
        assert_eq!(ep(&s, "pod/pod-a").unwrap().name, "default/pod-a");
        assert_eq!(ep(&s, "pod/other/pod-a").unwrap().name, "other/pod-a");
        let o = ep(&s, "other/pod-a").unwrap();
        assert_eq!((o.ipv4.len(), o.ipv6.len()), (1, 0));
        assert_eq!(ep(&s, "pod-a").unwrap().name, "default/pod-a");
    }

    #[test]
    fn services_carry_cluster_ips_port_and_ready_backends() {
        let s = cluster();
        let web = ep(&s, "svc/web").unwrap();
        assert_eq!((web.kind, web.port), (EndpointKind::Service, Some(80)));
        assert_eq!((web.ipv4.len(), web.ipv6.len()), (1, 1));
        // The not-ready 10.244.2.3 is not a backend.
        assert_eq!(
            web.backends,
            vec![
                "10.244.2.2:8080".parse().unwrap(),
                "[fd00:10:244:2::2]:8080".parse().unwrap()
            ]
        );
        assert_eq!(ep(&s, "svc/default/web").unwrap().name, "svc/web");
        let via = ep(&s, "[fd00:10:96::10]:8443").unwrap();
        assert_eq!(
            (via.kind, via.ipv4.len(), via.port),
            (EndpointKind::Service, 0, Some(8443))
        );
    }

    #[test]
    fn addresses_resolve_to_their_owner() {
        let s = cluster();
        assert_eq!(ep(&s, "10.244.2.2").unwrap().name, "default/pod-c");
        // A node address is the node, not the host-network pod sharing it.
        let n = ep(&s, "198.18.0.1").unwrap();
        assert_eq!((n.kind, n.name.as_str()), (EndpointKind::Node, "node-1"));
        assert_eq!(
            n.ipv6,
            vec!["fd00:198:18::1".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        let stale = ep(&s, "fd00:10:96::99").unwrap();
        assert_eq!(stale.kind, EndpointKind::Address);
        assert_eq!(stale.stale_of.unwrap().service, "svc/web");
        let withdrawn = ep(&s, "fd00:10:244:2::99").unwrap();
        assert_eq!(
            (withdrawn.kind, withdrawn.node.as_deref(), withdrawn.netns),
            (EndpointKind::Address, Some("node-2"), None)
        );
        let outside = ep(&s, "10.1.2.3").unwrap();
        assert_eq!((outside.kind, outside.node), (EndpointKind::Address, None));
    }

    #[test]
    fn unknown_and_ambiguous_names_say_so() {
        let s = cluster();
        let err = ep(&s, "default/pod-z").unwrap_err().to_string();
        assert!(
            err.contains("default/pod-a") && err.contains("pod-z"),
            "{err}"
        );
        let err = ep(&s, "svc/nope").unwrap_err().to_string();
        assert!(err.contains("svc/web"), "{err}");
        assert!(ep(&s, "node/node-9")
            .unwrap_err()
            .to_string()
            .contains("node/node-1"));
        // `node-2` is both a pod in default and a node.
        let err = ep(&s, "node-2").unwrap_err().to_string();
        assert!(
            err.contains("ambiguous") && err.contains("node/node-2"),
            "{err}"
        );
        assert_eq!(ep(&s, "node-1").unwrap().kind, EndpointKind::Node);
        let mut twice = cluster();
        twice
            .pods
            .push(pod("default", "pod-b", "node-1", &["10.244.1.2"]));
        let err = ep(&twice, "10.244.1.2").unwrap_err().to_string();
        assert!(
            err.contains("default/pod-a") && err.contains("default/pod-b"),
            "{err}"
        );
        // A finished pod's leftover address does not make it ambiguous.
        twice
            .pods
            .last_mut()
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .phase = Some("Succeeded".into());
        assert_eq!(ep(&twice, "10.244.1.2").unwrap().name, "default/pod-a");
    }

    #[test]
    fn namespaces_and_former_cluster_ips_from_annotations() {
        let mut s = cluster();
        assert_eq!(
            annotated_netns(&s.pods[0].metadata).as_deref(),
            Some("np-pod-a")
        );
        assert_eq!(annotated_netns(&s.pods[1].metadata), None);
        s.pods[1].metadata.annotations = Some(BTreeMap::from([(
            NETNS_ANNOTATION.into(),
            "cni-1234".into(),
        )]));
        assert_eq!(
            annotated_netns(&s.pods[1].metadata).as_deref(),
            Some("cni-1234")
        );
        s.services[0].metadata.annotations = Some(BTreeMap::from([(
            LAB_STALE_IPS_ANNOTATION.into(),
            "fd00:10:96::98, 10.96.0.98".into(),
        )]));
        assert_eq!(
            previous_cluster_ips(&s.services[0]),
            vec![
                "fd00:10:96::98".parse::<IpAddr>().unwrap(),
                "10.96.0.98".parse().unwrap()
            ]
        );
        assert!(ep(&s, "10.96.0.98").unwrap().stale_of.is_some());
    }

    #[test]
    fn cluster_families_come_from_pod_cidrs() {
        let mut s = cluster();
        assert!(s.has_family(Family::Ipv4) && s.has_family(Family::Ipv6));
        for n in &mut s.nodes {
            n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.9.0/24".into()]);
        }
        assert!(!s.has_family(Family::Ipv6));
        assert_eq!(
            node_pod_cidrs(&s.nodes[0]),
            vec!["10.244.9.0/24".to_string()]
        );
    }
}
