//! The read-only status document (`GET /api/v1/status` on the metrics port):
//! per judged route the figures `/metrics` already shows (rate, error ratio,
//! P50/P99 against the SLO target, burn rates, baseline, alerts, fuse state)
//! and the agent's own health figures, as one JSON object. `sloguard status`
//! and `sloguard top` read it; it carries nothing `/metrics` does not, so it
//! needs no token (docs/metrics.md, "Status endpoint").
//!
//! The types derive both `Serialize` (agent) and `Deserialize` (CLI): one
//! definition, so the two cannot drift apart. Fields are only ever added
//! within `v1`; a rename or removal is a new path (`/api/v2/status`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod build;
pub use build::{AgentCounters, EventRate, StatusSource, StatusSources, assemble};

/// Where the document is served, on the metrics listener.
pub const STATUS_PATH: &str = "/api/v1/status";
/// `schema` field of every document served at [`STATUS_PATH`].
pub const STATUS_SCHEMA: &str = "sloguard.status/v1";

/// The whole document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub schema: String,
    pub node: String,
    /// The agent's version (`sloguard --version`).
    pub version: String,
    /// When the document was made (RFC 3339, UTC).
    pub generated_at: String,
    /// SLO evaluation period: route figures are from the last closed one.
    pub period_seconds: f64,
    /// `dry_run` or `enforce`.
    pub fuse_mode: String,
    pub agent: AgentStatus,
    /// Judged routes × gray tags, in no particular order.
    pub routes: Vec<RouteStatus>,
    /// Fuses of routes not in `routes` (forced open before any traffic, or
    /// the route went quiet while fused): a blocked route is never hidden.
    pub other_fuses: Vec<OtherFuse>,
}

/// A fuse of a route the SLO engine does not list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OtherFuse {
    pub service: String,
    pub method: String,
    pub route: String,
    pub fuse: FuseBrief,
}

/// The agent's own figures (the `sloguard_*` self metrics, summed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// False once a hot-path thread died (`/healthz` answers 503).
    pub healthy: bool,
    /// True once the probes are attached (`/readyz`).
    pub ready: bool,
    pub uptime_seconds: f64,
    pub probes_attached: i64,
    /// `sloguard_events_total`, all kinds.
    pub events_total: u64,
    /// Events received per second over the last few seconds.
    pub events_per_second: f64,
    /// `sloguard_events_lost_total`, all reasons.
    pub events_lost_total: u64,
    /// `sloguard_events_lost_total` by reason.
    pub events_lost: BTreeMap<String, u64>,
    /// Distinct (method, route) the SLO engine judges, per service.
    pub routes_per_service: BTreeMap<String, u64>,
    /// `sloguard_route_overflow_requests_total`: requests past a service's
    /// route cap, counted under `/{overflow}`.
    pub route_overflow_requests: u64,
    /// `sloguard_slo_untracked_requests_total`: requests not judged because
    /// the SLO engine's own cap was reached.
    pub slo_untracked_requests: u64,
}

/// One route × gray tag after the last closed period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub service: String,
    pub method: String,
    pub route: String,
    /// Empty for stable traffic.
    pub gray_tag: String,
    /// Requests in the last closed period (`sloguard_route_requests`).
    pub requests: u64,
    /// `requests / period_seconds`.
    pub rate_per_second: f64,
    pub error_ratio: f64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub target_p99_seconds: f64,
    pub target_error_ratio: f64,
    pub baseline_p99_seconds: Option<f64>,
    pub burn_rate: BurnRate,
    /// L1 (`SloguardP99Breach`) firing.
    pub l1: bool,
    /// L2 (`SloguardP99SpikeWith5xxBurst`) firing.
    pub l2: bool,
    /// `SloguardGrayRollback` firing (gray tags only).
    pub gray_rollback: bool,
    /// Every firing alertname.
    pub alerts: Vec<String>,
    /// The route's fuse (shared by all its gray tags).
    pub fuse: FuseBrief,
}

/// `sloguard_slo_burn_rate` by window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BurnRate {
    #[serde(rename = "5m")]
    pub m5: f64,
    #[serde(rename = "1h")]
    pub h1: f64,
    #[serde(rename = "6h")]
    pub h6: f64,
}

/// A route's fuse as far as the status shows it (the admin API has the rest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FuseBrief {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// `force_open` / `force_closed` while an operator override holds.
    pub overridden: Option<String>,
}

impl Default for FuseBrief {
    fn default() -> Self {
        Self {
            state: "closed".into(),
            overridden: None,
        }
    }
}

impl RouteStatus {
    /// "L2", "L1", "gray" or "" (the worst firing level), for tables.
    pub fn level(&self) -> &'static str {
        if self.l2 {
            "L2"
        } else if self.l1 {
            "L1"
        } else if self.gray_rollback {
            "gray"
        } else {
            ""
        }
    }

    /// The worst burn rate of the three windows, what "worst route" sorts by.
    pub fn worst_burn(&self) -> f64 {
        self.burn_rate
            .m5
            .max(self.burn_rate.h1)
            .max(self.burn_rate.h6)
    }
}

#[cfg(test)]
mod tests;
