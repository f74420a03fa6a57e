//! The unit the kernel side hands to the capture pipeline, and that `-r FILE` yields back.
use bytes::Bytes;

/// Direction of a packet relative to the device it was seen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the device.
    In,
    /// Sent by the device.
    Out,
}

/// Where and why the kernel dropped a packet seen at a drop point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropInfo {
    /// Kernel drop reason name, e.g. `NETFILTER_DROP`.
    pub reason: String,
    /// Kernel location, e.g. `nf_hook_slow+0x8c`.
    pub location: String,
}

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// Nanoseconds since the UNIX epoch.
    pub ts_ns: u64,
    /// Node the packet was captured on.
    pub node: String,
    /// Network namespace name; the node's root namespace is named after the node (an empty
    /// name is treated the same way).
    pub netns: String,
    /// Device name inside `netns`.
    pub ifname: String,
    /// `None` for packets taken at a drop point.
    pub dir: Option<Direction>,
    /// The frame from its Ethernet header on, possibly truncated to the snap length.
    pub data: Bytes,
    /// Length of the whole packet on the wire.
    pub orig_len: u32,
    /// Set for packets seen at a kernel drop point.
    pub drop: Option<DropInfo>,
}

impl CapturedPacket {
    /// The interface name used in pcapng files and text lines: `netns/ifname`
    /// (e.g. `pod-a/eth0`, `node-1/eth0` for the root namespace).
    pub fn interface_name(&self) -> String {
        interface_name(&self.node, &self.netns, &self.ifname)
    }
}

/// `netns/ifname`, with the node's name for an empty namespace name.
pub fn interface_name(node: &str, netns: &str, ifname: &str) -> String {
    let ns = if netns.is_empty() { node } else { netns };
    format!("{ns}/{ifname}")
}

/// Splits an interface name written by [`CapturedPacket::interface_name`] back into
/// `(netns, ifname)`. Names without a `/` (files from other tools) have no namespace; a capture
/// through agents names its interfaces `node/netns/ifname`, whose namespace part is then
/// `node/netns`.
pub fn split_interface_name(name: &str) -> (String, String) {
    // Neither namespace names (file names) nor device names can contain '/'.
    match name.rsplit_once('/') {
        Some((ns, dev)) => (ns.to_string(), dev.to_string()),
        None => (String::new(), name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_round_trip() {
        let mut p = CapturedPacket {
            ts_ns: 0,
            node: "node-1".into(),
            netns: "pod-a".into(),
            ifname: "eth0".into(),
            dir: None,
            data: Bytes::new(),
            orig_len: 0,
            drop: None,
        };
        assert_eq!(p.interface_name(), "pod-a/eth0");
        assert_eq!(
            split_interface_name("pod-a/eth0"),
            ("pod-a".into(), "eth0".into())
        );
        p.netns.clear();
        assert_eq!(p.interface_name(), "node-1/eth0");
        assert_eq!(split_interface_name("eth0"), (String::new(), "eth0".into()));
        assert_eq!(
            split_interface_name("node-1/pod-a/eth0"),
            ("node-1/pod-a".into(), "eth0".into())
        );
    }
}
