//! The agent's packet capture (`Capture` of the agent protocol): the same machinery as
//! `netpath capture` on this machine (the filter compiled by the same parser, pushed into the
//! kernel where it can run there, the ring-buffer records read in place by the
//! [`RecordDecoder`] and filtered by the [`CaptureSink`]), with the packets handed to a
//! [`Batcher`] for one client instead of a file.
//!
//! Each call gets kernel programs of its own (loaded when the call comes, detached when the
//! client goes away), as a local capture does; the agent's resident programs serve events.
use std::{
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use netpath_agent::{
    capture::{Batcher, CaptureRefused, CaptureSpec, PacketCapture, PacketSource},
    proto,
};
use tracer_common::RawEvent;

use super::{
    live::{kernel_filter, Epoll, KERNEL_SNAPLEN, MIN_KERNEL_COPY},
    CaptureOutput, CaptureSink, Direction, PacketFilter, PacketOut, PacketRef, RecordDecoder,
    RingReader,
};
use crate::node::{
    kernel::{DeviceSelector, NodeTracer, RawRing, TracerSpec},
    names::LiveNamer,
    netns,
};

/// The longest a packet waits in the ring buffer or in a batch (the kernel wakes the reader
/// only once enough bytes are queued).
const POLL_MS: i32 = 20;
/// How often devices that appeared since (new pods) are looked for.
const RESCAN: Duration = Duration::from_secs(1);
/// Ring buffer when the client does not say.
const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// This node's packets, for the agent.
pub struct NodePackets {
    node: String,
}

impl NodePackets {
    pub fn new(node: &str) -> Self {
        NodePackets { node: node.into() }
    }
}

fn other(e: impl std::fmt::Display) -> CaptureRefused {
    CaptureRefused::Other(e.to_string())
}

impl PacketSource for NodePackets {
    fn start(
        &self,
        spec: &CaptureSpec,
        confine: Option<&BTreeSet<String>>,
    ) -> Result<Box<dyn PacketCapture>, CaptureRefused> {
        let expr = spec.filter.trim();
        let filter = if expr.is_empty() {
            None
        } else {
            // The parser's one line, as a local capture prints it.
            Some(PacketFilter::compile(expr).map_err(|e| CaptureRefused::Invalid(e.to_string()))?)
        };
        let ring_bytes = match spec.ring_bytes {
            0 => DEFAULT_RING_BYTES,
            b if b.is_power_of_two() && b >= 4096 => b,
            b => {
                return Err(CaptureRefused::Invalid(format!(
                    "ring buffer of {b} bytes: a power of two, at least 4096"
                )))
            }
        };
        let snaplen = match spec.snaplen {
            0 => KERNEL_SNAPLEN,
            s => s.min(KERNEL_SNAPLEN),
        };
        let any = spec.any_device();
        let patterns: Vec<String> = if any {
            vec!["*".into()]
        } else {
            spec.interfaces.clone()
        };
        // The asked namespace, else those the agent serves (confined), else every one (`any`)
        // or this one.
        let namespaces: Option<Vec<String>> = match (&spec.netns, confine) {
            (Some(ns), _) => Some(vec![ns.clone()]),
            (None, Some(set)) => Some(set.iter().cloned().collect()),
            (None, None) if any => None,
            (None, None) => Some(vec!["root".into()]),
        };
        let mut kfilter = kernel_filter(filter.as_ref().and_then(PacketFilter::kernel_hint));
        if let Some([one]) = namespaces.as_deref() {
            // Drop points see every namespace: keep only the one the devices are in.
            kfilter.netns = netns::by_name(one)
                .map_err(|e| CaptureRefused::NotFound(e.to_string()))?
                .inode;
        }
        let selectors: Vec<DeviceSelector> = namespaces
            .iter()
            .flatten()
            .flat_map(|ns| {
                patterns.iter().map(|p| DeviceSelector {
                    netns: ns.clone(),
                    pattern: p.clone(),
                })
            })
            .collect();
        let tspec = TracerSpec {
            node: self.node.clone(),
            devices: Vec::new(),
            all_devices: namespaces.is_none(),
            drops: spec.drops,
            dev_hops: false,
            filter: kfilter,
            ring_bytes,
            snap_len: snaplen.max(MIN_KERNEL_COPY),
            capture_filter: filter
                .as_ref()
                .map(PacketFilter::instructions)
                .unwrap_or_default(),
            capture_filter_untagged: filter.as_ref().is_some_and(|f| !f.reads_vlan_tags()),
            pcapng_direct: false,
            ..TracerSpec::default()
        };
        let (mut tracer, ring) = NodeTracer::start_raw(tspec).map_err(other)?;
        // Not strict: a pattern may match in some of the namespaces only.
        tracer.add_devices(selectors);
        tracer.attach_devices(false).map_err(other)?;
        if tracer.attached_devices() == 0 && namespaces.is_some() {
            return Err(CaptureRefused::NotFound(format!(
                "no device {} in {}",
                patterns.join(","),
                namespaces.unwrap_or_default().join(",")
            )));
        }
        let decoder = RecordDecoder::new(
            LiveNamer::new(ring.reasons.clone()).with_boot_offset_ns(ring.boot_offset_ns),
            &self.node,
            snaplen,
        );
        let filter_runs = match &tracer.capture_filter_in_kernel {
            None => String::new(),
            Some(Ok(())) => "kernel".into(),
            Some(Err(why)) => format!("userspace: {why}"),
        };
        let mut unavailable = tracer.unavailable.clone();
        if tracer.uses_clsact() {
            unavailable.push(
                "tc programs attached as clsact filters (no tcx): if the agent is killed, \
                 `netpath cleanup` on the node removes them"
                    .into(),
            );
        }
        let started = proto::CaptureStarted {
            node: self.node.clone(),
            devices: tracer.attached_devices() as u32,
            unavailable,
            snaplen,
            filter_runs,
        };
        Ok(Box::new(NodeCapture {
            tracer,
            ring,
            decoder,
            filter,
            started,
            ring_bytes: ring_bytes as usize,
            confine: confine.cloned(),
            node: self.node.clone(),
        }))
    }
}

struct NodeCapture {
    tracer: NodeTracer,
    ring: RawRing,
    decoder: RecordDecoder<LiveNamer>,
    filter: Option<PacketFilter>,
    started: proto::CaptureStarted,
    ring_bytes: usize,
    confine: Option<BTreeSet<String>>,
    node: String,
}

impl PacketCapture for NodeCapture {
    fn started(&self) -> proto::CaptureStarted {
        self.started.clone()
    }

    fn run(self: Box<Self>, out: Batcher) {
        let NodeCapture {
            mut tracer,
            ring,
            mut decoder,
            filter,
            ring_bytes,
            confine,
            node,
            ..
        } = *self;
        let kernel_lost = Arc::new(AtomicU64::new(0));
        let to_client = ToClient {
            out,
            allowed: confine.map(|set| Allowed { set, node }),
            kernel_lost: kernel_lost.clone(),
            kernel_told: 0,
        };
        let mut sink: CaptureSink<std::io::Sink> =
            CaptureSink::new(filter, CaptureOutput::Packets(Box::new(to_client)));
        let (epoll, mut reader) = match (
            Epoll::new(ring.ring.as_raw_fd()),
            RingReader::new(ring.ring.as_fd(), ring_bytes),
        ) {
            (Ok(e), Ok(r)) => (e, r),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("capture: the ring buffer: {e}");
                return;
            }
        };
        let ring_records = (ring_bytes / std::mem::size_of::<RawEvent>()).max(1);
        let mut rescanned = Instant::now();
        loop {
            if let Err(e) = epoll.wait(POLL_MS) {
                tracing::warn!("capture: waiting for the ring buffer: {e}");
                break;
            }
            reader.drain(ring_records, |record| {
                // The packet output cannot fail: a gone client shows at the flush.
                let _ = decoder.push(record, &mut sink);
                true
            });
            kernel_lost.store(ring.lost_total(), Ordering::Relaxed);
            if sink.flush().is_err() {
                break; // the client went away
            }
            if rescanned.elapsed() >= RESCAN {
                if let Err(e) = tracer.attach_devices(false) {
                    tracing::warn!("capture: attaching to new devices: {e}");
                }
                rescanned = Instant::now();
            }
        }
        // Dropping the tracer detaches its programs.
        drop(tracer);
    }
}

/// The namespaces a confined agent may hand packets of on (drop points see every namespace
/// of the kernel).
struct Allowed {
    set: BTreeSet<String>,
    node: String,
}

impl Allowed {
    /// `netns` as the decoder names it: the node's own namespace after the node.
    fn allows(&self, netns: &str) -> bool {
        self.set.contains(netns) || (netns == self.node && self.set.contains("root"))
    }
}

/// An interface id for packets that are not handed on.
const FOREIGN: u32 = u32::MAX;

/// The sink's output: packets to the client's [`Batcher`].
struct ToClient {
    out: Batcher,
    allowed: Option<Allowed>,
    /// The kernel's loss counter as last read, and how much of it the client was told.
    kernel_lost: Arc<AtomicU64>,
    kernel_told: u64,
}

impl PacketOut for ToClient {
    fn interface(&mut self, _node: &str, netns: &str, ifname: &str) -> u32 {
        if self.allowed.as_ref().is_some_and(|a| !a.allows(netns)) {
            return FOREIGN;
        }
        self.out.interface(netns, ifname)
    }

    fn packet(&mut self, iface: u32, pkt: &PacketRef<'_>) {
        if iface == FOREIGN {
            return;
        }
        self.out.packet(
            iface,
            pkt.ts_ns,
            pkt.data,
            pkt.orig_len,
            pkt.dir.map(|d| d == Direction::In),
            pkt.drop.map(|d| (d.reason.as_str(), d.location.as_str())),
        );
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let lost = self.kernel_lost.load(Ordering::Relaxed);
        if lost > self.kernel_told {
            self.out.lost(lost - self.kernel_told);
            self.kernel_told = lost;
        }
        if self.out.flush() {
            Ok(())
        } else {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confined_agent_hands_on_only_its_namespaces() {
        let a = Allowed {
            set: ["pod-a".to_string(), "root".to_string()].into(),
            node: "node-1".into(),
        };
        assert!(a.allows("pod-a"));
        assert!(a.allows("node-1"));
        assert!(!a.allows("pod-b"));
        let b = Allowed {
            set: ["pod-b".to_string()].into(),
            node: "node-1".into(),
        };
        assert!(!b.allows("node-1"));
    }
}
