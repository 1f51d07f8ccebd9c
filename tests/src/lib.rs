//! Helpers for the integration tests that run the real agent on the real kernel.
//!
//! - [`agent`]: the real `sloguard` binary as a child process; scrape it.
//! - [`env`]: what a test needs from the machine (root, BTF, tools); skip
//!   with a reason, or fail in CI, when missing.
//! - [`tools`]: find external tools (same skip/fail rule).
//! - [`loopback`]: real Prometheus/Alertmanager on 127.0.0.1 and a tiny HTTP client.
//! - [`dashboard`]: the Grafana dashboard's queries, ready for Prometheus.
//! - [`otlp`]: a real OTLP receiver (gRPC and HTTP/protobuf).
//! - [`prom`]: reading Prometheus text in assertions.
pub mod agent;
pub mod dashboard;
pub mod env;
pub mod loopback;
pub mod otlp;
pub mod prom;
pub mod tools;
