//! `cargo xtask bench overhead`: what netpath costs the data path. A UDP flood (flat out, 64-byte
//! payloads) from namespace `a` to `b` over a veth, in three modes side by side, interleaved over
//! several rounds so that background load hits every mode alike:
//! - `none`: no tracer;
//! - `quiet`: `netpath watch` with tc programs on both ends of the veth and a filter that
//!   matches nothing (every packet is parsed and filtered in the kernel, nothing is emitted);
//! - `all`: the same with a filter matching every packet, so every packet makes an event on
//!   each of its two hops (va egress, vb ingress), read and printed (to /dev/null) by netpath.
//!
//! The figure is the sender's packets/s (its send path runs the egress program, and the veth
//! receive usually runs in the same CPU's softirq), as a ratio to `none`.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{flood_in, Tool, VethPair};

const ROUNDS: usize = 7;
const SECS: f64 = 2.0;
const PAYLOAD: usize = 64;
/// Far above what two cores can send: the sender runs flat out.
const OFFERED: u64 = 5_000_000;
const RING_KIB: &str = "16384";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    None,
    Quiet,
    All,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Quiet => "quiet",
            Mode::All => "all",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Trial {
    pps: f64,
    events: u64,
    lost: u64,
    secs: f64,
}

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

fn trial(mode: Mode, netpath: &str, pair: &VethPair) -> Result<Trial> {
    let ifaces = [format!("{}/va", pair.a), format!("{}/vb", pair.b)];
    let host = match mode {
        Mode::None => None,
        // TEST-NET-style address inside 198.18.0.0/15 that no packet here carries.
        Mode::Quiet => Some("198.19.255.254"),
        Mode::All => Some("10.9.0.0/24"),
    };
    let tool = match host {
        None => None,
        Some(host) => {
            let mut t = Tool::spawn(
                netpath,
                &[
                    "watch",
                    "--no-drops",
                    "--ring-kib",
                    RING_KIB,
                    "--host",
                    host,
                    "--iface",
                    &ifaces[0],
                    "--iface",
                    &ifaces[1],
                ],
            )?;
            t.wait_for("watching", Duration::from_secs(20))?;
            Some(t)
        }
    };
    let dst: SocketAddr = "10.9.0.2:9999".parse()?;
    let start = Instant::now();
    let sent = flood_in(&pair.a, dst, OFFERED, SECS, PAYLOAD)?;
    let secs = start.elapsed().as_secs_f64().max(SECS);
    let mut t = Trial {
        pps: sent as f64 / SECS,
        secs,
        ..Trial::default()
    };
    if let Some(tool) = tool {
        // Let the reader drain the ring before stopping it.
        std::thread::sleep(Duration::from_millis(500));
        let (events, lost) = events_and_lost(&tool.stop()?)?;
        t.events = events;
        t.lost = lost;
    }
    Ok(t)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run() -> Result<()> {
    let netpath = super::netpath_release()?;
    let np = netpath.to_str().context("netpath path")?;
    let pair = VethPair::new("o")?;
    println!(
        "UDP flood, {PAYLOAD}-byte payloads, flat out for {SECS}s per trial, {ROUNDS} rounds, {} \
         sender thread(s) (NETPATH_BENCH_SENDERS); tc programs on va (egress) and vb (ingress); \
         load average before: {}",
        super::default_sender_threads(),
        loadavg()
    );
    println!(
        "{:>5} {:>6} {:>12} {:>8} {:>10} {:>12} {:>8}",
        "round", "mode", "pps", "ratio", "events", "events/s", "lost"
    );
    let mut ratios = [Vec::new(), Vec::new()];
    let mut event_rates = Vec::new();
    let mut lost_total = 0;
    let orders = [
        [Mode::None, Mode::Quiet, Mode::All],
        [Mode::All, Mode::None, Mode::Quiet],
        [Mode::Quiet, Mode::All, Mode::None],
    ];
    for round in 0..ROUNDS {
        let mut trials = Vec::new();
        for mode in orders[round % orders.len()] {
            trials.push((mode, trial(mode, np, &pair)?));
        }
        let base = trials
            .iter()
            .find(|(m, _)| *m == Mode::None)
            .map(|(_, t)| t.pps)
            .unwrap_or(f64::NAN);
        trials.sort_by_key(|(m, _)| *m as u8);
        for (mode, t) in trials {
            let ratio = t.pps / base;
            let events_per_s = t.events as f64 / t.secs;
            match mode {
                Mode::Quiet => ratios[0].push(ratio),
                Mode::All => {
                    ratios[1].push(ratio);
                    event_rates.push(events_per_s);
                    lost_total += t.lost;
                }
                Mode::None => {}
            }
            println!(
                "{:>5} {:>6} {:>12.0} {:>8.3} {:>10} {:>12.0} {:>8}",
                round + 1,
                mode.name(),
                t.pps,
                ratio,
                t.events,
                events_per_s,
                t.lost
            );
        }
    }
    println!();
    println!("load average after: {} (other work on the machine skews single trials; the ratios are per round)", loadavg());
    println!(
        "median ratio, filter matching nothing: {:.3} (goal >= 0.97)",
        median(ratios[0].clone())
    );
    println!(
        "median ratio, every packet an event on every hop: {:.3} (goal >= 0.80), \
         {:.0} events/s, {lost_total} events lost in all rounds (goal 0)",
        median(ratios[1].clone()),
        median(event_rates)
    );
    Ok(())
}
