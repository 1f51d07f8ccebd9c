//! What the fuse controller reports and accepts: transitions, per-route
//! status (admin API, `states()`), and operator override requests.
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::config::FuseMode;
use super::machine::{Cause, FuseState, Override};
use crate::request::route::RouteKey;

/// A state change, returned to the caller (e.g. to alert "would fuse").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FuseTransition {
    pub service: String,
    pub method: String,
    pub route: String,
    pub from: FuseState,
    pub to: FuseState,
    pub cause: Cause,
    pub who: String,
    pub why: String,
    pub mode: FuseMode,
    pub seq: u64,
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
}

/// An action that still owes the gateway a call for this route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PendingAction {
    pub action: String,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// One route's fuse as the admin API and `states()` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteFuseStatus {
    pub service: String,
    pub method: String,
    pub route: String,
    pub state: FuseState,
    pub mode: FuseMode,
    pub escalation: u32,
    #[serde(with = "humantime_serde")]
    pub open_until: Option<SystemTime>,
    #[serde(rename = "override")]
    pub overridden: Option<Override>,
    pub seq: u64,
    pub pending_actions: Vec<PendingAction>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideAction {
    ForceOpen,
    ForceClosed,
    Release,
}

/// An operator's request (admin API).
#[derive(Clone, Debug)]
pub struct OverrideRequest {
    pub route: RouteKey,
    pub action: OverrideAction,
    /// None: the configured `override_ttl`. Ignored by `Release`.
    pub ttl: Option<Duration>,
    pub who: String,
    pub why: String,
}
