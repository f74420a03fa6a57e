//! Command-line interface: flags are parsed and validated here, then handed to the library.
pub mod agent;
pub mod bench;
pub mod capture;
pub mod capture_agents;
pub mod certs;
pub mod check;
pub mod cleanup;
pub mod diff;
pub mod filter;
pub mod kube;
pub mod picture;
pub mod render;
pub mod stop;
pub mod trace;
pub mod watch;

use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::time::Instant;

/// The longest `--duration`/`--timeout` accepted: a year.
const MAX_SECS: f64 = 366.0 * 24.0 * 3600.0;

/// Seconds given on the command line: a finite number above 0, at most a year (`inf`, `nan`,
/// `-1` are one clear line, `netpath: ...`, not a panic later).
pub fn check_secs(flag: &str, secs: Option<f64>) -> anyhow::Result<Option<f64>> {
    match secs {
        Some(s) if !(s.is_finite() && s > 0.0 && s <= MAX_SECS) => {
            anyhow::bail!("{flag} must be a number of seconds above 0 and at most a year, not {s}")
        }
        other => Ok(other),
    }
}

/// The largest ring buffer accepted, in KiB (1 GiB: its size in bytes must fit the kernel's
/// u32).
const MAX_RING_KIB: u32 = 1 << 20;

/// A ring buffer size given in KiB as bytes: a power of two from 4 KiB to 1 GiB.
pub fn ring_bytes(flag: &str, kib: u32) -> anyhow::Result<u32> {
    if !kib.is_power_of_two() || !(4..=MAX_RING_KIB).contains(&kib) {
        anyhow::bail!("{flag} must be a power of two from 4 to {MAX_RING_KIB} (KiB), not {kib}");
    }
    Ok(kib * 1024)
}

/// The network namespace of a lab pod or node (`pod-a`, `node-1/pod-b`), through the resolver
/// `trace` uses.
pub fn pod_netns(flag: &str, spec: &str) -> anyhow::Result<String> {
    let resolver = tracer::node::resolve::LocalResolver::load(&tracer::lab::LabOptions::default())?;
    let ep = resolver.lookup(spec)?;
    ep.netns.ok_or_else(|| {
        anyhow::anyhow!(
            "{flag} {spec}: {} is not in a network namespace here",
            ep.name
        )
    })
}

/// A namespace given by its `ip netns` name, or else by a lab pod or node name (`pod-a`):
/// what people type is resolved once, here.
pub fn netns_named(flag: &str, name: &str) -> anyhow::Result<String> {
    if name.is_empty() || name == "root" || tracer::node::netns::by_name(name).is_ok() {
        return Ok(name.to_string());
    }
    pod_netns(flag, name).map_err(|e| {
        anyhow::anyhow!("{flag} {name}: network namespace not found, nor a lab pod or node ({e})")
    })
}

/// When a `--duration SECS` run ends (`None`: it runs until stopped).
fn deadline(duration: Option<f64>) -> Option<Instant> {
    // check_secs bounded the value: from_secs_f64 cannot panic.
    duration.map(|s| Instant::now() + Duration::from_secs_f64(s))
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
    /// Compare two saved trace reports (`trace --json`): per family what changed in verdict,
    /// cause and place, and where the paths part ways; with one report, its IPv4 and IPv6.
    Diff(diff::DiffArgs),
    /// Print a saved trace report (`trace --json`) as `trace` would: the table, the paths
    /// (-v), the diagram (--picture), or an SVG or Graphviz picture (--format).
    Render(trace::RenderArgs),
    /// Print live kernel events (hops and drops) from chosen devices and namespaces.
    Watch(watch::WatchArgs),
    /// Build and manage the built-in lab: dual-stack clusters in network namespaces,
    /// healthy or reproducing a seed incident.
    #[command(subcommand)]
    Lab(tracer::lab::cli::LabCommand),
    /// Capture packets like tcpdump (pcap-filter syntax, pcapng output), optionally with
    /// packets the kernel dropped.
    Capture(capture::CaptureArgs),
    /// Say what this kernel supports and what netpath will use, one line each; exit 1 when
    /// netpath cannot work here.
    Check(check::CheckArgs),
    /// Serve this node to netpath CLIs (cluster mode): its kernel's events, probes from its
    /// namespaces and their state, over gRPC with mutual TLS.
    Agent(agent::AgentArgs),
    /// Make the cluster's mutual-TLS material: a CA, agent certificates per node, a client
    /// certificate.
    Certs(certs::CertsArgs),
    /// Remove what a killed netpath left in the kernel (clsact filters and qdiscs on kernels
    /// without tcx); never another tool's.
    Cleanup(cleanup::CleanupArgs),
    /// Decoding speed on one core, records replayed into each output (`cargo xtask bench
    /// decode`).
    #[command(hide = true)]
    BenchDecode(bench::BenchDecodeArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_ring_sizes_out_of_range_are_refused_not_panicked_on() {
        assert_eq!(check_secs("--duration", Some(2.5)).unwrap(), Some(2.5));
        assert_eq!(check_secs("--duration", None).unwrap(), None);
        for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.0, -1.0, 1e30] {
            let err = check_secs("--duration", Some(bad)).unwrap_err().to_string();
            assert!(err.contains("--duration"), "{err}");
        }
        assert_eq!(ring_bytes("--ring-kib", 4096).unwrap(), 4 << 20);
        for bad in [0, 3, 6000, 4_194_304, 1 << 21] {
            let err = ring_bytes("--ring-kib", bad).unwrap_err().to_string();
            assert!(err.contains("--ring-kib"), "{err}");
        }
    }
}
