//! Alerts: what the detectors raise ([`model`]) and their delivery.
pub mod model;
