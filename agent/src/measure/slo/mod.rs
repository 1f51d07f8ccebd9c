//! SLO engine: per route × gray tag and period it keeps counts, a latency
//! sketch and kernel evidence, judges the route against its SLO and raises L1
//! (P99 breach), L2 (P99 spike with 5xx burst) and gray-rollback alerts.
pub mod baseline;
pub mod burn;
pub mod detectors;
pub mod engine;
pub mod metrics;
pub mod period;
pub mod rules;
pub mod sketch;
pub mod track;

pub use engine::{SloEngine, SloSample, TickOutput};
pub use metrics::SloMetrics;
pub use rules::{SloConfig, SloRule, SloTarget};
pub use sketch::LatencySketch;

#[cfg(test)]
mod tests;
