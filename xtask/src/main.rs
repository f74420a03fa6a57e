//! Developer tasks: `cargo xtask bench <name>`, `cargo xtask soak <suite>`, `cargo xtask fuzz`.
mod bench;
mod interrupt;
mod soak;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask bench <name> [args] | cargo xtask soak <suite>
soak suites: churn [N], residue [N] [--seed S], fuzz [RUNS] [TARGET..] (docs/reliability.md)
benchmarks:
  agent [TRACES]   the lab through its node agents: time to verdict vs --local, idle agent, stream rate
  attach [N]       `netpath watch --all`, start to ready, with N devices more (default 1000)
  capture          netpath capture vs tcpdump: highest UDP rate with <= 0.1 % loss, CPU per packet
  capture --agent  the same, netpath capture here vs through a netpath agent (capture --agents)
  decode [EVENTS]  events/s one core decodes into JSON lines, text and the trace's matcher
  overhead         UDP flood pps with no tracer / tracer matching nothing / an event per packet per hop";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bench", name, rest @ ..] => {
            // (attach stops at its next step on a signal, its guards cleaning up.)
            if *name != "attach" {
                interrupt::install();
            }
            bench::run(name, rest)
        }
        ["soak", rest @ ..] => soak::run(rest),
        // Internal: the UDP sender, re-executed inside a namespace by a benchmark.
        [bench::FLOOD_CMD, rest @ ..] => bench::flood(rest),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
