//! Alerts: what the detectors raise ([`model`]) and their delivery to
//! webhooks and Alertmanager ([`delivery`]).
pub mod dedupe;
pub mod delivery;
pub mod delivery_config;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod payload;
pub mod receiver;

pub use delivery_config::AlertsConfig;
