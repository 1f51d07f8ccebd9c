//! L2, `SloguardP99SpikeWith5xxBurst` (critical; the fuse acts on it): the
//! route's P99 spikes far above its own baseline for several periods in a row
//! while its 5xx form a burst over those periods.
//!
//! Thresholds (all under `slo:`):
//! - spike: P99 > baseline median + `spike_mad_factor` × `mad_scale` × MAD,
//!   and P99 > `spike_ratio` × median, with a baseline of at least
//!   `min_baseline_periods` periods;
//! - streak: `spike_periods` spiking periods in a row;
//! - burst: at least `min_errors` 5xx and an error ratio above
//!   `burst_error_ratio`, over the streak's periods;
//! - a period with fewer than `min_requests` requests is not judged.
//!
//! It resolves after `resolve_after_periods` periods without spike or burst.
use std::collections::VecDeque;

use crate::respond::alert::model::AlertFigures;

use super::super::baseline::BaselineFigures;
use super::super::period::{PeriodSummary, ratio};
use super::super::rules::SloConfig;
use super::{Judgement, fmt_duration, judged};

/// L2's verdict, plus the two facts the baseline needs to stay clean.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub judgement: Judgement,
    /// This period's P99 is a spike against the baseline.
    pub spike: bool,
    /// This period alone is a 5xx burst.
    pub burst_now: bool,
}

fn burst(cfg: &SloConfig, requests: u64, errors: u64) -> bool {
    errors >= cfg.min_errors && ratio(errors, requests) > cfg.burst_error_ratio
}

/// Judge the newest period of `history`; `streak` counts spiking periods in
/// a row (kept by the caller's entry between periods).
pub fn judge(
    cfg: &SloConfig,
    history: &VecDeque<PeriodSummary>,
    baseline: Option<BaselineFigures>,
    streak: &mut u32,
) -> Outcome {
    let s = history.back().expect("a closed period");
    let judged = judged(cfg, s);
    let p99 = s.p99.unwrap_or_default();
    let burst_now = judged && burst(cfg, s.requests, s.errors);
    let spike = judged
        && baseline.is_some_and(|b| {
            let median = b.median.as_secs_f64();
            let limit = median + cfg.spike_mad_factor * cfg.mad_scale * b.mad.as_secs_f64();
            let v = p99.as_secs_f64();
            v > limit && v > cfg.spike_ratio * median
        });
    *streak = if spike { streak.saturating_add(1) } else { 0 };
    let n = cfg.spike_periods as usize;
    let fire = *streak >= cfg.spike_periods && {
        let (r, x) = history
            .iter()
            .rev()
            .take(n)
            .fold((0, 0), |(r, x), p| (r + p.requests, x + p.errors));
        burst(cfg, r, x)
    };
    Outcome {
        judgement: Judgement {
            fire,
            streak: *streak,
            healthy: !spike && !burst_now,
        },
        spike,
        burst_now,
    }
}

pub fn headline(f: &AlertFigures) -> String {
    format!(
        "P99 spike to {}{} with a 5xx burst ({} of {} requests)",
        fmt_duration(f.p99),
        f.baseline_median
            .map(|m| format!(" (baseline {})", fmt_duration(m)))
            .unwrap_or_default(),
        f.errors_5xx,
        f.requests
    )
}
