//! The CLI's side: node agents as a [`netpath_core::world`]. Each question goes to the agent
//! of the node it is about (a place's node, else the agent confined to its namespace); event
//! streams are opened on every agent and merged. An agent that cannot be reached, or goes
//! away mid-trace, is named (see [`RemoteWorld::problems`]) and the trace goes on with the
//! others.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use netpath_core::{
    model::{
        Endpoint, EndpointKind, Event, Family, IfAddr, LinkState, NameAnswer, Place, Probe,
        ProbeKind, ProbeOutcome, RouteAnswer,
    },
    world::{
        Cancel, EventSource, EventStream, Inspector, Prober, ResolveError, Resolver, Scope,
        StreamItem, WorldError,
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, task::JoinHandle};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint as Dial, Identity};

use crate::{
    proto::{self, agent_client::AgentClient, inspect_request::Question, stream_message::Item},
    server::TlsFiles,
    wire, PROTOCOL_VERSION,
};

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a question to an agent may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent may take to open a stream: it loads (verifies) and attaches kernel
/// programs, 4 s on an idle node here but over 20 s on a busy one (CI running several traces
/// at once), and over a minute under emulation.
const OPEN_TIMEOUT: Duration = Duration::from_secs(90);
/// Merged events waiting for the session.
const MERGE_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?}: expected NODE=HOST:PORT or NODE=HOST:PORT@NETNS")]
    BadAgent(String),
    #[error("agent {node} at {addr}: {detail}")]
    Agent {
        node: String,
        addr: String,
        detail: String,
    },
}

/// `NODE=HOST:PORT[@NETNS]`: where a node's agent listens, and the `ip netns` namespace to
/// dial it from when it is not reachable from ours (the lab's agents listen on their nodes'
/// underlay addresses, which only the lab's underlay namespace reaches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAddr {
    pub node: String,
    pub addr: String,
    pub via_netns: Option<String>,
}

impl AgentAddr {
    pub fn new(node: impl Into<String>, addr: impl Into<String>) -> Self {
        AgentAddr {
            node: node.into(),
            addr: addr.into(),
            via_netns: None,
        }
    }

    pub fn via(mut self, netns: impl Into<String>) -> Self {
        self.via_netns = Some(netns.into());
        self
    }
}

impl std::fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.node, self.addr)?;
        match &self.via_netns {
            Some(ns) => write!(f, "@{ns}"),
            None => Ok(()),
        }
    }
}

/// An `ip netns` name: what `ip` accepts and no path.
fn is_netns_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl std::str::FromStr for AgentAddr {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadAgent(s.into());
        let (node, rest) = s.split_once('=').ok_or_else(bad)?;
        let (addr, via) = match rest.rsplit_once('@') {
            Some((addr, ns)) if is_netns_name(ns) => (addr, Some(ns.to_string())),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        if crate::certs::check_name(node).is_err()
            || !addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            return Err(bad());
        }
        Ok(AgentAddr {
            node: node.into(),
            addr: addr.into(),
            via_netns: via,
        })
    }
}

/// A channel to one agent, authenticated both ways: the agent must hold a certificate for
/// `node` from the CA in `tls`, and we present `tls`'s certificate (none when its PEM is
/// empty: agents refuse that, tests check it). Connects on first use.
pub fn channel(agent: &AgentAddr, tls: &TlsFiles) -> Result<Channel, ClientError> {
    let err = |detail: String| ClientError::Agent {
        node: agent.node.clone(),
        addr: agent.addr.clone(),
        detail,
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .domain_name(agent.node.clone());
    if !tls.cert_pem.is_empty() {
        config = config.identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    }
    let dial = Dial::from_shared(format!("https://{}", agent.addr))
        .map_err(|e| err(e.to_string()))?
        .tls_config(config)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(match &agent.via_netns {
        None => dial.connect_lazy(),
        Some(netns) => {
            let (addr, netns) = (agent.addr.clone(), netns.clone());
            dial.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                let (addr, netns) = (addr.clone(), netns.clone());
                async move {
                    let stream = tokio::task::spawn_blocking(move || {
                        crate::netns::connect_from(&netns, &addr, CONNECT_TIMEOUT)
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    stream.set_nonblocking(true)?;
                    let stream = tokio::net::TcpStream::from_std(stream)?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
        }
    })
}

/// A status as one line (the transport's cause included: TLS refusals hide there).
pub fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        source = s.source();
    }
    text
}

struct Remote {
    at: AgentAddr,
    client: AgentClient<Channel>,
    /// Namespaces the agent is confined to (from `Info`).
    namespaces: Vec<String>,
}

/// Node agents, as the world of a trace.
pub struct RemoteWorld {
    agents: Vec<Remote>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl RemoteWorld {
    /// Asks every agent who it is (concurrently); agents that do not answer are noted and
    /// kept (they may come back), a node name that does not match is an error.
    pub async fn connect(agents: &[AgentAddr], tls: &TlsFiles) -> Result<Self, ClientError> {
        let world = RemoteWorld {
            agents: agents
                .iter()
                .map(|at| {
                    Ok(Remote {
                        client: AgentClient::new(channel(at, tls)?),
                        at: at.clone(),
                        namespaces: Vec::new(),
                    })
                })
                .collect::<Result<_, ClientError>>()?,
            problems: Default::default(),
        };
        let infos = futures_util::future::join_all(world.agents.iter().map(|a| {
            let mut c = a.client.clone();
            async move { tokio::time::timeout(ASK_TIMEOUT, c.info(proto::InfoRequest {})).await }
        }))
        .await;
        let mut world = world;
        for (agent, info) in world.agents.iter_mut().zip(infos) {
            match info {
                Ok(Ok(info)) => {
                    let info = info.into_inner();
                    if info.node != agent.at.node {
                        return Err(ClientError::Agent {
                            node: agent.at.node.clone(),
                            addr: agent.at.addr.clone(),
                            detail: format!("it is the agent of node {:?}", info.node),
                        });
                    }
                    if info.protocol_version != PROTOCOL_VERSION {
                        tracing::warn!(
                            "agent {} speaks protocol {} (this netpath: {PROTOCOL_VERSION})",
                            agent.at.node,
                            info.protocol_version
                        );
                    }
                    agent.namespaces = info.namespaces;
                }
                Ok(Err(status)) => note(
                    &world.problems,
                    format!(
                        "agent {} at {} unreachable: {}",
                        agent.at.node,
                        agent.at.addr,
                        describe(&status)
                    ),
                ),
                Err(_) => note(
                    &world.problems,
                    format!(
                        "agent {} at {} unreachable: no answer in {} s",
                        agent.at.node,
                        agent.at.addr,
                        ASK_TIMEOUT.as_secs()
                    ),
                ),
            }
        }
        Ok(world)
    }

    /// What went wrong with agents so far, one line each, naming the agent.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().expect("problems lock").clone()
    }

    /// The agent that answers for `place`: its node's, else the one confined to its
    /// namespace, else the only one.
    fn agent_for(&self, place: &Place) -> Option<&Remote> {
        let by_node = self
            .agents
            .iter()
            .find(|a| !place.node.is_empty() && a.at.node == place.node);
        let by_namespace = || {
            self.agents
                .iter()
                .find(|a| a.namespaces.contains(&place.netns))
        };
        let only = match self.agents.as_slice() {
            [only] => Some(only),
            _ => None,
        };
        by_node.or_else(by_namespace).or(only)
    }

    fn note(&self, line: String) {
        note(&self.problems, line);
    }

    /// Asks `place`'s agent one question; `None` (and a noted problem) when it cannot answer.
    async fn ask<T: DeserializeOwned>(&self, place: &Place, question: Question) -> Option<T> {
        let Some(agent) = self.agent_for(place) else {
            self.note(format!("no agent for {place}: its evidence is missing"));
            return None;
        };
        let mut client = agent.client.clone();
        let req = proto::InspectRequest {
            at: Some(wire::place_to(place)),
            question: Some(question),
        };
        let reply = match tokio::time::timeout(ASK_TIMEOUT, client.inspect(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                self.note(format!(
                    "agent {} at {}: {}: {}",
                    agent.at.node,
                    agent.at.addr,
                    place,
                    describe(&status)
                ));
                return None;
            }
            Err(_) => {
                self.note(format!(
                    "agent {} at {}: no answer about {place}",
                    agent.at.node, agent.at.addr
                ));
                return None;
            }
        };
        match serde_json::from_slice(&reply.answer_json) {
            Ok(v) => Some(v),
            Err(e) => {
                self.note(format!("agent {}: bad answer: {e}", agent.at.node));
                None
            }
        }
    }
}

/// What the agents said to one `Resolve`, asked of all of them at once.
#[derive(Debug, Default)]
pub struct Resolved {
    /// (node, endpoint) of every agent that holds it.
    pub found: Vec<(String, Endpoint)>,
    /// Agents that could not be asked, one line each.
    pub failed: Vec<String>,
}

impl RemoteWorld {
    /// Asks every agent's `Resolve` about `spec` at once. An agent that does not hold it
    /// (or resolves no names) is silent; one that cannot be asked is in `failed`.
    pub async fn resolve_everywhere(&self, spec: &str) -> Resolved {
        let answers = futures_util::future::join_all(self.agents.iter().map(|a| {
            let mut client = a.client.clone();
            let req = proto::ResolveRequest { spec: spec.into() };
            async move { tokio::time::timeout(ASK_TIMEOUT, client.resolve(req)).await }
        }))
        .await;
        let mut out = Resolved::default();
        for (agent, answer) in self.agents.iter().zip(answers) {
            let who = format!("agent {} at {}", agent.at.node, agent.at.addr);
            match answer {
                Ok(Ok(reply)) => {
                    match serde_json::from_slice::<Endpoint>(&reply.into_inner().endpoint_json) {
                        Ok(mut e) => {
                            // An agent answers for its own node.
                            if e.netns.is_some() {
                                e.node = Some(agent.at.node.clone());
                            }
                            out.found.push((agent.at.node.clone(), e));
                        }
                        Err(e) => out.failed.push(format!("{who}: bad answer: {e}")),
                    }
                }
                Ok(Err(status))
                    if matches!(
                        status.code(),
                        tonic::Code::NotFound
                            | tonic::Code::Unimplemented
                            | tonic::Code::InvalidArgument
                    ) =>
                {
                    tracing::debug!("{who}: {spec}: {}", status.message());
                }
                Ok(Err(status)) => out.failed.push(format!("{who}: {}", describe(&status))),
                Err(_) => out
                    .failed
                    .push(format!("{who}: no answer in {} s", ASK_TIMEOUT.as_secs())),
            }
        }
        out
    }
}

impl RemoteWorld {
    /// Asks `node`'s agent alone to resolve `spec`: its endpoint (placed on `node`) and how
    /// it found it (`found_by`), or why not, one line.
    pub async fn resolve_on(&self, node: &str, spec: &str) -> Result<(Endpoint, String), String> {
        let agent = self
            .agents
            .iter()
            .find(|a| a.at.node == node)
            .ok_or_else(|| format!("no agent for node {node}"))?;
        let who = format!("agent {} at {}", agent.at.node, agent.at.addr);
        let mut client = agent.client.clone();
        let req = proto::ResolveRequest { spec: spec.into() };
        let reply = match tokio::time::timeout(ASK_TIMEOUT, client.resolve(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => return Err(format!("{who}: {}", describe(&status))),
            Err(_) => return Err(format!("{who}: no answer in {} s", ASK_TIMEOUT.as_secs())),
        };
        let mut e: Endpoint = serde_json::from_slice(&reply.endpoint_json)
            .map_err(|e| format!("{who}: bad answer: {e}"))?;
        if e.netns.is_some() {
            e.node = Some(agent.at.node.clone());
        }
        Ok((e, reply.found_by))
    }
}

/// Can a node's agent resolve `spec`? Addresses (`10.0.0.1`, `[fd00::1]:80`, `ip:ADDR`) and
/// `netns:NAME`.
pub fn agents_resolve(spec: &str) -> bool {
    let spec = spec.trim();
    spec.starts_with("netns:")
        || spec.starts_with("ip:")
        || spec.parse::<IpAddr>().is_ok()
        || spec.parse::<std::net::SocketAddr>().is_ok()
}

/// Names resolved here first (`local`: the lab, this machine's namespaces), then by the node
/// agents: an address no namespace here holds, or a `netns:NAME` not here, is asked of every
/// agent at once and is the endpoint of the one node that holds it (two nodes holding it is
/// an error naming both). Answers are kept for the rest of the trace.
pub struct AgentsResolver<'a> {
    local: &'a dyn Resolver,
    agents: &'a RemoteWorld,
    cache: Mutex<HashMap<String, Result<Endpoint, ResolveError>>>,
}

impl<'a> AgentsResolver<'a> {
    pub fn new(local: &'a dyn Resolver, agents: &'a RemoteWorld) -> Self {
        AgentsResolver {
            local,
            agents,
            cache: Mutex::default(),
        }
    }

    /// The one agent's endpoint for `spec`; `Ok(None)` when no agent holds it.
    async fn ask_agents(&self, spec: &str) -> Result<Option<Endpoint>, ResolveError> {
        let Resolved { found, failed } = self.agents.resolve_everywhere(spec).await;
        match found.len() {
            0 => {
                for line in failed {
                    self.agents.note(format!("{line} (asked where {spec} is)"));
                }
                Ok(None)
            }
            1 => Ok(found.into_iter().next().map(|(_, e)| e)),
            _ => Err(ResolveError::Invalid {
                spec: spec.into(),
                reason: format!(
                    "more than one node holds it: {}",
                    found
                        .iter()
                        .map(|(node, e)| format!("{node} ({})", e.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// `e`, saying that the agents were asked too.
    fn nowhere(&self, e: ResolveError) -> ResolveError {
        let asked = format!(
            "nor does any agent's node ({})",
            self.agents
                .agents
                .iter()
                .map(|a| a.at.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match e {
            ResolveError::Unknown { spec, known } => ResolveError::Unknown {
                spec,
                known: format!("{known} ({asked} hold it)"),
            },
            ResolveError::Netns { name, detail } => ResolveError::Netns {
                name,
                detail: format!("{detail}; {asked} have it"),
            },
            other => other,
        }
    }

    async fn lookup(&self, spec: &str) -> Result<Endpoint, ResolveError> {
        let local = self.local.resolve(spec).await;
        if !agents_resolve(spec) {
            return local;
        }
        match local {
            // An address nothing here places: maybe a pod of another node.
            Ok(e) if is_bare_address(&e) => Ok(self.ask_agents(spec).await?.unwrap_or(e)),
            Err(e @ (ResolveError::Unknown { .. } | ResolveError::Netns { .. })) => {
                match self.ask_agents(spec).await? {
                    Some(found) => Ok(found),
                    None => Err(self.nowhere(e)),
                }
            }
            other => other,
        }
    }
}

/// An address endpoint without a namespace or node (what a resolver makes of an address it
/// does not know).
fn is_bare_address(e: &Endpoint) -> bool {
    e.kind == EndpointKind::Address
        && e.netns.is_none()
        && e.node.is_none()
        && e.stale_of.is_none()
        && e.backends.is_empty()
}

#[async_trait]
impl Resolver for AgentsResolver<'_> {
    async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError> {
        if let Some(known) = self.cache.lock().expect("cache lock").get(spec) {
            return known.clone();
        }
        let answer = self.lookup(spec).await;
        self.cache
            .lock()
            .expect("cache lock")
            .insert(spec.to_string(), answer.clone());
        answer
    }

    async fn node_namespaces(&self) -> Vec<(String, String)> {
        self.local.node_namespaces().await
    }
}

fn note(problems: &Mutex<Vec<String>>, line: String) {
    let mut p = problems.lock().expect("problems lock");
    if !p.contains(&line) {
        tracing::warn!("{line}");
        p.push(line);
    }
}

#[async_trait]
impl Inspector for RemoteWorld {
    async fn route_get(
        &self,
        at: &Place,
        dst: IpAddr,
        src: Option<IpAddr>,
        iif: Option<&str>,
    ) -> Option<RouteAnswer> {
        let q = Question::RouteGet(proto::RouteGet {
            dst: dst.to_string(),
            src: src.map(|s| s.to_string()).unwrap_or_default(),
            iif: iif.unwrap_or_default().to_string(),
        });
        self.ask::<Option<RouteAnswer>>(at, q).await.flatten()
    }

    async fn forwarding(&self, at: &Place, family: Family) -> Option<bool> {
        let family = match family {
            Family::Ipv4 => 4,
            Family::Ipv6 => 6,
        };
        self.ask::<Option<bool>>(at, Question::Forwarding(proto::Forwarding { family }))
            .await
            .flatten()
    }

    async fn ipv6_disabled_devices(&self, at: &Place) -> Vec<String> {
        self.ask(at, Question::Ipv6DisabledDevices(proto::Empty {}))
            .await
            .unwrap_or_default()
    }

    async fn addresses(&self, at: &Place) -> Vec<IfAddr> {
        self.ask(at, Question::Addresses(proto::Empty {}))
            .await
            .unwrap_or_default()
    }

    async fn nft_drop_rules(&self, at: &Place) -> Vec<String> {
        self.ask(at, Question::NftDropRules(proto::Empty {}))
            .await
            .unwrap_or_default()
    }

    async fn mtu(&self, at: &Place, dev: &str) -> Option<u32> {
        let q = Question::Mtu(proto::Mtu { dev: dev.into() });
        self.ask::<Option<u32>>(at, q).await.flatten()
    }

    async fn neighbour_state(&self, at: &Place, addr: IpAddr) -> Option<String> {
        let q = Question::NeighbourState(proto::Neighbour {
            addr: addr.to_string(),
        });
        self.ask::<Option<String>>(at, q).await.flatten()
    }

    async fn link_state(&self, at: &Place, dev: &str) -> Option<LinkState> {
        let q = Question::LinkState(proto::Mtu { dev: dev.into() });
        self.ask::<Option<LinkState>>(at, q).await.flatten()
    }
}

#[async_trait]
impl Prober for RemoteWorld {
    async fn send(
        &self,
        probe: &Probe,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<ProbeOutcome, WorldError> {
        let agent = self
            .agent_for(&probe.from)
            .ok_or_else(|| WorldError::Node {
                node: probe.from.node.clone(),
                detail: format!("no agent for {}", probe.from),
            })?;
        let node_error = |detail: String| WorldError::Node {
            node: agent.at.node.clone(),
            detail: format!("agent at {}: {detail}", agent.at.addr),
        };
        let mut client = agent.client.clone();
        let req = proto::ProbeRequest {
            probe_json: wire::to_json(probe),
            timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
        };
        let call = tokio::time::timeout(timeout + ASK_TIMEOUT, client.send_probe(req));
        let cancelled = async {
            while !cancel.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            r = call => {
                let reply = r
                    .map_err(|_| node_error("the probe did not come back".into()))?
                    .map_err(|s| node_error(describe(&s)))?
                    .into_inner();
                serde_json::from_slice(&reply.outcome_json).map_err(|e| node_error(e.to_string()))
            }
            // The agent stops waiting when the call goes away; what the socket saw until
            // then no longer matters (a drop already decided the family).
            _ = cancelled => Ok(ProbeOutcome {
                sport: matches!(probe.kind, ProbeKind::Tcp { .. } | ProbeKind::Udp { .. })
                    .then_some(probe.sport),
                ..ProbeOutcome::default()
            }),
        }
    }

    /// Looked up by `from`'s node, in `from`, with its resolver settings.
    async fn lookup(&self, from: &Place, name: &str) -> Result<NameAnswer, WorldError> {
        let q = Question::LookupName(proto::LookupName { name: name.into() });
        match self.ask::<Result<NameAnswer, String>>(from, q).await {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(why)) => Err(WorldError::Other(why)),
            None => Err(WorldError::Node {
                node: from.node.clone(),
                detail: format!("its agent could not look up {name}"),
            }),
        }
    }
}

#[async_trait]
impl EventSource for RemoteWorld {
    async fn open(&self, scope: &Scope) -> Result<Box<dyn EventStream>, WorldError> {
        let req = wire::scope_to(scope);
        let opened = futures_util::future::join_all(self.agents.iter().map(|a| {
            let mut client = a.client.clone();
            let req = req.clone();
            async move {
                let open = async {
                    let mut stream = client.open_stream(req).await?.into_inner();
                    match stream.message().await? {
                        Some(proto::StreamMessage {
                            item: Some(Item::Opened(o)),
                        }) => Ok((o, stream)),
                        _ => Err(tonic::Status::internal("the stream did not open")),
                    }
                };
                match tokio::time::timeout(OPEN_TIMEOUT, open).await {
                    Ok(r) => r.map_err(|s| describe(&s)),
                    Err(_) => Err(format!("no stream in {} s", OPEN_TIMEOUT.as_secs())),
                }
            }
        }))
        .await;
        let (tx, rx) = mpsc::channel(MERGE_QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        let mut merged = MergedStream {
            rx,
            lost: lost.clone(),
            devices: 0,
            unavailable: Vec::new(),
            tasks: Vec::new(),
        };
        for (agent, result) in self.agents.iter().zip(opened) {
            match result {
                Ok((o, stream)) => {
                    merged.devices += o.devices as usize;
                    merged.unavailable.extend(
                        o.unavailable
                            .into_iter()
                            .map(|u| format!("{}: {u}", agent.at.node)),
                    );
                    let forward = Forward {
                        at: agent.at.clone(),
                        tx: tx.clone(),
                        lost: lost.clone(),
                        problems: self.problems.clone(),
                    };
                    merged.tasks.push(tokio::spawn(forward.run(stream)));
                }
                Err(why) => {
                    let line = format!(
                        "agent {} at {} unreachable: {why}; its evidence is missing",
                        agent.at.node, agent.at.addr
                    );
                    self.note(line.clone());
                    merged.unavailable.push(line);
                }
            }
        }
        if merged.tasks.is_empty() {
            return Err(WorldError::Other(format!(
                "no agent could stream events: {}",
                merged.unavailable.join("; ")
            )));
        }
        Ok(Box::new(merged))
    }
}

/// Forwards one agent's stream into the merged one.
struct Forward {
    at: AgentAddr,
    tx: mpsc::Sender<StreamItem>,
    lost: Arc<AtomicU64>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Forward {
    async fn run(self, mut stream: tonic::Streaming<proto::StreamMessage>) {
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    note(
                        &self.problems,
                        format!(
                            "agent {} at {}: its stream ended early; evidence after that is missing",
                            self.at.node, self.at.addr
                        ),
                    );
                    break;
                }
                Err(status) => {
                    note(
                        &self.problems,
                        format!(
                            "agent {} at {} went away mid-trace ({}); evidence after that is missing",
                            self.at.node,
                            self.at.addr,
                            describe(&status)
                        ),
                    );
                    break;
                }
            };
            let items: Vec<StreamItem> = match msg.item {
                Some(Item::Events(batch)) => batch
                    .events_json
                    .iter()
                    .filter_map(|j| match serde_json::from_slice::<Event>(j) {
                        Ok(ev) => Some(StreamItem::Event(Box::new(ev))),
                        Err(e) => {
                            self.lost.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!("agent {}: undecodable event: {e}", self.at.node);
                            None
                        }
                    })
                    .collect(),
                Some(Item::Lost(l)) => {
                    self.lost.fetch_add(l.count, Ordering::Relaxed);
                    vec![StreamItem::Lost {
                        node: l.node,
                        count: l.count,
                    }]
                }
                Some(Item::Opened(_)) | None => Vec::new(),
            };
            for item in items {
                if self.tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Every agent's stream as one; dropping it ends the calls (the agents detach).
struct MergedStream {
    rx: mpsc::Receiver<StreamItem>,
    lost: Arc<AtomicU64>,
    devices: usize,
    unavailable: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MergedStream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[async_trait]
impl EventStream for MergedStream {
    async fn next(&mut self) -> Option<StreamItem> {
        self.rx.recv().await
    }

    fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn devices(&self) -> usize {
        self.devices
    }

    fn unavailable(&self) -> Vec<String> {
        self.unavailable.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        certs::{Ca, NodeCert, Validity},
        server::{NodeInfo, NodeServer},
    };
    use netpath_core::model::NameAnswer;

    /// A node world that answers nothing but names.
    struct Quiet;

    #[async_trait]
    impl Prober for Quiet {
        async fn send(
            &self,
            _: &Probe,
            _: Duration,
            _: Cancel,
        ) -> Result<ProbeOutcome, WorldError> {
            Err(WorldError::Other("no probes here".into()))
        }
        async fn lookup(&self, _: &Place, _: &str) -> Result<NameAnswer, WorldError> {
            Err(WorldError::Other("no names here".into()))
        }
    }

    #[async_trait]
    impl EventSource for Quiet {
        async fn open(&self, _: &Scope) -> Result<Box<dyn EventStream>, WorldError> {
            Err(WorldError::Other("no events here".into()))
        }
    }

    /// Names: `spec` -> an endpoint in namespace `netns` (node left empty, as a node's
    /// resolver may); anything else is not known.
    struct Names(Vec<(&'static str, &'static str)>);

    fn netns_endpoint(netns: &str, addr: &str) -> Endpoint {
        Endpoint {
            netns: Some(netns.into()),
            ..Endpoint::new(format!("netns:{netns}"), EndpointKind::Netns)
        }
        .with_addrs([addr.parse().unwrap()])
    }

    #[async_trait]
    impl Resolver for Names {
        async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError> {
            match self.0.iter().find(|(s, _)| *s == spec) {
                Some((_, ns)) => Ok(netns_endpoint(ns, "10.7.0.1")),
                None => Err(ResolveError::Invalid {
                    spec: spec.into(),
                    reason: "not here".into(),
                }),
            }
        }
    }

    /// What this machine knows (the CLI's side): `netns:here` and, as bare addresses,
    /// every address; nothing else.
    struct Local;

    #[async_trait]
    impl Resolver for Local {
        async fn resolve(&self, spec: &str) -> Result<Endpoint, ResolveError> {
            if spec == "netns:here" {
                return Ok(netns_endpoint("here", "10.0.0.1"));
            }
            match spec.parse::<IpAddr>() {
                Ok(ip) => Ok(Endpoint::new(spec, EndpointKind::Address).with_addrs([ip])),
                Err(_) if spec.starts_with("netns:") => Err(ResolveError::Netns {
                    name: spec[6..].into(),
                    detail: "not found".into(),
                }),
                Err(_) => Err(ResolveError::Unknown {
                    spec: spec.into(),
                    known: "netns:here".into(),
                }),
            }
        }
    }

    /// Serves `server` on a loopback port with a certificate for `node`; returns its address.
    async fn serve(ca: &Ca, node: &str, server: NodeServer) -> AgentAddr {
        let v = Validity::days(1);
        let issued = ca
            .agent(
                &NodeCert {
                    name: node.into(),
                    ips: vec!["127.0.0.1".parse().unwrap()],
                },
                v,
            )
            .unwrap();
        let tls = TlsFiles {
            ca_pem: ca.issued.cert_pem.clone(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            server
                .serve(listener, &tls, std::future::pending())
                .await
                .unwrap()
        });
        AgentAddr::new(node, addr)
    }

    fn node(name: &str, names: Option<Names>) -> NodeServer {
        let q = Arc::new(Quiet);
        let inspector = Arc::new(netpath_core::world::Unknowing);
        let server = NodeServer::new(name, inspector, q.clone(), q, NodeInfo::default());
        match names {
            Some(n) => server.with_resolver(Arc::new(n)),
            None => server,
        }
    }

    #[tokio::test]
    async fn what_this_machine_cannot_place_is_the_one_agent_that_holds_it() {
        let ca = Ca::new(Validity::days(1)).unwrap();
        let a = serve(
            &ca,
            "node-a",
            node(
                "node-a",
                Some(Names(vec![
                    ("10.1.0.1", "pod-a"),
                    ("ip:10.1.0.1", "pod-a"),
                    ("10.3.0.3", "twin"),
                    ("netns:pod-a", "pod-a"),
                    ("netns:here", "here"),
                    ("10.4.0.4", "secret"),
                ])),
            )
            // Confined: its resolver's answer outside pod-a/twin/here is not given out.
            .confine(["pod-a".to_string(), "twin".into(), "here".into()]),
        )
        .await;
        let b = serve(
            &ca,
            "node-b",
            node(
                "node-b",
                Some(Names(vec![("10.2.0.2", "pod-b"), ("10.3.0.3", "twin")])),
            ),
        )
        .await;
        // An agent without names, and one that is not there at all.
        let c = serve(&ca, "node-c", node("node-c", None)).await;
        let gone = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            AgentAddr::new("node-d", l.local_addr().unwrap().to_string())
        };
        let client = ca.client("cli", Validity::days(1)).unwrap();
        let tls = TlsFiles {
            ca_pem: ca.issued.cert_pem.clone(),
            cert_pem: client.cert_pem,
            key_pem: client.key_pem,
        };
        let world = RemoteWorld::connect(&[a, b, c, gone], &tls).await.unwrap();
        let r = AgentsResolver::new(&Local, &world);

        for (spec, node, netns) in [
            ("10.1.0.1", "node-a", "pod-a"),
            ("ip:10.1.0.1", "node-a", "pod-a"),
            ("netns:pod-a", "node-a", "pod-a"),
            ("10.2.0.2", "node-b", "pod-b"),
        ] {
            let e = r
                .resolve(spec)
                .await
                .unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(
                (e.node.as_deref(), e.netns.as_deref()),
                (Some(node), Some(netns)),
                "{spec}: {e:?}"
            );
        }
        // Known here: answered here, whatever the agents hold.
        let here = r.resolve("netns:here").await.unwrap();
        assert_eq!((here.node, here.netns.as_deref()), (None, Some("here")));
        // Two nodes hold it: an error naming both.
        let twin = r.resolve("10.3.0.3").await.unwrap_err().to_string();
        assert!(
            twin.contains("node-a (netns:twin)") && twin.contains("node-b (netns:twin)"),
            "{twin}"
        );
        // Nobody places it: the bare address, as without agents.
        let bare = r.resolve("10.9.9.9").await.unwrap();
        assert_eq!((bare.kind, bare.netns), (EndpointKind::Address, None));
        // Outside node-a's confinement: not given out.
        let secret = r.resolve("10.4.0.4").await.unwrap();
        assert_eq!(secret.kind, EndpointKind::Address, "{secret:?}");
        // Names agents do not resolve are not asked; a namespace nowhere says so.
        let unknown = r.resolve("pod-z").await.unwrap_err().to_string();
        assert!(!unknown.contains("agent"), "{unknown}");
        let nowhere = r.resolve("netns:nowhere").await.unwrap_err().to_string();
        assert!(
            nowhere.contains("nor does any agent's node (node-a, node-b, node-c, node-d)"),
            "{nowhere}"
        );
        // The agent that is not there is named once, with what it was asked.
        assert!(
            world
                .problems()
                .iter()
                .any(|p| p.contains("agent node-d") && p.contains("asked where 10.9.9.9 is")),
            "{:?}",
            world.problems()
        );
    }

    #[test]
    fn agent_addresses_parse() {
        let a: AgentAddr = "node-1=127.0.0.1:7101".parse().unwrap();
        assert_eq!(
            (a.node.as_str(), a.addr.as_str()),
            ("node-1", "127.0.0.1:7101")
        );
        let b: AgentAddr = "node-2=[fd00::2]:7101".parse().unwrap();
        assert_eq!(b.addr, "[fd00::2]:7101");
        assert!("node-1".parse::<AgentAddr>().is_err());
        assert!("=1.2.3.4:5".parse::<AgentAddr>().is_err());
        assert!("n=nohost".parse::<AgentAddr>().is_err());
        assert!("n=1.2.3.4:notaport".parse::<AgentAddr>().is_err());
        // Dialed from a namespace: the lab's agents.
        let c: AgentAddr = "node-1=[fd00::1]:7101@np-underlay".parse().unwrap();
        assert_eq!(c.addr, "[fd00::1]:7101");
        assert_eq!(c.via_netns.as_deref(), Some("np-underlay"));
        assert_eq!(c.to_string(), "node-1=[fd00::1]:7101@np-underlay");
        assert!("n=1.2.3.4:5@".parse::<AgentAddr>().is_err());
        assert!("n=1.2.3.4:5@../etc".parse::<AgentAddr>().is_err());
    }
}
