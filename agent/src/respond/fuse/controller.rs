//! The fuse controller: feeds alerts, verdicts and operator overrides to each
//! route's state machine, applies the guards, persists and audits every
//! change, and hands actions to their worker tasks (retrying failures).
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::FuseError;
use super::action::{
    ActionJob, ActionResult, FuseAction, SnapshotEntry, build_actions, spawn_worker,
};
use super::audit::{AuditLog, AuditRecord};
use super::config::BadStateFile;
use super::config::{FuseConfig, FuseMode};
use super::machine::{Cause, Change, FuseState, Override, OverrideKind, RouteFuse, Timing};
use super::metrics::{ActionLabels, FuseMetrics, KindLabels, ReasonLabels, ToLabels};
pub use super::status::{
    FuseTransition, OverrideAction, OverrideRequest, PendingAction, RouteFuseStatus,
};
use super::store::{Loaded, StateStore, StoreError, StoredRoute};
use crate::clock::Clock;
use crate::request::route::RouteKey;
use crate::respond::alert::model::{AlertEvent, AlertKind, AlertStatus, RouteVerdict};

mod dispatch;

use dispatch::release_entry;

/// A route not judged for this long no longer counts as known in
/// `max_fused_share`.
const KNOWN_FOR: Duration = Duration::from_secs(3600);
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
    /// Routes judged in a verdict (or alerted on) within [`KNOWN_FOR`], per
    /// service, with when: the denominator of `max_fused_share`, so routes
    /// that never had the volume to be judged do not dilute it. Bounded by
    /// the route cap upstream and by the expiry.
    known: HashMap<Arc<str>, HashMap<RouteKey, SystemTime>>,
    actions: Vec<ActionSlot>,
    /// Snapshot actions whose start-up sync has not succeeded yet.
    resync: HashMap<usize, Retry>,
    /// Routes `enforce` left fused at the gateway, being closed through the
    /// actions after a switch to `dry_run` (state closed, seq bumped).
    releasing: BTreeMap<RouteKey, RouteEntry>,
    /// `SloguardFuseStateReset`, until the caller takes it to deliver it.
    reset_alert: Option<AlertEvent>,
    results: mpsc::UnboundedReceiver<ActionResult>,
    results_tx: mpsc::UnboundedSender<ActionResult>,
    store: StateStore,
    dirty: bool,
    audit: AuditLog,
    metrics: FuseMetrics,
    /// The snapshot id of the alert being applied, for its audit record.
    snapshot_id: Option<String>,
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
        mut cfg: FuseConfig,
        clock: Arc<dyn Clock>,
        actions: Vec<Arc<dyn FuseAction>>,
    ) -> Result<Self, FuseError> {
        cfg.validate()
            .map_err(|e| FuseError::Config(e.to_string()))?;
        let (results_tx, results) = mpsc::unbounded_channel();
        let store = StateStore::new(cfg.state_file.clone());
        let mut reset_alert = None;
        let loaded = match store.load() {
            Ok(l) => l,
            Err(StoreError::Invalid { path, message })
                if cfg.on_bad_state_file == BadStateFile::Reset =>
            {
                let now = clock.now();
                let aside = store.move_aside(now)?;
                tracing::error!(state_file = %path, moved_to = %aside.display(), error = %message,
                    "fuse state file is unusable: moved aside; fusing runs in dry_run with no fused routes");
                cfg.mode = FuseMode::DryRun;
                reset_alert = Some(state_reset_alert(&path, &aside, &message, now));
                Loaded::default()
            }
            Err(e) => return Err(e.into()),
        };
        let enforce = cfg.mode == FuseMode::Enforce;
        let entry = |s: StoredRoute| {
            (
                s.key(),
                RouteEntry {
                    fuse: s.fuse,
                    applied: s.applied,
                    retry: HashMap::new(),
                },
            )
        };
        let mut releasing: BTreeMap<RouteKey, RouteEntry> =
            loaded.releasing.into_iter().map(entry).collect();
        let mut restored = Vec::new();
        match loaded.mode.as_deref() {
            // enforce → dry_run: dry run calls no action, so close at the
            // gateway now what enforce fused, and only then go dry.
            Some("enforce") if !enforce => {
                for s in loaded.routes {
                    if let Some((k, e)) = release_entry(s, &actions) {
                        releasing.insert(k, e);
                    }
                }
                if !releasing.is_empty() {
                    tracing::warn!(state_file = %cfg.state_file.display(), routes = releasing.len(),
                        "fuse mode switched from enforce to dry_run: closing the routes enforce fused through the actions");
                }
            }
            Some(m) if m != cfg.mode.as_str() => tracing::warn!(
                state_file = %cfg.state_file.display(), written_by = %m, mode = cfg.mode.as_str(),
                "fuse state file was written in another mode; starting with no fused routes"
            ),
            _ => restored = loaded.routes,
        }
        if enforce {
            // A release cut short by a switch back to enforce: the routes are
            // closed transitions like any other.
            for (k, e) in std::mem::take(&mut releasing) {
                if !restored.iter().any(|s| s.key() == k) {
                    restored.push(StoredRoute {
                        service: k.service.to_string(),
                        method: k.method.to_string(),
                        route: k.route.to_string(),
                        fuse: e.fuse,
                        applied: e.applied,
                    });
                }
            }
        }
        let workers = enforce || !releasing.is_empty();
        // The release list must survive a restart before anything is sent.
        let dirty = !releasing.is_empty();
        if workers && tokio::runtime::Handle::try_current().is_err() {
            return Err(FuseError::NoRuntime);
        }
        let actions = actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| ActionSlot {
                tx: workers.then(|| spawn_worker(i, action.clone(), results_tx.clone())),
                action,
            })
            .collect();
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
            releasing,
            reset_alert,
            results,
            results_tx,
            store,
            dirty,
            metrics: FuseMetrics::default(),
            snapshot_id: None,
        };
        for s in restored {
            let (key, e) = entry(s);
            c.metrics.set_state(&key, e.fuse.state);
            c.routes.insert(key, e);
        }
        if !c.routes.is_empty() {
            tracing::info!(routes = c.routes.len(), "fuse state restored");
        }
        c.sync_snapshot_actions();
        c.dispatch_due();
        c.persist();
        Ok(c)
    }

    /// The `SloguardFuseStateReset` alert when the start moved a bad state
    /// file aside (`fuse.on_bad_state_file: reset`); once.
    pub fn take_reset_alert(&mut self) -> Option<AlertEvent> {
        self.reset_alert.take()
    }

    /// Routes still being closed at the gateway after a switch to `dry_run`.
    pub fn releasing(&self) -> Vec<RouteKey> {
        self.releasing.keys().cloned().collect()
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
        let now = self.clock.now();
        self.remember(&ev.route, now);
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
            self.snapshot_id = ev.snapshot_id.clone();
            out.push(self.changed(&ev.route, ch, SYSTEM, &why, now));
        }
        self.finish();
        out
    }

    fn guard(&self, ev: &AlertEvent) -> Option<&'static str> {
        // The overflow and unadmitted buckets are many paths, never one route.
        if crate::request::route::is_bucket_route(&ev.route.route) {
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

    /// Closed periods' verdicts: every judged route becomes known; half-open routes
    /// close on a healthy period or re-open on an unhealthy one.
    pub fn on_verdicts(&mut self, verdicts: &[RouteVerdict]) -> Vec<FuseTransition> {
        self.drain_results();
        let now = self.clock.now();
        let timing = self.timing;
        let mut out = Vec::new();
        for v in verdicts {
            // Under the volume gate a period proves nothing: a half-open route
            // must not close on a handful of requests (the fault may still be
            // there), and the route does not count as known.
            if !v.judged {
                continue;
            }
            self.remember(&v.route, now);
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
        self.forget_unjudged(now);
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
                    action: a.action.name().into(),
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

    fn remember(&mut self, r: &RouteKey, now: SystemTime) {
        let set = self.known.entry(r.service.clone()).or_default();
        match set.get_mut(r) {
            Some(t) => *t = now,
            None => {
                set.insert(r.clone(), now);
            }
        }
    }

    /// Drops known routes not judged within [`KNOWN_FOR`].
    fn forget_unjudged(&mut self, now: SystemTime) {
        for set in self.known.values_mut() {
            set.retain(|_, t| now.duration_since(*t).unwrap_or_default() < KNOWN_FOR);
        }
        self.known.retain(|_, s| !s.is_empty());
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
            snapshot_id: self.snapshot_id.take(),
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
                            action: a.action.name().into(),
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

    /// Every tracked route with its state, and the other known routes as
    /// closed (the nginx map writes literal siblings of a fused template).
    fn snapshot(&self) -> Arc<Vec<SnapshotEntry>> {
        let mut v: Vec<SnapshotEntry> = self
            .routes
            .iter()
            .map(|(k, e)| SnapshotEntry {
                route: k.clone(),
                state: e.fuse.state,
            })
            .collect();
        for k in self.known.values().flat_map(|s| s.keys()) {
            if !self.routes.contains_key(k) {
                v.push(SnapshotEntry {
                    route: k.clone(),
                    state: FuseState::Closed,
                });
            }
        }
        Arc::new(v)
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
        let stored = |(k, e): (&RouteKey, &RouteEntry)| StoredRoute {
            service: k.service.to_string(),
            method: k.method.to_string(),
            route: k.route.to_string(),
            fuse: e.fuse.clone(),
            applied: e.applied.clone(),
        };
        let routes = self.routes.iter().map(stored).collect();
        let releasing = self.releasing.iter().map(stored).collect();
        match self.store.save(self.cfg.mode.as_str(), routes, releasing) {
            Ok(()) => self.dirty = false,
            // Kept dirty: the next call or tick writes it again.
            Err(e) => tracing::error!(error = %e, "cannot save fuse state"),
        }
    }
}

/// The alert of a start that moved a bad state file aside: no route, the
/// paths and the parse error in its description.
fn state_reset_alert(path: &str, aside: &Path, error: &str, now: SystemTime) -> AlertEvent {
    AlertEvent {
        kind: AlertKind::FuseStateReset,
        status: AlertStatus::Firing,
        route: RouteKey::new("", "", ""),
        gray_tag: String::new(),
        starts_at: now,
        ends_at: None,
        figures: Default::default(),
        evidence: Default::default(),
        sample_trace_ids: Vec::new(),
        diagnosis: format!(
            "fuse state file {path} was unusable ({error}); moved to {}. Fusing runs in dry_run \
             with no fused routes until the agent restarts with a good file: check the gateway \
             for routes it still blocks",
            aside.display()
        ),
        snapshot_id: None,
    }
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
