//! Filter flags shared by the commands, turned into the in-kernel [`FilterConfig`].
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use clap::Args;
use tracer_common::{AddrPrefix, FilterConfig, MAX_FILTER_ADDRS};

#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only packets with this address or CIDR on either side, outer or inner header
    /// (repeatable, up to 8): `--host 10.244.1.2 --host fd00:10:244::/48`.
    #[arg(long = "host", value_name = "ADDR[/LEN]")]
    pub hosts: Vec<String>,
    /// Only packets with this port on either side (outer or inner).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Only this transport protocol: tcp, udp, icmp, icmp6, sctp, or a number.
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<String>,
    /// Only IPv4 (4) or IPv6 (6) packets (outer or inner).
    #[arg(long, value_name = "4|6", value_parser = ["4", "6"])]
    pub family: Option<String>,
    /// Also decode VXLAN on this UDP port (4789 and 8472 always are).
    #[arg(long, value_name = "PORT")]
    pub vxlan_port: Option<u16>,
}

pub fn parse_prefix(text: &str) -> Result<AddrPrefix> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("bad address {text:?}"))?;
    let (family, max, bytes) = match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (4, 32, b)
        }
        IpAddr::V6(a) => (6, 128, a.octets()),
    };
    let prefix_len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .with_context(|| format!("bad prefix length in {text:?}"))?,
        None => max,
    };
    Ok(AddrPrefix::new(family, bytes, prefix_len))
}

pub fn parse_proto(text: &str) -> Result<u8> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmp6" | "icmpv6" => 58,
        "sctp" => 132,
        "gre" => 47,
        n => n
            .parse()
            .with_context(|| format!("unknown protocol {text:?}"))?,
    })
}

impl FilterArgs {
    pub fn to_config(&self) -> Result<FilterConfig> {
        let mut cfg = FilterConfig::default();
        if self.hosts.len() > MAX_FILTER_ADDRS {
            bail!("at most {MAX_FILTER_ADDRS} --host filters");
        }
        for (i, h) in self.hosts.iter().enumerate() {
            cfg.addrs[i] = parse_prefix(h)?;
        }
        cfg.n_addrs = self.hosts.len() as u8;
        cfg.port = self.port.unwrap_or(0);
        cfg.proto = self
            .proto
            .as_deref()
            .map(parse_proto)
            .transpose()?
            .unwrap_or(0);
        cfg.family = self
            .family
            .as_deref()
            .map(|f| f.parse().expect("validated by clap"))
            .unwrap_or(0);
        cfg.vxlan_port = self.vxlan_port.unwrap_or(0);
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_protocols_parse_and_bad_ones_are_refused() {
        let p = parse_prefix("10.244.1.0/24").unwrap();
        assert_eq!(
            (p.family, p.prefix_len, &p.addr_bytes()[..4]),
            (4, 24, &[10, 244, 1, 0][..])
        );
        assert_eq!(parse_prefix("fd00::1").unwrap().prefix_len, 128);
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("nonsense").is_err());
        assert_eq!(parse_proto("icmp6").unwrap(), 58);
        assert!(parse_proto("bogus").is_err());
    }
}
