//! Stage 7, what leaves the agent: `/metrics` (Prometheus text and
//! OpenMetrics, self metrics; `metrics`), OTLP spans (`otlp`), JSON request
//! logs (`reqlog`), the read-only status document (`status`) and the admin API
//! (`admin`).
pub mod admin;
pub mod metrics;
pub mod otlp;
pub mod reqlog;
pub mod status;
