//! The test runner of every integration test binary (`harness = false`, libtest-mimic): each
//! test names what it needs ([`Requires`]); one that cannot run here is reported by the runner
//! as `ignored (REASON)` and counted in the summary line, never passed silently.
//!
//! ```text
//! test ctrl_c_detaches_everything ... ignored (needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN))
//! test result: ok. 1 passed; 0 failed; 4 ignored; 0 measured; 0 filtered out; finished in 0.01s
//! ```
//!
//! `cargo test --quiet` prints one `i` per ignored test, so the harness prints the reasons
//! first, one line each (`ignored NAME: REASON`). Names and filters are libtest's:
//! `cargo test --test trace seed_000` runs what it ran before.
//!
//! Under CI (`CI` set, as `.ci/run` is run) a requirement that CI's set-up provides (root, a
//! tool `scripts/setup` installs) and that is missing fails the test instead: a CI machine
//! that lost one would otherwise turn green by running nothing. Kernel features are facts of
//! the kernel, not of the set-up: a test for a kernel without (or with) a feature is skipped
//! on other kernels everywhere, CI included (the same tests run on guests of other kernels).
use std::{path::Path, process::ExitCode, sync::OnceLock};

use libtest_mimic::{Arguments, Completion, Failed, FormatSetting, Trial};

/// Something a test needs from the machine it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requires {
    /// Root: loads eBPF programs, creates network namespaces and devices.
    Root,
    /// A program in PATH (tshark, tcpdump, socat: peers to compare with, from scripts/setup).
    Tool(&'static str),
    /// A kernel that has this feature.
    Kernel(Feature),
    /// A kernel that lacks this feature (the test checks what netpath says about its absence).
    KernelWithout(Feature),
    /// Guest kernels of two different releases to boot under qemu (scripts/setup puts
    /// Debian's 6.1 and 6.12 in target/vm-kernels; see [`crate::guest_kernels`]).
    GuestKernels,
}

/// An optional kernel feature, found by trying it (never assumed from the kernel version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// fentry programs (BPF trampolines): loading a trivial one on `ip_rcv`.
    Fentry,
    /// kprobes: the kernel's kprobe PMU exists (CONFIG_KPROBES).
    Kprobes,
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Feature::Fentry => "fentry",
            Feature::Kprobes => "kprobes",
        })
    }
}

impl Requires {
    /// Why this requirement is not met here, or `None` when it is.
    pub fn unmet(&self) -> Option<String> {
        match *self {
            Requires::Root => {
                // SAFETY: geteuid has no preconditions.
                (unsafe { libc::geteuid() } != 0)
                    .then(|| "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)".to_string())
            }
            Requires::Tool(name) => (!in_path(name))
                .then(|| format!("needs {name}, not found in PATH (scripts/setup installs it)")),
            Requires::Kernel(feature) => feature
                .probe()
                .err()
                .map(|why| format!("needs a kernel with {feature}; this one refuses it: {why}")),
            Requires::KernelWithout(feature) => feature.probe().ok().map(|how| {
                format!("checks a kernel without {feature}; this one allows it ({how})")
            }),
            Requires::GuestKernels => (crate::guest_kernels().len() < 2).then(|| {
                format!(
                    "needs two guest kernels in {} (scripts/setup fetches them)",
                    crate::vm_kernels_dir().display()
                )
            }),
        }
    }

    /// Whether CI's set-up provides this: missing under CI is then a failure, not a skip.
    fn provided_by_ci(&self) -> bool {
        match self {
            // .ci/run runs as root, after scripts/setup installed every tool the tests use
            // and the guest kernels.
            Requires::Root | Requires::Tool(_) | Requires::GuestKernels => true,
            // The kernel is whatever the machine boots; see the module doc.
            Requires::Kernel(_) | Requires::KernelWithout(_) => false,
        }
    }
}

impl Feature {
    /// `Ok(what worked)` when the running kernel has the feature, `Err(why not)` otherwise.
    /// Probed once per test binary.
    pub fn probe(self) -> Result<String, String> {
        static FENTRY: OnceLock<Result<String, String>> = OnceLock::new();
        match self {
            Feature::Fentry => FENTRY.get_or_init(probe_fentry).clone(),
            Feature::Kprobes => {
                const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
                if Path::new(KPROBE_PMU).exists() {
                    Ok(format!("{KPROBE_PMU} exists"))
                } else {
                    Err("not built in (no kprobe PMU)".into())
                }
            }
        }
    }
}

/// Loads `r0 = 0; exit` as an fentry program on `ip_rcv` (and closes it at once): what the
/// kernel says is whether this machine allows fentry. Independent of netpath's own probe,
/// whose message a test checks.
fn probe_fentry() -> Result<String, String> {
    const TARGET: &str = "ip_rcv";
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    /// The head of `union bpf_attr` for BPF_PROG_LOAD, up to `attach_btf_id` (linux/bpf.h);
    /// the kernel takes a shorter attr as zero-filled.
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
        prog_btf_fd: u32,
        func_info_rec_size: u32,
        func_info: u64,
        func_info_cnt: u32,
        line_info_rec_size: u32,
        line_info: u64,
        line_info_cnt: u32,
        attach_btf_id: u32,
        attach_prog_fd: u32,
    }

    let btf = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("no kernel BTF: {e}"))?;
    let attach_btf_id = btf
        .resolve_ids_by_name(TARGET)
        .unwrap_or_default()
        .into_iter()
        .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(btf_rs::Type::Func(_))))
        .ok_or_else(|| format!("{TARGET} is not a function in the kernel's BTF"))?;
    // mov64 r0, 0; exit (struct bpf_insn, little-endian: opcode in the low byte).
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_TRACE_FENTRY,
        attach_btf_id,
        ..ProgLoadAttr::default()
    };
    // SAFETY: bpf(2) reads `attr` (and the instructions and license it points to, alive
    // here) and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: the fd was just returned to us and is closed once.
    unsafe { libc::close(fd as i32) };
    Ok(format!("loaded on {TARGET}"))
}

/// Whether `name` is an executable file in one of PATH's directories.
fn in_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// One test: its name (the function's, so filters work as with `#[test]`), body and needs.
/// Made by [`case!`](crate::case).
pub struct Case {
    name: &'static str,
    body: fn(),
    requires: &'static [Requires],
    opt_in: Option<&'static str>,
}

impl Case {
    pub fn new(name: &'static str, body: fn(), requires: &'static [Requires]) -> Self {
        Case {
            name,
            body,
            requires,
            opt_in: None,
        }
    }

    /// Runs only when asked for (`--ignored`, `--include-ignored`), like `#[ignore = WHY]`.
    pub fn opt_in(self, why: &'static str) -> Self {
        Case {
            opt_in: Some(why),
            ..self
        }
    }
}

/// A test named after its function: `case!(ctrl_c_detaches_everything, Requires::Root)`.
#[macro_export]
macro_rules! case {
    ($body:ident $(, $requires:expr)* $(,)?) => {
        $crate::harness::Case::new(stringify!($body), $body, &[$($requires),*])
    };
}

/// What the runner does with a test, decided before any test runs.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Run,
    Skip(String),
    Fail(String),
}

fn decide(case: &Case, asked_for_ignored: bool, ci: bool) -> Decision {
    if let Some(why) = case.opt_in.filter(|_| !asked_for_ignored) {
        return Decision::Skip(format!("{why}; run with --ignored"));
    }
    // In order: a later requirement is not probed when an earlier one fails (no kernel probes
    // without root).
    for req in case.requires {
        if let Some(reason) = req.unmet() {
            return if ci && req.provided_by_ci() {
                Decision::Fail(format!(
                    "{reason}; CI must provide this (CI is set), so here it fails, not skips"
                ))
            } else {
                Decision::Skip(reason)
            };
        }
    }
    Decision::Run
}

/// The `main` of a test binary: libtest's command line, output and exit code.
pub fn run(mut cases: Vec<Case>) -> ExitCode {
    // In name order, as libtest runs them: the same tests meet on the runner's threads.
    cases.sort_by_key(|case| case.name);
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let asked_for_ignored = args.ignored || args.include_ignored;
    let terse = args.quiet || matches!(args.format, Some(FormatSetting::Terse));
    let ci = in_ci();
    let trials = cases
        .into_iter()
        .map(|case| {
            // Opt-in tests carry libtest's ignored flag only when asked for, so `--ignored`
            // selects them; otherwise they are skipped at run time like the rest, with a reason.
            let flag = case.opt_in.is_some() && asked_for_ignored;
            let selected =
                !args.is_filtered_out(&Trial::test(case.name, || Ok(())).with_ignored_flag(flag));
            let decision = if selected && !args.list {
                decide(&case, asked_for_ignored, ci)
            } else {
                Decision::Run
            };
            if let (true, Decision::Skip(reason)) = (terse && selected && !args.list, &decision) {
                println!("ignored {}: {reason}", case.name);
            }
            let body = case.body;
            Trial::ignorable_test(case.name, move || match decision {
                Decision::Run => {
                    body();
                    Ok(Completion::Completed)
                }
                Decision::Skip(reason) => Ok(Completion::ignored_with(reason)),
                Decision::Fail(reason) => Err(Failed::from(reason)),
            })
            .with_ignored_flag(flag)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISSING: Requires = Requires::Tool("netpath-test-no-such-tool");
    const PRESENT: Requires = Requires::Tool("sh");

    fn nothing() {}

    fn case(requires: &'static [Requires]) -> Case {
        Case::new("t", nothing, requires)
    }

    #[test]
    fn a_missing_tool_is_a_skip_with_its_name_and_a_failure_under_ci() {
        let Decision::Skip(reason) = decide(&case(&[PRESENT, MISSING]), false, false) else {
            panic!("not a skip");
        };
        assert!(reason.contains("netpath-test-no-such-tool"), "{reason}");
        let Decision::Fail(reason) = decide(&case(&[MISSING]), false, true) else {
            panic!("not a failure under CI");
        };
        assert!(reason.contains("netpath-test-no-such-tool") && reason.contains("CI"));
        assert_eq!(decide(&case(&[PRESENT]), false, true), Decision::Run);
    }

    #[test]
    fn kernel_features_are_skips_under_ci_too() {
        // Exactly one of the two is unmet on any kernel.
        let with = decide(&case(&[Requires::Kernel(Feature::Kprobes)]), false, true);
        let without = decide(
            &case(&[Requires::KernelWithout(Feature::Kprobes)]),
            false,
            true,
        );
        let skips: Vec<_> = [with, without]
            .into_iter()
            .filter(|d| matches!(d, Decision::Skip(r) if r.contains("kprobes")))
            .collect();
        assert_eq!(skips.len(), 1, "{skips:?}");
    }

    #[test]
    fn opt_in_tests_run_only_when_asked_for() {
        let bench = || case(&[PRESENT]).opt_in("a benchmark");
        assert_eq!(
            decide(&bench(), false, true),
            Decision::Skip("a benchmark; run with --ignored".into())
        );
        assert_eq!(decide(&bench(), true, true), Decision::Run);
    }
}
