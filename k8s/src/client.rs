//! Names from a Kubernetes API server (kube-rs): the resolver a real cluster and the lab share.
