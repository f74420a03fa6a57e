//! Userspace half of `netpath capture`: pcap-filter matching, pcapng writing/reading and
//! tcpdump-like text lines for packets the kernel side captured.
//!
//! The CLI builds a [`CaptureSink`] from a compiled [`PacketFilter`] and a [`CaptureOutput`],
//! pushes every [`CapturedPacket`] into it, reports ring-buffer losses with
//! [`CaptureSink::add_lost`], and prints [`CaptureStats::summary`] at the end.
use std::io::Write;

pub mod cbpf;
pub mod filter;
pub mod format;
pub mod live;
pub mod packet;
pub mod pcapng;
pub mod ring;
pub mod serve;

pub use filter::{IpPrefix, KernelHint, PacketFilter, FILTER_HELP};
pub use format::{format_packet, TextOptions};
pub use live::{IfaceSlot, PacketRef, RecordDecoder, RecordView};
pub use packet::{split_interface_name, CapturedPacket, Direction, DropInfo};
pub use pcapng::{read_capture_file, CaptureFileReader, PcapngWriter, DEFAULT_SNAPLEN};
pub use ring::{Cursor, RingReader, PUBLISH_EVERY};

/// Errors of the capture pipeline.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The filter expression did not compile; `message` is libpcap's.
    #[error("invalid capture filter '{expr}': {message}")]
    Filter { expr: String, message: String },
    // The wrapped errors are in the message, not also sources: a chain would print them twice.
    #[error("capture file: {0}")]
    File(pcap_file::PcapError),
    #[error("capture file: {0}")]
    BadFile(String),
    #[error("writing capture output: {0}")]
    Io(std::io::Error),
}

impl From<pcap_file::PcapError> for CaptureError {
    fn from(e: pcap_file::PcapError) -> Self {
        CaptureError::File(e)
    }
}

impl From<std::io::Error> for CaptureError {
    fn from(e: std::io::Error) -> Self {
        CaptureError::Io(e)
    }
}

impl CaptureError {
    /// The output's reader went away (`netpath capture -w - | head`): the end of the
    /// capture, not a failure to report.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CaptureError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Where matched packets go.
pub enum CaptureOutput<W: Write> {
    /// pcapng blocks (file or stdout for `-w -`).
    Pcapng(PcapngWriter<W>),
    /// One tcpdump-like line per packet.
    Text { out: W, opts: TextOptions },
    /// Packets as they are, to a consumer (the agent's capture for a remote client).
    Packets(Box<dyn PacketOut + Send>),
}

/// Takes captured packets as they are, for [`CaptureOutput::Packets`].
pub trait PacketOut {
    /// The id of a device (named as in [`IfaceSlot`]), asked once per device.
    fn interface(&mut self, node: &str, netns: &str, ifname: &str) -> u32;
    /// One packet on a device of [`PacketOut::interface`].
    fn packet(&mut self, iface: u32, pkt: &PacketRef<'_>);
    /// Hands on what is held.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Counters for the end-of-capture summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packets that matched the filter and were written.
    pub captured: u64,
    /// Of those, packets seen at a kernel drop point.
    pub dropped_by_kernel: u64,
    /// Packets the tracer lost before userspace saw them (ring buffer full).
    pub lost_by_tracer: u64,
    /// Packets the userspace filter rejected.
    pub filtered_out: u64,
}

impl CaptureStats {
    /// tcpdump-like summary, three lines.
    pub fn summary(&self) -> String {
        let plural = |n: u64| if n == 1 { "packet" } else { "packets" };
        format!(
            "{} {} captured\n{} {} dropped by the kernel (seen at drop points)\n{} {} lost by the tracer",
            self.captured,
            plural(self.captured),
            self.dropped_by_kernel,
            plural(self.dropped_by_kernel),
            self.lost_by_tracer,
            plural(self.lost_by_tracer),
        )
    }
}

/// Filters, counts and writes captured packets.
pub struct CaptureSink<W: Write> {
    filter: Option<PacketFilter>,
    output: CaptureOutput<W>,
    stats: CaptureStats,
}

impl<W: Write> CaptureSink<W> {
    /// `filter: None` accepts every packet.
    pub fn new(filter: Option<PacketFilter>, output: CaptureOutput<W>) -> Self {
        CaptureSink {
            filter,
            output,
            stats: CaptureStats::default(),
        }
    }

    /// Filters and writes one packet; returns whether it matched. Output is flushed per
    /// packet so pipes (`-w - | tshark -r -`) see packets live.
    pub fn push(&mut self, pkt: &CapturedPacket) -> Result<bool, CaptureError> {
        if !self.accepts(&pkt.data, pkt.orig_len) {
            return Ok(false);
        }
        match &mut self.output {
            CaptureOutput::Pcapng(w) => w.write_packet(pkt)?,
            CaptureOutput::Text { out, opts } => {
                writeln!(out, "{}", format_packet(pkt, opts))?;
                out.flush()?;
            }
            CaptureOutput::Packets(out) => {
                let id = out.interface(&pkt.node, &pkt.netns, &pkt.ifname);
                out.packet(
                    id,
                    &PacketRef {
                        ts_ns: pkt.ts_ns,
                        dir: pkt.dir,
                        data: &pkt.data,
                        orig_len: pkt.orig_len,
                        drop: pkt.drop.as_ref(),
                    },
                );
            }
        }
        self.count(pkt.drop.is_some());
        Ok(true)
    }

    /// Runs the filter on a packet's bytes (already cut to the snap length), counting the
    /// packets it rejects.
    pub fn accepts(&mut self, data: &[u8], orig_len: u32) -> bool {
        self.accepts_live(data, orig_len, false)
    }

    /// [`CaptureSink::accepts`] for a live packet whose VLAN tag netpath may have put back
    /// ([`filter::PacketFilter::matches_live`]).
    pub fn accepts_live(&mut self, data: &[u8], orig_len: u32, tag_put_back: bool) -> bool {
        let ok = self
            .filter
            .as_ref()
            .is_none_or(|f| f.matches_live(data, orig_len, tag_put_back));
        if !ok {
            self.stats.filtered_out += 1;
        }
        ok
    }

    /// Writes a packet [`CaptureSink::accepts`] let through, without flushing (the caller
    /// flushes after a batch). The pcapng interface id is cached in `iface`.
    pub fn write_accepted(
        &mut self,
        iface: &mut IfaceSlot,
        pkt: &PacketRef<'_>,
    ) -> Result<(), CaptureError> {
        match &mut self.output {
            CaptureOutput::Pcapng(w) => {
                let id = match iface.pcapng_id {
                    Some(id) => id,
                    None => {
                        let name = packet::interface_name(&iface.node, &iface.netns, &iface.ifname);
                        let id = w.interface_id(&iface.node, &name)?;
                        iface.pcapng_id = Some(id);
                        id
                    }
                };
                w.write_block(id, pkt.ts_ns, pkt.data, pkt.orig_len, pkt.dir, pkt.drop)?;
            }
            CaptureOutput::Text { out, opts } => {
                writeln!(out, "{}", format_packet(&pkt.to_owned(iface), opts))?;
            }
            CaptureOutput::Packets(out) => {
                let id = *iface
                    .pcapng_id
                    .get_or_insert_with(|| out.interface(&iface.node, &iface.netns, &iface.ifname));
                out.packet(id, pkt);
            }
        }
        self.count(pkt.drop.is_some());
        Ok(())
    }

    /// Writes a run of `packets` kernel pcapng records as they lie in the ring buffer
    /// ([`PcapngWriter::write_kernel_records`]); the kernel filtered them already. An error
    /// for text output, which has no such records.
    pub fn write_kernel_records(&mut self, run: &[u8], packets: u64) -> Result<(), CaptureError> {
        match &mut self.output {
            CaptureOutput::Pcapng(w) => w.write_kernel_records(run)?,
            CaptureOutput::Text { .. } | CaptureOutput::Packets(_) => {
                return Err(CaptureError::BadFile(
                    "kernel pcapng records for text or packet output".into(),
                ))
            }
        }
        self.stats.captured += packets;
        Ok(())
    }

    fn count(&mut self, dropped: bool) {
        self.stats.captured += 1;
        if dropped {
            self.stats.dropped_by_kernel += 1;
        }
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        match &mut self.output {
            CaptureOutput::Pcapng(w) => w.flush()?,
            CaptureOutput::Text { out, .. } => out.flush()?,
            CaptureOutput::Packets(out) => out.flush()?,
        }
        Ok(())
    }

    /// Records packets the tracer lost before they reached userspace.
    pub fn add_lost(&mut self, n: u64) {
        self.stats.lost_by_tracer += n;
    }

    /// The userspace filter, e.g. to read its [`PacketFilter::kernel_hint`].
    pub fn filter(&self) -> Option<&PacketFilter> {
        self.filter.as_ref()
    }

    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// Flushes and returns the output and the final counters.
    pub fn finish(mut self) -> Result<(CaptureOutput<W>, CaptureStats), CaptureError> {
        self.flush()?;
        Ok((self.output, self.stats))
    }
}
