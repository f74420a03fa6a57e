//! Soak suites: long runs that find what breaks slowly or only sometimes (docs/reliability.md).
//!
//! - `churn [N] [--agent]`: N pod-like namespaces made and deleted one after another under one
//!   `netpath watch --all --json` (with `--agent`: a `netpath agent` in the node's namespace,
//!   as on a node, and `watch --agents` reading it); every pod's pings must be seen by its own
//!   names, and the memory of watch (and of the agent) must stay flat.
//! - `residue [N] [--seed S]`: N runs of watch, capture, trace and agent, each ended at a
//!   random moment by its own end, SIGINT, SIGTERM, SIGHUP or SIGKILL (an agent, which has no
//!   end of its own, sometimes while a `watch --agents` reads it); after each, nothing netpath
//!   made may remain (programs, tc filters and qdiscs, namespaces, /run/netpath, temporary
//!   files).
//!
//! Everything a suite makes is removed by guards, also when it fails or gets Ctrl-C.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub const USAGE: &str =
    "  churn [N] [--agent]    N pod namespaces (default 200) come and go under one watch --all
                         (--agent: under a node agent read by watch --agents)
  residue [N] [--seed S] N runs (default 100) of watch/capture/trace/agent ended at random moments
  fuzz [--seconds S] [RUNS] [TARGET..]
                         every fuzz target (or those named) for RUNS inputs (default 2000000)";

pub fn run(args: &[&str]) -> Result<()> {
    catch_stop_signals();
    match args {
        ["churn", rest @ ..] => {
            let agent = rest.contains(&"--agent");
            let rest: Vec<&str> = rest.iter().copied().filter(|a| *a != "--agent").collect();
            churn(count(&rest, 200)?, agent)
        }
        ["residue", rest @ ..] => {
            let (n, seed) = residue_args(rest)?;
            residue(n, seed)
        }
        ["fuzz", rest @ ..] => fuzz(rest),
        _ => bail!("usage: cargo xtask soak <suite>\nsuites:\n{USAGE}"),
    }
}

fn count(args: &[&str], default: usize) -> Result<usize> {
    match args {
        [] => Ok(default),
        [n] => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{n:?} is not a positive count")),
        _ => bail!("unexpected arguments {args:?}"),
    }
}

fn residue_args(args: &[&str]) -> Result<(usize, u64)> {
    let mut rest = Vec::new();
    let mut seed = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "--seed" {
            let s = it.next().context("--seed needs a value")?;
            seed = Some(s.parse().with_context(|| format!("{s:?} is not a seed"))?);
        } else {
            rest.push(*a);
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    Ok((count(&rest, 100)?, seed))
}

// ---- Ctrl-C: stop between steps so the guards run ----

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: removing what the soak made");
    }
    Ok(())
}

// ---- small helpers ----

use crate::bench::sh;

/// The `netpath` binary: `NETPATH_BIN`, else the debug build (built now; soaks look for
/// leaks and leftovers, not speed).
fn netpath_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return Ok(p.into());
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "tracer", "--bin", "netpath"])
        .status()?;
    if !status.success() {
        bail!("building netpath failed");
    }
    Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netpath"))
}

/// A named network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Result<Self> {
        sh(&format!("ip netns add {name}"))?;
        let ns = Netns { name };
        ns.exec("ip link set lo up")?;
        Ok(ns)
    }

    fn exec(&self, cmd: &str) -> Result<String> {
        sh(&format!("ip netns exec {} sh -c '{cmd}'", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

/// A child in its own process group (Ctrl-C reaches only the soak, which stops it), killed on
/// drop; its stderr is collected in the background.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Result<(Self, Option<std::process::ChildStdout>)> {
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().context("stderr")?;
        let lines = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().map(|mut l| l.push(line)).ok();
            }
        });
        let stdout = child.stdout.take();
        Ok((Proc { child, stderr }, stdout))
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(self.pid(), sig) };
    }

    fn stderr_has(&self, needle: &str) -> bool {
        self.stderr
            .lock()
            .map(|l| l.iter().any(|s| s.contains(needle)))
            .unwrap_or(false)
    }

    /// The word after `needle` on the first stderr line that has it.
    fn stderr_find(&self, needle: &str) -> Option<String> {
        let lines = self.stderr.lock().ok()?;
        lines.iter().find_map(|l| {
            let (_, rest) = l.split_once(needle)?;
            rest.split_whitespace().next().map(String::from)
        })
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|l| {
                l.iter()
                    .rev()
                    .take(3)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for the exit; `None` if it is still running.
    fn wait_for(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident memory of a process in KiB (VmRSS of /proc/PID/status).
fn rss_kib(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// Waits until a process's stderr says it is ready.
fn wait_ready(p: &mut Proc, line: &str, timeout: Duration) -> Result<()> {
    let until = Instant::now() + timeout;
    while !p.stderr_has(line) {
        check_stop()?;
        if let Some(st) = p.child.try_wait()? {
            bail!("exited ({st}) before it was ready: {}", p.stderr_tail());
        }
        if Instant::now() >= until {
            bail!("not ready after {timeout:?}: {}", p.stderr_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

// ---- churn ----

/// Pod `i`'s addresses: 10.x.y.0/24 and fd00:80:i::/64, node side .1/::1, pod side .2/::2.
fn pod_addrs(i: usize) -> ([String; 2], [String; 2]) {
    let v4 = format!("10.{}.{}", 80 + i / 256, i % 256);
    let v6 = format!("fd00:80:{i:x}:");
    (
        [format!("{v4}.1"), format!("{v6}:1")],
        [format!("{v4}.2"), format!("{v6}:2")],
    )
}

/// The node agent of `churn --agent`: in the node's namespace (where the pods' veths appear,
/// as on a node), unconfined, on 127.0.0.1 there.
fn churn_agent(bin: &Path, node: &Netns, tls: &Path) -> Result<Proc> {
    sh(&format!(
        "{} certs --out {} --nodes soak=127.0.0.1 --days 1",
        bin.display(),
        tls.display()
    ))?;
    let (mut agent, _) = Proc::spawn(
        Command::new("ip")
            .args(["netns", "exec", &node.name])
            .arg(bin)
            .args(["agent", "--node", "soak", "--listen", "127.0.0.1:7101"])
            .arg("--tls-dir")
            .arg(tls)
            .stdout(Stdio::null()),
    )?;
    wait_ready(&mut agent, "listening on", Duration::from_secs(120))?;
    Ok(agent)
}

fn churn(n: usize, through_agent: bool) -> Result<()> {
    let bin = netpath_bin()?;
    let stem = format!("npsc{}", std::process::id());
    let node = Netns::new(format!("{stem}node"))?;
    let temp = tempdir(&stem)?;
    let tls = temp.path.join("tls");
    // Declared before watch: dropped (killed) after it.
    let mut agent = if through_agent {
        Some(churn_agent(&bin, &node, &tls)?)
    } else {
        None
    };
    let mut watch_cmd = Command::new(&bin);
    watch_cmd.args(["watch", "--json"]);
    if agent.is_some() {
        // The agent serves only the soak's namespaces' traffic here: no filter needed.
        watch_cmd
            .args(["--agents", &format!("soak=127.0.0.1:7101@{}", node.name)])
            .arg("--tls-dir")
            .arg(&tls);
    } else {
        watch_cmd
            .args(["--all", "--no-drops"])
            // Only the pods' addresses: other traffic on the machine stays out of the stream.
            .args(["--host", "10.80.0.0/12", "--host", "fd00:80::/32"]);
    }
    let (mut watch, stdout) = Proc::spawn(watch_cmd.stdout(Stdio::piped()))?;
    wait_ready(&mut watch, "watching", Duration::from_secs(60))?;
    let (tx, events) = mpsc::channel::<serde_json::Value>();
    let stdout = stdout.context("watch stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    match &agent {
        Some(a) => println!(
            "churn: {n} pods under `netpath agent` (pid {}) in {}, read by `netpath watch \
             --agents --json` (pid {})",
            a.pid(),
            node.name,
            watch.pid()
        ),
        None => println!(
            "churn: {n} pods under `netpath watch --all --json` (pid {})",
            watch.pid()
        ),
    }
    let agent_rss = |a: &Option<Proc>| a.as_ref().map(|a| rss_kib(a.pid())).transpose();
    let mut rss = vec![(0, rss_kib(watch.pid())?)];
    let mut rss_agent = vec![(0, agent_rss(&agent)?)];
    let (mut missed, mut slowest, mut inodes, mut reused) =
        (Vec::new(), Duration::ZERO, BTreeSet::new(), 0);
    let started = Instant::now();
    for i in 0..n {
        check_stop()?;
        let pod = Netns::new(format!("{stem}p{i}"))?;
        let (dev, host) = (format!("eth{i}"), format!("vh{i}"));
        let (node_ip, pod_ip) = pod_addrs(i);
        sh(&format!(
            "ip link add name {dev} netns {} type veth peer name {host} netns {}",
            pod.name, node.name
        ))?;
        pod.exec(&format!(
            "ip addr add {}/24 dev {dev} && ip addr add {}/64 dev {dev} nodad && ip link set {dev} up",
            pod_ip[0], pod_ip[1]
        ))?;
        node.exec(&format!(
            "ip addr add {}/24 dev {host} && ip addr add {}/64 dev {host} nodad && ip link set {host} up",
            node_ip[0], node_ip[1]
        ))?;
        let inode = std::fs::metadata(format!("/run/netns/{}", pod.name))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
        if !inodes.insert(inode) {
            reused += 1;
        }
        // Pings in both families until watch names an event of each on the pod's device (new
        // devices are attached at watch's next rescan).
        let start = Instant::now();
        let mut seen = [false; 2];
        while seen != [true; 2] && start.elapsed() < Duration::from_secs(20) {
            check_stop()?;
            for (fam, ip) in node_ip.iter().enumerate() {
                if !seen[fam] {
                    let _ = pod.exec(&format!("ping -c1 -W1 {ip} >/dev/null"));
                }
            }
            let until = Instant::now() + Duration::from_millis(300);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                let Ok(ev) = events.recv_timeout(left) else {
                    break;
                };
                if ev["netns"] == pod.name.as_str() && ev["ifname"] == dev.as_str() {
                    match ev["family"].as_u64() {
                        Some(4) => seen[0] = true,
                        Some(6) => seen[1] = true,
                        _ => {}
                    }
                }
            }
        }
        slowest = slowest.max(start.elapsed());
        for (fam, ok) in ["IPv4", "IPv6"].iter().zip(seen) {
            if !ok {
                missed.push(format!("{}/{dev} {fam}", pod.name));
            }
        }
        drop(pod);
        if (i + 1) % 10 == 0 {
            rss.push((i + 1, rss_kib(watch.pid())?));
            rss_agent.push((i + 1, agent_rss(&agent)?));
        }
        if let Some(st) = watch.child.try_wait()? {
            bail!("watch exited ({st}) at pod {i}: {}", watch.stderr_tail());
        }
        if let Some(a) = &mut agent {
            if let Some(st) = a.child.try_wait()? {
                bail!("the agent exited ({st}) at pod {i}: {}", a.stderr_tail());
            }
        }
    }
    let elapsed = started.elapsed();
    watch.signal(libc::SIGINT);
    let status = watch.wait_for(Duration::from_secs(20))?;
    let growth = rss_growth("watch", &rss);
    println!(
        "churn: {n} pods in {:.0} s, {reused} reused an earlier pod's inode; missed {} of {} \
         pings; slowest first sight {:.1} s; watch exit {}",
        elapsed.as_secs_f64(),
        missed.len(),
        2 * n,
        slowest.as_secs_f64(),
        status.map_or("hung".into(), |s| s.to_string())
    );
    let agent_end = match &mut agent {
        Some(a) => {
            let rss: Vec<(usize, u64)> = rss_agent
                .iter()
                .filter_map(|(c, k)| Some((*c, (*k)?)))
                .collect();
            let growth = rss_growth("agent", &rss);
            a.signal(libc::SIGTERM);
            let st = a.wait_for(Duration::from_secs(20))?;
            println!(
                "churn: agent exit {}",
                st.map_or("hung".into(), |s| s.to_string())
            );
            Some((growth, st))
        }
        None => None,
    };
    if !missed.is_empty() {
        bail!("never seen by their names: {missed:?}");
    }
    if growth > RSS_GROWTH_LIMIT_KIB {
        bail!("watch grew by {growth} KiB after warm-up (limit {RSS_GROWTH_LIMIT_KIB} KiB)");
    }
    if status.map(|s| s.code()) != Some(Some(130)) {
        bail!("watch did not end on SIGINT with 130: {status:?}");
    }
    if let Some((growth, st)) = agent_end {
        if growth > RSS_GROWTH_LIMIT_KIB {
            bail!(
                "the agent grew by {growth} KiB after warm-up (limit {RSS_GROWTH_LIMIT_KIB} KiB)"
            );
        }
        if st.map(|s| s.code()) != Some(Some(0)) {
            bail!("the agent did not end on SIGTERM with 0: {st:?}");
        }
    }
    println!("churn: PASS");
    Ok(())
}

/// Prints a process's RSS samples (KiB, after each 10 pods) and returns its growth after the
/// warm-up (the first 10 pods): with the pods gone, memory must not keep growing.
fn rss_growth(who: &str, rss: &[(usize, u64)]) -> u64 {
    println!("RSS of {who} (KiB) after each 10 pods:");
    for chunk in rss.chunks(10) {
        let line: Vec<String> = chunk.iter().map(|(c, k)| format!("{c}:{k}")).collect();
        println!("  {}", line.join(" "));
    }
    let first = rss.first().map_or(0, |r| r.1);
    let last = rss.last().map_or(0, |r| r.1);
    let max = rss.iter().map(|r| r.1).max().unwrap_or(0);
    let warm = rss.get(1).map_or(first, |r| r.1);
    let growth = last.saturating_sub(warm);
    println!(
        "  {who}: first {first} KiB, after 10 pods {warm} KiB, last {last} KiB, max {max} KiB \
         (growth after warm-up {growth} KiB)"
    );
    growth
}

/// Growth of watch's RSS allowed over a churn run after its first 10 pods: well above the
/// allocator's noise, well below what holding every gone pod's state would take at N=200.
const RSS_GROWTH_LIMIT_KIB: u64 = 4096;

// ---- residue ----

/// xorshift64*: a seeded, reproducible sequence (the seed is printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Ending {
    Normal,
    Int,
    Term,
    Hup,
    Kill,
}

impl Ending {
    const ALL: [Ending; 5] = [
        Ending::Normal,
        Ending::Int,
        Ending::Term,
        Ending::Hup,
        Ending::Kill,
    ];

    fn signal(self) -> Option<i32> {
        match self {
            Ending::Normal => None,
            Ending::Int => Some(libc::SIGINT),
            Ending::Term => Some(libc::SIGTERM),
            Ending::Hup => Some(libc::SIGHUP),
            Ending::Kill => Some(libc::SIGKILL),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ending::Normal => "own end",
            Ending::Int => "SIGINT",
            Ending::Term => "SIGTERM",
            Ending::Hup => "SIGHUP",
            Ending::Kill => "SIGKILL",
        }
    }
}

const COMMANDS: [&str; 4] = ["watch", "capture", "trace", "agent"];

/// What netpath could leave behind, as text to compare with the state before the soak.
#[derive(Debug, PartialEq, Eq)]
struct Residue {
    /// netpath's programs no process holds (kept only by the kernel: tc filters, pins).
    orphan_programs: BTreeSet<String>,
    /// tc qdiscs, filters and tcx programs on the soak's devices.
    tc: String,
    namespaces: BTreeSet<String>,
    run_files: BTreeSet<String>,
    temp_files: BTreeSet<String>,
}

/// Names of the kernel programs (tracer-ebpf), as bpftool shows them (15 characters).
const PROGRAM_NAMES: [&str; 22] = [
    "fib6_table_lookup",
    "fib_table_lookup",
    "kfree_skb",
    "neigh_event_send_done",
    "neigh_timer_handler",
    "neigh_update",
    "net_dev_queue",
    "netif_receive_skb",
    "netpath_kp_skb1",
    "netpath_kp_skb2",
    "netpath_kp_skb3",
    "netpath_kp_skb4",
    "netpath_kp_skb5",
    "netpath_tc_eg",
    "netpath_tc_eg3",
    "netpath_tc_in",
    "netpath_tc_in3",
    "pcap_filter",
    "probe_fentry",
    "probe_kprobe",
    "softirq_exit",
    "tc_pcap_matched",
];

/// Program ids something live holds: a process's fd (a program or a link: fdinfo `prog_id`)
/// or a program array (capture's translated filter is tail-called from one).
fn held_program_ids() -> Result<BTreeSet<u64>> {
    let mut ids = BTreeSet::new();
    for p in std::fs::read_dir("/proc")?.flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(info) = std::fs::read_to_string(fd.path()) {
                ids.extend(info.lines().filter_map(|l| {
                    l.strip_prefix("prog_id:")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                }));
            }
        }
    }
    let maps: serde_json::Value = serde_json::from_str(&sh("bpftool -j map show")?)?;
    for m in maps.as_array().into_iter().flatten() {
        if m["type"] != "prog_array" {
            continue;
        }
        let Some(id) = m["id"].as_u64() else { continue };
        // Gone since the listing: nothing to hold.
        let Ok(dump) = sh(&format!("bpftool -j map dump id {id}")) else {
            continue;
        };
        let entries: serde_json::Value = serde_json::from_str(&dump)?;
        ids.extend(
            entries
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| prog_array_value(&e["value"])),
        );
    }
    Ok(ids)
}

/// A program array entry's value as bpftool prints it: the program id as little-endian hex
/// bytes (`["0xbf","0x11","0x00","0x00"]`).
fn prog_array_value(v: &serde_json::Value) -> Option<u64> {
    let bytes = v.as_array()?;
    bytes.iter().rev().try_fold(0u64, |acc, b| {
        let b = u64::from_str_radix(b.as_str()?.strip_prefix("0x")?, 16).ok()?;
        Some(acc << 8 | b)
    })
}

fn orphan_programs() -> Result<BTreeSet<String>> {
    let out = sh("bpftool -j prog show")?;
    let progs: serde_json::Value = serde_json::from_str(&out).context("bpftool json")?;
    let held = held_program_ids()?;
    let ours: BTreeSet<&str> = PROGRAM_NAMES
        .iter()
        .map(|n| &n[..n.len().min(15)])
        .collect();
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| ours.contains(n)))
        .filter_map(|p| p["id"].as_u64())
        .filter(|id| !held.contains(id))
        .map(|id| format!("prog {id}"))
        .collect())
}

fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.display().to_string());
            }
        }
    }
    out
}

/// A routed pair for the runs: `A` (va 10.81.0.1, fd00:81::1) -- `B` (vb 10.81.0.2, fd00:81::2),
/// with a ping from A to B every 0.2 s so capture -c and watch have packets to end on.
struct Pair {
    // Dropped first: the ping runs inside the namespaces.
    _ping: Proc,
    a: Netns,
    b: Netns,
}

impl Pair {
    fn new(stem: &str) -> Result<Self> {
        let a = Netns::new(format!("{stem}a"))?;
        let b = Netns::new(format!("{stem}b"))?;
        sh(&format!(
            "ip link add name va netns {} type veth peer name vb netns {}",
            a.name, b.name
        ))?;
        a.exec("ip addr add 10.81.0.1/24 dev va && ip addr add fd00:81::1/64 dev va nodad && ip link set va up")?;
        b.exec("ip addr add 10.81.0.2/24 dev vb && ip addr add fd00:81::2/64 dev vb nodad && ip link set vb up")?;
        let (ping, _) = Proc::spawn(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &a.name,
                    "ping",
                    "-q",
                    "-i",
                    "0.2",
                    "10.81.0.2",
                ])
                .stdout(Stdio::null()),
        )?;
        Ok(Pair { _ping: ping, a, b })
    }

    fn tc_state(&self) -> Result<String> {
        let mut s = String::new();
        for (ns, dev) in [(&self.a, "va"), (&self.b, "vb")] {
            s += &ns.exec(&format!(
                "tc qdisc show dev {dev}; tc filter show dev {dev} ingress; \
                 tc filter show dev {dev} egress; bpftool net show dev {dev}"
            ))?;
        }
        Ok(s)
    }
}

fn residue_now(pair: &Pair, stem: &str, temp: &Path) -> Result<Residue> {
    Ok(Residue {
        orphan_programs: orphan_programs()?,
        tc: pair.tc_state()?,
        namespaces: sh("ip netns list")?
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(stem) || n.contains("netpath"))
            .map(String::from)
            .collect(),
        run_files: files_under(Path::new("/run/netpath")),
        temp_files: files_under(temp),
    })
}

/// For an agent run: once the agent listens (within `delay`), a `watch --agents` reading it,
/// so the signal comes while a stream is open. `None` when the agent was not listening yet.
fn agent_reader(bin: &Path, agent: &mut Proc, tls: &Path, delay: Duration) -> Result<Option<Proc>> {
    let until = Instant::now() + delay;
    let addr = loop {
        if let Some(addr) = agent.stderr_find("listening on ") {
            break addr;
        }
        if Instant::now() >= until || agent.child.try_wait()?.is_some() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut watch, _) = Proc::spawn(
        Command::new(bin)
            .args(["watch", "--json", "--agents", &format!("soak={addr}")])
            .arg("--tls-dir")
            .arg(tls)
            .stdout(Stdio::null()),
    )?;
    // Its stream open (or its failure) before the agent's signal.
    let _ = wait_ready(&mut watch, "watching", Duration::from_secs(10));
    Ok(Some(watch))
}

/// The residue once the kernel has had time to free what the exit released: a program is
/// freed after an RCU grace period, so right after the exit it can still be listed, unheld.
fn settled_residue(before: &Residue, pair: &Pair, stem: &str, temp: &Path) -> Result<Residue> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let now = residue_now(pair, stem, temp)?;
        if now == *before || Instant::now() >= until {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The differences between two residue snapshots, one line each.
fn leftovers(before: &Residue, after: &Residue) -> Vec<String> {
    let mut out = Vec::new();
    let new = |what: &str, b: &BTreeSet<String>, a: &BTreeSet<String>, out: &mut Vec<String>| {
        out.extend(a.difference(b).map(|x| format!("{what}: {x}")));
    };
    new(
        "program",
        &before.orphan_programs,
        &after.orphan_programs,
        &mut out,
    );
    new("namespace", &before.namespaces, &after.namespaces, &mut out);
    new(
        "/run/netpath",
        &before.run_files,
        &after.run_files,
        &mut out,
    );
    new("temp file", &before.temp_files, &after.temp_files, &mut out);
    if before.tc != after.tc {
        out.push(format!("tc on va/vb: {:?}", after.tc));
    }
    out
}

/// The process a leftover clsact record (`/run/netpath/clsact/PID`) was written by.
fn record_pid(leftover: &str) -> Option<u32> {
    leftover.rsplit_once("/run/netpath/clsact/")?.1.parse().ok()
}

/// Ends of runs, per (command, ending).
#[derive(Default)]
struct Tally {
    runs: usize,
    during_startup: usize,
    /// Ended by the signal's default action: sent before netpath's handlers were in place.
    before_handlers: usize,
    /// A probing trace that exited with its verdict's code: the signal came as it finished.
    finished_first: usize,
    cleanups: usize,
    leftovers: usize,
    bad_exits: usize,
}

fn residue(n: usize, seed: u64) -> Result<()> {
    let bin = netpath_bin()?;
    let stem = format!("npsr{}", std::process::id());
    let pair = Pair::new(&stem)?;
    // The runs' own files (capture -w) go here; the directory is checked for anything else
    // (TMPDIR points netpath's temporary files here too).
    let temp = tempdir(&stem)?;
    let out_file = temp.path.join("out.pcapng");
    // The agent runs' TLS material, made before the first look at what is left.
    let tls = temp.path.join("tls");
    sh(&format!(
        "{} certs --out {} --nodes soak=127.0.0.1 --days 1",
        bin.display(),
        tls.display()
    ))?;
    let before = residue_now(&pair, &stem, &temp.path)?;
    if !before.orphan_programs.is_empty() {
        println!(
            "residue: note: {} netpath programs were already orphaned before the soak (not counted)",
            before.orphan_programs.len()
        );
    }
    println!("residue: {n} runs, seed {seed} (repeat with --seed {seed})");
    let mut rng = Rng(seed.max(1));
    let mut table: BTreeMap<(&str, Ending), Tally> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut our_pids = BTreeSet::new();
    let started = Instant::now();
    for run in 0..n {
        check_stop()?;
        let command = COMMANDS[rng.below(COMMANDS.len() as u64) as usize];
        let mut ending = Ending::ALL[rng.below(5) as usize];
        if command == "agent" && ending == Ending::Normal {
            // An agent has no end of its own: what stops a DaemonSet's pod.
            ending = Ending::Term;
        }
        // Half the agents are read by a `watch --agents` when their signal comes.
        let agent_client = command == "agent" && rng.below(2) == 0;
        let delay = Duration::from_millis(rng.below(5000));
        let mut passive = false;
        let mut args: Vec<String> = match command {
            "watch" => ["watch", "--netns", &pair.b.name, "--iface", "*", "--json"]
                .map(String::from)
                .to_vec(),
            "capture" => ["capture", "--netns", &pair.b.name, "-i", "vb", "-w"]
                .map(String::from)
                .into_iter()
                .chain([out_file.display().to_string()])
                .collect(),
            "agent" => [
                "agent",
                "--node",
                "soak",
                "--listen",
                "127.0.0.1:0",
                "--netns-scope",
                &format!("{},{}", pair.a.name, pair.b.name),
                "--tls-dir",
            ]
            .map(String::from)
            .into_iter()
            .chain([tls.display().to_string()])
            .collect(),
            _ => vec![
                "trace".into(),
                format!("netns:{}", pair.a.name),
                format!("netns:{}", pair.b.name),
                "--json".into(),
            ],
        };
        match (command, ending) {
            ("watch", Ending::Normal) => {
                args.extend(["--duration".into(), (1 + rng.below(3)).to_string()])
            }
            ("capture", Ending::Normal) => {
                args.extend(["-c".into(), (1 + rng.below(10)).to_string()])
            }
            // A probing trace is over in a few seconds; half the signalled ones wait for
            // real traffic instead, so signals also reach a trace well under way.
            ("trace", e) if e != Ending::Normal && rng.below(2) == 0 => {
                passive = true;
                args.extend(["--passive", "--timeout", "30"].map(String::from))
            }
            _ => {}
        }
        let (mut p, _) = Proc::spawn(
            Command::new(&bin)
                .args(&args)
                .env("TMPDIR", &temp.path)
                .stdout(Stdio::null()),
        )?;
        let ready = ["watching", "listening", "tracing"];
        let mut client = None;
        if agent_client {
            client = agent_reader(&bin, &mut p, &tls, delay)?;
        }
        let status = match ending.signal() {
            None => p.wait_for(Duration::from_secs(60))?,
            Some(sig) => match p.wait_for(delay)? {
                // Ended by itself before the signal was due.
                Some(st) => {
                    ending = Ending::Normal;
                    Some(st)
                }
                None => {
                    // A probing trace prints no ready line when stderr is not a terminal.
                    let says_ready = command != "trace" || passive;
                    let startup = says_ready && !ready.iter().any(|l| p.stderr_has(l));
                    table.entry((command, ending)).or_default().during_startup +=
                        usize::from(startup);
                    p.signal(sig);
                    p.wait_for(Duration::from_secs(30))?
                }
            },
        };
        let tally = table.entry((command, ending)).or_default();
        tally.runs += 1;
        let expected = match ending {
            Ending::Normal => status.is_some_and(|s| s.code().is_some()),
            Ending::Kill => status.is_some_and(|s| {
                std::os::unix::process::ExitStatusExt::signal(&s) == Some(libc::SIGKILL)
            }),
            // An agent stops cleanly on SIGINT, SIGTERM and SIGHUP and exits 0 (a daemon's
            // stop, not an interruption); or by the default action before its handlers.
            e if command == "agent" => {
                let by_signal =
                    status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
                if by_signal.is_some() && by_signal == e.signal() {
                    tally.before_handlers += 1;
                    true
                } else {
                    status.and_then(|s| s.code()) == Some(0)
                }
            }
            e => {
                let by_signal =
                    status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
                // Sent within the first milliseconds, before netpath installed its handlers:
                // the default action ends it, with nothing attached yet (the checks below).
                let code = status.and_then(|s| s.code());
                if by_signal.is_some() && by_signal == e.signal() {
                    tally.before_handlers += 1;
                    true
                } else if command == "trace" && !passive && matches!(code, Some(0 | 1)) {
                    // A probing trace stops watching signals once its session is over
                    // (everything detached): one that came while the report was printed
                    // leaves the verdict's exit code.
                    tally.finished_first += 1;
                    true
                } else {
                    status.and_then(|s| s.code()) == e.signal().map(|s| 128 + s)
                }
            }
        };
        if !expected {
            tally.bad_exits += 1;
            problems.push(format!(
                "run {run}: {command} {} ended {status:?}: {}",
                ending.name(),
                p.stderr_tail()
            ));
        }
        let pid = p.child.id();
        drop(p);
        if let Some(mut c) = client.take() {
            // The reader of a stopped agent ends by itself (its only agent went away).
            if c.wait_for(Duration::from_secs(15))?.is_none() {
                tally.bad_exits += 1;
                problems.push(format!(
                    "run {run}: watch --agents still runs 15 s after its agent stopped: {}",
                    c.stderr_tail()
                ));
            }
            our_pids.insert(c.child.id());
        }
        let _ = std::fs::remove_file(&out_file);
        let mut now = settled_residue(&before, &pair, &stem, &temp.path)?;
        if ending == Ending::Kill && now != before {
            // What a killed netpath leaves on kernels without tcx: `netpath cleanup` removes it.
            sh(&format!("{} cleanup", bin.display()))?;
            tally.cleanups += 1;
            now = settled_residue(&before, &pair, &stem, &temp.path)?;
        }
        our_pids.insert(pid);
        let (left, others): (Vec<String>, Vec<String>) = leftovers(&before, &now)
            .into_iter()
            .partition(|l| record_pid(l).is_none_or(|p| our_pids.contains(&p)));
        for o in others {
            println!("  run {run}: not this soak's (another netpath on the machine): {o}");
        }
        if !left.is_empty() {
            tally.leftovers += left.len();
            problems.push(format!(
                "run {run}: {command} {}: left {left:?}",
                ending.name()
            ));
        }
        if (run + 1) % 10 == 0 {
            println!(
                "  {} runs, {:.0} s",
                run + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{:<8} {:<8} {:>5} {:>15} {:>15} {:>14} {:>9} {:>10} {:>10}",
        "command",
        "ending",
        "runs",
        "during start-up",
        "before handlers",
        "finished first",
        "cleanups",
        "bad exits",
        "leftovers"
    );
    let mut total = Tally::default();
    for ((command, ending), t) in &table {
        if t.runs == 0 {
            continue;
        }
        println!(
            "{command:<8} {:<8} {:>5} {:>15} {:>15} {:>14} {:>9} {:>10} {:>10}",
            ending.name(),
            t.runs,
            t.during_startup,
            t.before_handlers,
            t.finished_first,
            t.cleanups,
            t.bad_exits,
            t.leftovers
        );
        total.runs += t.runs;
        total.during_startup += t.during_startup;
        total.before_handlers += t.before_handlers;
        total.finished_first += t.finished_first;
        total.cleanups += t.cleanups;
        total.bad_exits += t.bad_exits;
        total.leftovers += t.leftovers;
    }
    println!(
        "residue: {} runs in {:.0} s (seed {seed}): {} ended during start-up ({} before the \
         signal handlers), {} traces finished as the signal came, {} needed `netpath cleanup`, \
         bad exits = {}, leftovers = {}",
        total.runs,
        started.elapsed().as_secs_f64(),
        total.during_startup,
        total.before_handlers,
        total.finished_first,
        total.cleanups,
        total.bad_exits,
        total.leftovers
    );
    if !problems.is_empty() {
        for p in &problems {
            println!("  {p}");
        }
        bail!("{} problems", problems.len());
    }
    println!("residue: PASS");
    Ok(())
}

// ---- fuzz ----

/// The cargo-fuzz targets (fuzz/fuzz_targets/), one per decoder of outside bytes.
const FUZZ_TARGETS: [&str; 5] = [
    "event_record",
    "header_parse",
    "capture_file",
    "cbpf_translate",
    "agent_messages",
];

/// cargo-fuzz, installed on first use (CI that never fuzzes does not pay for it).
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        println!("fuzz: installing cargo-fuzz");
        let ok = Command::new(env!("CARGO"))
            .args(["install", "cargo-fuzz", "--locked"])
            .status()?
            .success();
        if !ok {
            bail!("installing cargo-fuzz failed");
        }
    }
    Ok(())
}

/// libFuzzer's last status line: `#RUNS DONE cov: C ft: F corp: N/SIZE ... exec/s: E ...`.
fn fuzz_stats(line: &str) -> Option<BTreeMap<&str, &str>> {
    let rest = line.strip_prefix('#')?;
    let (runs, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start().strip_prefix("DONE")?;
    let mut fields: BTreeMap<&str, &str> = rest
        .split_whitespace()
        .collect::<Vec<_>>()
        .chunks_exact(2)
        .filter_map(|kv| Some((kv[0].strip_suffix(':')?, kv[1])))
        .collect();
    fields.insert("runs", runs);
    Some(fields)
}

fn fuzz(args: &[&str]) -> Result<()> {
    // `--seconds S`: also stop each target after S seconds (libFuzzer's -max_total_time).
    let (seconds, args) = match args {
        ["--seconds", s, rest @ ..] => (
            Some(
                s.parse::<u64>()
                    .with_context(|| format!("{s:?} is not seconds"))?,
            ),
            rest,
        ),
        _ => (None, args),
    };
    let (runs, targets): (u64, Vec<&str>) = match args {
        [] => (2_000_000, FUZZ_TARGETS.to_vec()),
        [n, names @ ..] => {
            let runs = n
                .parse()
                .with_context(|| format!("{n:?} is not a number of runs"))?;
            for t in names {
                if !FUZZ_TARGETS.contains(t) {
                    bail!(
                        "unknown fuzz target {t:?} (known: {})",
                        FUZZ_TARGETS.join(", ")
                    );
                }
            }
            let names = if names.is_empty() {
                FUZZ_TARGETS.to_vec()
            } else {
                names.to_vec()
            };
            (runs, names)
        }
    };
    ensure_cargo_fuzz()?;
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut table = Vec::new();
    let mut failed = Vec::new();
    for target in targets {
        check_stop()?;
        // New inputs go to a work corpus under target/; the committed seeds stay as they are.
        let work = fuzz_dir.join("target/corpus").join(target);
        std::fs::create_dir_all(&work)?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let started = Instant::now();
        // cargo-fuzz needs nightly (sanitizer flags); rustup picks it for this command only.
        let mut cmd = Command::new("rustup");
        // Not the variables `cargo xtask` was given (CARGO_MANIFEST_DIR, CARGO_PKG_*...):
        // build scripts that read them would rebuild everything, unlike a shell's
        // `cargo +nightly fuzz run`.
        for (k, _) in std::env::vars_os() {
            if k.to_str()
                .is_some_and(|k| k.starts_with("CARGO") && k != "CARGO_HOME")
            {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .current_dir(&fuzz_dir)
            // The kernel object is not needed to decode bytes.
            .env("AYA_BUILD_SKIP", "1")
            .args(["run", "nightly", "cargo", "fuzz", "run", target])
            .arg(&work)
            .arg(&seeds)
            .args(["--", &format!("-runs={runs}"), "-print_final_stats=1"])
            .args(seconds.map(|s| format!("-max_total_time={s}")))
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()?;
        let log = String::from_utf8_lossy(&out.stderr);
        // Kept for the record (the coverage and corpus lines, a crash's report).
        std::fs::write(fuzz_dir.join(format!("target/{target}.log")), &*log)?;
        if !out.status.success() {
            // The panic (or sanitizer report) and where libFuzzer wrote the input; the other
            // targets still run.
            let lines: Vec<&str> = log.lines().collect();
            let start = lines
                .iter()
                .position(|l| l.contains("panicked at") || l.contains("ERROR: "))
                .unwrap_or(lines.len().saturating_sub(20));
            let mut why: Vec<&str> = lines[start..].iter().take(4).copied().collect();
            why.extend(lines.iter().filter(|l| l.contains("Test unit written to")));
            println!("fuzz: {target} FAILED:\n{}", why.join("\n"));
            failed.push(target);
            continue;
        }
        let stats = log
            .lines()
            .rev()
            .find_map(fuzz_stats)
            .with_context(|| format!("{target}: no final libFuzzer status line"))?;
        let get = |k: &str| stats.get(k).copied().unwrap_or("?").to_string();
        let row = [
            target.to_string(),
            get("runs"),
            get("exec/s"),
            get("cov"),
            get("ft"),
            get("corp"),
            format!("{:.0}", started.elapsed().as_secs_f64()),
        ];
        println!("fuzz: {}", row.join(" "));
        table.push(row);
    }
    println!("| target | inputs | exec/s | coverage (edges) | features | corpus (inputs/size) | seconds |");
    println!("|---|---|---|---|---|---|---|");
    for row in &table {
        println!("| {} |", row.join(" | "));
    }
    if !failed.is_empty() {
        bail!("fuzz targets that found a crash: {failed:?} (inputs in fuzz/artifacts/)");
    }
    Ok(())
}

/// A directory of the soak's own, removed on drop.
struct TempDir {
    path: PathBuf,
}

fn tempdir(stem: &str) -> Result<TempDir> {
    let path = std::env::temp_dir().join(format!("{stem}-soak"));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir { path })
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_fixes_the_sequence() {
        let (mut a, mut b) = (Rng(42), Rng(42));
        let xs: Vec<u64> = (0..100).map(|_| a.below(5)).collect();
        assert_eq!(xs, (0..100).map(|_| b.below(5)).collect::<Vec<_>>());
        // Every ending comes up in a short run.
        assert!((0..5).all(|e| xs.contains(&e)));
    }

    #[test]
    fn pod_addresses_are_distinct_and_in_range() {
        let all: BTreeSet<String> = (0..1000).map(|i| pod_addrs(i).1[0].clone()).collect();
        assert_eq!(all.len(), 1000);
        assert_eq!(
            pod_addrs(300).1,
            ["10.81.44.2".to_string(), "fd00:80:12c::2".into()]
        );
    }

    #[test]
    fn leftovers_are_what_is_new() {
        let snap = |progs: &[&str], tc: &str| Residue {
            orphan_programs: progs.iter().map(|s| s.to_string()).collect(),
            tc: tc.into(),
            namespaces: BTreeSet::new(),
            run_files: BTreeSet::new(),
            temp_files: BTreeSet::new(),
        };
        let before = snap(&["prog 1"], "qdisc noqueue");
        assert!(leftovers(&before, &snap(&["prog 1"], "qdisc noqueue")).is_empty());
        let left = leftovers(&before, &snap(&["prog 1", "prog 7"], "qdisc clsact"));
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(left[0], "program: prog 7");
    }

    #[test]
    fn clsact_records_name_their_process() {
        assert_eq!(
            record_pid("/run/netpath: /run/netpath/clsact/16784"),
            Some(16784)
        );
        assert_eq!(record_pid("/run/netpath: /run/netpath/lab.json"), None);
    }

    #[test]
    fn program_array_values_are_program_ids() {
        let v = serde_json::json!(["0xbf", "0x11", "0x00", "0x00"]);
        assert_eq!(prog_array_value(&v), Some(4543));
        assert_eq!(prog_array_value(&serde_json::json!(["zz"])), None);
    }

    #[test]
    fn libfuzzer_final_lines_are_read() {
        let s = fuzz_stats(
            "#2000000 DONE   cov: 1234 ft: 5678 corp: 210/31Kb lim: 4096 exec/s: 40816 rss: 512Mb",
        )
        .unwrap();
        assert_eq!(s["runs"], "2000000");
        assert_eq!(s["cov"], "1234");
        assert_eq!(s["exec/s"], "40816");
        assert_eq!(s["corp"], "210/31Kb");
        assert!(fuzz_stats("#1024 pulse  cov: 10 ft: 11").is_none());
    }

    #[test]
    fn counts_and_seeds_are_checked() {
        assert_eq!(count(&[], 200).unwrap(), 200);
        assert_eq!(count(&["7"], 200).unwrap(), 7);
        assert!(count(&["0"], 200).is_err());
        assert!(count(&["x"], 200).is_err());
        assert_eq!(residue_args(&["5", "--seed", "9"]).unwrap(), (5, 9));
        assert!(residue_args(&["--seed"]).is_err());
    }
}
