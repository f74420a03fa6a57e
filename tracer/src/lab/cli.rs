//! `netpath lab …`: the command-line glue over the lab library.
use std::path::PathBuf;

use anyhow::Context;

use super::{scenarios::SCENARIOS, LabOptions, Outcome};

#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Directory of the lab state (lab.json) [default: $NETPATH_STATE, else /run/netpath].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Prefix of the lab's network namespace names (PREFIX-node-1, PREFIX-pod-a, ...).
    #[arg(long, default_value = super::DEFAULT_PREFIX, value_name = "PREFIX")]
    pub prefix: String,
}

impl StateArgs {
    fn options(&self) -> LabOptions {
        LabOptions {
            prefix: self.prefix.clone(),
            ..LabOptions::new(self.state.clone())
        }
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LabCommand {
    /// Build a lab cluster of network namespaces (see `netpath lab list` for scenarios).
    Up {
        /// Scenario to build: a healthy CNI flavour or a seed incident.
        #[arg(long, short, default_value = "flannel", value_name = "NAME")]
        scenario: String,
        /// Number of nodes (2 pods each); fault scenarios need at least 2.
        #[arg(long, short, default_value_t = 2, value_name = "N")]
        nodes: usize,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Remove every namespace, link, route and rule the lab made (also after a failed `up`).
    Down {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show the running lab: nodes, pods, Services and the documented connectivity.
    Status {
        /// Print the whole state as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List the scenarios with one-line descriptions.
    List,
    /// Serve the recorded lab's Kubernetes API (started by `lab up`, stopped by `lab down`).
    #[command(hide = true, name = "serve-api")]
    ServeApi {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Serve the recorded lab's pod sandboxes over CRI (started by `lab up`, stopped by
    /// `lab down`).
    #[command(hide = true, name = "serve-cri")]
    ServeCri {
        #[command(flatten)]
        state: StateArgs,
    },
}

impl LabCommand {
    /// A long-running server behind `lab up` (`lab serve-api`, `lab serve-cri`), not a
    /// one-shot command.
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            LabCommand::ServeApi { .. } | LabCommand::ServeCri { .. }
        )
    }
}

/// Runs a lab command; returns the process exit code.
pub fn run(cmd: LabCommand) -> anyhow::Result<i32> {
    match cmd {
        LabCommand::List => {
            for s in SCENARIOS {
                let seed = s.seed.map(|x| format!(" [seed {x}]")).unwrap_or_default();
                println!("{:<24} {}{seed}", s.name, s.description);
            }
            Ok(0)
        }
        LabCommand::Up {
            scenario,
            nodes,
            state,
        } => {
            let opts = state.options();
            // A typo is one line, and touches nothing (a running lab included).
            super::check(&opts, &scenario, nodes).context(format!("lab up {scenario}"))?;
            let recorded = super::status(&opts).context("lab up")?.is_some();
            eprintln!(
                "lab up: building {scenario} with {nodes} nodes (state in {})",
                opts.state_dir.display()
            );
            let report = match super::up(&opts, &scenario, nodes) {
                Ok(r) => r,
                Err(e) => {
                    // Leave nothing half-made behind: `down` knows every namespace this `up`
                    // made. A lab that was up before is not this run's to remove.
                    if !recorded {
                        let _ = super::down(&opts);
                    }
                    return Err(e).context(format!("lab up {scenario}"));
                }
            };
            let st = &report.state;
            eprintln!(
                "lab up: {} namespaces in {:.2} s ({} nodes, {} pods, {} services, run {})",
                st.namespaces.len(),
                report.elapsed.as_secs_f64(),
                st.nodes.len(),
                st.pods.len(),
                st.services.len(),
                st.run
            );
            print_summary(st);
            // The lab as a Kubernetes cluster: its API server, and a kubeconfig for it.
            let exe = std::env::current_exe().context("lab up: the netpath binary")?;
            // Each node's container runtime (CRI) first: the agents find pods through it.
            match super::cri::start(&exe, &opts.state_dir) {
                Ok((rec, took)) => eprintln!(
                    "lab up: container runtime (CRI) for {} nodes in {:.2} s",
                    rec.sockets.len(),
                    took.as_secs_f64()
                ),
                Err(e) => {
                    let _ = super::down(&opts);
                    return Err(e).context(format!("lab up {scenario}"));
                }
            }
            // One agent per node: the API server shows them as the DaemonSet's pods.
            match super::agents::start(&exe, &opts.state_dir, st) {
                Ok((rec, took)) => {
                    eprintln!(
                        "lab up: {} agents in {:.2} s",
                        rec.agents.len(),
                        took.as_secs_f64()
                    );
                    println!("agents {} tls {}", rec.agents_arg(), rec.tls_dir.display());
                }
                Err(e) => {
                    let _ = super::down(&opts);
                    return Err(e).context(format!("lab up {scenario}"));
                }
            }
            match super::api::start(&exe, &opts.state_dir) {
                Ok((api, took)) => {
                    eprintln!(
                        "lab up: Kubernetes API on {} in {:.2} s",
                        api.url(),
                        took.as_secs_f64()
                    );
                    println!("kubeconfig {}", api.kubeconfig.display());
                }
                Err(e) => {
                    let _ = super::down(&opts);
                    return Err(e).context(format!("lab up {scenario}"));
                }
            }
            Ok(0)
        }
        LabCommand::ServeApi { state } => {
            super::api::serve(&state.options().state_dir).context("lab serve-api")?;
            Ok(0)
        }
        LabCommand::ServeCri { state } => {
            super::cri::serve(&state.options().state_dir).context("lab serve-cri")?;
            Ok(0)
        }
        LabCommand::Down { state } => {
            let opts = state.options();
            let report = super::down(&opts).context("lab down")?;
            match report.scenario {
                Some(s) => eprintln!(
                    "lab down: {s}: {} namespaces removed in {:.2} s",
                    report.removed.len(),
                    report.elapsed.as_secs_f64()
                ),
                None => eprintln!("lab down: no lab recorded in {}", opts.state_dir.display()),
            }
            Ok(0)
        }
        LabCommand::Status { json, state } => {
            let opts = state.options();
            let Some(status) = super::status(&opts).context("lab status")? else {
                eprintln!("no lab is up (state dir {})", opts.state_dir.display());
                return Ok(1);
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status.state)?);
            } else {
                print_summary(&status.state);
                print_agents(&opts.state_dir);
                print_api(&opts.state_dir);
                print_cri(&opts.state_dir);
                if !status.state.complete {
                    println!("INCOMPLETE: `lab up` did not finish; run `netpath lab down`");
                }
            }
            for m in &status.missing {
                eprintln!("warning: namespace {m} is missing");
            }
            Ok(if status.missing.is_empty() && status.state.complete {
                0
            } else {
                1
            })
        }
    }
}

fn print_agents(dir: &std::path::Path) {
    match super::agents::record(dir) {
        Ok(Some(rec)) => {
            for a in &rec.agents {
                let state = if super::agents::running(&rec, a) {
                    "running"
                } else {
                    "NOT RUNNING"
                };
                println!(
                    "  agent {:<7} {} (pid {}, {state}) netns {}",
                    a.node,
                    a.addr,
                    a.pid,
                    a.netns_scope.join(",")
                );
            }
            println!(
                "  trace, watch, capture through them: --agents {} --tls-dir {}",
                rec.agents_arg(),
                rec.tls_dir.display()
            );
        }
        Ok(None) => eprintln!("warning: the lab runs no agents"),
        Err(e) => eprintln!("warning: {e}"),
    }
}

fn print_api(dir: &std::path::Path) {
    match super::api::record(dir) {
        Ok(Some(api)) if super::api::running(dir, &api) => println!(
            "  kubernetes API {} (pid {}), kubeconfig {}",
            api.url(),
            api.pid,
            api.kubeconfig.display()
        ),
        Ok(Some(api)) => eprintln!(
            "warning: the lab's Kubernetes API (pid {}) is not running; `netpath lab down` cleans up",
            api.pid
        ),
        Ok(None) => eprintln!("warning: the lab's Kubernetes API is not running"),
        Err(e) => eprintln!("warning: {e}"),
    }
}

fn print_cri(dir: &std::path::Path) {
    match super::cri::record(dir) {
        Ok(Some(rec)) if super::cri::running(dir, &rec) => {
            for (node, socket) in &rec.sockets {
                println!("  CRI {node:<9} {} (pid {})", socket.display(), rec.pid);
            }
        }
        Ok(Some(rec)) => eprintln!(
            "warning: the lab's container runtime (pid {}) is not running; `netpath lab down` cleans up",
            rec.pid
        ),
        Ok(None) => eprintln!("warning: the lab's container runtime is not running"),
        Err(e) => eprintln!("warning: {e}"),
    }
}

fn print_summary(st: &super::LabState) {
    let seed = st
        .seed
        .as_deref()
        .map(|s| format!(" (seed {s})"))
        .unwrap_or_default();
    println!(
        "scenario {} [{}]{seed}: {}",
        st.scenario, st.flavour, st.description
    );
    for n in &st.nodes {
        println!(
            "  {:<7} netns {:<14} underlay {} {}/{}  pods {} {}",
            n.name,
            n.netns,
            n.underlay_v4,
            n.underlay_v6,
            n.underlay_v6_prefix,
            n.pod_cidr_v4,
            n.pod_cidr_v6
        );
    }
    let opt =
        |ip: Option<std::net::IpAddr>| ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    for p in &st.pods {
        println!(
            "  {:<7} on {:<7} netns {:<14} {} {} (host {})",
            p.name,
            p.node,
            p.netns,
            opt(p.ipv4),
            opt(p.ipv6),
            p.host_ifname
        );
    }
    for s in &st.services {
        let ips: Vec<String> = s.cluster_ips.iter().map(|i| i.to_string()).collect();
        let eps: Vec<String> = s.endpoints.iter().map(|e| e.to_string()).collect();
        let stale: Vec<String> = s.stale_cluster_ips.iter().map(|i| i.to_string()).collect();
        let stale = if stale.is_empty() {
            String::new()
        } else {
            format!("  clients hold {}", stale.join(", "))
        };
        println!(
            "  svc/{:<11} {} port {} -> {}{stale}",
            s.name,
            ips.join(", "),
            s.port,
            eps.join(", ")
        );
    }
    for e in &st.expectations {
        let verdict = match e.expect {
            Outcome::Delivered => "delivered".to_string(),
            Outcome::Dropped => format!("DROPPED at {}", e.at.as_deref().unwrap_or("?")),
        };
        println!("  expect {} -> {} {}: {verdict}", e.from, e.to, e.family);
    }
}
