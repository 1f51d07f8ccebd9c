//! The fuse controller: feeds alerts, verdicts and operator overrides to each
//! route's state machine, applies the guards, persists and audits every
//! change, and hands actions to their worker tasks (retrying failures).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::FuseError;
use super::action::{
    ActionJob, ActionResult, FuseAction, SnapshotEntry, build_actions, idempotency_key,
    spawn_worker,
};
use super::audit::{AuditLog, AuditRecord};
use super::config::{FuseConfig, FuseMode};
use super::machine::{Cause, Change, FuseState, Override, OverrideKind, RouteFuse, Timing};
use super::metrics::{ActionLabels, FuseMetrics, KindLabels, ReasonLabels, ToLabels};
pub use super::status::{
    FuseTransition, OverrideAction, OverrideRequest, PendingAction, RouteFuseStatus,
};
use super::store::{StateStore, StoredRoute};
use crate::alert::model::{AlertEvent, AlertKind, AlertStatus, RouteVerdict};
use crate::clock::Clock;
use crate::route::RouteKey;

/// The overflow bucket is many routes, never one to fuse.
const OVERFLOW_ROUTE: &str = "/{overflow}";
const SYSTEM: &str = "sloguard";

/// The controller shared by the pipeline, the ticker and the admin API.
pub type SharedFuse = Arc<Mutex<FuseController>>;

#[derive(Default)]
struct Retry {
    in_flight: Option<u64>,
    failures: u32,
    next_try: Option<SystemTime>,
    last_error: Option<String>,
}

#[derive(Default)]
struct RouteEntry {
    fuse: RouteFuse,
    /// Per action name: last seq applied.
    applied: BTreeMap<String, u64>,
    /// Per action index.
    retry: HashMap<usize, Retry>,
}

struct ActionSlot {
    action: Arc<dyn FuseAction>,
    tx: Option<mpsc::UnboundedSender<ActionJob>>,
}

pub struct FuseController {
    cfg: FuseConfig,
    timing: Timing,
    clock: Arc<dyn Clock>,
    routes: BTreeMap<RouteKey, RouteEntry>,
    /// Routes seen in verdicts or alerts, per service (for `max_fused_share`);
    /// bounded by the route cap upstream.
    known: HashMap<Arc<str>, HashSet<RouteKey>>,
    actions: Vec<ActionSlot>,
    /// Snapshot actions whose start-up sync has not succeeded yet.
    resync: HashMap<usize, Retry>,
    results: mpsc::UnboundedReceiver<ActionResult>,
    results_tx: mpsc::UnboundedSender<ActionResult>,
    store: StateStore,
    dirty: bool,
    audit: AuditLog,
    metrics: FuseMetrics,
}

impl FuseController {
    /// Builds the configured actions, restores the state file, and (enforce
    /// mode) queues what the gateway still owes. Needs a tokio runtime.
    pub fn new(cfg: FuseConfig, clock: Arc<dyn Clock>) -> Result<Self, FuseError> {
        let actions = build_actions(&cfg.actions)?;
        Self::with_actions(cfg, clock, actions)
    }

    /// Like `new` with actions built by the caller (custom gateways, tests).
    pub fn with_actions(
        cfg: FuseConfig,
        clock: Arc<dyn Clock>,
        actions: Vec<Arc<dyn FuseAction>>,
    ) -> Result<Self, FuseError> {
        cfg.validate()
            .map_err(|e| FuseError::Config(e.to_string()))?;
        let (results_tx, results) = mpsc::unbounded_channel();
        let enforce = cfg.mode == FuseMode::Enforce;
        if enforce && tokio::runtime::Handle::try_current().is_err() {
            return Err(FuseError::NoRuntime);
        }
        let actions = actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| ActionSlot {
                tx: enforce.then(|| spawn_worker(i, action.clone(), results_tx.clone())),
                action,
            })
            .collect();
        let store = StateStore::new(cfg.state_file.clone());
        let (mode, stored) = store.load()?;
        let mut c = Self {
            timing: Timing {
                open_for: cfg.open_for,
                max_open_for: cfg.max_open_for,
                reset_after: cfg.reset_after,
            },
            audit: AuditLog::new(cfg.audit_file.clone()),
            cfg,
            clock,
            routes: BTreeMap::new(),
            known: HashMap::new(),
            actions,
            resync: HashMap::new(),
            results,
            results_tx,
            store,
            dirty: false,
            metrics: FuseMetrics::default(),
        };
        match mode {
            Some(m) if m != c.cfg.mode.as_str() => tracing::warn!(
                state_file = %c.store.path().display(), written_by = %m, mode = c.cfg.mode.as_str(),
                "fuse state file was written in another mode; starting with no fused routes"
            ),
            _ => {
                for s in stored {
                    let key = s.key();
                    c.metrics.set_state(&key, s.fuse.state);
                    c.routes.insert(
                        key,
                        RouteEntry {
                            fuse: s.fuse,
                            applied: s.applied,
                            retry: HashMap::new(),
                        },
                    );
                }
            }
        }
        if !c.routes.is_empty() {
            tracing::info!(routes = c.routes.len(), "fuse state restored");
        }
        c.sync_snapshot_actions();
        c.dispatch_due();
        c.persist();
        Ok(c)
    }

    pub fn mode(&self) -> FuseMode {
        self.cfg.mode
    }

    pub fn register_metrics(&self, reg: &mut Registry) {
        self.metrics.register(reg);
    }

    /// An L2 firing opens the route (through the guards); other alerts and
    /// per-gray-tag alerts change nothing.
    pub fn on_alert(&mut self, ev: &AlertEvent) -> Vec<FuseTransition> {
        self.drain_results();
        let mut out = Vec::new();
        if ev.kind != AlertKind::P99SpikeWith5xxBurst
            || ev.status != AlertStatus::Firing
            || !ev.gray_tag.is_empty()
        {
            return out;
        }
        self.remember(&ev.route);
        let now = self.clock.now();
        let entry = self.routes.get(&ev.route);
        if entry.is_some_and(|e| e.fuse.overridden.is_some()) {
            tracing::info!(route = %ev.route, "L2 alert on an overridden route: the override wins");
            return out;
        }
        // Guards only gate new fuses; a half-open route re-opens freely.
        if entry.map(|e| e.fuse.state).unwrap_or_default() == FuseState::Closed
            && let Some(reason) = self.guard(ev)
        {
            self.metrics
                .skipped
                .get_or_create(&ReasonLabels { reason })
                .inc();
            tracing::warn!(route = %ev.route, reason, requests = ev.figures.requests,
                "L2 alert did not fuse the route");
            return out;
        }
        let timing = self.timing;
        let entry = self.routes.entry(ev.route.clone()).or_default();
        if let Some(ch) = entry.fuse.on_l2(now, &timing) {
            let why = if ev.diagnosis.is_empty() {
                format!(
                    "{}: p99 {:?}, 5xx {}/{} requests",
                    ev.kind.alertname(),
                    ev.figures.p99,
                    ev.figures.errors_5xx,
                    ev.figures.requests
                )
            } else {
                format!("{}: {}", ev.kind.alertname(), ev.diagnosis)
            };
            out.push(self.changed(&ev.route, ch, SYSTEM, &why, now));
        }
        self.finish();
        out
    }

    fn guard(&self, ev: &AlertEvent) -> Option<&'static str> {
        if &*ev.route.route == OVERFLOW_ROUTE {
            return Some("overflow_route");
        }
        if ev.figures.requests < self.cfg.min_requests {
            return Some("min_requests");
        }
        let known = self.known.get(&ev.route.service).map_or(1, |s| s.len());
        let fused = self
            .routes
            .iter()
            .filter(|(k, e)| k.service == ev.route.service && e.fuse.state.is_fused())
            .count();
        if (fused + 1) as f64 > self.cfg.max_fused_share * known as f64 {
            return Some("max_fused_share");
        }
        None
    }

    /// Closed periods' verdicts: every route becomes known; half-open routes
    /// close on a healthy period or re-open on an unhealthy one.
    pub fn on_verdicts(&mut self, verdicts: &[RouteVerdict]) -> Vec<FuseTransition> {
        self.drain_results();
        let now = self.clock.now();
        let timing = self.timing;
        let mut out = Vec::new();
        for v in verdicts {
            self.remember(&v.route);
            // Under the volume gate a period proves nothing: a half-open route
            // must not close on a handful of requests (the fault may still be there).
            if !v.judged {
                continue;
            }
            let Some(entry) = self.routes.get_mut(&v.route) else {
                continue;
            };
            if let Some(ch) =
                entry
                    .fuse
                    .on_verdict(v.healthy, v.requests, v.period_end, now, &timing)
            {
                let why = if v.healthy {
                    format!("healthy period with {} requests", v.requests)
                } else {
                    format!("unhealthy period with {} requests", v.requests)
                };
                out.push(self.changed(&v.route, ch, SYSTEM, &why, now));
            }
        }
        self.finish();
        out
    }

    /// Open times and override TTLs that ran out, action results, retries,
    /// and forgetting routes closed for long. Call about once a second.
    pub fn tick(&mut self) -> Vec<FuseTransition> {
        self.drain_results();
        let now = self.clock.now();
        let mut out = Vec::new();
        let keys: Vec<RouteKey> = self.routes.keys().cloned().collect();
        for k in keys {
            let entry = self.routes.get_mut(&k).expect("key taken from map");
            let ttl_who = entry.fuse.overridden.as_ref().map(|o| o.who.clone());
            if let Some(ch) = entry.fuse.tick(now) {
                let (who, why) = match ch.cause {
                    Cause::Ttl => (
                        ttl_who.unwrap_or_else(|| SYSTEM.into()),
                        "override TTL ended",
                    ),
                    _ => (SYSTEM.into(), "open time ended"),
                };
                out.push(self.changed(&k, ch, &who, why, now));
            }
        }
        self.forget_rested(now);
        self.finish();
        out
    }

    /// Force open / force closed with a TTL, or release.
    pub fn override_route(&mut self, req: OverrideRequest) -> Result<RouteFuseStatus, FuseError> {
        self.drain_results();
        check_route(&req.route)?;
        let who = req.who.trim();
        let why = req.why.trim();
        if who.is_empty() || who.len() > 200 {
            return Err(FuseError::BadOverride(
                "`who` must be 1 to 200 characters".into(),
            ));
        }
        if why.is_empty() || why.len() > 1000 {
            return Err(FuseError::BadOverride(
                "`reason` must be 1 to 1000 characters".into(),
            ));
        }
        let now = self.clock.now();
        let (kind_label, change) = match req.action {
            OverrideAction::Release => {
                let entry = self
                    .routes
                    .get_mut(&req.route)
                    .ok_or(FuseError::NotOverridden)?;
                let ch = entry.fuse.release(now).ok_or(FuseError::NotOverridden)?;
                ("release", ch)
            }
            OverrideAction::ForceOpen | OverrideAction::ForceClosed => {
                let ttl = req.ttl.unwrap_or(self.cfg.override_ttl);
                if ttl.is_zero() || ttl > self.cfg.max_override_ttl {
                    return Err(FuseError::BadOverride(format!(
                        "ttl must be more than 0s and at most {}",
                        humantime::format_duration(self.cfg.max_override_ttl)
                    )));
                }
                let kind = if req.action == OverrideAction::ForceOpen {
                    OverrideKind::ForceOpen
                } else {
                    OverrideKind::ForceClosed
                };
                let o = Override {
                    kind,
                    until: now + ttl,
                    who: who.to_string(),
                    why: why.to_string(),
                };
                let entry = self.routes.entry(req.route.clone()).or_default();
                (kind.as_str(), entry.fuse.force(o, now))
            }
        };
        self.metrics
            .overrides
            .get_or_create(&KindLabels { kind: kind_label })
            .inc();
        self.changed(&req.route, change, who, why, now);
        self.finish();
        Ok(self
            .status(&req.route)
            .expect("route present after override"))
    }

    /// Every route the controller tracks (fused, overridden, or closed recently).
    pub fn states(&self) -> Vec<RouteFuseStatus> {
        self.routes.keys().filter_map(|k| self.status(k)).collect()
    }

    pub fn status(&self, route: &RouteKey) -> Option<RouteFuseStatus> {
        let e = self.routes.get(route)?;
        let pending = self
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.action.wants(route))
            .filter(|(_, a)| e.applied.get(a.action.name()).copied().unwrap_or(0) < e.fuse.seq)
            .map(|(i, a)| {
                let r = e.retry.get(&i);
                PendingAction {
                    action: a.action.name().to_string(),
                    failures: r.map_or(0, |r| r.failures),
                    last_error: r.and_then(|r| r.last_error.clone()),
                }
            })
            .collect();
        Some(RouteFuseStatus {
            service: route.service.to_string(),
            method: route.method.to_string(),
            route: route.route.to_string(),
            state: e.fuse.state,
            mode: self.cfg.mode,
            escalation: e.fuse.escalation,
            open_until: e.fuse.open_until,
            overridden: e.fuse.overridden.clone(),
            seq: e.fuse.seq,
            pending_actions: if self.cfg.mode == FuseMode::Enforce {
                pending
            } else {
                Vec::new()
            },
        })
    }

    fn remember(&mut self, r: &RouteKey) {
        let set = self.known.entry(r.service.clone()).or_default();
        if !set.contains(r) {
            set.insert(r.clone());
        }
    }

    /// Audit, metrics, actions for one change.
    fn changed(
        &mut self,
        route: &RouteKey,
        ch: Change,
        who: &str,
        why: &str,
        now: SystemTime,
    ) -> FuseTransition {
        let seq = self.routes.get(route).map_or(0, |e| e.fuse.seq);
        let mode = self.cfg.mode;
        self.audit.record(&AuditRecord {
            time: now,
            service: route.service.to_string(),
            method: route.method.to_string(),
            route: route.route.to_string(),
            from: ch.from.as_str(),
            to: ch.to.as_str(),
            cause: ch.cause.as_str(),
            who: who.to_string(),
            why: why.to_string(),
            mode: mode.as_str(),
            seq,
        });
        self.dirty = true;
        if ch.from != ch.to {
            self.metrics
                .transitions
                .get_or_create(&ToLabels { to: ch.to.as_str() })
                .inc();
            self.metrics.set_state(route, ch.to);
            if mode == FuseMode::DryRun {
                for a in self.actions.iter().filter(|a| a.action.wants(route)) {
                    tracing::info!(action = a.action.name(), route = %route, state = ch.to.as_str(),
                        "dry run: would call fuse action");
                    self.metrics
                        .actions
                        .get_or_create(&ActionLabels {
                            action: a.action.name().to_string(),
                            result: "dry_run",
                        })
                        .inc();
                }
            } else if let Some(e) = self.routes.get_mut(route) {
                // A new transition supersedes any backoff of the old one.
                for r in e.retry.values_mut() {
                    r.next_try = None;
                }
            }
        }
        FuseTransition {
            service: route.service.to_string(),
            method: route.method.to_string(),
            route: route.route.to_string(),
            from: ch.from,
            to: ch.to,
            cause: ch.cause,
            who: who.to_string(),
            why: why.to_string(),
            mode,
            seq,
            at: now,
        }
    }

    fn finish(&mut self) {
        self.dispatch_due();
        self.persist();
    }

    fn snapshot(&self) -> Arc<Vec<SnapshotEntry>> {
        Arc::new(
            self.routes
                .iter()
                .map(|(k, e)| SnapshotEntry {
                    route: k.clone(),
                    state: e.fuse.state,
                })
                .collect(),
        )
    }

    /// At start, snapshot actions rewrite their file once, so the gateway's
    /// file exists and matches the restored state; a failed sync is retried.
    fn sync_snapshot_actions(&mut self) {
        if self.cfg.mode != FuseMode::Enforce {
            return;
        }
        for (i, slot) in self.actions.iter().enumerate() {
            if slot.action.is_snapshot() && slot.tx.is_some() {
                self.resync.insert(i, Retry::default());
            }
        }
    }

    fn dispatch_resync(&mut self, now: SystemTime) {
        let due: Vec<usize> = self
            .resync
            .iter()
            .filter(|(_, r)| r.in_flight.is_none() && r.next_try.is_none_or(|t| now >= t))
            .map(|(i, _)| *i)
            .collect();
        if due.is_empty() {
            return;
        }
        let snapshot = self.snapshot();
        for i in due {
            if let Some(r) = self.resync.get_mut(&i) {
                r.in_flight = Some(0);
            }
            self.send(
                i,
                ActionJob {
                    route: None,
                    state: FuseState::Closed,
                    seq: 0,
                    idempotency_key: "sloguard-sync".into(),
                    snapshot: snapshot.clone(),
                    covers: Vec::new(),
                },
            );
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff(&self.cfg, failures)
    }

    /// Sends every due (route, action) whose applied seq lags the route's.
    fn dispatch_due(&mut self) {
        if self.cfg.mode != FuseMode::Enforce {
            return;
        }
        let now = self.clock.now();
        self.dispatch_resync(now);
        let mut snapshot: Option<Arc<Vec<SnapshotEntry>>> = None;
        for i in 0..self.actions.len() {
            if self.actions[i].tx.is_none() {
                continue;
            }
            let action = self.actions[i].action.clone();
            let name = action.name();
            let mut covers = Vec::new();
            for (k, e) in self.routes.iter_mut() {
                let seq = e.fuse.seq;
                if !action.wants(k) || e.applied.get(name).copied().unwrap_or(0) >= seq {
                    continue;
                }
                let r = e.retry.entry(i).or_default();
                if r.in_flight == Some(seq) || r.next_try.is_some_and(|t| now < t) {
                    continue;
                }
                r.in_flight = Some(seq);
                covers.push((k.clone(), seq, e.fuse.state));
            }
            if covers.is_empty() {
                continue;
            }
            let snap = snapshot.get_or_insert_with(|| self.snapshot()).clone();
            let job = |k: RouteKey, seq, state, covers| ActionJob {
                idempotency_key: idempotency_key(&k, seq),
                route: Some(k),
                state,
                seq,
                snapshot: snap.clone(),
                covers,
            };
            let jobs: Vec<ActionJob> = if action.is_snapshot() {
                // One rewrite of the whole file covers every pending route.
                let (k, seq, state) = covers[0].clone();
                let all = covers.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
                vec![job(k, seq, state, all)]
            } else {
                covers
                    .into_iter()
                    .map(|(k, seq, state)| job(k.clone(), seq, state, vec![(k, seq)]))
                    .collect()
            };
            for j in jobs {
                self.send(i, j);
            }
        }
    }

    /// Hands a job to the action's worker, restarting a worker that died.
    fn send(&mut self, i: usize, job: ActionJob) {
        let slot = &mut self.actions[i];
        let Some(tx) = &slot.tx else { return };
        if let Err(mpsc::error::SendError(job)) = tx.send(job) {
            tracing::error!(
                action = slot.action.name(),
                "fuse action worker is gone; restarting it"
            );
            let tx = spawn_worker(i, slot.action.clone(), self.results_tx.clone());
            let _ = tx.send(job);
            slot.tx = Some(tx);
        }
    }

    /// Applies finished action results (non-blocking).
    fn drain_results(&mut self) {
        let now = self.clock.now();
        while let Ok(res) = self.results.try_recv() {
            let Some(slot) = self.actions.get(res.action) else {
                continue;
            };
            let name = slot.action.name().to_string();
            let result = if res.outcome.is_ok() { "ok" } else { "error" };
            self.metrics
                .actions
                .get_or_create(&ActionLabels {
                    action: name.clone(),
                    result,
                })
                .inc();
            if let Err(err) = &res.outcome {
                tracing::warn!(action = %name, error = %err, routes = res.covers.len(),
                    "fuse action failed; will retry");
            }
            // Any whole-file write, or a failed start-up sync, settles the sync.
            if res.outcome.is_ok() {
                self.resync.remove(&res.action);
            } else if res.covers.is_empty() {
                let failures = self.resync.get(&res.action).map_or(0, |r| r.failures) + 1;
                let next_try = Some(now + self.backoff(failures));
                self.resync.insert(
                    res.action,
                    Retry {
                        in_flight: None,
                        failures,
                        next_try,
                        last_error: res.outcome.clone().err(),
                    },
                );
            }
            for (k, seq) in res.covers {
                let Some(e) = self.routes.get_mut(&k) else {
                    continue;
                };
                let r = e.retry.entry(res.action).or_default();
                if r.in_flight.is_some_and(|f| f <= seq) {
                    r.in_flight = None;
                }
                match &res.outcome {
                    Ok(()) => {
                        let applied = e.applied.entry(name.clone()).or_insert(0);
                        *applied = (*applied).max(seq);
                        if *applied >= e.fuse.seq {
                            e.retry.remove(&res.action);
                        }
                        self.dirty = true;
                    }
                    Err(err) => {
                        r.failures = r.failures.saturating_add(1);
                        r.next_try = Some(now + backoff(&self.cfg, r.failures));
                        r.last_error = Some(err.clone());
                    }
                }
            }
        }
    }

    /// Closed, un-overridden routes that rested past `reset_after` with all
    /// actions applied are forgotten: memory and state follow live fuses.
    fn forget_rested(&mut self, now: SystemTime) {
        let reset = self.cfg.reset_after;
        let names: Vec<String> = self
            .actions
            .iter()
            .map(|a| a.action.name().to_string())
            .collect();
        let enforce = self.cfg.mode == FuseMode::Enforce;
        let gone: Vec<RouteKey> = self
            .routes
            .iter()
            .filter(|(k, e)| {
                e.fuse.state == FuseState::Closed
                    && e.fuse.overridden.is_none()
                    && e.fuse
                        .closed_at
                        .is_some_and(|c| now.duration_since(c).unwrap_or_default() >= reset)
                    && (!enforce
                        || self.actions.iter().zip(&names).all(|(a, n)| {
                            !a.action.wants(k)
                                || e.applied.get(n).copied().unwrap_or(0) >= e.fuse.seq
                        }))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.routes.remove(&k);
            self.metrics.forget(&k);
            self.dirty = true;
        }
    }

    fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        let routes = self
            .routes
            .iter()
            .map(|(k, e)| StoredRoute {
                service: k.service.to_string(),
                method: k.method.to_string(),
                route: k.route.to_string(),
                fuse: e.fuse.clone(),
                applied: e.applied.clone(),
            })
            .collect();
        match self.store.save(self.cfg.mode.as_str(), routes) {
            Ok(()) => self.dirty = false,
            // Kept dirty: the next call or tick writes it again.
            Err(e) => tracing::error!(error = %e, "cannot save fuse state"),
        }
    }
}

/// `retry_min · 2^(failures-1)`, capped at `retry_max`.
fn backoff(cfg: &FuseConfig, failures: u32) -> Duration {
    cfg.retry_min
        .checked_mul(1u32 << failures.saturating_sub(1).min(20))
        .unwrap_or(cfg.retry_max)
        .min(cfg.retry_max)
}

/// Route fields from an operator: bounded, printable, route starts with `/`.
fn check_route(r: &RouteKey) -> Result<(), FuseError> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 512 && !s.chars().any(char::is_control);
    if !ok(&r.service) {
        return Err(FuseError::BadOverride(
            "`service` must be 1 to 512 printable characters".into(),
        ));
    }
    if r.method.is_empty()
        || r.method.len() > 32
        || !r.method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(FuseError::BadOverride(
            "`method` must be an upper-case HTTP method".into(),
        ));
    }
    if !ok(&r.route) || !r.route.starts_with('/') {
        return Err(FuseError::BadOverride(
            "`route` must start with `/` and be printable".into(),
        ));
    }
    Ok(())
}

/// Ticks the controller every `every` (bounded by the runtime's life).
pub fn spawn_ticker(fuse: SharedFuse, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(every);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            iv.tick().await;
            // tick() may persist (fsync): off the async workers.
            let fuse = fuse.clone();
            let ticked = tokio::task::spawn_blocking(move || {
                let Ok(mut f) = fuse.lock() else { return false };
                f.tick();
                true
            });
            if !matches!(ticked.await, Ok(true)) {
                break;
            }
        }
    })
}
