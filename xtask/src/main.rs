//! Developer tasks: `cargo xtask bench <name>`.
mod bench;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask bench <name>
benchmarks:
  capture   netpath capture vs tcpdump: highest UDP rate with <= 0.1 % loss, CPU per packet
  overhead  UDP flood pps with no tracer / tracer matching nothing / an event per packet per hop";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bench", name] => bench::run(name),
        // Internal: the UDP sender, re-executed inside a namespace by a benchmark.
        [bench::FLOOD_CMD, rest @ ..] => bench::flood(rest),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
