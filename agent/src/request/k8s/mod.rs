//! Kubernetes identity of a process. The cgroup path alone gives the pod UID
//! and container id (no API server needed); the names behind them (namespace,
//! pod, workload, `app.kubernetes.io/name`) come from a watch of this node's pods.
pub mod cgroup;
pub mod config;
pub mod identity;
pub mod pod_series;
pub mod pods;

pub use cgroup::{CgroupDriver, ContainerRuntime, PodCgroup, QosClass};
