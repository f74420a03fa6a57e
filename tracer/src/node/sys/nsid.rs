//! Peer namespaces (RTM_GETNSID): the ids a namespace gave the namespaces its links reach
//! (veth peers, tunnel underlays), named as `ip netns list-id` names them.
use std::os::fd::AsRawFd;

use super::{attrs, push_attr, Netlink, SysError};
use crate::node::netns::{NetnsRef, NETNS_RUN_DIR};

const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

/// A namespace that `ns` has an id for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub nsid: i32,
    /// Its /run/netns name, when it has one.
    pub name: Option<String>,
    /// It is this process's own namespace.
    pub current: bool,
}

/// The namespaces `ns` has ids for, in the kernel's order.
pub fn peers(ns: &NetnsRef) -> Result<Vec<Peer>, SysError> {
    let mut nl = Netlink::route(ns)?;
    let ids: Vec<i32> = nl
        .request(RTM_GETNSID, true, &[0; 4])?
        .iter()
        .filter(|r| r.kind == RTM_NEWNSID)
        .filter_map(|r| nsid_of(&r.payload))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut named: Vec<(i32, String)> = Vec::new();
    for name in names {
        if let Ok(Some(id)) = id_of(&mut nl, &NetnsRef::Named(name.clone())) {
            named.push((id, name));
        }
    }
    let current = id_of(&mut nl, &NetnsRef::Current).ok().flatten();
    Ok(ids
        .into_iter()
        .map(|nsid| Peer {
            nsid,
            name: named
                .iter()
                .find(|(i, _)| *i == nsid)
                .map(|(_, n)| n.clone()),
            current: current == Some(nsid),
        })
        .collect())
}

/// The id the socket's namespace has for `other` (None: it has none).
fn id_of(nl: &mut Netlink, other: &NetnsRef) -> Result<Option<i32>, SysError> {
    let file = other.open()?;
    let mut body = vec![0u8; 4];
    push_attr(
        &mut body,
        NETNSA_FD,
        &(file.as_raw_fd() as u32).to_ne_bytes(),
    );
    let replies = nl.request(RTM_GETNSID, false, &body)?;
    Ok(replies
        .iter()
        .filter(|r| r.kind == RTM_NEWNSID)
        .find_map(|r| nsid_of(&r.payload))
        .filter(|id| *id >= 0))
}

/// NETNSA_NSID of an RTM_NEWNSID payload (rtgenmsg, then attributes).
pub fn nsid_of(payload: &[u8]) -> Option<i32> {
    attrs(payload.get(4..)?)
        .find(|(kind, _)| *kind == NETNSA_NSID)
        .and_then(|(_, v)| Some(i32::from_ne_bytes(v.get(..4)?.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsids_decode_from_kernel_bytes() {
        let mut b = vec![0u8; 4];
        push_attr(&mut b, NETNSA_NSID, &1i32.to_ne_bytes());
        assert_eq!(nsid_of(&b), Some(1));
        let mut none = vec![0u8; 4];
        push_attr(&mut none, NETNSA_NSID, &(-1i32).to_ne_bytes());
        assert_eq!(nsid_of(&none), Some(-1));
        assert_eq!(nsid_of(&[0, 0]), None);
    }
}
