//! Assembling the status document from what the agent already keeps: the SLO
//! engine's published snapshot (the same one `/metrics` encodes, so the two
//! agree), the fuse controller's states and the self-metric counters.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;

use super::{AgentStatus, BurnRate, FuseBrief, OtherFuse, RouteStatus, STATUS_SCHEMA, StatusDoc};
use crate::export::metrics::{KindLabels, ReasonLabels, SelfMetrics, lost};
use crate::measure::slo::metrics::MetricsSnapshot;
use crate::respond::alert::model::AlertKind;
use crate::respond::fuse::{FuseMode, RouteFuseStatus, SharedFuse};

/// Builds a document on demand; called on the blocking pool (it takes the
/// fuse lock, which may be held across a state-file fsync).
pub type StatusSource = Arc<dyn Fn() -> StatusDoc + Send + Sync>;

/// How far back `events_per_second` looks: long enough to smooth the
/// reader's batching, short enough to show a burst while it happens.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Events per second from samples of the cumulative count (one a second,
/// taken by the runtime's housekeeping tick).
#[derive(Debug, Default)]
pub struct EventRate {
    samples: VecDeque<(Instant, u64)>,
}

impl EventRate {
    pub fn observe(&mut self, at: Instant, total: u64) {
        self.samples.push_back((at, total));
        while let Some(&(t, _)) = self.samples.front() {
            if at.duration_since(t) > RATE_WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    pub fn per_second(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, n0)), Some(&(t1, n1))) if t1 > t0 => {
                n1.saturating_sub(n0) as f64 / (t1 - t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The self-metric handles the agent figures are read from.
#[derive(Clone)]
pub struct AgentCounters {
    pub self_metrics: SelfMetrics,
    pub route_overflow: Counter,
    pub healthy: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
    pub started: Instant,
    pub rate: Arc<Mutex<EventRate>>,
}

impl AgentCounters {
    pub fn events_total(&self) -> u64 {
        crate::kernel::events::ALL_KINDS
            .iter()
            .map(|k| {
                self.self_metrics
                    .events
                    .get_or_create(&KindLabels {
                        kind: crate::kernel::events::kind_label(*k),
                    })
                    .get()
            })
            .sum()
    }

    /// Called once a second by the runtime.
    pub fn sample_rate(&self) {
        let total = self.events_total();
        if let Ok(mut r) = self.rate.lock() {
            r.observe(Instant::now(), total);
        }
    }

    fn figures(&self) -> AgentStatus {
        let events_lost: BTreeMap<String, u64> = [
            lost::RINGBUF_FULL,
            lost::CHANNEL_FULL,
            lost::DECODE_ERROR,
            lost::RECURSION_MISS,
        ]
        .into_iter()
        .map(|r| {
            let n = self
                .self_metrics
                .lost
                .get_or_create(&ReasonLabels { reason: r })
                .get();
            (r.to_string(), n)
        })
        .collect();
        AgentStatus {
            healthy: self.healthy.load(Ordering::Relaxed),
            ready: self.ready.load(Ordering::Relaxed),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            probes_attached: self.self_metrics.probes_attached.get(),
            events_total: self.events_total(),
            events_per_second: self.rate.lock().map(|r| r.per_second()).unwrap_or(0.0),
            events_lost_total: events_lost.values().sum(),
            events_lost,
            route_overflow_requests: self.route_overflow.get(),
            ..AgentStatus::default()
        }
    }
}

/// Everything a document is made from.
#[derive(Clone)]
pub struct StatusSources {
    pub node: String,
    pub period: Duration,
    pub slo: crate::measure::slo::SloMetrics,
    pub fuse: Option<SharedFuse>,
    pub agent: AgentCounters,
}

impl StatusSources {
    pub fn build(&self) -> StatusDoc {
        let (mode, fuses) = match self.fuse.as_ref().and_then(|f| f.lock().ok()) {
            Some(f) => (f.mode(), f.states()),
            None => (FuseMode::DryRun, Vec::new()),
        };
        assemble(
            &self.node,
            self.period,
            mode,
            SystemTime::now(),
            &self.slo.snapshot(),
            &fuses,
            self.agent.figures(),
        )
    }

    pub fn into_source(self) -> StatusSource {
        Arc::new(move || self.build())
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// The document from its parts (pure: unit-tested without an agent).
pub fn assemble(
    node: &str,
    period: Duration,
    mode: FuseMode,
    now: SystemTime,
    snap: &MetricsSnapshot,
    fuses: &[RouteFuseStatus],
    mut agent: AgentStatus,
) -> StatusDoc {
    let period_s = period.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut per_service: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
    let routes = snap
        .rows
        .iter()
        .map(|r| {
            per_service
                .entry(&r.route.service)
                .or_default()
                .insert((&r.route.method, &r.route.route));
            let firing = |k: AlertKind| r.alerting.iter().any(|(a, on)| *a == k && *on);
            let fuse = fuses
                .iter()
                .find(|f| {
                    *f.service == *r.route.service
                        && *f.method == *r.route.method
                        && *f.route == *r.route.route
                })
                .map(brief)
                .unwrap_or_default();
            RouteStatus {
                service: r.route.service.to_string(),
                method: r.route.method.to_string(),
                route: r.route.route.to_string(),
                gray_tag: r.gray_tag.to_string(),
                requests: r.requests,
                rate_per_second: r.requests as f64 / period_s,
                error_ratio: r.error_ratio,
                p50_seconds: secs(r.p50),
                p99_seconds: secs(r.p99),
                target_p99_seconds: r.target.p99.as_secs_f64(),
                target_error_ratio: r.target.error_ratio,
                baseline_p99_seconds: secs(r.baseline_p99),
                burn_rate: BurnRate {
                    m5: r.burn.m5,
                    h1: r.burn.h1,
                    h6: r.burn.h6,
                },
                l1: firing(AlertKind::P99Breach),
                l2: firing(AlertKind::P99SpikeWith5xxBurst),
                gray_rollback: firing(AlertKind::GrayRollback),
                alerts: r
                    .alerting
                    .iter()
                    .filter(|(_, on)| *on)
                    .map(|(k, _)| k.alertname().to_string())
                    .collect(),
                fuse,
            }
        })
        .collect();
    let other_fuses = fuses
        .iter()
        .filter(|f| {
            !per_service
                .get(f.service.as_str())
                .is_some_and(|set| set.contains(&(f.method.as_str(), f.route.as_str())))
        })
        .map(|f| OtherFuse {
            service: f.service.clone(),
            method: f.method.clone(),
            route: f.route.clone(),
            fuse: brief(f),
        })
        .collect();
    agent.routes_per_service = per_service
        .into_iter()
        .map(|(s, set)| (s.to_string(), set.len() as u64))
        .collect();
    agent.slo_untracked_requests = snap.untracked_requests;
    StatusDoc {
        schema: STATUS_SCHEMA.into(),
        node: node.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        generated_at: humantime::format_rfc3339_seconds(now).to_string(),
        period_seconds: period.as_secs_f64(),
        fuse_mode: mode.as_str().into(),
        agent,
        routes,
        other_fuses,
    }
}

fn brief(f: &RouteFuseStatus) -> FuseBrief {
    FuseBrief {
        state: f.state.as_str().to_string(),
        overridden: f.overridden.as_ref().map(|o| o.kind.as_str().to_string()),
    }
}
