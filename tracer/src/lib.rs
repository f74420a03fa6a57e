//! netpath's node side: everything that touches the local kernel, and the built-in lab.
//!
//! - [`node`]: the eBPF loader and ring reader, decoding kernel records into
//!   [`netpath_core::model::Event`]s, names, namespaces, and the local implementations of the
//!   [`netpath_core::world`] traits (resolver, inspector, prober, event source).
//! - [`capture`]: `netpath capture` (tcpdump-like capture to pcapng).
//! - [`lab`]: the built-in lab (dual-stack clusters in network namespaces).
//!
//! Analysis (path, diagnosis, the trace session) lives in `netpath-core` and sees this crate
//! only through those traits.
pub mod capture;
pub mod lab;
pub mod node;

pub use netpath_core as core;
