//! The lab's node agents: `netpath lab up` makes mutual-TLS material in `DIR/tls` and starts
//! one detached `netpath agent` per lab node, as a cluster runs them: inside the node's
//! namespace, listening on the node's underlay address (port 7101), confined to that node's
//! namespaces (the node's own and its pods'; not the underlay, not other nodes). It records
//! them in `agents.json`. Only the lab's underlay namespace reaches the nodes' underlay
//! addresses, so the CLI dials them from there (`NODE=ADDR@UNDERLAY`). `lab down` stops them
//! and removes their files.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::{
        fs::{DirBuilderExt, OpenOptionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netpath_agent::{
    certs::{generate, NodeCert, Validity},
    client::AgentAddr,
};
use serde::{Deserialize, Serialize};

use super::{
    api::{runs_with, write_private},
    LabError, LabState,
};

const AGENTS_FILE: &str = "agents.json";
const TLS_DIR: &str = "tls";
/// How long `lab up` waits for an agent's `listening on` line. Agents load and attach the
/// kernel programs first: about a second here, 10-20 s under software emulation.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Days the lab's certificates are valid.
const CERT_DAYS: i64 = 30;
/// The port every lab agent listens on, on its node's underlay address (a real node's too).
const AGENT_PORT: u16 = 7101;
/// What an agent prints on stderr once it listens.
const LISTENING: &str = "listening on ";

/// One running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Lab node name: `node-1`.
    pub node: String,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The namespace the agent is reached from (the lab's underlay).
    #[serde(default)]
    pub via_netns: Option<String>,
    /// The `ip netns` names it may trace, probe from and inspect.
    pub netns_scope: Vec<String>,
    pub log: PathBuf,
}

/// The lab's agents, as recorded in `agents.json` (mode 0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsRecord {
    /// ca.pem, NODE.pem/key per node and client.pem/key (for `trace --tls-dir`).
    pub tls_dir: PathBuf,
    pub agents: Vec<AgentRecord>,
}

impl AgentsRecord {
    /// node -> address, for the lab's Kubernetes API.
    pub fn addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.agents
            .iter()
            .map(|a| (a.node.clone(), a.addr))
            .collect()
    }

    /// `node-1=ADDR@NETNS,node-2=ADDR@NETNS`: the value of `trace --agents`.
    pub fn agents_arg(&self) -> String {
        self.agents
            .iter()
            .map(|a| a.dial().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl AgentRecord {
    /// Where the CLI connects to this agent.
    pub fn dial(&self) -> AgentAddr {
        AgentAddr {
            node: self.node.clone(),
            addr: self.addr.to_string(),
            via_netns: self.via_netns.clone(),
        }
    }
}

pub fn agents_file(dir: &Path) -> PathBuf {
    dir.join(AGENTS_FILE)
}
pub fn tls_dir(dir: &Path) -> PathBuf {
    dir.join(TLS_DIR)
}
fn log_file(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("agent-{node}.log"))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn failed(what: impl Into<String>, detail: impl Into<String>) -> LabError {
    LabError::Command {
        what: what.into(),
        detail: detail.into(),
    }
}

/// The recorded agents, `None` when there are none.
pub fn record(dir: &Path) -> Result<Option<AgentsRecord>, LabError> {
    super::state::read_json(&agents_file(dir))
}

/// The namespaces of each lab node: its own and its pods' (the underlay belongs to none).
pub fn scopes(st: &LabState) -> Vec<(String, Vec<String>)> {
    st.nodes
        .iter()
        .map(|n| {
            let mut scope = vec![n.netns.clone()];
            scope.extend(
                st.pods
                    .iter()
                    .filter(|p| p.node == n.name)
                    .map(|p| p.netns.clone()),
            );
            (n.name.clone(), scope)
        })
        .collect()
}

/// The address in an agent's `... listening on ADDR (mutual TLS)` line.
fn listen_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .find_map(|l| l.split_once(LISTENING))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// Whether `pid` is a live `netpath agent` serving with the TLS directory `tls`.
fn is_our_agent(pid: u32, tls: &Path) -> bool {
    runs_with(pid, &[b"agent", tls.as_os_str().as_encoded_bytes()])
}

/// SIGTERM to every pid that is still our agent, then SIGKILL to those alive after 3 s.
fn kill(pids: &[u32], tls: &Path) {
    let ours: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| is_our_agent(*p, tls))
        .collect();
    for pid in &ours {
        // SAFETY: kill(2) on a pid we just checked is one of this lab's agents.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while ours.iter().any(|p| is_our_agent(*p, tls)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in ours.iter().filter(|p| is_our_agent(**p, tls)) {
        // SAFETY: as above.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// Makes `DIR/tls` and starts one agent per node of `st` (`exe agent ...`, each detached in
/// its own process group, stderr to `DIR/agent-NODE.log`), waits until every one listens,
/// and records them. On failure every agent started is stopped and every file removed.
pub fn start(exe: &Path, dir: &Path, st: &LabState) -> Result<(AgentsRecord, Duration), LabError> {
    let t0 = Instant::now();
    // Agents left by an earlier lab in this directory, and their files (an unreadable
    // agents.json is removed too; a file that cannot be removed fails below).
    let _ = stop(dir, Some(st));
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    let mut children: Vec<(String, Vec<String>, PathBuf, Child)> = Vec::new();
    let started =
        launch(exe, &dir, st, &mut children).and_then(|()| wait(&mut children, &st.underlay.netns));
    let result = started.and_then(|agents| {
        let rec = AgentsRecord {
            tls_dir: tls_dir(&dir),
            agents,
        };
        write_private(
            &agents_file(&dir),
            &serde_json::to_string_pretty(&rec).expect("record serialises"),
        )?;
        Ok(rec)
    });
    match result {
        Ok(rec) => Ok((rec, t0.elapsed())),
        Err(e) => {
            let pids: Vec<u32> = children.iter().map(|c| c.3.id()).collect();
            kill(&pids, &tls_dir(&dir));
            for (.., child) in &mut children {
                let _ = child.try_wait();
            }
            let _ = remove_files(&dir, Some(st));
            Err(e)
        }
    }
}

/// Certificates, then one process per node (pushed to `children` as it starts).
fn launch(
    exe: &Path,
    dir: &Path,
    st: &LabState,
    children: &mut Vec<(String, Vec<String>, PathBuf, Child)>,
) -> Result<(), LabError> {
    let tls = tls_dir(dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tls)
        .map_err(io_err(&tls))?;
    let nodes = st
        .nodes
        .iter()
        .map(|n| NodeCert::parse(&format!("{}={}", n.name, n.underlay_v4)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed("lab agent certificates", e.to_string()))?;
    generate(&tls, &nodes, false, Validity::days(CERT_DAYS))
        .map_err(|e| failed("lab agent certificates", e.to_string()))?;
    for (node, scope) in scopes(st) {
        let log_path = log_file(dir, &node);
        // A new file (O_EXCL): never one planted in its place.
        let _ = std::fs::remove_file(&log_path);
        let log = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let n = st.node(&node).expect("scopes are of the state's nodes");
        let listen = SocketAddr::new(n.underlay_v4, AGENT_PORT);
        // The agent runs in its node's namespace, entered between fork and exec.
        let netns_path = Path::new("/run/netns").join(&n.netns);
        let netns = std::fs::File::open(&netns_path).map_err(io_err(&netns_path))?;
        let mut command = Command::new(exe);
        command
            .args(["agent", "--node", &node, "--listen", &listen.to_string()])
            .arg("--tls-dir")
            .arg(&tls)
            .arg("--netns-scope")
            .arg(scope.join(","))
            // The lab's container runtime for this node (`lab up` starts it first).
            .arg("--cri-socket")
            .arg(super::cri::socket(dir, &node))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&netns);
        // SAFETY: only setns(2), async-signal-safe, runs in the child before exec; `netns`
        // outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| failed(format!("starting {} agent", exe.display()), e.to_string()))?;
        children.push((node, scope, log_path, child));
    }
    Ok(())
}

/// Waits until every agent printed its address.
fn wait(
    children: &mut [(String, Vec<String>, PathBuf, Child)],
    underlay: &str,
) -> Result<Vec<AgentRecord>, LabError> {
    let deadline = Instant::now() + START_LIMIT;
    let mut addrs: Vec<Option<SocketAddr>> = vec![None; children.len()];
    while addrs.iter().any(Option::is_none) {
        for ((node, _, log_path, child), addr) in children.iter_mut().zip(&mut addrs) {
            if addr.is_some() {
                continue;
            }
            let log = std::fs::read_to_string(&*log_path).unwrap_or_default();
            *addr = listen_addr(&log);
            let last = || {
                log.trim()
                    .lines()
                    .last()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            };
            if addr.is_none() {
                if let Some(status) = child.try_wait().ok().flatten() {
                    return Err(failed(
                        format!("lab agent {node}"),
                        format!("exited ({status}) before listening{}", last()),
                    ));
                }
                if Instant::now() > deadline {
                    return Err(failed(
                        format!("lab agent {node}"),
                        format!("not listening after {START_LIMIT:?}{}", last()),
                    ));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(children
        .iter()
        .zip(addrs)
        .map(|((node, scope, log, child), addr)| AgentRecord {
            node: node.clone(),
            pid: child.id(),
            addr: addr.expect("every agent listens"),
            via_netns: Some(underlay.to_string()),
            netns_scope: scope.clone(),
            log: log.clone(),
        })
        .collect())
}

/// Removes agents.json, the logs of `st`'s nodes and of the recorded agents, and `DIR/tls`
/// (every one it can; the first error is returned).
fn remove_files(dir: &Path, st: Option<&LabState>) -> Result<(), LabError> {
    let mut files: Vec<PathBuf> = st
        .iter()
        .flat_map(|st| &st.nodes)
        .map(|n| log_file(dir, &n.name))
        .collect();
    if let Ok(Some(rec)) = record(dir) {
        files.extend(rec.agents.iter().map(|a| log_file(dir, &a.node)));
    }
    files.push(agents_file(dir));
    let mut first = Ok(());
    for f in files {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && first.is_ok() => {
                first = Err(io_err(&f)(e))
            }
            _ => {}
        }
    }
    let tls = tls_dir(dir);
    match std::fs::remove_dir_all(&tls) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound && first.is_ok() => {
            first = Err(io_err(&tls)(e))
        }
        _ => {}
    }
    first
}

/// Stops the recorded agents (only processes that are `netpath agent` with this lab's TLS
/// directory) and removes their files. Nothing recorded is not an error.
pub fn stop(dir: &Path, st: Option<&LabState>) -> Result<(), LabError> {
    let abs = std::path::absolute(dir).map_err(io_err(dir))?;
    let rec = record(&abs);
    if let Ok(Some(rec)) = &rec {
        let pids: Vec<u32> = rec.agents.iter().map(|a| a.pid).collect();
        kill(&pids, &tls_dir(&abs));
    }
    let removed = remove_files(&abs, st);
    rec.and(removed)
}

/// Whether a recorded agent is alive.
pub fn running(rec: &AgentsRecord, agent: &AgentRecord) -> bool {
    is_our_agent(agent.pid, &rec.tls_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{plan, scenarios, PlanContext};

    #[test]
    fn listen_address_from_the_agent_line() {
        let log = "netpath agent: node node-1 listening on 127.0.0.1:40123 (mutual TLS)\n";
        assert_eq!(listen_addr(log), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(listen_addr("starting\n"), None);
    }

    #[test]
    fn each_node_gets_its_namespace_and_its_pods() {
        let st = plan(
            scenarios::find("flannel").unwrap(),
            &PlanContext {
                prefix: "np".into(),
                nodes: 2,
                run: 1,
            },
        )
        .unwrap()
        .state;
        let scopes = scopes(&st);
        assert_eq!(scopes.len(), 2);
        for (node, scope) in &scopes {
            let n = st.node(node).unwrap();
            assert_eq!(scope[0], n.netns);
            let pods: Vec<&str> = st
                .pods
                .iter()
                .filter(|p| &p.node == node)
                .map(|p| p.netns.as_str())
                .collect();
            assert!(!pods.is_empty());
            assert_eq!(&scope[1..], pods.as_slice());
        }
        let underlay = &st.underlay.netns;
        assert!(scopes.iter().all(|(_, s)| !s.contains(underlay)));
    }
}
