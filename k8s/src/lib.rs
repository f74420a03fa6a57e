//! netpath and Kubernetes.
//!
//! - [`apiserver`]: a read-only Kubernetes API over a fixed set of objects (the lab's cluster),
//!   so kubectl and the same client a real cluster uses can read the lab.
//! - [`client`]: names from a real API server (kube-rs): pods, Services, EndpointSlices, nodes,
//!   and the agents' DaemonSet pods.

pub mod apiserver;
pub mod client;
