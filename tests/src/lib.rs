//! Helpers for the integration tests that run the real agent on the real kernel.
//!
//! The peers (nginx, HAProxy, Caddy, Python servers, Prometheus, network
//! namespaces, the agent process, ports) live in the `testbed` crate, shared
//! with the benches and the demo, and are re-exported here under their old
//! paths. What needs the agent's library stays here:
//!
//! - [`kernel_events`]: load the probes and collect their raw events.
//! - [`events`]: decode ring-buffer records (data and owner events) in tests.
//! - [`otlp`]: a real OTLP receiver (gRPC and HTTP/protobuf).
//! - [`fidelity`]: the agent's view against the peers' records (counts, percentiles).
pub use testbed::{
    agent, certs, child, dashboard, env, gateway, loopback, netns, nginx, prom, pyserver, shop,
    tcp_traffic, tools, webhook,
};

pub mod events;
pub mod fidelity;
pub mod kernel_events;
pub mod otlp;
