//! Helpers for the integration tests that run the real agent on the real
//! kernel: start and scrape the agent, generate traffic, check prerequisites.
pub mod agent;
pub mod env;
pub mod otlp;
pub mod prom;
