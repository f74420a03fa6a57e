//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` (without `-o`) asks
//! for, with the columns the real API server prints for each resource.
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::objects::{Object, Resource};

/// Whether an Accept header asks for a Table (`application/json;as=Table;v=v1;g=meta.k8s.io`).
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && params.contains(&"v=v1")
    })
}

/// (name, type, priority): priority 1 columns are shown by `-o wide` only.
type Column = (&'static str, &'static str, u8);

fn columns(r: Resource) -> &'static [Column] {
    match r {
        Resource::Namespaces => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        Resource::Nodes => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        Resource::Pods => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        Resource::Services => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        Resource::EndpointSlices => &[
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        Resource::DaemonSets => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
    }
}

/// A Table of `items` (rows carry the objects' metadata, as with `includeObject=Metadata`).
pub fn table(resource: Resource, items: &[&Object], resource_version: &str) -> Value {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let now = Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH);
    let defs: Vec<Value> = columns(resource)
        .iter()
        .map(|(name, ty, priority)| {
            json!({"name": name, "type": ty, "format": if *name == "Name" {"name"} else {""},
                   "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(resource, &o.json, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.json["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn s(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn cells(r: Resource, o: &Value, now: Timestamp) -> Vec<Value> {
    let name = s(o, "/metadata/name");
    let age = age(&s(o, "/metadata/creationTimestamp"), now);
    match r {
        Resource::Namespaces => vec![name.into(), s(o, "/status/phase").into(), age.into()],
        Resource::Nodes => {
            let ready = arr(o, "/status/conditions")
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let internal: Vec<String> = arr(o, "/status/addresses")
                .iter()
                .filter(|a| a["type"] == "InternalIP")
                .filter_map(|a| a["address"].as_str().map(String::from))
                .collect();
            vec![
                name.into(),
                if ready { "Ready" } else { "NotReady" }.into(),
                "<none>".into(),
                age.into(),
                s(o, "/status/nodeInfo/kubeletVersion").into(),
                or_none(internal.first().cloned().unwrap_or_default()).into(),
                "<none>".into(),
                s(o, "/status/nodeInfo/osImage").into(),
                s(o, "/status/nodeInfo/kernelVersion").into(),
                s(o, "/status/nodeInfo/containerRuntimeVersion").into(),
            ]
        }
        Resource::Pods => {
            let statuses = arr(o, "/status/containerStatuses");
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: u64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_u64())
                .sum();
            let waiting = statuses
                .iter()
                .find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str));
            vec![
                name.into(),
                format!("{ready}/{}", arr(o, "/spec/containers").len()).into(),
                waiting
                    .map(String::from)
                    .unwrap_or_else(|| s(o, "/status/phase"))
                    .into(),
                restarts.to_string().into(),
                age.into(),
                or_none(s(o, "/status/podIP")).into(),
                or_none(s(o, "/spec/nodeName")).into(),
                "<none>".into(),
                "<none>".into(),
            ]
        }
        Resource::Services => {
            let ports: Vec<String> = arr(o, "/spec/ports")
                .iter()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect();
            let selector: Vec<String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name.into(),
                s(o, "/spec/type").into(),
                or_none(s(o, "/spec/clusterIP")).into(),
                "<none>".into(),
                or_none(ports.join(",")).into(),
                age.into(),
                or_none(selector.join(",")).into(),
            ]
        }
        Resource::EndpointSlices => {
            let ports: Vec<String> = arr(o, "/ports")
                .iter()
                .map(|p| p["port"].to_string())
                .collect();
            let addrs: Vec<String> = arr(o, "/endpoints")
                .iter()
                .flat_map(|e| arr(e, "/addresses").iter())
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            vec![
                name.into(),
                s(o, "/addressType").into(),
                or_none(ports.join(",")).into(),
                or_none(addrs.join(",")).into(),
                age.into(),
            ]
        }
        Resource::DaemonSets => {
            let n = |p: &str| o.pointer(p).and_then(Value::as_u64).unwrap_or(0);
            let containers = arr(o, "/spec/template/spec/containers");
            let join = |key: &str| {
                containers
                    .iter()
                    .filter_map(|c| c[key].as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let labels = o
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name.into(),
                n("/status/desiredNumberScheduled").into(),
                n("/status/currentNumberScheduled").into(),
                n("/status/numberReady").into(),
                n("/status/updatedNumberScheduled").into(),
                n("/status/numberAvailable").into(),
                or_none(selector).into(),
                age.into(),
                join("name").into(),
                join("image").into(),
                labels.into(),
            ]
        }
    }
}

/// An object's age as kubectl prints it (`45s`, `3m20s`, `5h`, `2d3h`); `<unknown>` without
/// a creation time.
pub fn age(created: &str, now: Timestamp) -> String {
    let Ok(t) = created.parse::<Timestamp>() else {
        return "<unknown>".into();
    };
    human(now.as_second().saturating_sub(t.as_second()).max(0) as u64)
}

fn human(secs: u64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        _ if secs < 120 => format!("{secs}s"),
        _ if m < 10 && secs.is_multiple_of(60) => format!("{m}m"),
        _ if m < 10 => format!("{m}m{}s", secs % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m.is_multiple_of(60) => format!("{h}h"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h.is_multiple_of(24) => format!("{d}d"),
        _ if h < 192 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_table_accept_header_is_recognised() {
        assert!(wanted("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wanted("application/json"));
        assert!(!wanted("application/json;as=Table;v=v1beta1;g=meta.k8s.io"));
    }

    #[test]
    fn ages_read_like_kubectls() {
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(age("2026-01-01T23:59:15Z", now), "45s");
        assert_eq!(age("2026-01-01T23:56:40Z", now), "3m20s");
        assert_eq!(age("2026-01-01T19:00:00Z", now), "5h");
        assert_eq!(age("2025-12-30T21:00:00Z", now), "2d3h");
        assert_eq!(age("", now), "<unknown>");
        assert_eq!(human(86400 * 800), "2y");
    }

    #[test]
    fn pod_rows_have_kubectls_columns() {
        let o = Object {
            resource: Resource::Pods,
            namespace: Some("default".into()),
            name: "pod-a".into(),
            labels: Default::default(),
            json: json!({
                "metadata": {"name": "pod-a", "namespace": "default"},
                "spec": {"nodeName": "node-1", "containers": [{"name": "app"}]},
                "status": {"phase": "Running", "podIP": "10.244.1.2",
                    "containerStatuses": [{"ready": true, "restartCount": 0}]},
            }),
        };
        let t = table(Resource::Pods, &[&o], "3");
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["columnDefinitions"][1]["name"], "Ready");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "pod-a",
                "1/1",
                "Running",
                "0",
                "<unknown>",
                "10.244.1.2",
                "node-1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "pod-a");
    }
}
