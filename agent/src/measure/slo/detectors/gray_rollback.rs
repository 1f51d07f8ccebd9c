//! `SloguardGrayRollback` (warning; the fuse may act on it): one gray cohort
//! of a route (a gray tag) is much worse than the route's stable traffic.
//!
//! Thresholds (all under `slo:`): in a period with at least `min_requests`
//! requests, at least `min_errors` 5xx, an error ratio above
//! `gray_error_ratio` and a P99 above `gray_p99`, for `gray_periods` periods
//! in a row while the stable traffic of the same route is healthy (so a
//! route-wide incident stays an L1/L2 matter). It resolves after
//! `resolve_after_periods` good periods.
use crate::request::route::gray;
use crate::respond::alert::model::AlertFigures;

use super::super::period::PeriodSummary;
use super::super::rules::SloConfig;
use super::{Judgement, fmt_duration, judged, pct};

/// Judge the cohort's newest period; `streak` counts bad periods in a row
/// with stable healthy (kept by the caller's entry between periods).
pub fn judge(
    cfg: &SloConfig,
    s: &PeriodSummary,
    stable_healthy: bool,
    streak: &mut u32,
) -> Judgement {
    let bad = judged(cfg, s)
        && s.errors >= cfg.min_errors
        && s.error_ratio() > cfg.gray_error_ratio
        && s.p99.is_some_and(|p| p > cfg.gray_p99);
    *streak = if bad && stable_healthy {
        streak.saturating_add(1)
    } else {
        0
    };
    Judgement {
        fire: *streak >= cfg.gray_periods,
        streak: *streak,
        healthy: !bad,
    }
}

pub fn headline(gray_tag: &str, f: &AlertFigures) -> String {
    format!(
        "gray cohort {}: {} 5xx and P99 {} while stable is healthy",
        gray::describe(gray_tag),
        pct(f.error_ratio),
        fmt_duration(f.p99)
    )
}
