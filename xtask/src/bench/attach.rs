//! `cargo xtask bench attach [N]`: how long `netpath watch --all` takes from start to its
//! ready line ("watching D device(s)") with N devices more than the machine has, all veth
//! ends in one namespace of their own. Measured as the machine is (the fixed cost: loading
//! and verifying the programs, the machine's own devices) and with the N devices, the median
//! of three runs each; the difference per device is the attach cost. The namespace, and with it every
//! device, is deleted at the end, on errors and on Ctrl-C.
use std::{
    io::Write,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::Tool;

/// Set by SIGINT/SIGTERM: the benchmark stops at the next step and its guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// A namespace holding the benchmark's devices, deleted (devices and all) on drop.
struct DeviceNs(String);

impl DeviceNs {
    /// `pairs` veth pairs, both ends inside: `npa0`/`npb0`, `npa1`/`npb1`, ...
    fn new(pairs: usize) -> Result<Self> {
        let ns = DeviceNs(format!("npbattach{}", std::process::id() % 100_000));
        super::sh(&format!("ip netns add {}", ns.0))?;
        let mut batch = String::with_capacity(pairs * 48);
        for i in 0..pairs {
            batch.push_str(&format!(
                "link add name npa{i} type veth peer name npb{i}\n"
            ));
        }
        let mut ip = Command::new("ip")
            .args(["-n", &ns.0, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        ip.stdin
            .take()
            .context("ip's stdin")?
            .write_all(batch.as_bytes())?;
        let status = ip.wait()?;
        check_interrupted()?;
        if !status.success() {
            bail!("creating {pairs} veth pairs failed ({status})");
        }
        Ok(ns)
    }
}

impl Drop for DeviceNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// One `watch --all` start: seconds to the ready line, devices it says it watches, seconds
/// from SIGINT to its exit (detaching everything).
fn watch_all(netpath: &str) -> Result<(f64, u64, f64)> {
    let started = Instant::now();
    let mut tool = Tool::spawn(netpath, &["watch", "--all"])?;
    tool.wait_for("netpath: watching", Duration::from_secs(900))?;
    let ready = started.elapsed().as_secs_f64();
    let line = tool.stderr.last().cloned().unwrap_or_default();
    let devices = line
        .split_whitespace()
        .find_map(|w| w.parse::<u64>().ok())
        .with_context(|| format!("no device count in {line:?}"))?;
    let stopping = Instant::now();
    tool.stop()?;
    Ok((ready, devices, stopping.elapsed().as_secs_f64()))
}

/// Runs of `watch --all` for each figure: start-up (loading and verifying the programs)
/// varies by more than attaching 1,000 devices now costs.
const RUNS: usize = 3;

/// [`watch_all`] [`RUNS`] times: the median of each figure (devices: the last run's), and
/// the range of the start-up times.
fn median_of_runs(netpath: &str) -> Result<(f64, u64, f64, String)> {
    let (mut ready, mut stop, mut devices) = (Vec::new(), Vec::new(), 0);
    for _ in 0..RUNS {
        let (r, d, s) = watch_all(netpath)?;
        check_interrupted()?;
        ready.push(r);
        stop.push(s);
        devices = d;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ready_median = median(&mut ready);
    let range = format!("{:.2}-{:.2} s", ready[0], ready[ready.len() - 1]);
    Ok((ready_median, devices, median(&mut stop), range))
}

pub fn run(args: &[&str]) -> Result<()> {
    let n: usize = match args {
        [] => 1000,
        [n] => n
            .parse()
            .ok()
            .filter(|n| *n >= 2)
            .context("usage: cargo xtask bench attach [N] (N >= 2 devices)")?,
        _ => bail!("usage: cargo xtask bench attach [N]"),
    };
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let netpath = super::netpath_release()?;
    let netpath = netpath.to_str().context("netpath path")?;
    println!("load average before: {}", super::load_average());
    let (base_s, base_devices, base_stop, base_range) = median_of_runs(netpath)?;
    println!(
        "as the machine is: {base_devices} devices, ready after {base_s:.2} s ({base_range}), stopped in {base_stop:.2} s"
    );
    let created = Instant::now();
    let ns = DeviceNs::new(n.div_ceil(2))?;
    println!(
        "made {} devices in namespace {} in {:.1} s",
        n.div_ceil(2) * 2,
        ns.0,
        created.elapsed().as_secs_f64()
    );
    let (s, devices, stop, range) = median_of_runs(netpath)?;
    let added = devices.saturating_sub(base_devices).max(1);
    println!(
        "with them: {devices} devices, ready after {s:.2} s ({range}), stopped in {stop:.2} s"
    );
    println!(
        "attach: {:.2} ms per device ({added} devices more took {:.2} s more)",
        (s - base_s) * 1000.0 / added as f64,
        s - base_s
    );
    println!("load average after: {}", super::load_average());
    drop(ns);
    Ok(())
}
