//! The node side: this machine's kernel, namespaces and sockets.
//!
//! - [`kernel`]: loads the eBPF programs, attaches them, reads the ring buffer ([`NodeTracer`]).
//! - [`decode`]: kernel records -> model events (pure, tested on bytes); [`names`] and [`btf`]
//!   give the numbers their names (namespaces, devices, drop reasons, symbols).
//! - [`netns`]: network namespaces, entered by name or by `/proc/PID/ns/net`.
//! - [`functions`]: whether fentry/kprobes can run here.
//! - [`features`]: what this kernel offers netpath, each tried or read from BTF (`netpath check`).
//! - The [`netpath_core::world`] traits over the local kernel: [`resolve::LocalResolver`],
//!   [`inspect::LiveInspector`], [`prober::LocalProber`], [`source::LocalEventSource`] (one
//!   tracer per trace) and [`resident::ResidentSource`] (one tracer for the agent's life).
pub mod btf;
pub mod caps;
pub mod cleanup;
pub mod decode;
pub mod dns;
pub mod features;
pub mod functions;
pub mod hooks;
pub mod inspect;
pub mod kernel;
pub mod ksyms;
pub mod names;
pub mod netns;
pub mod podns;
pub mod prober;
pub mod resident;
pub mod resolve;
pub mod source;
pub mod sys;

pub use kernel::{NodeTracer, TracerSpec};
