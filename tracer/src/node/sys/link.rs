//! Links (RTM_GETLINK) and their addresses (RTM_GETADDR), as `ip -j link` / `ip -j addr` list
//! them.
use std::net::IpAddr;

use netlink_packet_core::{Emitable, Parseable};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkInfo, LinkMessage, State},
    AddressFamily,
};

use super::{Netlink, SysError};
use crate::node::netns::NetnsRef;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;

/// A network device of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    /// `veth`, `bridge`, `vxlan`, ... (IFLA_INFO_KIND); None for physical devices and lo.
    pub kind: Option<String>,
    /// `UP`, `DOWN`, `UNKNOWN`, `LOWERLAYERDOWN`, ... as `ip` prints it.
    pub operstate: String,
    /// ARPHRD_* type (1 Ethernet, 772 loopback, 65534 none).
    pub link_type: u16,
    /// The id, in this namespace, of the namespace the other end lives in (veth peer, tunnel
    /// underlay), when that is another namespace.
    pub link_netnsid: Option<i32>,
    /// Packet counters (IFLA_STATS64): received, and dropped or in error on receive, dropped
    /// on transmit.
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_dropped: u64,
}

/// An address configured on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub dev: String,
    pub index: u32,
    /// IFA_LOCAL (IFA_ADDRESS when absent), what `ip` shows as `local`.
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `global`, `link`, `host`, `site`, `nowhere` or a number.
    pub scope: String,
    /// IFA_F_DADFAILED: duplicate address detection failed, the address is never used.
    pub dad_failed: bool,
}

/// Every link of `ns`, in the kernel's order.
pub fn links(ns: &NetnsRef) -> Result<Vec<Link>, SysError> {
    dump_links(&mut Netlink::route(ns)?)
}

/// The link of `ns` named `name` (`ip link show dev NAME`), None when there is none.
pub fn link(ns: &NetnsRef, name: &str) -> Result<Option<Link>, SysError> {
    link_by_name(&mut Netlink::route(ns)?, name)
}

pub(crate) fn dump_links(nl: &mut Netlink) -> Result<Vec<Link>, SysError> {
    let req = LinkMessage::default();
    nl.request(RTM_GETLINK, true, &emit(&req))?
        .iter()
        .filter(|r| r.kind == RTM_NEWLINK)
        .map(|r| parse_link(&r.payload))
        .collect()
}

/// The link with this ifindex, None when there is none.
pub(crate) fn link_by_index(nl: &mut Netlink, index: u32) -> Result<Option<Link>, SysError> {
    let mut req = LinkMessage::default();
    req.header.index = index;
    one_link(nl, &req)
}

/// The link with this name, None when there is none.
pub(crate) fn link_by_name(nl: &mut Netlink, name: &str) -> Result<Option<Link>, SysError> {
    let mut req = LinkMessage::default();
    req.attributes.push(LinkAttribute::IfName(name.into()));
    one_link(nl, &req)
}

fn one_link(nl: &mut Netlink, req: &LinkMessage) -> Result<Option<Link>, SysError> {
    match nl.request(RTM_GETLINK, false, &emit(req)) {
        Ok(replies) => replies
            .iter()
            .find(|r| r.kind == RTM_NEWLINK)
            .map(|r| parse_link(&r.payload))
            .transpose(),
        Err(SysError::Kernel(libc::ENODEV)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn emit<T: Emitable>(msg: &T) -> Vec<u8> {
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

/// An RTM_NEWLINK payload as a [`Link`].
pub fn parse_link(payload: &[u8]) -> Result<Link, SysError> {
    let msg = LinkMessage::parse(payload).map_err(|e| SysError::Decode(e.to_string()))?;
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: None,
        kind: None,
        operstate: "UNKNOWN".into(),
        link_type: u16::from(msg.header.link_layer_type),
        link_netnsid: None,
        rx_packets: 0,
        rx_dropped: 0,
        rx_errors: 0,
        tx_dropped: 0,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = Some(*m),
            LinkAttribute::OperState(s) => link.operstate = operstate_name(*s),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
            LinkAttribute::Stats64(st) => {
                (
                    link.rx_packets,
                    link.rx_dropped,
                    link.rx_errors,
                    link.tx_dropped,
                ) = (st.rx_packets, st.rx_dropped, st.rx_errors, st.tx_dropped)
            }
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    Ok(link)
}

fn operstate_name(s: State) -> String {
    match s {
        State::Unknown => "UNKNOWN",
        State::NotPresent => "NOTPRESENT",
        State::Down => "DOWN",
        State::LowerLayerDown => "LOWERLAYERDOWN",
        State::Testing => "TESTING",
        State::Dormant => "DORMANT",
        State::Up => "UP",
        _ => return format!("{}", u8::from(s)),
    }
    .to_string()
}

/// Every address of `ns`, grouped by link in link order (v4 before v6 within a link), as
/// `ip -j addr show` lists them; loopback and link-local included.
pub fn addresses(ns: &NetnsRef) -> Result<Vec<Address>, SysError> {
    let mut nl = Netlink::route(ns)?;
    let links = dump_links(&mut nl)?;
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Unspec;
    let mut out = Vec::new();
    for reply in nl.request(RTM_GETADDR, true, &emit(&req))? {
        if reply.kind != RTM_NEWADDR {
            continue;
        }
        let Some(mut a) = parse_address(&reply.payload)? else {
            continue;
        };
        if let Some(l) = links.iter().find(|l| l.index == a.index) {
            a.dev = l.name.clone();
        }
        out.push(a);
    }
    let position = |a: &Address| links.iter().position(|l| l.index == a.index);
    out.sort_by_key(position);
    Ok(out)
}

/// An RTM_NEWADDR payload as an [`Address`] (its `dev` left empty: the caller names the
/// ifindex). None for an address without IFA_LOCAL or IFA_ADDRESS.
pub fn parse_address(payload: &[u8]) -> Result<Option<Address>, SysError> {
    let msg = AddressMessage::parse(payload).map_err(|e| SysError::Decode(e.to_string()))?;
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let Some(addr) = local.or(address) else {
        return Ok(None);
    };
    // The header holds the low 8 flag bits; IFA_FLAGS, when present, all 32.
    let dad_failed = msg.header.flags.contains(AddressHeaderFlags::Dadfailed)
        || msg.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Dadfailed)),
        );
    Ok(Some(Address {
        dev: String::new(),
        index: msg.header.index,
        addr,
        prefix_len: msg.header.prefix_len,
        scope: match msg.header.scope {
            AddressScope::Universe => "global".into(),
            AddressScope::Site => "site".into(),
            AddressScope::Link => "link".into(),
            AddressScope::Host => "host".into(),
            AddressScope::Nowhere => "nowhere".into(),
            other => u8::from(other).to_string(),
        },
        dad_failed,
    }))
}

/// RTMGRP_LINK: the multicast group of link announcements.
const RTMGRP_LINK: u32 = 1;
const RTM_DELLINK: u16 = 17;

/// A socket that hears the kernel announce devices created and removed in one namespace, so
/// that a long-running tracer attaches to a new pod's devices when they appear rather than
/// by rescanning on a timer.
pub struct LinkEvents {
    sock: netlink_sys::Socket,
}

impl LinkEvents {
    /// Subscribes in `ns`; [`LinkEvents::wait`] then returns after at most `tick`, so that
    /// its reader can notice it should stop.
    pub fn open(ns: &NetnsRef, tick: std::time::Duration) -> Result<Self, SysError> {
        let sock = ns
            .run(move || -> std::io::Result<netlink_sys::Socket> {
                let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
                sock.bind(&netlink_sys::SocketAddr::new(0, RTMGRP_LINK))?;
                let tv = libc::timeval {
                    tv_sec: tick.as_secs() as libc::time_t,
                    tv_usec: tick.subsec_micros() as libc::suseconds_t,
                };
                // SAFETY: a valid fd and a timeval of the size given.
                let rc = unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&sock),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                    )
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(sock)
            })?
            .map_err(|source| SysError::Socket {
                netns: ns.to_string(),
                source,
            })?;
        Ok(LinkEvents { sock })
    }

    /// Waits for announcements: `Ok(true)` when a device was created or removed, `Ok(false)`
    /// when the tick passed or only a change of an existing device came.
    pub fn wait(&mut self) -> std::io::Result<bool> {
        match self.sock.recv_from_full() {
            Ok((buf, _)) => Ok(super::split(&buf)
                .map(|msgs| {
                    msgs.iter()
                        .any(|(h, _)| h.kind == RTM_NEWLINK || h.kind == RTM_DELLINK)
                })
                .unwrap_or(true)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_addresses_decode_from_kernel_bytes() {
        // RTM_NEWLINK of a veth laid out as the kernel sends it (ifinfomsg, then IFLA_IFNAME,
        // IFLA_MTU, IFLA_OPERSTATE, IFLA_LINKINFO{IFLA_INFO_KIND}, IFLA_LINK_NETNSID).
        let mut b = vec![0u8, 0, 1, 0, 7, 0, 0, 0, 0x43, 0x10, 0x01, 0, 0, 0, 0, 0];
        super::super::push_attr(&mut b, 3, b"va\0");
        super::super::push_attr(&mut b, 4, &1500u32.to_ne_bytes());
        super::super::push_attr(&mut b, 16, &[6]);
        let mut kind = Vec::new();
        super::super::push_attr(&mut kind, 1, b"veth\0");
        super::super::push_attr(&mut b, 0x8000 | 18, &kind);
        super::super::push_attr(&mut b, 37, &0i32.to_ne_bytes());
        let link = parse_link(&b).unwrap();
        assert_eq!(
            link,
            Link {
                index: 7,
                name: "va".into(),
                mtu: Some(1500),
                kind: Some("veth".into()),
                operstate: "UP".into(),
                link_type: 1,
                link_netnsid: Some(0),
                rx_packets: 0,
                rx_dropped: 0,
                rx_errors: 0,
                tx_dropped: 0,
            }
        );

        // RTM_NEWADDR: fd00:1::1/64 scope global on ifindex 7.
        let mut a = vec![10u8, 64, 0x80, 0, 7, 0, 0, 0];
        super::super::push_attr(
            &mut a,
            1,
            &"fd00:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        );
        let addr = parse_address(&a).unwrap().unwrap();
        assert_eq!(
            (
                addr.addr.to_string(),
                addr.prefix_len,
                addr.index,
                addr.scope.as_str()
            ),
            ("fd00:1::1".into(), 64, 7, "global")
        );
        assert!(!addr.dad_failed);
        // The same with IFA_F_DADFAILED in the header, then in IFA_FLAGS (8 = IFA_FLAGS).
        let mut failed = a.clone();
        failed[2] = 0x80 | 0x08;
        assert!(parse_address(&failed).unwrap().unwrap().dad_failed);
        let mut failed = a.clone();
        super::super::push_attr(&mut failed, 8, &0x48u32.to_ne_bytes());
        assert!(parse_address(&failed).unwrap().unwrap().dad_failed);
        // IPv4: IFA_LOCAL wins over IFA_ADDRESS (the peer of a point-to-point address).
        let mut v4 = vec![2u8, 32, 0, 253, 3, 0, 0, 0];
        super::super::push_attr(&mut v4, 1, &[10, 9, 9, 9]);
        super::super::push_attr(&mut v4, 2, &[10, 1, 0, 1]);
        let addr = parse_address(&v4).unwrap().unwrap();
        assert_eq!(
            (addr.addr.to_string(), addr.scope.as_str()),
            ("10.1.0.1".into(), "link")
        );
        assert_eq!(parse_address(&[2u8, 32, 0, 0, 3, 0, 0, 0]).unwrap(), None);
    }
}
