//! `cargo xtask bench decode [EVENTS]`: events per second one core decodes from ring-buffer
//! records into each output (`watch --json`, `watch`'s text, the trace's probe matcher). The
//! release `netpath` replays a fixed mix of records itself (its hidden `bench-decode`
//! command), so no flood's rate caps the figure and no kernel is involved.
use std::process::Command;

use anyhow::{bail, Result};

pub fn run(args: &[&str]) -> Result<()> {
    let events = match args {
        [] => "3000000".to_string(),
        [n] if n.parse::<u64>().is_ok_and(|n| n > 0) => n.to_string(),
        _ => bail!("usage: cargo xtask bench decode [EVENTS]"),
    };
    let netpath = super::netpath_release()?;
    println!("load average before: {}", super::load_average());
    let status = Command::new(&netpath)
        .args(["bench-decode", "--events", &events])
        .status()?;
    if !status.success() {
        bail!("{} bench-decode failed ({status})", netpath.display());
    }
    println!("load average after: {}", super::load_average());
    Ok(())
}
