//! Packet capture through agents (`netpath capture --agents`): what the node side plugs into
//! the server ([`PacketSource`], fed through a [`Batcher`]), and the CLI's side
//! ([`capture_from`]).
//!
//! A capture never lets a client slow the node down: the node side hands packets to a
//! [`Batcher`], which queues batches into the client's bounded queue and, when the queue is
//! full, drops packets (not even encoded) and counts them; the count goes to the client as a
//! `lost` message as soon as there is room. Memory per client is bounded by the queue
//! ([`crate::server::NodeServer::queue`] messages of at most [`MAX_PACKETS`] packets of at most
//! 256 bytes each).
use std::{
    collections::BTreeSet,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::mpsc;
use tonic::Status;

use crate::{
    client::{channel, describe, AgentAddr},
    proto::{self, agent_client::AgentClient, capture_message::Item},
    server::{Stats, TlsFiles},
};

/// Most packets in one message.
pub const MAX_PACKETS: usize = 256;

/// What a client asks to capture, as the node side gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureSpec {
    /// pcap-filter expression; empty: every packet.
    pub filter: String,
    /// Bytes kept of each packet (0: as many as the kernel copies).
    pub snaplen: u32,
    /// Device names or globs; `any` (or none) for every device.
    pub interfaces: Vec<String>,
    /// The devices' namespace; `None`: every namespace the agent serves.
    pub netns: Option<String>,
    pub drops: bool,
    /// 0: the node side's default.
    pub ring_bytes: u32,
}

impl From<proto::CaptureRequest> for CaptureSpec {
    fn from(r: proto::CaptureRequest) -> Self {
        CaptureSpec {
            filter: r.filter,
            snaplen: r.snaplen,
            interfaces: r.interfaces,
            netns: (!r.netns.is_empty()).then_some(r.netns),
            drops: r.drops,
            ring_bytes: r.ring_bytes,
        }
    }
}

impl CaptureSpec {
    /// Every device: no interface, or `any` among them.
    pub fn any_device(&self) -> bool {
        self.interfaces.is_empty() || self.interfaces.iter().any(|i| i == "any")
    }
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureRefused {
    /// The filter does not compile (the parser's message) or another bad request.
    #[error("{0}")]
    Invalid(String),
    /// No device matches.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

impl From<CaptureRefused> for Status {
    fn from(e: CaptureRefused) -> Status {
        match e {
            CaptureRefused::Invalid(m) => Status::invalid_argument(m),
            CaptureRefused::NotFound(m) => Status::not_found(m),
            CaptureRefused::Other(m) => Status::internal(m),
        }
    }
}

/// The node's packets, as the agent serves them.
pub trait PacketSource: Send + Sync {
    /// Starts a capture: compiles the filter, loads and attaches the kernel programs (blocks:
    /// called off the async threads). `confine`: the namespaces the agent may use (`None`:
    /// every namespace of the node); packets of others are never handed on.
    fn start(
        &self,
        spec: &CaptureSpec,
        confine: Option<&BTreeSet<String>>,
    ) -> Result<Box<dyn PacketCapture>, CaptureRefused>;
}

/// A started capture.
pub trait PacketCapture: Send {
    /// What the client hears first.
    fn started(&self) -> proto::CaptureStarted;
    /// Hands packets to `out` until it says the client is gone (blocks: runs on a thread of
    /// its own). Dropping the capture detaches what it attached.
    fn run(self: Box<Self>, out: Batcher);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Told {
    No,
    /// Declared in the batch being built.
    InBatch,
    Yes,
}

/// Packets of one capture on their way to one client's queue; never waits for the client.
pub struct Batcher {
    node: String,
    tx: mpsc::Sender<Result<proto::CaptureMessage, Status>>,
    stats: Arc<Stats>,
    /// By id.
    interfaces: Vec<(proto::CaptureInterface, Told)>,
    batch: proto::PacketBatch,
    /// Packets lost (by the kernel or for this client) not told to the client yet.
    pending_lost: u64,
}

impl Batcher {
    pub(crate) fn new(
        node: String,
        tx: mpsc::Sender<Result<proto::CaptureMessage, Status>>,
        stats: Arc<Stats>,
    ) -> Self {
        stats.open_streams.fetch_add(1, Ordering::Relaxed);
        Batcher {
            node,
            tx,
            stats,
            interfaces: Vec::new(),
            batch: proto::PacketBatch::default(),
            pending_lost: 0,
        }
    }

    /// A new interface's id (the caller keeps it: every call makes a new one).
    pub fn interface(&mut self, netns: &str, device: &str) -> u32 {
        let id = self.interfaces.len() as u32;
        self.interfaces.push((
            proto::CaptureInterface {
                id,
                netns: netns.into(),
                device: device.into(),
            },
            Told::No,
        ));
        id
    }

    /// Adds a packet on interface `iface` (from [`Batcher::interface`]) to the batch, sending
    /// it when full; a packet for a full queue is only counted.
    pub fn packet(
        &mut self,
        iface: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        inbound: Option<bool>,
        drop: Option<(&str, &str)>,
    ) {
        if self.tx.capacity() == 0 {
            // The client is behind: count, do not even encode.
            self.pending_lost += 1;
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some((decl, told)) = self.interfaces.get_mut(iface as usize) else {
            return;
        };
        if *told == Told::No {
            self.batch.interfaces.push(decl.clone());
            *told = Told::InBatch;
        }
        let direction = match inbound {
            Some(true) => proto::PacketDirection::Inbound,
            Some(false) => proto::PacketDirection::Outbound,
            None => proto::PacketDirection::Unknown,
        };
        let (drop_reason, drop_location) = drop
            .map(|(r, l)| (r.to_string(), l.to_string()))
            .unwrap_or_default();
        self.batch.packets.push(proto::Packet {
            interface: iface,
            ts_ns,
            data: data.to_vec(),
            orig_len,
            direction: direction as i32,
            drop_reason,
            drop_location,
        });
        if self.batch.packets.len() >= MAX_PACKETS {
            self.flush();
        }
    }

    /// Packets the kernel could not queue.
    pub fn lost(&mut self, count: u64) {
        self.pending_lost += count;
    }

    /// Whether the client went away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues the pending loss count and the batch, dropping (and counting) what does not
    /// fit. False when the client is gone.
    pub fn flush(&mut self) -> bool {
        use mpsc::error::TrySendError;
        if self.pending_lost > 0 {
            let msg = proto::CaptureMessage {
                item: Some(Item::Lost(proto::Lost {
                    node: self.node.clone(),
                    count: self.pending_lost,
                })),
            };
            match self.tx.try_send(Ok(msg)) {
                Ok(()) => self.pending_lost = 0,
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        if self.batch.packets.is_empty() {
            return !self.tx.is_closed();
        }
        let batch = std::mem::take(&mut self.batch);
        let declared: Vec<u32> = batch.interfaces.iter().map(|i| i.id).collect();
        let n = batch.packets.len() as u64;
        let msg = proto::CaptureMessage {
            item: Some(Item::Packets(batch)),
        };
        let now = match self.tx.try_send(Ok(msg)) {
            Ok(()) => Told::Yes,
            Err(TrySendError::Full(_)) => {
                self.pending_lost += n;
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                // Declared again with the next packet on them.
                Told::No
            }
            Err(TrySendError::Closed(_)) => return false,
        };
        for id in declared {
            self.interfaces[id as usize].1 = now;
        }
        true
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long an agent may take to start a capture (it loads and attaches kernel programs).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What one agent's capture says, for the CLI.
#[derive(Debug)]
pub enum CaptureNews {
    Message(proto::CaptureMessage),
    /// The call failed (could not start, or broke): the status, and whether it had started.
    Failed {
        status: Status,
        started: bool,
    },
    /// The agent ended the stream.
    Ended,
}

/// One line for a failed call: what went wrong, the transport's cause included.
pub fn failure_line(at: &AgentAddr, status: &Status, started: bool) -> String {
    let what = match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded if !started => "unreachable",
        _ if started => "went away",
        _ => "refused the capture",
    };
    format!(
        "agent {} at {} {what}: {}",
        at.node,
        at.addr,
        describe(status)
    )
}

/// Starts `req` on every agent at once; what each says comes on the receiver as (index into
/// `agents`, news), each agent's news in order, until each agent's stream ended or failed.
/// The channel is bounded: a reader that falls behind holds the agents' streams back (they
/// then drop packets and count them).
pub fn capture_from(
    agents: &[AgentAddr],
    tls: &TlsFiles,
    req: proto::CaptureRequest,
    queue: usize,
) -> mpsc::Receiver<(usize, CaptureNews)> {
    let (tx, rx) = mpsc::channel(queue.max(1));
    for (i, at) in agents.iter().enumerate() {
        let tx = tx.clone();
        let req = req.clone();
        let chan = channel(at, tls);
        tokio::spawn(async move {
            let fail = |status, started| (i, CaptureNews::Failed { status, started });
            let chan = match chan {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx
                        .send(fail(Status::invalid_argument(e.to_string()), false))
                        .await;
                    return;
                }
            };
            let mut client = AgentClient::new(chan);
            let mut stream = match tokio::time::timeout(START_TIMEOUT, client.capture(req)).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => {
                    let _ = tx.send(fail(status, false)).await;
                    return;
                }
                Err(_) => {
                    let status = Status::deadline_exceeded(format!(
                        "no answer in {} s",
                        START_TIMEOUT.as_secs()
                    ));
                    let _ = tx.send(fail(status, false)).await;
                    return;
                }
            };
            let mut started = false;
            loop {
                let news = match stream.message().await {
                    Ok(Some(m)) => {
                        started |= matches!(m.item, Some(Item::Started(_)));
                        CaptureNews::Message(m)
                    }
                    Ok(None) => CaptureNews::Ended,
                    Err(status) => CaptureNews::Failed { status, started },
                };
                let last = !matches!(news, CaptureNews::Message(_));
                if tx.send((i, news)).await.is_err() || last {
                    return;
                }
            }
        });
    }
    rx
}

/// Packets of several nodes put in timestamp order within a window: each is held until it
/// has waited `window` (or more than `max_held` are held), and what comes out is always the
/// earliest held. So packets are in timestamp order unless one arrives more than `window`
/// after a later-stamped one has gone out, and none waits much longer than `window`, whatever
/// the nodes' clocks say (a node whose clock is ahead does not hold the others back).
pub struct Reorder<T> {
    window: Duration,
    max_held: usize,
    heap: std::collections::BinaryHeap<Held<T>>,
    /// (sequence number, arrival) of every held item, in arrival order; items that went out
    /// ahead of their turn are in `gone` until they reach the front.
    arrivals: std::collections::VecDeque<(u64, std::time::Instant)>,
    gone: std::collections::HashSet<u64>,
    seq: u64,
}

struct Held<T> {
    ts: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    // Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.ts, other.seq).cmp(&(self.ts, self.seq))
    }
}

impl<T> Reorder<T> {
    pub fn new(window: Duration, max_held: usize) -> Self {
        Reorder {
            window,
            max_held: max_held.max(1),
            heap: Default::default(),
            arrivals: Default::default(),
            gone: Default::default(),
            seq: 0,
        }
    }

    pub fn push(&mut self, ts_ns: u64, item: T, now: std::time::Instant) {
        self.seq += 1;
        self.heap.push(Held {
            ts: ts_ns,
            seq: self.seq,
            item,
        });
        self.arrivals.push_back((self.seq, now));
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest held item, when some item has waited its window (or too many are held,
    /// or `all`).
    pub fn pop(&mut self, now: std::time::Instant, all: bool) -> Option<T> {
        while let Some((seq, _)) = self.arrivals.front() {
            if !self.gone.remove(seq) {
                break;
            }
            self.arrivals.pop_front();
        }
        let due = all
            || self.heap.len() > self.max_held
            || self
                .arrivals
                .front()
                .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= self.window);
        if !due {
            return None;
        }
        let held = self.heap.pop()?;
        if self.arrivals.front().is_some_and(|(s, _)| *s == held.seq) {
            self.arrivals.pop_front();
        } else {
            self.gone.insert(held.seq);
        }
        Some(held.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batcher(
        queue: usize,
    ) -> (
        Batcher,
        mpsc::Receiver<Result<proto::CaptureMessage, Status>>,
    ) {
        let (tx, rx) = mpsc::channel(queue);
        (Batcher::new("n1".into(), tx, Arc::default()), rx)
    }

    fn take(
        rx: &mut mpsc::Receiver<Result<proto::CaptureMessage, Status>>,
    ) -> Vec<proto::capture_message::Item> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.extend(m.unwrap().item);
        }
        out
    }

    #[test]
    fn interfaces_are_declared_once_and_again_after_a_lost_batch() {
        let (mut b, mut rx) = batcher(2);
        let eth = b.interface("pod-a", "eth0");
        b.packet(eth, 5, &[1, 2, 3], 60, Some(true), None);
        b.packet(eth, 6, &[4], 60, Some(false), Some(("NO_SOCKET", "f+0x1")));
        assert!(b.flush());
        // A batch declaring veth0 meets a full queue: dropped, counted, veth0 not declared.
        let veth = b.interface("n1", "veth0");
        b.packet(veth, 7, &[9], 60, None, None);
        b.tx.try_send(Ok(proto::CaptureMessage { item: None }))
            .unwrap();
        assert!(b.flush());
        let first = take(&mut rx);
        let [Item::Packets(batch)] = &first[..] else {
            panic!("{first:?}")
        };
        assert_eq!(batch.interfaces.len(), 1);
        assert_eq!(
            (
                batch.interfaces[0].netns.as_str(),
                batch.interfaces[0].device.as_str()
            ),
            ("pod-a", "eth0")
        );
        assert_eq!(batch.packets.len(), 2);
        assert_eq!(
            batch.packets[0].direction(),
            proto::PacketDirection::Inbound
        );
        assert_eq!(batch.packets[1].drop_reason, "NO_SOCKET");
        // The client keeps up again: the loss first, then veth0 declared with its next packet
        // (eth0 is not declared again).
        b.packet(eth, 8, &[9], 60, None, None);
        b.packet(veth, 9, &[9], 60, None, None);
        assert!(b.flush());
        let items = take(&mut rx);
        let [Item::Lost(lost), Item::Packets(batch)] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!((lost.count, lost.node.as_str()), (1, "n1"));
        assert_eq!(batch.interfaces.len(), 1);
        assert_eq!(batch.interfaces[0].device, "veth0");
        assert_eq!(batch.packets.len(), 2);
    }

    #[test]
    fn a_full_queue_counts_packets_without_encoding_them() {
        let (mut b, mut rx) = batcher(2);
        let i = b.interface("ns", "eth0");
        for round in 0..3 {
            for t in 0..MAX_PACKETS as u64 {
                b.packet(i, round * 1000 + t, &[0; 64], 64, Some(true), None);
            }
        }
        // Two full batches queued, the third round counted.
        assert_eq!(b.pending_lost, MAX_PACKETS as u64);
        assert_eq!(b.stats.dropped.load(Ordering::Relaxed), MAX_PACKETS as u64);
        assert_eq!(take(&mut rx).len(), 2);
        b.flush();
        let items = take(&mut rx);
        assert!(
            matches!(&items[..], [Item::Lost(l)] if l.count == MAX_PACKETS as u64 && l.node == "n1"),
            "{items:?}"
        );
        drop(rx);
        assert!(!b.flush());
    }

    #[test]
    fn requests_become_specs() {
        let spec = CaptureSpec::from(proto::CaptureRequest {
            filter: "udp".into(),
            snaplen: 64,
            interfaces: vec![],
            netns: String::new(),
            drops: true,
            ring_bytes: 0,
        });
        assert!(spec.any_device());
        assert_eq!(spec.netns, None);
        let spec = CaptureSpec::from(proto::CaptureRequest {
            interfaces: vec!["eth0".into()],
            netns: "pod-a".into(),
            ..Default::default()
        });
        assert!(!spec.any_device());
        assert_eq!(spec.netns.as_deref(), Some("pod-a"));
    }

    #[test]
    fn packets_come_out_in_timestamp_order_within_the_window() {
        let t0 = std::time::Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = Reorder::new(Duration::from_millis(100), 100);
        r.push(30, "a30", ms(0));
        r.push(10, "b10", ms(10));
        r.push(20, "a20", ms(20));
        // Nothing has waited its window yet.
        assert_eq!(r.pop(ms(50), false), None);
        // a30 has: out goes the earliest, then the next earliest while a30 is still held.
        assert_eq!(r.pop(ms(100), false), Some("b10"));
        assert_eq!(r.pop(ms(100), false), Some("a20"));
        assert_eq!(r.pop(ms(100), false), Some("a30"));
        assert_eq!(r.pop(ms(100), false), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_node_whose_clock_is_ahead_does_not_hold_the_others_back() {
        let t0 = std::time::Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = Reorder::new(Duration::from_millis(100), 1000);
        // Node b is hours ahead; node a keeps sending.
        r.push(10_000_000_000_000, "b", ms(0));
        let mut out = Vec::new();
        for i in 1..=30u64 {
            r.push(i, "a", ms(i * 10));
            while let Some(x) = r.pop(ms(i * 10), false) {
                out.push((x, i * 10));
            }
        }
        let b_at = out.iter().find(|(x, _)| *x == "b").map(|(_, t)| *t);
        assert_eq!(b_at, Some(100), "{out:?}");
        // Too many held: out they go at once.
        let mut r = Reorder::new(Duration::from_secs(10), 2);
        for i in 0..3 {
            r.push(i, i, t0);
        }
        assert_eq!(r.pop(t0, false), Some(0));
        assert_eq!(r.pop(t0, false), None);
        assert_eq!(r.pop(t0, true), Some(1));
        assert_eq!(r.len(), 1);
    }
}
