//! Signals end `watch`, `capture` and `trace` cleanly at any moment: SIGINT, SIGTERM and SIGHUP,
//! sent during start-up (before the program says it is ready) and while running. Each run
//! exits with the status shells expect (130, 143, 129) and leaves nothing: no tc program,
//! filter or qdisc on the devices it attached to, and the test's namespaces as they were.
use std::time::{Duration, Instant};

use integration_tests::*;

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![case!(
        every_signal_at_any_moment_detaches_everything,
        Requires::Root
    )])
}

/// What netpath could leave on the pair's devices: tc programs (tcx and clsact) and qdiscs.
fn residue(p: &RoutedPair) -> (usize, String) {
    let programs = tc_programs(&p.a.name, "va") + tc_programs(&p.b.name, "vb");
    let qdiscs = p.a.exec("tc qdisc show dev va") + &p.b.exec("tc qdisc show dev vb");
    (programs, qdiscs)
}

fn own_namespaces(stem: &str) -> Vec<String> {
    sh("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(stem))
        .map(String::from)
        .collect()
}

fn every_signal_at_any_moment_detaches_everything() {
    let stem = unique("nps");
    let p = routed_pair(&stem);
    let clean = residue(&p);
    assert_eq!(clean.0, 0, "programs attached before the test");
    let namespaces = own_namespaces(&stem);
    let (a, b) = (p.a.name.clone(), p.b.name.clone());
    let a_ns = format!("netns:{a}");
    // (command, the line it prints once attached)
    let commands: [(Vec<&str>, &str); 3] = [
        (vec!["watch", "--netns", &b, "--iface", "*"], "watching"),
        (
            vec!["capture", "--netns", &b, "-i", "vb", "-w", "/dev/null"],
            "listening",
        ),
        (
            vec!["trace", &a_ns, "10.1.0.2", "--passive", "--timeout", "60"],
            "tracing",
        ),
    ];
    let mut runs = 0;
    let mut during_startup = 0;
    for (args, ready) in &commands {
        for (signo, code) in [
            (libc::SIGINT, 130),
            (libc::SIGTERM, 143),
            (libc::SIGHUP, 129),
        ] {
            for running in [false, true] {
                let mut np = NetpathProcess::spawn(args);
                if running {
                    np.wait_stderr(ready, Duration::from_secs(30));
                    assert!(
                        residue(&p).0 > 0,
                        "{args:?}: nothing attached while running"
                    );
                    // Traffic while it runs: the trace sees some and keeps waiting.
                    p.a.exec("ping -c1 -W1 10.1.0.2 >/dev/null || true");
                } else {
                    // Start-up: the handlers are in long before the programs are loaded.
                    std::thread::sleep(Duration::from_millis(150));
                    let early = !np.stderr_so_far().iter().any(|l| l.contains(ready));
                    during_startup += usize::from(early);
                }
                let sent = Instant::now();
                np.signal(signo);
                let (status, _, stderr) = np.finish_with_stderr();
                let took = sent.elapsed();
                assert_eq!(
                    status,
                    Some(code),
                    "{args:?} signal {signo} (running: {running}): {stderr:#?}"
                );
                assert!(took < Duration::from_secs(10), "{args:?}: {took:?} to stop");
                assert_eq!(
                    residue(&p),
                    clean,
                    "{args:?} signal {signo} (running: {running}) left something"
                );
                assert_eq!(own_namespaces(&stem), namespaces);
                runs += 1;
            }
        }
    }
    println!(
        "{runs} runs ended by a signal, {during_startup} of them during start-up, nothing left"
    );
    assert!(
        during_startup >= 6,
        "only {during_startup} signals came during start-up"
    );
}
