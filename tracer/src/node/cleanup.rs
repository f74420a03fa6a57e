//! What a netpath that could not clean up after itself (SIGKILL, a crash) leaves in the
//! kernel, found and removed. tcx links and tracepoint links are held by file descriptors and
//! go with the process; on kernels without tcx the clsact fallback's filters do not: a filter
//! keeps its program loaded and running after its owner died, and a clsact qdisc netpath added
//! stays. netpath pins nothing in bpffs.
//!
//! netpath's filters are recognisable by their name (their program's, [`FILTER_PREFIX`]); one
//! is stale when no live process holds its program, which tells a dead netpath's filter from a
//! running one's on the same device. The qdiscs netpath added are recorded per process under
//! [`RECORD_DIR`] while it runs: one whose process is gone is removed once no filter is left
//! on it (anything else's filter keeps it).
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::netns::{self, NetnsRef};
use super::sys::{self, tc, Netlink, SysError};

/// The name every tc program of netpath's starts with (so do its clsact filters).
pub const FILTER_PREFIX: &str = "netpath_tc_";

/// Where each running netpath records the clsact qdiscs it added.
pub const RECORD_DIR: &str = "/run/netpath/clsact";

/// One kernel object removed (or, with `dry_run`, that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub netns: String,
    pub ifname: String,
    /// `filter ingress netpath_tc_in (prog 42)`, `clsact qdisc`.
    pub what: String,
}

/// Program ids that some live process holds open (its /proc/PID/fdinfo says `prog_id:`).
pub fn live_prog_ids() -> HashSet<u32> {
    let mut ids = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return ids;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(text) = std::fs::read_to_string(fd.path()) {
                ids.extend(prog_id_of_fdinfo(&text));
            }
        }
    }
    ids
}

/// The `prog_id:` of an fdinfo text (a BPF program's file descriptor), None for other fds.
pub fn prog_id_of_fdinfo(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// netpath's filters on a device's clsact hooks whose program no live process holds.
pub(crate) fn stale_filters(
    nl: &mut Netlink,
    ifindex: u32,
    live: &HashSet<u32>,
) -> Result<Vec<tc::Filter>, SysError> {
    let mut out = Vec::new();
    for hook in tc::ClsactHook::BOTH {
        for f in tc::filters(nl, ifindex, hook)? {
            let ours = f
                .bpf_name
                .as_deref()
                .is_some_and(|n| n.starts_with(FILTER_PREFIX));
            if ours && !f.prog_id.is_some_and(|id| live.contains(&id)) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// Removes stale netpath filters from one device (the clsact fallback does this before it
/// attaches, so a killed run's filters never stack up), `live` being [`live_prog_ids`] (read
/// once for many devices: it reads every process's fds). Returns how many went.
pub(crate) fn remove_stale_on(
    nl: &mut Netlink,
    ifindex: u32,
    live: &HashSet<u32>,
) -> Result<usize, SysError> {
    let stale = stale_filters(nl, ifindex, live)?;
    for f in &stale {
        tc::delete_filter(nl, f)?;
    }
    Ok(stale.len())
}

/// A running netpath's record of the clsact qdiscs it added: `RECORD_DIR/PID`, one line per
/// qdisc (`NETNS_INODE IFINDEX IFNAME`), removed when the process ends normally.
pub(crate) struct QdiscRecord {
    path: PathBuf,
    /// Lines written so far.
    lines: usize,
}

impl QdiscRecord {
    pub(crate) fn new() -> Self {
        Self {
            path: Path::new(RECORD_DIR).join(std::process::id().to_string()),
            lines: 0,
        }
    }

    /// Adds a qdisc before it is created, so a kill right after still finds it. One line
    /// appended per qdisc (one write each, so a line is whole or absent), not the file
    /// rewritten: thousands of devices would make that quadratic.
    pub(crate) fn add(&mut self, netns_inode: u32, ifindex: u32, ifname: &str) {
        let line = format!("{netns_inode} {ifindex} {ifname}\n");
        let first = self.lines == 0;
        self.lines += 1;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(RECORD_DIR)?;
            // The first line starts the file afresh (a file of an earlier process that had
            // this pid is not ours).
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(!first)
                .truncate(first)
                .open(&self.path)?;
            f.write_all(line.as_bytes())
        };
        if let Err(e) = write() {
            tracing::debug!("cannot record the clsact qdisc on {ifname}: {e}");
        }
    }
}

impl Drop for QdiscRecord {
    fn drop(&mut self) {
        if self.lines > 0 {
            let _ = std::fs::remove_file(&self.path);
            // The directory too, once no netpath has a record in it (fails otherwise).
            let _ = std::fs::remove_dir(RECORD_DIR);
        }
    }
}

/// One line of a qdisc record.
pub fn parse_record_line(line: &str) -> Option<(u32, u32, String)> {
    let mut it = line.split_whitespace();
    let inode = it.next()?.parse().ok()?;
    let ifindex = it.next()?.parse().ok()?;
    let ifname = it.next()?.to_string();
    it.next().is_none().then_some((inode, ifindex, ifname))
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Finds (and unless `dry_run`, removes) everything dead netpath processes left: their
/// filters in every namespace this process can see, then the clsact qdiscs they added that
/// nothing else uses.
pub fn cleanup(dry_run: bool) -> Result<Vec<Removed>, SysError> {
    let live = live_prog_ids();
    let namespaces = netns::all();
    let mut removed = Vec::new();
    for ns in &namespaces {
        let nsref = NetnsRef::Path(ns.path.clone());
        let Ok(mut nl) = Netlink::route(&nsref) else {
            continue; // the namespace went away meanwhile
        };
        let links = sys::dump_links(&mut nl)?;
        for link in &links {
            for f in stale_filters(&mut nl, link.index, &live)? {
                if !dry_run {
                    tc::delete_filter(&mut nl, &f)?;
                }
                removed.push(Removed {
                    netns: ns.name.clone(),
                    ifname: link.name.clone(),
                    what: format!(
                        "filter {} {} (prog {})",
                        f.hook.name(),
                        f.bpf_name.as_deref().unwrap_or("?"),
                        f.prog_id.map_or("?".into(), |id| id.to_string())
                    ),
                });
            }
        }
    }
    let Ok(records) = std::fs::read_dir(RECORD_DIR) else {
        return Ok(removed);
    };
    for rec in records.flatten() {
        let name = rec.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let text = std::fs::read_to_string(rec.path()).unwrap_or_default();
        for (inode, ifindex, ifname) in text.lines().filter_map(parse_record_line) {
            let Some(ns) = namespaces.iter().find(|n| n.inode == inode) else {
                continue; // the namespace is gone, and its qdiscs with it
            };
            let Ok(mut nl) = Netlink::route(&NetnsRef::Path(ns.path.clone())) else {
                continue;
            };
            // The same device still (ifindexes are not reused quickly, names are checked too).
            match sys::link_by_index(&mut nl, ifindex)? {
                Some(l) if l.name == ifname => {}
                _ => continue,
            }
            if !tc::has_clsact(&mut nl, ifindex)? {
                continue;
            }
            let mut others = 0;
            for hook in tc::ClsactHook::BOTH {
                others += tc::filters(&mut nl, ifindex, hook)?
                    .iter()
                    // With dry_run, netpath's stale filters are still there.
                    .filter(|f| {
                        !(dry_run
                            && f.bpf_name
                                .as_deref()
                                .is_some_and(|n| n.starts_with(FILTER_PREFIX)))
                    })
                    .count();
            }
            if others > 0 {
                continue; // somebody else's filters use it now: it stays
            }
            if !dry_run {
                tc::delete_clsact(&mut nl, ifindex)?;
            }
            removed.push(Removed {
                netns: ns.name.clone(),
                ifname,
                what: "clsact qdisc".into(),
            });
        }
        if !dry_run {
            let _ = std::fs::remove_file(rec.path());
        }
    }
    if !dry_run {
        let _ = std::fs::remove_dir(RECORD_DIR);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_a_program_gives_its_id_and_others_none() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2068\nprog_type:\t3\nprog_jited:\t1\nprog_tag:\t5fd5c0e2ba9c3bd2\nmemlock:\t4096\nprog_id:\t431\nrun_time_ns:\t0\n";
        assert_eq!(prog_id_of_fdinfo(prog), Some(431));
        assert_eq!(prog_id_of_fdinfo("pos:\t0\nflags:\t02\nmap_id:\t7\n"), None);
        assert_eq!(prog_id_of_fdinfo("prog_id:\tx\n"), None);
    }

    #[test]
    fn record_lines_round_trip_and_junk_is_skipped() {
        assert_eq!(
            parse_record_line("4026532288 7 eth0"),
            Some((4026532288, 7, "eth0".into()))
        );
        for bad in ["", "1 2", "x 2 eth0", "1 2 eth0 extra"] {
            assert_eq!(parse_record_line(bad), None, "{bad:?}");
        }
    }
}
