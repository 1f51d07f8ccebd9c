//! Kubernetes identity (temporary module list of the `k8s` branch; the lead
//! merges it with the cgroup half).
pub mod config;
pub mod identity;
pub mod pods;
