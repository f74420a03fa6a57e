//! Command-line interface: flags are parsed and validated here, then handed to the library.
pub mod agent;
pub mod capture;
pub mod certs;
pub mod filter;
pub mod render;
pub mod trace;
pub mod watch;

use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::time::Instant;

/// When a `--duration SECS` run ends (`None`: it runs until stopped).
fn deadline(duration: Option<f64>) -> Option<Instant> {
    duration.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)))
}

/// Waits until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// netpath: see where pod-to-pod packets go, where they die, and why, in IPv4 and IPv6.
///
/// Kernel programs (tc/tcx and BTF tracepoints) follow each packet hop by hop through veths,
/// bridges, tunnels and NAT, and report drops with the kernel's own drop reason.
/// Needs Linux with BTF (/sys/kernel/btf/vmlinux) and root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON).
#[derive(Debug, Parser)]
#[command(name = "netpath", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe FROM -> TO in IPv4 and IPv6, follow the packets on every node and say, per family,
    /// whether they arrived and, if not, where they died and why.
    Trace(trace::TraceArgs),
    /// Print live kernel events (hops and drops) from chosen devices and namespaces.
    Watch(watch::WatchArgs),
    /// Build and manage the built-in lab: dual-stack clusters in network namespaces,
    /// healthy or reproducing a seed incident.
    #[command(subcommand)]
    Lab(tracer::lab::cli::LabCommand),
    /// Capture packets like tcpdump (pcap-filter syntax, pcapng output), optionally with
    /// packets the kernel dropped.
    Capture(capture::CaptureArgs),
    /// Serve this node to netpath CLIs (cluster mode): its kernel's events, probes from its
    /// namespaces and their state, over gRPC with mutual TLS.
    Agent(agent::AgentArgs),
    /// Make the cluster's mutual-TLS material: a CA, agent certificates per node, a client
    /// certificate.
    Certs(certs::CertsArgs),
}
