//! Name lookups as a pod makes them: its resolver configuration (resolv.conf as the namespace
//! sees it), A and AAAA queries over UDP sent from inside its network namespace. The message
//! building and parsing is pure and tested on bytes; only [`lookup`] touches the system.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use netpath_core::model::NameAnswer;

use super::netns;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// What resolv.conf says: name servers (at most three are used, as libc does), search domains
/// and `ndots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
}

impl ResolvConf {
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        if conf.nameservers.len() < 3 {
                            conf.nameservers.push(ip);
                        }
                    }
                }
                Some("search" | "domain") => {
                    conf.search = words.map(|w| w.trim_end_matches('.').to_string()).collect()
                }
                Some("options") => {
                    for w in words {
                        if let Some(n) = w.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            conf.ndots = n;
                        }
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// The names to try for `name`, in order: as given first when it has at least `ndots`
    /// dots (or ends in a dot), else the search domains first.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![absolute.to_string()];
        }
        let searched = self.search.iter().map(|d| format!("{name}.{d}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

/// A query for `name` of type `qtype`, recursion desired.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(CLASS_IN.to_be_bytes());
    q
}

/// A response: its code and the addresses of the asked type in its answer section (after
/// CNAMEs, whatever their owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub rcode: u8,
    pub addrs: Vec<IpAddr>,
}

/// Skips a (possibly compressed) name at `off`; the offset after it.
fn skip_name(msg: &[u8], mut off: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(off)?;
        match len {
            0 => return Some(off + 1),
            l if l & 0xc0 == 0xc0 => return Some(off + 2),
            l if l & 0xc0 == 0 => off += 1 + usize::from(l),
            _ => return None,
        }
    }
    None
}

/// Parses a response to the query with `id` for `qtype`; None when it is not one.
pub fn parse_response(msg: &[u8], id: u16, qtype: u16) -> Option<Response> {
    let u16_at = |o: usize| Some(u16::from_be_bytes([*msg.get(o)?, *msg.get(o + 1)?]));
    if u16_at(0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = msg.get(3)? & 0x0f;
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut off = 12;
    for _ in 0..qd {
        off = skip_name(msg, off)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..an {
        off = skip_name(msg, off)?;
        let (rtype, rdlen) = (u16_at(off)?, usize::from(u16_at(off + 8)?));
        let data = msg.get(off + 10..off + 10 + rdlen)?;
        match (rtype, data.len()) {
            (TYPE_A, 4) if qtype == TYPE_A => {
                addrs.push(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?)))
            }
            (TYPE_AAAA, 16) if qtype == TYPE_AAAA => {
                addrs.push(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?)))
            }
            _ => {}
        }
        off += 10 + rdlen;
    }
    Some(Response { rcode, addrs })
}

/// The name of a response code.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// resolv.conf as a process in namespace `netns` sees it: `ip netns exec` binds
/// /etc/netns/NAME/resolv.conf over /etc/resolv.conf; a pod (`pid:N`) has its own root.
fn resolv_conf_path(netns: &str) -> PathBuf {
    if let Some(pid) = netns.strip_prefix("pid:") {
        return PathBuf::from(format!("/proc/{pid}/root/etc/resolv.conf"));
    }
    let named = PathBuf::from(format!("/etc/netns/{netns}/resolv.conf"));
    if netns != "root" && named.exists() {
        return named;
    }
    PathBuf::from("/etc/resolv.conf")
}

/// How long each name server gets for an answer.
const SERVER_TIMEOUT: Duration = Duration::from_millis(1500);

/// Looks `name` up for A and AAAA as a process in `netns` would, with its resolver settings.
pub fn lookup(netns: &str, name: &str) -> Result<NameAnswer, String> {
    let path = resolv_conf_path(netns);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let conf = ResolvConf::parse(&text);
    if conf.nameservers.is_empty() {
        return Err(format!("{} names no name server", path.display()));
    }
    let ns = netns::by_name(netns).map_err(|e| e.to_string())?;
    let name = name.to_string();
    netns::run_in(&ns, move || ask(&conf, &name)).map_err(|e| e.to_string())?
}

/// The whole lookup's budget, as libc's default of one attempt with a few servers.
const LOOKUP_BUDGET: Duration = Duration::from_secs(3);

/// Every candidate name in turn, on each server, until one has records (or says NOERROR).
fn ask(conf: &ResolvConf, name: &str) -> Result<NameAnswer, String> {
    let mut last_error = String::from("no answer");
    let started = Instant::now();
    for candidate in conf.candidates(name) {
        for &server in &conf.nameservers {
            if started.elapsed() >= LOOKUP_BUDGET {
                return Err(format!("{last_error} (gave up after {LOOKUP_BUDGET:?})"));
            }
            match ask_server(server, &candidate) {
                Ok(answer) if answer.rcode == "NXDOMAIN" => {
                    last_error = format!("{candidate}: NXDOMAIN from {server}");
                    break; // this name does not exist: the next candidate
                }
                Ok(answer) => return Ok(answer),
                Err(e) => last_error = format!("{candidate}: {e}"),
            }
        }
    }
    Err(last_error)
}

fn ask_server(server: IpAddr, name: &str) -> Result<NameAnswer, String> {
    let bind: SocketAddr = match server {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.connect((server, 53))
        .map_err(|e| format!("{server}: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let base = (std::process::id() as u16) ^ (now.subsec_nanos() as u16);
    let (id_a, id_aaaa) = (base, base.wrapping_add(1));
    for (id, qtype) in [(id_a, TYPE_A), (id_aaaa, TYPE_AAAA)] {
        sock.send(&query(id, name, qtype))
            .map_err(|e| format!("{server}: {e}"))?;
    }
    let (mut a, mut aaaa) = (None, None);
    let deadline = Instant::now() + SERVER_TIMEOUT;
    let mut buf = [0u8; 4096];
    while a.is_none() || aaaa.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{server} did not answer in {SERVER_TIMEOUT:?}"));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(e) => return Err(format!("{server}: {e}")),
        };
        if let Some(r) = parse_response(&buf[..n], id_a, TYPE_A) {
            a = Some(r);
        } else if let Some(r) = parse_response(&buf[..n], id_aaaa, TYPE_AAAA) {
            aaaa = Some(r);
        }
    }
    let (a, aaaa) = (a.expect("answered"), aaaa.expect("answered"));
    // NXDOMAIN for either means the name does not exist.
    let rcode = if a.rcode == 3 || aaaa.rcode == 3 {
        3
    } else {
        a.rcode.max(aaaa.rcode)
    };
    Ok(NameAnswer {
        name: name.to_string(),
        server,
        rcode: rcode_name(rcode),
        addrs: a.addrs.into_iter().chain(aaaa.addrs).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_as_kubernetes_writes_it() {
        let c = ResolvConf::parse(
            "search default.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\nnameserver fd00:10:96::a\noptions ndots:5\n# comment\n",
        );
        assert_eq!(c.nameservers.len(), 2);
        assert_eq!(c.ndots, 5);
        assert_eq!(
            c.candidates("web")[..2],
            ["web.default.svc.cluster.local", "web.svc.cluster.local"]
        );
        assert_eq!(c.candidates("web").last().unwrap(), "web");
        assert_eq!(c.candidates("example.com.")[..], ["example.com"]);
        let plain = ResolvConf::parse("nameserver 1.1.1.1\n");
        assert_eq!(plain.candidates("a.example")[..], ["a.example"]);
    }

    #[test]
    fn names_are_told_from_addresses_and_specs() {
        use netpath_core::model::looks_like_a_dns_name as name;
        assert!(name("web.default.svc.cluster.local"));
        assert!(name("example.test."));
        assert!(!name("web"), "one label: a lab or Kubernetes name");
        assert!(!name("10.0.0.1"));
        assert!(!name("fd00::1"));
        assert!(!name("svc/web"));
        assert!(!name("netns:x"));
        assert!(!name("-bad.example"));
        assert!(!name("1.2.3.4.5"));
    }

    /// A response as a server writes it: the question echoed, a CNAME, then the records,
    /// names compressed.
    fn response(id: u16, rcode: u8, qtype: u16, records: &[&[u8]]) -> Vec<u8> {
        let q = query(id, "web.example", qtype);
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r[7] = 1 + records.len() as u8;
        // CNAME web.example -> x.example (rdata: a compressed pointer is fine to skip).
        r.extend([0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        for data in records {
            r.extend([0xc0, 12]);
            r.extend(qtype.to_be_bytes());
            r.extend([0, 1, 0, 0, 0, 60, 0, data.len() as u8]);
            r.extend(*data);
        }
        r
    }

    #[test]
    fn responses_give_their_addresses_and_code() {
        let a = response(7, 0, TYPE_A, &[&[10, 77, 2, 2], &[10, 77, 2, 3]]);
        let r = parse_response(&a, 7, TYPE_A).unwrap();
        assert_eq!(r.rcode, 0);
        assert_eq!(r.addrs.len(), 2);
        assert_eq!(r.addrs[0].to_string(), "10.77.2.2");
        let v6: Ipv6Addr = "fd77:2::2".parse().unwrap();
        let aaaa = response(8, 0, TYPE_AAAA, &[&v6.octets()]);
        assert_eq!(
            parse_response(&aaaa, 8, TYPE_AAAA).unwrap().addrs,
            [IpAddr::V6(v6)]
        );
        assert!(parse_response(&aaaa, 9, TYPE_AAAA).is_none(), "another id");
        assert!(
            parse_response(&query(8, "x", 1), 8, TYPE_A).is_none(),
            "a query"
        );
        let nx = response(5, 3, TYPE_A, &[]);
        assert_eq!(parse_response(&nx, 5, TYPE_A).unwrap().rcode, 3);
        // Cut anywhere: never a panic.
        for cut in 0..a.len() {
            let _ = parse_response(&a[..cut], 7, TYPE_A);
        }
    }
}
