//! A pod's network namespace on its node, found by its address: the namespace whose devices
//! hold it, among the named ones (/run/netns: `ip netns`, and the `cni-*` namespaces
//! containerd and CRI-O make) and those only held by processes (/proc/PID/ns/net). No
//! container runtime socket is needed.
//!
//! The name `ip:ADDR` for a namespace ([`super::netns::NetnsRef::parse`]) means this search:
//! a node's agent asked about `ip:10.244.1.2` answers for the pod that holds that address.
use std::{net::IpAddr, sync::OnceLock};

use super::{
    netns::{self, NetnsRef},
    sys,
};

/// The addresses of one namespace (every device, loopback included).
fn addrs_of(ns: &netns::Netns) -> Vec<IpAddr> {
    addrs_named(&ns.name)
}

/// The addresses of the namespace called `name` (none when it cannot be read).
fn addrs_named(name: &str) -> Vec<IpAddr> {
    NetnsRef::parse(name)
        .ok()
        .and_then(|r| sys::addresses(&r).ok())
        .map(|all| all.into_iter().map(|a| a.addr).collect())
        .unwrap_or_default()
}

/// Skipped when searching: any namespace holds these.
fn searchable(ip: &IpAddr) -> bool {
    !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast()
}

/// Every namespace here, named ones first (what pods get from a CNI runtime: their names are
/// the ones events carry), then the root, then those only held by processes.
fn in_search_order() -> Vec<netns::Netns> {
    let mut all = netns::all();
    all.sort_by_key(|n| match n.name.as_str() {
        "root" => 1,
        name if name.starts_with("pid:") => 2,
        _ => 0,
    });
    all
}

/// The namespace holding one of `addrs` (named ones first, then the root, then those held by
/// processes), as a name [`NetnsRef::parse`] accepts (`NAME`, `root`, `pid:N`).
pub fn holding(addrs: &[IpAddr]) -> Option<String> {
    let wanted: Vec<IpAddr> = addrs.iter().copied().filter(searchable).collect();
    if wanted.is_empty() {
        return None;
    }
    in_search_order()
        .into_iter()
        .find(|ns| addrs_of(ns).iter().any(|a| wanted.contains(a)))
        .map(|ns| ns.name)
}

/// [`holding`] among these namespaces only, in their order (an agent confined to them must
/// not claim another node's namespace of the same kernel).
pub fn holding_among<'a>(
    names: impl IntoIterator<Item = &'a str>,
    addrs: &[IpAddr],
) -> Option<String> {
    let wanted: Vec<IpAddr> = addrs.iter().copied().filter(searchable).collect();
    if wanted.is_empty() {
        return None;
    }
    names
        .into_iter()
        .find(|name| addrs_named(name).iter().any(|a| wanted.contains(a)))
        .map(str::to_string)
}

/// [`netpath_k8s::client::NetnsLocator`] over this machine: every namespace's addresses, read
/// once (a trace sees one state), then looked up.
#[derive(Default)]
pub struct LocalNetnsLocator {
    table: OnceLock<Vec<(String, Vec<IpAddr>)>>,
}

impl LocalNetnsLocator {
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> &[(String, Vec<IpAddr>)] {
        self.table.get_or_init(|| {
            in_search_order()
                .iter()
                .map(|ns| (ns.name.clone(), addrs_of(ns)))
                .collect()
        })
    }
}

impl netpath_k8s::client::NetnsLocator for LocalNetnsLocator {
    fn locate(&self, addrs: &[IpAddr]) -> Option<String> {
        let wanted: Vec<IpAddr> = addrs.iter().copied().filter(searchable).collect();
        self.table()
            .iter()
            .find(|(_, held)| held.iter().any(|a| wanted.contains(a)))
            .map(|(name, _)| name.clone())
    }
}

/// The namespace of a container runtime's pod sandbox ([`netpath_agent::cri::SandboxInfo`]):
/// /proc/PID/ns/net of its process, else the network namespace path of its OCI spec. Named
/// as the node side accepts it and as the agent serves it: the one of `among` (an agent's
/// confinement) with the same inode; unconfined, `root` (a host-network pod), its
/// /run/netns name (`cni-...`), else `pid:PID` (or the spec's path). Returns the name and how
/// it was reached (`pid 1234`, `netns path ...`).
pub fn of_sandbox(
    info: &netpath_agent::cri::SandboxInfo,
    among: Option<&std::collections::BTreeSet<String>>,
) -> Result<(String, String), String> {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    let mut tried: Vec<(PathBuf, String, Option<String>)> = Vec::new();
    if let Some(pid) = info.pid {
        tried.push((
            PathBuf::from(format!("/proc/{pid}/ns/net")),
            format!("pid {pid}"),
            Some(format!("pid:{pid}")),
        ));
    }
    if let Some(path) = &info.netns_path {
        tried.push((
            path.into(),
            format!("netns path {path}"),
            Some(path.clone()),
        ));
        // /var/run is /run on the node; an agent's container may only have the latter.
        if let Some(rest) = path.strip_prefix("/var/run/") {
            tried.push((
                PathBuf::from("/run").join(rest),
                format!("netns path {path}"),
                Some(format!("/run/{rest}")),
            ));
        }
    }
    if tried.is_empty() {
        return Err("the runtime gave neither the sandbox's pid nor its netns path".into());
    }
    let mut problems = Vec::new();
    let found = tried
        .into_iter()
        .find_map(|(path, via, name)| match std::fs::metadata(&path) {
            Ok(m) => Some((m.ino() as u32, via, name)),
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                None
            }
        });
    let Some((inode, via, name)) = found else {
        return Err(format!(
            "the sandbox's namespace cannot be opened ({})",
            problems.join("; ")
        ));
    };
    let same = |n: &str| NetnsRef::parse(n).and_then(|r| r.inode()).ok() == Some(inode);
    if let Some(set) = among {
        return set
            .iter()
            .find(|n| same(n))
            .map(|n| (n.clone(), via.clone()))
            .ok_or_else(|| format!("its namespace ({via}) is not one of those the agent may use"));
    }
    if same("root") {
        return Ok(("root".into(), via));
    }
    let named = std::fs::read_dir(netns::NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| same(n));
    Ok((named.or(name).unwrap_or_default(), via))
}
