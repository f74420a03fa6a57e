//! The lab's state file: what `lab up` built, so `down` can remove it and other commands can
//! resolve lab pods, nodes and Services by name and check traces against the expectations.
use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::LabError;

/// Default state directory (tmpfs: a reboot forgets the lab, as it forgets the namespaces).
pub const DEFAULT_STATE_DIR: &str = "/run/netpath";
/// Environment variable that overrides the state directory.
pub const STATE_ENV: &str = "NETPATH_STATE";
const STATE_FILE: &str = "lab.json";

/// The CNI flavour a scenario imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavour {
    Flannel,
    Calico,
    KubeRouter,
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavour::Flannel => "flannel",
            Flavour::Calico => "calico",
            Flavour::KubeRouter => "kube-router",
        })
    }
}

/// The address family (the model's: one form everywhere).
pub use netpath_core::model::Family;

/// What a scenario documents for one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The packet reaches the destination and the answer comes back.
    Delivered,
    /// The packet is discarded on the way (silently or with an ICMP error / reject).
    Dropped,
}

/// One documented flow of a scenario: the trace command asserts against these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// A resolver spec: `pod-a`.
    pub from: String,
    /// A resolver spec: `pod-c`, `svc/web`, or an address (`[fd00:10:96::10]:80`) that no lab
    /// object owns any more (a withdrawn pod address, a stale ClusterIP).
    pub to: String,
    pub family: Family,
    pub expect: Outcome,
    /// Lab name (`node-1`, `underlay`) of the place where the packet dies, for `Dropped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Why, in the words a diagnosis should find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// The shared node network: a bridge in its own namespace, with a gateway that knows only the
/// node subnets (so a packet sent to it for a pod CIDR dies there, as on a real router).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabUnderlay {
    pub netns: String,
    pub bridge: String,
    pub cidr_v4: String,
    pub cidr_v6: String,
    pub gateway_v4: IpAddr,
    pub gateway_v6: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    /// Lab name: `node-1`.
    pub name: String,
    /// `ip netns` name: `np-node-1`.
    pub netns: String,
    pub underlay_v4: IpAddr,
    pub underlay_v6: IpAddr,
    /// Prefix length configured on the node's underlay IPv6 address.
    pub underlay_v6_prefix: u8,
    pub pod_cidr_v4: String,
    pub pod_cidr_v6: String,
    /// Interfaces the lab made in the node namespace.
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPod {
    /// Lab name: `pod-a`.
    pub name: String,
    /// Lab name of its node.
    pub node: String,
    pub netns: String,
    /// Interface inside the pod (`eth0`).
    pub ifname: String,
    /// The veth end in the node namespace (`veth…`, `cali…`).
    pub host_ifname: String,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabService {
    /// Name without the `svc/` prefix.
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub port: u16,
    /// Every endpoint, of either family; an empty family means nothing translates it.
    pub endpoints: Vec<SocketAddr>,
    /// ClusterIPs that clients still hold from an earlier `lab up` and that nothing serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_cluster_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub scenario: String,
    pub description: String,
    /// Seed incident id (docs/incidents.md), for fault scenarios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    pub flavour: Flavour,
    /// Namespace name prefix (`np`).
    pub prefix: String,
    /// How many times this scenario has been brought up with this state directory.
    pub run: u32,
    /// False until `up` finished: a half-built lab still lists everything `down` must remove.
    pub complete: bool,
    /// Every namespace `up` creates, written before the first is made.
    pub namespaces: Vec<String>,
    /// The cookies (SO_NETNS_COOKIE, never reused while the machine is up) of the namespaces
    /// `up` made, recorded as soon as they exist: `down` deletes a listed namespace only when
    /// its name has the lab's prefix and its cookie is here. `None` in a state written by an
    /// older netpath: the name alone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<Vec<u64>>,
    pub underlay: LabUnderlay,
    pub nodes: Vec<LabNode>,
    pub pods: Vec<LabPod>,
    pub services: Vec<LabService>,
    pub expectations: Vec<Expectation>,
}

impl LabState {
    pub fn pod(&self, name: &str) -> Option<&LabPod> {
        self.pods.iter().find(|p| p.name == name)
    }
    pub fn node(&self, name: &str) -> Option<&LabNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub fn service(&self, name: &str) -> Option<&LabService> {
        self.services.iter().find(|s| s.name == name)
    }
}

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Reads the state, `None` when no lab is recorded.
pub fn load(dir: &Path) -> Result<Option<LabState>, LabError> {
    read_json(&state_file(dir))
}

/// One of the lab's JSON records (state, agents, API, runtime), `None` when there is none.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, LabError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            let path = path.to_path_buf();
            return Err(LabError::State { path, source });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| LabError::StateParse {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes the state atomically (temp file + rename), so a crash never leaves half a file.
pub fn save(dir: &Path, state: &LabState) -> Result<(), LabError> {
    let path = state_file(dir);
    let io = |source| LabError::State {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = serde_json::to_string_pretty(state).expect("lab state serialises");
    replace(&path, text.as_bytes()).map_err(io)
}

/// Replaces `path` with `bytes` atomically: a new file of a random name in the same directory
/// (O_EXCL: never an existing file, nor a symlink planted in a shared directory), renamed over
/// it.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

pub fn remove(dir: &Path) -> Result<(), LabError> {
    let path = state_file(dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(LabError::State { path, source: e })
        }
        _ => Ok(()),
    }
}

/// Increments and returns the number of `lab up` runs of `scenario` in `dir` (kept across
/// `down`, so a scenario can differ between successive runs).
pub fn next_run(dir: &Path, scenario: &str) -> Result<u32, LabError> {
    let path = dir.join(format!("{scenario}.runs"));
    let io = |source| LabError::State {
        path: path.clone(),
        source,
    };
    let previous: u32 = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().parse().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(e)),
    };
    let run = previous.saturating_add(1);
    std::fs::create_dir_all(dir).map_err(io)?;
    replace(&path, format!("{run}\n").as_bytes()).map_err(io)?;
    Ok(run)
}
