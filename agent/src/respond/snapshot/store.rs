//! The live store (owned by the pipeline thread, no lock on the request
//! path) and the frozen sets (shared with the admin API).
//!
//! Bounds: each route keeps at most `per_route` failed-or-slow snapshots (a
//! ring: the newest win) and `per_route` healthy ones (a reservoir that
//! keeps refreshing); all live snapshots together hold at most `max_bytes`,
//! enforced by evicting round-robin across routes, oldest first. Every
//! snapshot that leaves without being frozen is counted by reason.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{Class, Snapshot, SnapshotConfig};
use crate::request::route::RouteKey;
use crate::respond::alert::model::{AlertEvent, AlertKind, AlertStatus};

/// A reservoir over the last `per_route × RESERVOIR_WINDOW` healthy requests
/// rather than all of them: an all-time reservoir would hold the first hour's
/// traffic forever, and the comparison should be with recent healthy ones.
const RESERVOIR_WINDOW: u64 = 16;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

/// `sloguard_snapshots_*`.
#[derive(Clone, Default)]
pub struct StoreCounters {
    pub captured: Family<ClassLabels, Counter>,
    /// `bytes` (evicted for the byte cap), `route_cap` (pushed out of the
    /// route's ring by a newer one), `frozen_cap` (a frozen set dropped for a newer).
    pub dropped: Family<ReasonLabels, Counter>,
    pub bytes: Gauge,
    pub frozen_sets: Gauge,
}

impl StoreCounters {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sloguard_snapshots_captured",
            "Request snapshots taken, by class (failed, slow, healthy sample)",
            self.captured.clone(),
        );
        registry.register(
            "sloguard_snapshots_dropped",
            "Request snapshots dropped unfrozen: bytes (snapshots.max_bytes), route_cap (snapshots.per_route), frozen_cap (snapshots.max_frozen)",
            self.dropped.clone(),
        );
        registry.register(
            "sloguard_snapshots_bytes",
            "Bytes held by live request snapshots (bounded by snapshots.max_bytes)",
            self.bytes.clone(),
        );
        registry.register(
            "sloguard_snapshots_frozen_sets",
            "Frozen snapshot sets kept for the admin API (bounded by snapshots.max_frozen)",
            self.frozen_sets.clone(),
        );
        for c in [Class::Failed, Class::Slow, Class::Healthy] {
            let _ = self
                .captured
                .get_or_create(&ClassLabels { class: c.as_str() });
        }
        for r in ["bytes", "route_cap", "frozen_cap"] {
            let _ = self.dropped.get_or_create(&ReasonLabels { reason: r });
        }
    }

    fn drop(&self, reason: &'static str, n: u64) {
        self.dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n);
    }

    pub fn dropped_total(&self, reason: &'static str) -> u64 {
        self.dropped.get_or_create(&ReasonLabels { reason }).get()
    }
}

/// A route's failed and healthy snapshots at the moment an alert fired.
#[derive(Clone, Debug, Serialize)]
pub struct FrozenSet {
    pub id: String,
    #[serde(with = "humantime_serde")]
    pub created: SystemTime,
    pub alertname: String,
    pub service: String,
    pub method: String,
    pub route: String,
    /// The cohort a gray rollback alert is about (`""`: the whole route).
    pub gray_tag: String,
    /// Failed and slow requests, oldest first.
    pub failed: Vec<Snapshot>,
    pub healthy: Vec<Snapshot>,
}

impl FrozenSet {
    /// One line per set for listings.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "created": crate::respond::alert::payload::rfc3339(self.created),
            "alertname": self.alertname,
            "service": self.service,
            "method": self.method,
            "route": self.route,
            "gray_tag": self.gray_tag,
            "failed": self.failed.len(),
            "healthy": self.healthy.len(),
        })
    }
}

/// Frozen sets, newest last, at most `max`.
#[derive(Default)]
pub struct FrozenSets {
    sets: VecDeque<Arc<FrozenSet>>,
}

impl FrozenSets {
    pub fn get(&self, id: &str) -> Option<Arc<FrozenSet>> {
        self.sets.iter().find(|s| s.id == id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<FrozenSet>> {
        self.sets.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

pub type SharedFrozen = Arc<RwLock<FrozenSets>>;

struct RouteSnaps {
    key: RouteKey,
    slo_p99_ns: u64,
    bad: VecDeque<Snapshot>,
    healthy: Vec<Snapshot>,
    healthy_seen: u64,
}

/// Bytes a route's slot costs besides its snapshots (counted in the cap, so
/// many routes with one snapshot each cannot outgrow it).
const SLOT_BYTES: usize = std::mem::size_of::<RouteSnaps>() + 64;

/// What [`SnapshotStore::decide`] chose: take the request as `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub class: Class,
    slot: usize,
    /// Healthy reservoir: the index to replace (`None`: append).
    replace: Option<usize>,
}

pub struct SnapshotStore {
    cfg: SnapshotConfig,
    index: hashbrown::HashMap<RouteKey, usize>,
    slots: Vec<RouteSnaps>,
    cursor: usize,
    bytes: usize,
    rng: SmallRng,
    frozen: SharedFrozen,
    /// Snapshot ids of firing alerts, so their resolve carries the same id.
    firing: HashMap<(RouteKey, AlertKind, String), String>,
    seq: u64,
    pub counters: StoreCounters,
}

impl SnapshotStore {
    pub fn new(cfg: SnapshotConfig) -> Self {
        Self {
            cfg,
            index: Default::default(),
            slots: Vec::new(),
            cursor: 0,
            bytes: 0,
            rng: SmallRng::from_os_rng(),
            frozen: Default::default(),
            firing: HashMap::new(),
            seq: 0,
            counters: StoreCounters::default(),
        }
    }

    pub fn config(&self) -> &SnapshotConfig {
        &self.cfg
    }

    /// The frozen sets, for the admin API.
    pub fn frozen(&self) -> SharedFrozen {
        self.frozen.clone()
    }

    /// Bytes held by live snapshots and route slots.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Live snapshots.
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.bad.len() + s.healthy.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn routes(&self) -> usize {
        self.slots.len()
    }

    /// Whether to snapshot a finished request, before anything is built:
    /// most healthy requests are not taken and cost one lookup and a draw.
    /// `slo_p99` is asked once per new route.
    pub fn decide(
        &mut self,
        route: &RouteKey,
        failed: bool,
        duration_ns: u64,
        slo_p99: impl FnOnce() -> Duration,
    ) -> Option<Decision> {
        if !self.cfg.enabled {
            return None;
        }
        let slot = match self.index.get(route) {
            Some(&i) => i,
            None => {
                self.slots.push(RouteSnaps {
                    key: route.clone(),
                    slo_p99_ns: slo_p99().as_nanos() as u64,
                    bad: VecDeque::new(),
                    healthy: Vec::new(),
                    healthy_seen: 0,
                });
                self.index.insert(route.clone(), self.slots.len() - 1);
                self.bytes += SLOT_BYTES;
                self.slots.len() - 1
            }
        };
        let s = &mut self.slots[slot];
        let class = if failed {
            Class::Failed
        } else if duration_ns > s.slo_p99_ns {
            Class::Slow
        } else {
            s.healthy_seen += 1;
            let cap = self.cfg.per_route;
            if s.healthy.len() < cap {
                return Some(Decision {
                    class: Class::Healthy,
                    slot,
                    replace: None,
                });
            }
            let window = s.healthy_seen.min(cap as u64 * RESERVOIR_WINDOW);
            let j = self.rng.random_range(0..window) as usize;
            return (j < cap).then_some(Decision {
                class: Class::Healthy,
                slot,
                replace: Some(j),
            });
        };
        Some(Decision {
            class,
            slot,
            replace: None,
        })
    }

    /// Keep `snap` as decided, then evict until the byte cap holds.
    pub fn insert(&mut self, d: Decision, snap: Snapshot) {
        self.counters
            .captured
            .get_or_create(&ClassLabels {
                class: d.class.as_str(),
            })
            .inc();
        let Some(s) = self.slots.get_mut(d.slot) else {
            return;
        };
        self.bytes += snap.bytes();
        let mut freed = 0;
        if d.class.is_bad() {
            if s.bad.len() >= self.cfg.per_route
                && let Some(old) = s.bad.pop_front()
            {
                freed += old.bytes();
                self.counters.drop("route_cap", 1);
            }
            s.bad.push_back(snap);
        } else {
            match d.replace.and_then(|j| s.healthy.get_mut(j)) {
                // A reservoir replacement is sampling, not a drop.
                Some(old) => freed += std::mem::replace(old, snap).bytes(),
                None => s.healthy.push(snap),
            }
        }
        self.bytes -= freed;
        self.enforce_cap(d.slot);
        self.counters.bytes.set(self.bytes as i64);
    }

    /// Evict round-robin across routes, each route's oldest first, until
    /// the live store fits in `max_bytes`. A route left empty gives up its
    /// slot. The route just written to goes last: else, with many routes
    /// and a small cap, the newest failure could evict itself.
    fn enforce_cap(&mut self, mut newest: usize) {
        let mut evicted = 0;
        while self.bytes > self.cfg.max_bytes && !self.slots.is_empty() {
            if self.cursor >= self.slots.len() {
                self.cursor = 0;
            }
            if self.cursor == newest && self.slots.len() > 1 {
                self.cursor += 1;
                continue;
            }
            let s = &mut self.slots[self.cursor];
            let old = if s.healthy.len() > s.bad.len() {
                s.healthy.pop()
            } else {
                s.bad.pop_front()
            };
            if let Some(old) = old {
                self.bytes -= old.bytes();
                evicted += 1;
            }
            if s.bad.is_empty() && s.healthy.is_empty() {
                self.remove_slot(self.cursor);
                // swap_remove moved the last slot into the freed index.
                if newest == self.slots.len() {
                    newest = self.cursor;
                }
            } else {
                self.cursor += 1;
            }
        }
        if evicted > 0 {
            self.counters.drop("bytes", evicted);
        }
    }

    fn remove_slot(&mut self, i: usize) {
        let gone = self.slots.swap_remove(i);
        self.index.remove(&gone.key);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        self.bytes -= SLOT_BYTES;
    }

    /// Freeze the route's sets for each firing L2 or gray rollback alert and
    /// stamp the alerts (and their later resolves) with the set's id.
    pub fn on_alerts(&mut self, alerts: &mut [AlertEvent], now: SystemTime) {
        for ev in alerts.iter_mut() {
            if !matches!(
                ev.kind,
                AlertKind::P99SpikeWith5xxBurst | AlertKind::GrayRollback
            ) {
                continue;
            }
            let key = (ev.route.clone(), ev.kind, ev.gray_tag.clone());
            match ev.status {
                AlertStatus::Firing => {
                    if let Some(id) = self.freeze(ev, now) {
                        self.firing.insert(key, id.clone());
                        ev.snapshot_id = Some(id);
                    }
                }
                AlertStatus::Resolved => ev.snapshot_id = self.firing.remove(&key),
            }
        }
    }

    fn freeze(&mut self, ev: &AlertEvent, now: SystemTime) -> Option<String> {
        let slot = &self.slots[*self.index.get(&ev.route)?];
        self.seq += 1;
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let id = format!("snap-{secs}-{}", self.seq);
        let set = FrozenSet {
            id: id.clone(),
            created: now,
            alertname: ev.kind.alertname().into(),
            service: ev.route.service.to_string(),
            method: ev.route.method.to_string(),
            route: ev.route.route.to_string(),
            gray_tag: ev.gray_tag.clone(),
            failed: slot.bad.iter().cloned().collect(),
            healthy: slot.healthy.clone(),
        };
        tracing::info!(snapshot_id = %id, route = %ev.route, failed = set.failed.len(),
            healthy = set.healthy.len(), alertname = ev.kind.alertname(), "request snapshots frozen");
        let mut f = self.frozen.write().unwrap_or_else(|p| p.into_inner());
        f.sets.push_back(Arc::new(set));
        while f.sets.len() > self.cfg.max_frozen {
            f.sets.pop_front();
            self.counters.drop("frozen_cap", 1);
        }
        self.counters.frozen_sets.set(f.sets.len() as i64);
        Some(id)
    }
}
