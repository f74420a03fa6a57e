//! The kube-rs client against a real HTTP API: the crate's own read-only API server (the one
//! the lab serves) over TLS with a bearer token, on loopback. Names resolve through
//! [`KubeResolver`] as they do over the pure snapshot, agents are found by their label, and a
//! wrong token, a missing context or a closed port is a clear error.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use k8s_openapi::{
    api::{
        core::v1::{
            Container, ContainerPort, Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Pod,
            PodIP, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
        },
        discovery::v1::{
            Endpoint as SliceEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use netpath_core::{
    model::{EndpointKind, Family},
    world::{ResolveError, Resolver},
};
use netpath_k8s::{
    apiserver::{kubeconfig, ApiServer, Credentials, ObjectSet},
    client::{Kube, KubeError, KubeOptions, KubeResolver, Placement},
};

fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(str::to_string),
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str, node: &str, ips: &[&str]) -> Pod {
    Pod {
        metadata: meta(Some(ns), name),
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            host_ip: Some("198.18.0.1".into()),
            pod_ip: ips.first().map(|s| s.to_string()),
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            ..Default::default()
        }),
    }
}

fn objects() -> ObjectSet {
    let mut set = ObjectSet::new(1);
    for ns in ["default", "netpath"] {
        set.add_namespace(Namespace {
            metadata: meta(None, ns),
            ..Default::default()
        })
        .unwrap();
    }
    set.add_node(Node {
        metadata: meta(None, "node-1"),
        spec: Some(NodeSpec {
            pod_cidrs: Some(vec!["10.244.1.0/24".into(), "fd00:10:244:1::/64".into()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "198.18.0.1".into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "fd00:198:18::1".into(),
                },
            ]),
            ..Default::default()
        }),
    })
    .unwrap();
    set.add_pod(pod(
        "default",
        "web-0",
        "node-1",
        &["10.244.1.2", "fd00:10:244:1::2"],
    ))
    .unwrap();
    set.add_pod(pod("default", "client", "node-1", &["10.244.1.3"]))
        .unwrap();
    let mut agent = pod("netpath", "netpath-agent-x", "node-1", &["198.18.0.1"]);
    agent.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/name".into(),
        "netpath-agent".into(),
    )]));
    let spec = agent.spec.as_mut().unwrap();
    spec.host_network = Some(true);
    spec.containers[0].ports = Some(vec![ContainerPort {
        name: Some("grpc".into()),
        container_port: 7101,
        ..Default::default()
    }]);
    set.add_pod(agent).unwrap();
    set.add_service(Service {
        metadata: meta(Some("default"), "web"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            cluster_ips: Some(vec!["10.96.0.10".into()]),
            ip_families: Some(vec!["IPv4".into()]),
            ip_family_policy: Some("SingleStack".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
    .unwrap();
    let mut slice_meta = meta(Some("default"), "web-v6");
    slice_meta.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".into(),
        "web".into(),
    )]));
    set.add_endpoint_slice(EndpointSlice {
        metadata: slice_meta,
        address_type: "IPv6".into(),
        endpoints: vec![SliceEndpoint {
            addresses: vec!["fd00:10:244:1::2".into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    })
    .unwrap();
    set
}

/// A running server and a kubeconfig file for it (removed on drop).
struct Served {
    kubeconfig: PathBuf,
    text: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve() -> Served {
    let creds = Credentials::generate(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], 1).unwrap();
    let server = ApiServer::new(objects(), &creds).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    let text = kubeconfig("test", &url, &creds.ca_pem, &creds.token, "default");
    let kubeconfig = std::env::temp_dir().join(format!(
        "netpath-client-api-{}-{}.kubeconfig",
        std::process::id(),
        url.rsplit(':').next().unwrap()
    ));
    std::fs::write(&kubeconfig, &text).unwrap();
    Served {
        kubeconfig,
        text,
        stop: Some(stop),
    }
}

fn opts(s: &Served) -> KubeOptions {
    KubeOptions {
        kubeconfig: Some(s.kubeconfig.clone()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_through_the_api() {
    let s = serve().await;
    let kube = Kube::connect(&opts(&s)).await.unwrap();
    assert_eq!(kube.namespace, "default", "the context's namespace");
    let r = KubeResolver::new(kube.clone(), Placement::Agents);
    let web = r.resolve("default/web-0").await.unwrap();
    assert_eq!(
        (web.kind, web.node.as_deref(), web.netns.as_deref()),
        (EndpointKind::Pod, Some("node-1"), Some("ip:10.244.1.2"))
    );
    assert_eq!(
        web.addr(Family::Ipv6),
        Some("fd00:10:244:1::2".parse().unwrap())
    );
    let node = r.resolve("node/node-1").await.unwrap();
    assert_eq!(
        (
            node.kind,
            node.netns.as_deref(),
            node.ipv4.len(),
            node.ipv6.len()
        ),
        (EndpointKind::Node, Some("root"), 1, 1)
    );
    let svc = r.resolve("svc/web").await.unwrap();
    assert_eq!((svc.kind, svc.port), (EndpointKind::Service, Some(80)));
    assert_eq!(
        svc.backends,
        vec!["[fd00:10:244:1::2]:8080".parse().unwrap()]
    );
    assert_eq!(
        r.resolve("10.244.1.3").await.unwrap().name,
        "default/client"
    );
    let err = r.resolve("default/nope").await.unwrap_err();
    assert!(
        matches!(&err, ResolveError::Unknown { known, .. } if known.contains("default/web-0")),
        "{err}"
    );
    // The API's facts: an IPv4-only Service whose only endpoints are IPv6, a client without
    // IPv6.
    let findings = r.findings("pod/client", "svc/web").await;
    let text: Vec<&str> = findings.iter().map(|f| f.text.as_str()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("ipFamilies [IPv4]") && t.contains("1 ready IPv6")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("default/client has no IPv6 podIP")),
        "{text:?}"
    );
    // Agents by their label: node -> host IP and the grpc port.
    let (agents, problems) = kube.agents().await.unwrap();
    assert_eq!(agents.len(), 1, "{problems:?}");
    assert_eq!(
        (agents[0].node.as_str(), agents[0].addr.as_str()),
        ("node-1", "198.18.0.1:7101")
    );
    // -n overrides the context's namespace.
    let other = Kube::connect(&KubeOptions {
        namespace: Some("netpath".into()),
        ..opts(&s)
    })
    .await
    .unwrap();
    let r = KubeResolver::new(other, Placement::Agents);
    assert_eq!(
        r.resolve("netpath-agent-x").await.unwrap().name,
        "netpath/netpath-agent-x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_a_missing_context_or_a_closed_port_is_an_error() {
    let s = serve().await;
    let token = s
        .text
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"token\": \""))
        .map(|t| t.trim_end_matches(['"', ',']).to_string())
        .expect("token in the kubeconfig");
    let wrong = s.kubeconfig.with_extension("wrong");
    std::fs::write(&wrong, s.text.replace(&token, "not-the-token")).unwrap();
    let kube = Kube::connect(&KubeOptions {
        kubeconfig: Some(wrong.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = KubeResolver::new(kube, Placement::Agents)
        .resolve("default/web-0")
        .await
        .unwrap_err()
        .to_string();
    let _ = std::fs::remove_file(&wrong);
    assert!(err.contains("401"), "{err}");

    let err = Kube::connect(&KubeOptions {
        context: Some("nope".into()),
        ..opts(&s)
    })
    .await
    .err()
    .expect("no such context");
    assert!(matches!(err, KubeError::Kubeconfig { .. }), "{err}");

    // A file that is not a kubeconfig: one line, naming it.
    let garbage = s.kubeconfig.with_extension("garbage");
    std::fs::write(&garbage, "clusters: [not yaml").unwrap();
    let err = Kube::connect(&KubeOptions {
        kubeconfig: Some(garbage.clone()),
        ..Default::default()
    })
    .await
    .err()
    .expect("not a kubeconfig")
    .to_string();
    let _ = std::fs::remove_file(&garbage);
    assert!(
        err.contains(garbage.to_str().unwrap()) && !err.contains('\n'),
        "{err}"
    );

    let closed = s.kubeconfig.with_extension("closed");
    let server = s
        .text
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"server\": \""))
        .map(|t| t.trim_end_matches(['"', ',']).to_string())
        .expect("server in the kubeconfig");
    std::fs::write(&closed, s.text.replace(&server, "https://127.0.0.1:1")).unwrap();
    let kube = Kube::connect(&KubeOptions {
        kubeconfig: Some(closed.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = kube
        .snapshot()
        .await
        .expect_err("nothing listens")
        .to_string();
    let _ = std::fs::remove_file(&closed);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
