//! `cargo xtask bench overhead`: what netpath costs the data path. UDP floods (flat out, 64-byte
//! payloads) from namespace `a` to `b` over a veth, one sender thread pinned to one CPU per
//! flow: veth hands each packet to the sending CPU's backlog, so a flow's send and receive
//! paths, and the tc programs on both ends, all run on that core.
//!
//! Two figures, each packets/s with netpath ÷ packets/s without:
//! - a filter matching nothing (tc programs on both ends of the veth parse and filter every
//!   packet in the kernel, nothing is emitted). Two identical flows run at the same time, one
//!   per core, and netpath traces one of them; the ratio traced/untraced is taken once with
//!   each flow traced and combined as sqrt(r0 * r1), so the two cores' difference cancels, and
//!   whatever the VM's host does to the machine hits both flows at once. Back-to-back runs of
//!   the same flood on these VMs differ by up to 20 %, far more than the few percent measured
//!   here, so flows measured one after the other could not tell 0.95 from 0.99. The same is
//!   done with empty tc programs on the same hooks ([`super::empty_tc`]): the floor that no
//!   tc-based tracer can go under.
//! - an event on every hop of every packet (va egress, vb ingress), read and printed to
//!   /dev/null by netpath, pinned to the other core (CPU 1), so the ratio is the data path's
//!   cost and netpath's own CPU is reported apart. One flow on CPU 0; trials with and without
//!   netpath alternate. Also the events/s, the events lost, and netpath's CPU.
//!
//! Packets/s are per second of CPU time the VM's host gave the sender's CPU: each CPU's steal
//! time (/proc/stat) during a trial is taken off its length. Each figure is the median over
//! the rounds with a distribution-free 95 % confidence interval.
use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context, Result};

use super::{empty_tc::EmptyTc, flood_with, median_ci, steal_seconds, Flood, Tool, VethPair};

const QUIET_ROUNDS: usize = 15;
const EVENT_ROUNDS: usize = 11;
const SECS: f64 = 1.5;
const PAYLOAD: usize = 64;
const RING_KIB: &str = "16384";
/// A TEST-NET-style address inside 198.18.0.0/15 that no packet here carries.
const MATCHES_NOTHING: &str = "198.19.255.254";
/// The flows' own prefix (10.9.0.1 -> 10.9.0.2).
const MATCHES_ALL: &str = "10.9.0.0/24";

/// `netpath: N events, M lost` → (N, M).
fn events_and_lost(lines: &[String]) -> Result<(u64, u64)> {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("netpath: ") && l.ends_with(" lost"))
        .with_context(|| format!("no summary line in {lines:?}"))?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [events, lost] => Ok((*events, *lost)),
        _ => bail!("summary {line:?}"),
    }
}

/// `netpath watch` with its tc programs on both ends of `pair`'s veth, selecting `host`; its
/// userspace on `cpu` when given.
fn start_netpath(netpath: &str, pair: &VethPair, host: &str, cpu: Option<usize>) -> Result<Tool> {
    let (va, vb) = (format!("{}/va", pair.a), format!("{}/vb", pair.b));
    let mut t = Tool::spawn_on(
        netpath,
        &[
            "watch",
            "--no-drops",
            "--ring-kib",
            RING_KIB,
            "--host",
            host,
            "--iface",
            &va,
            "--iface",
            &vb,
        ],
        cpu,
    )?;
    t.wait_for("watching", Duration::from_secs(20))?;
    Ok(t)
}

/// One flow flat out for [`SECS`] from `pair.a` with its sender on `cpu`: packets sent.
fn flow_packets(pair: &VethPair, cpu: usize) -> Result<f64> {
    let dst: SocketAddr = "10.9.0.2:9999".parse()?;
    let sent = flood_with(
        &pair.a,
        dst,
        Flood {
            rate: 0,
            secs: SECS,
            size: PAYLOAD,
            threads: 1,
            raw_dev: None,
            cpu: Some(cpu),
        },
    )?;
    Ok(sent as f64)
}

/// Packets per second of the time the host gave `cpu` between the two [`steal_seconds`]
/// readings: a VM's CPU stolen by its host for a while (measured here at up to 7 % of a
/// trial) is not a cost of the tracer.
fn per_cpu_second(packets: f64, cpu: usize, before: &[f64], after: &[f64]) -> f64 {
    let stolen = after.get(cpu).copied().unwrap_or(0.0) - before.get(cpu).copied().unwrap_or(0.0);
    packets / (SECS - stolen.clamp(0.0, SECS / 2.0))
}

/// One flow, sender on `cpu`: packets/s (of the CPU time the host gave it).
fn flow(pair: &VethPair, cpu: usize) -> Result<f64> {
    let before = steal_seconds()?;
    let sent = flow_packets(pair, cpu)?;
    Ok(per_cpu_second(sent, cpu, &before, &steal_seconds()?))
}

/// Both flows at the same time, `pairs[i]` on CPU i: their packets/s (of the CPU time the host
/// gave each).
fn flows_at_once(pairs: &[VethPair; 2]) -> Result<[f64; 2]> {
    let before = steal_seconds()?;
    let sent = std::thread::scope(|s| {
        let handles = [0, 1].map(|cpu| {
            let pair = &pairs[cpu];
            s.spawn(move || flow_packets(pair, cpu))
        });
        let [h0, h1] = handles;
        let p0 = h0
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let p1 = h1
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        anyhow::Ok([p0, p1])
    })?;
    let after = steal_seconds()?;
    Ok([0, 1].map(|cpu| per_cpu_second(sent[cpu], cpu, &before, &after)))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Per round, the filter-matching-nothing ratio and the ratio with empty tc programs on the
/// same hooks (the floor).
fn quiet_rounds(netpath: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let pairs = [VethPair::new("o0")?, VethPair::new("o1")?];
    println!(
        "filter matching nothing: two flows at once (sender threads pinned to CPU 0 and CPU 1);          netpath on one flow's veth, then on the other's, and the same with empty tc programs          (the hook's own cost); {QUIET_ROUNDS} rounds of {SECS}s"
    );
    println!(
        "{:>5} {:>18} {:>12} {:>12} {:>14}",
        "round", "on", "flow 0 pps", "flow 1 pps", "traced/other"
    );
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for round in 1..=QUIET_ROUNDS {
        let [n0, n1] = flows_at_once(&pairs)?;
        println!(
            "{round:>5} {:>18} {n0:>12.0} {n1:>12.0} {:>14}",
            "nothing",
            format!("({:.3})", n0 / n1)
        );
        let (mut r, mut e) = ([0.0; 2], [0.0; 2]);
        for traced in 0..2 {
            let (a, b) = (pairs[traced].a.as_str(), pairs[traced].b.as_str());
            let empty = EmptyTc::attach(&[(a, "va", true), (b, "vb", false)])?;
            let pps = flows_at_once(&pairs)?;
            drop(empty);
            e[traced] = pps[traced] / pps[1 - traced];
            println!(
                "{round:>5} {:>18} {:>12.0} {:>12.0} {:>14.3}",
                format!("empty tc, flow {traced}"),
                pps[0],
                pps[1],
                e[traced]
            );
            let tool = start_netpath(netpath, &pairs[traced], MATCHES_NOTHING, None)?;
            let pps = flows_at_once(&pairs)?;
            let (events, _) = events_and_lost(&tool.stop()?)?;
            if events != 0 {
                bail!("the filter matching nothing let {events} events through");
            }
            r[traced] = pps[traced] / pps[1 - traced];
            println!(
                "{round:>5} {:>18} {:>12.0} {:>12.0} {:>14.3}",
                format!("netpath, flow {traced}"),
                pps[0],
                pps[1],
                r[traced]
            );
        }
        let (ratio, empty) = ((r[0] * r[1]).sqrt(), (e[0] * e[1]).sqrt());
        println!("{round:>5} netpath {ratio:.3}, empty tc programs {empty:.3} (sqrt of the two flows' ratios)");
        ours.push(ratio);
        floor.push(empty);
    }
    Ok((ours, floor))
}

struct EventRound {
    ratio: f64,
    events_per_s: f64,
    lost: u64,
    cpu_per_mevent: f64,
}

/// The every-hop ratio and event figures, one per round.
fn event_rounds(netpath: &str) -> Result<Vec<EventRound>> {
    let pair = VethPair::new("oe")?;
    println!();
    println!(
        "an event on every hop: one flow (sender pinned to CPU 0), with no netpath and with \
         netpath printing every event to /dev/null, alternating; {EVENT_ROUNDS} rounds of {SECS}s"
    );
    println!(
        "{:>5} {:>10} {:>10} {:>7} {:>10} {:>9} {:>12}",
        "round", "none pps", "all pps", "ratio", "events/s", "lost", "CPU s/Mev"
    );
    let mut out = Vec::new();
    for round in 1..=EVENT_ROUNDS {
        let mut with = None;
        let mut without = 0.0;
        // Alternate which mode goes first, so a drift over time hits both alike.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for traced in order {
            if !traced {
                without = flow(&pair, 0)?;
                continue;
            }
            let tool = start_netpath(netpath, &pair, MATCHES_ALL, Some(1))?;
            let cpu0 = tool.cpu_seconds()?;
            let pps = flow(&pair, 0)?;
            // Let the reader drain the ring before stopping it.
            std::thread::sleep(Duration::from_millis(500));
            let cpu = tool.cpu_seconds()? - cpu0;
            let (events, lost) = events_and_lost(&tool.stop()?)?;
            with = Some((pps, events, lost, cpu));
        }
        let (pps, events, lost, cpu) = with.context("no traced trial")?;
        let r = EventRound {
            ratio: pps / without,
            events_per_s: events as f64 / SECS,
            lost,
            cpu_per_mevent: cpu / (events.max(1) as f64 / 1e6),
        };
        println!(
            "{round:>5} {without:>10.0} {pps:>10.0} {:>7.3} {:>10.0} {lost:>9} {:>12.2}",
            r.ratio, r.events_per_s, r.cpu_per_mevent
        );
        out.push(r);
    }
    Ok(out)
}

pub fn run() -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("the overhead benchmark runs two flows on two CPUs; this machine has {cpus}");
    }
    let netpath = super::netpath_release()?;
    let np = netpath.to_str().context("netpath path")?;
    println!(
        "UDP floods, {PAYLOAD}-byte payloads, flat out; tc programs on va (egress) and vb \
         (ingress); {cpus} CPUs; load average before: {}",
        loadavg()
    );
    let (quiet, floor) = quiet_rounds(np)?;
    let events = event_rounds(np)?;
    println!();
    println!("load average after: {}", loadavg());
    println!("medians over the rounds, with distribution-free 95 % confidence intervals:");
    let (m, lo, hi) = median_ci(&quiet);
    println!("filter matching nothing: {m:.3} [{lo:.3}, {hi:.3}] (goal >= 0.97)");
    let (m, lo, hi) = median_ci(&floor);
    println!(
        "empty tc programs on the same two hooks: {m:.3} [{lo:.3}, {hi:.3}]: what attaching \
         anything there costs on this kernel and machine"
    );
    let ratios: Vec<f64> = events.iter().map(|r| r.ratio).collect();
    let (m, lo, hi) = median_ci(&ratios);
    println!(
        "every packet an event on every hop: {m:.3} [{lo:.3}, {hi:.3}] (goal >= 0.80), {:.0} \
         events/s, {} events lost in all rounds (goal 0), netpath {:.2} CPU s per million events",
        median_ci(&events.iter().map(|r| r.events_per_s).collect::<Vec<_>>()).0,
        events.iter().map(|r| r.lost).sum::<u64>(),
        median_ci(&events.iter().map(|r| r.cpu_per_mevent).collect::<Vec<_>>()).0,
    );
    Ok(())
}
