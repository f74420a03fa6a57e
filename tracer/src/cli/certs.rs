//! `netpath certs`: the cluster's mutual-TLS material for agents and the CLI.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use netpath_agent::certs::{generate, NodeCert, Validity};

#[derive(Debug, Args)]
#[command(
    after_help = "Writes DIR/ca.pem and ca.key (the cluster CA), DIR/NODE.pem and NODE.key \
per node (the agent's server certificate: the node's name and the given addresses), and \
DIR/client.pem and client.key (the CLI's). Keys are readable by their owner only.

Example:
  netpath certs --out ./tls --nodes node-1=10.0.0.1,node-2=10.0.0.2/fd00::2"
)]
pub struct CertsArgs {
    /// Directory to write to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Nodes to issue agent certificates for: NAME or NAME=IP[/IP...] (its listen addresses).
    #[arg(long, value_name = "NODE,...", value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Days the certificates are valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub days: i64,
    /// Issue with the CA already in DIR (ca.pem, ca.key) instead of a new one.
    #[arg(long)]
    pub keep_ca: bool,
}

pub fn run(args: CertsArgs) -> Result<i32> {
    let nodes = args
        .nodes
        .iter()
        .map(|n| NodeCert::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    if !(1..=3650).contains(&args.days) {
        anyhow::bail!("--days must be between 1 and 3650");
    }
    for path in generate(&args.out, &nodes, args.keep_ca, Validity::days(args.days))? {
        println!("{}", path.display());
    }
    Ok(0)
}
