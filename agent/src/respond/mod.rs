//! Stage 6, responses to a judged route: alerts (`alert`: model, Alertmanager
//! payload, delivery), fuses (`fuse`: circuit breaker and gateway actions) and
//! the request snapshots frozen with an alert (`snapshot`).
pub mod alert;
pub mod fuse;
pub mod snapshot;
