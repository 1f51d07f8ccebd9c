//! Helpers for the integration tests that run the real agent on the real kernel.
