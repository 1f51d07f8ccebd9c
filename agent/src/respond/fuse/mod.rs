//! Route fusing: a per-route breaker (`closed → open → half_open → closed`,
//! escalating open time) driven by L2 alerts and period verdicts, guarded
//! (dry run, max share per service, minimum volume), overridable by an
//! operator, persisted across restarts, audited, and applied through
//! pluggable gateway actions. Recipes: `docs/fuse.md`.
pub mod action;
pub mod audit;
pub mod config;
pub mod controller;
pub mod machine;
pub mod metrics;
mod reload;
pub mod status;
pub mod store;

pub use action::{ActionError, ActionJob, FuseAction};
pub use config::{
    ActionConfig, BadStateFile, CaddyActionConfig, FileActionConfig, FileFormat, FuseConfig,
    FuseMode, HaproxyActionConfig, HttpActionConfig,
};
pub use controller::{
    FuseController, FuseTransition, OverrideAction, OverrideRequest, RouteFuseStatus, SharedFuse,
    spawn_ticker,
};
pub use machine::{Cause, FuseState, Override, OverrideKind};

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("fuse config: {0}")]
    Config(String),
    #[error("fuse action: {0}")]
    Action(#[from] ActionError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("the fuse controller needs a tokio runtime in enforce mode")]
    NoRuntime,
    #[error("{0}")]
    BadOverride(String),
    #[error("the route has no override to release")]
    NotOverridden,
}

#[cfg(test)]
mod tests;
