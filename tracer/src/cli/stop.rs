//! The signals that end a run (SIGINT, SIGTERM, SIGHUP), caught from the start of `main` so
//! that one arriving during start-up (loading, verifying, attaching: most of a short run)
//! still ends it cleanly, with everything detached, rather than killing the process.
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The handlers, installed once; [`Stop::recv`] says which signal came.
pub struct Stop {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stop {
    /// Installs the handlers (inside the runtime). From here on these signals are queued for
    /// [`Stop::recv`] instead of ending the process.
    pub fn install() -> std::io::Result<Stop> {
        Ok(Stop {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for one of the signals (also one that came before this call) and returns the
    /// exit code shells expect for it: 128 + its number (130, 143, 129).
    pub async fn recv(&mut self) -> i32 {
        let signo = tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        };
        128 + signo
    }
}
