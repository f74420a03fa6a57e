//! `netpath cleanup`: remove what a netpath that was killed left in the kernel.
use anyhow::{Context, Result};
use clap::Args;
use tracer::node::cleanup;

#[derive(Debug, Args)]
#[command(
    after_help = "A netpath that exits, even on Ctrl-C or an error, removes everything it \
attached. One that is killed (SIGKILL, OOM, a crash) cannot: on kernels with tcx (Linux 6.6+) \
its programs go with it anyway, but on older kernels its clsact filters stay and keep running, \
and a clsact qdisc it added stays too.

cleanup looks in every network namespace this process can see (the current one, those of \
`ip netns`, those held by processes) for tc filters named netpath_tc_* whose program no live \
process holds, and removes them; then it removes the clsact qdiscs killed netpath processes \
added (recorded in /run/netpath/clsact) when no other filter uses them. Filters and qdiscs of \
other tools, and those of a netpath still running, are never touched. netpath also removes \
its own stale filters from a device before it attaches there again.

Examples:
  netpath cleanup             remove, one line per object, then a count
  netpath cleanup --dry-run   only say what would be removed"
)]
pub struct CleanupArgs {
    /// Say what would be removed without removing anything.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: CleanupArgs) -> Result<i32> {
    let removed = cleanup::cleanup(args.dry_run).context("looking for netpath's leftovers")?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &removed {
        println!("{verb} {} on {} (netns {})", r.what, r.ifname, r.netns);
    }
    if removed.is_empty() {
        println!("cleanup: nothing of netpath's is left in the kernel");
    } else {
        println!("cleanup: {verb} {} object(s)", removed.len());
    }
    Ok(0)
}
