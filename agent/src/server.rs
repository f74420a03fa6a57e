//! The agent's gRPC service over one node's world: its event source, prober and inspector
//! (the node side plugs in its implementations), optionally confined to some of the node's
//! namespaces, behind mutual TLS.
//!
//! Event streams never let a client slow the node down: a pump reads the node's stream as
//! fast as it produces, into a bounded queue per client; when the queue is full the batch is
//! dropped and counted, and the count goes to the client as a `lost` message as soon as
//! there is room again. Memory per client is bounded by the queue ([`NodeServer::queue`]
//! batches of at most [`MAX_BATCH`] events).
use std::{
    collections::BTreeSet,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, Stream};
use netpath_core::{
    model::{Family, Place, Probe},
    world::{
        EventSource, EventStream, Inspector, Prober, ResolveError, Resolver, StreamItem, WorldError,
    },
};
use tokio::sync::mpsc;
use tonic::{
    transport::{server::TcpIncoming, Certificate, Identity, Server, ServerTlsConfig},
    Request, Response, Status,
};

use crate::{
    capture::{Batcher, CaptureSpec, PacketSource},
    proto::{self, agent_server::Agent, inspect_request::Question, stream_message::Item},
    wire, PROTOCOL_VERSION,
};

/// Most events in one stream message.
pub const MAX_BATCH: usize = 64;
/// How often a loss count waiting for room in a client's queue is retried.
const LOST_RETRY: Duration = Duration::from_millis(50);
/// Longest wait a probe may ask for.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(60);

/// What the node says about itself in `Info` (the changing parts, health, are added).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub kernel_release: String,
    pub boot_offset_ns: i64,
    /// (feature, available, detail).
    pub features: Vec<(String, bool, String)>,
}

#[derive(Default)]
pub(crate) struct Stats {
    /// Event streams and captures.
    pub(crate) open_streams: AtomicU32,
    /// Events and packets dropped for slow clients.
    pub(crate) dropped: AtomicU64,
}

/// One node's world, served.
#[derive(Clone)]
pub struct NodeServer {
    node: String,
    inspector: Arc<dyn Inspector>,
    prober: Arc<dyn Prober>,
    events: Arc<dyn EventSource>,
    resolver: Option<Arc<dyn Resolver>>,
    packets: Option<Arc<dyn PacketSource>>,
    info: NodeInfo,
    confine: Option<Arc<BTreeSet<String>>>,
    /// Stream messages queued per client before events are dropped for it.
    pub queue: usize,
    started: Instant,
    stats: Arc<Stats>,
    /// Turns true when the agent stops: open streams end, so the server's graceful shutdown
    /// (which waits for every call to finish) is not held up by a client that never leaves.
    stopping: tokio::sync::watch::Receiver<bool>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl NodeServer {
    pub fn new(
        node: impl Into<String>,
        inspector: Arc<dyn Inspector>,
        prober: Arc<dyn Prober>,
        events: Arc<dyn EventSource>,
        info: NodeInfo,
    ) -> Self {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        NodeServer {
            node: node.into(),
            inspector,
            prober,
            events,
            resolver: None,
            packets: None,
            info,
            confine: None,
            queue: 64,
            started: Instant::now(),
            stats: Default::default(),
            stopping,
            stop: Arc::new(stop),
        }
    }

    /// Only these namespaces may be traced, probed from or inspected (the lab's nodes share
    /// one kernel: each agent keeps to its node's namespaces).
    pub fn confine(mut self, namespaces: impl IntoIterator<Item = String>) -> Self {
        self.confine = Some(Arc::new(namespaces.into_iter().collect()));
        self
    }

    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Serves `Capture` from `packets`.
    pub fn with_packets(mut self, packets: Arc<dyn PacketSource>) -> Self {
        self.packets = Some(packets);
        self
    }

    pub fn with_queue(mut self, batches: usize) -> Self {
        self.queue = batches.max(2);
        self
    }

    /// May a request about `place` be answered here?
    fn check(&self, place: &Place) -> Result<(), Status> {
        match &self.confine {
            Some(set) if !set.contains(&place.netns) => Err(Status::permission_denied(format!(
                "{place}: not one of the namespaces the agent of {} may use",
                self.node
            ))),
            None if !place.node.is_empty() && place.node != self.node => {
                Err(Status::failed_precondition(format!(
                    "{place}: this is the agent of node {}",
                    self.node
                )))
            }
            _ => Ok(()),
        }
    }

    /// The scope's places this agent traces: its node's (or, confined, its namespaces);
    /// when none is, all of its namespaces.
    fn own_places(&self, places: Vec<Place>) -> Vec<Place> {
        let mine: Vec<Place> = places
            .into_iter()
            .filter(|p| match &self.confine {
                Some(set) => set.contains(&p.netns),
                None => p.node.is_empty() || p.node == self.node,
            })
            .collect();
        match (&self.confine, mine.is_empty()) {
            (Some(set), true) => set
                .iter()
                .map(|ns| Place::new(self.node.clone(), ns.clone()))
                .collect(),
            (None, true) => vec![Place::new(self.node.clone(), "root")],
            _ => mine,
        }
    }

    /// Serves on `listener` with mutual TLS until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: &TlsFiles,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .client_ca_root(Certificate::from_pem(&tls.ca_pem))
            .timeout(Duration::from_secs(5));
        let stop = self.stop.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        Server::builder()
            .tls_config(config)?
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .add_service(proto::agent_server::AgentServer::new(self))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
            .await
    }
}

/// PEM material of one side of the connection: its certificate and key, and the CA it trusts.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsFiles {
    /// `DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME.key` (see [`crate::certs`]).
    pub fn load(dir: &std::path::Path, name: &str) -> std::io::Result<Self> {
        let read = |f: String| {
            let path = dir.join(&f);
            std::fs::read_to_string(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(TlsFiles {
            ca_pem: read("ca.pem".into())?,
            cert_pem: read(format!("{name}.pem"))?,
            key_pem: read(format!("{name}.key"))?,
        })
    }
}

fn status(e: WorldError) -> Status {
    match e {
        WorldError::NoSuchPlace { .. } => Status::not_found(e.to_string()),
        WorldError::Node { .. } => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// Sets the probe's cancel flag when the call goes away (the client cancelled it).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

type EventReply = Pin<Box<dyn Stream<Item = Result<proto::StreamMessage, Status>> + Send>>;
type CaptureReply = Pin<Box<dyn Stream<Item = Result<proto::CaptureMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for NodeServer {
    async fn info(
        &self,
        _req: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoReply>, Status> {
        Ok(Response::new(proto::InfoReply {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            node: self.node.clone(),
            kernel_release: self.info.kernel_release.clone(),
            boot_offset_ns: self.info.boot_offset_ns,
            features: self
                .info
                .features
                .iter()
                .map(|(name, available, detail)| proto::Feature {
                    name: name.clone(),
                    available: *available,
                    detail: detail.clone(),
                })
                .collect(),
            health: Some(proto::Health {
                serving: true,
                uptime_ms: self.started.elapsed().as_millis() as u64,
                open_streams: self.stats.open_streams.load(Ordering::Relaxed),
                dropped_for_clients: self.stats.dropped.load(Ordering::Relaxed),
            }),
            namespaces: self
                .confine
                .as_ref()
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
        }))
    }

    type OpenStreamStream = EventReply;

    async fn open_stream(
        &self,
        req: Request<proto::OpenStreamRequest>,
    ) -> Result<Response<EventReply>, Status> {
        let mut scope = wire::scope_from(req.into_inner())?;
        scope.places = self.own_places(std::mem::take(&mut scope.places));
        let stream = self.events.open(&scope).await.map_err(status)?;
        let (tx, rx) = mpsc::channel(self.queue);
        let opened = proto::StreamMessage {
            item: Some(Item::Opened(proto::Opened {
                node: self.node.clone(),
                devices: stream.devices() as u32,
                unavailable: stream.unavailable(),
            })),
        };
        tx.try_send(Ok(opened)).expect("a new queue has room");
        let pump = Pump {
            stopping: self.stopping.clone(),
            node: self.node.clone(),
            confine: self.confine.clone(),
            stats: self.stats.clone(),
            tx,
            pending_lost: 0,
        };
        tokio::spawn(pump.run(stream));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn send_probe(
        &self,
        req: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeReply>, Status> {
        let req = req.into_inner();
        let probe: Probe = wire::from_json(&req.probe_json, "probe")?;
        self.check(&probe.from)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let wait = Duration::from_millis(req.timeout_ms.into()).min(MAX_PROBE_WAIT);
        let outcome = self
            .prober
            .send(&probe, wait, cancel)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ProbeReply {
            outcome_json: wire::to_json(&outcome),
        }))
    }

    async fn inspect(
        &self,
        req: Request<proto::InspectRequest>,
    ) -> Result<Response<proto::InspectReply>, Status> {
        let req = req.into_inner();
        let at = wire::place_from(req.at)?;
        self.check(&at)?;
        let ip = |s: &str| {
            s.parse::<IpAddr>()
                .map_err(|_| Status::invalid_argument(format!("{s:?} is not an address")))
        };
        let i = &self.inspector;
        let answer = match req
            .question
            .ok_or_else(|| Status::invalid_argument("no question"))?
        {
            Question::RouteGet(q) => {
                let src = (!q.src.is_empty()).then(|| ip(&q.src)).transpose()?;
                let iif = (!q.iif.is_empty()).then_some(q.iif.as_str());
                wire::to_json(&i.route_get(&at, ip(&q.dst)?, src, iif).await)
            }
            Question::Forwarding(q) => {
                let family = match q.family {
                    4 => Family::Ipv4,
                    6 => Family::Ipv6,
                    f => return Err(Status::invalid_argument(format!("family {f}"))),
                };
                wire::to_json(&i.forwarding(&at, family).await)
            }
            Question::Ipv6DisabledDevices(_) => wire::to_json(&i.ipv6_disabled_devices(&at).await),
            Question::Addresses(_) => wire::to_json(&i.addresses(&at).await),
            Question::NftDropRules(_) => wire::to_json(&i.nft_drop_rules(&at).await),
            Question::Mtu(q) => wire::to_json(&i.mtu(&at, &q.dev).await),
            Question::NeighbourState(q) => {
                wire::to_json(&i.neighbour_state(&at, ip(&q.addr)?).await)
            }
            Question::LinkState(q) => wire::to_json(&i.link_state(&at, &q.dev).await),
            Question::LookupName(q) => {
                let answer = self
                    .prober
                    .lookup(&at, &q.name)
                    .await
                    .map_err(|e| e.to_string());
                wire::to_json(&answer)
            }
        };
        Ok(Response::new(proto::InspectReply {
            answer_json: answer,
        }))
    }

    type CaptureStream = CaptureReply;

    async fn capture(
        &self,
        req: Request<proto::CaptureRequest>,
    ) -> Result<Response<CaptureReply>, Status> {
        let Some(packets) = self.packets.clone() else {
            return Err(Status::unimplemented("this agent captures no packets"));
        };
        let spec = CaptureSpec::from(req.into_inner());
        if let Some(ns) = &spec.netns {
            self.check(&Place::new(self.node.clone(), ns.clone()))?;
        }
        let confine = self.confine.clone();
        // Loading and attaching the programs blocks for a while.
        let capture = tokio::task::spawn_blocking(move || packets.start(&spec, confine.as_deref()))
            .await
            .map_err(|e| Status::internal(format!("capture task: {e}")))??;
        let (tx, rx) = mpsc::channel(self.queue);
        let started = proto::CaptureMessage {
            item: Some(proto::capture_message::Item::Started(capture.started())),
        };
        tx.try_send(Ok(started)).expect("a new queue has room");
        let out = Batcher::new(self.node.clone(), tx, self.stats.clone());
        tokio::task::spawn_blocking(move || capture.run(out));
        Ok(Response::new(Box::pin(until_stopping(
            rx,
            self.stopping.clone(),
            self.node.clone(),
        ))))
    }

    async fn resolve(
        &self,
        req: Request<proto::ResolveRequest>,
    ) -> Result<Response<proto::ResolveReply>, Status> {
        let Some(resolver) = &self.resolver else {
            return Err(Status::unimplemented("this agent resolves no names"));
        };
        let (mut endpoint, found_by) =
            resolver
                .resolve_how(&req.into_inner().spec)
                .await
                .map_err(|e| match e {
                    ResolveError::Unavailable(_) => Status::unavailable(e.to_string()),
                    // Not here (another node's, or nobody's): the client asks every agent.
                    _ => Status::not_found(e.to_string()),
                })?;
        // An endpoint in a namespace is this node's, and one this agent may use.
        if let Some(ns) = &endpoint.netns {
            let place = Place::new(self.node.clone(), ns.clone());
            self.check(&place)
                .map_err(|s| Status::not_found(s.message().to_string()))?;
            endpoint.node = Some(self.node.clone());
        }
        Ok(Response::new(proto::ResolveReply {
            endpoint_json: wire::to_json(&endpoint),
            found_by: found_by.unwrap_or_default(),
        }))
    }
}

/// A client's queue as a stream that ends, with `UNAVAILABLE`, when the agent stops (else the
/// server's graceful shutdown would wait for a client that never leaves). The stream's end
/// drops the queue, which tells its producer to stop.
fn until_stopping<T: Send + 'static>(
    rx: mpsc::Receiver<Result<T, Status>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    node: String,
) -> impl Stream<Item = Result<T, Status>> {
    futures_util::stream::unfold(Some((rx, stopping)), move |state| {
        let node = node.clone();
        async move {
            let (mut rx, mut stopping) = state?;
            let item = tokio::select! {
                item = rx.recv() => item,
                Ok(_) = stopping.wait_for(|s| *s) => Some(Err(Status::unavailable(format!(
                    "agent {node} is stopping"
                )))),
            };
            match item {
                Some(Err(status)) => Some((Err(status), None)),
                Some(ok) => Some((ok, Some((rx, stopping)))),
                None => None,
            }
        }
    })
}

/// Moves one stream's events from the node to one client's queue, never waiting for the
/// client.
struct Pump {
    /// The agent is stopping: end the stream.
    stopping: tokio::sync::watch::Receiver<bool>,
    node: String,
    confine: Option<Arc<BTreeSet<String>>>,
    stats: Arc<Stats>,
    tx: mpsc::Sender<Result<proto::StreamMessage, Status>>,
    /// Events lost (by the kernel or for this client) not told to the client yet.
    pending_lost: u64,
}

impl Pump {
    async fn run(mut self, mut stream: Box<dyn EventStream>) {
        self.stats.open_streams.fetch_add(1, Ordering::Relaxed);
        let mut stopping = self.stopping.clone();
        loop {
            let first = tokio::select! {
                item = stream.next() => item,
                // A loss not told yet goes out as soon as the client makes room, even when
                // no more events come.
                _ = tokio::time::sleep(LOST_RETRY), if self.pending_lost > 0 => {
                    if !self.deliver(Vec::new()) {
                        break;
                    }
                    continue;
                }
                _ = self.tx.closed() => break,
                _ = stopping.wait_for(|s| *s) => {
                    let _ = self.tx.try_send(Err(Status::unavailable(format!(
                        "agent {} is stopping",
                        self.node
                    ))));
                    break;
                }
            };
            let Some(first) = first else {
                // The node's stream ended: tell the client what it lost, then end.
                if self.pending_lost > 0 {
                    let msg = lost_message(&self.node, &mut self.pending_lost);
                    let _ = self.tx.send(Ok(msg)).await;
                }
                break;
            };
            // Whatever else is ready goes in the same message.
            let mut events = Vec::new();
            let mut item = Some(first);
            while let Some(it) = item.take() {
                match it {
                    StreamItem::Event(mut ev) => {
                        if self
                            .confine
                            .as_ref()
                            .is_some_and(|s| !s.contains(&ev.netns))
                        {
                            // Another node's namespace (the lab's nodes share a kernel).
                        } else if self.tx.capacity() == 0 {
                            // The client is behind: count, do not even encode.
                            self.pending_lost += 1;
                            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        } else {
                            ev.node.clone_from(&self.node);
                            events.push(wire::to_json(&*ev));
                        }
                    }
                    StreamItem::Lost { count, .. } => self.pending_lost += count,
                }
                if events.len() < MAX_BATCH {
                    item = stream.next().now_or_never().flatten();
                }
            }
            if !self.deliver(events) {
                break;
            }
            // The node's stream can stay ready for a long time under load (items of one
            // ring-buffer drain cost no scheduling budget): let the connection's tasks run.
            tokio::task::yield_now().await;
        }
        self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
        // Dropping the stream detaches what it attached.
        drop(stream);
    }

    /// Queues the pending loss count and `events`, dropping (and counting) what does not
    /// fit. False when the client is gone.
    fn deliver(&mut self, events: Vec<Vec<u8>>) -> bool {
        use mpsc::error::TrySendError;
        if self.pending_lost > 0 {
            let count = self.pending_lost;
            let msg = lost_message(&self.node, &mut self.pending_lost);
            match self.tx.try_send(Ok(msg)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.pending_lost = count,
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        if events.is_empty() {
            return true;
        }
        let n = events.len() as u64;
        let msg = proto::StreamMessage {
            item: Some(Item::Events(proto::EventBatch {
                events_json: events,
            })),
        };
        match self.tx.try_send(Ok(msg)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.pending_lost += n;
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// The `lost` message for `pending` events (which it resets).
fn lost_message(node: &str, pending: &mut u64) -> proto::StreamMessage {
    proto::StreamMessage {
        item: Some(Item::Lost(proto::Lost {
            node: node.to_string(),
            count: std::mem::take(pending),
        })),
    }
}
