//! The address family, in one place.
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// IPv4 or IPv6. In JSON: the number `4` or `6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// `4` or `6`.
    pub fn number(self) -> u8 {
        match self {
            Family::Ipv4 => 4,
            Family::Ipv6 => 6,
        }
    }

    /// From `4` or `6`; anything else (0: not IP) is `None`.
    pub fn from_number(n: u8) -> Option<Family> {
        match n {
            4 => Some(Family::Ipv4),
            6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }

    pub fn other(self) -> Family {
        match self {
            Family::Ipv4 => Family::Ipv6,
            Family::Ipv6 => Family::Ipv4,
        }
    }

    /// The neighbour-discovery protocol of this family.
    pub fn neighbour_protocol(self) -> &'static str {
        match self {
            Family::Ipv4 => "ARP",
            Family::Ipv6 => "NDP",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    /// `4`, `6`, `ipv4`, `ipv6` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "4" | "ipv4" | "inet" => Ok(Family::Ipv4),
            "6" | "ipv6" | "inet6" => Ok(Family::Ipv6),
            _ => Err(format!("{s:?} is not an address family (4 or 6)")),
        }
    }
}

impl Serialize for Family {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

/// Reads `4`/`6`, and also the names (`"ipv4"`, `"IPv6"`, `"6"`) older files and other
/// producers wrote.
impl<'de> Deserialize<'de> for Family {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Family;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address family: 4 or 6")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Family, E> {
                u8::try_from(n)
                    .ok()
                    .and_then(Family::from_number)
                    .ok_or_else(|| E::custom(format!("family {n} is not 4 or 6")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Family, E> {
                self.visit_u64(u64::try_from(n).map_err(|_| E::custom("negative family"))?)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Family, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `Option<Family>` as the number `0` (not IP), `4` or `6`: the `family` key of events.
pub mod number_or_zero {
    use super::*;

    pub fn serialize<S: Serializer>(f: &Option<Family>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(f.map(Family::number).unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Family>, D::Error> {
        Ok(Family::from_number(u8::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_one_form_everywhere() {
        for f in Family::BOTH {
            assert_eq!(Family::from_number(f.number()), Some(f));
            assert_eq!(f.other().other(), f);
            assert_eq!(f.to_string().parse::<Family>(), Ok(f));
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, f.number().to_string());
            assert_eq!(serde_json::from_str::<Family>(&json).unwrap(), f);
        }
        assert_eq!(Family::of(&"fd00::1".parse().unwrap()), Family::Ipv6);
        assert_eq!(Family::from_number(0), None);
        assert!(serde_json::from_str::<Family>("5").is_err());
        // Names, as earlier lab state files wrote them.
        assert_eq!(
            serde_json::from_str::<Family>("\"ipv4\"").unwrap(),
            Family::Ipv4
        );
        assert_eq!(
            serde_json::from_str::<Family>("\"IPv6\"").unwrap(),
            Family::Ipv6
        );
        assert!("7".parse::<Family>().is_err());
    }
}
