//! Helpers for the integration tests that run the real agent on the real kernel.
//!
//! - [`agent`]: the real `sloguard` binary as a child process; scrape it.
//! - [`env`]: what a test needs from the machine (root, BTF, tools); skip
//!   with a reason, or fail in CI, when missing.
//! - [`tools`]: find external tools (same skip/fail rule).
//! - [`child`]: child processes with bounded waits, killed on drop.
//! - [`netns`]: network namespaces joined by a veth pair, nftables loss, `nstat`.
//! - [`tcp_traffic`]: bounded TCP scenarios (bulk transfer, connects), also run
//!   as the `sg-traffic` binary so traffic comes from another process than the
//!   agent (the probes skip the agent's own sockets).
//! - [`kernel_events`]: load the probes and collect their raw events.
//! - [`loopback`]: real Prometheus/Alertmanager on 127.0.0.1 and a tiny HTTP client.
//! - [`dashboard`]: the Grafana dashboard's queries, ready for Prometheus.
//! - [`otlp`]: a real OTLP receiver (gRPC and HTTP/protobuf).
//! - [`prom`]: reading Prometheus text in assertions.
//! - [`pyserver`]: Python's `http.server` as a peer.
//! - [`flaky`]: a Python server with a switchable fault (slow + 5xx), as in the demo.
//! - [`webhook`]: a recording webhook receiver, a steady keep-alive client, bounded waits.
pub mod agent;
pub mod child;
pub mod dashboard;
pub mod env;
pub mod events;
pub mod flaky;
pub mod kernel_events;
pub mod loopback;
pub mod netns;
pub mod nginx;
pub mod otlp;
pub mod prom;
pub mod pyserver;
pub mod tcp_traffic;
pub mod tools;
pub mod webhook;
