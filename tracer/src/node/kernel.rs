//! One node's tracer: loads the kernel programs, attaches them, and turns the ring buffer into
//! a typed [`KernelStream`]. Everything it attaches is released when it is dropped (tcx and
//! tracepoint links close with their fds; clsact fallbacks are detached explicitly).
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        tc::SchedClassifierLink,
        tc::{self, TcAttachOptions},
        BtfTracePoint, Link, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};
use tracer_common::{Config, FilterConfig};

use netpath_core::world::StreamItem;

use super::{
    btf::{BtfError, DropReasons, KernelBtf},
    cleanup, decode,
    ksyms::Kallsyms,
    names::LiveNamer,
    netns::{self, Netns, NetnsError, NetnsRef},
    sys,
};
use crate::capture::cbpf::{self, CbpfInsn};

/// The kernel programs, built by build.rs (empty when the eBPF toolchain was missing).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// The compiled kernel programs (for tests that load them directly, e.g. BPF_PROG_TEST_RUN).
/// Empty when netpath was built without its kernel programs.
pub fn kernel_object() -> &'static [u8] {
    EBPF_OBJECT
}

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("netpath must run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)")]
    NotRoot,
    #[error("this netpath was built without its kernel programs (bpf-linker was missing); run scripts/setup and rebuild")]
    NoKernelObject,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("loading the kernel programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("kernel program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("kernel map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("no device matches {pattern:?} in network namespace {netns}")]
    NoDevice { netns: String, pattern: String },
    #[error("cannot attach to {netns}/{ifname}: {reason}")]
    Attach {
        netns: String,
        ifname: String,
        reason: String,
    },
    #[error("bad device pattern {0:?}: {1}")]
    Pattern(String, glob::PatternError),
    #[error("ring buffer: {0}")]
    Io(#[from] std::io::Error),
}

/// Which devices to attach tc programs to: a glob over device names in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSelector {
    /// `ip netns` name, or empty/`root` for the tracer's own namespace.
    pub netns: String,
    /// Device name or glob (`eth0`, `cali*`, `*`).
    pub pattern: String,
}

impl DeviceSelector {
    /// `NS/IF` selects in namespace NS; a bare `IF` in `default_netns`.
    pub fn parse(text: &str, default_netns: &str) -> Self {
        match text.split_once('/') {
            Some((ns, pattern)) => DeviceSelector {
                netns: ns.into(),
                pattern: pattern.into(),
            },
            None => DeviceSelector {
                netns: default_netns.into(),
                pattern: text.into(),
            },
        }
    }
}

/// What to trace on one node.
#[derive(Debug, Clone)]
pub struct TracerSpec {
    /// Node name stamped on every event.
    pub node: String,
    /// Devices for tc ingress/egress hooks.
    pub devices: Vec<DeviceSelector>,
    /// Attach to every device in every namespace (and to new ones as they appear).
    pub all_devices: bool,
    /// Attach the kfree_skb tracepoint (drops with their reason).
    pub drops: bool,
    /// Hops from net_dev_queue/netif_receive_skb on every device without attaching to each.
    pub dev_hops: bool,
    /// Route-lookup events from fib:fib_table_lookup and fib6:fib6_table_lookup.
    pub routes: bool,
    /// Neighbour resolution failures from neigh:neigh_update and neigh:neigh_timer_handler.
    pub neigh: bool,
    /// `--functions PATTERN`: function tracing where the kernel allows fentry or kprobes.
    pub functions: Option<String>,
    pub filter: FilterConfig,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Packet bytes per event the kernel copies to the ring (`capture -s`); 0 = SNAP_LEN.
    pub snap_len: u32,
    /// `capture`'s complete filter as libpcap compiled it for Ethernet frames: translated to
    /// eBPF and run by the tc programs on devices with a link-layer header. Empty: none.
    pub capture_filter: Vec<CbpfInsn>,
    /// The capture filter reads no VLAN tag: it may run on tag-offloaded packets as they are.
    pub capture_filter_untagged: bool,
    /// `capture -w`: the tc programs write packets that need no filtering in userspace as
    /// pcapng blocks ([`tracer_common::pcapng_record`]); [`RawRing::pcapng_ifaces`] then
    /// takes the interface ids. Only when the capture filter (if any) runs in the kernel.
    pub pcapng_direct: bool,
    /// Ring-buffer drains (of up to 1,024 decoded events each) waiting for the consumer
    /// before the reader stops reading (the kernel then counts what it cannot queue): bounds
    /// the memory a slow consumer costs.
    pub reader_batches: usize,
}

impl Default for TracerSpec {
    fn default() -> Self {
        TracerSpec {
            node: hostname(),
            devices: Vec::new(),
            all_devices: false,
            drops: true,
            dev_hops: false,
            routes: false,
            neigh: false,
            functions: None,
            filter: FilterConfig::default(),
            ring_bytes: 4 << 20,
            snap_len: 0,
            capture_filter: Vec::new(),
            capture_filter_untagged: false,
            pcapng_direct: false,
            reader_batches: 256,
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

/// A node's typed event stream. Local tracers and (later) remote agents produce the same thing,
/// so path rebuilding and diagnosis never know where events come from.
pub struct KernelStream {
    pub node: String,
    source: Source,
    /// Items of the last batch not handed out yet.
    pending: std::collections::VecDeque<StreamItem>,
}

enum Source {
    Items(mpsc::Receiver<StreamItem>),
    /// The local reader sends what one drain of the ring buffer produced in one message.
    Batches(mpsc::Receiver<Vec<StreamItem>>),
}

impl KernelStream {
    pub fn new(node: String, rx: mpsc::Receiver<StreamItem>) -> Self {
        KernelStream {
            node,
            source: Source::Items(rx),
            pending: Default::default(),
        }
    }

    /// A stream fed with batches of items (one channel message per ring-buffer drain).
    pub fn batched(node: String, rx: mpsc::Receiver<Vec<StreamItem>>) -> Self {
        KernelStream {
            node,
            source: Source::Batches(rx),
            pending: Default::default(),
        }
    }

    pub async fn next(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            match &mut self.source {
                Source::Items(rx) => return rx.recv().await,
                Source::Batches(rx) => self.pending = rx.recv().await?.into(),
            }
        }
    }

    /// No item is waiting right now (a consumer can flush its output).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
            && match &self.source {
                Source::Items(rx) => rx.is_empty(),
                Source::Batches(rx) => rx.is_empty(),
            }
    }
}

/// The tc programs: (ingress, egress) for devices with a link-layer header, then for devices
/// without one (chosen per device at attach time, so the programs need not find out per
/// packet).
const TC_PROGRAMS: [[&str; 2]; 2] = [
    ["netpath_tc_in", "netpath_tc_eg"],
    ["netpath_tc_in3", "netpath_tc_eg3"],
];

/// The kernel's ring buffer of [`tracer_common::RawEvent`] records (and, with
/// [`TracerSpec::pcapng_direct`], [`tracer_common::pcapng_record`]s), its per-CPU loss
/// counters and the running kernel's drop-reason names: what [`NodeTracer::start_raw`] hands
/// over.
pub struct RawRing {
    pub ring: RingBuf<MapData>,
    pub lost: PerCpuArray<MapData, u64>,
    pub reasons: DropReasons,
    /// With [`TracerSpec::pcapng_direct`] in effect: the kernel's map of
    /// [`tracer_common::pcapng_record::iface_key`] to pcapng interface id. A device's packets
    /// come as pcapng records once it has an entry (write its description block first).
    pub pcapng_ifaces: Option<aya::maps::HashMap<MapData, u64, u32>>,
    /// UNIX epoch ns minus kernel monotonic ns, read once at start: the kernel stamps pcapng
    /// records with it; name the other events with it too
    /// ([`LiveNamer::with_boot_offset_ns`]).
    pub boot_offset_ns: u64,
}

impl RawRing {
    /// Records the kernel could not queue so far (all CPUs).
    pub fn lost_total(&self) -> u64 {
        self.lost.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

/// A tc attachment made with the clsact/netlink fallback, undone explicitly on drop.
struct NetlinkAttachment {
    netns: Netns,
    ifname: String,
    /// The clsact qdisc was added by netpath (a qdisc that was there before, e.g. a CNI's, is
    /// never deleted).
    created_qdisc: bool,
    /// The filters attached, taken out of aya's per-program link map: ifindexes repeat
    /// across namespaces, so two devices' links could have the same id there (aya then
    /// refuses the second attach), and aya would detach them from whatever namespace its
    /// program is dropped in. They are detached inside their own namespace instead.
    programs: NetnsLinks,
}

/// tc links made with the clsact fallback, detached only inside their namespace: whatever
/// is left when this is dropped (the namespace went away) is forgotten, never detached from
/// the namespace the dropping thread happens to be in.
struct NetnsLinks(Vec<SchedClassifierLink>);

impl Drop for NetnsLinks {
    fn drop(&mut self) {
        for link in self.0.drain(..) {
            std::mem::forget(link);
        }
    }
}

/// A running tracer. Drop it to detach everything.
pub struct NodeTracer {
    ebpf: Ebpf,
    spec: TracerSpec,
    /// (netns cookie, ifindex) already attached, with the device's tcx links (none when it
    /// went through clsact): the cookie, unlike the inode, is never reused by a later
    /// namespace (pod churn). Closing a link's fd detaches it.
    attached: BTreeMap<(u64, u32), Vec<OwnedFd>>,
    netlink: Vec<NetlinkAttachment>,
    /// The clsact qdiscs this process added, on disk for `netpath cleanup` after a kill.
    qdisc_record: cleanup::QdiscRecord,
    reader: Option<JoinHandle<()>>,
    /// The kernel programs' aya-log records, read for the tracer's lifetime.
    _kernel_log: Option<KernelLog>,
    lost_total: Arc<AtomicU64>,
    /// Hooks that could not run on this kernel, with why.
    pub unavailable: Vec<String>,
    /// What became of `--functions` (one line for the user), when it was asked for.
    pub functions: Option<super::functions::FunctionSupport>,
    /// Where [`TracerSpec::capture_filter`] runs: `None` when there is none, `Ok` in the
    /// kernel, `Err(why not)` in userspace only.
    pub capture_filter_in_kernel: Option<Result<(), String>>,
    /// UNIX epoch ns minus kernel monotonic ns, as the events' timestamps use it.
    pub boot_offset_ns: u64,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl NodeTracer {
    /// Loads and attaches everything the spec asks for. Returns the tracer (keep it alive) and
    /// its event stream.
    pub fn start(spec: TracerSpec) -> Result<(NodeTracer, KernelStream), TracerError> {
        // Reading kallsyms overlaps with the verifier's work in start_raw.
        let kallsyms = std::thread::spawn(Kallsyms::load);
        let (mut tracer, raw) = Self::start_raw(spec)?;
        let (tx, rx) = mpsc::channel(tracer.spec.reader_batches.max(1));
        let namer = match kallsyms.join() {
            Ok(k) => LiveNamer::with_kallsyms(raw.reasons, k),
            Err(_) => LiveNamer::new(raw.reasons),
        }
        .with_boot_offset_ns(raw.boot_offset_ns);
        let reader = spawn_reader(
            raw.ring,
            raw.lost,
            namer,
            tracer.spec.node.clone(),
            tracer.spec.filter.vxlan_port,
            tx,
            tracer.lost_total.clone(),
        )?;
        tracer.reader = Some(reader);
        let node = tracer.spec.node.clone();
        Ok((tracer, KernelStream::batched(node, rx)))
    }

    /// Like [`NodeTracer::start`], but hands over the ring buffer itself for consumers that read
    /// records without decoding them into events (`netpath capture`). [`NodeTracer::lost`]
    /// stays 0: the consumer reads [`RawRing::lost`].
    pub fn start_raw(spec: TracerSpec) -> Result<(NodeTracer, RawRing), TracerError> {
        if !super::caps::may_trace() {
            return Err(TracerError::NotRoot);
        }
        if EBPF_OBJECT.is_empty() {
            return Err(TracerError::NoKernelObject);
        }
        raise_open_files_limit();
        let kbtf = KernelBtf::load()?;
        let offsets = kbtf.kernel_offsets()?;
        let reasons = kbtf.drop_reasons();
        let mut unavailable = Vec::new();
        let route = if spec.routes {
            kbtf.route_offsets().unwrap_or_else(|e| {
                unavailable.push(format!("route events: {e}"));
                Default::default()
            })
        } else {
            Default::default()
        };
        let neigh = if spec.neigh {
            kbtf.neigh_offsets().unwrap_or_else(|e| {
                unavailable.push(format!("neighbour events: {e}"));
                Default::default()
            })
        } else {
            Default::default()
        };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", spec.ring_bytes)
            .override_global("AYA_LOG_LEVEL", &kernel_log_level(), false)
            .load(EBPF_OBJECT)?;
        let kernel_log = start_kernel_log(&mut ebpf);
        let capture_filter_in_kernel = (!spec.capture_filter.is_empty())
            .then(|| cbpf::install_in_kernel(&mut ebpf, &spec.capture_filter));
        // Records in pcapng's byte order as userspace writes it (little-endian).
        let pcapng_direct = spec.pcapng_direct
            && cfg!(target_endian = "little")
            && capture_filter_in_kernel.as_ref().is_none_or(|r| r.is_ok());
        let boot_offset_ns = super::names::boot_offset_ns();
        let config = Config {
            offsets,
            filter: spec.filter,
            reason_not_dropped: reasons.not_dropped_yet.unwrap_or(u32::MAX),
            reason_consumed: reasons.consumed.unwrap_or(u32::MAX),
            wakeup_bytes: wakeup_bytes(spec.ring_bytes, online_cpus()),
            dev_hops: spec.dev_hops as u32,
            routes: (route.valid != 0) as u32,
            snap_len: spec.snap_len,
            route,
            neigh,
            pcap_filter: matches!(capture_filter_in_kernel, Some(Ok(()))) as u32,
            pcapng_direct: pcapng_direct as u32,
            pcap_filter_untagged: spec.capture_filter_untagged as u32,
            boot_offset_ns,
        };
        {
            let map = ebpf.map_mut("CONFIG").expect("CONFIG map in object");
            let mut cfg: Array<&mut MapData, Config> =
                Array::try_from(map).map_err(|e| TracerError::Map("CONFIG", e))?;
            cfg.set(0, config, 0)
                .map_err(|e| TracerError::Map("CONFIG", e))?;
        }
        let aya_btf = aya::Btf::from_sys_fs().map_err(|e| TracerError::Attach {
            netns: "-".into(),
            ifname: "-".into(),
            reason: format!("kernel BTF: {e}"),
        })?;
        let tracepoints = super::hooks::tracepoints(&super::hooks::Wants {
            drops: spec.drops,
            dev_hops: spec.dev_hops,
            routes: route.valid != 0,
            neigh: neigh.valid != 0,
        });
        // The verifier is most of the start-up time: verify the programs in parallel, one
        // thread each. The link-layer-less tc variants are loaded when a device needs them.
        let loaded = load_parallel(&mut ebpf, &TC_PROGRAMS[0], &tracepoints, &aya_btf);
        for (name, result) in loaded {
            match result {
                Ok(()) => {}
                Err(e) if TC_PROGRAMS[0].contains(&name) => {
                    return Err(TracerError::Program { name, source: e });
                }
                Err(e) => unavailable.push(format!("tracepoint {name}: {e}")),
            }
        }
        for name in tracepoints {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            if prog.fd().is_err() {
                continue; // did not load: reported above
            }
            if let Err(e) = prog.attach() {
                unavailable.push(format!("tracepoint {name}: {e}"));
            }
        }
        let functions = spec.functions.as_deref().map(|pattern| {
            let mut support =
                super::functions::function_support(&mut ebpf, &aya_btf, &kbtf, pattern);
            super::functions::attach_functions(&mut ebpf, &kbtf, &mut support);
            support
        });
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").expect("EVENTS map in object"))
            .map_err(|e| TracerError::Map("EVENTS", e))?;
        let lost_map: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(ebpf.take_map("LOST").expect("LOST map in object"))
                .map_err(|e| TracerError::Map("LOST", e))?;

        let pcapng_ifaces = if pcapng_direct {
            let map = ebpf
                .take_map("PCAP_IFACES")
                .expect("PCAP_IFACES map in object");
            Some(
                aya::maps::HashMap::try_from(map)
                    .map_err(|e| TracerError::Map("PCAP_IFACES", e))?,
            )
        } else {
            None
        };
        let mut tracer = NodeTracer {
            ebpf,
            spec: spec.clone(),
            attached: BTreeMap::new(),
            netlink: Vec::new(),
            qdisc_record: cleanup::QdiscRecord::new(),
            reader: None,
            _kernel_log: kernel_log,
            lost_total: Arc::new(AtomicU64::new(0)),
            unavailable,
            functions,
            capture_filter_in_kernel,
            boot_offset_ns,
        };
        tracer.attach_devices(true)?;
        Ok((
            tracer,
            RawRing {
                ring,
                lost: lost_map,
                reasons,
                pcapng_ifaces,
                boot_offset_ns,
            },
        ))
    }

    /// Whether some device's tc programs went through the clsact fallback (no tcx), whose
    /// filters outlive a killed process.
    pub fn uses_clsact(&self) -> bool {
        self.netlink.iter().any(|a| !a.programs.0.is_empty())
    }

    /// Events the kernel could not queue so far.
    pub fn lost(&self) -> u64 {
        self.lost_total.load(Ordering::Relaxed)
    }

    /// The counter behind [`NodeTracer::lost`], to read without holding the tracer.
    pub fn lost_counter(&self) -> Arc<AtomicU64> {
        self.lost_total.clone()
    }

    /// The events' clock now: UNIX epoch ns as the tracer stamps events (kernel monotonic
    /// time plus the offset taken at start, so it does not drift from the events' own).
    pub fn event_clock_ns(&self) -> u64 {
        super::names::clock_ns(libc::CLOCK_MONOTONIC) + self.boot_offset_ns
    }

    /// Replaces the in-kernel filter while the programs run (no reload, no re-attach).
    pub fn set_filter(&mut self, filter: FilterConfig) -> Result<(), TracerError> {
        let map = self.ebpf.map_mut("CONFIG").expect("CONFIG map in object");
        let mut cfg: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(|e| TracerError::Map("CONFIG", e))?;
        let mut config = cfg.get(&0, 0).map_err(|e| TracerError::Map("CONFIG", e))?;
        config.filter = filter;
        cfg.set(0, config, 0)
            .map_err(|e| TracerError::Map("CONFIG", e))?;
        self.spec.filter = filter;
        Ok(())
    }

    /// Also attaches, from the next [`NodeTracer::attach_devices`], to every device of these
    /// namespaces (names as `ip netns` knows them; one that does not exist yet is skipped
    /// until it does).
    pub fn add_namespaces(&mut self, names: impl IntoIterator<Item = String>) {
        for netns in names {
            if !self.spec.devices.iter().any(|d| d.netns == netns) {
                self.spec.devices.push(DeviceSelector {
                    netns,
                    pattern: "*".into(),
                });
            }
        }
    }

    /// Also attaches, from the next [`NodeTracer::attach_devices`], to these devices (a
    /// selector that matches nothing yet is looked at again on each pass).
    pub fn add_devices(&mut self, selectors: impl IntoIterator<Item = DeviceSelector>) {
        for sel in selectors {
            if !self.spec.devices.contains(&sel) {
                self.spec.devices.push(sel);
            }
        }
    }

    /// Number of (namespace, device) pairs with tc programs attached.
    pub fn attached_devices(&self) -> usize {
        self.attached.len()
    }

    /// Attaches to devices matching the spec that are not attached yet (new pod veths). With
    /// `strict`, a selector that matches nothing is an error (the user named a device).
    pub fn attach_devices(&mut self, strict: bool) -> Result<usize, TracerError> {
        let mut targets: Vec<(Netns, Vec<glob::Pattern>, String)> = Vec::new();
        if self.spec.all_devices {
            for ns in netns::all() {
                targets.push((ns, vec![glob::Pattern::new("*").expect("glob")], "*".into()));
            }
        } else {
            let mut by_ns: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for sel in &self.spec.devices {
                by_ns
                    .entry(sel.netns.clone())
                    .or_default()
                    .push(sel.pattern.clone());
            }
            for (ns_name, patterns) in by_ns {
                let ns = match netns::by_name(&ns_name) {
                    Ok(ns) => ns,
                    // Not there (yet, or any more): looked for again on the next pass.
                    Err(e) if !strict => {
                        tracing::debug!("namespace {ns_name}: {e}");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let globs = patterns
                    .iter()
                    .map(|p| glob::Pattern::new(p).map_err(|e| TracerError::Pattern(p.clone(), e)))
                    .collect::<Result<Vec<_>, _>>()?;
                targets.push((ns, globs, patterns.join(",")));
            }
        }
        // First what is new in every namespace, then the attaching: how many devices there
        // are decides how (see [`ExpeditedRcu`]).
        // (namespace, its cookie, its devices not attached yet as (ifindex, name))
        let mut todo: Vec<(Netns, u64, Vec<Device>)> = Vec::new();
        // Namespaces seen in this pass, by cookie; `None` once one could not be looked at.
        let mut live: Option<BTreeSet<u64>> = Some(BTreeSet::new());
        for (ns, globs, pattern_text) in targets {
            let Ok((Ok(cookie), devices)) =
                netns::run_in(&ns, || (netns::cookie_here(), netns::devices_here()))
            else {
                live = None;
                continue;
            };
            if let Some(live) = live.as_mut() {
                live.insert(cookie);
            }
            let matching: Vec<(u32, String)> = devices
                .into_iter()
                .filter(|(_, name)| name != "lo" || globs.iter().any(|g| g.as_str() == "lo"))
                .filter(|(_, name)| globs.iter().any(|g| g.matches(name)))
                .collect();
            if matching.is_empty() && strict && !self.spec.all_devices {
                return Err(TracerError::NoDevice {
                    netns: ns.name.clone(),
                    pattern: pattern_text,
                });
            }
            let new: Vec<Device> = matching
                .into_iter()
                .filter(|(ifindex, _)| !self.attached.contains_key(&(cookie, *ifindex)))
                .collect();
            if !new.is_empty() {
                todo.push((ns, cookie, new));
            }
        }
        let count: usize = todo.iter().map(|(_, _, devices)| devices.len()).sum();
        let _expedited = (count >= EXPEDITE_FROM_DEVICES).then(ExpeditedRcu::start);
        let mut added = 0;
        for (ns, cookie, devices) in todo {
            let outcomes = match self.attach_in(&ns, devices) {
                Ok(outcomes) => outcomes,
                // A namespace that went away since it was listed.
                Err(e) if !strict => {
                    tracing::debug!("skipping namespace {}: {e}", ns.name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (ifindex, ifname, result) in outcomes {
                match result {
                    Ok(Some(links)) => {
                        self.attached.insert((cookie, ifindex), links);
                        added += 1;
                    }
                    Ok(None) => tracing::debug!("{}/{ifname} went away", ns.name),
                    // A device that vanished between listing and attaching is not an error.
                    Err(e) if !strict => tracing::debug!("skipping {}/{ifname}: {e}", ns.name),
                    Err(e) => return Err(e),
                }
            }
        }
        // Devices of namespaces that are gone are forgotten (their programs went with them).
        if let Some(live) = live {
            self.attached.retain(|(cookie, _), _| live.contains(cookie));
        }
        Ok(added)
    }

    /// Attaches the tc programs to `devices` of one namespace, entered once for all of them:
    /// tcx links where the kernel has tcx, else clsact filters. Each device's outcome, with
    /// its tcx links.
    fn attach_in(
        &mut self,
        ns: &Netns,
        devices: Vec<Device>,
    ) -> Result<Vec<DeviceOutcome>, TracerError> {
        let ebpf = &mut self.ebpf;
        let qdisc_record = &mut self.qdisc_record;
        let netlink = &mut self.netlink;
        let outcomes = netns::run_in(ns, || {
            // For the clsact fallback, made on its first use: one netlink socket and one
            // look at which programs live processes hold, for the whole namespace.
            let mut clsact = ClsactContext::default();
            devices
                .into_iter()
                .map(|(ifindex, ifname)| {
                    // What was attached through netlink, recorded even when a later step
                    // fails so that drop undoes it.
                    let mut fallback = NetlinkAttachment {
                        netns: ns.clone(),
                        ifname: ifname.clone(),
                        created_qdisc: false,
                        programs: NetnsLinks(Vec::new()),
                    };
                    let result = attach_here(
                        ebpf,
                        ifindex,
                        &ifname,
                        &mut fallback,
                        &mut clsact,
                        qdisc_record,
                    );
                    if fallback.created_qdisc || !fallback.programs.0.is_empty() {
                        netlink.push(fallback);
                    }
                    let result = match result {
                        Ok(links) => Ok(Some(links)),
                        // Gone since it was listed (pod churn): nothing to attach to.
                        Err(_) if netns::link_type_here(&ifname).is_none() => Ok(None),
                        Err(reason) => Err(TracerError::Attach {
                            netns: ns.name.clone(),
                            ifname: ifname.clone(),
                            reason,
                        }),
                    };
                    (ifindex, ifname, result)
                })
                .collect::<Vec<_>>()
        })?;
        Ok(outcomes)
    }
}

/// A device of a namespace: (ifindex, name).
type Device = (u32, String);

/// A device's (ifindex, name) and how attaching to it went: its tcx links (none with
/// clsact), or `None` when the device went away in the meantime.
type DeviceOutcome = (u32, String, Result<Option<Vec<OwnedFd>>, TracerError>);

/// What the clsact fallback needs once per namespace rather than per device.
#[derive(Default)]
struct ClsactContext {
    /// This namespace's rtnetlink socket.
    netlink: Option<sys::Netlink>,
    /// Programs some live process holds (filters of others are stale).
    live_programs: Option<HashSet<u32>>,
}

/// Attaches the tc programs to one device of the namespace this thread is in (see
/// [`NodeTracer::attach_in`]); its tcx links, or none when clsact filters were used.
fn attach_here(
    ebpf: &mut Ebpf,
    ifindex: u32,
    ifname: &str,
    fallback: &mut NetlinkAttachment,
    clsact: &mut ClsactContext,
    qdisc_record: &mut cleanup::QdiscRecord,
) -> Result<Vec<OwnedFd>, String> {
    let l3 = netns::link_type_here(ifname).is_some_and(netns::link_type_has_no_l2);
    let programs = TC_PROGRAMS[l3 as usize];
    let mut links = Vec::new();
    for (name, ty) in programs
        .into_iter()
        .zip([TcAttachType::Ingress, TcAttachType::Egress])
    {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| format!("program {name} missing"))?;
        if prog.fd().is_err() {
            // The link-layer-less variants are verified on first use.
            prog.load().map_err(|e| format!("loading {name}: {e}"))?;
        }
        // tcx: ordered, never replaces a CNI's programs; we return "next".
        // NETPATH_TC_ATTACH=clsact skips it, to test the fallback on newer kernels.
        let tcx = if force_clsact() {
            Err("skipped (NETPATH_TC_ATTACH=clsact)".to_string())
        } else {
            let fd = prog.fd().map_err(|e| e.to_string())?;
            match tcx_link_first(fd.as_fd(), ifindex, ty == TcAttachType::Ingress) {
                // Out of file descriptors: clsact would not help (its netlink socket is one).
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    return Err(format!(
                        "tcx: {e}: every device takes two file descriptors; raise the \
                         open-file limit (ulimit -n)"
                    ));
                }
                other => other.map_err(|e| format!("tcx: {e}")),
            }
        };
        match tcx {
            Ok(link) => links.push(link),
            Err(e) => {
                // Kernels before 6.6: clsact qdisc + netlink filter. Adding the qdisc fails
                // when one is there already (EEXIST): then it is not ours. It is recorded
                // before it exists, so a netpath killed right after still has it removed
                // by `netpath cleanup`.
                tracing::debug!("{ifname}: no tcx ({e}), attaching {name} with clsact");
                if !fallback.created_qdisc && fallback.programs.0.is_empty() {
                    clsact_prepare(ifname, fallback, clsact, qdisc_record);
                }
                let id = prog
                    .attach_with_options(ifname, ty, TcAttachOptions::Netlink(Default::default()))
                    .map_err(|e| e.to_string())?;
                let link = prog.take_link(id).map_err(|e| e.to_string())?;
                fallback.programs.0.push(link);
            }
        }
    }
    Ok(links)
}

/// bpf(2) command and attach types for a tcx link (uapi/linux/bpf.h).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
/// Before every other program on the hook (relative to none: the first).
const BPF_F_BEFORE: u32 = 1 << 3;

/// A tcx link of `prog` first on device `ifindex` of this thread's namespace (what aya's
/// `TcxOrder(LinkOrder::first())` makes). Closing the fd detaches it. Made here rather than
/// through aya so that the links are held per device and let go of when their namespace goes.
fn tcx_link_first(prog: BorrowedFd<'_>, ifindex: u32, ingress: bool) -> std::io::Result<OwnedFd> {
    let attach_type = if ingress {
        BPF_TCX_INGRESS
    } else {
        BPF_TCX_EGRESS
    };
    // union bpf_attr's link_create: prog_fd, target_ifindex, attach_type, flags, then tcx's
    // relative_fd/id (0) and expected_revision (0); the rest zero.
    let mut attr = [0u64; 16];
    attr[0] = prog.as_raw_fd() as u32 as u64 | u64::from(ifindex) << 32;
    attr[1] = u64::from(attach_type) | u64::from(BPF_F_BEFORE) << 32;
    // SAFETY: `attr` is a zero-padded union bpf_attr of 128 bytes, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Raises this process's open-file limit as far as it may go: every tcx link is a file
/// descriptor, two per device (10,000 devices are more than the usual limits of 1,024 to
/// 20,000). The hard limit is raised too where the process may (CAP_SYS_RESOURCE), up to the
/// kernel's `fs.nr_open`.
fn raise_open_files_limit() {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(1 << 20);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: nr_open.max(lim.rlim_max),
            rlim_max: nr_open.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
    }
}

/// From this many devices in one pass, attaching (and detaching) runs with expedited RCU
/// grace periods.
const EXPEDITE_FROM_DEVICES: usize = 8;

/// `/sys/kernel/rcu_expedited` set to 1 while it lives, when it was 0.
///
/// Each tcx attach and detach waits for an RCU grace period while holding the RTNL lock
/// (`tcx_entry_sync`), so they run one after another at a grace period each, about 12 ms on
/// the project's VMs: 24 ms per device. Expedited grace periods take microseconds. The
/// setting is the kernel's own (it runs expedited while booting); it is put back as soon as
/// the burst is over, and left alone when it was on already (another user owns it).
struct ExpeditedRcu {
    set: bool,
}

const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

impl ExpeditedRcu {
    fn start() -> Self {
        let off = std::fs::read_to_string(RCU_EXPEDITED).is_ok_and(|v| v.trim() == "0");
        let set = off && std::fs::write(RCU_EXPEDITED, "1").is_ok();
        ExpeditedRcu { set }
    }
}

impl Drop for ExpeditedRcu {
    fn drop(&mut self) {
        if self.set {
            if let Err(e) = std::fs::write(RCU_EXPEDITED, "0") {
                tracing::warn!("could not put {RCU_EXPEDITED} back to 0: {e}");
            }
        }
    }
}

impl Drop for NodeTracer {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        // Detaching a tcx link waits for a grace period too (see ExpeditedRcu).
        let _expedited = (self.attached.len() >= EXPEDITE_FROM_DEVICES).then(ExpeditedRcu::start);
        self.attached.clear();
        for att in self.netlink.drain(..) {
            let mut links = att.programs;
            let _ = netns::run_in(&att.netns, move || {
                for link in links.0.drain(..) {
                    let _ = link.detach();
                }
            });
            if att.created_qdisc {
                // By the namespace's own path: a NetnsRef::Current here would be the
                // process's namespace, not the device's.
                let _ = sys::Netlink::route(&NetnsRef::Path(att.netns.path.clone())).and_then(
                    |mut nl| match sys::link_by_name(&mut nl, &att.ifname)? {
                        Some(link) => sys::tc::delete_clsact(&mut nl, link.index),
                        None => Ok(()),
                    },
                );
            }
        }
        // tcx and tracepoint links are fd-based: dropping `ebpf` detaches them.
    }
}

/// Before netpath's first clsact filter on a device: removes what a killed netpath left there
/// (its filters), then adds the clsact qdisc unless the device has one, recording it first.
fn clsact_prepare(
    ifname: &str,
    att: &mut NetlinkAttachment,
    ctx: &mut ClsactContext,
    record: &mut cleanup::QdiscRecord,
) {
    if ctx.netlink.is_none() {
        // By the namespace's own path (this runs on a thread inside it, but
        // NetnsRef::Current would name the process's namespace).
        ctx.netlink = sys::Netlink::route(&NetnsRef::Path(att.netns.path.clone())).ok();
    }
    let Some(nl) = ctx.netlink.as_mut() else {
        return;
    };
    let Ok(Some(link)) = sys::link_by_name(nl, ifname) else {
        return;
    };
    let live = ctx.live_programs.get_or_insert_with(cleanup::live_prog_ids);
    match cleanup::remove_stale_on(nl, link.index, live) {
        Ok(0) => {}
        Ok(n) => tracing::info!("{ifname}: removed {n} filter(s) a killed netpath left"),
        Err(e) => tracing::debug!("{ifname}: looking for stale filters: {e}"),
    }
    if sys::tc::has_clsact(nl, link.index).unwrap_or(true) {
        return;
    }
    record.add(att.netns.inode, link.index, ifname);
    if tc::qdisc_add_clsact(ifname).is_ok() {
        att.created_qdisc = true;
    }
}

/// Whether tc programs go straight to the clsact fallback (`NETPATH_TC_ATTACH=clsact`), which
/// kernels before 6.6 always take: for testing it where tcx works.
fn force_clsact() -> bool {
    std::env::var("NETPATH_TC_ATTACH").is_ok_and(|v| v == "clsact")
}

/// The kernel programs' aya-log output. Kept until the tracer is dropped: dropping the logger
/// closes its map, and programs loaded later (the `_l3` tc variants) then fail to load.
enum KernelLog {
    /// Read into this process's log by a task that owns the logger.
    Read(JoinHandle<()>),
    /// No async runtime to read it in: kept open, unread.
    Kept {
        _logger: Box<dyn std::any::Any + Send>,
    },
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        if let KernelLog::Read(task) = self {
            task.abort();
        }
    }
}

/// aya-log's level in the kernel programs (`AYA_LOG_LEVEL`): their debug diagnostics (rare
/// paths only: a packet a hook could not copy, a full map) when this process logs at debug
/// level (`NETPATH_LOG=debug`); otherwise they skip every log statement.
fn kernel_log_level() -> u8 {
    const DEBUG: u8 = 4; // aya_log_common::Level::Debug
    if tracing::enabled!(tracing::Level::DEBUG) {
        DEBUG
    } else {
        0
    }
}

/// Starts reading the kernel programs' log records into this process's log.
fn start_kernel_log(ebpf: &mut Ebpf) -> Option<KernelLog> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            tracing::debug!("no kernel log: {e}");
            return None;
        }
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Some(KernelLog::Kept {
            _logger: Box::new(logger),
        });
    };
    let _guard = runtime.enter();
    // SAFETY: the logger owns its ring buffer's fd and lives inside the AsyncFd until the
    // task ends.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            let (logger, e) = e.into_parts();
            tracing::debug!("kernel log not read: {e}");
            return Some(KernelLog::Kept {
                _logger: Box::new(logger),
            });
        }
    };
    Some(KernelLog::Read(runtime.spawn(async move {
        while let Ok(mut ready) = fd.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    })))
}

/// Bytes each CPU queues before it wakes the reader: every CPU may hold its count just under
/// the threshold, so together they fill at most a quarter of the ring before a wake-up (the
/// reader's timer takes the rest). Fewer wake-ups cost the reader less; on a 2-CPU machine
/// this is an eighth of the ring.
fn wakeup_bytes(ring_bytes: u32, cpus: u32) -> u32 {
    (ring_bytes / (4 * cpus.max(1))).max(4096)
}

/// CPUs online now, each with its own wake-up count. (Not the possible CPUs: VMs often
/// declare many more than they run, which would make the threshold needlessly small.)
fn online_cpus() -> u32 {
    aya::util::online_cpus().map_or(1, |c| c.len() as u32)
}

/// Loads (verifies) the named tc and BTF tracepoint programs, each on its own thread.
pub(super) fn load_parallel(
    ebpf: &mut Ebpf,
    tc: &[&'static str],
    tracepoints: &[&'static str],
    btf: &aya::Btf,
) -> Vec<(&'static str, Result<(), aya::programs::ProgramError>)> {
    let wanted: Vec<&'static str> = tc.iter().chain(tracepoints).copied().collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ebpf
            .programs_mut()
            .filter_map(|(name, prog)| {
                let name = *wanted.iter().find(|w| **w == name)?;
                Some(scope.spawn(move || {
                    let started = std::time::Instant::now();
                    let result = match prog {
                        aya::programs::Program::SchedClassifier(p) => p.load(),
                        aya::programs::Program::BtfTracePoint(p) => p.load(name, btf),
                        _ => Ok(()),
                    };
                    // What the verifier did, for kernels where start-up is slow.
                    if result.is_ok() {
                        let insns = prog
                            .info()
                            .ok()
                            .and_then(|i| i.verified_instruction_count());
                        tracing::debug!(
                            "{name}: verified in {} ms, {} instructions processed",
                            started.elapsed().as_millis(),
                            insns.map_or("?".into(), |n| n.to_string())
                        );
                    }
                    (name, result)
                }))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, TracerError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(TracerError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(|source| TracerError::Program { name, source })
}

/// Most items in one channel message.
const BATCH: usize = 1024;

/// Drains the ring buffer on wake-ups and on a short timer (the kernel batches wake-ups), and
/// hands the decoded events over in batches (one channel message per up to [`BATCH`]).
fn spawn_reader(
    ring: RingBuf<MapData>,
    lost_map: PerCpuArray<MapData, u64>,
    mut namer: LiveNamer,
    node: String,
    vxlan_port: u16,
    tx: mpsc::Sender<Vec<StreamItem>>,
    lost_total: Arc<AtomicU64>,
) -> Result<JoinHandle<()>, TracerError> {
    // SAFETY: the RingBuf owns its fd and lives inside the AsyncFd until the reader ends.
    let mut fd =
        unsafe { AsyncFd::register(ring) }.map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut reported_lost = 0u64;
        loop {
            tokio::select! {
                guard = fd.readable_mut() => {
                    if let Ok(mut guard) = guard { guard.clear_ready(); }
                }
                _ = tick.tick() => {}
            }
            loop {
                // Room for a full batch at once: growing it step by step reallocates large
                // blocks, each making the allocator sort its free lists (7 % of the decoding
                // rate). Queued batches are bounded by the channel either way.
                let mut batch = Vec::with_capacity(BATCH);
                {
                    let ring = fd.get_mut();
                    while batch.len() < BATCH {
                        let Some(item) = ring.next() else { break };
                        if let Ok(raw) = decode::raw_from_bytes(&item) {
                            let ev = decode::decode(&raw, &node, vxlan_port, &mut namer);
                            batch.push(StreamItem::Event(Box::new(ev)));
                        }
                    }
                }
                let full = batch.len() == BATCH;
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    return;
                }
                if !full {
                    break;
                }
            }
            let lost: u64 = lost_map.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0);
            if lost > reported_lost {
                lost_total.store(lost, Ordering::Relaxed);
                let count = lost - reported_lost;
                reported_lost = lost;
                let item = StreamItem::Lost {
                    node: node.clone(),
                    count,
                };
                if tx.send(vec![item]).await.is_err() {
                    return;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_together_wake_the_reader_before_a_quarter_of_the_ring() {
        assert_eq!(wakeup_bytes(4 << 20, 2), 512 << 10);
        assert_eq!(wakeup_bytes(4 << 20, 64), 16 << 10);
        assert_eq!(wakeup_bytes(64 << 10, 64), 4096, "never below a page");
        assert_eq!(wakeup_bytes(4 << 20, 0), 1 << 20);
    }

    #[test]
    fn device_selectors_take_an_optional_namespace() {
        assert_eq!(
            DeviceSelector::parse("node-1/cali*", ""),
            DeviceSelector {
                netns: "node-1".into(),
                pattern: "cali*".into()
            }
        );
        assert_eq!(
            DeviceSelector::parse("eth0", "pod-a"),
            DeviceSelector {
                netns: "pod-a".into(),
                pattern: "eth0".into()
            }
        );
    }
}
