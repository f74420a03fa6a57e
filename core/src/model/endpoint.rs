//! What `trace FROM TO` names: pods, Services, nodes, namespaces and bare addresses, and the
//! place (node + network namespace) where something lives.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::family::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Pod,
    Service,
    Node,
    /// A network namespace named directly (`netns:NAME`) or found holding an address.
    Netns,
    /// An address nothing here holds (outside the machine, a stale ClusterIP, a withdrawn pod
    /// address): traceable as a destination, not as a source.
    Address,
}

/// A network namespace on a node: the key for every question asked of the world.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Place {
    /// Node name (empty: the node the question is asked on).
    pub node: String,
    /// Network namespace on that node (`root`, an `ip netns` name, `pid:N`).
    pub netns: String,
}

impl Place {
    pub fn new(node: impl Into<String>, netns: impl Into<String>) -> Self {
        Place {
            node: node.into(),
            netns: netns.into(),
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.node.is_empty() {
            f.write_str(&self.netns)
        } else {
            write!(f, "{}/{}", self.node, self.netns)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub kind: EndpointKind,
    /// Network namespace where the endpoint lives (`root` for the node's own).
    pub netns: Option<String>,
    /// Node name for pods and nodes.
    pub node: Option<String>,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub port: Option<u16>,
    /// Services: every endpoint (backend) behind the ClusterIPs, of either family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<SocketAddr>,
    /// An address a Service used to have (`web` for a stale ClusterIP of svc/web) and the
    /// ClusterIPs that Service has now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_of: Option<StaleService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleService {
    pub service: String,
    pub cluster_ips: Vec<IpAddr>,
}

impl Endpoint {
    /// An endpoint of `kind` with no address yet.
    pub fn new(name: impl Into<String>, kind: EndpointKind) -> Self {
        Endpoint {
            name: name.into(),
            kind,
            netns: None,
            node: None,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            port: None,
            backends: Vec::new(),
            stale_of: None,
        }
    }

    /// First address of `family`, if the endpoint has one.
    pub fn addr(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::Ipv4 => self.ipv4.first().map(|a| IpAddr::V4(*a)),
            Family::Ipv6 => self.ipv6.first().map(|a| IpAddr::V6(*a)),
        }
    }

    /// Every address, IPv4 first.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6.iter().map(|a| IpAddr::V6(*a)))
    }

    pub fn with_addrs(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        for a in addrs {
            match a {
                IpAddr::V4(v4) => self.ipv4.push(v4),
                IpAddr::V6(v6) => self.ipv6.push(v6),
            }
        }
        self
    }

    /// Backends of one family.
    pub fn backends_of(&self, f: Family) -> Vec<SocketAddr> {
        self.backends
            .iter()
            .filter(|b| Family::of(&b.ip()) == f)
            .copied()
            .collect()
    }

    /// Where the endpoint lives, if it is in a namespace.
    pub fn place(&self) -> Option<Place> {
        self.netns
            .as_ref()
            .map(|ns| Place::new(self.node.clone().unwrap_or_default(), ns.clone()))
    }
}
