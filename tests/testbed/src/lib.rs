//! The test peers: real processes the integration tests, the benches
//! (`cargo xtask bench`) and the demo run beside the agent. One copy of each,
//! shared by the `tests` crate (which re-exports every module), `xtask` and
//! the agent's own integration tests.
//!
//! - [`agent`]: the real `sloguard` binary as a child process; scrape it.
//! - [`env`]: what a test needs from the machine (root, BTF, tools); skip
//!   with a reason, or fail in CI, when missing; free loopback ports.
//! - [`tools`]: find external tools (same skip/fail rule).
//! - [`certs`]: a test CA and a leaf certificate for 127.0.0.1 (openssl CLI).
//! - [`child`]: child processes with bounded waits, killed on drop.
//! - [`netns`]: network namespaces joined by a veth pair, nftables loss, `nstat`.
//! - [`nginx`]: a real nginx under a temp prefix, its access log parsed.
//! - [`gateway`]: HAProxy and Caddy from the docs' fuse recipes, raw requests through them.
//! - [`tcp_traffic`]: bounded TCP scenarios (bulk transfer, connects), also run
//!   as the `sg-traffic` binary so traffic comes from another process than the
//!   agent (the probes skip the agent's own sockets).
//! - [`loopback`]: real Prometheus/Alertmanager on 127.0.0.1 and a tiny HTTP client.
//! - [`dashboard`]: the Grafana dashboard's queries, ready for Prometheus.
//! - [`prom`]: reading Prometheus text in assertions.
//! - [`pyserver`]: Python's `http.server` as a peer.
//! - [`shop`]: a Python service with a switchable fault (by path or gray cohort);
//!   `Shop::flaky()` is the SLO/fuse tests' backend.
//! - [`webhook`]: a recording webhook receiver, a steady keep-alive client, bounded waits.
pub mod agent;
pub mod certs;
pub mod child;
pub mod dashboard;
pub mod env;
pub mod gateway;
pub mod loopback;
pub mod netns;
pub mod nginx;
pub mod prom;
pub mod pyserver;
pub mod shop;
pub mod tcp_traffic;
pub mod tools;
pub mod webhook;

/// The repository root (this crate lives in `tests/testbed`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}
