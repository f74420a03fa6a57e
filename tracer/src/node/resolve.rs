//! Names to endpoints: what `trace FROM TO` and friends accept.
//!
//! [`LocalResolver`] knows the lab (`pod-a`, `node-1/pod-b`, `node-1`, `svc/web`), any named
//! namespace (`netns:NAME`, addresses read from it) and plain addresses (`10.244.1.2`,
//! `[fd00::1]:80`), which it looks up in the lab and then in every named namespace, so topologies
//! the lab did not make work too. A Kubernetes resolver will implement the same [`Resolver`].
use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use netpath_core::{
    model::{prefix_contains, Endpoint, EndpointKind, StaleService},
    world::{ResolveError, Resolver},
};

use super::netns;
use crate::lab::{state, LabError, LabNode, LabOptions, LabPod, LabService, LabState};

/// The lab name of the namespace that joins the lab's nodes (the "network" between them).
pub const UNDERLAY_NODE: &str = "underlay";

/// Resolves against the lab state (if any) and the namespaces of this machine.
#[derive(Debug, Clone, Default)]
pub struct LocalResolver {
    lab: Option<LabState>,
}

impl LocalResolver {
    pub fn new(lab: Option<LabState>) -> Self {
        LocalResolver { lab }
    }

    /// Loads the lab state of `opts`; no lab recorded is fine (only netns: and addresses work).
    pub fn load(opts: &LabOptions) -> Result<Self, LabError> {
        Ok(Self::new(state::load(&opts.state_dir)?))
    }

    pub fn lab(&self) -> Option<&LabState> {
        self.lab.as_ref()
    }

    fn known(&self) -> String {
        let mut names = Vec::new();
        if let Some(lab) = &self.lab {
            names.extend(lab.pods.iter().map(|p| p.name.clone()));
            names.extend(lab.nodes.iter().map(|n| n.name.clone()));
            names.extend(lab.services.iter().map(|s| format!("svc/{}", s.name)));
        } else {
            names.push("(no lab is up)".into());
        }
        names.push("netns:NAME".into());
        names.push("an IP address".into());
        names.join(", ")
    }

    fn unknown(&self, spec: &str) -> ResolveError {
        ResolveError::Unknown {
            spec: spec.into(),
            known: self.known(),
        }
    }

    fn by_ip(&self, ip: IpAddr, port: Option<u16>) -> Result<Endpoint, ResolveError> {
        if let Some(lab) = &self.lab {
            if let Some(p) = lab
                .pods
                .iter()
                .find(|p| p.ipv4 == Some(ip) || p.ipv6 == Some(ip))
            {
                return Ok(Endpoint {
                    port,
                    ..pod_endpoint(p)
                });
            }
            if let Some(n) = lab
                .nodes
                .iter()
                .find(|n| n.underlay_v4 == ip || n.underlay_v6 == ip)
            {
                return Ok(Endpoint {
                    port,
                    ..node_endpoint(n)
                });
            }
            if let Some(s) = lab.services.iter().find(|s| s.cluster_ips.contains(&ip)) {
                return Ok(Endpoint {
                    port: port.or(Some(s.port)),
                    ..service_endpoint(s, [ip])
                });
            }
            if let Some(s) = lab
                .services
                .iter()
                .find(|s| s.stale_cluster_ips.contains(&ip))
            {
                return Ok(Endpoint {
                    stale_of: Some(StaleService {
                        service: format!("svc/{}", s.name),
                        cluster_ips: s.cluster_ips.clone(),
                    }),
                    ..address(
                        format!("{ip} (stale ClusterIP of svc/{})", s.name),
                        ip,
                        port.or(Some(s.port)),
                    )
                });
            }
            // An address in a node's pod CIDR that no pod holds (withdrawn): that node is
            // where it should live.
            if let Some(n) = lab.nodes.iter().find(|n| {
                [&n.pod_cidr_v4, &n.pod_cidr_v6]
                    .iter()
                    .any(|c| cidr_contains(c, ip))
            }) {
                return Ok(Endpoint {
                    node: Some(n.name.clone()),
                    ..address(ip.to_string(), ip, port)
                });
            }
        }
        let mut names = vec!["root".to_string()];
        names.extend(
            netns::all()
                .into_iter()
                .filter(|n| n.path.starts_with(netns::NETNS_RUN_DIR))
                .map(|n| n.name),
        );
        for name in names {
            // A namespace that vanished or cannot be read simply holds nothing.
            if let Ok(addrs) = netns_addrs(&name) {
                if addrs.contains(&ip) {
                    return Ok(Endpoint {
                        port,
                        ..netns_endpoint(&name, addrs)
                    });
                }
            }
        }
        Ok(address(ip.to_string(), ip, port))
    }
}

fn address(name: String, ip: IpAddr, port: Option<u16>) -> Endpoint {
    Endpoint {
        name,
        kind: EndpointKind::Address,
        netns: None,
        node: None,
        ipv4: vec![],
        ipv6: vec![],
        port,
        backends: Vec::new(),
        stale_of: None,
    }
    .with_addrs([ip])
}

fn service_endpoint(s: &LabService, addrs: impl IntoIterator<Item = IpAddr>) -> Endpoint {
    Endpoint {
        name: format!("svc/{}", s.name),
        kind: EndpointKind::Service,
        netns: None,
        node: None,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        port: Some(s.port),
        backends: s.endpoints.clone(),
        stale_of: None,
    }
    .with_addrs(addrs)
}

/// `10.244.1.0/24` contains `ip` (false for text that is not a CIDR).
fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    match (net.parse::<IpAddr>(), len.parse::<u8>()) {
        (Ok(net), Ok(len)) => prefix_contains(net, len, ip),
        _ => false,
    }
}

fn pod_endpoint(p: &LabPod) -> Endpoint {
    Endpoint {
        name: p.name.clone(),
        kind: EndpointKind::Pod,
        netns: Some(p.netns.clone()),
        node: Some(p.node.clone()),
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        port: None,
        backends: Vec::new(),
        stale_of: None,
    }
    .with_addrs(p.ipv4.into_iter().chain(p.ipv6))
}

fn node_endpoint(n: &LabNode) -> Endpoint {
    Endpoint {
        name: n.name.clone(),
        kind: EndpointKind::Node,
        netns: Some(n.netns.clone()),
        node: Some(n.name.clone()),
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        port: None,
        backends: Vec::new(),
        stale_of: None,
    }
    .with_addrs([n.underlay_v4, n.underlay_v6])
}

fn netns_endpoint(name: &str, addrs: Vec<IpAddr>) -> Endpoint {
    Endpoint {
        name: format!("netns:{name}"),
        kind: EndpointKind::Netns,
        netns: Some(name.to_string()),
        node: None,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        port: None,
        backends: Vec::new(),
        stale_of: None,
    }
    .with_addrs(addrs)
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The addresses of a named namespace (`root`: this process's), without lo and link-local.
pub fn netns_addrs(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let err = |detail: String| ResolveError::Netns {
        name: name.into(),
        detail,
    };
    let ns = netns::NetnsRef::parse(name).map_err(|e| err(e.to_string()))?;
    let all = crate::node::sys::addresses(&ns).map_err(|e| err(e.to_string()))?;
    let mut addrs = Vec::new();
    for a in all.iter().filter(|a| a.dev != "lo") {
        if !is_link_local(&a.addr) && !addrs.contains(&a.addr) {
            addrs.push(a.addr);
        }
    }
    Ok(addrs)
}

/// `10.0.0.1`, `fd00::1`, `10.0.0.1:80`, `[fd00::1]:80`.
fn parse_addr(spec: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Some((ip, None));
    }
    spec.parse::<SocketAddr>()
        .ok()
        .map(|sa| (sa.ip(), Some(sa.port())))
}

#[async_trait]
impl Resolver for LocalResolver {
    async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError> {
        let (me, spec) = (self.clone(), spec.to_string());
        tokio::task::spawn_blocking(move || me.lookup(&spec))
            .await
            .map_err(|e| ResolveError::Unavailable(format!("resolver task: {e}")))?
    }

    async fn node_namespaces(&self) -> Vec<(String, String)> {
        self.namespaces_by_node()
    }
}

impl LocalResolver {
    /// [`Resolver::resolve`], on the calling thread (it may read namespaces).
    pub fn lookup(&self, spec: &str) -> Result<Endpoint, ResolveError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(ResolveError::Invalid {
                spec: spec.into(),
                reason: "empty endpoint".into(),
            });
        }
        if let Some(name) = spec.strip_prefix("netns:") {
            let addrs = netns_addrs(name)?;
            return Ok(netns_endpoint(name, addrs));
        }
        if let Some((ip, port)) = parse_addr(spec) {
            return self.by_ip(ip, port);
        }
        let lab = self.lab.as_ref().ok_or_else(|| self.unknown(spec))?;
        if let Some(name) = spec.strip_prefix("svc/") {
            let s = lab.service(name).ok_or_else(|| self.unknown(spec))?;
            return Ok(service_endpoint(s, s.cluster_ips.iter().copied()));
        }
        if let Some((node, pod)) = spec.split_once('/') {
            let p = lab.pod(pod).ok_or_else(|| self.unknown(spec))?;
            if p.node != node {
                return Err(ResolveError::Invalid {
                    spec: spec.into(),
                    reason: format!("{pod} runs on {}, not {node}", p.node),
                });
            }
            return Ok(pod_endpoint(p));
        }
        if let Some(p) = lab.pod(spec) {
            return Ok(pod_endpoint(p));
        }
        if let Some(n) = lab.node(spec) {
            return Ok(node_endpoint(n));
        }
        Err(self.unknown(spec))
    }

    /// [`Resolver::node_namespaces`]: the lab's namespaces and their nodes.
    pub fn namespaces_by_node(&self) -> Vec<(String, String)> {
        let Some(lab) = &self.lab else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = lab
            .nodes
            .iter()
            .map(|n| (n.netns.clone(), n.name.clone()))
            .collect();
        out.extend(lab.pods.iter().map(|p| (p.netns.clone(), p.node.clone())));
        out.push((lab.underlay.netns.clone(), UNDERLAY_NODE.into()));
        out
    }
}

/// What a node's agent answers `Resolve` with (`netpath agent`): an address (`10.244.1.2`,
/// `[fd00::2]:80`, `ip:10.244.1.2`) is the namespace of this node holding it, searched as
/// [`super::podns::holding`] does (only among the namespaces the agent is confined to, when it
/// is); `netns:NAME` is that namespace of this node. Either is an endpoint placed on the node,
/// with the namespace's addresses of both families (the one asked for first); the node's own
/// namespace is the node.
///
/// A pod (`NS/POD`, `pod:NS/POD`, optionally `@ADDR,ADDR`) is asked of the container runtime
/// first (CRI: its sandbox, whose process or netns path is the namespace; see
/// [`super::podns::of_sandbox`]), then searched by its addresses; the answer says which found
/// it ([`Resolver::resolve_how`]).
#[derive(Debug, Clone)]
pub struct NodeResolver {
    node: String,
    confine: Option<std::collections::BTreeSet<String>>,
    cri: Option<netpath_agent::cri::Cri>,
}

/// A pod as an agent is asked about it: namespace, name and the addresses to search for when
/// the runtime does not know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// A Kubernetes object name: lowercase letters, digits, '-' and '.', at most 253.
fn k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl PodSpec {
    /// `pod:NS/POD[@ADDR,...]` or `NS/POD[@ADDR,...]`; `None` when `spec` is not a pod.
    pub fn parse(spec: &str) -> Option<Result<PodSpec, String>> {
        let explicit = spec.strip_prefix("pod:");
        let body = explicit.unwrap_or(spec);
        let (pod, addrs) = match body.split_once('@') {
            Some((pod, addrs)) => (pod, Some(addrs)),
            None => (body, None),
        };
        let (namespace, name) = pod.split_once('/')?;
        if explicit.is_none() && (namespace.contains(':') || name.contains('/')) {
            return None;
        }
        if !k8s_name(namespace) || !k8s_name(name) {
            return Some(Err(format!(
                "{pod:?} is not NAMESPACE/POD (lowercase letters, digits, '-', '.')"
            )));
        }
        let addrs = match addrs {
            None => Vec::new(),
            Some(list) => match list.split(',').map(str::parse).collect() {
                Ok(a) => a,
                Err(_) => return Some(Err(format!("{list:?} is not a list of addresses"))),
            },
        };
        Some(Ok(PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            addrs,
        }))
    }

    /// As the agent is asked: `pod:NS/POD@ADDR,...`.
    pub fn to_spec(&self) -> String {
        let mut s = format!("pod:{}/{}", self.namespace, self.name);
        if !self.addrs.is_empty() {
            let list: Vec<String> = self.addrs.iter().map(IpAddr::to_string).collect();
            s.push('@');
            s.push_str(&list.join(","));
        }
        s
    }
}

impl NodeResolver {
    pub fn new(
        node: impl Into<String>,
        confine: Option<std::collections::BTreeSet<String>>,
    ) -> Self {
        NodeResolver {
            node: node.into(),
            confine,
            cri: None,
        }
    }

    /// Pods are asked of this container runtime first.
    pub fn with_cri(mut self, cri: netpath_agent::cri::Cri) -> Self {
        self.cri = Some(cri);
        self
    }

    /// [`Resolver::resolve`], on the calling thread (it reads namespaces), for everything but
    /// pods (see [`Self::lookup_pod`]).
    pub fn lookup(&self, spec: &str) -> Result<Endpoint, ResolveError> {
        let spec = spec.trim();
        let not_here = |what: String| ResolveError::Invalid {
            spec: spec.into(),
            reason: format!("{what} on node {}", self.node),
        };
        if let Some(name) = spec.strip_prefix("netns:") {
            if self.confine.as_ref().is_some_and(|set| !set.contains(name)) {
                return Err(not_here(format!(
                    "{name} is not one of the namespaces the agent may use"
                )));
            }
            let addrs = netns_addrs(name).map_err(|e| not_here(e.to_string()))?;
            return Ok(self.endpoint(name, addrs, None, None));
        }
        let addr = match spec.strip_prefix("ip:") {
            Some(a) => a.parse::<IpAddr>().ok().map(|ip| (ip, None)),
            None => parse_addr(spec),
        };
        let Some((ip, port)) = addr else {
            return Err(ResolveError::Invalid {
                spec: spec.into(),
                reason: "a node's agent resolves addresses (ADDR, ip:ADDR), netns:NAME and pods (NS/POD, pod:NS/POD@ADDR)".into(),
            });
        };
        let ns = self
            .search(&[ip])
            .ok_or_else(|| not_here("no network namespace holds it".into()))?;
        // The namespace may go away meanwhile: it then holds just what was asked.
        let addrs = netns_addrs(&ns).unwrap_or_default();
        Ok(self.endpoint(&ns, addrs, Some(ip), port))
    }

    /// The address search, among the agent's namespaces when it is confined.
    fn search(&self, addrs: &[IpAddr]) -> Option<String> {
        match &self.confine {
            Some(set) => super::podns::holding_among(set.iter().map(String::as_str), addrs),
            None => super::podns::holding(addrs),
        }
    }

    /// A pod: its sandbox through CRI, else the namespace holding one of its addresses. The
    /// endpoint and how it was found.
    pub async fn lookup_pod(
        &self,
        spec: &str,
        pod: &PodSpec,
    ) -> Result<(Endpoint, String), ResolveError> {
        let who = format!("{}/{}", pod.namespace, pod.name);
        let cri_said = match &self.cri {
            None => "no container runtime socket".to_string(),
            Some(cri) => match cri.find_pod(&pod.namespace, &pod.name).await {
                Ok(Some(sandbox)) => {
                    let (me, info) = (self.clone(), sandbox.info.clone());
                    let placed = tokio::task::spawn_blocking(move || {
                        super::podns::of_sandbox(&info, me.confine.as_ref())
                            .map(|(ns, via)| (netns_addrs(&ns).unwrap_or_default(), ns, via))
                    })
                    .await
                    .map_err(|e| ResolveError::Unavailable(format!("resolver task: {e}")))?;
                    match placed {
                        Ok((addrs, ns, via)) => {
                            let short: String = sandbox.id.chars().take(13).collect();
                            let how =
                                format!("CRI ({}: sandbox {short}, {via})", cri.path().display());
                            let first = pod.addrs.iter().copied().find(|a| addrs.contains(a));
                            return Ok((self.pod_endpoint(&who, &ns, addrs, first), how));
                        }
                        Err(why) => format!("CRI sandbox {}: {why}", sandbox.id),
                    }
                }
                Ok(None) => format!("CRI: no ready sandbox of {who}"),
                Err(e) => e.to_string(),
            },
        };
        let not_here = |reason: String| ResolveError::Invalid {
            spec: spec.into(),
            reason: format!("{reason} on node {}", self.node),
        };
        if pod.addrs.is_empty() {
            return Err(not_here(format!(
                "{cri_said}, and no address to search for"
            )));
        }
        let (me, addrs) = (self.clone(), pod.addrs.clone());
        let found = tokio::task::spawn_blocking(move || {
            me.search(&addrs)
                .map(|ns| (netns_addrs(&ns).unwrap_or_default(), ns))
        })
        .await
        .map_err(|e| ResolveError::Unavailable(format!("resolver task: {e}")))?;
        let (addrs, ns) = found.ok_or_else(|| {
            not_here(format!(
                "{cri_said}, and no network namespace holds its addresses"
            ))
        })?;
        let first = pod.addrs.iter().copied().find(|a| addrs.contains(a));
        Ok((
            self.pod_endpoint(&who, &ns, addrs, first),
            format!("address search ({cri_said})"),
        ))
    }

    fn pod_endpoint(
        &self,
        name: &str,
        ns: &str,
        addrs: Vec<IpAddr>,
        first: Option<IpAddr>,
    ) -> Endpoint {
        Endpoint {
            name: name.into(),
            kind: EndpointKind::Pod,
            ..self.endpoint(ns, addrs, first, None)
        }
    }

    fn endpoint(
        &self,
        ns: &str,
        addrs: Vec<IpAddr>,
        first: Option<IpAddr>,
        port: Option<u16>,
    ) -> Endpoint {
        let (name, kind) = if ns == "root" {
            (self.node.clone(), EndpointKind::Node)
        } else {
            (format!("netns:{ns}"), EndpointKind::Netns)
        };
        // The address asked for is the one its family is traced to (a loopback address is
        // not among netns_addrs' but is the namespace's all the same).
        let mut ordered: Vec<IpAddr> = first.into_iter().collect();
        ordered.extend(addrs.into_iter().filter(|a| Some(*a) != first));
        Endpoint {
            netns: Some(ns.to_string()),
            node: Some(self.node.clone()),
            port,
            ..Endpoint::new(name, kind)
        }
        .with_addrs(ordered)
    }
}

#[async_trait]
impl Resolver for NodeResolver {
    async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError> {
        self.resolve_how(spec).await.map(|(e, _)| e)
    }

    async fn resolve_how(&self, spec: &str) -> Result<(Endpoint, Option<String>), ResolveError> {
        let spec = spec.trim();
        if let Some(pod) = PodSpec::parse(spec) {
            let pod = pod.map_err(|reason| ResolveError::Invalid {
                spec: spec.into(),
                reason,
            })?;
            let answer = self.lookup_pod(spec, &pod).await;
            match &answer {
                Ok((e, how)) => eprintln!(
                    "netpath agent: node {}: {}/{} is in {} (found by {how})",
                    self.node,
                    pod.namespace,
                    pod.name,
                    e.netns.as_deref().unwrap_or_default()
                ),
                Err(e) => eprintln!("netpath agent: node {}: {e}", self.node),
            }
            return answer.map(|(e, how)| (e, Some(how)));
        }
        let (me, owned) = (self.clone(), spec.to_string());
        let e = tokio::task::spawn_blocking(move || me.lookup(&owned))
            .await
            .map_err(|e| ResolveError::Unavailable(format!("resolver task: {e}")))??;
        let how = (spec.starts_with("ip:") || parse_addr(spec).is_some())
            .then(|| "address search".to_string());
        Ok((e, how))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{plan, scenarios, PlanContext};
    use netpath_core::model::Family;

    fn resolver(name: &str, run: u32) -> LocalResolver {
        let sc = scenarios::find(name).unwrap();
        let p = plan(
            sc,
            &PlanContext {
                prefix: "np".into(),
                nodes: 2,
                run,
            },
        )
        .unwrap();
        LocalResolver::new(Some(p.state))
    }

    #[test]
    fn lab_names_resolve() {
        let r = resolver("flannel", 1);
        let a = r.lookup("pod-a").unwrap();
        assert_eq!(
            (a.kind, a.netns.as_deref(), a.node.as_deref()),
            (EndpointKind::Pod, Some("np-pod-a"), Some("node-1"))
        );
        assert_eq!(
            a.addr(Family::Ipv6),
            Some("fd00:10:244:1::2".parse().unwrap())
        );
        assert_eq!(r.lookup("node-2/pod-d").unwrap().name, "pod-d");
        assert!(matches!(
            r.lookup("node-1/pod-d"),
            Err(ResolveError::Invalid { .. })
        ));
        let web = r.lookup("svc/web").unwrap();
        assert_eq!(
            (web.kind, web.port, web.ipv4.len(), web.ipv6.len()),
            (EndpointKind::Service, Some(80), 1, 1)
        );
        assert_eq!(r.lookup("node-1").unwrap().kind, EndpointKind::Node);
    }

    #[test]
    fn lab_addresses_resolve_to_their_owner() {
        let r = resolver("vcluster-service-flip", 1);
        assert_eq!(r.lookup("10.244.2.3").unwrap().name, "pod-d");
        let n = r.lookup("[fd00:198:18:2::10]:6443").unwrap();
        assert_eq!((n.name.as_str(), n.port), ("node-2", Some(6443)));
        let svc = r.lookup("10.96.0.10").unwrap();
        assert_eq!((svc.kind, svc.port), (EndpointKind::Service, Some(80)));
        let stale = r.lookup("[fd00:10:96::10]:80").unwrap();
        assert_eq!(stale.kind, EndpointKind::Address);
        assert!(
            stale.name.contains("stale ClusterIP of svc/web"),
            "{}",
            stale.name
        );
        assert_eq!(stale.stale_of.unwrap().service, "svc/web");
        let withdrawn = r.lookup("fd00:10:244:2::99").unwrap();
        assert_eq!(
            (withdrawn.kind, withdrawn.node.as_deref()),
            (EndpointKind::Address, Some("node-2"))
        );
        assert!(!r.lookup("svc/web").unwrap().backends.is_empty());
        let map = r.namespaces_by_node();
        assert!(
            map.contains(&("np-pod-c".into(), "node-2".into())),
            "{map:?}"
        );
        assert!(map.contains(&("np-underlay".into(), UNDERLAY_NODE.into())));
    }

    #[test]
    fn a_node_resolves_addresses_and_namespaces_only_within_its_confinement() {
        let confined = NodeResolver::new("node-a", Some(["pod-a".to_string()].into()));
        let outside = confined.lookup("netns:pod-b").unwrap_err().to_string();
        assert!(
            outside.contains("not one of the namespaces the agent may use on node node-a"),
            "{outside}"
        );
        // Confined to a namespace that does not exist: nothing holds the address.
        let nowhere = confined.lookup("ip:10.99.0.1").unwrap_err().to_string();
        assert!(
            nowhere.contains("no network namespace holds it"),
            "{nowhere}"
        );
        for bad in ["pod-a", "ip:nope", "svc/web"] {
            assert!(
                matches!(confined.lookup(bad), Err(ResolveError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn pods_as_an_agent_is_asked_about_them() {
        let pod = PodSpec::parse("pod:shop/web-0@10.244.1.7,fd00::7")
            .unwrap()
            .unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str(), pod.addrs.len()),
            ("shop", "web-0", 2)
        );
        assert_eq!(pod.to_spec(), "pod:shop/web-0@10.244.1.7,fd00::7");
        let bare = PodSpec::parse("default/pod-a").unwrap().unwrap();
        assert_eq!(bare.to_spec(), "pod:default/pod-a");
        // Not pods: addresses, namespaces, names without a namespace.
        for other in [
            "10.0.0.1",
            "[fd00::1]:80",
            "netns:x",
            "ip:10.0.0.1",
            "pod-a",
        ] {
            assert!(PodSpec::parse(other).is_none(), "{other}");
        }
        for bad in [
            "pod:Shop/web",
            "pod:shop/",
            "shop/web@nope",
            "a/b/c",
            "pod:x",
        ] {
            assert!(
                !matches!(PodSpec::parse(bad), Some(Ok(_))),
                "{bad}: {:?}",
                PodSpec::parse(bad)
            );
        }
    }

    #[test]
    fn unknown_names_list_what_is_known() {
        let err = resolver("calico", 1)
            .lookup("pod-z")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pod-a") && err.contains("svc/web") && err.contains("netns:NAME"),
            "{err}"
        );
        let err = LocalResolver::new(None)
            .lookup("pod-a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no lab is up"), "{err}");
        assert!(LocalResolver::new(None).lookup("  ").is_err());
        assert!(LocalResolver::new(None)
            .lookup("netns:netpath-no-such-ns")
            .is_err());
    }
}
