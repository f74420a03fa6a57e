//! The lab as Kubernetes objects: what a real API server would hold for the cluster the lab
//! imitates (nodes, pods, the scenarios' Services and EndpointSlices, the agents' DaemonSet),
//! from the lab's state alone. Served by `netpath lab up` (see [`super::api`]).
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetStatus},
        core::v1::{
            Container, ContainerPort, ContainerState, ContainerStateRunning, ContainerStateWaiting,
            ContainerStatus, EnvVar, EnvVarSource, HostIP, Namespace, NamespaceStatus, Node,
            NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, ObjectFieldSelector,
            Pod, PodCondition, PodIP, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
            Toleration,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};
use netpath_k8s::apiserver::{ApiError, ObjectSet};

use super::state::{Family, LabPod, LabService, LabState};

/// The namespace of the lab's pods and Services.
pub const POD_NAMESPACE: &str = "default";
/// The namespace of the agents' DaemonSet.
pub const AGENT_NAMESPACE: &str = "netpath";
/// The DaemonSet's name and its pods' `app.kubernetes.io/name` label.
pub const AGENT_NAME: &str = "netpath-agent";
pub const AGENT_LABEL: &str = "app.kubernetes.io/name";
/// Where a node's agent would listen (on the node's addresses: the pods use the host network).
pub const AGENT_PORT: u16 = 7101;
/// Annotations that say where a lab object lives on this machine (real clusters lack them).
pub const NETNS_ANNOTATION: &str = "lab.netpath.dev/netns";
pub const HOST_IFACE_ANNOTATION: &str = "lab.netpath.dev/host-interface";
pub const STALE_IPS_ANNOTATION: &str = "lab.netpath.dev/stale-cluster-ips";
pub const AGENT_PORT_ANNOTATION: &str = "lab.netpath.dev/agent-port";
/// The namespace on this machine that reaches a running lab agent (the underlay).
pub const DIAL_NETNS_ANNOTATION: &str = netpath_k8s::client::agents::LAB_DIAL_NETNS_ANNOTATION;
/// The agent-port annotation of the DaemonSet's pod template in deploy/ (a real cluster's).
pub const DEPLOYED_AGENT_PORT_ANNOTATION: &str = "netpath.io/agent-port";
const NOTE_ANNOTATION: &str = "lab.netpath.dev/note";
/// Label of the pods that serve `svc/web` (its selector).
const APP: &str = "app";
const KUBELET_VERSION: &str = "v1.33.0-netpath-lab";

/// Every object of the lab's cluster, all created at `created` (the lab's `up`); the set's
/// resource version is that second, so a later lab's objects are newer.
pub fn objects(st: &LabState, created: Timestamp) -> Result<ObjectSet, ApiError> {
    objects_with_agents(st, created, &BTreeMap::new())
}

/// [`objects`] with the lab's running agents (node -> address, from `agents.json`): their
/// DaemonSet pods are Running and Ready on 127.0.0.1 with their real port; the others Pending.
pub fn objects_with_agents(
    st: &LabState,
    created: Timestamp,
    agents: &BTreeMap<String, SocketAddr>,
) -> Result<ObjectSet, ApiError> {
    let b = Builder {
        st,
        created: Time(created),
        agents,
    };
    let mut set = ObjectSet::new(created.as_second().max(1) as u64);
    for ns in [POD_NAMESPACE, AGENT_NAMESPACE] {
        set.add_namespace(b.namespace(ns))?;
    }
    for (i, n) in st.nodes.iter().enumerate() {
        set.add_node(b.node(i))?;
        set.add_pod(b.agent_pod(&n.name))?;
    }
    for p in &st.pods {
        set.add_pod(b.pod(p))?;
    }
    for s in &st.services {
        set.add_service(b.service(s))?;
        for slice in b.endpoint_slices(s) {
            set.add_endpoint_slice(slice)?;
        }
    }
    set.add_daemon_set(b.daemon_set())?;
    Ok(set)
}

struct Builder<'a> {
    st: &'a LabState,
    created: Time,
    agents: &'a BTreeMap<String, SocketAddr>,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

impl Builder<'_> {
    /// A stable UUID-shaped uid per object and lab.
    fn uid(&self, kind: &str, ns: &str, name: &str) -> String {
        let seed = format!("{}/{}/{kind}/{ns}/{name}", self.st.prefix, self.created.0);
        let (a, b) = (fnv(&seed), fnv(&format!("{seed}#")));
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    fn meta(&self, kind: &str, ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            uid: Some(self.uid(kind, ns.unwrap_or(""), name)),
            creation_timestamp: Some(self.created.clone()),
            generation: (kind == "DaemonSet").then_some(1),
            ..Default::default()
        }
    }

    fn namespace(&self, name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                labels: Some(map(&[("kubernetes.io/metadata.name", name)])),
                ..self.meta("Namespace", None, name)
            },
            status: Some(NamespaceStatus {
                phase: Some("Active".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(&self, i: usize) -> Node {
        let n = &self.st.nodes[i];
        let addr = |ip: &IpAddr| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        };
        Node {
            metadata: ObjectMeta {
                labels: Some(map(&[
                    ("kubernetes.io/hostname", &n.name),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", "amd64"),
                ])),
                annotations: Some(map(&[(NETNS_ANNOTATION, &n.netns)])),
                ..self.meta("Node", None, &n.name)
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(n.pod_cidr_v4.clone()),
                pod_cidrs: Some(vec![n.pod_cidr_v4.clone(), n.pod_cidr_v6.clone()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    addr(&n.underlay_v4),
                    addr(&n.underlay_v6),
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: n.name.clone(),
                    },
                ]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    message: Some(format!(
                        "lab node: network namespace {} ({} scenario)",
                        n.netns, self.st.scenario
                    )),
                    last_heartbeat_time: Some(self.created.clone()),
                    last_transition_time: Some(self.created.clone()),
                }]),
                node_info: Some(NodeSystemInfo {
                    architecture: "amd64".into(),
                    boot_id: String::new(),
                    container_runtime_version: "none://netpath-lab".into(),
                    kernel_version: kernel_release(),
                    kube_proxy_version: String::new(),
                    kubelet_version: KUBELET_VERSION.into(),
                    machine_id: String::new(),
                    operating_system: "linux".into(),
                    os_image: format!("netpath lab ({} flavour)", self.st.flavour),
                    system_uuid: String::new(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn node_ips(&self, node: &str) -> Vec<IpAddr> {
        self.st
            .node(node)
            .map(|n| vec![n.underlay_v4, n.underlay_v6])
            .unwrap_or_default()
    }

    fn serves(&self, p: &LabPod, svc: &LabService) -> bool {
        svc.endpoints
            .iter()
            .any(|e| Some(e.ip()) == p.ipv4 || Some(e.ip()) == p.ipv6)
    }

    fn conditions(&self, ready: bool) -> Vec<PodCondition> {
        let yes = |t: &str, ok: bool| PodCondition {
            type_: t.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(self.created.clone()),
            ..Default::default()
        };
        vec![
            yes("PodReadyToStartContainers", ready),
            yes("Initialized", true),
            yes("Ready", ready),
            yes("ContainersReady", ready),
            yes("PodScheduled", true),
        ]
    }

    fn pod(&self, p: &LabPod) -> Pod {
        let web = self.st.service("web").is_some_and(|s| self.serves(p, s));
        let ips: Vec<IpAddr> = p.ipv4.iter().chain(&p.ipv6).copied().collect();
        let host = self.node_ips(&p.node);
        let container = Container {
            name: "app".into(),
            image: Some("netpath-lab/none".into()),
            ports: web.then(|| {
                vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: super::topology::POD_PORT.into(),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                labels: Some(map(&[(APP, if web { "web" } else { "client" })])),
                annotations: Some(map(&[
                    (NETNS_ANNOTATION, &p.netns),
                    (HOST_IFACE_ANNOTATION, &p.host_ifname),
                ])),
                ..self.meta("Pod", Some(POD_NAMESPACE), &p.name)
            },
            spec: Some(PodSpec {
                node_name: Some(p.node.clone()),
                containers: vec![container],
                service_account_name: Some("default".into()),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Running".into()),
                conditions: Some(self.conditions(true)),
                host_ip: host.first().map(ToString::to_string),
                host_ips: Some(host_ips(&host)),
                pod_ip: ips.first().map(ToString::to_string),
                pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
                start_time: Some(self.created.clone()),
                qos_class: Some("BestEffort".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "app".into(),
                    image: "netpath-lab/none".into(),
                    image_id: String::new(),
                    ready: true,
                    restart_count: 0,
                    started: Some(true),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(self.created.clone()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn service(&self, s: &LabService) -> Service {
        let families: Vec<String> = s
            .cluster_ips
            .iter()
            .map(|ip| family_name(Family::of(ip)).to_string())
            .collect();
        let target = s.endpoints.first().map_or(s.port, SocketAddr::port);
        let kubernetes = s.name == "kubernetes";
        let port_name = if kubernetes { "https" } else { "http" };
        let mut annotations = BTreeMap::new();
        if !s.stale_cluster_ips.is_empty() {
            let stale: Vec<String> = s.stale_cluster_ips.iter().map(|i| i.to_string()).collect();
            annotations.insert(STALE_IPS_ANNOTATION.to_string(), stale.join(","));
            annotations.insert(
                NOTE_ANNOTATION.to_string(),
                format!(
                    "run {} of {}: clients still hold the ClusterIP(s) of the previous run, which nothing serves",
                    self.st.run, self.st.scenario
                ),
            );
        }
        Service {
            metadata: ObjectMeta {
                labels: Some(if kubernetes {
                    map(&[("component", "apiserver"), ("provider", "kubernetes")])
                } else {
                    map(&[(APP, &s.name)])
                }),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..self.meta("Service", Some(POD_NAMESPACE), &s.name)
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: s.cluster_ips.first().map(ToString::to_string),
                cluster_ips: Some(s.cluster_ips.iter().map(ToString::to_string).collect()),
                ip_families: Some(families),
                ip_family_policy: Some(
                    if s.cluster_ips.len() > 1 {
                        "PreferDualStack"
                    } else {
                        "SingleStack"
                    }
                    .into(),
                ),
                ports: Some(vec![ServicePort {
                    name: Some(port_name.into()),
                    port: s.port.into(),
                    target_port: Some(IntOrString::Int(target.into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                selector: (!kubernetes).then(|| map(&[(APP, &s.name)])),
                session_affinity: Some("None".into()),
                internal_traffic_policy: Some("Cluster".into()),
                ..Default::default()
            }),
            status: Some(Default::default()),
        }
    }

    /// One slice per address family of the Service's endpoints (what the endpoint
    /// controllers write: the `kubernetes` Service's is named after it and has no pod).
    fn endpoint_slices(&self, s: &LabService) -> Vec<EndpointSlice> {
        let kubernetes = s.name == "kubernetes";
        [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter_map(|fam| {
                let eps: Vec<&SocketAddr> = s
                    .endpoints
                    .iter()
                    .filter(|e| Family::of(&e.ip()) == fam)
                    .collect();
                let first = eps.first()?;
                let name = if kubernetes {
                    s.name.clone()
                } else {
                    format!("{}-{}", s.name, family_name(fam).to_lowercase())
                };
                let endpoints = eps
                    .iter()
                    .map(|e| {
                        let pod = self
                            .st
                            .pods
                            .iter()
                            .find(|p| p.ipv4 == Some(e.ip()) || p.ipv6 == Some(e.ip()));
                        Endpoint {
                            addresses: vec![e.ip().to_string()],
                            conditions: Some(EndpointConditions {
                                ready: Some(true),
                                serving: Some(true),
                                terminating: Some(false),
                            }),
                            node_name: pod.map(|p| p.node.clone()),
                            target_ref: pod.map(|p| k8s_openapi::api::core::v1::ObjectReference {
                                kind: Some("Pod".into()),
                                namespace: Some(POD_NAMESPACE.into()),
                                name: Some(p.name.clone()),
                                uid: Some(self.uid("Pod", POD_NAMESPACE, &p.name)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }
                    })
                    .collect();
                Some(EndpointSlice {
                    metadata: ObjectMeta {
                        labels: Some(map(&[
                            ("kubernetes.io/service-name", &s.name),
                            ("endpointslice.kubernetes.io/managed-by", "netpath-lab"),
                        ])),
                        ..self.meta("EndpointSlice", Some(POD_NAMESPACE), &name)
                    },
                    address_type: family_name(fam).into(),
                    endpoints,
                    ports: Some(vec![EndpointPort {
                        name: Some(if kubernetes { "https" } else { "http" }.into()),
                        port: Some(first.port().into()),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                })
            })
            .collect()
    }

    fn agent_container(&self) -> Container {
        Container {
            name: "agent".into(),
            image: Some("netpath-agent:lab".into()),
            args: Some(
                [
                    "agent",
                    "--node",
                    "$(NODE_NAME)",
                    "--listen",
                    &format!("0.0.0.0:{AGENT_PORT}"),
                ]
                .map(String::from)
                .to_vec(),
            ),
            env: Some(vec![EnvVar {
                name: "NODE_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.nodeName".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(vec![ContainerPort {
                name: Some("grpc".into()),
                container_port: AGENT_PORT.into(),
                host_port: Some(AGENT_PORT.into()),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn agent_spec(&self, node: Option<&str>) -> PodSpec {
        PodSpec {
            node_name: node.map(Into::into),
            host_network: Some(true),
            host_pid: Some(true),
            containers: vec![self.agent_container()],
            service_account_name: Some(AGENT_NAME.into()),
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn daemon_set(&self) -> DaemonSet {
        let labels = map(&[(AGENT_LABEL, AGENT_NAME)]);
        let n = self.st.nodes.len() as i32;
        let ready = self
            .st
            .nodes
            .iter()
            .filter(|node| self.agents.contains_key(&node.name))
            .count() as i32;
        DaemonSet {
            metadata: ObjectMeta {
                labels: Some(labels.clone()),
                annotations: Some(map(&[(NOTE_ANNOTATION, AGENT_NOTE)])),
                ..self.meta("DaemonSet", Some(AGENT_NAMESPACE), AGENT_NAME)
            },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        annotations: Some(map(&[(
                            DEPLOYED_AGENT_PORT_ANNOTATION,
                            &AGENT_PORT.to_string(),
                        )])),
                        ..Default::default()
                    }),
                    spec: Some(self.agent_spec(None)),
                },
                ..Default::default()
            }),
            status: Some(DaemonSetStatus {
                desired_number_scheduled: n,
                current_number_scheduled: n,
                updated_number_scheduled: Some(n),
                number_misscheduled: 0,
                number_ready: ready,
                number_available: Some(ready),
                number_unavailable: Some(n - ready),
                observed_generation: Some(1),
                ..Default::default()
            }),
        }
    }

    /// The agent pod of a node, scheduled on the host network: Running on 127.0.0.1 with its
    /// real port when the lab runs the node's agent, else Pending; its annotations say where
    /// the agent listens (or would).
    fn agent_pod(&self, node: &str) -> Pod {
        let name = format!("{AGENT_NAME}-{node}");
        let running = self.agents.get(node);
        let host = match running {
            Some(addr) => vec![addr.ip()],
            None => self.node_ips(node),
        };
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: AGENT_NAME.into(),
            uid: self.uid("DaemonSet", AGENT_NAMESPACE, AGENT_NAME),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let port = running.map_or(AGENT_PORT, SocketAddr::port).to_string();
        let note = if running.is_some() {
            RUNNING_NOTE
        } else {
            AGENT_NOTE
        };
        let netns = self
            .st
            .node(node)
            .map(|n| n.netns.clone())
            .unwrap_or_default();
        Pod {
            metadata: ObjectMeta {
                labels: Some(map(&[(AGENT_LABEL, AGENT_NAME)])),
                annotations: Some({
                    let mut a = map(&[
                        (AGENT_PORT_ANNOTATION, &port),
                        (DEPLOYED_AGENT_PORT_ANNOTATION, &port),
                        (NETNS_ANNOTATION, &netns),
                        (NOTE_ANNOTATION, note),
                    ]);
                    // Only the lab's underlay namespace reaches its nodes' addresses.
                    if running.is_some() {
                        a.insert(DIAL_NETNS_ANNOTATION.into(), self.st.underlay.netns.clone());
                    }
                    a
                }),
                owner_references: Some(vec![owner]),
                ..self.meta("Pod", Some(AGENT_NAMESPACE), &name)
            },
            spec: Some(self.agent_spec(Some(node))),
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(
                    if running.is_some() {
                        "Running"
                    } else {
                        "Pending"
                    }
                    .into(),
                ),
                conditions: Some(self.conditions(running.is_some())),
                host_ip: host.first().map(ToString::to_string),
                host_ips: Some(host_ips(&host)),
                pod_ip: host.first().map(ToString::to_string),
                pod_ips: Some(host.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
                start_time: Some(self.created.clone()),
                qos_class: Some("BestEffort".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "agent".into(),
                    image: "netpath-agent:lab".into(),
                    image_id: String::new(),
                    ready: running.is_some(),
                    restart_count: 0,
                    started: Some(running.is_some()),
                    state: Some(if running.is_some() {
                        ContainerState {
                            running: Some(ContainerStateRunning {
                                started_at: Some(self.created.clone()),
                            }),
                            ..Default::default()
                        }
                    } else {
                        ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some("LabRunsNoAgent".into()),
                                message: Some(AGENT_NOTE.into()),
                            }),
                            ..Default::default()
                        }
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }
}

const RUNNING_NOTE: &str = "the lab runs this node's agent in the node's namespace on hostIP \
                            (its port in the annotation; gRPC, mutual TLS with the lab's tls/ \
                            directory), reached from the lab's underlay namespace";
const AGENT_NOTE: &str = "the lab runs no agent: on a real node this pod's agent listens on \
                          hostIP:7101 (gRPC, mutual TLS)";

fn host_ips(ips: &[IpAddr]) -> Vec<HostIP> {
    ips.iter().map(|ip| HostIP { ip: ip.to_string() }).collect()
}

/// This machine's kernel release (the lab's nodes share its kernel).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{plan, scenarios, PlanContext};
    use netpath_k8s::apiserver::{selector::Selector, Resource};
    use serde_json::Value;

    fn set_of(name: &str, run: u32) -> (LabState, ObjectSet) {
        let st = plan(
            scenarios::find(name).unwrap(),
            &PlanContext {
                prefix: "np".into(),
                nodes: 2,
                run,
            },
        )
        .unwrap()
        .state;
        let set = objects(&st, "2026-11-29T10:00:00Z".parse().unwrap()).unwrap();
        (st, set)
    }

    fn get<'a>(set: &'a ObjectSet, r: Resource, ns: Option<&str>, name: &str) -> &'a Value {
        &set.get(r, ns, name)
            .unwrap_or_else(|| panic!("{r:?} {name}"))
            .json
    }

    fn strs(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect()
    }

    #[test]
    fn every_scenario_builds_a_consistent_cluster() {
        for sc in scenarios::SCENARIOS {
            let (st, set) = set_of(sc.name, 1);
            set.check_namespaces().unwrap();
            let all = Selector::default();
            assert_eq!(set.list(Resource::Nodes, None, &all).len(), 2);
            assert_eq!(
                set.list(Resource::Pods, Some(POD_NAMESPACE), &all).len(),
                st.pods.len()
            );
            assert_eq!(
                set.list(Resource::Services, None, &all).len(),
                st.services.len()
            );
            for p in &st.pods {
                let pod = get(&set, Resource::Pods, Some(POD_NAMESPACE), &p.name);
                let want: Vec<String> = p
                    .ipv4
                    .iter()
                    .chain(&p.ipv6)
                    .map(|i| i.to_string())
                    .collect();
                let got: Vec<&str> = pod["status"]["podIPs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["ip"].as_str().unwrap())
                    .collect();
                assert_eq!(got, want, "{}: {} podIPs", sc.name, p.name);
                assert_eq!(pod["spec"]["nodeName"], p.node.as_str());
                assert_eq!(pod["status"]["phase"], "Running");
                assert_eq!(
                    pod["metadata"]["annotations"][NETNS_ANNOTATION],
                    p.netns.as_str()
                );
            }
            // Every Service endpoint appears in exactly one slice of its family.
            for s in &st.services {
                let sel = Selector::parse(
                    Some(&format!("kubernetes.io/service-name={}", s.name)),
                    None,
                )
                .unwrap();
                let mut seen: Vec<String> = Vec::new();
                for slice in set.list(Resource::EndpointSlices, None, &sel) {
                    let fam = slice.json["addressType"].as_str().unwrap().to_string();
                    for e in slice.json["endpoints"].as_array().unwrap() {
                        let ip: IpAddr = e["addresses"][0].as_str().unwrap().parse().unwrap();
                        assert_eq!(family_name(Family::of(&ip)), fam);
                        seen.push(
                            SocketAddr::new(
                                ip,
                                slice.json["ports"][0]["port"].as_u64().unwrap() as u16,
                            )
                            .to_string(),
                        );
                    }
                }
                let mut want: Vec<String> = s.endpoints.iter().map(|e| e.to_string()).collect();
                want.sort();
                seen.sort();
                assert_eq!(seen, want, "{}: svc/{}", sc.name, s.name);
            }
        }
    }

    #[test]
    fn nodes_have_both_families_and_pod_cidrs() {
        let (st, set) = set_of("flannel", 1);
        let n = get(&set, Resource::Nodes, None, "node-2");
        let internal: Vec<&str> = n["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .map(|a| a["address"].as_str().unwrap())
            .collect();
        assert_eq!(internal, ["198.18.0.12", "fd00:198:18:2::10"]);
        assert_eq!(
            strs(&n["spec"]["podCIDRs"]),
            [
                st.nodes[1].pod_cidr_v4.as_str(),
                st.nodes[1].pod_cidr_v6.as_str()
            ]
        );
        let web = get(&set, Resource::Services, Some("default"), "web");
        assert_eq!(strs(&web["spec"]["ipFamilies"]), ["IPv4", "IPv6"]);
        assert_eq!(
            strs(&web["spec"]["clusterIPs"]),
            ["10.96.0.10", "fd00:10:96::10"]
        );
        assert_eq!(web["spec"]["ipFamilyPolicy"], "PreferDualStack");
        assert_eq!(web["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(
            get(&set, Resource::Pods, Some("default"), "pod-b")["metadata"]["labels"]["app"],
            "web"
        );
        assert_eq!(
            get(&set, Resource::Pods, Some("default"), "pod-a")["metadata"]["labels"]["app"],
            "client"
        );
    }

    #[test]
    fn seed_003_kubernetes_service_is_ipv4_with_an_ipv6_slice() {
        let (_, set) = set_of("k0s-service-family", 1);
        let k = get(&set, Resource::Services, Some("default"), "kubernetes");
        assert_eq!(strs(&k["spec"]["clusterIPs"]), ["10.96.0.1"]);
        assert_eq!(strs(&k["spec"]["ipFamilies"]), ["IPv4"]);
        assert_eq!(k["spec"]["ipFamilyPolicy"], "SingleStack");
        assert!(k["spec"].get("selector").is_none());
        let slice = get(
            &set,
            Resource::EndpointSlices,
            Some("default"),
            "kubernetes",
        );
        assert_eq!(slice["addressType"], "IPv6");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "fd00:198:18:1::10");
        assert_eq!(slice["ports"][0]["port"], 6443);
        assert!(slice["endpoints"][0].get("targetRef").is_none());
    }

    #[test]
    fn seed_004_service_family_flips_and_keeps_the_stale_ip() {
        let (_, one) = set_of("vcluster-service-flip", 1);
        let (_, two) = set_of("vcluster-service-flip", 2);
        let w1 = get(&one, Resource::Services, Some("default"), "web");
        let w2 = get(&two, Resource::Services, Some("default"), "web");
        assert_eq!(strs(&w1["spec"]["ipFamilies"]), ["IPv4"]);
        assert_eq!(strs(&w2["spec"]["ipFamilies"]), ["IPv6"]);
        assert_eq!(w2["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(
            w2["metadata"]["annotations"][STALE_IPS_ANNOTATION],
            w1["spec"]["clusterIP"]
        );
        assert!(one
            .get(Resource::EndpointSlices, Some("default"), "web-ipv6")
            .is_none());
        assert_eq!(
            get(&two, Resource::EndpointSlices, Some("default"), "web-ipv6")["addressType"],
            "IPv6"
        );
    }

    #[test]
    fn seed_001_withdrawn_pod_has_only_ipv4() {
        let (_, set) = set_of("calico-v6-withdrawn", 1);
        let d = get(&set, Resource::Pods, Some("default"), "pod-d");
        assert_eq!(
            d["status"]["podIPs"],
            serde_json::json!([{"ip": "10.244.2.3"}])
        );
        let v6 = get(&set, Resource::EndpointSlices, Some("default"), "web-ipv6");
        let addrs: Vec<&str> = v6["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["addresses"][0].as_str().unwrap())
            .collect();
        assert_eq!(addrs, ["fd00:10:244:1::3"]);
    }

    #[test]
    fn agents_are_daemonset_pods_on_every_node() {
        let (st, set) = set_of("calico", 1);
        let sel = Selector::parse(
            Some("app.kubernetes.io/name=netpath-agent"),
            Some("spec.nodeName=node-2"),
        )
        .unwrap();
        let agents = set.list(Resource::Pods, None, &sel);
        assert_eq!(agents.len(), 1);
        let a = &agents[0].json;
        assert_eq!(a["metadata"]["namespace"], AGENT_NAMESPACE);
        assert_eq!(a["spec"]["hostNetwork"], true);
        assert_eq!(a["status"]["hostIP"], st.nodes[1].underlay_v4.to_string());
        assert_eq!(a["metadata"]["annotations"][AGENT_PORT_ANNOTATION], "7101");
        assert_eq!(
            a["metadata"]["annotations"][DEPLOYED_AGENT_PORT_ANNOTATION],
            "7101"
        );
        assert_eq!(a["spec"]["containers"][0]["ports"][0]["name"], "grpc");
        assert_eq!(a["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        let ds = get(
            &set,
            Resource::DaemonSets,
            Some(AGENT_NAMESPACE),
            AGENT_NAME,
        );
        assert_eq!(ds["status"]["desiredNumberScheduled"], 2);
        assert_eq!(
            ds["metadata"]["uid"],
            a["metadata"]["ownerReferences"][0]["uid"]
        );
    }

    #[test]
    fn agent_pods_run_where_the_lab_runs_agents_and_wait_elsewhere() {
        let (st, _) = set_of("flannel", 1);
        let at = SocketAddr::new(st.nodes[0].underlay_v4, 7101);
        let agents: BTreeMap<String, SocketAddr> = [("node-1".to_string(), at)].into();
        let set =
            objects_with_agents(&st, "2026-11-29T10:00:00Z".parse().unwrap(), &agents).unwrap();
        let pod = |node: &str| {
            get(
                &set,
                Resource::Pods,
                Some(AGENT_NAMESPACE),
                &format!("{AGENT_NAME}-{node}"),
            )
        };
        let up = pod("node-1");
        assert_eq!(up["status"]["phase"], "Running");
        assert_eq!(up["status"]["hostIP"], at.ip().to_string());
        assert_eq!(up["status"]["podIP"], at.ip().to_string());
        assert_eq!(
            up["metadata"]["annotations"][DEPLOYED_AGENT_PORT_ANNOTATION],
            "7101"
        );
        assert_eq!(
            up["metadata"]["annotations"][DIAL_NETNS_ANNOTATION],
            st.underlay.netns
        );
        assert_eq!(up["status"]["containerStatuses"][0]["ready"], true);
        assert!(up["status"]["containerStatuses"][0]["state"]["running"].is_object());
        let ready = up["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        let down = pod("node-2");
        assert_eq!(down["status"]["phase"], "Pending");
        assert_eq!(
            down["status"]["hostIP"],
            st.nodes[1].underlay_v4.to_string()
        );
        assert_eq!(
            down["metadata"]["annotations"][DEPLOYED_AGENT_PORT_ANNOTATION],
            "7101"
        );
        assert!(down["metadata"]["annotations"][DIAL_NETNS_ANNOTATION].is_null());
        assert_eq!(
            down["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "LabRunsNoAgent"
        );
        let ds = get(
            &set,
            Resource::DaemonSets,
            Some(AGENT_NAMESPACE),
            AGENT_NAME,
        );
        assert_eq!(ds["status"]["numberReady"], 1);
        assert_eq!(ds["status"]["numberUnavailable"], 1);
        // Without agents every pod waits, as before.
        let (_, none) = set_of("flannel", 1);
        let p = get(
            &none,
            Resource::Pods,
            Some(AGENT_NAMESPACE),
            &format!("{AGENT_NAME}-node-1"),
        );
        assert_eq!(p["status"]["phase"], "Pending");
    }

    /// What the API sends reads back into the Kubernetes types (as kube-rs reads it): every
    /// list, and a watch's events.
    #[test]
    fn served_json_parses_as_kubernetes_types() {
        use k8s_openapi::{apimachinery::pkg::apis::meta::v1::WatchEvent, List};
        use netpath_k8s::apiserver::route::{answer, Reply, Request};
        fn list<K: k8s_openapi::ListableResource + serde::de::DeserializeOwned>(
            set: &ObjectSet,
            path: &str,
        ) -> Vec<K> {
            let req = Request {
                method: "GET",
                path,
                query: "",
                accept: "application/json",
            };
            let Reply::Json { status: 200, body } = answer(set, "127.0.0.1:1", &req) else {
                panic!("{path}: not a 200 JSON answer")
            };
            serde_json::from_value::<List<K>>(body)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .items
        }
        for sc in scenarios::SCENARIOS {
            let (st, set) = set_of(sc.name, 2);
            assert_eq!(list::<Namespace>(&set, "/api/v1/namespaces").len(), 2);
            assert_eq!(list::<Node>(&set, "/api/v1/nodes").len(), st.nodes.len());
            let pods = list::<Pod>(&set, "/api/v1/namespaces/default/pods");
            assert_eq!(pods.len(), st.pods.len());
            assert_eq!(
                list::<Service>(&set, "/api/v1/services").len(),
                st.services.len()
            );
            assert!(
                !list::<EndpointSlice>(&set, "/apis/discovery.k8s.io/v1/endpointslices").is_empty()
            );
            assert_eq!(list::<DaemonSet>(&set, "/apis/apps/v1/daemonsets").len(), 1);
            let req = Request {
                method: "GET",
                path: "/api/v1/pods",
                query: "watch=1&timeoutSeconds=1",
                accept: "application/json",
            };
            let Reply::Watch { events, .. } = answer(&set, "127.0.0.1:1", &req) else {
                panic!("not a watch")
            };
            for ev in events {
                let ev: WatchEvent<Pod> = serde_json::from_value(ev).expect("a WatchEvent<Pod>");
                assert!(matches!(ev, WatchEvent::Added(_)));
            }
        }
    }
}
