//! The contract between the detectors (`slo`) and delivery/fusing (`alert`,
//! `fuse`): one [`AlertEvent`] per state change or re-send of an alert.
use std::time::{Duration, SystemTime};

use crate::request::route::RouteKey;

/// The alerts sloguard raises; `alertname` label values are fixed by docs/design.md ("Contracts").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// L1: P99 above its SLO target (warning, notify only).
    P99Breach,
    /// L2: P99 spike together with a 5xx burst (critical, fuse).
    P99SpikeWith5xxBurst,
    /// A gray cohort much worse than stable (warning).
    GrayRollback,
    /// The fuse state file was corrupt or from a newer version and was moved
    /// aside (`fuse.on_bad_state_file: reset`); fusing runs in dry run. Not
    /// about a route: it carries no route labels.
    FuseStateReset,
}

impl AlertKind {
    pub fn alertname(self) -> &'static str {
        match self {
            AlertKind::P99Breach => "SloguardP99Breach",
            AlertKind::P99SpikeWith5xxBurst => "SloguardP99SpikeWith5xxBurst",
            AlertKind::GrayRollback => "SloguardGrayRollback",
            AlertKind::FuseStateReset => "SloguardFuseStateReset",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            // The gateway may still block routes the agent no longer knows.
            AlertKind::P99SpikeWith5xxBurst | AlertKind::FuseStateReset => "critical",
            AlertKind::P99Breach | AlertKind::GrayRollback => "warning",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Figures of the period(s) that fired or resolved the alert.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertFigures {
    pub requests: u64,
    pub errors_5xx: u64,
    pub error_ratio: f64,
    pub p99: Duration,
    pub slo_p99: Duration,
    pub slo_error_ratio: f64,
    /// Baseline of the route's P99 (median, MAD) over healthy periods.
    pub baseline_median: Option<Duration>,
    pub baseline_mad: Option<Duration>,
    /// Periods in a row the condition held.
    pub periods: u32,
}

/// What the kernel saw on the route's connections in the same periods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelEvidence {
    pub retransmitted_segments: u64,
    /// Requests on the route whose connection retransmitted during the request.
    pub requests_with_retransmits: u64,
    pub connect_failures: u64,
    pub connect_p99: Option<Duration>,
    /// The remote endpoint with the most retransmits, if any (`ip:port`).
    pub top_retransmit_peer: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlertEvent {
    pub kind: AlertKind,
    pub status: AlertStatus,
    pub route: RouteKey,
    /// Gray tag the alert is about (`""` for all traffic of the route).
    pub gray_tag: String,
    pub starts_at: SystemTime,
    /// Set when resolved.
    pub ends_at: Option<SystemTime>,
    pub figures: AlertFigures,
    pub evidence: KernelEvidence,
    /// Up to a few trace ids of slow or failed requests in the firing periods.
    pub sample_trace_ids: Vec<String>,
    /// One line for humans, e.g. "P99 spike coincides with 4.1 % retransmitted
    /// segments to 10.0.3.7:5432".
    pub diagnosis: String,
    /// Id of the request snapshots frozen when the alert fired (L2 and gray
    /// rollback, with snapshots on): `GET /api/v1/snapshots/{id}`.
    pub snapshot_id: Option<String>,
}

/// The SLO engine's verdict on one route for one closed period; the fuse
/// machine uses it to leave `half_open` (healthy) or re-open (unhealthy).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteVerdict {
    pub route: RouteKey,
    pub period_end: SystemTime,
    pub requests: u64,
    /// The period had the minimum volume (`slo.min_requests`) to be judged;
    /// an unjudged period is `healthy` but proves nothing.
    pub judged: bool,
    /// False when the period breached the route's SLO (P99 or error ratio)
    /// with at least the minimum volume.
    pub healthy: bool,
}

impl AlertEvent {
    /// A representative L2 event on `checkout POST {route}` with its figures
    /// and kernel evidence filled in: one fixture for the unit tests, the
    /// integration tests and examples, so their expectations agree.
    #[doc(hidden)]
    pub fn example_l2(route: &str, status: AlertStatus, starts_at: SystemTime) -> Self {
        Self {
            kind: AlertKind::P99SpikeWith5xxBurst,
            status,
            route: RouteKey::new("checkout", "POST", route),
            gray_tag: String::new(),
            starts_at,
            ends_at: None,
            figures: AlertFigures {
                requests: 1200,
                errors_5xx: 60,
                error_ratio: 0.05,
                p99: Duration::from_millis(2400),
                slo_p99: Duration::from_millis(800),
                slo_error_ratio: 0.005,
                baseline_median: Some(Duration::from_millis(180)),
                baseline_mad: Some(Duration::from_millis(12)),
                periods: 2,
            },
            evidence: KernelEvidence {
                retransmitted_segments: 41,
                requests_with_retransmits: 17,
                connect_failures: 3,
                connect_p99: Some(Duration::from_millis(210)),
                top_retransmit_peer: Some("10.0.3.7:5432".into()),
            },
            sample_trace_ids: vec![
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b700f067aa0ba902b7".into(),
            ],
            diagnosis: "P99 spike coincides with 4.1 % retransmitted segments to 10.0.3.7:5432"
                .into(),
            snapshot_id: None,
        }
    }
}
