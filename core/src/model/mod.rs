//! The data model: plain values that travel (serde both ways), with no behaviour that needs
//! the kernel.
pub mod endpoint;
pub mod event;
pub mod family;
pub mod inspect;
pub mod path;
pub mod probe;
pub mod report;

pub use endpoint::{Endpoint, EndpointKind, Place, StaleService};
pub use event::{
    Direction, DropSection, Event, EventKind, FlowKey, Hook, NeighEvent, PacketIdent,
    PacketSection, Proto, RouteLookup, RouteType, Tunnel, TunnelKind,
};
pub use family::Family;
pub use inspect::{prefix_contains, IfAddr, LinkState, RouteAnswer};
pub use path::{Hop, PacketPath};
pub use probe::{looks_like_a_dns_name, NameAnswer, Probe, ProbeKind, ProbeOutcome, Reply};
pub use report::{Cause, Comparison, FamilyReport, TraceReport, Verdict, Where};
