mod cli;

use clap::{CommandFactory, FromArgMatches};

/// Run as `kubectl-netpath` (kubectl's plugin name: `kubectl netpath ...`), names come from
/// the cluster kubectl uses.
fn plugin_mode() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == "kubectl-netpath")
}

fn main() {
    let plugin = plugin_mode();
    let mut command = cli::Cli::command();
    if plugin {
        command = command.name("kubectl netpath").bin_name("kubectl netpath");
    }
    let mut cli = match cli::Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if plugin {
        if let cli::Command::Trace(args) = &mut cli.command {
            args.kube.k8s = true;
        }
    }
    if matches!(cli.command, cli::Command::Lab(_)) {
        // `lab` holds no kernel attachments: like other CLI tools, let a closed pipe end it
        // quietly (everything it creates is recorded in its state first).
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netpath: cannot start runtime: {e}");
            std::process::exit(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Trace(args) => cli::trace::run(args).await,
            cli::Command::Watch(args) => cli::watch::run(args).await,
            cli::Command::Lab(cmd) => tracer::lab::cli::run(cmd),
            cli::Command::Capture(args) => cli::capture::run(args).await,
            cli::Command::Check(args) => cli::check::run(args),
            cli::Command::Agent(args) => cli::agent::run(args).await,
            cli::Command::Certs(args) => cli::certs::run(args),
            cli::Command::Cleanup(args) => cli::cleanup::run(args),
        }
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("netpath: {}", one_line(&e));
            std::process::exit(2);
        }
    }
}

/// `NETPATH_LOG`, else errors only, without kube-rs's: it logs a failed request before
/// returning the error netpath reports on its one line.
fn log_filter() -> tracing_subscriber::EnvFilter {
    match std::env::var("NETPATH_LOG") {
        Ok(v) if !v.is_empty() => tracing_subscriber::EnvFilter::new(v),
        _ => tracing_subscriber::EnvFilter::new("error,kube_client=off"),
    }
}

/// The error and its causes on one line, each cause once: many errors already name their
/// cause in their own message (`{source}`), and the chain would repeat it.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(io).context("writing x: disk on fire");
        assert_eq!(one_line(&e), "writing x: disk on fire");
        let e = anyhow::Error::new(std::io::Error::other("denied")).context("opening y");
        assert_eq!(one_line(&e), "opening y: denied");
    }
}
