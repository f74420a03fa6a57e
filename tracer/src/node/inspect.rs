//! Questions the diagnosis asks a namespace after the packets told it where to look: the
//! route lookup for an address, forwarding and disable_ipv6 sysctls, configured addresses,
//! nftables rules that drop. [`LiveInspector`] asks the running kernel (netlink, /proc/sys);
//! the diagnosis only sees the [`Inspector`] trait, so its rules are tested on fixed answers.
use std::net::IpAddr;

use async_trait::async_trait;
use netpath_core::{
    model::{Family, IfAddr, LinkState, Place, RouteAnswer, RouteType},
    world::Inspector,
};

use super::{netns::NetnsRef, sys};

/// Asks the live kernel of each namespace over netlink and /proc/sys ([`super::sys`]); a
/// namespace is a name, `root`, `pid:N` or an nsfs path ([`NetnsRef::parse`]). What cannot be
/// asked is unknown (None, empty).
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveInspector;

fn ns_ref(netns: &str) -> Option<NetnsRef> {
    NetnsRef::parse(netns)
        .map_err(|e| tracing::debug!("inspect {netns}: {e}"))
        .ok()
}

/// The value, or None with the error logged at debug level.
fn logged<T>(what: &str, netns: &str, r: Result<T, sys::SysError>) -> Option<T> {
    r.map_err(|e| tracing::debug!("inspect {what} in {netns}: {e}"))
        .ok()
}

impl LiveInspector {
    pub fn route_get_in(
        &self,
        netns: &str,
        dst: IpAddr,
        src: Option<IpAddr>,
        iif: Option<&str>,
    ) -> Option<RouteAnswer> {
        let mut answer = logged(
            "route get",
            netns,
            sys::route_get(&ns_ref(netns)?, dst, src, iif),
        )?;
        // The caller's spelling of the namespace, as before.
        answer.netns = netns.into();
        Some(answer)
    }

    pub fn forwarding_in(&self, netns: &str, family: Family) -> Option<bool> {
        logged(
            "forwarding",
            netns,
            sys::forwarding(&ns_ref(netns)?, family.number()),
        )
    }

    pub fn ipv6_disabled_devices_in(&self, netns: &str) -> Vec<String> {
        ns_ref(netns)
            .and_then(|ns| logged("disable_ipv6", netns, sys::ipv6_disabled_devices(&ns)))
            .unwrap_or_default()
    }

    pub fn addresses_in(&self, netns: &str) -> Vec<IfAddr> {
        ns_ref(netns)
            .and_then(|ns| logged("addresses", netns, sys::addresses(&ns)))
            .map(|all| if_addrs(&all))
            .unwrap_or_default()
    }

    pub fn nft_drop_rules_in(&self, netns: &str) -> Vec<String> {
        ns_ref(netns)
            .and_then(|ns| logged("nftables", netns, sys::drop_rules(&ns)))
            .map(|rules| rules.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    pub fn mtu_in(&self, netns: &str, dev: &str) -> Option<u32> {
        logged("link", netns, sys::link(&ns_ref(netns)?, dev))??.mtu
    }

    pub fn link_state_in(&self, netns: &str, dev: &str) -> Option<LinkState> {
        let l = logged("link", netns, sys::link(&ns_ref(netns)?, dev))??;
        Some(LinkState {
            dev: l.name,
            operstate: l.operstate,
            rx_packets: l.rx_packets,
            rx_dropped: l.rx_dropped,
            rx_errors: l.rx_errors,
            tx_dropped: l.tx_dropped,
        })
    }

    pub fn neighbour_state_in(&self, netns: &str, addr: IpAddr) -> Option<String> {
        logged(
            "neighbours",
            netns,
            sys::neighbour_state(&ns_ref(netns)?, addr),
        )?
    }
}

/// Runs a blocking question off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("inspector task panicked")
}

/// Every place it is asked about is a namespace of this machine (the node name is not
/// needed: one kernel holds them all).
#[async_trait]
impl Inspector for LiveInspector {
    async fn route_get(
        &self,
        at: &Place,
        dst: IpAddr,
        src: Option<IpAddr>,
        iif: Option<&str>,
    ) -> Option<RouteAnswer> {
        let (ns, iif) = (at.netns.clone(), iif.map(str::to_string));
        blocking(move || LiveInspector.route_get_in(&ns, dst, src, iif.as_deref())).await
    }
    async fn forwarding(&self, at: &Place, family: Family) -> Option<bool> {
        let ns = at.netns.clone();
        blocking(move || LiveInspector.forwarding_in(&ns, family)).await
    }
    async fn ipv6_disabled_devices(&self, at: &Place) -> Vec<String> {
        let ns = at.netns.clone();
        blocking(move || LiveInspector.ipv6_disabled_devices_in(&ns)).await
    }
    async fn addresses(&self, at: &Place) -> Vec<IfAddr> {
        let ns = at.netns.clone();
        blocking(move || LiveInspector.addresses_in(&ns)).await
    }
    async fn nft_drop_rules(&self, at: &Place) -> Vec<String> {
        let ns = at.netns.clone();
        blocking(move || LiveInspector.nft_drop_rules_in(&ns)).await
    }
    async fn mtu(&self, at: &Place, dev: &str) -> Option<u32> {
        let (ns, dev) = (at.netns.clone(), dev.to_string());
        blocking(move || LiveInspector.mtu_in(&ns, &dev)).await
    }
    async fn neighbour_state(&self, at: &Place, addr: IpAddr) -> Option<String> {
        let ns = at.netns.clone();
        blocking(move || LiveInspector.neighbour_state_in(&ns, addr)).await
    }
    async fn link_state(&self, at: &Place, dev: &str) -> Option<LinkState> {
        let (ns, dev) = (at.netns.clone(), dev.to_string());
        blocking(move || LiveInspector.link_state_in(&ns, &dev)).await
    }
}

/// Addresses as the diagnosis uses them: no loopback device, no link-scope address.
pub fn if_addrs(all: &[sys::Address]) -> Vec<IfAddr> {
    all.iter()
        .filter(|a| a.dev != "lo" && a.scope != "link")
        .map(|a| IfAddr {
            dev: a.dev.clone(),
            addr: a.addr,
            prefix_len: a.prefix_len,
            dad_failed: a.dad_failed,
        })
        .collect()
}

// Readers of `ip -j` and `nft list ruleset` output: what the netlink answers above are
// compared with in the real-kernel tests (tests/netlink.rs), and a way to read answers saved
// from a machine by hand.

/// `ip -j route get` output to a [`RouteAnswer`].
pub fn parse_route_get(netns: &str, dst: &str, json: &[u8]) -> Option<RouteAnswer> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let r = v.as_array()?.first()?;
    Some(RouteAnswer {
        netns: netns.into(),
        dst: dst.into(),
        kind: r["type"]
            .as_str()
            .and_then(RouteType::from_name)
            .unwrap_or(RouteType::Unicast),
        gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()),
        dev: r["dev"].as_str().map(str::to_string),
        error: None,
        prefix: None,
    })
}

/// The longest-prefix entry of `ip -j route show match DST`: (type, prefix).
pub fn most_specific_route(json: &[u8]) -> Option<(RouteType, String)> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    v.as_array()?
        .iter()
        .filter_map(|r| {
            let dst = r["dst"].as_str()?;
            let len = match dst.split_once('/') {
                Some((_, l)) => l.parse::<u8>().ok()?,
                None if dst == "default" => 0,
                None => 128,
            };
            Some((
                len,
                r["type"]
                    .as_str()
                    .and_then(RouteType::from_name)
                    .unwrap_or(RouteType::Unicast),
                dst.to_string(),
            ))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, kind, dst)| (kind, dst))
}

/// `ip -j addr show` output to addresses (no loopback, no link-local).
pub fn parse_addresses(json: &[u8]) -> Vec<IfAddr> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let dev = link["ifname"].as_str().unwrap_or_default();
        if dev == "lo" {
            continue;
        }
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(addr), Some(len)) = (
                a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()),
                a["prefixlen"].as_u64(),
            ) else {
                continue;
            };
            if a["scope"] == "link" {
                continue;
            }
            out.push(IfAddr {
                dev: dev.into(),
                addr,
                prefix_len: len as u8,
                dad_failed: a["dadfailed"].as_bool().unwrap_or(false),
            });
        }
    }
    out
}

/// Rules of `nft list ruleset` text that end in drop or reject, with their table and chain.
pub fn nft_drop_rules(ruleset: &str) -> Vec<String> {
    let mut table = String::new();
    let mut chain = String::new();
    let mut out = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
        } else if line.starts_with("type ") || line.starts_with("policy ") {
            if line.contains("policy drop") {
                out.push(format!("table {table} chain {chain}: policy drop"));
            }
        } else {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.iter().any(|w| *w == "drop" || *w == "reject") {
                out.push(format!("table {table} chain {chain}: {line}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_get_json_is_read() {
        let r = parse_route_get(
            "ns",
            "10.0.0.1",
            br#"[{"dst":"10.0.0.1","gateway":"10.1.0.1","dev":"eth0","prefsrc":"10.1.0.2","flags":[],"uid":0,"cache":[]}]"#,
        )
        .unwrap();
        assert_eq!(r.gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(
            (r.kind.as_str(), r.dev.as_deref()),
            ("unicast", Some("eth0"))
        );
        assert!(!r.failed());
        let b = parse_route_get(
            "ns",
            "fd00::1",
            br#"[{"type":"blackhole","dst":"fd00::1"}]"#,
        )
        .unwrap();
        assert!(b.failed());
        assert!(b.describe().contains("blackhole"));
        assert!(parse_route_get("ns", "x", b"not json").is_none());
        let m = br#"[{"type":"blackhole","dst":"fd00:10:244:2::/64","dev":"lo"},{"dst":"default","gateway":"fd00::1","dev":"eth0"}]"#;
        assert_eq!(
            most_specific_route(m),
            Some((RouteType::Blackhole, "fd00:10:244:2::/64".into()))
        );
        assert_eq!(
            most_specific_route(br#"[{"dst":"default","dev":"eth0"}]"#),
            Some((RouteType::Unicast, "default".into()))
        );
    }

    #[test]
    fn addresses_skip_loopback_and_link_local() {
        let json = br#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
            {"ifname":"eth0","addr_info":[{"local":"fd00:198:18:1::10","prefixlen":64,"scope":"global"},
            {"local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
        let a = parse_addresses(json);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].dev.as_str(), a[0].prefix_len), ("eth0", 64));
    }

    #[test]
    fn nft_rules_that_drop_are_found_with_their_chain() {
        let rs = "table inet filter {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip6 daddr fd00::2 drop\n\t\tip saddr 10.0.0.1 accept\n\t}\n}\ntable ip nat {\n\tchain out {\n\t\ttype filter hook output priority 0; policy drop;\n\t\ttcp dport 443 reject with icmp port-unreachable\n\t}\n}\n";
        assert_eq!(
            nft_drop_rules(rs),
            [
                "table inet filter chain forward: ip6 daddr fd00::2 drop",
                "table ip nat chain out: policy drop",
                "table ip nat chain out: tcp dport 443 reject with icmp port-unreachable",
            ]
        );
    }
}
