//! Answers a namespace gives about itself (the inspector's side of the diagnosis).
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::event::RouteType;

/// A route lookup asked of a namespace (`ip route get`); the kernel's own lookups for real
/// packets are [`super::RouteLookup`] events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAnswer {
    pub netns: String,
    pub dst: String,
    #[serde(rename = "type")]
    pub kind: RouteType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// The kernel's error when the lookup failed (`Network is unreachable`); `type` is then
    /// the discard route that matched, or `none` when no route did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The route that matched (`fd00:10:244:2::/64`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl RouteAnswer {
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.kind.discards()
    }

    /// A route that exists and discards (blackhole, unreachable, prohibit), as opposed to no
    /// route at all.
    pub fn is_discard_route(&self) -> bool {
        self.kind.discards()
    }

    pub fn describe(&self) -> String {
        let matched = self
            .prefix
            .as_ref()
            .map(|p| format!(" (matches {} {p})", self.kind))
            .unwrap_or_default();
        if let Some(e) = &self.error {
            return format!("route get {} in {}: {e}{matched}", self.dst, self.netns);
        }
        let mut s = format!("route get {} in {}: {}", self.dst, self.netns, self.kind);
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if let Some(d) = &self.dev {
            s.push_str(&format!(" dev {d}"));
        }
        s
    }
}

/// An address configured on a device: `fd00:198:18:1::10/64 on eth0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfAddr {
    pub dev: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// IPv6 duplicate address detection found another host with it: the kernel keeps the
    /// address but never uses it (`ip addr` shows `dadfailed tentative`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dad_failed: bool,
}

/// Does `net/len` contain `ip`? Different families never do.
pub fn prefix_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.min(32) as u32;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.min(128) as u32;
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_contain() {
        let n: IpAddr = "fd00:198:18::".parse().unwrap();
        assert!(prefix_contains(n, 59, "fd00:198:18:2::10".parse().unwrap()));
        assert!(!prefix_contains(
            "fd00:198:18:1::".parse().unwrap(),
            64,
            "fd00:198:18:2::10".parse().unwrap()
        ));
        assert!(prefix_contains(
            "10.0.0.0".parse().unwrap(),
            0,
            "1.2.3.4".parse().unwrap()
        ));
        assert!(!prefix_contains(n, 64, "10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn route_answers_say_whether_they_discard() {
        let mut r = RouteAnswer {
            netns: "ns".into(),
            dst: "10.0.0.1".into(),
            kind: RouteType::Blackhole,
            gateway: None,
            dev: None,
            error: None,
            prefix: Some("10.0.0.0/8".into()),
        };
        assert!(r.failed() && r.is_discard_route());
        assert_eq!(r.describe(), "route get 10.0.0.1 in ns: blackhole",);
        r.kind = RouteType::Unicast;
        r.gateway = Some("10.1.0.1".parse().unwrap());
        r.dev = Some("eth0".into());
        assert!(!r.failed());
        assert_eq!(
            r.describe(),
            "route get 10.0.0.1 in ns: unicast via 10.1.0.1 dev eth0"
        );
    }
}

/// A device's state and packet counters, as `ip -s link` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub dev: String,
    /// `UP`, `DOWN`, `LOWERLAYERDOWN`, `UNKNOWN`, ...
    pub operstate: String,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_dropped: u64,
}

impl LinkState {
    /// Down, or its lower layer (the other end of a veth, the cable) is.
    pub fn is_down(&self) -> bool {
        matches!(
            self.operstate.as_str(),
            "DOWN" | "LOWERLAYERDOWN" | "NOTPRESENT"
        )
    }

    pub fn describe(&self) -> String {
        format!(
            "{}: {}, {} packets received, {} dropped and {} in error on receive, {} dropped on send",
            self.dev, self.operstate, self.rx_packets, self.rx_dropped, self.rx_errors, self.tx_dropped
        )
    }
}
