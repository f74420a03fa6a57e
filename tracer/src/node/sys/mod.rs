//! What a namespace's kernel says about itself, asked without running a program: routes,
//! links, addresses, neighbours and peer namespaces over rtnetlink, nftables rules over
//! nfnetlink, sysctls from /proc/sys. Every function takes a [`NetnsRef`], so a namespace
//! known only by a process (/proc/PID/ns/net) is as reachable as a named one.
//!
//! Sockets are opened on a short-lived thread inside the namespace ([`NetnsRef::run`]) and then
//! used from the caller's thread: a netlink socket answers for the namespace it was made in.
use std::io;

use crate::node::netns::{NetnsError, NetnsRef};

mod link;
mod neigh;
mod nft;
mod nsid;
mod route;
mod sysctl;
pub mod tc;

pub use link::{addresses, link, links, parse_address, parse_link, Address, Link, LinkEvents};
pub(crate) use link::{dump_links, link_by_index, link_by_name};
pub use neigh::{neighbour_state, neighbours, nud_state_names, Neighbour};
pub use nft::{decode_rule, drop_rules, Discard, DropRule, NftChain, NftRule};
pub use nsid::{peers, Peer};
pub use route::{route_fib_match, route_get, routes, MatchedRoute};
pub use sysctl::{forwarding, ipv6_disabled_devices, read_sysctl};

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("netlink socket in {netns}: {source}")]
    Socket { netns: String, source: io::Error },
    /// The kernel refused the request (an NLMSG_ERROR with this errno).
    #[error("{}", strerror(*.0))]
    Kernel(i32),
    #[error("malformed netlink answer: {0}")]
    Decode(String),
    #[error("reading {path} in {netns}: {source}")]
    Sysctl {
        netns: String,
        path: String,
        source: io::Error,
    },
}

/// The C library's text for an errno (`Network is unreachable`), without Rust's
/// ` (os error N)` suffix: the words `ip` prints after `RTNETLINK answers:`.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;

/// One netlink message of an answer: its type and the bytes after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// A netlink socket opened inside a namespace.
pub(crate) struct Netlink {
    sock: netlink_sys::Socket,
    seq: u32,
    netns: String,
}

impl Netlink {
    /// Opens a socket of `protocol` (NETLINK_ROUTE, NETLINK_NETFILTER) inside `ns`.
    pub fn open(ns: &NetnsRef, protocol: isize) -> Result<Self, SysError> {
        let sock = ns
            .run(move || -> io::Result<netlink_sys::Socket> {
                let mut sock = netlink_sys::Socket::new(protocol)?;
                sock.bind_auto()?;
                Ok(sock)
            })?
            .map_err(|source| SysError::Socket {
                netns: ns.to_string(),
                source,
            })?;
        Ok(Self {
            sock,
            seq: 0,
            netns: ns.to_string(),
        })
    }

    pub fn route(ns: &NetnsRef) -> Result<Self, SysError> {
        Self::open(ns, netlink_sys::protocols::NETLINK_ROUTE)
    }

    /// Sends one request and collects its answer: every message of a dump up to NLMSG_DONE,
    /// or the single answer to a plain request. An NLMSG_ERROR with a non-zero code is
    /// [`SysError::Kernel`].
    pub fn request(&mut self, kind: u16, dump: bool, body: &[u8]) -> Result<Vec<Reply>, SysError> {
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        self.exchange(kind, flags, dump, body)
    }

    /// Sends a request that changes something (a delete) and waits for the kernel's
    /// acknowledgement: Ok, or [`SysError::Kernel`] with its errno.
    pub fn request_ack(&mut self, kind: u16, body: &[u8]) -> Result<(), SysError> {
        self.exchange(kind, NLM_F_REQUEST | NLM_F_ACK, false, body)
            .map(|_| ())
    }

    fn exchange(
        &mut self,
        kind: u16,
        flags: u16,
        dump: bool,
        body: &[u8],
    ) -> Result<Vec<Reply>, SysError> {
        self.seq = self.seq.wrapping_add(1);
        let msg = frame(kind, flags, self.seq, body);
        self.sock.send(&msg, 0).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full().map_err(|e| self.io(e))?;
            for (header, payload) in split(&buf)? {
                if header.seq != self.seq {
                    continue;
                }
                match header.kind {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .unwrap_or(0);
                        if code < 0 {
                            return Err(SysError::Kernel(-code));
                        }
                        return Ok(out);
                    }
                    kind => {
                        out.push(Reply {
                            kind,
                            payload: payload.to_vec(),
                        });
                        if !dump {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    fn io(&self, source: io::Error) -> SysError {
        SysError::Socket {
            netns: self.netns.clone(),
            source,
        }
    }
}

/// A netlink message: header (length, type, flags, sequence, port 0) and body.
fn frame(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    msg
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    kind: u16,
    seq: u32,
}

/// The messages of one datagram (each padded to 4 bytes).
fn split(buf: &[u8]) -> Result<Vec<(Header, &[u8])>, SysError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(SysError::Decode(format!(
                "message of {len} bytes at offset {off} of {}",
                buf.len()
            )));
        }
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes"));
        out.push((Header { kind, seq }, &buf[off + NLMSG_HDRLEN..off + len]));
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// Netlink attributes (type, value) of a buffer: the NLA_F_NESTED and NLA_F_NET_BYTEORDER
/// flags are cleared from the type; a truncated attribute ends the walk.
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let value = &buf[off + 4..off + len];
        off += (len + 3) & !3;
        Some((kind, value))
    })
}

/// Appends one attribute (padded to 4 bytes).
pub(crate) fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize((buf.len() + 3) & !3, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_is_what_ip_prints() {
        assert_eq!(strerror(libc::ENETUNREACH), "Network is unreachable");
        assert_eq!(strerror(libc::EHOSTUNREACH), "No route to host");
        assert_eq!(
            SysError::Kernel(libc::EACCES).to_string(),
            "Permission denied"
        );
    }

    #[test]
    fn messages_and_attributes_are_split() {
        let mut body = vec![1, 2, 3, 4];
        push_attr(&mut body, 3, b"eth0\0");
        push_attr(&mut body, 0x8000 | 7, &[9; 4]);
        let mut buf = frame(24, 2, 7, &body);
        buf.extend(frame(NLMSG_DONE, 2, 7, &0i32.to_ne_bytes()));
        let msgs = split(&buf).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].0, Header { kind: 24, seq: 7 });
        let a: Vec<_> = attrs(&msgs[0].1[4..]).collect();
        assert_eq!(a, [(3, &b"eth0\0"[..]), (7, &[9u8; 4][..])]);
        assert_eq!(msgs[1].0.kind, NLMSG_DONE);
        // A length that runs past the buffer is an error, not a panic.
        let mut bad = frame(24, 0, 1, &[0; 8]);
        bad[0] = 200;
        assert!(split(&bad).is_err());
        assert_eq!(attrs(&[8, 0, 1, 0, 1]).count(), 0);
    }
}
