//! Ctrl-C, SIGTERM or SIGHUP during a benchmark: the guards on the interrupted thread's stack
//! never run, so what a benchmark makes (namespaces, a lab) is registered here as the shell
//! command that removes it. A waiting thread stops the benchmark's children, runs the
//! commands (newest first) and exits with 128 + the signal.
use std::sync::Mutex;

static CLEANUPS: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
static NEXT: Mutex<u64> = Mutex::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered cleanup; dropping it (the guard did the work) unregisters it.
pub struct Cleanup(u64);

impl Drop for Cleanup {
    fn drop(&mut self) {
        lock(&CLEANUPS).retain(|(id, _)| *id != self.0);
    }
}

/// Runs `cmd` with sh if the benchmark is interrupted before the returned value is dropped.
pub fn on_interrupt(cmd: String) -> Cleanup {
    let id = {
        let mut next = lock(&NEXT);
        *next += 1;
        *next
    };
    lock(&CLEANUPS).push((id, cmd));
    Cleanup(id)
}

/// Call first in `main`, before any thread starts: the signals are blocked in every thread
/// and taken by one waiter.
pub fn install() {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the calling thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid signal set; sigwait writes the signal number.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        eprintln!("xtask: interrupted, cleaning up");
        let me = std::process::id();
        let _ = std::process::Command::new("pkill")
            .args(["-INT", "-P", &me.to_string()])
            .status();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-P", &me.to_string()])
            .status();
        let cmds: Vec<String> = lock(&CLEANUPS)
            .iter()
            .rev()
            .map(|(_, c)| c.clone())
            .collect();
        for cmd in cmds {
            let _ = std::process::Command::new("sh").args(["-c", &cmd]).status();
        }
        std::process::exit(128 + sig);
    });
}
