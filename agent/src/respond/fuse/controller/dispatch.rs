//! Handing transitions to the action workers and taking their results:
//! what each action still owes, retries with backoff, the start-up sync of
//! file actions, and the release of routes after a switch to `dry_run`.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::super::action::{ActionJob, FuseAction, SnapshotEntry, idempotency_key, spawn_worker};
use super::super::config::{FuseConfig, FuseMode};
use super::super::machine::{FuseState, RouteFuse};
use super::super::metrics::{ActionLabels, NameLabels};
use super::super::store::StoredRoute;
use super::{ActionSlot, FuseController, Retry, RouteEntry};
use crate::request::route::RouteKey;

impl FuseController {
    /// At start, snapshot actions rewrite their file once, so the gateway's
    /// file exists and matches the restored state; a failed sync is retried.
    pub(super) fn sync_snapshot_actions(&mut self) {
        if self.cfg.mode != FuseMode::Enforce {
            return;
        }
        for (i, slot) in self.actions.iter().enumerate() {
            if slot.action.is_snapshot() && slot.tx.is_some() {
                self.resync.insert(i, Retry::default());
            }
        }
    }

    pub(super) fn dispatch_resync(&mut self, now: SystemTime) {
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
                    release: false,
                },
            );
        }
    }

    pub(super) fn backoff(&self, failures: u32) -> Duration {
        backoff(&self.cfg, failures)
    }

    /// Sends every due (route, action) whose applied seq lags the route's.
    pub(super) fn dispatch_due(&mut self) {
        self.dispatch_release();
        if self.cfg.mode != FuseMode::Enforce {
            return;
        }
        let now = self.clock.now();
        self.dispatch_resync(now);
        let due = collect_due(&self.actions, &mut self.routes, now);
        if due.is_empty() {
            return;
        }
        let snapshot = self.snapshot();
        self.send_due(due, snapshot, false);
    }

    /// Closes, through every action, the routes `enforce` left fused; the
    /// snapshot actions write a file with nothing fused.
    pub(super) fn dispatch_release(&mut self) {
        if self.releasing.is_empty() {
            return;
        }
        let now = self.clock.now();
        let due = collect_due(&self.actions, &mut self.releasing, now);
        if !due.is_empty() {
            self.send_due(due, Arc::new(Vec::new()), true);
        }
    }

    /// One job per route, or one per snapshot action covering all its routes.
    pub(super) fn send_due(
        &mut self,
        due: Vec<(usize, Vec<Due>)>,
        snap: Arc<Vec<SnapshotEntry>>,
        release: bool,
    ) {
        for (i, covers) in due {
            let job = |k: RouteKey, seq, state, covers| ActionJob {
                idempotency_key: idempotency_key(&k, seq),
                route: Some(k),
                state,
                seq,
                snapshot: snap.clone(),
                covers,
                release,
            };
            let jobs: Vec<ActionJob> = if self.actions[i].action.is_snapshot() {
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
    pub(super) fn send(&mut self, i: usize, job: ActionJob) {
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
    pub(super) fn drain_results(&mut self) {
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
                    action: name.as_str().into(),
                    result,
                })
                .inc();
            self.metrics
                .action_seconds
                .get_or_create(&NameLabels {
                    action: name.as_str().into(),
                })
                .observe(res.elapsed.as_secs_f64());
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
            let map = if res.release {
                &mut self.releasing
            } else {
                &mut self.routes
            };
            for (k, seq) in res.covers {
                let Some(e) = map.get_mut(&k) else {
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
        self.settle_releases();
    }

    /// Drops released routes every action has closed.
    pub(super) fn settle_releases(&mut self) {
        let actions = &self.actions;
        let before = self.releasing.len();
        self.releasing.retain(|k, e| {
            let done = actions.iter().all(|a| {
                !a.action.wants(k)
                    || e.applied.get(a.action.name()).copied().unwrap_or(0) >= e.fuse.seq
            });
            if done {
                tracing::info!(route = %k, "route closed at the gateway after the switch to dry_run");
            }
            !done
        });
        if self.releasing.len() != before {
            self.dirty = true;
        }
    }
}

/// A (route, seq, state) an action still owes.
pub(super) type Due = (RouteKey, u64, FuseState);

/// Per action with a worker: the routes whose applied seq lags, that are
/// neither in flight nor waiting out a backoff (marked in flight here).
pub(super) fn collect_due(
    actions: &[ActionSlot],
    routes: &mut BTreeMap<RouteKey, RouteEntry>,
    now: SystemTime,
) -> Vec<(usize, Vec<Due>)> {
    let mut out = Vec::new();
    for (i, slot) in actions.iter().enumerate() {
        if slot.tx.is_none() {
            continue;
        }
        let name = slot.action.name();
        let mut covers = Vec::new();
        for (k, e) in routes.iter_mut() {
            let seq = e.fuse.seq;
            if !slot.action.wants(k) || e.applied.get(name).copied().unwrap_or(0) >= seq {
                continue;
            }
            let r = e.retry.entry(i).or_default();
            if r.in_flight == Some(seq) || r.next_try.is_some_and(|t| now < t) {
                continue;
            }
            r.in_flight = Some(seq);
            covers.push((k.clone(), seq, e.fuse.state));
        }
        if !covers.is_empty() {
            out.push((i, covers));
        }
    }
    out
}

/// A route `enforce` stored, as a closing transition to send when the agent
/// now runs in `dry_run`; None when every action already has it closed.
pub(super) fn release_entry(
    s: StoredRoute,
    actions: &[Arc<dyn FuseAction>],
) -> Option<(RouteKey, RouteEntry)> {
    let key = s.key();
    let owed = actions
        .iter()
        .any(|a| a.wants(&key) && s.applied.get(a.name()).copied().unwrap_or(0) < s.fuse.seq);
    if !s.fuse.state.is_fused() && !owed {
        return None;
    }
    let fuse = RouteFuse {
        state: FuseState::Closed,
        seq: s.fuse.seq + 1,
        escalation: 0,
        ..Default::default()
    };
    Some((
        key,
        RouteEntry {
            fuse,
            applied: s.applied,
            retry: HashMap::new(),
        },
    ))
}

/// `retry_min · 2^(failures-1)`, capped at `retry_max`.
pub(super) fn backoff(cfg: &FuseConfig, failures: u32) -> Duration {
    cfg.retry_min
        .checked_mul(1u32 << failures.saturating_sub(1).min(20))
        .unwrap_or(cfg.retry_max)
        .min(cfg.retry_max)
}
