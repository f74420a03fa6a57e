//! netpath's core: what travels between a node and whoever analyses its packets, and the
//! analysis itself.
//!
//! - [`model`]: events (in sections), endpoints, address families, probes, verdicts and
//!   reports. Plain data, serde both ways: the same values come from the local kernel, from a
//!   node agent over the network, or from a JSON file.
//! - [`world`]: the traits through which analysis asks the world (resolve a name, inspect a
//!   namespace, send a probe, stream events), keyed by node and namespace. The node side
//!   implements them over the local kernel; an agent client implements them remotely.
//! - [`analysis`]: rebuilding a packet's path, the diagnosis, and the `trace` session that
//!   drives them through the traits.
//!
//! Nothing here touches the kernel or knows about the built-in lab.
pub mod analysis;
pub mod model;
pub mod world;
