//! An [`EventSource`] whose kernel programs stay loaded and attached for its whole life (the
//! agent's): opening a stream only rewrites the in-kernel filter, so a trace through an agent
//! pays no program verification and no attaching.
//!
//! One [`NodeTracer`] serves every open stream. Its kernel filter is the union of the
//! streams' scopes (none open: a filter nothing passes, so an idle node pays only the filter's
//! first test per packet); one pump reads the tracer and hands each stream the events its own
//! scope selects, into a bounded queue per stream (a slow stream loses events, counted, and
//! never holds up the others). New devices (and the namespaces of new pods) are attached when
//! the kernel announces a device created in a namespace the source serves (netlink link
//! notifications, one listener per namespace: the node's own when it serves all of them,
//! since a pod's veth appears there), and again whenever a stream opens.
//!
//! A scope asking for kernel functions (`--functions`) gets a tracer of its own, as without an
//! agent: function probes are loaded per pattern.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};

use async_trait::async_trait;
use netpath_core::{
    model::{Event, EventKind, Proto},
    world::{EventSource, EventStream, Scope, StreamItem, WorldError},
};
use tokio::sync::mpsc;
use tracer_common::{FilterConfig, MAX_FILTER_ADDRS};

use super::{
    kernel::{KernelStream, NodeTracer, TracerSpec},
    source::{filter_for, spec_for, LocalStream},
};

/// A family number no packet has: the filter of an idle tracer selects nothing.
const NO_FAMILY: u8 = 0xff;
/// Items queued per stream before its events are dropped (and counted).
const STREAM_QUEUE: usize = 4096;
/// Longest a link-notification listener blocks before it checks whether the source is gone.
const LINK_TICK: Duration = Duration::from_secs(1);
/// A pod brings several devices at once: one rescan once their announcements settled.
const LINK_SETTLE: Duration = Duration::from_millis(50);

/// What one stream wants of the shared tracer's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// From or to these addresses (outer or inner); empty: every packet.
    addrs: BTreeSet<IpAddr>,
    non_ip: bool,
    drops: bool,
    routes: bool,
    /// Events stamped before the stream opened (UNIX epoch ns) are an earlier stream's.
    since_ns: u64,
}

impl Want {
    pub fn new(scope: &Scope, since_ns: u64) -> Self {
        Want {
            addrs: scope.addrs.iter().copied().collect(),
            non_ip: scope.non_ip,
            drops: scope.drops,
            routes: scope.routes,
            since_ns,
        }
    }

    /// Would a tracer of this scope alone have reported `ev`?
    pub fn selects(&self, ev: &Event) -> bool {
        match ev.kind {
            EventKind::Drop if !self.drops => return false,
            EventKind::Route if !self.routes => return false,
            _ => {}
        }
        if ev.ts_ns < self.since_ns {
            return false;
        }
        if self.addrs.is_empty() {
            return true;
        }
        let hit = |a: Option<IpAddr>| a.is_some_and(|a| self.addrs.contains(&a));
        let tunnel = ev.packet.as_ref().and_then(|p| p.tunnel.as_ref());
        hit(ev.flow.src)
            || hit(ev.flow.dst)
            || tunnel.is_some_and(|t| hit(Some(t.outer_src)) || hit(Some(t.outer_dst)))
            || (ev.flow.family.is_none() && self.non_ip)
    }
}

/// Whether `ev` is a TCP packet to or from `own` (any local address when `own` is the
/// unspecified address).
pub fn is_own_traffic(ev: &Event, own: SocketAddr) -> bool {
    if ev.flow.proto != Proto::Tcp {
        return false;
    }
    let ours = |ip: Option<IpAddr>, port: Option<u16>| {
        port == Some(own.port()) && (own.ip().is_unspecified() || ip == Some(own.ip()))
    };
    ours(ev.flow.src, ev.flow.sport) || ours(ev.flow.dst, ev.flow.dport)
}

/// The kernel filter that passes what any of `wants` selects: their addresses together (all
/// packets when one wants all, or when there are more than the kernel holds); nothing at all
/// when there is no want.
pub fn union_filter<'a>(wants: impl IntoIterator<Item = &'a Want>) -> FilterConfig {
    let mut addrs = BTreeSet::new();
    let (mut any, mut every, mut non_ip) = (false, false, false);
    for w in wants {
        any = true;
        every |= w.addrs.is_empty();
        non_ip |= w.non_ip;
        addrs.extend(w.addrs.iter().copied());
    }
    if !any {
        return FilterConfig {
            family: NO_FAMILY,
            ..FilterConfig::default()
        };
    }
    if every || addrs.len() > MAX_FILTER_ADDRS {
        return FilterConfig::default();
    }
    let addrs: Vec<IpAddr> = addrs.into_iter().collect();
    FilterConfig {
        non_ip_passes: u8::from(non_ip),
        ..filter_for(&addrs)
    }
}

struct Stream {
    want: Want,
    tx: mpsc::Sender<StreamItem>,
    /// Events this stream's queue had no room for.
    dropped: Arc<AtomicU64>,
}

struct Shared {
    tracer: Mutex<NodeTracer>,
    streams: Mutex<BTreeMap<u64, Stream>>,
    next_id: AtomicU64,
    lost: Arc<AtomicU64>,
    /// Namespaces to keep to (the lab's agents); `None`: every namespace of the node.
    confine: Option<BTreeSet<String>>,
    /// The agent's own listening socket: its gRPC traffic crosses the node's devices too, and
    /// streaming events about the packets that carry events would feed itself.
    own: std::sync::OnceLock<SocketAddr>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves nothing half-done here worth refusing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Writes the union of the open streams' filters into the kernel. The union is taken and
    /// written under the tracer's lock: a stream closing while another opens (the last trace's
    /// stream goes when the agent notices its client left, maybe after the next one opened)
    /// must not write a union computed before the other's change after it, which would leave
    /// the new stream's packets filtered out.
    fn refilter(&self) -> Result<(), WorldError> {
        let mut tracer = lock(&self.tracer);
        let filter = union_filter(lock(&self.streams).values().map(|s| &s.want));
        tracer
            .set_filter(filter)
            .map_err(|e| WorldError::Other(e.to_string()))
    }

    /// Attaches to devices and namespaces that appeared since the last look.
    fn rescan(&self) {
        if let Err(e) = lock(&self.tracer).attach_devices(false) {
            tracing::warn!("attaching to new devices: {e}");
        }
    }

    /// Hands `item` to every stream that selects it.
    fn dispatch(&self, item: StreamItem) {
        if let (StreamItem::Event(ev), Some(own)) = (&item, self.own.get()) {
            if is_own_traffic(ev, *own) {
                return;
            }
        }
        let streams = lock(&self.streams);
        let mut takers = streams.values().filter(|s| match &item {
            StreamItem::Event(ev) => s.want.selects(ev),
            StreamItem::Lost { .. } => true,
        });
        // A copy for every taker but the last, which gets the item itself: with one stream
        // open (the usual case) an event is not copied at all.
        let Some(mut current) = takers.next() else {
            return;
        };
        for next in takers {
            if current.tx.try_send(item.clone()).is_err() {
                current.dropped.fetch_add(1, Ordering::Relaxed);
            }
            current = next;
        }
        if current.tx.try_send(item).is_err() {
            current.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The node's programs, loaded once and kept attached; see the module documentation.
pub struct ResidentSource {
    shared: Arc<Shared>,
    node: String,
    /// The tracer's own start-up notes (hooks this kernel lacks), for every stream.
    unavailable: Vec<String>,
}

impl ResidentSource {
    /// Loads and attaches the programs on every device of every namespace (or only of
    /// `confine`'s namespaces) with a filter that passes nothing, and starts the pump and the
    /// background rescan. Blocks while the verifier works: call it off the async runtime's
    /// threads or before serving.
    pub fn start(node: &str, confine: Option<BTreeSet<String>>) -> Result<Self, WorldError> {
        let spec = TracerSpec {
            node: node.to_string(),
            devices: Vec::new(),
            all_devices: confine.is_none(),
            drops: true,
            routes: true,
            filter: union_filter([]),
            // The pump hands events on at once (or drops them for a full stream): a short
            // queue bounds what a flood costs the agent's memory.
            reader_batches: 8,
            ..TracerSpec::default()
        };
        let (mut tracer, stream) =
            NodeTracer::start(spec).map_err(|e| WorldError::Other(e.to_string()))?;
        if let Some(set) = &confine {
            tracer.add_namespaces(set.iter().cloned());
            tracer
                .attach_devices(false)
                .map_err(|e| WorldError::Other(e.to_string()))?;
        }
        let unavailable = tracer.unavailable.clone();
        // Loading parsed the kernel's BTF (tens of MiB, freed since): give it back to the
        // system, or an idle agent keeps it resident for its whole life.
        // SAFETY: malloc_trim only returns free heap memory; no pointer is affected.
        unsafe { libc::malloc_trim(0) };
        let shared = Arc::new(Shared {
            lost: tracer.lost_counter(),
            tracer: Mutex::new(tracer),
            streams: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            confine,
            own: std::sync::OnceLock::new(),
        });
        tokio::spawn(pump(Arc::downgrade(&shared), stream));
        let listen: Vec<String> = match &shared.confine {
            Some(set) => set.iter().cloned().collect(),
            None => vec!["root".into()],
        };
        let (tx, rx) = mpsc::unbounded_channel();
        for netns in listen {
            listen_for_links(Arc::downgrade(&shared), netns, tx.clone());
        }
        tokio::spawn(rescan_on_links(Arc::downgrade(&shared), rx));
        Ok(ResidentSource {
            shared,
            node: node.to_string(),
            unavailable,
        })
    }

    /// Leaves out the packets of the agent's own connections (listening on `addr`): they
    /// cross the node's devices when the agent listens on the node's address.
    pub fn exclude_own_traffic(&self, addr: SocketAddr) {
        let _ = self.shared.own.set(addr);
    }

    /// Devices with the programs attached now.
    pub fn attached_devices(&self) -> usize {
        lock(&self.shared.tracer).attached_devices()
    }

    /// A tracer of its own for a scope the shared one cannot serve (kernel functions).
    async fn open_own(&self, scope: &Scope) -> Result<Box<dyn EventStream>, WorldError> {
        let mut spec = spec_for(scope);
        spec.node.clone_from(&self.node);
        if let Some(set) = &self.shared.confine {
            spec.devices.retain(|d| set.contains(&d.netns));
        }
        let (tracer, stream) = tokio::task::spawn_blocking(move || NodeTracer::start(spec))
            .await
            .map_err(|e| WorldError::Other(format!("tracer task: {e}")))?
            .map_err(|e| WorldError::Other(e.to_string()))?;
        Ok(Box::new(LocalStream::new(tracer, stream)))
    }
}

/// Reads the shared tracer for as long as the source lives.
async fn pump(shared: Weak<Shared>, mut stream: KernelStream) {
    while let Some(item) = stream.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.dispatch(item);
    }
}

/// A thread that tells `tx` whenever a device is created or removed in `netns`, for as long
/// as the source lives. A namespace that cannot be listened to is said once and left to the
/// rescan each stream's opening does.
fn listen_for_links(shared: Weak<Shared>, netns: String, tx: mpsc::UnboundedSender<()>) {
    let events = super::netns::NetnsRef::parse(&netns)
        .map_err(|e| e.to_string())
        .and_then(|ns| super::sys::LinkEvents::open(&ns, LINK_TICK).map_err(|e| e.to_string()));
    let mut events = match events {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!("no device notifications from {netns}: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        while shared.strong_count() > 0 && !tx.is_closed() {
            match events.wait() {
                Ok(true) => {
                    let _ = tx.send(());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("device notifications from {netns}: {e}");
                    return;
                }
            }
        }
    });
}

/// Attaches to new devices when their announcements have settled.
async fn rescan_on_links(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        tokio::time::sleep(LINK_SETTLE).await;
        while rx.try_recv().is_ok() {}
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || shared.rescan()).await;
    }
}

#[async_trait]
impl EventSource for ResidentSource {
    async fn open(&self, scope: &Scope) -> Result<Box<dyn EventStream>, WorldError> {
        if scope.functions.is_some() {
            return self.open_own(scope).await;
        }
        // A pod started a moment ago must be attached before its probe goes out.
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.rescan())
            .await
            .map_err(|e| WorldError::Other(format!("rescan task: {e}")))?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let since_ns = lock(&self.shared.tracer).event_clock_ns();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.streams).insert(
            id,
            Stream {
                want: Want::new(scope, since_ns),
                tx,
                dropped: dropped.clone(),
            },
        );
        let stream = ResidentStream {
            rx,
            id,
            shared: self.shared.clone(),
            dropped,
            dropped_told: 0,
            node: self.node.clone(),
            lost_at_open: self.shared.lost.load(Ordering::Relaxed),
            devices: self.attached_devices(),
            unavailable: self.unavailable.clone(),
        };
        // On error the stream's drop takes its want out again.
        self.shared.refilter()?;
        Ok(Box::new(stream))
    }
}

/// One scope's view of the shared tracer; dropping it narrows the kernel filter again.
struct ResidentStream {
    rx: mpsc::Receiver<StreamItem>,
    id: u64,
    shared: Arc<Shared>,
    dropped: Arc<AtomicU64>,
    /// Of `dropped`, how many went out as [`StreamItem::Lost`].
    dropped_told: u64,
    node: String,
    lost_at_open: u64,
    devices: usize,
    unavailable: Vec<String>,
}

#[async_trait]
impl EventStream for ResidentStream {
    async fn next(&mut self) -> Option<StreamItem> {
        // What the queue had no room for is told first, as the kernel's losses are.
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_told {
            let count = dropped - self.dropped_told;
            self.dropped_told = dropped;
            return Some(StreamItem::Lost {
                node: self.node.clone(),
                count,
            });
        }
        self.rx.recv().await
    }

    /// Events the kernel lost while this stream was open (it cannot tell whose they were)
    /// and events this stream had no room for.
    fn lost(&self) -> u64 {
        self.shared
            .lost
            .load(Ordering::Relaxed)
            .saturating_sub(self.lost_at_open)
            + self.dropped.load(Ordering::Relaxed)
    }

    fn devices(&self) -> usize {
        self.devices
    }

    fn unavailable(&self) -> Vec<String> {
        self.unavailable.clone()
    }
}

impl Drop for ResidentStream {
    fn drop(&mut self) {
        lock(&self.shared.streams).remove(&self.id);
        if let Err(e) = self.shared.refilter() {
            tracing::warn!("narrowing the kernel filter: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netpath_core::model::{Family, FlowKey, PacketSection, Proto, Tunnel, TunnelKind};
    use tracer_common::parse::quick_verdict_with;

    fn scope(addrs: &[&str]) -> Scope {
        Scope {
            places: Vec::new(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            non_ip: false,
            drops: true,
            routes: false,
            ring_bytes: 0,
            functions: None,
        }
    }

    fn event(kind: EventKind, ts_ns: u64, src: &str, dst: &str) -> Event {
        let ev: Event = serde_json::from_value(serde_json::json!({
            "kind": "hop", "ts_ns": 0, "node": "n", "netns": "root", "netns_inode": 1,
            "ifname": "eth0", "ifindex": 2, "dir": "ingress", "hook": "tc_ingress",
            "family": 4, "proto": "icmp",
        }))
        .expect("event");
        Event {
            kind,
            ts_ns,
            flow: FlowKey {
                family: Some(if src.contains(':') {
                    Family::Ipv6
                } else {
                    Family::Ipv4
                }),
                src: Some(src.parse().unwrap()),
                dst: Some(dst.parse().unwrap()),
                proto: Proto::Icmp,
                sport: None,
                dport: None,
            },
            ..ev
        }
    }

    #[test]
    fn the_agents_own_connections_are_left_out() {
        let tcp = |src: &str, sport: u16, dst: &str, dport: u16| {
            let mut ev = event(EventKind::Hop, 1, src, dst);
            ev.flow.proto = Proto::Tcp;
            (ev.flow.sport, ev.flow.dport) = (Some(sport), Some(dport));
            ev
        };
        let own: SocketAddr = "198.18.0.2:7101".parse().unwrap();
        assert!(is_own_traffic(
            &tcp("198.18.0.2", 7101, "198.18.0.1", 40000),
            own
        ));
        assert!(is_own_traffic(
            &tcp("198.18.0.1", 40000, "198.18.0.2", 7101),
            own
        ));
        // The same port on another address, another port, another protocol: a workload's.
        assert!(!is_own_traffic(
            &tcp("10.0.0.1", 7101, "10.0.0.2", 40000),
            own
        ));
        assert!(!is_own_traffic(
            &tcp("198.18.0.2", 7102, "198.18.0.1", 40000),
            own
        ));
        assert!(!is_own_traffic(
            &event(EventKind::Hop, 1, "198.18.0.2", "198.18.0.1"),
            own
        ));
        // Listening on every address: the port alone says it.
        let any: SocketAddr = "[::]:7101".parse().unwrap();
        assert!(is_own_traffic(&tcp("fd00::1", 7101, "fd00::2", 1), any));
    }

    #[test]
    fn a_stream_gets_its_addresses_and_kinds_from_its_opening_on() {
        let want = Want::new(&scope(&["10.0.0.1", "fd00::1"]), 100);
        assert!(want.selects(&event(EventKind::Hop, 100, "10.0.0.1", "10.0.0.2")));
        assert!(want.selects(&event(EventKind::Drop, 150, "fd00::2", "fd00::1")));
        // Another flow, an earlier stream's event, a kind the scope did not ask for.
        assert!(!want.selects(&event(EventKind::Hop, 150, "10.0.0.3", "10.0.0.2")));
        assert!(!want.selects(&event(EventKind::Hop, 99, "10.0.0.1", "10.0.0.2")));
        assert!(!want.selects(&event(EventKind::Route, 150, "10.0.0.1", "10.0.0.2")));
        // Its packets inside a tunnel between other addresses, and the tunnel's own.
        let mut inner = event(EventKind::Hop, 150, "10.9.0.1", "10.9.0.2");
        inner.packet = Some(PacketSection {
            icmp: None,
            len: 100,
            pkt_id: "x".into(),
            tunnel: Some(Tunnel {
                kind: TunnelKind::Vxlan,
                vni: Some(1),
                outer_src: "10.0.0.1".parse().unwrap(),
                outer_dst: "10.0.0.9".parse().unwrap(),
            }),
            skb: "0".into(),
            ident: Default::default(),
            function: None,
        });
        assert!(want.selects(&inner));
    }

    #[test]
    fn the_kernel_filter_is_the_union_of_the_open_streams() {
        let a = Want::new(&scope(&["10.0.0.1"]), 0);
        let b = Want {
            non_ip: true,
            ..Want::new(&scope(&["fd00::1", "10.0.0.1"]), 0)
        };
        let f = union_filter([&a, &b]);
        assert_eq!((f.n_addrs, f.non_ip_passes, f.family), (2, 1, 0));
        // One stream wanting everything, or more addresses than the kernel holds: all pass.
        let all = Want::new(&scope(&[]), 0);
        assert_eq!(union_filter([&a, &all]), FilterConfig::default());
        let many: Vec<String> = (1..=MAX_FILTER_ADDRS + 1)
            .map(|i| format!("10.1.0.{i}"))
            .collect();
        let many = Want::new(
            &scope(&many.iter().map(String::as_str).collect::<Vec<_>>()),
            0,
        );
        assert_eq!(union_filter([&many]), FilterConfig::default());
    }

    #[test]
    fn an_idle_filter_passes_no_packet_of_either_family_nor_arp() {
        let idle = union_filter([]);
        let mut v4 = vec![0u8; 64];
        v4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        v4[14] = 0x45;
        v4[23] = 1; // ICMP
        let mut v6 = vec![0u8; 80];
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        v6[14] = 0x60;
        v6[20] = 58; // ICMPv6
        let mut arp = vec![0u8; 64];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        for frame in [&v4, &v6, &arp] {
            assert_eq!(
                quick_verdict_with(&idle, frame.as_slice(), true, 0),
                Some(false)
            );
        }
    }
}
