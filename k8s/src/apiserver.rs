//! A read-only Kubernetes API over a fixed set of objects (the lab serves its cluster with it).
