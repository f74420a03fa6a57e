//! The lab's Kubernetes API: `netpath lab up` starts it as a detached process
//! (`netpath lab serve-api`), which serves [`super::cluster::objects`] of the recorded lab on
//! 127.0.0.1 (an ephemeral port, HTTPS with a fresh CA, a bearer token) and records where in
//! `api.json` next to the lab state, with a kubeconfig beside it. `lab down` stops it and
//! removes both; the server also stops by itself when the lab state disappears.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::{fs::OpenOptionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use netpath_k8s::apiserver::{self, ApiServer, Credentials};
use serde::{Deserialize, Serialize};

use super::{state, LabError};

const API_FILE: &str = "api.json";
const KUBECONFIG_FILE: &str = "kubeconfig";
const LOG_FILE: &str = "api.log";
/// The hidden `netpath lab` subcommand that runs the server.
pub const SERVE_COMMAND: &str = "serve-api";
/// Name of the kubeconfig's cluster, user and context.
pub const CONTEXT: &str = "netpath-lab";
/// How long `lab up` waits for the server to answer.
const START_LIMIT: Duration = Duration::from_secs(15);
/// How often the server looks for its lab's state file.
const STATE_POLL: Duration = Duration::from_millis(500);

/// Where the lab's API server runs, as recorded in `api.json` (mode 0600: it holds the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRecord {
    pub pid: u32,
    pub addr: SocketAddr,
    pub token: String,
    pub ca_pem: String,
    pub kubeconfig: PathBuf,
}

impl ApiRecord {
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

pub fn api_file(dir: &Path) -> PathBuf {
    dir.join(API_FILE)
}
pub fn kubeconfig_file(dir: &Path) -> PathBuf {
    dir.join(KUBECONFIG_FILE)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn api_error(e: apiserver::ApiError) -> LabError {
    LabError::Command {
        what: "lab API server".into(),
        detail: e.to_string(),
    }
}

/// The recorded server, `None` when there is none.
pub fn record(dir: &Path) -> Result<Option<ApiRecord>, LabError> {
    state::read_json(&api_file(dir))
}

/// Writes a private file atomically: a new file (0600, O_EXCL: never an existing file or a
/// planted symlink) renamed over `path`; the new file is removed if anything fails.
pub(super) fn write_private(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.{nanos}", std::process::id()));
    let io = io_err(path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// Whether `pid` is a live (not zombie) process whose command line holds every one of `args`.
pub(super) fn runs_with(pid: u32, args: &[&[u8]]) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let zombie = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    let have: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    !zombie && args.iter().all(|a| have.contains(a))
}

/// Whether `pid` is a live (not zombie) `netpath lab serve-api` of state directory `dir`.
fn is_our_server(pid: u32, dir: &Path) -> bool {
    runs_with(
        pid,
        &[SERVE_COMMAND.as_bytes(), dir.as_os_str().as_encoded_bytes()],
    )
}

/// Starts the server for the lab recorded in `dir` (`exe lab serve-api --state DIR`, detached
/// in its own process group) and waits until it answers over HTTPS with its token.
pub fn start(exe: &Path, dir: &Path) -> Result<(ApiRecord, Duration), LabError> {
    let t0 = Instant::now();
    // A server left running (its files are replaced by the new one's).
    kill(dir);
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    let log_path = dir.join(LOG_FILE);
    // A new file (O_EXCL): never one planted in its place.
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
        .map_err(|e| LabError::Command {
            what: format!("starting {} lab {SERVE_COMMAND}", exe.display()),
            detail: e.to_string(),
        })?;
    let failed = |detail: String| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        LabError::Command {
            what: "lab API server".into(),
            detail: format!(
                "{detail}{}",
                log.trim()
                    .lines()
                    .last()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ),
        }
    };
    let deadline = t0 + START_LIMIT;
    let rec = loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Err(failed(format!("exited ({status}) before answering")));
        }
        if let Ok(Some(rec)) = record(&dir) {
            if rec.pid == child.id() {
                break rec;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("no address after {START_LIMIT:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    loop {
        let answer = block_on(apiserver::fetch(
            rec.addr,
            &rec.ca_pem,
            Some(&rec.token),
            "/version",
        ));
        match answer {
            Ok((200, _)) => break,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok((code, body)) => return Err(failed(format!("/version answered {code}: {body}"))),
            Err(e) => return Err(failed(format!("/version: {e}"))),
        }
    }
    Ok((rec, t0.elapsed()))
}

/// Stops the recorded server, if it runs: SIGTERM, then SIGKILL after 3 s.
fn kill(dir: &Path) {
    let Ok(Some(rec)) = record(dir) else {
        return;
    };
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !is_our_server(rec.pid, &abs) {
        return;
    }
    let pid = rec.pid as libc::pid_t;
    // SAFETY: kill(2) on a pid we just checked is our server.
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

/// Stops the recorded server and removes its files (every one it can; the first error is
/// returned). Nothing recorded is not an error.
pub fn stop(dir: &Path) -> Result<(), LabError> {
    kill(dir);
    let mut first = Ok(());
    for f in [api_file(dir), kubeconfig_file(dir), dir.join(LOG_FILE)] {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && first.is_ok() => {
                first = Err(io_err(&f)(e))
            }
            _ => {}
        }
    }
    first
}

/// Whether the recorded server is alive.
pub fn running(dir: &Path, rec: &ApiRecord) -> bool {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    is_our_server(rec.pid, &abs)
}

/// Runs `f` to completion on a runtime of its own (callable from inside another runtime).
pub(super) fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(f)
        })
        .join()
        .expect("runtime thread")
    })
}

/// The server process (`netpath lab serve-api`): serves the lab recorded in `dir` until
/// SIGTERM/SIGINT or until the lab's state file is gone, then removes its files.
pub fn serve(dir: &Path) -> Result<(), LabError> {
    let st = state::load(dir)?.ok_or_else(|| LabError::Command {
        what: "lab API server".into(),
        detail: format!("no lab recorded in {}", dir.display()),
    })?;
    let state_path = state::state_file(dir);
    let created = std::fs::metadata(&state_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| Timestamp::from_second(d.as_secs() as i64).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let agents = super::agents::record(dir)?
        .map(|r| r.addresses())
        .unwrap_or_default();
    let set = super::cluster::objects_with_agents(&st, created, &agents).map_err(api_error)?;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let creds = Credentials::generate(&[localhost], 30).map_err(api_error)?;
    let server = ApiServer::new(set, &creds).map_err(api_error)?;
    block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(localhost, 0))
            .await
            .map_err(|e| LabError::Command {
                what: "lab API server: listen on 127.0.0.1".into(),
                detail: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(io_err(dir))?;
        let rec = ApiRecord {
            pid: std::process::id(),
            addr,
            token: creds.token.clone(),
            ca_pem: creds.ca_pem.clone(),
            kubeconfig: kubeconfig_file(dir),
        };
        let url = rec.url();
        write_private(
            &rec.kubeconfig,
            &apiserver::kubeconfig(
                CONTEXT,
                &url,
                &rec.ca_pem,
                &rec.token,
                super::cluster::POD_NAMESPACE,
            ),
        )?;
        write_private(
            &api_file(dir),
            &serde_json::to_string_pretty(&rec).expect("record serialises"),
        )?;
        eprintln!("lab API: serving {} on {url}", st.scenario);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(io_err(dir))?;
        let state_gone = async {
            while state_path.exists() {
                tokio::time::sleep(STATE_POLL).await;
            }
            eprintln!("lab API: {} is gone, stopping", state_path.display());
        };
        let shutdown = async {
            tokio::select! {
                _ = term.recv() => eprintln!("lab API: terminated"),
                _ = tokio::signal::ctrl_c() => eprintln!("lab API: interrupted"),
                _ = state_gone => {}
            }
        };
        server.serve(listener, shutdown).await.map_err(api_error)?;
        // Leave nothing behind when the lab went away without `lab down`; `down` removes the
        // files itself otherwise (and only ours: a newer server may have replaced them).
        if !state_path.exists() && record(dir).ok().flatten().is_some_and(|r| r.pid == rec.pid) {
            for f in [api_file(dir), kubeconfig_file(dir), dir.join(LOG_FILE)] {
                let _ = std::fs::remove_file(f);
            }
        }
        Ok(())
    })
}
