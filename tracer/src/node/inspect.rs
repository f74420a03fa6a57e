//! Questions the diagnosis asks a namespace after the packets told it where to look: the
//! route lookup for an address, forwarding and disable_ipv6 sysctls, configured addresses,
//! nftables rules that drop. [`LiveInspector`] asks the running kernel (iproute2, sysctl, nft);
//! the diagnosis only sees the [`Inspector`] trait, so its rules are tested on fixed answers.
use std::{net::IpAddr, process::Command};

use async_trait::async_trait;
use netpath_core::{
    model::{Family, IfAddr, Place, RouteAnswer, RouteType},
    world::Inspector,
};

/// Asks the live kernel through iproute2, sysctl and nft in each namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveInspector;

fn in_netns(netns: &str, argv: &[&str]) -> Option<std::process::Output> {
    let mut cmd = if netns.is_empty() || netns == "root" {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        c
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns]).args(argv);
        c
    };
    cmd.output().ok()
}

impl LiveInspector {
    pub fn route_get_in(
        &self,
        netns: &str,
        dst: IpAddr,
        src: Option<IpAddr>,
        iif: Option<&str>,
    ) -> Option<RouteAnswer> {
        let dst_s = dst.to_string();
        let src_s = src.map(|s| s.to_string());
        let mut argv = vec!["ip", "-j", "route", "get", dst_s.as_str()];
        if let (Some(s), Some(dev)) = (&src_s, iif) {
            argv.extend(["from", s.as_str(), "iif", dev]);
        }
        let out = in_netns(netns, &argv)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err
                .trim()
                .trim_start_matches("RTNETLINK answers: ")
                .to_string();
            if iif.is_some() && err.contains("No such device") {
                // The device is gone: ask without the input side.
                return self.route_get_in(netns, dst, None, None);
            }
            if iif.is_some() {
                // Input-side lookups fail for reasons of their own (rp checks, forwarding):
                // the output-side answer is what explains a missing route.
                return self.route_get_in(netns, dst, None, None);
            }
            // The lookup hit a discard route (EINVAL: blackhole, EHOSTUNREACH: unreachable,
            // EACCES: prohibit) or nothing at all: say which route matched.
            let fam = if dst.is_ipv6() { "-6" } else { "-4" };
            let matched = in_netns(netns, &["ip", fam, "-j", "route", "show", "match", &dst_s])
                .and_then(|o| most_specific_route(&o.stdout));
            let (kind, prefix) = match matched {
                Some((kind, prefix)) if kind != RouteType::Unicast => (kind, Some(prefix)),
                _ => (RouteType::Unspec, None),
            };
            return Some(RouteAnswer {
                netns: netns.into(),
                dst: dst_s,
                kind,
                gateway: None,
                dev: None,
                error: Some(err),
                prefix,
            });
        }
        parse_route_get(netns, &dst_s, &out.stdout)
    }

    pub fn forwarding_in(&self, netns: &str, family: Family) -> Option<bool> {
        let key = if family == Family::Ipv6 {
            "net.ipv6.conf.all.forwarding"
        } else {
            "net.ipv4.ip_forward"
        };
        let out = in_netns(netns, &["sysctl", "-n", key])?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.status.success().then(|| v != "0")
    }

    pub fn ipv6_disabled_devices_in(&self, netns: &str) -> Vec<String> {
        let Some(out) = in_netns(
            netns,
            &[
                "sh",
                "-c",
                "grep -l 1 /proc/sys/net/ipv6/conf/*/disable_ipv6",
            ],
        ) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split('/').nth_back(1).map(str::to_string))
            .filter(|d| d != "all" && d != "default")
            .collect()
    }

    pub fn addresses_in(&self, netns: &str) -> Vec<IfAddr> {
        in_netns(netns, &["ip", "-j", "addr", "show"])
            .map(|o| parse_addresses(&o.stdout))
            .unwrap_or_default()
    }

    pub fn nft_drop_rules_in(&self, netns: &str) -> Vec<String> {
        in_netns(netns, &["nft", "list", "ruleset"])
            .map(|o| nft_drop_rules(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_default()
    }

    pub fn mtu_in(&self, netns: &str, dev: &str) -> Option<u32> {
        let out = in_netns(netns, &["ip", "-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first()?["mtu"].as_u64().map(|m| m as u32)
    }

    pub fn neighbour_state_in(&self, netns: &str, addr: IpAddr) -> Option<String> {
        let a = addr.to_string();
        let out = in_netns(netns, &["ip", "-j", "neigh", "show", "to", &a])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let states = v.as_array()?.first()?["state"].as_array()?.clone();
        Some(
            states
                .iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
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
}

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
