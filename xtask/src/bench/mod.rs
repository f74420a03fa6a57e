//! Benchmarks, one module each; shared pieces (namespaces, the UDP sender, process CPU time)
//! live here.
mod agent;
mod attach;
mod capture;
mod decode;
mod empty_tc;
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

pub fn run(name: &str, args: &[&str]) -> Result<()> {
    match (name, args) {
        ("agent", args) => agent::run(args),
        ("attach", args) => attach::run(args),
        ("capture", args) => capture::run(args),
        ("decode", args) => decode::run(args),
        ("overhead", []) => overhead::run(),
        ("overhead", _) => bail!("{name} takes no arguments"),
        (other, _) => {
            bail!("unknown benchmark {other:?} (known: agent, attach, capture, decode, overhead)")
        }
    }
}

/// The 1, 5 and 15 minute load averages, for the record next to a figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The release `netpath` binary (`NETPATH_BIN`, else built now): benchmarks measure what users run.
pub fn netpath_release() -> Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return Ok(p.into());
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "tracer", "--bin", "netpath"])
        .status()?;
    if !status.success() {
        bail!("building netpath failed");
    }
    Ok(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/netpath"))
}

/// Runs `cmd` with sh; its stdout, or an error with its stderr.
pub(crate) fn sh(cmd: &str) -> Result<String> {
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
    _interrupted: crate::interrupt::Cleanup,
}

impl VethPair {
    pub fn new(tag: &str) -> Result<Self> {
        let id = std::process::id() % 100_000;
        let (a, b) = (format!("npb{tag}a{id}"), format!("npb{tag}b{id}"));
        let pair = VethPair {
            _interrupted: crate::interrupt::on_interrupt(format!(
                "ip netns del {a}; ip netns del {b}"
            )),
            a,
            b,
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

/// How to flood: `rate` UDP packets/s in all (0 = as fast as the machine goes) of `size`
/// payload bytes for `secs`, from `threads` sender threads (each with its own socket, sending
/// batches of [`BATCH`] with sendmmsg).
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    pub rate: u64,
    pub secs: f64,
    pub size: usize,
    pub threads: usize,
    /// Instead of UDP sockets, whole Ethernet frames through an AF_PACKET socket bound to
    /// this device (qdisc bypassed), addressed to a MAC nobody has: the receiving veth's
    /// capture points (tc, packet taps) see each one, then its IP stack drops it at once
    /// (PACKET_OTHERHOST) instead of answering with ICMP. Reaches far higher rates.
    pub raw_dev: Option<&'static str>,
    /// Pin the sender (every thread) to this CPU: its veth's receive side then runs there too
    /// (veth hands packets to the sending CPU's backlog), so one flow is one core's work.
    pub cpu: Option<usize>,
}

/// Messages per sendmmsg call.
pub const BATCH: usize = 64;

/// The capture benchmark's sender threads: one per core (the senders can take the whole
/// machine), or NETPATH_BENCH_SENDERS.
pub fn default_sender_threads() -> usize {
    std::env::var("NETPATH_BENCH_SENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Runs [`flood`] inside namespace `ns` (this binary re-executed by `ip netns exec`) to
/// `dst`; returns how many packets were sent.
pub fn flood_with(ns: &str, dst: SocketAddr, f: Flood) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args([
            FLOOD_CMD,
            &dst.to_string(),
            &f.rate.to_string(),
            &f.secs.to_string(),
            &f.size.to_string(),
            &f.threads.to_string(),
            f.raw_dev.unwrap_or("-"),
            &f.cpu.map_or("-".to_string(), |c| c.to_string()),
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

/// The sender itself: `DST RATE SECS SIZE [THREADS [RAW_DEV|- [CPU|-]]]`; prints how many
/// packets were sent.
pub fn flood(args: &[&str]) -> Result<()> {
    let (dst, rate, secs, size, threads, raw_dev, cpu) = match args {
        [dst, rate, secs, size] => (dst, rate, secs, size, "1", "-", "-"),
        [dst, rate, secs, size, threads] => (dst, rate, secs, size, *threads, "-", "-"),
        [dst, rate, secs, size, threads, raw] => (dst, rate, secs, size, *threads, *raw, "-"),
        [dst, rate, secs, size, threads, raw, cpu] => (dst, rate, secs, size, *threads, *raw, *cpu),
        _ => bail!("{FLOOD_CMD} DST RATE SECS SIZE [THREADS [RAW_DEV|- [CPU|-]]]"),
    };
    if cpu != "-" {
        pin_to_cpu(cpu.parse().context("cpu")?)?;
    }
    let dst: SocketAddr = dst.parse()?;
    let threads: usize = threads.parse::<usize>()?.max(1);
    let rate: f64 = rate.parse()?;
    let per_thread = if rate > 0.0 {
        rate / threads as f64
    } else {
        f64::INFINITY
    };
    let secs: f64 = secs.parse()?;
    let size: usize = size.parse()?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (fd, payload) = if raw_dev == "-" {
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                sock.connect(dst)?;
                (std::os::fd::OwnedFd::from(sock), vec![0x5a_u8; size])
            } else {
                let SocketAddr::V4(dst) = dst else {
                    bail!("raw frames are IPv4 only");
                };
                (raw_socket(raw_dev)?, udp4_frame(dst, size))
            };
            Ok(std::thread::spawn(move || {
                send_paced(&fd, &payload, per_thread, start, end)
            }))
        })
        .collect::<Result<_>>()?;
    let mut sent = 0;
    for w in workers {
        sent += w
            .join()
            .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    }
    println!("{sent}");
    Ok(())
}

/// Runs this process (and the threads it starts later) on `cpu` only.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    set_affinity(cpu).with_context(|| format!("pinning to CPU {cpu}"))
}

/// `sched_setaffinity` to one CPU, without allocating (it also runs between fork and exec).
fn set_affinity(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays inside it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Each CPU's steal time so far, in seconds (/proc/stat): time the VM's host ran something
/// else while the CPU had work.
pub fn steal_seconds() -> Result<Vec<f64>> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut out = Vec::new();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(n) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
            continue;
        };
        let cpu: usize = n.parse().context("/proc/stat cpu number")?;
        // user nice system idle iowait irq softirq steal
        let steal: f64 = f.nth(7).context("/proc/stat: no steal column")?.parse()?;
        if out.len() <= cpu {
            out.resize(cpu + 1, 0.0);
        }
        out[cpu] = steal / hz;
    }
    Ok(out)
}

/// The median of `v` and a distribution-free 95 % confidence interval for it (order
/// statistics of the binomial(n, 1/2)); the interval is the whole range below 6 samples.
pub fn median_ci(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    // The largest k with P(Binomial(n, 1/2) < k) <= 2.5 %: [x(k), x(n+1-k)], 1-based.
    let mut k = 1;
    let (mut below, mut term) = (0.0, 0.5f64.powi(n as i32));
    for i in 0..n {
        below += term;
        if below > 0.025 {
            k = i.max(1);
            break;
        }
        term *= (n - i) as f64 / (i + 1) as f64;
    }
    (s[n / 2], s[k - 1], s[n - k])
}

/// An AF_PACKET socket that sends on `dev` straight to the driver (no qdisc) and receives
/// nothing.
fn raw_socket(dev: &str) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: plain syscalls on a socket this function owns from creation on.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            bail!("no device {dev}: {}", std::io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        if libc::bind(
            raw,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) < 0
        {
            bail!("binding to {dev}: {}", std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        Ok(fd)
    }
}

/// An Ethernet + IPv4 + UDP frame to `dst` with `size` payload bytes, from 10.9.0.1:9998 and
/// to MAC 02:00:00:00:00:02, which no device here has.
pub fn udp4_frame(dst: std::net::SocketAddrV4, size: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + size);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let total = (20 + 8 + size) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 9, 0, 1]);
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&9998u16.to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&((8 + size) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.resize(f.len() + size, 0x5a);
    f
}

/// Sends `payload` in batches on a connected or bound socket until `end`, keeping at or
/// below `rate` packets/s; returns the packets the kernel accepted.
fn send_paced(
    sock: &std::os::fd::OwnedFd,
    payload: &[u8],
    rate: f64,
    start: Instant,
    end: Instant,
) -> u64 {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: all-zero msghdr/mmsghdr are valid (no name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if rate.is_finite() {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            if due > now {
                std::thread::sleep(due - now);
                continue;
            }
        }
        // SAFETY: `msgs` holds BATCH valid headers pointing at `iov`/`payload`, all alive.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                0,
            )
        };
        // -1: ENOBUFS, or ECONNREFUSED after an ICMP port unreachable: nothing was sent.
        if n > 0 {
            sent += n as u64;
        }
    }
    sent
}

/// Packets `dev` in namespace `ns` has received so far (its rx_packets counter).
pub fn rx_packets(ns: &str, dev: &str) -> Result<u64> {
    sh(&format!(
        "ip netns exec {ns} cat /sys/class/net/{dev}/statistics/rx_packets"
    ))?
    .trim()
    .parse()
    .context("rx_packets")
}

/// A child process whose stderr lines are collected in the background; killed on drop.
pub struct Tool {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Tool {
    pub fn spawn(program: &str, args: &[&str]) -> Result<Self> {
        Self::spawn_on(program, args, None)
    }

    /// [`Tool::spawn`] with the child, and every thread it starts, on `cpu` only.
    pub fn spawn_on(program: &str, args: &[&str], cpu: Option<usize>) -> Result<Self> {
        let mut cmd = Command::new(program);
        if let Some(cpu) = cpu {
            use std::os::unix::process::CommandExt;
            // SAFETY: set_affinity makes one syscall and does not allocate.
            unsafe { cmd.pre_exec(move || set_affinity(cpu)) };
        }
        let mut child = cmd
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

/// A cgroup that holds its processes to a share of one CPU (the cpu controller's quota over
/// a period; cgroup v2 or v1), removed on drop.
pub struct CpuBudget {
    dir: std::path::PathBuf,
    /// Where processes go back to before the group is removed.
    parent: std::path::PathBuf,
}

impl CpuBudget {
    /// A new group named `name` allowing `percent` of one CPU over periods of `period_us`
    /// (the kernel takes quotas of at least 1 ms).
    pub fn new(name: &str, percent: u64, period_us: u64) -> Result<Self> {
        let quota = period_us * percent / 100;
        anyhow::ensure!(
            quota >= 1000,
            "a cgroup cpu quota of {quota} us is below 1 ms"
        );
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let parent = if v2 {
            std::path::PathBuf::from("/sys/fs/cgroup")
        } else {
            std::path::PathBuf::from("/sys/fs/cgroup/cpu")
        };
        if v2 {
            // The cpu controller must be on for the root's children.
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu");
        }
        let dir = parent.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let budget = CpuBudget { dir, parent };
        let set = |file: &str, value: String| {
            std::fs::write(budget.dir.join(file), value)
                .with_context(|| format!("writing {}", budget.dir.join(file).display()))
        };
        if v2 {
            set("cpu.max", format!("{quota} {period_us}"))?;
        } else {
            set("cpu.cfs_period_us", period_us.to_string())?;
            set("cpu.cfs_quota_us", quota.to_string())?;
        }
        Ok(budget)
    }

    /// Moves process `pid`, all its threads and what it starts later into the group.
    pub fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.dir.display()))
    }
}

impl Drop for CpuBudget {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.parent.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::median_ci;

    #[test]
    fn median_ci_uses_the_binomial_order_statistics() {
        let v: Vec<f64> = (1..=9).rev().map(f64::from).collect();
        assert_eq!(median_ci(&v), (5.0, 2.0, 8.0));
        let v: Vec<f64> = (1..=15).map(f64::from).collect();
        assert_eq!(median_ci(&v), (8.0, 4.0, 12.0));
        // Too few samples for 95 %: the whole range.
        assert_eq!(median_ci(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert!(median_ci(&[]).0.is_nan());
    }

    #[test]
    fn steal_times_are_read_for_every_cpu() {
        let steal = super::steal_seconds().unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(steal.len() >= cpus, "{steal:?}");
        assert!(steal.iter().all(|s| *s >= 0.0));
    }
}
