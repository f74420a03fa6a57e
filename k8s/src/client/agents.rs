//! The node agents, found through the API: the pods of the `netpath-agent` DaemonSet (host
//! network), one per node, as `NODE=HOST:PORT` the CLI connects to with mutual TLS.
use k8s_openapi::api::core::v1::Pod;

use super::convert::{pod_name, pod_node};

/// Label selector of the agent DaemonSet's pods (deploy/daemonset.yaml).
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=netpath-agent";
/// Pod annotation with the port the agent listens on.
pub const AGENT_PORT_ANNOTATION: &str = "netpath.io/agent-port";
/// The same, as the lab's API server writes it.
pub const LAB_AGENT_PORT_ANNOTATION: &str = "lab.netpath.dev/agent-port";
/// Pod annotation of the lab's API: the `ip netns` namespace on this machine that reaches the
/// agent's host IP (the lab's underlay). A real cluster's nodes are reached directly.
pub const LAB_DIAL_NETNS_ANNOTATION: &str = "lab.netpath.dev/dial-netns";
/// The agent's port when neither the annotation nor a container port says.
pub const DEFAULT_AGENT_PORT: u16 = 7101;
/// Name of the agent's container port, preferred over other ports.
pub const AGENT_PORT_NAME: &str = "grpc";

/// Where one node's agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    pub node: String,
    /// `HOST:PORT` (`[v6]:PORT`).
    pub addr: String,
    /// The namespace to dial from ([`LAB_DIAL_NETNS_ANNOTATION`]), `None`: this one.
    pub via_netns: Option<String>,
}

/// The agents of `pods` (the DaemonSet's pods), and one line per pod that cannot be used
/// (not running, not scheduled, no host IP, a second agent on a node).
pub fn agent_endpoints(pods: &[Pod]) -> (Vec<AgentEndpoint>, Vec<String>) {
    let mut found: Vec<AgentEndpoint> = Vec::new();
    let mut problems = Vec::new();
    for pod in pods {
        let name = pod_name(pod);
        let Some(node) = pod_node(pod) else {
            problems.push(format!("agent pod {name} is not scheduled on a node"));
            continue;
        };
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
        if phase != "Running" {
            problems.push(format!(
                "agent pod {name} on {node} is {phase}, not Running"
            ));
            continue;
        }
        // The agent runs on the host network: the node's address is the agent's.
        let host_ip = status
            .and_then(|s| s.host_ip.clone())
            .or_else(|| {
                status
                    .and_then(|s| s.host_ips.as_ref())
                    .and_then(|ips| ips.first())
                    .map(|ip| ip.ip.clone())
            })
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
        let Some(host_ip) = host_ip else {
            problems.push(format!("agent pod {name} on {node} has no host IP"));
            continue;
        };
        let port = match agent_port(pod) {
            Ok(p) => p,
            Err(why) => {
                problems.push(format!("agent pod {name} on {node}: {why}"));
                continue;
            }
        };
        if found.iter().any(|a| a.node == node) {
            problems.push(format!(
                "agent pod {name}: a second agent on {node}, ignored"
            ));
            continue;
        }
        let via_netns = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LAB_DIAL_NETNS_ANNOTATION))
            .cloned();
        found.push(AgentEndpoint {
            node: node.to_string(),
            addr: std::net::SocketAddr::new(host_ip, port).to_string(),
            via_netns,
        });
    }
    found.sort_by(|a, b| a.node.cmp(&b.node));
    (found, problems)
}

/// The port from [`AGENT_PORT_ANNOTATION`], else the container port named `grpc`, else the
/// first container port, else [`DEFAULT_AGENT_PORT`].
fn agent_port(pod: &Pod) -> Result<u16, String> {
    if let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| {
        a.get(AGENT_PORT_ANNOTATION)
            .or_else(|| a.get(LAB_AGENT_PORT_ANNOTATION))
    }) {
        return match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{AGENT_PORT_ANNOTATION} is {v:?}, not a port")),
        };
    }
    let ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(AGENT_PORT_NAME))
        .or(ports.first())
        .map(|p| p.host_port.unwrap_or(p.container_port));
    match port {
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("container port {p} is not a port")),
        None => Ok(DEFAULT_AGENT_PORT),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, ContainerPort};

    use super::super::convert::tests::pod;
    use super::*;

    fn agent(node: &str, host_ip: &str) -> Pod {
        let mut p = pod(
            "netpath",
            &format!("netpath-agent-{node}"),
            node,
            &[host_ip],
        );
        let spec = p.spec.as_mut().unwrap();
        spec.host_network = Some(true);
        spec.containers = vec![Container {
            name: "agent".into(),
            ports: Some(vec![
                ContainerPort {
                    name: Some("metrics".into()),
                    container_port: 9090,
                    ..Default::default()
                },
                ContainerPort {
                    name: Some("grpc".into()),
                    container_port: 7102,
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }];
        p.status.as_mut().unwrap().host_ip = Some(host_ip.into());
        p
    }

    #[test]
    fn agents_map_nodes_to_host_ip_and_port() {
        let mut a1 = agent("node-1", "198.18.0.1");
        a1.metadata.annotations = Some(BTreeMap::from([(
            AGENT_PORT_ANNOTATION.into(),
            "7200".into(),
        )]));
        let a2 = agent("node-2", "fd00:198:18::2");
        let mut bare = agent("node-3", "198.18.0.3");
        bare.spec.as_mut().unwrap().containers[0].ports = None;
        // The lab's: reached from its underlay namespace.
        bare.metadata.annotations = Some(BTreeMap::from([(
            LAB_DIAL_NETNS_ANNOTATION.into(),
            "np-underlay".into(),
        )]));
        let (found, problems) = agent_endpoints(&[a2, a1, bare]);
        assert_eq!(
            found,
            vec![
                AgentEndpoint {
                    node: "node-1".into(),
                    addr: "198.18.0.1:7200".into(),
                    via_netns: None,
                },
                AgentEndpoint {
                    node: "node-2".into(),
                    addr: "[fd00:198:18::2]:7102".into(),
                    via_netns: None,
                },
                AgentEndpoint {
                    node: "node-3".into(),
                    addr: "198.18.0.3:7101".into(),
                    via_netns: Some("np-underlay".into()),
                },
            ]
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn unusable_agent_pods_are_named() {
        let mut pending = agent("node-1", "198.18.0.1");
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let mut bad_port = agent("node-2", "198.18.0.2");
        bad_port.metadata.annotations = Some(BTreeMap::from([(
            AGENT_PORT_ANNOTATION.into(),
            "http".into(),
        )]));
        let mut no_ip = agent("node-3", "198.18.0.3");
        no_ip.status.as_mut().unwrap().host_ip = None;
        let dup = agent("node-4", "198.18.0.4");
        let mut dup2 = agent("node-4", "198.18.0.4");
        dup2.metadata.name = Some("netpath-agent-node-4b".into());
        let (found, problems) = agent_endpoints(&[pending, bad_port, no_ip, dup, dup2]);
        assert_eq!(found.len(), 1);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("Pending"), "{problems:?}");
        assert!(problems[1].contains("\"http\""), "{problems:?}");
        assert!(problems[2].contains("no host IP"), "{problems:?}");
        assert!(
            problems[3].contains("second agent on node-4"),
            "{problems:?}"
        );
    }
}
