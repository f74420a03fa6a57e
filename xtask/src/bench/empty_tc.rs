//! The floor under any tc-based tracer: a two-instruction tc program (`return TC_ACT_UNSPEC`)
//! attached with tcx to the same hooks netpath uses, through the raw bpf(2) syscalls, so the
//! overhead benchmark can say what the hook itself costs on this kernel and machine.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Where to attach: (namespace, device, egress?).
pub type Hook<'a> = (&'a str, &'a str, bool);

/// Empty tc programs attached with tcx; detached when dropped (the links are fds).
pub struct EmptyTc {
    _prog: OwnedFd,
    _links: Vec<OwnedFd>,
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded union bpf_attr of 128 bytes, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if fd < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl EmptyTc {
    pub fn attach(hooks: &[Hook<'_>]) -> Result<Self> {
        // r0 = -1 (TC_ACT_UNSPEC: continue as if nothing were attached); exit.
        let insns: [u64; 2] = [0xffff_ffff_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut attr = [0u64; 16];
        attr[0] = u64::from(BPF_PROG_TYPE_SCHED_CLS) | (insns.len() as u64) << 32;
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        let prog = bpf(BPF_PROG_LOAD, &mut attr).context("loading the empty tc program")?;
        let mut links = Vec::new();
        for &(ns, dev, egress) in hooks {
            links.push(link_in(ns, dev, &prog, egress)?);
        }
        Ok(EmptyTc {
            _prog: prog,
            _links: links,
        })
    }
}

/// A tcx link of `prog` on `dev` in namespace `ns`, made from a thread that enters `ns`
/// (setns changes only the calling thread; the link outlives it).
fn link_in(ns: &str, dev: &str, prog: &OwnedFd, egress: bool) -> Result<OwnedFd> {
    let path = format!("/run/netns/{ns}");
    let dev = std::ffi::CString::new(dev)?;
    let prog_fd = prog.as_raw_fd() as u64;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd> {
            let nsf = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns/if_nametoindex on valid fds and a NUL-terminated name.
            let ifindex = unsafe {
                if libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    bail!("entering {path}: {}", std::io::Error::last_os_error());
                }
                libc::if_nametoindex(dev.as_ptr())
            };
            if ifindex == 0 {
                bail!("no device {dev:?} in {path}");
            }
            let kind = if egress {
                BPF_TCX_EGRESS
            } else {
                BPF_TCX_INGRESS
            };
            let mut attr = [0u64; 16];
            attr[0] = prog_fd | u64::from(ifindex) << 32;
            attr[1] = u64::from(kind);
            bpf(BPF_LINK_CREATE, &mut attr).context("tcx link")
        })
        .join()
        .map_err(|_| anyhow::anyhow!("attach thread panicked"))?
    })
}
