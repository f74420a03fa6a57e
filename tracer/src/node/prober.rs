//! Active probes sent from inside a network namespace: ICMP echo, TCP SYN (a non-blocking
//! connect) and a UDP datagram, with what came back. The packets themselves are what the
//! tracer follows; the socket's answer only says whether a reply arrived.
use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use netpath_core::{
    model::{NameAnswer, Place, Probe, ProbeKind, ProbeOutcome, Reply},
    world::{Cancel, Prober, WorldError},
};

use super::netns;

/// Sends probes from namespaces of this machine (the place's node is not needed: one kernel
/// holds them all).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalProber;

#[async_trait]
impl Prober for LocalProber {
    async fn send(
        &self,
        probe: &Probe,
        timeout: Duration,
        cancel: Cancel,
    ) -> Result<ProbeOutcome, WorldError> {
        let probe = probe.clone();
        tokio::task::spawn_blocking(move || run(&probe, timeout, cancel))
            .await
            .map_err(|e| WorldError::Other(format!("probe task: {e}")))?
            .map_err(|e| WorldError::Other(e.to_string()))
    }

    async fn lookup(&self, from: &Place, name: &str) -> Result<NameAnswer, WorldError> {
        let (netns, name) = (from.netns.clone(), name.to_string());
        tokio::task::spawn_blocking(move || super::dns::lookup(&netns, &name))
            .await
            .map_err(|e| WorldError::Other(format!("lookup task: {e}")))?
            .map_err(WorldError::Other)
    }
}

/// Sends `probe` from its namespace and waits up to `timeout` for the answer, or until
/// `cancel` is set. Runs on the calling thread's behalf in a short-lived thread.
pub fn run(probe: &Probe, timeout: Duration, cancel: Arc<AtomicBool>) -> io::Result<ProbeOutcome> {
    let ns = netns::by_name(&probe.from.netns).map_err(io::Error::other)?;
    let probe = probe.clone();
    netns::run_in(&ns, move || send_and_wait(&probe, timeout, &cancel)).map_err(io::Error::other)?
}

fn send_and_wait(
    probe: &Probe,
    timeout: Duration,
    cancel: &AtomicBool,
) -> io::Result<ProbeOutcome> {
    match probe.kind {
        ProbeKind::Icmp => icmp_probe(probe, timeout, cancel),
        ProbeKind::Tcp { port } => stream_probe(probe, port, timeout, cancel),
        ProbeKind::Udp { port } => udp_probe(probe, port, timeout, cancel),
    }
}

fn family_of(ip: &IpAddr) -> libc::c_int {
    if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A sockaddr for `ip:port` with its length.
fn sockaddr(ip: IpAddr, port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as _,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            // SAFETY: plain data.
            let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = port.to_be();
            sin6.sin6_addr.s6_addr = v6.octets();
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family says this is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

fn bind(fd: &OwnedFd, ip: IpAddr, port: u16) -> io::Result<()> {
    let (ss, len) = sockaddr(ip, port);
    // SAFETY: ss/len describe a valid sockaddr.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn local_port(fd: &OwnedFd) -> Option<u16> {
    // SAFETY: plain data out-parameter.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss is large enough for any address.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            &mut ss as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    };
    (rc == 0)
        .then(|| from_sockaddr(&ss).map(|a| a.port()))
        .flatten()
}

/// Waits for `events` on `fd` in short slices so `cancel` is noticed; false on timeout.
fn wait_for(fd: &OwnedFd, events: libc::c_short, deadline: Instant, cancel: &AtomicBool) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline || cancel.load(Ordering::Relaxed) {
            return false;
        }
        let slice = (deadline - now).min(Duration::from_millis(20));
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, slice.as_millis().max(1) as libc::c_int) };
        if rc > 0 {
            return true;
        }
    }
}

/// `ENETUNREACH` and friends (the names the diagnosis keys on), else the error's text.
fn errno_name(e: &io::Error) -> String {
    e.raw_os_error()
        .and_then(super::decode::errno_name)
        .map_or_else(|| e.to_string(), str::to_string)
}

/// `size` bytes of a recognisable pattern.
fn payload(size: usize) -> Vec<u8> {
    b"netpath-trace-probe."
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect()
}

/// Asks the kernel not to fragment (IPv4 DF; IPv6 sources fragment otherwise too).
fn dont_fragment(fd: &OwnedFd, v6: bool) {
    let (level, opt, val) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
    };
    // SAFETY: a valid int option on our own socket.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &val as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request; ICMPv6 checksums are filled in by the kernel.
pub fn echo_request(v6: bool, id: u16, seq: u16, size: usize) -> Vec<u8> {
    let mut pkt = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend(payload(size));
    if !v6 {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    pkt
}

/// Classifies an ICMP message (starting at the ICMP header) received on the probe's raw
/// socket: the echo reply to us, an error quoting our request, or something else (None).
pub fn classify_icmp(v6: bool, icmp: &[u8], id: u16, seq: u16, from: IpAddr) -> Option<Reply> {
    let ty = *icmp.first()?;
    let ours =
        |b: &[u8]| b.len() >= 4 && b[0..2] == id.to_be_bytes() && b[2..4] == seq.to_be_bytes();
    let (echo_reply, errors): (u8, &[u8]) = if v6 {
        (129, &[1, 2, 3, 4])
    } else {
        (0, &[3, 11, 12])
    };
    if ty == echo_reply {
        return ours(icmp.get(4..8)?).then_some(Reply::EchoReply);
    }
    if !errors.contains(&ty) {
        return None;
    }
    // The error quotes our IP header and the first 8 bytes of our echo request.
    let quoted = icmp.get(8..)?;
    let inner_l4 = if v6 {
        40
    } else {
        ((quoted.first()? & 0x0f) as usize) * 4
    };
    let echo = quoted.get(inner_l4..inner_l4 + 8)?;
    if !ours(&echo[4..8]) {
        return None;
    }
    let code = icmp.get(1).copied().unwrap_or(0);
    let what = match (v6, ty, code) {
        (false, 3, 0) => "net unreachable".to_string(),
        (false, 3, 1) => "host unreachable".to_string(),
        (false, 3, 4) => "fragmentation needed".to_string(),
        (false, 3, 13) => "administratively prohibited".to_string(),
        (false, 11, _) => "time exceeded".to_string(),
        (true, 1, 0) => "no route to destination".to_string(),
        (true, 1, 1) => "administratively prohibited".to_string(),
        (true, 1, 3) => "address unreachable".to_string(),
        (true, 2, _) => "packet too big".to_string(),
        (true, 3, _) => "time exceeded".to_string(),
        (_, t, c) => format!("ICMP type {t} code {c}"),
    };
    Some(Reply::Error {
        what,
        from: Some(from),
    })
}

fn icmp_probe(probe: &Probe, timeout: Duration, cancel: &AtomicBool) -> io::Result<ProbeOutcome> {
    let v6 = probe.dst.is_ipv6();
    let proto = if v6 {
        libc::IPPROTO_ICMPV6
    } else {
        libc::IPPROTO_ICMP
    };
    let fd = socket(family_of(&probe.dst), libc::SOCK_RAW, proto)?;
    bind(&fd, probe.src, 0)?;
    dont_fragment(&fd, v6);
    let pkt = echo_request(v6, probe.echo_id, probe.echo_seq, probe.size);
    let (ss, len) = sockaddr(probe.dst, 0);
    let start = Instant::now();
    // SAFETY: pkt and ss are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    };
    let mut outcome = ProbeOutcome::default();
    if sent < 0 {
        outcome.send_error = Some(errno_name(&io::Error::last_os_error()));
        return Ok(outcome);
    }
    let deadline = start + timeout;
    let mut buf = [0u8; 2048];
    while wait_for(&fd, libc::POLLIN, deadline, cancel) {
        // SAFETY: plain data out-parameter.
        let mut from: libc::sockaddr_storage = unsafe { zeroed() };
        let mut from_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: buf and from are valid for their lengths.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut from_len,
            )
        };
        if n <= 0 {
            continue;
        }
        let data = &buf[..n as usize];
        // IPv4 raw sockets hand over the IP header too.
        let icmp = if v6 {
            data
        } else {
            let ihl = ((data[0] & 0x0f) as usize) * 4;
            match data.get(ihl..) {
                Some(d) => d,
                None => continue,
            }
        };
        let Some(peer) = from_sockaddr(&from).map(|a| a.ip()) else {
            continue;
        };
        if let Some(reply) = classify_icmp(v6, icmp, probe.echo_id, probe.echo_seq, peer) {
            outcome.rtt_us = Some(start.elapsed().as_micros() as u64);
            outcome.reply = Some(reply);
            break;
        }
    }
    Ok(outcome)
}

fn so_error(fd: &OwnedFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err/len are valid out-parameters for SO_ERROR.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    err
}

fn errno_reply(err: i32) -> Reply {
    if err == libc::ECONNREFUSED {
        Reply::Refused
    } else {
        Reply::Error {
            what: errno_name(&io::Error::from_raw_os_error(err)),
            from: None,
        }
    }
}

fn connect(fd: &OwnedFd, dst: IpAddr, port: u16) -> io::Result<()> {
    let (ss, len) = sockaddr(dst, port);
    // SAFETY: ss/len describe a valid sockaddr.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(())
    } else {
        Err(e)
    }
}

fn stream_probe(
    probe: &Probe,
    port: u16,
    timeout: Duration,
    cancel: &AtomicBool,
) -> io::Result<ProbeOutcome> {
    let fd = socket(family_of(&probe.dst), libc::SOCK_STREAM, 0)?;
    // SAFETY: a valid int option on our own socket; lets a fixed probe port be reused at once.
    unsafe {
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    bind(&fd, probe.src, probe.sport)?;
    let mut outcome = ProbeOutcome {
        sport: local_port(&fd),
        ..Default::default()
    };
    let start = Instant::now();
    if let Err(e) = connect(&fd, probe.dst, port) {
        outcome.send_error = Some(errno_name(&e));
        return Ok(outcome);
    }
    outcome.sport = local_port(&fd);
    if wait_for(&fd, libc::POLLOUT, start + timeout, cancel) {
        outcome.rtt_us = Some(start.elapsed().as_micros() as u64);
        outcome.reply = Some(match so_error(&fd) {
            0 => Reply::SynAck,
            err => errno_reply(err),
        });
    }
    Ok(outcome)
}

fn udp_probe(
    probe: &Probe,
    port: u16,
    timeout: Duration,
    cancel: &AtomicBool,
) -> io::Result<ProbeOutcome> {
    let fd = socket(family_of(&probe.dst), libc::SOCK_DGRAM, 0)?;
    bind(&fd, probe.src, probe.sport)?;
    let mut outcome = ProbeOutcome::default();
    if let Err(e) = connect(&fd, probe.dst, port) {
        outcome.send_error = Some(errno_name(&e));
        return Ok(outcome);
    }
    outcome.sport = local_port(&fd);
    dont_fragment(&fd, probe.dst.is_ipv6());
    let payload = payload(probe.size);
    let start = Instant::now();
    // SAFETY: payload is valid for its length.
    if unsafe { libc::send(fd.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) } < 0 {
        outcome.send_error = Some(errno_name(&io::Error::last_os_error()));
        return Ok(outcome);
    }
    if wait_for(&fd, libc::POLLIN, start + timeout, cancel) {
        let mut buf = [0u8; 512];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        outcome.rtt_us = Some(start.elapsed().as_micros() as u64);
        outcome.reply = Some(if n >= 0 {
            Reply::Datagram
        } else {
            errno_reply(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        });
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let pkt = echo_request(false, 0x1234, 7, 20);
        assert_eq!(checksum(&pkt), 0, "a correct checksum sums to zero");
        let big = echo_request(false, 1, 1, 1401);
        assert_eq!((big.len(), checksum(&big)), (1409, 0), "odd sizes too");
        assert_eq!(&pkt[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(echo_request(true, 1, 2, 20)[0], 128);
    }

    #[test]
    fn replies_and_errors_are_recognised_only_for_our_probe() {
        let from: IpAddr = "10.0.0.1".parse().unwrap();
        let reply = [0, 0, 0, 0, 0x12, 0x34, 0, 7];
        assert_eq!(
            classify_icmp(false, &reply, 0x1234, 7, from),
            Some(Reply::EchoReply)
        );
        assert_eq!(classify_icmp(false, &reply, 0x1234, 8, from), None);
        // Net unreachable quoting a 20-byte IPv4 header and our echo request.
        let mut err = vec![3, 0, 0, 0, 0, 0, 0, 0, 0x45];
        err.extend_from_slice(&[0; 19]);
        err.extend_from_slice(&echo_request(false, 0x1234, 7, 20)[..8]);
        assert_eq!(
            classify_icmp(false, &err, 0x1234, 7, from),
            Some(Reply::Error {
                what: "net unreachable".into(),
                from: Some(from)
            })
        );
        // Packet too big (IPv6) quoting a 40-byte header.
        let mut ptb = vec![2, 0, 0, 0, 0, 0, 5, 0xdc];
        ptb.extend_from_slice(&[0x60; 40]);
        ptb.extend_from_slice(&echo_request(true, 9, 1, 20)[..8]);
        let r = classify_icmp(true, &ptb, 9, 1, from).unwrap();
        assert!(matches!(r, Reply::Error { ref what, .. } if what == "packet too big"));
        assert_eq!(classify_icmp(true, &ptb, 9, 2, from), None);
        assert_eq!(classify_icmp(true, &[135, 0, 0, 0], 9, 1, from), None);
        assert_eq!(classify_icmp(false, &[], 9, 1, from), None);
    }
}
