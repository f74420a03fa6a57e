//! Which optional hooks this kernel allows, found by trying them (never assumed from the
//! kernel version): "can it run, and if not, why" for function tracing (`--functions`).
//!
//! fentry is tried by loading a tiny program against the first kernel function the pattern
//! names; kprobes by attaching a tiny program. Both are undone at once. The report keeps the
//! reason for each so the CLI can say, in one line, why function tracing is off.
use aya::{
    programs::{FEntry, KProbe, ProgramError},
    Btf, Ebpf,
};

use super::{btf::KernelBtf, decode::errno_name};

/// Where the kernel says whether kprobes exist (the kprobe PMU).
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// One optional hook: can it run here, and if not, why (retis's `can_run`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CanRun {
    pub hook: &'static str,
    pub available: bool,
    /// Why not (`EPERM`, `not built in`, ...), or what was tried when it worked.
    pub reason: String,
}

/// The outcome of `--functions PATTERN`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionSupport {
    pub pattern: String,
    /// Kernel functions (in BTF) the pattern names; the first was used for the probes.
    pub functions: Vec<String>,
    pub fentry: CanRun,
    pub kprobe: CanRun,
    /// Functions a kprobe now traces.
    pub traced: Vec<String>,
    /// Functions the pattern names that take no `struct sk_buff *`: nothing to follow there.
    pub without_skb: usize,
    /// Functions the kernel would not let a kprobe on (notrace, inlined away), with why.
    pub refused: Vec<(String, String)>,
}

/// Most functions one `--functions` pattern attaches to (each is a kprobe).
pub const MAX_FUNCTIONS: usize = 256;

impl FunctionSupport {
    /// Whether some function is traced.
    pub fn usable(&self) -> bool {
        !self.traced.is_empty()
    }

    /// The one line the CLI prints.
    pub fn message(&self) -> String {
        if !self.kprobe.available {
            let kprobe = if self.kprobe.reason == "not built in" {
                "kprobes not built in".to_string()
            } else {
                format!("kprobes refused: {}", self.kprobe.reason)
            };
            let fentry = if self.fentry.available {
                "fentry allowed, but netpath traces functions with kprobes only".to_string()
            } else {
                format!("fentry refused: {}", self.fentry.reason)
            };
            return format!(
                "--functions: not available on this kernel ({kprobe}, {fentry}); \
                 continuing without function tracing"
            );
        }
        if self.traced.is_empty() {
            return format!(
                "--functions: no function to trace: {:?} names {} kernel function(s), {} \
                 without an sk_buff argument{}; continuing without function tracing",
                self.pattern,
                self.functions.len(),
                self.without_skb,
                refused_text(&self.refused)
            );
        }
        format!(
            "--functions: tracing {} kernel function(s) matching {:?} with kprobes{}{}",
            self.traced.len(),
            self.pattern,
            if self.without_skb > 0 {
                format!(
                    " ({} without an sk_buff argument skipped)",
                    self.without_skb
                )
            } else {
                String::new()
            },
            refused_text(&self.refused)
        )
    }
}

fn refused_text(refused: &[(String, String)]) -> String {
    match refused {
        [] => String::new(),
        [(f, why), ..] => format!(
            "; {} refused by the kernel (first: {f}: {why})",
            refused.len()
        ),
    }
}

/// The kprobe program for a function whose skb is argument `pos` (0-based), if there is one.
fn kprobe_program(pos: usize) -> Option<&'static str> {
    [
        "netpath_kp_skb1",
        "netpath_kp_skb2",
        "netpath_kp_skb3",
        "netpath_kp_skb4",
        "netpath_kp_skb5",
    ]
    .get(pos)
    .copied()
}

/// Attaches a kprobe to every function of `support` that takes an skb (in its first five
/// arguments), recording what was traced and what was not. Each program is loaded (verified)
/// once, for the first function that needs it.
pub fn attach_functions(ebpf: &mut Ebpf, kbtf: &KernelBtf, support: &mut FunctionSupport) {
    if !support.kprobe.available {
        return;
    }
    for name in support.functions.clone() {
        let Some(prog_name) = kbtf.skb_arg_position(&name).and_then(kprobe_program) else {
            support.without_skb += 1;
            continue;
        };
        let Some(Ok(prog)) = ebpf.program_mut(prog_name).map(<&mut KProbe>::try_from) else {
            support
                .refused
                .push((name, format!("program {prog_name} missing")));
            continue;
        };
        if prog.fd().is_err() {
            if let Err(e) = prog.load() {
                support
                    .refused
                    .push((name, format!("loading {prog_name}: {}", reason_of(&e))));
                continue;
            }
        }
        match prog.attach(&name, 0) {
            Ok(_) => support.traced.push(name),
            Err(e) => support.refused.push((name, reason_of(&e))),
        }
    }
}

/// The errno inside an aya program error, by name (`EPERM`), or the error's text.
fn reason_of(e: &ProgramError) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return errno_name(code)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("errno {code}"));
            }
        }
        cur = err.source();
    }
    e.to_string()
}

/// Tries fentry and kprobes for `pattern` with the object's `probe_fentry`/`probe_kprobe`.
pub fn function_support(
    ebpf: &mut Ebpf,
    btf: &Btf,
    kbtf: &KernelBtf,
    pattern: &str,
) -> FunctionSupport {
    let functions = glob::Pattern::new(pattern)
        .map(|p| kbtf.functions_matching(&p, MAX_FUNCTIONS))
        .unwrap_or_default();
    // The probe needs some function; a pattern that names none is tested on ip_rcv.
    let target = functions.first().map(String::as_str).unwrap_or("ip_rcv");
    let fentry = match ebpf
        .program_mut("probe_fentry")
        .map(<&mut FEntry>::try_from)
    {
        Some(Ok(prog)) => match prog.load(target, btf) {
            Ok(()) => {
                let _ = prog.unload();
                CanRun {
                    hook: "fentry",
                    available: true,
                    reason: format!("loaded on {target}"),
                }
            }
            Err(e) => CanRun {
                hook: "fentry",
                available: false,
                reason: reason_of(&e),
            },
        },
        _ => CanRun {
            hook: "fentry",
            available: false,
            reason: "probe program missing".into(),
        },
    };
    let kprobe = match ebpf
        .program_mut("probe_kprobe")
        .map(<&mut KProbe>::try_from)
    {
        Some(Ok(prog)) => {
            let tried = prog.load().and_then(|_| prog.attach(target, 0));
            match tried {
                Ok(link) => {
                    let _ = prog.detach(link);
                    let _ = prog.unload();
                    CanRun {
                        hook: "kprobe",
                        available: true,
                        reason: format!("attached to {target}"),
                    }
                }
                Err(_) if !std::path::Path::new(KPROBE_PMU).exists() => CanRun {
                    hook: "kprobe",
                    available: false,
                    reason: "not built in".into(),
                },
                Err(e) => CanRun {
                    hook: "kprobe",
                    available: false,
                    reason: reason_of(&e),
                },
            }
        }
        _ => CanRun {
            hook: "kprobe",
            available: false,
            reason: "probe program missing".into(),
        },
    };
    FunctionSupport {
        pattern: pattern.into(),
        functions,
        fentry,
        kprobe,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support(fentry: (bool, &str), kprobe: (bool, &str)) -> FunctionSupport {
        FunctionSupport {
            pattern: "ip_*".into(),
            functions: vec!["ip_rcv".into()],
            fentry: CanRun {
                hook: "fentry",
                available: fentry.0,
                reason: fentry.1.into(),
            },
            kprobe: CanRun {
                hook: "kprobe",
                available: kprobe.0,
                reason: kprobe.1.into(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_message_names_each_reason_or_what_is_available() {
        assert_eq!(
            support((false, "EPERM"), (false, "not built in")).message(),
            "--functions: not available on this kernel (kprobes not built in, fentry refused: \
             EPERM); continuing without function tracing"
        );
        assert!(support((false, "EPERM"), (false, "EACCES"))
            .message()
            .contains("kprobes refused: EACCES"));
        let m = support((true, "loaded"), (false, "not built in")).message();
        assert!(
            m.contains("fentry allowed, but netpath traces functions with kprobes only"),
            "{m}"
        );
        let mut s = support((true, "loaded"), (true, "attached"));
        s.without_skb = 1;
        assert!(
            s.message().starts_with("--functions: no function to trace"),
            "{}",
            s.message()
        );
        s.traced = vec!["ip_rcv".into(), "ip_forward".into()];
        s.refused = vec![("ip_x".into(), "ENOENT".into())];
        assert_eq!(
            s.message(),
            "--functions: tracing 2 kernel function(s) matching \"ip_*\" with kprobes (1 \
             without an sk_buff argument skipped); 1 refused by the kernel (first: ip_x: ENOENT)"
        );
    }
}
