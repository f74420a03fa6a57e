//! pcap-filter expressions (`tcpdump` syntax), compiled by libpcap, run in the kernel where
//! they can be and matched in userspace where they cannot.
//!
//! Split of work:
//! - **Kernel, complete**: libpcap's program, translated to eBPF ([`super::cbpf`]) and
//!   tail-called by the tc programs on devices with a link-layer header. It sees the whole
//!   packet, as tcpdump's socket filter does; packets it accepts are marked and not filtered
//!   again.
//! - **Kernel, coarse**: the [`KernelHint`] — address family, transport protocol, host/net
//!   prefixes and one port — when the whole expression is a plain `and` of such primitives.
//!   It is a superset of what the expression accepts and runs first, on the headers in place.
//! - **Userspace**: the full expression, run by libpcap's BPF interpreter on every packet the
//!   kernel did not filter completely: packets at drop points (`--drops`), on devices without
//!   a link-layer header, and all packets when the translation could not be loaded.
use std::{
    io::Write,
    net::IpAddr,
    os::raw::{c_uint, c_void},
};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap::{BpfInstruction, BpfProgram, Capture, Linktype, Offline};

use super::{
    pcapng::{FilePacket, LinkType},
    CaptureError,
};

/// Shown in `netpath capture --help`.
pub const FILTER_HELP: &str = "\
FILTER is a tcpdump/pcap-filter expression (man 7 pcap-filter), e.g. \
'host 10.244.1.2 and tcp port 80'. libpcap compiles it for Ethernet frames (with -r, for the \
file's link type, as tcpdump does). For packets at \
the tc hooks of devices with an Ethernet header, the complete expression runs in the kernel \
(libpcap's program translated to eBPF), on the whole packet, as tcpdump's socket filter does; \
only matching packets are copied to userspace. Packets taken at kernel drop points (--drops) \
and on devices without a link-layer header (tun, wireguard, ipip) are filtered in userspace \
by libpcap on the captured bytes. The start-up line says where the filter runs.";

// libpcap's BPF interpreter (pcap/bpf.h). `pcap` links libpcap but does not expose a way to
// pass the original length, which `len`/`greater`/`less` need.
extern "C" {
    fn bpf_filter(pc: *const c_void, pkt: *const u8, wirelen: c_uint, buflen: c_uint) -> c_uint;
}

/// A compiled pcap-filter expression.
pub struct PacketFilter {
    expr: String,
    program: BpfProgram,
    hint: Option<KernelHint>,
}

impl std::fmt::Debug for PacketFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketFilter")
            .field("expr", &self.expr)
            .field("hint", &self.hint)
            .finish()
    }
}

impl PacketFilter {
    /// Compiles `expr` for Ethernet frames (optimised, like tcpdump). An empty expression
    /// accepts everything.
    pub fn compile(expr: &str) -> Result<Self, CaptureError> {
        let dead = Capture::dead(Linktype::ETHERNET).map_err(|e| bad_filter(expr, e))?;
        let program = dead.compile(expr, true).map_err(|e| bad_filter(expr, e))?;
        Self::from_program(expr, program)
    }

    /// Compiles `expr` as tcpdump does for a capture file of link type `link`, written in
    /// the other byte order than this machine's when `foreign_order`. libpcap compiles some
    /// primitives differently for a file than for a live capture (`ip6` on NULL/LOOP checks
    /// every BSD's AF_INET6, a NULL header's family is in the file's byte order, `inbound`
    /// has nothing to read on Ethernet), so the program is compiled on a file handle: libpcap
    /// opens a pcap header of that link type from a pipe.
    pub fn compile_for_file(
        expr: &str,
        link: LinkType,
        foreign_order: bool,
    ) -> Result<Self, CaptureError> {
        let with_link = |message: String| CaptureError::Filter {
            expr: expr.to_string(),
            message: format!("{message} (link type {link})"),
        };
        let handle = file_handle(link, foreign_order).map_err(|e| with_link(e.to_string()))?;
        let program = handle
            .compile(expr, true)
            .map_err(|e| with_link(pcap_message(e)))?;
        Self::from_program(expr, program)
    }

    fn from_program(expr: &str, program: BpfProgram) -> Result<Self, CaptureError> {
        if program.get_instructions().is_empty() {
            return Err(CaptureError::Filter {
                expr: expr.to_string(),
                message: "libpcap produced an empty program".into(),
            });
        }
        Ok(PacketFilter {
            expr: expr.to_string(),
            program,
            hint: KernelHint::from_expression(expr),
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The compiled program, for the kernel to run (see [`super::cbpf`]).
    pub fn instructions(&self) -> Vec<super::cbpf::CbpfInsn> {
        super::cbpf::from_pcap(self.program.get_instructions())
    }

    /// What the kernel may pre-filter on, if anything.
    pub fn kernel_hint(&self) -> Option<&KernelHint> {
        self.hint.as_ref()
    }

    /// Whether the expression looks at VLAN tags (a `vlan` primitive). libpcap compiles
    /// them, for the Ethernet frames netpath filters, as reads of a tag inside the frame.
    pub fn reads_vlan_tags(&self) -> bool {
        self.expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == "vlan")
    }

    /// [`PacketFilter::matches`] for a live packet. `tag_put_back`: the device had moved the
    /// packet's VLAN tag out of the frame and netpath put it back in `data` (after the MAC
    /// addresses). On Linux, tcpdump's filter sees such a frame as the kernel hands it,
    /// without the tag, and answers `vlan` primitives from the tag's metadata: so an
    /// expression without `vlan` runs on the frame without the tag, one with `vlan` on the
    /// frame with it (where libpcap's program finds the tag).
    pub fn matches_live(&self, data: &[u8], orig_len: u32, tag_put_back: bool) -> bool {
        const MACS: usize = 12;
        const TAG: usize = 4;
        if !tag_put_back || self.reads_vlan_tags() || data.len() < MACS + TAG {
            return self.matches(data, orig_len);
        }
        let mut untagged = [0u8; tracer_common::SNAP_LEN + TAG];
        let n = data.len().min(untagged.len() + TAG) - TAG;
        untagged[..MACS].copy_from_slice(&data[..MACS]);
        untagged[MACS..n].copy_from_slice(&data[MACS + TAG..n + TAG]);
        self.matches(&untagged[..n], orig_len.saturating_sub(TAG as u32))
    }

    /// Runs the filter on `data` (the captured bytes, from the Ethernet header on) of a packet
    /// that was `orig_len` bytes long on the wire. As in tcpdump, loads past the captured
    /// bytes reject the packet and `len` refers to the original length.
    pub fn matches(&self, data: &[u8], orig_len: u32) -> bool {
        let insns: &[BpfInstruction] = self.program.get_instructions();
        let buflen = c_uint::try_from(data.len()).unwrap_or(c_uint::MAX);
        let wirelen = orig_len.max(buflen);
        // SAFETY: `insns` is a program libpcap compiled and validated, alive for the call;
        // BpfInstruction is a transparent wrapper of libpcap's `struct bpf_insn`. The
        // interpreter bounds-checks every load against `buflen`, which is at most data.len().
        unsafe { bpf_filter(insns.as_ptr().cast(), data.as_ptr(), wirelen, buflen) != 0 }
    }
}

fn bad_filter(expr: &str, e: pcap::Error) -> CaptureError {
    CaptureError::Filter {
        expr: expr.to_string(),
        message: pcap_message(e),
    }
}

/// A libpcap handle on a capture file that holds only a pcap header of link type `link`, in
/// this machine's byte order or the other: what libpcap compiles a file's filter against.
fn file_handle(link: LinkType, foreign_order: bool) -> std::io::Result<Capture<Offline>> {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    const PCAP_MAGIC: u32 = 0xA1B2_C3D4;
    let mut header = Vec::with_capacity(24);
    for (word, len) in [
        (PCAP_MAGIC, 4),
        (2, 2), // version 2.4
        (4, 2),
        (0, 4), // time zone
        (0, 4), // accuracy
        (262_144, 4),
        (u32::from(link.code()), 4),
    ] {
        let bytes = match (len, foreign_order == cfg!(target_endian = "little")) {
            (2, true) => (word as u16).to_be_bytes().to_vec(),
            (2, false) => (word as u16).to_le_bytes().to_vec(),
            (_, true) => word.to_be_bytes().to_vec(),
            (_, false) => word.to_le_bytes().to_vec(),
        };
        header.extend_from_slice(&bytes);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // 24 bytes fit in any pipe's buffer: written whole before anyone reads.
    std::fs::File::from(write).write_all(&header)?;
    // SAFETY: the handle takes the read end over (and closes it when dropped).
    unsafe { Capture::from_raw_fd(read.into_raw_fd()) }
        .map_err(|e| std::io::Error::other(pcap_message(e)))
}

/// A pcap-filter expression for the packets of a capture file, compiled once per link type
/// (and byte order) the file holds, when its first packet comes: pcapng gives each interface
/// its own link type, and libpcap's program depends on it.
pub struct FileFilter {
    expr: String,
    compiled: Vec<((LinkType, bool), Compiled)>,
}

enum Compiled {
    Program(PacketFilter),
    /// libpcap found that no packet of the link type can match (`icmp` on IPV6): its
    /// message.
    RejectsAll(String),
}

/// libpcap's message for an expression its optimiser reduced to "reject".
const REJECTS_ALL: &str = "rejects all packets";

impl FileFilter {
    /// Nothing is compiled yet: an expression may hold only for some link types.
    pub fn new(expr: &str) -> Self {
        FileFilter {
            expr: expr.to_string(),
            compiled: Vec::new(),
        }
    }

    fn compiled(&mut self, link: LinkType, foreign_order: bool) -> Result<&Compiled, CaptureError> {
        let key = (link, foreign_order);
        let i = match self.compiled.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let c = match PacketFilter::compile_for_file(&self.expr, link, foreign_order) {
                    Ok(f) => Compiled::Program(f),
                    Err(CaptureError::Filter { message, .. }) if message.contains(REJECTS_ALL) => {
                        Compiled::RejectsAll(message)
                    }
                    Err(e) => return Err(e),
                };
                self.compiled.push((key, c));
                self.compiled.len() - 1
            }
        };
        Ok(&self.compiled[i].1)
    }

    /// Compiles the expression for a file of one link type (a pcap file), before reading
    /// it: as in tcpdump, one that cannot match any of its packets is an error too.
    pub fn prepare(&mut self, link: LinkType, foreign_order: bool) -> Result<(), CaptureError> {
        let expr = self.expr.clone();
        match self.compiled(link, foreign_order)? {
            Compiled::Program(_) => Ok(()),
            Compiled::RejectsAll(message) => Err(CaptureError::Filter {
                expr,
                message: message.clone(),
            }),
        }
    }

    /// Runs the expression, compiled for the packet's link type, on it; an expression
    /// libpcap cannot compile for that link type is an error. One that no packet of the
    /// link type can match rejects them: in a pcapng file, other interfaces may have
    /// packets it matches.
    pub fn matches(&mut self, pkt: &FilePacket) -> Result<bool, CaptureError> {
        Ok(match self.compiled(pkt.link, pkt.foreign_order)? {
            Compiled::Program(f) => f.matches(&pkt.packet.data, pkt.packet.orig_len),
            Compiled::RejectsAll(_) => false,
        })
    }
}

fn pcap_message(e: pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(m) => m,
        other => other.to_string(),
    }
}

/// An address prefix: `addr/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    /// Network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length in bits (32 or 128 for a single host).
    pub prefix: u8,
}

impl IpPrefix {
    /// A prefix with host bits cleared; `None` if `prefix` is too long for the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(IpPrefix { addr, prefix })
    }

    /// True if `ip` is inside the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (ip, IpPrefix::new(ip, self.prefix)) {
            (_, Some(p)) => p.addr == self.addr,
            _ => false,
        }
    }
}

/// A coarse pre-filter the kernel may apply before copying a packet to userspace.
///
/// Contract (see [`KernelHint::admits`], the reference implementation): every field that is
/// set must hold, and the hint admits *at least* every packet the full expression accepts.
/// - Non-IP packets (ARP, ...) pass when `family` is `None`, and are dropped otherwise.
/// - `family`: IP version, 4 or 6.
/// - `proto`: upper-layer protocol number after IPv6 extension headers; a packet whose
///   protocol cannot be determined (headers not walked, truncated) must pass.
/// - `hosts`: each prefix must contain the source or the destination address.
/// - `port`: TCP/UDP source or destination port; packets where it cannot be read (SCTP,
///   fragments, truncated headers) must pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelHint {
    pub family: Option<u8>,
    pub proto: Option<u8>,
    pub hosts: Vec<IpPrefix>,
    pub port: Option<u16>,
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

impl KernelHint {
    /// Extracts a hint from a pcap-filter expression, or `None` when the expression is not a
    /// plain `and` of ip/ip6/tcp/udp/icmp/icmp6, host ADDR, net CIDR and port N (or constrains
    /// nothing).
    /// Unknown syntax yields `None`, never a narrower hint: dropping a conjunct only widens it.
    pub fn from_expression(expr: &str) -> Option<Self> {
        let mut hint = KernelHint::default();
        let mut toks = expr.split_whitespace().peekable();
        loop {
            // One primitive: [proto] [src|dst] [host ADDR | net CIDR | port N], or proto alone.
            let mut tok = toks.next()?;
            let proto_kw = match tok {
                "ip" => Some((Some(4), None)),
                "ip6" => Some((Some(6), None)),
                "tcp" => Some((None, Some(IPPROTO_TCP))),
                "udp" => Some((None, Some(IPPROTO_UDP))),
                "icmp" => Some((Some(4), Some(IPPROTO_ICMP))),
                "icmp6" => Some((Some(6), Some(IPPROTO_ICMPV6))),
                _ => None,
            };
            if let Some((family, proto)) = proto_kw {
                hint.family = hint.family.or(family);
                hint.proto = hint.proto.or(proto);
                match toks.peek() {
                    None | Some(&"and") | Some(&"&&") => tok = "",
                    Some(_) => tok = toks.next()?,
                }
            }
            if matches!(tok, "src" | "dst") {
                tok = toks.next()?;
                if !matches!(tok, "host" | "net" | "port") {
                    return None;
                }
            }
            match tok {
                "" => {}
                "host" => {
                    let addr: IpAddr = toks.next()?.parse().ok()?;
                    let bits = if addr.is_ipv4() { 32 } else { 128 };
                    hint.hosts.push(IpPrefix::new(addr, bits)?);
                }
                "net" => {
                    let value = toks.next()?;
                    let (addr, bits) = match value.split_once('/') {
                        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
                        None => {
                            let a: IpAddr = value.parse().ok()?;
                            (a, if a.is_ipv4() { 32 } else { 128 })
                        }
                    };
                    hint.hosts.push(IpPrefix::new(addr, bits)?);
                }
                "port" => {
                    let port: u16 = toks.next()?.parse().ok()?;
                    hint.port = hint.port.or(Some(port));
                }
                _ => return None,
            }
            match toks.next() {
                None => break,
                Some("and" | "&&") => continue,
                Some(_) => return None,
            }
        }
        (hint != KernelHint::default()).then_some(hint)
    }

    /// Reference semantics of the hint over an Ethernet frame: false only when the packet
    /// certainly fails one of the set fields.
    pub fn admits(&self, frame: &[u8]) -> bool {
        let Ok(pkt) = LaxSlicedPacket::from_ethernet(frame) else {
            return true;
        };
        let (src, dst, payload, stopped_in_ip) = match &pkt.net {
            Some(LaxNetSlice::Ipv4(ip)) => {
                let h = ip.header();
                (
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                    ip.payload(),
                    false,
                )
            }
            Some(LaxNetSlice::Ipv6(ip)) => {
                let h = ip.header();
                let stopped = pkt.stop_err.is_some() && pkt.transport.is_none();
                (
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                    ip.payload(),
                    stopped,
                )
            }
            _ => return self.family.is_none(),
        };
        let version = if src.is_ipv4() { 4 } else { 6 };
        if self.family.is_some_and(|f| f != version) {
            return false;
        }
        if !self
            .hosts
            .iter()
            .all(|h| h.contains(src) || h.contains(dst))
        {
            return false;
        }
        let upper = payload.ip_number.0;
        let unknown = stopped_in_ip || payload.fragmented;
        if self.proto.is_some_and(|p| p != upper) && !unknown {
            return false;
        }
        if let Some(port) = self.port {
            return match &pkt.transport {
                Some(TransportSlice::Tcp(t)) => {
                    t.source_port() == port || t.destination_port() == port
                }
                Some(TransportSlice::Udp(u)) => {
                    u.source_port() == port || u.destination_port() == port
                }
                _ => unknown || matches!(upper, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP),
            };
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        let (a, b) = s.split_once('/').unwrap();
        IpPrefix::new(a.parse().unwrap(), b.parse().unwrap()).unwrap()
    }

    #[test]
    fn hint_from_simple_conjunctions() {
        let h = KernelHint::from_expression("ip and tcp and host 10.244.1.2 and port 80").unwrap();
        assert_eq!(
            h,
            KernelHint {
                family: Some(4),
                proto: Some(6),
                hosts: vec![p("10.244.1.2/32")],
                port: Some(80)
            }
        );
        let h = KernelHint::from_expression("icmp6").unwrap();
        assert_eq!((h.family, h.proto), (Some(6), Some(58)));
        let h = KernelHint::from_expression("net 10.244.7.9/16 && udp dst port 53").unwrap();
        assert_eq!(h.hosts, vec![p("10.244.0.0/16")]);
        assert_eq!((h.proto, h.port), (Some(17), Some(53)));
        let h = KernelHint::from_expression("ip6 host fd00::1").unwrap();
        assert_eq!(
            (h.family, h.hosts.clone()),
            (Some(6), vec![p("fd00::1/128")])
        );
        let h = KernelHint::from_expression("tcp src port 443 and src net 10.0.0.0/8").unwrap();
        assert_eq!((h.proto, h.port, h.hosts.len()), (Some(6), Some(443), 1));
    }

    #[test]
    fn no_hint_for_anything_else() {
        for expr in [
            "",
            "not host 10.0.0.1",
            "host 10.0.0.1 or host 10.0.0.2",
            "udp or icmp",
            "(tcp)",
            "! tcp",
            "tcp[tcpflags] & tcp-syn != 0",
            "vlan",
            "host example.com",
            "port http",
            "host 10.0.0.1 and 10.0.0.2",
            "ether host 00:11:22:33:44:55",
            "tcp and not port 22",
            "greater 100",
            "net 10.0.0.0/40",
            "src and dst host 10.0.0.1",
        ] {
            assert_eq!(KernelHint::from_expression(expr), None, "{expr}");
        }
    }

    #[test]
    fn prefix_contains() {
        assert!(p("10.244.0.0/16").contains("10.244.3.4".parse().unwrap()));
        assert!(!p("10.244.0.0/16").contains("10.245.0.1".parse().unwrap()));
        assert!(!p("10.244.0.0/16").contains("::1".parse().unwrap()));
        assert!(p("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(p("fd00::/8").contains("fd12::1".parse().unwrap()));
    }

    #[test]
    fn bad_expression_is_one_line_with_libpcap_message() {
        let err = PacketFilter::compile("tcp and bogus")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert_eq!(
            err,
            "invalid capture filter 'tcp and bogus': syntax error in filter expression"
        );
        let err = PacketFilter::compile("port 99999").unwrap_err().to_string();
        assert!(err.contains("99999"), "{err}");
    }

    #[test]
    fn matches_uses_original_length_and_caplen() {
        let f = PacketFilter::compile("greater 1000").unwrap();
        let frame = [0u8; 60];
        assert!(f.matches(&frame, 1500), "len is the original length");
        assert!(!f.matches(&frame, 60));
        // A load past the captured bytes rejects, as tcpdump does on truncated packets.
        let f = PacketFilter::compile("ether[100] = 0").unwrap();
        assert!(!f.matches(&frame, 1500));
        assert!(PacketFilter::compile("").unwrap().matches(&[], 0));
    }

    /// A UDP/IPv4 frame to 10.0.0.2:9999, with an 802.1Q tag (VLAN 100) after the MACs when
    /// `tagged`.
    fn udp_frame(tagged: bool) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        if tagged {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
            0x30, 0x39, 0x27, 0x0f, 0, 10, 0, 0, b'h', b'i', // UDP 12345 -> 9999
        ]);
        f
    }

    #[test]
    fn tag_offloaded_frames_are_filtered_as_tcpdump_sees_them() {
        let tagged = udp_frame(true);
        let len = tagged.len() as u32;
        let udp = PacketFilter::compile("udp port 9999").unwrap();
        assert!(!udp.reads_vlan_tags());
        // The tag netpath put back would hide the UDP packet from `udp`...
        assert!(!udp.matches(&tagged, len));
        // ...but tcpdump on Linux filters the frame the kernel hands it, without the tag.
        assert!(udp.matches_live(&tagged, len, true));
        // A tag that was in the frame on the wire (not put back) stays: `udp` misses it, as
        // in tcpdump.
        assert!(!udp.matches_live(&tagged, len, false));
        // `vlan` primitives see the tag.
        for expr in ["vlan and udp", "vlan 100 and udp port 9999", "vlan or tcp"] {
            let f = PacketFilter::compile(expr).unwrap();
            assert!(f.reads_vlan_tags(), "{expr}");
            assert!(f.matches_live(&tagged, len, true), "{expr}");
        }
        let not_vlan = PacketFilter::compile("not vlan").unwrap();
        assert!(!not_vlan.matches_live(&tagged, len, true));
        assert!(not_vlan.matches_live(&udp_frame(false), len - 4, false));
        // A word containing "vlan" is not the primitive.
        assert!(!PacketFilter::compile("ether host 02:00:00:00:00:02")
            .unwrap()
            .reads_vlan_tags());
    }

    /// An ICMP echo request from 10.0.0.1 to 10.0.0.2, IP header on.
    fn ip_echo() -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut v, &[0; 8])
            .unwrap();
        v
    }

    fn ip6_udp() -> Vec<u8> {
        let mut v = Vec::new();
        let (a, b) = ([0xfd; 16], [0xfe; 16]);
        etherparse::PacketBuilder::ipv6(a, b, 64)
            .udp(5353, 9999)
            .write(&mut v, b"abcd")
            .unwrap();
        v
    }

    fn file_packet(link: LinkType, foreign_order: bool, data: Vec<u8>) -> FilePacket {
        FilePacket {
            link,
            fcs_len: None,
            foreign_order,
            packet: super::super::CapturedPacket {
                ts_ns: 0,
                node: String::new(),
                netns: String::new(),
                ifname: String::new(),
                dir: None,
                orig_len: data.len() as u32,
                data: data.into(),
                drop: None,
            },
        }
    }

    /// Which of `packets` `expr` selects, by index.
    fn selected(expr: &str, packets: &[FilePacket]) -> Vec<usize> {
        let mut f = FileFilter::new(expr);
        (0..packets.len())
            .filter(|i| f.matches(&packets[*i]).unwrap())
            .collect()
    }

    #[test]
    fn file_filters_are_compiled_for_each_link_type() {
        let cooked_v1 = |pkttype: u8, proto: u16| {
            let mut h = vec![0, pkttype, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
            h.extend_from_slice(&proto.to_be_bytes());
            h
        };
        let cooked_v2 = |pkttype: u8, proto: u16| {
            let mut h = proto.to_be_bytes().to_vec();
            h.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, pkttype, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            h
        };
        let eth = |et: [u8; 2]| [vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], et.to_vec()].concat();
        let packets = [
            file_packet(LinkType::Raw, false, ip_echo()),
            file_packet(LinkType::Raw, false, ip6_udp()),
            file_packet(LinkType::Ipv4, false, ip_echo()),
            file_packet(LinkType::Ipv6, false, ip6_udp()),
            file_packet(
                LinkType::LinuxSll,
                false,
                [cooked_v1(0, 0x0800), ip_echo()].concat(),
            ),
            file_packet(
                LinkType::LinuxSll,
                false,
                [cooked_v1(4, 0x86dd), ip6_udp()].concat(),
            ),
            file_packet(
                LinkType::LinuxSll2,
                false,
                [cooked_v2(0, 0x0800), ip_echo()].concat(),
            ),
            file_packet(
                LinkType::LinuxSll2,
                false,
                [cooked_v2(4, 0x86dd), ip6_udp()].concat(),
            ),
            file_packet(
                LinkType::Loop,
                false,
                [vec![0, 0, 0, 2], ip_echo()].concat(),
            ),
            file_packet(
                LinkType::Loop,
                false,
                [vec![0, 0, 0, 28], ip6_udp()].concat(),
            ),
            file_packet(LinkType::Ethernet, false, [eth([8, 0]), ip_echo()].concat()),
        ];
        let v4 = vec![0, 2, 4, 6, 8, 10];
        assert_eq!(selected("host 10.0.0.2", &packets), v4);
        assert_eq!(selected("ip", &packets), v4);
        assert_eq!(selected("ip6 and udp port 9999", &packets), [1, 3, 5, 7, 9]);
        // Cooked headers hold the direction; SLL2 the interface index too.
        assert_eq!(selected("inbound", &packets[4..8]), [0, 2]);
        assert_eq!(selected("outbound and ip6", &packets[4..8]), [1, 3]);
        assert_eq!(selected("ifindex 3", &packets[6..8]), [0, 1]);
        // One program per link type, compiled when its first packet comes.
        let mut f = FileFilter::new("udp or icmp");
        for p in &packets {
            f.matches(p).unwrap();
        }
        assert_eq!(f.compiled.len(), 7);
        // As in tcpdump, an expression no packet of the link type can match is an error for
        // a pcap file; in pcapng it selects none of that interface's packets.
        let err = FileFilter::new("icmp")
            .prepare(LinkType::Ipv6, false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("rejects all packets (link type IPV6)"),
            "{err}"
        );
        assert!(!FileFilter::new("icmp").matches(&packets[3]).unwrap());
    }

    #[test]
    fn null_headers_are_filtered_in_the_file_byte_order_with_every_bsd_inet6() {
        let ne = |af: u32, ip: Vec<u8>| [af.to_ne_bytes().to_vec(), ip].concat();
        let swapped = |af: u32, ip: Vec<u8>| [af.swap_bytes().to_ne_bytes().to_vec(), ip].concat();
        let mine = [
            file_packet(LinkType::Null, false, ne(2, ip_echo())),
            file_packet(LinkType::Null, false, ne(24, ip6_udp())),
            file_packet(LinkType::Null, false, ne(28, ip6_udp())),
            file_packet(LinkType::Null, false, ne(30, ip6_udp())),
            // Linux's AF_INET6 is not a BSD's: tcpdump's filter for a file does not take it.
            file_packet(LinkType::Null, false, ne(10, ip6_udp())),
        ];
        assert_eq!(selected("ip", &mine), [0]);
        assert_eq!(selected("ip6", &mine), [1, 2, 3]);
        let foreign = [
            file_packet(LinkType::Null, true, swapped(2, ip_echo())),
            file_packet(LinkType::Null, true, swapped(30, ip6_udp())),
            file_packet(LinkType::Null, true, ne(2, ip_echo())),
        ];
        assert_eq!(selected("ip", &foreign), [0]);
        assert_eq!(selected("ip6", &foreign), [1]);
    }

    #[test]
    fn what_a_file_cannot_hold_is_refused_naming_the_link_type() {
        let refused = |expr: &str, link: LinkType| {
            let mut f = FileFilter::new(expr);
            f.prepare(link, false).unwrap_err().to_string()
        };
        let err = refused("inbound", LinkType::Ethernet);
        assert!(
            err.contains("savefiles") && err.ends_with("(link type EN10MB)"),
            "{err}"
        );
        let err = refused("ether host 02:00:00:00:00:01", LinkType::Raw);
        assert!(
            err.ends_with("(link type RAW)") && !err.contains('\n'),
            "{err}"
        );
        // The live path still compiles for Ethernet, where `inbound` is the socket's.
        assert!(PacketFilter::compile("inbound").is_ok());
    }
}
