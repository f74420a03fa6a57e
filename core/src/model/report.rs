//! The answer of `netpath trace`: a verdict per family, with where, why and the evidence.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::path::Hop;
use super::{endpoint::Endpoint, family::Family, probe::Reply};

/// What happened in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The probe reached the destination and the answer came back.
    Delivered,
    /// The kernel dropped the probe (or its answer) somewhere: see `where` and `reason`.
    Dropped,
    /// One side has no address of this family.
    NoAddress,
    /// The traffic cannot work in this family because of a family mix-up (e.g. a Service of
    /// one family whose endpoints are of the other).
    WrongFamily,
    /// The probe left a node and was never seen again (no drop event, no answer).
    LostInTransit,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Dropped => "dropped",
            Verdict::NoAddress => "no_address",
            Verdict::WrongFamily => "wrong_family",
            Verdict::LostInTransit => "lost_in_transit",
        }
    }
}

/// Why, as a stable code (the `cause` key of `trace --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    NoRoute,
    NotOnLink,
    NoPodRoute,
    NoPodAddress,
    Ipv6Disabled,
    ForwardingDisabled,
    NetfilterDrop,
    RpFilter,
    NeighborFailed,
    Mtu,
    ServiceFamilyMismatch,
    NoEndpoints,
    WrongFamily,
    /// An IPv6 address failed duplicate address detection: another host on the link has it,
    /// and the kernel never uses it.
    DadFailed,
    /// A kernel drop reason no rule explains further (the reason says it).
    KernelDrop,
    /// Nothing dropped it and nothing answered.
    NoAnswer,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::NoRoute => "no_route",
            Cause::NotOnLink => "not_on_link",
            Cause::NoPodRoute => "no_pod_route",
            Cause::NoPodAddress => "no_pod_address",
            Cause::Ipv6Disabled => "ipv6_disabled",
            Cause::ForwardingDisabled => "forwarding_disabled",
            Cause::NetfilterDrop => "netfilter_drop",
            Cause::RpFilter => "rp_filter",
            Cause::NeighborFailed => "neighbor_failed",
            Cause::Mtu => "mtu",
            Cause::ServiceFamilyMismatch => "service_family_mismatch",
            Cause::NoEndpoints => "no_endpoints",
            Cause::WrongFamily => "wrong_family",
            Cause::DadFailed => "dad_failed",
            Cause::KernelDrop => "kernel_drop",
            Cause::NoAnswer => "no_answer",
        }
    }
}

/// Where the packet died or was last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Where {
    pub node: String,
    pub netns: String,
    pub ifname: String,
    /// Kernel function + offset (drops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// The answer for one family (one element of `verdicts` in `trace --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyReport {
    pub family: Family,
    pub verdict: Verdict,
    pub cause: Option<Cause>,
    pub summary: String,
    pub hint: Option<String>,
    #[serde(rename = "where")]
    pub at: Option<Where>,
    /// Kernel drop reason.
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    /// What was sent (`ICMPv6 echo`, `TCP SYN to port 80`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// What the sender got back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
    /// The request's path, hop by hop.
    pub hops: Vec<Hop>,
    /// The answer's path.
    pub reply_hops: Vec<Hop>,
    /// Facts gathered to explain the verdict (route lookups, sysctls, rules).
    pub evidence: Vec<String>,
    /// When the other family was delivered: this family's path compared with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

/// A failing family's path compared with the family that was delivered between the same
/// endpoints (the dual-stack differential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// The delivered family, the reference.
    pub reference: Family,
    /// The last device both probes were seen on, in the same direction (None: they share
    /// no first step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parted_after: Option<Where>,
    /// The reference's next step after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_next: Option<Where>,
    /// This family's next step after that (None: never seen again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Where>,
    /// What this family lacks where the reference passes, one sentence each.
    pub lacks: Vec<String>,
}

impl FamilyReport {
    pub fn new(family: Family, verdict: Verdict, summary: String) -> Self {
        FamilyReport {
            family,
            verdict,
            cause: None,
            summary,
            hint: None,
            at: None,
            reason: None,
            src: None,
            dst: None,
            probe: None,
            reply: None,
            rtt_us: None,
            hops: Vec::new(),
            reply_hops: Vec::new(),
            evidence: Vec::new(),
            comparison: None,
        }
    }
}

/// The whole answer of one `netpath trace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    /// The JSON layout's version ([`TraceReport::SCHEMA_VERSION`]): raised when a key changes
    /// meaning or goes away, not when one is added.
    pub schema_version: u32,
    pub from: Endpoint,
    pub to: Endpoint,
    pub verdicts: Vec<FamilyReport>,
    /// Events the tracer could not deliver (ring buffer full) during the trace.
    pub lost_events: u64,
    /// Time from start to verdict.
    pub elapsed_ms: u64,
}

impl TraceReport {
    /// The version of the layout this netpath writes and reads.
    pub const SCHEMA_VERSION: u32 = 1;

    /// 0 when every asked family was delivered, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if !self.verdicts.is_empty()
            && self
                .verdicts
                .iter()
                .all(|v| v.verdict == Verdict::Delivered)
        {
            0
        } else {
            1
        }
    }
}
