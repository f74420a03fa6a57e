//! A read-only Kubernetes API over a fixed set of objects (the lab serves its cluster with it).
//!
//! Objects are k8s-openapi types, stored as their JSON, so what clients read is exactly what a
//! real API server would send. Served over HTTPS (a fresh CA per server, [`Credentials`]) with
//! a bearer token:
//!
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/apps/v1`,
//!   `/apis/discovery.k8s.io/v1` (plain v1 documents: clients asking for aggregated discovery
//!   read the `application/json` answer as the legacy form);
//! - Namespaces, Nodes, Pods, Services, EndpointSlices, DaemonSets: list (cluster-wide and per
//!   namespace, label and field selectors), get, watch (ADDED events for the current objects,
//!   then open until `timeoutSeconds`), and server-side Tables for `kubectl get`;
//! - every write is `405 MethodNotAllowed`, anything else `404 NotFound`, a missing or wrong
//!   token `401 Unauthorized`, all as `Status` objects.
//!
//! [`route`] decides every answer without I/O; [`server`] only moves bytes.
pub mod credentials;
pub mod objects;
pub mod route;
pub mod selector;
pub mod server;
pub mod table;

pub use credentials::{kubeconfig, Credentials};
pub use objects::{ObjectSet, Resource};
pub use server::{fetch, ApiServer};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An object set that cannot be served (a bug of whoever built it).
    #[error("{0}")]
    Invalid(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
