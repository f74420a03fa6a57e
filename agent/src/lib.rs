//! netpath's node agent: the gRPC protocol (`proto/netpath/agent/v1/agent.proto`), the server
//! that exposes one node's world (its event source, prober and inspector) to authenticated
//! clients, and the client that turns a set of node agents into a [`netpath_core::world`] for
//! the trace session. Mutual TLS with a cluster CA ([`certs`]) on both sides.
//!
//! No kernel code here (but entering a namespace to dial from it): the node side plugs its
//! implementations into [`server::NodeServer`].
pub mod capture;
pub mod certs;
pub mod client;
pub mod cri;
pub mod netns;
pub mod server;
pub mod wire;

/// The generated protocol types and gRPC stubs.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("netpath.agent.v1");
}

/// The protocol version this build speaks (the `v1` of the package name).
pub const PROTOCOL_VERSION: u32 = 1;
