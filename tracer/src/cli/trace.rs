//! `netpath trace FROM TO`: probe both families from FROM's namespace, follow the packets on
//! every node, and say per family whether they got through and, if not, where and why.
use std::{io::IsTerminal, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Args;
use netpath_agent::{
    client::{AgentAddr, AgentsResolver, RemoteWorld},
    server::TlsFiles,
};
use netpath_core::{
    analysis::session::{self, Notice, TraceConfig},
    model::{Family, TraceReport},
    world::{Resolver, World},
};
use tracer::{
    lab::LabOptions,
    node::{
        inspect::LiveInspector, prober::LocalProber, resolve::LocalResolver,
        source::LocalEventSource,
    },
};

use super::{
    picture::{self, Format},
    render::{render, Style},
};

#[derive(Debug, Args)]
#[command(
    after_help = "FROM and TO: a lab pod (`pod-a`, `node-1/pod-b`), a lab node (`node-2`), a Service \
(`svc/web`), `netns:NAME` for any network namespace, or an address (`10.244.2.3`, \
`[fd00:10:96::10]:80`); an address is looked up in the lab, then in every named namespace, \
then (with --agents) by the agents: the namespace of the node that holds it.
With a Kubernetes flag, names come from the cluster's API: `NAMESPACE/POD`, `pod/NAME`, \
`svc/NAME` (`svc/NAMESPACE/NAME`), `node/NAME` or an address; with --tls-dir and no --agents, \
the node agents are the `netpath-agent` DaemonSet's pods.
From a lab pod or node, a trace goes through the lab's node agents (started by `lab up`), as on a cluster; --local traces with this machine's kernel instead, which also sees the lab's underlay.

Exit status: 0 when every asked family was delivered, 1 when one was not, 2 on a usage or
environment error, 130/143/129 when ended by SIGINT/SIGTERM/SIGHUP.

Examples:
  netpath trace pod-a pod-c                 ICMP echo in IPv4 and IPv6, cross-node
  netpath trace pod-a svc/web               TCP SYN to the Service port, through its DNAT
  netpath trace pod-a pod-c --port 8080     TCP SYN instead of ICMP
  netpath trace pod-a pod-c -v              also the paths hop by hop and the evidence
  netpath trace pod-a pod-c --picture       the paths drawn after the table
  netpath trace pod-a pod-c --format svg > path.svg
  netpath trace pod-a pod-c --family 6 --json
  netpath trace pod-a pod-c --local         this machine's kernel, not the lab's agents
  netpath trace netns:client 10.50.2.2      namespaces built by hand work the same way
  netpath trace pod-a pod-c --passive --timeout 30   wait for real traffic instead of probing
  netpath trace default/pod-a svc/web --kubeconfig /run/netpath/kubeconfig   the lab's API
  kubectl netpath trace -n shop web-0 svc/db --tls-dir ~/.netpath/tls        a real cluster

JSON schema (--json): docs/trace.md"
)]
pub struct TraceArgs {
    /// Where the traffic starts: the probes are sent from its network namespace.
    #[arg(value_name = "FROM")]
    pub from: String,
    /// Where it should arrive. Optional when --service is given.
    #[arg(value_name = "TO", required_unless_present = "service")]
    pub to: Option<String>,
    /// Probe a Service (`web`, `svc/web` or a ClusterIP) instead of TO.
    #[arg(long, value_name = "NAME|IP", conflicts_with = "to")]
    pub service: Option<String>,
    /// Probe with TCP SYN (or UDP with --udp) to this port instead of ICMP echo. Services are
    /// probed on their port by default.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Probe with a UDP datagram to --port instead of TCP.
    #[arg(long, requires = "port")]
    pub udp: bool,
    /// Payload bytes of ICMP/UDP probes, sent without fragmentation (like `ping -s -M do`):
    /// find MTU problems on tunnels.
    #[arg(long, value_name = "BYTES", default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=65000))]
    pub size: u16,
    /// Do not send anything: wait for real traffic between FROM and TO (see --timeout).
    #[arg(long)]
    pub passive: bool,
    /// Seconds to wait for answers (active; default 2: a first packet may wait 1 s for a
    /// neighbour) or for traffic (--passive; default 10). Drops end the wait early.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Only this family.
    #[arg(long, value_name = "4|6", value_parser = ["4", "6"])]
    pub family: Option<String>,
    /// Print the report as JSON (schema: docs/trace.md); errors too, as
    /// `{"schema_version":1,"error":"..."}` on standard output.
    #[arg(long, conflicts_with_all = ["format", "picture", "verbose"])]
    pub json: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Lab state directory [default: $NETPATH_STATE, else /run/netpath].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Ring buffer size in KiB (power of two).
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    pub ring_kib: u32,
    /// Ask these node agents instead of this machine's kernel (`netpath agent`): probes go
    /// through the source node's agent, events come from all of them. `@NETNS` after an
    /// address dials it from that `ip netns` namespace (the lab's agents: `lab status`).
    #[arg(
        long,
        value_name = "NODE=ADDR:PORT[@NETNS],...",
        value_delimiter = ',',
        requires = "tls_dir"
    )]
    pub agents: Vec<AgentAddr>,
    /// Directory with ca.pem, client.pem and client.key (`netpath certs`), for --agents (or
    /// the agents found through the Kubernetes API).
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Trace with this machine's kernel even when the lab's agents run (by default a trace
    /// between lab pods goes through them, as on a cluster). The local view also sees the
    /// lab's underlay, which no agent serves.
    #[arg(long, conflicts_with_all = ["agents", "tls_dir"])]
    pub local: bool,
    /// Also follow the packets through the kernel functions matching this glob that take an
    /// skb (kprobes, where the kernel has them): each shows in the path as `in FUNCTION()`.
    #[arg(long, value_name = "PATTERN")]
    pub functions: Option<String>,
    #[command(flatten)]
    pub kube: super::kube::KubeArgs,
}

/// How a report is printed (`trace`, and `render` for a saved one).
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Also print each family's explanation, evidence and path hop by hop.
    #[arg(short, long)]
    pub verbose: bool,
    /// text: the verdict table and one line per family; svg, dot: the paths as a picture (an
    /// SVG image; a Graphviz digraph).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// With the text format: draw the paths after the table (nodes as boxes, each family's
    /// steps in a column, the drop marked).
    #[arg(long)]
    pub picture: bool,
}

impl OutputArgs {
    /// The report printed as asked.
    pub fn print(&self, report: &TraceReport, style: Style) -> String {
        match self.format {
            Format::Text => {
                let mut text = render(report, style, self.verbose);
                if self.picture {
                    text.push('\n');
                    text.push_str(&picture::text(report));
                }
                text
            }
            Format::Svg => picture::svg(report),
            Format::Dot => picture::dot(report),
        }
    }
}

/// An error as `trace --json` prints it: one JSON object, the schema version first.
pub fn json_error(message: &str) -> String {
    #[derive(serde::Serialize)]
    struct JsonError<'a> {
        schema_version: u32,
        error: &'a str,
    }
    let error = JsonError {
        schema_version: TraceReport::SCHEMA_VERSION,
        error: message,
    };
    serde_json::to_string(&error).unwrap_or_default()
}

/// Colours only on a terminal, and not with NO_COLOR.
fn style() -> Style {
    Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// Writes `text` to standard output; a closed stdout (`| head`) is not an error worth a panic:
/// the exit code still tells.
pub fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// `netpath render REPORT.json`: a saved `trace --json` report printed as `trace` would.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  netpath trace pod-a pod-c --json > t.json
  netpath render t.json                      the table and one line per family
  netpath render t.json -v --picture         the paths hop by hop, then the diagram
  netpath render t.json --format svg > t.svg

Exit status: 0 when printed, 2 on an error (a missing file, not a trace report).")]
pub struct RenderArgs {
    /// The saved report (`-` for standard input).
    #[arg(value_name = "REPORT.json")]
    pub file: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run_render(args: RenderArgs) -> Result<i32> {
    let report = super::diff::load_report(&args.file)?;
    print(&args.output.print(&report, style()));
    Ok(0)
}

impl TraceArgs {
    /// The flags, checked, as the library's request.
    pub fn config(&self) -> Result<TraceConfig> {
        if let Some(t) = self.timeout {
            if !(t > 0.0 && t <= 3600.0) {
                bail!("--timeout must be between 0 and 3600 seconds");
            }
        }
        let to = match (&self.to, &self.service) {
            (Some(t), _) => t.clone(),
            (None, Some(s)) if s.starts_with("svc/") || s.parse::<IpAddr>().is_ok() => s.clone(),
            (None, Some(s)) => format!("svc/{s}"),
            (None, None) => bail!("TO or --service is required"),
        };
        Ok(TraceConfig {
            from: self.from.clone(),
            to,
            port: self.port,
            udp: self.udp,
            size: self.size,
            passive: self.passive,
            timeout: self
                .timeout
                .map(Duration::from_secs_f64)
                .unwrap_or_else(|| TraceConfig::default_timeout(self.passive)),
            family: self
                .family
                .as_deref()
                .map(|f| f.parse::<Family>().expect("validated by clap")),
            ring_bytes: super::ring_bytes("--ring-kib", self.ring_kib)?,
            run_id: std::process::id() as u16,
            functions: match &self.functions {
                Some(p) => match glob::Pattern::new(p) {
                    Ok(_) => Some(p.clone()),
                    Err(e) => bail!("--functions {p:?} is not a glob pattern: {e}"),
                },
                None => None,
            },
        })
    }
}

/// Runs the trace; with --json, an error is a JSON object on standard output (exit 2).
pub async fn run(args: TraceArgs, signals: super::stop::Stop) -> Result<i32> {
    let json = args.json;
    match trace(args, signals).await {
        Err(e) if json => {
            print(&(json_error(&crate::one_line(&e)) + "\n"));
            Ok(2)
        }
        result => result,
    }
}

/// The lab's agents, when the lab runs them and FROM is one of its nodes or pods: a lab trace
/// goes through them by default, as one on a cluster does.
async fn lab_agents(args: &TraceArgs, local: &LocalResolver) -> Result<Option<RemoteWorld>> {
    let dir = LabOptions::new(args.state.clone()).state_dir;
    let Ok(Some(rec)) = tracer::lab::agents::record(&dir) else {
        return Ok(None);
    };
    let from_node = match local.resolve(&args.from).await {
        Ok(ep) if local.lab().is_some() => ep.node,
        _ => None,
    };
    let Some(node) = from_node else {
        return Ok(None);
    };
    if !rec.agents.iter().any(|a| a.node == node) {
        return Ok(None);
    }
    let down: Vec<&str> = rec
        .agents
        .iter()
        .filter(|a| !tracer::lab::agents::running(&rec, a))
        .map(|a| a.node.as_str())
        .collect();
    if !down.is_empty() {
        bail!(
            "the lab's agents of {} are not running: `netpath lab up` again, or trace with --local",
            down.join(", ")
        );
    }
    let tls = TlsFiles::load(&rec.tls_dir, "client").context("the lab's TLS material")?;
    let agents: Vec<AgentAddr> = rec.agents.iter().map(|a| a.dial()).collect();
    Ok(Some(RemoteWorld::connect(&agents, &tls).await?))
}

async fn trace(args: TraceArgs, mut signals: super::stop::Stop) -> Result<i32> {
    let config = args.config()?;
    let kube_opts = args.kube.options()?;
    let local = LocalResolver::load(&LabOptions::new(args.state.clone()))?;
    // Through the Kubernetes API, with the cluster's agents when TLS material is given.
    let kube = match &kube_opts {
        Some(opts) => Some(super::kube::resolver(opts, args.tls_dir.is_some(), &local).await?),
        None => None,
    };
    let agents = match (&kube, &args.tls_dir) {
        (Some((_, k)), Some(_)) if args.agents.is_empty() => super::kube::agents(k).await?,
        _ => args.agents.clone(),
    };
    let remote = match &args.tls_dir {
        Some(dir) if !agents.is_empty() => {
            let tls = TlsFiles::load(dir, "client").context("TLS material")?;
            Some(RemoteWorld::connect(&agents, &tls).await?)
        }
        None if kube.is_none() && !args.local => lab_agents(&args, &local).await?,
        _ => None,
    };
    let via_lab_agents = remote.is_some() && args.tls_dir.is_none();
    // With agents, what this machine cannot place (another node's namespace) the agents may.
    let with_agents = match (&kube, &remote) {
        (None, Some(r)) => Some(AgentsResolver::new(&local, r)),
        _ => None,
    };
    // Through the API with agents: each pod's namespace as its node's agent finds it.
    let pods_on_agents = match (&kube, &remote) {
        (Some((kube, _)), Some(agents)) => Some(super::kube::PodsOnAgents { kube, agents }),
        _ => None,
    };
    let resolver: &dyn Resolver = match (&kube, &with_agents) {
        (Some(_), _) if pods_on_agents.is_some() => pods_on_agents.as_ref().expect("checked"),
        (Some((r, _)), _) => r,
        (None, Some(w)) => w,
        (None, None) => &local,
    };
    let world = match &remote {
        Some(r) => World {
            resolver,
            inspector: r,
            prober: r,
            events: r,
        },
        None => World {
            resolver,
            inspector: &LiveInspector,
            prober: &LocalProber,
            events: &LocalEventSource,
        },
    };
    // Passive mode always says when it is ready: whoever makes the traffic waits for it.
    let chatty = args.passive || (!args.json && std::io::stderr().is_terminal());
    if via_lab_agents && chatty {
        eprintln!("netpath: through the lab's node agents (--local: this machine's kernel, which also sees the underlay)");
    }
    let notify = move |n: Notice| match n {
        Notice::Unavailable(why) => eprintln!("netpath: not available on this kernel: {why}"),
        Notice::Note(note) => eprintln!("netpath: {note}"),
        Notice::Tracing {
            devices,
            passive,
            wait,
        } if chatty => eprintln!(
            "netpath: tracing {devices} device(s), {}",
            if passive {
                format!("waiting {:.0} s for traffic", wait.as_secs_f64())
            } else {
                "probing".to_string()
            }
        ),
        Notice::Tracing { .. } => {}
    };
    let mut traced = tokio::select! {
        r = session::trace(world, &config, &notify) => r?,
        // Dropping the session detaches everything it attached.
        code = signals.recv() => return Ok(code),
    };
    // What the API objects say about each family (Service families, pods' podIPs).
    if let Some((k, _)) = &kube {
        let findings = k.findings(&config.from, &config.to).await;
        for v in &mut traced.report.verdicts {
            let family = v.family;
            v.evidence.extend(
                findings
                    .iter()
                    .filter(|f| f.about(family))
                    .map(|f| f.text.clone()),
            );
        }
    }
    let report = &traced.report;
    // Agents that could not be asked: their evidence is missing from the verdicts.
    let missing = remote.as_ref().map(|r| r.problems()).unwrap_or_default();
    for line in &missing {
        eprintln!("netpath: {line}");
    }
    let text = if args.json {
        serde_json::to_string_pretty(report)? + "\n"
    } else {
        let mut text = args.output.print(report, style());
        if args.output.format == Format::Text {
            for line in &missing {
                text.push_str(&format!("evidence missing: {line}\n"));
            }
        }
        text
    };
    print(&text);
    let code = report.exit_code();
    // Detaching takes an RCU grace period per device: done after the report is out.
    drop(traced);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_carry_the_schema_version_and_the_message() {
        let text = json_error("unknown endpoint \"pod-zz\"");
        assert!(
            text.starts_with(r#"{"schema_version":1,"error":"#),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["error"], "unknown endpoint \"pod-zz\"");
    }
}
