//! Requests to answers, with no I/O: the path's route, discovery documents, lists, gets,
//! watches, and the Status objects of every refusal. The server only moves bytes.
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{
        APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions,
        GroupVersionForDiscovery, ServerAddressByClientCIDR, Status, StatusDetails,
    },
    version::Info,
};
use serde_json::{json, Value};

use super::{
    objects::{GroupVersion, ObjectSet, Resource, GROUP_VERSIONS},
    selector::Selector,
    table,
};

/// The Kubernetes version the server presents itself as (the k8s-openapi feature's).
pub const KUBE_MINOR: &str = "33";
/// A watch without `timeoutSeconds` ends after this long (the real server picks 30-60 min).
pub const DEFAULT_WATCH: Duration = Duration::from_secs(1800);

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/GROUP`
    Group(&'static str),
    /// `/api/v1`, `/apis/GROUP/VERSION`
    Resources(GroupVersion),
    List {
        resource: Resource,
        namespace: Option<String>,
    },
    Get {
        resource: Resource,
        namespace: Option<String>,
        name: String,
    },
}

/// The route of a path, `None` when nothing is there.
pub fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .collect();
    let (gv, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz"] => return Some(Route::Health),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => {
            return GROUP_VERSIONS
                .iter()
                .find(|gv| !gv.group.is_empty() && gv.group == *g)
                .map(|gv| Route::Group(gv.group))
        }
        ["api", v, rest @ ..] => (find_gv("", v)?, rest),
        ["apis", g, v, rest @ ..] => (find_gv(g, v)?, rest),
        _ => return None,
    };
    let res = |plural: &str| Resource::find(gv.group, plural);
    let r = match rest {
        [] => Route::Resources(gv),
        [plural] => Route::List {
            resource: res(plural)?,
            namespace: None,
        },
        ["namespaces", ns, plural] => Route::List {
            resource: res(plural).filter(|r| r.namespaced())?,
            namespace: Some(ns.to_string()),
        },
        ["namespaces", ns, plural, name] => Route::Get {
            resource: res(plural).filter(|r| r.namespaced())?,
            namespace: Some(ns.to_string()),
            name: name.to_string(),
        },
        [plural, name] => Route::Get {
            resource: res(plural).filter(|r| !r.namespaced())?,
            namespace: None,
            name: name.to_string(),
        },
        _ => return None,
    };
    Some(r)
}

fn find_gv(group: &str, version: &str) -> Option<GroupVersion> {
    GROUP_VERSIONS
        .iter()
        .copied()
        .find(|gv| gv.group == group && gv.version == version)
}

/// The parameters of a request's query string that the server understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub watch: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub send_initial_events: bool,
}

impl Query {
    pub fn parse(query: &str) -> Query {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            let yes = matches!(v.as_str(), "true" | "1" | "");
            match percent_decode(k).as_str() {
                "watch" => q.watch = yes,
                "labelSelector" => q.label_selector = Some(v),
                "fieldSelector" => q.field_selector = Some(v),
                "resourceVersion" => q.resource_version = Some(v),
                "timeoutSeconds" => q.timeout_seconds = v.parse().ok(),
                "sendInitialEvents" => q.send_initial_events = yes,
                _ => {}
            }
        }
        q
    }
}

/// `application/x-www-form-urlencoded` decoding (`%2F`, `+`); bad escapes are kept as is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', ..) => out.push(b' '),
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 2;
            }
            (x, ..) => out.push(x),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a request is answered with.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Json {
        status: u16,
        body: Value,
    },
    Text {
        status: u16,
        body: String,
    },
    /// A watch: these events (newline-delimited JSON), then nothing until `timeout`.
    Watch {
        events: Vec<Value>,
        timeout: Duration,
    },
}

impl Reply {
    pub fn status(&self) -> u16 {
        match self {
            Reply::Json { status, .. } | Reply::Text { status, .. } => *status,
            Reply::Watch { .. } => 200,
        }
    }
}

/// A request as the router sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// The Accept header (`as=Table` asks for a table).
    pub accept: &'a str,
}

/// A `Status` failure, as the API server writes it.
pub fn status(code: u16, reason: &str, message: String, details: Option<StatusDetails>) -> Reply {
    let body = Status {
        code: Some(code.into()),
        details,
        message: Some(message),
        metadata: Default::default(),
        reason: Some(reason.into()),
        status: Some("Failure".into()),
    };
    Reply::Json {
        status: code,
        body: serde_json::to_value(body).expect("Status serialises"),
    }
}

/// The answer to a request without (or with a wrong) bearer token.
pub fn unauthorized() -> Reply {
    status(401, "Unauthorized", "Unauthorized".into(), None)
}

/// Whether an `Authorization` header carries `token` (compared in constant time).
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn not_found(resource: Resource, name: &str) -> Reply {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", resource.plural()),
        Some(StatusDetails {
            name: Some(name.into()),
            group: Some(resource.group_version().group.into()),
            kind: Some(resource.plural().into()),
            ..Default::default()
        }),
    )
}

fn ok(body: Value) -> Reply {
    Reply::Json { status: 200, body }
}

/// Answers one authorised request. `server` is the `host:port` clients reach the server at.
pub fn answer(set: &ObjectSet, server: &str, req: &Request) -> Reply {
    let Some(route) = route(req.path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        );
    };
    if !matches!(req.method, "GET" | "HEAD") {
        return status(
            405,
            "MethodNotAllowed",
            format!(
                "the lab's Kubernetes API is read-only: {} is not allowed",
                req.method
            ),
            None,
        );
    }
    let q = Query::parse(req.query);
    let table = table::wanted(req.accept);
    match route {
        Route::Version => ok(serde_json::to_value(version()).expect("serialises")),
        Route::Health => Reply::Text {
            status: 200,
            body: "ok".into(),
        },
        Route::CoreVersions => ok(serde_json::to_value(APIVersions {
            versions: vec!["v1".into()],
            server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".into(),
                server_address: server.into(),
            }],
        })
        .expect("serialises")),
        Route::Groups => ok(serde_json::to_value(APIGroupList {
            groups: GROUP_VERSIONS
                .iter()
                .filter(|gv| !gv.group.is_empty())
                .map(|gv| group(*gv))
                .collect(),
        })
        .expect("serialises")),
        Route::Group(g) => {
            let gv = find_gv(g, "v1").expect("served group");
            ok(serde_json::to_value(group(gv)).expect("serialises"))
        }
        Route::Resources(gv) => ok(serde_json::to_value(resources(gv)).expect("serialises")),
        Route::List {
            resource,
            namespace,
        } => {
            let selector =
                match Selector::parse(q.label_selector.as_deref(), q.field_selector.as_deref())
                    .and_then(|s| s.check_fields(resource).map(|_| s))
                {
                    Ok(s) => s,
                    Err(e) => return status(400, "BadRequest", e, None),
                };
            let items = set.list(resource, namespace.as_deref(), &selector);
            if q.watch {
                return watch(set, resource, &q, table, &items);
            }
            let rv = set.resource_version().to_string();
            if table {
                return ok(table::table(resource, &items, &rv));
            }
            ok(json!({
                "apiVersion": resource.group_version().api_version(),
                "kind": format!("{}List", resource.kind()),
                "metadata": {"resourceVersion": rv},
                "items": items.iter().map(|o| &o.json).collect::<Vec<_>>(),
            }))
        }
        Route::Get {
            resource,
            namespace,
            name,
        } => match set.get(resource, namespace.as_deref(), &name) {
            None => not_found(resource, &name),
            Some(o) if q.watch => watch(set, resource, &q, table, &[o]),
            Some(o) if table => ok(table::table(
                resource,
                &[o],
                &set.resource_version().to_string(),
            )),
            Some(o) => ok(o.json.clone()),
        },
    }
}

/// A watch from `resourceVersion`: the objects, as ADDED events, unless the client has
/// already seen this version (nothing ever changes after it); with `sendInitialEvents` a
/// bookmark marks the end of the initial events.
fn watch(
    set: &ObjectSet,
    resource: Resource,
    q: &Query,
    table: bool,
    items: &[&super::objects::Object],
) -> Reply {
    let current = set.resource_version();
    let seen = q
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|v| v >= current);
    let mut events: Vec<Value> = Vec::new();
    if !seen || q.send_initial_events {
        let rv = current.to_string();
        events.extend(items.iter().map(|o| {
            let object = if table {
                table::table(resource, &[o], &rv)
            } else {
                o.json.clone()
            };
            json!({"type": "ADDED", "object": object})
        }));
    }
    if q.send_initial_events {
        events.push(json!({"type": "BOOKMARK", "object": {
            "apiVersion": resource.group_version().api_version(),
            "kind": resource.kind(),
            "metadata": {
                "resourceVersion": current.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        }}));
    }
    let timeout = q
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH)
        .min(DEFAULT_WATCH * 2);
    Reply::Watch { events, timeout }
}

fn version() -> Info {
    Info {
        build_date: "2026-01-01T00:00:00Z".into(),
        compiler: "rustc".into(),
        git_commit: "0000000000000000000000000000000000000000".into(),
        git_tree_state: "clean".into(),
        git_version: format!("v1.{KUBE_MINOR}.0-netpath-lab"),
        go_version: "none (netpath lab)".into(),
        major: "1".into(),
        minor: KUBE_MINOR.into(),
        platform: "linux/amd64".into(),
        ..Default::default()
    }
}

fn group(gv: GroupVersion) -> APIGroup {
    let v = GroupVersionForDiscovery {
        group_version: gv.api_version(),
        version: gv.version.into(),
    };
    APIGroup {
        name: gv.group.into(),
        preferred_version: Some(v.clone()),
        server_address_by_client_cidrs: None,
        versions: vec![v],
    }
}

fn resources(gv: GroupVersion) -> APIResourceList {
    APIResourceList {
        group_version: gv.api_version(),
        resources: Resource::ALL
            .into_iter()
            .filter(|r| r.group_version() == gv)
            .map(|r| APIResource {
                name: r.plural().into(),
                singular_name: r.singular().into(),
                namespaced: r.namespaced(),
                kind: r.kind().into(),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                short_names: (!r.short_names().is_empty())
                    .then(|| r.short_names().iter().map(|s| s.to_string()).collect()),
                categories: (!r.categories().is_empty())
                    .then(|| r.categories().iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::{Namespace, Pod, PodSpec},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            ..Default::default()
        }
    }

    fn set() -> ObjectSet {
        let mut s = ObjectSet::new(5);
        for ns in ["default", "netpath"] {
            s.add_namespace(Namespace {
                metadata: meta(None, ns),
                ..Default::default()
            })
            .unwrap();
        }
        for (ns, name, node) in [
            ("default", "pod-a", "node-1"),
            ("default", "pod-c", "node-2"),
            ("netpath", "agent-1", "node-1"),
        ] {
            s.add_pod(Pod {
                metadata: meta(Some(ns), name),
                spec: Some(PodSpec {
                    node_name: Some(node.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .unwrap();
        }
        s
    }

    fn get(path: &str, query: &str) -> Reply {
        answer(
            &set(),
            "127.0.0.1:6443",
            &Request {
                method: "GET",
                path,
                query,
                accept: "application/json",
            },
        )
    }

    fn body(r: Reply) -> Value {
        match r {
            Reply::Json { body, .. } => body,
            other => panic!("not JSON: {other:?}"),
        }
    }

    #[test]
    fn paths_route_like_the_api_server() {
        let pods = |ns: Option<&str>| Route::List {
            resource: Resource::Pods,
            namespace: ns.map(Into::into),
        };
        assert_eq!(route("/version"), Some(Route::Version));
        assert_eq!(route("/api"), Some(Route::CoreVersions));
        assert_eq!(route("/apis/"), Some(Route::Groups));
        assert_eq!(route("/apis/apps"), Some(Route::Group("apps")));
        assert_eq!(route("/api/v1/pods"), Some(pods(None)));
        assert_eq!(
            route("/api/v1/namespaces/default/pods"),
            Some(pods(Some("default")))
        );
        assert_eq!(
            route("/api/v1/namespaces/default"),
            Some(Route::Get {
                resource: Resource::Namespaces,
                namespace: None,
                name: "default".into()
            })
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-ipv6"),
            Some(Route::Get {
                resource: Resource::EndpointSlices,
                namespace: Some("default".into()),
                name: "web-ipv6".into()
            })
        );
        assert_eq!(
            route("/api/v1/nodes/node-1"),
            Some(Route::Get {
                resource: Resource::Nodes,
                namespace: None,
                name: "node-1".into()
            })
        );
        assert!(matches!(route("/apis/apps/v1"), Some(Route::Resources(gv)) if gv.group == "apps"));
        for none in [
            "/",
            "/api/v2",
            "/apis/batch/v1",
            "/api/v1/daemonsets",
            "/api/v1/pods/pod-a",
            "/api/v1/namespaces/default/nodes",
            "/api/v1/namespaces/default/pods/pod-a/log",
        ] {
            assert_eq!(route(none), None, "{none}");
        }
    }

    #[test]
    fn queries_decode() {
        let q = Query::parse(
            "labelSelector=app.kubernetes.io%2Fname%3Dnetpath-agent&watch=1&timeoutSeconds=5&fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=0&limit=500",
        );
        assert!(q.watch);
        assert_eq!(
            q.label_selector.as_deref(),
            Some("app.kubernetes.io/name=netpath-agent")
        );
        assert_eq!(q.field_selector.as_deref(), Some("spec.nodeName=node-1"));
        assert_eq!(q.timeout_seconds, Some(5));
        assert_eq!(q.resource_version.as_deref(), Some("0"));
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn discovery_is_plain_v1() {
        let api = body(get("/api", ""));
        assert_eq!(api["kind"], "APIVersions");
        assert_eq!(api["versions"], json!(["v1"]));
        let groups = body(get("/apis", ""));
        assert_eq!(groups["kind"], "APIGroupList");
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["apps", "discovery.k8s.io"]);
        let core = body(get("/api/v1", ""));
        assert_eq!(core["kind"], "APIResourceList");
        assert_eq!(core["groupVersion"], "v1");
        let pods = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["verbs"], json!(["get", "list", "watch"]));
        assert_eq!(pods["shortNames"], json!(["po"]));
        let apps = body(get("/apis/apps/v1", ""));
        assert_eq!(apps["resources"][0]["kind"], "DaemonSet");
        assert_eq!(body(get("/version", ""))["minor"], KUBE_MINOR);
    }

    #[test]
    fn lists_gets_and_selections() {
        let all = body(get("/api/v1/pods", ""));
        assert_eq!(all["kind"], "PodList");
        assert_eq!(all["metadata"]["resourceVersion"], "5");
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        let by_node = body(get("/api/v1/pods", "fieldSelector=spec.nodeName%3Dnode-1"));
        let names: Vec<&str> = by_node["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["pod-a", "agent-1"]);
        let one = body(get("/api/v1/namespaces/default/pods/pod-c", ""));
        assert_eq!(one["kind"], "Pod");
        assert_eq!(one["spec"]["nodeName"], "node-2");
        let ns = body(get("/api/v1/namespaces/netpath/pods", ""));
        assert_eq!(ns["items"].as_array().unwrap().len(), 1);
        let empty = body(get("/api/v1/namespaces/nowhere/pods", ""));
        assert_eq!(empty["items"], json!([]));
    }

    #[test]
    fn refusals_are_status_objects() {
        let missing = get("/api/v1/namespaces/default/pods/nope", "");
        assert_eq!(missing.status(), 404);
        let b = body(missing);
        assert_eq!(b["kind"], "Status");
        assert_eq!(b["reason"], "NotFound");
        assert_eq!(b["message"], "pods \"nope\" not found");
        assert_eq!(get("/apis/batch/v1/jobs", "").status(), 404);
        let bad = get("/api/v1/services", "fieldSelector=spec.nodeName%3Dx");
        assert_eq!(bad.status(), 400);
        let del = answer(
            &set(),
            "s",
            &Request {
                method: "DELETE",
                path: "/api/v1/namespaces/default/pods/pod-a",
                query: "",
                accept: "",
            },
        );
        assert_eq!(del.status(), 405);
        assert_eq!(body(del)["reason"], "MethodNotAllowed");
        let un = body(unauthorized());
        assert_eq!(
            (un["code"].clone(), un["reason"].clone()),
            (json!(401), json!("Unauthorized"))
        );
        assert!(authorized(Some("Bearer abc"), "abc"));
        assert!(!authorized(Some("Bearer abd"), "abc"));
        assert!(!authorized(Some("Bearer abcd"), "abc"));
        assert!(!authorized(Some("Basic abc"), "abc"));
        assert!(!authorized(None, "abc"));
    }

    #[test]
    fn watches_send_current_objects_unless_already_seen() {
        let Reply::Watch { events, timeout } = get(
            "/api/v1/namespaces/default/pods",
            "watch=true&timeoutSeconds=3",
        ) else {
            panic!("not a watch")
        };
        assert_eq!(timeout, Duration::from_secs(3));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[0]["object"]["metadata"]["name"], "pod-a");
        let Reply::Watch { events, timeout } = get("/api/v1/pods", "watch=true&resourceVersion=5")
        else {
            panic!("not a watch")
        };
        assert!(
            events.is_empty(),
            "version 5 was seen: nothing changed since"
        );
        assert_eq!(timeout, DEFAULT_WATCH);
        let Reply::Watch { events, .. } = get(
            "/api/v1/pods",
            "watch=true&resourceVersion=5&sendInitialEvents=true&fieldSelector=metadata.name%3Dpod-a",
        ) else {
            panic!("not a watch")
        };
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["type"], "BOOKMARK");
        assert_eq!(
            events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
    }
}
