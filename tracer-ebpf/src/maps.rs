//! The maps the programs share with userspace and with each other, and the per-CPU scratch
//! space.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use tracer_common::{parse, Config, RawEvent};

#[map]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// `netpath capture`'s filter: slot 0 holds libpcap's program translated to eBPF by
/// userspace, slot 1 `tc_pcap_matched`, which the filter tail-calls for accepted packets.
#[map]
pub(crate) static PCAP_PROGS: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// `netpath capture` writing pcapng: `pcapng_record::iface_key` -> pcapng interface id, set by
/// userspace once it has written the interface's description block.
#[map]
pub(crate) static PCAP_IFACES: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU working memory: the event being built and its parsed headers (too big for the
/// 512-byte BPF stack).
#[repr(C)]
pub(crate) struct Scratch {
    pub(crate) ev: RawEvent,
    /// Room behind `ev.data` for the end of a pcapng record ([`crate::pcapng::output_epb`]);
    /// `pcapng_record::MAX_TAIL` and 4 more, because the verifier bounds the padded data
    /// length only by SNAP_LEN + 3.
    pub(crate) tail: [u8; 40],
    pub(crate) parsed: parse::Parsed,
}

/// Bytes this CPU queued since it last woke the ring reader.
#[map]
pub(crate) static WAKE_BYTES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The device and namespace of the packet this CPU is receiving (set in netif_receive_skb when
/// route events are on, cleared when the NET_RX softirq ends): the namespace of an IPv4 route
/// lookup that found no nexthop inside a receive.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RxCtx {
    pub(crate) netns: u32,
    pub(crate) ifindex: u32,
    /// The task the receive ran on: a record left behind by a receive outside the NET_RX
    /// softirq (threaded NAPI, process-context receive) is never used for another task.
    pub(crate) task: u64,
}

#[map]
pub(crate) static RX_CTX: PerCpuArray<RxCtx> = PerCpuArray::with_max_entries(1, 0);

/// Last probing state (INCOMPLETE/PROBE) of each neighbour, by `struct neighbour` address: the
/// `old_state` of a neighbour that then fails.
#[map]
pub(crate) static NEIGH_PREV: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// Events that did not fit in the ring buffer, per CPU.
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
