//! Helpers for the integration tests that run the real agent on the real kernel.
//!
//! - [`child`]: child processes with bounded waits, killed on drop.
//! - [`env`]: skip with a reason, or fail in CI, when a capability or tool is missing.
//! - [`netns`]: network namespaces joined by a veth pair, nftables loss, `nstat`.
//! - [`tcp_traffic`]: bounded TCP scenarios (bulk transfer, connects), also run
//!   as the `sg-traffic` binary so traffic comes from another process than the
//!   agent (the probes skip the agent's own sockets).
//! - [`kernel_events`]: load the probes and collect their raw events.
pub mod child;
pub mod env;
pub mod kernel_events;
pub mod netns;
pub mod tcp_traffic;
