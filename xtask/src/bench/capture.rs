//! `cargo xtask bench capture`: `netpath capture` against `tcpdump` on the same veth, both
//! writing to /dev/null with a 128-byte snap length and a 4 MiB buffer. For each offered UDP
//! rate: loss (what each tool reports it dropped/lost, or what it missed of what was sent,
//! whichever is larger) and its CPU seconds per million packets (utime+stime of the process;
//! kernel work done in softirq context, BPF programs included, is not charged to it).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{flood_in, Tool, VethPair};

const RATES: &[u64] = &[50_000, 100_000, 200_000, 400_000, 800_000];
const SECS: f64 = 2.0;
const PAYLOAD: usize = 64;
const SNAPLEN: &str = "128";
const BUFFER_KIB: &str = "4096";
const MAX_LOSS: f64 = 0.001;
const FILTER: &str = "udp port 9999";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Capturer {
    Netpath,
    Tcpdump,
}

#[derive(Clone, Copy, Debug)]
struct Trial {
    sent: u64,
    loss: f64,
    cpu_per_mpkt: f64,
}

impl Trial {
    /// The rate the sender actually reached (on 2 cores it saturates before the tools do).
    fn achieved(&self) -> u64 {
        (self.sent as f64 / SECS) as u64
    }
    fn saturated(&self, offered: u64) -> bool {
        (self.achieved() as f64) < 0.9 * offered as f64
    }
}

fn netpath_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return Ok(p.into());
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "tracer", "--bin", "netpath"])
        .status()?;
    if !status.success() {
        bail!("building netpath failed");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(root.join("../target/release/netpath"))
}

/// The first number of the summary line that ends with `suffix`.
fn summary_count(lines: &[String], suffix: &str) -> Result<u64> {
    lines
        .iter()
        .rev()
        .find(|l| l.trim_end().ends_with(suffix))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {suffix:?} line in {lines:?}"))
}

fn trial(who: Capturer, netpath: &Path, pair: &VethPair, rate: u64) -> Result<Trial> {
    let np = netpath.to_str().context("netpath path")?;
    let tool = match who {
        Capturer::Netpath => {
            let mut t = Tool::spawn(
                np,
                &[
                    "capture",
                    "-i",
                    "vb",
                    "--netns",
                    &pair.b,
                    "-w",
                    "/dev/null",
                    "-s",
                    SNAPLEN,
                    "-B",
                    BUFFER_KIB,
                    FILTER,
                ],
            )?;
            t.wait_for("listening", Duration::from_secs(20))?;
            t
        }
        Capturer::Tcpdump => {
            let mut t = Tool::spawn(
                "ip",
                &[
                    "netns",
                    "exec",
                    &pair.b,
                    "tcpdump",
                    "-i",
                    "vb",
                    "-w",
                    "/dev/null",
                    "-s",
                    SNAPLEN,
                    "-B",
                    BUFFER_KIB,
                    FILTER,
                ],
            )?;
            t.wait_for("listening on", Duration::from_secs(20))?;
            t
        }
    };
    let cpu0 = tool.cpu_seconds()?;
    let dst: SocketAddr = "10.9.0.2:9999".parse()?;
    let sent = flood_in(&pair.a, dst, rate, SECS, PAYLOAD)?;
    // Let the tool drain what is queued before it is stopped; tcpdump hands over TPACKET_V3
    // blocks only when full or after its 1 s timeout.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = tool.cpu_seconds()? - cpu0;
    let lines = tool.stop()?;
    let captured = summary_count(&lines, "captured")?;
    let reported = match who {
        Capturer::Netpath => summary_count(&lines, "lost by the tracer")?,
        Capturer::Tcpdump => summary_count(&lines, "dropped by kernel")?,
    };
    let missing = reported.max(sent.saturating_sub(captured));
    Ok(Trial {
        sent,
        loss: missing as f64 / sent.max(1) as f64,
        cpu_per_mpkt: cpu / (captured.max(1) as f64 / 1e6),
    })
}

pub fn run() -> Result<()> {
    let netpath = netpath_bin()?;
    let pair = VethPair::new("c")?;
    println!(
        "UDP {PAYLOAD}-byte payloads for {SECS}s per rate, filter '{FILTER}', -s {SNAPLEN}, -B {BUFFER_KIB} KiB, -w /dev/null"
    );
    println!(
        "{:>9} | {:>9} {:>8} {:>10} | {:>9} {:>8} {:>10}",
        "offered", "np sent", "np loss", "np cpu s/M", "td sent", "td loss", "td cpu s/M"
    );
    let mut best: [Option<(u64, Trial)>; 2] = [None, None];
    let mut alive = [true, true];
    let mut sender_limited = false;
    for &rate in RATES {
        let mut row = format!("{rate:>9}");
        for (i, who) in [Capturer::Netpath, Capturer::Tcpdump]
            .into_iter()
            .enumerate()
        {
            if !alive[i] {
                row.push_str(&format!(" | {:>9} {:>8} {:>10}", "-", "-", "-"));
                continue;
            }
            let t = trial(who, &netpath, &pair, rate)?;
            row.push_str(&format!(
                " | {:>9} {:>7.3}% {:>10.2}",
                t.sent,
                t.loss * 100.0,
                t.cpu_per_mpkt
            ));
            if t.loss <= MAX_LOSS {
                best[i] = Some((t.achieved(), t));
            } else {
                alive[i] = false;
            }
            sender_limited |= t.saturated(rate);
        }
        println!("{row}");
        if sender_limited || !alive.iter().any(|a| *a) {
            break;
        }
    }
    println!();
    let rate = |b: &Option<(u64, Trial)>| b.map(|(r, _)| r as f64).unwrap_or(0.0);
    let cpu = |b: &Option<(u64, Trial)>| b.map(|(_, t)| t.cpu_per_mpkt).unwrap_or(f64::NAN);
    println!(
        "{:<34} {:>10} {:>10} {:>13}",
        "", "netpath", "tcpdump", "ours/tcpdump"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>13.2}",
        "max rate with <= 0.1 % loss (pps)",
        rate(&best[0]),
        rate(&best[1]),
        rate(&best[0]) / rate(&best[1])
    );
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>13.2}",
        "CPU s per Mpkt at that rate",
        cpu(&best[0]),
        cpu(&best[1]),
        cpu(&best[0]) / cpu(&best[1])
    );
    if sender_limited && alive.iter().any(|a| *a) {
        println!("(the sender saturated first: a tool without loss there was not at its limit)");
    }
    Ok(())
}
