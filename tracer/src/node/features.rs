//! What the running kernel offers netpath, one small named predicate per feature (pwru's
//! style), each found by trying it or by reading the kernel's BTF, never by version number;
//! `netpath check` prints them, and a [`Report`] says whether netpath can work here.
//!
//! Trying leaves nothing behind: programs and maps are closed at once, and the clsact qdisc
//! is added to the loopback device of a namespace that exists only for the trying thread.
use std::{
    os::fd::{AsFd, OwnedFd},
    time::Instant,
};

use aya::{maps::MapType, programs::ProgramError, Ebpf, EbpfLoader};
use serde::Serialize;

use super::hooks::{Tracepoint, TRACEPOINTS};
use super::{
    btf::{KernelBtf, VMLINUX_BTF},
    decode::errno_name,
    functions::{function_support, CanRun},
    kernel::{kernel_object, load_parallel},
};
use crate::capture::cbpf::{self, CbpfError, EbpfInsn};

/// Whether the kernel has a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    No,
    /// Not tried: something it needs is missing (no BTF, programs cannot be loaded).
    Unknown,
}

/// One feature: can netpath use it here, and if not, why, and what it does instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub name: &'static str,
    pub status: Status,
    /// netpath cannot work without it.
    pub required: bool,
    /// What it gives netpath when present; why not when absent.
    pub detail: String,
    /// What netpath does without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instead: Option<String>,
}

impl Feature {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Feature {
            name,
            status: Status::Ok,
            required: false,
            detail: detail.into(),
            instead: None,
        }
    }

    fn no(name: &'static str, detail: impl Into<String>) -> Self {
        Feature {
            status: Status::No,
            ..Feature::ok(name, detail)
        }
    }

    fn unknown(name: &'static str, detail: impl Into<String>) -> Self {
        Feature {
            status: Status::Unknown,
            ..Feature::ok(name, detail)
        }
    }

    fn required(self) -> Self {
        Feature {
            required: true,
            ..self
        }
    }

    /// What netpath does when this feature is absent (shown only then).
    fn instead(self, instead: impl Into<String>) -> Self {
        let instead = (self.status != Status::Ok).then(|| instead.into());
        Feature { instead, ..self }
    }

    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// Everything `netpath check` found on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The running kernel's release (`uname -r`), for the reader: nothing is decided by it.
    pub kernel: String,
    /// Whether this process runs as root (a user who is not may not load programs).
    pub root: bool,
    pub features: Vec<Feature>,
}

impl Report {
    /// netpath can work here (possibly without some optional features).
    pub fn can_run(&self) -> bool {
        self.blockers().next().is_none()
    }

    /// Required features this kernel (or this user) lacks.
    pub fn blockers(&self) -> impl Iterator<Item = &Feature> {
        self.features.iter().filter(|f| f.required && !f.is_ok())
    }

    /// Optional features netpath goes without here.
    pub fn missing(&self) -> impl Iterator<Item = &Feature> {
        self.features.iter().filter(|f| !f.required && !f.is_ok())
    }

    pub fn get(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// netpath's tc programs: for Ethernet devices, and for devices without a link layer.
const TC_PROGRAMS: [&str; 2] = ["netpath_tc_in", "netpath_tc_eg"];
const TC_PROGRAMS_L3: [&str; 2] = ["netpath_tc_in3", "netpath_tc_eg3"];

/// Smallest ring buffer netpath's object may be loaded with for checking (a page multiple).
const CHECK_RING_BYTES: u32 = 64 * 1024;

/// What to say when a program load was refused for lack of privileges.
const NEEDS_PRIVILEGE: &str = "run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON";

/// Runs every predicate, in the order `netpath check` prints them.
pub fn check() -> Report {
    let mut features = Vec::new();
    let (btf_feature, kbtf) = btf();
    features.push(btf_feature);
    let (bpf_feature, trivial) = bpf();
    let can_load = bpf_feature.is_ok();
    features.push(bpf_feature);
    features.push(ring_buffer());

    // netpath's own object, verified by this kernel: what `trace` and `watch` will load.
    let loaded = match (&kbtf, can_load) {
        (Some(_), true) => Some(load_object()),
        _ => None,
    };
    let not_tried = |name| match (&kbtf, can_load) {
        (None, _) => Feature::unknown(name, "not tried: no kernel BTF"),
        _ => Feature::unknown(name, "not tried: cannot load programs (see bpf)"),
    };
    match &loaded {
        Some(Ok(obj)) => features.extend(obj.tc.clone()),
        Some(Err(e)) => {
            features.push(Feature::no("programs", e.clone()).required());
            features.push(Feature::unknown(
                "tc-l3",
                "not tried: netpath's object did not load",
            ));
        }
        None => {
            features.push(not_tried("programs").required());
            features.push(not_tried("tc-l3"));
        }
    }

    let tcx = match &kbtf {
        Some(k) => tcx(k),
        None => Feature::unknown("tcx", "not tried: no kernel BTF"),
    }
    .instead("clsact qdisc");
    let clsact = clsact(tcx.is_ok());
    features.push(tcx);
    features.push(clsact);

    for tp in TRACEPOINTS {
        let verified = match &loaded {
            Some(Ok(obj)) => obj.tracepoints.iter().find(|(n, _)| *n == tp.name),
            _ => None,
        };
        features.push(match &kbtf {
            Some(k) => tracepoint(k, tp, verified.map(|(_, r)| r)),
            None => Feature::unknown(tp.name, "not tried: no kernel BTF").instead(tp.without),
        });
    }
    match &kbtf {
        Some(k) => {
            features.push(drop_reasons(k));
            features.push(vlan_all(k));
        }
        None => {
            features.push(not_tried("drop-reasons"));
            features.push(not_tried("vlan_all"));
        }
    }
    match loaded {
        Some(Ok(mut obj)) => {
            let [fentry, kprobes] = functions(&mut obj.ebpf, kbtf.as_ref());
            features.push(fentry);
            features.push(kprobes);
        }
        _ => {
            features.push(not_tried("fentry").instead("no function tracing"));
            features.push(not_tried("kprobes").instead("no function tracing"));
        }
    }
    features.push(match trivial {
        Some(fd) => test_run(fd),
        None => not_tried("test-run"),
    });
    Report {
        kernel: kernel_release(),
        root: super::kernel::is_root(),
        features,
    }
}

/// The kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The kernel's BTF is readable and describes the structs netpath's programs read.
pub fn btf() -> (Feature, Option<KernelBtf>) {
    let kbtf = match KernelBtf::load() {
        Ok(k) => k,
        Err(e) => return (Feature::no("btf", e.to_string()).required(), None),
    };
    match kbtf.kernel_offsets() {
        Ok(_) => (
            Feature::ok(
                "btf",
                format!("{VMLINUX_BTF}: sk_buff, net_device and net offsets read at load time"),
            )
            .required(),
            Some(kbtf),
        ),
        Err(e) => (Feature::no("btf", e.to_string()).required(), None),
    }
}

/// `r0 = 0 (TC_ACT_OK); exit`.
fn trivial_tc() -> [EbpfInsn; 2] {
    let insn = |code| EbpfInsn {
        code,
        regs: 0,
        off: 0,
        imm: 0,
    };
    [insn(0xb7), insn(0x95)]
}

/// This process may load BPF programs: a trivial tc program loads (and is kept for
/// [`test_run`]).
pub fn bpf() -> (Feature, Option<OwnedFd>) {
    match cbpf::load_sched_cls(&trivial_tc(), "netpath_check") {
        Ok(fd) => (
            Feature::ok("bpf", "loads BPF programs (a trivial tc program)").required(),
            Some(fd),
        ),
        Err(CbpfError::Load { errno, .. }) => {
            let code = errno.raw_os_error().unwrap_or(0);
            let mut detail = format!("{} (loading a trivial tc program)", errno_text(&errno));
            if matches!(code, libc::EPERM | libc::EACCES) {
                detail = format!("{detail}: {NEEDS_PRIVILEGE}");
            }
            (Feature::no("bpf", detail).required(), None)
        }
        Err(e) => (Feature::no("bpf", e.to_string()).required(), None),
    }
}

/// The kernel has the BPF ring buffer: a small one is created, then closed.
pub fn ring_buffer() -> Feature {
    const NAME: &str = "ringbuf";
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(true) => Feature::ok(NAME, "BPF ring buffer: events to userspace"),
        Ok(false) => Feature::no(NAME, "not in this kernel (BPF_MAP_TYPE_RINGBUF refused)"),
        Err(e) => {
            let errno = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .map(errno_text)
                .unwrap_or_else(|| e.to_string());
            Feature::no(NAME, format!("{errno} (creating a BPF ring buffer)"))
        }
    }
    .required()
}

/// tcx: the kernel's BTF knows the tcx attach types (`BPF_TCX_INGRESS`, `struct tcx_entry`).
pub fn tcx(kbtf: &KernelBtf) -> Feature {
    if kbtf.has_enum_member("bpf_attach_type", "BPF_TCX_INGRESS") && kbtf.has_struct("tcx_entry") {
        Feature::ok("tcx", "attach tc programs without a qdisc")
    } else {
        Feature::no(
            "tcx",
            "not in this kernel (no BPF_TCX_INGRESS / struct tcx_entry in its BTF)",
        )
    }
}

/// clsact: a clsact qdisc can be added, tried on the loopback device of a network namespace
/// that only the trying thread holds (it vanishes with the thread). Required when there is
/// no tcx.
pub fn clsact(tcx: bool) -> Feature {
    const NAME: &str = "clsact";
    let tried = std::thread::spawn(|| -> Result<(), String> {
        // SAFETY: unshare only changes this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "{} (creating a throwaway network namespace)",
                errno_text(&e)
            ));
        }
        aya::programs::tc::qdisc_add_clsact("lo").map_err(|e| format!("adding a clsact qdisc: {e}"))
    })
    .join()
    .unwrap_or_else(|_| Err("the trying thread panicked".into()));
    let feature = match (tried, tcx) {
        (Ok(()), true) => Feature::ok(NAME, "clsact qdisc fallback (unused: tcx is here)"),
        (Ok(()), false) => Feature::ok(NAME, "tc programs attach through a clsact qdisc"),
        (Err(e), _) => Feature::no(NAME, e),
    };
    if tcx {
        feature
    } else {
        feature.required()
    }
}

/// A BTF tracepoint: the kernel has it, with the arguments netpath's program reads, and (when
/// netpath's object could be loaded) that program passed the verifier.
pub fn tracepoint(
    kbtf: &KernelBtf,
    tp: &Tracepoint,
    verified: Option<&Result<(), String>>,
) -> Feature {
    let Some(args) = kbtf.tracepoint_args(tp.name) else {
        return Feature::no(
            tp.name,
            format!("no btf_trace_{} in the kernel's BTF", tp.name),
        )
        .instead(tp.without);
    };
    if let Some(problem) = args_mismatch(&args, tp.args) {
        return Feature::no(tp.name, problem).instead(tp.without);
    }
    match verified {
        Some(Err(e)) => Feature::no(tp.name, e.clone()),
        _ => Feature::ok(tp.name, tp.gives),
    }
    .instead(tp.without)
}

/// Why the tracepoint's arguments are not what the program reads, if they are not.
pub fn args_mismatch(actual: &[String], expected: &[(usize, &str)]) -> Option<String> {
    let plain = |t: &str| t.replace("const ", "");
    for &(i, want) in expected {
        match actual.get(i) {
            None => {
                return Some(format!(
                    "argument {i} ({want}) missing: this kernel passes {}",
                    if actual.is_empty() {
                        "none".into()
                    } else {
                        actual.join(", ")
                    }
                ))
            }
            Some(got) if plain(got) != want => {
                return Some(format!("argument {i} is {got}, netpath reads {want}"))
            }
            Some(_) => {}
        }
    }
    None
}

/// `enum skb_drop_reason`: drop reasons named as this kernel numbers them.
pub fn drop_reasons(kbtf: &KernelBtf) -> Feature {
    let reasons = kbtf.drop_reasons();
    if reasons.is_empty() {
        Feature::no(
            "drop-reasons",
            "no enum skb_drop_reason in the kernel's BTF",
        )
        .instead("drop reasons shown as numbers")
    } else {
        Feature::ok(
            "drop-reasons",
            format!(
                "enum skb_drop_reason: {} values, named as this kernel numbers them",
                reasons.len()
            ),
        )
    }
}

/// `sk_buff.vlan_all`: tracepoints can tell a VLAN-tagged packet by its tag.
pub fn vlan_all(kbtf: &KernelBtf) -> Feature {
    match kbtf.offset_of("sk_buff", "vlan_all") {
        Ok(_) => Feature::ok("vlan_all", "VLAN tags read from sk_buff in tracepoints"),
        Err(_) => Feature::no("vlan_all", "struct sk_buff has no vlan_all")
            .instead("no VLAN tags in tracepoint events"),
    }
}

/// fentry and kprobes, tried as `--functions` tries them ([`function_support`]), on ip_rcv.
fn functions(ebpf: &mut Ebpf, kbtf: Option<&KernelBtf>) -> [Feature; 2] {
    let aya_btf = aya::Btf::from_sys_fs();
    let (Some(kbtf), Ok(aya_btf)) = (kbtf, aya_btf) else {
        return ["fentry", "kprobes"].map(|n| {
            Feature::unknown(n, "not tried: no kernel BTF").instead("no function tracing")
        });
    };
    let support = function_support(ebpf, &aya_btf, kbtf, "ip_rcv");
    function_features(&support.fentry, &support.kprobe)
}

/// The fentry and kprobes lines from what [`function_support`] found.
pub fn function_features(fentry: &CanRun, kprobe: &CanRun) -> [Feature; 2] {
    let other = |c: &CanRun, name: &str| {
        if c.available {
            name.to_string()
        } else {
            "no function tracing".into()
        }
    };
    let fentry_line = if fentry.available {
        Feature::ok(
            "fentry",
            format!("{} (function tracing, --functions)", fentry.reason),
        )
    } else {
        Feature::no(
            "fentry",
            format!(
                "{} (loading a trivial fentry program on ip_rcv)",
                fentry.reason
            ),
        )
    }
    .instead(other(kprobe, "kprobes"));
    let kprobe_line = if kprobe.available {
        Feature::ok(
            "kprobes",
            format!("{} (function tracing, --functions)", kprobe.reason),
        )
    } else if kprobe.reason == "not built in" {
        Feature::no(
            "kprobes",
            "not built in (no kprobe PMU: CONFIG_KPROBES is off)",
        )
    } else {
        Feature::no(
            "kprobes",
            format!("{} (attaching a trivial kprobe to ip_rcv)", kprobe.reason),
        )
    }
    .instead(other(fentry, "fentry"));
    [fentry_line, kprobe_line]
}

/// BPF_PROG_TEST_RUN runs a tc program on a crafted frame (netpath's own tests use it).
fn test_run(prog: OwnedFd) -> Feature {
    const NAME: &str = "test-run";
    // A minimal Ethernet frame of a local experimental EtherType: no network header to check.
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    match cbpf::test_run(prog.as_fd(), &frame) {
        Ok(0) => Feature::ok(
            NAME,
            "BPF_PROG_TEST_RUN runs tc programs on crafted packets",
        ),
        Ok(other) => Feature::no(
            NAME,
            format!("a trivial tc program returned {other}, not 0"),
        ),
        Err(CbpfError::TestRun(e)) => {
            Feature::no(NAME, format!("{} (BPF_PROG_TEST_RUN)", errno_text(&e)))
        }
        Err(e) => Feature::no(NAME, e.to_string()),
    }
}

/// netpath's object loaded into this kernel: its tc programs' verdicts as features, the
/// tracepoint programs' verdicts, and the object for the fentry/kprobes probes.
struct LoadedObject {
    ebpf: Ebpf,
    tc: Vec<Feature>,
    tracepoints: Vec<(&'static str, Result<(), String>)>,
}

/// Loads netpath's eBPF object and verifies each of its programs (nothing is attached).
fn load_object() -> Result<LoadedObject, String> {
    let object = kernel_object();
    if object.is_empty() {
        return Err(
            "this netpath was built without its kernel programs (bpf-linker was missing)".into(),
        );
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", CHECK_RING_BYTES)
        .load(object)
        .map_err(|e| format!("loading netpath's object: {e}"))?;
    let aya_btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let tc_names: Vec<&'static str> = TC_PROGRAMS.iter().chain(&TC_PROGRAMS_L3).copied().collect();
    let tp_names: Vec<&'static str> = TRACEPOINTS.iter().map(|tp| tp.name).collect();
    // As `trace` and `watch` load them: in parallel, one verifier run per thread.
    let start = Instant::now();
    let mut results = load_parallel(&mut ebpf, &tc_names, &tp_names, &aya_btf);
    let took = start.elapsed();
    let mut verdict = |name: &str| -> Result<(), String> {
        match results.iter().position(|(n, _)| *n == name) {
            Some(i) => results
                .swap_remove(i)
                .1
                .map_err(|e| format!("{name} rejected: {}", load_error(&e))),
            None => Err(format!("{name} missing from netpath's object")),
        }
    };
    let both = |a: Result<(), String>, b: Result<(), String>| a.and(b);
    let main = both(verdict(TC_PROGRAMS[0]), verdict(TC_PROGRAMS[1]));
    let l3 = both(verdict(TC_PROGRAMS_L3[0]), verdict(TC_PROGRAMS_L3[1]));
    let tracepoints: Vec<_> = tp_names.iter().map(|&n| (n, verdict(n))).collect();
    let tc = vec![
        match main {
            Ok(()) => Feature::ok(
                "programs",
                format!(
                    "netpath's programs pass the verifier ({} ms, {} in parallel)",
                    took.as_millis(),
                    tc_names.len() + tp_names.len()
                ),
            ),
            Err(e) => Feature::no("programs", e),
        }
        .required(),
        match l3 {
            Ok(()) => Feature::ok("tc-l3", "tc programs for devices without a link layer"),
            Err(e) => Feature::no("tc-l3", e),
        }
        .instead("devices without a link layer (tun, wireguard) not watched"),
    ];
    Ok(LoadedObject {
        ebpf,
        tc,
        tracepoints,
    })
}

/// A program load error in one line: the errno and the verifier's last words.
fn load_error(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let last = verifier_tail(&log, 2);
            if last.is_empty() {
                errno_text(io_error)
            } else {
                format!("{}: {last}", errno_text(io_error))
            }
        }
        other => other.to_string(),
    }
}

/// The verifier's last `n` meaningful lines (its statistics left out), joined by ` / `.
pub fn verifier_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// An errno by its name (`EPERM`), or the error's text.
fn errno_text(e: &std::io::Error) -> String {
    e.raw_os_error()
        .and_then(errno_name)
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(features: Vec<Feature>) -> Report {
        Report {
            kernel: "test".into(),
            root: true,
            features,
        }
    }

    #[test]
    fn netpath_can_run_unless_a_required_feature_is_absent() {
        let ok = report(vec![
            Feature::ok("btf", "x").required(),
            Feature::no("fentry", "EPERM"),
        ]);
        assert!(ok.can_run());
        assert_eq!(ok.missing().map(|f| f.name).collect::<Vec<_>>(), ["fentry"]);
        let no = report(vec![
            Feature::ok("btf", "x").required(),
            Feature::unknown("programs", "not tried").required(),
        ]);
        assert!(!no.can_run());
        assert_eq!(
            no.blockers().map(|f| f.name).collect::<Vec<_>>(),
            ["programs"]
        );
    }

    #[test]
    fn instead_is_said_only_when_absent() {
        assert_eq!(
            Feature::ok("tcx", "x").instead("clsact qdisc").instead,
            None
        );
        assert_eq!(
            Feature::no("tcx", "x")
                .instead("clsact qdisc")
                .instead
                .as_deref(),
            Some("clsact qdisc")
        );
    }

    #[test]
    fn tracepoint_arguments_are_compared_by_position_without_qualifiers() {
        let kfree: Vec<String> = [
            "struct sk_buff *",
            "void *",
            "enum skb_drop_reason",
            "struct sock *",
        ]
        .map(String::from)
        .to_vec();
        let want = TRACEPOINTS[0].args;
        assert_eq!(args_mismatch(&kfree, want), None);
        // Before drop reasons, kfree_skb passed only the skb and the location.
        let old = kfree[..2].to_vec();
        let why = args_mismatch(&old, want).unwrap();
        assert!(
            why.starts_with("argument 2 (enum skb_drop_reason) missing"),
            "{why}"
        );
        let fib: Vec<String> = [
            "u32",
            "const struct flowi4 *",
            "const struct fib_nh_common *",
            "int",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(args_mismatch(&fib, TRACEPOINTS[3].args), None);
        let swapped: Vec<String> = ["struct sk_buff *", "void *", "u32"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            args_mismatch(&swapped, want).unwrap(),
            "argument 2 is u32, netpath reads enum skb_drop_reason"
        );
    }

    #[test]
    fn function_lines_say_the_reason_and_the_other_mechanism() {
        let can = |available, reason: &str| CanRun {
            hook: "x",
            available,
            reason: reason.into(),
        };
        let [f, k] = function_features(&can(false, "EPERM"), &can(false, "not built in"));
        assert_eq!(
            f.detail,
            "EPERM (loading a trivial fentry program on ip_rcv)"
        );
        assert_eq!(f.instead.as_deref(), Some("no function tracing"));
        assert!(k.detail.starts_with("not built in"), "{}", k.detail);
        let [f, k] = function_features(&can(false, "EPERM"), &can(true, "attached to ip_rcv"));
        assert_eq!(f.instead.as_deref(), Some("kprobes"));
        assert!(k.is_ok() && k.instead.is_none());
    }

    #[test]
    fn the_verifier_tail_skips_its_statistics() {
        let log = "0: R1=ctx() R10=fp0\n; if x\n\
                   invalid access to map value, value_size=488 off=48 size=0\n\
                   R3 min value is outside of the allowed memory range\n\
                   processed 1234 insns (limit 1000000) max_states_per_insn 4\n\
                   verification time 5000 usec\nstack depth 64\n";
        assert_eq!(
            verifier_tail(log, 2),
            "invalid access to map value, value_size=488 off=48 size=0 / \
             R3 min value is outside of the allowed memory range"
        );
        assert_eq!(verifier_tail("", 2), "");
    }

    #[test]
    fn the_running_kernel_has_btf_and_the_tracepoints_netpath_reads() {
        let (btf, Some(kbtf)) = btf() else {
            eprintln!("SKIPPED: no usable {VMLINUX_BTF}");
            return;
        };
        assert!(btf.is_ok());
        // kfree_skb has had its drop reason since long before any kernel netpath verifies on.
        let args = kbtf
            .tracepoint_args("kfree_skb")
            .expect("btf_trace_kfree_skb");
        assert_eq!(args[0], "struct sk_buff *");
        assert_eq!(args[2], "enum skb_drop_reason");
        assert!(kbtf.tracepoint_args("netpath_no_such_tracepoint").is_none());
        assert!(drop_reasons(&kbtf).is_ok());
    }
}
