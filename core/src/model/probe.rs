//! Probes: what the trace sends from the source's namespace, and what came back.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{endpoint::Place, family::Family};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum ProbeKind {
    /// ICMP / ICMPv6 echo request.
    Icmp,
    /// TCP SYN to this port (a connect that is never completed beyond the handshake).
    Tcp { port: u16 },
    /// One UDP datagram to this port.
    Udp { port: u16 },
}

impl ProbeKind {
    pub fn describe(&self, family: Family) -> String {
        match self {
            ProbeKind::Icmp if family == Family::Ipv6 => "ICMPv6 echo".into(),
            ProbeKind::Icmp => "ICMP echo".into(),
            ProbeKind::Tcp { port } => format!("TCP SYN to port {port}"),
            ProbeKind::Udp { port } => format!("UDP to port {port}"),
        }
    }

    /// The answer a destination gives when the probe arrives.
    pub fn expected_reply(&self) -> Reply {
        match self {
            ProbeKind::Icmp => Reply::EchoReply,
            ProbeKind::Tcp { .. } => Reply::SynAck,
            ProbeKind::Udp { .. } => Reply::Datagram,
        }
    }
}

/// One probe to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Where to send it from.
    pub from: Place,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub kind: ProbeKind,
    /// ICMP echo identifier and sequence number (how the tracer recognises the packets).
    pub echo_id: u16,
    pub echo_seq: u16,
    /// Source port of TCP/UDP probes, chosen up front so the tracer can recognise the packets
    /// (and a drop can end the wait) before the socket returns.
    pub sport: u16,
    /// Payload bytes of ICMP and UDP probes (MTU problems need big ones). Sent with
    /// "don't fragment", so a too-small link answers instead of splitting the probe.
    pub size: usize,
}

/// What the source socket got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    EchoReply,
    /// The handshake completed: SYN-ACK.
    SynAck,
    /// Connection refused: a TCP reset, or ICMP port unreachable for UDP.
    Refused,
    /// A UDP answer.
    Datagram,
    /// An ICMP error about the probe (echo probes: from `from`), or the errno a socket turned
    /// one into (`EHOSTUNREACH`, ...).
    Error {
        what: String,
        from: Option<IpAddr>,
    },
}

impl Reply {
    /// The destination (or whoever answered for it) responded.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            Reply::EchoReply | Reply::SynAck | Reply::Refused | Reply::Datagram
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// The kernel refused to send (no route in the source namespace, ...).
    pub send_error: Option<String>,
    /// Local port of TCP/UDP probes (the tracer matches packets on it).
    pub sport: Option<u16>,
    pub reply: Option<Reply>,
    /// Round-trip time of the reply.
    pub rtt_us: Option<u64>,
}

/// What a name server answered for a name's A and AAAA records, asked as the source would ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameAnswer {
    /// The name that was answered (after the resolver's search domains).
    pub name: String,
    pub server: IpAddr,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...
    pub rcode: String,
    /// Every A and AAAA address in the answers.
    pub addrs: Vec<IpAddr>,
}

/// Is `s` a DNS name to look up (at least two labels, not an address, not a `kind:name` or
/// `kind/name` spec)? Single labels stay lab and Kubernetes names.
pub fn looks_like_a_dns_name(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.contains('.')
        && s.parse::<IpAddr>().is_err()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
        && s.chars().any(|c| c.is_ascii_alphabetic())
}
