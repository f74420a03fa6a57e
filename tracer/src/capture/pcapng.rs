//! pcapng output (one interface per namespace/device, ns timestamps, direction flags, drop
//! comments) and reading capture files back into [`CapturedPacket`]s.
use std::{
    collections::HashMap,
    io::{Chain, Cursor, Read, Write},
};

use bytes::Bytes;
use pcap_file::{
    pcap::PcapReader,
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

use super::{packet::split_interface_name, CaptureError, CapturedPacket, Direction, DropInfo};

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
    // (node, interface name) -> interface id, in order of first sight.
    interfaces: HashMap<(String, String), u32>,
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
const EPB_FLAGS: u16 = 2;
const LINKTYPE_ETHERNET: u16 = 1;

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
        if let Some(id) = self.interfaces.get(&(node.to_string(), name.to_string())) {
            return Ok(*id);
        }
        let id = u32::try_from(self.interfaces.len())
            .map_err(|_| CaptureError::BadFile("too many interfaces".into()))?;
        self.close_filler();
        let b = &mut self.block;
        begin_block(b, IDB_TYPE);
        b.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&self.snaplen.to_le_bytes());
        put_option(b, IF_NAME, name.as_bytes());
        put_option(b, IF_DESCRIPTION, format!("{NODE_PREFIX}{node}").as_bytes());
        put_option(b, IF_TSRESOL, &[9]);
        end_block(b, true);
        self.pending.extend_from_slice(b);
        self.spill()?;
        self.interfaces
            .insert((node.to_string(), name.to_string()), id);
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
        let id = self.interface_id(&pkt.node, &pkt.interface_name())?;
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

struct InterfaceInfo {
    node: String,
    netns: String,
    ifname: String,
    linktype: DataLink,
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
/// Ethernet frames. Interface names `netns/dev` are split back; direction comes from
/// epb_flags, drop info from `drop: REASON at LOCATION` comments.
pub struct CaptureFileReader<R: Read>(Source<R>);

enum Source<R: Read> {
    Pcapng {
        reader: PcapNgReader<Peeked<R>>,
        interfaces: Vec<InterfaceInfo>,
    },
    Pcap(PcapReader<Peeked<R>>),
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
        0x0A0D_0D0A => Ok(CaptureFileReader(Source::Pcapng {
            reader: PcapNgReader::new(peeked)?,
            interfaces: Vec::new(),
        })),
        0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 => {
            let reader = PcapReader::new(peeked)?;
            match reader.header().datalink {
                DataLink::ETHERNET => Ok(CaptureFileReader(Source::Pcap(reader))),
                other => Err(CaptureError::BadFile(format!(
                    "link type {other:?} is not Ethernet"
                ))),
            }
        }
        _ => Err(CaptureError::BadFile("not a pcap or pcapng file".into())),
    }
}

impl<R: Read> Iterator for CaptureFileReader<R> {
    type Item = Result<CapturedPacket, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Source::Pcap(reader) => {
                let pkt = match reader.next_packet()? {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e.into())),
                };
                Some(Ok(CapturedPacket {
                    ts_ns: u64::try_from(pkt.timestamp.as_nanos()).unwrap_or(u64::MAX),
                    node: String::new(),
                    netns: String::new(),
                    ifname: String::new(),
                    dir: None,
                    orig_len: pkt.orig_len,
                    data: Bytes::copy_from_slice(&pkt.data),
                    drop: None,
                }))
            }
            Source::Pcapng { reader, interfaces } => loop {
                let block = match reader.next_block()? {
                    Ok(b) => b,
                    Err(e) => return Some(Err(e.into())),
                };
                match block {
                    Block::SectionHeader(_) => interfaces.clear(),
                    Block::InterfaceDescription(idb) => interfaces.push(interface_info(&idb)),
                    Block::EnhancedPacket(epb) => return Some(packet_from_epb(&epb, interfaces)),
                    _ => {}
                }
            },
        }
    }
}

fn interface_info(idb: &InterfaceDescriptionBlock) -> InterfaceInfo {
    let mut info = InterfaceInfo {
        node: String::new(),
        netns: String::new(),
        ifname: String::new(),
        linktype: idb.linktype,
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
            _ => {}
        }
    }
    info
}

fn packet_from_epb(
    epb: &EnhancedPacketBlock,
    interfaces: &[InterfaceInfo],
) -> Result<CapturedPacket, CaptureError> {
    let iface = interfaces.get(epb.interface_id as usize).ok_or_else(|| {
        CaptureError::BadFile(format!(
            "packet on undeclared interface {}",
            epb.interface_id
        ))
    })?;
    if iface.linktype != DataLink::ETHERNET {
        return Err(CaptureError::BadFile(format!(
            "interface {}/{} has link type {:?}; only Ethernet is supported",
            iface.netns, iface.ifname, iface.linktype
        )));
    }
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
    Ok(pkt)
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
}
