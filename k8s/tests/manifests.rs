//! Every manifest in deploy/ parses into the Kubernetes types, strictly: each object is read
//! into its k8s-openapi type and written back, and must come back unchanged (a misspelt or
//! misplaced field, which the types would silently drop, fails here). Then the security
//! settings: no `privileged: true`, the agent's capabilities listed and justified, read-only
//! RBAC on the four kinds netpath reads.
use std::{collections::BTreeSet, path::PathBuf};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::Deserialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document of deploy/*.yaml, as (file, document).
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                out.push((name.clone(), v));
            }
        }
    }
    out
}

/// Paths where `a` and `b` differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&p, u, v, out),
                    (Some(_), None) => out.push(format!("{p}: not a field of this type")),
                    (None, Some(_)) => out.push(format!("{p}: added by the type")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} became {b}")),
    }
}

/// `doc` read as `T` and written back, unchanged.
fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let obj: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: not a valid {}: {e}", doc["kind"]));
    let back = serde_json::to_value(&obj).unwrap();
    let mut problems = Vec::new();
    diff("", doc, &back, &mut problems);
    assert!(
        problems.is_empty(),
        "{file} ({}): {}",
        doc["kind"],
        problems.join("; ")
    );
    obj
}

struct Manifests {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    daemonsets: Vec<DaemonSet>,
}

fn manifests() -> Manifests {
    let mut m = Manifests {
        namespaces: vec![],
        accounts: vec![],
        roles: vec![],
        bindings: vec![],
        daemonsets: vec![],
    };
    for (file, doc) in documents() {
        match doc["kind"].as_str() {
            Some("Namespace") => m.namespaces.push(strict(&file, &doc)),
            Some("ServiceAccount") => m.accounts.push(strict(&file, &doc)),
            Some("ClusterRole") => m.roles.push(strict(&file, &doc)),
            Some("ClusterRoleBinding") => m.bindings.push(strict(&file, &doc)),
            Some("DaemonSet") => m.daemonsets.push(strict(&file, &doc)),
            other => panic!("{file}: no check for kind {other:?}: add one here"),
        }
    }
    m
}

/// Any `privileged: true`, anywhere.
fn privileged_anywhere(v: &Value) -> bool {
    match v {
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| (k == "privileged" && v == &Value::Bool(true)) || privileged_anywhere(v)),
        Value::Array(a) => a.iter().any(privileged_anywhere),
        _ => false,
    }
}

#[test]
fn every_manifest_parses_strictly() {
    let m = manifests();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.accounts.len(), 1);
    assert_eq!(m.roles.len(), 1);
    assert_eq!(m.bindings.len(), 1);
    assert_eq!(m.daemonsets.len(), 1);
    let ns = m.namespaces[0].metadata.name.clone().unwrap();
    for (what, obj_ns) in [
        ("ServiceAccount", &m.accounts[0].metadata.namespace),
        ("DaemonSet", &m.daemonsets[0].metadata.namespace),
    ] {
        assert_eq!(obj_ns.as_deref(), Some(ns.as_str()), "{what}");
    }
}

#[test]
fn a_misspelt_field_is_caught() {
    let doc: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "x", "namespace": "y", "lables": {"a": "b"}},
    });
    let r = std::panic::catch_unwind(|| strict::<ServiceAccount>("test", &doc));
    assert!(r.is_err(), "`lables` must not pass");
}

#[test]
fn rbac_is_read_only_on_what_netpath_reads() {
    let m = manifests();
    let allowed_verbs: BTreeSet<&str> = ["get", "list", "watch"].into();
    let mut resources = BTreeSet::new();
    for rule in m.roles[0].rules.iter().flatten() {
        for verb in &rule.verbs {
            assert!(allowed_verbs.contains(verb.as_str()), "verb {verb}");
        }
        for group in rule.api_groups.iter().flatten() {
            assert!(
                ["", "discovery.k8s.io"].contains(&group.as_str()),
                "group {group}"
            );
        }
        assert!(rule.non_resource_urls.is_none() && rule.resource_names.is_none());
        for r in rule.resources.iter().flatten() {
            assert_ne!(r, "*");
            resources.insert(r.clone());
        }
    }
    let want: BTreeSet<String> = ["pods", "services", "endpointslices", "nodes"]
        .map(String::from)
        .into();
    assert_eq!(resources, want);
    let b = &m.bindings[0];
    assert_eq!(b.role_ref.name, m.roles[0].metadata.name.clone().unwrap());
    let subject = &b.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), Some(&subject.name)),
        ("ServiceAccount", m.accounts[0].metadata.name.as_ref())
    );
}

#[test]
fn the_agent_has_its_capabilities_and_no_more() {
    for (file, doc) in documents() {
        assert!(!privileged_anywhere(&doc), "{file}: privileged: true");
    }
    let m = manifests();
    let ds = &m.daemonsets[0];
    let labels = ds
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("netpath-agent"),
        "the CLI finds agents by this label"
    );
    let tpl = &ds.spec.as_ref().unwrap().template;
    let annotations = tpl.metadata.as_ref().unwrap().annotations.clone().unwrap();
    assert!(annotations
        .get("netpath.io/agent-port")
        .is_some_and(|p| p.parse::<u16>().is_ok()));
    let pod = tpl.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("netpath-agent"));
    // Every taint tolerated: an operator Exists without a key.
    assert!(pod
        .tolerations
        .iter()
        .flatten()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()));
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.clone().unwrap(), vec!["ALL".to_string()]);
    let added: BTreeSet<String> = caps.add.clone().unwrap().into_iter().collect();
    let want: BTreeSet<String> = [
        "BPF",
        "NET_ADMIN",
        "NET_RAW",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_PTRACE",
        "SYS_RESOURCE",
    ]
    .map(String::from)
    .into();
    assert_eq!(added, want);
    // SYS_ADMIN is the broad one: the manifest must say why.
    let text = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    let before = text.split("- SYS_ADMIN").next().unwrap();
    assert!(
        before
            .rsplit("- PERFMON")
            .next()
            .unwrap()
            .contains("setns()"),
        "SYS_ADMIN without its justification"
    );
    let mounts: BTreeSet<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for need in [
        "/sys/kernel/btf",
        "/sys/fs/bpf",
        "/host/proc",
        "/run/netns",
        "/run/containerd/containerd.sock",
        "/etc/netpath/tls",
    ] {
        assert!(mounts.contains(need), "mount {need} missing: {mounts:?}");
    }
    for m in c.volume_mounts.iter().flatten() {
        // Bidirectional propagation needs a privileged container; host state is read-only
        // except bpffs.
        assert_ne!(m.mount_propagation.as_deref(), Some("Bidirectional"));
        if m.mount_path != "/sys/fs/bpf" {
            assert_eq!(m.read_only, Some(true), "{} writable", m.mount_path);
        }
    }
    let tls = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "tls")
        .and_then(|v| v.secret.as_ref())
        .expect("the mTLS Secret is a volume");
    assert_eq!(tls.secret_name.as_deref(), Some("netpath-agent-tls"));
    assert_eq!(tls.default_mode, Some(0o400));
    let cmd = c.command.clone().unwrap().join(" ");
    assert!(
        cmd.contains("agent --node $(NODE_NAME)") && cmd.contains("--tls-dir /etc/netpath/tls"),
        "{cmd}"
    );
}
