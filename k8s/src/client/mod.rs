//! Names from a Kubernetes API server (kube-rs): the resolver a real cluster and the lab share.
//!
//! [`KubeResolver`] reads one snapshot of the cluster (Pods, Services, EndpointSlices, Nodes)
//! on first use and answers every name from it with the pure functions of [`convert`]; the
//! Service-family facts of [`family`] come from the same snapshot, and [`agents`] turns the
//! agent DaemonSet's pods into the addresses the CLI connects to.
//!
//! Where a pod lives on its node (its network namespace) is not in the API. With every node
//! on this machine (the lab) a [`NetnsLocator`] finds the namespace holding the pod's address
//! here; with node agents the place is `ip:ADDR`, which the node's agent resolves the same way
//! on its own machine. A pod annotated `netpath.io/netns` names it directly.
pub mod agents;
pub mod convert;
pub mod family;

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use netpath_core::{
    model::Endpoint,
    world::{ResolveError, Resolver},
};
use tokio::sync::OnceCell;

pub use agents::AgentEndpoint;
pub use convert::{Found, Snapshot, Spec};
pub use family::Finding;

/// How long one request to the API server may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("no Kubernetes configuration: {0}")]
    NoConfig(String),
    #[error("Kubernetes API {url}: {detail}")]
    Api { url: String, detail: String },
}

/// Which cluster, as the user asked (`--kubeconfig`, `--context`, `-n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeOptions {
    /// A kubeconfig file; `None`: `$KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig instead of its current one.
    pub context: Option<String>,
    /// The namespace for names without one; `None`: the context's (else `default`).
    pub namespace: Option<String>,
}

/// Finds, on this machine, the network namespace holding an address.
pub trait NetnsLocator: Send + Sync {
    /// The name (as the node side accepts it: `ip netns` name, `root`, `pid:N`) of the
    /// namespace holding one of `addrs`.
    fn locate(&self, addrs: &[IpAddr]) -> Option<String>;
}

/// Where pods and nodes are placed.
#[derive(Clone)]
pub enum Placement {
    /// Every node's namespaces are on this machine (the lab): found here.
    Local(Arc<dyn NetnsLocator>),
    /// Each node has an agent: pods are `ip:ADDR` (the agent finds the namespace), nodes and
    /// host-network pods `root`.
    Agents,
}

/// A connected client with its default namespace.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    url: String,
    pub namespace: String,
}

fn api_err(url: &str, e: impl std::fmt::Display) -> KubeError {
    KubeError::Api {
        url: url.into(),
        detail: first_line(&e),
    }
}

/// The first line of a message (parsers add a multi-line excerpt of the input after it).
fn first_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or_default().trim().to_string()
}

impl Kube {
    /// Reads the configuration and makes a client (no request is sent yet).
    pub async fn connect(opts: &KubeOptions) -> Result<Kube, KubeError> {
        let kopts = KubeConfigOptions {
            context: opts.context.clone(),
            ..Default::default()
        };
        let config = match &opts.kubeconfig {
            Some(path) => {
                let err = |e: &dyn std::fmt::Display| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    detail: first_line(e),
                };
                let file = Kubeconfig::read_from(path).map_err(|e| err(&e))?;
                Config::from_custom_kubeconfig(file, &kopts)
                    .await
                    .map_err(|e| err(&e))?
            }
            None if opts.context.is_some() => Config::from_kubeconfig(&kopts)
                .await
                .map_err(|e| KubeError::NoConfig(first_line(&e)))?,
            None => Config::infer()
                .await
                .map_err(|e| KubeError::NoConfig(first_line(&e)))?,
        };
        let url = config.cluster_url.to_string();
        let namespace = opts
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| api_err(&url, e))?;
        Ok(Kube {
            client,
            url,
            namespace,
        })
    }

    async fn list<K>(&self, params: &ListParams) -> Result<Vec<K>, KubeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.client.clone());
        match tokio::time::timeout(API_TIMEOUT, api.list(params)).await {
            Ok(Ok(list)) => Ok(list.items),
            Ok(Err(e)) => Err(api_err(&self.url, describe(&e))),
            Err(_) => Err(api_err(&self.url, "no answer in 10 s")),
        }
    }

    /// One snapshot of what names depend on.
    pub async fn snapshot(&self) -> Result<Snapshot, KubeError> {
        let all = ListParams::default();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let (pods, services, slices, nodes) = tokio::try_join!(
            self.list::<Pod>(&all),
            self.list::<Service>(&all),
            self.list::<EndpointSlice>(&all),
            async {
                match tokio::time::timeout(API_TIMEOUT, nodes.list(&all)).await {
                    Ok(Ok(list)) => Ok(list.items),
                    Ok(Err(e)) => Err(api_err(&self.url, describe(&e))),
                    Err(_) => Err(api_err(&self.url, "no answer in 10 s")),
                }
            },
        )?;
        Ok(Snapshot {
            pods,
            services,
            slices,
            nodes,
        })
    }

    /// The node agents (the `netpath-agent` DaemonSet's pods), and why some cannot be used.
    pub async fn agents(&self) -> Result<(Vec<AgentEndpoint>, Vec<String>), KubeError> {
        let pods = self
            .list::<Pod>(&ListParams::default().labels(agents::AGENT_SELECTOR))
            .await?;
        Ok(agents::agent_endpoints(&pods))
    }
}

/// A kube-rs error in one line (the API's own message for refusals).
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let line = s.to_string();
                if !text.contains(&line) {
                    text = format!("{text}: {line}");
                }
                source = s.source();
            }
            text
        }
    }
}

/// Names to endpoints through the Kubernetes API.
pub struct KubeResolver {
    kube: Kube,
    placement: Placement,
    snapshot: OnceCell<Result<Arc<Snapshot>, ResolveError>>,
    placed: OnceCell<Vec<(String, String)>>,
    /// Namespaces of this machine placed on nodes by other means (the lab's state: its
    /// underlay, which no API object names).
    local_namespaces: Vec<(String, String)>,
}

impl KubeResolver {
    pub fn new(kube: Kube, placement: Placement) -> Self {
        KubeResolver {
            kube,
            placement,
            snapshot: OnceCell::new(),
            placed: OnceCell::new(),
            local_namespaces: Vec::new(),
        }
    }

    /// With [`Placement::Local`], these (namespace, node) pairs too, after the API's.
    pub fn with_local_namespaces(mut self, pairs: Vec<(String, String)>) -> Self {
        self.local_namespaces = pairs;
        self
    }

    /// The cluster as read on first use (read once: a trace sees one state of the cluster).
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, ResolveError> {
        self.snapshot
            .get_or_init(|| async {
                self.kube
                    .snapshot()
                    .await
                    .map(Arc::new)
                    .map_err(|e| ResolveError::Unavailable(e.to_string()))
            })
            .await
            .clone()
    }

    /// Where `found` lives on its node, when it is a pod or a node.
    async fn netns_of(&self, snap: &Snapshot, found: Found<'_>) -> Option<String> {
        let (addrs, root) = match found {
            Found::Pod(p) => {
                // With agents a pod is placed by its node's agent (the container runtime,
                // else its addresses), as on any cluster, even where an annotation says where
                // it is (the lab's).
                let by_agents = matches!(self.placement, Placement::Agents);
                if let Some(ns) = convert::annotated_netns(&p.metadata).filter(|_| !by_agents) {
                    return Some(ns);
                }
                if convert::host_network(p) {
                    let node = convert::pod_node(p).and_then(|n| snap.node(n))?;
                    (convert::node_internal_ips(node), true)
                } else {
                    (convert::pod_ips(p), false)
                }
            }
            Found::Node(n) => {
                if let Some(ns) = convert::annotated_netns(&n.metadata) {
                    return Some(ns);
                }
                (convert::node_internal_ips(n), true)
            }
            _ => return None,
        };
        match &self.placement {
            Placement::Agents if root => Some("root".into()),
            Placement::Agents => addrs.first().map(|a| format!("ip:{a}")),
            Placement::Local(locator) => {
                let locator = locator.clone();
                tokio::task::spawn_blocking(move || locator.locate(&addrs))
                    .await
                    .ok()
                    .flatten()
            }
        }
    }

    /// What the API says about the families of a trace from `from` to `to` (both as typed).
    pub async fn findings(&self, from: &str, to: &str) -> Vec<Finding> {
        let Ok(snap) = self.snapshot().await else {
            return Vec::new();
        };
        let ns = &self.kube.namespace;
        let client = match snap.find(from, ns) {
            Ok(Found::Pod(p)) => Some(p),
            _ => None,
        };
        let mut out = Vec::new();
        if let Some(p) = client {
            out.extend(family::pod_findings(&snap, p));
        }
        match snap.find(to, ns) {
            Ok(Found::Service(s, _)) => {
                out.extend(family::service_findings(&snap, s, client, ns));
            }
            Ok(Found::Pod(p)) => out.extend(family::pod_findings(&snap, p)),
            _ => {}
        }
        let mut unique: Vec<Finding> = Vec::new();
        for f in out {
            if !unique.contains(&f) {
                unique.push(f);
            }
        }
        unique
    }

    pub fn namespace(&self) -> &str {
        &self.kube.namespace
    }
}

#[async_trait]
impl Resolver for KubeResolver {
    async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError> {
        let snap = self.snapshot().await?;
        let ns = &self.kube.namespace;
        let found = snap.find(spec, ns)?;
        let netns = self.netns_of(&snap, found).await;
        Ok(snap.endpoint(spec, found, netns, ns))
    }

    /// With every node here (the lab): each pod's and node's namespace and its node, so that
    /// events seen in them are attributed to the right node. With agents, each agent names
    /// its own node.
    async fn node_namespaces(&self) -> Vec<(String, String)> {
        if matches!(self.placement, Placement::Agents) {
            return Vec::new();
        }
        let Ok(snap) = self.snapshot().await else {
            return Vec::new();
        };
        self.placed
            .get_or_init(|| async {
                let mut out = Vec::new();
                for n in &snap.nodes {
                    if let Some(ns) = self.netns_of(&snap, Found::Node(n)).await {
                        out.push((ns, n.metadata.name.clone().unwrap_or_default()));
                    }
                }
                for p in snap.pods.iter().filter(|p| !convert::host_network(p)) {
                    let Some(node) = convert::pod_node(p) else {
                        continue;
                    };
                    if let Some(ns) = self.netns_of(&snap, Found::Pod(p)).await {
                        if !out.iter().any(|(known, _)| *known == ns) {
                            out.push((ns, node.to_string()));
                        }
                    }
                }
                for (ns, node) in &self.local_namespaces {
                    if !out.iter().any(|(known, _)| known == ns) {
                        out.push((ns.clone(), node.clone()));
                    }
                }
                out
            })
            .await
            .clone()
    }
}
