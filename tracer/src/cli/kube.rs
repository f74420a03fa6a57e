//! The Kubernetes flags (`--kubeconfig`, `--context`, `-n`, `--k8s`), checked in one place, and
//! what they give a command: a resolver over the cluster's API and its node agents.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use netpath_agent::client::AgentAddr;
use netpath_k8s::client::{Kube, KubeOptions, KubeResolver, Placement};
use tracer::node::resolve::LocalResolver;

#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// Resolve FROM and TO through the Kubernetes API of this kubeconfig (`NS/POD`,
    /// `pod/NAME`, `svc/NAME`, `node/NAME`, addresses).
    #[arg(long, value_name = "FILE", help_heading = "Kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one.
    #[arg(long, value_name = "NAME", help_heading = "Kubernetes")]
    pub context: Option<String>,
    /// Namespace of names given without one [default: the context's, else `default`].
    #[arg(
        short = 'n',
        long,
        value_name = "NAMESPACE",
        help_heading = "Kubernetes"
    )]
    pub namespace: Option<String>,
    /// Resolve through the Kubernetes API of $KUBECONFIG, ~/.kube/config or, inside a pod,
    /// its service account (implied by the other Kubernetes flags, and as `kubectl netpath`).
    #[arg(long, help_heading = "Kubernetes")]
    pub k8s: bool,
}

/// The Kubernetes flags of the commands that only need the node agents (`watch`, `capture`):
/// the agents are then found through the API, as `trace` finds them.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeAgentsArgs {
    /// Find the node agents through the Kubernetes API of this kubeconfig (the agent
    /// DaemonSet's pods; with --tls-dir), instead of --agents.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Kubernetes",
        requires = "tls_dir",
        conflicts_with = "agents"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Kubernetes",
        requires = "tls_dir",
        conflicts_with = "agents"
    )]
    pub context: Option<String>,
    /// Find the node agents through the Kubernetes API of $KUBECONFIG, ~/.kube/config or,
    /// inside a pod, its service account (with --tls-dir; implied as `kubectl netpath`).
    #[arg(
        long,
        help_heading = "Kubernetes",
        requires = "tls_dir",
        conflicts_with = "agents"
    )]
    pub k8s: bool,
}

impl KubeAgentsArgs {
    /// The agents to use: `given` (--agents), else, with `tls` (--tls-dir) and a Kubernetes
    /// flag (or as `kubectl netpath`), those the API lists; empty: this machine's kernel.
    pub async fn agents(&self, given: &[AgentAddr], tls: bool) -> Result<Vec<AgentAddr>> {
        if !given.is_empty() {
            return Ok(given.to_vec());
        }
        let opts = KubeArgs {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: None,
            k8s: self.k8s,
        }
        .options()?;
        match (opts, tls) {
            (Some(opts), true) => agents(&Kube::connect(&opts).await?).await,
            (None, true) => {
                bail!("--tls-dir is for node agents: give --agents, or --k8s/--kubeconfig to find them")
            }
            (_, false) => Ok(Vec::new()),
        }
    }
}

/// A Kubernetes name: lowercase letters, digits and '-', at most 63 characters.
fn check_label(flag: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if !ok {
        bail!("{flag} {v:?}: not a Kubernetes namespace name (lowercase letters, digits, '-')");
    }
    Ok(())
}

impl KubeArgs {
    /// The cluster to ask, or `None` when no Kubernetes flag was given.
    pub fn options(&self) -> Result<Option<KubeOptions>> {
        let asked = self.k8s
            || self.kubeconfig.is_some()
            || self.context.is_some()
            || self.namespace.is_some();
        if !asked {
            return Ok(None);
        }
        if let Some(ns) = &self.namespace {
            check_label("--namespace", ns)?;
        }
        if let Some(path) = &self.kubeconfig {
            if !path.is_file() {
                bail!("--kubeconfig {}: no such file", path.display());
            }
        }
        if self.context.as_deref() == Some("") {
            bail!("--context must not be empty");
        }
        Ok(Some(KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }))
    }
}

/// A resolver over the cluster; `agents`: whether node agents answer (pods are then found by
/// their node's agent), else every node's namespaces are on this machine (the lab): `local`
/// places those the API does not name (the lab's underlay).
pub async fn resolver(
    opts: &KubeOptions,
    agents: bool,
    local: &LocalResolver,
) -> Result<(KubeResolver, Kube)> {
    let kube = Kube::connect(opts).await?;
    let resolver = if agents {
        KubeResolver::new(kube.clone(), Placement::Agents)
    } else {
        KubeResolver::new(
            kube.clone(),
            Placement::Local(std::sync::Arc::new(
                tracer::node::podns::LocalNetnsLocator::new(),
            )),
        )
        .with_local_namespaces(local.namespaces_by_node())
    };
    Ok((resolver, kube))
}

/// [`KubeResolver`] with node agents: a pod the API places on a node (by its address,
/// `ip:ADDR`) is asked of that node's agent (`pod:NS/POD@ADDR,...`), which finds its
/// namespace through the container runtime, else by the address; the endpoint then names the
/// namespace the agent found. An agent that cannot say leaves the address search to each
/// question, as without this.
pub struct PodsOnAgents<'a> {
    pub kube: &'a KubeResolver,
    pub agents: &'a netpath_agent::client::RemoteWorld,
}

#[async_trait::async_trait]
impl netpath_core::world::Resolver for PodsOnAgents<'_> {
    async fn resolve(
        &self,
        spec: &str,
    ) -> Result<netpath_core::model::Endpoint, netpath_core::world::ResolveError> {
        use netpath_core::model::EndpointKind;
        let mut e = self.kube.resolve(spec).await?;
        let (Some(node), Some(ns)) = (e.node.clone(), e.netns.as_deref()) else {
            return Ok(e);
        };
        if e.kind != EndpointKind::Pod || !ns.starts_with("ip:") {
            return Ok(e);
        }
        let Some((namespace, name)) = e.name.split_once('/') else {
            return Ok(e);
        };
        let pod = tracer::node::resolve::PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            addrs: e.addrs().collect(),
        };
        match self.agents.resolve_on(&node, &pod.to_spec()).await {
            Ok((found, how)) if found.netns.is_some() => {
                tracing::info!(
                    "{}: network namespace {} on {node} (found by {how})",
                    e.name,
                    found.netns.as_deref().unwrap_or_default()
                );
                e.netns = found.netns;
            }
            Ok(_) => {}
            Err(why) => tracing::info!("{}: {why}", e.name),
        }
        Ok(e)
    }

    async fn node_namespaces(&self) -> Vec<(String, String)> {
        self.kube.node_namespaces().await
    }
}

/// The node agents, from the agent DaemonSet's pods; unusable ones are named on stderr (in
/// the error's one line when none is usable).
pub async fn agents(kube: &Kube) -> Result<Vec<AgentAddr>> {
    let (found, problems) = kube.agents().await?;
    if found.is_empty() {
        bail!(
            "no running netpath agent found in the cluster (pods labelled {}{}; see deploy/)",
            netpath_k8s::client::agents::AGENT_SELECTOR,
            if problems.is_empty() {
                String::new()
            } else {
                format!(": {}", problems.join("; "))
            }
        );
    }
    for p in &problems {
        eprintln!("netpath: {p}");
    }
    Ok(found
        .into_iter()
        .map(|a| AgentAddr {
            node: a.node,
            addr: a.addr,
            via_netns: a.via_netns,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_come_from_the_flags_else_the_api_else_none() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let none = KubeAgentsArgs::default();
        let given = vec![AgentAddr::new("node-1", "10.0.0.1:7101")];
        assert_eq!(rt.block_on(none.agents(&given, true)).unwrap(), given);
        // No agents, no TLS: this machine's kernel.
        assert!(rt.block_on(none.agents(&[], false)).unwrap().is_empty());
        // TLS material but nothing to find agents with: one line saying what is missing.
        let err = rt.block_on(none.agents(&[], true)).unwrap_err().to_string();
        assert!(err.contains("--tls-dir is for node agents"), "{err}");
        // A kubeconfig that is not there is said before any connection.
        let missing = KubeAgentsArgs {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..Default::default()
        };
        let err = rt
            .block_on(missing.agents(&[], true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
    }

    #[test]
    fn kubernetes_flags_are_checked_once() {
        assert_eq!(KubeArgs::default().options().unwrap(), None);
        let k = KubeArgs {
            k8s: true,
            namespace: Some("kube-system".into()),
            ..Default::default()
        };
        assert_eq!(
            k.options().unwrap().unwrap().namespace.as_deref(),
            Some("kube-system")
        );
        for bad in ["", "Kube", "-x", "a_b", &"a".repeat(64)] {
            let k = KubeArgs {
                namespace: Some(bad.to_string()),
                ..Default::default()
            };
            assert!(k.options().is_err(), "{bad:?}");
        }
        let missing = KubeArgs {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..Default::default()
        };
        let err = missing.options().unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
    }
}
