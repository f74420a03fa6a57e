//! `netpath agent`: serve this node's world (kernel events, probes, inspection) to the CLI
//! over gRPC with mutual TLS, optionally confined to some namespaces (the lab's nodes share
//! one kernel).
use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::Args;
use netpath_agent::server::{NodeInfo, NodeServer, TlsFiles};
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

pub async fn run(args: AgentArgs) -> Result<i32> {
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
    let info = NodeInfo {
        features: features(&release),
        kernel_release: release,
        boot_offset_ns: names::boot_offset_ns() as i64,
    };
    // The programs are loaded and attached once, here: a trace then only sets the filter.
    let t0 = std::time::Instant::now();
    let node = args.node.clone();
    let scope = confine.clone();
    let events = tokio::task::spawn_blocking(move || ResidentSource::start(&node, scope))
        .await?
        .context("loading the kernel programs")?;
    eprintln!(
        "netpath agent: node {}: programs loaded and attached to {} devices in {} ms",
        args.node,
        events.attached_devices(),
        t0.elapsed().as_millis()
    );
    let mut server = NodeServer::new(
        args.node.clone(),
        Arc::new(LiveInspector),
        Arc::new(LocalProber),
        Arc::new(events),
        info,
    )
    .with_queue(args.client_queue)
    .with_packets(Arc::new(NodePackets::new(&args.node)))
    .with_resolver(Arc::new(NodeResolver::new(
        args.node.clone(),
        confine.clone(),
    )));
    if let Some(set) = confine {
        server = server.confine(set);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    eprintln!(
        "netpath agent: node {} listening on {} (mutual TLS)",
        args.node,
        listener.local_addr()?
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("netpath agent: node {} stopping", args.node);
    };
    server.serve(listener, &tls, shutdown).await?;
    Ok(0)
}
