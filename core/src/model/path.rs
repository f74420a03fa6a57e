//! A packet's path: the events of one packet (one direction), in path order.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::event::{Direction, Event, EventKind, Hook, Proto, RouteLookup, Tunnel};

/// One step of a rebuilt path (a JSON object in `trace --json`'s `hops`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// `hop` (seen on a device), `drop`, or `route` (a lookup the kernel made for it).
    pub kind: EventKind,
    pub node: String,
    pub netns: String,
    pub ifname: String,
    pub dir: Direction,
    pub hook: Hook,
    pub ts_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    pub proto: Proto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// IPv4 TTL / IPv6 hop limit of the innermost packet.
    pub ttl: u8,
    /// skb length at this point.
    pub len: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    /// Address/port rewrite since the previous hop (`10.96.0.10:80 -> 10.244.2.2:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Route events: the kernel's lookup result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteLookup>,
}

impl Hop {
    pub fn from_event(e: &Event) -> Self {
        Hop {
            kind: e.kind,
            node: e.node.clone(),
            netns: e.netns.clone(),
            ifname: e.ifname.clone(),
            dir: e.dir,
            hook: e.hook,
            ts_ns: e.ts_ns,
            src: e.flow.src,
            dst: e.flow.dst,
            proto: e.flow.proto,
            sport: e.flow.sport,
            dport: e.flow.dport,
            ttl: e.ident().ttl,
            len: e.packet.as_ref().map(|p| p.len).unwrap_or(0),
            tunnel: e.packet.as_ref().and_then(|p| p.tunnel.clone()),
            nat: None,
            reason: e.reason().map(str::to_string),
            // A drop's place in the kernel, or the function a function event is about.
            location: e
                .location()
                .or_else(|| e.packet.as_ref().and_then(|p| p.function.as_deref()))
                .map(str::to_string),
            route: e.route.clone(),
        }
    }

    /// A route hop's result in words: `table 254: unicast via fd00::1 dev eth0`.
    pub fn route_text(&self) -> Option<String> {
        self.route.as_ref().map(RouteLookup::text)
    }

    /// The function part of `location` (`ip_error` of `ip_error+0x94`).
    pub fn function(&self) -> Option<&str> {
        self.location
            .as_deref()
            .map(|l| l.split('+').next().unwrap_or(l))
    }
}

/// Events of one packet (one direction), in path order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PacketPath {
    pub hops: Vec<Hop>,
}

impl PacketPath {
    pub fn drops(&self) -> impl Iterator<Item = &Hop> {
        self.hops.iter().filter(|h| h.kind == EventKind::Drop)
    }

    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Was the packet seen arriving in (or being handled inside) namespace `netns`?
    pub fn reached(&self, netns: &str) -> bool {
        self.hops
            .iter()
            .any(|h| h.netns == netns && h.dir != Direction::Egress && h.kind == EventKind::Hop)
    }

    /// The last place the packet itself was seen (route lookups are not places).
    pub fn last(&self) -> Option<&Hop> {
        self.hops.iter().rev().find(|h| h.kind != EventKind::Route)
    }

    /// The kernel's last route lookup for this packet in `netns`.
    pub fn route_in(&self, netns: &str) -> Option<&Hop> {
        self.hops
            .iter()
            .rev()
            .find(|h| h.kind == EventKind::Route && h.netns == netns)
    }

    /// Namespaces in the order the packet went through them.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for h in &self.hops {
            if out.last() != Some(&h.netns.as_str()) {
                out.push(&h.netns);
            }
        }
        out
    }
}
