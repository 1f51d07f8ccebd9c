//! L1, `SloguardP99Breach` (warning): the P99 of the route's stable traffic
//! over a closed period is above the route's SLO target.
//!
//! Thresholds: the route's `p99` target (`slo.rules[].p99`, else
//! `slo.default_p99`); a period with fewer than `slo.min_requests` requests is
//! not judged. It fires on the first bad period (no streak) and resolves after
//! `slo.resolve_after_periods` good ones.
use crate::respond::alert::model::AlertFigures;

use super::super::period::PeriodSummary;
use super::super::rules::{SloConfig, SloTarget};
use super::{Judgement, fmt_duration, judged};

pub fn judge(cfg: &SloConfig, s: &PeriodSummary, target: &SloTarget) -> Judgement {
    let bad = judged(cfg, s) && s.p99.unwrap_or_default() > target.p99;
    Judgement {
        fire: bad,
        streak: 1,
        healthy: !bad,
    }
}

pub fn headline(f: &AlertFigures) -> String {
    format!(
        "P99 {} above SLO {}",
        fmt_duration(f.p99),
        fmt_duration(f.slo_p99)
    )
}
