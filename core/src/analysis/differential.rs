//! The dual-stack differential: when one family is delivered between two endpoints and the
//! other is not, the delivered family's path is the reference. The two paths are compared
//! step by step to find where they part, and the namespaces there are asked what the failing
//! family lacks that the reference has: IPv6 disabled on a device the reference uses,
//! forwarding off for this family only, an address that failed duplicate address detection,
//! a route the other family has. Causes specific to IPv6 are named even when the kernel's
//! drop reason points elsewhere (a packet to a device with IPv6 disabled is dropped as "no
//! route", not as "IPv6 disabled").
use std::collections::BTreeSet;

use crate::{
    model::{
        Cause, Comparison, Direction, Endpoint, EventKind, Family, FamilyReport, Hop, Place,
        Verdict, Where,
    },
    world::Inspector,
};

/// A device step of a path: where a probe was seen (not route lookups, function calls or drops).
fn steps(hops: &[Hop]) -> Vec<&Hop> {
    hops.iter().filter(|h| h.kind == EventKind::Hop).collect()
}

fn same_step(a: &Hop, b: &Hop) -> bool {
    (&a.node, &a.netns, &a.ifname, a.dir) == (&b.node, &b.netns, &b.ifname, b.dir)
}

fn where_of(h: &Hop) -> Where {
    Where {
        node: h.node.clone(),
        netns: h.netns.clone(),
        ifname: h.ifname.clone(),
        location: None,
    }
}

/// Where two paths part: the index of the first device step that differs (or where one path
/// ends), compared in order.
pub fn first_divergence(reference: &[Hop], failing: &[Hop]) -> usize {
    let (r, f) = (steps(reference), steps(failing));
    r.iter()
        .zip(&f)
        .position(|(a, b)| !same_step(a, b))
        .unwrap_or(r.len().min(f.len()))
}

/// The comparison without the namespaces' answers: where the paths part.
pub fn part(reference: &FamilyReport, failing: &FamilyReport) -> Comparison {
    let i = first_divergence(&reference.hops, &failing.hops);
    let (r, f) = (steps(&reference.hops), steps(&failing.hops));
    Comparison {
        reference: reference.family,
        parted_after: i.checked_sub(1).and_then(|j| f.get(j)).map(|h| where_of(h)),
        reference_next: r.get(i).map(|h| where_of(h)),
        next: f.get(i).map(|h| where_of(h)),
        lacks: Vec::new(),
    }
}

/// The devices the reference was seen on in `netns` of `node`, and whether it was forwarded
/// there (seen arriving and leaving).
fn reference_devices(reference: &[Hop], place: &Place) -> (BTreeSet<String>, bool) {
    let here: Vec<&Hop> = steps(reference)
        .into_iter()
        .filter(|h| h.node == place.node && h.netns == place.netns && !h.ifname.is_empty())
        .collect();
    let devs = here.iter().map(|h| h.ifname.clone()).collect();
    // The request's path: only a namespace in between sees it both arrive and leave.
    let forwarded = here.iter().any(|h| h.dir == Direction::Ingress)
        && here.iter().any(|h| h.dir == Direction::Egress);
    (devs, forwarded)
}

/// One thing the failing family lacks, with the cause it stands for.
struct Finding {
    cause: Cause,
    at: Where,
    sentence: String,
    hint: String,
    /// Specific to the failing family: it names the cause even over the kernel's reason.
    decisive: bool,
}

/// Compares the failing family with the delivered one, when exactly that is the case, and
/// records what the failing family lacks in its report (`comparison`), taking the cause from
/// it when it is decisive or the report's own cause is only generic.
pub async fn compare_families(
    reports: &mut [FamilyReport],
    from: &Endpoint,
    to: &Endpoint,
    inspect: &dyn Inspector,
) {
    let Some(ri) = reports.iter().position(|r| r.verdict == Verdict::Delivered) else {
        return;
    };
    let Some(fi) = reports
        .iter()
        .position(|r| matches!(r.verdict, Verdict::Dropped | Verdict::LostInTransit))
    else {
        return;
    };
    let (reference, failing) = (&reports[ri], &reports[fi]);
    let mut cmp = part(reference, failing);
    let findings = findings(reference, failing, &cmp, from, to, inspect).await;
    let failing = &mut reports[fi];
    cmp.lacks = findings.iter().map(|f| f.sentence.clone()).collect();
    let generic = matches!(
        failing.cause,
        None | Some(Cause::KernelDrop | Cause::NoAnswer | Cause::NoRoute)
    );
    if let Some(f) = findings.into_iter().find(|f| f.decisive || generic) {
        let before = std::mem::take(&mut failing.summary);
        failing.summary = format!(
            "{} ({} passes there); what the kernel showed: {before}",
            f.sentence,
            cmp.reference.name()
        );
        if let Some(old) = failing.hint.replace(f.hint) {
            failing.evidence.push(format!("also: {old}"));
        }
        failing.cause = Some(f.cause);
        if failing.verdict == Verdict::LostInTransit {
            failing.verdict = Verdict::Dropped;
        }
        failing.at.get_or_insert(f.at);
    }
    failing.comparison = Some(cmp);
}

async fn findings(
    reference: &FamilyReport,
    failing: &FamilyReport,
    cmp: &Comparison,
    from: &Endpoint,
    to: &Endpoint,
    inspect: &dyn Inspector,
) -> Vec<Finding> {
    let (fam, rfam) = (failing.family, reference.family);
    let (name, rname) = (fam.name(), rfam.name());
    // Where to look: where the paths part, where this family died or was last seen, and the
    // reference's next namespace (the one this family never reached).
    let mut places: Vec<Place> = Vec::new();
    for w in [&cmp.parted_after, &failing.at, &cmp.reference_next]
        .into_iter()
        .flatten()
    {
        let p = Place::new(w.node.clone(), w.netns.clone());
        if !p.netns.is_empty() && !places.contains(&p) {
            places.push(p);
        }
    }
    let mut out = Vec::new();
    for place in &places {
        let (devs, forwarded) = reference_devices(&reference.hops, place);
        let at = |dev: &str| Where {
            node: place.node.clone(),
            netns: place.netns.clone(),
            ifname: dev.to_string(),
            location: None,
        };
        if fam == Family::Ipv6 {
            for dev in inspect.ipv6_disabled_devices(place).await {
                if devs.contains(&dev) {
                    out.push(Finding {
                        cause: Cause::Ipv6Disabled,
                        at: at(&dev),
                        sentence: format!(
                            "IPv6 is disabled on {dev} in {}, which {rname} passes through",
                            place.netns
                        ),
                        hint: format!(
                            "sysctl -w net.ipv6.conf.{dev}.disable_ipv6=0 in {}",
                            place.netns
                        ),
                        decisive: true,
                    });
                }
            }
        }
        if forwarded {
            let (this, other) = (
                inspect.forwarding(place, fam).await,
                inspect.forwarding(place, rfam).await,
            );
            if this == Some(false) && other == Some(true) {
                let knob = match fam {
                    Family::Ipv4 => "net.ipv4.ip_forward=1".to_string(),
                    Family::Ipv6 => "net.ipv6.conf.all.forwarding=1".to_string(),
                };
                out.push(Finding {
                    cause: Cause::ForwardingDisabled,
                    at: at(""),
                    sentence: format!(
                        "{} forwards {rname} but not {name} ({name} forwarding is off)",
                        place.netns
                    ),
                    hint: format!("sysctl -w {knob} in {}", place.netns),
                    decisive: true,
                });
            }
        }
        let addrs = inspect.addresses(place).await;
        for a in addrs
            .iter()
            .filter(|a| a.dad_failed && devs.contains(&a.dev))
        {
            out.push(dad_finding(a.addr, &a.dev, place));
        }
    }
    // The destination's own address of this family.
    if let (Some(dst_place), Some(dst)) = (to.place(), failing.dst) {
        if let Some(a) = inspect
            .addresses(&dst_place)
            .await
            .into_iter()
            .find(|a| a.dad_failed && a.addr == dst)
        {
            out.push(dad_finding(a.addr, &a.dev, &dst_place));
        }
    }
    // A route the reference has where this family has none, where this family stopped.
    if let (Some(w), Some(dst), Some(rdst)) = (&failing.at, failing.dst, reference.dst) {
        let place = Place::new(w.node.clone(), w.netns.clone());
        let (this, other) = (
            inspect.route_get(&place, dst, None, None).await,
            inspect.route_get(&place, rdst, None, None).await,
        );
        if let (Some(this), Some(other)) = (this, other) {
            if this.failed() && !other.failed() {
                out.push(Finding {
                    cause: Cause::NoRoute,
                    at: Where {
                        ifname: String::new(),
                        ..w.clone()
                    },
                    sentence: format!(
                        "{} has no {name} route to {dst} where {rname} has one ({})",
                        place.netns,
                        other.describe()
                    ),
                    hint: format!(
                        "add a {name} route to {dst} in {} like the {rname} one",
                        place.netns
                    ),
                    decisive: false,
                });
            }
        }
    }
    let _ = from;
    out
}

fn dad_finding(addr: std::net::IpAddr, dev: &str, place: &Place) -> Finding {
    Finding {
        cause: Cause::DadFailed,
        at: Where {
            node: place.node.clone(),
            netns: place.netns.clone(),
            ifname: dev.to_string(),
            location: None,
        },
        sentence: format!(
            "{addr} on {dev} in {} failed duplicate address detection: another host on the \
             link has it, so the kernel never uses it",
            place.netns
        ),
        hint: format!(
            "find the other holder of {addr} (ip -6 neigh, the CNI's IPAM), then re-add the \
             address on {dev} in {}",
            place.netns
        ),
        decisive: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Hook, Proto};

    fn hop(netns: &str, dev: &str, dir: Direction) -> Hop {
        Hop {
            kind: EventKind::Hop,
            node: "node-1".into(),
            netns: netns.into(),
            ifname: dev.into(),
            dir,
            hook: Hook::TcIngress,
            ts_ns: 0,
            src: None,
            dst: None,
            proto: Proto::Icmp,
            sport: None,
            dport: None,
            ttl: 64,
            len: 84,
            tunnel: None,
            nat: None,
            reason: None,
            location: None,
            route: None,
        }
    }

    fn route_hop(netns: &str) -> Hop {
        Hop {
            kind: EventKind::Route,
            ..hop(netns, "", Direction::None)
        }
    }

    fn report(family: Family, verdict: Verdict, hops: Vec<Hop>) -> FamilyReport {
        let mut r = FamilyReport::new(family, verdict, String::new());
        r.hops = hops;
        r
    }

    #[test]
    fn paths_part_at_the_first_device_step_that_differs() {
        use Direction::*;
        let reference = vec![
            hop("a", "eth0", Egress),
            route_hop("r"),
            hop("r", "ra", Ingress),
            hop("r", "rb", Egress),
            hop("b", "eth0", Ingress),
        ];
        // Route lookups in between do not count; the failing one never left r.
        let failing = vec![hop("a", "eth0", Egress), hop("r", "ra", Ingress)];
        assert_eq!(first_divergence(&reference, &failing), 2);
        let c = part(
            &report(Family::Ipv4, Verdict::Delivered, reference.clone()),
            &report(Family::Ipv6, Verdict::Dropped, failing),
        );
        assert_eq!(
            c.parted_after.as_ref().map(|w| w.ifname.as_str()),
            Some("ra")
        );
        assert_eq!(
            c.reference_next.as_ref().map(|w| w.ifname.as_str()),
            Some("rb")
        );
        assert!(c.next.is_none());
        // Another device at the same step is a divergence there.
        let other = vec![hop("a", "eth0", Egress), hop("r", "rc", Ingress)];
        assert_eq!(first_divergence(&reference, &other), 1);
        // Nothing in common.
        assert_eq!(first_divergence(&reference, &[]), 0);
        assert_eq!(
            first_divergence(&reference, &reference),
            4,
            "the same path parts nowhere"
        );
    }

    #[test]
    fn a_namespace_forwards_when_the_reference_leaves_on_another_device() {
        use Direction::*;
        let p = Place::new("node-1", "r");
        let through = [hop("r", "ra", Ingress), hop("r", "rb", Egress)];
        let (devs, fwd) = reference_devices(&through, &p);
        assert!(fwd);
        assert_eq!(devs.into_iter().collect::<Vec<_>>(), ["ra", "rb"]);
        let (_, fwd) = reference_devices(&[hop("r", "ra", Egress)], &p);
        assert!(!fwd, "sent from r itself");
        let (_, fwd) = reference_devices(&[hop("r", "ra", Ingress)], &p);
        assert!(!fwd, "delivered in r");
    }
}
