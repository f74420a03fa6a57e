//! Sysctls of a namespace, read from /proc/sys/net: the kernel shows the namespace of the
//! thread that opens the file, so it is opened on a thread inside the namespace.
use std::path::PathBuf;

use super::SysError;
use crate::node::netns::NetnsRef;

/// The value of a sysctl key (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`) in `ns`,
/// trimmed.
pub fn read_sysctl(ns: &NetnsRef, key: &str) -> Result<String, SysError> {
    let path = sysctl_path(key);
    ns.run(|| std::fs::read_to_string(&path))?
        .map(|v| v.trim().to_string())
        .map_err(|source| SysError::Sysctl {
            netns: ns.to_string(),
            path: path.display().to_string(),
            source,
        })
}

/// /proc/sys path of a key; dots separate components unless the key is already a path
/// (device names such as `eth0.100` contain dots: pass those as paths).
pub fn sysctl_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(rel)
}

/// Forwarding for `family` (4: net.ipv4.ip_forward, 6: net.ipv6.conf.all.forwarding).
pub fn forwarding(ns: &NetnsRef, family: u8) -> Result<bool, SysError> {
    let key = if family == 6 {
        "net/ipv6/conf/all/forwarding"
    } else {
        "net/ipv4/ip_forward"
    };
    Ok(read_sysctl(ns, key)? != "0")
}

/// Devices of `ns` with net.ipv6.conf.DEV.disable_ipv6=1 (not `all` and `default`).
pub fn ipv6_disabled_devices(ns: &NetnsRef) -> Result<Vec<String>, SysError> {
    let dir = PathBuf::from("/proc/sys/net/ipv6/conf");
    let read = || -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|d| d != "all" && d != "default")
            .collect();
        names.sort();
        for dev in names {
            // A device may go away between the listing and the read.
            if let Ok(v) = std::fs::read_to_string(dir.join(&dev).join("disable_ipv6")) {
                if v.trim() == "1" {
                    out.push(dev);
                }
            }
        }
        Ok(out)
    };
    ns.run(read)?.map_err(|source| SysError::Sysctl {
        netns: ns.to_string(),
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv6/conf/eth0.100/disable_ipv6"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/disable_ipv6")
        );
    }
}
