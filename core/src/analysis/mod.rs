//! Analysis: from events and answers to a verdict. Depends only on the model and the
//! [`crate::world`] traits.
pub mod diagnose;
pub mod differential;
pub mod nexthop;
pub mod path;
pub mod session;

pub use diagnose::{analyze, is_socket_level_drop, unprobed, FamilyTrace};
pub use path::{rebuild, ProbeMatch};
