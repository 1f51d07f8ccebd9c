//! The SLO engine: per route × gray tag and per period it counts, sketches and
//! collects kernel evidence; at each closed period it runs the detectors and
//! says whether the route met its SLO. Time comes from the injected clock.
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::Clock;
use crate::request::Endpoint;
use crate::request::route::RouteKey;
use crate::respond::alert::model::{AlertEvent, AlertKind, RouteVerdict};

use super::baseline::Baseline;
use super::burn::BurnWindows;
use super::detectors::{gray_rollback, l1_p99_breach, l2_spike_with_burst};
use super::metrics::{MetricsSnapshot, RouteRow, SloMetrics};
use super::period::{PeriodStats, PeriodSummary, TopPeers, TraceSample};
use super::rules::{SloConfig, SloRules, SloTarget};
use super::track::{AlertTrack, StepInput};

/// One finished request as the engine needs it.
#[derive(Clone, Copy, Debug)]
pub struct SloSample<'a> {
    pub route: &'a RouteKey,
    /// `""` for stable traffic.
    pub gray_tag: &'a str,
    /// HTTP status; 5xx counts as an error (0, no response, does too).
    pub status: u16,
    pub duration_ns: u64,
    pub trace_id: Option<[u8; 16]>,
    /// Segments retransmitted on the connection during the request.
    pub retransmits: u32,
    /// Set when the request opened its connection.
    pub connect_duration_ns: Option<u64>,
    pub peer: Option<Endpoint>,
}

/// What a tick produced: alert state changes and per-route verdicts of every
/// period closed by this tick, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TickOutput {
    pub alerts: Vec<AlertEvent>,
    pub verdicts: Vec<RouteVerdict>,
}

/// Periods closed at most in one tick (after a suspend); the rest are skipped.
fn max_catchup(period: Duration) -> u64 {
    (300 / period.as_secs().max(1)).max(1) + 1
}

/// Route × gray tag.
struct Entry {
    tag: Arc<str>,
    target: SloTarget,
    open: PeriodStats,
    /// Closed periods, newest last; `depth` of them (the longest streak needed).
    history: VecDeque<PeriodSummary>,
    depth: usize,
    burn: BurnWindows,
    /// Stable entries only.
    baseline: Option<Baseline>,
    /// Consecutive spike periods (stable) or gray-condition periods (gray).
    streak: u32,
    /// Stable: [L1, L2]; gray: [GrayRollback].
    tracks: Vec<AlertTrack>,
}

impl Entry {
    fn firing(&self) -> bool {
        self.tracks.iter().any(|t| t.is_firing())
    }

    fn firing_kind(&self, k: AlertKind) -> bool {
        self.tracks.iter().any(|t| t.kind == k && t.is_firing())
    }

    fn heap_bytes(&self) -> usize {
        self.open.heap_bytes()
            + self.history.capacity() * std::mem::size_of::<PeriodSummary>()
            + self
                .history
                .iter()
                .map(|s| s.retransmit_peers.heap_bytes())
                .sum::<usize>()
            + self.burn.heap_bytes()
            + self.baseline.as_ref().map_or(0, |b| b.heap_bytes())
            + self.tracks.capacity() * std::mem::size_of::<AlertTrack>()
            + self.tag.len()
    }
}

/// Failed connects of one service (they belong to no request, hence no route).
#[derive(Default)]
struct ServiceConnects {
    open: u64,
    open_peers: TopPeers,
    closed: u64,
    closed_peer: Option<(Endpoint, u64)>,
}

pub struct SloEngine {
    cfg: SloConfig,
    rules: SloRules,
    clock: Arc<dyn Clock>,
    period_ns: u64,
    /// Unix ns at which the open period started (aligned to the period).
    open_start_ns: u64,
    /// hashbrown for [`Probe`] lookups; its default hash (foldhash) is seeded
    /// per process and several times cheaper than SipHash here.
    routes: hashbrown::HashMap<RouteKey, Vec<Entry>>,
    entries: usize,
    services: HashMap<Arc<str>, ServiceConnects>,
    untracked_requests: u64,
    scratch: Vec<u64>,
    metrics: Arc<RwLock<MetricsSnapshot>>,
}

/// Looks a route up comparing string pointers before bytes: `Arc<str>`'s
/// `==` always compares bytes (its pointer fast path needs a sized `T`), which
/// was a third of `record` when the pipeline hands over interned keys.
struct Probe<'a>(&'a RouteKey);

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl hashbrown::Equivalent<RouteKey> for Probe<'_> {
    fn equivalent(&self, key: &RouteKey) -> bool {
        same_str(&self.0.route, &key.route)
            && same_str(&self.0.method, &key.method)
            && same_str(&self.0.service, &key.service)
    }
}

#[inline]
fn same_str(a: &str, b: &str) -> bool {
    (a.len() == b.len() && std::ptr::eq(a.as_ptr(), b.as_ptr())) || a == b
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

impl SloEngine {
    /// `cfg` must have passed `validate()`.
    pub fn new(cfg: SloConfig, clock: Arc<dyn Clock>) -> Self {
        let period_ns = cfg.period.as_nanos().max(1) as u64;
        let now = unix_ns(clock.now());
        Self {
            rules: SloRules::new(&cfg),
            clock,
            period_ns,
            open_start_ns: now - now % period_ns,
            routes: hashbrown::HashMap::default(),
            entries: 0,
            services: HashMap::new(),
            untracked_requests: 0,
            scratch: Vec::with_capacity(cfg.baseline_periods),
            metrics: Arc::new(RwLock::new(MetricsSnapshot::default())),
            cfg,
        }
    }

    pub fn config(&self) -> &SloConfig {
        &self.cfg
    }

    /// The route's P99 target (its first matching rule): slower requests are "slow".
    pub fn slo_p99(&self, key: &RouteKey) -> Duration {
        self.rules.target(key).p99
    }

    /// Adds a finished request to the open period. No clock read, no
    /// allocation once the route's entry exists.
    #[inline]
    pub fn record(&mut self, s: &SloSample<'_>) {
        let entry = match self.routes.get_mut(&Probe(s.route)) {
            Some(list) => match list.iter_mut().position(|e| same_str(&e.tag, s.gray_tag)) {
                Some(i) => &mut list[i],
                None => match self.insert(s.route, s.gray_tag) {
                    Some(e) => e,
                    None => return,
                },
            },
            None => match self.insert(s.route, s.gray_tag) {
                Some(e) => e,
                None => return,
            },
        };
        let p = &mut entry.open;
        p.requests += 1;
        let failed = s.status >= 500 || s.status == 0;
        if failed {
            p.errors += 1;
        }
        p.latency.record(s.duration_ns);
        if s.retransmits > 0 {
            p.retransmitted_segments += s.retransmits as u64;
            p.requests_with_retransmits += 1;
            if let Some(peer) = s.peer {
                p.retransmit_peers.add(peer, s.retransmits as u64);
            }
        }
        if let Some(c) = s.connect_duration_ns {
            p.connect.record(c);
        }
        if let Some(id) = s.trace_id {
            p.samples.offer(TraceSample::new(id, s.duration_ns, failed));
        }
    }

    /// A connect by a process of `service` failed (refused or timed out).
    pub fn record_connect_failure(&mut self, service: &str, peer: Option<Endpoint>) {
        let sc = match self.services.get_mut(service) {
            Some(sc) => sc,
            None => {
                if self.services.len() >= self.cfg.max_routes {
                    return;
                }
                self.services.entry(service.into()).or_default()
            }
        };
        sc.open += 1;
        if let Some(p) = peer {
            sc.open_peers.add(p, 1);
        }
    }

    #[cold]
    fn insert(&mut self, route: &RouteKey, tag: &str) -> Option<&mut Entry> {
        if self.entries >= self.cfg.max_routes {
            self.untracked_requests += 1;
            return None;
        }
        let stable = tag.is_empty();
        let tracks = if stable {
            vec![
                AlertTrack::new(AlertKind::P99Breach),
                AlertTrack::new(AlertKind::P99SpikeWith5xxBurst),
            ]
        } else {
            vec![AlertTrack::new(AlertKind::GrayRollback)]
        };
        let depth = if stable {
            self.cfg.spike_periods.max(self.cfg.resolve_after_periods)
        } else {
            self.cfg.gray_periods.max(self.cfg.resolve_after_periods)
        } as usize;
        let e = Entry {
            tag: tag.into(),
            target: self.rules.target(route),
            open: PeriodStats::default(),
            history: VecDeque::with_capacity(depth),
            depth,
            burn: BurnWindows::new(self.cfg.period),
            baseline: stable.then(|| Baseline::new(self.cfg.baseline_periods)),
            streak: 0,
            tracks,
        };
        self.entries += 1;
        let list = self.routes.entry(route.clone()).or_default();
        // Exact: a route has few tags and an Entry is ~660 bytes.
        list.reserve_exact(1);
        list.push(e);
        list.last_mut()
    }

    /// True when the open period has ended and `tick` would close it.
    pub fn period_due(&self) -> bool {
        self.open_start_ns + self.period_ns <= unix_ns(self.clock.now())
    }

    /// Closes every period that ended by `clock.now()`.
    pub fn tick(&mut self) -> TickOutput {
        let now = unix_ns(self.clock.now());
        let mut out = TickOutput::default();
        let mut closed = 0;
        while self.open_start_ns + self.period_ns <= now {
            if closed == max_catchup(self.cfg.period) {
                tracing::warn!(
                    skipped_periods = (now - self.open_start_ns) / self.period_ns,
                    "SLO engine fell behind the clock; skipping periods"
                );
                self.open_start_ns = now - now % self.period_ns;
                break;
            }
            let end = self.open_start_ns + self.period_ns;
            self.close_period(UNIX_EPOCH + Duration::from_nanos(end), &mut out);
            self.open_start_ns = end;
            closed += 1;
        }
        if closed > 0 {
            self.publish();
        }
        out
    }

    fn close_period(&mut self, end: SystemTime, out: &mut TickOutput) {
        for sc in self.services.values_mut() {
            sc.closed = sc.open;
            sc.closed_peer = sc.open_peers.top();
            sc.open = 0;
            sc.open_peers.clear();
        }
        let cfg = &self.cfg;
        for (key, list) in self.routes.iter_mut() {
            let (connect_failures, connect_failure_peer) = self
                .services
                .get(&*key.service)
                .map_or((0, None), |sc| (sc.closed, sc.closed_peer));
            for e in list.iter_mut() {
                let mut s = e.open.close();
                s.connect_failures = connect_failures;
                s.connect_failure_peer = connect_failure_peer;
                e.burn.push(s.requests, s.errors);
                if e.history.len() >= e.depth {
                    e.history.pop_front();
                }
                e.history.push_back(s);
            }
            let stable_healthy = match list.iter_mut().find(|e| e.tag.is_empty()) {
                Some(e) => {
                    let v = judge_stable(cfg, key, e, end, &mut self.scratch, &mut out.alerts);
                    out.verdicts.push(v.clone());
                    v.healthy
                }
                None => true,
            };
            for e in list.iter_mut().filter(|e| !e.tag.is_empty()) {
                judge_gray(cfg, key, e, end, stable_healthy, &mut out.alerts);
            }
        }
        self.services.retain(|_, sc| sc.open > 0 || sc.closed > 0);
        // Entries without traffic for the whole burn horizon go (unless alerting).
        let mut removed = 0;
        self.routes.retain(|_, list| {
            list.retain(|e| {
                let keep = e.firing() || !e.burn.idle();
                removed += usize::from(!keep);
                keep
            });
            !list.is_empty()
        });
        self.entries -= removed;
    }

    /// Entries tracked now (route × gray tag).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Requests not judged because the route cap was reached.
    pub fn untracked_requests(&self) -> u64 {
        self.untracked_requests
    }

    /// Estimated heap bytes of all route state (for the memory budget).
    pub fn heap_bytes(&self) -> usize {
        let per_route = std::mem::size_of::<RouteKey>() + std::mem::size_of::<Vec<Entry>>() + 8;
        self.routes
            .iter()
            .map(|(k, list)| {
                per_route
                    + k.service.len()
                    + k.method.len()
                    + k.route.len()
                    + list.capacity() * std::mem::size_of::<Entry>()
                    + list.iter().map(Entry::heap_bytes).sum::<usize>()
            })
            .sum()
    }

    /// The current baseline of a route's stable traffic (median, MAD).
    pub fn baseline(&self, route: &RouteKey) -> Option<super::baseline::BaselineFigures> {
        self.routes
            .get(route)?
            .iter()
            .find(|e| e.tag.is_empty())?
            .baseline
            .as_ref()?
            .figures()
    }

    /// Burn rates (5m, 1h, 6h) of an entry.
    pub fn burn_rates(&self, route: &RouteKey, gray_tag: &str) -> Option<super::burn::BurnRates> {
        let e = self
            .routes
            .get(route)?
            .iter()
            .find(|e| &*e.tag == gray_tag)?;
        Some(e.burn.rates(e.target.error_ratio))
    }

    /// A Prometheus collector over the figures published at each tick.
    pub fn metrics(&self) -> SloMetrics {
        SloMetrics::new(self.metrics.clone())
    }

    /// Registers [`Self::metrics`] in `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(self.metrics()));
    }

    fn publish(&mut self) {
        let mut rows = Vec::with_capacity(self.entries);
        for (key, list) in &self.routes {
            for e in list {
                let last = e.history.back();
                rows.push(RouteRow {
                    route: key.clone(),
                    gray_tag: e.tag.clone(),
                    requests: last.map_or(0, |s| s.requests),
                    p50: last.and_then(|s| s.p50),
                    p99: last.and_then(|s| s.p99),
                    error_ratio: last.map_or(0.0, |s| s.error_ratio()),
                    baseline_p99: e
                        .baseline
                        .as_ref()
                        .and_then(|b| b.figures())
                        .map(|f| f.median),
                    target: e.target,
                    burn: e.burn.rates(e.target.error_ratio),
                    alerting: e.tracks.iter().map(|t| (t.kind, t.is_firing())).collect(),
                });
            }
        }
        let mut m = self.metrics.write().unwrap_or_else(|p| p.into_inner());
        m.rows = rows;
        m.untracked_requests = self.untracked_requests;
        m.entries = self.entries as u64;
    }
}

/// L1, L2 and the baseline on a route's stable traffic; returns its verdict.
fn judge_stable(
    cfg: &SloConfig,
    key: &RouteKey,
    e: &mut Entry,
    end: SystemTime,
    scratch: &mut Vec<u64>,
    alerts: &mut Vec<AlertEvent>,
) -> RouteVerdict {
    let s = e.history.back().expect("just pushed");
    let judged = super::detectors::judged(cfg, s);
    let err_breach = judged && s.errors >= cfg.min_errors && s.error_ratio() > e.target.error_ratio;
    let baseline = e.baseline.as_ref().and_then(|b| {
        (b.len() >= cfg.min_baseline_periods)
            .then(|| b.figures())
            .flatten()
    });
    let l1 = l1_p99_breach::judge(cfg, s, &e.target);
    let l2 = l2_spike_with_burst::judge(cfg, &e.history, baseline, &mut e.streak);
    // The incident never enters the baseline: no spike or burst period, and
    // nothing while L2 fires. L1 alone does not freeze it, so a route that
    // always runs above its target still gets a baseline for L2.
    let learn =
        judged && !l2.spike && !l2.burst_now && !e.firing_kind(AlertKind::P99SpikeWith5xxBurst);
    if learn && let (Some(b), Some(p)) = (e.baseline.as_mut(), s.p99) {
        b.learn(p, scratch);
    }
    let history: Vec<&PeriodSummary> = e.history.iter().collect();
    let base = step_input(cfg, key, "", end, &history, e.target, baseline);
    for t in e.tracks.iter_mut() {
        let judgement = match t.kind {
            AlertKind::P99Breach => l1,
            AlertKind::P99SpikeWith5xxBurst => l2.judgement,
            // Stable entries carry only the L1 and L2 tracks.
            AlertKind::GrayRollback | AlertKind::FuseStateReset => continue,
        };
        alerts.extend(t.step(&StepInput { judgement, ..base }));
    }
    RouteVerdict {
        route: key.clone(),
        period_end: end,
        requests: s.requests,
        judged,
        healthy: !(l1.fire || err_breach),
    }
}

/// Gray rollback on one gray tag of a route.
fn judge_gray(
    cfg: &SloConfig,
    key: &RouteKey,
    e: &mut Entry,
    end: SystemTime,
    stable_healthy: bool,
    alerts: &mut Vec<AlertEvent>,
) {
    let s = e.history.back().expect("just pushed");
    let judgement = gray_rollback::judge(cfg, s, stable_healthy, &mut e.streak);
    let history: Vec<&PeriodSummary> = e.history.iter().collect();
    let input = StepInput {
        judgement,
        ..step_input(cfg, key, &e.tag, end, &history, e.target, None)
    };
    for t in e.tracks.iter_mut() {
        alerts.extend(t.step(&input));
    }
}

/// What every track of an entry is stepped with for the period ending at
/// `end`; the caller sets each detector's judgement.
fn step_input<'a>(
    cfg: &SloConfig,
    route: &'a RouteKey,
    gray_tag: &'a str,
    end: SystemTime,
    history: &'a [&'a PeriodSummary],
    target: SloTarget,
    baseline: Option<super::baseline::BaselineFigures>,
) -> StepInput<'a> {
    StepInput {
        route,
        gray_tag,
        period_end: end,
        period: cfg.period,
        judgement: Default::default(),
        resolve_after: cfg.resolve_after_periods,
        history,
        target,
        baseline,
    }
}
