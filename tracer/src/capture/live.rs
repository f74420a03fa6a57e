//! The live capture path: kernel ring-buffer records straight to the [`CaptureSink`], without
//! decoding them into model events. Per packet it reads a few header fields from the
//! record in place, runs the compiled filter on the frame bytes and encodes one pcapng block;
//! names are looked up once per (namespace inode, ifindex) and cached with their pcapng
//! interface id. (Packets the kernel wrote as pcapng itself, `tracer_common::pcapng_record`,
//! do not come here: the capture command writes runs of them from the ring as they are.)
//! Also what `netpath capture` and the agent's capture ([`super::serve`]) share: the
//! in-kernel copy of the filter and the ring buffer's wake-ups.
use std::{collections::HashMap, io::Write, mem::offset_of, os::fd::AsRawFd};

use tracer_common::{
    dir, flags, kind, AddrPrefix, FilterConfig, RawEvent, MAX_FILTER_ADDRS, SNAP_LEN,
};

use super::{CaptureError, CaptureSink, CapturedPacket, Direction, DropInfo, KernelHint};
use crate::node::decode::Namer;

/// The fields of one ring-buffer record that capture needs, read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Kernel monotonic nanoseconds.
    pub ts_ns: u64,
    pub location: u64,
    pub netns: u32,
    pub ifindex: u32,
    pub reason: u32,
    pub skb_len: u32,
    pub kind: u8,
    pub dir: u8,
    pub flags: u8,
    pub protocol: u16,
    /// The copied packet bytes (from the Ethernet header, or from the network header when
    /// `flags` lacks [`flags::DATA_FROM_MAC`]).
    pub data: &'a [u8],
}

fn field<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}

impl<'a> RecordView<'a> {
    /// Reads a record laid out as [`RawEvent`], whose `data` may stop after `data_len`
    /// bytes; `None` when it is too short for its header or its data.
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        let data_off = RawEvent::DATA_OFFSET;
        if b.len() < data_off {
            return None;
        }
        let u32_at = |off| u32::from_ne_bytes(field(b, off));
        let data_len = u16::from_ne_bytes(field(b, offset_of!(RawEvent, data_len)));
        let data_end = data_off + (data_len as usize).min(SNAP_LEN);
        if b.len() < data_end {
            return None;
        }
        Some(RecordView {
            ts_ns: u64::from_ne_bytes(field(b, offset_of!(RawEvent, ts_ns))),
            location: u64::from_ne_bytes(field(b, offset_of!(RawEvent, location))),
            netns: u32_at(offset_of!(RawEvent, netns)),
            ifindex: u32_at(offset_of!(RawEvent, ifindex)),
            reason: u32_at(offset_of!(RawEvent, reason)),
            skb_len: u32_at(offset_of!(RawEvent, skb_len)),
            kind: b[offset_of!(RawEvent, kind)],
            dir: b[offset_of!(RawEvent, dir)],
            flags: b[offset_of!(RawEvent, flags)],
            protocol: u16::from_ne_bytes(field(b, offset_of!(RawEvent, protocol))),
            data: &b[data_off..data_end],
        })
    }

    /// Hops and drops carry packets; route and neighbour events do not.
    pub fn is_packet(&self) -> bool {
        matches!(self.kind, kind::HOP | kind::DROP)
    }

    pub fn direction(&self) -> Option<Direction> {
        match self.dir {
            dir::INGRESS => Some(Direction::In),
            dir::EGRESS => Some(Direction::Out),
            _ => None,
        }
    }

    /// The packet as an Ethernet frame, truncated to `snaplen`, and its original length.
    /// Data taken from the network header gets a zeroed MAC header in front (built in
    /// `scratch`), which the skb length does not count at drop points.
    pub fn frame<'s>(&self, snaplen: usize, scratch: &'s mut Vec<u8>) -> (&'s [u8], u32)
    where
        'a: 's,
    {
        let synthetic = self.flags & flags::DATA_FROM_MAC == 0;
        let frame: &'s [u8] = if synthetic {
            scratch.clear();
            scratch.extend_from_slice(&[0; 12]);
            scratch.extend_from_slice(&self.protocol.to_be_bytes());
            scratch.extend_from_slice(self.data);
            scratch
        } else {
            self.data
        };
        // Drop points often have no MAC header: the kernel copy then starts with zeroes.
        let mac_missing = self.kind == kind::DROP && frame.get(..12).is_some_and(|m| m == [0; 12]);
        let orig_len = (self.skb_len + if mac_missing { 14 } else { 0 }).max(frame.len() as u32);
        (&frame[..frame.len().min(snaplen)], orig_len)
    }
}

/// A capture interface: a device in a namespace of a node, with its pcapng id once written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceSlot {
    pub node: String,
    /// Namespace name; the root namespace is named after the node.
    pub netns: String,
    pub ifname: String,
    /// Interface id in the output (pcapng, or [`super::PacketOut`]), set by the sink on first
    /// use.
    pub pcapng_id: Option<u32>,
}

impl IfaceSlot {
    pub fn new(node: &str, netns: &str, ifname: &str) -> Self {
        IfaceSlot {
            node: node.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            pcapng_id: None,
        }
    }
}

/// One packet on its way into a sink, borrowing the record's bytes.
#[derive(Clone, Copy, Debug)]
pub struct PacketRef<'a> {
    /// Nanoseconds since the UNIX epoch.
    pub ts_ns: u64,
    pub dir: Option<Direction>,
    /// The frame from the Ethernet header on, already truncated to the snap length.
    pub data: &'a [u8],
    pub orig_len: u32,
    pub drop: Option<&'a DropInfo>,
}

impl PacketRef<'_> {
    /// An owned copy (for text lines, which format a [`CapturedPacket`]).
    pub fn to_owned(&self, iface: &IfaceSlot) -> CapturedPacket {
        CapturedPacket {
            ts_ns: self.ts_ns,
            node: iface.node.clone(),
            netns: iface.netns.clone(),
            ifname: iface.ifname.clone(),
            dir: self.dir,
            data: bytes::Bytes::copy_from_slice(self.data),
            orig_len: self.orig_len,
            drop: self.drop.cloned(),
        }
    }
}

/// Turns ring-buffer records into packets for a sink, naming devices once per
/// (namespace inode, ifindex).
pub struct RecordDecoder<N: Namer> {
    namer: N,
    node: String,
    snaplen: usize,
    boot_offset_ns: u64,
    /// (netns inode, ifindex) -> index in `slots`.
    ifaces: HashMap<(u32, u32), usize>,
    slots: Vec<IfaceSlot>,
    /// The last key and its slot: consecutive packets mostly share a device.
    last: Option<((u32, u32), usize)>,
    scratch: Vec<u8>,
    /// (netns inode, ifindex, pcapng id) of interfaces written since the last
    /// [`RecordDecoder::take_new_interfaces`].
    new_interfaces: Vec<(u32, u32, u32)>,
}

impl<N: Namer> RecordDecoder<N> {
    pub fn new(namer: N, node: &str, snaplen: u32) -> Self {
        RecordDecoder {
            boot_offset_ns: namer.boot_offset_ns(),
            namer,
            node: node.into(),
            snaplen: snaplen as usize,
            ifaces: HashMap::new(),
            slots: Vec::new(),
            last: None,
            scratch: Vec::with_capacity(14 + SNAP_LEN),
            new_interfaces: Vec::new(),
        }
    }

    /// Filters and writes the packet in one record (not flushed); returns whether it was
    /// captured. Records that are no packets, or too short, are skipped.
    pub fn push<W: Write>(
        &mut self,
        record: &[u8],
        sink: &mut CaptureSink<W>,
    ) -> Result<bool, CaptureError> {
        let Some(rec) = RecordView::parse(record) else {
            return Ok(false);
        };
        if !rec.is_packet() {
            return Ok(false);
        }
        let slot = self.slot(rec.netns, rec.ifindex);
        let (data, orig_len) = rec.frame(self.snaplen, &mut self.scratch);
        // The kernel ran the whole expression already (on the whole packet, as tcpdump's
        // socket filter does); everything else is filtered here.
        let kernel_filtered = rec.flags & flags::PCAP_MATCHED != 0;
        let tag_put_back = rec.flags & flags::VLAN_TAG_ADDED != 0;
        if !kernel_filtered && !sink.accepts_live(data, orig_len, tag_put_back) {
            return Ok(false);
        }
        let drop = (rec.kind == kind::DROP).then(|| DropInfo {
            reason: self.namer.drop_reason(rec.reason),
            location: if rec.location == 0 {
                String::new()
            } else {
                self.namer.symbol(rec.location)
            },
        });
        let pkt = PacketRef {
            ts_ns: rec.ts_ns.wrapping_add(self.boot_offset_ns),
            dir: rec.direction(),
            data,
            orig_len,
            drop: drop.as_ref(),
        };
        let iface = &mut self.slots[slot];
        let had_id = iface.pcapng_id.is_some();
        sink.write_accepted(iface, &pkt)?;
        if let (false, Some(id)) = (had_id, iface.pcapng_id) {
            self.new_interfaces.push((rec.netns, rec.ifindex, id));
        }
        Ok(true)
    }

    /// The pcapng interfaces written since the last call, as (netns inode, ifindex, id): the
    /// kernel may write those devices' packets as pcapng records from now on.
    pub fn take_new_interfaces(&mut self) -> std::vec::Drain<'_, (u32, u32, u32)> {
        self.new_interfaces.drain(..)
    }

    /// The slot of a device, named on first sight.
    fn slot(&mut self, netns: u32, ifindex: u32) -> usize {
        let key = (netns, ifindex);
        if let Some((k, i)) = self.last {
            if k == key {
                return i;
            }
        }
        let i = match self.ifaces.get(&key) {
            Some(i) => *i,
            None => {
                let ns_name = self.namer.netns_name(netns);
                let ifname = if ifindex == 0 {
                    String::new()
                } else {
                    self.namer.ifname(netns, ifindex)
                };
                let ns_name = if ns_name == "root" {
                    &self.node
                } else {
                    &ns_name
                };
                self.slots
                    .push(IfaceSlot::new(&self.node, ns_name, &ifname));
                self.ifaces.insert(key, self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        self.last = Some((key, i));
        i
    }
}

/// Bytes of each packet the kernel programs copy; `-s` cannot go beyond it.
pub const KERNEL_SNAPLEN: u32 = SNAP_LEN as u32;
const IPPROTO_UDP: u8 = 17;
/// The kernel copies at least this much of each packet whatever `-s` says: userspace tells
/// drops without a MAC header by their first 12 bytes being zero.
pub const MIN_KERNEL_COPY: u32 = 16;

/// Coarse in-kernel copy of the filter. It must admit a superset of what the expression
/// accepts: the kernel matches hosts as "any of", family on outer or inner headers, and the
/// protocol on the innermost header, so UDP is not pushed down (a VXLAN packet is UDP to
/// libpcap but its innermost protocol is not).
pub fn kernel_filter(hint: Option<&KernelHint>) -> FilterConfig {
    let mut cfg = FilterConfig::default();
    let Some(hint) = hint else {
        return cfg;
    };
    cfg.family = hint.family.unwrap_or(0);
    cfg.proto = hint.proto.filter(|p| *p != IPPROTO_UDP).unwrap_or(0);
    cfg.port = hint.port.unwrap_or(0);
    // libpcap's `host`/`net` without a protocol also match ARP and RARP addresses.
    cfg.non_ip_passes =
        u8::from(hint.family.is_none() && hint.proto.is_none() && hint.port.is_none());
    if hint.hosts.len() <= MAX_FILTER_ADDRS {
        for (slot, h) in cfg.addrs.iter_mut().zip(&hint.hosts) {
            let (family, addr) = match h.addr {
                std::net::IpAddr::V4(a) => {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&a.octets());
                    (4, b)
                }
                std::net::IpAddr::V6(a) => (6, a.octets()),
            };
            *slot = AddrPrefix::new(family, addr, h.prefix);
        }
        cfg.n_addrs = hint.hosts.len() as u8;
    }
    cfg
}

/// An edge-triggered epoll set with one fd.
pub struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    pub fn new(fd: std::os::fd::RawFd) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscalls; the new fd is owned by the returned value.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if ep < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ep = std::os::fd::OwnedFd::from_raw_fd(ep);
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 0,
            };
            if libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Epoll(ep))
        }
    }

    /// Waits for a wake-up or `timeout_ms`.
    pub fn wait(&self, timeout_ms: i32) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one-element output buffer, valid for the call.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), &mut ev, 1, timeout_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{read_capture_file, CaptureOutput, PacketFilter, PcapngWriter};
    use tracer_common::hook;

    struct Names;
    impl Namer for Names {
        fn netns_name(&mut self, inode: u32) -> String {
            if inode == 1 {
                "root".into()
            } else {
                format!("ns{inode}")
            }
        }
        fn ifname(&mut self, _: u32, ifindex: u32) -> String {
            format!("if{ifindex}")
        }
        fn drop_reason(&self, r: u32) -> String {
            format!("R{r}")
        }
        fn symbol(&self, a: u64) -> String {
            format!("f+0x{a:x}")
        }
        fn boot_offset_ns(&self) -> u64 {
            1_000
        }
    }

    fn record(kind_: u8, dir_: u8, from_mac: bool, data: &[u8]) -> Vec<u8> {
        let mut raw = RawEvent::ZERO;
        raw.ts_ns = 5;
        raw.kind = kind_;
        raw.hook = hook::TC_INGRESS;
        raw.dir = dir_;
        raw.flags = if from_mac { flags::DATA_FROM_MAC } else { 0 };
        raw.protocol = 0x0800;
        raw.netns = 7;
        raw.ifindex = 3;
        raw.skb_len = 100;
        raw.reason = 2;
        raw.location = 0x42;
        raw.data[..data.len()].copy_from_slice(data);
        raw.data_len = data.len() as u16;
        // SAFETY: RawEvent is repr(C) plain data; viewing it as bytes is always valid.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawEvent).cast::<u8>(),
                std::mem::size_of::<RawEvent>(),
            )
        };
        bytes.to_vec()
    }

    fn udp4() -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 9999)
            .write(&mut v, &[7; 20])
            .unwrap();
        v
    }

    #[test]
    fn views_read_every_field_in_place() {
        let rec = record(kind::HOP, dir::EGRESS, true, &[9; 40]);
        let v = RecordView::parse(&rec).unwrap();
        assert_eq!((v.ts_ns, v.netns, v.ifindex, v.skb_len), (5, 7, 3, 100));
        assert_eq!((v.reason, v.location, v.protocol), (2, 0x42, 0x0800));
        assert_eq!(v.data, &[9; 40]);
        assert_eq!(v.direction(), Some(Direction::Out));
        assert!(v.is_packet());
        // Records end after their data (a 48-byte header first); shorter is no record.
        assert_eq!(RawEvent::DATA_OFFSET, 48);
        let short = RawEvent::DATA_OFFSET + 40;
        assert_eq!(RecordView::parse(&rec[..short]).unwrap().data, &[9; 40]);
        assert!(RecordView::parse(&rec[..short - 1]).is_none());
        assert!(RecordView::parse(&rec[..RawEvent::DATA_OFFSET - 1]).is_none());
        let route = record(kind::ROUTE, dir::NONE, true, &[]);
        assert!(!RecordView::parse(&route).unwrap().is_packet());
    }

    #[test]
    fn frames_get_a_mac_header_and_the_snap_length() {
        let mut scratch = Vec::new();
        let rec = record(kind::HOP, dir::INGRESS, true, &[1; 60]);
        let v = RecordView::parse(&rec).unwrap();
        assert_eq!(v.frame(16, &mut scratch), (&[1u8; 16][..], 100));
        // Network-header data: zeroed MAC + ethertype in front; drops count those 14 bytes.
        let rec = record(kind::DROP, dir::NONE, false, &[0x45; 20]);
        let v = RecordView::parse(&rec).unwrap();
        let (f, orig) = v.frame(256, &mut scratch);
        assert_eq!((f.len(), &f[12..15], orig), (34, &[8u8, 0, 0x45][..], 114));
        let rec = record(kind::HOP, dir::INGRESS, false, &[0x45; 20]);
        let (_, orig) = RecordView::parse(&rec).unwrap().frame(256, &mut scratch);
        assert_eq!(orig, 100);
    }

    #[test]
    fn records_become_pcapng_packets_with_cached_interfaces() {
        let filter = PacketFilter::compile("udp port 9999").unwrap();
        let w = PcapngWriter::new(Vec::new(), 64).unwrap();
        let mut sink = CaptureSink::new(Some(filter), CaptureOutput::Pcapng(w));
        let mut dec = RecordDecoder::new(Names, "node-1", 64);
        let frame = udp4();
        assert!(dec
            .push(&record(kind::HOP, dir::INGRESS, true, &frame), &mut sink)
            .unwrap());
        assert!(dec
            .push(&record(kind::DROP, dir::NONE, true, &frame), &mut sink)
            .unwrap());
        // Not a packet, too short, and filtered out.
        assert!(!dec
            .push(&record(kind::NEIGH, dir::NONE, true, &frame), &mut sink)
            .unwrap());
        assert!(!dec.push(&[0; 8], &mut sink).unwrap());
        assert!(!dec
            .push(&record(kind::HOP, dir::INGRESS, true, &[0; 60]), &mut sink)
            .unwrap());
        assert_eq!(dec.slots.len(), 1);
        let (out, stats) = sink.finish().unwrap();
        assert_eq!((stats.captured, stats.dropped_by_kernel), (2, 1));
        assert_eq!(stats.filtered_out, 1);
        let CaptureOutput::Pcapng(w) = out else {
            panic!("pcapng output")
        };
        let bytes = w.into_inner();
        let back: Vec<_> = read_capture_file(&bytes[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].netns.as_str(), back[0].ifname.as_str()),
            ("ns7", "if3")
        );
        assert_eq!(back[0].node, "node-1");
        assert_eq!((back[0].ts_ns, back[0].dir), (1_005, Some(Direction::In)));
        assert_eq!(&back[0].data[..], &frame[..frame.len().min(64)]);
        assert_eq!(back[0].orig_len, 100);
        let d = back[1].drop.as_ref().unwrap();
        assert_eq!((d.reason.as_str(), d.location.as_str()), ("R2", "f+0x42"));
    }

    #[test]
    fn the_root_namespace_is_named_after_the_node_in_text_lines() {
        let out = CaptureOutput::Text {
            out: Vec::new(),
            opts: Default::default(),
        };
        let mut sink = CaptureSink::new(None, out);
        let mut dec = RecordDecoder::new(Names, "node-1", 256);
        let mut rec = record(kind::HOP, dir::INGRESS, true, &udp4());
        rec[offset_of!(RawEvent, netns)..][..4].copy_from_slice(&1u32.to_ne_bytes());
        assert!(dec.push(&rec, &mut sink).unwrap());
        let (out, _) = sink.finish().unwrap();
        let CaptureOutput::Text { out, .. } = out else {
            panic!("text output")
        };
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("node-1/if3"), "{line}");
        assert!(line.contains("10.0.0.1.1000 > 10.0.0.2.9999"), "{line}");
    }

    #[test]
    fn kernel_filter_keeps_a_superset() {
        let f = PacketFilter::compile("udp and host 10.1.0.1 and port 53").unwrap();
        let cfg = kernel_filter(f.kernel_hint());
        assert_eq!((cfg.proto, cfg.port, cfg.n_addrs), (0, 53, 1));
        assert_eq!(&cfg.addrs[0].addr_bytes()[..4], &[10, 1, 0, 1]);
        let f = PacketFilter::compile("icmp6").unwrap();
        let cfg = kernel_filter(f.kernel_hint());
        assert_eq!((cfg.family, cfg.proto), (6, 58));
        let f = PacketFilter::compile("udp or icmp").unwrap();
        assert_eq!(kernel_filter(f.kernel_hint()), FilterConfig::default());
    }
}
