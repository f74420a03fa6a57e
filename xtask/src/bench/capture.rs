//! `cargo xtask bench capture`: `netpath capture` against `tcpdump` on the same veth, both
//! with a 128-byte snap length and a 16 MiB buffer. The offered UDP rate steps up (one sender
//! thread per core, sendmmsg of whole UDP frames on an AF_PACKET socket straight into the veth,
//! addressed so that the receiving stack drops them right after the capture points; see
//! [`Flood::raw_dev`]) until a tool loses more than 0.1 %, ending with a flat-out row. For each
//! trial: the packets the capture device received (its rx_packets counter, so packets the
//! sender's own stack dropped do not count against a tool), loss (what the tool reports it
//! dropped/lost, or what it missed of what the device received, whichever is larger) and CPU
//! seconds per million packets (utime+stime of the capture process; kernel work done in
//! softirq context, BPF programs included, is not charged to it).
//!
//! The search runs three times: with each tool free to use the machine and writing to
//! /dev/null (where the sender, not the tool, is usually the limit on 2 cores); then with each
//! tool held to the same small share of one CPU by a cgroup ([`CpuBudget`]), which finds the
//! rate each one's userspace keeps up with, writing to /dev/null and then to a file on tmpfs
//! (where the copy into the page cache is the tool's too).
use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, Result};

use super::{default_sender_threads, flood_with, rx_packets, CpuBudget, Flood, Tool, VethPair};

/// Offered rates in packets/s; 0 = flat out (the last row).
const RATES: &[u64] = &[
    100_000, 200_000, 400_000, 600_000, 800_000, 1_000_000, 1_500_000, 2_000_000, 0,
];
const SECS: f64 = 2.0;
const PAYLOAD: usize = 64;
const SNAPLEN: &str = "128";
/// Both tools' buffer: it must hold what arrives while the budget keeps a tool off the CPU
/// (up to a whole period: 49 ms at 1 M pps is about 8.6 MB of records).
const BUFFER_KIB: &str = "16384";
const MAX_LOSS: f64 = 0.001;
const FILTER: &str = "udp port 9999";
/// The share of one CPU each tool gets in the held searches (1 ms every 50 ms: the sender
/// delivers about 1 M pps here, so the share must be small enough for either tool to fall
/// behind below that), and the rates they step through.
const BUDGET_PERCENT: u64 = 2;
const BUDGET_PERIOD_US: u64 = 50_000;
const BUDGET_RATES: &[u64] = &[
    50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 350_000, 400_000, 450_000, 500_000,
    600_000, 700_000, 800_000, 1_000_000,
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Capturer {
    Netpath,
    Tcpdump,
    /// `netpath capture --agents` through a `netpath agent` on loopback.
    ViaAgent,
}

impl Capturer {
    fn name(self) -> &'static str {
        match self {
            Capturer::Netpath => "netpath",
            Capturer::Tcpdump => "tcpdump",
            Capturer::ViaAgent => "via agent",
        }
    }
    /// Column prefix in the search's rows.
    fn short(self) -> &'static str {
        match self {
            Capturer::Netpath => "np",
            Capturer::Tcpdump => "td",
            Capturer::ViaAgent => "ag",
        }
    }
}

/// A `netpath agent` confined to the capture side of the pair, on loopback, for
/// [`Capturer::ViaAgent`]; stopped (its programs detached) and its certificates removed on
/// drop.
struct BenchAgent {
    tool: Tool,
    /// `bench=127.0.0.1:PORT`
    agents_arg: String,
    tls: std::path::PathBuf,
}

impl BenchAgent {
    fn start(np: &str, pair: &VethPair) -> Result<BenchAgent> {
        let tls = std::env::temp_dir().join(format!("netpath-bench-tls.{}", std::process::id()));
        let tls_s = tls.to_str().context("path")?.to_string();
        super::sh(&format!(
            "{np} certs --out {tls_s} --nodes bench=127.0.0.1 >/dev/null 2>&1"
        ))?;
        let mut tool = Tool::spawn(
            np,
            &[
                "agent",
                "--node",
                "bench",
                "--listen",
                "127.0.0.1:0",
                "--tls-dir",
                &tls_s,
                "--netns-scope",
                &pair.b,
            ],
        )?;
        tool.wait_for("listening on", Duration::from_secs(30))?;
        let line = tool.stderr.last().cloned().unwrap_or_default();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .with_context(|| format!("no address in {line:?}"))?
            .to_string();
        Ok(BenchAgent {
            tool,
            agents_arg: format!("bench={addr}"),
            tls,
        })
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.tool.child.id() as i32, libc::SIGTERM) };
        let _ = self.tool.child.wait();
        let _ = std::fs::remove_dir_all(&self.tls);
    }
}

#[derive(Clone, Copy, Debug)]
struct Trial {
    /// Packets the capture device received during the trial.
    received: u64,
    /// Packets the tool says it lost (netpath: lost by the tracer; tcpdump: dropped by
    /// kernel), and packets it did not write of those the device received.
    reported: u64,
    missing: u64,
    loss: f64,
    cpu_per_mpkt: f64,
}

impl Trial {
    /// The rate that reached the device.
    fn rate(&self) -> u64 {
        (self.received as f64 / SECS) as u64
    }
    /// The sender fell short of the offered rate (always so when flat out).
    fn sender_limited(&self, offered: u64) -> bool {
        offered == 0 || (self.rate() as f64) < 0.9 * offered as f64
    }
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

/// Where the tools write: /dev/null, or a file on tmpfs removed after each trial.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    DevNull,
    TmpfsFile,
}

impl Target {
    fn path(self) -> String {
        match self {
            Target::DevNull => "/dev/null".into(),
            Target::TmpfsFile => format!("/dev/shm/netpath-bench-{}.cap", std::process::id()),
        }
    }
}

/// What the trials share: the binary, the veth pair, the agent (for [`Capturer::ViaAgent`]).
struct Bench<'a> {
    netpath: &'a Path,
    pair: &'a VethPair,
    agent: Option<&'a BenchAgent>,
}

fn trial(
    who: Capturer,
    bench: &Bench,
    rate: u64,
    budget: Option<&CpuBudget>,
    target: Target,
) -> Result<Trial> {
    let np = bench.netpath.to_str().context("netpath path")?;
    let out = target.path();
    let result = trial_into(who, np, bench, rate, budget, &out);
    if target == Target::TmpfsFile {
        let _ = std::fs::remove_file(&out);
    }
    result
}

fn trial_into(
    who: Capturer,
    np: &str,
    bench: &Bench,
    rate: u64,
    budget: Option<&CpuBudget>,
    out: &str,
) -> Result<Trial> {
    let pair = bench.pair;
    let agent = bench.agent.filter(|_| who == Capturer::ViaAgent);
    let tool = match who {
        Capturer::Netpath => {
            let mut t = Tool::spawn(
                np,
                &[
                    "capture", "-i", "vb", "--netns", &pair.b, "-w", out, "-s", SNAPLEN, "-B",
                    BUFFER_KIB, FILTER,
                ],
            )?;
            t.wait_for("listening", Duration::from_secs(20))?;
            t
        }
        Capturer::Tcpdump => {
            let mut t = Tool::spawn(
                "ip",
                &[
                    "netns", "exec", &pair.b, "tcpdump", "-i", "vb", "-w", out, "-s", SNAPLEN,
                    "-B", BUFFER_KIB, FILTER,
                ],
            )?;
            t.wait_for("listening on", Duration::from_secs(20))?;
            t
        }
        Capturer::ViaAgent => {
            let agent = agent.context("no agent started")?;
            let mut t = Tool::spawn(
                np,
                &[
                    "capture",
                    "--agents",
                    &agent.agents_arg,
                    "--tls-dir",
                    agent.tls.to_str().context("path")?,
                    "-i",
                    "vb",
                    "--netns",
                    &pair.b,
                    "-w",
                    out,
                    "-s",
                    SNAPLEN,
                    "-B",
                    BUFFER_KIB,
                    FILTER,
                ],
            )?;
            t.wait_for("listening through", Duration::from_secs(20))?;
            t
        }
    };
    // Through an agent, its CPU (the capture's reading and encoding) counts too.
    let agent_cpu = || agent.map_or(Ok(0.0), |a| a.tool.cpu_seconds());
    // The budget holds the capture, not the start-up: netpath's (the verifier) takes about a
    // second of CPU, which at 5 % would be 20 s.
    if let Some(b) = budget {
        b.add(tool.child.id())?;
    }
    let cpu0 = tool.cpu_seconds()? + agent_cpu()?;
    let rx0 = rx_packets(&pair.b, "vb")?;
    let dst: SocketAddr = "10.9.0.2:9999".parse()?;
    let flood = Flood {
        rate,
        secs: SECS,
        size: PAYLOAD,
        threads: default_sender_threads(),
        raw_dev: Some("va"),
        cpu: None,
    };
    flood_with(&pair.a, dst, flood)?;
    // Let the tool drain what is queued before it is stopped; tcpdump hands over TPACKET_V3
    // blocks only when full or after its 1 s timeout.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = tool.cpu_seconds()? + agent_cpu()? - cpu0;
    let received = rx_packets(&pair.b, "vb")? - rx0;
    let lines = tool.stop()?;
    let captured = summary_count(&lines, "captured")?;
    let reported = match who {
        // Through an agent: what it could not deliver is in the tracer's losses too.
        Capturer::Netpath | Capturer::ViaAgent => summary_count(&lines, "lost by the tracer")?,
        Capturer::Tcpdump => summary_count(&lines, "dropped by kernel")?,
    };
    let missing = received.saturating_sub(captured);
    Ok(Trial {
        received,
        reported,
        missing,
        loss: reported.max(missing) as f64 / received.max(1) as f64,
        cpu_per_mpkt: cpu / (captured.max(1) as f64 / 1e6),
    })
}

/// A tool's outcome over the rate search.
#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    /// The highest-rate trial with loss <= MAX_LOSS.
    best: Option<Trial>,
    /// The first trial with more loss: the tool's limit was found.
    failed: Option<Trial>,
}

/// Steps through `rates` (0 = flat out), each tool until it loses more than [`MAX_LOSS`],
/// printing a row per rate.
fn search(
    bench: &Bench,
    tools: [Capturer; 2],
    rates: &[u64],
    budget: Option<&CpuBudget>,
    target: Target,
) -> Result<[Outcome; 2]> {
    let [a, b] = tools.map(Capturer::short);
    println!(
        "{:>9} | {:>9} {:>8} {:>10} | {:>9} {:>8} {:>10}",
        "offered",
        format!("{a} pps"),
        format!("{a} loss"),
        format!("{a} cpu s/M"),
        format!("{b} pps"),
        format!("{b} loss"),
        format!("{b} cpu s/M")
    );
    let mut out = [Outcome::default(); 2];
    let mut rates = rates.iter().copied().peekable();
    while let Some(rate) = rates.next() {
        let mut row = if rate == 0 {
            format!("{:>9}", "flat out")
        } else {
            format!("{rate:>9}")
        };
        // Skip ahead only when no trial of the row got what was offered: one slow trial on a
        // busy 2-core machine is noise.
        let mut sender_limited = true;
        for (i, who) in tools.into_iter().enumerate() {
            if out[i].failed.is_some() {
                row.push_str(&format!(" | {:>9} {:>8} {:>10}", "-", "-", "-"));
                continue;
            }
            let t = trial(who, bench, rate, budget, target)?;
            row.push_str(&format!(
                " | {:>9} {:>7.3}% {:>10.2}",
                t.rate(),
                t.loss * 100.0,
                t.cpu_per_mpkt
            ));
            if t.loss <= MAX_LOSS {
                if out[i].best.is_none_or(|b| t.rate() > b.rate()) {
                    out[i].best = Some(t);
                }
                sender_limited &= t.sender_limited(rate);
            } else {
                out[i].failed = Some(t);
                sender_limited = false;
            }
        }
        println!("{row}");
        if out.iter().all(|o| o.failed.is_some()) {
            break;
        }
        // The sender cannot go faster: skip to the flat-out row (if any).
        if sender_limited {
            while rates.peek().is_some_and(|r| *r != 0) {
                rates.next();
            }
        }
    }
    Ok(out)
}

fn summary(out: &[Outcome; 2], tools: [Capturer; 2]) {
    let rate = |o: &Outcome| o.best.map_or(0.0, |t| t.rate() as f64);
    let cpu = |o: &Outcome| o.best.map_or(f64::NAN, |t| t.cpu_per_mpkt);
    let [a, b] = tools.map(Capturer::name);
    println!(
        "{:<34} {:>10} {:>10} {:>13}",
        "",
        a,
        b,
        format!("{}/{}", tools[0].short(), tools[1].short())
    );
    println!(
        "{:<34} {:>10} {:>10} {:>13.2}",
        "max rate with <= 0.1 % loss (pps)",
        rate(&out[0]),
        rate(&out[1]),
        rate(&out[0]) / rate(&out[1])
    );
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>13.2}",
        "CPU s per Mpkt at that rate",
        cpu(&out[0]),
        cpu(&out[1]),
        cpu(&out[0]) / cpu(&out[1])
    );
    for (o, name) in out.iter().zip([a, b]) {
        match o.failed {
            Some(t) => println!(
                "{name}: limit found, {:.3} % loss at {} pps ({} reported lost, {} not written)",
                t.loss * 100.0,
                t.rate(),
                t.reported,
                t.missing
            ),
            None => println!(
                "{name}: limit not found: no loss at any rate, up to {} pps, the most the sender \
delivered in its trials",
                o.best.map_or(0, |t| t.rate())
            ),
        }
    }
}

pub fn run(args: &[&str]) -> Result<()> {
    match args {
        [] => run_vs_tcpdump(),
        ["--agent"] => run_via_agent(),
        _ => anyhow::bail!("bench capture [--agent]"),
    }
}

/// netpath's local capture against the same through a `netpath agent` on loopback (TLS,
/// gRPC, the CLI's merge): what going through an agent costs.
fn run_via_agent() -> Result<()> {
    let netpath = super::netpath_release()?;
    let pair = VethPair::new("c")?;
    let np = netpath.to_str().context("netpath path")?;
    let agent = BenchAgent::start(np, &pair)?;
    let bench = Bench {
        netpath: &netpath,
        pair: &pair,
        agent: Some(&agent),
    };
    let tools = [Capturer::Netpath, Capturer::ViaAgent];
    let threads = default_sender_threads();
    println!(
        "UDP {PAYLOAD}-byte payloads for {SECS}s per rate ({threads} raw sendmmsg sender threads), \
filter '{FILTER}', -s {SNAPLEN}, -B {BUFFER_KIB} KiB, load average {}",
        super::load_average()
    );
    println!(
        "netpath capture on this machine against netpath capture --agents through one agent on \
loopback (mutual TLS; CPU s/M counts the agent's and the CLI's), -w /dev/null:"
    );
    let out = search(&bench, tools, RATES, None, Target::DevNull)?;
    summary(&out, tools);
    println!();
    println!("-w a file on tmpfs:");
    let out = search(&bench, tools, RATES, None, Target::TmpfsFile)?;
    summary(&out, tools);
    Ok(())
}

fn run_vs_tcpdump() -> Result<()> {
    let netpath = super::netpath_release()?;
    let pair = VethPair::new("c")?;
    let bench = Bench {
        netpath: &netpath,
        pair: &pair,
        agent: None,
    };
    let tools = [Capturer::Netpath, Capturer::Tcpdump];
    let threads = default_sender_threads();
    println!(
        "UDP {PAYLOAD}-byte payloads for {SECS}s per rate ({threads} raw sendmmsg sender threads), \
filter '{FILTER}', -s {SNAPLEN}, -B {BUFFER_KIB} KiB"
    );
    println!();
    println!("1. each tool free to use the machine, -w /dev/null:");
    let free = search(&bench, tools, RATES, None, Target::DevNull)?;
    summary(&free, tools);
    // Here the sender, not either tool, is usually the limit: give each tool the same small
    // share of a CPU, as on a busy node, and find the rate it keeps up with.
    let budget = CpuBudget::new(
        &format!("netpath-bench-{}", std::process::id()),
        BUDGET_PERCENT,
        BUDGET_PERIOD_US,
    )?;
    let held = format!(
        "each tool held to {BUDGET_PERCENT} % of one CPU (a cgroup's cpu quota, over {} ms \
periods); the kernel side of either (AF_PACKET, tc programs) runs in softirq on the \
sender's CPU and is not in the budget",
        BUDGET_PERIOD_US / 1000
    );
    println!();
    println!("2. {held}, -w /dev/null:");
    let out = search(&bench, tools, BUDGET_RATES, Some(&budget), Target::DevNull)?;
    summary(&out, tools);
    println!();
    println!(
        "3. {held}, -w a file on tmpfs (netpath writes pcapng, tcpdump pcap; the copy into \
the page cache is in the budget):"
    );
    let out = search(
        &bench,
        tools,
        BUDGET_RATES,
        Some(&budget),
        Target::TmpfsFile,
    )?;
    summary(&out, tools);
    Ok(())
}
