//! Shared harness for the real-kernel integration tests: namespace guards that always clean up,
//! a runner for the real `netpath` binary, and the skip rule for missing privileges.
use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs a command and returns its output; panics with stderr when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (cleanup paths).
pub fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh").arg("-c").arg(cmd).output();
}

/// Returns true (and prints why) when these tests cannot run: they need root.
pub fn skip_unless_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)");
        return true;
    }
    false
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short prefix for names a test creates, so tests can run in parallel.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id() % 10000, SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A named network namespace that is deleted when the guard drops (also on panic).
pub struct NetNsGuard {
    pub name: String,
}

impl NetNsGuard {
    pub fn new(name: &str) -> Self {
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        NetNsGuard { name: name.to_string() }
    }
    /// Runs a shell command inside the namespace.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{}'", self.name, cmd.replace('\'', "'\\''")))
    }
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        sh_quiet(&format!("ip netns del {}", self.name));
    }
}

/// Path of the built `netpath` binary (target/<profile>/netpath next to the test's deps dir).
pub fn netpath_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile dir");
    let bin = profile_dir.join("netpath");
    assert!(bin.exists(), "{} not built: run `cargo build --bins` first", bin.display());
    bin
}

/// Runs `netpath ARGS` to completion.
pub fn netpath(args: &[&str]) -> Output {
    Command::new(netpath_bin()).args(args).output().expect("spawn netpath")
}
