//! Helpers for the integration tests that run the real agent on the real kernel.
//!
//! - [`tools`]: find external tools; skip with a reason, or fail in CI, when missing.
//! - [`loopback`]: real Prometheus/Alertmanager on 127.0.0.1 and a tiny HTTP client.
//! - [`dashboard`]: the Grafana dashboard's queries, ready for Prometheus.
pub mod dashboard;
pub mod loopback;
pub mod tools;
