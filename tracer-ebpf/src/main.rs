//! netpath's kernel programs: tc/tcx hooks on chosen devices and BTF tracepoints that see every
//! device and every drop. The tc programs first decide the filter from `CONFIG` on the headers
//! in place (direct packet access) when the packet is plain; otherwise, and in the tracepoints,
//! each program copies the packet headers into a per-CPU scratch event and parses them. Only a
//! packet that passes touches the ring buffer (one output per event, `snap_len` bytes of data;
//! a failed output is counted in `LOST`). Kernel struct offsets come from `CONFIG.offsets`,
//! which userspace reads from the running kernel's BTF.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task, bpf_probe_read_kernel as probe_read_raw, bpf_skb_load_bytes,
        },
    },
    macros::{btf_tracepoint, classifier, fentry, kprobe, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TcContext},
    EbpfContext,
};
use tracer_common::{
    dir, flags, hook, kind, nud, parse, pcapng_record, Config, KernelOffsets, NeighRaw, RawEvent,
    RouteRaw, SNAP_LEN,
};

/// tcx "next" / tc "unspec": let the packet continue to the next program and the stack.
const TC_ACT_UNSPEC: i32 = -1;

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// `netpath capture`'s filter: slot 0 holds libpcap's program translated to eBPF by
/// userspace, slot 1 `tc_pcap_matched`, which the filter tail-calls for accepted packets.
#[map]
static PCAP_PROGS: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// `netpath capture` writing pcapng: `pcapng_record::iface_key` -> pcapng interface id, set by
/// userspace once it has written the interface's description block.
#[map]
static PCAP_IFACES: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU working memory: the event being built and its parsed headers (too big for the
/// 512-byte BPF stack).
#[repr(C)]
struct Scratch {
    ev: RawEvent,
    /// Room behind `ev.data` for the end of a pcapng record ([`output_epb`]);
    /// `pcapng_record::MAX_TAIL` and 4 more, because the verifier bounds the padded data
    /// length only by SNAP_LEN + 3.
    tail: [u8; 40],
    parsed: parse::Parsed,
}

/// Bytes this CPU queued since it last woke the ring reader.
#[map]
static WAKE_BYTES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The device and namespace of the packet this CPU is receiving (set in netif_receive_skb when
/// route events are on, cleared when the NET_RX softirq ends): the namespace of an IPv4 route
/// lookup that found no nexthop inside a receive.
#[repr(C)]
#[derive(Clone, Copy)]
struct RxCtx {
    netns: u32,
    ifindex: u32,
    /// The task the receive ran on: a record left behind by a receive outside the NET_RX
    /// softirq (threaded NAPI, process-context receive) is never used for another task.
    task: u64,
}

#[map]
static RX_CTX: PerCpuArray<RxCtx> = PerCpuArray::with_max_entries(1, 0);

/// Last probing state (INCOMPLETE/PROBE) of each neighbour, by `struct neighbour` address: the
/// `old_state` of a neighbour that then fails.
#[map]
static NEIGH_PREV: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// Events that did not fit in the ring buffer, per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
unsafe fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Reads `skb->dev->nd_net->ns.inum` and `skb->dev->ifindex`; falls back to the socket's
/// namespace when the skb has no device yet.
#[inline(always)]
unsafe fn skb_netns_ifindex(o: &KernelOffsets, skb: u64) -> (u32, u32) {
    unsafe {
        let dev: u64 = read(skb, o.skb_dev).unwrap_or(0);
        if dev != 0 {
            let ifindex: u32 = read(dev, o.dev_ifindex).unwrap_or(0);
            return (dev_netns(o, dev), ifindex);
        }
        let sk: u64 = read(skb, o.skb_sk).unwrap_or(0);
        if sk != 0 {
            let net: u64 = read(sk, o.sk_net).unwrap_or(0);
            if net != 0 {
                return (read(net, o.net_ns_inum).unwrap_or(0), 0);
            }
        }
        (0, 0)
    }
}

/// `dev->nd_net->ns.inum`, 0 when unreadable.
#[inline(always)]
unsafe fn dev_netns(o: &KernelOffsets, dev: u64) -> u32 {
    unsafe {
        let net: u64 = read(dev, o.dev_nd_net).unwrap_or(0);
        if net != 0 {
            read(net, o.net_ns_inum).unwrap_or(0)
        } else {
            0
        }
    }
}

/// Copies the packet's linear data from the MAC header (or the network header when there is
/// none) into `ev.data`, through the kernel skb.
#[inline(always)]
unsafe fn copy_skb_data(o: &KernelOffsets, skb: u64, ev: &mut RawEvent) {
    unsafe {
        let head: u64 = read(skb, o.skb_head).unwrap_or(0);
        let mac: u16 = read(skb, o.skb_mac_header).unwrap_or(0xffff);
        let net: u16 = read(skb, o.skb_network_header).unwrap_or(0xffff);
        let tail: u32 = read(skb, o.skb_tail).unwrap_or(0);
        ev.protocol = u16::from_be(read::<u16>(skb, o.skb_protocol).unwrap_or(0));
        let start = if mac != 0xffff && mac < net {
            ev.flags |= flags::DATA_FROM_MAC;
            mac as u32
        } else {
            net as u32
        };
        if head == 0 || start == 0xffff || tail <= start {
            ev.data_len = 0;
            return;
        }
        let mut n = tail - start;
        if n > SNAP_LEN as u32 {
            n = SNAP_LEN as u32;
        }
        let n = n & (2 * SNAP_LEN as u32 - 1);
        if n == 0 || n > SNAP_LEN as u32 {
            ev.data_len = 0;
            return;
        }
        let src = head + start as u64;
        // A VLAN tag the device moved into the skb's metadata goes back after the MAC
        // addresses, as at tc (and in tcpdump).
        let vlan_proto: u16 = if ev.flags & flags::DATA_FROM_MAC != 0 && o.skb_vlan_proto != 0 {
            read(skb, o.skb_vlan_proto).unwrap_or(0)
        } else {
            0
        };
        if vlan_proto != 0 {
            let tci: u16 = read(skb, o.skb_vlan_tci).unwrap_or(0);
            // Kernel reads into `ev.data`, whose bounds `copy_with_tag` keeps (inside this
            // function's unsafe block).
            ev.data_len = copy_with_tag(ev, n, vlan_proto, tci, |off, dst, len| {
                probe_read_raw(dst.cast(), len, (src + off as u64) as *const _) == 0
            });
            if ev.data_len != 0 {
                ev.flags |= flags::VLAN_TAG_ADDED;
            }
            return;
        }
        if probe_read_raw(ev.data.as_mut_ptr().cast(), n, src as *const _) != 0 {
            ev.data_len = 0;
            return;
        }
        ev.data_len = n as u16;
    }
}

/// Copies the first `n` bytes of a frame into `ev.data` with an 802.1Q tag put back after the
/// MAC addresses (`proto` in network order, as the skb keeps it; `tci` in host order).
/// `load(offset, dst, len)` reads the frame's bytes and says whether it could. Returns the
/// bytes copied, 0 when a read failed.
#[inline(always)]
fn copy_with_tag(
    ev: &mut RawEvent,
    n: u32,
    proto: u16,
    tci: u16,
    load: impl Fn(u32, *mut u8, u32) -> bool,
) -> u16 {
    const MACS: usize = 12;
    if (n as usize) < MACS + 2 {
        return 0;
    }
    // The rest of the frame after the addresses, cut so that it fits behind the tag. Read
    // back through memory so the check below stays in the program: the compiler knows it is
    // at least 2, the verifier would not, and the reads need a length it can see is >= 1.
    let rest = (n - MACS as u32).min((SNAP_LEN - MACS - VLAN_HLEN) as u32);
    // SAFETY: a read of a local.
    let rest = unsafe { core::ptr::read_volatile(&rest) };
    if rest == 0 || rest > (SNAP_LEN - MACS - VLAN_HLEN) as u32 {
        return 0;
    }
    // The copies stay inside ev.data: 12 bytes, then `rest` <= SNAP_LEN - 16 at offset 16.
    if !load(0, ev.data.as_mut_ptr(), MACS as u32) {
        return 0;
    }
    ev.data[MACS..MACS + 2].copy_from_slice(&proto.to_ne_bytes());
    ev.data[MACS + 2..MACS + 4].copy_from_slice(&tci.to_be_bytes());
    // SAFETY: inside ev.data (SNAP_LEN bytes).
    let dst = unsafe { ev.data.as_mut_ptr().add(MACS + VLAN_HLEN) };
    if !load(MACS as u32, dst, rest) {
        return 0;
    }
    (MACS + VLAN_HLEN) as u16 + rest as u16
}

/// Packet bytes per event for userspace: `cfg.snap_len`, in [1, SNAP_LEN].
#[inline(always)]
fn snap_len(cfg: &Config) -> u32 {
    let s = cfg.snap_len;
    if s == 0 || s > SNAP_LEN as u32 {
        SNAP_LEN as u32
    } else {
        s
    }
}

/// Parses the copied packet into `scratch.parsed` and applies the filter (not the namespace).
#[inline(always)]
fn passes_filter(cfg: &Config, scratch: &mut Scratch) -> bool {
    if !parse::filter_active(&cfg.filter) {
        return true;
    }
    let ev = &scratch.ev;
    let Some((data, from_mac)) = copied(ev) else {
        return false;
    };
    if let Some(verdict) = parse::quick_verdict(&cfg.filter, data, from_mac, ev.protocol) {
        return verdict;
    }
    full_filter(cfg, scratch)
}

/// The bytes copied into `ev` and whether they start at the MAC header.
#[inline(always)]
fn copied(ev: &RawEvent) -> Option<(&[u8], bool)> {
    let len = (ev.data_len as usize) & (2 * SNAP_LEN - 1);
    Some((ev.data.get(..len)?, ev.flags & flags::DATA_FROM_MAC != 0))
}

/// The full parse of the copied packet and the filter on it.
#[inline(always)]
fn full_filter(cfg: &Config, scratch: &mut Scratch) -> bool {
    let ev = &scratch.ev;
    let Some((data, from_mac)) = copied(ev) else {
        return false;
    };
    let p = &mut scratch.parsed;
    zero_parsed(p);
    parse::parse_into(data, from_mac, ev.protocol, cfg.filter.vxlan_port, p);
    parse::filter_matches(&cfg.filter, p)
}

/// `*p = Parsed::default()` in 8-byte stores straight into the map value (a plain assignment
/// builds the zero value on the stack and copies it byte by byte).
#[inline(always)]
fn zero_parsed(p: &mut parse::Parsed) {
    const WORDS: usize = core::mem::size_of::<parse::Parsed>() / 8;
    let w = p as *mut parse::Parsed as *mut u64;
    let mut i = 0;
    while i < WORDS {
        // SAFETY: Parsed is 8-aligned, a multiple of 8 bytes, and all-zero is its default.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
        i += 1;
    }
}

/// The skb's linear data, read in place (tc direct packet access): every header is checked
/// against `data_end` once, in a form the verifier follows.
struct Pkt {
    data: usize,
    end: usize,
}

impl parse::Headers for Pkt {
    #[inline(always)]
    fn bytes_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        let p = self.data + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p + N) lies inside the packet's linear data, which outlives the program
        // run; [u8; N] has no alignment or validity requirement.
        Some(unsafe { &*(p as *const [u8; N]) })
    }
}

/// One ring-buffer output of `ev` (batched wake-up); a failure is counted in `LOST`.
#[inline(always)]
fn output(cfg: &Config, ev: &RawEvent) {
    // Only the copied bytes go out: a record is the header plus `data_len` bytes, not the
    // whole SNAP_LEN buffer (userspace zero-fills the rest). The length is read again here
    // so the verifier does not carry it through the parser.
    // SAFETY: a plain read of the event's field (volatile so it is not reused from above).
    let len = unsafe { core::ptr::read_volatile(&ev.data_len) } as usize;
    let len = len & (2 * SNAP_LEN - 1);
    if len > SNAP_LEN {
        return;
    }
    let size = RawEvent::DATA_OFFSET + len;
    // SAFETY: `ev` is a RawEvent of DATA_OFFSET + SNAP_LEN bytes and len <= SNAP_LEN.
    let record = unsafe { core::slice::from_raw_parts((ev as *const RawEvent).cast::<u8>(), size) };
    output_bytes(cfg, record);
}

/// The ring-buffer output of one record, waking the reader once per `wakeup_bytes` this CPU
/// queued; a failure is counted in `LOST`.
#[inline(always)]
fn output_bytes(cfg: &Config, record: &[u8]) {
    let size = record.len();
    // Wake the reader once per wakeup_bytes this CPU queues (the reader also looks every
    // 20 ms), not on every record once the ring holds that much: each forced wake-up is an
    // irq_work self-IPI, and asking the ring how full it is reads the consumer position the
    // reader keeps writing. A wake-up when the reader has already drained costs one poll.
    let Some(since_wake) = WAKE_BYTES.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let wake = unsafe {
        *since_wake += (size + 8) as u64;
        if *since_wake >= cfg.wakeup_bytes as u64 {
            *since_wake = 0;
            true
        } else {
            false
        }
    };
    let wake = if wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<[u8]>(record, wake as u64).is_err() {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *lost += 1 };
        }
    }
}

/// The tc programs' per-packet path. `from_mac`: the device has a link-layer header (decided
/// per device at attach time: the `_l3` programs go on devices without one, such as tun,
/// wireguard or ipip).
///
/// What runs for a packet the filter rejects is only this: the config lookup and the early
/// filter on the headers in place, inlined into one short run of code. Everything else is out
/// of line in [`tc_event`]. Measured in place on a UDP flood, this layout took a run from 37
/// to 22 ns above an empty program's (the early filter as its own subprogram, with the event
/// code inline, jumped across a program of thousands of instructions).
#[inline(always)]
fn tc_hook(ctx: &TcContext, hook_id: u8, direction: u8, from_mac: bool) {
    let Some(cfg) = CONFIG.get(0) else {
        return;
    };
    // SAFETY: a plain read of the context's protocol field.
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    // A plain packet (no tunnel, no VLAN tag, no IPv6 extension header, in the linear data)
    // is decided here, before any copy.
    let pkt = Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let verdict = match parse::quick_verdict_with(&cfg.filter, &pkt, from_mac, protocol) {
        Some(true) => VERDICT_MATCH,
        Some(false) => return,
        None => VERDICT_UNDECIDED,
    };
    let packed =
        verdict | (hook_id as u32) << 8 | (direction as u32) << 16 | (from_mac as u32) << 24;
    // A VLAN tag the device took out of the frame (skb metadata) is put back in the copy, as
    // tcpdump does; libpcap's program expects it inline, so such packets are left to
    // userspace's filter.
    // SAFETY: a plain read of the context's vlan_present field (only with a capture filter).
    if from_mac && cfg.pcap_filter != 0 && unsafe { (*ctx.skb.skb).vlan_present } == 0 {
        // The capture filter decides; `tc_pcap_matched` finds the packed arguments in the
        // control block (scratch space of the tc layer, only ours between these tail calls).
        // SAFETY: tc programs may write `cb`; a tail call that fails returns here.
        unsafe {
            (*ctx.skb.skb).cb[0] = packed;
            PCAP_PROGS.tail_call(ctx, 0);
        }
        // No filter program in the slot: the event goes out unmarked (userspace filters).
    }
    tc_event(ctx.skb.skb, packed);
}

const VERDICT_MATCH: u32 = 1;
const VERDICT_UNDECIDED: u32 = 2;
/// In `packed`: the capture filter in the kernel accepted the packet.
const PACKED_PCAP_MATCHED: u32 = 1 << 25;

/// The hop event of a packet the early filter kept (`VERDICT_MATCH`) or could not decide
/// (`VERDICT_UNDECIDED`: parsed in full first). `packed`: the verdict, then the hook,
/// direction and `from_mac` bytes (a BPF call takes five arguments).
#[inline(never)]
fn tc_event(skb: *mut aya_ebpf::bindings::__sk_buff, packed: u32) -> u32 {
    let ctx = TcContext::new(skb);
    let verdict = packed & 0xff;
    let hook_id = (packed >> 8) as u8;
    let direction = (packed >> 16) as u8;
    let from_mac = (packed >> 24) & 1 != 0;
    let pcap_matched = packed & PACKED_PCAP_MATCHED != 0;
    let _ = tc_event_inner(&ctx, verdict, hook_id, direction, from_mac, pcap_matched);
    0
}

#[inline(always)]
fn tc_event_inner(
    ctx: &TcContext,
    verdict: u32,
    hook_id: u8,
    direction: u8,
    from_mac: bool,
    pcap_matched: bool,
) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let ev = &mut scratch.ev;
    ev.flags = if from_mac { flags::DATA_FROM_MAC } else { 0 }
        | if pcap_matched { flags::PCAP_MATCHED } else { 0 };
    ev.protocol = protocol;
    // A packet the filter still has to parse is copied up to SNAP_LEN bytes (the parser needs
    // its headers); one already decided only up to the snap length.
    let snap = snap_len(cfg);
    let limit = if verdict == VERDICT_MATCH {
        snap
    } else {
        SNAP_LEN as u32
    };
    // bpf_skb_load_bytes needs a length in [1, SNAP_LEN] the verifier can see.
    let mut n = ctx.len();
    if n > limit {
        n = limit;
    }
    if n > SNAP_LEN as u32 {
        n = SNAP_LEN as u32;
    }
    if n == 0 {
        return None;
    }
    // SAFETY: a plain read of the context's vlan_present field.
    let vlan_tagged = from_mac && unsafe { (*ctx.skb.skb).vlan_present } != 0;
    ev.data_len = if vlan_tagged {
        ev.flags |= flags::VLAN_TAG_ADDED;
        let skb = ctx.skb.skb;
        // SAFETY: plain reads of the context's tag fields (vlan_proto in network order).
        let (proto, tci) = unsafe { ((*skb).vlan_proto as u16, (*skb).vlan_tci as u16) };
        // SAFETY: loads into `ev.data`, whose bounds `copy_with_tag` keeps.
        copy_with_tag(ev, n, proto, tci, |off, dst, len| unsafe {
            bpf_skb_load_bytes(skb as *const _, off, dst.cast(), len) == 0
        })
    } else {
        // SAFETY: ev.data has SNAP_LEN bytes and 1 <= n <= SNAP_LEN.
        let loaded = unsafe {
            bpf_skb_load_bytes(ctx.skb.skb as *const _, 0, ev.data.as_mut_ptr().cast(), n)
        };
        if loaded == 0 {
            n as u16
        } else {
            0
        }
    };
    // Only what the headers could not decide is parsed in full.
    if verdict == VERDICT_UNDECIDED && !full_filter(cfg, scratch) {
        return None;
    }
    let skb_addr = ctx.as_ptr() as u64;
    // At tc the skb has its device, and the context has its ifindex: three probe reads for
    // the namespace, not four.
    let netns = unsafe {
        let dev: u64 = read(skb_addr, cfg.offsets.skb_dev).unwrap_or(0);
        if dev != 0 {
            dev_netns(&cfg.offsets, dev)
        } else {
            0
        }
    };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    let ev = &mut scratch.ev;
    if ev.data_len as u32 > snap {
        ev.data_len = snap as u16;
    }
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.location = 0;
    ev.skb = skb_addr;
    ev.netns = netns;
    ev.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ev.reason = 0;
    // The length on the wire: with the tag.
    ev.skb_len = ctx.len() + if vlan_tagged { VLAN_HLEN as u32 } else { 0 };
    ev.kind = kind::HOP;
    ev.hook = hook_id;
    ev.dir = direction;
    // `capture -w`: a packet userspace need not filter goes out as pcapng once its device has
    // an interface id (an Ethernet one: userspace gives the others a made-up MAC header).
    if cfg.pcapng_direct != 0 && from_mac && (pcap_matched || cfg.pcap_filter == 0) {
        let key = pcapng_record::iface_key(netns, ev.ifindex);
        // SAFETY: a plain lookup of a u32 value.
        if let Some(id) = unsafe { PCAP_IFACES.get(&key) } {
            output_epb(cfg, scratch, *id, direction);
            return Some(());
        }
    }
    output(cfg, ev);
    Some(())
}

/// Writes the packet in `scratch.ev` (`data`, `data_len`, `skb_len`, `ts_ns`) out as a
/// pcapng record ([`pcapng_record`]) built around the data where it lies: the record's first
/// 32 bytes over the event header's last 32, its end after the data (in `scratch.tail`).
#[inline(always)]
fn output_epb(cfg: &Config, scratch: &mut Scratch, iface_id: u32, direction: u8) {
    use pcapng_record as rec;
    const START: usize = RawEvent::DATA_OFFSET - rec::DATA_OFFSET;
    let ev = &scratch.ev;
    // SAFETY: a plain read of the event's field (volatile: the verifier must see the bound).
    let caplen = unsafe { core::ptr::read_volatile(&ev.data_len) } as usize & (2 * SNAP_LEN - 1);
    if caplen == 0 || caplen > SNAP_LEN {
        return;
    }
    let layout = rec::Layout::new(caplen);
    let ts = ev.ts_ns.wrapping_add(cfg.boot_offset_ns);
    let orig_len = ev.skb_len.max(caplen as u32);
    let flags = match direction {
        dir::INGRESS => 1,
        dir::EGRESS => 2,
        _ => 0,
    };
    let base = (scratch as *mut Scratch).cast::<u8>();
    // SAFETY: every store stays inside the Scratch value: the head at 16..48, the data's last
    // word, and at most MAX_TAIL bytes from DATA_OFFSET + padded <= 48 + 259 (`tail` is 40).
    unsafe {
        let head = base.add(START).cast::<[u32; 8]>();
        head.write_unaligned([
            rec::FILLER_LEN,
            rec::EPB_TYPE,
            layout.epb_len as u32,
            iface_id,
            (ts >> 32) as u32,
            ts as u32,
            caplen as u32,
            orig_len,
        ]);
        let data = base.add(RawEvent::DATA_OFFSET);
        // Zero the padding: the bytes after the packet in its last word are an older packet's.
        if caplen % 4 != 0 {
            let last = data.add(caplen & !3).cast::<u32>();
            last.write_unaligned(last.read_unaligned() & ((1u32 << (8 * (caplen % 4))) - 1));
        }
        let tail = data.add(layout.padded).cast::<u32>();
        tail.write_unaligned(rec::EPB_FLAGS_OPTION);
        tail.add(1).write_unaligned(flags);
        tail.add(2).write_unaligned(0); // opt_endofopt
        tail.add(3).write_unaligned(layout.epb_len as u32);
        let rest = if layout.empty_filler {
            tail.add(4).write_unaligned(rec::FILLER_TYPE);
            tail.add(5).write_unaligned(rec::EMPTY_FILLER_LEN);
            tail.add(6).write_unaligned(rec::EMPTY_FILLER_LEN);
            tail.add(7)
        } else {
            tail.add(4)
        };
        rest.write_unaligned(rec::FILLER_TYPE);
        rest.add(1).write_unaligned(rec::FILLER_LEN);
        output_bytes(
            cfg,
            core::slice::from_raw_parts(base.add(START), layout.payload_len),
        );
    }
}

const VLAN_HLEN: usize = 4;

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    tc_hook(&ctx, hook::TC_INGRESS, dir::INGRESS, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    tc_hook(&ctx, hook::TC_EGRESS, dir::EGRESS, true);
    TC_ACT_UNSPEC
}

/// Tail-called by the capture filter (`PCAP_PROGS` slot 0) for a packet it accepted: the
/// hop event of `tc_hook`, whose arguments wait in `cb[0]`, marked as filtered.
#[classifier]
pub fn tc_pcap_matched(ctx: TcContext) -> i32 {
    // SAFETY: a plain read of the control block `tc_hook` wrote before the tail calls.
    let packed = unsafe { (*ctx.skb.skb).cb[0] };
    tc_event(ctx.skb.skb, packed | PACKED_PCAP_MATCHED);
    TC_ACT_UNSPEC
}

/// tc_ingress for devices without a link-layer header: the packet starts at the IP header.
#[classifier]
pub fn tc_ingress_l3(ctx: TcContext) -> i32 {
    tc_hook(&ctx, hook::TC_INGRESS, dir::INGRESS, false);
    TC_ACT_UNSPEC
}

/// tc_egress for devices without a link-layer header.
#[classifier]
pub fn tc_egress_l3(ctx: TcContext) -> i32 {
    tc_hook(&ctx, hook::TC_EGRESS, dir::EGRESS, false);
    TC_ACT_UNSPEC
}

/// Shared body of the skb tracepoints.
#[inline(always)]
fn skb_event(
    cfg: &Config,
    skb: u64,
    kind_id: u8,
    hook_id: u8,
    direction: u8,
    reason: u32,
    location: u64,
) -> Option<()> {
    if cfg.offsets.valid == 0 || skb == 0 {
        return None;
    }
    let o = &cfg.offsets;
    let (netns, ifindex) = unsafe { skb_netns_ifindex(o, skb) };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let ev = &mut scratch.ev;
    ev.flags = 0;
    unsafe { copy_skb_data(o, skb, ev) };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.location = location;
    ev.skb = skb;
    ev.netns = netns;
    ev.ifindex = ifindex;
    ev.reason = reason;
    // The length on the wire: with a tag put back.
    ev.skb_len = unsafe { read(skb, o.skb_len) }.unwrap_or(0)
        + if ev.flags & flags::VLAN_TAG_ADDED != 0 {
            VLAN_HLEN as u32
        } else {
            0
        };
    ev.kind = kind_id;
    ev.hook = hook_id;
    ev.dir = direction;
    if passes_filter(cfg, scratch) {
        let ev = &mut scratch.ev;
        let snap = snap_len(cfg);
        if ev.data_len as u32 > snap {
            ev.data_len = snap as u16;
        }
        output(cfg, ev);
    }
    Some(())
}

/// skb:kfree_skb(skb, location, reason, rx_sk): a packet the stack dropped, and why.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    if reason == cfg.reason_not_dropped || reason == cfg.reason_consumed {
        return 0;
    }
    let _ = skb_event(
        cfg,
        skb,
        kind::DROP,
        hook::KFREE_SKB,
        dir::NONE,
        reason,
        location,
    );
    0
}

/// net:net_dev_queue(skb): a packet handed to a device for transmission.
#[btf_tracepoint(function = "net_dev_queue")]
pub fn net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    if let Some(cfg) = CONFIG.get(0).filter(|c| c.dev_hops != 0) {
        let _ = skb_event(
            cfg,
            ctx.arg(0),
            kind::HOP,
            hook::NET_DEV_QUEUE,
            dir::EGRESS,
            0,
            0,
        );
    }
    0
}

/// net:netif_receive_skb(skb): a packet entering the stack from a device. With route events
/// on, it also notes which device and namespace this CPU is receiving on (see `RX_CTX`).
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    let skb: u64 = ctx.arg(0);
    if cfg.routes != 0 && cfg.offsets.valid != 0 && skb != 0 {
        if let Some(rx) = RX_CTX.get_ptr_mut(0) {
            let (netns, ifindex) = unsafe { skb_netns_ifindex(&cfg.offsets, skb) };
            let task = unsafe { bpf_get_current_task() };
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe {
                *rx = RxCtx {
                    netns,
                    ifindex,
                    task,
                }
            };
        }
    }
    if cfg.dev_hops != 0 {
        let _ = skb_event(cfg, skb, kind::HOP, hook::NETIF_RECEIVE, dir::INGRESS, 0, 0);
    }
    0
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const EAGAIN: i32 = 11;
const RT_TABLE_LOCAL: u32 = 255;
const NET_RX_SOFTIRQ: u32 = 3;
/// NEIGH_UPDATE_F_ADMIN: an administrative change (`ip neigh del`), not a resolution failure.
const NEIGH_UPDATE_F_ADMIN: u32 = 1 << 31;

#[inline(always)]
unsafe fn net_inum(o: &KernelOffsets, net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    unsafe { read(net, o.net_ns_inum) }.unwrap_or(0)
}

/// Network namespace of the current task (process-context lookups).
#[inline(always)]
unsafe fn task_netns(cfg: &Config) -> u32 {
    unsafe {
        let task = bpf_get_current_task();
        if task == 0 {
            return 0;
        }
        let nsproxy: u64 = read(task, cfg.route.task_nsproxy).unwrap_or(0);
        if nsproxy == 0 {
            return 0;
        }
        net_inum(
            &cfg.offsets,
            read(nsproxy, cfg.route.nsproxy_net_ns).unwrap_or(0),
        )
    }
}

/// Fills the common part of a non-packet event and writes it.
#[inline(always)]
fn finish_meta_event(cfg: &Config, ev: &mut RawEvent, kind_id: u8, hook_id: u8, data_len: usize) {
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.location = 0;
    ev.skb = 0;
    ev.reason = 0;
    ev.skb_len = 0;
    ev.kind = kind_id;
    ev.hook = hook_id;
    ev.dir = dir::NONE;
    ev.flags = 0;
    ev.protocol = 0;
    ev.data_len = data_len as u16;
    output(cfg, ev);
}

/// Reads the nexthop (`struct fib_nh_common`, also the head of fib_nh and fib6_nh): device,
/// gateway. Returns the device pointer.
#[inline(always)]
unsafe fn read_nexthop(cfg: &Config, nhc: u64, rr: &mut RouteRaw, ifindex: &mut u32) -> u64 {
    let r = &cfg.route;
    unsafe {
        let dev: u64 = read(nhc, r.nhc_dev).unwrap_or(0);
        if dev != 0 {
            *ifindex = read(dev, cfg.offsets.dev_ifindex).unwrap_or(0);
            rr.nh_ifindex = *ifindex;
            let _ = probe_read_raw(
                rr.oif_name.as_mut_ptr().cast(),
                16,
                (dev + r.dev_name as u64) as *const _,
            );
        }
        rr.gw_family = read(nhc, r.nhc_gw_family).unwrap_or(0);
        if rr.gw_family == AF_INET {
            let _ = probe_read_raw(
                rr.gw.as_mut_ptr().cast(),
                4,
                (nhc + r.nhc_gw as u64) as *const _,
            );
        } else if rr.gw_family == AF_INET6 {
            let _ = probe_read_raw(
                rr.gw.as_mut_ptr().cast(),
                16,
                (nhc + r.nhc_gw as u64) as *const _,
            );
        }
        dev
    }
}

/// Reads the flow key of a lookup into `f` (addresses, protocol, ports, oif/iif).
#[inline(always)]
unsafe fn read_flow_key(cfg: &Config, flp: u64, v6: bool, f: &mut parse::Flow) -> (u32, u32) {
    let r = &cfg.route;
    *f = parse::Flow::default();
    unsafe {
        let (src, dst, sport, dport, n) = if v6 {
            (r.fl6_saddr, r.fl6_daddr, r.fl6_sport, r.fl6_dport, 16)
        } else {
            (r.fl4_saddr, r.fl4_daddr, r.fl4_sport, r.fl4_dport, 4)
        };
        f.family = if v6 { 6 } else { 4 };
        let _ = probe_read_raw(f.src.as_mut_ptr().cast(), n, (flp + src as u64) as *const _);
        let _ = probe_read_raw(f.dst.as_mut_ptr().cast(), n, (flp + dst as u64) as *const _);
        f.proto = read(flp, r.fl_proto).unwrap_or(0);
        // flowi_uli holds ports only for these; for ICMP it is type/code, for GRE the key.
        if matches!(
            f.proto,
            parse::IPPROTO_TCP | parse::IPPROTO_UDP | parse::IPPROTO_SCTP
        ) {
            f.sport = u16::from_be(read(flp, sport).unwrap_or(0));
            f.dport = u16::from_be(read(flp, dport).unwrap_or(0));
        }
        let oif: u32 = read(flp, r.fl_oif).unwrap_or(0);
        let iif: u32 = read(flp, r.fl_iif).unwrap_or(0);
        (oif, iif)
    }
}

/// Copies the flow key into the route record.
#[inline(always)]
fn route_key(rr: &mut RouteRaw, f: &parse::Flow, oif: u32, iif: u32) {
    rr.src = f.src;
    rr.dst = f.dst;
    rr.family = f.family;
    rr.proto = f.proto;
    rr.sport = f.sport;
    rr.dport = f.dport;
    rr.flow_oif = oif;
    rr.flow_iif = iif;
}

/// The route record inside the scratch event's data.
#[inline(always)]
fn route_raw(ev: &mut RawEvent) -> &mut RouteRaw {
    // SAFETY: data is SNAP_LEN bytes, 8-aligned in RawEvent, larger than RouteRaw.
    unsafe { &mut *(ev.data.as_mut_ptr() as *mut RouteRaw) }
}

/// Reads a lookup's flow key, applies the filter, and starts the route record with the key.
#[inline(always)]
fn begin_route(cfg: &Config, flp: u64, v6: bool) -> Option<&'static mut Scratch> {
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let f = &mut scratch.parsed.outer;
    let (oif, iif) = unsafe { read_flow_key(cfg, flp, v6, f) };
    if !parse::flow_matches(&cfg.filter, f) {
        return None;
    }
    let rr = route_raw(&mut scratch.ev);
    *rr = RouteRaw::default();
    route_key(rr, &scratch.parsed.outer, oif, iif);
    Some(scratch)
}

/// Writes a finished route record.
#[inline(always)]
fn finish_route(cfg: &Config, ev: &mut RawEvent, netns: u32, ifindex: u32, hook_id: u8) {
    ev.netns = netns;
    ev.ifindex = ifindex;
    finish_meta_event(
        cfg,
        ev,
        kind::ROUTE,
        hook_id,
        core::mem::size_of::<RouteRaw>(),
    );
}

/// fib:fib_table_lookup(tb_id, flp, nhc, err): one IPv4 routing-table lookup and its result.
#[btf_tracepoint(function = "fib_table_lookup")]
pub fn fib_table_lookup(ctx: BtfTracePointContext) -> i32 {
    let _ = fib4_event(&ctx);
    0
}

#[inline(always)]
fn fib4_event(ctx: &BtfTracePointContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let r = &cfg.route;
    if r.valid == 0 || cfg.offsets.valid == 0 {
        return None;
    }
    let tb_id: u32 = ctx.arg(0);
    let flp: u64 = ctx.arg(1);
    let nhc: u64 = ctx.arg(2);
    let err: i32 = ctx.arg(3);
    let no_route = nhc == 0 && err == -EAGAIN;
    // A miss in the local table is never the answer: the lookup goes on with the next rule.
    if flp == 0 || (no_route && tb_id == RT_TABLE_LOCAL) {
        return None;
    }
    let scratch = begin_route(cfg, flp, false)?;
    let rr = route_raw(&mut scratch.ev);
    rr.table = tb_id;
    rr.err = err;
    rr.no_route = no_route as u8;
    let mut ifindex = 0u32;
    let mut netns = 0u32;
    if nhc != 0 {
        let dev = unsafe { read_nexthop(cfg, nhc, rr, &mut ifindex) };
        let family: u8 = unsafe { read(nhc, r.nhc_family) }.unwrap_or(0);
        if family == AF_INET {
            // A classic route's nexthop is embedded in its fib_info: type and namespace.
            let fi: u64 = unsafe { read(nhc, r.fib_nh_parent) }.unwrap_or(0);
            if fi != 0 {
                rr.rtype = unsafe { read(fi, r.fib_info_type) }.unwrap_or(0);
                netns = unsafe { net_inum(&cfg.offsets, read(fi, r.fib_info_net).unwrap_or(0)) };
            }
        }
        if netns == 0 && dev != 0 {
            netns =
                unsafe { net_inum(&cfg.offsets, read(dev, cfg.offsets.dev_nd_net).unwrap_or(0)) };
        }
    }
    if netns == 0 {
        // No nexthop to take the namespace from. Inside a receive softirq (forwarding, ICMP
        // errors, SYN-ACKs) the lookup belongs to the packet being received on this CPU;
        // otherwise to the calling task.
        let task = unsafe { bpf_get_current_task() };
        netns = match RX_CTX.get(0) {
            Some(rx) if rx.ifindex != 0 && rx.task == task => rx.netns,
            _ => unsafe { task_netns(cfg) },
        };
    }
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    finish_route(cfg, &mut scratch.ev, netns, ifindex, hook::FIB_LOOKUP);
    Some(())
}

/// fib6:fib6_table_lookup(net, res, table, flp): one IPv6 routing-table lookup and its result.
#[btf_tracepoint(function = "fib6_table_lookup")]
pub fn fib6_table_lookup(ctx: BtfTracePointContext) -> i32 {
    let _ = fib6_event(&ctx);
    0
}

#[inline(always)]
fn fib6_event(ctx: &BtfTracePointContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let r = &cfg.route;
    if r.valid == 0 || cfg.offsets.valid == 0 {
        return None;
    }
    let net: u64 = ctx.arg(0);
    let res: u64 = ctx.arg(1);
    let table: u64 = ctx.arg(2);
    let flp: u64 = ctx.arg(3);
    if res == 0 || flp == 0 {
        return None;
    }
    let tb_id: u32 = if table != 0 {
        unsafe { read(table, r.f6table_id) }.unwrap_or(0)
    } else {
        0
    };
    let f6i: u64 = unsafe { read(res, r.f6res_f6i) }.unwrap_or(0);
    let null_entry: u64 = if net != 0 {
        unsafe { read(net, r.net_fib6_null_entry) }.unwrap_or(0)
    } else {
        0
    };
    let no_route = f6i != 0 && f6i == null_entry;
    if no_route && tb_id == RT_TABLE_LOCAL {
        return None;
    }
    let netns = unsafe { net_inum(&cfg.offsets, net) };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    let scratch = begin_route(cfg, flp, true)?;
    let rr = route_raw(&mut scratch.ev);
    rr.table = tb_id;
    rr.err = 0;
    rr.no_route = no_route as u8;
    rr.rtype = unsafe { read(res, r.f6res_type) }.unwrap_or(0);
    let mut ifindex = 0u32;
    let nh: u64 = unsafe { read(res, r.f6res_nh) }.unwrap_or(0);
    if nh != 0 && !no_route {
        unsafe { read_nexthop(cfg, nh, rr, &mut ifindex) };
    }
    finish_route(cfg, &mut scratch.ev, netns, ifindex, hook::FIB6_LOOKUP);
    Some(())
}

/// irq:softirq_exit(vec_nr): the receive softirq is over; lookups now belong to tasks.
#[btf_tracepoint(function = "softirq_exit")]
pub fn softirq_exit(ctx: BtfTracePointContext) -> i32 {
    let vec: u32 = ctx.arg(0);
    if vec == NET_RX_SOFTIRQ {
        if let Some(rx) = RX_CTX.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { (*rx).ifindex = 0 };
        }
    }
    0
}

/// Emits a neighbour event for `n` with its states, after the filter.
#[inline(always)]
fn neigh_event(cfg: &Config, n: u64, state: u8, old_state: u8, hook_id: u8) -> Option<()> {
    let o = &cfg.neigh;
    if o.valid == 0 || cfg.offsets.valid == 0 || n == 0 {
        return None;
    }
    let dev: u64 = unsafe { read(n, o.dev) }.unwrap_or(0);
    let (netns, ifindex) = if dev != 0 {
        unsafe {
            (
                net_inum(&cfg.offsets, read(dev, cfg.offsets.dev_nd_net).unwrap_or(0)),
                read(dev, cfg.offsets.dev_ifindex).unwrap_or(0),
            )
        }
    } else {
        (0, 0)
    };
    if cfg.filter.netns != 0 && netns != cfg.filter.netns {
        return None;
    }
    let tbl: u64 = unsafe { read(n, o.tbl) }.unwrap_or(0);
    let family: u16 = if tbl != 0 {
        unsafe { read(tbl, o.tbl_family) }.unwrap_or(0)
    } else {
        0
    };
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let f = &mut scratch.parsed.outer;
    *f = parse::Flow::default();
    let len = if family == AF_INET as u16 {
        f.family = 4;
        4
    } else if family == AF_INET6 as u16 {
        f.family = 6;
        16
    } else {
        return None;
    };
    unsafe {
        let _ = probe_read_raw(
            f.src.as_mut_ptr().cast(),
            len,
            (n + o.primary_key as u64) as *const _,
        );
    }
    f.dst = f.src;
    if !parse::flow_matches(&cfg.filter, f) {
        return None;
    }
    let ev = &mut scratch.ev;
    // SAFETY: data is SNAP_LEN bytes, 8-aligned in RawEvent, larger than NeighRaw.
    let nr = unsafe { &mut *(ev.data.as_mut_ptr() as *mut NeighRaw) };
    *nr = NeighRaw::default();
    nr.addr = scratch.parsed.outer.src;
    nr.family = scratch.parsed.outer.family;
    nr.state = state;
    nr.old_state = old_state;
    unsafe {
        let _ = probe_read_raw(
            nr.lladdr.as_mut_ptr().cast(),
            6,
            (n + o.ha as u64) as *const _,
        );
    }
    ev.netns = netns;
    ev.ifindex = ifindex;
    finish_meta_event(
        cfg,
        ev,
        kind::NEIGH,
        hook_id,
        core::mem::size_of::<NeighRaw>(),
    );
    Some(())
}

/// neigh:neigh_update(n, lladdr, new, flags, nlmsg_pid), before the update: a neighbour set
/// to FAILED (not by an administrator).
#[btf_tracepoint(function = "neigh_update")]
pub fn neigh_update(ctx: BtfTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    let new: u8 = ctx.arg(2);
    let update_flags: u32 = ctx.arg(3);
    if new != nud::FAILED || update_flags & NEIGH_UPDATE_F_ADMIN != 0 {
        return 0;
    }
    if let Some(cfg) = CONFIG.get(0) {
        let old: u8 = unsafe { read(n, cfg.neigh.nud_state) }.unwrap_or(0);
        let _ = neigh_event(cfg, n, new, old, hook::NEIGH_UPDATE);
    }
    0
}

/// Reads the neighbour's state and, while it is probing (INCOMPLETE/PROBE), remembers it as
/// the `old_state` of a later failure. Returns the state.
#[inline(always)]
fn note_neigh_state(cfg: &Config, n: u64) -> u8 {
    if cfg.neigh.valid == 0 || n == 0 {
        return 0;
    }
    let state: u8 = unsafe { read(n, cfg.neigh.nud_state) }.unwrap_or(0);
    if state & (nud::INCOMPLETE | nud::PROBE) != 0 {
        let _ = NEIGH_PREV.insert(&n, &state, 0);
    }
    state
}

/// neigh:neigh_timer_handler(n, err), after the state machine ran: resolution gave up when
/// the state is now FAILED. While probing, the state is remembered for `old_state`.
#[btf_tracepoint(function = "neigh_timer_handler")]
pub fn neigh_timer_handler(ctx: BtfTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    if note_neigh_state(cfg, n) == nud::FAILED {
        let old = unsafe { NEIGH_PREV.get(&n) }.copied().unwrap_or(0);
        let _ = NEIGH_PREV.remove(&n);
        let _ = neigh_event(cfg, n, nud::FAILED, old, hook::NEIGH_TIMER);
    }
    0
}

/// neigh:neigh_event_send_done(n, err): a packet asked for resolution; a neighbour that just
/// went INCOMPLETE is remembered here, since it may fail at its first timer run.
#[btf_tracepoint(function = "neigh_event_send_done")]
pub fn neigh_event_send_done(ctx: BtfTracePointContext) -> i32 {
    if let Some(cfg) = CONFIG.get(0) {
        note_neigh_state(cfg, ctx.arg(0));
    }
    0
}

/// Loaded only to find out whether this kernel allows fentry (`--functions`); never attached
/// by the probe.
#[fentry(function = "ip_rcv")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

/// Loaded and attached only to find out whether this kernel has kprobes (`--functions`).
#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
