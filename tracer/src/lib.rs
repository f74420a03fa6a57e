//! netpath's tracer core: turns one node's kernel events into a typed event stream, and the
//! pieces the CLI builds on it (lab, path rebuilding, diagnosis, capture).
pub mod btf;
pub mod capture;
pub mod event;
pub mod lab;
pub mod names;
pub mod netns;
pub mod probes;
pub mod resolve;
pub mod sys;
pub mod trace;
pub mod tracer;
