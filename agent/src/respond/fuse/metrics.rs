//! `sloguard_fuse_*` metrics.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::machine::FuseState;
use crate::export::metrics::Escaped;
use crate::request::route::RouteKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub service_name: Escaped<String>,
    pub http_request_method: Escaped<String>,
    pub http_route: Escaped<String>,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToLabels {
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: Escaped<String>,
    /// `ok`, `error` or `dry_run` (would have been called).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub action: Escaped<String>,
}

pub use crate::export::metrics::{KindLabels, ReasonLabels};

#[derive(Clone)]
pub struct FuseMetrics {
    pub state: Family<StateLabels, Gauge>,
    pub transitions: Family<ToLabels, Counter>,
    pub actions: Family<ActionLabels, Counter>,
    /// Time of each action call (retries within it included), per action.
    pub action_seconds: Family<NameLabels, Histogram, fn() -> Histogram>,
    pub overrides: Family<KindLabels, Counter>,
    pub skipped: Family<ReasonLabels, Counter>,
}

/// 1 ms (a runtime API) to 30 s (a reload with retries).
fn action_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for FuseMetrics {
    fn default() -> Self {
        Self {
            state: Default::default(),
            transitions: Default::default(),
            actions: Default::default(),
            action_seconds: Family::new_with_constructor(action_histogram),
            overrides: Default::default(),
            skipped: Default::default(),
        }
    }
}

fn labels(r: &RouteKey, state: FuseState) -> StateLabels {
    StateLabels {
        service_name: r.service.as_ref().into(),
        http_request_method: r.method.as_ref().into(),
        http_route: r.route.as_ref().into(),
        state: state.as_str(),
    }
}

impl FuseMetrics {
    /// 1 for the route's current state, 0 for the others.
    pub fn set_state(&self, r: &RouteKey, current: FuseState) {
        for s in FuseState::ALL {
            self.state
                .get_or_create(&labels(r, s))
                .set((s == current) as i64);
        }
    }

    /// Drops a forgotten route's series, so cardinality follows live routes.
    pub fn forget(&self, r: &RouteKey) {
        for s in FuseState::ALL {
            self.state.remove(&labels(r, s));
        }
    }

    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "sloguard_fuse_state",
            "Fuse state per route: 1 for the current state",
            self.state.clone(),
        );
        reg.register(
            "sloguard_fuse_transitions",
            "Fuse state changes by target state",
            self.transitions.clone(),
        );
        reg.register(
            "sloguard_fuse_actions",
            "Fuse action calls by action and result (dry_run: would have been called)",
            self.actions.clone(),
        );
        reg.register(
            "sloguard_fuse_action_duration_seconds",
            "Time of each fuse action call (its retries included), by action",
            self.action_seconds.clone(),
        );
        reg.register(
            "sloguard_fuse_overrides",
            "Manual fuse overrides by kind",
            self.overrides.clone(),
        );
        reg.register(
            "sloguard_fuse_skipped",
            "L2 alerts that did not fuse, by guard",
            self.skipped.clone(),
        );
    }
}
