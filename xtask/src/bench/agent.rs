//! `cargo xtask bench agent [TRACES]`: cluster mode on the lab, side by side in one run.
//! - Time to the verdict of `trace pod-a pod-c` (both families delivered) through the lab's
//!   node agents and with this machine's kernel (`--local`), TRACES of each, interleaved.
//! - An idle agent's CPU over 20 s and its resident memory.
//! - Stream throughput to one client: `watch --agents --json` while a UDP flood runs from
//!   pod-a to pod-c (two nodes): events per second received, and lost.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{flood_with, load_average, median_ci, netpath_release, sh, Flood, Tool};

const PREFIX: &str = "npba";

/// The lab, taken down (agents included) however the benchmark ends.
struct Lab {
    np: PathBuf,
    state: PathBuf,
    _interrupted: crate::interrupt::Cleanup,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(&self.np)
            .args(["lab", "down", "--state"])
            .arg(&self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// User + system CPU ticks and resident KiB of a process.
fn ticks_and_rss(pid: u64) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    Ok((ticks, rss))
}

/// One trace's time to the verdict, in ms; fails unless both families were delivered.
fn trace_ms(np: &Path, state: &Path, local: bool) -> Result<f64> {
    let mut cmd = Command::new(np);
    cmd.args(["trace", "pod-a", "pod-c", "--json", "--state"])
        .arg(state);
    if local {
        cmd.arg("--local");
    }
    let out = cmd.output()?;
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "trace printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let delivered = report["verdicts"]
        .as_array()
        .is_some_and(|v| v.len() == 2 && v.iter().all(|v| v["verdict"] == "delivered"));
    if !delivered {
        bail!("pod-a -> pod-c not delivered in both families (local: {local})");
    }
    report["elapsed_ms"].as_f64().context("elapsed_ms")
}

fn summary(v: &[f64]) -> String {
    let (m, lo, hi) = median_ci(v);
    format!("median {m:.0} ms [{lo:.0}, {hi:.0}]")
}

pub fn run(args: &[&str]) -> Result<()> {
    let traces: usize = match args {
        [] => 9,
        [n] => n.parse().context("TRACES")?,
        _ => bail!("bench agent [TRACES]"),
    };
    let np = netpath_release()?;
    let state = std::env::temp_dir().join(format!("netpath-bench-agent.{}", std::process::id()));
    let lab = Lab {
        _interrupted: crate::interrupt::on_interrupt(format!(
            "{} lab down --state {}; rm -rf {}",
            np.display(),
            state.display(),
            state.display()
        )),
        np: np.clone(),
        state: state.clone(),
    };
    let up = sh(&format!(
        "{} lab up --scenario flannel --prefix {PREFIX} --state {} 2>&1",
        np.display(),
        state.display()
    ))?;
    let agents_line = up
        .lines()
        .find(|l| l.contains("agents in"))
        .unwrap_or("?")
        .to_string();
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(state.join("agents.json"))?)?;
    let agents = rec["agents"].as_array().context("agents")?;
    let pids: Vec<u64> = agents.iter().filter_map(|a| a["pid"].as_u64()).collect();
    let agents_arg = agents
        .iter()
        .map(|a| {
            // The lab's agents listen in their nodes' namespaces: dialed from the underlay.
            let via = a["via_netns"]
                .as_str()
                .map(|ns| format!("@{ns}"))
                .unwrap_or_default();
            format!(
                "{}={}{via}",
                a["node"].as_str().unwrap_or("?"),
                a["addr"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "bench agent: {}, load average {}",
        agents_line.trim(),
        load_average()
    );

    // Idle: no client at all.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before: Vec<(u64, u64)> = pids
        .iter()
        .map(|p| ticks_and_rss(*p))
        .collect::<Result<_>>()?;
    let idle = Duration::from_secs(20);
    std::thread::sleep(idle);
    for (pid, (t0, _)) in pids.iter().zip(&before) {
        let (t1, rss) = ticks_and_rss(*pid)?;
        println!(
            "idle agent {pid}: {:.2} % of a core over {} s, {:.1} MiB resident",
            (t1 - t0) as f64 / hz / idle.as_secs_f64() * 100.0,
            idle.as_secs(),
            rss as f64 / 1024.0
        );
    }

    // Time to the verdict, interleaved so that load changes hit both alike.
    let (mut via_agents, mut local) = (Vec::new(), Vec::new());
    for _ in 0..traces {
        via_agents.push(trace_ms(&np, &state, false)?);
        local.push(trace_ms(&np, &state, true)?);
    }
    let ratio = median_ci(&local).0 / median_ci(&via_agents).0;
    println!(
        "trace pod-a pod-c, both families delivered, {traces} each: through the agents {}; \
         this machine's kernel (--local) {}; agents {ratio:.1}x faster",
        summary(&via_agents),
        summary(&local)
    );
    for (pid, _) in pids.iter().zip(&before) {
        let (_, rss) = ticks_and_rss(*pid)?;
        println!(
            "agent {pid} after the traces: {:.1} MiB resident",
            rss as f64 / 1024.0
        );
    }

    // Throughput: one client reading everything about pod-a while it floods pod-c.
    let secs = 5.0;
    let tls = state.join("tls");
    let mut watch = Tool::spawn(
        np.to_str().context("path")?,
        &[
            "watch",
            "--agents",
            &agents_arg,
            "--tls-dir",
            tls.to_str().context("path")?,
            "--json",
            "--host",
            "10.244.1.2",
            "--duration",
            &format!("{}", secs + 3.0),
        ],
    )?;
    watch.wait_for("watching", Duration::from_secs(30))?;
    let t0 = Instant::now();
    let dst: SocketAddr = "10.244.2.2:9".parse()?;
    let sent = flood_with(
        &format!("{PREFIX}-pod-a"),
        dst,
        Flood {
            rate: 0,
            secs,
            size: 64,
            threads: 1,
            raw_dev: None,
            cpu: None,
        },
    )?;
    let flood_s = t0.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .map(|p| ticks_and_rss(*p).map(|(t, _)| t as f64 / hz))
        .collect::<Result<_>>()?;
    let status = watch.child.wait()?;
    let lines = watch.stop().unwrap_or_default();
    let last = lines
        .iter()
        .rev()
        .find(|l| l.contains(" events, "))
        .with_context(|| format!("watch said no totals (exit {status}): {lines:?}"))?;
    // "netpath: N events, M lost"
    let nums: Vec<u64> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (events, lost) = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    );
    println!(
        "stream to one client: {sent} UDP packets pod-a -> pod-c in {flood_s:.1} s; the client got \
         {events} events ({:.0} events/s), {lost} reported lost; agents' CPU so far {:?} s",
        events as f64 / flood_s,
        cpu.iter().map(|c| (c * 10.0).round() / 10.0).collect::<Vec<_>>()
    );
    drop(lab);
    Ok(())
}
