//! Helpers for the integration tests that run the real agent on the real kernel.
pub mod env;
pub mod events;
pub mod nginx;
