//! Network namespaces: identify them (inode), name them, and run code inside them.
//!
//! Named namespaces live in /run/netns (ip-netns(8)); unnamed ones are found through the
//! processes that hold them (/proc/PID/ns/net). A namespace's identity is the inode of its nsfs
//! file, the same number the kernel programs read from `net->ns.inum`.
use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {0:?} not found (see `ip netns list`)")]
    NotFound(String),
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("thread running inside network namespace {0} panicked")]
    Panicked(String),
    #[error(
        "{0:?} is not a network namespace (a name, `root`, `pid:N`, `ip:ADDR` or an nsfs path)"
    )]
    Invalid(String),
}

/// A network namespace the tracer knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// Inode of the nsfs file: the namespace's identity in kernel events.
    pub inode: u32,
    /// `ip netns` name, `pid:N` for an unnamed namespace held by a process, or `root`.
    pub name: String,
    /// A path that opens it (/run/netns/NAME or /proc/PID/ns/net).
    pub path: PathBuf,
}

fn inode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// The namespace of this process: the "root" namespace when run on a node, or its `ip netns`
/// name when it has one (the lab runs each node's agent in that node's namespace).
pub fn current() -> Result<Netns, NetnsError> {
    let path = PathBuf::from("/proc/self/ns/net");
    let inode = inode_of(&path).ok_or_else(|| NetnsError::NotFound("self".into()))?;
    if let Some(name) = ip_netns_name(inode) {
        return Ok(Netns {
            inode,
            path: Path::new(NETNS_RUN_DIR).join(&name),
            name,
        });
    }
    Ok(Netns {
        inode,
        name: "root".into(),
        path: PathBuf::from("/proc/1/ns/net"),
    })
}

/// The `ip netns` name of the namespace with this inode, if it has one.
fn ip_netns_name(inode: u32) -> Option<String> {
    let mut names: Vec<_> = std::fs::read_dir(NETNS_RUN_DIR)
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .find(|n| inode_of(&Path::new(NETNS_RUN_DIR).join(n)) == Some(inode))
}

/// Resolves a namespace spec: an `ip netns` name, `root`/empty for the current namespace,
/// `pid:N` or an nsfs path such as /proc/N/ns/net (see [`NetnsRef::parse`]).
pub fn by_name(name: &str) -> Result<Netns, NetnsError> {
    NetnsRef::parse(name)?.resolve()
}

/// Namespaces reachable from `start` through links that cross namespaces (veth peers, tunnel
/// link-netns): the kernel gives a namespace an id for each peer namespace (RTM_GETNSID, what
/// `ip netns list-id` shows). Peers are named by their /run/netns name; unnamed peers are the
/// root namespace (`root`). At most `limit` namespaces.
pub fn connected(start: &[String], limit: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut queue: std::collections::VecDeque<String> = start.iter().cloned().collect();
    while let Some(ns) = queue.pop_front() {
        if seen.contains(&ns) || seen.len() >= limit {
            continue;
        }
        let peers = NetnsRef::parse(&ns)
            .ok()
            .and_then(|r| crate::node::sys::peers(&r).ok())
            .map(|peers| names_of_peers(&peers))
            .unwrap_or_default();
        seen.push(ns);
        queue.extend(peers.into_iter().filter(|p| !seen.contains(p)));
    }
    seen
}

/// Names of peer namespaces: their /run/netns name, `root` for those without one.
pub fn names_of_peers(peers: &[crate::node::sys::Peer]) -> Vec<String> {
    peers
        .iter()
        .map(|p| p.name.clone().unwrap_or_else(|| "root".into()))
        .collect()
}

/// The same names read from `ip -j netns list-id` output (what [`crate::node::sys::peers`] is
/// compared with in the real-kernel tests).
pub fn peer_names(json: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|e| e["name"].as_str().unwrap_or("root").to_string())
        .collect()
}

/// Every namespace on the machine: the current one, the named ones, then those only held by
/// processes. Sorted by discovery order, one entry per inode.
pub fn all() -> Vec<Netns> {
    let mut seen: BTreeMap<u32, ()> = BTreeMap::new();
    let mut out = Vec::new();
    let mut push = |ns: Netns, out: &mut Vec<Netns>| {
        if seen.insert(ns.inode, ()).is_none() {
            out.push(ns);
        }
    };
    if let Ok(mut ns) = current() {
        ns.path = PathBuf::from("/proc/self/ns/net");
        push(ns, &mut out);
    }
    if let Ok(dir) = std::fs::read_dir(NETNS_RUN_DIR) {
        let mut names: Vec<_> = dir.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if let Ok(ns) = by_name(&name) {
                push(ns, &mut out);
            }
        }
    }
    if let Ok(proc_dir) = std::fs::read_dir("/proc") {
        for entry in proc_dir.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if let Some(inode) = inode_of(&path) {
                push(
                    Netns {
                        inode,
                        name: format!("pid:{pid}"),
                        path,
                    },
                    &mut out,
                );
            }
        }
    }
    out
}

/// Name of the namespace with this inode (`netns:<inode>` when nobody names it).
pub fn name_of(inode: u32, known: &[Netns]) -> String {
    known
        .iter()
        .find(|ns| ns.inode == inode)
        .map(|ns| ns.name.clone())
        .unwrap_or_else(|| format!("netns:{inode}"))
}

/// Runs `f` on a fresh thread that has entered the namespace at `ns.path`, and returns its
/// result.
///
/// Entering a namespace changes only the calling thread, so the rest of the process (and the
/// tokio runtime) stays where it is. Sockets and BPF links made inside `f` keep pointing at that
/// namespace after the thread ends. The thread is scoped, so `f` may borrow.
pub fn run_in<T, F>(ns: &Netns, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    run_at(&ns.path, &ns.name, f)
}

/// [`run_in`] for any nsfs path; `label` names the namespace in errors.
fn run_at<T, F>(path: &Path, label: &str, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let file = open_nsfs(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<T, NetnsError> {
                // SAFETY: setns on a valid nsfs fd only changes this thread's namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter {
                        path: path.to_path_buf(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Panicked(label.to_string()))?
    })
}

/// Whether this thread is in the namespace at `path`.
fn same_as_this_thread(path: &Path) -> bool {
    let here = inode_of(Path::new("/proc/thread-self/ns/net"));
    here.is_some() && here == inode_of(path)
}

fn open_nsfs(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// How to reach a network namespace: the process's own, an `ip netns` name, or any nsfs file
/// (/proc/PID/ns/net of a process that holds it, a bind mount).
///
/// Parsed from `root` (or empty, `self`), `NAME`, `pid:1234` and `/proc/1234/ns/net`; shown the
/// same way (`pid:N` for /proc/N/ns/net). `ip:ADDR` is the namespace holding ADDR (searched:
/// see [`super::podns`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetnsRef {
    /// The namespace of this process (/proc/self/ns/net): the node's root namespace when the
    /// tracer runs on a node.
    Current,
    /// /run/netns/NAME, as `ip netns add` makes it.
    Named(String),
    /// Any nsfs file.
    Path(PathBuf),
}

impl NetnsRef {
    pub fn parse(spec: &str) -> Result<Self, NetnsError> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "root" || spec == "self" {
            return Ok(Self::Current);
        }
        if let Some(pid) = spec.strip_prefix("pid:") {
            return match pid.parse::<u32>() {
                Ok(pid) => Ok(Self::pid(pid)),
                Err(_) => Err(NetnsError::Invalid(spec.into())),
            };
        }
        if let Some(addr) = spec.strip_prefix("ip:") {
            // The namespace holding this address (a pod's, found by its node's agent).
            let ip = addr.parse().map_err(|_| NetnsError::Invalid(spec.into()))?;
            let name =
                super::podns::holding(&[ip]).ok_or_else(|| NetnsError::NotFound(spec.into()))?;
            return Self::parse(&name);
        }
        if spec.starts_with('/') {
            return Ok(Self::Path(spec.into()));
        }
        if spec.contains('/') || spec == "." || spec == ".." {
            return Err(NetnsError::Invalid(spec.into()));
        }
        Ok(Self::Named(spec.into()))
    }

    /// The namespace process `pid` is in.
    pub fn pid(pid: u32) -> Self {
        Self::Path(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// The nsfs file that opens it.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Current => PathBuf::from("/proc/self/ns/net"),
            Self::Named(name) => Path::new(NETNS_RUN_DIR).join(name),
            Self::Path(p) => p.clone(),
        }
    }

    /// Opens its nsfs file (for setns, or NETNSA_FD in netlink requests).
    pub fn open(&self) -> Result<File, NetnsError> {
        let path = self.path();
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(NetnsError::NotFound(self.to_string()))
            }
            Err(source) => Err(NetnsError::Open { path, source }),
        }
    }

    /// The namespace's identity: the inode of its nsfs file (`net->ns.inum`).
    pub fn inode(&self) -> Result<u32, NetnsError> {
        let file = self.open()?;
        let meta = file.metadata().map_err(|source| NetnsError::Open {
            path: self.path(),
            source,
        })?;
        Ok(meta.ino() as u32)
    }

    /// The namespace's cookie (SO_NETNS_COOKIE of a socket made inside it, Linux 5.14+): unlike
    /// the inode, never reused while the machine is up.
    pub fn cookie(&self) -> Result<u64, NetnsError> {
        self.run(cookie_here)?.map_err(|source| NetnsError::Enter {
            path: self.path(),
            source,
        })
    }

    /// The [`Netns`] it names (inode, display name, path).
    pub fn resolve(&self) -> Result<Netns, NetnsError> {
        Ok(Netns {
            inode: self.inode()?,
            name: self.to_string(),
            path: self.path(),
        })
    }

    /// Runs `f` on a short-lived thread inside the namespace (see [`run_in`]), or right here
    /// when it is `Current` and this thread is already in it.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        match self {
            // Already there (the usual case for `root`): no thread, no privilege needed.
            Self::Current if same_as_this_thread(&self.path()) => return Ok(f()),
            // A clear "not found" rather than an open error.
            Self::Named(_) => {
                self.open()?;
            }
            _ => {}
        }
        run_at(&self.path(), &self.to_string(), f)
    }
}

impl std::fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Current => f.write_str("root"),
            Self::Named(name) => f.write_str(name),
            Self::Path(p) => {
                let pid = p
                    .to_str()
                    .and_then(|s| s.strip_prefix("/proc/"))
                    .and_then(|s| s.strip_suffix("/ns/net"))
                    .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
                match pid {
                    Some(pid) => write!(f, "pid:{pid}"),
                    None => write!(f, "{}", p.display()),
                }
            }
        }
    }
}

impl std::str::FromStr for NetnsRef {
    type Err = NetnsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Devices of the namespace this thread is in, as (ifindex, name).
pub fn devices_here() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut cur = list;
        while (*cur).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*cur).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*cur).if_index, name));
            cur = cur.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// ARPHRD_* type of a device in the current namespace (SIOCGIFHWADDR), if it exists.
pub fn link_type_here(ifname: &str) -> Option<u16> {
    let name = std::ffi::CString::new(ifname).ok()?;
    if name.as_bytes().len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a plain datagram socket, an ifreq we own, closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req);
        libc::close(fd);
        (rc == 0).then_some(req.ifr_ifru.ifru_hwaddr.sa_family)
    }
}

/// Whether packets on a device of this ARPHRD type start at the IP header (no link-layer
/// header: tun, wireguard, ipip, sit, ip6tnl, GRE, PPP, raw IP).
pub fn link_type_has_no_l2(link_type: u16) -> bool {
    const ARPHRD_PPP: u16 = 512;
    const ARPHRD_RAWIP: u16 = 519;
    const ARPHRD_TUNNEL: u16 = 768;
    const ARPHRD_TUNNEL6: u16 = 769;
    const ARPHRD_SIT: u16 = 776;
    const ARPHRD_IPGRE: u16 = 778;
    const ARPHRD_IP6GRE: u16 = 823;
    const ARPHRD_NONE: u16 = 0xfffe;
    const ARPHRD_VOID: u16 = 0xffff;
    matches!(
        link_type,
        ARPHRD_PPP
            | ARPHRD_RAWIP
            | ARPHRD_TUNNEL
            | ARPHRD_TUNNEL6
            | ARPHRD_SIT
            | ARPHRD_IPGRE
            | ARPHRD_IP6GRE
            | ARPHRD_NONE
            | ARPHRD_VOID
    )
}

/// The cookie (SO_NETNS_COOKIE) of the calling thread's network namespace.
pub fn cookie_here() -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a datagram socket we own, a u64 out-parameter of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err);
        }
        Ok(cookie)
    }
}

/// Devices of a namespace, as (ifindex, name).
pub fn devices(ns: &Netns) -> Result<Vec<(u32, String)>, NetnsError> {
    run_in(ns, devices_here)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_read_from_list_id() {
        assert_eq!(
            peer_names(br#"[{"nsid":0,"name":"hfr"},{"nsid":1}]"#),
            ["hfr", "root"]
        );
        assert!(peer_names(b"garbage").is_empty());
    }

    #[test]
    fn unknown_inode_gets_a_stable_placeholder_name() {
        assert_eq!(name_of(42, &[]), "netns:42");
        let known = vec![Netns {
            inode: 42,
            name: "pod-a".into(),
            path: "/x".into(),
        }];
        assert_eq!(name_of(42, &known), "pod-a");
    }

    #[test]
    #[ignore = "needs root (setns); scripts/test runs it"]
    fn devices_of_the_current_namespace_include_loopback() {
        let ns = by_name("root").unwrap();
        let devs = devices(&ns).unwrap();
        assert!(devs.iter().any(|(_, n)| n == "lo"), "{devs:?}");
    }

    #[test]
    fn link_types_tell_ethernet_from_l3_devices() {
        // lo carries an (all-zero) Ethernet header; ARPHRD_LOOPBACK = 772.
        assert_eq!(link_type_here("lo"), Some(772));
        assert!(!link_type_has_no_l2(772));
        assert!(!link_type_has_no_l2(1), "Ethernet");
        assert!(link_type_has_no_l2(0xfffe), "tun / wireguard");
        assert!(link_type_has_no_l2(768), "ipip");
        assert_eq!(link_type_here("netpath-no-such-device"), None);
    }

    #[test]
    fn handles_parse_and_print_back() {
        for (spec, want, shown) in [
            ("root", NetnsRef::Current, "root"),
            ("", NetnsRef::Current, "root"),
            ("pod-a", NetnsRef::Named("pod-a".into()), "pod-a"),
            (
                "pid:1234",
                NetnsRef::Path("/proc/1234/ns/net".into()),
                "pid:1234",
            ),
            ("/proc/1234/ns/net", NetnsRef::pid(1234), "pid:1234"),
            ("/run/x/ns", NetnsRef::Path("/run/x/ns".into()), "/run/x/ns"),
        ] {
            let r = NetnsRef::parse(spec).unwrap();
            assert_eq!(r, want, "{spec}");
            assert_eq!(r.to_string(), shown, "{spec}");
        }
        for bad in ["pid:x", "a/b", ".."] {
            assert!(NetnsRef::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            NetnsRef::Named("x".into()).path(),
            PathBuf::from("/run/netns/x")
        );
    }

    #[test]
    fn our_own_namespace_by_pid_is_the_current_one() {
        let me = NetnsRef::pid(std::process::id());
        assert_eq!(me.inode().unwrap(), NetnsRef::Current.inode().unwrap());
        assert_eq!(by_name("root").unwrap().inode, me.inode().unwrap());
        match NetnsRef::Current.cookie() {
            Ok(c) => assert_eq!(me.cookie().unwrap(), c),
            // SO_NETNS_COOKIE is Linux 5.14+.
            Err(e) => eprintln!("SKIPPED netns cookie: {e}"),
        }
    }

    #[test]
    fn missing_named_namespace_is_a_clear_error() {
        let err = by_name("netpath-does-not-exist").unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
