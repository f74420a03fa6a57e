//! The capabilities netpath needs, read from what the kernel says this process has
//! (`CapEff` in /proc/self/status), not assumed from the user id: root without them cannot
//! load programs, and a user with them (`setpriv`, a container's securityContext) can.
//!
//! Loading and attaching the programs needs CAP_BPF and CAP_PERFMON (tracepoints, and pointer
//! reads in the programs) and CAP_NET_ADMIN (tc); entering other network namespaces
//! (`--netns`, probes from a pod) needs CAP_SYS_ADMIN, and `trace`'s probes (raw sockets)
//! CAP_NET_RAW.

/// A capability by its number (linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub name: &'static str,
    pub bit: u32,
}

pub const CAP_NET_ADMIN: Cap = Cap {
    name: "CAP_NET_ADMIN",
    bit: 12,
};
pub const CAP_NET_RAW: Cap = Cap {
    name: "CAP_NET_RAW",
    bit: 13,
};
pub const CAP_SYS_ADMIN: Cap = Cap {
    name: "CAP_SYS_ADMIN",
    bit: 21,
};
pub const CAP_PERFMON: Cap = Cap {
    name: "CAP_PERFMON",
    bit: 38,
};
pub const CAP_BPF: Cap = Cap {
    name: "CAP_BPF",
    bit: 39,
};

/// What tracing needs: without any of these the kernel refuses the programs.
pub const TRACING: [Cap; 3] = [CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON];

/// The effective capability set of this process (`CapEff`), `None` when it cannot be read.
pub fn effective() -> Option<u64> {
    parse_cap_eff(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `CapEff:\t000001ffffffffff` of a /proc/PID/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Those of `wanted` that the set `eff` lacks.
pub fn lacking(eff: u64, wanted: &[Cap]) -> Vec<Cap> {
    wanted
        .iter()
        .filter(|c| eff & (1u64 << c.bit) == 0)
        .copied()
        .collect()
}

/// Whether this process may trace: it has CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (root
/// normally has them all).
pub fn may_trace() -> bool {
    effective().is_some_and(|eff| lacking(eff, &TRACING).is_empty())
}

/// `Err(one line naming what is missing)` when this process may not trace.
pub fn check_tracing() -> Result<(), String> {
    let Some(eff) = effective() else {
        return Err("cannot read this process's capabilities (/proc/self/status)".into());
    };
    let missing = lacking(eff, &TRACING);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
    Err(format!(
        "netpath needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (and CAP_SYS_ADMIN for other \
         namespaces): run as root or grant them; this process lacks {}",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_and_what_is_lacking_named() {
        let status = "Name:\tnetpath\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        let all = parse_cap_eff(status).unwrap();
        assert_eq!(all, 0x1ff_ffff_ffff);
        assert!(lacking(all, &TRACING).is_empty());
        // setpriv --ambient-caps=+bpf,+net_admin,+perfmon,+sys_admin
        let some = (1 << 12) | (1 << 21) | (1 << 38) | (1 << 39);
        assert!(lacking(some, &TRACING).is_empty());
        assert_eq!(lacking(1 << 12, &TRACING), vec![CAP_BPF, CAP_PERFMON]);
        assert_eq!(lacking(0, &[CAP_SYS_ADMIN]), vec![CAP_SYS_ADMIN]);
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }
}
