//! `netpath agent`: serve this node's world (kernel events, probes, inspection) to the CLI
//! over gRPC with mutual TLS, optionally confined to some namespaces (the lab's nodes share
//! one kernel).
use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::Args;
use netpath_agent::{
    cri::Cri,
    server::{NodeInfo, NodeServer, TlsFiles},
};
use tracer::{
    capture::serve::NodePackets,
    node::{
        inspect::LiveInspector, kernel::is_root, names, prober::LocalProber,
        resident::ResidentSource, resolve::NodeResolver,
    },
};

#[derive(Debug, Args)]
#[command(
    after_help = "The agent serves with the certificate DIR/NODE.pem (key DIR/NODE.key) \
and accepts only clients with a certificate from DIR/ca.pem (`netpath certs` makes them all).

Example:
  netpath certs --out /etc/netpath/tls --nodes node-1=10.0.0.1
  netpath agent --node node-1 --listen 10.0.0.1:7101 --tls-dir /etc/netpath/tls
  netpath trace pod-a pod-c --agents node-1=10.0.0.1:7101,node-2=10.0.0.2:7101 --tls-dir DIR"
)]
pub struct AgentArgs {
    /// This node's name: events are stamped with it, and its certificate is DIR/NAME.pem.
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Address and port to listen on (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Directory with ca.pem, NODE.pem and NODE.key.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: PathBuf,
    /// Only these namespaces may be traced, probed from or inspected (comma-separated
    /// `ip netns` names, `root` for the agent's own).
    #[arg(long, value_name = "NS,...", value_delimiter = ',')]
    pub netns_scope: Vec<String>,
    /// Stream messages (of up to 64 events) queued per client; beyond, events are dropped
    /// for that client and counted.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub client_queue: usize,
    /// The container runtime's CRI socket: pods (`NS/POD`) are found by their sandbox there
    /// first, then by their addresses [default: the first of /run/containerd/containerd.sock,
    /// /run/crio/crio.sock, /run/k3s/containerd/containerd.sock that exists; none: addresses
    /// only].
    #[arg(long, value_name = "PATH", conflicts_with = "no_cri")]
    pub cri_socket: Option<PathBuf>,
    /// Do not ask the container runtime: pods are found by their addresses only.
    #[arg(long)]
    pub no_cri: bool,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What this kernel offers the tracer, for `Info`.
fn features(release: &str) -> Vec<(String, bool, String)> {
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    vec![
        (
            "btf".into(),
            btf,
            if btf {
                ""
            } else {
                "no /sys/kernel/btf/vmlinux"
            }
            .into(),
        ),
        (
            "tc".into(),
            true,
            if version >= (6, 6) { "tcx" } else { "clsact" }.into(),
        ),
        ("root".into(), is_root(), String::new()),
    ]
}

/// The container runtime to ask about pods (`--cri-socket`, else the first usual socket
/// there is), said once in the log, and the `cri` feature for `Info`. A socket given that is
/// not one, or does not answer, is an error.
async fn container_runtime(args: &AgentArgs) -> Result<(Option<Cri>, (String, bool, String))> {
    let node = &args.node;
    let cri = match &args.cri_socket {
        Some(path) => Some(Cri::new(path).map_err(|e| anyhow::anyhow!("--cri-socket: {e}"))?),
        None if args.no_cri => None,
        None => Cri::probe(),
    };
    let Some(cri) = cri else {
        let why = if args.no_cri {
            "--no-cri".to_string()
        } else {
            format!(
                "no container runtime socket ({})",
                netpath_agent::cri::DEFAULT_SOCKETS.join(", ")
            )
        };
        eprintln!("netpath agent: node {node}: {why}: pods are found by their addresses only");
        return Ok((
            None,
            ("cri".into(), false, format!("{why}: address search only")),
        ));
    };
    let path = cri.path().display().to_string();
    match cri.version().await {
        Ok(v) => {
            eprintln!(
                "netpath agent: node {node}: pods are found through CRI at {path} ({v}), then by their addresses"
            );
            Ok((Some(cri), ("cri".into(), true, format!("{path}: {v}"))))
        }
        Err(e) if args.cri_socket.is_some() => Err(anyhow::anyhow!("--cri-socket: {e}")),
        Err(e) => {
            // Found, but not answering now: asked again at each pod (it may be restarting).
            eprintln!(
                "netpath agent: node {node}: {e}: pods are found by their addresses until it answers"
            );
            Ok((Some(cri), ("cri".into(), false, e.to_string())))
        }
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (an agent started from a shell that goes away must
/// still detach everything). The handlers are in place from the call on.
fn stop_signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

pub async fn run(args: AgentArgs) -> Result<i32> {
    // First: a signal while the programs load must still detach them.
    let mut stop = Box::pin(stop_signals()?);
    netpath_agent::certs::check_name(&args.node)?;
    // Capabilities, not the user id: the agent enters namespaces (CAP_SYS_ADMIN) and sends
    // probes (CAP_NET_RAW) on top of tracing.
    tracer::node::caps::check_tracing().map_err(anyhow::Error::msg)?;
    let eff = tracer::node::caps::effective().unwrap_or(0);
    use tracer::node::caps::{lacking, CAP_NET_RAW, CAP_SYS_ADMIN};
    if let Some(missing) = lacking(eff, &[CAP_SYS_ADMIN, CAP_NET_RAW]).first() {
        bail!(
            "the agent needs {} as well (namespaces, probes): run as root or grant it",
            missing.name
        );
    }
    let tls = TlsFiles::load(&args.tls_dir, &args.node).context("TLS material")?;
    let confine = (!args.netns_scope.is_empty())
        .then(|| args.netns_scope.iter().cloned().collect::<BTreeSet<_>>());
    let release = kernel_release();
    let (cri, cri_feature) = container_runtime(&args).await?;
    let mut features = features(&release);
    features.push(cri_feature);
    let info = NodeInfo {
        features,
        kernel_release: release,
        boot_offset_ns: names::boot_offset_ns() as i64,
    };
    // The programs are loaded and attached once, here: a trace then only sets the filter.
    let t0 = std::time::Instant::now();
    let node = args.node.clone();
    let scope = confine.clone();
    let mut loading = tokio::task::spawn_blocking(move || ResidentSource::start(&node, scope));
    let events = tokio::select! {
        loaded = &mut loading => loaded?.context("loading the kernel programs")?,
        () = &mut stop => {
            // Loading cannot be cut short: let it finish, then detach what it attached.
            eprintln!("netpath agent: node {}: stopping once the programs are loaded", args.node);
            drop(loading.await);
            return Ok(0);
        }
    };
    eprintln!(
        "netpath agent: node {}: programs loaded and attached to {} devices in {} ms",
        args.node,
        events.attached_devices(),
        t0.elapsed().as_millis()
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let listening = listener.local_addr()?;
    events.exclude_own_traffic(listening);
    let mut server = NodeServer::new(
        args.node.clone(),
        Arc::new(LiveInspector),
        Arc::new(LocalProber),
        Arc::new(events),
        info,
    )
    .with_queue(args.client_queue)
    .with_packets(Arc::new(NodePackets::new(&args.node)))
    .with_resolver(Arc::new(match cri {
        Some(cri) => NodeResolver::new(args.node.clone(), confine.clone()).with_cri(cri),
        None => NodeResolver::new(args.node.clone(), confine.clone()),
    }));
    if let Some(set) = confine {
        server = server.confine(set);
    }
    eprintln!(
        "netpath agent: node {} listening on {listening} (mutual TLS)",
        args.node
    );
    let node = args.node.clone();
    let shutdown = async move {
        stop.await;
        eprintln!("netpath agent: node {node} stopping");
    };
    server.serve(listener, &tls, shutdown).await?;
    Ok(0)
}
