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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanRun {
    pub hook: &'static str,
    pub available: bool,
    /// Why not (`EPERM`, `not built in`, ...), or what was tried when it worked.
    pub reason: String,
}

/// The outcome of `--functions PATTERN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSupport {
    pub pattern: String,
    /// Kernel functions (in BTF) the pattern names; the first was used for the fentry test.
    pub functions: Vec<String>,
    pub fentry: CanRun,
    pub kprobe: CanRun,
}

impl FunctionSupport {
    /// Function tracing is not implemented beyond this probe: whichever hook is available,
    /// netpath continues without it and says so.
    pub fn usable(&self) -> bool {
        false
    }

    /// The one line the CLI prints.
    pub fn message(&self) -> String {
        if !self.fentry.available && !self.kprobe.available {
            let kprobe = if self.kprobe.reason == "not built in" {
                "kprobes not built in".to_string()
            } else {
                format!("kprobes refused: {}", self.kprobe.reason)
            };
            return format!(
                "--functions: not available on this kernel ({kprobe}, fentry refused: {}); \
                 continuing without function tracing",
                self.fentry.reason
            );
        }
        let mut hooks = Vec::new();
        if self.fentry.available {
            hooks.push("fentry");
        }
        if self.kprobe.available {
            hooks.push("kprobes");
        }
        format!(
            "--functions: this kernel allows {} but this netpath does not trace functions yet; \
             continuing without function tracing",
            hooks.join(" and ")
        )
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
        .map(|p| kbtf.functions_matching(&p, 64))
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
        assert!(m.contains("allows fentry but"), "{m}");
    }
}
