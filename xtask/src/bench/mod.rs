//! Benchmarks, one module each; shared pieces (namespaces, the UDP sender, process CPU time)
//! live here.
mod capture;
mod overhead;

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Hidden command name for the sender run inside a namespace.
pub const FLOOD_CMD: &str = "__udp-flood";

pub fn run(name: &str) -> Result<()> {
    match name {
        "capture" => capture::run(),
        "overhead" => overhead::run(),
        other => bail!("unknown benchmark {other:?} (known: capture)"),
    }
}

fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two namespaces joined by a veth (`a`/va 10.9.0.1 -- `b`/vb 10.9.0.2), deleted on drop.
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    pub fn new(tag: &str) -> Result<Self> {
        let id = std::process::id() % 100_000;
        let pair = VethPair {
            a: format!("npb{tag}a{id}"),
            b: format!("npb{tag}b{id}"),
        };
        // Created before the commands so a failure half-way still deletes what exists.
        sh(&format!("ip netns add {}", pair.a))?;
        sh(&format!("ip netns add {}", pair.b))?;
        sh(&format!(
            "ip link add va netns {} type veth peer name vb netns {}",
            pair.a, pair.b
        ))?;
        for (ns, dev, addr) in [
            (&pair.a, "va", "10.9.0.1/24"),
            (&pair.b, "vb", "10.9.0.2/24"),
        ] {
            sh(&format!("ip -n {ns} addr add {addr} dev {dev}"))?;
            sh(&format!("ip -n {ns} link set {dev} up"))?;
            sh(&format!("ip -n {ns} link set lo up"))?;
        }
        sh(&format!(
            "ip netns exec {} sh -c 'for i in $(seq 50); do ping -c1 -W1 10.9.0.2 >/dev/null && exit 0; sleep 0.1; done; exit 1'",
            pair.a
        ))
        .context("veth link did not come up")?;
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Sends `rate` UDP packets/s of `size` payload bytes to `dst` for `secs` inside namespace
/// `ns` (this binary re-executed by `ip netns exec`); returns how many were sent.
pub fn flood_in(ns: &str, dst: SocketAddr, rate: u64, secs: f64, size: usize) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args([
            FLOOD_CMD,
            &dst.to_string(),
            &rate.to_string(),
            &secs.to_string(),
            &size.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        bail!("sender: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("sender output")
}

/// The sender itself: paced in batches so it can also run flat out.
pub fn flood(args: &[&str]) -> Result<()> {
    let [dst, rate, secs, size] = args else {
        bail!("{FLOOD_CMD} DST RATE SECS SIZE");
    };
    let dst: SocketAddr = dst.parse()?;
    let rate: f64 = rate.parse()?;
    let secs: f64 = secs.parse()?;
    let payload = vec![0x5a; size.parse()?];
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(dst)?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    const BATCH: u64 = 32;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = start + Duration::from_secs_f64(sent as f64 / rate);
        if due > now {
            std::thread::sleep(due - now);
            continue;
        }
        for _ in 0..BATCH {
            // ENOBUFS and the like: the packet was not sent, so it is not counted.
            if sock.send(&payload).is_ok() {
                sent += 1;
            }
        }
    }
    println!("{sent}");
    Ok(())
}

/// A child process whose stderr lines are collected in the background; killed on drop.
pub struct Tool {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Tool {
    pub fn spawn(program: &str, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Tool {
            child,
            lines,
            stderr: Vec::new(),
        })
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let hit = line.contains(needle);
            self.stderr.push(line);
            if hit {
                return Ok(());
            }
        }
        bail!("never printed {needle:?}; stderr: {:?}", self.stderr)
    }

    /// User + system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').context("stat format")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()?
            + f.get(12).context("stime")?.parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(ticks as f64 / hz)
    }

    /// SIGINT, then waits and returns every stderr line.
    pub fn stop(mut self) -> Result<Vec<String>> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait()?;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            self.stderr.push(line);
        }
        Ok(std::mem::take(&mut self.stderr))
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
