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
    let mut cli = match command
        .try_get_matches()
        .and_then(|m| cli::Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    if plugin {
        // Names, and with --tls-dir the node agents, from kubectl's cluster.
        match &mut cli.command {
            cli::Command::Trace(args) => args.kube.k8s = true,
            cli::Command::Watch(args) => args.kube.k8s = true,
            cli::Command::Capture(args) => args.kube.k8s = true,
            _ => {}
        }
    }
    if matches!(&cli.command, cli::Command::Lab(c) if !c.is_server()) {
        // `lab` holds no kernel attachments: like other CLI tools, let a closed pipe end it
        // quietly (everything it creates is recorded in its state first). Not the lab's API
        // server: its TLS writes (writev, without MSG_NOSIGNAL) to a client that went away
        // would kill it.
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
        // Commands that attach to the kernel end on SIGINT, SIGTERM and SIGHUP by detaching:
        // caught from here on, start-up included.
        let stop = || cli::stop::Stop::install().map_err(anyhow::Error::from);
        match cli.command {
            cli::Command::Trace(args) => cli::trace::run(args, stop()?).await,
            cli::Command::Diff(args) => cli::diff::run(args),
            cli::Command::Render(args) => cli::trace::run_render(args),
            cli::Command::Watch(args) => cli::watch::run(args, stop()?).await,
            cli::Command::Lab(cmd) => tracer::lab::cli::run(cmd),
            // Reading a file attaches nothing: signals end it as they end any tool.
            cli::Command::Capture(args) if args.read.is_some() => {
                cli::capture::run(args, None).await
            }
            cli::Command::Capture(args) => cli::capture::run(args, Some(stop()?)).await,
            cli::Command::Check(args) => cli::check::run(args),
            cli::Command::Agent(args) => cli::agent::run(args).await,
            cli::Command::Certs(args) => cli::certs::run(args),
            cli::Command::Cleanup(args) => cli::cleanup::run(args),
            cli::Command::BenchDecode(args) => cli::bench::run(args),
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

/// Help and version go out as clap prints them; a usage error is one line, `netpath: ...`,
/// exit 2 (clap's own is up to eight lines: the error, a tip, the usage, a pointer to --help).
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let line = clap_one_line(&e.render().to_string());
    if trace_json_asked() {
        println!("{}", cli::trace::json_error(&line));
    } else {
        eprintln!("netpath: {line}");
    }
    std::process::exit(2);
}

/// `trace ... --json`: its errors, usage errors included, are JSON on standard output.
fn trace_json_asked() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.first().is_some_and(|a| a == "trace") && args.iter().any(|a| a == "--json")
}

/// clap's rendered error as one line: its paragraphs but the usage and the pointer to
/// --help, each paragraph's lines joined.
fn clap_one_line(text: &str) -> String {
    let mut parts = Vec::new();
    for paragraph in text.split("\n\n") {
        let p = paragraph.trim();
        if p.is_empty() || p.starts_with("Usage:") || p.starts_with("For more information") {
            continue;
        }
        let joined: Vec<&str> = p.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        parts.push(joined.join(" "));
    }
    let line = parts.join("; ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    format!("{line} (see --help)")
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
    fn clap_errors_are_one_line() {
        let text = "error: unexpected argument '--bogus' found\n\n  tip: a similar argument \
                    exists: '--routes'\n\nUsage: netpath watch --routes\n\nFor more \
                    information, try '--help'.\n";
        assert_eq!(
            clap_one_line(text),
            "unexpected argument '--bogus' found; tip: a similar argument exists: '--routes' \
             (see --help)"
        );
        let text = "error: the following required arguments were not provided:\n  <FROM>\n  \
                    <TO>\n\nUsage: netpath trace <FROM> <TO>\n";
        assert_eq!(
            clap_one_line(text),
            "the following required arguments were not provided: <FROM> <TO> (see --help)"
        );
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(io).context("writing x: disk on fire");
        assert_eq!(one_line(&e), "writing x: disk on fire");
        let e = anyhow::Error::new(std::io::Error::other("denied")).context("opening y");
        assert_eq!(one_line(&e), "opening y: denied");
    }
}
