//! Dialing from another network namespace: a socket belongs to the namespace of the thread
//! that made it, so a short-lived thread enters the namespace, connects and hands the
//! connected socket back; the caller's threads never change namespace.
use std::{
    fs::File,
    io,
    net::{TcpStream, ToSocketAddrs},
    os::fd::AsRawFd,
    time::Duration,
};

/// Where `ip netns` keeps its names.
const NETNS_RUN_DIR: &str = "/run/netns";

/// Connects to `addr` (`HOST:PORT`) from inside the `ip netns` namespace `netns`. Blocks: call
/// it off the async runtime's threads.
pub fn connect_from(netns: &str, addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let path = format!("{NETNS_RUN_DIR}/{netns}");
    let ns = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let addr = addr.to_string();
    std::thread::Builder::new()
        .name("netns-dial".into())
        .spawn(move || {
            // SAFETY: setns(2) on an open namespace file; it changes only this thread, which
            // ends after the connect.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("entering {path}: {e}")));
            }
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
            for a in addr.to_socket_addrs()? {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        return Ok(s);
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        })?
        .join()
        .map_err(|_| io::Error::other("the dialing thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named() {
        let e =
            connect_from("netpath-no-such-ns", "127.0.0.1:1", Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string().contains("/run/netns/netpath-no-such-ns"),
            "{e}"
        );
    }
}
