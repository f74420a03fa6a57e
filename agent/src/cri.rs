//! The node's container runtime, asked over CRI (`runtime.v1.RuntimeService` on its unix
//! socket) where a pod's sandbox is: `ListPodSandbox` with the kubelet's pod labels, then
//! `PodSandboxStatus` with `verbose`, whose `info` JSON holds the sandbox's pid (containerd,
//! CRI-O with an infra container) and its OCI runtime spec with the network namespace's path
//! (CRI-O without an infra container has only that). The node side turns either into the
//! namespace ([`SandboxInfo`]).
//!
//! Read-only: netpath never creates, stops or changes anything through the runtime.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::transport::{Channel, Endpoint as Dial};

use proto::runtime_service_client::RuntimeServiceClient;

/// The generated CRI subset (proto/cri/v1/api.proto) and its stubs.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("runtime.v1");
}

/// The runtime sockets the agent tries when no `--cri-socket` is given, in order.
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// The labels the kubelet puts on every sandbox it asks a runtime for.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// The CRI version netpath speaks.
pub const CRI_VERSION: &str = "v1";

/// How long one call to the runtime may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CriError {
    #[error("CRI socket {path}: {detail}")]
    Socket { path: String, detail: String },
    #[error("CRI {call} on {path}: {detail}")]
    Call {
        call: &'static str,
        path: String,
        detail: String,
    },
}

/// What `Version` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// `containerd`, `cri-o`, ...
    pub name: String,
    pub version: String,
    /// The CRI version it speaks (`v1`).
    pub api_version: String,
}

impl std::fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (CRI {})",
            self.name, self.version, self.api_version
        )
    }
}

/// What the verbose sandbox status tells about where the sandbox lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The sandbox's process (the pause process of containerd, CRI-O's infra container).
    pub pid: Option<u32>,
    /// The network namespace's path in the sandbox's OCI runtime spec
    /// (`/var/run/netns/cni-...`), when it has its own one.
    pub netns_path: Option<String>,
}

/// One pod's sandbox, as the runtime has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub info: SandboxInfo,
    /// The sandbox's addresses as the runtime reports them.
    pub ips: Vec<String>,
}

/// Parses `PodSandboxStatusResponse.info`: key `info`, a JSON object with `pid` (containerd:
/// always; CRI-O: when the sandbox has an infra container) and `runtimeSpec` (the OCI spec:
/// `linux.namespaces[]` with `type: network` and its `path`). Anything missing or malformed
/// is simply not known.
pub fn parse_info(info: &HashMap<String, String>) -> SandboxInfo {
    let Some(json) = info.get("info") else {
        return SandboxInfo::default();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return SandboxInfo::default();
    };
    let pid = v
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .filter(|p| *p > 0)
        .and_then(|p| u32::try_from(p).ok());
    let netns_path = v
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .find(|ns| ns.get("type").and_then(serde_json::Value::as_str) == Some("network"))
        .and_then(|ns| ns.get("path"))
        .and_then(serde_json::Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    SandboxInfo { pid, netns_path }
}

/// A client of one runtime socket. Cheap to clone; connects on each use (a runtime that
/// restarts is found again).
#[derive(Debug, Clone)]
pub struct Cri {
    path: PathBuf,
    channel: Channel,
}

/// Whether `path` is a unix socket.
fn is_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(_) => Err("not a unix socket".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such socket".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Cri {
    /// A client of the runtime at `path` (which must be a unix socket; nothing is sent yet).
    pub fn new(path: impl Into<PathBuf>) -> Result<Cri, CriError> {
        let path = path.into();
        let err = |detail: String| CriError::Socket {
            path: path.display().to_string(),
            detail,
        };
        is_socket(&path).map_err(err)?;
        let channel = Dial::from_shared(format!("unix://{}", path.display()))
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(Cri { path, channel })
    }

    /// The first of [`DEFAULT_SOCKETS`] that is a socket.
    pub fn probe() -> Option<Cri> {
        DEFAULT_SOCKETS.iter().find_map(|p| Cri::new(*p).ok())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn call_err(&self, call: &'static str, detail: String) -> CriError {
        CriError::Call {
            call,
            path: self.path.display().to_string(),
            detail,
        }
    }

    async fn call<T>(
        &self,
        call: &'static str,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(self.call_err(call, crate::client::describe(&status))),
            Err(_) => {
                Err(self.call_err(call, format!("no answer in {} s", CALL_TIMEOUT.as_secs())))
            }
        }
    }

    /// The runtime's name and version.
    pub async fn version(&self) -> Result<RuntimeVersion, CriError> {
        let mut c = self.client();
        let v = self
            .call(
                "Version",
                c.version(proto::VersionRequest {
                    version: CRI_VERSION.into(),
                }),
            )
            .await?;
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
            api_version: v.runtime_api_version,
        })
    }

    /// The ready sandbox of pod `namespace/name` (the newest, should there be several), with
    /// what its verbose status says; `None` when the runtime has none.
    pub async fn find_pod(&self, namespace: &str, name: &str) -> Result<Option<Sandbox>, CriError> {
        let mut c = self.client();
        let filter = proto::PodSandboxFilter {
            id: String::new(),
            state: Some(proto::PodSandboxStateValue {
                state: proto::PodSandboxState::SandboxReady as i32,
            }),
            label_selector: [
                (POD_NAMESPACE_LABEL.to_string(), namespace.to_string()),
                (POD_NAME_LABEL.to_string(), name.to_string()),
            ]
            .into(),
        };
        let list = self
            .call(
                "ListPodSandbox",
                c.list_pod_sandbox(proto::ListPodSandboxRequest {
                    filter: Some(filter),
                }),
            )
            .await?;
        // The runtime filtered already; the metadata is checked too (a runtime that ignores
        // the selector must not hand another pod's sandbox out).
        let best = list
            .items
            .into_iter()
            .filter(|s| {
                s.state == proto::PodSandboxState::SandboxReady as i32
                    && s.metadata
                        .as_ref()
                        .is_some_and(|m| m.namespace == namespace && m.name == name)
            })
            .max_by_key(|s| s.created_at);
        let Some(sandbox) = best else {
            return Ok(None);
        };
        let status = self
            .call(
                "PodSandboxStatus",
                c.pod_sandbox_status(proto::PodSandboxStatusRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                    verbose: true,
                }),
            )
            .await?;
        let ips = status
            .status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| {
                std::iter::once(n.ip.clone())
                    .chain(n.additional_ips.iter().map(|i| i.ip.clone()))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Sandbox {
            id: sandbox.id,
            namespace: namespace.into(),
            name: name.into(),
            info: parse_info(&status.info),
            ips,
        }))
    }
}

/// One sandbox of [`FixedRuntime`].
#[derive(Debug, Clone)]
pub struct FixedSandbox {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created_at: i64,
    pub ips: Vec<String>,
    /// The process holding the sandbox's namespaces (`pid` of the verbose info).
    pub pid: u32,
    /// The network namespace's path (the runtime spec's), when it has one.
    pub netns_path: Option<String>,
}

/// A read-only CRI runtime over a fixed set of ready sandboxes: `Version`, `ListPodSandbox`
/// and `PodSandboxStatus` answered as containerd does (its verbose `info` shape). The lab
/// serves its pods with it; it creates and runs nothing.
#[derive(Debug, Clone)]
pub struct FixedRuntime {
    pub name: String,
    pub version: String,
    pub sandboxes: Vec<FixedSandbox>,
}

impl FixedSandbox {
    fn labels(&self) -> HashMap<String, String> {
        [
            (POD_NAME_LABEL.to_string(), self.name.clone()),
            (POD_NAMESPACE_LABEL.to_string(), self.namespace.clone()),
            (POD_UID_LABEL.to_string(), self.uid.clone()),
        ]
        .into()
    }

    fn metadata(&self) -> proto::PodSandboxMetadata {
        proto::PodSandboxMetadata {
            name: self.name.clone(),
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            attempt: 0,
        }
    }

    /// containerd's verbose `info` (the fields netpath reads, and a few around them).
    fn info(&self) -> HashMap<String, String> {
        let namespaces: Vec<serde_json::Value> = ["pid", "ipc", "uts", "mount"]
            .iter()
            .map(|t| serde_json::json!({ "type": t }))
            .chain(std::iter::once(match &self.netns_path {
                Some(path) => serde_json::json!({ "type": "network", "path": path }),
                None => serde_json::json!({ "type": "network" }),
            }))
            .collect();
        let info = serde_json::json!({
            "pid": self.pid,
            "processStatus": "running",
            "netNamespaceClosed": false,
            "runtimeType": "netpath-lab",
            "config": { "metadata": self.metadata_json() },
            "runtimeSpec": { "linux": { "namespaces": namespaces } },
        });
        [("info".to_string(), info.to_string())].into()
    }

    fn metadata_json(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name, "uid": self.uid, "namespace": self.namespace, "attempt": 0 })
    }
}

#[tonic::async_trait]
impl proto::runtime_service_server::RuntimeService for FixedRuntime {
    async fn version(
        &self,
        _req: tonic::Request<proto::VersionRequest>,
    ) -> Result<tonic::Response<proto::VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: self.name.clone(),
            runtime_version: self.version.clone(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn pod_sandbox_status(
        &self,
        req: tonic::Request<proto::PodSandboxStatusRequest>,
    ) -> Result<tonic::Response<proto::PodSandboxStatusResponse>, tonic::Status> {
        let req = req.into_inner();
        let s = self
            .sandboxes
            .iter()
            .find(|s| s.id == req.pod_sandbox_id)
            .ok_or_else(|| {
                tonic::Status::not_found(format!(
                    "an error occurred when try to find sandbox: not found: {}",
                    req.pod_sandbox_id
                ))
            })?;
        let mut ips = s.ips.iter();
        Ok(tonic::Response::new(proto::PodSandboxStatusResponse {
            status: Some(proto::PodSandboxStatus {
                id: s.id.clone(),
                metadata: Some(s.metadata()),
                state: proto::PodSandboxState::SandboxReady as i32,
                created_at: s.created_at,
                network: Some(proto::PodSandboxNetworkStatus {
                    ip: ips.next().cloned().unwrap_or_default(),
                    additional_ips: ips.map(|ip| proto::PodIp { ip: ip.clone() }).collect(),
                }),
                labels: s.labels(),
                annotations: HashMap::new(),
                runtime_handler: String::new(),
            }),
            info: if req.verbose {
                s.info()
            } else {
                HashMap::new()
            },
            timestamp: 0,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: tonic::Request<proto::ListPodSandboxRequest>,
    ) -> Result<tonic::Response<proto::ListPodSandboxResponse>, tonic::Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let items = self
            .sandboxes
            .iter()
            .filter(|s| filter.id.is_empty() || s.id == filter.id)
            .filter(|_| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|v| v.state == proto::PodSandboxState::SandboxReady as i32)
            })
            .filter(|s| {
                let labels = s.labels();
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|s| proto::PodSandbox {
                id: s.id.clone(),
                metadata: Some(s.metadata()),
                state: proto::PodSandboxState::SandboxReady as i32,
                created_at: s.created_at,
                labels: s.labels(),
                annotations: HashMap::new(),
                runtime_handler: String::new(),
            })
            .collect();
        Ok(tonic::Response::new(proto::ListPodSandboxResponse {
            items,
        }))
    }
}

/// Serves `runtime` on the unix socket `listener` until `shutdown` completes.
pub async fn serve_unix(
    runtime: FixedRuntime,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tonic::transport::Server::builder()
        .add_service(proto::runtime_service_server::RuntimeServiceServer::new(
            runtime,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> SandboxInfo {
        parse_info(&[("info".to_string(), json.to_string())].into())
    }

    /// containerd's `SandboxInfo` (internal/cri/types/sandbox_info.go, as `crictl inspectp`
    /// shows it): `pid`, `processStatus`, ..., `runtimeSpec` with the namespace paths.
    #[test]
    fn containerd_verbose_info() {
        let json = r#"{
          "pid": 4242,
          "processStatus": "running",
          "netNamespaceClosed": false,
          "image": "registry.k8s.io/pause:3.9",
          "snapshotKey": "3c1c",
          "snapshotter": "overlayfs",
          "runtimeHandler": "",
          "runtimeType": "io.containerd.runc.v2",
          "runtimeOptions": {"systemd_cgroup": true},
          "config": {"metadata": {"name": "web-0", "uid": "5c1e", "namespace": "shop", "attempt": 0}},
          "runtimeSpec": {
            "ociVersion": "1.1.0",
            "process": {"args": ["/pause"]},
            "linux": {
              "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": "/var/run/netns/cni-7d2b9a1e-0c1f-4e38-a7b5-2f0c5d6f7a8b"}
              ]
            }
          },
          "cniResult": {"Interfaces": {"eth0": {"IPConfigs": [{"IP": "10.244.1.7"}]}}}
        }"#;
        assert_eq!(
            info(json),
            SandboxInfo {
                pid: Some(4242),
                netns_path: Some("/var/run/netns/cni-7d2b9a1e-0c1f-4e38-a7b5-2f0c5d6f7a8b".into()),
            }
        );
    }

    /// CRI-O's (server/sandbox_status.go, createSandboxInfo): `image`, `pid`, `runtimeSpec`
    /// with an infra container; only `runtimeSpec` without one (drop_infra_ctr).
    #[test]
    fn crio_verbose_info() {
        let with_infra = r#"{"image":"registry.k8s.io/pause:3.9","pid":918,
          "runtimeSpec":{"ociVersion":"1.0.2-dev","linux":{"namespaces":[
            {"type":"pid"},{"type":"network","path":"/var/run/netns/8a1b2c3d-aaaa-bbbb-cccc-0123456789ab"},
            {"type":"ipc","path":"/var/run/ipcns/8a1b"}]}}}"#;
        assert_eq!(
            info(with_infra),
            SandboxInfo {
                pid: Some(918),
                netns_path: Some("/var/run/netns/8a1b2c3d-aaaa-bbbb-cccc-0123456789ab".into()),
            }
        );
        let spoofed = r#"{"runtimeSpec":{"linux":{"namespaces":[
            {"type":"network","path":"/var/run/netns/0f0e"}]}}}"#;
        assert_eq!(
            info(spoofed),
            SandboxInfo {
                pid: None,
                netns_path: Some("/var/run/netns/0f0e".into()),
            }
        );
    }

    #[test]
    fn what_is_missing_or_malformed_is_not_known() {
        assert_eq!(parse_info(&HashMap::new()), SandboxInfo::default());
        for json in [
            "not json",
            "{}",
            r#"{"pid":0}"#,
            r#"{"pid":-1}"#,
            r#"{"pid":"12"}"#,
            r#"{"pid":99999999999}"#,
            // A host-network sandbox: no network namespace of its own in the spec.
            r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}}"#,
            r#"{"runtimeSpec":{"linux":{"namespaces":{"type":"network"}}}}"#,
        ] {
            assert_eq!(info(json), SandboxInfo::default(), "{json}");
        }
        // The pid alone is enough.
        assert_eq!(info(r#"{"pid":7}"#).pid, Some(7));
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let err = Cri::new(&missing).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("CRI socket {}: no such socket", missing.display())
        );
        let err = Cri::new(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("not a unix socket"), "{err}");
    }
}

#[cfg(test)]
mod served {
    use super::*;

    /// The client against the read-only runtime, over a real unix socket.
    #[tokio::test]
    async fn the_client_finds_a_sandbox_of_the_fixed_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let sandbox = |name: &str, created_at: i64, pid: u32| FixedSandbox {
            id: format!("{name}-{created_at}"),
            namespace: "shop".into(),
            name: name.into(),
            uid: "u".into(),
            created_at,
            ips: vec!["10.244.1.7".into(), "fd00::7".into()],
            pid,
            netns_path: Some(format!("/var/run/netns/cni-{name}")),
        };
        let runtime = FixedRuntime {
            name: "netpath-lab".into(),
            version: "1.2.3".into(),
            sandboxes: vec![
                sandbox("web-0", 1, 11),
                sandbox("web-0", 5, 55),
                sandbox("db-0", 9, 99),
            ],
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_unix(runtime, listener, async {
            let _ = stopped.await;
        }));
        let cri = Cri::new(&path).unwrap();
        let v = cri.version().await.unwrap();
        assert_eq!(v.to_string(), "netpath-lab 1.2.3 (CRI v1)");
        let found = cri.find_pod("shop", "web-0").await.unwrap().unwrap();
        assert_eq!(found.id, "web-0-5", "the newest sandbox");
        assert_eq!(found.info.pid, Some(55));
        assert_eq!(
            found.info.netns_path.as_deref(),
            Some("/var/run/netns/cni-web-0")
        );
        assert_eq!(found.ips, ["10.244.1.7", "fd00::7"]);
        assert_eq!(cri.find_pod("other", "web-0").await.unwrap(), None);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        // Nobody listens any more: one line naming the socket and the call.
        let err = cri.version().await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("CRI Version on {}: ", path.display())),
            "{err}"
        );
    }
}
