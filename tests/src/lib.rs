//! Shared harness for the real-kernel integration tests: namespace guards that always clean up,
//! a runner for the real `netpath` binary, and the test runner ([`harness`]) with what tests
//! require of the machine ([`Requires`]): a test that cannot run here is reported as ignored,
//! with the reason.
pub mod agents;
pub mod harness;

pub use harness::{run, Feature, Requires};

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs a command and returns its output; panics with stderr when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (cleanup paths).
pub fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh").arg("-c").arg(cmd).output();
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short prefix for names a test creates, so tests can run in parallel.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 10000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A named network namespace that is deleted when the guard drops (also on panic).
pub struct NetNsGuard {
    pub name: String,
}

impl NetNsGuard {
    pub fn new(name: &str) -> Self {
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        NetNsGuard {
            name: name.to_string(),
        }
    }
    /// Runs a shell command inside the namespace.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        sh_quiet(&format!("ip netns del {}", self.name));
    }
}

/// Path of the built `netpath` binary (target/<profile>/netpath next to the test's deps dir).
pub fn netpath_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let bin = profile_dir.join("netpath");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --bins` first",
        bin.display()
    );
    bin
}

/// Where scripts/setup puts the guest kernels (`NETPATH_VM_KERNELS`, else target/vm-kernels
/// of the target directory this test binary is in).
pub fn vm_kernels_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPATH_VM_KERNELS") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.ancestors()
        .nth(3)
        .map(|target| target.join("vm-kernels"))
        .unwrap_or_else(|| PathBuf::from("target/vm-kernels"))
}

/// The guest kernels there, as its `versions` file lists them: (release, kernel image), only
/// those whose image exists.
pub fn guest_kernels() -> Vec<(String, PathBuf)> {
    let dir = vm_kernels_dir();
    std::fs::read_to_string(dir.join("versions"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            (
                v.to_string(),
                dir.join(v).join("boot").join(format!("vmlinuz-{v}")),
            )
        })
        .filter(|(_, image)| image.is_file())
        .collect()
}

/// Runs `netpath ARGS` to completion.
pub fn netpath(args: &[&str]) -> Output {
    Command::new(netpath_bin())
        .args(args)
        .output()
        .expect("spawn netpath")
}

/// How long [`NetpathProcess::finish`] waits for a process to end by itself.
pub const FINISH_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A running `netpath` process, killed (SIGINT, then SIGKILL) if still alive when dropped.
pub struct NetpathProcess {
    pub child: std::process::Child,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    pub stderr_seen: Vec<String>,
}

impl NetpathProcess {
    /// Starts `netpath ARGS` with piped stdout/stderr.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_program(&netpath_bin(), args)
    }

    /// Starts any program the same way (e.g. tcpdump to compare with).
    pub fn spawn_program(program: &std::path::Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NetpathProcess {
            child,
            stderr_lines: rx,
            stderr_seen: Vec::new(),
        }
    }

    /// Waits until a stderr line contains `needle`; panics with what was seen on timeout.
    pub fn wait_stderr(&mut self, needle: &str, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stderr_seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "netpath never printed {needle:?}; stderr so far: {:#?}",
            self.stderr_seen
        );
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Sends a signal.
    pub fn signal(&self, signo: i32) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, signo) };
    }

    /// The stderr lines printed so far, without waiting.
    pub fn stderr_so_far(&mut self) -> &[String] {
        while let Ok(line) = self.stderr_lines.try_recv() {
            self.stderr_seen.push(line);
        }
        &self.stderr_seen
    }

    /// Waits for exit and returns (exit code, stdout). A process still running after
    /// [`FINISH_LIMIT`] is interrupted, then killed, so a test never hangs on it.
    pub fn finish(self) -> (Option<i32>, String) {
        let (code, out, _) = self.finish_with_stderr();
        (code, out)
    }

    /// [`NetpathProcess::finish`], with every stderr line as well.
    pub fn finish_with_stderr(mut self) -> (Option<i32>, String, Vec<String>) {
        use std::io::Read;
        let stdout = self.child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            if let Some(mut stdout) = stdout {
                let _ = stdout.read_to_string(&mut out);
            }
            out
        });
        let deadline = std::time::Instant::now() + FINISH_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait netpath") {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                eprintln!("process still running after {FINISH_LIMIT:?}: interrupting it");
                self.interrupt();
                std::thread::sleep(std::time::Duration::from_secs(2));
                let _ = self.child.kill();
                break self.child.wait().expect("wait netpath");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let out = reader.join().unwrap_or_default();
        while let Ok(line) = self
            .stderr_lines
            .recv_timeout(std::time::Duration::from_millis(200))
        {
            self.stderr_seen.push(line);
        }
        (status.code(), out, std::mem::take(&mut self.stderr_seen))
    }
}

impl Drop for NetpathProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.interrupt();
            std::thread::sleep(std::time::Duration::from_millis(500));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses JSON lines, ignoring anything else.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// tc programs on a device: tcx links (queried from the kernel, bpftool 7.1 cannot show them)
/// plus classic clsact filters (`tc filter show`).
pub fn tc_programs(netns: &str, ifname: &str) -> usize {
    use aya::programs::{SchedClassifier, TcAttachType};
    let ns = tracer::node::netns::by_name(netns).expect("netns");
    let dev = ifname.to_string();
    let tcx = tracer::node::netns::run_in(&ns, move || {
        [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .map(|ty| {
                SchedClassifier::query_tcx(&dev, ty)
                    .map(|(_, progs)| progs.len())
                    .unwrap_or(0)
            })
            .sum::<usize>()
    })
    .expect("query tcx");
    let classic = ["ingress", "egress"]
        .iter()
        .map(|dir| {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", netns, "tc", "filter", "show", "dev", ifname, dir,
                ])
                .output()
                .expect("tc");
            String::from_utf8_lossy(&out.stdout).matches("bpf").count()
        })
        .sum::<usize>();
    tcx + classic
}

/// Two namespaces joined by a veth: `a`/va has 10.1.0.1/24 and fd00:1::1/64, `b`/vb has
/// 10.1.0.2/24 and fd00:1::2/64.
pub fn veth_pair(prefix: &str) -> (NetNsGuard, NetNsGuard) {
    let a = NetNsGuard::new(&unique(&format!("{prefix}a")));
    let b = NetNsGuard::new(&unique(&format!("{prefix}b")));
    sh(&format!(
        "ip link add va netns {} type veth peer name vb netns {}",
        a.name, b.name
    ));
    for (ns, dev, v4, v6) in [
        (&a, "va", "10.1.0.1/24", "fd00:1::1/64"),
        (&b, "vb", "10.1.0.2/24", "fd00:1::2/64"),
    ] {
        ns.exec(&format!("ip addr add {v4} dev {dev} && ip addr add {v6} dev {dev} nodad && ip link set {dev} up"));
    }
    wait_reachable(&a, "fd00:1::2");
    (a, b)
}

/// Two namespaces joined by a veth, `a` (10.1.0.1, fd00:1::1) -- `b` (10.1.0.2, fd00:1::2),
/// where `b` forwards and `a` routes 10.99.0.0/16 and fd00:99::/64 through `b`, which has no
/// route for them: a no-route drop on demand. Both families answer when it is made.
pub struct RoutedPair {
    pub a: NetNsGuard,
    pub b: NetNsGuard,
}

pub fn routed_pair(prefix: &str) -> RoutedPair {
    let (a, b) = veth_pair(prefix);
    b.exec("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    a.exec("ip route add 10.99.0.0/16 via 10.1.0.2 && ip route add fd00:99::/64 via fd00:1::2");
    // Turning forwarding on changes b's addresses (routers join the subnet anycast address).
    wait_reachable(&a, "10.1.0.2");
    wait_reachable(&a, "fd00:1::2");
    RoutedPair { a, b }
}

/// Pings `addr` from `ns` until it answers (at most 5 s; panics after). The first IPv6
/// neighbour exchange on a veth that has just come up is sometimes not answered within a
/// ping's wait, which would make a test's own first ping flaky.
pub fn wait_reachable(ns: &NetNsGuard, addr: &str) {
    ns.exec(&format!(
        "for i in $(seq 10); do ping -c1 -W1 -i0.2 {addr} >/dev/null 2>&1 && exit 0; sleep 0.1; done; \
         echo '{addr} never answered' >&2; exit 1"
    ));
}

/// Sends `frames` out of `dev` in namespace `ns`, in order, through an AF_PACKET socket (raw
/// Ethernet frames, as a NIC would hand them over).
pub fn send_frames<'a>(ns: &NetNsGuard, dev: &str, frames: impl IntoIterator<Item = &'a [u8]>) {
    let netns = tracer::node::netns::by_name(&ns.name).expect("test namespace");
    let dev = std::ffi::CString::new(dev).unwrap();
    let frames: Vec<&[u8]> = frames.into_iter().collect();
    tracer::node::netns::run_in(&netns, || {
        // SAFETY: plain socket calls on a fresh fd; the address and buffers outlive each call.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = libc::if_nametoindex(dev.as_ptr()) as i32;
            addr.sll_halen = 6;
            for (i, f) in frames.iter().enumerate() {
                let sent = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    sent,
                    f.len() as isize,
                    "frame {i}: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    })
    .expect("enter the namespace");
}

/// A tiny name server in a namespace: `both.np.test` has A and AAAA records (give it
/// addresses no other test's namespaces hold, as the tests run side by side and an address is
/// resolved to the first namespace holding it), `v4.np.test` only the A record, anything else
/// is NXDOMAIN. Stops when dropped.
pub struct NameServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NameServer {
    /// Serves on `listen`:53 in `ns`, answering `a` and `aaaa`.
    pub fn start(ns: &NetNsGuard, listen: &str, a: &str, aaaa: &str) -> Self {
        let a: std::net::Ipv4Addr = a.parse().expect("an IPv4 address");
        let aaaa: std::net::Ipv6Addr = aaaa.parse().expect("an IPv6 address");
        let netns = tracer::node::netns::by_name(&ns.name).expect("namespace");
        let addr: std::net::SocketAddr = format!("{listen}:53").parse().unwrap();
        let sock = tracer::node::netns::run_in(&netns, move || std::net::UdpSocket::bind(addr))
            .expect("enter the namespace")
            .expect("bind port 53");
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = Self::answer(&buf[..n], a.octets(), aaaa.octets()) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        NameServer {
            stop,
            thread: Some(thread),
        }
    }

    /// The reply to one query: the question echoed, then the records.
    fn answer(q: &[u8], a: [u8; 4], aaaa: [u8; 16]) -> Option<Vec<u8>> {
        let mut off = 12;
        let mut labels = Vec::new();
        while *q.get(off)? != 0 {
            let len = usize::from(q[off]);
            labels.push(String::from_utf8_lossy(q.get(off + 1..off + 1 + len)?).into_owned());
            off += 1 + len;
        }
        let qtype = u16::from_be_bytes([*q.get(off + 1)?, *q.get(off + 2)?]);
        let end = off + 5;
        let name = labels.join(".");
        let (rcode, data): (u8, Option<&[u8]>) = match (name.as_str(), qtype) {
            ("both.np.test" | "v4.np.test", 1) => (0, Some(&a)),
            ("both.np.test", 28) => (0, Some(&aaaa)),
            ("v4.np.test", 28) => (0, None),
            _ => (3, None),
        };
        let mut r = q.get(..end)?.to_vec();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r[6] = 0;
        r[7] = u8::from(data.is_some());
        if let Some(d) = data {
            r.extend([0xc0, 12]);
            r.extend(qtype.to_be_bytes());
            r.extend([0, 1, 0, 0, 0, 30, 0, d.len() as u8]);
            r.extend(d);
        }
        Some(r)
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `/etc/netns/NAME/resolv.conf`, what `ip netns exec NAME` shows as /etc/resolv.conf;
/// removed when dropped.
pub struct ResolvConfGuard(std::path::PathBuf);

impl ResolvConfGuard {
    pub fn new(ns: &NetNsGuard, text: &str) -> Self {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{}", ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        ResolvConfGuard(dir)
    }
}

impl Drop for ResolvConfGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // /etc/netns itself too, once no other namespace's settings are in it (remove_dir
        // leaves a directory that is not empty).
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Waits up to `limit` for `p` to exit; its exit code (`None`: killed by a signal), or a
/// panic naming `what` (the process is killed by its guard).
pub fn exits_within(p: &mut NetpathProcess, limit: std::time::Duration, what: &str) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            return st.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} still runs after {limit:?}: {:?}",
            p.stderr_so_far()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `tshark -r FILE -T fields -e F...` rows, split on tabs.
pub fn tshark_fields(file: &std::path::Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=\t"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Whether `pid` is a running process (a zombie is not).
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
