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

/// The write end of the pipe the signal handler writes the signal number to.
static PIPE_WRITE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let byte = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd is the pipe's write end (or -1: EBADF).
    unsafe {
        libc::write(
            PIPE_WRITE.load(std::sync::atomic::Ordering::Relaxed),
            (&byte as *const u8).cast(),
            1,
        )
    };
}

/// Call first in `main`. A handler (not a blocked mask, which children would inherit and then
/// never see Ctrl-C) hands the signal to one waiting thread through a pipe.
pub fn install() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    PIPE_WRITE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls write(2).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let read_fd = fds[0];
    std::thread::spawn(move || {
        let mut byte = 0u8;
        // SAFETY: reading one byte into a local from the pipe's read end.
        if unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) } != 1 {
            return;
        }
        let sig = libc::c_int::from(byte);
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
