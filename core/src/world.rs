//! What analysis asks the world, as traits keyed by node and namespace.
//!
//! The node side implements them over the local kernel (netlink, sockets in a namespace, the
//! eBPF tracer); a node agent's client implements them over the network. Analysis sees only
//! these traits, so its rules are tested on fixed answers and run unchanged on either.
use std::{
    net::IpAddr,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use async_trait::async_trait;

use crate::model::{
    Endpoint, Event, Family, IfAddr, LinkState, NameAnswer, Place, Probe, ProbeOutcome, RouteAnswer,
};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ResolveError {
    #[error("unknown endpoint {spec:?}; known: {known}")]
    Unknown { spec: String, known: String },
    #[error("{spec:?}: {reason}")]
    Invalid { spec: String, reason: String },
    #[error("netns:{name}: {detail}")]
    Netns { name: String, detail: String },
    /// The source of names (lab state, Kubernetes API) could not be read.
    #[error("{0}")]
    Unavailable(String),
}

/// Turns what the user typed (`pod-a`, `default/web-0`, `svc/web`, `netns:x`, an address)
/// into an endpoint.
#[async_trait]
pub trait Resolver: Send + Sync {
    async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError>;

    /// Which node each network namespace belongs to (namespace name -> node name), for the
    /// namespaces this resolver knows. Namespaces not listed belong to the node they were
    /// seen on.
    async fn node_namespaces(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// [`Resolver::resolve`], and how the endpoint's place was found when the resolver can
    /// tell (a node agent: the container runtime, or the address search).
    async fn resolve_how(&self, spec: &str) -> Result<(Endpoint, Option<String>), ResolveError> {
        self.resolve(spec).await.map(|e| (e, None))
    }
}

/// Questions the diagnosis asks a namespace once the packets told it where to look.
#[async_trait]
pub trait Inspector: Send + Sync {
    /// The route lookup for `dst` (`ip route get DST [from SRC iif DEV]`).
    async fn route_get(
        &self,
        at: &Place,
        dst: IpAddr,
        src: Option<IpAddr>,
        iif: Option<&str>,
    ) -> Option<RouteAnswer>;
    /// Forwarding enabled for `family` (None: unknown).
    async fn forwarding(&self, at: &Place, family: Family) -> Option<bool>;
    /// Devices with IPv6 disabled.
    async fn ipv6_disabled_devices(&self, at: &Place) -> Vec<String>;
    /// Addresses configured on the namespace's devices (not loopback or link-local).
    async fn addresses(&self, at: &Place) -> Vec<IfAddr>;
    /// nftables rules that drop or reject, as `table inet filter chain forward: <rule>`.
    async fn nft_drop_rules(&self, at: &Place) -> Vec<String>;
    /// MTU of device `dev`.
    async fn mtu(&self, at: &Place, dev: &str) -> Option<u32>;
    /// Neighbour-table state of `addr` (`REACHABLE`, `INCOMPLETE`, `FAILED`, ...), if present.
    async fn neighbour_state(&self, at: &Place, addr: IpAddr) -> Option<String>;
    /// State and packet counters of device `dev` (None: unknown, or not asked of this world).
    async fn link_state(&self, at: &Place, dev: &str) -> Option<LinkState> {
        let _ = (at, dev);
        None
    }
}

/// An inspector that knows nothing about any namespace: every answer is "unknown". For a
/// world that cannot be inspected, and for tests of what does not depend on the answers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unknowing;

#[async_trait]
impl Inspector for Unknowing {
    async fn route_get(
        &self,
        _: &Place,
        _: IpAddr,
        _: Option<IpAddr>,
        _: Option<&str>,
    ) -> Option<RouteAnswer> {
        None
    }
    async fn forwarding(&self, _: &Place, _: Family) -> Option<bool> {
        None
    }
    async fn ipv6_disabled_devices(&self, _: &Place) -> Vec<String> {
        Vec::new()
    }
    async fn addresses(&self, _: &Place) -> Vec<IfAddr> {
        Vec::new()
    }
    async fn nft_drop_rules(&self, _: &Place) -> Vec<String> {
        Vec::new()
    }
    async fn mtu(&self, _: &Place, _: &str) -> Option<u32> {
        None
    }
    async fn neighbour_state(&self, _: &Place, _: IpAddr) -> Option<String> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The place named does not exist (any more) on its node.
    #[error("{place}: {detail}")]
    NoSuchPlace { place: String, detail: String },
    /// A node (or its agent) could not be asked.
    #[error("node {node}: {detail}")]
    Node { node: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Set to stop a probe's wait early (a drop already decided its family).
pub type Cancel = Arc<AtomicBool>;

/// Sends probes from inside a namespace.
#[async_trait]
pub trait Prober: Send + Sync {
    /// Sends `probe` and waits up to `timeout` for what comes back, or until `cancel` is set.
    async fn send(
        &self,
        probe: &Probe,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<ProbeOutcome, WorldError>;

    /// Looks `name` up (A and AAAA) as a process in `from` would, with its resolver settings.
    async fn lookup(&self, from: &Place, name: &str) -> Result<NameAnswer, WorldError> {
        let _ = (from, name);
        Err(WorldError::Other(
            "name lookups are not available through this prober".into(),
        ))
    }
}

/// What a trace wants to see: the packets of its endpoints, wherever they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Namespaces the traffic starts and ends in, and the nodes it may cross; the source
    /// widens this to every namespace linked to them (veth peers, tunnels).
    pub places: Vec<Place>,
    /// Packets from or to these addresses (filtered in the kernel).
    pub addrs: Vec<IpAddr>,
    /// Also packets without an IP header (ARP), for a look at neighbour resolution; the
    /// address filter cannot tell whose they are.
    pub non_ip: bool,
    /// Kernel drops with their reason.
    pub drops: bool,
    /// The kernel's route lookups for these packets.
    pub routes: bool,
    /// Event buffer per node, in bytes.
    pub ring_bytes: u32,
    /// Kernel functions (a glob) whose packets become events too, where the node's kernel
    /// allows function probes.
    pub functions: Option<String>,
}

/// One item of a node's event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Event(Box<Event>),
    /// The producer on `node` could not deliver `count` events.
    Lost {
        node: String,
        count: u64,
    },
}

/// A running stream of events; dropping it (or [`EventStream::close`]) detaches everything
/// it attached.
#[async_trait]
pub trait EventStream: Send {
    /// The next event; `None` when the stream ended.
    async fn next(&mut self) -> Option<StreamItem>;
    /// Events lost so far (counted by the producer, also those not reported yet).
    fn lost(&self) -> u64;
    /// Devices the stream attached to.
    fn devices(&self) -> usize;
    /// Features the producer could not use, one line each, for the user.
    fn unavailable(&self) -> Vec<String>;
    /// What the producer made of optional requests (`--functions`), one line each.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Starts event streams.
#[async_trait]
pub trait EventSource: Send + Sync {
    async fn open(&self, scope: &Scope) -> Result<Box<dyn EventStream>, WorldError>;
}

/// Everything a trace asks the world, in one place.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub resolver: &'a dyn Resolver,
    pub inspector: &'a dyn Inspector,
    pub prober: &'a dyn Prober,
    pub events: &'a dyn EventSource,
}
