//! The lab's container runtime, as node agents see one: `netpath lab up` starts one detached
//! `netpath lab serve-cri` that serves a read-only CRI `RuntimeService` (Version,
//! ListPodSandbox, PodSandboxStatus; see [`netpath_agent::cri::FixedRuntime`]) per lab node
//! on the unix socket `DIR/cri/NODE.sock`, with one sandbox per pod of that node. Each
//! sandbox's pid is a thread of the server that has entered the pod's network namespace, so
//! /proc/PID/ns/net really is the pod's namespace, as a pause process's is on a real node.
//! `lab down` stops it and removes its sockets and files; it also stops by itself when the
//! lab state disappears.
use std::{
    os::unix::{
        fs::{DirBuilderExt, PermissionsExt},
        io::AsRawFd,
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netpath_agent::cri::{FixedRuntime, FixedSandbox};
use serde::{Deserialize, Serialize};

use super::{
    api::{block_on, runs_with, write_private},
    state, LabError, LabState,
};

const CRI_FILE: &str = "cri.json";
const CRI_DIR: &str = "cri";
const LOG_FILE: &str = "cri.log";
/// The hidden `netpath lab` subcommand that runs the runtime.
pub const SERVE_COMMAND: &str = "serve-cri";
/// The runtime name `Version` answers.
pub const RUNTIME_NAME: &str = "netpath-lab";
/// How long `lab up` waits for the sockets.
const START_LIMIT: Duration = Duration::from_secs(15);
/// How often the server looks for its lab's state file.
const STATE_POLL: Duration = Duration::from_millis(500);

/// The running runtime, as recorded in `cri.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriRecord {
    pub pid: u32,
    /// (node, socket).
    pub sockets: Vec<(String, PathBuf)>,
}

pub fn cri_file(dir: &Path) -> PathBuf {
    dir.join(CRI_FILE)
}

/// The socket of `node`'s runtime (what its agent gets as `--cri-socket`).
pub fn socket(dir: &Path, node: &str) -> PathBuf {
    dir.join(CRI_DIR).join(format!("{node}.sock"))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn failed(detail: impl Into<String>) -> LabError {
    LabError::Command {
        what: "lab container runtime (CRI)".into(),
        detail: detail.into(),
    }
}

/// The recorded runtime, `None` when there is none.
pub fn record(dir: &Path) -> Result<Option<CriRecord>, LabError> {
    state::read_json(&cri_file(dir))
}

fn is_our_server(pid: u32, dir: &Path) -> bool {
    runs_with(
        pid,
        &[SERVE_COMMAND.as_bytes(), dir.as_os_str().as_encoded_bytes()],
    )
}

/// Whether the recorded runtime is alive.
pub fn running(dir: &Path, rec: &CriRecord) -> bool {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    is_our_server(rec.pid, &abs)
}

/// Starts the runtime for the lab recorded in `dir` (`exe lab serve-cri --state DIR`,
/// detached in its own process group) and waits until it recorded its sockets.
pub fn start(exe: &Path, dir: &Path) -> Result<(CriRecord, Duration), LabError> {
    let t0 = Instant::now();
    let _ = stop(dir);
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    let log_path = dir.join(LOG_FILE);
    let _ = std::fs::remove_file(&log_path);
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&log_path)
        .map_err(io_err(&log_path))?;
    let mut child = Command::new(exe)
        .args(["lab", SERVE_COMMAND, "--state"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            failed(format!(
                "starting {} lab {SERVE_COMMAND}: {e}",
                exe.display()
            ))
        })?;
    let last = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .trim()
            .lines()
            .last()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    };
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            let err = failed(format!("exited ({status}) before serving{}", last()));
            let _ = stop(&dir);
            return Err(err);
        }
        if let Ok(Some(rec)) = record(&dir) {
            if rec.pid == child.id() {
                return Ok((rec, t0.elapsed()));
            }
        }
        if t0.elapsed() > START_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let err = failed(format!("no sockets after {START_LIMIT:?}{}", last()));
            let _ = stop(&dir);
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the recorded runtime (only a process that is this lab's `serve-cri`), then removes
/// its sockets, record and log. Nothing recorded is not an error.
pub fn stop(dir: &Path) -> Result<(), LabError> {
    let abs = std::path::absolute(dir).map_err(io_err(dir))?;
    if let Ok(Some(rec)) = record(&abs) {
        if is_our_server(rec.pid, &abs) {
            let pid = rec.pid as libc::pid_t;
            // SAFETY: kill(2) on a pid we just checked is this lab's runtime.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while is_our_server(rec.pid, &abs) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_our_server(rec.pid, &abs) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    remove_files(&abs)
}

fn remove_files(dir: &Path) -> Result<(), LabError> {
    let mut first = Ok(());
    for f in [cri_file(dir), dir.join(LOG_FILE)] {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && first.is_ok() => {
                first = Err(io_err(&f)(e))
            }
            _ => {}
        }
    }
    let sockets = dir.join(CRI_DIR);
    match std::fs::remove_dir_all(&sockets) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound && first.is_ok() => {
            first = Err(io_err(&sockets)(e))
        }
        _ => {}
    }
    first
}

/// A thread that entered a pod's network namespace and stays there: the pod's "sandbox
/// process". Ends with the server.
fn hold(netns: &str) -> Result<u32, LabError> {
    let path = Path::new(crate::node::netns::NETNS_RUN_DIR).join(netns);
    let file = std::fs::File::open(&path).map_err(io_err(&path))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("sandbox {netns}"))
        .spawn(move || {
            // SAFETY: setns(2) on an nsfs file we opened; it moves only this thread.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            drop(file);
            if entered != 0 {
                let _ = tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            // SAFETY: gettid(2) has no preconditions.
            let _ = tx.send(Ok(unsafe { libc::gettid() } as u32));
            loop {
                std::thread::park();
            }
        })
        .map_err(io_err(&path))?;
    rx.recv()
        .map_err(|_| failed(format!("sandbox thread of {netns} ended")))?
        .map_err(|e| failed(format!("entering {}: {e}", path.display())))
}

/// Each node's runtime: one sandbox per pod, held by a thread in the pod's namespace.
fn runtimes(st: &LabState) -> Result<Vec<(String, FixedRuntime)>, LabError> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let mut out = Vec::new();
    for n in &st.nodes {
        let mut sandboxes = Vec::new();
        for p in st.pods.iter().filter(|p| p.node == n.name) {
            let pid = hold(&p.netns)?;
            sandboxes.push(FixedSandbox {
                // 64 hex digits, as containerd's ids are.
                id: format!("{created:032x}{pid:032x}"),
                namespace: super::cluster::POD_NAMESPACE.into(),
                name: p.name.clone(),
                uid: format!("{}-{}", st.prefix, p.name),
                created_at: created,
                ips: p
                    .ipv4
                    .iter()
                    .chain(&p.ipv6)
                    .map(|a| a.to_string())
                    .collect(),
                pid,
                netns_path: Some(
                    Path::new(crate::node::netns::NETNS_RUN_DIR)
                        .join(&p.netns)
                        .display()
                        .to_string(),
                ),
            });
        }
        out.push((
            n.name.clone(),
            FixedRuntime {
                name: RUNTIME_NAME.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                sandboxes,
            },
        ));
    }
    Ok(out)
}

/// The server process (`netpath lab serve-cri`): serves the lab recorded in `dir` until
/// SIGTERM/SIGINT or until the lab's state file is gone, then removes its files.
pub fn serve(dir: &Path) -> Result<(), LabError> {
    let st =
        state::load(dir)?.ok_or_else(|| failed(format!("no lab recorded in {}", dir.display())))?;
    let state_path = state::state_file(dir);
    let sockets_dir = dir.join(CRI_DIR);
    let _ = std::fs::remove_dir_all(&sockets_dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&sockets_dir)
        .map_err(io_err(&sockets_dir))?;
    let runtimes = runtimes(&st)?;
    block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut servers = Vec::new();
        let mut sockets = Vec::new();
        for (node, runtime) in runtimes {
            let path = socket(dir, &node);
            let listener = tokio::net::UnixListener::bind(&path).map_err(io_err(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&path))?;
            let mut stop = stop_rx.clone();
            servers.push(tokio::spawn(netpath_agent::cri::serve_unix(
                runtime,
                listener,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
            sockets.push((node, path));
        }
        let rec = CriRecord {
            pid: std::process::id(),
            sockets,
        };
        write_private(
            &cri_file(dir),
            &serde_json::to_string_pretty(&rec).expect("record serialises"),
        )?;
        eprintln!(
            "lab CRI: serving {} nodes' sandboxes on {}",
            rec.sockets.len(),
            sockets_dir.display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(io_err(dir))?;
        let state_gone = async {
            while state_path.exists() {
                tokio::time::sleep(STATE_POLL).await;
            }
            eprintln!("lab CRI: {} is gone, stopping", state_path.display());
        };
        tokio::select! {
            _ = term.recv() => eprintln!("lab CRI: terminated"),
            _ = tokio::signal::ctrl_c() => eprintln!("lab CRI: interrupted"),
            _ = state_gone => {}
        }
        let _ = stop_tx.send(true);
        for s in servers {
            let _ = s.await;
        }
        // Leave nothing behind when the lab went away without `lab down` (which removes the
        // files itself otherwise, and only ours: a newer runtime may have replaced them).
        if !state_path.exists() && record(dir).ok().flatten().is_some_and(|r| r.pid == rec.pid) {
            let _ = remove_files(dir);
        }
        Ok(())
    })
}
