//! [`EventSource`] over this machine's kernel: a trace's scope becomes a [`TracerSpec`] (every
//! device of every namespace linked to the scope's), and the kernel tracer's stream becomes
//! the model's [`EventStream`].
use std::net::IpAddr;

use async_trait::async_trait;
use netpath_core::world::{EventSource, EventStream, Scope, StreamItem, WorldError};
use tracer_common::{AddrPrefix, FilterConfig, MAX_FILTER_ADDRS};

use super::{
    kernel::{DeviceSelector, KernelStream, NodeTracer, TracerSpec},
    netns,
};

/// How many namespaces a trace may widen to (veth peers of veth peers ...).
const MAX_NAMESPACES: usize = 256;

/// The kernel filter prefix for one address (all of it).
pub fn host_prefix(ip: IpAddr) -> AddrPrefix {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            AddrPrefix::new(4, b, 32)
        }
        IpAddr::V6(a) => AddrPrefix::new(6, a.octets(), 128),
    }
}

/// The in-kernel filter for a scope: packets from or to its addresses (the first
/// [`MAX_FILTER_ADDRS`]).
pub fn filter_for(addrs: &[IpAddr]) -> FilterConfig {
    let mut cfg = FilterConfig::default();
    for (i, a) in addrs.iter().take(MAX_FILTER_ADDRS).enumerate() {
        cfg.addrs[i] = host_prefix(*a);
    }
    cfg.n_addrs = addrs.len().min(MAX_FILTER_ADDRS) as u8;
    cfg
}

/// The tracer spec for a scope: every device of every namespace connected to the scope's
/// (veth peers, tunnels), drops and route lookups as asked.
pub fn spec_for(scope: &Scope) -> TracerSpec {
    let mut start: Vec<String> = scope.places.iter().map(|p| p.netns.clone()).collect();
    start.dedup();
    let mut namespaces = netns::connected(&start, MAX_NAMESPACES);
    namespaces.sort();
    TracerSpec {
        devices: namespaces
            .into_iter()
            .map(|netns| DeviceSelector {
                netns,
                pattern: "*".into(),
            })
            .collect(),
        all_devices: false,
        drops: scope.drops,
        dev_hops: false,
        routes: scope.routes,
        // Neighbour state is read from the namespace when it matters (fewer programs to verify).
        neigh: false,
        filter: FilterConfig {
            non_ip_passes: u8::from(scope.non_ip),
            ..filter_for(&scope.addrs)
        },
        ring_bytes: scope.ring_bytes,
        functions: scope.functions.clone(),
        ..TracerSpec::default()
    }
}

/// Streams events from this machine's kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalEventSource;

#[async_trait]
impl EventSource for LocalEventSource {
    async fn open(&self, scope: &Scope) -> Result<Box<dyn EventStream>, WorldError> {
        let scope = scope.clone();
        // Loading and verifying the programs blocks for a while: not on the async runtime.
        let (tracer, stream) =
            tokio::task::spawn_blocking(move || NodeTracer::start(spec_for(&scope)))
                .await
                .map_err(|e| WorldError::Other(format!("tracer task: {e}")))?
                .map_err(|e| WorldError::Other(e.to_string()))?;
        Ok(Box::new(LocalStream { tracer, stream }))
    }
}

/// The kernel tracer and its stream; dropping it detaches everything.
pub struct LocalStream {
    tracer: NodeTracer,
    stream: KernelStream,
}

impl LocalStream {
    pub fn new(tracer: NodeTracer, stream: KernelStream) -> Self {
        LocalStream { tracer, stream }
    }
}

#[async_trait]
impl EventStream for LocalStream {
    async fn next(&mut self) -> Option<StreamItem> {
        self.stream.next().await
    }

    fn lost(&self) -> u64 {
        self.tracer.lost()
    }

    fn devices(&self) -> usize {
        self.tracer.attached_devices()
    }

    fn unavailable(&self) -> Vec<String> {
        self.tracer.unavailable.clone()
    }

    fn notes(&self) -> Vec<String> {
        self.tracer.functions.iter().map(|f| f.message()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_filter_on_every_address_up_to_the_kernels_limit() {
        let addrs: Vec<IpAddr> = (1..=12u8)
            .map(|i| IpAddr::from([10, 0, 0, i]))
            .chain(["fd00::1".parse().unwrap()])
            .collect();
        let cfg = filter_for(&addrs);
        assert_eq!(cfg.n_addrs as usize, MAX_FILTER_ADDRS);
        assert_eq!((cfg.addrs[0].family, cfg.addrs[0].prefix_len), (4, 32));
        let v6 = host_prefix("fd00::1".parse().unwrap());
        assert_eq!((v6.family, v6.prefix_len), (6, 128));
    }
}
