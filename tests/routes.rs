//! Route-lookup and neighbour events, live: `netpath watch --routes --neigh` while a namespace
//! looks up routes of every kind (unicast via a gateway, local, blackhole, unreachable,
//! prohibit, no route) in both families, while a router namespace forwards to a destination
//! it has no route for, and while a neighbour never answers. Also `--functions`, which this
//! kernel cannot do: one line, then everything else runs.
use std::time::Duration;

use integration_tests::*;
use serde_json::{json, Value};

fn main() -> std::process::ExitCode {
    integration_tests::run(vec![
        case!(
            route_lookups_report_type_error_gateway_and_device_in_both_families,
            Requires::Root
        ),
        case!(
            a_router_without_a_route_is_named_in_both_families,
            Requires::Root
        ),
        case!(
            an_unanswered_neighbour_fails_with_its_previous_state_and_drop_reason,
            Requires::Root
        ),
        // Checks the message of a kernel without function tracing (this machine's); netpath does
        // not trace functions yet, so elsewhere there is nothing to check.
        case!(
            functions_flag_says_in_one_line_why_it_cannot_run_and_the_rest_runs,
            Requires::Root,
            Requires::KernelWithout(Feature::Fentry),
            Requires::KernelWithout(Feature::Kprobes)
        ),
    ])
}

fn watch(args: &[&str], traffic: impl FnOnce()) -> (Vec<Value>, Vec<String>) {
    let mut all = vec!["watch", "--json", "--duration", "6"];
    all.extend_from_slice(args);
    let mut np = NetpathProcess::spawn(&all);
    np.wait_stderr("watching", Duration::from_secs(10));
    traffic();
    let stderr_so_far = np.stderr_seen.clone();
    let (code, out) = np.finish();
    assert_eq!(code, Some(0), "stderr: {stderr_so_far:?}");
    (json_lines(&out), stderr_so_far)
}

fn route_to<'a>(events: &'a [Value], dst: &str, ns: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == "route" && e["dst"] == dst && e["netns"] == ns)
        .unwrap_or_else(|| panic!("no route event to {dst} in {ns}: {events:#?}"))
}

fn route_lookups_report_type_error_gateway_and_device_in_both_families() {
    let (a, _b) = veth_pair("nprt");
    a.exec(
        "ip route add 10.81.0.0/16 via 10.1.0.2 && ip -6 route add fd00:61::/32 via fd00:1::2 && \
         ip route add blackhole 10.82.0.0/16 && ip -6 route add blackhole fd00:62::/32 && \
         ip route add unreachable 10.83.0.0/16 && ip -6 route add unreachable fd00:63::/32 && \
         ip route add prohibit 10.84.0.0/16 && ip -6 route add prohibit fd00:64::/32",
    );
    let (events, _) = watch(
        &[
            "--routes",
            "--no-drops",
            "--host",
            "10.80.0.0/12",
            "--host",
            "fd00:60::/27",
            "--host",
            "10.1.0.1",
        ],
        || {
            for d in [
                "10.81.0.1",
                "10.82.0.1",
                "10.83.0.1",
                "10.84.0.1",
                "10.85.0.1",
                "10.1.0.1",
                "fd00:61::1",
                "fd00:62::1",
                "fd00:63::1",
                "fd00:64::1",
                "fd00:65::1",
            ] {
                sh_quiet(&format!("ip -n {} route get {d}", a.name));
            }
        },
    );
    let ns = a.name.as_str();
    let route = |dst: &str| route_to(&events, dst, ns)["route"].clone();
    let failure = |kind: &str, err: i64, error: &str| {
        json!({"table": 254, "type": kind, "err": err, "error": error, "gw": null,
               "oif": null, "oif_index": null})
    };
    let strip = |mut v: Value| {
        for k in ["no_route", "flow_oif", "iif"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    let via4 = route("10.81.0.1");
    assert_eq!(via4["type"], "unicast");
    assert_eq!(via4["gw"], "10.1.0.2");
    assert_eq!(via4["oif"], "va");
    assert!(via4["oif_index"].as_u64().unwrap() > 0);
    assert_eq!(via4["err"], 0);
    assert_eq!(via4["error"], Value::Null);
    let via6 = route("fd00:61::1");
    assert_eq!(
        (&via6["type"], &via6["gw"], &via6["oif"]),
        (&json!("unicast"), &json!("fd00:1::2"), &json!("va"))
    );
    assert_eq!(route("10.1.0.1")["type"], "local");
    for (dst, kind, err, error) in [
        ("10.82.0.1", "blackhole", -22, "EINVAL"),
        ("fd00:62::1", "blackhole", -22, "EINVAL"),
        ("10.83.0.1", "unreachable", -113, "EHOSTUNREACH"),
        ("fd00:63::1", "unreachable", -113, "EHOSTUNREACH"),
        ("10.84.0.1", "prohibit", -13, "EACCES"),
        ("fd00:64::1", "prohibit", -13, "EACCES"),
        // No route at all: IPv4 reports the table miss (EAGAIN, the caller turns it into
        // ENETUNREACH); IPv6 the kernel's null entry (type unreachable, ENETUNREACH).
        ("10.85.0.1", "none", -11, "EAGAIN"),
        ("fd00:65::1", "unreachable", -101, "ENETUNREACH"),
    ] {
        let r = route(dst);
        assert_eq!(strip(r.clone()), failure(kind, err, error), "{dst}: {r}");
        assert_eq!(
            r["no_route"],
            dst.ends_with("65::1") || dst == "10.85.0.1",
            "{dst}: {r}"
        );
    }
    // The flow key is on the event.
    let e = route_to(&events, "fd00:61::1", ns);
    assert_eq!(e["family"], 6);
    assert_eq!(e["hook"], "fib6_table_lookup");
    assert_eq!(e["ifname"], "va");
    // The in-kernel filter kept other flows out (it matches either address).
    let wanted = |a: &Value| {
        a.as_str()
            .is_some_and(|a| a.starts_with("10.8") || a.starts_with("fd00:6") || a == "10.1.0.1")
    };
    assert!(
        events
            .iter()
            .all(|e| e["kind"] != "route" || wanted(&e["dst"]) || wanted(&e["src"])),
        "unfiltered route events: {events:#?}"
    );
}

fn a_router_without_a_route_is_named_in_both_families() {
    let (a, b) = veth_pair("nprf");
    a.exec("ip route add default via 10.1.0.2 && ip -6 route add default via fd00:1::2");
    b.exec("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    let (events, _) = watch(
        &["--routes", "--host", "10.99.0.1", "--host", "fd00:99::1"],
        || {
            a.exec("ping -c1 -W1 10.99.0.1 || true");
            a.exec("ping -c1 -W1 fd00:99::1 || true");
        },
    );
    for (dst, error) in [("10.99.0.1", "EAGAIN"), ("fd00:99::1", "ENETUNREACH")] {
        // The sender's lookup succeeds via its default route...
        let sent = route_to(&events, dst, &a.name);
        assert_eq!(sent["route"]["oif"], "va", "{sent}");
        assert!(sent["route"]["gw"].is_string(), "{sent}");
        // ...and the router's input lookup fails, in the router's namespace, on its device.
        let fwd = events
            .iter()
            .find(|e| {
                e["kind"] == "route"
                    && e["dst"] == dst
                    && e["netns"] == b.name.as_str()
                    && e["route"]["iif"].as_u64() > Some(1)
            })
            .unwrap_or_else(|| panic!("no forwarding lookup for {dst} in {}: {events:#?}", b.name));
        assert_eq!(fwd["route"]["error"], error, "{fwd}");
        assert_eq!(fwd["route"]["no_route"], true, "{fwd}");
        // No failed lookup for this destination is attributed to the sender.
        assert!(
            !events.iter().any(|e| e["kind"] == "route"
                && e["dst"] == dst
                && e["netns"] == a.name.as_str()
                && e["route"]["err"] != 0),
            "a failure was put in the sender's namespace: {events:#?}"
        );
        // ICMP keys carry type/code where ports would be: no ports are reported for them.
        for e in events
            .iter()
            .filter(|e| e["kind"] == "route" && (e["proto"] == "icmp" || e["proto"] == "icmp6"))
        {
            assert!(e.get("sport").is_none() && e.get("dport").is_none(), "{e}");
        }
        let drop = events
            .iter()
            .find(|e| e["kind"] == "drop" && e["dst"] == dst)
            .unwrap_or_else(|| panic!("no drop for {dst}"));
        assert_eq!(drop["reason"], "IP_INNOROUTES");
    }
}

fn an_unanswered_neighbour_fails_with_its_previous_state_and_drop_reason() {
    let (a, _b) = veth_pair("npng");
    let (events, _) = watch(
        &["--neigh", "--host", "10.1.0.77", "--host", "fd00:1::77"],
        || {
            // Resolution gives up after 3 probes one second apart.
            a.exec(
                "ping -c1 -W4 10.1.0.77 >/dev/null 2>&1 & ping -c1 -W4 fd00:1::77 >/dev/null 2>&1; wait",
            );
        },
    );
    for (addr, family, drop_reason) in [
        ("10.1.0.77", 4, "NEIGH_FAILED"),
        ("fd00:1::77", 6, "NOT_SPECIFIED"),
    ] {
        let n = events
            .iter()
            .find(|e| e["kind"] == "neigh" && e["neigh"]["addr"] == addr)
            .unwrap_or_else(|| panic!("no neighbour event for {addr}: {events:#?}"));
        assert_eq!(n["neigh"]["state"], "FAILED", "{n}");
        assert_eq!(n["neigh"]["old_state"], "INCOMPLETE", "{n}");
        assert_eq!(n["netns"], a.name.as_str());
        assert_eq!(n["ifname"], "va");
        assert_eq!(n["family"], family);
        // The packet waiting for the neighbour is freed when resolution fails.
        let d = events
            .iter()
            .find(|e| e["kind"] == "drop" && e["dst"] == addr)
            .unwrap_or_else(|| panic!("no drop for {addr}: {events:#?}"));
        assert_eq!(d["reason"], drop_reason, "{d}");
        assert!(
            d["location"]
                .as_str()
                .unwrap_or("")
                .starts_with("neigh_invalidate"),
            "{d}"
        );
    }
}

fn functions_flag_says_in_one_line_why_it_cannot_run_and_the_rest_runs() {
    let (a, b) = veth_pair("npfn");
    let mut np = NetpathProcess::spawn(&[
        "watch",
        "--json",
        "--duration",
        "4",
        "--netns",
        &b.name,
        "--iface",
        "vb",
        "--functions",
        "ip_rcv*",
    ]);
    // The --functions line comes before "watching".
    np.wait_stderr("watching", Duration::from_secs(10));
    let stderr = np.stderr_seen.clone();
    a.exec("ping -c1 -W1 10.1.0.2");
    let (code, out) = np.finish();
    assert_eq!(code, Some(0));
    let lines: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("--functions"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one --functions line: {stderr:#?}");
    assert_eq!(
        lines[0].as_str(),
        "netpath: --functions: not available on this kernel (kprobes not built in, fentry \
         refused: EPERM); continuing without function tracing"
    );
    // Everything else still runs.
    let hops = json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "hop" && e["icmp"] == "echo-request")
        .count();
    assert!(hops > 0, "no hops after the --functions line: {out}");
}
