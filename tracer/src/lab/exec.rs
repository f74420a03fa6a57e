//! Executes a plan: one `ip -batch` for all namespaces, one `ip -n NS -batch` (and `bridge`)
//! per namespace, sysctls written from a thread inside the namespace, `nft -f` per node. A few
//! dozen process starts in all, which keeps `lab up` well under a second.
use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{topology::Plan, LabError};
use crate::node::netns;

/// Runs `tool [-n NS] [-force] -batch -` with `lines` on stdin.
fn batch(tool: &str, ns: Option<&str>, force: bool, lines: &[String]) -> Result<(), LabError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new(tool);
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    let what = format!(
        "{tool}{} -batch",
        ns.map(|n| format!(" -n {n}")).unwrap_or_default()
    );
    let input = lines.join("\n") + "\n";
    let out = feed(cmd.args(["-batch", "-"]), &what, &input)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    // ip reports "Command failed -:N": show the line itself too.
    let failed = stderr
        .rsplit_once("Command failed -:")
        .and_then(|(_, n)| n.trim().parse::<usize>().ok())
        .and_then(|n| lines.get(n.wrapping_sub(1)));
    let detail = match failed {
        Some(line) => format!("{stderr} (`{line}`)"),
        None => stderr,
    };
    Err(LabError::Command { what, detail })
}

fn feed(cmd: &mut Command, what: &str, input: &str) -> Result<std::process::Output, LabError> {
    let err = |e: std::io::Error| LabError::Command {
        what: what.to_string(),
        detail: e.to_string(),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(err)?;
    }
    child.wait_with_output().map_err(err)
}

/// Writes sysctls from a thread that entered `ns`: /proc/sys/net shows the namespace of the
/// task that opens it, so no `ip netns exec sysctl` process is needed.
fn sysctls(ns: &str, list: &[(String, String)]) -> Result<(), LabError> {
    if list.is_empty() {
        return Ok(());
    }
    let target = netns::by_name(ns)?;
    let list = list.to_vec();
    netns::run_in(&target, move || {
        list.into_iter().try_for_each(|(path, value)| {
            std::fs::write(format!("/proc/sys/{path}"), value).map_err(|e| (path, e))
        })
    })?
    .map_err(|(path, source)| LabError::Sysctl {
        netns: ns.into(),
        path,
        source,
    })
}

fn nft(ns: &str, ruleset: &str) -> Result<(), LabError> {
    let what = format!("nft -f in {ns}");
    let out = feed(
        Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
        &what,
        ruleset,
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Creates the plan's namespaces (the first phase of [`apply`]).
pub(super) fn add_namespaces(plan: &Plan) -> Result<(), LabError> {
    let adds: Vec<String> = plan
        .namespaces
        .iter()
        .map(|n| format!("netns add {}", n.name))
        .collect();
    batch("ip", None, false, &adds)
}

/// Applies the plan in phases across namespaces (made by [`add_namespaces`]): every namespace
/// exists before any veth is made into it, and per-device sysctls wait for their devices.
pub(super) fn apply(plan: &Plan) -> Result<(), LabError> {
    for ns in &plan.namespaces {
        sysctls(&ns.name, &ns.early_sysctls)?;
    }
    for ns in &plan.namespaces {
        batch("ip", Some(&ns.name), false, &ns.ip)?;
    }
    for ns in &plan.namespaces {
        batch("bridge", Some(&ns.name), false, &ns.bridge)?;
        sysctls(&ns.name, &ns.sysctls)?;
        if let Some(rules) = &ns.nft {
            nft(&ns.name, rules)?;
        }
    }
    settle(plan);
    Ok(())
}

/// Waits (at most 1.5 s) until the kernel has processed every link's carrier change: until
/// then a device keeps its `noop` qdisc and a bridge port stays disabled, so the first packets
/// would be lost and the lab's documented connectivity would flap.
fn settle(plan: &Plan) {
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut pending: Vec<&str> = plan.namespaces.iter().map(|n| n.name.as_str()).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|ns| !links_settled(ns));
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn links_settled(ns: &str) -> bool {
    let Ok(out) = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show"])
        .output()
    else {
        return true;
    };
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links.as_array().into_iter().flatten().all(|l| {
        let flags = l["flags"].as_array().cloned().unwrap_or_default();
        let up = flags.iter().any(|f| f == "UP");
        !up || (!flags.iter().any(|f| f == "NO-CARRIER") && l["qdisc"] != "noop")
    })
}

/// Deletes those of `names` that exist; returns them.
pub(super) fn delete_namespaces(names: &[String]) -> Result<Vec<String>, LabError> {
    let existing: Vec<String> = names
        .iter()
        .filter(|n| netns::by_name(n).is_ok())
        .cloned()
        .collect();
    let dels: Vec<String> = existing.iter().map(|n| format!("netns del {n}")).collect();
    batch("ip", None, true, &dels)?;
    Ok(existing)
}
