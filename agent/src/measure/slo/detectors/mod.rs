//! The detectors, one module each, named for the alert it raises, with the
//! thresholds it reads beside its condition:
//!
//! | module | alert | fires when |
//! |---|---|---|
//! | [`l1_p99_breach`] | `SloguardP99Breach` (L1) | the period's P99 is above the route's SLO |
//! | [`l2_spike_with_burst`] | `SloguardP99SpikeWith5xxBurst` (L2) | P99 far above the route's own baseline for `spike_periods` periods, with a 5xx burst over them |
//! | [`gray_rollback`] | `SloguardGrayRollback` | a gray cohort is bad for `gray_periods` periods while stable traffic is healthy |
//!
//! A detector only judges a closed period; the life cycle of the alert it
//! feeds (fire once, resolve after healthy periods, figures, diagnosis) is
//! `super::track`, shared by all of them.
use std::time::Duration;

use crate::respond::alert::model::{AlertFigures, AlertKind};

use super::period::PeriodSummary;
use super::rules::SloConfig;

pub mod gray_rollback;
pub mod l1_p99_breach;
pub mod l2_spike_with_burst;

/// What a detector concluded about the period that just closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// The condition holds, including its streak requirement.
    pub fire: bool,
    /// Periods in a row the condition held (figures, `starts_at`).
    pub streak: u32,
    /// This period counts towards resolving.
    pub healthy: bool,
}

/// A period is judged at all only with `slo.min_requests` requests: a P99 of
/// three requests says nothing.
pub fn judged(cfg: &SloConfig, s: &PeriodSummary) -> bool {
    s.requests >= cfg.min_requests
}

/// What fired, with its figures: the first half of the diagnosis and the
/// Alertmanager `summary` (which adds the route). One wording per detector,
/// written here only.
pub fn headline(kind: AlertKind, gray_tag: &str, f: &AlertFigures) -> String {
    match kind {
        AlertKind::P99Breach => l1_p99_breach::headline(f),
        AlertKind::P99SpikeWith5xxBurst => l2_spike_with_burst::headline(f),
        AlertKind::GrayRollback => gray_rollback::headline(gray_tag, f),
        // Raised by the fuse controller, never by a detector.
        AlertKind::FuseStateReset => "fuse state reset".to_string(),
    }
}

/// Human duration: `850ms`, `2.31s`, `120µs`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 1e-3 {
        format!("{:.0}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

/// A ratio as a percentage with one decimal: `4.1 %`.
pub fn pct(r: f64) -> String {
    format!("{:.1} %", r * 100.0)
}
