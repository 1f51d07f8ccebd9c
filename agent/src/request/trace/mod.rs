//! Trace context: extraction and validation of incoming trace headers.
pub mod context;
