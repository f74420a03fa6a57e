//! The objects the API serves: which resources exist (kind, plural, group, scope), the fixed
//! set of objects (k8s-openapi types, stored as their exact JSON), and selection by namespace,
//! name, label and field selectors.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Namespace, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    Metadata,
};
use serde::Serialize;
use serde_json::Value;

use super::{selector::Selector, ApiError};

/// A resource the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Namespaces,
    Nodes,
    Pods,
    Services,
    EndpointSlices,
    DaemonSets,
}

/// An API group and version the server serves (`""` is the core group, `/api/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupVersion {
    pub group: &'static str,
    pub version: &'static str,
}

impl GroupVersion {
    /// `v1`, `apps/v1`.
    pub fn api_version(self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Every group version served, core first.
pub const GROUP_VERSIONS: [GroupVersion; 3] = [
    GroupVersion {
        group: "",
        version: "v1",
    },
    GroupVersion {
        group: "apps",
        version: "v1",
    },
    GroupVersion {
        group: "discovery.k8s.io",
        version: "v1",
    },
];

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Namespaces,
        Resource::Nodes,
        Resource::Pods,
        Resource::Services,
        Resource::EndpointSlices,
        Resource::DaemonSets,
    ];

    /// The URL segment: `pods`.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespaces",
            Resource::Nodes => "nodes",
            Resource::Pods => "pods",
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::DaemonSets => "daemonsets",
        }
    }

    pub fn singular(self) -> &'static str {
        self.plural().trim_end_matches('s')
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Nodes => "Node",
            Resource::Pods => "Pod",
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::DaemonSets => "DaemonSet",
        }
    }

    pub fn group_version(self) -> GroupVersion {
        match self {
            Resource::DaemonSets => GROUP_VERSIONS[1],
            Resource::EndpointSlices => GROUP_VERSIONS[2],
            _ => GROUP_VERSIONS[0],
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Resource::Namespaces | Resource::Nodes)
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Namespaces => &["ns"],
            Resource::Nodes => &["no"],
            Resource::Pods => &["po"],
            Resource::Services => &["svc"],
            Resource::EndpointSlices => &[],
            Resource::DaemonSets => &["ds"],
        }
    }

    /// `kubectl get all` includes these.
    pub fn categories(self) -> &'static [&'static str] {
        match self {
            Resource::Pods | Resource::Services | Resource::DaemonSets => &["all"],
            _ => &[],
        }
    }

    /// The resource served as `plural` in `group`, if any.
    pub fn find(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.plural() == plural && r.group_version().group == group)
    }

    /// Field selectors the real API server accepts for this resource (besides
    /// `metadata.name` and `metadata.namespace`), as JSON pointers.
    fn fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Resource::Pods => &[
                ("spec.nodeName", "/spec/nodeName"),
                ("spec.hostNetwork", "/spec/hostNetwork"),
                ("spec.serviceAccountName", "/spec/serviceAccountName"),
                ("status.phase", "/status/phase"),
                ("status.podIP", "/status/podIP"),
            ],
            Resource::Services => &[
                ("spec.clusterIP", "/spec/clusterIP"),
                ("spec.type", "/spec/type"),
            ],
            Resource::Nodes => &[("spec.unschedulable", "/spec/unschedulable")],
            Resource::Namespaces => &[("status.phase", "/status/phase")],
            Resource::EndpointSlices => &[("addressType", "/addressType")],
            Resource::DaemonSets => &[],
        }
    }

    fn of<K: k8s_openapi::Resource>() -> Option<Resource> {
        Resource::find(K::GROUP, K::URL_PATH_SEGMENT)
    }
}

/// One stored object: where it lives and its JSON exactly as Kubernetes writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub json: Value,
}

impl Object {
    /// The value of a field selector's field (`spec.nodeName`), `""` when unset (as the
    /// API server compares it); `None` when the resource does not support the field.
    pub fn field(&self, field: &str) -> Option<String> {
        let pointer = match field {
            "metadata.name" => "/metadata/name",
            "metadata.namespace" => "/metadata/namespace",
            _ => {
                self.resource
                    .fields()
                    .iter()
                    .find(|(name, _)| *name == field)?
                    .1
            }
        };
        Some(match self.json.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            // Booleans the server omits when false are `false` to a selector.
            _ if matches!(field, "spec.hostNetwork" | "spec.unschedulable") => "false".into(),
            _ => String::new(),
        })
    }
}

/// The fixed set of objects an [`ApiServer`](super::ApiServer) serves. Every object carries
/// the set's resource version (nothing ever changes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectSet {
    objects: Vec<Object>,
    resource_version: u64,
}

impl ObjectSet {
    pub fn new(resource_version: u64) -> Self {
        ObjectSet {
            objects: Vec::new(),
            resource_version: resource_version.max(1),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    pub fn add_namespace(&mut self, o: Namespace) -> Result<(), ApiError> {
        self.add(o)
    }
    pub fn add_node(&mut self, o: Node) -> Result<(), ApiError> {
        self.add(o)
    }
    pub fn add_pod(&mut self, o: Pod) -> Result<(), ApiError> {
        self.add(o)
    }
    pub fn add_service(&mut self, o: Service) -> Result<(), ApiError> {
        self.add(o)
    }
    pub fn add_endpoint_slice(&mut self, o: EndpointSlice) -> Result<(), ApiError> {
        self.add(o)
    }
    pub fn add_daemon_set(&mut self, o: DaemonSet) -> Result<(), ApiError> {
        self.add(o)
    }

    /// Adds any served object; fills in its resource version. A namespaced object needs a
    /// namespace, a cluster-scoped one must have none, and names are unique per namespace.
    pub fn add<K>(&mut self, mut obj: K) -> Result<(), ApiError>
    where
        K: k8s_openapi::Resource + Metadata<Ty = ObjectMeta> + Serialize,
    {
        let resource = Resource::of::<K>().ok_or_else(|| {
            ApiError::Invalid(format!("{} is not a resource this server serves", K::KIND))
        })?;
        let meta = obj.metadata_mut();
        meta.resource_version = Some(self.resource_version.to_string());
        let name = meta
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::Invalid(format!("a {} without a name", K::KIND)))?;
        let namespace = meta.namespace.clone().filter(|n| !n.is_empty());
        if namespace.is_some() != resource.namespaced() {
            return Err(ApiError::Invalid(format!(
                "{} {name}: {} resource {}",
                K::KIND,
                if resource.namespaced() {
                    "a namespaced"
                } else {
                    "a cluster-scoped"
                },
                if resource.namespaced() {
                    "needs a namespace"
                } else {
                    "has no namespace"
                }
            )));
        }
        if self
            .objects
            .iter()
            .any(|o| o.resource == resource && o.namespace == namespace && o.name == name)
        {
            return Err(ApiError::Invalid(format!("{} {name} added twice", K::KIND)));
        }
        let labels = meta.labels.clone().unwrap_or_default();
        let json = serde_json::to_value(&obj).map_err(|e| ApiError::Invalid(e.to_string()))?;
        self.objects.push(Object {
            resource,
            namespace,
            name,
            labels,
            json,
        });
        Ok(())
    }

    /// One object by name (`namespace` for namespaced resources).
    pub fn get(&self, resource: Resource, namespace: Option<&str>, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| {
            o.resource == resource && o.namespace.as_deref() == namespace && o.name == name
        })
    }

    /// The objects of `resource` in `namespace` (every namespace when `None`) that match the
    /// selector, in the order (namespace, name) as the API server lists them.
    pub fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Vec<&Object> {
        let mut out: Vec<&Object> = self
            .objects
            .iter()
            .filter(|o| o.resource == resource)
            .filter(|o| namespace.is_none() || o.namespace.as_deref() == namespace)
            .filter(|o| selector.matches(o))
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Every namespace an object lives in, and the Namespace objects: a namespaced object in
    /// a namespace the set does not hold is a mistake of whoever built the set.
    pub fn check_namespaces(&self) -> Result<(), ApiError> {
        for o in &self.objects {
            if let Some(ns) = &o.namespace {
                if self.get(Resource::Namespaces, None, ns).is_none() {
                    return Err(ApiError::Invalid(format!(
                        "{} {ns}/{} is in a namespace the set does not hold",
                        o.resource.kind(),
                        o.name
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn namespace(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn resources_know_their_group_scope_and_names() {
        assert_eq!(
            Resource::find("apps", "daemonsets"),
            Some(Resource::DaemonSets)
        );
        assert_eq!(Resource::find("", "daemonsets"), None);
        assert_eq!(
            Resource::find("discovery.k8s.io", "endpointslices"),
            Some(Resource::EndpointSlices)
        );
        assert_eq!(Resource::Pods.singular(), "pod");
        assert_eq!(Resource::EndpointSlices.singular(), "endpointslice");
        assert!(!Resource::Nodes.namespaced() && Resource::Services.namespaced());
        assert_eq!(
            Resource::of::<EndpointSlice>(),
            Some(Resource::EndpointSlices)
        );
        assert_eq!(Resource::of::<Namespace>(), Some(Resource::Namespaces));
        assert_eq!(
            Resource::DaemonSets.group_version().api_version(),
            "apps/v1"
        );
        for r in Resource::ALL {
            assert_eq!(Resource::find(r.group_version().group, r.plural()), Some(r));
        }
    }

    #[test]
    fn objects_keep_kubernetes_json_and_the_set_version() {
        let mut set = ObjectSet::new(7);
        set.add_namespace(namespace("default")).unwrap();
        set.add_pod(pod("default", "pod-a", "node-1", &[("app", "web")]))
            .unwrap();
        let o = set.get(Resource::Pods, Some("default"), "pod-a").unwrap();
        assert_eq!(o.json["apiVersion"], "v1");
        assert_eq!(o.json["kind"], "Pod");
        assert_eq!(o.json["metadata"]["resourceVersion"], "7");
        assert_eq!(o.json["spec"]["nodeName"], "node-1");
        assert_eq!(o.field("spec.nodeName").as_deref(), Some("node-1"));
        assert_eq!(o.field("status.phase").as_deref(), Some(""));
        assert_eq!(o.field("spec.clusterIP"), None);
        assert_eq!(o.field("spec.hostNetwork").as_deref(), Some("false"));
        set.check_namespaces().unwrap();
    }

    #[test]
    fn bad_objects_are_refused() {
        let mut set = ObjectSet::new(1);
        set.add_pod(pod("default", "a", "n", &[])).unwrap();
        assert!(set.add_pod(pod("default", "a", "n", &[])).is_err());
        set.add_pod(pod("other", "a", "n", &[])).unwrap();
        assert!(set.check_namespaces().is_err());
        let mut no_ns = pod("", "b", "n", &[]);
        no_ns.metadata.namespace = None;
        assert!(set.add_pod(no_ns).is_err());
        let mut node_in_ns = Node::default();
        node_in_ns.metadata.name = Some("node-1".into());
        node_in_ns.metadata.namespace = Some("default".into());
        assert!(set.add_node(node_in_ns).is_err());
        assert!(set.add_namespace(Namespace::default()).is_err());
    }

    #[test]
    fn lists_filter_by_namespace_and_selector_in_order() {
        let mut set = ObjectSet::new(1);
        set.add_pod(pod("b", "x", "node-2", &[])).unwrap();
        set.add_pod(pod("a", "y", "node-1", &[("app", "web")]))
            .unwrap();
        set.add_pod(pod("a", "x", "node-2", &[("app", "web")]))
            .unwrap();
        let names = |v: Vec<&Object>| -> Vec<String> {
            v.iter()
                .map(|o| format!("{}/{}", o.namespace.as_deref().unwrap_or(""), o.name))
                .collect()
        };
        let all = Selector::default();
        assert_eq!(
            names(set.list(Resource::Pods, None, &all)),
            ["a/x", "a/y", "b/x"]
        );
        assert_eq!(names(set.list(Resource::Pods, Some("b"), &all)), ["b/x"]);
        let sel = Selector::parse(Some("app=web"), Some("spec.nodeName=node-2")).unwrap();
        assert_eq!(names(set.list(Resource::Pods, None, &sel)), ["a/x"]);
        assert!(set.list(Resource::Services, None, &all).is_empty());
    }
}
