//! tc filters on clsact hooks and the clsact qdisc itself (RTM_GETTFILTER, RTM_DELTFILTER,
//! RTM_GETQDISC, RTM_DELQDISC), as `tc filter show dev D ingress` and `tc qdisc show dev D`
//! see them: what the clsact fallback and `netpath cleanup` need to find and remove netpath's
//! own filters, and nothing else.
use netlink_packet_core::{Emitable, Parseable};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};

use super::{Netlink, SysError};

const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;

/// A clsact hook: where a filter sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClsactHook {
    Ingress,
    Egress,
}

impl ClsactHook {
    pub const BOTH: [ClsactHook; 2] = [ClsactHook::Ingress, ClsactHook::Egress];

    fn parent(self) -> TcHandle {
        TcHandle {
            major: 0xffff,
            minor: match self {
                ClsactHook::Ingress => TcHandle::MIN_INGRESS,
                ClsactHook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClsactHook::Ingress => "ingress",
            ClsactHook::Egress => "egress",
        }
    }
}

/// One filter on a clsact hook of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub ifindex: u32,
    pub hook: ClsactHook,
    /// `u32`, `bpf`, `flower`, ...
    pub kind: String,
    pub prio: u16,
    /// The protocol, in network order as the kernel keeps it (ETH_P_ALL = 0x0300).
    pub protocol: u16,
    pub handle: u32,
    /// A bpf filter's name (its program's name when aya or tc attached it).
    pub bpf_name: Option<String>,
    /// A bpf filter's program id.
    pub prog_id: Option<u32>,
}

/// Every filter on `hook` of the device with this ifindex; empty when the device has no
/// clsact qdisc.
pub(crate) fn filters(
    nl: &mut Netlink,
    ifindex: u32,
    hook: ClsactHook,
) -> Result<Vec<Filter>, SysError> {
    let mut req = TcMessage::default();
    req.header.index = ifindex as i32;
    req.header.parent = hook.parent();
    match nl.request(RTM_GETTFILTER, true, &emit(&req)) {
        Ok(replies) => replies
            .iter()
            .filter(|r| r.kind == RTM_NEWTFILTER)
            .map(|r| parse_filter(&r.payload, hook))
            // A chain's own message (no kind, no handle) is not a filter.
            .filter(|f| !matches!(f, Ok(f) if f.kind.is_empty()))
            .collect(),
        // No clsact qdisc (EINVAL), or the device went away.
        Err(SysError::Kernel(libc::EINVAL | libc::ENODEV | libc::ENOENT)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// An RTM_NEWTFILTER payload as a [`Filter`] on `hook`.
pub fn parse_filter(payload: &[u8], hook: ClsactHook) -> Result<Filter, SysError> {
    let msg = TcMessage::parse(payload).map_err(|e| SysError::Decode(e.to_string()))?;
    let mut f = Filter {
        ifindex: msg.header.index as u32,
        hook,
        kind: String::new(),
        prio: (msg.header.info >> 16) as u16,
        protocol: msg.header.info as u16,
        handle: u32::from(msg.header.handle),
        bpf_name: None,
        prog_id: None,
    };
    for attr in &msg.attributes {
        match attr {
            TcAttribute::Kind(k) => f.kind = k.clone(),
            TcAttribute::Options(opts) => {
                for opt in opts {
                    match opt {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => {
                            f.bpf_name = Some(n.clone())
                        }
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => f.prog_id = Some(*id),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// Deletes one filter (as `tc filter del dev D ingress pref P handle H bpf`).
pub(crate) fn delete_filter(nl: &mut Netlink, f: &Filter) -> Result<(), SysError> {
    let mut req = TcMessage::default();
    req.header = TcHeader {
        index: f.ifindex as i32,
        handle: TcHandle::from(f.handle),
        parent: f.hook.parent(),
        info: (f.prio as u32) << 16 | f.protocol as u32,
        ..req.header
    };
    req.attributes.push(TcAttribute::Kind(f.kind.clone()));
    match nl.request_ack(RTM_DELTFILTER, &emit(&req)) {
        Err(SysError::Kernel(libc::ENOENT | libc::ENODEV)) => Ok(()),
        other => other,
    }
}

/// Whether the device has a clsact qdisc.
pub(crate) fn has_clsact(nl: &mut Netlink, ifindex: u32) -> Result<bool, SysError> {
    let req = TcMessage::default();
    let replies = nl.request(RTM_GETQDISC, true, &emit(&req))?;
    Ok(replies.iter().filter(|r| r.kind == RTM_NEWQDISC).any(|r| {
        let Ok(msg) = TcMessage::parse(&r.payload[..]) else {
            return false;
        };
        msg.header.index as u32 == ifindex
            && msg.header.parent == TcHandle::CLSACT
            && msg
                .attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"))
    }))
}

/// Deletes the device's clsact qdisc (and with it every filter on it).
pub(crate) fn delete_clsact(nl: &mut Netlink, ifindex: u32) -> Result<(), SysError> {
    let mut req = TcMessage::default();
    req.header.index = ifindex as i32;
    req.header.parent = TcHandle::CLSACT;
    req.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    req.attributes.push(TcAttribute::Kind("clsact".into()));
    match nl.request_ack(RTM_DELQDISC, &emit(&req)) {
        Err(SysError::Kernel(libc::ENOENT | libc::EINVAL | libc::ENODEV)) => Ok(()),
        other => other,
    }
}

fn emit<T: Emitable>(msg: &T) -> Vec<u8> {
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}
