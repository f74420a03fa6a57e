//! Between the protocol's messages and the model's values (one place for every conversion).
use std::net::IpAddr;

use netpath_core::{model::Place, world::Scope};
use serde::{de::DeserializeOwned, Serialize};
use tonic::Status;

use crate::proto;

pub fn place_to(p: &Place) -> proto::Place {
    proto::Place {
        node: p.node.clone(),
        netns: p.netns.clone(),
    }
}

pub fn place_from(p: Option<proto::Place>) -> Result<Place, Status> {
    let p = p.ok_or_else(|| Status::invalid_argument("no place"))?;
    if p.netns.is_empty() {
        return Err(Status::invalid_argument("place without a namespace"));
    }
    Ok(Place::new(p.node, p.netns))
}

pub fn scope_to(s: &Scope) -> proto::OpenStreamRequest {
    proto::OpenStreamRequest {
        places: s.places.iter().map(place_to).collect(),
        addrs: s.addrs.iter().map(|a| a.to_string()).collect(),
        drops: s.drops,
        routes: s.routes,
        ring_bytes: s.ring_bytes,
        functions: s.functions.clone().unwrap_or_default(),
        non_ip: s.non_ip,
    }
}

pub fn scope_from(r: proto::OpenStreamRequest) -> Result<Scope, Status> {
    let addrs = r
        .addrs
        .iter()
        .map(|a| {
            a.parse::<IpAddr>()
                .map_err(|_| Status::invalid_argument(format!("{a:?} is not an address")))
        })
        .collect::<Result<_, _>>()?;
    if !r.ring_bytes.is_power_of_two() || r.ring_bytes < 4096 {
        return Err(Status::invalid_argument(
            "ring_bytes must be a power of two, at least 4096",
        ));
    }
    Ok(Scope {
        places: r
            .places
            .into_iter()
            .map(|p| Place::new(p.node, p.netns))
            .collect(),
        addrs,
        non_ip: r.non_ip,
        drops: r.drops,
        routes: r.routes,
        ring_bytes: r.ring_bytes,
        functions: (!r.functions.is_empty()).then_some(r.functions),
    })
}

pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model values serialize")
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cross_the_wire_unchanged() {
        let scope = Scope {
            places: vec![Place::new("node-1", "pod-a"), Place::new("", "root")],
            addrs: vec![
                "10.244.1.2".parse().unwrap(),
                "fd00:10:244:1::2".parse().unwrap(),
            ],
            non_ip: true,
            drops: true,
            routes: false,
            ring_bytes: 1 << 16,
            functions: Some("ip_*".into()),
        };
        assert_eq!(scope_from(scope_to(&scope)).unwrap(), scope);
    }

    #[test]
    fn bad_scopes_are_refused() {
        let mut r = scope_to(&Scope {
            places: vec![],
            addrs: vec![],
            non_ip: false,
            drops: true,
            routes: true,
            ring_bytes: 4096,
            functions: None,
        });
        r.addrs.push("nope".into());
        assert!(scope_from(r.clone()).is_err());
        r.addrs.clear();
        r.ring_bytes = 5000;
        assert!(scope_from(r).is_err());
    }
}
