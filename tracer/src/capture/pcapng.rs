//! pcapng output (one interface per namespace/device, ns timestamps, direction flags, drop
//! comments) and reading capture files (pcapng, and pcap record by record) back into
//! [`CapturedPacket`]s with their [`LinkType`].
use std::{
    collections::HashMap,
    io::{Chain, Cursor, Read, Write},
};

use bytes::Bytes;
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        Block, PcapNgReader,
    },
    DataLink,
};

use tracer_common::pcapng_record;

use super::{
    packet::{interface_name, split_interface_name},
    CaptureError, CapturedPacket, Direction, DropInfo,
};

/// tcpdump's default snap length.
pub const DEFAULT_SNAPLEN: u32 = 262_144;

// epb_flags bits 0-1: 01 inbound, 10 outbound (pcapng spec, section 4.3.1).
const EPB_INBOUND: u32 = 1;
const EPB_OUTBOUND: u32 = 2;
const DROP_PREFIX: &str = "drop: ";
const NODE_PREFIX: &str = "node ";

/// Writes captured packets as pcapng (little-endian, one section). Blocks are encoded here
/// straight into the output buffer, without an intermediate block object per packet; the
/// writer buffers itself, so `out` may be a bare file or pipe.
pub struct PcapngWriter<W: Write> {
    out: W,
    /// Bytes not yet handed to `out`.
    pending: Vec<u8>,
    // (node, interface name, link type, FCS length) -> interface id, in order of first sight.
    interfaces: HashMap<(String, String, u16, Option<u8>), u32>,
    snaplen: u32,
    block: Vec<u8>,
    /// The last bytes written opened a filler block: a run of kernel records
    /// ([`tracer_common::pcapng_record`]) ends so, and the next block must close it first.
    filler_open: bool,
}

/// `pending` is written out once it holds this much.
const PENDING_MAX: usize = 256 << 10;
/// A run of kernel records at least this long goes to `out` from where it lies (one writev
/// with what is pending), not through `pending`.
const RUN_IN_PLACE: usize = 16 << 10;

/// Writes `a` then `b` with as few writev calls as the output takes.
fn write_both<W: Write>(out: &mut W, mut a: &[u8], mut b: &[u8]) -> std::io::Result<()> {
    use std::io::{ErrorKind, IoSlice};
    while !a.is_empty() {
        let n = match out.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    out.write_all(b)
}

// Block types and option codes (pcapng spec, sections 4.1-4.3).
const SHB_TYPE: u32 = 0x0A0D_0D0A;
const SHB_MAGIC: u32 = 0x1A2B_3C4D;
const IDB_TYPE: u32 = 1;
const EPB_TYPE: u32 = 6;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const IF_FCSLEN: u16 = 13;
const EPB_FLAGS: u16 = 2;

/// Appends one option (code, length, value padded to 4 bytes).
fn put_option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    put_padded(b, value);
}

fn put_padded(b: &mut Vec<u8>, data: &[u8]) {
    b.extend_from_slice(data);
    b.resize(b.len() + (4 - data.len() % 4) % 4, 0);
}

/// Starts a block in `b` (cleared): type and a length to fill in by [`end_block`].
fn begin_block(b: &mut Vec<u8>, block_type: u32) {
    b.clear();
    b.extend_from_slice(&block_type.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
}

/// Ends the options (when there were any) and writes both block lengths.
fn end_block(b: &mut Vec<u8>, had_options: bool) {
    if had_options {
        b.extend_from_slice(&OPT_END.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
    }
    let len = (b.len() + 4) as u32;
    b[4..8].copy_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
}

fn epb_flags(dir: Option<Direction>) -> Option<u32> {
    match dir {
        Some(Direction::In) => Some(EPB_INBOUND),
        Some(Direction::Out) => Some(EPB_OUTBOUND),
        None => None,
    }
}

/// An EPB's fixed part, up to the packet data, with the block's total length (built on the
/// stack: it is on every packet's path).
fn epb_head(
    interface_id: u32,
    ts_ns: u64,
    caplen: usize,
    orig_len: u32,
    dir: Option<Direction>,
    comment: Option<&str>,
) -> [u8; 28] {
    let option = |value_len: usize| 4 + value_len.next_multiple_of(4);
    let options = epb_flags(dir).map_or(0, |_| option(4)) + comment.map_or(0, |c| option(c.len()));
    let end_of_options = if options > 0 { 4 } else { 0 };
    let total = 28 + caplen.next_multiple_of(4) + options + end_of_options + 4;
    // if_tsresol = 9: the timestamp is the nanosecond count, high word first.
    let words = [
        EPB_TYPE,
        total as u32,
        interface_id,
        (ts_ns >> 32) as u32,
        ts_ns as u32,
        caplen as u32,
        orig_len.max(caplen as u32),
    ];
    let mut head = [0u8; 28];
    for (chunk, w) in head.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    head
}

/// Appends what follows an EPB's packet data (`data` itself only for its length): padding,
/// options and the trailing total length.
fn epb_tail(b: &mut Vec<u8>, data: &[u8], dir: Option<Direction>, comment: Option<&str>) {
    let start = b.len();
    b.resize(start + (4 - data.len() % 4) % 4, 0);
    let flags = epb_flags(dir);
    if let Some(f) = flags {
        put_option(b, EPB_FLAGS, &f.to_le_bytes());
    }
    if let Some(c) = comment {
        put_option(b, OPT_COMMENT, c.as_bytes());
    }
    if flags.is_some() || comment.is_some() {
        b.extend_from_slice(&OPT_END.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
    }
    let total = 28 + data.len() + (b.len() - start) + 4;
    b.extend_from_slice(&(total as u32).to_le_bytes());
}

/// The comment a packet seen at a drop point carries, read back by [`read_capture_file`].
pub fn drop_comment(d: &DropInfo) -> String {
    format!("{DROP_PREFIX}{} at {}", d.reason, d.location)
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header at once; packets longer than `snaplen` are truncated.
    pub fn new(mut out: W, snaplen: u32) -> Result<Self, CaptureError> {
        let mut b = Vec::with_capacity(512);
        begin_block(&mut b, SHB_TYPE);
        b.extend_from_slice(&SHB_MAGIC.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
        put_option(&mut b, SHB_USERAPPL, b"netpath");
        end_block(&mut b, true);
        out.write_all(&b)?;
        out.flush()?;
        Ok(PcapngWriter {
            out,
            pending: Vec::with_capacity(PENDING_MAX + 4096),
            interfaces: HashMap::new(),
            snaplen: snaplen.max(1),
            block: b,
            filler_open: false,
        })
    }

    /// Writes a run of the kernel's pcapng records as they lie in its ring buffer, record
    /// headers included (see [`tracer_common::pcapng_record`]); their interface ids must come
    /// from [`PcapngWriter::interface_id`].
    pub fn write_kernel_records(&mut self, run: &[u8]) -> std::io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        if !self.filler_open {
            self.pending.extend_from_slice(&pcapng_record::FILLER_OPEN);
        }
        self.filler_open = true;
        if run.len() < RUN_IN_PLACE {
            self.pending.extend_from_slice(run);
            return self.spill();
        }
        write_both(&mut self.out, &self.pending, run)?;
        self.pending.clear();
        Ok(())
    }

    /// Ends the filler block a run of kernel records left open, before any other block.
    fn close_filler(&mut self) {
        if self.filler_open {
            self.pending.extend_from_slice(&pcapng_record::FILLER_CLOSE);
            self.filler_open = false;
        }
    }

    /// Hands `pending` to the output once it is full.
    fn spill(&mut self) -> std::io::Result<()> {
        if self.pending.len() >= PENDING_MAX {
            self.out.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// The id of interface `name` (`netns/ifname`) of `node`, writing its description block
    /// on first sight.
    pub fn interface_id(&mut self, node: &str, name: &str) -> Result<u32, CaptureError> {
        self.interface_id_on(node, name, LinkType::Ethernet, None)
    }

    /// [`PcapngWriter::interface_id`] for an interface of link type `link`, whose frames end
    /// with `fcs_len` bytes of FCS when given (a file read with `-r`).
    pub fn interface_id_on(
        &mut self,
        node: &str,
        name: &str,
        link: LinkType,
        fcs_len: Option<u8>,
    ) -> Result<u32, CaptureError> {
        let key = (node.to_string(), name.to_string(), link.code(), fcs_len);
        if let Some(id) = self.interfaces.get(&key) {
            return Ok(*id);
        }
        let id = u32::try_from(self.interfaces.len())
            .map_err(|_| CaptureError::BadFile("too many interfaces".into()))?;
        self.close_filler();
        let b = &mut self.block;
        begin_block(b, IDB_TYPE);
        b.extend_from_slice(&link.code().to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&self.snaplen.to_le_bytes());
        put_option(b, IF_NAME, name.as_bytes());
        put_option(b, IF_DESCRIPTION, format!("{NODE_PREFIX}{node}").as_bytes());
        put_option(b, IF_TSRESOL, &[9]);
        if let Some(n) = fcs_len {
            put_option(b, IF_FCSLEN, &[n]);
        }
        end_block(b, true);
        self.pending.extend_from_slice(b);
        self.spill()?;
        self.interfaces.insert(key, id);
        Ok(id)
    }

    /// Writes one packet block on an interface from [`PcapngWriter::interface_id`], truncated
    /// to the snap length; not flushed.
    pub fn write_block(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        dir: Option<Direction>,
        drop: Option<&DropInfo>,
    ) -> Result<(), CaptureError> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        self.close_filler();
        let comment = drop.map(drop_comment);
        let comment = comment.as_deref();
        // Head and data go straight into the output buffer: one copy of the packet bytes.
        let head = epb_head(interface_id, ts_ns, data.len(), orig_len, dir, comment);
        self.pending.extend_from_slice(&head);
        self.pending.extend_from_slice(data);
        epb_tail(&mut self.pending, data, dir, comment);
        self.spill()?;
        Ok(())
    }

    /// Writes one packet (and its interface description on first sight), then flushes.
    pub fn write_packet(&mut self, pkt: &CapturedPacket) -> Result<(), CaptureError> {
        self.write_packet_on(LinkType::Ethernet, None, pkt)
    }

    /// [`PcapngWriter::write_packet`] for a packet read from a capture file: its interface
    /// keeps the file's link type (and FCS length).
    pub fn write_file_packet(&mut self, p: &FilePacket) -> Result<(), CaptureError> {
        self.write_packet_on(p.link, p.fcs_len, &p.packet)
    }

    fn write_packet_on(
        &mut self,
        link: LinkType,
        fcs_len: Option<u8>,
        pkt: &CapturedPacket,
    ) -> Result<(), CaptureError> {
        let id = self.interface_id_on(&pkt.node, &pkt.interface_name(), link, fcs_len)?;
        self.write_block(
            id,
            pkt.ts_ns,
            &pkt.data,
            pkt.orig_len,
            pkt.dir,
            pkt.drop.as_ref(),
        )?;
        self.flush()?;
        Ok(())
    }

    /// Writes out everything, in whole blocks: a file is complete after every flush.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.close_filler();
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        self.out.flush()
    }

    /// The output, after a best-effort [`PcapngWriter::flush`] (call that first to see errors).
    pub fn into_inner(mut self) -> W {
        let _ = self.flush();
        self.out
    }
}

/// The link-layer header a capture file's packets start with (pcap-linktype(7)): the ones
/// `netpath capture -r` reads, prints and filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// NULL (0), BSD loopback: a 4-byte address family in the writing host's byte order.
    Null,
    /// EN10MB (1): Ethernet II / 802.3.
    Ethernet,
    /// RAW (101): an IPv4 or IPv6 packet, told apart by its version field.
    Raw,
    /// LOOP (108), OpenBSD loopback: a 4-byte address family in network byte order.
    Loop,
    /// LINUX_SLL (113), Linux cooked v1 (`tcpdump -i any -y LINUX_SLL`): a 16-byte header.
    LinuxSll,
    /// IPV4 (228): an IPv4 packet.
    Ipv4,
    /// IPV6 (229): an IPv6 packet.
    Ipv6,
    /// LINUX_SLL2 (276), Linux cooked v2 (`tcpdump -i any`): a 20-byte header with the
    /// interface index.
    LinuxSll2,
}

/// The link types [`LinkType::from_code`] knows, with their pcap-linktype(7) names.
const LINK_TYPES: [(u16, LinkType, &str); 8] = [
    (0, LinkType::Null, "NULL"),
    (1, LinkType::Ethernet, "EN10MB"),
    (101, LinkType::Raw, "RAW"),
    (108, LinkType::Loop, "LOOP"),
    (113, LinkType::LinuxSll, "LINUX_SLL"),
    (228, LinkType::Ipv4, "IPV4"),
    (229, LinkType::Ipv6, "IPV6"),
    (276, LinkType::LinuxSll2, "LINUX_SLL2"),
];

impl LinkType {
    /// The link type numbered `code` (LINKTYPE_ value), or a one-line error naming it.
    pub fn from_code(code: u32) -> Result<Self, CaptureError> {
        LINK_TYPES
            .iter()
            .find(|(c, _, _)| u32::from(*c) == code)
            .map(|(_, l, _)| *l)
            .ok_or_else(|| {
                let known: Vec<&str> = LINK_TYPES.iter().map(|(_, _, n)| *n).collect();
                CaptureError::BadFile(format!(
                    "link type {code} ({:?}) is not supported; netpath reads {}",
                    DataLink::from(code),
                    known.join(", ")
                ))
            })
    }

    /// The LINKTYPE_ number written in files.
    pub fn code(self) -> u16 {
        LINK_TYPES
            .iter()
            .find(|(_, l, _)| *l == self)
            .map_or(0, |e| e.0)
    }

    /// The name tcpdump and pcap-linktype(7) use.
    pub fn name(self) -> &'static str {
        LINK_TYPES
            .iter()
            .find(|(_, l, _)| *l == self)
            .map_or("", |e| e.2)
    }
}

impl std::fmt::Display for LinkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A packet read from a capture file, with what its bytes mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePacket {
    /// What `packet.data` starts with.
    pub link: LinkType,
    /// Bytes of frame check sequence at the end of each frame, when the file says so (pcap's
    /// link-type field, pcapng's if_fcslen). They stay in the data, as tcpdump keeps them.
    pub fcs_len: Option<u8>,
    /// The file (pcapng: the section) is in the other byte order than this machine's: a NULL
    /// header is in the writer's byte order, which libpcap's filters for the file expect.
    pub foreign_order: bool,
    pub packet: CapturedPacket,
}

struct InterfaceInfo {
    node: String,
    netns: String,
    ifname: String,
    link: Result<LinkType, String>,
    fcs_len: Option<u8>,
    tsresol: u8,
}

/// Converts a raw pcapng timestamp in units of `if_tsresol` to nanoseconds.
fn ts_to_ns(raw: u64, tsresol: u8) -> u64 {
    let exp = u32::from(tsresol & 0x7f);
    let ns = if tsresol & 0x80 != 0 {
        (u128::from(raw) * 1_000_000_000) >> exp.min(127)
    } else if exp <= 9 {
        u128::from(raw) * 10u128.pow(9 - exp)
    } else {
        u128::from(raw) / 10u128.checked_pow(exp - 9).unwrap_or(u128::MAX)
    };
    u64::try_from(ns).unwrap_or(u64::MAX)
}

type Peeked<R> = Chain<Cursor<[u8; 4]>, R>;

/// Reads a pcapng (as written by [`PcapngWriter`] or other tools) or a classic pcap file of
/// any [`LinkType`]. Interface names `netns/dev` are split back; direction comes from
/// epb_flags, drop info from `drop: REASON at LOCATION` comments.
///
/// As an iterator it yields the packets alone; [`CaptureFileReader::next_packet`] says what
/// their link type is too.
pub struct CaptureFileReader<R: Read>(Source<R>);

enum Source<R: Read> {
    Pcapng {
        reader: PcapNgReader<Peeked<R>>,
        interfaces: Vec<InterfaceInfo>,
        /// The current section's byte order is not this machine's.
        foreign_order: bool,
    },
    Pcap(PcapFile<Peeked<R>>),
}

/// Opens a capture stream, detecting pcapng or pcap from its first bytes.
pub fn read_capture_file<R: Read>(mut input: R) -> Result<CaptureFileReader<R>, CaptureError> {
    let mut magic = [0u8; 4];
    // A short read here is the file's fault, not an output error.
    input.read_exact(&mut magic).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            CaptureError::BadFile("empty, or shorter than a capture file header".into())
        }
        // Reading the input (a directory, an unreadable device), not writing the output.
        _ => CaptureError::BadFile(e.to_string()),
    })?;
    let peeked = Cursor::new(magic).chain(input);
    match u32::from_le_bytes(magic) {
        0x0A0D_0D0A => {
            let reader = PcapNgReader::new(peeked)?;
            let foreign_order = foreign(reader.section().endianness);
            Ok(CaptureFileReader(Source::Pcapng {
                reader,
                interfaces: Vec::new(),
                foreign_order,
            }))
        }
        m if PcapFile::<Peeked<R>>::byte_order(m).is_some() => {
            Ok(CaptureFileReader(Source::Pcap(PcapFile::open(peeked)?)))
        }
        _ => Err(CaptureError::BadFile("not a pcap or pcapng file".into())),
    }
}

/// libpcap's largest sane captured length (MAXIMUM_SNAPLEN): a record claiming more is a
/// damaged file.
const MAX_CAPLEN: u32 = 262_144;
/// The pcap header's link-type field: FCS length (in 16-bit words) in bits 28-31, valid when
/// bit 26 is set; the link type in bits 0-15 (pcap-linktype(7), LINKTYPE_FCS).
const LT_FCS_PRESENT: u32 = 0x0400_0000;

/// A classic pcap file, read record by record here rather than by pcap-file, which refuses
/// records whose lengths exceed the header's snap length; libpcap (tcpdump) cuts them to it.
struct PcapFile<R: Read> {
    input: R,
    big_endian: bool,
    nanos: bool,
    snaplen: u32,
    link: LinkType,
    fcs_len: Option<u8>,
}

impl<R: Read> PcapFile<R> {
    /// (big-endian, nanosecond timestamps) for a pcap magic number read little-endian.
    fn byte_order(magic_le: u32) -> Option<(bool, bool)> {
        match magic_le {
            0xA1B2_C3D4 => Some((false, false)),
            0xA1B2_3C4D => Some((false, true)),
            0xD4C3_B2A1 => Some((true, false)),
            0x4D3C_B2A1 => Some((true, true)),
            _ => None,
        }
    }

    fn open(mut input: R) -> Result<Self, CaptureError> {
        let mut h = [0u8; 24];
        if read_full(&mut input, &mut h)? < h.len() {
            return Err(CaptureError::BadFile("truncated pcap file header".into()));
        }
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = Self::byte_order(magic)
            .ok_or_else(|| CaptureError::BadFile("not a pcap or pcapng file".into()))?;
        let word = |i: usize| {
            let b = [h[i], h[i + 1], h[i + 2], h[i + 3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let linktype = word(20);
        let fcs_len = (linktype & LT_FCS_PRESENT != 0).then(|| ((linktype >> 28) * 2) as u8);
        let link = LinkType::from_code(linktype & 0xffff)?;
        // libpcap: a snap length that does not fit its int is bogus; use the maximum.
        let snaplen = match word(16) {
            0 => MAX_CAPLEN,
            s if s > i32::MAX as u32 => MAX_CAPLEN,
            s => s,
        };
        Ok(PcapFile {
            input,
            big_endian,
            nanos,
            snaplen,
            link,
            fcs_len,
        })
    }

    fn foreign_order(&self) -> bool {
        foreign(if self.big_endian {
            pcap_file::Endianness::Big
        } else {
            pcap_file::Endianness::Little
        })
    }

    /// The next record.
    fn next_record(&mut self) -> Option<Result<PcapRecord, CaptureError>> {
        let mut h = [0u8; 16];
        match read_full(&mut self.input, &mut h) {
            Ok(0) => return None,
            Ok(16) => {}
            Ok(n) => {
                return Some(Err(CaptureError::BadFile(format!(
                    "truncated record header ({n} of 16 bytes)"
                ))))
            }
            Err(e) => return Some(Err(e)),
        }
        let word = |i: usize| {
            let b = [h[i], h[i + 1], h[i + 2], h[i + 3]];
            if self.big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (secs, frac, caplen, orig_len) = (word(0), word(4), word(8), word(12));
        if caplen > MAX_CAPLEN.max(self.snaplen) {
            return Some(Err(CaptureError::BadFile(format!(
                "invalid packet capture length {caplen}, bigger than the maximum of {MAX_CAPLEN}"
            ))));
        }
        // Beyond the file's snap length: keep that much and skip the rest, as libpcap does.
        let keep = caplen.min(self.snaplen);
        let mut data = vec![0u8; keep as usize];
        let skip = u64::from(caplen - keep);
        let read = read_full(&mut self.input, &mut data).and_then(|n| {
            let skipped = std::io::copy(&mut (&mut self.input).take(skip), &mut std::io::sink())
                .map_err(|e| CaptureError::BadFile(e.to_string()))?;
            Ok(n as u64 + skipped)
        });
        match read {
            Ok(n) if n == u64::from(caplen) => {}
            Ok(n) => {
                return Some(Err(CaptureError::BadFile(format!(
                    "truncated record: {n} of {caplen} captured bytes"
                ))))
            }
            Err(e) => return Some(Err(e)),
        }
        let frac_ns = if self.nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1_000
        };
        let ts_ns = u64::from(secs)
            .saturating_mul(1_000_000_000)
            .saturating_add(frac_ns);
        Some(Ok(PcapRecord {
            ts_ns,
            data,
            orig_len,
        }))
    }
}

struct PcapRecord {
    ts_ns: u64,
    data: Vec<u8>,
    orig_len: u32,
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, CaptureError> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Reading the input, not writing the output.
            Err(e) => return Err(CaptureError::BadFile(e.to_string())),
        }
    }
    Ok(n)
}

/// Whether data written in this byte order is foreign to this machine.
fn foreign(order: pcap_file::Endianness) -> bool {
    (order == pcap_file::Endianness::Big) != cfg!(target_endian = "big")
}

impl<R: Read> CaptureFileReader<R> {
    /// The link type of every packet and whether the file is in the other byte order than
    /// this machine's, when the file says so up front (pcap does; a pcapng file gives a link
    /// type per interface).
    pub fn file_link_type(&self) -> Option<(LinkType, bool)> {
        match &self.0 {
            Source::Pcap(file) => Some((file.link, file.foreign_order())),
            Source::Pcapng { .. } => None,
        }
    }

    /// The next packet with its link type; an interface of a link type netpath does not read
    /// is an error when its first packet comes.
    pub fn next_packet(&mut self) -> Option<Result<FilePacket, CaptureError>> {
        match &mut self.0 {
            Source::Pcap(file) => {
                let PcapRecord {
                    ts_ns,
                    data,
                    orig_len,
                } = match file.next_record()? {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                Some(Ok(FilePacket {
                    link: file.link,
                    fcs_len: file.fcs_len,
                    foreign_order: file.foreign_order(),
                    packet: CapturedPacket {
                        ts_ns,
                        node: String::new(),
                        netns: String::new(),
                        ifname: String::new(),
                        dir: None,
                        orig_len,
                        data: Bytes::from(data),
                        drop: None,
                    },
                }))
            }
            Source::Pcapng {
                reader,
                interfaces,
                foreign_order,
            } => loop {
                let block = match reader.next_block()? {
                    Ok(b) => b,
                    Err(e) => return Some(Err(e.into())),
                };
                match block {
                    Block::SectionHeader(shb) => {
                        interfaces.clear();
                        *foreign_order = foreign(shb.endianness);
                    }
                    Block::InterfaceDescription(idb) => interfaces.push(interface_info(&idb)),
                    Block::EnhancedPacket(epb) => {
                        return Some(packet_from_epb(&epb, interfaces, *foreign_order))
                    }
                    _ => {}
                }
            },
        }
    }
}

impl<R: Read> Iterator for CaptureFileReader<R> {
    type Item = Result<CapturedPacket, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_packet().map(|r| r.map(|p| p.packet))
    }
}

fn interface_info(idb: &InterfaceDescriptionBlock) -> InterfaceInfo {
    let mut info = InterfaceInfo {
        node: String::new(),
        netns: String::new(),
        ifname: String::new(),
        link: LinkType::from_code(u32::from(idb.linktype)).map_err(|e| match e {
            CaptureError::BadFile(m) => m,
            other => other.to_string(),
        }),
        fcs_len: None,
        tsresol: 6,
    };
    for opt in &idb.options {
        match opt {
            InterfaceDescriptionOption::IfName(n) => {
                (info.netns, info.ifname) = split_interface_name(n)
            }
            InterfaceDescriptionOption::IfDescription(d) => {
                if let Some(node) = d.strip_prefix(NODE_PREFIX) {
                    info.node = node.to_string();
                }
            }
            InterfaceDescriptionOption::IfTsResol(r) => info.tsresol = *r,
            InterfaceDescriptionOption::IfFcsLen(n) => info.fcs_len = Some(*n),
            _ => {}
        }
    }
    info
}

fn packet_from_epb(
    epb: &EnhancedPacketBlock,
    interfaces: &[InterfaceInfo],
    foreign_order: bool,
) -> Result<FilePacket, CaptureError> {
    let iface = interfaces.get(epb.interface_id as usize).ok_or_else(|| {
        CaptureError::BadFile(format!(
            "packet on undeclared interface {}",
            epb.interface_id
        ))
    })?;
    let link = iface.link.clone().map_err(|why| {
        CaptureError::BadFile(format!(
            "interface {}: {why}",
            interface_name("", &iface.netns, &iface.ifname).trim_start_matches('/')
        ))
    })?;
    let mut pkt = CapturedPacket {
        // pcap-file hands the raw timestamp back as if it were nanoseconds.
        ts_ns: ts_to_ns(
            u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX),
            iface.tsresol,
        ),
        node: iface.node.clone(),
        netns: iface.netns.clone(),
        ifname: iface.ifname.clone(),
        dir: None,
        data: Bytes::copy_from_slice(&epb.data),
        orig_len: epb.original_len,
        drop: None,
    };
    for opt in &epb.options {
        match opt {
            EnhancedPacketOption::Flags(f) => {
                pkt.dir = match f & 3 {
                    EPB_INBOUND => Some(Direction::In),
                    EPB_OUTBOUND => Some(Direction::Out),
                    _ => None,
                }
            }
            EnhancedPacketOption::Comment(c) => {
                if let Some((reason, location)) = c
                    .strip_prefix(DROP_PREFIX)
                    .and_then(|r| r.split_once(" at "))
                {
                    pkt.drop = Some(DropInfo {
                        reason: reason.to_string(),
                        location: location.to_string(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(FilePacket {
        link,
        fcs_len: iface.fcs_len,
        foreign_order,
        packet: pkt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(
        netns: &str,
        ifname: &str,
        dir: Option<Direction>,
        drop: bool,
        len: usize,
    ) -> CapturedPacket {
        CapturedPacket {
            ts_ns: 1_700_000_000_123_456_789,
            node: "node-1".into(),
            netns: netns.into(),
            ifname: ifname.into(),
            dir,
            data: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
            orig_len: len as u32 + 10,
            drop: drop.then(|| DropInfo {
                reason: "NETFILTER_DROP".into(),
                location: "nf_hook_slow+0x8c".into(),
            }),
        }
    }

    #[test]
    fn pcapng_round_trip() {
        let packets = vec![
            pkt("pod-a", "eth0", Some(Direction::Out), false, 60),
            pkt("node-1", "eth0", Some(Direction::In), false, 61),
            pkt("pod-a", "eth0", None, true, 62),
            pkt("pod-a", "eth0", Some(Direction::In), false, 100),
        ];
        let mut w = PcapngWriter::new(Vec::new(), 80).unwrap();
        for p in &packets {
            w.write_packet(p).unwrap();
        }
        let bytes = w.into_inner();
        let back: Vec<_> = read_capture_file(&bytes[..])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), packets.len());
        for (a, b) in packets.iter().zip(&back) {
            let mut expected = a.clone();
            expected.data = a.data.slice(..a.data.len().min(80));
            assert_eq!(&expected, b);
        }
    }

    #[test]
    fn timestamp_resolutions() {
        assert_eq!(ts_to_ns(5, 9), 5);
        assert_eq!(ts_to_ns(5, 6), 5_000);
        assert_eq!(ts_to_ns(5, 12), 0);
        assert_eq!(ts_to_ns(1 << 20, 0x80 | 20), 1_000_000_000);
        assert_eq!(ts_to_ns(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read_capture_file(&b"hello world"[..]).is_err());
        assert!(read_capture_file(&b"ab"[..]).is_err());
        let mut w = PcapngWriter::new(Vec::new(), 100).unwrap();
        w.write_packet(&pkt("a", "b", None, false, 40)).unwrap();
        let bytes = w.into_inner();
        for cut in 4..bytes.len() {
            if let Ok(r) = read_capture_file(&bytes[..cut]) {
                for item in r.take(10) {
                    let _ = item;
                }
            }
        }
    }

    #[test]
    fn empty_and_foreign_files_are_bad_files_not_output_errors() {
        for (bytes, why) in [
            (&b""[..], "empty"),
            (&b"\x0a\x0d"[..], "empty"),
            (&b"GIF89a..."[..], "not a pcap"),
        ] {
            match read_capture_file(bytes) {
                Err(CaptureError::BadFile(m)) => assert!(m.contains(why), "{m}"),
                Err(e) => panic!("{why}: {e}"),
                Ok(_) => panic!("{why}: read"),
            }
        }
    }

    /// A classic pcap file: header (link-type field as given) and records of
    /// (captured bytes, captured length written, original length).
    fn pcap_file(
        big_endian: bool,
        nanos: bool,
        snaplen: u32,
        linktype: u32,
        records: &[(&[u8], u32, u32)],
    ) -> Vec<u8> {
        let w = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if big_endian {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            })
        };
        let mut v = Vec::new();
        w(&mut v, if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 });
        let version: [u8; 4] = if big_endian {
            [0, 2, 0, 4]
        } else {
            [2, 0, 4, 0]
        };
        v.extend_from_slice(&version);
        for x in [0, 0, snaplen, linktype] {
            w(&mut v, x);
        }
        for (i, (data, caplen, orig)) in records.iter().enumerate() {
            for x in [1_700_000_000 + i as u32, 250, *caplen, *orig] {
                w(&mut v, x);
            }
            v.extend_from_slice(data);
        }
        v
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<FilePacket>, CaptureError> {
        let mut r = read_capture_file(bytes)?;
        std::iter::from_fn(|| r.next_packet()).collect()
    }

    #[test]
    fn pcap_link_types_and_byte_orders() {
        let data: Vec<u8> = (0..40).collect();
        for (code, link) in [
            (0, LinkType::Null),
            (1, LinkType::Ethernet),
            (101, LinkType::Raw),
            (108, LinkType::Loop),
            (113, LinkType::LinuxSll),
            (228, LinkType::Ipv4),
            (229, LinkType::Ipv6),
            (276, LinkType::LinuxSll2),
        ] {
            assert_eq!(LinkType::from_code(code).unwrap(), link);
            assert_eq!(u32::from(link.code()), code);
            for big_endian in [false, true] {
                for nanos in [false, true] {
                    let file = pcap_file(big_endian, nanos, 65535, code, &[(&data, 40, 60)]);
                    let p = &read_all(&file).unwrap()[0];
                    assert_eq!((p.link, p.fcs_len), (link, None));
                    assert_eq!(
                        p.foreign_order,
                        big_endian == cfg!(target_endian = "little")
                    );
                    assert_eq!((&p.packet.data[..], p.packet.orig_len), (&data[..], 60));
                    let frac = if nanos { 250 } else { 250_000 };
                    assert_eq!(p.packet.ts_ns, 1_700_000_000_000_000_000 + frac);
                }
            }
        }
    }

    #[test]
    fn fcs_bits_of_the_link_type_field_keep_the_frame_whole() {
        // FCS length 2 words (4 bytes), "present" bit, Ethernet.
        let field = (2 << 28) | LT_FCS_PRESENT | 1;
        let frame: Vec<u8> = (0..64).collect();
        let file = pcap_file(false, false, 65535, field, &[(&frame, 64, 64)]);
        let p = &read_all(&file).unwrap()[0];
        assert_eq!((p.link, p.fcs_len), (LinkType::Ethernet, Some(4)));
        assert_eq!(&p.packet.data[..], &frame[..]);
        // Without the "present" bit the upper bits say nothing.
        let file = pcap_file(false, false, 65535, (2 << 28) | 1, &[(&frame, 64, 64)]);
        assert_eq!(read_all(&file).unwrap()[0].fcs_len, None);
    }

    #[test]
    fn records_beyond_the_snap_length_are_cut_to_it_like_libpcap() {
        let long: Vec<u8> = (0..100).collect();
        let file = pcap_file(
            false,
            false,
            60,
            1,
            &[
                (&long, 100, 1500),
                (&long[..50], 50, 1500),
                (&long, 100, 80),
            ],
        );
        let back = read_all(&file).unwrap();
        let lens: Vec<_> = back
            .iter()
            .map(|p| (p.packet.data.len(), p.packet.orig_len))
            .collect();
        // Cut records leave the next one where it is; lengths are kept as written.
        assert_eq!(lens, [(60, 1500), (50, 1500), (60, 80)]);
        assert_eq!(&back[2].packet.data[..], &long[..60]);
        // A snap length of 0 means no limit.
        let file = pcap_file(false, false, 0, 1, &[(&long, 100, 100)]);
        assert_eq!(read_all(&file).unwrap()[0].packet.data.len(), 100);
    }

    #[test]
    fn damaged_pcap_records_are_one_line_errors() {
        let d = [0u8; 10];
        let message = |file: &[u8]| match read_all(file) {
            Err(CaptureError::BadFile(m)) => m,
            other => panic!("{other:?}"),
        };
        let huge = pcap_file(false, false, 65535, 1, &[(&d, 300_000, 300_000)]);
        assert!(message(&huge).contains("300000"), "{}", message(&huge));
        let short = pcap_file(false, false, 65535, 1, &[(&d, 20, 20)]);
        assert!(message(&short).contains("10 of 20"), "{}", message(&short));
        let file = pcap_file(false, false, 65535, 1, &[(&d, 10, 10)]);
        let cut_header = &file[..file.len() - 15];
        assert!(message(cut_header).contains("record header"));
        assert!(message(&file[..20]).contains("pcap file header"));
        let unknown = pcap_file(false, false, 65535, 147, &[]);
        match read_capture_file(&unknown[..]) {
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("link type 147") && !m.contains('\n'), "{m}");
            }
            Ok(_) => panic!("link type 147 read"),
        }
    }

    #[test]
    fn pcapng_keeps_each_interface_link_type() {
        let mut w = PcapngWriter::new(Vec::new(), 1000).unwrap();
        let mut p = pkt("ns", "tun0", Some(Direction::Out), false, 40);
        let raw = FilePacket {
            link: LinkType::Raw,
            fcs_len: None,
            foreign_order: false,
            packet: p.clone(),
        };
        w.write_file_packet(&raw).unwrap();
        p.ifname = "eth0".into();
        let eth = FilePacket {
            link: LinkType::Ethernet,
            fcs_len: Some(4),
            packet: p,
            ..raw.clone()
        };
        w.write_file_packet(&eth).unwrap();
        w.write_file_packet(&raw).unwrap();
        let bytes = w.into_inner();
        let back = read_all(&bytes).unwrap();
        let links: Vec<_> = back.iter().map(|p| (p.link, p.fcs_len)).collect();
        assert_eq!(
            links,
            [
                (LinkType::Raw, None),
                (LinkType::Ethernet, Some(4)),
                (LinkType::Raw, None)
            ]
        );
        assert_eq!(back[0], raw);
        // Records longer than their interface's snap length are kept whole.
        let mut short_snap = bytes.clone();
        let idb = u32::from_le_bytes(short_snap[4..8].try_into().unwrap()) as usize;
        short_snap[idb + 12..idb + 16].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(read_all(&short_snap).unwrap()[0].packet.data.len(), 40);
        // An interface of a link type netpath does not read: its packets are errors naming it.
        let mut patched = bytes.clone();
        patched[idb + 8..idb + 10].copy_from_slice(&147u16.to_le_bytes());
        let err = read_all(&patched).unwrap_err().to_string();
        assert!(err.contains("ns/tun0") && err.contains("147"), "{err}");
    }
}
